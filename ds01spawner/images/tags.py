"""Docker names of project images (pure functions).

A project image is ``<prefix>-<user>/<project>:<hash>``, e.g. ``ds01-alice/thesis:3f2a...``.
Docker repository components are ``[a-z0-9]`` runs joined by single ``.``, ``_`` or ``-``
(or several ``-``), so a username becomes a component like this:

- names that already are one, without ``--`` (``alice``, ``j.doe``, ``ann_fe``, ``bob-2``) are
  kept as they are;
- any other name becomes ``x--`` and the hex of its UTF-8 bytes (``Alice`` -> ``x--416c696365``),
  and kept names never contain ``--``, so no two users share a repository.

The prefix is the spawner's ``prefix`` (``ds01``; test hubs use their own), so images of
different hubs on one engine never mix. The default allowed base images (``ds01/*``) never
match a project image (``ds01-...``): a user cannot start FROM another user's image.
"""

from __future__ import annotations

import hashlib
import re

#: one path component of a Docker repository name
COMPONENT_RE = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_KEPT_USER_RE = re.compile(r"[a-z0-9]+(?:[._-][a-z0-9]+)*")
TAG_HEX = 20  # characters of the content hash in the tag (80 bits)
_MAX_COMPONENT = 120


class TagError(ValueError):
    """A prefix that cannot start a Docker repository name (an admin's configuration)."""


def user_component(username: str) -> str:
    """The username as a Docker repository component; injective (see the module text)."""
    if _KEPT_USER_RE.fullmatch(username) and len(username) <= _MAX_COMPONENT:
        return username
    if not username:
        return "e--0"  # JupyterHub has no empty names; still never another user's component
    encoded = username.encode("utf-8", "surrogatepass").hex()
    if len(encoded) > _MAX_COMPONENT:
        return "h--" + hashlib.sha256(username.encode("utf-8", "surrogatepass")).hexdigest()
    return "x--" + encoded


def repository(prefix: str, username: str, project: str) -> str:
    """``<prefix>-<user component>/<project>``; TagError for a prefix Docker would refuse."""
    first = f"{prefix}-{user_component(username)}"
    if not COMPONENT_RE.fullmatch(first):
        raise TagError(
            f"The spawner prefix {prefix!r} cannot start a Docker image name: use lowercase "
            f"letters and digits, e.g. 'ds01'."
        )
    if not COMPONENT_RE.fullmatch(project):
        raise TagError(f"{project!r} cannot be part of a Docker image name")
    return f"{first}/{project}"


def user_repositories(prefix: str, username: str) -> str:
    """A ``reference`` filter for all of a user's project images: ``<prefix>-<user>/*``."""
    return f"{prefix}-{user_component(username)}/*"


def image_tag(digest: str) -> str:
    """The tag for a content hash (hex sha256)."""
    if not re.fullmatch(r"[0-9a-f]{64}", digest):
        raise ValueError(f"not a sha256 hex digest: {digest!r}")
    return digest[:TAG_HEX]


def image_ref(prefix: str, username: str, project: str, digest: str) -> str:
    return f"{repository(prefix, username, project)}:{image_tag(digest)}"


def split_ref(ref: str) -> tuple[str, str]:
    """``("repo", "tag")`` of ``repo:tag``."""
    repo, _, tag = ref.rpartition(":")
    if not repo or "/" in tag:
        return ref, "latest"
    return repo, tag

"""Project names and the Docker names derived from them (pure functions).

A project is a JupyterHub named server, so a project name follows JupyterHub 6's rule for
server names: a short slug. Every name we derive from (user, server) must be deterministic and
injective, so two different (user, server) pairs never share a container.
"""

from __future__ import annotations

import re
import string

#: JupyterHub 6's safe slug: lowercase letters, digits and single hyphens, starting with a letter.
PROJECT_NAME_MAX = 30
_PROJECT_RE = re.compile(r"[a-z](?:[a-z0-9]|-(?!-))*")

VALID_NAME_SENTENCE = (
    "A project name uses lowercase letters a-z, digits and single hyphens, starts with a letter, "
    "does not end with a hyphen and has at most 30 characters, for example 'my-thesis'."
)

# Characters kept as they are when a username becomes part of a Docker or path name.
_SAFE_USER_CHARS = set(string.ascii_lowercase + string.digits + "-")
_PATH_SAFE_USER_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._@+-]{0,127}")


class InvalidProjectName(ValueError):
    """A project name that is not a valid slug; str() is a sentence for the user."""


_SHOWABLE_RE = re.compile(r"[A-Za-z0-9 _.+@-]*")


def project_name_problem(name: object) -> str | None:
    """Return why ``name`` is not a valid project name, or None when it is valid.

    >>> project_name_problem("my-thesis") is None
    True
    >>> project_name_problem("My Thesis")
    "'My Thesis' is not a valid project name. A project name uses ..."  # doctest: +SKIP
    """
    if not isinstance(name, str):
        return f"The project name must be text, not {type(name).__name__}. {VALID_NAME_SENTENCE}"
    # Repeat the name only when it is harmless text: never markup or control characters.
    if _SHOWABLE_RE.fullmatch(name[:40]):
        shown = repr(name[:40]) + ("..." if len(name) > 40 else "")
    else:
        shown = "This name"
    if name == "":
        return f"The project name is empty. {VALID_NAME_SENTENCE}"
    if len(name) > PROJECT_NAME_MAX:
        return f"{shown} is {len(name)} characters long. {VALID_NAME_SENTENCE}"
    if not _PROJECT_RE.fullmatch(name) or name.endswith("-"):
        return f"{shown} is not a valid project name. {VALID_NAME_SENTENCE}"
    return None


def validate_project_name(name: object) -> str:
    """Return ``name`` when it is a valid project name, else raise InvalidProjectName."""
    problem = project_name_problem(name)
    if problem:
        raise InvalidProjectName(problem)
    assert isinstance(name, str)
    return name


def _escape(text: str, escape_char: str) -> str:
    """Each character outside ``_SAFE_USER_CHARS`` as ``<escape_char>XX`` per UTF-8 byte, always
    two hex digits (escapism writes ``\x02`` as ``_2``, so ``j\x02edoe`` and ``j.doe`` collided)."""
    out = []
    for ch in text:
        if ch in _SAFE_USER_CHARS:
            out.append(ch)
        else:
            out.extend(f"{escape_char}{b:02X}" for b in ch.encode("utf-8", "surrogatepass"))
    return "".join(out)


def escape_username(username: str) -> str:
    """Escape a JupyterHub username into ``[a-z0-9_-]``, injectively.

    Lowercase letters, digits and '-' stay; everything else (the escape character '_' included)
    becomes ``_xx`` hex bytes, so the result never contains '.'.
    """
    return _escape(username, "_").lower()


def container_name(username: str, server_name: str, prefix: str = "ds01") -> str:
    """Deterministic, collision-free container name for a user's server.

    ``<prefix>-<escaped user>.<server>``; the default (unnamed) server is ``_default``, which no
    slug can be. The escaped user has no '.', and a server name has none either, so the last '.'
    separates the two parts and different (user, server) pairs never give the same name.

    >>> container_name("a-b", "c"), container_name("a", "b-c")
    ('ds01-a-b.c', 'ds01-a.b-c')
    """
    return f"{prefix}-{escape_username(username)}.{server_name or '_default'}"


def hub_id(db_url: str) -> str:
    """A short, stable id of one hub: its database (``ds01.hub`` label). Containers of another
    hub on the same engine (a demo next to production) are never swept as orphans."""
    import hashlib

    return hashlib.sha256(db_url.encode()).hexdigest()[:12]


def oauth_client_id(username: str, server_name: str) -> str:
    """An OAuth client id for a user's server that no other (user, server) pair shares.

    JupyterHub 6 uses ``jupyterhub-user-<user>-<server>``, so user ``a-b`` with server ``c`` and
    user ``a`` with server ``b-c`` get the same client and the second launch fails with a
    database error. This uses the container-name scheme instead (cookie-safe characters only).
    """
    return container_name(username, server_name, prefix="jupyterhub-user")


def path_safe_username(username: str) -> str:
    """The username as used in a workspace path; injective, never walks out of a folder.

    System account names (``alice``, ``j.doe``, ``ann_fe``) are kept as they are so that
    templates like ``/home/{username}/workspace`` find the real home. Anything else (``..``,
    '/', NUL, whitespace, upper-case-only oddities longer than 128 characters) is escaped with
    '%' as the escape character, which no kept name contains, so two users never share a path.
    """
    if _PATH_SAFE_USER_RE.fullmatch(username) and username not in (".", ".."):
        return username
    return _escape(username, "%")

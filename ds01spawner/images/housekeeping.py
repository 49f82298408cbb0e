"""A user's project images: list them, delete them, keep the newest few per project.

Blocking calls on a docker-py ``APIClient``: call them in a thread. An image that a container
uses (running or not) is never deleted. Deleting a project image removes its tag; the image
itself goes when no other tag (another user's identical project) refers to it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import docker

from .tags import repository, split_ref, user_repositories


@dataclass(frozen=True)
class ProjectImage:
    ref: str  # repository:tag
    project: str
    tag: str
    image_id: str
    created: int  # epoch seconds
    size: int  # bytes
    in_use: bool  # a container (any state) runs this image


def images_in_use(api) -> set[str]:
    return {c.get("ImageID", "") for c in api.containers(all=True)}


def list_images(api, prefix: str, username: str, project: str | None = None) -> list[ProjectImage]:
    """The user's project images (of one project, or all), newest first."""
    pattern = user_repositories(prefix, username)  # <prefix>-<user>/*
    owner = pattern[:-1]
    wanted = repository(prefix, username, project) if project else None
    used = images_in_use(api)
    found = []
    for image in api.images(filters={"reference": pattern}):
        for ref in image.get("RepoTags") or []:
            repo, tag = split_ref(ref)
            if not repo.startswith(owner) or "/" in repo[len(owner) :]:
                continue  # the engine's filter also matches other forms of a name
            if wanted and repo != wanted:
                continue
            found.append(
                ProjectImage(
                    ref=ref,
                    project=repo[len(owner) :],
                    tag=tag,
                    image_id=image["Id"],
                    created=int(image.get("Created", 0)),
                    size=int(image.get("Size", 0)),
                    in_use=image["Id"] in used,
                )
            )
    found.sort(key=lambda i: (i.created, i.ref), reverse=True)
    return found


def delete_images(api, images: Iterable[ProjectImage]) -> tuple[list[str], list[str]]:
    """Remove these tags; returns (deleted refs, kept refs). Images in use are kept."""
    used = images_in_use(api)
    deleted, kept = [], []
    for image in images:
        if image.image_id in used:
            kept.append(image.ref)
            continue
        try:
            api.remove_image(image.ref)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as e:
            if e.status_code == 409:  # a container started using it meanwhile
                kept.append(image.ref)
                continue
            raise
        deleted.append(image.ref)
    return deleted, kept


def delete_user_images(
    api, prefix: str, username: str, project: str | None = None
) -> tuple[list[str], list[str]]:
    """Delete all project images of a user (or of one project); in-use ones are kept."""
    return delete_images(api, list_images(api, prefix, username, project))


def prune_project(
    api, prefix: str, username: str, project: str, keep: int, current: str | None = None
) -> list[str]:
    """Keep the newest ``keep`` images of a project (``current``, the one just chosen, always
    counts as one of them); delete the others unless a container uses them. Returns the refs
    deleted."""
    images = list_images(api, prefix, username, project)
    keep_refs = {current} if current else set()
    for image in images:
        if len(keep_refs) >= keep:
            break
        keep_refs.add(image.ref)
    deleted, _ = delete_images(api, [i for i in images if i.ref not in keep_refs])
    return deleted

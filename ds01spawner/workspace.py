"""Workspaces: where a user's projects live on the host, and the rule that keeps paths inside.

``<workspace root>/<project>`` is mounted at ``/workspace``. Every path is resolved before use and
must stay inside the user's workspace root; a project folder that is a symlink out of it is refused.
The functions here touch only the filesystem (no Docker, no hub), so they are tested directly.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .names import path_safe_username, validate_project_name


class WorkspaceError(Exception):
    """A workspace path that cannot be used; str() is a sentence for the user.

    ``admin_hint`` says what an admin can do about it (logged, not shown to the user).
    """

    def __init__(self, message: str, admin_hint: str = "") -> None:
        super().__init__(message)
        self.admin_hint = admin_hint


@dataclass(frozen=True)
class Workspace:
    """The resolved host paths of one project."""

    root: Path  # the user's workspace root, resolved
    project_dir: Path  # root / project, resolved; what is mounted at /workspace
    created: bool  # True when this call created the project folder


def workspace_root_for(template: str, username: str) -> Path:
    """Expand the ``workspace_root`` template for ``username`` (not resolved, not created)."""
    expanded = template.format(username=path_safe_username(username))
    path = Path(os.path.expanduser(expanded))
    if not path.is_absolute():
        raise WorkspaceError(
            "The workspace location of this server is misconfigured.",
            admin_hint=f"workspace_root must expand to an absolute path, got {expanded!r}",
        )
    return path


def is_inside(path: Path, root: Path) -> bool:
    """True when the resolved ``path`` is ``root`` or below it (both already resolved)."""
    return path == root or root in path.parents


def prepare_workspace(
    template: str, username: str, project: str, uid: int, gid: int, mode: int = 0o750
) -> Workspace:
    """Resolve (and on first launch create) the project folder, confined to the user's root.

    - The root is created with ``mode`` and owned by ``uid:gid`` when missing.
    - An existing project folder is used as it is; a new one is created owned by ``uid:gid``.
    - A project folder (or anything under the root) that resolves outside the root is refused,
      and nothing is created or changed.
    """
    validate_project_name(project)
    root = workspace_root_for(template, username)
    if not root.exists():
        _make_owned_dir(root, uid, gid, mode)
    root_real = root.resolve(strict=True)
    if not root_real.is_dir():
        raise WorkspaceError(
            "Your workspace folder exists but is not a folder; ask an admin to look at it.",
            admin_hint=f"{root} resolves to {root_real}, which is not a directory",
        )

    candidate = root_real / project
    if candidate.is_symlink() or candidate.exists():
        real = candidate.resolve(strict=True)
        if not is_inside(real, root_real) or real == root_real:
            raise WorkspaceError(
                f"The project folder '{project}' points outside your workspace "
                f"(it is a link to another place), so it cannot be mounted. "
                f"Replace the link with a real folder inside your workspace.",
                admin_hint=f"{candidate} resolves to {real}, outside {root_real}",
            )
        if not real.is_dir():
            raise WorkspaceError(
                f"'{project}' in your workspace is a file, not a folder. "
                f"Rename it or choose another project name.",
                admin_hint=f"{real} is not a directory",
            )
        return Workspace(root=root_real, project_dir=real, created=False)

    _make_owned_dir(candidate, uid, gid, mode, parents=False)
    real = candidate.resolve(strict=True)
    if not is_inside(real, root_real) or not real.is_dir():  # swapped for a link meanwhile
        raise WorkspaceError(
            f"The project folder '{project}' changed while it was being created; try again.",
            admin_hint=f"{candidate} resolves to {real} right after mkdir",
        )
    return Workspace(root=root_real, project_dir=real, created=True)


def _make_owned_dir(path: Path, uid: int, gid: int, mode: int, parents: bool = True) -> None:
    try:
        path.mkdir(mode=mode, parents=parents, exist_ok=False)
    except FileExistsError:
        return  # a concurrent launch made it first; the caller resolves and checks it
    except OSError as e:
        raise WorkspaceError(
            "Your workspace folder could not be created; an admin has been told.",
            admin_hint=f"mkdir {path} failed: {e}",
        ) from e
    try:
        os.chown(path, uid, gid, follow_symlinks=False)
        os.chmod(path, mode)
    except PermissionError as e:
        raise WorkspaceError(
            "Your workspace folder could not be given to your account; an admin has been told.",
            admin_hint=(
                f"chown {uid}:{gid} {path} failed ({e}). Run the hub as root, or set "
                f"user_uid/user_gid to the hub's own uid and gid."
            ),
        ) from e

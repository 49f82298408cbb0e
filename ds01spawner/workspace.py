"""Workspaces: where a user's projects live on the host, and the rules that keep paths inside.

``<workspace root>/<project>`` is mounted at ``/workspace``. The hub runs as root and gives new
folders to the user, so nothing here may be steered by a link the user made:

- The workspace root may be a symbolic link only when root owns the link and the folder that
  holds it (an admin's ``/home -> /data/home``); a link the user could have made or replaced
  (e.g. ``~/workspace -> /usr/lib/python3``) is refused.
- Folders are created and given to the user through file descriptors opened with
  ``O_NOFOLLOW`` (mkdir, open, fchown, fchmod relative to the parent's descriptor), so a folder
  swapped for a link between the check and the chown is refused, never followed.
- A project folder that is a link must resolve inside the user's root.
"""

from __future__ import annotations

import os
import stat
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


_LINK_REFUSED = (
    "Your workspace folder is a link to another place, which DS01 does not follow. "
    "Ask an admin to look at it."
)


def _check_root_link(root: Path) -> None:
    """Refuse a root that is a link anyone but root could have made or replaced."""
    try:
        st = os.lstat(root)
    except FileNotFoundError:
        return
    if not stat.S_ISLNK(st.st_mode):
        return
    parent = os.stat(root.parent)
    admin_made = st.st_uid == 0 and parent.st_uid == 0 and not parent.st_mode & 0o022
    if not admin_made:
        raise WorkspaceError(
            _LINK_REFUSED,
            admin_hint=(
                f"{root} is a symlink to {os.readlink(root)} owned by uid {st.st_uid} in "
                f"{root.parent} (owner uid {parent.st_uid}, mode {oct(parent.st_mode & 0o777)}); "
                f"only root-owned links in root-owned, not group/world-writable folders are "
                f"followed"
            ),
        )


def prepare_workspace(
    template: str, username: str, project: str, uid: int, gid: int, mode: int = 0o750
) -> Workspace:
    """Resolve (and on first launch create) the project folder, confined to the user's root.

    - The root is created with ``mode`` and owned by ``uid:gid`` when missing.
    - An existing project folder is used as it is; a new one is created owned by ``uid:gid``.
    - A project folder that resolves outside the root, or a root that is a link the user could
      have made, is refused, and nothing is created or changed.
    """
    validate_project_name(project)
    root = workspace_root_for(template, username)
    _check_root_link(root)
    if not os.path.lexists(root):
        _make_owned_dir(root.parent, root.name, uid, gid, mode, parents=True)
    try:
        root_real = root.resolve(strict=True)
    except (FileNotFoundError, RuntimeError) as e:  # a dangling or looping link
        raise WorkspaceError(_LINK_REFUSED, admin_hint=f"{root} does not resolve: {e}") from e
    if not root_real.is_dir():
        raise WorkspaceError(
            "Your workspace folder exists but is not a folder; ask an admin to look at it.",
            admin_hint=f"{root} resolves to {root_real}, which is not a directory",
        )

    candidate = root_real / project
    if os.path.lexists(candidate):
        try:
            real = candidate.resolve(strict=True)
        except (FileNotFoundError, RuntimeError) as e:
            raise WorkspaceError(
                f"The project folder '{project}' is a link that leads nowhere, so it cannot be "
                f"mounted. Replace it with a real folder inside your workspace.",
                admin_hint=f"{candidate} does not resolve: {e}",
            ) from e
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

    created = _make_owned_dir(root_real, project, uid, gid, mode)
    return Workspace(root=root_real, project_dir=candidate, created=created)


def _make_owned_dir(
    parent: Path, name: str, uid: int, gid: int, mode: int, parents: bool = False
) -> bool:
    """Create ``parent/name`` owned by ``uid:gid`` without following links; False if it was
    there already (a concurrent launch made it first)."""
    if parents:
        parent.mkdir(parents=True, exist_ok=True)  # admin territory: /srv/ds01/workspaces
    try:
        parent_fd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as e:
        raise WorkspaceError(
            "Your workspace folder could not be created; an admin has been told.",
            admin_hint=f"open {parent} failed: {e}",
        ) from e
    try:
        made = True
        try:
            os.mkdir(name, mode, dir_fd=parent_fd)
        except FileExistsError:
            made = False
        try:
            fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=parent_fd)
        except OSError as e:  # ELOOP/ENOTDIR: swapped for a link or a file meanwhile
            raise WorkspaceError(
                _LINK_REFUSED, admin_hint=f"{parent / name} is not a plain directory: {e}"
            ) from e
        try:
            if made:
                os.fchown(fd, uid, gid)
                os.fchmod(fd, mode)
        except PermissionError as e:
            raise WorkspaceError(
                "Your workspace folder could not be given to your account; an admin has been told.",
                admin_hint=(
                    f"chown {uid}:{gid} {parent / name} failed ({e}). Run the hub as root, or set "
                    f"user_uid/user_gid to the hub's own uid and gid."
                ),
            ) from e
        finally:
            os.close(fd)
    except OSError as e:
        raise WorkspaceError(
            "Your workspace folder could not be created; an admin has been told.",
            admin_hint=f"mkdir {parent / name} failed: {e}",
        ) from e
    finally:
        os.close(parent_fd)
    return made

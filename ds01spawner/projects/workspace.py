"""Workspaces: where a user's projects live on the host, and the rules that keep paths inside.

``<workspace root>/<project>`` is mounted at ``/workspace``. The hub runs as root and gives new
folders to the user, and a user can replace any folder they own with a link at any moment (the
documented ``/home/{username}/workspace`` sits in a folder the user owns). So nothing here uses a
path string twice:

- The root's folder is reached with ``safepath.open_dir``: from ``/``, one component at a time,
  ``O_NOFOLLOW | O_DIRECTORY``, following only links root made in folders only root can write
  (an admin's ``/home -> /data/home``). The root itself may be such a link; a link the user
  could have made or replaced (``~/workspace -> /usr/lib/python3``) is refused.
- The root and the project folder are created, opened and given to the user relative to those
  descriptors (``mkdir``/``open`` with ``dir_fd``, ``fchown``, ``fchmod``); a project folder that
  is a link is refused, never followed.
- The project folder's identity (device, inode) is kept in :class:`Workspace`; the spawner checks
  that the path still leads to it right before the container is created, and that the engine
  mounted that very folder once it runs (``safepath.still_there``, ``safepath.mounted_identity``).
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from .names import path_safe_username, validate_project_name
from .safepath import DIR_FLAGS, UnsafePath, identity, open_dir, trusted_link


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
    identity: tuple[int, int] = (0, 0)  # (device, inode) of the project folder


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


LINK_REFUSED = (
    "Your workspace folder is a link to another place, which DS01 does not follow. "
    "Ask an admin to look at it."
)


def _open_root(root: Path, uid: int, gid: int, mode: int) -> tuple[int, str]:
    """(descriptor, real path) of the user's root, created owned by ``uid:gid`` when missing.
    Its parent is admin territory: created (root's) when missing."""
    try:
        parent_fd, parent_real = open_dir(root.parent, make_missing=True)
    except OSError as e:
        raise WorkspaceError(
            LINK_REFUSED if isinstance(e, UnsafePath) else _NOT_CREATED,
            admin_hint=f"cannot open {root.parent}: {e}",
        ) from e
    try:
        _make_owned_dir(parent_fd, root.name, uid, gid, mode, str(root), allow_trusted_link=True)
    finally:
        os.close(parent_fd)
    try:
        return open_dir(f"{parent_real}/{root.name}")  # a trusted link is followed here
    except FileNotFoundError as e:
        raise WorkspaceError(LINK_REFUSED, admin_hint=f"{root} does not resolve: {e}") from e
    except OSError as e:
        raise WorkspaceError(LINK_REFUSED, admin_hint=f"{root}: {e}") from e


_NOT_CREATED = "Your workspace folder could not be created; an admin has been told."


def prepare_workspace(
    template: str, username: str, project: str, uid: int, gid: int, mode: int = 0o750
) -> Workspace:
    """Open (and on first launch create) the project folder, confined to the user's root.

    - The root is created with ``mode`` and owned by ``uid:gid`` when missing.
    - An existing project folder is used as it is; a new one is created owned by ``uid:gid``.
    - A project folder that is a link or a file, or a root that is a link the user could have
      made, is refused, and nothing is created or changed.
    """
    validate_project_name(project)
    root = workspace_root_for(template, username)
    root_fd, root_real = _open_root(root, uid, gid, mode)
    try:
        created = _make_owned_dir(root_fd, project, uid, gid, mode, f"{root_real}/{project}")
        fd = os.open(project, DIR_FLAGS, dir_fd=root_fd)
    except OSError as e:
        raise WorkspaceError(_NOT_CREATED, admin_hint=f"{root_real}/{project}: {e}") from e
    finally:
        os.close(root_fd)
    try:
        ident = identity(fd)
    finally:
        os.close(fd)
    return Workspace(
        root=Path(root_real),
        project_dir=Path(root_real) / project,
        created=created,
        identity=ident,
    )


def _make_owned_dir(
    parent_fd: int,
    name: str,
    uid: int,
    gid: int,
    mode: int,
    shown: str,
    allow_trusted_link: bool = False,
) -> bool:
    """Create ``name`` in the folder ``parent_fd`` owned by ``uid:gid`` without following links;
    False if it was there already (a concurrent launch made it first). An existing link is
    refused, except a link only root could have made when ``allow_trusted_link``."""
    made = True
    try:
        os.mkdir(name, mode, dir_fd=parent_fd)
    except FileExistsError:
        made = False
    except OSError as e:
        raise WorkspaceError(_NOT_CREATED, admin_hint=f"mkdir {shown} failed: {e}") from e
    try:
        fd = os.open(name, DIR_FLAGS, dir_fd=parent_fd)
    except OSError as e:  # ELOOP/ENOTDIR: a link or a file (swapped in meanwhile, perhaps)
        _refuse_entry(parent_fd, name, shown, allow_trusted_link, e)
        return False
    try:
        st = os.fstat(fd)
        if st.st_uid not in (uid, 0):  # someone else's folder, renamed in after the mkdir
            raise WorkspaceError(
                _NOT_CREATED, admin_hint=f"{shown} is owned by uid {st.st_uid}, not {uid}: refused"
            )
        if made and st.st_uid == 0:  # only the folder root made just now is given away
            os.fchown(fd, uid, gid)
            os.fchmod(fd, mode)
    except PermissionError as e:
        raise WorkspaceError(
            "Your workspace folder could not be given to your account; an admin has been told.",
            admin_hint=(
                f"chown {uid}:{gid} {shown} failed ({e}). Run the hub as root, or set "
                f"user_uid/user_gid to the hub's own uid and gid."
            ),
        ) from e
    finally:
        os.close(fd)
    return made


def _refuse_entry(parent_fd: int, name: str, shown: str, allow_link: bool, e: OSError) -> None:
    """Raise the WorkspaceError for ``name`` that is no plain folder, unless it is a link only
    root could have made and ``allow_link`` (then return: the caller follows it)."""
    try:
        st = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
    except OSError as e2:
        raise WorkspaceError(_NOT_CREATED, admin_hint=f"{shown}: {e2}") from e
    if stat.S_ISLNK(st.st_mode):
        if allow_link and trusted_link(st, os.fstat(parent_fd)):
            return
        folder = os.fstat(parent_fd)
        target = os.readlink(name, dir_fd=parent_fd)
        project = not allow_link
        raise WorkspaceError(
            (
                f"The project folder '{name}' is a link to another place, which DS01 does not "
                f"follow. Replace the link with a real folder inside your workspace."
            )
            if project
            else LINK_REFUSED,
            admin_hint=(
                f"{shown} is a symlink to {target} owned by uid {st.st_uid} in a folder owned "
                f"by uid {folder.st_uid} (mode {oct(folder.st_mode & 0o777)}); only root-owned "
                f"links in root-owned, not group/world-writable folders are followed"
            ),
        ) from e
    raise WorkspaceError(
        f"'{name}' in your workspace is a file, not a folder. "
        f"Rename it or choose another project name."
        if not allow_link
        else "Your workspace folder exists but is not a folder; ask an admin to look at it.",
        admin_hint=f"{shown} is not a directory",
    ) from e

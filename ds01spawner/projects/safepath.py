"""Open host folders as root without following any link a user could have made or swapped.

The hub runs as root and works in folders users own (their workspace, their projects): a user
can replace any folder of theirs with a symbolic link at any moment. So a path is never handed
to ``open``/``mkdir``/``chown`` as a string: :func:`open_dir` walks it from ``/`` one component
at a time, each opened ``O_NOFOLLOW | O_DIRECTORY`` relative to the descriptor of the folder
above, and the work is done on the descriptor it returns (``mkdir``/``open`` with ``dir_fd``,
``fchown``). A link on the way is followed only when nobody but root could have made or replaced
it: owned by root, in a root-owned folder that is not group- or world-writable (an admin's
``/home -> /data/home``, the system's ``/var/run -> /run``); any other link is refused.

What a descriptor refers to never changes, so a check made on it (``fstat``: device and inode)
holds for everything done through it. Imports nothing of the package.
"""

from __future__ import annotations

import errno
import os
import posixpath
import stat
from pathlib import Path

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
MAX_LINKS = 40


class UnsafePath(OSError):
    """A path that leads through a link a user could have made (or is no plain folder)."""


def trusted_link(link: os.stat_result, folder: os.stat_result) -> bool:
    """A link only root could have made or replaced: root's, in a root-owned folder that only
    root can write to."""
    return link.st_uid == 0 and folder.st_uid == 0 and not folder.st_mode & 0o022


def open_dir(path: str | os.PathLike, make_missing: bool = False) -> tuple[int, str]:
    """``(descriptor, real path)`` of the folder ``path`` (absolute), reached from ``/``
    without following any link but trusted ones (see the module docstring).

    ``make_missing``: create missing folders on the way (root's, mode 0755; only for folders
    admins own, like the parent of the workspace roots). FileNotFoundError when a component is
    missing, UnsafePath for an untrusted link or a component that is not a folder. The caller
    closes the descriptor.
    """
    path = os.fspath(path)
    if not posixpath.isabs(path):
        raise UnsafePath(errno.EINVAL, f"not an absolute path: {path}")
    todo = [p for p in path.split("/") if p not in ("", ".")]
    todo.reverse()  # a stack: the next component is last
    fd = os.open("/", DIR_FLAGS)
    real: list[str] = []
    links = 0
    try:
        while todo:
            name = todo.pop()
            if name == "..":
                child = os.open("..", DIR_FLAGS, dir_fd=fd)
                os.close(fd)
                fd = child
                if real:
                    real.pop()
                continue
            try:
                child = os.open(name, DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                if not make_missing:
                    raise
                try:
                    os.mkdir(name, 0o755, dir_fd=fd)
                except FileExistsError:
                    pass
                todo.append(name)
                continue
            except OSError as e:
                if e.errno not in (errno.ELOOP, errno.ENOTDIR):
                    raise
                here = "/" + "/".join(real + [name])
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                if not stat.S_ISLNK(st.st_mode):
                    raise UnsafePath(errno.ENOTDIR, f"{here} is not a folder") from e
                if not trusted_link(st, os.fstat(fd)):
                    raise UnsafePath(
                        errno.ELOOP,
                        f"{here} is a link (owner uid {st.st_uid}) that someone other than "
                        f"root could have made or replaced; it is not followed",
                    ) from e
                links += 1
                if links > MAX_LINKS:
                    raise UnsafePath(errno.ELOOP, f"too many links at {here}") from e
                target = os.readlink(name, dir_fd=fd)
                parts = [p for p in target.split("/") if p not in ("", ".")]
                todo.extend(reversed(parts))
                if target.startswith("/"):
                    os.close(fd)
                    fd = os.open("/", DIR_FLAGS)
                    real = []
                continue
            os.close(fd)
            fd = child
            real.append(name)
        return fd, "/" + "/".join(real)
    except BaseException:
        os.close(fd)
        raise


def identity(fd: int) -> tuple[int, int]:
    """(device, inode) of an open file: what a path must still lead to later."""
    st = os.fstat(fd)
    return st.st_dev, st.st_ino


def still_there(path: str | os.PathLike, expected: tuple[int, int]) -> bool:
    """Whether ``path``, walked as :func:`open_dir` walks it, is still the folder ``expected``
    ((device, inode) from :func:`identity`); False for a link, a missing or another folder."""
    try:
        fd, _ = open_dir(path)
    except OSError:
        return False
    try:
        return identity(fd) == expected
    finally:
        os.close(fd)


def mounted_identity(container_root: str | os.PathLike, target: str) -> tuple[int, int]:
    """(device, inode) of what is mounted at ``target`` inside a container whose root is
    ``container_root`` (``/proc/<pid of its init>/root``, seen from the host): proof of what the
    engine actually bound there; (-1, -1) when ``target`` is not a folder there.

    lstat: a link at ``target`` in the image would be resolved from the hub's root (an absolute
    target names a host path), not from the container's; a link is never what was mounted.
    """
    st = os.lstat(Path(container_root) / target.lstrip("/"))
    if not stat.S_ISDIR(st.st_mode):
        return (-1, -1)
    return st.st_dev, st.st_ino

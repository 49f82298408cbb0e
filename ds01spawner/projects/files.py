"""Files the hub (running as root) writes into, or reads from, a user's project folder.

A project folder belongs to its user, who may replace any folder or file in it with a symbolic
link at any moment (``.ds01 -> /etc``). So every step here walks the path one component at a
time with file descriptors opened ``O_NOFOLLOW``, starting from ``/`` (``safepath.open_dir``: only
links root made in root-only folders are followed above the project): a link anywhere in or below
the project folder is refused, never followed, and everything created is given to the user
(``fchown``) so that they can read, edit and delete it like their own files.

Used for ``.ds01/build.log`` (image builds), ``.ds01/notices.log`` (culler warnings) and the
files of a new project's template.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path, PurePosixPath

from .safepath import DIR_FLAGS, UnsafePath, open_dir


class ProjectFileError(OSError):
    """A path in a project folder that cannot be used safely (a link, a file where a folder
    should be, an unwritable folder). str() names the path relative to the project."""


def _parts(relpath: str) -> list[str]:
    parts = PurePosixPath(relpath).parts
    if not parts or PurePosixPath(relpath).is_absolute() or any(p in ("..", ".") for p in parts):
        raise ProjectFileError(f"{relpath!r} is not a plain relative path inside a project")
    return list(parts)


def _open_project(project_dir: Path | str | int) -> int:
    """A new descriptor of the project folder: ``project_dir`` walked from / (safepath), or,
    given an open folder descriptor, that same folder (the caller closes the new one)."""
    if isinstance(project_dir, int):
        return os.open(".", DIR_FLAGS, dir_fd=project_dir)
    try:
        fd, _ = open_dir(project_dir)  # from /, no link a user could swap (safepath)
    except UnsafePath as e:
        raise ProjectFileError(f"the project folder cannot be used safely ({e.strerror})") from e
    return fd


def _open_dir_chain(
    project_dir: Path | str | int,
    folders: list[str],
    uid: int,
    gid: int,
    dir_mode: int,
    create: bool,
) -> int:
    """An fd of ``project_dir/folders...``, made (owned by uid:gid) where missing when
    ``create``; every component opened without following links. The caller closes it."""
    fd = _open_project(project_dir)
    try:
        for i, name in enumerate(folders):
            if create:
                try:
                    os.mkdir(name, dir_mode, dir_fd=fd)
                    made = True
                except FileExistsError:
                    made = False
            try:
                child = os.open(name, DIR_FLAGS, dir_fd=fd)
            except OSError as e:
                shown = "/".join(folders[: i + 1])
                raise ProjectFileError(
                    f"{shown} in the project is not a plain folder ({e.strerror})"
                ) from e
            os.close(fd)
            fd = child
            st = os.fstat(fd)
            if st.st_uid not in (uid, 0):
                shown = "/".join(folders[: i + 1])
                raise ProjectFileError(f"{shown} in the project is not your own folder")
            if create and made and st.st_uid == 0:
                # only a folder root made just now (a folder renamed in between keeps its owner)
                os.fchown(fd, uid, gid)
                os.fchmod(fd, dir_mode)
        return fd
    except BaseException:
        os.close(fd)
        raise


def write_project_file(
    project_dir: Path | str | int,
    relpath: str,
    data: bytes | str,
    uid: int,
    gid: int,
    *,
    append: bool = False,
    mode: int = 0o640,
    dir_mode: int = 0o750,
    exclusive: bool = False,
) -> None:
    """Write (or append to) ``project_dir/relpath`` as a file owned by ``uid:gid``.
    ``project_dir``: a path (walked from /) or a descriptor of the folder, already opened safely.

    Missing folders on the way are created owned by the user. A link at any component, or a
    file that is not a regular file, raises ProjectFileError and nothing is written through it.
    ``exclusive``: fail with FileExistsError when the file exists (templates never overwrite).
    """
    if isinstance(data, str):
        data = data.encode("utf-8")
    *folders, filename = _parts(relpath)
    dir_fd = _open_dir_chain(project_dir, folders, uid, gid, dir_mode, create=True)
    try:
        flags = os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
        flags |= os.O_APPEND if append else 0
        try:
            try:  # made here, by root: the one file that is given to the user
                fd = os.open(filename, flags | os.O_CREAT | os.O_EXCL, mode, dir_fd=dir_fd)
                made = True
            except FileExistsError:
                if exclusive:
                    raise
                fd, made = os.open(filename, flags, dir_fd=dir_fd), False
        except FileExistsError:
            raise
        except OSError as e:  # ELOOP: a link; EISDIR; ENXIO: a fifo without reader
            raise ProjectFileError(
                f"{relpath} in the project cannot be written ({e.strerror})"
            ) from e
        try:
            st = os.fstat(fd)
            if not _is_regular(st.st_mode):
                raise ProjectFileError(f"{relpath} in the project is not a regular file")
            if not made and (st.st_uid != uid or st.st_nlink != 1):
                # a hard link (to another user's file, a system file) or someone else's file:
                # root never writes it, truncates it or gives it away
                raise ProjectFileError(
                    f"{relpath} in the project is a hard link or not your own file"
                )
            if made:
                os.fchown(fd, uid, gid)
            if not append:
                os.ftruncate(fd, 0)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
    finally:
        os.close(dir_fd)


def read_project_file(project_dir: Path | str, relpath: str, max_bytes: int = 1 << 20) -> bytes:
    """The last ``max_bytes`` of ``project_dir/relpath``, read without following any link.

    FileNotFoundError when it is missing; ProjectFileError for a link or a non-regular file.
    """
    *folders, filename = _parts(relpath)
    dir_fd = _open_dir_chain(project_dir, folders, 0, 0, 0, create=False)
    try:
        try:
            fd = os.open(filename, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dir_fd)
        except FileNotFoundError:
            raise
        except OSError as e:
            raise ProjectFileError(f"{relpath} in the project cannot be read ({e.strerror})") from e
        try:
            st = os.fstat(fd)
            if not _is_regular(st.st_mode):
                raise ProjectFileError(f"{relpath} in the project is not a regular file")
            if st.st_size > max_bytes:
                os.lseek(fd, st.st_size - max_bytes, os.SEEK_SET)
            chunks, left = [], max_bytes
            while left > 0:
                chunk = os.read(fd, min(left, 1 << 16))
                if not chunk:
                    break
                chunks.append(chunk)
                left -= len(chunk)
            return b"".join(chunks)
        finally:
            os.close(fd)
    finally:
        os.close(dir_fd)


def _is_regular(st_mode: int) -> bool:
    return stat.S_ISREG(st_mode)


def make_project_dirs(
    project_dir: Path | str, relpath: str, uid: int, gid: int, dir_mode: int = 0o750
) -> None:
    """Create ``project_dir/relpath`` (and the folders above it) owned by ``uid:gid``; a link
    on the way raises ProjectFileError."""
    fd = _open_dir_chain(project_dir, _parts(relpath), uid, gid, dir_mode, create=True)
    os.close(fd)

"""The culler in the user's project folder: the keep-alive file's age, and ``.ds01/notices.log``.

The folder is the host folder mounted at ``/workspace`` (the container's mount source, resolved
when the server started). The user owns it and may put a link in place of any part of it at any
moment, so the folder is opened one component at a time with ``O_NOFOLLOW`` from ``/``: a link
anywhere on the way is refused, never followed. Below it, ``project_files`` writes without
following links and gives what it creates to the user.
"""

from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import PurePosixPath

from ..projects.files import ProjectFileError, write_project_file

KEEP_ALIVE = ".keep-alive"
NOTICES = ".ds01/notices.log"

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def open_folder(path: str) -> int:
    """A descriptor of the absolute folder ``path``, no component of which may be a link.
    ProjectFileError otherwise (the caller closes the descriptor)."""
    p = PurePosixPath(path)
    if not p.is_absolute() or ".." in p.parts:
        raise ProjectFileError(f"{path!r} is not an absolute folder path")
    fd = os.open("/", _DIR_FLAGS)
    try:
        for name in p.parts[1:]:
            try:
                child = os.open(name, _DIR_FLAGS, dir_fd=fd)
            except OSError as e:
                raise ProjectFileError(
                    f"{path} cannot be opened without following links ({e.strerror} at {name!r})"
                ) from e
            os.close(fd)
            fd = child
        return fd
    except BaseException:
        os.close(fd)
        raise


def keep_alive_mtime(folder: str) -> datetime | None:
    """When ``/workspace/.keep-alive`` was last touched (a link's own time, never its target's);
    None when there is none. OSError/ProjectFileError when the folder cannot be read."""
    fd = open_folder(folder)
    try:
        st = os.stat(KEEP_ALIVE, dir_fd=fd, follow_symlinks=False)
    except FileNotFoundError:
        return None
    finally:
        os.close(fd)
    return datetime.fromtimestamp(st.st_mtime, timezone.utc)


def notice_line(at: datetime, kind: str, reason: str, message: str) -> str:
    """One line of notices.log: ``<time UTC>  <kind>  <reason>  <message>``."""
    text = " ".join(message.split())  # one line, whatever the message holds
    return f"{at.astimezone(timezone.utc):%Y-%m-%dT%H:%M:%SZ}  {kind}  {reason}  {text}\n"


def append_notice(folder: str, uid: int, gid: int, line: str) -> None:
    """Append ``line`` to ``<folder>/.ds01/notices.log``, created owned by ``uid:gid``."""
    fd = open_folder(folder)
    try:
        # /proc/self/fd/N is a link root made: open_dir follows it by its text, i.e. the
        # folder's path now, walked again from / without following any user's link
        write_project_file(f"/proc/self/fd/{fd}", NOTICES, line, uid, gid, append=True)
    finally:
        os.close(fd)

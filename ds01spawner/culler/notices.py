"""The culler in the user's project folder: the keep-alive file's age, and ``.ds01/notices.log``.

The folder is the host folder mounted at ``/workspace`` (the container's mount source, resolved
when the server started). The user owns it and may put a link in place of any part of it at any
moment, so the folder is opened one component at a time with ``O_NOFOLLOW`` from ``/``
(``safepath.open_dir``): a link a user could have made is refused, never followed. Below that
descriptor, ``projects.files`` writes without following links and gives what it creates to the
user.
"""

from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import PurePosixPath

from ..projects.files import ProjectFileError, write_project_file
from ..projects.safepath import open_dir

KEEP_ALIVE = ".keep-alive"
NOTICES = ".ds01/notices.log"


def open_folder(path: str) -> int:
    """A descriptor of the absolute folder ``path``, walked from / by ``safepath.open_dir`` (no
    link a user could have made or swapped is followed). ProjectFileError otherwise (the caller
    closes the descriptor)."""
    p = PurePosixPath(path)
    if not p.is_absolute() or ".." in p.parts:
        raise ProjectFileError(f"{path!r} is not an absolute folder path")
    try:
        fd, _ = open_dir(path)
    except OSError as e:
        raise ProjectFileError(f"{path} cannot be opened without following links ({e})") from e
    return fd


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
        write_project_file(fd, NOTICES, line, uid, gid, append=True)
    finally:
        os.close(fd)

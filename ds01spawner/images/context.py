"""The build context of a project: what Docker would send (its hash and tar stream: ``tarball``).

The project folder belongs to the user, and the hub reads it as root, so nothing here ever
follows a link: folders are walked through descriptors opened ``O_NOFOLLOW``, links go into the
context as links (as ``docker build`` sends them), every file is opened ``O_NOFOLLOW`` and must
still be the file that was scanned, and a file the user could not read themselves is refused
(else a hard link could smuggle someone else's file into their image).

What is left out, in order: the admin's default excludes (``data``, ``models``, ``outputs``,
``.git``), then the project's ``.dockerignore`` with Docker's semantics (``*``, ``?``, ``**``,
``[...]``, ``!`` exceptions, the last matching line wins, a pattern also matches everything
below a folder it matches), so ``!data/labels.csv`` can bring one file back. ``Dockerfile`` and
``.dockerignore`` are always sent (as Docker does), and ``.ds01/`` (DS01's own logs) never is:
a new build log must not change the hash.

The hash covers relative paths, kinds, permission bits, file contents and link targets, plus
what the caller adds (build arguments, base image ids). Modification times do not count.
"""

from __future__ import annotations

import os
import stat
from collections import Counter
from dataclasses import dataclass

from ..projects.safepath import DIR_FLAGS, open_dir
from .dockerignore import (  # noqa: F401  (context.<name>: the build context, one import)
    ALWAYS_SENT,
    DEFAULT_EXCLUDES,
    ContextError,
    IgnoreRules,
    Pattern,
    compile_pattern,
    parse_dockerignore,
)

ALWAYS_EXCLUDED = ".ds01"
HASH_FORMAT = "ds01-context-1"
MAX_ENTRIES = 200_000
MAX_DEPTH = 64
_DIR_FLAGS = DIR_FLAGS
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_CHUNK = 1 << 20


class ContextTooLarge(ContextError):
    pass


class ContextChanged(ContextError):
    """A file changed between the scan and reading it (the user is editing their project)."""


def human_size(n: int) -> str:
    size = float(n)
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{int(size)} bytes" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"  # pragma: no cover - loop always returns


# ---- scanning ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    path: str  # relative to the project, '/'-separated
    kind: str  # "dir", "file" or "link"
    mode: int  # permission bits
    size: int = 0
    target: str = ""  # of a link
    mtime: int = 0
    ident: tuple = ()  # (dev, ino) of a file: it must be the same file when it is read
    key: tuple = ()  # (dev, ino, size, mtime_ns, ctime_ns): the file hash cache's key


@dataclass(frozen=True)
class Reader:
    """Who the build is for: files they could not read themselves are refused."""

    uid: int
    gids: frozenset[int]

    def can_read(self, st: os.stat_result, folder: bool = False) -> bool:
        if st.st_uid == self.uid:
            bits = st.st_mode >> 6
        elif st.st_gid in self.gids:
            bits = st.st_mode >> 3
        else:
            bits = st.st_mode
        need = 0o5 if folder else 0o4
        return bits & need == need


@dataclass
class Snapshot:
    entries: list[Entry]
    total_bytes: int

    @property
    def files(self) -> int:
        return sum(1 for e in self.entries if e.kind == "file")


def open_project(project_dir: str | os.PathLike) -> int:
    """A descriptor of the project folder, walked from ``/`` without following any link a user
    could have made or swapped (``safepath.open_dir``): the hub (root) reads only what is there."""
    try:
        return open_dir(project_dir)[0]
    except OSError as e:
        raise ContextError(f"The project folder cannot be read ({e.strerror}).") from e


def read_top_file(project_dir: str | os.PathLike, name: str, max_bytes: int) -> bytes | None:
    """The file ``name`` at the top of the project, or None when there is none.

    A link, a folder or anything else that is not a regular file is refused, and so is a file
    over ``max_bytes``.
    """
    root = open_project(project_dir)
    try:
        try:
            fd = os.open(name, _FILE_FLAGS, dir_fd=root)
        except FileNotFoundError:
            return None
        except OSError as e:
            raise ContextError(
                f"{name} in your project cannot be read ({e.strerror}); it must be a plain "
                f"file, not a link."
            ) from e
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise ContextError(f"{name} in your project is not a plain file.")
            # The hub reads as root: a hard link to a file its user could not read (another
            # user's, a system file) must not be read, nor quoted back in a refusal.
            owner = os.fstat(root).st_uid
            if st.st_nlink != 1 or not (st.st_uid == owner or st.st_mode & 0o004):
                raise ContextError(
                    f"{name} in your project is a hard link or not your own file; copy its text "
                    f"into a new file of yours."
                )
            if st.st_size > max_bytes:
                raise ContextError(
                    f"{name} in your project is {human_size(st.st_size)}; at most "
                    f"{human_size(max_bytes)} is accepted."
                )
            data = _read_all(fd, max_bytes + 1)
            if len(data) > max_bytes:
                raise ContextError(f"{name} in your project grew while it was read.")
            return data
        finally:
            os.close(fd)
    finally:
        os.close(root)


def _read_all(fd: int, limit: int) -> bytes:
    chunks, left = [], limit
    while left > 0:
        chunk = os.read(fd, min(left, _CHUNK))
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def scan(
    project_dir: str | os.PathLike,
    rules: IgnoreRules,
    limit_bytes: int,
    reader: Reader | None = None,
    max_entries: int = MAX_ENTRIES,
) -> Snapshot:
    """Every entry of the build context, sorted by path; no file is read.

    ContextTooLarge when the files add up to more than ``limit_bytes`` (the message names the
    size, the largest folders and the fix); ContextError for files the user cannot read.
    """
    entries: list[Entry] = []
    by_top: Counter[str] = Counter()
    unreadable: list[str] = []
    total = 0

    def walk(dfd: int, rel: str, depth: int) -> None:
        nonlocal total
        for name in sorted(os.listdir(dfd)):
            if not rel and name == ALWAYS_EXCLUDED:
                continue
            path = f"{rel}/{name}" if rel else name
            try:
                st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
            except FileNotFoundError:
                continue
            excluded = rules.excluded(path)
            if stat.S_ISDIR(st.st_mode):
                if excluded and not rules.must_descend(path):
                    continue
                if reader and not reader.can_read(st, folder=True):
                    unreadable.append(path + "/")
                    continue
                if depth >= MAX_DEPTH:
                    raise ContextError(
                        f"Your project nests folders more than {MAX_DEPTH} deep ({path}); "
                        f"add that folder to .dockerignore."
                    )
                if not excluded:
                    entries.append(Entry(path, "dir", st.st_mode & 0o7777, mtime=int(st.st_mtime)))
                try:
                    child = os.open(name, _DIR_FLAGS, dir_fd=dfd)
                except OSError:  # replaced by a link or removed since the stat
                    raise ContextChanged(_changed_sentence(path)) from None
                try:
                    walk(child, path, depth + 1)
                finally:
                    os.close(child)
            elif excluded:
                continue
            elif stat.S_ISLNK(st.st_mode):
                target = os.readlink(name, dir_fd=dfd)
                entries.append(Entry(path, "link", 0o777, target=target, mtime=int(st.st_mtime)))
            elif stat.S_ISREG(st.st_mode):
                if reader and not reader.can_read(st):
                    unreadable.append(path)
                    continue
                entries.append(_file_entry(path, st))
                total += st.st_size
                by_top[path.split("/", 1)[0] + ("/" if "/" in path else "")] += st.st_size
            # sockets, fifos and devices are never part of a context
            if len(entries) > max_entries:
                raise ContextError(
                    f"Your build context has more than {max_entries:,} files and folders. "
                    f"Add large folders to .dockerignore (one per line, e.g. `dataset/`)."
                )

    root = open_project(project_dir)
    try:
        walk(root, "", 0)
    finally:
        os.close(root)
    _check_scanned(unreadable, total, limit_bytes, by_top)
    entries.sort(key=lambda e: e.path)
    return Snapshot(entries, total)


def _file_entry(path: str, st: os.stat_result) -> Entry:
    return Entry(
        path,
        "file",
        st.st_mode & 0o7777,
        size=st.st_size,
        mtime=int(st.st_mtime),
        ident=(st.st_dev, st.st_ino),
        key=(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns),
    )


def _check_scanned(
    unreadable: list[str], total: int, limit_bytes: int, by_top: Counter[str]
) -> None:
    """ContextError for unreadable files, ContextTooLarge over the limit (after the walk)."""
    if unreadable:
        more = f" (and {len(unreadable) - 5} more)" if len(unreadable) > 5 else ""
        raise ContextError(
            "Your build context has files you cannot read yourself, so they are never sent to "
            f"a build: {', '.join(unreadable[:5])}{more}. Make them readable to you "
            "(chmod u+r) or add them to .dockerignore."
        )
    if total > limit_bytes:
        largest = ", ".join(f"{k} ({human_size(v)})" for k, v in by_top.most_common(3))
        raise ContextTooLarge(
            f"The build context of your project is {human_size(total)}, more than the "
            f"{human_size(limit_bytes)} this server accepts, so no image was built. Largest: "
            f"{largest}. Add large folders to .dockerignore (one per line, e.g. `dataset/`); "
            f"{', '.join(d + '/' for d in DEFAULT_EXCLUDES)} are left out already, so data "
            f"kept there is always available in /workspace without being built in."
        )


def _changed_sentence(path: str) -> str:
    return (
        f"{path} in your project changed while its image was being prepared. "
        f"Launch again when you are done editing."
    )

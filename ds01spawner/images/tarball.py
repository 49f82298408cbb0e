"""The build context's content hash (``content_digest``, with ``FileHashCache``) and its tar
stream (``write_tar``), both from a ``context.Snapshot``: every file opened ``O_NOFOLLOW`` and
checked to be the file that was scanned.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import stat
import tarfile
import threading
from collections import OrderedDict
from collections.abc import Mapping

from .context import (
    _CHUNK,
    _DIR_FLAGS,
    _FILE_FLAGS,
    HASH_FORMAT,
    ContextChanged,
    Entry,
    Snapshot,
    _changed_sentence,
    open_project,
)

# ---- hashing and the tar stream ----------------------------------------------------------------


class FileHashCache:
    """sha256 of files by (dev, ino, size, mtime_ns, ctime_ns), so an unchanged project is
    hashed without reading it again (a user can set mtime, but never ctime)."""

    def __init__(self, max_entries: int = 100_000) -> None:
        self._data: OrderedDict[tuple, str] = OrderedDict()
        self._lock = threading.Lock()  # used from several threads of the hub
        self.max_entries = max_entries
        self.reads = 0  # files actually read (for tests)

    def get(self, key: tuple) -> str | None:
        with self._lock:
            value = self._data.get(key)
            if value is not None:
                self._data.move_to_end(key)
            return value

    def put(self, key: tuple, value: str) -> None:
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self.max_entries:
                self._data.popitem(last=False)


class _Opener:
    """Opens files of a project by relative path, each component ``O_NOFOLLOW``; keeps the
    last folder open (entries are sorted, so files of one folder come together)."""

    def __init__(self, root: int) -> None:
        self.root = root
        self._dir: tuple[str, int] | None = None

    def open(self, entry: Entry) -> int:
        folder, _, name = entry.path.rpartition("/")
        dfd = self._folder(folder)
        try:
            fd = os.open(name, _FILE_FLAGS, dir_fd=dfd)
        except OSError:
            raise ContextChanged(_changed_sentence(entry.path)) from None
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or (st.st_dev, st.st_ino) != entry.ident:
            os.close(fd)
            raise ContextChanged(_changed_sentence(entry.path))
        return fd

    def _folder(self, folder: str) -> int:
        if not folder:
            return self.root
        if self._dir and self._dir[0] == folder:
            return self._dir[1]
        self.close()
        fd = os.dup(self.root)
        try:
            for part in folder.split("/"):
                child = os.open(part, _DIR_FLAGS, dir_fd=fd)
                os.close(fd)
                fd = child
        except OSError:
            os.close(fd)
            raise ContextChanged(_changed_sentence(folder)) from None
        self._dir = (folder, fd)
        return fd

    def close(self) -> None:
        if self._dir:
            os.close(self._dir[1])
            self._dir = None


def _entry_record(entry: Entry, content: str) -> bytes:
    return (json.dumps([entry.kind, entry.path, oct(entry.mode), content]) + "\n").encode(
        "utf-8", "surrogateescape"
    )


def _digest_start(extra: Mapping[str, str]) -> hashlib._Hash:
    h = hashlib.sha256(HASH_FORMAT.encode() + b"\n")
    h.update((json.dumps(sorted(extra.items())) + "\n").encode())
    return h


def content_digest(
    project_dir: str | os.PathLike,
    snap: Snapshot,
    extra: Mapping[str, str],
    cache: FileHashCache | None = None,
) -> str:
    """The content hash (hex sha256) of a snapshot plus ``extra`` (build args, base image ids)."""
    h = _digest_start(extra)
    root = open_project(project_dir)
    opener = _Opener(root)
    try:
        for entry in snap.entries:
            if entry.kind == "file":
                content = cache.get(entry.key) if cache else None
                if content is None:
                    fd = opener.open(entry)
                    try:
                        content = _hash_fd(fd)
                        _same_as_scanned(fd, entry)
                    finally:
                        os.close(fd)
                    if cache:
                        cache.reads += 1
                        cache.put(entry.key, content)
            else:
                content = entry.target
            h.update(_entry_record(entry, content))
    finally:
        opener.close()
        os.close(root)
    return h.hexdigest()


def _same_as_scanned(fd: int, entry: Entry) -> None:
    """The file just read is still the one scanned (unchanged size, times and inode)."""
    st = os.fstat(fd)
    if (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns) != entry.key:
        raise ContextChanged(_changed_sentence(entry.path))


def _hash_fd(fd: int) -> str:
    h = hashlib.sha256()
    while True:
        chunk = os.read(fd, _CHUNK)
        if not chunk:
            return h.hexdigest()
        h.update(chunk)


class _HashingReader(io.RawIOBase):
    """A file descriptor read by tarfile, hashed on the way; exactly ``size`` bytes."""

    def __init__(self, fd: int, size: int, path: str) -> None:
        self.fd, self.left, self.path = fd, size, path
        self.sha = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        if self.left <= 0:
            return 0
        data = os.read(self.fd, min(len(buffer), self.left, _CHUNK))
        if not data:
            raise ContextChanged(_changed_sentence(self.path))
        buffer[: len(data)] = data
        self.left -= len(data)
        self.sha.update(data)
        return len(data)


def write_tar(
    project_dir: str | os.PathLike,
    snap: Snapshot,
    out,
    extra: Mapping[str, str],
    cache: FileHashCache | None = None,
) -> str:
    """Write the context as an uncompressed tar stream to ``out``; return the content hash of
    what was written (compare it with the planned one: the user may have edited meanwhile).

    Owners are 0:0 and names are relative, as ``docker build`` sends them.
    """
    h = _digest_start(extra)
    root = open_project(project_dir)
    opener = _Opener(root)
    try:
        with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
            for entry in snap.entries:
                info = tarfile.TarInfo(entry.path)
                info.mode, info.mtime = entry.mode, entry.mtime
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                if entry.kind == "dir":
                    info.type = tarfile.DIRTYPE
                    tar.addfile(info)
                    content = ""
                elif entry.kind == "link":
                    info.type, info.linkname = tarfile.SYMTYPE, entry.target
                    tar.addfile(info)
                    content = entry.target
                else:
                    fd = opener.open(entry)
                    try:
                        if os.fstat(fd).st_size != entry.size:
                            raise ContextChanged(_changed_sentence(entry.path))
                        info.size = entry.size
                        reader = _HashingReader(fd, entry.size, entry.path)
                        tar.addfile(info, io.BufferedReader(reader, _CHUNK))
                        content = reader.sha.hexdigest()
                        _same_as_scanned(fd, entry)
                    finally:
                        os.close(fd)
                    if cache:
                        cache.put(entry.key, content)
                h.update(_entry_record(entry, content))
    finally:
        opener.close()
        os.close(root)
    return h.hexdigest()

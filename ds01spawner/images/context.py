"""The build context of a project: what Docker would send, its content hash, its tar stream.

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

import hashlib
import io
import json
import os
import posixpath
import re
import stat
import tarfile
import threading
from collections import Counter, OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from ..projects.safepath import open_dir

DEFAULT_EXCLUDES = ("data", "models", "outputs", ".git")
ALWAYS_EXCLUDED = ".ds01"
ALWAYS_SENT = ("Dockerfile", ".dockerignore")
HASH_FORMAT = "ds01-context-1"
MAX_ENTRIES = 200_000
MAX_DEPTH = 64
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_CHUNK = 1 << 20
_REGEX_ESCAPED = ".+()|{}$"  # what Docker's patternmatcher escapes


class ContextError(ValueError):
    """A build context DS01 will not send; str() is a sentence for the user."""


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


# ---- .dockerignore -----------------------------------------------------------------------------


def parse_dockerignore(text: str) -> list[tuple[int, str]]:
    """``[(line number, pattern)]`` as Docker reads ``.dockerignore``: ``#`` comment lines and
    blank lines dropped, whitespace trimmed, patterns cleaned (``./a//b/`` -> ``a/b``), a
    leading ``/`` removed; exceptions keep their ``!``."""
    out = []
    for n, line in enumerate(text.lstrip("\ufeff").split("\n"), 1):
        if line.startswith("#"):
            continue
        pattern = line.strip()
        if not pattern:
            continue
        invert = pattern.startswith("!")
        if invert:
            pattern = pattern[1:].strip()
        if pattern:
            pattern = _clean(pattern)
            if len(pattern) > 1 and pattern.startswith("/"):
                pattern = pattern[1:]
        out.append((n, ("!" if invert else "") + pattern))
    return out


def _clean(path: str) -> str:
    """Go's filepath.Clean for '/'-separated paths."""
    cleaned = posixpath.normpath(path)
    return "/" + cleaned.lstrip("/") if cleaned.startswith("//") else cleaned


@dataclass(frozen=True)
class Pattern:
    text: str  # cleaned, without '!'
    exclusion: bool  # a '!' line: brings matching paths back
    regex: re.Pattern
    where: str  # where it came from, for messages

    def matches(self, path: str) -> bool:
        return self.regex.match(path) is not None


def compile_pattern(pattern: str, where: str) -> Pattern:
    """Compile one pattern the way Docker's patternmatcher does (``*`` and ``?`` never match
    '/', ``**`` matches any number of folders, ``\\`` escapes, ``[...]`` is a class)."""
    exclusion = pattern.startswith("!")
    text = pattern[1:] if exclusion else pattern
    if exclusion and not text:
        raise ContextError(f'{where} is "!" alone, which Docker does not accept.')
    text = _clean(text)
    regex = ["^"]
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == "*":
            if i + 1 < n and text[i + 1] == "*":
                i += 2
                if i < n and text[i] == "/":
                    i += 1
                regex.append(".*" if i >= n else "(.*/)?")
                continue
            regex.append("[^/]*")
        elif c == "?":
            regex.append("[^/]")
        elif c == "\\":
            if i + 1 < n:
                i += 1
                regex.append(re.escape(text[i]))
            else:
                regex.append(re.escape("\\"))
        elif c in _REGEX_ESCAPED:
            regex.append("\\" + c)
        else:  # as Docker: '[', ']', '^', '-' ... reach the regular expression as they are
            regex.append(c)
        i += 1
    regex.append("$")
    try:
        compiled = re.compile("".join(regex), re.S)
    except re.error as e:
        raise ContextError(f"{where} ({pattern!r}) is not a valid pattern: {e}.") from e
    return Pattern(text, exclusion, compiled, where)


class IgnoreRules:
    """The patterns that decide what is left out of a build context."""

    def __init__(self, patterns: Iterable[Pattern]) -> None:
        self.patterns = list(patterns)
        self._has_exceptions = any(p.exclusion for p in self.patterns)

    @classmethod
    def for_project(
        cls, dockerignore: str | None, default_excludes: Iterable[str] = DEFAULT_EXCLUDES
    ) -> IgnoreRules:
        patterns = [
            compile_pattern(p, f"The default exclude {p!r}") for p in default_excludes if p.strip()
        ]
        for n, p in parse_dockerignore(dockerignore or ""):
            patterns.append(compile_pattern(p, f"Line {n} of your .dockerignore"))
        rules = cls(patterns)
        # Docker always sends the Dockerfile and .dockerignore, even when a line excludes them
        for name in ALWAYS_SENT:
            if rules.excluded(name):
                rules.patterns.append(compile_pattern("!" + name, "DS01"))
                rules._has_exceptions = True
        return rules

    def excluded(self, path: str) -> bool:
        """Docker's MatchesOrParentMatches: the last pattern that matches ``path`` or one of its
        parent folders decides."""
        parents = path.split("/")[:-1]
        prefixes = ["/".join(parents[: i + 1]) for i in range(len(parents))]
        matched = False
        for p in self.patterns:
            if p.exclusion != matched:
                continue
            hit = p.matches(path) or any(p.matches(d) for d in prefixes)
            if hit:
                matched = not p.exclusion
        return matched

    def must_descend(self, folder: str) -> bool:
        """Whether an excluded folder must still be walked: an exception pattern starts inside
        it (Docker's rule: a textual prefix match)."""
        if not self._has_exceptions:
            return False
        prefix = folder + "/"
        return any(p.exclusion and (p.text + "/").startswith(prefix) for p in self.patterns)


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
                entries.append(
                    Entry(
                        path,
                        "file",
                        st.st_mode & 0o7777,
                        size=st.st_size,
                        mtime=int(st.st_mtime),
                        ident=(st.st_dev, st.st_ino),
                        key=(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns),
                    )
                )
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
    entries.sort(key=lambda e: e.path)
    return Snapshot(entries, total)


def _changed_sentence(path: str) -> str:
    return (
        f"{path} in your project changed while its image was being prepared. "
        f"Launch again when you are done editing."
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

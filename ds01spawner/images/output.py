"""Build output, bounded: lines split in linear time, control sequences stripped, a kept log.

A build prints whatever its ``RUN`` steps print: nothing here trusts it. ``LineSplitter`` turns
the engine's chunks into lines in one pass over each chunk (a line never re-joins what came
before it), keeping at most ``MAX_LINE`` characters of a line and marking the rest as cut, so
50 MB without a newline costs O(n) time and 4 KiB of memory. ``clean`` removes ANSI escape and
other control sequences (colours, cursor moves, a terminal title), so neither the progress page
nor ``.ds01/build.log`` carries them. ``KeptLog`` keeps the first and last lines of a build within
a byte budget (a ring for the tail); ``trim`` keeps only a short tail once the build is over.

Pure: no I/O, no threads, no asyncio; imports nothing of DS01.
"""

from __future__ import annotations

import re
from collections import deque

MAX_LINE = 4096  # characters kept of one output line; the rest is cut
CUT_MARK = " [... {n} characters cut]"
HEAD_LINES = 500  # a build's first lines kept
HEAD_BYTES = 256 * 1024
TAIL_LINES = 2000  # and its last lines (a ring)
TAIL_BYTES = 1024 * 1024
FINISHED_TAIL_LINES = 200  # kept of a finished build

_SEPARATORS = re.compile(r"\r\n|\r|\n")
# CSI (ESC [ ... final), OSC (ESC ] ... BEL or ESC \), other two-character ESC sequences, the
# 8-bit CSI/OSC forms, then any remaining C0/C1 control character except TAB.
_CONTROL = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]?"
    r"|\x1b\][^\x07\x1b\n]*(?:\x07|\x1b\\)?"
    r"|\x1b[ -/]*[0-~]?"
    r"|\x9b[0-?]*[ -/]*[@-~]?"
    r"|\x9d[^\x07\x1b\n]*(?:\x07|\x1b\\)?"
    r"|[\x00-\x08\x0b-\x1f\x7f-\x9f]"
)


def clean(line: str) -> str:
    """``line`` without terminal control sequences or control characters (tabs stay)."""
    return _CONTROL.sub("", line)


class LineSplitter:
    """Chunks in, complete lines out; each character is looked at a bounded number of times."""

    def __init__(self, max_line: int = MAX_LINE) -> None:
        self.max_line = max_line
        self._parts: list[str] = []
        self._kept = 0  # characters in _parts
        self._cut = 0  # characters of the current line beyond max_line

    def _add(self, text: str) -> None:
        room = self.max_line - self._kept
        if room > 0:
            part = text[:room]
            self._parts.append(part)
            self._kept += len(part)
        self._cut += max(0, len(text) - max(room, 0))

    def _take(self) -> str:
        line = "".join(self._parts)
        if self._cut:
            line += CUT_MARK.format(n=self._cut)
        self._parts, self._kept, self._cut = [], 0, 0
        return line

    def feed(self, text: str) -> list[str]:
        """The lines that ``text`` completes (empty and blank lines left out, cleaned)."""
        parts = _SEPARATORS.split(text)
        if len(parts) == 1:
            self._add(text)
            return []
        out: list[str] = []
        self._add(parts[0])  # completes the line that was pending
        self._emit(out)
        middle = parts[1:-1]
        if middle:  # whole lines: cut, cleaned and filtered in a few passes over the chunk
            m = self.max_line
            cut = [p if len(p) <= m else p[:m] + CUT_MARK.format(n=len(p) - m) for p in middle]
            cleaned = clean("\n".join(cut)).split("\n")
            out.extend(line.rstrip() for line in cleaned if line.strip())
        self._add(parts[-1])
        return out

    def flush(self) -> list[str]:
        """The last line, when the output did not end with a newline."""
        out: list[str] = []
        if self._parts or self._cut:
            self._emit(out)
        return out

    def _emit(self, out: list[str]) -> None:
        line = clean(self._take()).rstrip()
        if line.strip():
            out.append(line)


class KeptLog:
    """The first lines of a build and a ring of its last ones, each part within a byte budget."""

    def __init__(
        self,
        head_lines: int = HEAD_LINES,
        head_bytes: int = HEAD_BYTES,
        tail_lines: int = TAIL_LINES,
        tail_bytes: int = TAIL_BYTES,
    ) -> None:
        self.head: list[str] = []
        self.tail: deque[str] = deque()
        self._head_room = (head_lines, head_bytes)
        self._tail_room = (tail_lines, tail_bytes)
        self._head_size = 0
        self._tail_size = 0
        self.dropped = 0
        self.count = 0  # lines ever added

    def add(self, line: str) -> None:
        self.count += 1
        size = len(line) + 1
        lines, room = self._head_room
        if not self.tail and len(self.head) < lines and self._head_size + size <= room:
            self.head.append(line)
            self._head_size += size
            return
        self.tail.append(line)
        self._tail_size += size
        lines, room = self._tail_room
        while len(self.tail) > lines or (self._tail_size > room and len(self.tail) > 1):
            self._tail_size -= len(self.tail.popleft()) + 1
            self.dropped += 1

    def add_many(self, lines: list[str]) -> None:
        """``add`` for a batch: the tail part without a Python step per kept line."""
        i = 0
        while i < len(lines) and not self.tail and len(self.head) < self._head_room[0]:
            self.add(lines[i])
            i += 1
            if self.tail:  # that line did not fit the head
                break
        rest = lines[i:]
        if not rest:
            return
        self.count += len(rest)
        max_lines, room = self._tail_room
        if len(rest) >= max_lines:
            self.dropped += len(self.tail) + len(rest) - max_lines
            rest = rest[-max_lines:]
            self.tail = deque(rest)
            self._tail_size = sum(map(len, rest)) + len(rest)
        else:
            self.tail.extend(rest)
            self._tail_size += sum(map(len, rest)) + len(rest)
        while len(self.tail) > max_lines or (self._tail_size > room and len(self.tail) > 1):
            self._tail_size -= len(self.tail.popleft()) + 1
            self.dropped += 1

    def lines(self) -> list[str]:
        """The kept log, with one line saying how many were left out in the middle."""
        if self.dropped:
            return [*self.head, f"... ({self.dropped} lines left out) ...", *self.tail]
        return [*self.head, *self.tail]

    def size(self) -> int:
        return self._head_size + self._tail_size

    def trim(self, keep: int = FINISHED_TAIL_LINES) -> None:
        """Keep only the last ``keep`` lines (a finished build)."""
        everything = [*self.head, *self.tail]
        self.dropped += max(0, len(everything) - keep)
        self.head, self._head_size = [], 0
        self.tail = deque(everything[-keep:] if keep else [])
        self._tail_size = sum(len(line) + 1 for line in self.tail)

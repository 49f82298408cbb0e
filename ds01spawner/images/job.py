"""One image build and everyone waiting for it: what is built, what it printed, its outcome.

The build thread records output (``BuildJob.record``, under a lock) into a bounded log
(``output.KeptLog``); the event loop hands new lines to the listeners in batches, at most one
batch pending and at most ``MAX_PENDING`` lines in it (more are counted, not queued), so a build
that prints without pause costs the event loop a bounded amount of work per iteration.

Imports only ``output`` of DS01; no Docker.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import BinaryIO

from .output import KeptLog

STEP_RE = re.compile(r"Step (\d+)/(\d+) : (.*)")
_NOISE = (" ---> ", "Removing intermediate container", "Successfully ")
MAX_PENDING = 1000  # output lines waiting for the event loop; more are counted, not queued
MAX_LATE_STEPS = 50  # step lines queued past MAX_PENDING (the page must not miss a new step)

log = logging.getLogger("ds01spawner.images")


@dataclass
class BuildSpec:
    key: str  # the content hash; builds with the same key are one build
    tag: str  # repository:tag of the result
    write_context: Callable[[BinaryIO], str]  # writes the tar; returns the hash it wrote
    buildargs: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    timeout: float = 600.0  # from the build's first step
    who: str = ""  # for log lines: user=... project=...
    container_limits: dict | None = None  # docker-py's: memory, memswap, cpushares, cpusetcpus
    engine_params: dict = field(default_factory=dict)  # more /build parameters: cpuquota, ...
    owner: str = ""  # the user whose build this is: one build per owner runs at a time


@dataclass
class BuildResult:
    image_id: str
    seconds: float
    steps: int


class BuildError(Exception):
    """The build failed: ``step`` is the failing ``Step n/m : ...`` line, ``tail`` the last lines
    of its output, ``reason`` the engine's error."""

    def __init__(self, reason: str, step: str | None, tail: list[str], seconds: float) -> None:
        super().__init__(reason)
        self.reason, self.step, self.tail, self.seconds = reason, step, tail, seconds


class BuildTimeout(BuildError):
    pass


class EngineError(Exception):
    """The Docker engine failed (not the Dockerfile)."""


class BuildJob:
    """One build and everyone waiting for it.

    The build thread records output (``record``, under a lock); the event loop hands it to the
    listeners in batches (``_deliver``)."""

    def __init__(self, spec: BuildSpec, loop: asyncio.AbstractEventLoop) -> None:
        self.spec = spec
        self.loop = loop
        self.future: asyncio.Future[BuildResult] = loop.create_future()
        self.future.add_done_callback(lambda f: f.cancelled() or f.exception())
        self.log = KeptLog()
        self.step: tuple[int, int, str] | None = None
        self.step_output: deque[str] = deque(maxlen=40)  # last lines of the current step
        self.started: float | None = None  # the build's first step (its thread started)
        self.finished_at: float | None = None
        self.state = "queued"  # "waiting" (owner's other build), "queued", "running", "done"
        self.container: str | None = None  # the container of the step that runs
        self.cancelled = threading.Event()
        self.thread_done = threading.Event()
        self.timer: asyncio.TimerHandle | None = None
        self.waiters = 0  # ever
        self.active = 0  # waiting now
        self._lock = threading.Lock()
        self._seq = 0
        self._pending: list[tuple[int, str]] = []
        self._skipped = 0
        self._scheduled = False
        self._listeners: list[tuple[Callable[[str], None], int]] = []

    # -- any thread --

    def record(self, line: str) -> None:
        """Keep ``line`` and queue it for the listeners (one loop callback per batch)."""
        self.record_many((line,))

    def record_many(self, lines) -> None:
        """``record`` for several lines under one lock (the build thread's chunks)."""
        lines = list(lines)
        if not lines:
            return
        schedule = False
        with self._lock:
            first = self._seq + 1
            self._seq += len(lines)
            self.log.add_many(lines)
            steps = [i for i, line in enumerate(lines) if line.startswith("Step ")]
            start = 0
            for i in steps:  # the output of the step that runs now starts after its line
                m = STEP_RE.fullmatch(lines[i])
                if m:
                    self.step = (int(m[1]), int(m[2]), m[3])
                    self.step_output.clear()
                    start = i + 1
            self.step_output.extend(line for line in lines[start:] if not line.startswith(_NOISE))
            room = max(0, MAX_PENDING - len(self._pending))
            self._pending.extend(enumerate(lines[:room], start=first))
            if len(lines) > room:
                # past the cap, only the newest real step line of the chunk, and a bounded few
                # of those: a RUN step can print "Step 1/1 : x" as often as it likes
                late = [(first + i, lines[i]) for i in steps[-1:] if i >= room]
                late = [(seq, line) for seq, line in late if STEP_RE.fullmatch(line)]
                if len(self._pending) >= MAX_PENDING + MAX_LATE_STEPS:
                    late = []
                self._pending.extend(late)
                self._skipped += len(lines) - room - len(late)
            if not self._scheduled:
                self._scheduled = schedule = True
        if schedule:
            try:
                self.loop.call_soon_threadsafe(self._deliver)
            except RuntimeError:  # the loop is closed: nobody listens
                pass

    def lines(self) -> list[str]:
        """The kept log (a very long one without its middle)."""
        with self._lock:
            return self.log.lines()

    def last_output(self) -> list[str]:
        with self._lock:
            return list(self.step_output)

    def step_line(self) -> str | None:
        return f"Step {self.step[0]}/{self.step[1]} : {self.step[2]}" if self.step else None

    def elapsed(self) -> float:
        """Seconds since the build's first step (0 while it waits for its turn)."""
        if self.started is None:
            return 0.0
        return (self.finished_at or time.monotonic()) - self.started

    # -- on the event loop --

    def _deliver(self) -> None:
        with self._lock:
            batch, skipped = self._pending, self._skipped
            self._pending, self._skipped, self._scheduled = [], 0, False
        for seq, line in batch:
            self._tell(line, seq)
        if skipped:
            self._tell(f"... ({skipped} lines of output not shown here) ...", self._seq)

    def _tell(self, line: str, seq: int) -> None:
        for listener, since in list(self._listeners):
            if seq > since:
                try:
                    listener(line)
                except Exception:  # noqa: BLE001 - one waiter's bug never stops the build
                    log.exception("Build output listener failed")

    def subscribe(self, listener: Callable[[str], None]) -> None:
        """Call ``listener`` with every line kept so far, then with each new one."""
        with self._lock:
            lines, seq = self.log.lines(), self._seq
        for line in lines:
            listener(line)
        self._listeners.append((listener, seq))

    def unsubscribe(self, listener: Callable[[str], None]) -> None:
        self._listeners = [(f, s) for f, s in self._listeners if f is not listener]

    def trim(self) -> None:
        with self._lock:
            self.log.trim()

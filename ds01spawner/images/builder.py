"""Image builds off the event loop: a bounded pool, one build per content hash, live output.

``docker build`` (the engine's classic builder, through docker-py's low-level ``APIClient``)
blocks a thread for as long as the build runs, so builds get their own small pool: however many
builds run, the spawner's Docker threads (and with them every other user's spawn, poll and page)
stay free. Output comes back line by line to the event loop (``loop.call_soon_threadsafe``),
where every launch waiting for the build sees it.

Builds are keyed by the content hash of everything the build reads, so concurrent launches that
need the same image (the same user twice, or two users with identical projects) await one build.

The timeout really ends a build: the waiters stop waiting at once, the container of the step
that runs (``---> Running in <id>``) is killed so the engine ends the build, and the connection's
read timeout bounds a silent engine.
"""

from __future__ import annotations

import asyncio
import logging
import re
import tempfile
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import BinaryIO

import docker
import requests

from ..logsafe import escape_line
from .context import ContextChanged

STEP_RE = re.compile(r"Step (\d+)/(\d+) : (.*)")
RUNNING_IN_RE = re.compile(r" ---> Running in ([0-9a-f]{12,64})")
_LINE_SPLIT = re.compile(r"\r\n|\r|\n")
_NOISE = (" ---> ", "Removing intermediate container", "Successfully ")
RECENT_SECONDS = 120  # a finished build is joined instead of repeated for this long
MAX_LINE = 2000  # characters kept of one output line
HEAD_LINES = 5000  # a huge log keeps its first and last lines
TAIL_LINES = 10000
ENGINE_ERRORS = (docker.errors.DockerException, requests.exceptions.RequestException)

log = logging.getLogger("ds01spawner.images")


@dataclass
class BuildSpec:
    key: str  # the content hash; builds with the same key are one build
    tag: str  # repository:tag of the result
    write_context: Callable[[BinaryIO], str]  # writes the tar; returns the hash it wrote
    buildargs: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    timeout: float = 600.0
    who: str = ""  # for log lines: user=... project=...
    container_limits: dict | None = None  # of the build's containers, e.g. {"memory": bytes}


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
    """One build and everyone waiting for it."""

    def __init__(self, spec: BuildSpec, loop: asyncio.AbstractEventLoop) -> None:
        self.spec = spec
        self.loop = loop
        self.future: asyncio.Future[BuildResult] = loop.create_future()
        self.future.add_done_callback(lambda f: f.cancelled() or f.exception())
        self.head: list[str] = []
        self.tail: deque[str] = deque(maxlen=TAIL_LINES)
        self.dropped = 0
        self.step: tuple[int, int, str] | None = None
        self.step_output: list[str] = []  # output of the current step (last lines)
        self.started = time.monotonic()
        self.finished_at: float | None = None
        self.container: str | None = None  # the container of the step that runs
        self.cancelled = threading.Event()
        self.thread_done = threading.Event()
        self._listeners: list[Callable[[str], None]] = []
        self.waiters = 0

    # -- on the event loop --

    def publish(self, line: str) -> None:
        if len(self.head) < HEAD_LINES:
            self.head.append(line)
        else:
            if len(self.tail) == self.tail.maxlen:
                self.dropped += 1
            self.tail.append(line)
        m = STEP_RE.fullmatch(line)
        if m:
            self.step = (int(m[1]), int(m[2]), m[3])
            self.step_output = []
        elif not line.startswith(_NOISE):
            self.step_output = [*self.step_output[-39:], line]
        for listener in list(self._listeners):
            try:
                listener(line)
            except Exception:  # noqa: BLE001 - one waiter's bug never stops the build
                log.exception("Build output listener failed")

    def subscribe(self, listener: Callable[[str], None]) -> None:
        """Call ``listener`` with every line so far, then with each new one."""
        for line in self.lines():
            listener(line)
        self._listeners.append(listener)

    def unsubscribe(self, listener: Callable[[str], None]) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def lines(self) -> list[str]:
        """The whole log (a very long one without its middle)."""
        if self.dropped:
            return [*self.head, f"... ({self.dropped} lines left out) ...", *self.tail]
        return [*self.head, *self.tail]

    def step_line(self) -> str | None:
        return f"Step {self.step[0]}/{self.step[1]} : {self.step[2]}" if self.step else None

    def elapsed(self) -> float:
        return time.monotonic() - self.started


class ImageBuilder:
    """Runs builds in its own pool of ``threads``; one per content hash at a time."""

    def __init__(
        self,
        api_factory: Callable[[float], object],
        threads: int = 2,
        logger: logging.Logger | logging.LoggerAdapter | None = None,
    ) -> None:
        self._api_factory = api_factory
        self.log = logger or log
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="ds01-build")
        self._jobs: dict[str, BuildJob] = {}
        self._recent: OrderedDict[str, BuildJob] = OrderedDict()  # finished with success
        self.builds_started = 0
        #: (monotonic time, event, key, tag) for "start", "join", "done", "failed", "timeout"
        self.events: deque[tuple[float, str, str, str]] = deque(maxlen=1000)

    def job_for(self, key: str) -> BuildJob | None:
        """The build of ``key`` that runs, or that just succeeded (a launch that looked for the
        image while it was being tagged still joins it instead of building again)."""
        job = self._jobs.get(key) or self._recent.get(key)
        if job and job.finished_at and time.monotonic() - job.finished_at > RECENT_SECONDS:
            return None
        return job

    def start(self, spec: BuildSpec) -> BuildJob:
        """Start a build now (call only when ``job_for(spec.key)`` is None, without awaiting
        anything in between, so that two launches never both start one)."""
        assert spec.key not in self._jobs, "a build of this content runs already"
        loop = asyncio.get_running_loop()
        job = BuildJob(spec, loop)
        self._jobs[spec.key] = job
        self.builds_started += 1
        self.events.append((time.monotonic(), "start", spec.key, spec.tag))
        self.log.info("Image build started %s tag=%s", spec.who, spec.tag)
        timer = loop.call_later(spec.timeout, self._expire, job)
        work = asyncio.wrap_future(self._pool.submit(self._run, job))
        work.add_done_callback(lambda f: self._finished(job, f, timer))
        return job

    async def wait(self, job: BuildJob, listener: Callable[[str], None] | None = None):
        """The result of ``job``; BuildError, BuildTimeout, EngineError or ContextChanged.

        Cancelling the waiter (its spawn was cancelled) never cancels the build: others may
        wait for it too, and a finished image is a cache hit next time.
        """
        job.waiters += 1
        if job.waiters > 1:
            self.events.append((time.monotonic(), "join", job.spec.key, job.spec.tag))
        if listener:
            job.subscribe(listener)
        try:
            return await asyncio.shield(job.future)
        finally:
            if listener:
                job.unsubscribe(listener)

    # -- completion --

    def _finished(self, job: BuildJob, work: asyncio.Future, timer: asyncio.TimerHandle) -> None:
        timer.cancel()
        job.finished_at = time.monotonic()
        error = work.exception()  # retrieved always, also after a timeout
        if self._jobs.get(job.spec.key) is job:
            del self._jobs[job.spec.key]
        if job.future.done():  # expired: the timeout already answered the waiters
            return
        if error is None:
            result = BuildResult(work.result(), job.elapsed(), job.step[1] if job.step else 0)
            self._recent[job.spec.key] = job
            while len(self._recent) > 64:
                self._recent.popitem(last=False)
            self.events.append((time.monotonic(), "done", job.spec.key, job.spec.tag))
            self.log.info(
                "Image build finished %s tag=%s in %.1f s",
                job.spec.who,
                job.spec.tag,
                result.seconds,
            )
            job.future.set_result(result)
            return
        self.events.append((time.monotonic(), "failed", job.spec.key, job.spec.tag))
        self.log.warning(
            "Image build failed %s tag=%s after %.1f s: %s",
            job.spec.who,
            job.spec.tag,
            job.elapsed(),
            escape_line(str(error)),
        )
        job.future.set_exception(error)

    def _expire(self, job: BuildJob) -> None:
        if job.future.done():
            return
        job.cancelled.set()
        seconds = job.elapsed()
        if self._jobs.get(job.spec.key) is job:
            del self._jobs[job.spec.key]
        self.events.append((time.monotonic(), "timeout", job.spec.key, job.spec.tag))
        self.log.warning(
            "Image build timed out %s tag=%s after %.0f s (%s); stopping it",
            job.spec.who,
            job.spec.tag,
            seconds,
            escape_line(job.step_line() or "before the first step"),
        )
        job.future.set_exception(
            BuildTimeout(
                f"the build was stopped after {seconds:.0f} s (the limit is "
                f"{job.spec.timeout:.0f} s)",
                job.step_line(),
                list(job.step_output[-20:]),
                seconds,
            )
        )
        threading.Thread(
            target=self._kill, args=(job,), name="ds01-build-kill", daemon=True
        ).start()

    def _kill(self, job: BuildJob) -> None:
        """Kill the running step's container until the build thread has ended (at most 60 s);
        the engine then ends the build and removes the container (forcerm)."""
        deadline = time.monotonic() + 60
        api = self._api_factory(10)
        killed: set[str] = set()
        try:
            while not job.thread_done.is_set() and time.monotonic() < deadline:
                cid = job.container
                if cid:
                    try:
                        api.kill(cid)
                        if cid not in killed:
                            self.log.info("Killed container %s of a timed-out build", cid[:12])
                            killed.add(cid)
                    except ENGINE_ERRORS:
                        pass
                job.thread_done.wait(0.5)
        finally:
            api.close()

    # -- in the build thread --

    def _run(self, job: BuildJob) -> str:
        try:
            return self._build(job)
        finally:
            job.thread_done.set()

    def _build(self, job: BuildJob) -> str:
        spec = job.spec

        def emit(line: str) -> None:
            line = line[:MAX_LINE]
            m = RUNNING_IN_RE.fullmatch(line)
            if m:
                job.container = m[1]
            job.loop.call_soon_threadsafe(job.publish, line)

        with tempfile.TemporaryFile(prefix="ds01-context-") as context:
            written = spec.write_context(context)
            if written != spec.key:
                raise ContextChanged(
                    "Your project changed while its image was being prepared. Launch again "
                    "when you are done editing."
                )
            context.seek(0)
            api = self._api_factory(spec.timeout + 30)
            try:
                return self._stream(api, job, context, emit)
            except docker.errors.APIError as e:
                if e.status_code and 400 <= e.status_code < 500:
                    reason = str(e.explanation or e)
                    emit(reason)
                    raise BuildError(reason, job.step_line(), [reason], job.elapsed()) from e
                raise EngineError(str(e)) from e
            except ENGINE_ERRORS as e:
                if job.cancelled.is_set():
                    raise EngineError("the build was stopped") from e
                raise EngineError(str(e)) from e
            finally:
                api.close()

    def _stream(self, api, job: BuildJob, context: BinaryIO, emit: Callable[[str], None]) -> str:
        spec = job.spec
        stream = api.build(
            fileobj=context,
            custom_context=True,
            tag=spec.tag,
            rm=True,
            forcerm=True,
            pull=False,
            decode=True,
            buildargs=spec.buildargs,
            labels=spec.labels,
            container_limits=spec.container_limits or None,
        )
        image_id = None
        error = None
        partial = ""
        for chunk in stream:
            if job.cancelled.is_set():
                break
            if "stream" in chunk:
                *complete, partial = _LINE_SPLIT.split(partial + str(chunk["stream"]))
                for line in complete:
                    if line.strip():
                        emit(line.rstrip())
            elif chunk.get("aux", {}).get("ID"):
                image_id = chunk["aux"]["ID"]
            elif "error" in chunk or "errorDetail" in chunk:
                error = (chunk.get("errorDetail") or {}).get("message") or str(chunk.get("error"))
                if partial.strip():
                    emit(partial.rstrip())
                    partial = ""
                emit(error)
            elif chunk.get("status"):
                emit(str(chunk["status"]))
        if partial.strip():
            emit(partial.rstrip())
        if job.cancelled.is_set():
            raise EngineError("the build was stopped")
        if error is not None:
            tail = _failing_output(job, error)
            raise BuildError(error, job.step_line(), tail, job.elapsed())
        if image_id is None:
            image_id = api.inspect_image(spec.tag)["Id"]
        return image_id


def _failing_output(job: BuildJob, error: str) -> list[str]:
    """The last lines of the failing step's output, read in the build thread.

    The event loop may not have published the newest lines yet, so this waits (briefly) until
    the loop has run everything scheduled so far.
    """
    done = threading.Event()
    try:
        job.loop.call_soon_threadsafe(done.set)
    except RuntimeError:  # loop closed
        return [error]
    done.wait(5)
    lines = [line for line in job.step_output if line != error]
    return [*lines[-20:], error]

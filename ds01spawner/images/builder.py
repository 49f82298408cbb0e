"""Image builds off the event loop: a bounded pool, one build per content hash, live output.

``docker build`` (the engine's classic builder, through docker-py's low-level ``APIClient``)
blocks a thread for as long as the build runs, so builds get their own small pool: however many
builds run, the spawner's Docker threads (and with them every other user's spawn, poll and page)
stay free. Builds are keyed by the content hash of everything the build reads, so concurrent
launches that need the same image (the same user twice, or two users with identical projects)
await one build.

No student can stall the others (docs/security-availability.md):

- one build per user runs at a time (``per_user``); a user's other builds wait, without a pool
  thread, and their launch pages say so; a build nobody waits for any more is dropped;
- the timeout counts from the build's first step (its thread starting), never from submission,
  so time spent waiting for a slot is not charged to anyone's build;
- output is split into lines in the build thread in linear time, each line cut at 4 KiB, ANSI
  and control sequences stripped, and kept within a byte budget (``output.KeptLog``); the event
  loop gets it in batches, at most one pending batch, with a bounded number of lines each;
- a finished build keeps only a short tail of its output.

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
from collections import OrderedDict, defaultdict, deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import BinaryIO

import docker
import requests

from ..logsafe import escape_line
from .context import ContextChanged
from .job import (  # noqa: F401 - the builder's public names
    STEP_RE,
    BuildError,
    BuildJob,
    BuildResult,
    BuildSpec,
    BuildTimeout,
    EngineError,
)
from .output import MAX_LINE, LineSplitter, clean

RUNNING_IN_RE = re.compile(r" ---> Running in ([0-9a-f]{12,64})")
RECENT_SECONDS = 120  # a finished build is joined instead of repeated for this long
TRIM_AFTER = 5.0  # seconds after a build ends, its kept output shrinks to a short tail
WAITING_MESSAGE = "Waiting for your other build to finish: one build per user runs at a time"
ENGINE_ERRORS = (docker.errors.DockerException, requests.exceptions.RequestException)

log = logging.getLogger("ds01spawner.images")


class BuildAPIClient(docker.APIClient):
    """docker-py's APIClient whose ``build`` also sends ``extra_params`` (``cpuquota``,
    ``cpuperiod``, ``cgroupparent``: parameters of the engine's /build that docker-py does not
    pass through)."""

    _extra_build_params: dict = {}

    def build(self, *args, extra_params: dict | None = None, **kwargs):
        self._extra_build_params = dict(extra_params or {})
        return super().build(*args, **kwargs)

    def _post(self, url, **kwargs):
        if url.endswith("/build") and self._extra_build_params:
            kwargs["params"] = {**(kwargs.get("params") or {}), **self._extra_build_params}
        return super()._post(url, **kwargs)


class ImageBuilder:
    """Runs builds in its own pool of ``threads``; one per content hash and at most
    ``per_user`` per owner at a time."""

    def __init__(
        self,
        api_factory: Callable[[float], object],
        threads: int = 2,
        logger: logging.Logger | logging.LoggerAdapter | None = None,
        per_user: int = 1,
    ) -> None:
        self._api_factory = api_factory
        self.log = logger or log
        self.threads = threads
        self.per_user = per_user
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="ds01-build")
        self._jobs: dict[str, BuildJob] = {}
        self._recent: OrderedDict[str, BuildJob] = OrderedDict()  # finished with success
        self._running: dict[str, int] = defaultdict(int)  # owner -> builds in the pool
        self._waiting: dict[str, deque[BuildJob]] = defaultdict(deque)
        self.builds_started = 0
        #: (monotonic time, event, key, tag) for "start", "join", "done", "failed", "timeout"
        self.events: deque[tuple[float, str, str, str]] = deque(maxlen=1000)

    def job_for(self, key: str) -> BuildJob | None:
        """The build of ``key`` that runs or waits, or that just succeeded (a launch that
        looked for the image while it was being tagged still joins it)."""
        job = self._jobs.get(key) or self._recent.get(key)
        if job and job.finished_at and time.monotonic() - job.finished_at > RECENT_SECONDS:
            return None
        return job

    def in_pool(self) -> int:
        return sum(self._running.values())

    def start(self, spec: BuildSpec) -> BuildJob:
        """Start a build, or line it up behind its owner's running one (call only when
        ``job_for(spec.key)`` is None, without awaiting anything in between)."""
        assert spec.key not in self._jobs, "a build of this content runs already"
        job = BuildJob(spec, asyncio.get_running_loop())
        self._jobs[spec.key] = job
        if spec.owner and self._running[spec.owner] >= self.per_user:
            job.state = "waiting"
            self._waiting[spec.owner].append(job)
            self.log.info("Image build waits for another build %s tag=%s", spec.who, spec.tag)
            job.record(WAITING_MESSAGE)
        else:
            self._launch(job)
        return job

    def _launch(self, job: BuildJob) -> None:
        spec = job.spec
        if self.in_pool() >= self.threads:
            job.record(f"Waiting for a free build slot ({self.threads} builds run now)")
        self._running[spec.owner] += 1
        job.state = "queued"
        self.builds_started += 1
        self.events.append((time.monotonic(), "start", spec.key, spec.tag))
        self.log.info("Image build started %s tag=%s", spec.who, spec.tag)
        work = asyncio.wrap_future(self._pool.submit(self._run, job))
        work.add_done_callback(lambda f: self._finished(job, f))

    async def wait(self, job: BuildJob, listener: Callable[[str], None] | None = None):
        """The result of ``job``; BuildError, BuildTimeout, EngineError or ContextChanged.

        Cancelling the waiter (its spawn was cancelled) never cancels a running build: others
        may wait for it too, and a finished image is a cache hit next time.
        """
        job.waiters += 1
        job.active += 1
        if job.waiters > 1:
            self.events.append((time.monotonic(), "join", job.spec.key, job.spec.tag))
        if listener:
            job.subscribe(listener)
        try:
            return await asyncio.shield(job.future)
        finally:
            job.active -= 1
            if listener:
                job.unsubscribe(listener)

    # -- completion --

    def _arm(self, job: BuildJob) -> None:
        """The build's first step: its timeout starts now."""
        if job.finished_at is None and not job.future.done():
            job.timer = job.loop.call_later(job.spec.timeout, self._expire, job)

    def _finished(self, job: BuildJob, work: asyncio.Future) -> None:
        if job.timer:
            job.timer.cancel()
        job.finished_at = time.monotonic()
        job.state = "done"
        job.loop.call_later(TRIM_AFTER, job.trim)
        error = work.exception()  # retrieved always, also after a timeout
        if self._jobs.get(job.spec.key) is job:
            del self._jobs[job.spec.key]
        self._release(job.spec.owner)
        if job.future.done():  # expired: the timeout already answered the waiters
            return
        if error is None:
            self._succeeded(job, work.result())
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

    def _succeeded(self, job: BuildJob, image_id: str) -> None:
        result = BuildResult(image_id, job.elapsed(), job.step[1] if job.step else 0)
        self._recent[job.spec.key] = job
        while len(self._recent) > 64:
            self._recent.popitem(last=False)
        self.events.append((time.monotonic(), "done", job.spec.key, job.spec.tag))
        self.log.info(
            "Image build finished %s tag=%s in %.1f s", job.spec.who, job.spec.tag, result.seconds
        )
        job.future.set_result(result)

    def _release(self, owner: str) -> None:
        """The owner's build left the pool: start their next build that someone waits for."""
        self._running[owner] -= 1
        if self._running[owner] <= 0:
            del self._running[owner]
        queue = self._waiting.get(owner)
        while queue and self._running.get(owner, 0) < self.per_user:
            job = queue.popleft()
            if job.active > 0:
                self._launch(job)
                continue
            self.log.info("Image build dropped %s tag=%s: nobody waits", job.spec.who, job.spec.tag)
            if self._jobs.get(job.spec.key) is job:
                del self._jobs[job.spec.key]
            job.finished_at = time.monotonic()
            job.future.set_exception(EngineError("the build was dropped: nobody waited for it"))
        if queue is not None and not queue:
            self._waiting.pop(owner, None)

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
                job.last_output()[-20:],
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
        job.started = time.monotonic()
        job.state = "running"
        try:
            job.loop.call_soon_threadsafe(self._arm, job)
            return self._build(job)
        finally:
            job.thread_done.set()

    def _build(self, job: BuildJob) -> str:
        spec = job.spec

        def emit(*lines: str) -> None:
            for line in lines:
                if line.startswith(" ---> Running in "):
                    m = RUNNING_IN_RE.fullmatch(line)
                    if m:
                        job.container = m[1]
            job.record_many(lines)

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
                    reason = _one_line(str(e.explanation or e))
                    emit(reason)
                    raise BuildError(reason, job.step_line(), [reason], job.elapsed()) from e
                raise EngineError(str(e)) from e
            except ENGINE_ERRORS as e:
                if job.cancelled.is_set():
                    raise EngineError("the build was stopped") from e
                raise EngineError(str(e)) from e
            finally:
                api.close()

    def _stream(self, api, job: BuildJob, context: BinaryIO, emit: Callable[..., None]) -> str:
        spec = job.spec
        extra = {"extra_params": spec.engine_params} if spec.engine_params else {}
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
            **extra,
        )
        image_id = None
        error = None
        lines = LineSplitter()
        for chunk in stream:
            if job.cancelled.is_set():
                break
            if "stream" in chunk:
                emit(*lines.feed(str(chunk["stream"])))
                time.sleep(0)  # let the event loop have the GIL between chunks
            elif chunk.get("aux", {}).get("ID"):
                image_id = chunk["aux"]["ID"]
            elif "error" in chunk or "errorDetail" in chunk:
                error = (chunk.get("errorDetail") or {}).get("message") or str(chunk.get("error"))
                error = _one_line(error)
                emit(*lines.flush(), error)
            elif chunk.get("status"):
                emit(_one_line(str(chunk["status"])))
        emit(*lines.flush())
        if job.cancelled.is_set():
            raise EngineError("the build was stopped")
        if error is not None:
            tail = [line for line in job.last_output() if line != error]
            raise BuildError(error, job.step_line(), [*tail[-20:], error], job.elapsed())
        if image_id is None:
            image_id = api.inspect_image(spec.tag)["Id"]
        return image_id


def _one_line(text: str) -> str:
    """An engine message as one clean line of at most MAX_LINE characters."""
    return clean(" ".join(text[: MAX_LINE * 2].split()))[:MAX_LINE]

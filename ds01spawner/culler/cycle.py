"""One culler cycle: read the signals of every running server, decide, then warn and retire.

The order makes a restart safe: decisions are written to the state file *before* any notice is
written or any stop is asked for, so a culler that dies half-way never gives a warning twice
(at most once: a notice can be lost, never repeated). A retirement is announced only once the
hub accepted the stop; a stop that failed is decided again at the next cycle, from the same
warnings (so a user who came back meanwhile keeps the server), and only then announced.

Every I/O client is passed in (``signals.HubAPI``, ``signals.KernelsAPI``, ``signals.Engine``,
``signals.GpuMeter``, a limits source, the project folders); tests and the benchmark pass their
own. An error of any of them is logged and the server it concerns is kept: a failed hub call
ends the cycle with nothing decided, a failed signal keeps the server from being warned or
retired for idleness (``max_runtime`` needs no signal).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any

from ..audit import AuditLog, NoAuditLog, mark_retire
from ..errors import DOCKER_ERRORS
from ..gpus.table import hub_containers_filter, server_containers
from ..limits.model import LimitsError
from . import notices as project_notices
from .decision import IDLE, Server, Settings, Signals, decide, span
from .parts import LimitsSource, ProjectFolders, Report, _Seen  # noqa: F401  (cycle.<name>)
from .reading import SignalReading
from .signals import (
    CgroupCpu,
    Container,
    CpuMeter,
    Engine,
    GpuMeter,
    HubAPI,
    HubServer,
    KernelsAPI,
    SignalError,
    gpu_demand,
    utcnow,
)
from .state import ServerRecord, State, iso

EVENT = "culler event:"


class Culler(SignalReading):
    def __init__(
        self,
        *,
        hub: HubAPI,
        kernels: KernelsAPI,
        engine: Engine,
        gpus: GpuMeter,
        limits: LimitsSource,
        state_file: str,
        prefix: str = "ds01",
        settings: Settings = Settings(),  # noqa: B008 - frozen
        cpu_busy_cores: float = 0.1,
        concurrency: int = 10,
        folders: ProjectFolders | None = None,
        cgroups: CgroupCpu | None = None,
        clock: Callable[[], datetime] = utcnow,
        log: Any = None,
        audit: AuditLog | NoAuditLog | None = None,
    ) -> None:
        self.hub, self.kernels, self.engine, self.gpus = hub, kernels, engine, gpus
        self.limits = limits
        self.state_file = state_file
        self.prefix = prefix
        self.settings = settings
        self.cpu_busy_cores = cpu_busy_cores
        self.concurrency = concurrency
        self.folders = folders or ProjectFolders()
        self.cgroups = cgroups
        self.clock = clock
        self.log = log or logging.getLogger("ds01spawner.culler")
        self.audit = audit or NoAuditLog()
        self.state = State.load(state_file)
        self.cpu = CpuMeter()
        self._containers: dict[str, Container] = {}  # inspect results, by container id
        self._pool = ThreadPoolExecutor(max(2, concurrency), thread_name_prefix="ds01-culler")
        self._failing: set[str] = set()  # what failed last cycle, to log recoveries once
        self._server_problems: set[tuple[str, str]] = set()  # (server, signal) failing

    async def _thread(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    # ---- the cycle ------------------------------------------------------------------------------

    async def cycle(self) -> Report:
        t0 = time.perf_counter()
        calls0 = (self.hub.calls, self.kernels.calls, self.engine.calls)
        report = Report()
        now = self.clock()
        try:
            servers = await self.hub.active_servers()
        except SignalError as e:
            report.ok = False
            self._problem("hub", f"The hub API failed ({e}); nothing decided, retried next cycle")
            report.errors.append(str(e))
            self.state.last_error = f"{iso(now)} hub API: {e}"
            self.state.updated = now
            self._save()
            return self._finish(report, t0, calls0)
        self._recovered("hub", "The hub API answers again")
        self.state.last_error = None

        containers, docker_ok = [], True
        try:
            containers = server_containers(
                await self._thread(self.engine.containers, hub_containers_filter(self.prefix)),
                self.prefix,
            )
            self._recovered("docker", "Docker answers again")
        except DOCKER_ERRORS as e:
            docker_ok = False
            self._problem("docker", f"Docker failed ({e}); no server is retired for idleness")
            report.errors.append(f"docker: {e}")
        await self._thread(self.gpus.sample, now)
        if self.gpus.failed:
            self._problem("gpus", f"{self.gpus.failed}; GPU servers are not retired for idleness")
        else:
            self._recovered("gpus", "The GPU inventory answers again")
        demand = gpu_demand(self.gpus.devices, containers) if docker_ok else 0.0
        try:
            await self._thread(self.limits.refresh)
            limits_ok = True
            self._recovered("limits", "The limits file can be used again")
        except LimitsError as e:
            limits_ok = False
            self._problem("limits", f"No usable limits ({e}); nothing decided, retried next cycle")

        by_name = {(c.get("Names") or ["?"])[0].lstrip("/"): c for c in containers}
        sem = asyncio.Semaphore(self.concurrency)

        async def look(hs: HubServer) -> _Seen:
            async with sem:
                return await self._look(hs, by_name, docker_ok, limits_ok, demand, now, report)

        seen = await asyncio.gather(*(look(hs) for hs in servers))
        report.servers = len(seen)
        keys = {s.hub.key for s in seen}
        self._server_problems = {p for p in self._server_problems if p[0] in keys}
        running_ids = {s.container.id for s in seen if s.container}
        self.cpu.forget_except(running_ids)
        for cid in list(self._containers):
            if cid not in running_ids:
                del self._containers[cid]

        # the decisions, on disk before anyone is told or anything is stopped
        self.state.servers = {s.hub.key: s.record for s in seen if s.record is not None}
        self.state.cycles += 1
        self.state.updated = now
        self._save()

        for s in seen:
            if s.decision is not None:
                self._announce(s, now, report)
        stops = [s for s in seen if s.decision and s.decision.action == "retire"]

        async def stop(s: _Seen) -> None:
            async with sem:
                await self._retire(s, now, report)

        if stops:
            await asyncio.gather(*(stop(s) for s in stops))
            self._save()
        return self._finish(report, t0, calls0, demand)

    def _finish(self, report: Report, t0: float, calls0: tuple, demand: float = 0.0) -> Report:
        report.seconds = time.perf_counter() - t0
        report.hub_calls = self.hub.calls - calls0[0]
        report.kernel_calls = self.kernels.calls - calls0[1]
        report.docker_calls = self.engine.calls - calls0[2]
        if not report.ok:
            return report  # the failure is logged already; there is nothing else to say
        busy = report.warned or report.retired or report.errors or report.kept_unknown
        level = logging.INFO if busy else logging.DEBUG
        self.log.log(
            level,
            "Cycle: %d servers, %d warned, %d retired, %d kept (signal missing), GPU demand "
            "%.0f%%, %.2f s, %d hub API calls",
            report.servers,
            report.warned,
            report.retired,
            report.kept_unknown,
            demand * 100,
            report.seconds,
            report.hub_calls,
        )
        return report

    def _save(self) -> None:
        try:
            self.state.save(self.state_file)
        except OSError as e:  # warnings go on in this process; a restart could repeat them
            self.log.error("The culler state %s cannot be written: %s", self.state_file, e)

    def _once(self, key: str, what: str, message: str) -> None:
        """A server's signal failed: a warning the first time, then quiet until it works again
        (``_signals_ok``), so that a wrong role or a dead engine does not flood the log."""
        if (key, what) in self._server_problems:
            self.log.debug("%s (still)", message)
        else:
            self._server_problems.add((key, what))
            self.log.warning("%s; %s kept until it can be read", message, key)

    def _signals_ok(self, key: str, ok: Iterable[str]) -> None:
        for what in ok:
            if (key, what) in self._server_problems:
                self._server_problems.discard((key, what))
                self.log.info("%s of %s can be read again", what, key)

    def _problem(self, what: str, message: str) -> None:
        self.log.warning("%s", message)
        self._failing.add(what)

    def _recovered(self, what: str, message: str) -> None:
        if what in self._failing:
            self._failing.discard(what)
            self.log.info("%s", message)

    # ---- one server -----------------------------------------------------------------------------

    async def _look(
        self,
        hs: HubServer,
        by_name: dict,
        docker_ok: bool,
        limits_ok: bool,
        demand: float,
        now: datetime,
        report: Report,
    ) -> _Seen:
        seen = _Seen(hs)
        prev = self.state.servers.get(hs.key)
        if hs.started is None or (prev is not None and prev.started != hs.started):
            prev = None  # another run of the server: nothing of the old one applies
        if hs.pending or not hs.ready or hs.started is None:
            seen.record = prev  # starting or stopping: left alone, remembered as it was
            return seen
        unknown: set[str] = set()
        busy: set[str] = set()
        kernel_activity = keep_alive = None
        container = await self._running_container(hs, by_name, docker_ok)
        if container is None:
            unknown |= {"kernels", "cpu", "keep_alive", "gpu"}
        else:
            seen.container = container
            kernel_activity, keep_alive = await self._read_signals(
                hs, container, now, unknown, busy
            )
            self._signals_ok(hs.key, {"inspect", "cpu", "kernels", "keep_alive"} - unknown)
        project = (container.project if container else "") or hs.name or "default"
        limits = await self._limits_of(hs, now) if limits_ok else None
        if limits is None:
            seen.record = prev
            return seen
        server = Server(
            user=hs.user,
            name=hs.name,
            project=project,
            started=hs.started,
            has_gpu=bool(container and container.gpus),
        )
        signals = Signals(
            hub_activity=hs.last_activity,
            kernel_activity=kernel_activity,
            keep_alive=keep_alive,
            busy=frozenset(busy),
            unknown=frozenset(unknown),
            remembered=prev.idle_since if prev else None,
        )
        decision = decide(
            server,
            limits,
            signals,
            now,
            given=prev.warnings if prev else (),
            demand=demand,
            settings=self.settings,
        )
        if decision.note:
            report.kept_unknown += 1
            self.log.debug("Kept %s: %s", hs.key, decision.note)
        seen.decision = decision
        seen.record = ServerRecord(
            started=hs.started,
            project=project,
            container=container.id[:12] if container else "",
            idle_since=decision.idle_since,
            idle_deadline=decision.idle_deadline,
            runtime_deadline=decision.runtime_deadline,
            warnings=list(decision.current),
            retiring={"at": iso(now), "reason": decision.reason}
            if decision.action == "retire"
            else None,
            activity=dict(decision.activity),
            checked=now,
            note=decision.note,
        )
        return seen

    # ---- telling and retiring -------------------------------------------------------------------

    def _event(self, kind: str, hs: HubServer, **fields: Any) -> None:
        shown = " ".join(f"{k}={v}" for k, v in fields.items())
        self.log.info("%s %s user=%s server=%s %s", EVENT, kind, hs.user, hs.name or "''", shown)

    def _notify(self, s: _Seen, line: str) -> None:
        c = s.container
        if c is None or not c.workspace or c.uid is None or c.gid is None:
            self.log.warning("No notices file for %s (container not readable)", s.hub.key)
            return
        try:
            self.folders.notify(c.workspace, c.uid, c.gid, line)
        except OSError as e:  # ProjectFileError included: a link where .ds01 should be
            self.log.warning("Cannot write the notices of %s: %s", s.hub.key, e)

    def _announce(self, s: _Seen, now: datetime, report: Report) -> None:
        d = s.decision
        for g in d.cleared:
            self._event("cleared", s.hub, reason=g.reason, fraction=g.fraction)
        for g in d.new_warnings:
            report.warned += 1
            self._event(
                "warned",
                s.hub,
                reason=g.reason,
                fraction=g.fraction,
                deadline=iso(g.deadline),
                left=span(g.deadline - now).replace(" ", ""),
            )
            self._notify(s, project_notices.notice_line(now, "WARNING", g.reason, g.message))
            self.audit.write(
                "warn",
                user=s.hub.user,
                project=s.record.project if s.record else None,
                server=s.hub.name or "",
                reason=g.reason,
                deadline=iso(g.deadline),
            )

    async def _retire(self, s: _Seen, now: datetime, report: Report) -> None:
        hs = s.hub
        reason = s.decision.reason
        # the spawner writes the retire event; it learns why from this intent
        await self._thread(
            mark_retire, self.audit.path, hs.user, hs.name or "", f"culler: {reason}", "ds01-culler"
        )
        try:
            code = await self.hub.stop(hs.user, hs.name)
        except SignalError as e:
            self.log.warning("Could not retire %s (%s); retried next cycle", hs.key, e)
            report.errors.append(str(e))
            return
        self.state.servers.pop(hs.key, None)  # gone (or going): its warnings are no longer shown
        report.retired += 1
        self._event("retired", hs, reason=reason, status=code)
        why = "it was idle too long" if reason == IDLE else "it reached its runtime limit"
        self._notify(
            s,
            project_notices.notice_line(
                now,
                "RETIRED",
                reason,
                f"Your server for project '{s.record.project}' was retired because {why}. Its "
                f"container was removed and its GPUs freed; your files in /workspace are "
                f"untouched. Launch the project again to continue.",
            ),
        )

"""How the culler reads one running server's signals: its container (inspect), CPU (cgroup or
``docker stats``), kernels (the server's own API, with its own token), keep-alive file, GPUs,
and the user's limits. Mixed into ``cycle.Culler``, whose clients it uses (``engine``,
``kernels``, ``folders``, ``cpu``, ``gpus``, ``limits``).
"""

from __future__ import annotations

from datetime import datetime

from ..errors import DOCKER_ERRORS
from ..limits.model import Limits, LimitsError
from ..projects.names import container_name
from .parts import LimitsSource, ProjectFolders, Report, _Seen  # noqa: F401  (cycle.<name>)
from .signals import (
    GPU_BUSY,
    GPU_UNKNOWN,
    Container,
    HubServer,
    SignalError,
    cpu_sample,
    parse_container,
)


class SignalReading:
    """The reads of ``Culler._look`` for one server; each failure is logged once and the
    signal counted as unknown."""

    async def _running_container(
        self, hs: HubServer, by_name: dict, docker_ok: bool
    ) -> Container | None:
        """The server's container when it runs and can be inspected, else None."""
        raw = by_name.get(container_name(hs.user, hs.name, self.prefix)) if docker_ok else None
        if raw is None or raw.get("State") != "running":
            return None
        try:
            return await self._container(raw["Id"])
        except DOCKER_ERRORS as e:
            self._once(hs.key, "inspect", f"Cannot inspect the container of {hs.key}: {e}")
            return None

    async def _read_signals(
        self, hs: HubServer, container: Container, now: datetime, unknown: set, busy: set
    ) -> tuple[datetime | None, datetime | None]:
        """CPU, kernels, keep-alive file and GPUs of a running server: adds what is busy to
        ``busy`` and what cannot be read to ``unknown``; (kernel activity, keep-alive time)."""
        kernel_activity = keep_alive = None
        try:
            cores = self.cpu.update(container.id, await self._thread(self._cpu, container))
        except DOCKER_ERRORS as e:
            self._once(hs.key, "cpu", f"Cannot read the CPU use of {hs.key}: {e}")
            cores = None
        if cores is None:
            unknown.add("cpu")
        elif cores >= self.cpu_busy_cores:
            busy.add("cpu")
        if container.server_url:
            try:
                k = await self.kernels.kernels(container.server_url, container.server_token)
                kernel_activity = k.last_activity
                if k.busy:
                    busy.add("kernels")
            except SignalError as e:
                self._once(hs.key, "kernels", f"Cannot read the kernels of {hs.key}: {e}")
                unknown.add("kernels")
        else:
            unknown.add("kernels")
        if container.workspace:
            try:
                keep_alive = await self._thread(self.folders.keep_alive, container.workspace)
            except OSError as e:
                self._once(hs.key, "keep_alive", f"No keep-alive check for {hs.key}: {e}")
                unknown.add("keep_alive")
        else:
            unknown.add("keep_alive")
        gpu = self.gpus.state_of(container.gpus, hs.started, now)
        if gpu == GPU_BUSY:
            busy.add("gpu")
        elif gpu == GPU_UNKNOWN:
            unknown.add("gpu")
        return kernel_activity, keep_alive

    async def _limits_of(self, hs: HubServer, now: datetime) -> Limits | None:
        """The user's limits now; None (logged) when they cannot be resolved."""
        try:
            if self.limits.unix_groups:  # NSS may ask LDAP: off the event loop
                return await self._thread(self.limits.resolve, hs.user, hs.groups, now)
            return self.limits.resolve(hs.user, hs.groups, now)
        except (LimitsError, OSError, KeyError) as e:
            self.log.warning("No limits for %s (%s); kept", hs.key, e)
            return None

    def _cpu(self, container: Container) -> tuple[datetime, int] | None:
        """(when, CPU ns) of a container: from its cgroup (fast), else from Docker's stats."""
        if container.pid and self.cgroups is not None:
            ns = self.cgroups.read(container.pid)
            if ns is not None:
                return self.clock(), ns
        return cpu_sample(self.engine.stats(container.id))

    async def _container(self, container_id: str) -> Container:
        if container_id not in self._containers:
            inspect = await self._thread(self.engine.inspect, container_id)
            self._containers[container_id] = parse_container(inspect)
        return self._containers[container_id]

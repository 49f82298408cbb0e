"""GPU steps of a spawn: parse the request, sweep orphans, choose devices under the hub's lock.

A mixin of DS01Spawner (it uses the spawner's traits, ``docker()`` and ``log``), kept apart so
that spawner.py stays the orchestration of start/stop/poll.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone

from jupyterhub import orm

from .errors import DOCKER_ERRORS, GPU_INVENTORY_DOWN_MESSAGE, user_error
from .gpus import InventoryError
from .gpus.allocator import GpuRequest, NoFit, RequestError, equivalents
from .gpus.broker import GpuBroker, broker_for
from .gpus.model import Device
from .gpus.table import hub_containers_filter
from .names import hub_id
from .quota import LimitRefused, check_gpu_equivalents, check_servers, usage_of

# Containers created before this hub process started and unknown to its database are orphans
# of a hub that died mid-spawn; they are removed at the first allocation (see _sweep_orphans).
_PROCESS_STARTED = datetime.now(timezone.utc)


class GpuSteps:
    """Methods DS01Spawner uses to give a server its GPUs."""

    _orphans_swept = False
    #: containers whose removal failed (engine error at retire or poll); retried at every
    #: allocation, so they cannot keep their GPUs after Docker recovers
    pending_removal: set[str] = set()
    _alloc_lock: asyncio.Lock | None = None

    @classmethod
    def _allocation_lock(cls) -> asyncio.Lock:
        """One lock for the hub: choose devices and create the container, nothing else."""
        if GpuSteps._alloc_lock is None:
            GpuSteps._alloc_lock = asyncio.Lock()
        return GpuSteps._alloc_lock

    def _broker(self) -> GpuBroker:
        return broker_for(
            self.gpu_inventory,
            self.simulated_gpus,
            self.simulated_gpu_state_file,
            self.gpus_busy_outside_ds01,
            self.log,
        )

    async def _parse_gpu_request(self) -> tuple[GpuBroker | None, GpuRequest, list[Device]]:
        options = self.user_options or {}
        try:
            broker = await asyncio.to_thread(self._broker)  # the first call initialises NVML
        except InventoryError as e:
            if str(options.get("gpus", "")).strip() == "0":
                return None, GpuRequest(), []
            self.log.error(
                "GPU inventory %r unavailable for user=%s: %s",
                self.gpu_inventory,
                self.user.name,
                e,
            )
            raise user_error(503, GPU_INVENTORY_DOWN_MESSAGE) from e
        try:
            return broker, *await broker.parse(options, self.default_gpus)
        except RequestError as e:
            self.log.warning("Refused GPU request of user=%s: %s", self.user.name, e)
            raise user_error(400, str(e)) from e

    async def _ds01_containers(self) -> list[dict]:
        """This hub's DS01 containers, in any state (docker ps -a, filtered by label and name)."""
        return await self.docker("containers", all=True, filters=hub_containers_filter(self.prefix))

    def hub_id(self) -> str:
        """This hub's id (names.hub_id of its database URL), for the ``ds01.hub`` label."""
        return hub_id(str(self.user.db.get_bind().url))

    def _known_container_ids(self) -> set[str]:
        ids = set()
        for orm_spawner in self.user.db.query(orm.Spawner).all():
            object_id = (orm_spawner.state or {}).get("object_id")
            if object_id:
                ids.add(object_id)
        return ids

    async def _sweep_orphans(self, containers: list[dict]) -> list[dict]:
        """Remove containers left by a hub that died mid-spawn; return the others.

        An orphan was created before this hub process started and no server in the hub's
        database refers to it, so nobody can reach or retire it, and it would hold its GPUs.
        """
        known = self._known_container_ids()
        started = _PROCESS_STARTED.timestamp()
        mine = self.hub_id()
        kept = []
        for c in containers:
            other_hub = (c.get("Labels") or {}).get("ds01.hub") != mine
            if other_hub or c["Id"] in known or c.get("Created", 0) >= started:
                kept.append(c)
                continue
            labels = c.get("Labels") or {}
            self.log.warning(
                "Removing orphan container %s (user=%s project=%s gpus=%s): no server of this "
                "hub refers to it (a hub stopped while it was starting)",
                c["Names"][0].lstrip("/"),
                labels.get("ds01.user"),
                labels.get("ds01.project"),
                labels.get("ds01.gpus") or "-",
            )
            try:
                await self.docker("remove_container", c["Id"], v=True, force=True)
            except DOCKER_ERRORS as e:
                self.log.error("Could not remove orphan container %s: %s", c["Id"][:12], e)
                kept.append(c)
        return kept

    def _assign_gpus(self, containers: list[dict], snapshot) -> list[Device]:
        broker, request = self._gpu_broker, self._gpu_request
        if broker is None or not request.wants_gpu:
            return []
        try:
            devices = broker.choose(request, containers, *snapshot)
        except NoFit as e:
            self.log.warning(
                "No GPU for user=%s project=%s (asked %s %s): %s",
                self.user.name,
                self.project,
                request.count,
                request.gpu_type,
                e,
            )
            raise user_error(429, str(e)) from e
        self.gpu_uuids = [d.uuid for d in devices]
        what = "simulated GPU" if broker.simulated else "GPU"
        shown = ", ".join(f"{d.index} ({d.mig_profile or d.name})" for d in devices)
        self.log.info(
            "Assigned %s %s to user=%s project=%s",
            what,
            ", ".join(self.gpu_uuids),
            self.user.name,
            self.project,
        )
        self.progress_log.emit(35, f"Assigned {what} {shown}")
        return devices

    async def _retry_removals(self) -> None:
        for target in sorted(GpuSteps.pending_removal):
            try:
                await self.docker("remove_container", target, v=True, force=True)
            except DOCKER_ERRORS as e:
                if getattr(getattr(e, "response", None), "status_code", None) != 404:
                    self.log.warning("Removal of container %s still fails: %s", target, e)
                    continue
            self.log.info("Removed container %s (its removal had failed before)", target)
            GpuSteps.pending_removal.discard(target)

    async def allocate_and_create(self, create) -> dict:
        """The hub-wide atomic step: choose devices and create the container under one lock.

        Only what must be atomic is under the lock: listing the containers (the table), the
        decision and the create. The inventory is read before it.
        """
        broker, request = self._gpu_broker, self._gpu_request
        snapshot = ([], {})
        if broker is not None and request.wants_gpu:
            snapshot = await broker.snapshot()
        async with self._allocation_lock():
            await self._retry_removals()
            containers = await self._ds01_containers()
            if not GpuSteps._orphans_swept:
                containers = await self._sweep_orphans(containers)
                GpuSteps._orphans_swept = True
            usage = usage_of(self.user.name, containers, exclude_server=self.name)
            try:
                check_servers(usage, self._limits)
                devices = self._assign_gpus(containers, snapshot)
                check_gpu_equivalents(usage, equivalents(devices), self._limits)
            except LimitRefused as e:
                self.gpu_uuids = []
                self.refuse(e)
            return await create(devices)

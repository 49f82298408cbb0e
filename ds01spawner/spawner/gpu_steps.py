"""GPU steps of a spawn: parse the request, sweep orphans, choose devices under the hub's lock.

A mixin of DS01Spawner (it uses the spawner's traits, ``docker()`` and ``log``), kept apart so
that spawner.py stays the orchestration of start/stop/poll.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone

from jupyterhub import orm

from ..errors import DOCKER_ERRORS, ENGINE_DOWN_MESSAGE, GPU_INVENTORY_DOWN_MESSAGE, user_error
from ..gpus import InventoryError
from ..gpus.allocator import GpuRequest, NoFit, RequestError, busy_outside, candidates, equivalents
from ..gpus.allocator import noun as device_noun
from ..gpus.broker import GpuBroker, broker_for
from ..gpus.model import Device
from ..gpus.queue import AlreadyWaiting, GpuQueue, QueueCancelled, Waiter, ordinal
from ..gpus.table import holders, hub_containers_filter, server_containers
from ..limits.model import Limits
from ..limits.usage import (
    Launches,
    LimitRefused,
    ServerUse,
    Usage,
    check_gpu_equivalents,
    check_servers,
    min_equivalents,
    usage_of,
    with_launches,
)
from ..projects.names import hub_id
from .allocation import HubAllocation
from .launch import LaunchPhases, LaunchPlan

# Containers created before this hub process started and unknown to its database are orphans
# of a hub that died mid-spawn; they are removed at the first allocation (see _sweep_orphans).
_PROCESS_STARTED = datetime.now(timezone.utc)


class GpuSteps:
    """Methods DS01Spawner uses to give a server its GPUs."""

    @property
    def allocation(self) -> HubAllocation:
        """The hub's allocation state (lock, queue, launches, pending removals): one per hub."""
        return HubAllocation.shared(getattr(self, "gpu_queue_file", ""))

    @property
    def launches(self) -> Launches:
        """The hub's launches in progress (waiting, building, creating): they count toward
        limits."""
        return self.allocation.launches

    @property
    def pending_removal(self) -> set[str]:
        return self.allocation.pending_removal

    def gpu_queue(self) -> GpuQueue:
        """The hub's queue of launches waiting for a device (one per hub process)."""
        return self.allocation.queue

    def _broker(self) -> GpuBroker:
        if self.on_swarm:
            return self._swarm_broker()  # the cluster's devices (swarm_steps)
        return broker_for(
            self.gpu_inventory,
            self.simulated_gpus,
            self.simulated_gpu_state_file,
            self.gpus_busy_outside_ds01,
            self.log,
        )

    async def _parse_gpu_request(
        self, options: Mapping
    ) -> tuple[GpuBroker | None, GpuRequest, list[Device]]:
        """The checked GPU options (LaunchOptions.gpu_options) as a request, once per launch."""
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

    def _usage(self, containers: list[dict]) -> Usage:
        """What the user holds and is launching, without this launch."""
        mine = usage_of(self.user.name, containers, exclude_server=self.name)
        return with_launches(mine, self.launches.others(self.user.name, self.name))

    def _check_usage(
        self, usage: Usage, request: GpuRequest, devices: Sequence[Device], limits: Limits
    ) -> None:
        """Refuse (the limit's sentence) a launch the user's limits do not allow now, whatever
        devices it would get: such a launch never waits in the GPU queue."""
        try:
            check_servers(usage, limits)
            check_gpu_equivalents(usage, min_equivalents(request, list(devices)), limits)
        except LimitRefused as e:
            self.gpu_uuids = []
            self.refuse(e)

    async def claim_launch(
        self, request: GpuRequest, devices: Sequence[Device], limits: Limits
    ) -> None:
        """Check the user's servers and GPUs (running and launching) before any folder or image
        is made, and count this launch among theirs until its start ends (release_launch)."""
        try:
            containers = await self._ds01_containers()
        except DOCKER_ERRORS as e:
            self.log.error(
                "Docker engine error while checking the limits of user=%s project=%s: %s. "
                "Check that dockerd runs (docker info).",
                self.user.name,
                self.project,
                e,
            )
            raise user_error(503, ENGINE_DOWN_MESSAGE) from e
        # no await between check and claim
        self._check_usage(self._usage(containers), request, devices, limits)
        need = min_equivalents(request, list(devices))
        self.launches.claim(self.user.name, ServerUse(self.project, self.name, (), need, True))

    def release_launch(self) -> None:
        self.launches.release(self.user.name, self.name)

    async def _ds01_containers(self) -> list[dict]:
        """This hub's DS01 containers, in any state (docker ps -a, filtered by label and name)."""
        found = await self.engine.list_servers(hub_containers_filter(self.prefix))
        listing = [record.as_listing() for record in found]
        return server_containers(listing, self.prefix)  # never one a user's image labelled

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
                await self.engine.remove(c["Id"])
            except DOCKER_ERRORS as e:
                self.log.error("Could not remove orphan container %s: %s", c["Id"][:12], e)
                kept.append(c)
        return kept

    async def _retry_removals(self) -> None:
        for target in sorted(self.pending_removal):
            try:
                await self.engine.remove(target)  # gone already: done too
            except DOCKER_ERRORS as e:
                self.log.warning("Removal of container %s still fails: %s", target, e)
                continue
            self.log.info("Removed container %s (its removal had failed before)", target)
            self.pending_removal.discard(target)

    async def allocate_and_create(self, plan: LaunchPlan, phases: LaunchPhases, create) -> dict:
        """The hub-wide atomic step: choose devices and create the container under one lock.

        Only what must be atomic is under the lock: listing the containers (the table), the
        decision and the create. The inventory is read before it. With ``gpu_queue_timeout``
        above 0 a launch that finds no free device waits in the queue (gpus/queue.py) and is
        served, under the same lock, when devices free up.
        """
        broker, request = plan.gpu_broker, plan.gpu_request
        wants = broker is not None and request.wants_gpu
        queue = self.gpu_queue() if wants and self.gpu_queue_timeout > 0 else None
        snapshot = await broker.snapshot() if wants else ([], {})
        waiter: Waiter | None = None
        others_served = False  # the queue's plan served someone behind this launch
        began = time.monotonic()
        deadline = began + self.gpu_queue_timeout
        try:
            while True:
                async with self.allocation.lock:
                    await self._retry_removals()
                    containers = await self._ds01_containers()
                    if not self.allocation.orphans_swept:
                        containers = await self._sweep_orphans(containers)
                        self.allocation.orphans_swept = True
                    usage = self._usage(containers)
                    # before the line: never wait for the impossible
                    self._check_usage(usage, request, plan.gpu_devices, plan.limits)
                    try:
                        if queue is not None and waiter is None and len(queue):
                            waiter = self._join_queue(queue, request)  # never jump the line
                        devices, others_served = self._assign_gpus(
                            plan, containers, snapshot, waiter, queue
                        )
                        if devices is not None:
                            check_gpu_equivalents(usage, equivalents(devices), plan.limits)
                    except LimitRefused as e:
                        self.gpu_uuids = []
                        self.refuse(e)
                    if devices is not None:
                        waited = None
                        if waiter is not None:
                            waited = round(time.time() - waiter.joined, 3)
                            queue.leave(waiter)
                            waiter = None
                        self._allocated(phases, began, devices, waited)
                        return await create(devices)
                    if waiter is None:
                        waiter = self._join_queue(queue, request)
                    if others_served:
                        queue.changed()  # devices freed for someone behind: wake them
                    seen = queue.version
                    self._report_position(plan, queue, waiter, containers, snapshot)
                    first = queue.position(waiter) == 1
                left = deadline - time.monotonic()
                if left <= 0:
                    self._queue_timed_out(queue, waiter, time.monotonic() - began)
                # Every change (a retire, a launch served, someone leaving) wakes everyone; only
                # the first in line also looks every gpu_queue_recheck_seconds for devices freed
                # outside DS01, so the cost does not grow with the length of the line.
                recheck = self.gpu_queue_recheck_seconds if first else 60.0
                await queue.wait(waiter, seen, min(left, recheck))
                snapshot = await broker.snapshot()  # devices may have freed outside DS01 too
        except QueueCancelled:
            self.log.info(
                "Launch of user=%s project=%s left the GPU queue (stopped while waiting)",
                self.user.name,
                self.project,
            )
            raise
        finally:
            if waiter is not None:
                queue.leave(waiter)

    def _allocated(
        self, phases: LaunchPhases, t0: float, devices: list[Device], waited: float | None
    ) -> None:
        """The allocate phase ends: time it, and audit the devices (when there are any)."""
        phases.allocated(t0)
        orm_spawner = getattr(self, "orm_spawner", None)
        if orm_spawner is not None:
            # "Started" (home page, admin view, the culler's runtime limit) is when the server
            # got its devices, not when it was requested: a wait in the GPU queue or a build
            # does not count. The hub commits it with the server.
            orm_spawner.started = datetime.now(timezone.utc).replace(tzinfo=None)
        if devices:
            self.audit(
                "allocate",
                user=self.user.name,
                project=self.project,
                server=self.name or "",
                gpus=[d.uuid for d in devices],
                waited=waited,
            )

    def _join_queue(self, queue: GpuQueue, request: GpuRequest) -> Waiter:
        try:
            waiter = queue.join(self.user.name, self.name, self.project, request)
        except AlreadyWaiting as e:
            raise user_error(409, f"Project '{self.project}' is already waiting for a GPU.") from e
        self.log.info(
            "user=%s project=%s waits for %s %s GPU(s): position %d",
            self.user.name,
            self.project,
            request.count,
            request.gpu_type,
            queue.position(waiter),
        )
        return waiter

    def _report_position(
        self, plan: LaunchPlan, queue: GpuQueue, waiter: Waiter, containers, snapshot
    ) -> None:
        devices, usage = snapshot
        held = holders(containers)
        taken = set(held) | busy_outside(usage, held)
        pool = candidates(plan.gpu_request, devices)
        busy = sum(1 for d in pool if d.uuid in taken)
        what = device_noun(plan.gpu_request, devices, len(pool), plan.gpu_broker.simulated)
        text = (
            f"Waiting for a GPU: {ordinal(queue.position(waiter))} in line "
            f"({busy} of {len(pool)} {what} busy)"
        )
        if text != self._queue_position:
            self._queue_position = text
            self.progress_log.emit(30, text)

    def _queue_timed_out(self, queue: GpuQueue, waiter: Waiter, waited: float) -> None:
        position = queue.position(waiter)
        queue.leave(waiter)
        self.log.warning(
            "user=%s project=%s waited %.0f s for a GPU (position %d) and gave up",
            self.user.name,
            self.project,
            waited,
            position,
        )
        minutes, seconds = divmod(round(waited), 60)
        raise self.refused(
            429,
            "queue_timeout",
            f"no GPU became free in {waited:.0f} s (position {position})",
            f"No GPU became free in {minutes} min {seconds:02d} s of waiting (you were "
            f"{ordinal(position)} in line). Your files are safe. Try again later, or launch "
            f"without a GPU.",
        )

    def _assign_gpus(
        self,
        plan: LaunchPlan,
        containers: list[dict],
        snapshot,
        waiter: Waiter | None,
        queue: GpuQueue | None,
    ) -> tuple[list[Device] | None, bool]:
        """The devices for this launch, or None when it must wait in the queue; and whether
        the queue's plan served someone else (then they are woken).

        Without a queue (or with nobody waiting and this launch not in it) a launch that finds
        no device is refused (429).
        """
        broker, request = plan.gpu_broker, plan.gpu_request
        others_served = False
        if broker is None or not request.wants_gpu:
            return [], others_served
        if waiter is None:
            try:
                devices = broker.choose(request, containers, *snapshot)
            except NoFit as e:
                if queue is not None:
                    return None, others_served
                self.log.warning(
                    "No GPU for user=%s project=%s (asked %s %s): %s",
                    self.user.name,
                    self.project,
                    request.count,
                    request.gpu_type,
                    e,
                )
                raise self.refused(429, "no_gpu", str(e)) from e
        else:
            all_devices, usage = snapshot
            held = holders(containers)
            taken = set(held) | busy_outside(usage, held)
            decided = broker.plan(queue.waiters, all_devices, taken)
            devices = decided.served.get(waiter.id)
            others_served = any(wid != waiter.id for wid in decided.served)
            if devices is None:
                return None, others_served
        self.gpu_uuids = [d.uuid for d in devices]
        self._queue_position = ""
        what = "simulated GPU" if broker.simulated else "GPU"
        shown = ", ".join(f"{d.index} ({d.mig_profile or d.name})" for d in devices)
        self.log.info(
            "Assigned %s %s to user=%s project=%s%s",
            what,
            ", ".join(self.gpu_uuids),
            self.user.name,
            self.project,
            f" after {time.time() - waiter.joined:.1f} s in the queue" if waiter else "",
        )
        self.progress_log.emit(35, f"Assigned {what} {shown}")
        return devices, others_served

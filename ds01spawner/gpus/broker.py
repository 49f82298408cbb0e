"""The hub-wide GPU broker: one inventory, and the choice of devices from the current table.

The spawner makes allocation and container creation one atomic step for the whole hub: under
its allocation lock it lists the DS01 containers, asks the broker to choose, and creates its
container (with the devices in its ``ds01.gpus`` label) before it lets go.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Mapping
from logging import Logger

from .allocator import GpuRequest, busy_outside, choose, parse_request
from .factory import make_inventory
from .model import Device, Inventory
from .queue import Plan, Waiter
from .queue import plan as queue_plan
from .table import Holder, holders


class GpuBroker:
    def __init__(self, inventory: Inventory, respect_foreign: bool, log: Logger) -> None:
        self.inventory = inventory
        self.respect_foreign = respect_foreign
        self.log = log

    @property
    def simulated(self) -> bool:
        return self.inventory.kind == "simulated"

    async def devices(self) -> list[Device]:
        return await asyncio.to_thread(self.inventory.devices)

    async def parse(self, options: Mapping, default_count: int) -> tuple[GpuRequest, list[Device]]:
        """user_options -> (GpuRequest, the devices it was checked against).

        allocator.RequestError (HTTP 400) for a request this server can never serve.
        """
        devices = await self.devices()
        return parse_request(options, default_count, devices), devices

    async def snapshot(self) -> tuple[list[Device], dict]:
        """Devices and their usage, read from the inventory (NVML calls: off the event loop).

        Taken before the allocation lock, so the lock covers only the container listing,
        the decision and the create.
        """
        devices = await self.devices()
        usage = await asyncio.to_thread(self.inventory.usage) if self.respect_foreign else {}
        return devices, usage

    def choose(
        self, request: GpuRequest, containers: list[dict], devices: list[Device], usage: Mapping
    ) -> list[Device]:
        """Free devices for ``request`` given the current containers (call under the lock).

        Raises allocator.NoFit (HTTP 429) when nothing fits.
        """
        if not request.wants_gpu:
            return []
        held: dict[str, Holder] = holders(containers)
        taken = set(held)
        foreign = busy_outside(usage, held)
        if foreign:
            self.log.info("GPUs busy with processes outside DS01: %s", ", ".join(sorted(foreign)))
        return choose(request, devices, taken | foreign, simulated=self.simulated)

    def plan(self, waiters: list[Waiter], devices: list[Device], taken: set[str]) -> Plan:
        """The GPU queue's plan (``gpus.queue.plan``) over this inventory's devices. A swarm's
        broker (``spawner.cluster_broker``) adds its node rule here."""
        return queue_plan(waiters, devices, taken)


_brokers: dict[str, GpuBroker] = {}
_brokers_lock = threading.Lock()  # first calls come from several worker threads at once


def broker_for(
    kind: str, simulated_gpus: list, state_file: str, respect_foreign: bool, log: Logger
) -> GpuBroker:
    """The hub's broker for this configuration (made once; InventoryError when it cannot be)."""
    key = json.dumps([kind, simulated_gpus, state_file, respect_foreign], sort_keys=True)
    with _brokers_lock:  # one inventory (one nvmlInit) per configuration, never two
        if key not in _brokers:
            inventory = make_inventory(kind, simulated_gpus, state_file or None, log)
            _brokers[key] = GpuBroker(inventory, respect_foreign, log)
        return _brokers[key]

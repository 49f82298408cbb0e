"""``ClusterBroker``: the GPU broker of a swarm, with ``gpus.broker.GpuBroker``'s interface.

The spawner's allocation steps (``gpu_steps``: the hub-wide allocation lock, the GPU queue, the
limits) are the single engine's, unchanged; they ask a broker for the devices, the choice and the
queue's plan. On a swarm the devices are the generic resources of the schedulable nodes (read
from the manager, ``swarm.cluster_gpus.inventory``), the table is the one the engine reads back
from the tasks (``SwarmEngine.list_servers``: assigned devices, and what pending tasks reserve),
and the choice adds the node rule (``swarm.cluster_gpus.choose``/``plan``: one node, one kind,
``swarm.placement.pick_node``). ``node_of`` tells the engine which node the choice is on.

No foreign-process check (``gpus_busy_outside_ds01``) on a swarm: the usage of a node's GPUs is
its own NVML's (docs/scale-out.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from logging import Logger

from ..engine.swarm import SwarmEngine
from ..gpus.allocator import GpuRequest, RequestError, parse_request
from ..gpus.allocator import noun as device_noun
from ..gpus.model import Device
from ..gpus.queue import Plan, Waiter
from ..gpus.table import holders
from ..swarm import cluster_gpus
from ..swarm.cluster_gpus import ClusterInventory


class ClusterBroker:
    """The swarm's devices, through ``engine`` (made once per hub, like the engine)."""

    respect_foreign = False

    def __init__(self, engine: SwarmEngine, simulated: bool, log: Logger) -> None:
        self.engine = engine
        self._simulated = simulated
        self.log = log
        self.inventory = ClusterInventory()
        self._node_of: dict[str, str] = {}

    @property
    def simulated(self) -> bool:
        return self._simulated

    async def devices(self) -> list[Device]:
        nodes = await self.engine.nodes()
        self.inventory = cluster_gpus.inventory(nodes, self._simulated)
        self._node_of.update(self.inventory.node_of)  # uuids are unique in the cluster
        return self.inventory.devices

    async def parse(self, options: Mapping, default_count: int) -> tuple[GpuRequest, list[Device]]:
        """The single engine's checks, and one more: a request must fit on one node."""
        devices = await self.devices()
        request = parse_request(options, default_count, devices)
        if request.wants_gpu:
            most = cluster_gpus.largest_node(request, devices, self.inventory)
            if request.count > most:
                what = device_noun(request, devices, most, self._simulated)
                raise RequestError(
                    f"A server runs on one node, and the largest node has {most} {what}; "
                    f"you asked for {request.count}."
                )
        return request, devices

    async def snapshot(self) -> tuple[list[Device], dict]:
        return await self.devices(), {}

    def choose(
        self, request: GpuRequest, containers: list[dict], devices: list[Device], usage: Mapping
    ) -> list[Device]:
        taken = set(holders(containers))
        return cluster_gpus.choose(request, devices, taken, self.inventory, self._simulated)

    def plan(self, waiters: list[Waiter], devices: list[Device], taken: set[str]) -> Plan:
        return cluster_gpus.plan(waiters, devices, taken, self.inventory)

    def node_of(self, devices: list[Device]) -> str:
        """The node id of a choice ("" for none)."""
        return self._node_of.get(devices[0].uuid, "") if devices else ""

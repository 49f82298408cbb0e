"""The swarm's GPUs as a :class:`ds01spawner.gpus.model.Inventory`, for the services.

On a swarm the devices are what the nodes advertise (generic resources, read from the manager's
``nodes()``), not what this host's NVML sees. :class:`SwarmInventory` turns them into
:class:`~ds01spawner.gpus.model.Device` records (index ``<node>:<i>``, so the admin map and the
culler's GPU meter work unchanged) and remembers each device's node (``node_of``: the admin
map's node column).

Utilization comes from the node that holds the device, through ``usage_of(node)`` (injected: a
per-node reader, docs/scale-out.md "Per-node signals"). Without a reader, or for a node whose
reader fails, the node's devices are left out of ``usage()``: the culler's GPU signal is then
**unknown** for their servers, which keeps them (never a retirement), and the map shows "n/a".
A failing node is logged once per outage.

May import: ``gpus.model``, ``gpus.node_settings`` and ``swarm.tasks``; nothing of the spawner.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping

from ..gpus.model import Device, DeviceUsage, Inventory
from ..gpus.node_settings import GPU_KIND, MIG_KIND_PREFIX
from .tasks import NodeInfo

_MIG_RE = re.compile(rf"^{MIG_KIND_PREFIX}-(?:\d+C-)?(\d+)G-(\d+)GB")
#: Compute slices of a GPU split into MIG instances (A100/H100: 7).
MIG_SLICES = 7


def kind_share(kind: str) -> float:
    """GPU-equivalents of one device of ``kind``: 1 for a GPU, a MIG slice its compute share."""
    m = _MIG_RE.match(kind)
    return round(min(1.0, int(m.group(1)) / MIG_SLICES), 3) if m else 1.0


def device_of(node: NodeInfo, index: int, kind: str, uuid: str) -> Device:
    """One advertised device as the inventory's record (pure)."""
    if kind == GPU_KIND:
        return Device(uuid, f"{node.name}:{index}", f"GPU on {node.name}", 0, "gpu")
    m = _MIG_RE.match(kind)
    profile = f"{m.group(1)}g.{m.group(2)}gb" if m else kind.removeprefix(MIG_KIND_PREFIX + "-")
    share = min(1.0, int(m.group(1)) / MIG_SLICES) if m else 1.0
    return Device(
        uuid,
        f"{node.name}:{index}",
        f"MIG {profile} on {node.name}",
        0,
        "mig",
        mig_profile=profile.lower(),
        share=round(share, 3),
    )


class SwarmInventory(Inventory):
    """The devices every node advertises (``nodes()``: node id -> NodeInfo, e.g.
    ``SwarmServiceEngine.nodes``) and their utilization from ``usage_of(node)``."""

    kind = "swarm"

    def __init__(
        self,
        nodes: Callable[[], Mapping[str, NodeInfo]],
        usage_of: Callable[[NodeInfo], Mapping[str, DeviceUsage]] | None = None,
        log: logging.Logger | None = None,
    ) -> None:
        self._nodes = nodes
        self.usage_of = usage_of
        self.log = log or logging.getLogger("ds01spawner.swarm")
        self.node_of: dict[str, str] = {}  # device uuid -> node name
        self._failing: set[str] = set()

    def devices(self) -> list[Device]:
        found, node_of = [], {}
        for node in sorted(self._nodes().values(), key=lambda n: (n.name, n.id)):
            for i, (kind, uuid) in enumerate(node.named):
                found.append(device_of(node, i, kind, uuid))
                node_of[uuid] = node.name
        self.node_of = node_of
        return found

    def usage(self) -> dict[str, DeviceUsage]:
        if self.usage_of is None:
            return {}
        out: dict[str, DeviceUsage] = {}
        for node in self._nodes().values():
            if not node.named:
                continue
            try:
                read = self.usage_of(node)
            except Exception as e:  # noqa: BLE001 - any reader failure: unknown, logged once
                if node.id not in self._failing:
                    self._failing.add(node.id)
                    self.log.warning("GPU usage of node %s cannot be read: %s", node.name, e)
                continue
            if node.id in self._failing:
                self._failing.discard(node.id)
                self.log.info("GPU usage of node %s can be read again", node.name)
            own = {uuid for _kind, uuid in node.named}
            out.update({u: v for u, v in read.items() if u in own})
        return out

    def describe(self) -> str:
        nodes = self._nodes()
        count = sum(len(n.named) for n in nodes.values())
        return f"{count} devices advertised by {len(nodes)} swarm nodes"

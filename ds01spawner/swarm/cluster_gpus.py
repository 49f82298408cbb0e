"""The cluster's GPUs as the allocator's devices, and the node rule on top of its policy.

On a swarm DS01 keeps its own allocation rule (the allocation lock, the GPU queue and its order,
the limits: ``gpus.allocator``, ``gpus.queue.plan``, ``limits.usage`` unchanged) and adds one
constraint: a server runs on **one node**, and its devices are all of one generic-resource kind
(a service reserves a count per kind). Pure functions:

- :func:`inventory`: every device the schedulable nodes advertise, as ``gpus.model.Device`` (its
  ``uuid`` is the generic resource's value, unique in the cluster), with its node and kind;
- :func:`choose`: the allocator's choice with the node rule: the candidates of the request that
  no server holds, counted per (node, kind), and ``placement.pick_node`` picks the node (fewest
  free that fit: packing); NoFit (the allocator's sentence) when no node has enough;
- :func:`plan`: ``gpus.queue.plan``'s order rule (first come, first served; what a waiter could
  use is kept for it) with the node rule.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from ..gpus.allocator import GpuRequest, NoFit, candidates
from ..gpus.allocator import choose as choose_anywhere
from ..gpus.allocator import noun as device_noun
from ..gpus.model import Device
from ..gpus.node_settings import GPU_KIND, MIG_KIND_PREFIX
from ..gpus.queue import Plan, Waiter
from ..gpus.queue import plan as queue_plan
from .placement import pick_node, request_kinds
from .tasks import NodeInfo

_MIG_RE = re.compile(rf"^{MIG_KIND_PREFIX}-(\d+)G-(\d+)GB$")
#: compute slices of a whole GPU (A100/H100: 7), for a MIG slice's share in GPU-equivalents
MIG_SLICES = 7


@dataclass(frozen=True)
class ClusterInventory:
    devices: list[Device] = field(default_factory=list)
    node_of: dict[str, str] = field(default_factory=dict)  # uuid -> node id
    kind_of: dict[str, str] = field(default_factory=dict)  # uuid -> generic-resource kind
    names: dict[str, str] = field(default_factory=dict)  # node id -> node name


def device(node: NodeInfo, i: int, kind: str, value: str, simulated: bool) -> Device:
    """A generic resource as the allocator's device (a MIG kind ``NVIDIA-MIG-3G-20GB`` is a
    ``3g.20gb`` slice, share 3/7)."""
    m = _MIG_RE.match(kind)
    if m:
        g, gb = int(m.group(1)), int(m.group(2))
        profile = f"{g}g.{gb}gb"
        return Device(
            uuid=value,
            index=f"{node.name}/{i}",
            name=f"MIG {profile}",
            memory_mib=gb * 1024,
            kind="mig",
            mig_profile=profile,
            share=round(g / MIG_SLICES, 4),
            simulated=simulated,
        )
    name = "GPU" if kind == GPU_KIND else kind
    return Device(value, f"{node.name}/{i}", name, 0, "gpu", simulated=simulated)


def inventory(nodes: Mapping[str, NodeInfo], simulated: bool = False) -> ClusterInventory:
    """The devices of the nodes that may take servers now (down, drained or unlabelled nodes'
    devices are not offered)."""
    inv = ClusterInventory()
    for node in sorted(nodes.values(), key=lambda n: (n.name, n.id)):
        inv.names[node.id] = node.name
        if not node.schedulable:
            continue
        for i, (kind, value) in enumerate(node.named):
            inv.devices.append(device(node, i, kind, value, simulated))
            inv.node_of[value] = node.id
            inv.kind_of[value] = kind
    return inv


def _pick(request: GpuRequest, usable: list[Device], inv: ClusterInventory) -> list[Device] | None:
    counts: dict[tuple[str, str], int] = {}
    for d in usable:
        key = (inv.node_of[d.uuid], inv.kind_of[d.uuid])
        counts[key] = counts.get(key, 0) + 1
    kinds = request_kinds(request.gpu_type, set(inv.kind_of.values()))
    picked = pick_node(counts, kinds, request.count, inv.names)
    if picked is None:
        return None
    node, kind = picked
    return [d for d in usable if inv.node_of[d.uuid] == node and inv.kind_of[d.uuid] == kind][
        : request.count
    ]


def choose(
    request: GpuRequest,
    devices: list[Device],
    taken: Iterable[str],
    inv: ClusterInventory,
    simulated: bool = False,
) -> list[Device]:
    """Free devices of one kind on one node for ``request``, or NoFit with a sentence."""
    if not request.wants_gpu:
        return []
    taken = set(taken)
    free = [d for d in candidates(request, devices) if d.uuid not in taken]
    picked = _pick(request, free, inv)
    if picked is not None:
        return picked
    choose_anywhere(request, devices, taken, simulated)  # too few in the whole cluster: its NoFit
    what = device_noun(request, devices, request.count, simulated)
    raise NoFit(
        f"{len(free)} {device_noun(request, devices, len(free), simulated)} are free, but no "
        f"node has {request.count} {what} free together (a server runs on one node). Ask for "
        f"fewer, retire a server or try again later."
    )


def plan(
    waiters: Iterable[Waiter], devices: list[Device], taken: Iterable[str], inv: ClusterInventory
) -> Plan:
    """``gpus.queue.plan`` with the node rule: in arrival order, a waiter is served when one
    node has its count free of one kind; else every free device it could use is kept for it."""
    return queue_plan(
        waiters,
        devices,
        taken,
        pick=lambda request, usable: _pick(request, usable, inv) if request.wants_gpu else [],
    )


def largest_node(request: GpuRequest, devices: list[Device], inv: ClusterInventory) -> int:
    """The most devices of one kind that serve ``request`` on one node (free or not)."""
    return max((len(_pick_all(request, devices, inv, node)) for node in inv.names), default=0)


def _pick_all(
    request: GpuRequest, devices: list[Device], inv: ClusterInventory, node: str
) -> list[Device]:
    pool = [d for d in candidates(request, devices) if inv.node_of.get(d.uuid) == node]
    by_kind: dict[str, list[Device]] = {}
    for d in pool:
        by_kind.setdefault(inv.kind_of[d.uuid], []).append(d)
    return max(by_kind.values(), key=len, default=[])

"""Which node and which device kind a launch asks Swarm for: pure, decided under DS01's lock.

DS01 picks the node and the number of devices (and their kind); Swarm's scheduler picks which
named devices of that kind on that node. The inputs are :func:`ds01spawner.swarm.tasks.free_counts`
and the request's ``gpu_type`` (as in :mod:`ds01spawner.gpus.allocator`):

- ``full``: whole GPUs (kind ``NVIDIA-GPU``);
- ``<profile>`` (``3g.20gb``): slices of that profile (kind ``NVIDIA-MIG-3G-20GB``);
- ``mig``: MIG slices of any profile, the smallest first;
- ``any``: MIG slices (smallest first) before whole GPUs, so whole GPUs stay free for the people
  who ask for them: the single engine's order (docs/gpus.md).

A request's devices are all of one kind on one node (a Swarm service reserves a count per kind; a
server runs on one node). Among nodes with enough free devices of the first kind that has any, the
one with the **fewest** free wins (packing: whole nodes stay free for larger requests), then the
node's name and id: the same state always gives the same choice.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence

from ..gpus.node_settings import GPU_KIND, MIG_KIND_PREFIX, mig_kind

_MIG_KIND_RE = re.compile(rf"^{MIG_KIND_PREFIX}-(?:(\d+)C-)?(\d+)G-(\d+)GB(?:-.*)?$")


def _mig_size(kind: str) -> tuple[int, int, str]:
    m = _MIG_KIND_RE.match(kind)
    if not m:
        return (99, 0, kind)
    c, g, gb = m.groups()
    return (int(c or g), int(gb), kind)


def request_kinds(gpu_type: str, kinds: Iterable[str]) -> list[str]:
    """The kinds the cluster advertises that serve ``gpu_type``, in the order DS01 prefers them."""
    kinds = set(kinds)
    migs = sorted((k for k in kinds if k.startswith(MIG_KIND_PREFIX)), key=_mig_size)
    full = [GPU_KIND] if GPU_KIND in kinds else []
    wanted = gpu_type.strip().lower()
    if wanted == "full":
        return full
    if wanted == "mig":
        return migs
    if wanted == "any":
        return migs + full
    kind = mig_kind(wanted)
    return [kind] if kind in kinds else []


def pick_node(
    counts: Mapping[tuple[str, str], int],
    kinds: Sequence[str],
    count: int,
    names: Mapping[str, str] | None = None,
) -> tuple[str, str] | None:
    """``(node id, kind)`` for ``count`` devices, or None when no node has them free now.

    ``counts`` is ``free_counts(...)``; ``kinds`` is ``request_kinds(...)``; ``names`` maps node
    ids to names (for a stable, readable order).
    """
    if count < 1:
        raise ValueError("pick_node places GPU requests (count >= 1)")
    names = names or {}
    for kind in kinds:
        fits = sorted(
            (free, names.get(node, ""), node)
            for (node, k), free in counts.items()
            if k == kind and free >= count
        )
        if fits:
            return fits[0][2], kind
    return None

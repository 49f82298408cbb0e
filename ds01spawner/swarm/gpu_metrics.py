"""GPU utilization of a swarm node, from that node's NVIDIA DCGM exporter (``dcgm-exporter``).

The Docker engine API has no GPU figures, and a figure read inside a user's container is not
trusted. Each GPU node runs NVIDIA's ``dcgm-exporter`` (a system service, not a user's
container), which serves Prometheus metrics over HTTP; the node's label ``ds01.gpu_metrics``
names its URL (``http://<node addr>:9400/metrics``). :class:`MetricsReader` is the per-node
reader of :class:`ds01spawner.swarm.inventory.SwarmInventory`:

- ``DCGM_FI_DEV_GPU_UTIL{UUID="GPU-..."}`` (percent) and ``DCGM_FI_DEV_FB_USED`` (MiB) of a
  whole GPU become its :class:`~ds01spawner.gpus.model.DeviceUsage`;
- a MIG slice the node advertises gets utilization ``None`` (as NVML on one server: the culler
  counts it *silent*, the panel says so) once the exporter answered;
- a node without the label, an exporter that does not answer (``timeout``) or a page without a
  device's figure leave that device out: *unknown*, which keeps its server (never a
  retirement). The page is read up to ``MAX_BYTES``.

Only devices the node advertises are read from its page (``SwarmInventory`` drops the rest).
Pure parsing (:func:`parse_dcgm`) is apart from the HTTP call.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import requests

from ..gpus.model import DeviceUsage
from ..gpus.node_settings import MIG_KIND_PREFIX
from .tasks import NodeInfo

METRICS_LABEL = "ds01.gpu_metrics"
MAX_BYTES = 4 << 20
_LINE = re.compile(r"^(DCGM_FI_DEV_GPU_UTIL|DCGM_FI_DEV_FB_USED)\{([^}]*)\}\s+(\S+)")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def parse_dcgm(text: str) -> dict[str, DeviceUsage]:
    """Whole GPUs' utilization and memory used, by UUID, from a dcgm-exporter page."""
    util: dict[str, float] = {}
    used: dict[str, int] = {}
    for line in text.splitlines():
        m = _LINE.match(line)
        if not m:
            continue
        labels = dict(_LABEL.findall(m.group(2)))
        uuid = labels.get("UUID", "")
        if not uuid or labels.get("GPU_I_ID"):  # a MIG instance: figures of the GPU instance
            continue
        try:
            value = float(m.group(3))
        except ValueError:
            continue
        if value != value or value < 0:  # NaN or nonsense
            continue
        if m.group(1) == "DCGM_FI_DEV_GPU_UTIL":
            util[uuid] = min(value, 100.0)
        else:
            used[uuid] = int(value)
    return {u: DeviceUsage(u, util[u], used.get(u)) for u in util}


class MetricsError(Exception):
    """A node's GPU figures cannot be read; str() says why."""


class MetricsReader:
    """``reader(node)`` -> usage of the node's devices (see the module docstring)."""

    def __init__(self, timeout: float = 5.0) -> None:
        self.timeout = timeout
        self._http = requests.Session()
        self._http.trust_env = False  # the node's address directly, never through a proxy

    def __call__(self, node: NodeInfo) -> Mapping[str, DeviceUsage]:
        url = node.labels.get(METRICS_LABEL, "")
        if not url.startswith(("http://", "https://")):
            raise MetricsError(
                f"no {METRICS_LABEL} label (the URL of the node's dcgm-exporter, e.g. "
                f"http://{node.addr or '<addr>'}:9400/metrics)"
            )
        try:
            with self._http.get(url, timeout=self.timeout, stream=True) as r:
                r.raise_for_status()
                body = r.raw.read(MAX_BYTES, decode_content=True)
        except (requests.RequestException, OSError) as e:
            raise MetricsError(f"{url}: {e}") from e
        read = parse_dcgm(body.decode("utf-8", "replace"))
        for kind, uuid in node.named:
            if kind.startswith(MIG_KIND_PREFIX):
                read[uuid] = DeviceUsage(uuid, None, None)  # silent, as NVML reports MIG
        return read

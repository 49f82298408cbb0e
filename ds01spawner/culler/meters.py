"""The culler's CPU and GPU meters: CPU time from the container's cgroup (``CgroupCpu``, with
``docker stats`` as the fallback: ``cpu_sample``), ``CpuMeter`` and ``GpuMeter`` (samples kept
between cycles: is a server's CPU or GPU in use?) and ``gpu_demand``. Pure but for the cgroup
and /proc reads of ``CgroupCpu``.
"""

from __future__ import annotations

import math
import os
from collections import deque
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta

from ..gpus.model import Device, Inventory
from ..gpus.table import GPU_LABEL, HOLDING_STATES, parse_gpu_label
from .state import parse_time


def cpu_sample(stats: Mapping) -> tuple[datetime, int] | None:
    """(when, total CPU nanoseconds) from one-shot stats; None for a container not running."""
    when = docker_time(str(stats.get("read") or ""))
    total = ((stats.get("cpu_stats") or {}).get("cpu_usage") or {}).get("total_usage")
    if when is None or when.year < 2000 or not isinstance(total, int):
        return None
    return when, total


def docker_time(text: str) -> datetime | None:
    """Docker's nanosecond RFC 3339 times (``2026-11-28T16:53:36.03699596Z``) as datetimes."""
    text = text.strip()
    if not text.endswith("Z"):
        return parse_time(text)
    head, _, frac = text[:-1].partition(".")
    digits = "".join(ch for ch in frac if ch.isdigit())[:6].ljust(6, "0")
    return parse_time(f"{head}.{digits}+00:00")


def parse_mountinfo(text: str) -> dict[str, tuple[str, str]]:
    """The cgroup hierarchies that count CPU time: ``{"cpuacct": (mount point, root)}`` for
    cgroup v1 and ``{"unified": (mount point, root)}`` for v2, from /proc/self/mountinfo."""
    found: dict[str, tuple[str, str]] = {}
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        fields, after = left.split(), right.split()
        if not sep or len(fields) < 5 or len(after) < 3:
            continue
        root, point = (f.replace("\\040", " ") for f in fields[3:5])
        if after[0] == "cgroup" and "cpuacct" in after[2].split(","):
            found.setdefault("cpuacct", (point, root))
        elif after[0] == "cgroup2":
            found.setdefault("unified", (point, root))
    return found


def cgroup_cpu_file(proc_cgroup: str, mounts: Mapping[str, tuple[str, str]]) -> str | None:
    """The file with a process's cgroup CPU time: v1 ``cpuacct.usage`` (nanoseconds), else v2
    ``cpu.stat`` (``usage_usec``); from /proc/<pid>/cgroup and :func:`parse_mountinfo`."""
    v2 = None
    for line in proc_cgroup.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hid, controllers, path = parts
        for kind, name in (("cpuacct", "cpuacct.usage"), ("unified", "cpu.stat")):
            is_it = "cpuacct" in controllers.split(",") if kind == "cpuacct" else hid == "0"
            if not is_it or kind not in mounts:
                continue
            point, root = mounts[kind]
            rel = path[len(root) :] if root != "/" and path.startswith(root) else path
            file = os.path.join(point, rel.lstrip("/"), name)
            if kind == "cpuacct":
                return file
            v2 = file
    return v2


class CgroupCpu:
    """A container's CPU time read from the host's cgroup files, through its init process: a
    few file reads, no Docker call. None where they cannot be read (another host's engine, a
    layout not known here); the caller then asks Docker."""

    def __init__(self, proc: str = "/proc") -> None:
        self.proc = proc
        self._mounts: dict[str, tuple[str, str]] | None = None

    def read(self, pid: int) -> int | None:
        try:
            if self._mounts is None:
                with open(os.path.join(self.proc, "self", "mountinfo")) as f:
                    self._mounts = parse_mountinfo(f.read())
            with open(os.path.join(self.proc, str(pid), "cgroup")) as f:
                file = cgroup_cpu_file(f.read(), self._mounts)
            if file is None:
                return None
            with open(file) as f:
                text = f.read()
        except (OSError, ValueError):
            return None
        if file.endswith("cpuacct.usage"):
            return int(text.strip()) if text.strip().isdigit() else None
        for line in text.splitlines():
            key, _, value = line.partition(" ")
            if key == "usage_usec" and value.strip().isdigit():
                return int(value) * 1000
        return None


class CpuMeter:
    """CPU use of each container between two samples, in cores (1.0 = one core all the time)."""

    def __init__(self) -> None:
        self._last: dict[str, tuple[datetime, int]] = {}

    def update(self, container_id: str, sample: tuple[datetime, int] | None) -> float | None:
        """The cores used since the previous sample (``(when, total CPU ns)``); None for the
        first sample of a container, or no sample."""
        if sample is None:
            return None
        before = self._last.get(container_id)
        self._last[container_id] = sample
        if before is None or sample[0] <= before[0] or sample[1] < before[1]:
            return None
        seconds = (sample[0] - before[0]).total_seconds()
        return (sample[1] - before[1]) / 1e9 / seconds

    def forget_except(self, ids: Iterable[str]) -> None:
        keep = set(ids)
        for cid in list(self._last):
            if cid not in keep:
                del self._last[cid]


# ---- GPUs ---------------------------------------------------------------------------------------

GPU_BUSY, GPU_IDLE, GPU_UNKNOWN, GPU_SILENT = "busy", "idle", "unknown", "silent"


class GpuMeter:
    """GPU utilization per device over a window of samples, one sample per cycle.

    A server's GPUs are busy when the mean utilization of any of its devices over the window
    (samples since the server started only) is at or above the threshold. A device whose
    utilization the driver cannot tell (NVML on MIG slices) is silent: it neither keeps the
    server alive nor blocks its retirement. A device that is missing (lost), or an inventory
    that failed this cycle, makes the answer unknown.
    """

    def __init__(self, inventory: Inventory | None, window: float, busy_percent: float) -> None:
        self.inventory = inventory
        self.window = timedelta(seconds=window)
        self.busy_percent = busy_percent
        self._samples: dict[str, deque[tuple[datetime, float | None]]] = {}
        self._read: set[str] = set()  # devices read in the last sample
        self.failed: str | None = None
        self.devices: list[Device] = []

    def sample(self, now: datetime) -> None:
        """Read every device's utilization (one inventory call; run it off the event loop)."""
        self._read = set()
        if self.inventory is None:
            return
        try:
            self.devices = self.inventory.devices()
            usage = self.inventory.usage()
        except Exception as e:  # noqa: BLE001 - NVML raises its own types; logged by caller
            self.failed = f"the GPU inventory failed: {e}"
            return
        self.failed = None
        for uuid, u in usage.items():
            q = self._samples.setdefault(uuid, deque())
            q.append((now, u.utilization_pct))
            while q and q[0][0] < now - self.window - self.window:
                q.popleft()
        self._read = set(usage)

    def state_of(self, uuids: Iterable[str], started: datetime, now: datetime) -> str:
        uuids = list(uuids)
        if not uuids:
            return GPU_SILENT
        if self.failed or any(u not in self._read for u in uuids):
            return GPU_UNKNOWN
        since = max(started, now - self.window)
        silent = True
        for uuid in uuids:
            values = [p for t, p in self._samples.get(uuid, ()) if t >= since and p is not None]
            if not values:
                continue
            silent = False
            if sum(values) / len(values) >= self.busy_percent:
                return GPU_BUSY
        return GPU_SILENT if silent else GPU_IDLE


def gpu_demand(devices: Iterable[Device], containers: Iterable[Mapping]) -> float:
    """The share (0..1) of this host's GPU capacity held by DS01 containers, in
    GPU-equivalents (a MIG slice counts its share): the high-demand rule's measure."""
    devices = list(devices)
    total = sum(d.share for d in devices)
    if total <= 0 or math.isclose(total, 0):
        return 0.0
    held: set[str] = set()
    for c in containers:
        if c.get("State") in HOLDING_STATES:
            held.update(parse_gpu_label((c.get("Labels") or {}).get(GPU_LABEL)))
    return sum(d.share for d in devices if d.uuid in held) / total

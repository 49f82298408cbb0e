"""What a GPU inventory reports: devices, their usage, and the interface every inventory implements.

A *device* is something one server can be given: a full GPU, or one MIG instance of a GPU that
has MIG mode enabled (never the MIG-enabled GPU itself). ``share`` says how much of a physical GPU
a device is, in GPU-equivalents: 1.0 for a full GPU, ``compute slices / the GPU's total slices``
for a MIG instance (3/7 for a ``3g.20gb`` slice of an A100).

This module also holds the MIG profile helpers both implementations share. Nothing here talks
to NVML.
"""

from __future__ import annotations

import logging
import re
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

LOGGER_NAME = "ds01spawner.gpus"


@dataclass(frozen=True)
class Device:
    """One allocatable device: a full GPU or a MIG instance."""

    uuid: str  # "GPU-..." or "MIG-..."
    index: str  # nvidia-smi style: "0" for GPU 0, "1:2" for MIG device 2 on GPU 1
    name: str  # "NVIDIA A100-SXM4-40GB" / "NVIDIA A100-SXM4-40GB MIG 3g.20gb"
    memory_mib: int
    kind: str  # "gpu" or "mig"
    parent_uuid: str | None = None  # for MIG: UUID of the physical GPU
    mig_profile: str | None = None  # for MIG: e.g. "3g.20gb"
    share: float = 1.0  # GPU-equivalents: 1.0 for a full GPU, a MIG slice its share of the GPU
    simulated: bool = False


@dataclass(frozen=True)
class DeviceUsage:
    """What a device is doing now."""

    uuid: str
    utilization_pct: float | None  # None where NVML cannot tell (e.g. MIG)
    memory_used_mib: int | None
    pids: tuple[int, ...] = ()  # host PIDs of compute processes on the device


class InventoryError(Exception):
    """The inventory cannot work at all (driver not loaded, library missing, bad simulated spec).

    str() is a sentence an admin can act on.
    """


class Inventory(ABC):
    """The GPUs of this host, as devices a server can be given.

    ``devices()`` and ``usage()`` never raise for a single bad device: it is left out and a
    warning is logged once (and an info line once it is usable again).
    """

    kind: str = ""

    @abstractmethod
    def devices(self) -> list[Device]:
        """Allocatable devices, ordered by index."""

    @abstractmethod
    def usage(self) -> dict[str, DeviceUsage]:
        """Usage by device UUID; a device that cannot be read is left out."""

    @abstractmethod
    def describe(self) -> str:
        """One line for people, e.g. ``"4 simulated GPUs (1 split into 3 MIG slices)"``."""

    def close(self) -> None:
        """Release what the inventory holds (NVML: nvmlShutdown). Safe to call twice."""
        return None  # nothing to release by default


class NoneInventory(Inventory):
    """No GPUs: every server starts without one."""

    kind = "none"

    def devices(self) -> list[Device]:
        return []

    def usage(self) -> dict[str, DeviceUsage]:
        return {}

    def describe(self) -> str:
        return "no GPUs (GPU inventory 'none')"


# ---- problems, logged once ----------------------------------------------------------------------


class ProblemLog:
    """Log each device problem once when it appears, and once when it is gone.

    ``update()`` takes all problems of one scan, keyed by a label such as ``"GPU 3"``, from one
    source (``"devices"`` or ``"usage"``). The hub scans often, so repeating the same warning at
    every scan, or once per source, would drown the log.
    """

    def __init__(self, log: logging.Logger | logging.LoggerAdapter) -> None:
        self.log = log
        self._by_source: dict[str, dict[str, str]] = {}
        self._lock = threading.Lock()  # the hub scans from worker threads

    def of(self, source: str) -> dict[str, str]:
        """The problems of ``source``'s last scan."""
        with self._lock:
            return dict(self._by_source.get(source, {}))

    @property
    def current(self) -> dict[str, str]:
        """All problems of the last scan of every source, by label."""
        with self._lock:
            return self._merged()

    def _merged(self) -> dict[str, str]:
        merged: dict[str, str] = {}
        for problems in self._by_source.values():
            merged.update(problems)
        return merged

    def update(self, problems: Mapping[str, str], source: str = "devices") -> None:
        with self._lock:
            self._update(problems, source)

    def _update(self, problems: Mapping[str, str], source: str) -> None:
        known = {m for p in self._by_source.values() for m in p.values()}
        before = self._merged()
        gone = {k: m for k, m in self._by_source.get(source, {}).items() if k not in problems}
        self._by_source[source] = dict(problems)
        # the same problem, seen by another source, is gone too
        for other in self._by_source.values():
            for label, message in gone.items():
                if other.get(label) == message:
                    del other[label]
        for message in dict.fromkeys(problems.values()):
            if message not in known:
                self.log.warning("%s", message)
        for label in sorted(before.keys() - self._merged().keys()):
            self.log.info("GPU inventory: %s is usable again.", label)


def describe_devices(
    gpu_count: int,
    what: str,
    devices: Iterable[Device],
    left_out: Iterable[str] = (),
    suffix: str = "",
) -> str:
    """``"4 simulated GPUs (1 split into 3 MIG slices; left out: GPU 3)"``.

    ``gpu_count`` counts physical GPUs; ``what`` is the noun with its adjectives (``"GPU"``,
    ``"simulated GPU"``), pluralised here, and ``suffix`` follows it (``" via NVML"``);
    ``left_out`` are labels of devices left out.
    """
    mig = [d for d in devices if d.kind == "mig"]
    parents = {d.parent_uuid for d in mig}
    text = f"{gpu_count} {what}{'' if gpu_count == 1 else 's'}{suffix}"
    details = []
    if mig:
        details.append(
            f"{len(parents)} split into {len(mig)} MIG slice{'' if len(mig) == 1 else 's'}"
        )
    left = sorted(left_out)
    if left:
        details.append("left out: " + ", ".join(left))
    return text + (f" ({'; '.join(details)})" if details else "")


def device_label(index: str) -> str:
    """``"GPU 0"`` or ``"MIG device 1:2"``: how log lines name a device."""
    return f"MIG device {index}" if ":" in index else f"GPU {index}"


# ---- MIG profiles -------------------------------------------------------------------------------

#: A MIG profile as nvidia-smi names it: ``[<c>c.]<g>g.<gb>gb[+attrs|-attrs]``, e.g.
#: ``3g.20gb``, ``1c.3g.20gb`` (a compute instance of a 3-slice GPU instance), ``1g.5gb+me``.
MIG_PROFILE_RE = re.compile(r"(?:(\d+)c\.)?(\d+)g\.(\d+)gb([+-][a-z][a-z.,]*)?")


@dataclass(frozen=True)
class MigProfile:
    compute_slices: int  # slices of the compute instance (the "c" part; equals gi_slices if absent)
    gi_slices: int  # slices of the GPU instance (the "g" part)
    memory_gb: int
    suffix: str = ""  # "+me", "-me", ...

    def __str__(self) -> str:
        c = "" if self.compute_slices == self.gi_slices else f"{self.compute_slices}c."
        return f"{c}{self.gi_slices}g.{self.memory_gb}gb{self.suffix}"


def parse_mig_profile(text: str) -> MigProfile | None:
    """``"3g.20gb"`` -> MigProfile(3, 3, 20); None when ``text`` is not a profile name."""
    m = MIG_PROFILE_RE.fullmatch(text.strip())
    if not m:
        return None
    c, g, gb, suffix = m.groups()
    gi = int(g)
    return MigProfile(int(c) if c else gi, gi, int(gb), suffix or "")


def profile_from_device_name(name: str) -> MigProfile | None:
    """The profile at the end of a MIG device's NVML name (``"NVIDIA A100 ... MIG 3g.20gb"``)."""
    m = re.search(r"\bMIG\s+(\S+)\s*$", name)
    return parse_mig_profile(m.group(1)) if m else None


def mig_memory_gb(parent_total_bytes: int, mig_memory_mib: int) -> int:
    """The ``<gb>`` of a profile name, computed the way NVIDIA's go-nvlib does.

    The instance's fraction of the GPU's memory is rounded up to eighths and applied to the
    GPU's memory in whole GiB, rounded: 19968 MiB of a 40 GiB A100 -> 20 (``3g.20gb``).
    """
    if parent_total_bytes <= 0:
        return (mig_memory_mib + 512) // 1024
    eighths = -(-mig_memory_mib * 1024 * 1024 * 8 // parent_total_bytes)  # ceil, in integers
    total_gb = -(-parent_total_bytes // 1024**3)
    return (eighths * total_gb * 2 + 8) // 16  # round(eighths / 8 * total_gb), halves up

"""A GPU inventory from a list in the configuration, for machines without NVIDIA hardware.

It behaves like :class:`~ds01spawner.gpus.nvml.NvmlInventory`, failures included, so that the
hub, the tests and the demo exercise the same paths as on a GPU server.

The spec is a list of GPUs, in index order::

    [{"name": "NVIDIA A100-SXM4-40GB", "memory_mib": 40960},
     {"name": "NVIDIA A100-SXM4-40GB", "memory_mib": 40960,
      "mig_profiles": ["3g.20gb", "2g.10gb", "2g.10gb"]}]

- ``name`` (text) and ``memory_mib`` (whole number) are required; ``uuid`` is optional.
- ``mig_profiles`` splits the GPU into those MIG instances, in that order (index
  ``"<gpu>:<n>"``). A profile is ``<g>g.<gb>gb`` (optionally ``+me``) with g = 1, 2, 3, 4 or 7;
  an instance has ``g/7`` of the GPU (``share``) and ``gb * 1024`` MiB. The slices of one GPU
  add up to at most 7. An item may be ``{"profile": "3g.20gb", "uuid": "MIG-..."}`` to fix
  its UUID.
- ``mig_enabled`` (default: true when ``mig_profiles`` is given) with no profiles is a GPU in
  MIG mode without instances: it offers nothing and is logged, like on real hardware.

Without ``uuid``, GPU ``i`` is ``GPU-5e000000-0000-0000-0000-<i, 12 digits>`` and MIG instance
``j`` of GPU ``i`` is ``MIG-5e000000-0000-0000-<i, 4 digits>-<j, 12 digits>``: shaped like
real UUIDs, stable across restarts, and recognisable as simulated.

The state file (JSON, re-read at every ``devices()``/``usage()`` call, missing = all idle)
changes things on a running hub, keyed by UUID or index::

    {"0": {"utilization_pct": 87, "memory_used_mib": 1000, "pids": [1234]},
     "GPU-5e000000-0000-0000-0000-000000000001": {"lost": true}}

``"lost": true`` leaves the device out of ``devices()`` and ``usage()`` with a warning, like a
GPU that fell off the bus; on a MIG-split GPU's own entry it takes all its instances with it.
Utilization of a MIG instance is None unless the state file sets it (NVML cannot tell either).
:func:`write_state` merges changes into the file atomically.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..jsonfile import write_json_atomically
from .model import (
    LOGGER_NAME,
    Device,
    DeviceUsage,
    Inventory,
    InventoryError,
    ProblemLog,
    describe_devices,
    device_label,
    parse_mig_profile,
)

TOTAL_SLICES = 7
MIG_SLICE_SIZES = (1, 2, 3, 4, 7)
_GPU_KEYS = {"name", "memory_mib", "uuid", "mig_profiles", "mig_enabled"}


def simulated_gpu_uuid(i: int) -> str:
    return f"GPU-5e000000-0000-0000-0000-{i:012d}"


def simulated_mig_uuid(i: int, j: int) -> str:
    return f"MIG-5e000000-0000-0000-{i:04d}-{j:012d}"


@dataclass(frozen=True)
class SimulatedGpu:
    """One GPU of the spec: the full GPU, and its MIG instances where MIG mode is on."""

    device: Device
    mig_enabled: bool
    migs: tuple[Device, ...] = ()


# ---- the spec -----------------------------------------------------------------------------------


def _bad(n: int, item: object, problem: str) -> InventoryError:
    shown = json.dumps(item, default=repr) if isinstance(item, dict) else repr(item)
    if len(shown) > 160:
        shown = shown[:157] + "..."
    return InventoryError(f"Simulated GPU #{n} {shown}: {problem}")


def parse_spec(spec: Any) -> list[SimulatedGpu]:
    """Check the spec and build its devices; InventoryError naming the first bad item."""
    if isinstance(spec, (str, bytes, Mapping)) or not isinstance(spec, (list, tuple)):
        raise InventoryError(
            "The simulated GPUs must be a list of GPUs such as "
            '[{"name": "NVIDIA A100-SXM4-40GB", "memory_mib": 40960}], '
            f"not {type(spec).__name__}."
        )
    gpus = [_parse_gpu(n, item) for n, item in enumerate(spec)]
    seen: dict[str, str] = {}
    for gpu in gpus:
        for d in (gpu.device, *gpu.migs):
            if d.uuid in seen:
                raise InventoryError(
                    f"Simulated GPUs: the UUID {d.uuid} is used twice "
                    f"({device_label(seen[d.uuid])} and {device_label(d.index)}); "
                    "every device needs its own."
                )
            seen[d.uuid] = d.index
    return gpus


def _parse_gpu(n: int, item: Any) -> SimulatedGpu:
    if not isinstance(item, Mapping):
        raise _bad(n, item, 'a GPU is an object like {"name": ..., "memory_mib": ...}.')
    unknown = sorted(set(item) - _GPU_KEYS)
    if unknown:
        raise _bad(
            n,
            item,
            f"unknown key{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}; "
            f"a GPU has {', '.join(sorted(_GPU_KEYS))}.",
        )
    name = item.get("name")
    if not isinstance(name, str) or not name.strip():
        raise _bad(n, item, '"name" is missing; give the model name, e.g. "NVIDIA A100-SXM4-40GB".')
    memory = item.get("memory_mib")
    if isinstance(memory, bool) or not isinstance(memory, int) or memory <= 0:
        raise _bad(
            n, item, f'"memory_mib" must be a whole number of MiB such as 40960, not {memory!r}.'
        )
    uuid = _uuid(n, item, item.get("uuid"), "GPU-") or simulated_gpu_uuid(n)
    gpu = Device(uuid=uuid, index=str(n), name=name, memory_mib=memory, kind="gpu", simulated=True)

    profiles = item.get("mig_profiles")
    if profiles is not None and not isinstance(profiles, (list, tuple)):
        raise _bad(n, item, '"mig_profiles" must be a list such as ["3g.20gb", "4g.20gb"].')
    mig_enabled = item.get("mig_enabled", profiles is not None)
    if not isinstance(mig_enabled, bool):
        raise _bad(n, item, '"mig_enabled" must be true or false.')
    if profiles and not mig_enabled:
        raise _bad(n, item, '"mig_profiles" needs MIG mode; drop "mig_enabled": false.')

    migs = []
    slices = 0
    for j, entry in enumerate(profiles or ()):
        text, mig_uuid = entry, None
        if isinstance(entry, Mapping):
            text, mig_uuid = entry.get("profile"), entry.get("uuid")
        profile = parse_mig_profile(text) if isinstance(text, str) else None
        if (
            profile is None
            or profile.compute_slices != profile.gi_slices
            or profile.gi_slices not in MIG_SLICE_SIZES
            or profile.suffix not in ("", "+me")
            or profile.memory_gb <= 0
        ):
            raise _bad(
                n,
                item,
                f"unknown MIG profile {text!r}; a profile is '<g>g.<gb>gb' with g = 1, 2, 3, "
                "4 or 7, such as '1g.5gb', '3g.20gb' or '1g.10gb+me'.",
            )
        slices += profile.gi_slices
        migs.append(
            Device(
                uuid=_uuid(n, item, mig_uuid, "MIG-") or simulated_mig_uuid(n, j),
                index=f"{n}:{j}",
                name=f"{name} MIG {profile}",
                memory_mib=profile.memory_gb * 1024,
                kind="mig",
                parent_uuid=uuid,
                mig_profile=str(profile),
                share=profile.gi_slices / TOTAL_SLICES,
                simulated=True,
            )
        )
    if slices > TOTAL_SLICES:
        raise _bad(
            n,
            item,
            f"the MIG profiles take {slices} slices, but a GPU has {TOTAL_SLICES}.",
        )
    return SimulatedGpu(gpu, mig_enabled, tuple(migs))


def _uuid(n: int, item: Any, uuid: Any, prefix: str) -> str | None:
    if uuid is None:
        return None
    if not isinstance(uuid, str) or not uuid.startswith(prefix) or len(uuid) <= len(prefix):
        raise _bad(n, item, f"a UUID here must be text starting with {prefix!r}, not {uuid!r}.")
    return uuid


# ---- the state file -----------------------------------------------------------------------------


def read_state(path: str | None) -> dict[str, dict]:
    """The state file's entries; {} when there is no file. ValueError when it is unreadable."""
    if not path:
        return {}
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot read {path}: {e}") from e
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a JSON object keyed by device UUID or index")
    return {str(k): v for k, v in data.items() if isinstance(v, dict)}


def write_state(path: str, updates: Mapping[str, Any]) -> dict[str, dict]:
    """Merge ``updates`` into the state file at ``path`` atomically; return the new state.

    Each update is ``{"<uuid or index>": {field: value, ...}}`` and merges field by field
    into that device's entry (``{"0": {"lost": True}}`` keeps its utilization); a value of
    None instead of a dict removes the device's entry, a field set to None removes the field.
    The file is written to a temporary file in the same folder and renamed over the old one,
    so a reader never sees half a file. Concurrent writers are not serialised.
    """
    try:
        state = read_state(path)
    except ValueError:
        state = {}
    for key, fields in updates.items():
        key = str(key)
        if fields is None:
            state.pop(key, None)
            continue
        entry = {**state.get(key, {}), **fields}
        state[key] = {k: v for k, v in entry.items() if v is not None}
    write_json_atomically(path, state, indent=2)
    return state


# ---- the inventory ------------------------------------------------------------------------------


class SimulatedInventory(Inventory):
    """The GPUs of ``spec``, with live state from ``state_file``."""

    kind = "simulated"

    def __init__(self, spec: Any, state_file: str | None = None, log: Any = None) -> None:
        self.log = log or logging.getLogger(LOGGER_NAME)
        self.gpus = parse_spec(spec)
        self.state_file = state_file or None
        self._state_problem: str | None = None
        self._problems = ProblemLog(self.log)

    def devices(self) -> list[Device]:
        devices, problems = self._scan(self._state())
        self._problems.update(problems, "devices")
        return devices

    def usage(self) -> dict[str, DeviceUsage]:
        state = self._state()
        devices, problems = self._scan(state)
        self._problems.update(problems, "usage")
        out = {}
        for d in devices:
            entry = {**state.get(d.index, {}), **state.get(d.uuid, {})}
            out[d.uuid] = self._usage(d, entry)
        return out

    def describe(self) -> str:
        devices = self.devices()
        return describe_devices(
            len(self.gpus), "simulated GPU", devices, self._problems.of("devices").keys()
        )

    # ---- internals ----------------------------------------------------------------------------

    def _state(self) -> dict[str, dict]:
        try:
            state = read_state(self.state_file)
        except ValueError as e:
            problem = f"GPU inventory: the simulated GPU state file is ignored: {e}."
            if problem != self._state_problem:
                self.log.warning("%s", problem)
            self._state_problem = problem
            return {}
        self._state_problem = None
        return state

    def _scan(self, state: Mapping[str, dict]) -> tuple[list[Device], dict[str, str]]:
        def lost(d: Device) -> bool:
            return any(state.get(k, {}).get("lost") is True for k in (d.uuid, d.index))

        devices: list[Device] = []
        problems: dict[str, str] = {}
        for gpu in self.gpus:
            g = gpu.device
            if lost(g):
                problems[device_label(g.index)] = (
                    f"GPU inventory: simulated GPU {g.index} ({g.uuid}) is lost (the state "
                    'file marks it "lost", like a GPU that fell off the bus), so it is left out'
                    + (" with its MIG instances." if gpu.migs else ".")
                )
            elif not gpu.mig_enabled:
                devices.append(g)
            elif not gpu.migs:
                problems[device_label(g.index)] = (
                    f"GPU inventory: simulated GPU {g.index} has MIG mode enabled but no MIG "
                    "instances, so it offers no device and is skipped."
                )
            else:
                for mig in gpu.migs:
                    if lost(mig):
                        problems[device_label(mig.index)] = (
                            f"GPU inventory: simulated MIG device {mig.index} ({mig.uuid}) is "
                            'lost (the state file marks it "lost"), so it is left out.'
                        )
                    else:
                        devices.append(mig)
        return devices, problems

    def _usage(self, d: Device, entry: Mapping[str, Any]) -> DeviceUsage:
        def bad(field: str, value: Any) -> None:
            self.log.warning(
                "GPU inventory: simulated state of %s: %r is not a valid %s; ignored.",
                device_label(d.index),
                value,
                field,
            )

        util: float | None = None if d.kind == "mig" else 0.0
        if "utilization_pct" in entry:
            value = entry["utilization_pct"]
            if value is None or (isinstance(value, (int, float)) and not isinstance(value, bool)):
                util = None if value is None else float(value)
            else:
                bad("utilization_pct", value)
        used: int | None = 0
        if "memory_used_mib" in entry:
            value = entry["memory_used_mib"]
            if value is None or (isinstance(value, int) and not isinstance(value, bool)):
                used = value
            else:
                bad("memory_used_mib", value)
        pids: tuple[int, ...] = ()
        value = entry.get("pids", [])
        if isinstance(value, list) and all(
            isinstance(p, int) and not isinstance(p, bool) for p in value
        ):
            pids = tuple(sorted(set(value)))
        else:
            bad("pids list", value)
        return DeviceUsage(uuid=d.uuid, utilization_pct=util, memory_used_mib=used, pids=pids)

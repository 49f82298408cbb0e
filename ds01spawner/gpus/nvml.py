"""The GPUs of this host as NVML (nvidia-ml-py) reports them.

Devices, in NVML index order:

- a GPU whose current MIG mode is off is one device, ``index`` ``"<gpu>"``, ``share`` 1.0;
- a GPU whose current MIG mode is on is replaced by its MIG devices (one per compute
  instance), found with ``nvmlDeviceGetMaxMigDeviceCount`` and
  ``nvmlDeviceGetMigDeviceHandleByIndex`` (empty slots answer NotFound and are skipped);
  ``index`` is ``"<gpu>:<slot>"``, what the NVIDIA container runtime accepts in
  ``NVIDIA_VISIBLE_DEVICES``; a MIG-enabled GPU without MIG devices offers nothing and is
  logged;
- a device on which NVML fails (GPU is lost, Unknown error, ...) is left out and logged. A
  pending MIG mode change (needs a GPU reset) does not count: the current mode does.

MIG profile and share of a MIG device, without root:

- ``nvmlDeviceGetAttributes(mig)`` gives ``gpuInstanceSliceCount`` (g),
  ``computeInstanceSliceCount`` (c) and ``memorySizeMB`` (MiB).
- The profile is the one in the device's NVML name (drivers since R470 name a MIG device
  ``"NVIDIA A100-SXM4-40GB MIG 3g.20gb"``; this keeps suffixes such as ``+me``). When the name
  has none, it is built from the attributes like NVIDIA's go-nvlib does: ``<g>g.<gb>gb``, or
  ``<c>c.<g>g.<gb>gb`` for a compute instance smaller than its GPU instance, with ``<gb>`` from
  :func:`~ds01spawner.gpus.model.mig_memory_gb` (the parent's memory and the instance's).
- ``share = c / total`` where ``total`` is the parent's number of compute slices: the largest
  ``sliceCount`` of the GPU-instance profiles the parent supports
  (``nvmlDeviceGetGpuInstanceProfileInfo`` over every profile id; the full-GPU profile is
  ``7g`` on A100/H100/H200, ``4g`` on A30). If NVML cannot tell, 4 for an A30 and 7 otherwise.
  So a ``3g.20gb`` instance of an A100 is 3/7 of a GPU, ``1g.6gb`` of an A30 1/4.

Usage: ``nvmlDeviceGetUtilizationRates`` (None where NotSupported, as on every MIG device),
``nvmlDeviceGetMemoryInfo`` used MiB, ``nvmlDeviceGetComputeRunningProcesses`` PIDs (empty
where NVML does not tell, e.g. no permission to see processes on MIG devices).

The pynvml module is injected (tests pass a double); by default it is imported here, lazily.
Names and UUIDs may come as bytes (older pynvml) or str.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from .model import (
    LOGGER_NAME,
    Device,
    DeviceUsage,
    Inventory,
    InventoryError,
    MigProfile,
    ProblemLog,
    describe_devices,
    device_label,
    mig_memory_gb,
    profile_from_device_name,
)

MIB = 1024 * 1024
#: NVML_GPU_INSTANCE_PROFILE_COUNT of nvidia-ml-py 13, for modules that lack the constant.
_GI_PROFILE_COUNT = 0x12


def text(value: Any) -> str:
    """NVML strings: bytes in older pynvml, str in newer."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def reason(err: BaseException) -> str:
    """The NVML error's own words (``"GPU is lost"``), or the exception's type and text."""
    try:
        said = str(err)
    except Exception:  # pynvml's __str__ asks the library, which may be gone
        said = ""
    if getattr(err, "value", None) is not None and said:
        return said
    return f"{type(err).__name__}: {said}" if said else type(err).__name__


def init_error_sentence(nvml: Any, err: BaseException) -> str:
    """A sentence an admin can act on, for an exception of ``nvmlInit``."""

    def is_(name: str) -> bool:
        cls = getattr(nvml, name, None)
        return isinstance(cls, type) and isinstance(err, cls)

    why = reason(err)
    if is_("NVMLError_LibraryNotFound"):
        return (
            f"NVML could not be loaded ({why}): libnvidia-ml.so.1 is missing, so the NVIDIA "
            "driver is not installed on this host or not visible to the hub. nvidia-smi should "
            "work first."
        )
    if is_("NVMLError_DriverNotLoaded"):
        return (
            f"NVML could not load the NVIDIA driver ({why}): is the nvidia kernel module "
            "loaded? nvidia-smi should work first."
        )
    if is_("NVMLError_NoPermission"):
        return (
            f"NVML was refused access to the GPUs ({why}): the hub's user cannot open "
            "/dev/nvidia*. nvidia-smi, run as that user, should work first."
        )
    if is_("NVMLError_LibRmVersionMismatch"):
        return (
            f"The NVML library and the loaded nvidia kernel module have different versions "
            f"({why}), usually after a driver upgrade without a reboot: reboot or reload the "
            "nvidia module. nvidia-smi should work first."
        )
    return f"NVML failed to initialise ({why}). nvidia-smi should work first."


def import_pynvml() -> ModuleType:
    try:
        import pynvml
    except ImportError as e:
        raise InventoryError(
            f"The Python package nvidia-ml-py is not installed ({e}): install it into the hub's "
            "environment with 'pip install nvidia-ml-py'."
        ) from e
    return pynvml


@dataclass(frozen=True)
class _Slot:
    """A device found by the scan: its index and NVML handle (and its GPU's, for MIG)."""

    index: str
    handle: Any
    parent: Any = None  # the physical GPU's handle, for a MIG device


class NvmlInventory(Inventory):
    """Full GPUs and MIG devices as NVML reports them, read afresh at every call."""

    kind = "nvml"

    def __init__(self, nvml: Any = None, log: Any = None) -> None:
        self.log = log or logging.getLogger(LOGGER_NAME)
        self.nvml = nvml if nvml is not None else import_pynvml()
        try:
            self.nvml.nvmlInit()
        except Exception as e:
            raise InventoryError(init_error_sentence(self.nvml, e)) from e
        self._open = True
        # NVML is called from several worker threads (spawns, pages, the admin view); the
        # scan keeps state (_total_slices, _gpu_count, problems): one scan at a time
        self._lock = threading.RLock()
        self._total_slices: dict[str, int] = {}
        self._gpu_count = 0
        self._problems = ProblemLog(self.log)
        self._optional = tuple(
            cls
            for cls in (
                getattr(self.nvml, "NVMLError_NotSupported", None),
                getattr(self.nvml, "NVMLError_NoPermission", None),
                getattr(self.nvml, "NVMLError_FunctionNotFound", None),
                getattr(self.nvml, "NVMLLibraryMismatchError", None),
            )
            if isinstance(cls, type)
        )

    # ---- the interface ------------------------------------------------------------------------

    def devices(self) -> list[Device]:
        with self._lock:
            return self._devices()

    def _devices(self) -> list[Device]:
        problems: dict[str, str] = {}
        out = []
        for slot in self._scan(problems):
            try:
                out.append(self._device(slot))
            except Exception as e:
                problems[device_label(slot.index)] = self._left_out(slot.index, e)
        self._problems.update(problems, "devices")
        return out

    def usage(self) -> dict[str, DeviceUsage]:
        with self._lock:
            return self._usage_all()

    def _usage_all(self) -> dict[str, DeviceUsage]:
        problems: dict[str, str] = {}
        out = {}
        for slot in self._scan(problems):
            try:
                u = self._usage(slot)
            except Exception as e:
                problems[device_label(slot.index)] = self._left_out(slot.index, e)
            else:
                out[u.uuid] = u
        self._problems.update(problems, "usage")
        return out

    def describe(self) -> str:
        devices = self.devices()
        try:
            driver = text(self.nvml.nvmlSystemGetDriverVersion())
        except Exception:
            driver = "unknown"
        return describe_devices(
            self._gpu_count,
            "GPU",
            devices,
            self._problems.of("devices").keys(),
            suffix=f" via NVML, driver {driver}",
        )

    def close(self) -> None:
        with self._lock:
            self._close()

    def _close(self) -> None:
        if self._open:
            self._open = False
            try:
                self.nvml.nvmlShutdown()
            except Exception:
                pass

    # ---- scanning -----------------------------------------------------------------------------

    def _scan(self, problems: dict[str, str]) -> list[_Slot]:
        """Every device NVML offers now; what fails goes into ``problems`` by label."""
        nvml = self.nvml
        try:
            count = int(nvml.nvmlDeviceGetCount())
        except Exception as e:
            problems["all GPUs"] = (
                f"GPU inventory: NVML cannot count the GPUs ({reason(e)}), so no GPU is "
                "offered. Check nvidia-smi."
            )
            return []
        self._gpu_count = count
        slots: list[_Slot] = []
        for i in range(count):
            try:
                handle = nvml.nvmlDeviceGetHandleByIndex(i)
                mig_on = self.mig_mode(handle)[0]
            except Exception as e:
                problems[device_label(str(i))] = self._left_out(str(i), e)
                continue
            if not mig_on:
                slots.append(_Slot(str(i), handle))
                continue
            migs = self._mig_slots(i, handle, problems)
            if migs is None:
                continue
            if not migs and not any(k.startswith(f"MIG device {i}:") for k in problems):
                problems[device_label(str(i))] = (
                    f"GPU inventory: GPU {i} has MIG mode enabled but no MIG instances, so it "
                    "offers no device and is skipped. Create instances (nvidia-smi mig -i "
                    f"{i} -cgi <profiles> -C) or disable MIG mode (nvidia-smi -i {i} -mig 0)."
                )
            slots.extend(migs)
        return slots

    def _mig_slots(self, i: int, handle: Any, problems: dict[str, str]) -> list[_Slot] | None:
        nvml = self.nvml
        not_found = getattr(nvml, "NVMLError_NotFound", None)
        try:
            slot_count = int(nvml.nvmlDeviceGetMaxMigDeviceCount(handle))
        except Exception as e:
            problems[device_label(str(i))] = self._left_out(str(i), e)
            return None
        migs = []
        for j in range(slot_count):
            try:
                mig = nvml.nvmlDeviceGetMigDeviceHandleByIndex(handle, j)
            except Exception as e:
                if not (isinstance(not_found, type) and isinstance(e, not_found)):
                    problems[device_label(f"{i}:{j}")] = self._left_out(f"{i}:{j}", e)
                continue
            migs.append(_Slot(f"{i}:{j}", mig, handle))
        return migs

    def mig_mode(self, handle: Any) -> tuple[bool, bool]:
        """(current, pending) MIG mode; both off on GPUs without MIG (NotSupported)."""
        try:
            current, pending = self.nvml.nvmlDeviceGetMigMode(handle)
        except self._optional:
            return False, False
        enable = getattr(self.nvml, "NVML_DEVICE_MIG_ENABLE", 1)
        return current == enable, pending == enable

    @staticmethod
    def _left_out(index: str, err: BaseException) -> str:
        return (
            f"GPU inventory: {device_label(index)} is left out: NVML fails on it ({reason(err)})."
        )

    # ---- one device ---------------------------------------------------------------------------

    def _device(self, slot: _Slot) -> Device:
        nvml = self.nvml
        uuid = text(nvml.nvmlDeviceGetUUID(slot.handle))
        if slot.parent is None:
            return Device(
                uuid=uuid,
                index=slot.index,
                name=text(nvml.nvmlDeviceGetName(slot.handle)),
                memory_mib=int(nvml.nvmlDeviceGetMemoryInfo(slot.handle).total) // MIB,
                kind="gpu",
            )
        parent_uuid = text(nvml.nvmlDeviceGetUUID(slot.parent))
        parent_name = text(nvml.nvmlDeviceGetName(slot.parent))
        profile, memory_mib = self.mig_profile(slot.handle, slot.parent)
        total = self.total_slices(slot.parent, parent_uuid, parent_name)
        return Device(
            uuid=uuid,
            index=slot.index,
            name=f"{parent_name} MIG {profile}",
            memory_mib=memory_mib,
            kind="mig",
            parent_uuid=parent_uuid,
            mig_profile=str(profile),
            share=profile.compute_slices / total,
        )

    def mig_profile(self, mig: Any, parent: Any) -> tuple[MigProfile, int]:
        """The MIG device's profile and memory in MiB (see the module docstring)."""
        nvml = self.nvml
        named = profile_from_device_name(text(nvml.nvmlDeviceGetName(mig)))
        attrs = self.call_or_none(nvml.nvmlDeviceGetAttributes, mig)
        memory = self.call_or_none(nvml.nvmlDeviceGetMemoryInfo, mig)
        memory_mib = int(memory.total) // MIB if memory is not None else None
        if attrs is None:
            if named is None:
                raise ValueError("NVML tells neither the MIG profile nor the slice counts")
            if memory_mib is None:
                memory_mib = named.memory_gb * 1024
            return named, memory_mib
        if memory_mib is None:
            memory_mib = int(attrs.memorySizeMB)
        g, c = int(attrs.gpuInstanceSliceCount), int(attrs.computeInstanceSliceCount)
        if named is not None:
            # the name's text (with +me and the like), the attributes' slice counts
            return MigProfile(c, g, named.memory_gb, named.suffix), memory_mib
        parent_memory = nvml.nvmlDeviceGetMemoryInfo(parent)
        gb = mig_memory_gb(int(parent_memory.total), int(attrs.memorySizeMB))
        return MigProfile(c, g, gb), memory_mib

    def total_slices(self, parent: Any, parent_uuid: str, parent_name: str) -> int:
        """Compute slices of the whole GPU: the largest GPU-instance profile it supports."""
        if parent_uuid in self._total_slices:
            return self._total_slices[parent_uuid]
        nvml = self.nvml
        total = 0
        for profile in range(
            int(getattr(nvml, "NVML_GPU_INSTANCE_PROFILE_COUNT", _GI_PROFILE_COUNT))
        ):
            info = self._gi_profile_info(parent, profile)
            if info is not None:
                total = max(total, int(info.sliceCount))
        if total <= 0:
            total = 4 if "A30" in parent_name else 7
            self.log.info(
                "GPU inventory: NVML does not list the MIG profiles of %s (%s); counting %d "
                "compute slices for it.",
                parent_uuid,
                parent_name,
                total,
            )
        self._total_slices[parent_uuid] = total
        return total

    def _gi_profile_info(self, parent: Any, profile: int) -> Any:
        fn = self.nvml.nvmlDeviceGetGpuInstanceProfileInfo
        try:
            return fn(parent, profile)
        except Exception as e:
            missing = getattr(self.nvml, "NVMLError_FunctionNotFound", None)
            if not (isinstance(missing, type) and isinstance(e, missing)):
                return None  # NotSupported / InvalidArgument: a profile this GPU lacks
        try:
            return fn(parent, profile, 1)  # drivers without the versioned call
        except Exception:
            return None

    def _usage(self, slot: _Slot) -> DeviceUsage:
        nvml = self.nvml
        uuid = text(nvml.nvmlDeviceGetUUID(slot.handle))
        rates = self.call_or_none(nvml.nvmlDeviceGetUtilizationRates, slot.handle)
        memory = self.call_or_none(nvml.nvmlDeviceGetMemoryInfo, slot.handle)
        procs = self.call_or_none(nvml.nvmlDeviceGetComputeRunningProcesses, slot.handle) or []
        return DeviceUsage(
            uuid=uuid,
            utilization_pct=float(rates.gpu) if rates is not None else None,
            memory_used_mib=int(memory.used) // MIB if memory is not None else None,
            pids=tuple(sorted({int(p.pid) for p in procs})),
        )

    def call_or_none(self, fn: Any, *args: Any) -> Any:
        """``fn(*args)``, or None where NVML answers NotSupported / NoPermission / no such call."""
        try:
            return fn(*args)
        except self._optional:
            return None

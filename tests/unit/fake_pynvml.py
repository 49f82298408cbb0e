"""A test double of the pynvml module (nvidia-ml-py 13), configured with a list of fake GPUs.

``FakeNvml(gpus=[...])`` has the attributes the inventory and the probe use, with pynvml's
names and signatures: the ``nvml*`` functions, the ``NVML_*`` constants, and the error classes.
The error classes are built the way pynvml builds them: ``NVMLError(code)`` returns an instance
of the subclass for that code (``NVMLError_NotFound``, ``NVMLError_GpuIsLost``, ...), so
``except nvml.NVMLError_NotFound`` and ``except nvml.NVMLError`` both work, and ``str()`` is
pynvml's text ("GPU is lost"). ``test_gpu_inventory.py`` checks names, signatures and error
classes against the real module.

What a fake GPU can be: MIG off or on (current and pending modes), MIG on with or without
instances, lost (every call on it raises GpuIsLost, from ``nvmlDeviceGetHandleByIndex`` on),
or failing with any error code in chosen calls (``errors={"nvmlDeviceGetUUID": 999}``).
The whole library can fail to initialise (``init_error=NVML_ERROR_DRIVER_NOT_LOADED``), and
strings can come back as bytes like older pynvml (``return_bytes=True``).
"""

from __future__ import annotations

import string
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

# ---- constants and errors, as in pynvml ---------------------------------------------------------

NVML_SUCCESS = 0
NVML_ERROR_UNINITIALIZED = 1
NVML_ERROR_INVALID_ARGUMENT = 2
NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_NO_PERMISSION = 4
NVML_ERROR_ALREADY_INITIALIZED = 5
NVML_ERROR_NOT_FOUND = 6
NVML_ERROR_INSUFFICIENT_SIZE = 7
NVML_ERROR_INSUFFICIENT_POWER = 8
NVML_ERROR_DRIVER_NOT_LOADED = 9
NVML_ERROR_TIMEOUT = 10
NVML_ERROR_IRQ_ISSUE = 11
NVML_ERROR_LIBRARY_NOT_FOUND = 12
NVML_ERROR_FUNCTION_NOT_FOUND = 13
NVML_ERROR_CORRUPTED_INFOROM = 14
NVML_ERROR_GPU_IS_LOST = 15
NVML_ERROR_RESET_REQUIRED = 16
NVML_ERROR_OPERATING_SYSTEM = 17
NVML_ERROR_LIB_RM_VERSION_MISMATCH = 18
NVML_ERROR_IN_USE = 19
NVML_ERROR_MEMORY = 20
NVML_ERROR_NO_DATA = 21
NVML_ERROR_VGPU_ECC_NOT_SUPPORTED = 22
NVML_ERROR_INSUFFICIENT_RESOURCES = 23
NVML_ERROR_FREQ_NOT_SUPPORTED = 24
NVML_ERROR_ARGUMENT_VERSION_MISMATCH = 25
NVML_ERROR_DEPRECATED = 26
NVML_ERROR_NOT_READY = 27
NVML_ERROR_GPU_NOT_FOUND = 28
NVML_ERROR_INVALID_STATE = 29
NVML_ERROR_RESET_TYPE_NOT_SUPPORTED = 30
NVML_ERROR_UNKNOWN = 999

NVML_DEVICE_MIG_DISABLE = 0x0
NVML_DEVICE_MIG_ENABLE = 0x1

NVML_GPU_INSTANCE_PROFILE_1_SLICE = 0x0
NVML_GPU_INSTANCE_PROFILE_2_SLICE = 0x1
NVML_GPU_INSTANCE_PROFILE_3_SLICE = 0x2
NVML_GPU_INSTANCE_PROFILE_4_SLICE = 0x3
NVML_GPU_INSTANCE_PROFILE_7_SLICE = 0x4
NVML_GPU_INSTANCE_PROFILE_8_SLICE = 0x5
NVML_GPU_INSTANCE_PROFILE_6_SLICE = 0x6
NVML_GPU_INSTANCE_PROFILE_1_SLICE_REV1 = 0x7
NVML_GPU_INSTANCE_PROFILE_2_SLICE_REV1 = 0x8
NVML_GPU_INSTANCE_PROFILE_1_SLICE_REV2 = 0x9
NVML_GPU_INSTANCE_PROFILE_COUNT = 0x12


class NVMLError(Exception):
    _valClassMapping: dict[int, type] = {}
    _errcode_to_string = {
        NVML_ERROR_UNINITIALIZED: "Uninitialized",
        NVML_ERROR_INVALID_ARGUMENT: "Invalid Argument",
        NVML_ERROR_NOT_SUPPORTED: "Not Supported",
        NVML_ERROR_NO_PERMISSION: "Insufficient Permissions",
        NVML_ERROR_ALREADY_INITIALIZED: "Already Initialized",
        NVML_ERROR_NOT_FOUND: "Not Found",
        NVML_ERROR_INSUFFICIENT_SIZE: "Insufficient Size",
        NVML_ERROR_INSUFFICIENT_POWER: "Insufficient External Power",
        NVML_ERROR_DRIVER_NOT_LOADED: "Driver Not Loaded",
        NVML_ERROR_TIMEOUT: "Timeout",
        NVML_ERROR_IRQ_ISSUE: "Interrupt Request Issue",
        NVML_ERROR_LIBRARY_NOT_FOUND: "NVML Shared Library Not Found",
        NVML_ERROR_FUNCTION_NOT_FOUND: "Function Not Found",
        NVML_ERROR_CORRUPTED_INFOROM: "Corrupted infoROM",
        NVML_ERROR_GPU_IS_LOST: "GPU is lost",
        NVML_ERROR_RESET_REQUIRED: "GPU requires restart",
        NVML_ERROR_OPERATING_SYSTEM: "The operating system has blocked the request.",
        NVML_ERROR_LIB_RM_VERSION_MISMATCH: "RM has detected an NVML/RM version mismatch.",
        NVML_ERROR_MEMORY: "Insufficient Memory",
        NVML_ERROR_UNKNOWN: "Unknown Error",
    }

    def __new__(typ, value):
        if typ == NVMLError:
            typ = NVMLError._valClassMapping.get(value, typ)
        obj = Exception.__new__(typ)
        obj.value = value
        return obj

    def __str__(self):
        return self._errcode_to_string.get(self.value, f"NVML Error with code {self.value}")

    def __eq__(self, other):
        return self.value == other.value


class NVMLLibraryMismatchError(Exception):
    pass


def _extract_errors_as_classes() -> None:
    """NVML_ERROR_GPU_IS_LOST -> class NVMLError_GpuIsLost(NVMLError), as pynvml does."""
    module = globals()
    for err_name in [x for x in module if x.startswith("NVML_ERROR_")]:
        class_name = "NVMLError_" + string.capwords(
            err_name.replace("NVML_ERROR_", ""), "_"
        ).replace("_", "")
        err_val = module[err_name]

        def gen_new(val):
            def new(typ, *args):
                return NVMLError.__new__(typ, val)

            return new

        cls = type(class_name, (NVMLError,), {"__new__": gen_new(err_val)})
        cls.__module__ = __name__
        module[class_name] = cls
        NVMLError._valClassMapping[err_val] = cls


_extract_errors_as_classes()

# ---- the fake hardware --------------------------------------------------------------------------

MIB = 1024 * 1024

#: GPU-instance profiles of an A100-SXM4-40GB: id -> (slices, memorySizeMB, name)
A100_40GB_PROFILES = {
    NVML_GPU_INSTANCE_PROFILE_1_SLICE: (1, 4864, "MIG 1g.5gb"),
    NVML_GPU_INSTANCE_PROFILE_2_SLICE: (2, 9856, "MIG 2g.10gb"),
    NVML_GPU_INSTANCE_PROFILE_3_SLICE: (3, 19968, "MIG 3g.20gb"),
    NVML_GPU_INSTANCE_PROFILE_4_SLICE: (4, 19968, "MIG 4g.20gb"),
    NVML_GPU_INSTANCE_PROFILE_7_SLICE: (7, 40192, "MIG 7g.40gb"),
    NVML_GPU_INSTANCE_PROFILE_1_SLICE_REV1: (1, 4864, "MIG 1g.5gb+me"),
    NVML_GPU_INSTANCE_PROFILE_1_SLICE_REV2: (1, 9856, "MIG 1g.10gb"),
}

#: GPU-instance profiles of an A30 (4 compute slices in all)
A30_PROFILES = {
    NVML_GPU_INSTANCE_PROFILE_1_SLICE: (1, 5836, "MIG 1g.6gb"),
    NVML_GPU_INSTANCE_PROFILE_2_SLICE: (2, 11904, "MIG 2g.12gb"),
    NVML_GPU_INSTANCE_PROFILE_4_SLICE: (4, 24064, "MIG 4g.24gb"),
    NVML_GPU_INSTANCE_PROFILE_1_SLICE_REV1: (1, 5836, "MIG 1g.6gb+me"),
}


@dataclass(eq=False)
class FakeMig:
    """A MIG device (one compute instance of a GPU instance) in MIG slot ``slot``."""

    profile: str  # its GPU-instance profile, e.g. "3g.20gb"; "1c.3g.20gb" for a smaller CI
    uuid: str
    slot: int
    gpu_instance_id: int = 1
    compute_instance_id: int = 0
    used_mib: int = 0
    pids: list[int] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)


@dataclass(eq=False)
class FakeGpu:
    name: str = "NVIDIA A100-SXM4-40GB"
    uuid: str = "GPU-00000000-0000-0000-0000-000000000000"
    memory_mib: int = 40960
    mig_capable: bool = True
    mig_current: bool = False
    mig_pending: bool | None = None  # None: same as current
    migs: list[FakeMig] = field(default_factory=list)
    gi_profiles: dict[int, tuple[int, int, str]] = field(
        default_factory=lambda: dict(A100_40GB_PROFILES)
    )
    max_mig_devices: int = 7
    lost: bool = False
    utilization_pct: int = 0
    used_mib: int = 0
    pids: list[int] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, eq=False)
class _Handle:
    gpu: FakeGpu
    mig: FakeMig | None = None


def gpu(i: int, **kw: Any) -> FakeGpu:
    """A fake A100 with a UUID of its own."""
    return FakeGpu(uuid=f"GPU-{i:08x}-1111-2222-3333-444444444444", **kw)


def mig(i: int, slot: int, profile: str, **kw: Any) -> FakeMig:
    """A fake MIG device of GPU ``i`` in ``slot``."""
    return FakeMig(
        profile=profile, uuid=f"MIG-{i:08x}-{slot:04x}-aaaa-bbbb-cccccccccccc", slot=slot, **kw
    )


class FakeNvml:
    """Module-like: pass an instance where the code expects the pynvml module."""

    def __init__(
        self,
        gpus: list[FakeGpu] | None = None,
        *,
        init_error: int | None = None,
        count_error: int | None = None,
        return_bytes: bool = False,
        mig_names_have_profile: bool = True,
        driver_version: str = "550.54.15",
        nvml_version: str = "12.550.54.15",
    ) -> None:
        self.gpus = list(gpus or [])
        self.init_error = init_error
        self.count_error = count_error
        self.return_bytes = return_bytes
        self.mig_names_have_profile = mig_names_have_profile
        self.driver_version = driver_version
        self.nvml_version = nvml_version
        self.initialised = 0
        self.calls: list[str] = []

    # -- helpers --

    def _str(self, value: str) -> str | bytes:
        return value.encode() if self.return_bytes else value

    def _check(self, handle: Any, fn: str) -> _Handle:
        self.calls.append(fn)
        if not self.initialised:
            raise NVMLError(NVML_ERROR_UNINITIALIZED)
        if not isinstance(handle, _Handle):
            raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
        if handle.gpu.lost:
            raise NVMLError(NVML_ERROR_GPU_IS_LOST)
        for errors in (handle.gpu.errors, handle.mig.errors if handle.mig else {}):
            if fn in errors:
                raise NVMLError(errors[fn])
        return handle

    def _mig_geometry(self, h: _Handle) -> tuple[int, int, int, str]:
        """(compute slices, GI slices, memorySizeMB, profile name) of a MIG handle."""
        assert h.mig is not None
        profile = h.mig.profile
        c = None
        if profile.count(".") == 2:
            c_part, profile = profile.split(".", 1)
            c = int(c_part.rstrip("c"))
        for slices, memory_mb, name in h.gpu.gi_profiles.values():
            if name == f"MIG {profile}":
                return (c or slices), slices, memory_mb, h.mig.profile
        raise AssertionError(f"fake GPU has no GPU-instance profile {profile}")

    # -- library --

    def nvmlInit(self):
        self.calls.append("nvmlInit")
        if self.init_error is not None:
            raise NVMLError(self.init_error)
        self.initialised += 1

    def nvmlShutdown(self):
        self.calls.append("nvmlShutdown")
        if not self.initialised:
            raise NVMLError(NVML_ERROR_UNINITIALIZED)
        self.initialised -= 1

    def nvmlSystemGetDriverVersion(self):
        return self._str(self.driver_version)

    def nvmlSystemGetNVMLVersion(self):
        return self._str(self.nvml_version)

    def nvmlSystemGetCudaDriverVersion(self):
        return 12040

    def nvmlErrorString(self, result):
        return self._str(NVMLError._errcode_to_string.get(result, "Unknown Error"))

    # -- devices --

    def nvmlDeviceGetCount(self):
        self.calls.append("nvmlDeviceGetCount")
        if not self.initialised:
            raise NVMLError(NVML_ERROR_UNINITIALIZED)
        if self.count_error is not None:
            raise NVMLError(self.count_error)
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index):
        if not 0 <= index < len(self.gpus):
            raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
        handle = _Handle(self.gpus[index])
        self._check(handle, "nvmlDeviceGetHandleByIndex")
        return handle

    def nvmlDeviceGetName(self, handle):
        h = self._check(handle, "nvmlDeviceGetName")
        if h.mig is not None and self.mig_names_have_profile:
            return self._str(f"{h.gpu.name} MIG {h.mig.profile}")
        return self._str(h.gpu.name)

    def nvmlDeviceGetUUID(self, handle):
        h = self._check(handle, "nvmlDeviceGetUUID")
        return self._str(h.mig.uuid if h.mig else h.gpu.uuid)

    def nvmlDeviceGetIndex(self, handle):
        h = self._check(handle, "nvmlDeviceGetIndex")
        if h.mig is not None:
            raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
        return self.gpus.index(h.gpu)

    def nvmlDeviceGetMemoryInfo(self, handle, version=None):
        h = self._check(handle, "nvmlDeviceGetMemoryInfo")
        if h.mig is not None:
            total = self._mig_geometry(h)[2] * MIB
            used = h.mig.used_mib * MIB
        else:
            total, used = h.gpu.memory_mib * MIB, h.gpu.used_mib * MIB
        return SimpleNamespace(total=total, free=total - used, used=used)

    def nvmlDeviceGetUtilizationRates(self, handle):
        h = self._check(handle, "nvmlDeviceGetUtilizationRates")
        if h.mig is not None:
            raise NVMLError(NVML_ERROR_NOT_SUPPORTED)  # as on real MIG devices
        return SimpleNamespace(gpu=h.gpu.utilization_pct, memory=0)

    def nvmlDeviceGetComputeRunningProcesses(self, handle):
        h = self._check(handle, "nvmlDeviceGetComputeRunningProcesses")
        pids = h.mig.pids if h.mig else h.gpu.pids
        return [
            SimpleNamespace(
                pid=p, usedGpuMemory=MIB, gpuInstanceId=0xFFFFFFFF, computeInstanceId=0xFFFFFFFF
            )
            for p in pids
        ]

    # -- MIG --

    def nvmlDeviceGetMigMode(self, device):
        h = self._check(device, "nvmlDeviceGetMigMode")
        if h.mig is not None or not h.gpu.mig_capable:
            raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
        pending = h.gpu.mig_current if h.gpu.mig_pending is None else h.gpu.mig_pending
        return [int(h.gpu.mig_current), int(pending)]

    def nvmlDeviceGetMaxMigDeviceCount(self, device):
        h = self._check(device, "nvmlDeviceGetMaxMigDeviceCount")
        if h.mig is not None:
            raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
        return h.gpu.max_mig_devices if h.gpu.mig_capable and h.gpu.mig_current else 0

    def nvmlDeviceGetMigDeviceHandleByIndex(self, device, index):
        h = self._check(device, "nvmlDeviceGetMigDeviceHandleByIndex")
        if h.mig is not None or not h.gpu.mig_current:
            raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
        if not 0 <= index < h.gpu.max_mig_devices:
            raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
        for m in h.gpu.migs:
            if m.slot == index:
                return _Handle(h.gpu, m)
        raise NVMLError(NVML_ERROR_NOT_FOUND)

    def nvmlDeviceGetDeviceHandleFromMigDeviceHandle(self, migDevice):
        h = self._check(migDevice, "nvmlDeviceGetDeviceHandleFromMigDeviceHandle")
        if h.mig is None:
            raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
        return _Handle(h.gpu)

    def nvmlDeviceGetAttributes(self, device):
        h = self._check(device, "nvmlDeviceGetAttributes")
        if h.mig is None:
            raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
        c, g, memory_mb, _ = self._mig_geometry(h)
        return SimpleNamespace(
            multiprocessorCount=14 * c,
            sharedCopyEngineCount=g,
            sharedDecoderCount=g // 2,
            sharedEncoderCount=0,
            sharedJpegCount=0,
            sharedOfaCount=0,
            gpuInstanceSliceCount=g,
            computeInstanceSliceCount=c,
            memorySizeMB=memory_mb,
        )

    def nvmlDeviceGetGpuInstanceId(self, device):
        h = self._check(device, "nvmlDeviceGetGpuInstanceId")
        if h.mig is None:
            raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
        return h.mig.gpu_instance_id

    def nvmlDeviceGetComputeInstanceId(self, device):
        h = self._check(device, "nvmlDeviceGetComputeInstanceId")
        if h.mig is None:
            raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
        return h.mig.compute_instance_id

    def nvmlDeviceGetGpuInstanceProfileInfo(self, device, profile, version=2):
        h = self._check(device, "nvmlDeviceGetGpuInstanceProfileInfo")
        if h.mig is not None or not h.gpu.mig_capable:
            raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
        if version not in (1, 2):
            raise NVMLError(NVML_ERROR_FUNCTION_NOT_FOUND)
        if not 0 <= profile < NVML_GPU_INSTANCE_PROFILE_COUNT:
            raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
        if profile not in h.gpu.gi_profiles:
            raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
        slices, memory_mb, name = h.gpu.gi_profiles[profile]
        info = SimpleNamespace(
            id=profile,
            isP2pSupported=0,
            sliceCount=slices,
            instanceCount=7 // slices,
            multiprocessorCount=14 * slices,
            copyEngineCount=slices,
            decoderCount=slices // 2,
            encoderCount=0,
            jpegCount=0,
            ofaCount=0,
            memorySizeMB=memory_mb,
        )
        if version == 2:
            info.version = 0x02000098
            info.name = name.encode()  # a c_char array: bytes, whatever pynvml returns elsewhere
        return info


# Every NVML_* constant and NVMLError* class is an attribute of a FakeNvml too, as of pynvml.
for _name, _value in list(globals().items()):
    if _name.startswith(("NVML_", "NVMLError")) or _name == "NVMLLibraryMismatchError":
        setattr(FakeNvml, _name, _value)
del _name, _value

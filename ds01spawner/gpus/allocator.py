"""Which free devices a launch gets: pure functions, no NVML, no Docker.

A request is no GPU, N full GPUs, or N MIG slices (optionally of one profile):

    {"gpus": N, "gpu_type": "any" | "full" | "mig" | "<MIG profile, e.g. 3g.20gb>"}

The choice among free devices follows one documented order (see docs/gpus.md):

1. Only devices that are free: not held by a DS01 container and not busy with a process that
   belongs to no DS01 container.
2. ``full`` takes whole GPUs, ``mig`` any MIG slices, ``<profile>`` slices of that profile, and
   ``any`` MIG slices before whole GPUs, so whole GPUs stay free for the people who ask for them.
3. Among candidates: the smallest share first (a 1g slice before a 3g slice), then the physical
   GPU's index, then the slice's index. The same request on the same state always gets the same
   devices.
4. N devices are handed out only when N are free; otherwise nothing is.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from .model import Device

GPU_TYPES = ("any", "full", "mig")
MAX_GPUS_PER_REQUEST = 64


class RequestError(ValueError):
    """A GPU request that can never be served as written (HTTP 400); str() is for the user."""


class NoFit(Exception):
    """No free devices fit the request right now (HTTP 429); str() is for the user."""


@dataclass(frozen=True)
class GpuRequest:
    count: int = 0
    gpu_type: str = "any"  # "any" | "full" | "mig" | a MIG profile such as "3g.20gb"

    @property
    def wants_gpu(self) -> bool:
        return self.count > 0


def parse_request(options: Mapping, default_count: int, devices: list[Device]) -> GpuRequest:
    """Validate ``user_options`` (form strings or JSON numbers) into a GpuRequest.

    Raises RequestError for anything that no state of this server could ever satisfy.
    """
    raw = options.get("gpus", default_count if devices else 0)
    if isinstance(raw, bool) or not isinstance(raw, (int, str)):
        raise RequestError(f"'gpus' must be a whole number such as 0, 1 or 2, not {raw!r}.")
    if isinstance(raw, str):
        if not raw.strip().isdigit():
            raise RequestError(f"'gpus' must be a whole number such as 0, 1 or 2, not {raw!r}.")
        raw = int(raw.strip())
    count = int(raw)
    if count < 0 or count > MAX_GPUS_PER_REQUEST:
        raise RequestError(f"'gpus' must be between 0 and {MAX_GPUS_PER_REQUEST}, not {count}.")

    gpu_type = options.get("gpu_type", "any")
    if not isinstance(gpu_type, str):
        raise RequestError(
            f"'gpu_type' must be text such as 'any', 'full' or 'mig', not {gpu_type!r}."
        )
    gpu_type = gpu_type.strip().lower() or "any"
    profiles = sorted({d.mig_profile for d in devices if d.mig_profile})
    if gpu_type not in GPU_TYPES and gpu_type not in profiles:
        offered = ", ".join(list(GPU_TYPES) + profiles)
        raise RequestError(
            f"'gpu_type' {gpu_type!r} is not offered here; choose one of: {offered}."
        )
    request = GpuRequest(count, gpu_type)
    if count == 0:
        return GpuRequest(0, "any")

    if not devices:
        raise RequestError("This server has no GPUs to assign. Launch with 'gpus': 0.")
    total = len(candidates(request, devices))
    if count > total:
        what = noun(request, devices, total)
        raise RequestError(f"This server has {total} {what} in all; you asked for {count}.")
    return request


def candidates(request: GpuRequest, devices: Iterable[Device]) -> list[Device]:
    """Devices of the requested type, in the documented order (free or not)."""
    if request.gpu_type == "full":
        kinds = [d for d in devices if d.kind == "gpu"]
    elif request.gpu_type == "mig":
        kinds = [d for d in devices if d.kind == "mig"]
    elif request.gpu_type == "any":
        kinds = list(devices)
    else:
        kinds = [d for d in devices if d.kind == "mig" and d.mig_profile == request.gpu_type]
    return sorted(kinds, key=_order)


def _order(d: Device) -> tuple:
    parent, _, instance = d.index.partition(":")
    return (
        0 if d.kind == "mig" else 1,
        d.share,
        _as_int(parent),
        _as_int(instance),
        d.uuid,
    )


def _as_int(text: str) -> int:
    return int(text) if text.isdigit() else -1


def choose(
    request: GpuRequest, devices: list[Device], taken: Iterable[str], simulated: bool = False
) -> list[Device]:
    """The devices this request gets, or NoFit with a sentence that says what is busy."""
    if not request.wants_gpu:
        return []
    taken = set(taken)
    pool = candidates(request, devices)
    free = [d for d in pool if d.uuid not in taken]
    if len(free) >= request.count:
        return free[: request.count]
    what = noun(request, devices, len(pool), simulated)
    if not free:
        raise NoFit(f"All {len(pool)} {what} are in use. Retire a server or try again later.")
    raise NoFit(
        f"You asked for {request.count} {noun(request, devices, request.count, simulated)} but "
        f"only {len(free)} of {len(pool)} {what} {'is' if len(free) == 1 else 'are'} free. "
        f"Ask for fewer, retire a server or try again later."
    )


def noun(request: GpuRequest, devices: list[Device], n: int, simulated: bool = False) -> str:
    """'GPUs', 'MIG slices', '3g.20gb MIG slices', with 'simulated' where it applies."""
    plural = n != 1
    if request.gpu_type == "full":
        word = "GPUs" if plural else "GPU"
    elif request.gpu_type == "mig":
        word = "MIG slices" if plural else "MIG slice"
    elif request.gpu_type == "any":
        has_mig = any(d.kind == "mig" for d in devices)
        word = (
            ("GPUs and MIG slices" if plural else "GPU or MIG slice")
            if has_mig
            else ("GPUs" if plural else "GPU")
        )
    else:
        word = f"{request.gpu_type} MIG slices" if plural else f"{request.gpu_type} MIG slice"
    return f"simulated {word}" if simulated else word


def busy_outside(usage: Mapping[str, object], allocated: Iterable[str]) -> set[str]:
    """Devices running compute processes although no DS01 container holds them.

    ``usage`` maps uuid -> DeviceUsage. A DS01 container only sees its own devices, so processes
    on a device that no DS01 container holds belong to someone else (CUDA on the host).
    """
    held = set(allocated)
    return {uuid for uuid, u in usage.items() if getattr(u, "pids", ()) and uuid not in held}


def equivalents(devices: Iterable[Device]) -> float:
    """GPU-equivalents of a set of devices (a full GPU counts 1.0, a MIG slice its share)."""
    return round(sum(d.share for d in devices), 4)

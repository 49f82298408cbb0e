"""A user's use of the server against their limits: pure functions over container labels.

What a user uses now is read from the same place as the GPU table (the labels of this hub's
containers), so "in use" can never disagree between the allocator, the limit check and the
``check limits`` endpoint.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from .gpus.allocator import GpuRequest
from .gpus.model import Device
from .gpus.table import EQUIVALENTS_LABEL, GPU_LABEL, HOLDING_STATES, parse_gpu_label


class LimitRefused(Exception):
    """A launch over the user's limits; ``status`` is 403 (never allowed) or 429 (not now)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class ServerUse:
    project: str
    server: str
    gpus: tuple[str, ...]
    gpu_equivalents: float


@dataclass(frozen=True)
class Usage:
    servers: tuple[ServerUse, ...] = field(default=())

    @property
    def gpu_equivalents(self) -> float:
        return round(sum(s.gpu_equivalents for s in self.servers), 4)

    @property
    def projects(self) -> list[str]:
        return [s.project for s in self.servers]

    def as_dict(self) -> dict:
        return {
            "servers": len(self.servers),
            "gpu_equivalents": self.gpu_equivalents,
            "projects": [
                {
                    "project": s.project,
                    "server": s.server,
                    "gpus": list(s.gpus),
                    "gpu_equivalents": s.gpu_equivalents,
                }
                for s in self.servers
            ],
        }


def usage_of(user: str, containers: Iterable[Mapping], exclude_server: str | None = None) -> Usage:
    """What ``user``'s running (or starting) containers hold, from ``docker ps -a`` dicts.

    ``exclude_server`` leaves out the server being (re)launched: a stale container of it is
    about to be replaced.
    """
    servers = []
    for c in containers:
        labels = c.get("Labels") or {}
        if labels.get("ds01.user") != user or c.get("State") not in HOLDING_STATES:
            continue
        server = labels.get("ds01.server", "")
        if exclude_server is not None and server == exclude_server:
            continue
        try:
            eq = float(labels.get(EQUIVALENTS_LABEL) or 0)
        except ValueError:
            eq = 0.0
        servers.append(
            ServerUse(
                labels.get("ds01.project", "?"),
                server,
                tuple(parse_gpu_label(labels.get(GPU_LABEL))),
                eq,
            )
        )
    servers.sort(key=lambda s: s.project)
    return Usage(tuple(servers))


def _fmt(x: float) -> str:
    return f"{x:.1f}" if abs(x - round(x, 1)) < 1e-9 else f"{x:.2f}"


def _projects(usage: Usage) -> str:
    return f" (projects: {', '.join(usage.projects)})" if usage.servers else ""


def shape_request(request: GpuRequest, limits, devices: list[Device]) -> GpuRequest:
    """Check a GPU request against per-server rules; narrow ``any`` to MIG slices when whole
    GPUs are not allowed. Raises LimitRefused(403): these never change by waiting."""
    if not request.wants_gpu:
        return request
    per_server = limits.max_gpus_per_server
    if per_server is not None and request.count > per_server:
        raise LimitRefused(
            403,
            f"You asked for {request.count} GPUs; your limit is {per_server} per server. "
            f"Ask for fewer, or ask an admin for more.",
        )
    if limits.allow_full_gpu is False:
        if request.gpu_type == "full":
            raise LimitRefused(
                403,
                "Your account may use MIG slices but not whole GPUs. Ask for 'gpu_type': 'mig', "
                "or ask an admin for access to whole GPUs.",
            )
        if request.gpu_type == "any":
            if not any(d.kind == "mig" for d in devices):
                raise LimitRefused(
                    403,
                    "Your account may use MIG slices but not whole GPUs, and this server has no "
                    "MIG slices. Ask an admin for access to whole GPUs.",
                )
            return GpuRequest(request.count, "mig")
    return request


def check_servers(usage: Usage, limits) -> None:
    """Raise LimitRefused(429) when one more server would exceed ``max_servers``."""
    limit = limits.max_servers
    if limit is not None and len(usage.servers) + 1 > limit:
        raise LimitRefused(
            429,
            f"You are running {len(usage.servers)} of your {limit} servers{_projects(usage)}. "
            f"Retire one or ask an admin for more.",
        )


def check_gpu_equivalents(usage: Usage, adding: float, limits) -> None:
    """Raise LimitRefused(429) when ``adding`` GPU-equivalents would exceed the user's limit."""
    limit = limits.max_gpu_equivalents
    if limit is None or adding <= 0:
        return
    if usage.gpu_equivalents + adding > limit + 1e-9:
        raise LimitRefused(
            429,
            f"You are using {_fmt(usage.gpu_equivalents)} of your {_fmt(limit)} GPUs"
            f"{_projects(usage)}, and this launch needs {_fmt(adding)} more. "
            f"Retire one or ask an admin for more.",
        )

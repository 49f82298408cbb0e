"""A user's use of the server against their limits: pure functions over container labels.

What a user uses now is read from the same place as the GPU table (the labels of this hub's
containers), so "in use" can never disagree between the allocator, the limit check and the
``check limits`` endpoint.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from ..gpus.allocator import GpuRequest
from ..gpus.model import Device
from ..gpus.table import EQUIVALENTS_LABEL, GPU_LABEL, HOLDING_STATES, parse_gpu_label


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
    starting: bool = False  # a launch in progress: waiting for a GPU, building, creating


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


def with_launches(usage: Usage, launches: Iterable[ServerUse]) -> Usage:
    """``usage`` plus the launches in progress whose server has no container yet.

    Launches waiting in the GPU queue or building their image count toward the user's servers
    and GPUs: otherwise one user could queue any number of them (docs/limits.md).
    """
    have = {s.server for s in usage.servers}
    extra = [u for u in launches if u.server not in have]
    if not extra:
        return usage
    return Usage(tuple(sorted((*usage.servers, *extra), key=lambda s: s.project)))


def min_equivalents(request: GpuRequest, devices: list[Device]) -> float:
    """The fewest GPU-equivalents ``request`` can be served with on this server (its cheapest
    candidates): a launch whose limits do not allow even that is refused at once."""
    from ..gpus.allocator import candidates

    if not request.wants_gpu:
        return 0.0
    shares = sorted(d.share for d in candidates(request, devices))
    return round(sum(shares[: request.count]), 4)


class Launches:
    """The launches in progress in this hub process, per user (a hub-wide component).

    A launch is claimed when its limits allow it (before any folder or image is made) and
    released when its start ends, served or not. Claim and check run without an ``await``
    between them, so of many concurrent launches of one user only as many as the limits allow
    get through.
    """

    def __init__(self) -> None:
        self._by_user: dict[str, dict[str, ServerUse]] = {}

    def others(self, user: str, server: str) -> list[ServerUse]:
        return [u for name, u in self._by_user.get(user, {}).items() if name != server]

    def claim(self, user: str, use: ServerUse) -> None:
        self._by_user.setdefault(user, {})[use.server] = use

    def release(self, user: str, server: str) -> None:
        mine = self._by_user.get(user, {})
        mine.pop(server, None)
        if not mine:
            self._by_user.pop(user, None)


def _fmt(x: float) -> str:
    return f"{x:.1f}" if abs(x - round(x, 1)) < 1e-9 else f"{x:.2f}"


def _projects(usage: Usage) -> str:
    names = [f"{s.project} (starting)" if s.starting else s.project for s in usage.servers]
    return f" (projects: {', '.join(names)})" if usage.servers else ""


def _running(usage: Usage) -> str:
    return "running or starting" if any(s.starting for s in usage.servers) else "running"


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
            f"You are {_running(usage)} {len(usage.servers)} of your {limit} servers"
            f"{_projects(usage)}. "
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

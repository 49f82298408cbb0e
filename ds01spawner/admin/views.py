"""Pure builders of the admin view: dicts from devices, usage, container listings, hub users,
limits and the culler's state. The page and the JSON API show exactly these dicts."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timedelta, timezone
from typing import Any

from ..durations import left
from ..gpus.allocator import busy_outside
from ..gpus.model import Device, DeviceUsage
from ..gpus.table import holders
from ..limits.model import Limits
from ..limits.usage import usage_of


def _time(value: Any) -> datetime | None:
    if not value:
        return None
    try:
        t = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)


def gpu_rows(
    devices: Iterable[Device],
    usage: Mapping[str, DeviceUsage],
    containers: Iterable[Mapping],
    respect_foreign: bool = True,
    nodes: Mapping[str, str] | None = None,
) -> list[dict]:
    """One row per device (full GPU or MIG slice): who holds it, since when, what it does.

    ``nodes``: device UUID -> node name on a swarm (``SwarmInventory.node_of``); the rows then
    have a ``node`` (None on a single engine: the page leaves the column out).
    ``state``: ``"allocated"`` (a DS01 container holds it), ``"busy_outside"`` (processes that
    belong to no DS01 container use it) or ``"free"``.
    """
    containers = list(containers)
    held = holders(containers)
    foreign = busy_outside(usage, held) if respect_foreign else set()
    rows = []
    for d in devices:
        h = held.get(d.uuid)
        u = usage.get(d.uuid)
        state = "allocated" if h else ("busy_outside" if d.uuid in foreign else "free")
        rows.append(
            {
                "index": d.index,
                "node": nodes.get(d.uuid, "") if nodes is not None else None,
                "uuid": d.uuid,
                "name": d.name,
                "kind": d.kind,
                "mig_profile": d.mig_profile,
                "parent_uuid": d.parent_uuid,
                "memory_mib": d.memory_mib,
                "share": d.share,
                "simulated": d.simulated,
                "state": state,
                "holder": None
                if h is None
                else {
                    "user": h.user,
                    "project": h.project,
                    "server": h.server,
                    "container": h.container,
                    "since": h.since,
                },
                "utilization_pct": u.utilization_pct if u else None,
                "memory_used_mib": u.memory_used_mib if u else None,
                "processes": len(u.pids) if u else 0,
            }
        )
    return rows


def gpu_summary(rows: Iterable[Mapping]) -> dict:
    rows = list(rows)
    count = {s: sum(1 for r in rows if r["state"] == s) for s in ("allocated", "busy_outside")}
    return {
        "devices": len(rows),
        "allocated": count["allocated"],
        "busy_outside": count["busy_outside"],
        "free": len(rows) - count["allocated"] - count["busy_outside"],
    }


def user_rows(
    users: Iterable[Mapping],
    containers: Iterable[Mapping],
    limits_of: Callable[[str, list[str]], Limits | None],
    culler: Mapping[str, Mapping],
    now: datetime,
) -> list[dict]:
    """One row per hub user with servers or GPUs: servers (project, GPUs, started, runtime and
    idle time left), GPU equivalents used against their limit, groups.

    ``users`` are hub REST API user models (with ``servers``); ``limits_of(name, groups)``
    gives the user's effective limits (None without a limits file); ``culler`` is
    ``culler.state.read_for_page``.
    """
    containers = list(containers)
    rows = []
    for model in sorted(users, key=lambda m: m["name"]):
        name = model["name"]
        groups = sorted(model.get("groups") or [])
        use = usage_of(name, containers)
        by_server = {s.server: s for s in use.servers}
        limits = limits_of(name, groups)
        servers = []
        for sname, s in sorted((model.get("servers") or {}).items()):
            used = by_server.get(sname)
            started = _time(s.get("started"))
            info = culler.get(f"{name}/{sname}") or {}
            deadline = _time(info.get("runtime_deadline"))
            if deadline is None and limits is not None and limits.max_runtime is not None:
                deadline = started + timedelta(hours=limits.max_runtime) if started else None
            idle_deadline = _time(info.get("idle_deadline"))
            starting = used is None and s.get("pending") == "spawn"
            if starting:  # waiting for a GPU or building: its runtime has not begun
                deadline = idle_deadline = None
            servers.append(
                {
                    "name": sname,
                    "project": used.project if used else sname,
                    "ready": bool(s.get("ready")),
                    "pending": s.get("pending"),
                    "url": s.get("url"),
                    "gpus": list(used.gpus) if used else [],
                    "gpu_equivalents": used.gpu_equivalents if used else 0.0,
                    "started": started.isoformat(timespec="seconds") if started else None,
                    "last_activity": s.get("last_activity"),
                    "runtime_deadline": deadline.isoformat(timespec="seconds")
                    if deadline
                    else None,
                    "state": "starting" if starting else ("running" if used else "stopping"),
                    "runtime_left": "" if starting else (left(deadline, now) or "unlimited"),
                    "idle_deadline": idle_deadline.isoformat(timespec="seconds")
                    if idle_deadline
                    else None,
                    "idle_left": left(idle_deadline, now),
                    "warnings": [w.get("message", "") for w in info.get("warnings") or ()],
                }
            )
        rows.append(
            {
                "name": name,
                "admin": bool(model.get("admin")),
                "groups": groups,
                "servers": servers,
                "server_count": len(use.servers),
                "max_servers": limits.max_servers if limits else None,
                "gpu_equivalents": use.gpu_equivalents,
                "max_gpu_equivalents": limits.max_gpu_equivalents if limits else None,
                "limits": limits.as_dict() if limits else None,
            }
        )
    return rows


def queue_rows(waiting: Iterable[Mapping], now: datetime) -> list[dict]:
    """The published GPU queue for people: since when (UTC clock time) and for how long."""
    rows = []
    for w in waiting:
        row = dict(w)
        since = w.get("since")
        if isinstance(since, (int, float)):
            at = datetime.fromtimestamp(since, timezone.utc)
            minutes = max(0, int((now - at).total_seconds() // 60))
            row["since_shown"] = f"{at:%H:%M:%S} UTC ({minutes} min ago)"
        else:
            row["since_shown"] = ""
        what = w.get("gpu_type") or "any"
        count = w.get("gpus", 1)
        row["wants"] = f"{count} {'GPU' if count == 1 else 'GPUs'} ({what})"
        rows.append(row)
    return rows

"""One user's session at a glance: the data of the JupyterLab "DS01 session" panel.

:func:`session_view` is pure: it assembles, for one server of one user, what the hub side knows
(the hub's server model, the containers' labels, the GPU inventory's rows, the culler's record of
the server, the user's limits and the GPU queue) into the JSON the panel shows. The ds01-limits
service (``limits_service.SessionAPI``) does the reading; the JupyterLab extension
(images/labextension) only displays the result. Nothing in it comes from the user's container.

Imports: the culler's state model (to read its record), limits and quota; no I/O here.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

from ..culler.decision import SIGNALS
from ..culler.state import ServerRecord, State, iso, parse_time
from ..limits.model import Limits
from ..limits.usage import usage_of

#: Why a device shows no utilization.
MIG_NO_UTILIZATION = "a MIG slice reports no utilization"
NO_UTILIZATION = "the device does not report utilization"
SWARM_NO_UTILIZATION = "not available on a swarm node"


def culler_record(path: str, key: str) -> ServerRecord | None:
    """The culler's record of ``"<user>/<server>"`` in its state file; None when the file is
    missing, unreadable or has no such server. Never renames or changes the file."""
    if not path:
        return None
    try:
        with open(path, encoding="utf-8") as f:
            state = State.from_json(json.load(f))
    except (OSError, ValueError, TypeError, AttributeError):
        return None
    return state.servers.get(key)


def _seconds_left(deadline: datetime | None, now: datetime) -> float | None:
    return None if deadline is None else max(0.0, round((deadline - now).total_seconds(), 1))


def gpu_figures(rows: Iterable[Mapping], uuids: Iterable[str]) -> list[dict]:
    """The server's devices from the inventory's rows (``admin.views.gpu_rows``): memory used and
    total, and utilization where the device reports it (``None`` with a note otherwise: a MIG
    slice reports none, which is not 0 %)."""
    by_uuid = {r["uuid"]: r for r in rows}
    shown = []
    for uuid in uuids:
        r = by_uuid.get(uuid)
        if r is None:
            shown.append({"uuid": uuid, "missing": True, "note": "not in the GPU inventory now"})
            continue
        util = r.get("utilization_pct")
        note = None
        if util is None and r.get("node") is not None:  # a swarm node's device, not read
            note = SWARM_NO_UTILIZATION
        elif util is None:
            note = MIG_NO_UTILIZATION if r.get("kind") == "mig" else NO_UTILIZATION
        shown.append(
            {
                "uuid": uuid,
                "index": r.get("index"),
                "name": r.get("name"),
                "kind": r.get("kind"),
                "mig_profile": r.get("mig_profile"),
                "memory_total_mib": r.get("memory_mib"),
                "memory_used_mib": r.get("memory_used_mib"),
                "utilization_pct": util,
                "utilization_note": note,
                "simulated": bool(r.get("simulated")),
            }
        )
    return shown


def free_now(rows: list[Mapping]) -> dict:
    """What is free on the server now: whole GPUs and MIG slices nobody holds."""
    free = [r for r in rows if r.get("state") == "free"]
    return {
        "gpus": sum(1 for r in free if r.get("kind") == "gpu"),
        "mig_slices": sum(1 for r in free if r.get("kind") == "mig"),
        "devices": len(rows),
    }


def idle_view(record: ServerRecord | None, idle_timeout_h: float | None, now: datetime) -> dict:
    """Idle time left as the culler sees it, and which signals show activity now."""
    if idle_timeout_h is None:
        return {"timeout_s": None, "left_s": None, "deadline": None, "unlimited": True}
    view: dict[str, Any] = {"timeout_s": idle_timeout_h * 3600, "unlimited": False}
    if record is None:
        view.update(left_s=None, deadline=None, idle_since=None, signals={}, active_now=[])
        view["note"] = "the culler has not looked at this server yet"
        return view
    active = sorted(k for k, t in record.activity.items() if k in SIGNALS and t == record.checked)
    view.update(
        idle_since=iso(record.idle_since),
        deadline=iso(record.idle_deadline),
        left_s=_seconds_left(record.idle_deadline, now),
        signals={k: iso(t) for k, t in sorted(record.activity.items())},
        active_now=active,
        checked=iso(record.checked),
        note=record.note or None,
    )
    return view


def runtime_view(
    started: datetime | None, record: ServerRecord | None, max_runtime_h: float | None, now
) -> dict:
    if max_runtime_h is None:
        return {"max_runtime_s": None, "left_s": None, "deadline": None, "unlimited": True}
    deadline = record.runtime_deadline if record is not None else None
    if deadline is None and started is not None:
        deadline = started + timedelta(hours=max_runtime_h)
    return {
        "max_runtime_s": max_runtime_h * 3600,
        "deadline": iso(deadline),
        "left_s": _seconds_left(deadline, now),
        "unlimited": False,
    }


def session_view(
    *,
    user: str,
    server: str,
    hub_server: Mapping | None,
    containers: Iterable[Mapping],
    gpu_rows: list[dict],
    record: ServerRecord | None,
    limits: Limits | None,
    shown_limits: Mapping[str, str],
    queue: Iterable[Mapping],
    now: datetime,
) -> dict:
    """The panel's data for ``user``'s server ``server`` (see the module's docstring).

    ``hub_server`` is the server's entry in the hub's user model (None: not running);
    ``containers`` are ``docker ps -a`` dicts of the hub's containers (only ``user``'s count);
    ``record`` is the culler's record of the server; ``queue`` the GPU queue's waiting entries.
    """
    use = usage_of(user, containers)
    mine = next((s for s in use.servers if s.server == server), None)
    started = parse_time((hub_server or {}).get("started"))
    if record is not None and started is not None and record.started != started:
        record = None  # a record of an earlier run of this server
    return {
        "user": user,
        "server": server,
        "project": (mine.project if mine else None)
        or (record.project if record else None)
        or server
        or "default",
        "running": hub_server is not None,
        "ready": bool((hub_server or {}).get("ready")),
        "started": iso(started),
        "checked_at": iso(now),
        "gpus": gpu_figures(gpu_rows, mine.gpus if mine else ()),
        "gpu_equivalents": mine.gpu_equivalents if mine else 0.0,
        "runtime": runtime_view(started, record, limits.max_runtime if limits else None, now),
        "idle": idle_view(record, limits.idle_timeout if limits else None, now),
        "warnings": [
            {
                "reason": g.reason,
                "fraction": g.fraction,
                "at": iso(g.at),
                "deadline": iso(g.deadline),
                "since": iso(g.since),
                "message": g.message,
            }
            for g in (record.warnings if record else ())
        ],
        "limits": dict(shown_limits),
        "usage": {
            "servers": len(use.servers),
            "max_servers": limits.max_servers if limits else None,
            "gpu_equivalents": use.gpu_equivalents,
            "max_gpu_equivalents": limits.max_gpu_equivalents if limits else None,
        },
        "free": free_now(gpu_rows),
        "queue": [
            {k: w.get(k) for k in ("project", "server", "gpus", "since", "position") if k in w}
            for w in queue
            if w.get("user") == user
        ],
    }

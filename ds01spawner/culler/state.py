"""The culler's state file: warnings given, deadlines, and what each server was last seen doing.

One JSON file, by default ``<DS01_STATE_DIR>/culler-state.json``, replaced atomically (a temporary
file in the same folder, then ``rename``) after every cycle and before any warning is delivered
or any server is retired. It serves two readers:

- the culler itself after a restart: a warning in the file is never given again, and "idle
  since" survives the restart (CPU and GPU samples do not: they are taken again);
- the hub's home page: :func:`read_for_page` gives, per ``"<user>/<server name>"``, the idle and
  runtime deadlines and the warnings in force.

The hub learns the path from the configuration: :func:`state_path` (``c.DS01Culler.state_file``,
which ``startup.configure_services`` sets to the absolute path it gives the culler).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from ..jsonfile import write_json_atomically
from .decision import REASONS, Given

FILE_NAME = "culler-state.json"
VERSION = 1

log = logging.getLogger("ds01spawner.culler")


def state_path(config: Any = None, environ: Any = None) -> str:
    """The state file's absolute path: ``c.DS01Culler.state_file`` when set, else
    ``$DS01_STATE_DIR/culler-state.json``, else ``culler-state.json`` in the current folder (the
    hub's working folder, where JupyterHub keeps its own database by default)."""
    environ = os.environ if environ is None else environ
    configured = ""
    if config is not None:
        section = config.get("DS01Culler", {}) if hasattr(config, "get") else {}
        configured = section.get("state_file", "") or ""
    if configured:
        return os.path.abspath(configured)
    folder = environ.get("DS01_STATE_DIR") or os.getcwd()
    return os.path.abspath(os.path.join(folder, FILE_NAME))


def iso(t: datetime | None) -> str | None:
    return None if t is None else t.astimezone(timezone.utc).isoformat()


def parse_time(value: Any) -> datetime | None:
    """An ISO 8601 time (``Z`` or an offset; naive is UTC) as an aware UTC datetime; None for
    None or anything unreadable."""
    if not isinstance(value, str) or not value:
        return None
    try:
        t = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return t.replace(tzinfo=timezone.utc) if t.tzinfo is None else t.astimezone(timezone.utc)


def _list(value: Any) -> list:
    return value if isinstance(value, list) else []


@dataclass
class ServerRecord:
    """What the culler keeps about one running server."""

    started: datetime
    project: str = ""
    container: str = ""
    idle_since: datetime | None = None
    idle_deadline: datetime | None = None
    runtime_deadline: datetime | None = None
    warnings: list[Given] = field(default_factory=list)
    retiring: dict | None = None  # {"at": iso, "reason": ...}: decided, stop asked for (for admins)
    activity: dict[str, datetime] = field(default_factory=dict)
    checked: datetime | None = None
    note: str = ""

    def to_json(self) -> dict:
        return {
            "started": iso(self.started),
            "project": self.project,
            "container": self.container,
            "idle_since": iso(self.idle_since),
            "idle_deadline": iso(self.idle_deadline),
            "runtime_deadline": iso(self.runtime_deadline),
            "warnings": [
                {
                    "at": iso(g.at),
                    "reason": g.reason,
                    "fraction": g.fraction,
                    "deadline": iso(g.deadline),
                    "since": iso(g.since),
                    "message": g.message,
                }
                for g in self.warnings
            ],
            "retiring": self.retiring,
            "activity": {k: iso(v) for k, v in sorted(self.activity.items())},
            "checked": iso(self.checked),
            "note": self.note,
        }

    @classmethod
    def from_json(cls, data: dict) -> ServerRecord | None:
        started = parse_time(data.get("started"))
        if started is None:
            return None
        warnings = []
        for w in _list(data.get("warnings")):
            if not isinstance(w, dict):
                continue
            times = [parse_time(w.get(k)) for k in ("at", "deadline", "since")]
            fraction = w.get("fraction")
            if None in times or w.get("reason") not in REASONS:
                continue
            if not isinstance(fraction, (int, float)) or isinstance(fraction, bool):
                continue
            warnings.append(Given(w["reason"], float(fraction), *times, str(w.get("message", ""))))
        retiring = data.get("retiring")
        raw_activity = data.get("activity")
        raw_activity = raw_activity if isinstance(raw_activity, dict) else {}
        activity = {str(k): parse_time(v) for k, v in raw_activity.items()}
        return cls(
            started=started,
            project=str(data.get("project") or ""),
            container=str(data.get("container") or ""),
            idle_since=parse_time(data.get("idle_since")),
            idle_deadline=parse_time(data.get("idle_deadline")),
            runtime_deadline=parse_time(data.get("runtime_deadline")),
            warnings=warnings,
            retiring=retiring if isinstance(retiring, dict) else None,
            activity={k: v for k, v in activity.items() if v is not None},
            checked=parse_time(data.get("checked")),
            note=str(data.get("note") or ""),
        )


@dataclass
class State:
    servers: dict[str, ServerRecord] = field(default_factory=dict)
    cycles: int = 0
    updated: datetime | None = None
    last_error: str | None = None  # why the last cycle could not look at the servers

    def to_json(self) -> dict:
        return {
            "version": VERSION,
            "updated": iso(self.updated),
            "cycles": self.cycles,
            "last_error": self.last_error,
            "servers": {k: r.to_json() for k, r in sorted(self.servers.items())},
        }

    @classmethod
    def from_json(cls, data: Any) -> State:
        if not isinstance(data, dict) or not isinstance(data.get("servers"), dict):
            raise ValueError("not a culler state (no 'servers' object)")
        servers = {}
        for key, value in data["servers"].items():
            record = ServerRecord.from_json(value) if isinstance(value, dict) else None
            if record is not None and isinstance(key, str) and "/" in key:
                servers[key] = record
        cycles = data.get("cycles")
        return cls(
            servers=servers,
            cycles=cycles if isinstance(cycles, int) else 0,
            updated=parse_time(data.get("updated")),
            last_error=data.get("last_error") if isinstance(data.get("last_error"), str) else None,
        )

    @classmethod
    def load(cls, path: str) -> State:
        """The state in ``path``; an empty state when it is missing. A corrupt file is logged,
        kept next to it as ``<path>.corrupt`` for an admin, and read as empty."""
        try:
            with open(path, encoding="utf-8") as f:
                return cls.from_json(json.load(f))
        except FileNotFoundError:
            return cls()
        except (OSError, ValueError, TypeError, AttributeError) as e:
            log.error(
                "The culler state %s cannot be read (%s); starting from an empty state (warnings "
                "already given may be given once more). The file is kept as %s.corrupt.",
                path,
                e,
                path,
            )
            try:
                os.replace(path, path + ".corrupt")
            except OSError:
                pass
            return cls()

    def save(self, path: str) -> None:
        """Replace ``path`` atomically (readers see the old or the new file, never a mix)."""
        write_json_atomically(path, self.to_json(), fsync=True)


def read_for_page(path: str) -> dict[str, dict]:
    """For the hub's home page: ``"<user>/<server name>"`` -> ``{"idle_deadline": iso or None,
    "runtime_deadline": iso or None, "warnings": [{"at": iso, "reason": "idle" | "max_runtime",
    "message": str}]}``.

    Only running servers the culler has seen are in it, and only the warnings in force (activity
    clears idle warnings; a retired server is dropped). Times are ISO 8601 in UTC. A missing,
    unreadable or corrupt file gives ``{}``; this never raises for the file's content.
    """
    try:
        with open(path, encoding="utf-8") as f:
            state = State.from_json(json.load(f))
    except (OSError, ValueError, TypeError, AttributeError):
        return {}
    return {
        key: {
            "idle_deadline": iso(r.idle_deadline),
            "runtime_deadline": iso(r.runtime_deadline),
            "warnings": [
                {"at": iso(g.at), "reason": g.reason, "message": g.message} for g in r.warnings
            ],
        }
        for key, r in state.servers.items()
    }

"""The audit log: one JSON line per event, in a file shared by the hub, the culler and the
admin service, rotated by size (docs/audit-log.md has the schema).

Every process appends with ``O_APPEND`` while holding an ``fcntl.flock`` on ``<file>.lock``
around the size check, the rotation and the write, so lines from different processes never
interleave and a rotation never loses one. Writing never raises into its caller: a spawn must
not fail because the log cannot be written; the process's own log gets an error line instead.

Retire reasons travel from the one who asks (the culler, the admin service) to the spawner,
which writes the ``retire`` event, through small intent files next to the log
(:func:`mark_retire`, :func:`take_retire`): the hub's REST API has no field for them.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import time
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

from .jsonfile import write_json_atomically

log = logging.getLogger("ds01spawner.audit")

ENV_FILE = "DS01_AUDIT_LOG"
ENV_MAX_BYTES = "DS01_AUDIT_MAX_BYTES"
ENV_BACKUPS = "DS01_AUDIT_BACKUPS"

#: fields every event has
COMMON = {"time": str, "event": str}
#: event kind -> {field: type} it must have (besides COMMON); docs/audit-log.md lists them
EVENTS: dict[str, dict[str, type | tuple[type, ...]]] = {
    "allocate": {"user": str, "project": str, "server": str, "gpus": list},
    "release": {"user": str, "project": str, "server": str, "gpus": list},
    "refuse": {"user": str, "project": str, "server": str, "status": int, "reason": str},
    "start": {
        "user": str,
        "project": str,
        "server": str,
        "gpus": list,
        "container": str,
        "phases": dict,
    },
    "retire": {"user": str, "project": str, "server": str, "gpus": list, "reason": str},
    "warn": {"user": str, "server": str, "reason": str, "deadline": str},
    "build": {"user": str, "project": str, "image": str, "ok": bool, "seconds": (int, float)},
    "limits_reload": {"file": str},
    "limits_error": {"file": str, "error": str},
    "admin": {"actor": str, "action": str},
}
#: optional fields and their types, for any event
OPTIONAL: dict[str, type | tuple[type, ...]] = {
    "user": str,
    "project": str,
    "server": str,
    "gpus": list,
    "actor": str,
    "target": str,
    "waited": (int, float),
    "joined": bool,
    "error": str,
    "ok": bool,
    "details": dict,
    "kind": str,
    "reason": str,
}
RETIRE_REASONS = ("user", "died", "culler: idle", "culler: max_runtime")  # and "admin: <name>"
INTENT_SECONDS = 600  # a retire intent older than this is stale (its DELETE never came)


def validate_event(event: Mapping[str, Any]) -> list[str]:
    """Problems of one parsed audit line against the schema; [] when it is valid."""
    problems = []
    kind = event.get("event")
    if kind not in EVENTS:
        return [f"unknown event kind {kind!r}"]
    need = {**COMMON, **EVENTS[kind]}
    for name, typ in need.items():
        if name not in event:
            problems.append(f"{kind}: missing field {name!r}")
        elif not isinstance(event[name], typ) or (typ is int and isinstance(event[name], bool)):
            problems.append(f"{kind}: field {name!r} has the wrong type")
    for name, value in event.items():
        if name in need:
            continue
        if name in OPTIONAL:
            if not isinstance(value, OPTIONAL[name]):
                problems.append(f"{kind}: field {name!r} has the wrong type")
        else:
            problems.append(f"{kind}: unknown field {name!r}")
    try:
        datetime.fromisoformat(str(event.get("time")))
    except ValueError:
        problems.append(f"{kind}: time is not ISO 8601")
    if kind == "retire" and isinstance(event.get("reason"), str):
        r = event["reason"]
        if r not in RETIRE_REASONS and not (r.startswith("admin: ") and len(r) > 7):
            problems.append(f"retire: unknown reason {r!r}")
    return problems


class AuditLog:
    """Append-only JSON lines in ``path``, rotated to ``path.1`` .. ``path.<backups>``."""

    def __init__(self, path: str, max_bytes: int = 10 * 2**20, backups: int = 5) -> None:
        self.path, self.max_bytes, self.backups = str(path), int(max_bytes), int(backups)
        self._failing = False

    def write(self, event: str, **fields: Any) -> dict | None:
        """Append one event; returns the record written, None when it could not be."""
        record = {"time": datetime.now(timezone.utc).isoformat(timespec="milliseconds")}
        record["event"] = event
        record.update({k: v for k, v in fields.items() if v is not None})
        try:
            line = (json.dumps(record, default=str, sort_keys=False) + "\n").encode()
            self._append(line)
        except Exception as e:  # noqa: BLE001 - never into a spawn; logged once until it works
            if not self._failing:
                log.error("Cannot write the audit log %s: %s (event %s lost)", self.path, e, event)
            self._failing = True
            return None
        if self._failing:
            log.info("The audit log %s is written again", self.path)
        self._failing = False
        return record

    def _append(self, line: bytes) -> None:
        lock = os.open(self.path + ".lock", os.O_WRONLY | os.O_CREAT, 0o640)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                size = os.stat(self.path).st_size
            except FileNotFoundError:
                size = 0
            if size and size + len(line) > self.max_bytes:
                self._rotate()
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
            try:
                os.write(fd, line)
            finally:
                os.close(fd)
        finally:
            os.close(lock)  # releases the flock

    def _rotate(self) -> None:
        if self.backups <= 0:
            os.truncate(self.path, 0)
            return
        for i in range(self.backups - 1, 0, -1):
            older = f"{self.path}.{i}"
            if os.path.exists(older):
                os.replace(older, f"{self.path}.{i + 1}")
        os.replace(self.path, f"{self.path}.1")


class NoAuditLog:
    """Stands in for AuditLog when no file is configured."""

    path = ""

    def write(self, event: str, **fields: Any) -> None:
        return None


_logs: dict[tuple, AuditLog] = {}


def audit_log(path: str, max_bytes: int = 10 * 2**20, backups: int = 5) -> AuditLog | NoAuditLog:
    """This process's writer for ``path`` (NoAuditLog for "")."""
    if not path:
        return NoAuditLog()
    key = (path, int(max_bytes), int(backups))
    if key not in _logs:
        _logs[key] = AuditLog(path, max_bytes, backups)
    return _logs[key]


def from_environment(environ: Mapping[str, str] | None = None) -> AuditLog | NoAuditLog:
    """The writer of a service process, from what ``configure_services`` passed it."""
    env = os.environ if environ is None else environ
    return audit_log(
        env.get(ENV_FILE, ""),
        int(env.get(ENV_MAX_BYTES) or 10 * 2**20),
        int(env.get(ENV_BACKUPS) or 5),
    )


def environment(spawner_section: Mapping[str, Any]) -> dict[str, str]:
    """The environment that tells a service process the hub's audit log settings."""
    return {
        ENV_FILE: str(spawner_section.get("audit_log_file", "") or ""),
        ENV_MAX_BYTES: str(int(spawner_section.get("audit_log_max_bytes", 10 * 2**20))),
        ENV_BACKUPS: str(int(spawner_section.get("audit_log_backups", 5))),
    }


def read_events(path: str, with_backups: bool = True) -> list[dict]:
    """Every event in the file (and its backups, oldest first), skipping unparsable lines."""
    files = [path]
    if with_backups:
        i = 1
        while os.path.exists(f"{path}.{i}"):
            files.insert(0, f"{path}.{i}")
            i += 1
    events = []
    for name in files:
        try:
            with open(name, encoding="utf-8") as f:
                for line in f:
                    try:
                        events.append(json.loads(line))
                    except ValueError:
                        continue
        except FileNotFoundError:
            continue
    return events


# ---- retire intents ------------------------------------------------------------------------------


def _intent_path(log_path: str, user: str, server: str) -> str:
    digest = hashlib.sha256(f"{user}\0{server}".encode()).hexdigest()[:24]
    return os.path.join(log_path + ".retiring", digest)


def mark_retire(log_path: str, user: str, server: str, reason: str, actor: str = "") -> None:
    """Say why the next stop of ``user``'s ``server`` happens (before asking the hub)."""
    if not log_path:
        return
    path = _intent_path(log_path, user, server)
    try:
        os.makedirs(os.path.dirname(path), mode=0o750, exist_ok=True)
        write_json_atomically(path, {"reason": reason, "actor": actor, "at": time.time()})
    except OSError as e:
        log.error("Cannot record why %s/%s is retired: %s", user, server, e)


def take_retire(log_path: str, user: str, server: str) -> tuple[str, str] | None:
    """(reason, actor) recorded by :func:`mark_retire`, removed once read; None if none/stale."""
    if not log_path:
        return None
    path = _intent_path(log_path, user, server)
    try:
        with open(path) as f:
            data = json.load(f)
        os.unlink(path)
    except (OSError, ValueError):
        return None
    if time.time() - float(data.get("at", 0)) > INTENT_SECONDS:
        return None
    return str(data.get("reason") or "user"), str(data.get("actor") or "")

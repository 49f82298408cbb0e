"""The audit log: schema, rotation, several writer processes, never raising, retire intents."""

from __future__ import annotations

import json
import multiprocessing
import os
import re
from pathlib import Path

from ds01spawner import audit
from ds01spawner.audit import AuditLog, mark_retire, read_events, take_retire, validate_event

DOC = Path(__file__).resolve().parents[2] / "docs" / "audit-log.md"


def test_a_written_event_is_one_valid_json_line(tmp_path):
    log = AuditLog(str(tmp_path / "a.jsonl"))
    log.write("retire", user="u", project="p", server="p", gpus=["GPU-1"], reason="culler: idle")
    (line,) = (tmp_path / "a.jsonl").read_text().splitlines()
    event = json.loads(line)
    assert event["event"] == "retire" and validate_event(event) == []


def test_validation_names_what_is_wrong():
    ok = {"time": "2026-01-01T00:00:00+00:00", "event": "admin", "actor": "a", "action": "x"}
    assert validate_event(ok) == []
    assert validate_event({**ok, "event": "nope"}) == ["unknown event kind 'nope'"]
    assert validate_event({**ok, "actor": 3}) == ["admin: field 'actor' has the wrong type"]
    assert validate_event({**ok, "colour": "red"}) == ["admin: unknown field 'colour'"]
    bad_reason = {**ok, "event": "retire", "user": "u", "project": "p", "server": ""}
    del bad_reason["action"]
    bad_reason.update(gpus=[], reason="boredom")
    assert validate_event(bad_reason) == ["retire: unknown reason 'boredom'"]
    assert validate_event({**bad_reason, "reason": "admin: root"}) == []


def test_every_event_kind_and_field_is_documented():
    text = DOC.read_text()
    for kind, fields in audit.EVENTS.items():
        assert f"`{kind}`" in text, kind
        for name in fields:
            assert f"`{name}`" in text, (kind, name)
    for name in audit.OPTIONAL:
        assert f"`{name}`" in text, name


def test_rotation_keeps_the_configured_backups(tmp_path):
    path = str(tmp_path / "a.jsonl")
    log = AuditLog(path, max_bytes=2000, backups=2)
    for i in range(100):
        log.write("admin", actor="a", action=f"n{i}")
    assert os.path.getsize(path) <= 2000
    assert os.path.exists(path + ".1") and os.path.exists(path + ".2")
    assert not os.path.exists(path + ".3")
    events = read_events(path)
    numbers = [int(e["action"][1:]) for e in events]
    assert numbers == sorted(numbers) and numbers[-1] == 99  # oldest first, nothing reordered


def _writer(path: str, n: int, who: int) -> None:
    log = AuditLog(path, max_bytes=20_000, backups=50)
    for i in range(n):
        log.write("admin", actor=f"w{who}", action=f"{i}", details={"pad": "x" * 100})


def test_several_processes_never_interleave_or_lose_lines(tmp_path):
    path = str(tmp_path / "a.jsonl")
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_writer, args=(path, 200, w)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    events = read_events(path)
    assert len(events) == 800  # every line parsed: none torn, none lost across rotations
    for w in range(4):
        mine = [int(e["action"]) for e in events if e["actor"] == f"w{w}"]
        assert mine == list(range(200))


def test_an_unwritable_log_never_raises(tmp_path, caplog):
    log = AuditLog(str(tmp_path / "missing-folder" / "a.jsonl"))
    assert log.write("admin", actor="a", action="x") is None
    assert log.write("admin", actor="a", action="y") is None
    errors = [r for r in caplog.records if "Cannot write the audit log" in r.getMessage()]
    assert len(errors) == 1  # once until it works again


def test_retire_intents_are_read_once(tmp_path):
    path = str(tmp_path / "a.jsonl")
    mark_retire(path, "bob", "train", "admin: root", "root")
    assert take_retire(path, "bob", "other") is None
    assert take_retire(path, "bob", "train") == ("admin: root", "root")
    assert take_retire(path, "bob", "train") is None
    assert take_retire("", "bob", "train") is None


def test_environment_round_trip():
    env = audit.environment({"audit_log_file": "/x/a.jsonl", "audit_log_backups": 3})
    log = audit.from_environment(env)
    assert (log.path, log.backups, log.max_bytes) == ("/x/a.jsonl", 3, 10 * 2**20)
    assert re.fullmatch(r"\d+", env[audit.ENV_MAX_BYTES])
    assert audit.from_environment({}).write("admin") is None

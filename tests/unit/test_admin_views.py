"""The admin view's pure parts: GPU map and user rows as dicts, metrics text, exemptions."""

from __future__ import annotations

from datetime import date, datetime, timezone
from pathlib import Path

import pytest

from ds01spawner.admin.exemptions import ExemptionError, add_exemption, grant
from ds01spawner.admin.service import render_metrics
from ds01spawner.admin.views import gpu_rows, gpu_summary, user_rows
from ds01spawner.gpus.model import Device, DeviceUsage
from ds01spawner.limits.model import Limits, parse_limits

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "limits.example.yaml"
NOW = datetime(2026, 11, 28, 12, 0, tzinfo=timezone.utc)
TODAY = NOW.date()

DEVICES = [
    Device("GPU-a", "0", "A100", 40960, "gpu"),
    Device("GPU-b", "1", "A100", 40960, "gpu"),
    Device("MIG-c", "2:0", "A100 MIG 3g.20gb", 20096, "mig", "GPU-p", "3g.20gb", 3 / 7),
]


def container(user, project, gpus, state="running", eq=None, created=1):
    return {
        "Id": f"id-{user}-{project}",
        "Names": [f"/ds01-{user}-{project}"],
        "State": state,
        "Created": created,
        "Labels": {
            "ds01.managed": "true",
            "ds01.user": user,
            "ds01.project": project,
            "ds01.server": project,
            "ds01.gpus": ",".join(gpus),
            "ds01.gpu_equivalents": str(eq if eq is not None else len(gpus)),
            "ds01.created": "2026-11-28T11:00:00+00:00",
        },
    }


def test_gpu_rows_show_holders_free_and_busy_outside():
    containers = [
        container("alice", "train", ["GPU-a"]),
        container("old", "gone", ["GPU-b"], state="exited"),  # exited: holds nothing
    ]
    usage = {
        "GPU-a": DeviceUsage("GPU-a", 87.0, 1000, (11,)),
        "GPU-b": DeviceUsage("GPU-b", 50.0, 500, (42,)),  # a CUDA process outside DS01
    }
    rows = gpu_rows(DEVICES, usage, containers)
    by = {r["uuid"]: r for r in rows}
    assert by["GPU-a"]["state"] == "allocated"
    assert by["GPU-a"]["holder"] == {
        "user": "alice",
        "project": "train",
        "server": "train",
        "container": "ds01-alice-train",
        "since": "2026-11-28T11:00:00+00:00",
    }
    assert (by["GPU-a"]["utilization_pct"], by["GPU-a"]["memory_used_mib"]) == (87.0, 1000)
    assert by["GPU-b"]["state"] == "busy_outside" and by["GPU-b"]["holder"] is None
    assert by["MIG-c"]["state"] == "free" and by["MIG-c"]["mig_profile"] == "3g.20gb"
    assert gpu_summary(rows) == {"devices": 3, "allocated": 1, "busy_outside": 1, "free": 1}
    assert gpu_rows(DEVICES, usage, containers, respect_foreign=False)[1]["state"] == "free"


def test_user_rows_usage_against_limits_and_time_left():
    users = [
        {
            "name": "bob",
            "admin": False,
            "groups": ["students"],
            "servers": {
                "eval": {"started": "2026-11-28T10:00:00Z", "ready": True, "url": "/user/bob/eval/"}
            },
        }
    ]
    containers = [container("bob", "eval", ["GPU-a", "MIG-c"], eq=1.4286)]
    limits = Limits.unlimited()
    limits = Limits(**{**limits.__dict__, "max_gpu_equivalents": 2.0, "max_runtime": 4.0})
    culler = {"bob/eval": {"idle_deadline": "2026-11-28T12:30:00+00:00", "warnings": []}}
    (row,) = user_rows(users, containers, lambda n, g: limits, culler, NOW)
    assert row["gpu_equivalents"] == 1.4286 and row["max_gpu_equivalents"] == 2.0
    assert row["groups"] == ["students"] and row["server_count"] == 1
    (s,) = row["servers"]
    assert s["gpus"] == ["GPU-a", "MIG-c"]
    assert s["runtime_left"] == "2 h 00 min" and s["idle_left"] == "30 min"
    (row,) = user_rows(users, containers, lambda n, g: None, {}, NOW)
    assert row["max_gpu_equivalents"] is None and row["servers"][0]["runtime_left"] == "unlimited"


def test_metrics_text_counts_devices_and_users():
    containers = [container("alice", "t", ["GPU-a"]), container("bob", "e", ["MIG-c"], eq=0.4286)]
    rows = gpu_rows(DEVICES, {}, containers)
    text = render_metrics(rows, containers).decode()
    assert 'ds01_gpu_devices{state="allocated"} 2.0' in text
    assert 'ds01_gpu_devices{state="free"} 1.0' in text
    assert 'ds01_user_gpu_equivalents{user="bob"} 0.4286' in text
    assert 'ds01_user_servers{user="alice"} 1.0' in text


def test_an_exemption_is_appended_keeping_comments():
    text = EXAMPLE.read_text()
    new = add_exemption(
        text, "bob", ["max_runtime"], 'Deadline: "x"', date(2027, 1, 2), "root", TODAY
    )
    assert new.startswith(text.rstrip("\n")[:200])
    kept = [line for line in text.splitlines() if "#" in line]
    assert all(line in new.splitlines() for line in kept)  # every comment line is still there
    doc = parse_limits(new)
    ex = doc.exemptions[-1]
    assert (ex.user, ex.lifts, ex.reason, ex.expires, ex.granted_by) == (
        "bob",
        ("max_runtime",),
        'Deadline: "x"',
        date(2027, 1, 2),
        "root",
    )
    assert doc.exemptions[:-1] == parse_limits(text).exemptions[: len(doc.exemptions) - 1]


def test_an_exemption_without_an_exemptions_list_or_with_an_empty_one():
    base = EXAMPLE.read_text()
    base = base[: base.index("exemptions:")]
    for tail in ("", "exemptions: []  # none yet\n", "exemptions:\n"):
        new = add_exemption(base + tail, "eve", ["all"], "r", date(2027, 1, 1), "root", TODAY)
        assert [e.user for e in parse_limits(new).exemptions] == ["eve"]
        if "none yet" in tail:
            assert "# none yet" in new


@pytest.mark.parametrize(
    "args, message",
    [
        (("", ["all"], "r", date(2027, 1, 1)), "Name the user"),
        (("bob", ["wings"], "r", date(2027, 1, 1)), "Not a limit: wings"),
        (("bob", ["all"], " ", date(2027, 1, 1)), "reason"),
        (("bob", ["all"], "r", date(2020, 1, 1)), "in the past"),
        (("bob", ["all"], "two\nlines", date(2027, 1, 1)), "one line"),
        (("bob", [], "r", date(2027, 1, 1)), "at least one"),
    ],
)
def test_bad_exemptions_are_refused(args, message):
    with pytest.raises(ExemptionError, match=message):
        add_exemption(EXAMPLE.read_text(), *args, "root", TODAY)


def test_a_result_that_does_not_parse_is_refused_and_the_file_kept(tmp_path):
    path = tmp_path / "limits.yaml"
    broken_elsewhere = EXAMPLE.read_text().replace("max_servers: 2", "max_servers: lots", 1)
    path.write_text(broken_elsewhere)
    with pytest.raises(ExemptionError, match="would not parse"):
        grant(str(path), "bob", ["all"], "r", date(2027, 1, 1), "root", TODAY)
    assert path.read_text() == broken_elsewhere
    path.write_text(EXAMPLE.read_text())
    path.chmod(0o640)
    grant(str(path), "bob", ["all"], "r", date(2027, 1, 1), "root", TODAY)
    assert parse_limits(path.read_text()).exemptions[-1].user == "bob"
    assert path.stat().st_mode & 0o777 == 0o640
    # no temporary file left (the lock file stays, for the next grant)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["limits.yaml", "limits.yaml.lock"]


def test_concurrent_grants_lose_none(tmp_path):
    import threading

    path = tmp_path / "limits.yaml"
    path.write_text(EXAMPLE.read_text())
    users = [f"user{i}" for i in range(12)]
    start = threading.Barrier(len(users))

    def one(user):
        start.wait()
        grant(str(path), user, ["all"], "r", date(2027, 1, 1), "root", TODAY)

    threads = [threading.Thread(target=one, args=(u,)) for u in users]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    granted = {x.user for x in parse_limits(path.read_text()).exemptions}
    assert set(users) <= granted

"""The session panel's data (ds01spawner/services/session.py): a pure assembly of hub-side facts."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

from ds01spawner.culler.decision import Given
from ds01spawner.culler.state import ServerRecord, State
from ds01spawner.limits.model import Limits
from ds01spawner.services.session import MIG_NO_UTILIZATION, culler_record, session_view

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=timezone.utc)
STARTED = NOW - timedelta(minutes=30)


def container(user, server, project, gpus="", state="running"):
    return {
        "State": state,
        "Labels": {
            "ds01.user": user,
            "ds01.server": server,
            "ds01.project": project,
            "ds01.gpus": gpus,
            "ds01.gpu_equivalents": "1" if gpus else "0",
        },
    }


def gpu_row(uuid, kind="gpu", state="free", util=None, used=None, total=40960, index="0"):
    return {
        "uuid": uuid,
        "index": index,
        "name": "NVIDIA A100-SXM4-40GB" + (" MIG 3g.20gb" if kind == "mig" else ""),
        "kind": kind,
        "mig_profile": "3g.20gb" if kind == "mig" else None,
        "memory_mib": total,
        "memory_used_mib": used,
        "utilization_pct": util,
        "simulated": True,
        "state": state,
    }


def limits(**kw):
    base = Limits.unlimited().as_dict()
    base.update(kw)
    return Limits(**base)


def view(**kw):
    args = dict(
        user="alice",
        server="thesis",
        hub_server={"started": STARTED.isoformat(), "ready": True},
        containers=[container("alice", "thesis", "thesis", "GPU-a")],
        gpu_rows=[gpu_row("GPU-a", state="allocated", util=37.0, used=2048)],
        record=None,
        limits=limits(idle_timeout=1.0, max_runtime=2.0, max_servers=2),
        shown_limits={"idle_timeout": "1 h"},
        queue=[],
        now=NOW,
    )
    args.update(kw)
    return session_view(**args)


def test_a_gpu_shows_memory_and_utilization_and_the_runtime_left():
    v = view()
    assert v["project"] == "thesis" and v["running"]
    (g,) = v["gpus"]
    assert (g["memory_used_mib"], g["memory_total_mib"], g["utilization_pct"]) == (
        2048,
        40960,
        37.0,
    )
    assert g["utilization_note"] is None
    assert v["runtime"]["left_s"] == 90 * 60  # 2 h limit, started 30 min ago
    assert v["runtime"]["max_runtime_s"] == 7200
    assert v["usage"]["servers"] == 1 and v["usage"]["max_servers"] == 2


def test_a_mig_slice_says_it_reports_no_utilization_rather_than_zero():
    rows = [gpu_row("MIG-1", kind="mig", state="allocated", util=None, used=100, total=20096)]
    v = view(containers=[container("alice", "thesis", "thesis", "MIG-1")], gpu_rows=rows)
    (g,) = v["gpus"]
    assert g["utilization_pct"] is None
    assert g["utilization_note"] == MIG_NO_UTILIZATION


def test_idle_time_left_and_active_signals_come_from_the_culler_record():
    checked = NOW - timedelta(seconds=5)
    record = ServerRecord(
        started=STARTED,
        project="thesis",
        idle_since=NOW - timedelta(minutes=50),
        idle_deadline=NOW + timedelta(minutes=10),
        activity={"hub": NOW - timedelta(minutes=50), "gpu": checked},
        checked=checked,
        warnings=[
            Given(
                "idle",
                0.75,
                NOW - timedelta(minutes=5),
                NOW + timedelta(minutes=10),
                NOW - timedelta(minutes=50),
                "idle since ...",
            )
        ],
    )
    v = view(record=record)
    assert v["idle"]["left_s"] == 600
    assert v["idle"]["active_now"] == ["gpu"]  # busy at the culler's last look
    assert v["warnings"][0]["fraction"] == 0.75 and v["warnings"][0]["message"] == "idle since ..."


def test_a_record_of_an_earlier_run_is_not_shown():
    record = ServerRecord(started=STARTED - timedelta(days=1), idle_deadline=NOW, warnings=[])
    v = view(record=record)
    assert v["idle"]["left_s"] is None and v["warnings"] == []


def test_only_the_users_own_servers_and_queue_places_count():
    containers = [
        container("alice", "thesis", "thesis", "GPU-a"),
        container("bob", "big", "big", "GPU-b"),
    ]
    rows = [
        gpu_row("GPU-a", state="allocated"),
        gpu_row("GPU-b", state="allocated", index="1"),
        gpu_row("GPU-c", index="2"),
        gpu_row("MIG-1", kind="mig", index="3:0"),
    ]
    queue = [
        {"user": "bob", "project": "x", "server": "x", "gpus": 2, "position": 1, "since": 1.0},
        {"user": "alice", "project": "y", "server": "y", "gpus": 1, "position": 2, "since": 2.0},
    ]
    v = view(containers=containers, gpu_rows=rows, queue=queue)
    assert [g["uuid"] for g in v["gpus"]] == ["GPU-a"]
    assert v["usage"]["servers"] == 1
    assert v["free"] == {"gpus": 1, "mig_slices": 1, "devices": 4}
    assert v["queue"] == [{"project": "y", "server": "y", "gpus": 1, "since": 2.0, "position": 2}]
    assert "bob" not in json.dumps(v)


def test_without_limits_everything_is_unlimited():
    v = view(limits=None, shown_limits={})
    assert v["runtime"]["unlimited"] and v["idle"]["unlimited"]
    assert v["usage"]["max_servers"] is None


def test_culler_record_reads_without_touching_a_corrupt_file(tmp_path):
    path = tmp_path / "culler-state.json"
    path.write_text("{not json")
    assert culler_record(str(path), "alice/thesis") is None
    assert path.read_text() == "{not json"  # never renamed away (that is the culler's to do)
    State(servers={"alice/thesis": ServerRecord(started=STARTED)}).save(str(path))
    assert culler_record(str(path), "alice/thesis").started == STARTED
    assert culler_record(str(path), "bob/thesis") is None


def test_server_tokens_reach_the_service_and_servers_learn_where_it_is():
    from traitlets.config import Config

    from ds01spawner import DS01Spawner
    from ds01spawner.spawner.startup import configure_services

    c = Config()
    c.JupyterHub.load_roles = []
    configure_services(c, port=8002)
    spawner = DS01Spawner(config=c)
    assert "access:services!service=ds01-limits" in spawner.server_token_scopes
    assert "users:activity!user" in spawner.server_token_scopes  # JupyterHub's server role
    assert spawner.session_service_url == "http://127.0.0.1:8002/services/ds01-limits/"
    (role,) = [r for r in c.JupyterHub.load_roles if r["name"] == "ds01-limits"]
    assert "users:activity" in role["scopes"]  # for "Keep running"; no admin scope
    assert not any(s.startswith("admin") for s in role["scopes"])
    (service,) = [s for s in c.JupyterHub.services if s["name"] == "ds01-limits"]
    assert service["environment"]["DS01_GPU_INVENTORY"] == "auto"
    # an admin's own address wins
    c2 = Config()
    c2.JupyterHub.load_roles = []
    c2.DS01Spawner.session_service_url = "http://10.0.0.1:8002/services/ds01-limits/"
    configure_services(c2, port=8002)
    assert c2.DS01Spawner.session_service_url.startswith("http://10.0.0.1")

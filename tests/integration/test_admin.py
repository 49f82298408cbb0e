"""The ds01-admin service and the audit log on a real hub with real containers.

One hub (culler every second, an idle timeout of a few seconds for ``idler``, one server at most
for ``capped``) and these steps in order: the JSON API and the metrics are compared with
``docker inspect`` of the running containers; a non-admin gets 403; the actions (retire,
exemption, reload) run through the API and through the page's confirm forms with XSRF; and at
the end every event kind of the audit log has been written by one of these real actions and
parses against the documented schema.
"""

from __future__ import annotations

import json
import re
import secrets
from datetime import date, timedelta

import pytest
import requests

from ds01spawner.audit import EVENTS, read_events, validate_event
from ds01spawner.limits.file import load_limits_file

from .hub import ds01_containers, wait_for

TOKEN = secrets.token_hex(4)  # in each Dockerfile: no other run shares these builds
LIMITS = """# DS01 limits of the admin tests
defaults:
  max_gpu_equivalents: null
  max_gpus_per_server: null
  allow_full_gpu: true
  max_servers: null
  cpus: null
  memory: null
  shm_size: null
  pids_limit: null
  max_runtime: null
  idle_timeout: null
users:
  idler:
    idle_timeout: "6s"   # the culler warns, then retires
  capped:
    max_servers: 1       # a second server is refused
"""


@pytest.fixture(scope="module")
def limits_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("admin-limits") / "limits.yaml"
    path.write_text(LIMITS)
    return path


@pytest.fixture(scope="module")
def hub(hub_factory, limits_file, docker_client):
    hub = hub_factory(
        {
            "DS01_TEST_LIMITS": str(limits_file),
            "DS01_TEST_CULLER": json.dumps({"cull_every": 1, "gpu_window": 2}),
            # given in parent sections: the admin view, the culler and ds01-limits must still
            # see the containers (prefix), limits and GPUs the spawner uses
            "DS01_TEST_SECTIONS": json.dumps(
                {
                    "prefix": "DockerSpawner",
                    "limits_file": "Spawner",
                    "simulated_gpu_state_file": "DockerSpawner",
                }
            ),
        }
    )
    yield hub
    hub.shutdown()
    for c in ds01_containers(docker_client, hub.prefix):
        c.remove(force=True)
    for image in docker_client.api.images(filters={"reference": f"{hub.prefix}-*/*"}):
        for ref in image.get("RepoTags") or []:
            try:
                docker_client.api.remove_image(ref)
            except Exception:  # noqa: BLE001 - best effort
                pass


def admin_api(hub, method: str, path: str, user: str = "admin", **kw) -> requests.Response:
    return requests.request(
        method,
        f"{hub.url}/services/ds01-admin/{path}",
        headers={"Authorization": f"token {hub.user_token(user)}"},
        timeout=60,
        **kw,
    )


def audit(hub) -> list[dict]:
    return read_events(str(hub.state_dir / "audit.jsonl"))


def labels_of_running(docker_client, hub) -> dict[str, dict]:
    """uuid -> labels of its holder, from docker inspect of the running containers."""
    held = {}
    for c in ds01_containers(docker_client, hub.prefix):
        c.reload()
        labels = c.attrs["Config"]["Labels"]
        assert c.attrs["State"]["Running"]
        for uuid in filter(None, labels["ds01.gpus"].split(",")):
            held[uuid] = labels
    return held


def metric(text: str, name: str, **labels) -> float | None:
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        m = re.fullmatch(rf"{name}(?:\{{(.*)\}})? (\S+)", line)
        if m and ",".join(sorted((m.group(1) or "").split(","))) == want:
            return float(m.group(2))
    return None


def test_json_api_and_metrics_agree_with_docker_inspect(hub, docker_client):
    hub.start_server("alice", "train", {"gpus": 1})
    hub.start_server("bob", "eval", {"gpus": 2})
    held = labels_of_running(docker_client, hub)
    assert len(held) == 3

    r = admin_api(hub, "GET", "api/overview")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["summary"] == {"devices": 4, "allocated": 3, "busy_outside": 0, "free": 1}
    for g in body["gpus"]:
        labels = held.get(g["uuid"])
        if labels is None:
            assert g["state"] == "free" and g["holder"] is None
            continue
        assert g["state"] == "allocated"
        assert g["holder"]["user"] == labels["ds01.user"]
        assert g["holder"]["project"] == labels["ds01.project"]
        assert g["holder"]["server"] == labels["ds01.server"]
        assert g["holder"]["since"] == labels["ds01.created"]
    users = {u["name"]: u for u in body["users"]}
    assert users["alice"]["gpu_equivalents"] == 1.0
    assert users["bob"]["gpu_equivalents"] == 2.0
    assert users["bob"]["servers"][0]["name"] == "eval"
    assert sorted(users["bob"]["servers"][0]["gpus"]) == sorted(
        u for u, lab in held.items() if lab["ds01.user"] == "bob"
    )
    assert users["alice"]["groups"] == ["students"]  # the demo config's groups
    assert users["alice"]["servers"][0]["runtime_left"] == "unlimited"

    r = admin_api(hub, "GET", "metrics")
    assert r.status_code == 200, r.text
    assert metric(r.text, "ds01_gpu_devices", state="allocated") == 3.0
    assert metric(r.text, "ds01_gpu_devices", state="free") == 1.0
    assert metric(r.text, "ds01_user_gpu_equivalents", user="bob") == 2.0
    assert metric(r.text, "ds01_user_gpu_equivalents", user="alice") == 1.0
    for uuid, labels in held.items():
        assert "ds01_gpu_device_allocated{" in r.text
        assert f'uuid="{uuid}"' in r.text and labels["ds01.user"] in r.text

    # the hub's own metrics: spawn phases of the two launches
    r = hub.session.get(
        f"{hub.url}/hub/metrics",
        headers={"Authorization": f"token {hub.user_token('admin')}"},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    assert metric(r.text, "ds01_spawn_phase_seconds_count", phase="allocate") == 2.0
    assert metric(r.text, "ds01_spawn_phase_seconds_count", phase="start") == 2.0


def test_non_admins_get_403_on_the_page_and_the_api(hub):
    for path in ("api/overview", "api/gpus", "metrics"):
        assert admin_api(hub, "GET", path, user="alice").status_code == 403, path
    r = admin_api(hub, "POST", "api/actions/reload-limits", user="alice", json={})
    assert r.status_code == 403
    # the page, logged in with the hub cookie: the hub's OAuth refuses the non-admin
    s = hub.login("alice")
    r = s.get(f"{hub.url}/services/ds01-admin/", timeout=60)
    assert r.status_code == 403
    # her own usage, read-only, at the ds01-limits service
    r = s.get(f"{hub.url}/services/ds01-limits/", timeout=60)
    assert r.status_code == 200, r.text
    assert "Your usage and limits" in r.text and "train" in r.text
    assert "GPU equivalents: <strong>1.0</strong>" in r.text
    assert "eval" not in r.text  # bob's server is not hers
    # and no token at all
    r = requests.get(f"{hub.url}/services/ds01-admin/api/overview", timeout=30)
    assert r.status_code == 403


def test_actions_with_token_and_with_the_page_forms(hub, docker_client, limits_file):
    # retire through the JSON API (token: no XSRF needed)
    r = admin_api(hub, "POST", "api/actions/retire", json={"user": "alice", "server": "train"})
    assert r.status_code == 200, r.text
    wait_for(lambda: hub.server_model("alice", "train") is None, 60, "alice/train retired")
    assert ds01_containers(docker_client, hub.prefix, user="alice") == []

    # exemption through the page: the confirm page, then the form POST with the XSRF field
    s = hub.login("admin")
    expires = (date.today() + timedelta(days=7)).isoformat()
    query = {
        "user": "bob",
        "lifts": ["max_runtime"],
        "reason": "Demo: night run",
        "expires": expires,
    }
    r = s.get(f"{hub.url}/services/ds01-admin/confirm/exempt", params=query, timeout=60)
    assert r.status_code == 200, r.text
    xsrf = re.search(r'name="_xsrf" value="([^"]+)"', r.text).group(1)
    # without the XSRF field the POST is refused, and nothing is written
    r = s.post(f"{hub.url}/services/ds01-admin/confirm/exempt", data=query, timeout=60)
    assert r.status_code == 403
    assert "night run" not in limits_file.read_text()
    r = s.post(
        f"{hub.url}/services/ds01-admin/confirm/exempt", data={**query, "_xsrf": xsrf}, timeout=60
    )
    assert r.status_code == 200 and "written to the limits file" in r.text, r.text
    text = limits_file.read_text()
    assert text.startswith("# DS01 limits of the admin tests")  # comments kept
    assert '"6s"   # the culler warns, then retires' in text
    (ex,) = load_limits_file(limits_file).exemptions
    assert (ex.user, ex.lifts, ex.granted_by) == ("bob", ("max_runtime",), "admin")
    # a broken exemption is refused and the file is unchanged
    r = admin_api(
        hub, "POST", "api/actions/exempt", json={**query, "lifts": ["wings"], "expires": expires}
    )
    assert r.status_code == 400 and "wings" in r.json()["message"]
    assert limits_file.read_text() == text

    # reload: a good file, then a broken one (reported, the last good limits stay)
    r = admin_api(hub, "POST", "api/actions/reload-limits", json={})
    assert r.json()["ok"] is True
    limits_file.write_text(text + "users: [oops\n")
    r = admin_api(hub, "POST", "api/actions/reload-limits", json={})
    assert r.json()["ok"] is False and "limits file" in r.json()["message"]
    limits_file.write_text(text)


def test_every_audit_event_kind_is_written_by_a_real_action(hub, docker_client, limits_file):
    # refuse: capped may run one server
    hub.start_server("capped", "one", {"gpus": 0})
    r = hub.request_server("capped", "two", {"gpus": 0})
    assert r.status_code >= 400
    # warn and retire by the culler (idle), and a server that dies
    hub.start_server("idler", "nap", {"gpus": 1})
    hub.start_server("carol", "crash", {"gpus": 1})
    (victim,) = ds01_containers(docker_client, hub.prefix, user="carol")
    victim.kill()
    wait_for(lambda: hub.server_model("carol", "crash") is None, 60, "the dead server noticed")
    wait_for(lambda: hub.server_model("idler", "nap") is None, 60, "idler retired by the culler")
    # a limits reload seen by the hub: a changed file, then a launch
    limits_file.write_text(limits_file.read_text() + "# touched\n")
    hub.stop_server("capped", "one")
    hub.start_server("capped", "again", {"gpus": 0})
    hub.stop_server("bob", "eval")
    # build: a project image built from its Dockerfile, and one whose build fails
    for project, run in (("built", "true"), ("broken", "false")):
        folder = hub.workspaces / "dana" / project
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "Dockerfile").write_text(f"FROM ds01/base:latest\nRUN {run} # {TOKEN}\n")
    hub.start_server("dana", "built", {"gpus": 0}, timeout=240)
    r = hub.request_server("dana", "broken", {"gpus": 0})
    if r.status_code == 202:
        hub.follow_progress("dana", "broken", timeout=240)

    def kinds():
        return {e["event"] for e in audit(hub)}

    wanted = set(EVENTS)
    wait_for(lambda: wanted <= kinds(), 30, f"every event kind (missing {wanted - kinds()})")
    events = audit(hub)
    for e in events:
        assert validate_event(e) == [], (e, validate_event(e))
    retire = {(e["user"], e["server"]): e for e in events if e["event"] == "retire"}
    assert retire[("alice", "train")]["reason"] == "admin: admin"
    assert retire[("idler", "nap")]["reason"] == "culler: idle"
    assert retire[("carol", "crash")]["reason"] == "died"
    assert retire[("capped", "one")]["reason"] == "user"
    warn = [e for e in events if e["event"] == "warn"]
    assert warn and warn[0]["user"] == "idler"
    (refused,) = [e for e in events if e["event"] == "refuse"]
    assert (refused["user"], refused["kind"], refused["status"]) == ("capped", "limit", 429)
    admin = [e for e in events if e["event"] == "admin"]
    assert {e["action"] for e in admin} == {"retire", "exempt", "reload-limits"}
    assert all(e["actor"] == "admin" for e in admin)
    builds = {e["project"]: e for e in events if e["event"] == "build"}
    assert builds["built"]["ok"] is True and builds["broken"]["ok"] is False
    assert builds["built"]["image"].startswith(f"{hub.prefix}-dana/built:")
    starts = [e for e in events if e["event"] == "start"]
    assert all({"allocate", "start"} <= set(e["phases"]) for e in starts)
    alloc = {(e["user"], e["server"]) for e in events if e["event"] == "allocate"}
    release = {(e["user"], e["server"]) for e in events if e["event"] == "release"}
    assert {("alice", "train"), ("bob", "eval"), ("idler", "nap"), ("carol", "crash")} <= alloc
    assert alloc <= release
    # the hub's retirement counters saw the same reasons
    r = hub.session.get(
        f"{hub.url}/hub/metrics",
        headers={"Authorization": f"token {hub.user_token('admin')}"},
        timeout=30,
    )
    for reason in ("admin", "culler: idle", "died", "user"):
        assert metric(r.text, "ds01_retirements_total", reason=reason) >= 1, reason
    assert metric(r.text, "ds01_refusals_total", kind="limit") == 1.0
    assert metric(r.text, "ds01_image_builds_total", result="ok") == 1.0
    assert metric(r.text, "ds01_image_builds_total", result="failed") == 1.0
    assert metric(r.text, "ds01_spawn_phase_seconds_count", phase="build") == 1.0

"""The "DS01 session" panel in JupyterLab (issue 18), on a simulated-GPU server of a real hub.

The user opens JupyterLab, reads the status bar and the panel (figures from the hub side), the
admin lowers the idle timeout (the limits file reloads hot), the culler's warning shows as a
JupyterLab notification; "Keep running" keeps the server past the old deadline. A user who
ignores the warning sees the final notice and the server is retired. And a server's own token
cannot read anyone else's session data.
"""

from __future__ import annotations

import json
import os
import re
from datetime import timedelta

import pytest
import requests

from ds01spawner.culler.state import State
from ds01spawner.gpus.simulated import write_state

from ..integration.hub import ds01_containers, wait_for
from .test_spawn_form_browser import log_in

IDLE_S = 30  # the lowered idle timeout: warnings at 22.5 s and 27 s, time to click
IGNORED_S = 20  # where nobody clicks (JupyterLab must load before the warnings)
LIMITS = """
defaults:
  max_gpu_equivalents: null
  max_gpus_per_server: null
  allow_full_gpu: true
  max_servers: 3
  cpus: null
  memory: null
  shm_size: null
  pids_limit: null
  idle_timeout: "{idle}"
  max_runtime: "2h"
"""


@pytest.fixture(scope="module")
def hub(hub_factory, tmp_path_factory):
    limits = tmp_path_factory.mktemp("session-limits") / "limits.yaml"
    limits.write_text(LIMITS.format(idle="1h"))
    env = {
        "DS01_TEST_LIMITS": str(limits),
        "DS01_TEST_CULLER": json.dumps({"cull_every": 1, "gpu_window": 2}),
        "DS01_TEST_SESSION_POLL": "1",
    }
    if os.environ.get("DS01_TEST_IMAGE"):
        env["DS01_TEST_IMAGE"] = os.environ["DS01_TEST_IMAGE"]
    h = hub_factory(env)
    h.limits_path = limits
    return h


def record(hub, key):
    return State.load(str(hub.state_dir / "culler-state.json")).servers.get(key)


def open_lab(page, hub, user, server):
    log_in(page, hub, user)
    page.goto(f"{hub.url}/user/{user}/{server}/lab")
    status = page.locator(".ds01-session-status")
    status.wait_for(timeout=60_000)
    return status


def keep_active(hub, docker_client, user, server):
    """What "Keep running" does, asked with the server's own token: idle since now."""
    token = server_token(docker_client, hub, user, server)
    r = requests.post(
        f"http://127.0.0.1:{hub.port + 2}/services/ds01-limits/api/session/{server}/keep-running",
        headers={"Authorization": f"token {token}"},
        timeout=30,
    )
    assert r.status_code == 200, r.text


def server_token(docker_client, hub, user, server) -> str:
    (c,) = ds01_containers(docker_client, hub.prefix, user=user, project=server)
    env = dict(e.split("=", 1) for e in c.attrs["Config"]["Env"])
    return env["JUPYTERHUB_API_TOKEN"]


def toast(page, text):
    return page.locator(".Toastify__toast", has_text=text)


def test_panel_shows_the_session_and_keep_running_outlives_the_old_deadline(
    page, hub, docker_client, screenshot
):
    hub.start_server("alice", "thesis", {"gpus": 1})
    (c,) = ds01_containers(docker_client, hub.prefix, user="alice")
    uuid = c.labels["ds01.gpus"]
    write_state(
        str(hub.state_dir / "gpus.json"), {uuid: {"utilization_pct": 37, "memory_used_mib": 5120}}
    )
    status = open_lab(page, hub, "alice", "thesis")
    wait_for(lambda: "GPU 5.0/40.0 GiB" in status.inner_text(), 30, "GPU memory in the status bar")
    assert status.inner_text().startswith("DS01 thesis")
    status.click()
    panel = page.locator("#ds01-session-panel")
    wait_for(lambda: "37% busy" in panel.inner_text(), 30, "the panel's GPU utilization")
    text = panel.inner_text()
    assert "NVIDIA A100-SXM4-40GB" in text and "5.0 / 40.0 GiB" in text
    assert re.search(r"Runtime left\s+(2 h|11\d min) of 2 h", text), text
    assert "Active now\tcpu, gpu" in text or "Active now\tgpu" in text  # 37 % busy
    assert "Free now\t3 GPUs" in text or "3 GPUs, 0 MIG slices" in text
    screenshot(page, "session-panel")

    # alice's GPU goes quiet; the admin lowers the idle timeout; alice has just been active
    write_state(str(hub.state_dir / "gpus.json"), {uuid: {"utilization_pct": 0}})
    keep_active(hub, docker_client, "alice", "thesis")
    hub.limits_path.write_text(LIMITS.format(idle=f"{IDLE_S}s"))
    warning = toast(page, "unless it is used.")
    warning.first.wait_for(timeout=(IDLE_S + 10) * 1000)
    old = record(hub, "alice/thesis")
    assert old.warnings and old.warnings[0].reason == "idle"
    old_deadline = old.warnings[0].deadline
    keep = warning.first.get_by_role("button", name="Keep running")
    wait_for(  # the toast has slid in: a picture of it whole
        lambda: (b := warning.first.bounding_box()) is not None and b["x"] + b["width"] < 1275,
        10,
        "the notification in view",
    )
    screenshot(page, "session-notification")
    keep.click()
    toast(page, "counts as active now").first.wait_for(timeout=10_000)
    assert "keep-running: user=alice server=thesis activity recorded" in hub.log_tail(400)

    # past the old deadline (and two culler cycles): still there, warnings cleared
    wait_for(
        lambda: (
            (r := record(hub, "alice/thesis")) and r.checked > old_deadline + timedelta(seconds=2)
        ),
        IDLE_S,
        "a culler cycle after the old deadline",
    )
    assert hub.server_model("alice", "thesis") is not None
    r = record(hub, "alice/thesis")
    assert r.idle_since > old.idle_since and r.idle_deadline > old_deadline
    assert all(w.since == r.idle_since for w in r.warnings)  # the old stretch's are gone

    # the next warning, and the same action on the hub's home page
    wait_for(lambda: record(hub, "alice/thesis").warnings, IDLE_S + 5, "the next warning")
    before = record(hub, "alice/thesis")
    home = page.context.new_page()
    home.goto(f"{hub.url}/hub/home")
    row = home.locator('tr[data-project="thesis"]')
    assert "unless it is used" in row.locator(".ds01-warning").first.inner_text()
    row.get_by_role("button", name="Keep the server of thesis running").click()
    status = home.locator("#ds01-retire-status")
    wait_for(lambda: "counts as active now" in status.inner_text(), 10, "the home page's answer")
    wait_for(
        lambda: record(hub, "alice/thesis").idle_since > before.idle_since,
        10,
        "the culler to see the activity",
    )
    assert hub.server_model("alice", "thesis") is not None
    hub.stop_server("alice", "thesis")


def test_an_ignored_warning_ends_in_the_final_notice_and_retirement(page, hub, docker_client):
    hub.limits_path.write_text(LIMITS.format(idle=f"{IGNORED_S}s"))
    hub.start_server("bob", "ignored", {"gpus": 0})
    open_lab(page, hub, "bob", "ignored")
    toast(page, "unless it is used.").first.wait_for(timeout=(IGNORED_S + 15) * 1000)
    toast(page, "is retired in about").first.wait_for(timeout=IGNORED_S * 1000)
    wait_for(lambda: hub.server_model("bob", "ignored") is None, IGNORED_S, "bob's server retired")
    assert ds01_containers(docker_client, hub.prefix, user="bob") == []
    log = hub.log_tail(3000)
    assert "culler event: retired user=bob server=ignored reason=idle" in log


def test_a_server_token_reads_only_its_owners_session(hub, docker_client):
    hub.start_server("carol", "mine", {"gpus": 1})
    hub.start_server("dave", "theirs", {"gpus": 1})
    token = server_token(docker_client, hub, "carol", "mine")
    base = f"http://127.0.0.1:{hub.port + 2}/services/ds01-limits/api"
    auth = {"Authorization": f"token {token}"}
    own = requests.get(f"{base}/session/mine", headers=auth, timeout=30)
    assert own.status_code == 200 and own.json()["user"] == "carol"
    assert own.json()["gpus"][0]["uuid"]
    # dave's server name: answered about carol (who has no such server), never about dave
    other = requests.get(f"{base}/session/theirs", headers=auth, timeout=30).json()
    assert other["user"] == "carol" and other["running"] is False and other["gpus"] == []
    assert "dave" not in json.dumps(other)
    # no way to name another user, nor to keep their server alive
    assert requests.get(f"{base}/limits?user=dave", headers=auth, timeout=30).status_code == 403
    r = requests.post(f"{base}/session/theirs/keep-running", headers=auth, timeout=30)
    assert r.status_code == 404
    # the token reaches neither the hub's view of dave nor dave's server
    assert hub.api("GET", "/users/dave", token=token).status_code in (403, 404)
    dave = requests.get(f"{hub.url}/user/dave/theirs/api/status", headers=auth, timeout=30)
    assert dave.status_code in (302, 403, 404)
    for user, server in (("carol", "mine"), ("dave", "theirs")):
        hub.stop_server(user, server)

"""The fair GPU queue on a real hub with 4 simulated GPUs: launches wait with their place in
line shown, a retire serves the first in line, cancelling moves the others up, a waiter that
runs out of time is told how long it waited, a hub restart leaves nothing half-allocated."""

from __future__ import annotations

import json
import signal
import time

import pytest

from ds01spawner.gpus.queue import ordinal

from .hub import ds01_containers, wait_for

ONE = {"gpus": 1, "gpu_type": "full"}


def progress_until(hub, user: str, server: str, text: str, timeout: float = 60) -> dict:
    """Read the server's progress stream until an event's message contains ``text``."""
    r = hub.api("GET", f"/users/{user}/servers/{server}/progress", stream=True, timeout=timeout)
    assert r.status_code == 200, r.text
    deadline = time.monotonic() + timeout
    try:
        for line in r.iter_lines(decode_unicode=True):
            if time.monotonic() > deadline:
                break
            if not line or not line.startswith("data:"):
                continue
            event = json.loads(line[5:])
            if text in event.get("message", ""):
                return event
            if event.get("ready") or event.get("failed"):
                pytest.fail(f"{user}/{server} finished before '{text}': {event}")
    finally:
        r.close()
    pytest.fail(f"no progress event of {user}/{server} said '{text}' within {timeout}s")


def queue_api(hub, user: str) -> dict:
    r = hub.session.get(
        f"{hub.url}/services/ds01-limits/api/queue",
        headers={"Authorization": f"token {hub.user_token(user)}"},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    return r.json()


def gpus_of(docker_client, hub, user: str) -> str:
    (container,) = ds01_containers(docker_client, hub.prefix, user=user)
    return container.labels["ds01.gpus"]


@pytest.fixture(scope="module")
def hub(hub_factory):
    return hub_factory({"DS01_TEST_GPU_QUEUE": "300"})


def test_wait_in_line_get_served_cancel_and_restart(hub, docker_client):
    runners = [f"run{i}" for i in range(4)]
    waiters = [f"wait{i}" for i in range(1, 5)]
    for user in runners:
        hub.start_server(user, "p", ONE)
    for i, user in enumerate(waiters, 1):
        r = hub.request_server(user, "p", ONE)
        assert r.status_code == 202, r.text
        event = progress_until(hub, user, "p", "in line")
        assert event["message"] == (
            f"Waiting for a GPU: {ordinal(i)} in line (4 of 4 simulated GPUs busy)"
        )
    assert len(ds01_containers(docker_client, hub.prefix)) == 4  # nobody waiting holds one

    everyone = queue_api(hub, "admin")
    assert [(w["user"], w["position"], w["gpus"]) for w in everyone["waiting"]] == [
        (u, i, 1) for i, u in enumerate(waiters, 1)
    ]
    mine = queue_api(hub, "wait3")
    assert mine["waiting_total"] == 4 and [w["user"] for w in mine["waiting"]] == ["wait3"]

    # a retire serves the first in line with the device it freed
    freed = gpus_of(docker_client, hub, "run0")
    started = time.monotonic()
    hub.stop_server("run0", "p")
    last = hub.follow_progress("wait1", "p")
    served_after = time.monotonic() - started
    assert last.get("ready"), last
    assert gpus_of(docker_client, hub, "wait1") == freed
    progress_until(hub, "wait2", "p", "Waiting for a GPU: 1st in line")
    print(f"first waiter ready {served_after:.2f} s after the retire was requested")

    # cancelling a waiter (Stop on the progress page = DELETE) moves the ones behind it up
    r = hub.api("DELETE", "/users/wait3/servers/p")
    assert r.status_code in (202, 204), r.text
    wait_for(lambda: hub.server_model("wait3", "p") is None, 30, "wait3 to leave")
    progress_until(hub, "wait4", "p", "Waiting for a GPU: 2nd in line")
    assert [w["user"] for w in queue_api(hub, "admin")["waiting"]] == ["wait2", "wait4"]
    assert ds01_containers(docker_client, hub.prefix, user="wait3") == []

    # a hub restart ends the waiting launches cleanly; running servers stay
    hub.signal(signal.SIGTERM)
    hub.start()
    wait_for(
        lambda: hub.server_model("wait2", "p") is None and hub.server_model("wait4", "p") is None,
        60,
        "the waiting launches to be gone after the restart",
    )
    assert queue_api(hub, "admin")["waiting"] == []
    holders = sorted(c.labels["ds01.user"] for c in ds01_containers(docker_client, hub.prefix))
    assert holders == ["run1", "run2", "run3", "wait1"]
    # and the next retire still serves a new launch
    hub.stop_server("run1", "p")
    assert hub.start_server("wait2", "p", ONE)["ready"]
    for user in ("run2", "run3", "wait1", "wait2"):
        hub.stop_server(user, "p")


def test_a_waiter_that_runs_out_of_time_is_told(hub_factory, docker_client):
    short = hub_factory({"DS01_TEST_GPU_QUEUE": "3"})
    for i in range(4):
        short.start_server(f"full{i}", "p", ONE)
    r = short.request_server("late", "p", ONE)
    # the hub answers a launch that fails within its first 10 s (slow_spawn_timeout) directly
    if r.status_code == 202:
        message = short.follow_progress("late", "p", timeout=60)["message"]
    else:
        assert r.status_code == 429, r.text
        message = r.json()["message"]
    assert "No GPU became free in 0 min 03 s of waiting" in message
    assert "you were 1st in line" in message
    assert short.server_model("late", "p") is None
    assert ds01_containers(docker_client, short.prefix, user="late") == []


def test_without_a_queue_a_full_server_refuses_at_once(hub_factory):
    plain = hub_factory({"DS01_TEST_GPUS": json.dumps([{"name": "A100", "memory_mib": 40960}])})
    plain.start_server("only", "p", ONE)
    r = plain.request_server("second", "p", ONE)
    assert r.status_code == 429, r.text
    assert "All 1 simulated GPU" in r.json()["message"] or "in use" in r.json()["message"]

"""Only launches the user's limits allow may wait for a GPU (issue 15 item 1), and launches
that wait or build count toward the user's servers (issue 14 finding 4): one hub with the GPU
queue on, 3 simulated GPUs and a small limits file."""

from __future__ import annotations

import json
import time

import pytest

from .hub import ds01_containers, wait_for
from .test_gpu_queue import progress_until, queue_api

ONE = {"gpus": 1, "gpu_type": "full"}
# a short file: the limits left out take their built-in values (issue 15 item 14)
LIMITS = """
defaults:
  max_gpu_equivalents: 1
  max_gpus_per_server: 2
  max_servers: 1
users:
  holder:
    max_servers: 3
  bob:
    max_servers: 3
"""
FLOOD = 6  # launches beyond max_servers, each refused at once


@pytest.fixture(scope="module")
def hub(hub_factory, tmp_path_factory):
    limits = tmp_path_factory.mktemp("limits") / "limits.yaml"
    limits.write_text(LIMITS)
    a100 = {"name": "NVIDIA A100-SXM4-40GB", "memory_mib": 40960}
    return hub_factory(
        {
            "DS01_TEST_LIMITS": str(limits),
            "DS01_TEST_GPUS": json.dumps([a100] * 3),
            "DS01_TEST_GPU_QUEUE": "120",
        }
    )


def test_a_short_limits_file_starts_the_hub_with_built_in_values(hub):
    assert "leaves out defaults; built-in values apply: allow_full_gpu=yes, cpus=unlimited" in (
        hub.log_path.read_text()
    )
    token = hub.user_token("carol")

    def limits():  # the service may still be starting right after the hub answers
        r = hub.session.get(
            f"{hub.url}/services/ds01-limits/api/limits",
            headers={"Authorization": f"token {token}"},
            timeout=30,
        )
        return r.json() if r.status_code == 200 else None

    body = wait_for(limits, 30, "ds01-limits to answer")
    assert body["limits"]["max_runtime"] == 24 and body["limits"]["max_servers"] == 1
    assert body["sources"]["max_runtime"] == "built-in default"
    assert body["sources"]["max_servers"] == "defaults"


def test_a_request_over_the_limits_is_refused_at_once_and_keeps_no_gpu(hub, docker_client):
    hub.start_server("holder", "a", ONE)
    hub.start_server("bob", "big", ONE)  # bob: 1.0 of his 1.0 GPUs; one GPU still free
    began = time.monotonic()
    r = hub.request_server("bob", "more", {"gpus": 2, "gpu_type": "full"})
    assert r.status_code == 429, r.text  # not 202 "Waiting for a GPU: 1st in line"
    assert r.json()["message"] == (
        "You are using 1.0 of your 1.0 GPUs (projects: big), and this launch needs 2.0 more. "
        "Retire one or ask an admin for more."
    )
    print(f"over-limit launch refused in {time.monotonic() - began:.2f} s")
    assert queue_api(hub, "admin")["waiting"] == []
    # the free GPU goes to the next request at once
    assert hub.start_server("admin", "free", ONE)["ready"]
    assert not (hub.workspaces / "bob" / "more").exists()


def test_a_flood_of_launches_beyond_max_servers_is_refused_at_once(hub, docker_client):
    # all 3 GPUs are held (holder, bob, admin): carol's launch waits in line
    r = hub.request_server("carol", "waits", ONE)
    assert r.status_code == 202, r.text
    progress_until(hub, "carol", "waits", "in line")
    sentence = (
        "You are running or starting 1 of your 1 servers (projects: waits (starting)). "
        "Retire one or ask an admin for more."
    )
    began = time.monotonic()
    for i in range(FLOOD):
        r = hub.request_server("carol", f"flood{i}", {"gpus": 0})
        assert r.status_code == 429, r.text
        assert r.json()["message"] == sentence
    took = time.monotonic() - began
    print(f"{FLOOD} launches beyond max_servers refused in {took:.2f} s")
    assert [w["user"] for w in queue_api(hub, "admin")["waiting"]] == ["carol"]
    assert not any((hub.workspaces / "carol" / f"flood{i}").exists() for i in range(FLOOD))
    assert ds01_containers(docker_client, hub.prefix, user="carol") == []
    # once the waiting launch is stopped, carol may launch again
    r = hub.api("DELETE", "/users/carol/servers/waits")
    assert r.status_code in (202, 204), r.text
    wait_for(lambda: hub.server_model("carol", "waits") is None, 30, "carol's launch to stop")
    assert hub.start_server("carol", "flood0", {"gpus": 0})["ready"]

"""Containers that die: killed by hand, crashing while starting, or left over from a lost hub.
Each ends with the container gone, the workspace intact and the project launchable again."""

import json

import pytest

from .hub import ds01_containers, wait_for


def put_marker(hub, user, project, text="keep me"):
    path = hub.workspaces / user / project / "marker.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_killed_container_is_noticed_and_cleaned_up(hub, docker_client):
    hub.start_server("alice", "victim")
    marker = put_marker(hub, "alice", "victim")
    (c,) = ds01_containers(docker_client, hub.prefix, user="alice")
    c.kill()
    wait_for(lambda: hub.server_model("alice", "victim") is None, 30, "the hub to notice the kill")
    wait_for(
        lambda: ds01_containers(docker_client, hub.prefix, user="alice") == [],
        30,
        "the dead container to be removed",
    )
    assert "exited with code 137" in hub.log_tail(300)
    assert marker.read_text() == "keep me"
    hub.start_server("alice", "victim")
    token = hub.user_token("alice")
    r = hub.server_api("GET", "alice", "victim", "/contents/marker.txt", token)
    assert r.json()["content"] == "keep me"
    hub.stop_server("alice", "victim")


def test_leftover_container_with_the_same_name_is_replaced(hub, docker_client):
    name = f"{hub.prefix}-bob.leftover"
    docker_client.containers.run(
        "ds01/base:latest",
        ["sleep", "600"],
        name=name,
        detach=True,
        user="1000:100",
        labels={"ds01.managed": "true", "ds01.user": "bob"},
    )
    hub.start_server("bob", "leftover")
    (c,) = ds01_containers(docker_client, hub.prefix, user="bob")
    assert c.name == name and c.labels.get("ds01.project") == "leftover"
    hub.stop_server("bob", "leftover")


@pytest.fixture(scope="module")
def broken_hub(hub_factory):
    cmd = ["sh", "-c", "echo boom-marker-output >&2; exit 3"]
    one_gpu = [{"name": "NVIDIA A100-SXM4-40GB", "memory_mib": 40960}]
    return hub_factory(
        {
            "DS01_TEST_CMD": json.dumps(cmd),
            "DS01_TEST_GPUS": json.dumps(one_gpu),
            "DS01_TEST_DEFAULT_GPUS": "1",
        }
    )


def crash_message(hub, user, server) -> str:
    r = hub.request_server(user, server)
    if r.status_code == 202:  # slower than slow_spawn_timeout: read the outcome from progress
        last = hub.follow_progress(user, server)
        assert last.get("failed"), last
        return last["message"]
    assert r.status_code == 500, r.text
    return r.json()["message"]


def test_server_crashing_while_starting_fails_fast_with_its_output(broken_hub, docker_client):
    hub = broken_hub
    marker = put_marker(hub, "carol", "crashy")
    message = crash_message(hub, "carol", "crashy")
    assert "stopped while starting (exit code 3)" in message
    assert "boom-marker-output" in message and "files are safe" in message
    assert ds01_containers(docker_client, hub.prefix, user="carol") == []
    assert marker.read_text() == "keep me"
    wait_for(lambda: hub.server_model("carol", "crashy") is None, 30, "the failed server cleared")
    # the only GPU went back with the container: the next launch gets it (and crashes), no 429
    assert "stopped while starting" in crash_message(hub, "dave", "crashy")

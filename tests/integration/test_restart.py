"""Servers outlive the hub: after SIGTERM or SIGKILL of the hub, a new hub finds them running."""

import signal

import pytest

from .hub import ds01_containers

SERVERS = [("alice", "long-run"), ("bob", "training")]


def reachable(hub, user, project) -> bool:
    r = hub.server_api("GET", user, project, "/status", hub.user_token(user))
    return r.status_code == 200


@pytest.fixture(scope="module")
def running(hub):
    for user, project in SERVERS:
        hub.start_server(user, project)
    return hub


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_servers_survive_a_hub_restart(running, docker_client, sig):
    hub = running
    before = {c.name: c.id for c in ds01_containers(docker_client, hub.prefix)}
    assert len(before) == 2
    hub.signal(sig)
    hub.start()
    after = {c.name: c.id for c in ds01_containers(docker_client, hub.prefix)}
    assert after == before  # same containers, none added, none removed
    assert all(c.status == "running" for c in ds01_containers(docker_client, hub.prefix))
    for user, project in SERVERS:
        model = hub.server_model(user, project)
        assert model is not None and model["ready"], model
        assert reachable(hub, user, project)


def test_retire_after_restarts_removes_the_containers(running, docker_client):
    hub = running
    for user, project in SERVERS:
        hub.stop_server(user, project)
    assert ds01_containers(docker_client, hub.prefix) == []
    # and a new launch after all this gets a fresh container on a free port
    hub.start_server("alice", "long-run")
    assert reachable(hub, "alice", "long-run")
    hub.stop_server("alice", "long-run")

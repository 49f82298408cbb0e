"""Servers outlive the hub: after SIGTERM or SIGKILL of the hub, a new hub finds them running."""

import signal
import socket
import time

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


def test_sigterm_ends_the_hub_and_its_services_within_seconds(hub_factory):
    """Started as a background job of a script (SIGINT ignored, as demo.sh & does), the hub
    still ends with its services within a few seconds of SIGTERM, without a traceback."""
    hub = hub_factory({"DS01_TEST_IGNORE_SIGINT": "1"})
    services = [hub.port + 2, hub.port + 3]  # ds01-limits, ds01-admin (configure_services)
    for port in services:
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    began = time.monotonic()
    hub.signal(signal.SIGTERM, timeout=60)
    took = time.monotonic() - began
    print(f"hub and services ended {took:.1f} s after SIGTERM")
    assert took < 10, hub.log_tail()
    assert "Traceback" not in hub.log_path.read_text(), hub.log_tail(80)
    for port in services:
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=2).close()

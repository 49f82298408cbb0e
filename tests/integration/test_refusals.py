"""Hostile project names, links out of the workspace and a dead Docker engine get clear refusals,
and leave no folder, container or half-started server behind."""

import os

import pytest

from .hub import ds01_containers, wait_for

HOSTILE = [
    "..",
    "../x",
    "/etc",
    "a/b",
    "",
    "x" * 31,
    "MyThesis",
    "a--b",
    "my thesis",
    " lead",
    "tab\there",
    "a\x00b",
    "thеsis",  # Cyrillic 'е'
    "ｍｙ-thesis",
    "-lead",
    "trail-",
    "1st",
    "a_b",
    "a.b",
    ".",
    "$(id)",
    "café",
]


@pytest.mark.parametrize("index", range(len(HOSTILE)))
def test_hostile_project_option_is_refused_with_400(hub, docker_client, index):
    name = HOSTILE[index]
    user = f"hostile{index}"
    r = hub.request_server(user, "", {"project": name})
    assert r.status_code == 400, r.text
    message = r.json()["message"]
    assert "lowercase letters a-z" in message and "for example 'my-thesis'" in message
    assert not (hub.workspaces / user).exists() or list((hub.workspaces / user).iterdir()) == []
    assert ds01_containers(docker_client, hub.prefix, user=user) == []
    wait_for(lambda: hub.server_model(user, "") is None, 30, "the failed server to be cleared")


URL_NAMES = ["MyThesis", "a--b", "x" * 31, "-lead", "trail-", "a_b", "a.b", "caf%C3%A9", "1st"]


@pytest.mark.parametrize("name", URL_NAMES)
def test_hostile_named_server_is_refused_by_the_hub(hub, docker_client, name):
    r = hub.request_server("urluser", name)
    assert r.status_code == 400, r.text
    assert not (hub.workspaces / "urluser").exists()
    assert ds01_containers(docker_client, hub.prefix, user="urluser") == []


def test_project_linked_out_of_the_workspace_is_refused(hub, docker_client, tmp_path):
    outside = tmp_path / "somebody-elses-files"
    outside.mkdir()
    (outside / "secret.txt").write_text("not yours")
    root = hub.workspaces / "mallory"
    root.mkdir(parents=True)
    (root / "evil").symlink_to(outside)
    r = hub.request_server("mallory", "evil")
    assert r.status_code == 400, r.text
    assert "is a link to another place" in r.json()["message"]
    assert ds01_containers(docker_client, hub.prefix, user="mallory") == []
    assert sorted(os.listdir(outside)) == ["secret.txt"]
    assert f"is a symlink to {outside}" in hub.log_tail(200)  # the admin's line names the target


def test_dead_docker_engine_gives_a_clear_error_and_the_hub_keeps_serving(hub_factory, tmp_path):
    dead = hub_factory({"DS01_DOCKER_HOST": f"unix://{tmp_path}/no-engine.sock"})
    r = dead.request_server("alice", "thesis")
    assert r.status_code == 503, r.text
    assert "container engine" in r.json()["message"] and "files are safe" in r.json()["message"]
    assert "Docker engine error" in dead.log_tail(200)
    assert dead.api("GET", "/").status_code == 200
    assert dead.api("GET", "/users/alice").status_code == 200
    wait_for(lambda: dead.server_model("alice", "thesis") is None, 30, "the failed server cleared")
    # a second try is refused the same way, not stuck as "pending"
    assert dead.request_server("alice", "thesis").status_code == 503
    # the check-limits service stays up (its death would stop the hub) and says what is wrong
    token = dead.user_token("alice")
    r = dead.session.get(
        f"{dead.url}/services/ds01-limits/api/limits",
        headers={"Authorization": f"token {token}"},
        timeout=30,
    )
    assert r.status_code == 503 and "container engine" in r.json()["message"]
    assert dead.api("GET", "/").status_code == 200


def test_a_broken_gpu_configuration_stops_the_hub_with_one_clear_line(tmp_path):
    import json

    from .hub import Hub

    hub = Hub(tmp_path, "ds01tbroken", {"DS01_TEST_GPUS": json.dumps([{"name": "A100"}])})
    with pytest.raises(AssertionError, match="hub exited"):
        hub.start(timeout=60)
    assert "DS01: the GPU inventory 'simulated' cannot start" in hub.log_tail(20)
    hub.shutdown()

"""Limits from the shipped example file, enforced at spawn on a real hub, visible as JSON."""

import pytest

from .hub import ds01_containers

# docs/limits.example.yaml with the demo's groups (jupyterhub_config.py's load_groups):
# alice: students (1 server, 0.5 GPU-equivalents, MIG slices only);
# bob: students + researchers (4 servers, 2 GPUs, 2 per server, whole GPUs, 16 cpus, 96G: override)
A100 = {"name": "NVIDIA A100-SXM4-40GB", "memory_mib": 40960}
MIG_A100 = {**A100, "mig_profiles": ["3g.20gb", "2g.10gb", "2g.10gb"]}


@pytest.fixture(scope="module")
def hub(hub_factory):
    import json

    from .hub import REPO

    return hub_factory(
        {
            "DS01_TEST_LIMITS": str(REPO / "docs" / "limits.example.yaml"),
            "DS01_TEST_GPUS": json.dumps([A100, A100, A100, MIG_A100]),
        }
    )


def message(r):
    return r.json()["message"]


def test_a_user_at_their_gpu_limit_is_refused_with_the_sentence(hub):
    hub.start_server("bob", "big", {"gpus": 2, "gpu_type": "full"})
    r = hub.request_server("bob", "more", {"gpus": 1})
    assert r.status_code == 429
    assert message(r).startswith("You are using 2.0 of your 2.0 GPUs (projects: big)")
    assert "Retire one or ask an admin for more." in message(r)
    hub.stop_server("bob", "big")


def test_per_server_and_whole_gpu_rules(hub):
    r = hub.request_server("bob", "three", {"gpus": 3})
    assert r.status_code == 403 and "your limit is 2 per server" in message(r)
    r = hub.request_server("alice", "whole", {"gpus": 1, "gpu_type": "full"})
    assert r.status_code == 403 and "not whole GPUs" in message(r)
    r = hub.request_server("bob", "eight", {"gpus": 8})  # more than this server has at all
    assert r.status_code == 400 and "you asked for 8" in message(r)


def test_any_means_a_mig_slice_for_someone_without_whole_gpus(hub, docker_client):
    hub.start_server("alice", "slice", {"gpus": 1})
    (c,) = ds01_containers(docker_client, hub.prefix, user="alice")
    assert c.labels["ds01.gpus"].startswith("MIG-")
    assert float(c.labels["ds01.gpu_equivalents"]) <= 0.5
    r = hub.request_server("alice", "second", {"gpus": 0})
    assert r.status_code == 429
    assert message(r) == (
        "You are running 1 of your 1 servers (projects: slice). Retire one or ask an admin for "
        "more."
    )
    hub.stop_server("alice", "slice")


def test_cpu_memory_shm_and_pids_limits_reach_the_container(hub, docker_client):
    hub.start_server("bob", "sized", {"gpus": 0})
    (c,) = ds01_containers(docker_client, hub.prefix, user="bob")
    host = c.attrs["HostConfig"]
    assert host["CpuQuota"] == 16 * host["CpuPeriod"]  # researchers: 16 cpus
    assert host["Memory"] == 96 * 2**30  # users.bob: 96G
    assert host["ShmSize"] == 32 * 2**30  # researchers: 32G
    assert host["PidsLimit"] == 4096  # defaults
    hub.stop_server("bob", "sized")


def test_check_limits_endpoint_shows_limits_sources_and_use(hub):
    hub.start_server("bob", "watched", {"gpus": 1, "gpu_type": "full"})
    url = f"{hub.url}/services/ds01-limits/api/limits"
    bob = hub.user_token("bob")
    r = hub.session.get(url, headers={"Authorization": f"token {bob}"}, timeout=30)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["user"] == "bob" and body["groups"] == ["researchers", "students"]
    assert body["limits"]["max_gpu_equivalents"] == 2 and body["shown"]["memory"] == "96G"
    assert body["sources"]["memory"] == "user bob"
    assert body["sources"]["max_servers"] == "group researchers"
    assert body["usage"]["servers"] == 1 and body["usage"]["gpu_equivalents"] == 1.0
    assert body["usage"]["projects"][0]["project"] == "watched"
    # someone else's limits: admins only
    alice = hub.user_token("alice")
    r = hub.session.get(url, params={"user": "bob"}, headers={"Authorization": f"token {alice}"})
    assert r.status_code == 403 and "Only hub admins" in r.json()["message"]
    admin = hub.user_token("admin")
    r = hub.session.get(url, params={"user": "bob"}, headers={"Authorization": f"token {admin}"})
    assert r.status_code == 200 and r.json()["usage"]["servers"] == 1
    r = hub.session.get(url, allow_redirects=False, timeout=30)  # no token, no cookie
    assert r.status_code in (302, 403)
    hub.stop_server("bob", "watched")


def test_a_broken_edit_keeps_the_last_good_limits(hub_factory, tmp_path):
    from .hub import REPO

    limits = tmp_path / "limits.yaml"
    limits.write_text((REPO / "docs" / "limits.example.yaml").read_text())
    hub = hub_factory({"DS01_TEST_LIMITS": str(limits)})
    limits.write_text(limits.read_text().replace("max_servers: 1", "max_servers: one"))
    hub.start_server("alice", "first", {"gpus": 0})
    r = hub.request_server("alice", "second", {"gpus": 0})
    assert r.status_code == 429  # still 1 server for students: the last good file
    assert "cannot be used" in hub.log_tail(200) and "max_servers" in hub.log_tail(200)
    limits.write_text(limits.read_text().replace("max_servers: one", "max_servers: 2"))
    hub.start_server("alice", "third", {"gpus": 0})  # the fixed file is in force
    hub.stop_server("alice", "first")
    hub.stop_server("alice", "third")


def test_a_broken_limits_file_stops_the_hub(tmp_path):
    from .hub import Hub, HubExited

    bad = tmp_path / "limits.yaml"
    bad.write_text("defaults:\n  memory: 12 parsecs\n")
    hub = Hub(tmp_path, "ds01tbadlimits", {"DS01_TEST_LIMITS": str(bad)})
    with pytest.raises(HubExited):
        hub.start(timeout=60)
    tail = hub.log_tail(20)
    assert "DS01: the limits file cannot be used" in tail and "line 2" in tail
    hub.shutdown()

"""GPU assignment on a real hub with a simulated inventory, and the GPU request on a real engine."""

import json
import signal
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone

import pytest

from ds01spawner.gpus.simulated import SimulatedInventory, write_state
from ds01spawner.projects.names import hub_id
from ds01spawner.spawner.container_spec import ServerSpec, build_container_spec

from .hub import ds01_containers, wait_for

A100 = {"name": "NVIDIA A100-SXM4-40GB", "memory_mib": 40960}


def gpu_hub(hub_factory, spec):
    return hub_factory({"DS01_TEST_GPUS": json.dumps(spec)})


def uuids_of(spec) -> list[str]:
    return [d.uuid for d in SimulatedInventory(spec).devices()]


def env_of(container) -> dict:
    return dict(e.split("=", 1) for e in container.attrs["Config"]["Env"])


def held(client, hub) -> dict[str, str]:
    """uuid -> user, from the labels of the hub's containers that hold devices (not exited)."""
    out = {}
    for c in ds01_containers(client, hub.prefix):
        if c.status in ("exited", "dead", "removing"):  # no process left to use a device
            continue
        for uuid in filter(None, c.labels.get("ds01.gpus", "").split(",")):
            assert uuid not in out, f"{uuid} held twice"
            out[uuid] = c.labels["ds01.user"]
    return out


def launch(hub, user, server, gpus=1, gpu_type="any"):
    return hub.request_server(user, server, {"gpus": gpus, "gpu_type": gpu_type})


def settle(hub, user, server, response) -> bool:
    """True when the launch ended with a ready server, False when it was refused."""
    if response.status_code == 201:
        return True
    if response.status_code == 202:
        last = hub.follow_progress(user, server)
        assert last.get("ready"), last
        return True
    assert response.status_code == 429, response.text
    assert "simulated GPUs are in use" in response.json()["message"], response.text
    return False


def test_the_gpu_request_is_accepted_by_a_real_engine(docker_client):
    spec = ServerSpec(
        name="ds01t-gpu-request.check",
        image="ds01/base:latest",
        command=["true"],
        env={},
        username="u",
        project="p",
        server_name="p",
        uid=1000,
        gid=100,
        project_dir="/tmp",
        home="/home/u",
        created_at=datetime.now(timezone.utc),
        gpu_uuids=("GPU-aaaa", "MIG-bbbb"),
        gpu_equivalents=1.43,
    )
    create, host = build_container_spec(spec)
    api = docker_client.api
    container = api.create_container(host_config=api.create_host_config(**host), **create)
    try:
        inspected = api.inspect_container(container["Id"])
        (request,) = inspected["HostConfig"]["DeviceRequests"]
        assert request["Driver"] == "nvidia" and request["DeviceIDs"] == ["GPU-aaaa", "MIG-bbbb"]
        assert request["Capabilities"] == [["gpu"]]
        env = dict(e.split("=", 1) for e in inspected["Config"]["Env"])
        assert env["NVIDIA_VISIBLE_DEVICES"] == env["CUDA_VISIBLE_DEVICES"] == "GPU-aaaa,MIG-bbbb"
        assert inspected["Config"]["Labels"]["ds01.gpus"] == "GPU-aaaa,MIG-bbbb"
    finally:
        api.remove_container(container["Id"], force=True)


def test_gpu_server_gets_its_device_in_env_and_labels(hub_factory, docker_client):
    spec = [A100, {**A100, "mig_profiles": ["3g.20gb", "2g.10gb", "2g.10gb"]}]
    hub = gpu_hub(hub_factory, spec)
    hub.start_server("alice", "mig-job", {"gpus": 1, "gpu_type": "3g.20gb"})
    hub.start_server("bob", "cpu-job", {"gpus": 0})
    by_user = {c.labels["ds01.user"]: c for c in ds01_containers(docker_client, hub.prefix)}
    alice, bob = by_user["alice"], by_user["bob"]
    (mig,) = [d for d in SimulatedInventory(spec).devices() if d.mig_profile == "3g.20gb"]
    assert alice.labels["ds01.gpus"] == mig.uuid
    assert float(alice.labels["ds01.gpu_equivalents"]) == pytest.approx(mig.share, abs=1e-4)
    assert (
        env_of(alice)["NVIDIA_VISIBLE_DEVICES"] == env_of(alice)["CUDA_VISIBLE_DEVICES"] == mig.uuid
    )
    assert not alice.attrs["HostConfig"].get("DeviceRequests")  # simulated: no NVIDIA runtime
    assert bob.labels["ds01.gpus"] == "" and env_of(bob)["NVIDIA_VISIBLE_DEVICES"] == "void"
    r = launch(hub, "carol", "bad", gpus="lots")
    assert r.status_code == 400 and "whole number" in r.json()["message"]
    r = launch(hub, "carol", "bad2", gpu_type="7g.80gb")
    assert r.status_code == 400 and "not offered" in r.json()["message"]
    hub.stop_server("alice", "mig-job")
    hub.stop_server("bob", "cpu-job")


def test_spawn_storm_gives_each_device_to_exactly_one_server(hub_factory, docker_client):
    spec = [A100] * 4
    hub = gpu_hub(hub_factory, spec)
    users = [f"storm{i:02d}" for i in range(24)]
    for user in users:
        hub.ensure_user(user)
    with ThreadPoolExecutor(24) as pool:
        responses = list(pool.map(lambda u: launch(hub, u, "storm"), users))
    started = [u for u, r in zip(users, responses, strict=True) if settle(hub, u, "storm", r)]
    assert len(started) == 4
    table = held(docker_client, hub)
    assert sorted(table) == sorted(uuids_of(spec)) and sorted(table.values()) == sorted(started)
    for c in ds01_containers(docker_client, hub.prefix):
        assert env_of(c)["NVIDIA_VISIBLE_DEVICES"] == c.labels["ds01.gpus"]

    for user in started[:2]:
        hub.stop_server(user, "storm")
    waiting = [u for u in users if u not in started][:4]
    with ThreadPoolExecutor(4) as pool:
        responses = list(pool.map(lambda u: launch(hub, u, "again"), waiting))
    second = [u for u, r in zip(waiting, responses, strict=True) if settle(hub, u, "again", r)]
    assert len(second) == 2
    assert sorted(held(docker_client, hub)) == sorted(uuids_of(spec))
    for user in started[2:]:
        hub.stop_server(user, "storm")
    for user in second:
        hub.stop_server(user, "again")


def test_killed_server_frees_its_device_at_once(hub_factory, docker_client):
    hub = gpu_hub(hub_factory, [A100])
    hub.start_server("alice", "train", {"gpus": 1})
    assert launch(hub, "bob", "train").status_code == 429
    (c,) = ds01_containers(docker_client, hub.prefix, user="alice")
    device = c.labels["ds01.gpus"]
    c.kill()
    hub.start_server("bob", "train", {"gpus": 1})
    assert held(docker_client, hub) == {device: "bob"}
    wait_for(lambda: hub.server_model("alice", "train") is None, 30, "the hub to notice the kill")
    hub.stop_server("bob", "train")


def test_table_is_rebuilt_from_labels_after_a_hub_sigkill(hub_factory, docker_client):
    spec = [A100] * 4
    hub = gpu_hub(hub_factory, spec)
    hub.start_server("alice", "one", {"gpus": 1})
    hub.start_server("bob", "two", {"gpus": 1})
    before = held(docker_client, hub)
    hub.signal(signal.SIGKILL)
    hub.start()
    hub.start_server("carol", "three", {"gpus": 1})
    hub.start_server("dave", "four", {"gpus": 1})
    after = held(docker_client, hub)
    assert {u: after[u] for u in before} == before  # alice and bob kept theirs
    assert sorted(after) == sorted(uuids_of(spec))
    r = launch(hub, "erin", "five")
    assert r.status_code == 429 and "All 4 simulated GPUs are in use" in r.json()["message"]
    for user, server in [("alice", "one"), ("bob", "two"), ("carol", "three"), ("dave", "four")]:
        hub.stop_server(user, server)
    assert held(docker_client, hub) == {}


def this_hub(hub) -> str:
    return hub_id(f"sqlite:///{hub.state_dir / 'jupyterhub.sqlite'}")


def test_orphan_of_a_hub_that_died_mid_spawn_does_not_keep_its_gpu(hub_factory, docker_client):
    spec = [A100, A100]
    hub = gpu_hub(hub_factory, spec)
    mine, theirs = uuids_of(spec)

    def ghost(name, device, hub_label):
        # what a hub killed between `docker create` and saving its state leaves behind
        return docker_client.api.create_container(
            "ds01/base:latest",
            ["sleep", "600"],
            name=f"{hub.prefix}-{name}",
            labels={
                "ds01.managed": "true",
                "ds01.user": "zed",
                "ds01.project": name.split(".")[1],
                "ds01.server": name.split(".")[1],
                "ds01.gpus": device,
                "ds01.hub": hub_label,
            },
        )

    orphan = ghost("zed.ghost", mine, this_hub(hub))
    other_hubs = ghost("zed.elsewhere", theirs, "another-hub")  # e.g. a demo on the same engine
    hub.signal(signal.SIGTERM)
    hub.start()  # this process started after the ghosts were created; its database has neither
    hub.start_server("alice", "real", {"gpus": 1})
    assert held(docker_client, hub) == {mine: "alice", theirs: "zed"}
    ids = [c.id for c in ds01_containers(docker_client, hub.prefix)]
    assert orphan["Id"] not in ids and other_hubs["Id"] in ids
    assert "Removing orphan container" in hub.log_tail(300)
    hub.stop_server("alice", "real")


def test_a_device_busy_outside_ds01_is_not_handed_out(hub_factory, docker_client):
    spec = [A100, A100]
    hub = gpu_hub(hub_factory, spec)
    first, second = uuids_of(spec)
    state = hub.state_dir / "gpus.json"
    write_state(state, {first: {"pids": [4242], "utilization_pct": 97}})  # CUDA on the host
    hub.start_server("alice", "a", {"gpus": 1})
    assert held(docker_client, hub) == {second: "alice"}
    r = launch(hub, "bob", "b")
    assert r.status_code == 429 and "in use" in r.json()["message"]
    write_state(state, {first: {"pids": []}})  # the host process ended
    hub.start_server("bob", "b2", {"gpus": 1})
    assert held(docker_client, hub) == {second: "alice", first: "bob"}
    hub.stop_server("alice", "a")
    hub.stop_server("bob", "b2")

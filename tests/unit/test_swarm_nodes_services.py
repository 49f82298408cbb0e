"""The services' view of a swarm, pure parts: ``docker ps`` entries built from services, tasks and
nodes (engine.swarm_services), the inspect record as the culler reads it, the swarm's devices as
a GPU inventory with their node (swarm.inventory), the admin map's node column, and the
hand-off of the engine settings from the hub to the services (services.settings)."""

from __future__ import annotations

import logging

import pytest

from ds01spawner.admin.views import gpu_rows
from ds01spawner.culler.signals import parse_container
from ds01spawner.engine.services import ServiceEngine, service_engine, service_inventory
from ds01spawner.engine.swarm_services import (
    SwarmServiceEngine,
    listing,
    matches,
    node_view,
)
from ds01spawner.gpus.model import DeviceUsage
from ds01spawner.gpus.table import hub_containers_filter, server_containers
from ds01spawner.limits.usage import usage_of
from ds01spawner.projects.names import container_name
from ds01spawner.services.settings import check_engine_settings, engine_environment
from ds01spawner.swarm.inventory import SwarmInventory, device_of, kind_share
from ds01spawner.swarm.tasks import epoch, parse_nodes, server_tasks

from .test_swarm_tasks import MIG, N1, N2, G, named, node, storm


def records(n2_state="ready"):
    svcs, tasks, nodes = storm(n2_state)
    for s, user in zip(svcs, "abcde", strict=True):
        s["Spec"]["Labels"]["ds01.server"] = "proj"
        s["Spec"]["Labels"]["ds01.user"] = user
    return server_tasks(svcs, tasks, nodes), nodes


def test_listing_has_the_hub_name_devices_node_and_docker_state():
    servers, _ = records()
    by_user = {s.user: listing(s, "ds01", 17.0) for s in servers}
    a = by_user["a"]
    assert a["Names"] == ["/ds01-a.proj"] and a["State"] == "running" and a["Created"] == 17.0
    assert a["Id"] == "c1" * 32
    assert a["Labels"]["ds01.gpus"] == G[0] and a["Labels"]["ds01.node"] == "gpu1"
    assert a["Labels"]["ds01.gpu_equivalents"] == "1.0"  # from the device Swarm assigned
    assert by_user["b"]["State"] == "created"  # starting: holds its device
    assert by_user["e"]["State"] == "created" and by_user["e"]["Labels"]["ds01.gpus"] == ""
    assert by_user["e"]["Id"].startswith("task-")
    # the table code accepts them as the hub's servers, and counts what they hold
    listed = [by_user[u] for u in "abcde"]
    assert len(server_containers(listed, "ds01")) == 5
    assert usage_of("a", listed).gpu_equivalents == 1.0


def test_servers_on_a_node_that_is_down_are_dead_and_hold_nothing():
    servers, _ = records(n2_state="down")
    states = {s.user: listing(s, "ds01")["State"] for s in servers}
    assert states == {"a": "running", "b": "created", "c": "dead", "d": "dead", "e": "dead"}
    listed = [listing(s, "ds01") for s in servers]
    assert usage_of("c", listed).gpu_equivalents == 0


def test_docker_ps_filters_apply_to_the_entries():
    servers, _ = records()
    entry = listing(servers[0], "ds01")
    assert matches(entry, hub_containers_filter("ds01"))
    assert not matches(entry, hub_containers_filter("other"))
    assert matches(entry, {"label": ["ds01.user=a", "ds01.managed"]})
    assert not matches(entry, {"label": "ds01.user=b"})


def test_inspect_from_the_node_is_read_as_on_a_single_engine():
    servers, nodes = records()
    node_a = parse_nodes(nodes)[N1]
    raw = {
        "Id": "c1" * 32,
        "Config": {
            "Labels": {"ds01.managed": "true", "ds01.project": "proj", "ds01.gpus": ""},
            "Env": ["JUPYTERHUB_SERVICE_URL=http://0.0.0.0:8890/user/a/proj/", "X=1"],
            "User": "4001:4001",
        },
        "State": {"Pid": 4242, "Running": True},
        "Mounts": [{"Type": "bind", "Source": "/srv/ws/a/proj", "Destination": "/workspace"}],
        "NetworkSettings": {"Networks": {"host": {"IPAddress": ""}}},
    }
    c = parse_container(node_view(raw, servers[0], node_a))
    assert c.gpus == (G[0],)  # assigned by Swarm, not the label set at creation
    assert c.pid is None  # a PID on another host: CPU comes from the node's stats
    assert c.server_url == "http://10.213.0.3:8890/user/a/proj/"  # the node's address
    assert c.workspace == "/srv/ws/a/proj" and c.uid == 4001


def test_epoch_reads_swarm_times():
    assert epoch("2026-11-29T19:17:12.092104827Z") == pytest.approx(1795979832.092104)
    assert epoch("") == 0.0 and epoch("junk") == 0.0


def test_swarm_devices_as_an_inventory_with_their_node():
    nodes = [
        node(N1, "h", "10.0.0.1", G[:2]),
        node(N2, "h", "10.0.0.2", [], extra=[named("NVIDIA-MIG-3G-20GB", MIG)]),
    ]
    nodes[1]["Spec"]["Labels"]["ds01.name"] = "gpu2"
    nodes[0]["Spec"]["Labels"]["ds01.name"] = "gpu1"
    parsed = parse_nodes(nodes)
    inv = SwarmInventory(lambda: parsed)
    devices = inv.devices()
    assert [(d.index, d.kind, d.share) for d in devices] == [
        ("gpu1:0", "gpu", 1.0),
        ("gpu1:1", "gpu", 1.0),
        ("gpu2:0", "mig", 0.429),
    ]
    assert devices[2].mig_profile == "3g.20gb"
    assert inv.node_of == {G[0]: "gpu1", G[1]: "gpu1", MIG: "gpu2"}
    assert inv.usage() == {}  # no per-node reader: unknown (the culler keeps the servers)
    rows = gpu_rows(devices, {}, [], True, inv.node_of)
    assert [r["node"] for r in rows] == ["gpu1", "gpu1", "gpu2"]
    assert gpu_rows(devices, {}, [])[0]["node"] is None  # single engine: no node column
    assert kind_share("NVIDIA-GPU") == 1.0 and kind_share("NVIDIA-MIG-1G-5GB") == 0.143
    assert device_of(parsed[N1], 0, "NVIDIA-GPU", G[0]).name == "GPU on gpu1"


def test_a_node_whose_usage_cannot_be_read_is_left_out_and_logged_once(caplog):
    parsed = parse_nodes([node(N1, "h", "10.0.0.1", G[:2]), node(N2, "h", "10.0.0.2", G[2:])])
    down = {N2}

    def read(n):
        if n.id in down:
            raise ConnectionError("no route")
        own = [v for _k, v in n.named]
        return {u: DeviceUsage(u, 50.0, 10) for u in own + ["GPU-not-mine"]}

    inv = SwarmInventory(lambda: parsed, read, logging.getLogger("t.inv"))
    with caplog.at_level(logging.INFO, "t.inv"):
        assert set(inv.usage()) == set(G[:2])  # another node's claim about a device is dropped
        assert set(inv.usage()) == set(G[:2])
        down.clear()
        assert set(inv.usage()) == set(G)
    msgs = [r.getMessage() for r in caplog.records]
    assert len([m for m in msgs if "cannot be read" in m]) == 1
    assert len([m for m in msgs if "can be read again" in m]) == 1


def test_the_factory_picks_the_engine_from_the_settings(tmp_path):
    assert isinstance(service_engine({}), ServiceEngine)
    e = service_engine(
        {
            "DS01_ENGINE_KIND": "swarm",
            "DS01_SWARM_MANAGER_URL": f"unix://{tmp_path}/m.sock",
            "DS01_CONTAINER_PREFIX": "p",
        }
    )
    assert isinstance(e, SwarmServiceEngine) and e.prefix == "p"
    assert isinstance(service_inventory(e), SwarmInventory)
    with pytest.raises(ValueError, match="'k8s'"):
        service_engine({"DS01_ENGINE_KIND": "k8s"})
    with pytest.raises(ValueError, match="swarm settings.*unknown keys"):
        service_engine({"DS01_ENGINE_KIND": "swarm", "DS01_SWARM_TLS": '{"pem": "x"}'})


def test_the_hub_hands_the_engine_settings_to_the_services():
    assert engine_environment({}) == {
        "DS01_ENGINE_KIND": "docker",
        "DS01_SWARM_MANAGER_URL": "",
        "DS01_SWARM_TLS": "{}",
    }
    env = engine_environment(
        {
            "engine_kind": "swarm",
            "swarm_manager_url": "tcp://m:2376",
            "swarm_tls": {"ca": "/ca", "cert": "/c", "key": "/k"},
        }
    )
    assert env["DS01_ENGINE_KIND"] == "swarm" and '"cert": "/c"' in env["DS01_SWARM_TLS"]
    check_engine_settings(
        {
            "engine_kind": "swarm",
            "swarm_manager_url": "tcp://m:2376",
            "swarm_tls": {"ca": "/ca", "cert": "/c", "key": "/k"},
        }
    )
    with pytest.raises(ValueError, match="refusing plain tcp://m:2375"):
        check_engine_settings({"engine_kind": "swarm", "swarm_manager_url": "tcp://m:2375"})
    with pytest.raises(ValueError, match="engine_kind is 'k8s'"):
        check_engine_settings({"engine_kind": "k8s"})


def test_registration_and_services_get_the_engine_settings():
    from traitlets.config import Config

    from ds01spawner.culler.registration import register_culler

    c = Config()
    register_culler(c, {"engine_kind": "swarm", "swarm_manager_url": "unix:///m.sock"})
    env = c.JupyterHub.services[0]["environment"]
    assert env["DS01_ENGINE_KIND"] == "swarm" and env["DS01_SWARM_MANAGER_URL"] == "unix:///m.sock"


DCGM_PAGE = """# HELP DCGM_FI_DEV_GPU_UTIL GPU utilization (in %).
# TYPE DCGM_FI_DEV_GPU_UTIL gauge
DCGM_FI_DEV_GPU_UTIL{gpu="0",UUID="GPU-aaaa0001",device="nvidia0",modelName="A100"} 37
DCGM_FI_DEV_GPU_UTIL{gpu="1",UUID="GPU-aaaa0002",device="nvidia1",modelName="A100"} 0
DCGM_FI_DEV_GPU_UTIL{gpu="2",UUID="GPU-cccc0003",GPU_I_PROFILE="3g.20gb",GPU_I_ID="1"} 12
DCGM_FI_DEV_GPU_UTIL{gpu="3",UUID="GPU-bad"} NaN
# TYPE DCGM_FI_DEV_FB_USED gauge
DCGM_FI_DEV_FB_USED{gpu="0",UUID="GPU-aaaa0001",device="nvidia0"} 1024
"""


def test_dcgm_exporter_pages_give_whole_gpus_figures():
    from ds01spawner.swarm.gpu_metrics import parse_dcgm

    got = parse_dcgm(DCGM_PAGE)
    assert got == {
        "GPU-aaaa0001": DeviceUsage("GPU-aaaa0001", 37.0, 1024),
        "GPU-aaaa0002": DeviceUsage("GPU-aaaa0002", 0.0, None),
    }
    assert parse_dcgm("garbage\n{}") == {}


def test_a_node_without_the_metrics_label_is_a_clear_unknown():
    from ds01spawner.swarm.gpu_metrics import MetricsError, MetricsReader

    n = parse_nodes([node(N1, "gpu1", "10.0.0.1", G[:2])])[N1]
    with pytest.raises(MetricsError, match="no ds01.gpu_metrics label.*http://10.0.0.1:9400"):
        MetricsReader()(n)


def test_session_panel_says_a_swarm_device_has_no_figure():
    from ds01spawner.services.session import SWARM_NO_UTILIZATION, gpu_figures

    parsed = parse_nodes([node(N1, "h", "10.0.0.1", G[:1])])
    inv = SwarmInventory(lambda: parsed)
    rows = gpu_rows(inv.devices(), {}, [], True, inv.node_of)
    [shown] = gpu_figures(rows, [G[0]])
    assert shown["utilization_pct"] is None and shown["utilization_note"] == SWARM_NO_UTILIZATION


def test_every_service_gets_the_engine_settings_and_the_hub_refuses_plain_tcp():
    from traitlets.config import Config

    from ds01spawner.spawner.startup import ConfigCheckError, check_config, configure_services

    c = Config()
    c.DS01Spawner.engine_kind = "swarm"
    c.DS01Spawner.swarm_manager_url = "tcp://manager:2376"
    c.DS01Spawner.swarm_tls = {"ca": "/etc/ds01/ca.pem", "cert": "/c.pem", "key": "/k.pem"}
    check_config(c)
    configure_services(c, port=18000)
    env = {s["name"]: s["environment"] for s in c.JupyterHub.services}
    for name in ("ds01-limits", "ds01-admin", "ds01-culler"):
        assert env[name]["DS01_ENGINE_KIND"] == "swarm", name
        assert env[name]["DS01_SWARM_MANAGER_URL"] == "tcp://manager:2376", name
        assert '"ca": "/etc/ds01/ca.pem"' in env[name]["DS01_SWARM_TLS"], name
    c.DS01Spawner.swarm_tls = {}
    with pytest.raises(ConfigCheckError, match="refusing plain tcp://manager:2376"):
        check_config(c)


def test_only_this_hubs_services_are_its_servers():
    from ds01spawner.engine.swarm_services import hub_service
    from ds01spawner.swarm.service_spec import service_name

    def svc(name, user="alice", server="proj"):
        return {"Spec": {"Name": name, "Labels": {"ds01.user": user, "ds01.server": server}}}

    mine = service_name(container_name("alice", "proj", "ds01"))
    assert hub_service(svc(mine), "ds01")
    assert not hub_service(svc(mine), "other")  # another hub's server on the same swarm
    assert not hub_service(svc(mine, user="bob"), "ds01")  # labels claiming someone else
    assert not hub_service(svc("x", user=""), "ds01")

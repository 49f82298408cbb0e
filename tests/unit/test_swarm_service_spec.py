"""The Swarm service of one server, built from the single-engine container spec (pure dicts)."""

import re
from datetime import datetime, timezone
from pathlib import Path

import pytest

from ds01spawner.spawner.container_spec import START_SCRIPT, ServerSpec, build_container_spec
from ds01spawner.swarm.service_spec import (
    HOST_CONFIG_FIELDS,
    SwarmSpecError,
    gpu_kind_env,
    service_name,
    service_spec,
    valid_service_name,
)

WHEN = datetime(2026, 11, 28, 12, 0, 0, tzinfo=timezone.utc)
NODE = "x7b1qsdhcrqyzmxw4jkmce0kd"
WORKSPACE = "/srv/ds01/workspaces/alice/my-thesis"


def server(**over):
    base = dict(
        name="ds01-alice.my-thesis",
        image="ds01/base:latest",
        command=["jupyterhub-singleuser", "--port=41234"],
        env={"JUPYTERHUB_API_TOKEN": "secret"},
        username="alice",
        project="my-thesis",
        server_name="my-thesis",
        uid=1000,
        gid=100,
        project_dir=WORKSPACE,
        home="/home/alice",
        created_at=WHEN,
        port=41234,
        supplementary_gids=(4001,),
        stop_grace_seconds=2,
        mem_limit="8g",
        cpu_limit=2.5,
        gpu_uuids=("GPU-5e000000-0000-0000-0000-000000000000",),
        gpu_equivalents=1.0,
        shm_size=1 << 30,
        pids_limit=4096,
    )
    base.update(over)
    return build_container_spec(ServerSpec(**base))


def test_a_gpu_server_as_a_one_task_service_full_dict():
    create, host = server()
    assert "device_requests" in host  # the single-engine path asks the runtime for the GPU
    spec = service_spec(
        create,
        host,
        node_id=NODE,
        gpu_kind="NVIDIA-GPU",
        gpu_count=1,
        void_kinds=["NVIDIA-GPU", "NVIDIA-MIG-1G-5GB"],
    )
    labels = {
        "ds01.managed": "true",
        "ds01.user": "alice",
        "ds01.project": "my-thesis",
        "ds01.server": "my-thesis",
        "ds01.created": "2026-11-28T12:00:00+00:00",
        "ds01.gpus": "",
        "ds01.gpu_equivalents": "1",
        "ds01.gpu_request": "NVIDIA-GPU=1",
        "ds01.node": NODE,
    }
    assert spec == {
        "name": service_name("ds01-alice.my-thesis"),
        "labels": labels,
        "mode": {"Replicated": {"Replicas": 1}},
        "task_template": {
            "ContainerSpec": {
                "Image": "ds01/base:latest",
                "Args": [
                    "/bin/sh",
                    "-c",
                    START_SCRIPT,
                    "ds01-start",
                    "jupyterhub-singleuser",
                    "--port=41234",
                ],
                "Env": [
                    "JUPYTERHUB_API_TOKEN=secret",
                    "HOME=/home/alice",
                    "DS01_USER=alice",
                    "DS01_PROJECT=my-thesis",
                    "DS01_SERVER=my-thesis",
                    "DS01_WORKSPACE=/workspace",
                    "JUPYTERHUB_ROOT_DIR=/workspace",
                    "SHELL=/bin/bash",
                    "NVIDIA_VISIBLE_DEVICES=void",
                    "DOCKER_RESOURCE_NVIDIA-MIG-1G-5GB=",
                ],
                "Labels": labels,
                "Mounts": [
                    {
                        "Type": "bind",
                        "Source": WORKSPACE,
                        "Target": "/workspace",
                        "ReadOnly": False,
                    },
                    {
                        "Type": "tmpfs",
                        "Target": "/dev/shm",
                        "ReadOnly": False,
                        "TmpfsOptions": {"SizeBytes": 1 << 30, "Mode": 0o1777},
                    },
                ],
                "Init": True,
                "StopSignal": "SIGTERM",
                "StopGracePeriod": 2_000_000_000,
                "User": "1000:100",
                "Dir": "/workspace",
                "Groups": ["4001"],
                "CapabilityDrop": ["ALL"],
            },
            "Resources": {
                "Limits": {"NanoCPUs": 2_500_000_000, "MemoryBytes": 8 << 30, "Pids": 4096},
                "Reservations": {
                    "GenericResources": [
                        {"DiscreteResourceSpec": {"Kind": "NVIDIA-GPU", "Value": 1}}
                    ]
                },
            },
            "RestartPolicy": {"Condition": "none", "MaxAttempts": 0},
            "Placement": {"Constraints": [f"node.id=={NODE}"]},
            "Networks": [{"Target": "host"}],
        },
    }


def test_no_gpu_server_voids_every_kind_and_reserves_nothing():
    create, host = server(gpu_uuids=(), gpu_equivalents=0.0)
    spec = service_spec(create, host, node_id=NODE, void_kinds=["NVIDIA-GPU", "NVIDIA-MIG-3G-20GB"])
    env = spec["task_template"]["ContainerSpec"]["Env"]
    assert "DOCKER_RESOURCE_NVIDIA-GPU=" in env
    assert "DOCKER_RESOURCE_NVIDIA-MIG-3G-20GB=" in env
    assert "NVIDIA_VISIBLE_DEVICES=void" in env
    assert not any(e.startswith("CUDA_VISIBLE_DEVICES=") for e in env)
    assert "Reservations" not in spec["task_template"]["Resources"]
    assert spec["labels"]["ds01.gpu_request"] == ""


def test_a_mig_request_reserves_its_kind_and_leaves_its_variable_to_swarm():
    create, host = server(gpu_uuids=())
    kind = "NVIDIA-MIG-3G-20GB"
    spec = service_spec(
        create, host, node_id=NODE, gpu_kind=kind, gpu_count=2, void_kinds=["NVIDIA-GPU", kind]
    )
    resources = spec["task_template"]["Resources"]["Reservations"]["GenericResources"]
    assert resources == [{"DiscreteResourceSpec": {"Kind": kind, "Value": 2}}]
    env = spec["task_template"]["ContainerSpec"]["Env"]
    assert not any(e.startswith(f"{gpu_kind_env(kind)}=") for e in env)
    assert "DOCKER_RESOURCE_NVIDIA-GPU=" in env


def test_no_new_privileges_on_the_service_from_api_1_46():
    create, host = server()
    old = service_spec(create, host, node_id=NODE, api_version="1.41")
    new = service_spec(create, host, node_id=NODE, api_version="1.46")
    assert "Privileges" not in old["task_template"]["ContainerSpec"]
    assert new["task_template"]["ContainerSpec"]["Privileges"] == {"NoNewPrivileges": True}


def test_admin_extras_that_swarm_expresses():
    create, host = server(
        extra_binds={"/srv/datasets": {"bind": "/datasets", "mode": "ro"}},
        extra_host_config={
            "ulimits": [{"Name": "nofile", "Soft": 4096, "Hard": 8192}],
            "dns": ["10.0.0.53"],
            "dns_search": ["lab.example"],
            "extra_hosts": {"license": "10.0.0.7"},
            "tmpfs": {"/scratch": "size=64m,mode=1777"},
            "log_config": {"Type": "json-file", "Config": {"max-size": "10m"}},
            "mem_reservation": "1g",
        },
        extra_create_kwargs={"hostname": "lab"},
    )
    spec = service_spec(create, host, node_id=NODE)
    cs = spec["task_template"]["ContainerSpec"]
    assert {"Type": "bind", "Source": "/srv/datasets", "Target": "/datasets", "ReadOnly": True} in (
        cs["Mounts"]
    )
    assert {
        "Type": "tmpfs",
        "Target": "/scratch",
        "ReadOnly": False,
        "TmpfsOptions": {"SizeBytes": 64 << 20, "Mode": 0o1777},
    } in cs["Mounts"]
    assert cs["Ulimits"] == [{"Name": "nofile", "Soft": 4096, "Hard": 8192}]
    assert cs["DNSConfig"] == {"Nameservers": ["10.0.0.53"], "Search": ["lab.example"]}
    assert cs["Hosts"] == ["10.0.0.7 license"]
    assert cs["Hostname"] == "lab"
    assert spec["task_template"]["LogDriver"] == {
        "Name": "json-file",
        "Options": {"max-size": "10m"},
    }
    assert spec["task_template"]["Resources"]["Reservations"] == {"MemoryBytes": 1 << 30}


@pytest.mark.parametrize(
    "extra, words",
    [
        ({"cpu_shares": 512}, "cpu_shares"),
        ({"memswap_limit": "16g"}, "swap"),
        ({"cpuset_cpus": "0-3"}, "pin CPUs"),
        ({"oom_score_adj": 100}, "OOM"),
        ({"tmpfs": {"/x": "size=1m,exec"}}, "'exec'"),
    ],
)
def test_what_swarm_cannot_express_is_a_clear_error(extra, words):
    create, host = server(extra_host_config=extra)
    with pytest.raises(SwarmSpecError, match=re.escape(words)):
        service_spec(create, host, node_id=NODE)


def test_other_refusals():
    create, host = server(network="ds01-net")
    with pytest.raises(SwarmSpecError, match="host network"):
        service_spec(create, host, node_id=NODE)
    create, host = server()
    with pytest.raises(SwarmSpecError, match="unknown_key"):
        service_spec(create, {**host, "unknown_key": 1}, node_id=NODE)
    with pytest.raises(SwarmSpecError, match="security option"):
        service_spec(create, {**host, "security_opt": ["seccomp=unconfined"]}, node_id=NODE)
    with pytest.raises(SwarmSpecError, match="'z'"):
        service_spec(
            create, {**host, "binds": {"/a": {"bind": "/b", "mode": "ro,z"}}}, node_id=NODE
        )
    with pytest.raises(SwarmSpecError, match="node id"):
        service_spec(create, host, node_id="node.id==x")
    with pytest.raises(SwarmSpecError, match="GPU request"):
        service_spec(create, host, node_id=NODE, gpu_kind="GPU=1", gpu_count=1)
    with pytest.raises(SwarmSpecError, match="mac_address"):
        service_spec({**create, "mac_address": "x"}, host, node_id=NODE)
    create, host = server(extra_create_kwargs={"domainname": "lab.example"})
    with pytest.raises(SwarmSpecError, match="domain name"):
        service_spec(create, host, node_id=NODE)


def test_tmpfs_as_a_list_of_path_and_options():
    create, host = server(shm_size=None, extra_host_config={"tmpfs": ["/a:size=1k", "/b"]})
    mounts = service_spec(create, host, node_id=NODE)["task_template"]["ContainerSpec"]["Mounts"]
    assert mounts[1:] == [
        {"Type": "tmpfs", "Target": "/a", "ReadOnly": False, "TmpfsOptions": {"SizeBytes": 1024}},
        {"Type": "tmpfs", "Target": "/b", "ReadOnly": False},
    ]


def test_service_names_are_valid_and_keep_servers_apart():
    names = [
        service_name("ds01-a-b.c"),
        service_name("ds01-a.b-c"),
        service_name("ds01-alice._default"),
        service_name("ds01-" + "x" * 80 + ".p"),
    ]
    assert all(valid_service_name(n) for n in names), names
    assert len(set(names)) == len(names)
    assert service_name("ds01-a-b.c") == service_name("ds01-a-b.c")
    assert not valid_service_name("ds01-alice.my-thesis")  # why the mapping exists


def test_every_host_config_field_is_in_the_docs():
    doc = (Path(__file__).resolve().parents[2] / "docs" / "scale-out.md").read_text()
    missing = [k for k in HOST_CONFIG_FIELDS if f"`{k}`" not in doc]
    assert not missing, f"docs/scale-out.md does not explain {missing}"

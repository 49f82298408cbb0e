from datetime import datetime, timezone

import pytest

from ds01spawner.spawner.container_spec import (
    START_SCRIPT,
    ServerSpec,
    SpecError,
    build_container_spec,
    refused_bind,
)

WHEN = datetime(2026, 11, 28, 12, 0, 0, tzinfo=timezone.utc)


def spec(**over):
    base = dict(
        name="ds01-alice.my-thesis",
        image="ds01/base:latest",
        command=["jupyterhub-singleuser"],
        env={"JUPYTERHUB_API_TOKEN": "secret"},
        username="alice",
        project="my-thesis",
        server_name="my-thesis",
        uid=1000,
        gid=100,
        project_dir="/srv/ds01/workspaces/alice/my-thesis",
        home="/home/alice",
        created_at=WHEN,
        port=41234,
    )
    base.update(over)
    return ServerSpec(**base)


def test_host_network_spec_as_dicts():
    create, host = build_container_spec(spec())
    assert host == {
        "binds": {"/srv/ds01/workspaces/alice/my-thesis": {"bind": "/workspace", "mode": "rw"}},
        "network_mode": "host",
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges:true"],
        "init": True,
        "auto_remove": False,
    }
    assert create == {
        "name": "ds01-alice.my-thesis",
        "image": "ds01/base:latest",
        "command": ["/bin/sh", "-c", START_SCRIPT, "ds01-start", "jupyterhub-singleuser"],
        "environment": {
            "JUPYTERHUB_API_TOKEN": "secret",
            "HOME": "/home/alice",
            "DS01_USER": "alice",
            "DS01_PROJECT": "my-thesis",
            "DS01_SERVER": "my-thesis",
            "DS01_WORKSPACE": "/workspace",
            "JUPYTERHUB_ROOT_DIR": "/workspace",
            "SHELL": "/bin/bash",
            "NVIDIA_VISIBLE_DEVICES": "void",
            "CUDA_VISIBLE_DEVICES": "",
        },
        "user": "1000:100",
        "working_dir": "/workspace",
        "labels": {
            "ds01.managed": "true",
            "ds01.user": "alice",
            "ds01.project": "my-thesis",
            "ds01.server": "my-thesis",
            "ds01.created": "2026-11-28T12:00:00+00:00",
            "ds01.gpus": "",
            "ds01.gpu_equivalents": "0",
        },
        "volumes": ["/workspace"],
        "stop_signal": "SIGTERM",
        "stop_timeout": 30,
    }


def test_named_network_exposes_the_port():
    create, host = build_container_spec(spec(network="ds01-net", port=8888))
    assert host["network_mode"] == "ds01-net"
    assert create["ports"] == [8888]


def test_limits_capabilities_and_groups():
    _, host = build_container_spec(
        spec(mem_limit="8G", cpu_limit=2.5, cap_add=["SYS_PTRACE"], supplementary_gids=[27, 44])
    )
    assert host["mem_limit"] == "8G"
    assert host["cpu_quota"] == 250_000 and host["cpu_period"] == 100_000
    assert host["cap_add"] == ["SYS_PTRACE"] and host["cap_drop"] == ["ALL"]
    assert host["group_add"] == ["27", "44"]


@pytest.mark.parametrize("sock", ["/var/run/docker.sock", "/run/containerd/containerd.sock"])
def test_engine_socket_is_never_mounted(sock):
    with pytest.raises(SpecError, match="root on the host"):
        build_container_spec(
            spec(extra_binds={sock: {"bind": "/var/run/docker.sock", "mode": "rw"}})
        )


def test_socket_behind_a_symlink_is_refused(tmp_path):
    link = tmp_path / "innocent"
    link.symlink_to("/var/run/docker.sock")
    with pytest.raises(SpecError):
        build_container_spec(spec(extra_binds={str(link): {"bind": "/x", "mode": "ro"}}))


@pytest.mark.parametrize(
    "source", ["/var/run", "/run", "/", "/var/run/", "/var", "/run/containerd", "/var/lib/docker"]
)
def test_a_folder_above_an_engine_socket_is_refused(source):
    with pytest.raises(SpecError, match="root on the host"):
        build_container_spec(spec(extra_binds={source: {"bind": "/host", "mode": "ro"}}))


def test_a_link_to_a_folder_above_the_socket_is_refused(tmp_path):
    link = tmp_path / "logs"
    link.symlink_to("/var/run")
    with pytest.raises(SpecError, match="root on the host"):
        build_container_spec(spec(extra_binds={str(link): {"bind": "/x", "mode": "ro"}}))


def test_a_plain_data_folder_is_not_refused(tmp_path):
    assert refused_bind(str(tmp_path)) is None and refused_bind("/srv/data") is None


def test_extra_bind_cannot_hide_the_workspace():
    with pytest.raises(SpecError, match="hide the project mount"):
        build_container_spec(spec(extra_binds={"/data": {"bind": "/workspace", "mode": "ro"}}))


def test_extra_bind_is_added():
    create, host = build_container_spec(
        spec(extra_binds={"/data/shared": {"bind": "/shared", "mode": "ro"}})
    )
    assert host["binds"]["/data/shared"] == {"bind": "/shared", "mode": "ro"}
    assert create["volumes"] == ["/workspace", "/shared"]


@pytest.mark.parametrize("uid,gid", [(0, 100), (1000, 0)])
def test_root_is_refused(uid, gid):
    with pytest.raises(SpecError, match="never runs a server as root"):
        build_container_spec(spec(uid=uid, gid=gid))


def test_ds01_labels_cannot_be_overridden_by_extra_labels():
    create, _ = build_container_spec(spec(extra_labels={"ds01.user": "mallory", "team": "nlp"}))
    assert create["labels"]["ds01.user"] == "alice"
    assert create["labels"]["team"] == "nlp"


def test_allowed_extra_host_config_is_merged():
    _, host = build_container_spec(spec(extra_host_config={"shm_size": "2g", "pids_limit": 512}))
    assert host["shm_size"] == "2g" and host["pids_limit"] == 512
    assert host["cap_drop"] == ["ALL"]


@pytest.mark.parametrize(
    "key,value",
    [
        ("privileged", True),
        ("pid_mode", "host"),
        ("ipc_mode", "host"),
        ("cap_add", ["SYS_ADMIN"]),
        ("devices", ["/dev/sda:/dev/sda"]),
        ("binds", {"/": {"bind": "/host"}}),
        ("security_opt", []),
        ("userns_mode", "host"),
        ("network_mode", "bridge"),
    ],
)
def test_extra_host_config_cannot_undo_isolation(key, value):
    with pytest.raises(SpecError, match=f"may not set {key}"):
        build_container_spec(spec(extra_host_config={key: value}))


def test_extra_create_kwargs_merge_without_overriding_ds01():
    create, _ = build_container_spec(
        spec(
            extra_create_kwargs={
                "environment": {"TZ": "UTC", "HOME": "/root"},
                "labels": {"ds01.user": "x", "team": "nlp"},
                "hostname": "lab",
            }
        )
    )
    assert create["environment"]["TZ"] == "UTC" and create["environment"]["HOME"] == "/home/alice"
    assert create["labels"]["team"] == "nlp" and create["labels"]["ds01.user"] == "alice"
    assert create["hostname"] == "lab"


@pytest.mark.parametrize("key", ["user", "name", "command", "volumes"])
def test_extra_create_kwargs_cannot_change_identity(key):
    with pytest.raises(SpecError, match=f"may not set {key}"):
        build_container_spec(spec(extra_create_kwargs={key: "x"}))


def test_gpus_become_a_device_request_env_and_labels():
    create, host = build_container_spec(spec(gpu_uuids=("GPU-1", "MIG-2"), gpu_equivalents=1.4286))
    assert host["device_requests"] == [
        {"driver": "nvidia", "device_ids": ["GPU-1", "MIG-2"], "capabilities": [["gpu"]]}
    ]
    assert create["environment"]["NVIDIA_VISIBLE_DEVICES"] == "GPU-1,MIG-2"
    assert create["environment"]["CUDA_VISIBLE_DEVICES"] == "GPU-1,MIG-2"
    assert create["labels"]["ds01.gpus"] == "GPU-1,MIG-2"
    assert create["labels"]["ds01.gpu_equivalents"] == "1.4286"


def test_simulated_gpus_set_env_and_labels_but_no_device_request():
    create, host = build_container_spec(spec(gpu_uuids=("GPU-1",), gpu_runtime=False))
    assert "device_requests" not in host
    assert create["environment"]["NVIDIA_VISIBLE_DEVICES"] == "GPU-1"
    assert create["labels"]["ds01.gpus"] == "GPU-1"


def test_gpu_env_cannot_be_overridden_by_admin_extras():
    create, _ = build_container_spec(
        spec(extra_create_kwargs={"environment": {"NVIDIA_VISIBLE_DEVICES": "all"}})
    )
    assert create["environment"]["NVIDIA_VISIBLE_DEVICES"] == "void"

"""``python -m ds01spawner.gpus node-settings``: a swarm node's engine settings for its GPUs."""

import json

from ds01spawner.gpus.__main__ import main as probe_main
from ds01spawner.gpus.model import Device
from ds01spawner.gpus.node_settings import device_kind, node_generic_resources, node_settings
from ds01spawner.swarm.service_spec import gpu_kind_env

GPUS = [
    {"name": "NVIDIA A100-SXM4-40GB", "memory_mib": 40960},
    {
        "name": "NVIDIA A100-SXM4-40GB",
        "memory_mib": 40960,
        "mig_profiles": ["3g.20gb", "2g.10gb", "1g.5gb+me", "1g.5gb"],
    },
]
G0 = "GPU-5e000000-0000-0000-0000-000000000000"


def mig(profile):
    return Device("MIG-x", "1:0", f"NVIDIA A100 MIG {profile}", 5000, "mig", "GPU-p", profile)


def test_kinds_of_full_gpus_and_mig_profiles():
    assert device_kind(Device(G0, "0", "A100", 40960, "gpu")) == "NVIDIA-GPU"
    assert device_kind(mig("3g.20gb")) == "NVIDIA-MIG-3G-20GB"
    assert device_kind(mig("1g.5gb+me")) == "NVIDIA-MIG-1G-5GB-ME"
    assert device_kind(mig("1c.3g.20gb")) == "NVIDIA-MIG-1C-3G-20GB"
    assert gpu_kind_env(device_kind(mig("3g.20gb"))) == "DOCKER_RESOURCE_NVIDIA-MIG-3G-20GB"
    assert node_generic_resources([mig("2g.10gb")]) == ["NVIDIA-MIG-2G-10GB=MIG-x"]


def test_json_from_a_simulated_list_with_mig(tmp_path, capsys):
    path = tmp_path / "gpus.json"
    path.write_text(json.dumps(GPUS))
    assert (
        probe_main(["node-settings", "--simulated", str(path), "--json", "--addr", "10.0.0.5"]) == 0
    )
    out = json.loads(capsys.readouterr().out)
    assert out["daemon_json"]["node-generic-resources"] == [
        f"NVIDIA-GPU={G0}",
        "NVIDIA-MIG-3G-20GB=MIG-5e000000-0000-0000-0001-000000000000",
        "NVIDIA-MIG-2G-10GB=MIG-5e000000-0000-0000-0001-000000000001",
        "NVIDIA-MIG-1G-5GB-ME=MIG-5e000000-0000-0000-0001-000000000002",
        "NVIDIA-MIG-1G-5GB=MIG-5e000000-0000-0000-0001-000000000003",
    ]
    assert out["daemon_json"]["default-runtime"] == "nvidia"
    assert out["daemon_json"]["runtimes"]["nvidia"]["path"] == "nvidia-container-runtime"
    assert out["daemon_json"]["no-new-privileges"] is True
    assert out["swarm_resource"].split(",") == [
        "DOCKER_RESOURCE_NVIDIA-GPU",
        "DOCKER_RESOURCE_NVIDIA-MIG-1G-5GB",
        "DOCKER_RESOURCE_NVIDIA-MIG-1G-5GB-ME",
        "DOCKER_RESOURCE_NVIDIA-MIG-2G-10GB",
        "DOCKER_RESOURCE_NVIDIA-MIG-3G-20GB",
    ]
    assert out["kinds"]["NVIDIA-GPU"] == 1 and sum(out["kinds"].values()) == 5
    assert out["labels"] == {"ds01.addr": "10.0.0.5", "ds01.engine": "tcp://10.0.0.5:2376"}


def test_text_from_the_environment_the_hub_uses(monkeypatch, capsys):
    monkeypatch.setenv("DS01_GPU_INVENTORY", "simulated")
    monkeypatch.setenv("DS01_SIMULATED_GPUS", json.dumps(GPUS[:1]))
    assert probe_main(["node-settings"]) == 0
    text = capsys.readouterr().out
    assert f'"NVIDIA-GPU={G0}"' in text
    assert 'swarm-resource = "DOCKER_RESOURCE_NVIDIA-GPU"' in text
    assert "docker swarm join --token" in text
    assert "--label-add ds01.addr=" in text
    # a worker never pulls a server's image by name from a registry (review finding)
    assert "Environment=DOCKER_SERVICE_PREFER_OFFLINE_IMAGE=1" in text


def test_no_gpus_needs_no_runtime_and_a_broken_list_is_one_line(tmp_path, monkeypatch, capsys):
    settings = node_settings([])
    assert settings["daemon_json"] == {"node-generic-resources": [], "no-new-privileges": True}
    assert settings["swarm_resource"] == ""
    monkeypatch.setenv("DS01_GPU_INVENTORY", "simulated")
    monkeypatch.setenv("DS01_SIMULATED_GPUS", "[]")
    assert probe_main(["node-settings"]) == 1
    assert "simulated_gpus is empty" in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    assert probe_main(["node-settings", "--simulated", str(bad)]) == 1
    assert "Cannot read the simulated GPU list" in capsys.readouterr().err

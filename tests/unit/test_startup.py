import os

import pytest
from traitlets.config import Config

from ds01spawner.spawner.startup import ConfigCheckError, check_config

A100 = {"name": "NVIDIA A100-SXM4-40GB", "memory_mib": 40960}


def config(**ds01) -> Config:
    c = Config()
    for key, value in ds01.items():
        setattr(c.DS01Spawner, key, value)
    return c


def test_a_good_simulated_inventory_passes():
    check_config(config(gpu_inventory="simulated", simulated_gpus=[A100]))


@pytest.mark.parametrize("kind", ["auto", "none"])
def test_auto_and_none_always_start(kind):
    check_config(config(gpu_inventory=kind))
    check_config(Config())


def test_a_broken_simulated_list_stops_the_hub_with_the_item_named():
    with pytest.raises(ConfigCheckError) as e:
        check_config(config(gpu_inventory="simulated", simulated_gpus=[A100, {"name": "x"}]))
    assert "DS01: the GPU inventory 'simulated' cannot start" in str(e.value)
    assert "memory_mib" in str(e.value)


@pytest.mark.skipif(os.path.exists("/proc/driver/nvidia/version"), reason="a driver is loaded")
def test_nvml_without_a_driver_stops_the_hub():
    with pytest.raises(ConfigCheckError, match="'nvml' cannot start: NVML could not"):
        check_config(config(gpu_inventory="nvml"))


def test_a_start_timeout_shorter_than_build_plus_queue_stops_the_hub():
    c = config(gpu_queue_timeout=600)
    c.Spawner.start_timeout = 1000
    with pytest.raises(ConfigCheckError) as e:
        check_config(c)
    message = str(e.value)
    assert "start_timeout = 1000 s is shorter than a launch may legitimately take" in message
    assert (
        "image_build_timeout = 600 s + gpu_queue_timeout = 600 s + http_timeout = 30 s" in message
    )
    assert "at least 1230" in message and "default is 1290 s" in message
    c.Spawner.start_timeout = 1230
    check_config(c)  # consistent now
    c.DS01Spawner.http_timeout = 100  # the most specific section wins
    with pytest.raises(ConfigCheckError):
        check_config(c)


def test_the_default_start_timeout_covers_build_and_queue():
    from ds01spawner import DS01Spawner

    spawner = DS01Spawner(config=config(gpu_queue_timeout=900))
    assert spawner.start_timeout == 600 + 900 + 30 + 60
    check_config(config(gpu_queue_timeout=900))


def test_without_builds_or_queue_any_timeout_goes():
    c = config(gpu_queue_timeout=0, project_images=False)
    c.Spawner.start_timeout = 5
    check_config(c)


def test_services_get_the_spawners_settings_from_whichever_section_set_them():
    from traitlets.config import Config

    from ds01spawner.services.settings import spawner_settings
    from ds01spawner.spawner.startup import configure_services

    c = Config()
    c.DockerSpawner.prefix = "parent"
    c.Spawner.limits_file = "/etc/ds01/limits.yaml"
    c.Spawner.gpu_inventory = "none"
    c.DockerSpawner.gpu_inventory = "simulated"  # more specific than Spawner
    c.DS01Spawner.gpu_queue_file = "/run/q.json"
    c.DockerSpawner.gpu_queue_file = "/ignored"  # DS01Spawner is more specific still
    settings = spawner_settings(c)
    assert settings["prefix"] == "parent" and settings["gpu_inventory"] == "simulated"
    assert settings["gpu_queue_file"] == "/run/q.json"
    configure_services(c, port=18000)
    env = {s["name"]: s["environment"] for s in c.JupyterHub.services}
    for name in ("ds01-limits", "ds01-admin", "ds01-culler"):
        assert env[name]["DS01_CONTAINER_PREFIX"] == "parent", name
        assert env[name]["DS01_LIMITS_FILE"] == "/etc/ds01/limits.yaml", name
    assert env["ds01-admin"]["DS01_GPU_INVENTORY"] == "simulated"
    assert env["ds01-culler"]["DS01_GPU_INVENTORY"] == "simulated"
    assert env["ds01-limits"]["DS01_GPU_QUEUE_FILE"] == "/run/q.json"

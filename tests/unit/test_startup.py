import os

import pytest
from traitlets.config import Config

from ds01spawner.startup import ConfigCheckError, check_config

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


def test_a_start_timeout_shorter_than_the_gpu_queue_stops_the_hub():
    c = config(gpu_queue_timeout=600)
    c.Spawner.start_timeout = 120
    with pytest.raises(ConfigCheckError) as e:
        check_config(c)
    assert "start_timeout (120 s) is shorter than gpu_queue_timeout (600 s)" in str(e.value)
    assert "c.Spawner.start_timeout = 690" in str(e.value)
    c.Spawner.start_timeout = 690
    check_config(c)  # consistent now
    c.DS01Spawner.http_timeout = 100  # the most specific section wins
    with pytest.raises(ConfigCheckError):
        check_config(c)


def test_no_queue_no_timeout_check():
    c = config(gpu_queue_timeout=0)
    c.Spawner.start_timeout = 5
    check_config(c)

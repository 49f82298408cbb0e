"""Use against limits: the pure checks behind the 403/429 refusals."""

import pytest

from ds01spawner.gpus.allocator import GpuRequest
from ds01spawner.gpus.model import Device
from ds01spawner.limits import Limits
from ds01spawner.quota import (
    LimitRefused,
    check_gpu_equivalents,
    check_servers,
    shape_request,
    usage_of,
)

GPU = Device("GPU-0", "0", "A100", 40960, "gpu")
MIG = Device("MIG-1", "1:0", "A100 MIG 3g.20gb", 20480, "mig", "GPU-1", "3g.20gb", 3 / 7)


def limits(**over) -> Limits:
    return Limits(**{**Limits.unlimited().__dict__, **over})


def container(user, project, eq, state="running", gpus="GPU-x"):
    return {
        "State": state,
        "Labels": {
            "ds01.user": user,
            "ds01.project": project,
            "ds01.server": project,
            "ds01.gpus": gpus,
            "ds01.gpu_equivalents": str(eq),
        },
    }


def test_usage_counts_only_the_users_live_containers():
    usage = usage_of(
        "alice",
        [
            container("alice", "b", 1),
            container("alice", "a", 0.4286),
            container("alice", "dead", 1, state="exited"),
            container("bob", "x", 1),
        ],
    )
    assert usage.projects == ["a", "b"] and usage.gpu_equivalents == 1.4286
    assert usage_of("alice", [container("alice", "a", 1)], exclude_server="a").servers == ()


def test_gpu_limit_message_names_use_limit_and_projects():
    usage = usage_of("alice", [container("alice", "a", 1), container("alice", "b", 1)])
    with pytest.raises(LimitRefused) as e:
        check_gpu_equivalents(usage, 1.0, limits(max_gpu_equivalents=2))
    assert e.value.status == 429
    assert str(e.value) == (
        "You are using 2.0 of your 2.0 GPUs (projects: a, b), and this launch needs 1.0 more. "
        "Retire one or ask an admin for more."
    )
    check_gpu_equivalents(usage, 0, limits(max_gpu_equivalents=2))  # a CPU server still fits
    check_gpu_equivalents(usage, 5, limits())  # unlimited


def test_mig_shares_add_up_exactly_to_the_limit():
    usage = usage_of("u", [container("u", "a", 4 / 7)])
    check_gpu_equivalents(usage, 3 / 7, limits(max_gpu_equivalents=1))


def test_server_count():
    usage = usage_of("u", [container("u", "a", 0)])
    with pytest.raises(LimitRefused, match="running 1 of your 1 servers"):
        check_servers(usage, limits(max_servers=1))
    check_servers(usage, limits(max_servers=2))


def test_shape_request_per_server_and_whole_gpu_rules():
    with pytest.raises(LimitRefused, match="your limit is 1 per server") as e:
        shape_request(GpuRequest(2, "any"), limits(max_gpus_per_server=1), [GPU, MIG])
    assert e.value.status == 403
    no_full = limits(allow_full_gpu=False)
    assert shape_request(GpuRequest(1, "any"), no_full, [GPU, MIG]) == GpuRequest(1, "mig")
    with pytest.raises(LimitRefused, match="not whole GPUs"):
        shape_request(GpuRequest(1, "full"), no_full, [GPU, MIG])
    with pytest.raises(LimitRefused, match="no MIG slices"):
        shape_request(GpuRequest(1, "any"), no_full, [GPU])
    assert shape_request(GpuRequest(0), no_full, []) == GpuRequest(0)

"""Use against limits: the pure checks behind the 403/429 refusals."""

import pytest

from ds01spawner.gpus.allocator import GpuRequest
from ds01spawner.gpus.model import Device
from ds01spawner.limits.model import Limits
from ds01spawner.limits.usage import (
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


def test_launches_in_progress_count_toward_servers_and_gpus():
    from ds01spawner.limits.usage import Launches, ServerUse, Usage, with_launches

    launches = Launches()
    launches.claim("carol", ServerUse("waits", "waits", (), 1.0, True))
    launches.claim("carol", ServerUse("other", "other", (), 0.0, True))
    launches.claim("dave", ServerUse("x", "x", (), 1.0, True))
    assert [u.server for u in launches.others("carol", "other")] == ["waits"]
    running = Usage((ServerUse("waits", "waits", ("GPU-1",), 1.0),))  # already has a container
    merged = with_launches(running, launches.others("carol", "new")).servers
    assert [(u.server, u.starting) for u in merged] == [("other", True), ("waits", False)]
    usage = with_launches(Usage(), launches.others("carol", "new"))
    assert usage.gpu_equivalents == 1.0 and len(usage.servers) == 2

    class L:
        max_servers = 2

    with pytest.raises(LimitRefused) as e:
        check_servers(usage, L)
    assert str(e.value) == (
        "You are running or starting 2 of your 2 servers (projects: other (starting), "
        "waits (starting)). Retire one or ask an admin for more."
    )
    launches.release("carol", "waits")
    launches.release("carol", "other")
    assert launches.others("carol", "new") == []
    assert [u.server for u in launches.others("dave", "y")] == ["x"]


def test_min_equivalents_is_the_cheapest_fit():
    from ds01spawner.limits.usage import min_equivalents

    def dev(uuid, kind, share, profile=None):
        return Device(uuid, uuid, "A100", 40960, kind, None, profile, share)

    devices = [
        dev("g0", "gpu", 1.0),
        dev("m0", "mig", 3 / 7, "3g.20gb"),
        dev("m1", "mig", 1 / 7, "1g.5gb"),
    ]
    assert min_equivalents(GpuRequest(0), devices) == 0.0
    assert min_equivalents(GpuRequest(1, "any"), devices) == round(1 / 7, 4)
    assert min_equivalents(GpuRequest(2, "mig"), devices) == round(4 / 7, 4)
    assert min_equivalents(GpuRequest(1, "full"), devices) == 1.0

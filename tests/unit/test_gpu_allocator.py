"""The pure allocator and the label table: order, refusals, and no overlap or leak ever."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ds01spawner.gpus.allocator import (
    GpuRequest,
    NoFit,
    RequestError,
    busy_outside,
    choose,
    equivalents,
    parse_request,
)
from ds01spawner.gpus.model import Device, DeviceUsage
from ds01spawner.gpus.table import GPU_LABEL, holders


def gpu(i: int) -> Device:
    return Device(f"GPU-{i}", str(i), "NVIDIA A100-SXM4-40GB", 40960, "gpu")


def mig(parent: int, i: int, profile: str, slices: int) -> Device:
    return Device(
        f"MIG-{parent}-{i}",
        f"{parent}:{i}",
        f"NVIDIA A100 MIG {profile}",
        10240 * slices,
        "mig",
        parent_uuid=f"GPU-{parent}",
        mig_profile=profile,
        share=round(slices / 7, 4),
    )


# 3 full GPUs and one split into 3g + 2g + 2g (the demo's shape, plus one)
DEVICES = [
    gpu(0),
    gpu(1),
    gpu(2),
    mig(3, 0, "3g.20gb", 3),
    mig(3, 1, "2g.10gb", 2),
    mig(3, 2, "2g.10gb", 2),
]


def uuids(devices):
    return [d.uuid for d in devices]


def test_full_gpus_in_index_order():
    assert uuids(choose(GpuRequest(2, "full"), DEVICES, set())) == ["GPU-0", "GPU-1"]
    assert uuids(choose(GpuRequest(1, "full"), DEVICES, {"GPU-0"})) == ["GPU-1"]


def test_any_prefers_the_smallest_mig_slice_and_keeps_whole_gpus_free():
    assert uuids(choose(GpuRequest(1, "any"), DEVICES, set())) == ["MIG-3-1"]
    assert uuids(choose(GpuRequest(4, "any"), DEVICES, set())) == [
        "MIG-3-1",
        "MIG-3-2",
        "MIG-3-0",
        "GPU-0",
    ]


def test_profile_request_gets_only_that_profile():
    assert uuids(choose(GpuRequest(1, "3g.20gb"), DEVICES, set())) == ["MIG-3-0"]
    with pytest.raises(NoFit, match="All 1 3g.20gb MIG slice"):
        choose(GpuRequest(1, "3g.20gb"), DEVICES, {"MIG-3-0"})


def test_no_fit_says_what_is_busy():
    four = [gpu(i) for i in range(4)]
    with pytest.raises(NoFit) as e:
        choose(GpuRequest(1, "any"), four, {"GPU-0", "GPU-1", "GPU-2", "GPU-3"})
    assert str(e.value) == "All 4 GPUs are in use. Retire a server or try again later."
    with pytest.raises(NoFit) as e:
        choose(GpuRequest(2, "full"), four, {"GPU-0", "GPU-1", "GPU-2"}, simulated=True)
    assert str(e.value) == (
        "You asked for 2 simulated GPUs but only 1 of 4 simulated GPUs is free. "
        "Ask for fewer, retire a server or try again later."
    )


def test_partial_fit_hands_out_nothing():
    with pytest.raises(NoFit):
        choose(GpuRequest(3, "full"), DEVICES, {"GPU-2"})


def test_zero_gpus_needs_no_device():
    assert choose(GpuRequest(0), [], set()) == []


@pytest.mark.parametrize(
    "options,expected",
    [
        ({}, GpuRequest(1, "any")),
        ({"gpus": 0}, GpuRequest(0, "any")),
        ({"gpus": "2", "gpu_type": "FULL"}, GpuRequest(2, "full")),
        ({"gpus": 1, "gpu_type": "2g.10gb"}, GpuRequest(1, "2g.10gb")),
        ({"gpus": 1, "gpu_type": " mig "}, GpuRequest(1, "mig")),
    ],
)
def test_parse_request(options, expected):
    assert parse_request(options, 1, DEVICES) == expected


@pytest.mark.parametrize(
    "options,message",
    [
        ({"gpus": -1}, "between 0 and"),
        ({"gpus": True}, "whole number"),
        ({"gpus": "two"}, "whole number"),
        ({"gpus": 1.5}, "whole number"),
        ({"gpus": [1]}, "whole number"),
        ({"gpus": 1, "gpu_type": "4g.20gb"}, "not offered"),
        ({"gpus": 1, "gpu_type": 3}, "must be text"),
        ({"gpus": 4, "gpu_type": "full"}, "3 GPUs in all; you asked for 4"),
        ({"gpus": 10**6}, "between 0 and"),
    ],
)
def test_parse_request_refusals(options, message):
    with pytest.raises(RequestError, match=message):
        parse_request(options, 1, DEVICES)


def test_no_devices_means_default_zero_and_refuses_explicit_gpus():
    assert parse_request({}, 1, []) == GpuRequest(0, "any")
    with pytest.raises(RequestError, match="no GPUs"):
        parse_request({"gpus": 1}, 1, [])


def test_busy_outside_counts_only_devices_no_ds01_container_holds():
    usage = {
        "GPU-0": DeviceUsage("GPU-0", 90.0, 100, (123,)),
        "GPU-1": DeviceUsage("GPU-1", 90.0, 100, (456,)),
        "GPU-2": DeviceUsage("GPU-2", 0.0, 0, ()),
    }
    assert busy_outside(usage, {"GPU-1"}) == {"GPU-0"}


def test_equivalents():
    assert equivalents([gpu(0), mig(3, 0, "3g.20gb", 3)]) == round(1 + 3 / 7, 4)


def container(name, gpus, state="running", created=0, **labels):
    return {
        "Names": [f"/{name}"],
        "State": state,
        "Created": created,
        "Labels": {GPU_LABEL: gpus, "ds01.user": "u", "ds01.project": name, **labels},
    }


def test_table_from_labels():
    table = holders(
        [
            container("a", "GPU-0,MIG-3-1"),
            container("b", "", state="running"),
            container("c", "GPU-1", state="exited"),
            container("d", "GPU-2", state="created"),
        ]
    )
    assert sorted(table) == ["GPU-0", "GPU-2", "MIG-3-1"]
    assert table["GPU-0"].project == "a" and table["GPU-2"].container == "d"


def test_table_keeps_the_older_holder_of_a_doubly_labelled_device():
    table = holders([container("new", "GPU-0", created=20), container("old", "GPU-0", created=10)])
    assert table["GPU-0"].container == "old"


# ---- property: random allocate / release / crash / restart never overlap or leak ----------------

ops = st.lists(
    st.tuples(
        st.sampled_from(["launch", "retire", "crash", "restart"]),
        st.integers(0, 5),
        st.sampled_from(["any", "full", "mig", "2g.10gb"]),
        st.integers(0, 20),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(ops)
def test_random_histories_never_overlap_or_leak(history):
    """Model the hub: containers are the only state; the table is always rebuilt from them."""
    containers: dict[int, dict] = {}  # server id -> container dict
    clock = 0
    for op, count, kind, server in history:
        clock += 1
        if op == "launch" and server not in containers:
            table = holders(containers.values())
            try:
                got = choose(GpuRequest(count, kind), DEVICES, set(table))
            except NoFit:
                continue
            assert not set(uuids(got)) & set(table), "handed out a held device"
            assert len(got) == count
            containers[server] = container(f"s{server}", ",".join(uuids(got)), created=clock)
        elif op == "retire":
            containers.pop(server, None)
        elif op == "crash" and server in containers:
            containers[server]["State"] = "exited"  # poll removes it later; holds nothing now
        elif op == "restart":
            containers = {k: v for k, v in containers.items() if v["State"] != "exited"}
        held = [
            u
            for c in containers.values()
            if c["State"] != "exited"
            for u in c["Labels"][GPU_LABEL].split(",")
            if u
        ]
        assert len(held) == len(set(held)), "a device is held twice"
        free = set(uuids(DEVICES)) - set(holders(containers.values()))
        assert free == set(uuids(DEVICES)) - set(held), "a device leaked"

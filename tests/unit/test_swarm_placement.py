"""Which node and kind a GPU launch asks Swarm for (decided by DS01 under its lock)."""

import pytest

from ds01spawner.gpus.node_settings import mig_kind
from ds01spawner.swarm.placement import pick_node, request_kinds

KINDS = ["NVIDIA-GPU", "NVIDIA-MIG-3G-20GB", "NVIDIA-MIG-1G-5GB", "NVIDIA-MIG-1G-5GB-ME"]


def test_request_kinds_follow_the_single_engine_order():
    assert request_kinds("full", KINDS) == ["NVIDIA-GPU"]
    assert request_kinds("mig", KINDS) == [
        "NVIDIA-MIG-1G-5GB",
        "NVIDIA-MIG-1G-5GB-ME",
        "NVIDIA-MIG-3G-20GB",
    ]
    assert request_kinds("any", KINDS)[-1] == "NVIDIA-GPU"
    assert request_kinds("3g.20gb", KINDS) == ["NVIDIA-MIG-3G-20GB"]
    assert request_kinds("2g.10gb", KINDS) == []  # nobody advertises it
    assert request_kinds("full", KINDS[1:]) == []
    assert mig_kind("1g.5gb+me") == "NVIDIA-MIG-1G-5GB-ME"


def test_pick_node_packs_and_is_deterministic():
    counts = {("n1", "NVIDIA-GPU"): 2, ("n2", "NVIDIA-GPU"): 1, ("n3", "NVIDIA-GPU"): 1}
    names = {"n1": "gpu1", "n2": "gpu3", "n3": "gpu2"}
    assert pick_node(counts, ["NVIDIA-GPU"], 1, names) == ("n3", "NVIDIA-GPU")  # fewest, by name
    assert pick_node(counts, ["NVIDIA-GPU"], 2, names) == ("n1", "NVIDIA-GPU")
    assert pick_node(counts, ["NVIDIA-GPU"], 3, names) is None  # one node per server


def test_pick_node_takes_the_first_kind_with_room():
    counts = {
        ("n1", "NVIDIA-MIG-1G-5GB"): 0,
        ("n1", "NVIDIA-GPU"): 1,
        ("n2", "NVIDIA-MIG-3G-20GB"): 1,
    }
    kinds = request_kinds("any", [k for _, k in counts])
    assert pick_node(counts, kinds, 1) == ("n2", "NVIDIA-MIG-3G-20GB")
    assert pick_node(counts, ["NVIDIA-GPU"], 1) == ("n1", "NVIDIA-GPU")
    with pytest.raises(ValueError):
        pick_node(counts, kinds, 0)

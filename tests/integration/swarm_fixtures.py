"""The session's two-node swarm (harness.swarm), with the base image on both nodes.

One swarm per test session (per xdist worker): loading the 481 MB base image onto a node is the
dominant cost, so it happens once, onto both nodes in parallel. conftest.py imports the fixture so
every module shares it. Skipped, with the reason, only where the machine cannot build it (not root,
no network namespaces); any other failure fails.
"""

from __future__ import annotations

import time

import pytest

from harness.swarm import TwoNodeSwarm, cleanup_leftovers
from harness.swarm_host import netns_unavailable

BASE = "ds01/base:latest"


@pytest.fixture(scope="session")
def two_node_swarm(docker_client):
    reason = netns_unavailable()
    if reason:
        pytest.skip(f"two-node swarm not possible here: {reason}")
    removed = cleanup_leftovers()
    if removed:
        print(f"removed leftovers of interrupted swarm runs: {removed}")
    swarm = TwoNodeSwarm(tmpfs=True)  # image load 16 s vs 28 s on disk, teardown 3 s vs 15 s
    with swarm:
        t = time.monotonic()
        per_node = swarm.load_image(BASE)
        swarm.timings["image_load_s"] = time.monotonic() - t
        swarm.timings.update({f"image_load_{n}_s": v for n, v in per_node.items()})
        yield swarm
    left = swarm.leftovers()
    print(f"two-node swarm timings: { {k: round(v, 2) for k, v in swarm.timings.items()} }")
    assert not left, f"the swarm harness left things behind: {left}"

"""The swarm's GPU broker (spawner.cluster_broker) with the single engine's broker interface:
fed the swarm's nodes by an injected engine (only ``nodes()`` is asked)."""

from __future__ import annotations

import asyncio
import logging

import pytest

from ds01spawner.gpus.allocator import GpuRequest, RequestError
from ds01spawner.gpus.queue import Waiter
from ds01spawner.spawner.cluster_broker import ClusterBroker
from ds01spawner.swarm.tasks import parse_nodes

from .test_swarm_tasks import N1, N2, G, cluster


class Nodes:
    def __init__(self, nodes):
        self._nodes = parse_nodes(nodes)

    async def nodes(self):
        return self._nodes


def broker(n2_state="ready"):
    return ClusterBroker(Nodes(cluster(n2_state)), True, logging.getLogger("t"))


def listing(user, uuids, state="running"):
    return {
        "Id": user,
        "Names": [f"/{user}"],
        "State": state,
        "Labels": {"ds01.user": user, "ds01.gpus": ",".join(uuids)},
    }


def test_a_request_must_fit_on_one_node():
    b = broker()
    request, devices = asyncio.run(b.parse({"gpus": 2, "gpu_type": "full"}, 0))
    assert request == GpuRequest(2, "full") and len(devices) == 4
    with pytest.raises(RequestError, match="the largest node has 2 simulated GPUs"):
        asyncio.run(b.parse({"gpus": 3, "gpu_type": "full"}, 0))


def test_choose_reads_the_table_and_names_the_node():
    b = broker()
    devices, usage = asyncio.run(b.snapshot())
    assert usage == {}
    chosen = b.choose(GpuRequest(1, "full"), [listing("a", [G[0]])], devices, usage)
    assert [d.uuid for d in chosen] == [G[1]] and b.node_of(chosen) == N1
    chosen = b.choose(GpuRequest(2, "full"), [listing("a", [G[0]])], devices, usage)
    assert [d.uuid for d in chosen] == G[2:] and b.node_of(chosen) == N2
    assert b.node_of([]) == ""


def test_a_down_node_offers_nothing():
    b = broker(n2_state="down")
    devices, _ = asyncio.run(b.snapshot())
    assert [d.uuid for d in devices] == G[:2]
    plan = b.plan([Waiter("w", "p", "p", GpuRequest(1, "full"), id=1)], devices, set(G[:2]))
    assert plan.served == {} and plan.kept == {1: []}

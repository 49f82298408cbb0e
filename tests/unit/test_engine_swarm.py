"""The Swarm engine's pure parts: the swarm as the spawner's records and states
(engine.swarm_view), and the cluster's GPUs under DS01's allocation rule with the node rule
(swarm.cluster_gpus). Inputs are Engine API 1.41 dicts (tests/unit/test_swarm_tasks.py)."""

from __future__ import annotations

import pytest

from ds01spawner.engine.base import EXITED, PENDING, RUNNING, Placement, ServerState
from ds01spawner.engine.swarm_view import epoch, server_records, server_state
from ds01spawner.gpus.allocator import GpuRequest, NoFit
from ds01spawner.gpus.queue import Waiter
from ds01spawner.gpus.table import holders
from ds01spawner.swarm import cluster_gpus
from ds01spawner.swarm.tasks import parse_nodes, server_tasks

from .test_swarm_tasks import N1, N2, G, cluster, named, node, service, task

ONE = GpuRequest(1, "full")
TWO = GpuRequest(2, "full")


def view(services, tasks, nodes):
    servers = server_tasks(services, tasks, nodes)
    names = {s["ID"]: f"ds01-{s['Spec']['Labels']['ds01.user']}.p" for s in services}
    return server_records(servers, parse_nodes(nodes), names, {})


def test_placement_has_a_node_default_empty():
    assert Placement().node == "" and Placement(("G",), 1, node=N1).node == N1


def test_epoch_reads_swarm_timestamps():
    assert epoch("2026-11-29T10:00:30.123456789Z") == pytest.approx(1795946430.123456)
    assert epoch("") == 0.0 and epoch("yesterday") == 0.0


def test_records_show_assigned_devices_and_what_pending_servers_reserve():
    nodes = cluster()
    a, b, c = (service(f"s{i}", f"svc{i}", u) for i, u in enumerate(("alice", "bob", "carol")))
    d = service("s3", "svc3", "dave", pinned=N2)
    tasks = [
        task("t0", a, "running", N1, [G[0]], container="c0"),
        task("t1", b, "pending", err="no suitable node (insufficient resources on 2 nodes)"),
        task("t3", d, "failed", N2, [G[2]], exit_code=3, container="c3"),
    ]  # c has no task yet: pending, pinned to n1
    records = {r.labels["ds01.user"]: r for r in view([a, b, c, d], tasks, nodes)}
    got = {u: (r.state, r.labels["ds01.gpus"], r.devices, r.name) for u, r in records.items()}
    assert got == {
        "alice": ("running", G[0], (G[0],), "ds01-alice.p"),
        "bob": ("created", G[1], (), "ds01-bob.p"),  # the one left on n1
        "carol": ("created", "", (), "ds01-carol.p"),  # n1 is full: nothing to show
        "dave": ("exited", "", (), "ds01-dave.p"),
    }
    # the table code sees the reservation as held: a storm is not offered n1's last device twice
    table = holders([r.as_listing() for r in records.values()])
    assert sorted(table) == [G[0], G[1]]


def test_a_server_on_a_down_node_holds_nothing():
    nodes = cluster(n2_state="down")
    s = service("s0", "svc0", "alice", pinned=N2)
    (record,) = view([s], [task("t0", s, "running", N2, [G[2]], container="c0")], nodes)
    assert (record.state, record.labels["ds01.gpus"], record.devices) == ("dead", "", ())


def test_states():
    nodes = cluster(n2_state="down")
    s = service("s0", "svc0", "alice")
    t = service("s1", "svc1", "bob", pinned=N2)

    def state(svc, tk):
        (found,) = server_tasks([svc], [tk], nodes)
        return server_state(found, parse_nodes(nodes))

    assert state(s, task("t", s, "running", N1, [G[0]], container="c")) == ServerState(
        id="s0", status=RUNNING, ip="10.213.0.3", node="gpu1", devices=(G[0],)
    )
    pending = state(s, task("t", s, "pending", err="insufficient resources"))
    assert (pending.status, pending.error) == (PENDING, "insufficient resources")
    exited = state(s, task("t", s, "failed", N1, [G[0]], exit_code=1, container="c"))
    assert (exited.status, exited.exit_code) == (EXITED, 1)
    gone = state(t, task("t", t, "running", N2, [G[2]], container="c"))
    assert (gone.status, gone.exit_code, gone.error) == (EXITED, None, "node gpu1 is down")


def test_inventory_offers_schedulable_nodes_only():
    mig = named("NVIDIA-MIG-3G-20GB", "MIG-1")
    nodes = parse_nodes(
        [
            node(N1, "a", "10.0.0.1", G[:2], extra=[mig]),
            node(N2, "b", "10.0.0.2", G[2:], availability="drain"),
        ]
    )
    inv = cluster_gpus.inventory(nodes, simulated=True)
    got = [(d.uuid, d.kind, d.mig_profile, d.share, d.index) for d in inv.devices]
    assert got == [
        (G[0], "gpu", None, 1.0, "a/0"),
        (G[1], "gpu", None, 1.0, "a/1"),
        ("MIG-1", "mig", "3g.20gb", 0.4286, "a/2"),
    ]
    assert inv.node_of == {G[0]: N1, G[1]: N1, "MIG-1": N1}
    assert inv.names == {N1: "a", N2: "b"}


def _inv():
    return cluster_gpus.inventory(parse_nodes(cluster()))


def test_choose_packs_onto_the_fullest_node_that_fits():
    inv = _inv()
    assert [d.uuid for d in cluster_gpus.choose(ONE, inv.devices, [], inv)] == [G[0]]
    assert [d.uuid for d in cluster_gpus.choose(ONE, inv.devices, [G[2]], inv)] == [G[3]]
    assert [d.uuid for d in cluster_gpus.choose(TWO, inv.devices, [G[0]], inv)] == G[2:]


def test_choose_never_spans_nodes_and_says_why():
    inv = _inv()
    with pytest.raises(NoFit, match="no node has 2 GPUs free together"):
        cluster_gpus.choose(TWO, inv.devices, [G[0], G[2]], inv)
    with pytest.raises(NoFit, match="All 4 GPUs are in use"):
        cluster_gpus.choose(ONE, inv.devices, G, inv)


def test_a_storm_never_gets_one_device_twice():
    """Each launch chooses under the lock from the table the one before it left (its service,
    pending or not, shows what it holds): 4 distinct (node, device) pairs, then NoFit."""
    inv = _inv()
    taken: list[str] = []
    for _ in range(4):
        (d,) = cluster_gpus.choose(ONE, inv.devices, taken, inv)
        taken.append(d.uuid)
    assert sorted(taken) == G
    assert sorted({(inv.node_of[u], u) for u in taken}) == sorted(
        [(N1, G[0]), (N1, G[1]), (N2, G[2]), (N2, G[3])]
    )
    with pytest.raises(NoFit):
        cluster_gpus.choose(ONE, inv.devices, taken, inv)


def test_queue_plan_keeps_the_order_rule_with_the_node_rule():
    inv = _inv()
    first = Waiter("a", "p", "p", TWO, id=1)
    second = Waiter("b", "p", "p", ONE, id=2)
    # one device free on each node: the first in line cannot be served, and keeps both for itself
    plan = cluster_gpus.plan([first, second], inv.devices, [G[0], G[2]], inv)
    assert (plan.served, {k: [d.uuid for d in v] for k, v in plan.kept.items()}) == (
        {},
        {1: [G[1], G[3]], 2: []},
    )
    plan = cluster_gpus.plan([first, second], inv.devices, [G[0]], inv)
    assert {k: [d.uuid for d in v] for k, v in plan.served.items()} == {1: G[2:], 2: [G[1]]}


def test_largest_node():
    inv = _inv()
    assert cluster_gpus.largest_node(TWO, inv.devices, inv) == 2

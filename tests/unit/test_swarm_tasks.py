"""The swarm's nodes, services and tasks as DS01 records (dicts in the Engine API 1.41 shapes)."""

import json
from pathlib import Path

import pytest

from ds01spawner.swarm.tasks import (
    ClusterDevice,
    allocation_table,
    cluster_devices,
    cluster_kinds,
    free_counts,
    free_devices,
    generic_resources,
    parse_node,
    server_tasks,
)

N1, N2 = "n1aaaaaaaaaaaaaaaaaaaaaaa", "n2bbbbbbbbbbbbbbbbbbbbbbb"
G = ["GPU-aaaa0001", "GPU-aaaa0002", "GPU-bbbb0001", "GPU-bbbb0002"]
MIG = "MIG-5e000000-0000-0000-0001-000000000000"


def named(kind, value):
    return {"NamedResourceSpec": {"Kind": kind, "Value": value}}


def node(nid, host, addr, gpus, state="ready", availability="active", extra=()):
    return {
        "ID": nid,
        "Version": {"Index": 12},
        "CreatedAt": "2026-11-29T10:00:00.000000000Z",
        "Spec": {
            "Labels": {"ds01.addr": addr, "ds01.engine": f"tcp://{addr}:2376"},
            "Role": "worker",
            "Availability": availability,
        },
        "Description": {
            "Hostname": host,
            "Platform": {"Architecture": "x86_64", "OS": "linux"},
            "Resources": {
                "NanoCPUs": 16_000_000_000,
                "MemoryBytes": 134_000_000_000,
                "GenericResources": [named("NVIDIA-GPU", g) for g in gpus] + list(extra),
            },
            "Engine": {"EngineVersion": "20.10.24+dfsg1"},
        },
        "Status": {"State": state, "Addr": addr},
    }


def service(sid, name, user, kind="NVIDIA-GPU", count=1, pinned=N1):
    template = {
        "ContainerSpec": {"Image": "ds01/base:latest"},
        "Resources": {
            "Reservations": {
                "GenericResources": [{"DiscreteResourceSpec": {"Kind": kind, "Value": count}}]
            }
            if count
            else {}
        },
        "RestartPolicy": {"Condition": "none", "MaxAttempts": 0},
        "Placement": {"Constraints": [f"node.id=={pinned}"]},
    }
    return {
        "ID": sid,
        "Version": {"Index": 20},
        "Spec": {
            "Name": name,
            "Labels": {"ds01.managed": "true", "ds01.user": user, "ds01.server": "p"},
            "TaskTemplate": template,
            "Mode": {"Replicated": {"Replicas": 1}},
        },
    }


def task(tid, svc, state, node_id="", devices=(), err="", exit_code=0, index=30, container=""):
    status = {
        "Timestamp": "2026-11-29T10:01:00.000000000Z",
        "State": state,
        "Message": {"pending": "pending task scheduling", "running": "started"}.get(state, state),
    }
    if err:
        status["Err"] = err
    if container:
        status["ContainerStatus"] = {"ContainerID": container, "PID": 4242, "ExitCode": exit_code}
    out = {
        "ID": tid,
        "Version": {"Index": index},
        "CreatedAt": "2026-11-29T10:00:30.000000000Z",
        "Spec": svc["Spec"]["TaskTemplate"],
        "ServiceID": svc["ID"],
        "Slot": 1,
        "Status": status,
        "DesiredState": "running",
        "GenericResources": [named("NVIDIA-GPU", d) for d in devices],  # as dockerd returns it
    }
    if node_id:
        out["NodeID"] = node_id
    return out


def cluster(n2_state="ready"):
    return [
        node(N1, "gpu1", "10.213.0.3", G[:2]),
        node(N2, "gpu1", "10.213.0.2", G[2:], state=n2_state),  # same hostname: labels tell
    ]


def storm(n2_state="ready"):
    svcs = [
        service("s1", "ds01-a", "a", pinned=N1),
        service("s2", "ds01-b", "b", pinned=N1),
        service("s3", "ds01-c", "c", pinned=N2),
        service("s4", "ds01-d", "d", pinned=N2),
        service("s5", "ds01-e", "e", pinned=N2),
    ]
    tasks = [
        task("t1", svcs[0], "running", N1, [G[0]], container="c1" * 32),
        task("t2", svcs[1], "starting", N1, [G[1]]),
        task("t3", svcs[2], "running", N2, [G[2]], container="c3" * 32),
        task("t4", svcs[3], "running", N2, [G[3]], container="c4" * 32),
        task("t5", svcs[4], "pending", err="no suitable node (insufficient resources on 2 nodes)"),
    ]
    return svcs, tasks, cluster(n2_state)


def test_generic_resources_named_and_discrete():
    got = generic_resources(
        [
            named("NVIDIA-GPU", "GPU-1"),
            {"DiscreteResourceSpec": {"Kind": "SSD", "Value": 3}},
            {"Other": {}},
            "junk",
        ]
    )
    assert got == ([("NVIDIA-GPU", "GPU-1")], {"SSD": 3})


def test_parse_node_reads_labels_state_and_devices():
    n = parse_node(node(N2, "gpu2", "10.213.0.2", G[2:], extra=[named("NVIDIA-MIG-1G-5GB", MIG)]))
    assert (n.id, n.name, n.addr, n.engine) == (N2, "gpu2", "10.213.0.2", "tcp://10.213.0.2:2376")
    assert n.named == (("NVIDIA-GPU", G[2]), ("NVIDIA-GPU", G[3]), ("NVIDIA-MIG-1G-5GB", MIG))
    assert n.schedulable
    assert not parse_node(node(N2, "h", "a", [], availability="drain")).schedulable
    assert not parse_node(node(N2, "h", "", [])).schedulable  # no ds01.addr: unreachable
    labelled = node(N2, "gpu1", "a", [])
    labelled["Spec"]["Labels"]["ds01.name"] = "node-2"
    assert parse_node(labelled).name == "node-2"


def test_cluster_devices_and_kinds():
    nodes = cluster()
    nodes[1]["Description"]["Resources"]["GenericResources"].append(named("NVIDIA-MIG-1G-5GB", MIG))
    devices = cluster_devices(nodes)
    assert len(devices) == 5
    assert ClusterDevice(N2, "gpu1", "NVIDIA-MIG-1G-5GB", MIG) in devices
    assert cluster_kinds(nodes) == ["NVIDIA-GPU", "NVIDIA-MIG-1G-5GB"]


def test_server_states_from_tasks():
    svcs, tasks, nodes = storm()
    by_user = {s.user: s for s in server_tasks(svcs, tasks, nodes)}
    a, b, e = by_user["a"], by_user["b"], by_user["e"]
    assert (a.state, a.node_id, a.devices, a.container_id) == (
        "running",
        N1,
        (("NVIDIA-GPU", G[0]),),
        "c1" * 32,
    )
    assert a.addr == "10.213.0.3" and a.task_id == "t1"
    assert b.state == "starting" and b.holds_devices
    assert e.state == "pending" and "insufficient resources" in e.reason
    assert e.reserved == {"NVIDIA-GPU": 1} and e.pinned_node == N2 and not e.holds_devices


def test_a_storm_never_double_allocates_and_pending_reserves():
    svcs, tasks, nodes = storm()
    servers = server_tasks(svcs, tasks, nodes)
    table = allocation_table(servers, nodes)
    assert sorted(table) == sorted([(N1, G[0]), (N1, G[1]), (N2, G[2]), (N2, G[3])])
    assert len({s.service_id for s in table.values()}) == 4
    assert free_devices(nodes, servers) == []
    assert free_counts(nodes, servers) == {(N1, "NVIDIA-GPU"): 0, (N2, "NVIDIA-GPU"): 0}
    # a retire on node 1 frees its device; node 2's pending launch does not take it
    done = [task("t1", svcs[0], "complete", N1, [G[0]], exit_code=0, container="c1" * 32)]
    servers = server_tasks(svcs, done + tasks[1:], nodes)
    assert [d.uuid for d in free_devices(nodes, servers)] == [G[0]]
    assert free_counts(nodes, servers) == {(N1, "NVIDIA-GPU"): 1, (N2, "NVIDIA-GPU"): 0}
    exited = next(s for s in servers if s.user == "a")
    assert (exited.state, exited.exit_code) == ("exited", 0)


def test_pending_reservation_is_subtracted_from_its_node():
    svcs, tasks, nodes = storm()
    # node 2's first server retired: its device is free, but e (pending on node 2) gets it first
    done = task("t3", svcs[2], "shutdown", N2, [G[2]], exit_code=143, container="c3" * 32)
    servers = server_tasks(svcs, [tasks[0], tasks[1], done, tasks[3], tasks[4]], nodes)
    assert [d.uuid for d in free_devices(nodes, servers)] == [G[2]]
    assert free_counts(nodes, servers) == {(N1, "NVIDIA-GPU"): 0, (N2, "NVIDIA-GPU"): 0}


def test_a_lost_node_marks_its_servers_gone_and_frees_nothing_there():
    svcs, tasks, nodes = storm(n2_state="down")
    servers = {s.user: s for s in server_tasks(svcs, tasks, nodes)}
    assert servers["c"].state == "gone" and "gpu1 is down" in servers["c"].reason
    assert servers["e"].state == "gone"  # pinned to the lost node: it can never start
    assert servers["a"].state == "running"
    table = allocation_table(servers.values(), nodes)
    assert sorted(table) == [(N1, G[0]), (N1, G[1])]
    # node 2's devices are not offered at all
    assert free_counts(nodes, servers.values()) == {(N1, "NVIDIA-GPU"): 0}
    # the node left the swarm altogether
    servers = server_tasks(svcs, tasks, nodes[:1])
    assert {s.user: s.state for s in servers}["d"] == "gone"


@pytest.mark.parametrize("n2_state", ["unknown", "disconnected"])
def test_a_node_not_heard_from_for_a_moment_keeps_its_servers(n2_state):
    """After a manager restart every node is "unknown" until its next heartbeat, and a network
    blip makes one "disconnected": neither retires a server (found in review)."""
    svcs, tasks, nodes = storm(n2_state=n2_state)
    servers = {s.user: s for s in server_tasks(svcs, tasks, nodes)}
    assert servers["c"].state == "running" and servers["d"].state == "running"
    assert servers["e"].state == "pending"  # still waits for its pinned node
    table = allocation_table(servers.values(), nodes)
    assert (N2, G[2]) in table and (N2, G[3]) in table  # still held
    assert (N2, "NVIDIA-GPU") not in free_counts(nodes, servers.values())  # nothing offered there


def test_orphaned_and_newest_task_and_foreign_services():
    svcs, tasks, nodes = storm()
    old = task("t0", svcs[0], "failed", N1, [G[0]], err="task: non-zero exit (1)", index=5)
    orphan = task("t9", svcs[3], "orphaned", N2, [G[3]], index=99)
    foreign = service("sx", "other", "x")
    foreign["Spec"]["Labels"] = {"ds01.user": "mallory"}  # not managed: ignored
    servers = server_tasks(svcs + [foreign], [old] + tasks + [orphan], nodes)
    by_user = {s.user: s for s in servers}
    assert by_user["a"].state == "running"  # the newest task wins
    assert by_user["d"].state == "gone"
    assert "mallory" not in by_user
    assert server_tasks(svcs, tasks, nodes, accept=lambda s: s["ID"] == "s1")[0].user == "a"
    nothing = server_tasks([service("sn", "ds01-n", "n")], [], nodes)
    assert (nothing[0].state, nothing[0].reason) == ("pending", "no task yet")


def test_a_task_swarm_shuts_down_is_stopping_and_still_holds_its_device():
    svcs, tasks, nodes = storm()
    shutting = dict(tasks[2], DesiredState="shutdown")  # node 2 came back after being lost
    servers = server_tasks(svcs, [tasks[0], tasks[1], shutting, tasks[3], tasks[4]], nodes)
    c = next(s for s in servers if s.user == "c")
    assert c.state == "stopping" and c.holds_devices
    assert (N2, G[2]) in allocation_table(servers, nodes)


def test_the_api_reference_name_of_assigned_resources_is_read_too():
    svcs, tasks, nodes = storm()
    t = dict(tasks[0])
    t["AssignedGenericResources"] = t.pop("GenericResources")
    servers = server_tasks(svcs, [t], nodes)
    assert next(s for s in servers if s.user == "a").devices == (("NVIDIA-GPU", G[0]),)


def test_a_real_capture_from_dockerd_20_10():
    """Shapes as a real engine returns them (tests/unit/swarm_capture.json, see its _about)."""
    data = json.loads((Path(__file__).parent / "swarm_capture.json").read_text())
    nodes, services, tasks = data["nodes"], data["services"], data["tasks"]
    (node_id,) = [n["ID"] for n in nodes]
    servers = {s.user: s for s in server_tasks(services, tasks, nodes)}
    assert {u: s.state for u, s in servers.items()} == {
        "alice": "running",
        "bob": "running",
        "carol": "pending",
        "dave": "running",
    }
    assert "insufficient resources" in servers["carol"].reason
    assert servers["carol"].reserved == {"NVIDIA-GPU": 1}
    assert servers["alice"].addr == "127.0.0.1" and len(servers["alice"].container_id) == 64
    table = allocation_table(servers.values(), nodes)
    assert sorted((k, v.user) for k, v in table.items()) == [
        ((node_id, "GPU-p0001"), "alice"),
        ((node_id, "GPU-p0002"), "bob"),
    ]
    assert cluster_kinds(nodes) == ["NVIDIA-GPU", "NVIDIA-MIG-1G-5GB"]
    # the GPU is taken and carol waits for one: only the MIG slice is offered
    assert free_counts(nodes, servers.values()) == {
        (node_id, "NVIDIA-GPU"): 0,
        (node_id, "NVIDIA-MIG-1G-5GB"): 1,
    }
    # the image's ENV named a device; the service's void and Swarm's assignment win
    env = data["container_env"]
    assert "DOCKER_RESOURCE_NVIDIA-GPU=GPU-p0001" in env["ds01p-alice-proj-ff128a5d2e"]
    # (captured when the other kinds were set to "void"; now they are set empty, which the
    # runtime reads as "nothing" without voiding the requested kind: see service_spec._env)
    dave = [e for e in env["ds01p-dave-proj-c9fa3e9dd6"] if e.startswith("DOCKER_RESOURCE_")]
    assert dave and not any("GPU-" in e for e in dave)
    assert not any("evil" in e or e.endswith("=all") for v in env.values() for e in v)

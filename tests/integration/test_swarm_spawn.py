"""The Swarm mode through the real hub's REST API, on the real two-node swarm (2 simulated GPUs per
node as generic resources; harness.swarm): a storm never puts two servers on one (node, device),
a retire serves the next in line on either node, a hub restart keeps the servers and the table,
and a lost node frees its devices while its users relaunch on the other node with the same files
(the workspace is a bind mount of a host folder both engines see). One hub on the session's swarm
(the GPU queue on); the node-loss test has a swarm and a hub of its own.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import random
import signal
import time

import pytest

from ds01spawner.gpus.queue import ordinal

from .hub import Hub, wait_for
from .test_gpu_queue import progress_until, queue_api
from .test_images import progress_events, write_project
from .test_network import SLOW

pytestmark = pytest.mark.integration

ONE = {"gpus": 1, "gpu_type": "full"}
PORTS = 12  # the test hub's server_ports: enough for the storm (4 + 1), small enough to fill


@pytest.fixture(scope="module")
def swarm_hub(two_node_swarm, tmp_path_factory):
    prefix = "ds01sw" + str(int(time.time() * 1000))[-6:]
    env = {"DS01_TEST_GPU_QUEUE": "300", "DS01_TEST_SLOW_SPAWN_TIMEOUT": "0"}
    base = random.randrange(20000, 29000, 100)  # a small range, all of it taken on n2 by test_e
    env["DS01_TEST_SPAWNER"] = json.dumps({"server_ports": f"{base}-{base + PORTS - 1}"})
    hub = Hub(tmp_path_factory.mktemp(prefix), prefix, env, swarm=two_node_swarm)
    hub.start()
    yield hub
    hub.shutdown()
    for s in servers(two_node_swarm, hub):
        two_node_swarm.manager.remove_service(s["ID"])


def servers(swarm, hub) -> list[dict]:
    """This hub's services on the swarm."""
    found = swarm.manager.services(filters={"label": "ds01.managed=true"})
    return [s for s in found if s["Spec"]["Name"].startswith(hub.prefix + "-")]


def placed(swarm, hub, user: str) -> tuple[str, str, str]:
    """(node, device from the task, device in the container's /proc/1/environ) of user/p."""
    (service,) = [s for s in servers(swarm, hub) if s["Spec"]["Labels"]["ds01.user"] == user]
    task = swarm.running_task(service["ID"])
    node, container = swarm.task_container(task)
    assigned = [
        r["NamedResourceSpec"]["Value"]
        for r in task.get("GenericResources") or task.get("AssignedGenericResources") or []
        if "NamedResourceSpec" in r
    ]
    exec_id = node.client.exec_create(container, ["cat", "/proc/1/environ"])["Id"]
    raw = node.client.exec_start(exec_id).decode()
    env = dict(v.split("=", 1) for v in raw.split("\0") if "=" in v)
    return node.name, ",".join(assigned), env.get("DOCKER_RESOURCE_NVIDIA-GPU", "")


def ready(hub, users) -> list[str]:
    return [u for u in users if (hub.server_model(u, "p") or {}).get("ready")]


def waiting(hub) -> list[str]:
    return [w["user"] for w in queue_api(hub, "admin")["waiting"]]


def test_a_storm_gets_four_distinct_devices_and_two_places_in_line(swarm_hub, two_node_swarm):
    hub, swarm = swarm_hub, two_node_swarm
    users = [f"storm{i}" for i in range(6)]
    for u in users:
        hub.ensure_user(u)
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda u: hub.request_server(u, "p", ONE), users))
    assert [r.status_code for r in answers] == [202] * 6, [r.text for r in answers]
    wait_for(lambda: len(ready(hub, users)) == 4, 120, "4 servers ready")
    lined = wait_for(lambda: waiting(hub) if len(waiting(hub)) == 2 else None, 60, "2 in line")
    runners = ready(hub, users)
    assert sorted(runners + lined) == users
    pairs = []
    for u in runners:
        node, assigned, seen = placed(swarm, hub, u)
        assert assigned and seen == assigned, (u, node, assigned, seen)
        pairs.append((node, assigned))
    assert len(set(pairs)) == 4 and {n for n, _ in pairs} == {"n1", "n2"}, pairs
    # nobody waiting holds a service, so no 5th server exists on any device
    assert len(servers(swarm, hub)) == 4
    for i, u in enumerate(lined, 1):
        progress_until(hub, u, "p", f"{ordinal(i)} in line (4 of 4 simulated GPUs busy)")


def test_b_a_retire_serves_the_next_in_line_on_either_node(swarm_hub, two_node_swarm):
    hub, swarm = swarm_hub, two_node_swarm
    runners = ready(hub, [f"storm{i}" for i in range(6)])
    where = {u: placed(swarm, hub, u)[:2] for u in runners}
    by_node = {}
    for u, (node, _dev) in where.items():
        by_node.setdefault(node, u)
    for node in ("n2", "n1"):  # one retire on each node
        first = waiting(hub)[0]
        freed = where[by_node[node]]
        t = time.monotonic()
        hub.stop_server(by_node[node], "p")
        last = hub.follow_progress(first, "p")
        assert last.get("ready"), last
        node_now, assigned, seen = placed(swarm, hub, first)
        assert (node_now, assigned) == freed and seen == assigned
        print(f"retire on {node} -> next in line ready in {time.monotonic() - t:.2f} s")
    assert waiting(hub) == [] and len(servers(swarm, hub)) == 4


def test_d_a_hub_restart_keeps_the_servers_and_the_table(swarm_hub, two_node_swarm):
    hub, swarm = swarm_hub, two_node_swarm
    users = [f"storm{i}" for i in range(6)]
    before = {s["ID"] for s in servers(swarm, hub)}
    runners = ready(hub, users)
    pairs = {u: placed(swarm, hub, u)[:2] for u in runners}
    hub.signal(signal.SIGTERM)
    hub.start()
    # the restarted hub polled them (at startup): none was retired or re-created
    wait_for(lambda: sorted(ready(hub, users)) == sorted(runners), 60, "servers still ready")
    assert {s["ID"] for s in servers(swarm, hub)} == before
    # the table is read back from the tasks: a new launch waits, it is not put on a used device
    r = hub.request_server("late", "p", ONE)
    assert r.status_code == 202, r.text
    progress_until(hub, "late", "p", "1st in line (4 of 4 simulated GPUs busy)")
    assert len(servers(swarm, hub)) == 4
    leaving = runners[0]
    hub.stop_server(leaving, "p")
    assert hub.follow_progress("late", "p").get("ready")
    assert placed(swarm, hub, "late")[:2] == pairs[leaving]
    for u in runners[1:] + ["late"]:
        hub.stop_server(u, "p")
    wait_for(lambda: not servers(swarm, hub), 30, "no service left")


IMPOSTOR = """
import socket, sys, threading
def serve(s):
    while True:
        c, _ = s.accept()
        c.recv(65536)
        c.sendall(b"HTTP/1.1 200 OK\\r\\nContent-Length: 8\\r\\n\\r\\nimpostor")
        c.close()
for port in range(int(sys.argv[2]), int(sys.argv[3]) + 1):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((sys.argv[1], port))
    s.listen(16)
    threading.Thread(target=serve, args=(s,), daemon=True).start()
print("listening", flush=True)
threading.Event().wait()
"""


def test_e_a_port_taken_on_the_node_is_refused_there(swarm_hub, two_node_swarm):
    """Alice's process on node n2 (a host-network container with a student's uid, as a server
    could run) listens on every port of the hub's server_ports on n2's address; Bob's launch
    placed on n2 is answered by it, and the port-owner check, run on n2 by the helper
    container, refuses it. Without the impostor the same placement succeeds, with the device
    the refused launch had (no GPU leaked)."""
    hub, swarm = swarm_hub, two_node_swarm
    n2 = swarm.node("n2")
    n2_name = swarm.manager.inspect_node(n2.node_id)["Description"]["Hostname"]
    first, last = (
        int(p) for p in json.loads(hub.env["DS01_TEST_SPAWNER"])["server_ports"].split("-")
    )
    fillers = ["pfill", "pfill2"]
    for u in fillers:  # packing: n1's two devices, so the next server goes to n2
        hub.start_server(u, "p", ONE)
        assert placed(swarm, hub, u)[0] == "n1"
    image = n2.client.inspect_image("ds01/base:latest")["Id"]
    alice = n2.client.create_container(
        image,
        entrypoint=["python3", "-c", IMPOSTOR, n2.addr, str(first), str(last)],
        user="4242",
        name=f"{hub.prefix}_alice",
        host_config=n2.client.create_host_config(network_mode="host"),
    )["Id"]
    try:
        n2.client.start(alice)
        wait_for(lambda: b"listening" in n2.client.logs(alice), 30, "the impostor to listen")
        write_project(hub, "bob", "slow", {"Dockerfile": SLOW})  # never listens itself
        r = hub.request_server("bob", "slow", ONE)
        assert r.status_code in (201, 202), r.text
        events = progress_events(hub, "bob", "slow")
        assert events[-1].get("failed"), events[-1]
        assert "Another program took your server's network port" in events[-1]["message"]
        log = hub.log_path.read_text(errors="replace")
        assert "of user=bob server=slow is held by socket inode" in log
        assert f"on node {n2_name}, not by its container" in log, hub.log_tail()
        r = hub.session.get(f"{hub.url}/user/bob/slow/", timeout=10)
        assert "impostor" not in r.text  # no route to Alice
        assert hub.server_model("bob", "slow") is None
        wait_for(
            lambda: (
                not [s for s in servers(swarm, hub) if s["Spec"]["Labels"]["ds01.user"] == "bob"]
            ),
            30,
            "bob's service removed",
        )
        helpers = n2.client.containers(all=True, filters={"label": "ds01.probe"})
        assert helpers == []  # the helper is gone too
    finally:
        n2.client.remove_container(alice, force=True)
    # the control: n2 again, now with BOTH its devices (the refused launch's one was released),
    # and the check passes
    hub.start_server("bob", "p", {"gpus": 2, "gpu_type": "full"})
    node, assigned, _seen = placed(swarm, hub, "bob")
    assert node == "n2" and len(assigned.split(",")) == 2, (node, assigned)
    checked = [
        line
        for line in hub.log_path.read_text().splitlines()
        if "is held by its server's container" in line
    ]
    assert any(f"on node {n2_name} is held" in line for line in checked), checked
    print(checked[-1])
    for u in [*fillers, "bob"]:
        hub.stop_server(u, "p")


def _node_and_container(user: str, swarm, hub):
    (service,) = [s for s in servers(swarm, hub) if s["Spec"]["Labels"]["ds01.user"] == user]
    return swarm.task_container(swarm.running_task(service["ID"]))


@pytest.fixture(scope="module")
def doomed_swarm(two_node_swarm):
    """A swarm of this module's own for the node-loss test (its node 2 is killed), so that the
    session's swarm stays whole for the other modules."""
    from harness.swarm import TwoNodeSwarm

    from .swarm_fixtures import BASE

    swarm = TwoNodeSwarm(tmpfs=True)
    with swarm:
        manager = swarm.manager
        version = manager.inspect_swarm()["Version"]["Index"]
        # a node is marked down after missing heartbeats: 1 s instead of 5 s keeps the test short
        spec = manager.create_swarm_spec(dispatcher_heartbeat_period=10**9)
        manager.update_swarm(version, spec)
        swarm.load_image(BASE)
        yield swarm
    assert not swarm.leftovers()


def test_c_a_lost_node_frees_its_devices_and_the_user_relaunches_elsewhere(
    doomed_swarm, tmp_path_factory
):
    swarm = doomed_swarm
    prefix = "ds01sx" + str(int(time.time() * 1000))[-6:]
    hub = Hub(tmp_path_factory.mktemp(prefix), prefix, {}, swarm=swarm).start()
    try:
        users = [f"node{i}" for i in range(4)]
        for u in users:  # packing: n1's two devices first, then n2's
            hub.start_server(u, "p", ONE)
        on = {u: placed(swarm, hub, u)[0] for u in users}
        lost = sorted(u for u in users if on[u] == "n2")
        assert len(lost) == 2, on
        node, container = _node_and_container(lost[0], swarm, hub)
        mounts = node.client.inspect_container(container)["Mounts"]
        (ws,) = [m for m in mounts if m["Destination"] == "/workspace"]
        assert ws["Type"] == "bind" and ws["Source"].startswith(str(hub.workspaces)), ws
        exec_id = node.client.exec_create(container, ["sh", "-c", "echo kept > /workspace/f"])
        node.client.exec_start(exec_id["Id"])

        t0 = time.monotonic()
        os.kill(swarm.node("n2").pid, signal.SIGKILL)
        n2_id = swarm.node("n2").node_id
        wait_for(
            lambda: swarm.manager.inspect_node(n2_id)["Status"]["State"] != "ready",
            60,
            "the manager to see node 2 down",
        )
        down = time.monotonic()
        wait_for(
            lambda: all(hub.server_model(u, "p") is None for u in lost),
            30,
            "the hub to report node 2's servers stopped",
        )
        stopped = time.monotonic()
        print(
            f"node 2 killed -> marked down {down - t0:.1f} s -> servers stopped "
            f"{stopped - down:.1f} s later (poll interval 2 s)"
        )
        assert stopped - down <= 2 + 5  # one poll interval, and the poll's own calls
        left = {s["Spec"]["Labels"]["ds01.user"] for s in servers(swarm, hub)}
        assert left == set(users) - set(lost)  # their services were removed at the poll
        # n2's devices are not offered (its node is down); a freed n1 device takes the relaunch
        keep = [u for u in users if u not in lost]
        hub.stop_server(keep[0], "p")
        hub.start_server(lost[0], "p", ONE)
        node, container = _node_and_container(lost[0], swarm, hub)
        assert node.name == "n1"
        exec_id = node.client.exec_create(container, ["cat", "/workspace/f"])["Id"]
        assert node.client.exec_start(exec_id).decode().strip() == "kept"
        # the cluster is full now (n2 down): the next launch is refused or waits, never doubled
        r = hub.request_server(lost[1], "p", ONE)
        assert r.status_code == 429, r.text
    finally:
        hub.shutdown()

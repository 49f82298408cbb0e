"""The two-node swarm harness (harness.swarm) does what the Swarm mode's tests will rely on:
GPUs as generic resources on distinct (node, device) pairs with a pending task when none is free,
bind mounts of host folders on both nodes, host-network servers reachable from the host at their
node's address only, and a teardown that leaves nothing behind (also after a killed run).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import requests
from docker.types import ContainerSpec, Mount, Placement, Resources, RestartPolicy, TaskTemplate

from harness.swarm import TwoNodeSwarm, assigned_resources, cleanup_leftovers, wait_for
from harness.swarm_host import RUN_ROOT, leftovers, netns_unavailable, sh

from .swarm_fixtures import BASE

pytestmark = pytest.mark.integration

SLEEP = ["python3", "-c", "import time; time.sleep(600)"]


def create(
    swarm,
    name: str,
    command: list[str],
    gpu: bool = False,
    node: str | None = None,
    mounts: list[Mount] | None = None,
) -> str:
    """A one-task service as the Swarm mode makes them: host network, init, 1 s stop grace,
    no restart, the image as present on the node (docker-py never resolves it in a registry)."""
    spec = ContainerSpec(
        BASE, command=command, init=True, stop_grace_period=10**9, mounts=mounts or []
    )
    template = TaskTemplate(
        spec,
        resources=Resources(generic_resources={"NVIDIA-GPU": 1}) if gpu else None,
        restart_policy=RestartPolicy(condition="none"),
        placement=Placement(constraints=[f"node.labels.ds01.node=={node}"]) if node else None,
        networks=["host"],
    )
    return swarm.manager.create_service(template, name=name, labels={"ds01.test": "1"})["ID"]


def remove_all(swarm) -> None:
    """Remove this module's services (their tasks stop in the background: nothing waits on that)."""
    for s in swarm.manager.services(filters={"label": "ds01.test=1"}):
        swarm.manager.remove_service(s["ID"])


def assigned_gpu(swarm, task: dict) -> tuple[str, str, str]:
    """(node, GPU from the task's assigned generic resources, GPU the container's PID 1 sees)."""
    node, container = swarm.task_container(task)
    assigned = assigned_resources(task)
    exec_id = node.client.exec_create(container, ["cat", "/proc/1/environ"])["Id"]
    env = dict(v.split("=", 1) for v in node.client.exec_start(exec_id).decode().split("\0") if v)
    assert len(assigned) == 1, task
    return node.name, assigned[0], env.get("DOCKER_RESOURCE_NVIDIA-GPU", "")


def test_gpus_are_distinct_and_the_fifth_waits(two_node_swarm):
    s = two_node_swarm
    starts, pairs = [], []
    for i in range(4):
        t = time.monotonic()
        create(s, f"gpu{i}", SLEEP, gpu=True)
        task = s.running_task(f"gpu{i}")
        starts.append(time.monotonic() - t)
        node, assigned, seen = assigned_gpu(s, task)
        assert seen == assigned, f"gpu{i}: container sees {seen!r}, swarm assigned {assigned!r}"
        assert assigned in s.node(node).gpus
        pairs.append((node, assigned))
    assert len(set(pairs)) == 4, pairs
    assert {n for n, _ in pairs} == {"n1", "n2"}

    create(s, "gpu4", SLEEP, gpu=True)

    def waiting():
        errors = [(t, t["Status"].get("Err", "")) for t in s.tasks("gpu4")]
        return [t for t, err in errors if "insufficient resources" in err]

    pending = wait_for(waiting, 15, "gpu4 pending with insufficient resources")
    assert pending[0]["Status"]["State"] == "pending"

    t = time.monotonic()
    s.manager.remove_service("gpu0")
    node, assigned, seen = assigned_gpu(s, s.running_task("gpu4"))
    freed = time.monotonic() - t
    assert (node, assigned) == pairs[0] and seen == assigned
    print(
        f"service create -> Running: {[round(x, 2) for x in starts]} s; "
        f"remove -> pending one Running: {freed:.2f} s"
    )
    remove_all(s)


def test_bind_mount_and_node_address(two_node_swarm, tmp_path):
    s = two_node_swarm
    ws = tmp_path / "ws"
    ws.mkdir()
    ports = {"n1": 18081, "n2": 18082}
    for name, node in s.nodes.items():
        code = (
            f"import os; open('/ws/from-{name}.txt', 'w').write(os.uname().nodename); "
            f"os.execvp('python3', ['python3', '-m', 'http.server', '{ports[name]}', "
            f"'--bind', '{node.addr}', '--directory', '/ws'])"
        )
        create(
            s,
            f"web-{name}",
            ["python3", "-c", code],
            node=name,
            mounts=[Mount("/ws", str(ws), type="bind")],
        )
    for name in s.nodes:
        s.running_task(f"web-{name}")
        # (2) the file a task wrote on each node is in the host folder, written on that node
        f = ws / f"from-{name}.txt"
        assert wait_for(lambda f=f: f.exists() and f.read_text(), 30, f"{f}") == s.node(name).netns

    http = requests.Session()
    http.trust_env = False  # no proxy: the node addresses are only reachable directly
    n1, n2 = s.node("n1"), s.node("n2")
    url = f"http://{n2.addr}:{ports['n2']}/from-n2.txt"
    r = wait_for(lambda: http.get(url, timeout=2), 30, f"{url} answers")
    # (3) node 2's host-network server answers at node 2's address ...
    assert r.status_code == 200 and r.text == n2.netns
    # ... and nowhere else: not on the host's loopback, not at node 1's address
    for other in ("127.0.0.1", n1.addr):
        with pytest.raises(requests.ConnectionError):
            http.get(f"http://{other}:{ports['n2']}/from-n2.txt", timeout=2)
    remove_all(s)


def test_teardown_and_leftover_cleanup_leave_nothing():
    reason = netns_unavailable()
    if reason:
        pytest.skip(f"two-node swarm not possible here: {reason}")
    mig = {
        "n1": ["MIG-5c2f0e4a-1d3b-5e6f-8a9b-0c1d2e3f4a5b"],
        "n2": [f"MIG-9e8d7c6b-5a4f-5e3d-8c2b-1a0f9e8d7c6{i}" for i in range(2)],
    }
    with TwoNodeSwarm(gpus=mig) as s:
        present = s.leftovers()  # while up: its namespaces and engines (so the check can fail)
        assert any("netns" in x for x in present) and any("process" in x for x in present)
        # a subnet in use on the host (here: this swarm's host<->n1 link) is refused up front
        taken = f"{s.node('n1').host_addr}/24"
        clash = TwoNodeSwarm(subnets=[taken, "10.213.250.0/24", "10.213.251.0/24"])
        with pytest.raises(RuntimeError, match="in use on the host"), clash:
            pass
        assert clash.leftovers() == []
        for name, n in s.nodes.items():
            # traffic only to loopback and the veth addresses: no default route in a node
            routes = sh("ip", "-n", n.netns, "-4", "route").stdout
            assert "default" not in routes and n.addr in routes, routes
            res = s.manager.inspect_node(n.node_id)["Description"]["Resources"]["GenericResources"]
            assert sorted(r["NamedResourceSpec"]["Value"] for r in res) == mig[name]
    assert s.leftovers() == [], s.leftovers()

    # a run whose owner died (kill -9 of the test process): the next run's cleanup removes it
    killed = TwoNodeSwarm()
    try:
        killed.up()
        (RUN_ROOT / killed.run_id / "owner").write_text("999999999 0")  # no such process
        assert killed.run_id in cleanup_leftovers()
        assert leftovers(killed.run_id) == []
    finally:
        killed.down()
    assert Path("/run/netns", f"{killed.run_id}-n1").exists() is False

"""A real two-node Docker Swarm on this one machine, for tests and benchmarks (issue 17).

``TwoNodeSwarm`` is a context manager: on enter it builds the swarm, on exit (also after a failed
step, Ctrl-C or SIGTERM) it removes everything it made; ``cleanup_leftovers()`` (harness.swarm_host)
removes what an earlier, killed run left. The default engine is never put into swarm mode and is
only read (``docker save`` of the images a test loads onto the nodes).

Layout (names from a run id ``dsw`` + 5 hex digits, see harness/swarm_host.py)::

    host (default engine untouched)
      |- veth <id>h1 10.213.A.1 <-> <id>c1 10.213.A.2  netns <id>-n1: dockerd node 1, MANAGER
      |                                                (runs servers too), <id>x1 10.213.C.1
      |- veth <id>h2 10.213.B.1 <-> <id>c2 10.213.B.2  netns <id>-n2: dockerd node 2, worker,
                                                       <id>x2 10.213.C.2
    swarm traffic (2377, 7946, 4789) only on C (x1 <-> x2); no default route in the namespaces.

A, B, C: the first three free /24s of 10.213.0.0/16 (``subnets=`` picks them; one in use on the
host is refused). A host-network server on node k answers the host at 10.213.A/B.2 and nowhere else.

Each dockerd: ``nsenter --net=/run/netns/<ns> -- unshare --uts`` (own hostname ``<id>-nK``), own
data-root (``/var/lib/dsw/<id>/nK``, or a tmpfs with ``tmpfs=True``), exec-root, unix socket
(``/run/dsw/<id>/nK.sock``), pidfile, ``--bridge=none --iptables=false --ip-masq=false``,
``--cgroup-parent /<id>-nK``, ``DOCKER_SERVICE_PREFER_OFFLINE_IMAGE=1`` (a worker never tries to
pull), an empty ``--config-file`` and one ``--node-generic-resource NVIDIA-GPU=<uuid>`` per
simulated GPU (default 2 per node, ``GPU-<id>-nK-<i>``; ``gpus=`` takes any names, e.g. MIG ones).

Node labels (how the spawner finds a node's address and engine API):

- ``ds01.node``   = ``n1`` | ``n2``
- ``ds01.addr``   = the address the host (the hub) reaches that node's host-network servers at
- ``ds01.engine`` = that node's engine API, ``unix:///run/dsw/<id>/nK.sock``

Swarm facts this relies on (dockerd 20.10.24 here): the task's assigned devices are in the task's
``GenericResources`` (``AssignedGenericResources`` on newer engines: ``assigned_resources`` reads
both); the container sees ``DOCKER_RESOURCE_NVIDIA-GPU=<uuid>``; the ``ingress`` network is
removed after ``swarm init`` (no routing mesh, host networking only).

Measured on the 2-core CI machine shared with other test runs (load average ~8; dockerd 20.10.24,
cgroup v1, ds01/base:latest 481 MB); commands in docs/testing.md:

- setup (2 netns, 3 veths, 2 dockerds, init, join, labels): 0.5-1.2 s;
- base image onto both nodes, tmpfs data-roots: one ``docker save`` teed to both loads 16-17 s,
  a save|load per node at once 16-21 s, one node after the other 23-26 s (on disk: 28 / 23-35 /
  26-44 s), hence tmpfs + tee, once per test session (``tests/integration/swarm_fixtures.py``);
- service create -> task Running (image present): 0.33-0.45 s; a pending GPU task starts
  3.7 s after the service holding its device is removed (20.10 waits 2 s before it stops a
  host-network task);
- teardown: 3-4 s (worker stopped first: ~3 s; manager ~1 s); 15-18 s with data-roots on disk
  (deleting the unpacked image); ~9.7 s while ``ingress`` existed (each dockerd waited 5 s for it).
"""

from __future__ import annotations

import concurrent.futures
import fcntl
import json
import os
import secrets
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import docker
import requests

from . import swarm_host as hostops
from .hub import wait_for

__all__ = ["TwoNodeSwarm", "SwarmNode", "assigned_resources", "cleanup_leftovers", "wait_for"]


@dataclass
class SwarmNode:
    """One node: where it lives on the host and how to reach it."""

    name: str  # n1 | n2
    run_id: str
    addr: str  # node end of the host veth: where the host reaches its host-network servers
    host_addr: str  # host end of that veth
    swarm_addr: str  # on the node1 <-> node2 link
    gpus: list[str]
    pid: int | None = None
    node_id: str = ""
    client: docker.APIClient | None = field(default=None, repr=False)

    @property
    def netns(self) -> str:
        return f"{self.run_id}-{self.name}"

    @property
    def run_dir(self) -> Path:
        return hostops.RUN_ROOT / self.run_id

    @property
    def exec_root(self) -> Path:
        return self.run_dir / self.name

    @property
    def sock(self) -> Path:
        return self.run_dir / f"{self.name}.sock"

    @property
    def engine(self) -> str:
        return f"unix://{self.sock}"

    @property
    def data_root(self) -> Path:
        return hostops.STATE_ROOT / self.run_id / self.name

    @property
    def log(self) -> Path:
        return hostops.STATE_ROOT / self.run_id / f"{self.name}.log"

    def log_tail(self, n: int = 15) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"


class TwoNodeSwarm:
    """``with TwoNodeSwarm() as s:`` a manager (n1) and a worker (n2) with simulated GPUs.

    ``gpus``: {"n1": [...], "n2": [...]} generic-resource names (default ``gpus_per_node`` each);
    ``subnets``: three networks (host<->n1, host<->n2, n1<->n2), default the first free ones of
    ``pool``; ``tmpfs``: data-roots on tmpfs (faster image loads, costs RAM); ``keep_data``: keep
    the data-roots (and dockerd logs) under /var/lib/dsw/<id> after teardown.
    """

    def __init__(
        self,
        gpus: dict[str, list[str]] | None = None,
        gpus_per_node: int = 2,
        subnets: list[str] | None = None,
        pool: str = "10.213.0.0/16",
        tmpfs: bool = False,
        keep_data: bool = False,
    ) -> None:
        self.run_id = f"{hostops.FAMILY}{secrets.token_hex(3)[:5]}"
        self._gpus = gpus or {
            n: [f"GPU-{self.run_id}-{n}-{i}" for i in range(gpus_per_node)] for n in ("n1", "n2")
        }
        self._subnets, self._pool = subnets, pool
        self.tmpfs, self.keep_data = tmpfs, keep_data
        self.nodes: dict[str, SwarmNode] = {}
        self.timings: dict[str, float] = {}
        self._old_sigterm = None

    # ------------------------------------------------------------ context manager
    def __enter__(self) -> TwoNodeSwarm:
        if threading.current_thread() is threading.main_thread():
            self._old_sigterm = signal.signal(signal.SIGTERM, _sigterm_to_exit)
        try:
            self.up()
        except BaseException:
            self.down()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.down()

    # ------------------------------------------------------------ accessors
    @property
    def manager(self) -> docker.APIClient:
        return self.nodes["n1"].client

    def node(self, name: str) -> SwarmNode:
        return self.nodes[name]

    def node_by_id(self, node_id: str) -> SwarmNode:
        return next(n for n in self.nodes.values() if n.node_id == node_id)

    def tasks(self, service: str) -> list[dict]:
        return self.manager.tasks(filters={"service": service})

    def running_task(self, service: str, timeout: float = 30) -> dict:
        """Wait until the service's task is Running; fail with its state and error otherwise."""

        def running():
            t = self.tasks(service)
            return t[0] if t and t[0]["Status"]["State"] == "running" else None

        try:
            return wait_for(running, timeout, f"a running task of {service}")
        except TimeoutError as e:
            raise TimeoutError(f"{e}; tasks: {[t['Status'] for t in self.tasks(service)]}") from e

    def task_container(self, task: dict) -> tuple[SwarmNode, str]:
        """The node a task runs on and its container id there."""
        return self.node_by_id(task["NodeID"]), task["Status"]["ContainerStatus"]["ContainerID"]

    # ------------------------------------------------------------ setup
    def up(self) -> None:
        t0 = time.monotonic()
        hostops.RUN_ROOT.mkdir(parents=True, exist_ok=True)
        with _host_lock():
            run_dir = hostops.RUN_ROOT / self.run_id
            run_dir.mkdir()
            (run_dir / "owner").write_text(hostops.owner_token())
            a, b, c = hostops.pick_subnets(self._pool, self._subnets)
            for name, net, sw in (("n1", a, 1), ("n2", b, 2)):
                hosts = list(net.hosts())
                self.nodes[name] = SwarmNode(
                    name,
                    self.run_id,
                    str(hosts[1]),
                    str(hosts[0]),
                    str(list(c.hosts())[sw - 1]),
                    self._gpus[name],
                )
            self._network()
        self._start_engines()
        self.timings["engines_s"] = time.monotonic() - t0
        self._form_swarm()
        self.timings["setup_s"] = time.monotonic() - t0

    def _network(self) -> None:
        n1, n2 = self.nodes["n1"], self.nodes["n2"]
        for n in (n1, n2):
            hostops.sh("ip", "netns", "add", n.netns)
            hostops.sh("ip", "-n", n.netns, "link", "set", "lo", "up")
            hostops.add_veth(
                f"{self.run_id}h{n.name[1]}",
                f"{self.run_id}c{n.name[1]}",
                n.netns,
                n.host_addr,
                n.addr,
            )
        hostops.add_ns_link(
            n1.netns, f"{self.run_id}x1", n1.swarm_addr, n2.netns, f"{self.run_id}x2", n2.swarm_addr
        )

    def _start_engines(self) -> None:
        for n in self.nodes.values():
            self._spawn_dockerd(n)
        for n in self.nodes.values():

            def answers(n=n):
                if n.pid and not hostops.proc_cmdline(n.pid):
                    raise RuntimeError(f"dockerd {n.name} exited:\n{n.log_tail()}")
                n.client = docker.APIClient(base_url=n.engine, timeout=60)  # asks the version
                return True

            try:
                wait_for(answers, 60, f"dockerd {n.name} at {n.engine}")
            except TimeoutError as e:
                raise RuntimeError(f"{e}\n{n.log_tail()}") from e

    def _spawn_dockerd(self, n: SwarmNode) -> None:
        n.data_root.mkdir(parents=True)
        n.exec_root.mkdir(parents=True)
        if self.tmpfs:
            hostops.sh(
                "mount",
                "-t",
                "tmpfs",
                "-o",
                "size=4g,mode=0711",
                f"{n.netns}-tmpfs",
                str(n.data_root),
            )
        config = n.run_dir / f"{n.name}-daemon.json"
        config.write_text("{}")  # never /etc/docker/daemon.json
        args = [
            "nsenter",
            f"--net=/run/netns/{n.netns}",
            "--",
            "unshare",
            "--uts",
            "--",
            "sh",
            "-c",
            'hostname "$0" && exec "$@"',
            n.netns,
            "dockerd",
            "--config-file",
            str(config),
            "--data-root",
            str(n.data_root),
            "--exec-root",
            f"{n.exec_root}/",
            "--pidfile",
            str(n.run_dir / f"{n.name}.pid"),
            "-H",
            n.engine,
            "--bridge=none",
            "--iptables=false",
            "--ip-masq=false",
            "--cgroup-parent",
            f"/{n.netns}",
            "--log-level",
            os.environ.get("DSW_LOG_LEVEL", "warn"),  # info: see why it stalls
        ]
        for g in n.gpus:
            args += ["--node-generic-resource", f"NVIDIA-GPU={g}"]
        env = dict(os.environ, DOCKER_SERVICE_PREFER_OFFLINE_IMAGE="1")
        with open(n.log, "ab") as log:
            # own session: Ctrl-C reaches the test only, which then stops the engines in order
            proc = subprocess.Popen(
                args,
                env=env,
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        n.pid = proc.pid  # nsenter, unshare and sh exec: the same pid becomes dockerd

    def _form_swarm(self) -> None:
        n1, n2 = self.nodes["n1"], self.nodes["n2"]
        n1.client.init_swarm(advertise_addr=n1.swarm_addr, listen_addr=f"{n1.swarm_addr}:2377")
        # no routing mesh (host networking only; no IPVS here): without `ingress` no node sets up
        # an ingress sandbox, and a dockerd stops in ~1 s instead of waiting 5 s for its removal
        wait_for(lambda: _removed(n1.client, "ingress"), 15, "ingress network removed")
        token = n1.client.inspect_swarm()["JoinTokens"]["Worker"]
        n2.client.join_swarm(
            [f"{n1.swarm_addr}:2377"],
            token,
            listen_addr=f"{n2.swarm_addr}:2377",
            advertise_addr=n2.swarm_addr,
        )
        for n in (n1, n2):
            n.node_id = n.client.info()["Swarm"]["NodeID"]
            wait_for(
                lambda n=n: n1.client.inspect_node(n.node_id)["Status"]["State"] == "ready",
                30,
                f"node {n.name} ready",
            )
            node = n1.client.inspect_node(n.node_id)
            spec = dict(
                node["Spec"],
                Availability="active",
                Labels={"ds01.node": n.name, "ds01.addr": n.addr, "ds01.engine": n.engine},
            )
            n1.client.update_node(n.node_id, node["Version"]["Index"], spec)

    # ------------------------------------------------------------ images
    def load_image(
        self, image: str, nodes: tuple[str, ...] = ("n1", "n2"), mode: str = "tee"
    ) -> dict[str, float]:
        """Make ``image`` (from the default engine) present on ``nodes`` (skipping a node that has
        the same image id); returns seconds per node (0.0 where it was already there).

        ``mode``: "tee" (default, fastest here: one ``docker save`` streamed to every node's
        ``docker load`` at once), "parallel" (a ``save | load`` per node, at once) or "serial".
        """
        want = _cli(["image", "inspect", "-f", "{{.Id}}", image]).strip()
        todo = [n for n in nodes if self._image_id(n, image) != want]
        t = time.monotonic()
        if mode == "serial":
            times = {}
            for n in todo:
                _save_load(image, [self.nodes[n].engine])
                times[n] = time.monotonic() - t
                t = time.monotonic()
        elif mode == "parallel":
            with concurrent.futures.ThreadPoolExecutor(max(1, len(todo))) as pool:
                done = pool.map(lambda n: _save_load(image, [self.nodes[n].engine]), todo)
                list(done)
            times = dict.fromkeys(todo, time.monotonic() - t)
        else:
            _save_load(image, [self.nodes[n].engine for n in todo])
            times = dict.fromkeys(todo, time.monotonic() - t)
        for n in todo:
            if self._image_id(n, image) != want:
                raise RuntimeError(f"{image} on {n} is not the default engine's {want}")
        return {n: times.get(n, 0.0) for n in nodes}

    def _image_id(self, node: str, image: str) -> str:
        try:
            return self.nodes[node].client.inspect_image(image)["Id"]
        except docker.errors.ImageNotFound:
            return ""

    # ------------------------------------------------------------ teardown
    def down(self) -> None:
        """Remove the services, stop the engines, remove everything of this run (idempotent).
        Ctrl-C and SIGTERM are ignored meanwhile (a half teardown is what leaves leftovers)."""
        t0 = time.monotonic()
        main = threading.current_thread() is threading.main_thread()
        if main:
            old_int = signal.signal(signal.SIGINT, signal.SIG_IGN)
            old_term = signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            self._leave()
            hostops.teardown_run(self.run_id, keep_data=self.keep_data)
        finally:
            if main:
                signal.signal(signal.SIGINT, old_int)
                signal.signal(signal.SIGTERM, self._old_sigterm or old_term)
                self._old_sigterm = None
        self.timings["down_s"] = time.monotonic() - t0

    def _leave(self) -> None:
        """Best effort while the manager answers: remove the services (their tasks stop). The nodes
        leave the swarm only with ``keep_data``: the first ``swarm leave --force`` takes 6-7 s
        (measured) and buys nothing when the data-roots, swarm state included, are deleted."""
        n1 = self.nodes.get("n1")
        if n1 is None or n1.client is None:
            return
        try:
            for s in n1.client.services():
                n1.client.remove_service(s["ID"])
        except (docker.errors.DockerException, requests.RequestException):  # engine gone
            pass
        for n in self.nodes.values() if self.keep_data else ():
            try:
                n.client.leave_swarm(force=True)
            except (docker.errors.DockerException, requests.RequestException):  # engine gone
                pass

    def leftovers(self) -> list[str]:
        """What of this run is still on the host (empty after a complete teardown)."""
        return hostops.leftovers(self.run_id)


def assigned_resources(task: dict, kind: str = "NVIDIA-GPU") -> list[str]:
    """The named generic resources Swarm assigned to a task. API 1.41 (dockerd 20.10) calls the
    field ``GenericResources``, newer engines ``AssignedGenericResources``: both are read."""
    found = task.get("AssignedGenericResources") or task.get("GenericResources") or []
    return [
        r["NamedResourceSpec"]["Value"]
        for r in found
        if r.get("NamedResourceSpec", {}).get("Kind") == kind
    ]


def _sigterm_to_exit(signum, frame):
    raise SystemExit(128 + signum)


class _host_lock:
    """Serialises subnet choice and leftover cleanup between parallel runs on one host."""

    def __enter__(self):
        hostops.RUN_ROOT.mkdir(parents=True, exist_ok=True)
        self._f = open(hostops.RUN_ROOT / ".lock", "w")
        fcntl.flock(self._f, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        fcntl.flock(self._f, fcntl.LOCK_UN)
        self._f.close()


def cleanup_leftovers() -> list[str]:
    """Remove every earlier run whose owner process is gone (under the host lock)."""
    with _host_lock():
        return hostops.cleanup_leftovers()


def _save_load(image: str, engines: list[str]) -> None:
    """``docker save image`` (default engine) streamed into ``docker load`` on each engine."""
    if not engines:
        return
    save = subprocess.Popen(["docker", "save", image], stdout=subprocess.PIPE)
    loads = [
        subprocess.Popen(
            ["docker", "-H", e, "load", "-q"],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for e in engines
    ]
    try:
        while chunk := save.stdout.read(1 << 20):
            for p in loads:
                p.stdin.write(chunk)
    finally:
        for p in loads:
            p.stdin.close()
        save.stdout.close()
    errors = [p.stderr.read().decode().strip() for p in loads if p.wait() != 0]
    if save.wait() != 0 or errors:
        raise RuntimeError(f"docker save {image} | docker load on {engines} failed: {errors}")


def _removed(client: docker.APIClient, network: str) -> bool:
    try:
        client.remove_network(network)
    except docker.errors.NotFound:
        pass
    return not client.networks(names=[network])


def _cli(args: list[str]) -> str:
    r = subprocess.run(["docker", *args], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args)}: {r.stderr.strip()}")
    return r.stdout


def describe(s: TwoNodeSwarm) -> str:
    """One line per node, for logs."""
    return json.dumps(
        {
            n.name: {"addr": n.addr, "engine": n.engine, "gpus": n.gpus, "node_id": n.node_id}
            for n in s.nodes.values()
        }
    )

#!/usr/bin/env python3
"""One culler cycle over a hub with 500 users, each with a running server: time and API calls.

A real jupyterhub (harness/hub.py's ``Hub`` with benchmarks/culler_hub_config.py) runs
``NoopSpawner`` below: a server is only a record in the hub plus a proxy route to a stub HTTP
server (one process, answering every server's ``/api/kernels`` with one idle kernel). The
culler under test is the real ``ds01spawner.culler.cycle.Culler`` with the real ``HubAPI`` (a
token with exactly the ds01-culler role's scopes), the real ``KernelsAPI`` (HTTP to the stub),
the real ``GpuMeter`` on 8 simulated GPUs, the real limits file resolution, and real project
folders for the keep-alive check; only Docker is an in-memory stand-in (500 running containers
do not fit on a test machine). A second table measures the Docker calls a cycle makes per server
on one real running container, to add their cost.

Variants, each 1 warm-up cycle + ``--cycles`` measured cycles on a fresh culler:

  hub only      no containers: the users list (paginated) and the decisions (every server is
                kept, its signals unknown), ``--page-size`` users per hub API call
  hub only/50   the same with 50 users per call (the hub's default page without pagination)
  all signals   every server has a container (in memory), a kernel list over HTTP, a project
                folder on disk (keep-alive), GPUs on the first 8; the state file is written

Usage: .venv/bin/python benchmarks/culler_cycle.py [--users 500] [--cycles 5] [--json out.json]
Everything it makes (a hub and its proxy on free loopback ports, the stub, one container
``ds01cbench-<id>``, a temp dir /tmp/ds01cbench-<id>-*) is removed at exit, also on Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from jupyterhub.spawner import Spawner  # noqa: E402
from traitlets import Int  # noqa: E402

SERVER = "bench"


class NoopSpawner(Spawner):
    """A server that is only a record in the hub: start() starts nothing and returns the stub's
    address (the hub checks that something answers there and adds a proxy route)."""

    stub_port = Int(0, help="Port of the stub that answers for every server.").tag(config=True)
    _running = False

    async def start(self):
        self._running = True
        return ("127.0.0.1", self.stub_port)

    async def poll(self):
        return None if self._running else 0

    async def stop(self, now=False):
        self._running = False


STUB = r"""
import json, sys
from datetime import datetime, timezone
from tornado import ioloop, web
KERNELS = json.dumps([{"id": "k1", "name": "python3", "execution_state": "idle",
    "connections": 1, "last_activity": datetime.now(timezone.utc).isoformat()}])
class Any(web.RequestHandler):
    def get(self, path):
        self.set_header("Content-Type", "application/json")
        self.finish(KERNELS if path.endswith("/api/kernels") else "{}")
app = web.Application([(r"(.*)", Any)])
app.listen(int(sys.argv[1]), "127.0.0.1")
ioloop.IOLoop.current().start()
"""

LIMITS = """
defaults: {max_gpu_equivalents: null, max_gpus_per_server: null, allow_full_gpu: true,
           max_servers: null, cpus: null, memory: null, shm_size: null, pids_limit: null,
           max_runtime: 24, idle_timeout: 1}
"""
A100 = {"name": "NVIDIA A100-SXM4-80GB", "memory_mib": 81920}
PAGINATION = "application/jupyterhub-pagination+json"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MemoryEngine:
    """Docker as the culler sees it, in memory: one running container per server."""

    def __init__(self, servers: list[str], prefix: str, stub_port: int, ws: Path, gpus: list):
        from ds01spawner.projects.names import container_name

        self.calls = 0
        self.rows, self.inspects = [], {}
        for i, user in enumerate(servers):
            cid = f"{i:064x}"
            label = gpus[i] if i < len(gpus) else ""
            self.rows.append(
                {
                    "Id": cid,
                    "Names": ["/" + container_name(user, SERVER, prefix)],
                    "State": "running",
                    "Labels": {"ds01.gpus": label, "ds01.project": SERVER},
                }
            )
            folder = ws / user / SERVER
            folder.mkdir(parents=True, exist_ok=True)
            self.inspects[cid] = {
                "Id": cid,
                "Config": {
                    "User": "1000:100",
                    "Env": [
                        f"JUPYTERHUB_SERVICE_URL=http://127.0.0.1:{stub_port}/user/{user}/",
                        f"JUPYTERHUB_API_TOKEN=stub-token-of-{user}",
                    ],
                    "Labels": {"ds01.gpus": label, "ds01.project": SERVER},
                },
                "Mounts": [{"Type": "bind", "Source": str(folder), "Destination": "/workspace"}],
            }
        self._cpu = 0

    def containers(self, filters):
        self.calls += 1
        return self.rows

    def inspect(self, cid):
        self.calls += 1
        return self.inspects[cid]

    def stats(self, cid):
        self.calls += 1
        self._cpu += 10**6
        now = datetime.now(timezone.utc)
        return {
            "read": now.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "cpu_stats": {"cpu_usage": {"total_usage": self._cpu}},
        }


class NoEngine(MemoryEngine):
    def __init__(self):
        self.calls, self.rows, self.inspects = 0, [], {}


def start_servers(hub, users: list[str], workers: int = 8) -> float:
    t0 = time.monotonic()
    r = hub.api("POST", "/users", json={"usernames": users})
    assert r.status_code == 201, r.text

    def launch(user: str) -> None:
        r = hub.api("POST", f"/users/{user}/servers/{SERVER}")
        assert r.status_code in (201, 202), r.text

    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(launch, users))
    from benchmarks.common import wait_for

    def all_ready():
        r = hub.session.get(
            f"{hub.url}/hub/api/users?state=ready&limit=1",
            headers={"Authorization": f"token {hub.token}", "Accept": PAGINATION},
            timeout=60,
        )
        return r.json()["_pagination"]["total"] == len(users)

    wait_for(all_ready, 300, "every server ready", interval=0.5)
    return time.monotonic() - t0


async def run_variant(name, engine, args, hub, token, ws, state_dir, gpus_state) -> list:
    from ds01spawner.culler.cycle import Culler, LimitsSource
    from ds01spawner.culler.signals import GpuMeter, HubAPI, KernelsAPI
    from ds01spawner.gpus.simulated import SimulatedInventory

    page = 50 if name.endswith("/50") else args.page_size
    limits = state_dir / "limits.yaml"
    limits.write_text(LIMITS)
    culler = Culler(
        hub=HubAPI(f"http://127.0.0.1:{hub.port + 81}/hub/api", token, 60, page, args.concurrency),
        kernels=KernelsAPI(60, args.concurrency),
        engine=engine,
        gpus=GpuMeter(SimulatedInventory([A100] * 8, state_file=str(gpus_state)), 300, 5),
        limits=LimitsSource(str(limits)),
        state_file=str(state_dir / f"culler-state-{name.replace('/', '-')}.json"),
        prefix=hub.prefix,
        concurrency=args.concurrency,
    )
    try:
        reports = [await culler.cycle() for _ in range(1 + args.cycles)]
    finally:
        culler.close()
    return reports[1:]


def docker_costs(prefix: str, reps: int) -> list[tuple[str, int, list[float]]]:
    """Per-call cost of the Docker calls a cycle makes, on one real running container."""
    import docker

    from ds01spawner.gpus.table import hub_containers_filter

    client = docker.from_env()
    api = client.api
    name = f"{prefix}-probe"
    c = client.containers.run(
        "ds01/base:latest",
        ["sleep", "600"],
        name=name,
        detach=True,
        labels={"ds01.managed": "true"},
        network_mode="host",
    )
    try:
        from ds01spawner.culler.signals import CgroupCpu

        c.reload()
        pid = c.attrs["State"]["Pid"]
        cgroups = CgroupCpu()
        assert cgroups.read(pid) is not None, "cgroup CPU time unreadable on this host"
        out = []
        for what, call, n in (
            (
                "docker ps -a (filtered), once per cycle",
                lambda: api.containers(all=True, filters=hub_containers_filter(prefix)),
                reps,
            ),
            ("docker inspect, once per container", lambda: api.inspect_container(c.id), reps),
            ("CPU time from the cgroup, per server", lambda: cgroups.read(pid), reps),
            (
                "stats one-shot (the fallback), per server",
                lambda: api.stats(c.id, stream=False, one_shot=True),
                reps,
            ),
            ("stats, plain (not used)", lambda: api.stats(c.id, stream=False), 3),
        ):
            times = []
            for _ in range(n):
                t = time.perf_counter()
                call()
                times.append(time.perf_counter() - t)
            out.append((what, n, times))
        return out
    finally:
        c.remove(force=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--users", type=int, default=500)
    p.add_argument("--cycles", type=int, default=5)
    p.add_argument("--page-size", type=int, default=200)
    p.add_argument("--concurrency", type=int, default=10)
    p.add_argument("--docker-reps", type=int, default=30)
    p.add_argument("--json", help="write every cycle's numbers here")
    args = p.parse_args()

    from benchmarks.common import Hub

    run_id = secrets.token_hex(3)
    tmp = Path(tempfile.mkdtemp(prefix=f"ds01cbench-{run_id}-"))
    stub_port = free_port()
    stub = subprocess.Popen([sys.executable, "-c", STUB, str(stub_port)])
    token = secrets.token_hex(16)
    hub = Hub(
        tmp,
        f"ds01cbench{run_id}",
        {"DS01_BENCH_STUB_PORT": str(stub_port), "DS01_BENCH_CULLER_TOKEN": token},
        config=REPO / "benchmarks" / "culler_hub_config.py",
    )

    def cleanup(*_):
        hub.shutdown()
        stub.terminate()
        shutil.rmtree(tmp, ignore_errors=True)

    signal.signal(signal.SIGTERM, lambda *a: sys.exit(1))
    try:
        t = time.monotonic()
        hub.start(timeout=120)
        hub_up = time.monotonic() - t
        users = [f"bench{i:04d}" for i in range(args.users)]
        setup = start_servers(hub, users)
        from ds01spawner.gpus.simulated import SimulatedInventory

        gpus = [d.uuid for d in SimulatedInventory([A100] * 8).devices()]
        ws = tmp / "ws"
        rows = []
        variants = {
            "hub only": lambda: NoEngine(),
            "hub only/50": lambda: NoEngine(),
            "all signals": lambda: MemoryEngine(users, hub.prefix, stub_port, ws, gpus),
        }
        for name, make in variants.items():
            reports = asyncio.run(
                run_variant(name, make(), args, hub, token, ws, tmp, tmp / "gpus.json")
            )
            rows.append((name, reports))
        costs = docker_costs(f"ds01cbench{run_id}", args.docker_reps)
    finally:
        cleanup()

    ms = lambda xs: [x * 1000 for x in xs]  # noqa: E731
    print(
        f"\nCuller cycle over {args.users} users with a running server each "
        f"({os.cpu_count()} cores, Python {platform.python_version()}; hub up {hub_up:.1f} s, "
        f"{args.users} servers started in {setup:.1f} s)"
    )
    print(
        f"{'variant':<14}{'servers':>8}{'cycles':>7}{'min':>9}{'median':>9}{'max':>9} (ms)"
        f"{'hub API calls':>15}{'kernel calls':>14}{'docker calls':>14}{'kept, signal missing':>22}"
    )
    for name, reports in rows:
        secs = ms([r.seconds for r in reports])
        last = reports[-1]
        print(
            f"{name:<14}{last.servers:>8}{len(reports):>7}{min(secs):>9.0f}"
            f"{statistics.median(secs):>9.0f}{max(secs):>9.0f}     {last.hub_calls:>15}"
            f"{last.kernel_calls:>14}{last.docker_calls:>14}{last.kept_unknown:>22}"
        )
    print("\nDocker calls a cycle makes, on one real running container (ms)")
    print(f"{'call':<46}{'n':>4}{'min':>9}{'median':>9}{'max':>9}")
    for what, n, times in costs:
        t = ms(times)
        print(f"{what:<46}{n:>4}{min(t):>9.1f}{statistics.median(t):>9.1f}{max(t):>9.1f}")
    ps_ms, cg_ms = (statistics.median(ms(costs[i][2])) for i in (0, 2))
    stats_ms = statistics.median(ms(costs[3][2]))
    print(
        f"-> per cycle for {args.users} servers: 1 ps + {args.users} cgroup reads = "
        f"{ps_ms + args.users * cg_ms:.0f} ms (in threads, {args.concurrency} at a time); "
        f"with the one-shot stats fallback: {args.users} x {stats_ms:.0f} ms / "
        f"{args.concurrency} = {args.users * stats_ms / 1000 / args.concurrency:.0f} s"
    )
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "users": args.users,
                    "variants": {n: [r.__dict__ for r in reports] for n, reports in rows},
                    "docker_ms": {w: ms(t) for w, _, t in costs},
                },
                indent=1,
                default=str,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

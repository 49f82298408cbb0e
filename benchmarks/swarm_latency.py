#!/usr/bin/env python3
"""Launch latency through the hub: the Swarm mode (server on node 2) vs the single engine.

One run builds a real two-node swarm (harness.swarm, data-roots on tmpfs, the base image loaded
onto both nodes before any measurement) and starts two test hubs (harness.hub): one on the
default Docker engine, one in the Swarm mode (``harness.hub.swarm_env``). In every round both
launch the same kind of server (no GPU) and the time from ``POST /hub/api/users/<u>/servers/p``
until the hub reports it ready is measured; the variants alternate within each round so that drift
hits both alike. On the swarm a filler server stays on node 1 for the whole run, so each measured
launch is placed on node 2 (the node with fewer servers); the node is checked every round.

Usage: .venv/bin/python benchmarks/swarm_latency.py [--rounds 5]
Everything it makes (hubs, containers, services, the swarm) is removed at exit, also on Ctrl-C.
"""

from __future__ import annotations

import argparse
import secrets
import signal
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import docker  # noqa: E402

from benchmarks.common import Hub, fmt, raise_interrupted, remove_containers, stats  # noqa: E402
from harness.swarm import TwoNodeSwarm  # noqa: E402

IMAGE = "ds01/base:latest"
CPU = {"gpus": 0}


def launch(hub: Hub, user: str) -> float:
    t = time.monotonic()
    hub.start_server(user, "p", CPU, timeout=120)
    return time.monotonic() - t


def node_of(swarm: TwoNodeSwarm, hub: Hub, user: str) -> str:
    services = swarm.manager.services(filters={"label": f"ds01.user={user}"})
    (service,) = [s for s in services if s["Spec"]["Name"].startswith(hub.prefix + "-")]
    return swarm.task_container(swarm.running_task(service["ID"]))[0].name


def run(rounds: int, tmp: Path, swarm: TwoNodeSwarm) -> dict[str, list[float]]:
    for d in ("single", "swarm"):
        (tmp / d).mkdir()
    single = Hub(tmp / "single", f"ds01bsa{secrets.token_hex(2)}").start()
    on_swarm = Hub(tmp / "swarm", f"ds01bsb{secrets.token_hex(2)}", swarm=swarm).start()
    times: dict[str, list[float]] = {"single engine": [], "swarm, node 2": []}
    try:
        on_swarm.start_server("filler", "p", CPU)  # stays on node 1: launches go to node 2
        assert node_of(swarm, on_swarm, "filler") == "n1"
        for hub in (single, on_swarm):  # warm-up (first launch of a hub makes its folders)
            launch(hub, "warm")
            hub.stop_server("warm", "p")
        for i in range(rounds):
            times["single engine"].append(launch(single, "bench"))
            single.stop_server("bench", "p")
            times["swarm, node 2"].append(launch(on_swarm, "bench"))
            where = node_of(swarm, on_swarm, "bench")
            assert where == "n2", f"round {i}: the swarm server ran on {where}"
            on_swarm.stop_server("bench", "p")
            print(f"round {i + 1}/{rounds} done", file=sys.stderr)
    finally:
        for hub in (single, on_swarm):
            hub.shutdown()
        remove_containers(docker.from_env(), f"^/{single.prefix}-")
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    if not 1 <= args.rounds <= 30:
        parser.error("--rounds must be between 1 and 30")
    signal.signal(signal.SIGTERM, raise_interrupted)
    with (
        tempfile.TemporaryDirectory(prefix="ds01-swarm-bench-") as tmp,
        TwoNodeSwarm(tmpfs=True) as swarm,
    ):
        t = time.monotonic()
        swarm.load_image(IMAGE)
        print(f"base image onto both nodes: {time.monotonic() - t:.1f} s", file=sys.stderr)
        times = run(args.rounds, Path(tmp), swarm)
    print(f"\nLaunch latency through the hub (POST -> ready, no GPU), {args.rounds} rounds, s")
    print(f"{'variant':<16} {'n':>3} {'min':>7} {'median':>7} {'p95':>7} {'max':>7}")
    for name, xs in times.items():
        s = stats(xs)
        print(
            f"{name:<16} {s['n']:>3} {fmt(s['min'])} {fmt(s['median'])} {fmt(s['p95'])} "
            f"{fmt(s['max'])}"
        )


if __name__ == "__main__":
    main()

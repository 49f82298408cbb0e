#!/usr/bin/env python3
"""Hub API latency while one student attacks the hub's availability, side by side with quiet.

One real hub (the test config: 4 simulated GPUs, the GPU queue on). A sampler sends
``GET /hub/api/users/<u>`` one after another (a new request as soon as the last is answered, at
most ``--samples`` per phase) and records each latency; p50 / p95 / max per phase:

  quiet   nothing else happens;
  build   while one user's project build prints ``--build-mb`` MB without a newline
          (1 MB every ``--pace`` seconds from ``python3`` in a RUN step, so that the
          samples fall while the output streams); the hub's CPU seconds during the phase;
  queue   4 servers hold the 4 GPUs, then one user POSTs ``--launches`` launches with
          ``{"gpus": 1}`` at once (10 at a time); each waits in the GPU queue, or is refused;
  queued  after all of them are answered, while the accepted ones wait in the queue.

Target: p95 within 2x quiet. All traffic goes to 127.0.0.1; everything made (containers, images
under the prefix ``ds01hl<id>``, a temp dir) is removed at exit. Bounded: each phase ends after
``--phase-seconds`` at most.

Usage: .venv/bin/python benchmarks/hostile_load.py [--samples 300] [--build-mb 50] [--launches 100]
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import docker  # noqa: E402
import requests  # noqa: E402

from benchmarks.common import Hub  # noqa: E402

PREFIX = "ds01hl"


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def sample(hub: Hub, user: str, n: int, until: float, stop: threading.Event) -> list[float]:
    session = requests.Session()
    session.headers["Authorization"] = f"token {hub.token}"
    out = []
    while len(out) < n and time.monotonic() < until and not stop.is_set():
        t = time.monotonic()
        r = session.get(f"{hub.url}/hub/api/users/{user}", timeout=30)
        out.append(time.monotonic() - t)
        assert r.status_code == 200, r.text
        time.sleep(0.01)
    return out


def phase_quiet(hub: Hub, args) -> dict:
    until = time.monotonic() + args.phase_seconds
    return {"latency": sample(hub, "probe", args.samples, until, threading.Event())}


def phase_build(hub: Hub, args) -> dict:
    n = int(args.build_mb * 1e6)
    if args.line_bytes:  # 1 MB of lines of line_bytes bytes, newline included
        per = 1000000 // args.line_bytes
        mb = f"('x' * {args.line_bytes - 1} + chr(10)) * {per}"
    else:
        mb = "'x' * 1000000"
    project = hub.workspaces / "mallory" / "flood"
    project.mkdir(parents=True, exist_ok=True)
    (project / "Dockerfile").write_text(
        "FROM ds01/base:latest\n"
        f"# {secrets.token_hex(4)}\n"
        'RUN python3 -c "import sys, time; '
        f"[(sys.stdout.write({mb}), sys.stdout.flush(), time.sleep({args.pace})) "
        f'for _ in range({max(1, n // 1000000)})]" && exit 1\n'
    )
    cpu0 = cpu_seconds(hub.proc.pid)
    r = hub.request_server("mallory", "flood")
    assert r.status_code in (201, 202), r.text
    done = threading.Event()

    def follow():
        try:
            hub.follow_progress("mallory", "flood", timeout=args.phase_seconds + 60)
        finally:
            done.set()

    threading.Thread(target=follow, daemon=True).start()
    t0 = time.monotonic()
    lat = sample(hub, "probe", args.samples, t0 + args.phase_seconds, done)
    done.wait(args.phase_seconds + 60)
    seconds = time.monotonic() - t0
    log = project / ".ds01" / "build.log"
    return {
        "latency": lat,
        "hub_cpu_s": cpu_seconds(hub.proc.pid) - cpu0,
        "build_s": seconds,
        "build_log_bytes": log.stat().st_size if log.exists() else None,
    }


def phase_queue(hub: Hub, args) -> dict:
    holders = [f"holder{i}" for i in range(4)]
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda u: hub.start_server(u, "gpu", {"gpus": 1}), holders))
    hub.ensure_user("flooder")
    statuses: Counter = Counter()
    stop = threading.Event()

    def one(i: int) -> None:
        r = hub.api("POST", f"/users/flooder/servers/q{i}", json={"gpus": 1}, timeout=60)
        statuses[r.status_code] += 1

    def flood() -> None:
        with ThreadPoolExecutor(10) as pool:
            list(pool.map(one, range(args.launches)))
        stop.set()

    t0 = time.monotonic()
    threading.Thread(target=flood, daemon=True).start()
    lat = sample(hub, "probe", args.samples, t0 + args.phase_seconds, threading.Event())
    stop.wait(args.phase_seconds)
    t1 = time.monotonic()
    waiting = sample(hub, "probe", args.samples, t1 + args.phase_seconds, threading.Event())
    pending = sum(
        1 for s in hub.api("GET", "/users/flooder").json()["servers"].values() if s.get("pending")
    )
    others = hub.request_server("bystander", "by1", {"gpus": 0})
    return {
        "latency": lat,
        "waiting_latency": waiting,
        "posts": dict(statuses),
        "pending_after": pending,
        "bystander_launch": others.status_code,
    }


def row(name: str, res: dict, quiet_p95: float) -> str:
    lat = res["latency"]
    p50, p95 = statistics.median(lat) * 1000, pct(lat, 95) * 1000
    ratio = p95 / quiet_p95 if quiet_p95 else float("nan")
    return f"{name:<8}{len(lat):>6}{p50:>9.1f}{p95:>9.1f}{max(lat) * 1000:>9.1f}{ratio:>9.2f}x"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--samples", type=int, default=300, help="requests per phase (300)")
    p.add_argument("--phase-seconds", type=float, default=60, help="at most per phase (60)")
    p.add_argument("--build-mb", type=float, default=50, help="build output, MB (50)")
    p.add_argument(
        "--line-bytes", type=int, default=0, help="build output in lines of N bytes (0: none)"
    )
    p.add_argument("--pace", type=float, default=0.2, help="seconds between build MBs (0.2)")
    p.add_argument("--launches", type=int, default=100, help="queued launches (100)")
    p.add_argument("--phases", default="quiet,build,queue", help="which phases (all three)")
    p.add_argument(
        "--max-servers",
        type=int,
        default=2,
        help="max_servers of every user in a limits file (2); 0: no limits file",
    )
    p.add_argument("--json", help="write the raw numbers here")
    args = p.parse_args(argv)
    rid = secrets.token_hex(3)
    tmp = Path(tempfile.mkdtemp(prefix=f"{PREFIX}-{rid}-"))
    client = docker.from_env(timeout=120)
    env = {
        "DS01_TEST_GPU_QUEUE": "600",
        "DS01_TEST_SLOW_SPAWN_TIMEOUT": "0",
        "DS01_TEST_BUILD_TIMEOUT": str(int(args.phase_seconds + 30)),
    }
    if args.max_servers:  # as a deployment would have: the flood meets the user's limit
        limits = tmp / "limits.yaml"
        limits.write_text(f"defaults:\n  max_servers: {args.max_servers}\n")
        env["DS01_TEST_LIMITS"] = str(limits)
    hub = Hub(tmp, f"{PREFIX}{rid}", extra_env=env)
    results: dict = {}
    try:
        hub.start(timeout=90)
        hub.ensure_user("probe")
        phases = (("quiet", phase_quiet), ("build", phase_build), ("queue", phase_queue))
        chosen = {"quiet", *args.phases.split(",")}
        for name, fn in phases:
            if name not in chosen:
                continue
            print(f"phase {name} ...", flush=True)
            results[name] = fn(hub, args)
            assert hub.proc.poll() is None, "the hub died"
    finally:
        hub.shutdown()
        for c in client.api.containers(all=True, quiet=True, filters={"name": f"^/{hub.prefix}"}):
            client.api.remove_container(c["Id"], force=True, v=True)
        for image in client.api.images(filters={"reference": f"{hub.prefix}-*/*"}):
            for ref in image.get("RepoTags") or []:
                try:
                    client.api.remove_image(ref, force=True)
                except docker.errors.APIError:
                    pass
        for cgroup in Path("/sys/fs/cgroup/pids").glob(f"{hub.prefix}-build-*"):
            try:
                cgroup.rmdir()  # the build cgroup of this run's user (empty by now)
            except OSError:
                pass
        log = tmp / "hub.log"
        if log.exists():
            shutil.copy(log, f"/tmp/{PREFIX}-{rid}-hub.log")
        shutil.rmtree(tmp, ignore_errors=True)
    quiet_p95 = pct(results["quiet"]["latency"], 95) * 1000
    print(f"\nGET /hub/api/users/<u>, ms ({os.cpu_count()} CPUs; p95 ratio to quiet)")
    print(f"{'phase':<8}{'n':>6}{'p50':>9}{'p95':>9}{'max':>9}{'p95/q':>10}")
    for name in ("quiet", "build", "queue"):
        if name in results:
            print(row(name, results[name], quiet_p95))
    if "queue" in results:
        print(row("queued", {"latency": results["queue"]["waiting_latency"]}, quiet_p95))
    if "build" in results:
        b = results["build"]
        print(
            f"\nbuild: {args.build_mb:g} MB "
            f"{f'in lines of {args.line_bytes} bytes' if args.line_bytes else 'without a newline'}"
            f"; hub CPU {b['hub_cpu_s']:.2f} s "
            f"over {b['build_s']:.1f} s; .ds01/build.log {b['build_log_bytes']} bytes"
        )
    if "queue" in results:
        q = results["queue"]
        print(
            f"queue: {args.launches} POSTs from one user -> status counts {q['posts']}; "
            f"{q['pending_after']} still pending; a bystander's launch then got "
            f"HTTP {q['bystander_launch']}"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

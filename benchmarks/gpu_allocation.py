#!/usr/bin/env python3
"""GPU allocation cost: the pure decision, reading the table from Docker, and a spawn storm.

Three tables, each measured in this run:

  1  the allocation decision alone (no daemon): ``holders(containers)`` + ``busy_outside(...)``
     + ``choose(...)`` on 64 devices and 1,000 container dicts shaped like
     ``APIClient.containers(all=True)`` output, for several requests; min / median / p99 in
     microseconds over many repetitions.
  2  reading the allocation table from a real engine: ONE ``docker ps -a`` (labels, filtered
     like the spawner's ``_ds01_containers``) against the naive way, ``docker inspect`` of each
     container, with 100 created-but-never-started containers.
  3  a spawn storm through a real hub with 4 simulated A100s: 24 users launch at once with
     ``{"gpus": 1}``; time until all are answered, latency of each 429, latency of each accepted
     launch until ready, started (4) and rejected (20). ``--storm-rounds`` times, a fresh hub each.

Usage: .venv/bin/python benchmarks/gpu_allocation.py [--storm-rounds 2] [--json out.json]
       .venv/bin/python benchmarks/gpu_allocation.py --skip-engine      # table 1 only
Everything it makes (containers named ds01gbench*, hubs and proxies on free loopback ports, a temp
dir /tmp/ds01gbench-<id>-*) is removed at exit, also on Ctrl-C, SIGTERM or an error.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import random
import re
import secrets
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import docker  # noqa: E402
import requests  # noqa: E402

from benchmarks.common import (  # noqa: E402
    Hub,
    fmt,
    raise_interrupted,
    remove_containers,
    stats,
    stop_hub,
)
from ds01spawner.gpus.allocator import GpuRequest, NoFit, busy_outside, choose  # noqa: E402
from ds01spawner.gpus.model import Device, DeviceUsage  # noqa: E402
from ds01spawner.gpus.simulated import SimulatedInventory  # noqa: E402
from ds01spawner.gpus.table import (  # noqa: E402
    GPU_LABEL,
    HOLDING_STATES,
    holders,
    hub_containers_filter,
)

IMAGE = "ds01/base:latest"
PREFIX = "ds01gbench"  # every container this script makes starts with this
TARGET_REJECTION_S = 1.0  # a refused launch must be answered well under this

# ---- table 1: the fleet ------------------------------------------------------------------------

A100_80 = {"name": "NVIDIA A100-SXM4-80GB", "memory_mib": 81920}
#: 64 devices on 51 physical GPUs: 48 whole, 2 split into 7 x 1g.10gb, 1 split into 2 x 3g.40gb.
FLEET_SPEC = (
    [A100_80] * 48
    + [{**A100_80, "mig_profiles": ["1g.10gb"] * 7}] * 2
    + [{**A100_80, "mig_profiles": ["3g.40gb"] * 2}]
)
FLEET_TEXT = (
    "64 devices on 51 simulated A100-80GB: 48 whole GPUs, 2 GPUs split into 7 x 1g.10gb, "
    "1 GPU split into 2 x 3g.40gb"
)
N_CONTAINERS = 1000
# Held in the "partly free" state: 40 of 48 whole GPUs, 10 of 14 1g slices, 1 of 2 3g slices.
HELD_FULL, HELD_1G, HELD_3G = 40, 10, 1

REQUESTS = [
    ("1 any", GpuRequest(1, "any"), "partly"),
    ("1 full", GpuRequest(1, "full"), "partly"),
    ("4 full", GpuRequest(4, "full"), "partly"),
    ("1 mig", GpuRequest(1, "mig"), "partly"),
    ("1 of profile 3g.40gb", GpuRequest(1, "3g.40gb"), "partly"),
    ("1 any, all taken (NoFit)", GpuRequest(1, "any"), "full"),
]

A100_40 = {"name": "NVIDIA A100-SXM4-40GB", "memory_mib": 40960}
STORM_SPEC = [A100_40] * 4
STORM_USERS = 24
STORM_SERVER = "storm"
LONE_REJECTIONS = 3  # launches refused one at a time after the storm, for comparison


# ---- table 1: the pure decision -----------------------------------------------------------------


def fleet() -> list[Device]:
    return SimulatedInventory(FLEET_SPEC).devices()


def make_containers(devices: list[Device], all_taken: bool, seed: int = 1) -> list[dict]:
    """1,000 dicts shaped like ``APIClient.containers(all=True)`` output, in mixed states.

    About half carry devices in ``ds01.gpus``. Live holders (states that hold devices) never
    claim more devices than exist, and never one device twice; the rest of the labelled ones
    exited (or are dead) and name devices that others may hold now, as in a real ``ps -a``.
    """
    rng = random.Random(seed)
    full = [d.uuid for d in devices if d.kind == "gpu"]
    one_g = [d.uuid for d in devices if d.mig_profile == "1g.10gb"]
    three_g = [d.uuid for d in devices if d.mig_profile == "3g.40gb"]
    if all_taken:
        held_full, held_1g, held_3g = full, one_g, three_g
    else:
        held_full, held_1g, held_3g = full[:HELD_FULL], one_g[:HELD_1G], three_g[:HELD_3G]
    # live GPU holders: 4 containers with 2 whole GPUs each, the rest one device each
    live: list[list[str]] = [held_full[i : i + 2] for i in range(0, 8, 2)]
    live += [[u] for u in held_full[8:]] + [[u] for u in held_1g] + [[u] for u in held_3g]
    n_labelled = N_CONTAINERS // 2
    n_live_cpu = 150
    every = [d.uuid for d in devices]
    now = int(time.time())
    out = []
    for i in range(N_CONTAINERS):
        if i < len(live):
            gpus = live[i]
            state = rng.choices(
                ["running", "created", "paused", "restarting"], weights=[90, 5, 3, 2]
            )[0]
        elif i < n_labelled:  # exited with the devices it once held
            gpus = rng.sample(every, rng.choice([1, 1, 1, 2]))
            state = rng.choices(["exited", "dead"], weights=[95, 5])[0]
        elif i < n_labelled + n_live_cpu:
            gpus, state = [], "running"
        else:
            gpus, state = [], rng.choices(["exited", "dead"], weights=[95, 5])[0]
        created = now - rng.randrange(90 * 86400)
        user = f"user{rng.randrange(200):03d}"
        project = f"project-{rng.randrange(50):02d}"
        name = f"ds01-{user}.{project}-{i}"
        out.append(
            {
                "Id": secrets.token_hex(32),
                "Names": [f"/{name}"],
                "Image": IMAGE,
                "ImageID": "sha256:" + "a" * 64,
                "Command": "jupyterhub-singleuser",
                "Created": created,
                "Ports": [],
                "Labels": {
                    "ds01.managed": "true",
                    "ds01.user": user,
                    "ds01.project": project,
                    "ds01.server": project,
                    "ds01.created": datetime.fromtimestamp(created, timezone.utc).isoformat(
                        timespec="seconds"
                    ),
                    GPU_LABEL: ",".join(gpus),
                    "ds01.gpu_equivalents": f"{len(gpus):g}",
                    "ds01.base.jupyterhub": "6.1.1",
                },
                "State": state,
                "Status": "Up 3 hours" if state == "running" else state.capitalize(),
                "HostConfig": {"NetworkMode": "host"},
                "NetworkSettings": {"Networks": {"host": {}}},
                "Mounts": [],
            }
        )
    rng.shuffle(out)
    return out


def make_usage(devices: list[Device], held: set[str]) -> dict[str, DeviceUsage]:
    """Usage of every device: processes on most held ones, and one foreign process elsewhere."""
    usage = {}
    free_full = [d.uuid for d in devices if d.kind == "gpu" and d.uuid not in held]
    foreign = free_full[-1:]  # CUDA on the host, on a GPU no container holds
    for n, d in enumerate(devices):
        busy = (d.uuid in held and n % 3 != 0) or d.uuid in foreign
        usage[d.uuid] = DeviceUsage(
            uuid=d.uuid,
            utilization_pct=None if d.kind == "mig" else (87.0 if busy else 0.0),
            memory_used_mib=4096 if busy else 0,
            pids=(10000 + n,) if busy else (),
        )
    return usage


def decide(request: GpuRequest, devices, containers, usage) -> list[Device] | str:
    """What the broker does under the allocation lock, minus the Docker and NVML calls."""
    held = holders(containers)
    taken = set(held) | busy_outside(usage, held)
    try:
        return choose(request, devices, taken)
    except NoFit as e:
        return f"NoFit: {e}"


def time_calls(fn: Callable[[], object], reps: int, budget_s: float) -> list[float]:
    """Microseconds of each call of fn (timeit-like: gc off), at most reps calls or budget_s."""
    for _ in range(min(20, reps)):
        fn()
    out = []
    clock = time.perf_counter_ns
    gc_was = gc.isenabled()
    gc.disable()
    try:
        end = time.monotonic() + budget_s
        while len(out) < reps:
            t = clock()
            fn()
            out.append((clock() - t) / 1000)
            if len(out) % 50 == 0 and time.monotonic() > end:
                break
    finally:
        if gc_was:
            gc.enable()
    return out


def describe_result(result) -> str:
    if isinstance(result, str):
        return "NoFit (429)"
    kinds = {d.mig_profile or "whole GPU" for d in result}
    return f"{len(result)} x {', '.join(sorted(kinds))}"


def part1(reps: int, budget_s: float) -> dict:
    devices = fleet()
    states = {"partly": make_containers(devices, False), "full": make_containers(devices, True)}
    usages = {}
    info = {}
    for key, containers in states.items():
        held = holders(containers)
        usages[key] = make_usage(devices, set(held))
        live = [c for c in containers if c["State"] in HOLDING_STATES and c["Labels"][GPU_LABEL]]
        info[key] = {
            "containers": len(containers),
            "labelled": sum(1 for c in containers if c["Labels"][GPU_LABEL]),
            "live_holders": len(live),
            "held_devices": len(held),
            "foreign_busy": len(busy_outside(usages[key], held)),
            "states": dict(
                sorted(
                    {
                        s: sum(1 for c in containers if c["State"] == s)
                        for s in {c["State"] for c in containers}
                    }.items()
                )
            ),
        }
    # sanity: what each request gets, checked once before timing
    rows = []
    for label, request, key in REQUESTS:
        result = decide(request, devices, states[key], usages[key])
        if key == "full":
            assert isinstance(result, str), f"{label}: expected NoFit, got {result}"
        else:
            assert not isinstance(result, str), f"{label}: {result}"
            assert len(result) == request.count
        samples = time_calls(
            lambda r=request, k=key: decide(r, devices, states[k], usages[k]), reps, budget_s
        )
        rows.append(
            {
                "request": label,
                "result": describe_result(result),
                "us": samples,
                **stats(samples, (99,)),
            }
        )
    # where the time of "1 any" goes
    containers, usage = states["partly"], usages["partly"]
    held = holders(containers)
    taken = set(held) | busy_outside(usage, held)
    request = REQUESTS[0][1]
    parts = []
    for label, fn in [
        ("holders(1000 containers)", lambda: holders(containers)),
        ("busy_outside(64 devices)", lambda: busy_outside(usage, held)),
        ("choose(1 any, 64 devices)", lambda: choose(request, devices, taken)),
    ]:
        samples = time_calls(fn, reps, budget_s)
        parts.append({"step": label, "us": samples, **stats(samples, (99,))})
    return {
        "fleet": FLEET_TEXT,
        "devices": len(devices),
        "states": info,
        "rows": rows,
        "steps": parts,
    }


def print_part1(p1: dict) -> None:
    part, full = p1["states"]["partly"], p1["states"]["full"]
    print()
    print("1. Allocation decision, pure (no daemon): holders() + busy_outside() + choose()")
    print(f"   fleet: {p1['fleet']}")
    print(
        f"   {part['containers']} container dicts (docker ps -a shape), states {part['states']};"
        f"\n   {part['labelled']} carry a ds01.gpus label; {part['live_holders']} live ones hold "
        f"{part['held_devices']} of 64 devices, 1 more is busy with a process outside DS01"
        f"\n   (NoFit row: {full['live_holders']} live holders hold all 64)"
    )
    print(f"   {'request':<28} {'gets':<16} {'n':>6} {'min':>8} {'median':>8} {'p99':>8}   (µs)")
    for r in p1["rows"]:
        print(
            f"   {r['request']:<28} {r['result']:<16} {r['n']:>6} {fmt(r['min'], 8, 1)} "
            f"{fmt(r['median'], 8, 1)} {fmt(r['p99'], 8, 1)}"
        )
    print("   where '1 any' goes:")
    for r in p1["steps"]:
        print(
            f"   {r['step']:<45} {r['n']:>6} {fmt(r['min'], 8, 1)} {fmt(r['median'], 8, 1)} "
            f"{fmt(r['p99'], 8, 1)}"
        )


# ---- table 2: ps vs inspect ---------------------------------------------------------------------


def inspected_as_listed(info: dict) -> dict:
    """The fields holders() reads, from ``inspect_container`` output."""
    created = info.get("Created", "")
    m = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)", created)
    ts = datetime.fromisoformat(m[1] + "+00:00").timestamp() if m else 0
    return {
        "Id": info["Id"],
        "Names": [info["Name"]],
        "Created": int(ts),
        "State": info["State"]["Status"],
        "Labels": info["Config"].get("Labels") or {},
    }


def part2(api: docker.APIClient, rid: str, n: int, reps: int) -> dict:
    devices = fleet()
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")

    def create(i: int) -> str:
        gpus = devices[i].uuid if i < len(devices) else ""
        c = api.create_container(
            IMAGE,
            ["true"],
            name=f"{PREFIX}-{rid}-{i:03d}",
            network_disabled=True,
            labels={
                "ds01.managed": "true",
                "ds01.user": f"bench{i:03d}",
                "ds01.project": "p",
                "ds01.server": "p",
                "ds01.created": now,
                GPU_LABEL: gpus,
                "ds01.gpu_equivalents": "1" if gpus else "0",
            },
        )
        return c["Id"]

    t = time.monotonic()
    with ThreadPoolExecutor(4) as pool:
        ids = list(pool.map(create, range(n)))
    create_s = time.monotonic() - t
    filters = hub_containers_filter(PREFIX)

    def by_ps() -> dict:
        return holders(api.containers(all=True, filters=filters))

    def by_inspect() -> dict:
        listed = api.containers(all=True, quiet=True, filters=filters)
        return holders([inspected_as_listed(api.inspect_container(c["Id"])) for c in listed])

    a, b = by_ps(), by_inspect()  # warm-up, and both must see the same table
    assert {u: h.container for u, h in a.items()} == {u: h.container for u, h in b.items()}
    assert len(a) == min(n, len(devices)), f"expected {min(n, len(devices))} held, got {len(a)}"
    times: dict[str, list[float]] = {"ps": [], "inspect": []}
    for _ in range(reps):
        for key, fn in (("ps", by_ps), ("inspect", by_inspect)):
            t = time.perf_counter()
            fn()
            times[key].append((time.perf_counter() - t) * 1000)
    engine_total = len(api.containers(all=True, quiet=True))
    out = {
        "n": n,
        "ids": len(ids),
        "held": len(a),
        "create_seconds": round(create_s, 2),
        "engine_containers": engine_total,
        "ms": times,
        "ps": stats(times["ps"], (99,)),
        "inspect": stats(times["inspect"], (99,)),
    }
    out["ratio"] = out["inspect"]["median"] / out["ps"]["median"]
    return out


def print_part2(p2: dict) -> None:
    print()
    print(
        f"2. Reading the allocation table from the engine: {p2['n']} created (never started) "
        f"containers, {p2['held']} holding a device\n"
        f"   (engine had {p2['engine_containers']} containers in all; holders() included in both)"
    )
    print(f"   {'method':<48} {'calls':>5} {'n':>3} {'min':>8} {'median':>8} {'max':>8}   (ms)")
    rows = [
        ("one docker ps -a, labels (containers(all=True))", 1, p2["ps"]),
        ("docker ps -a -q + inspect_container per container", p2["n"] + 1, p2["inspect"]),
    ]
    for label, calls, s in rows:
        print(
            f"   {label:<48} {calls:>5} {s['n']:>3} {fmt(s['min'], 8)} {fmt(s['median'], 8)} "
            f"{fmt(s['max'], 8)}"
        )
    print(f"   ratio of medians: inspect / ps = {p2['ratio']:.1f}x")


# ---- table 3: the storm -------------------------------------------------------------------------

#: A hub config for the storm: the test hub's config as it is, plus trace lines around the spawner's
#: allocation steps (one log line each, no change in behaviour), so that the report can say where
#: a launch's time goes. ``--no-trace`` runs tests/integration/hub_config.py alone.
TRACE_CONFIG = """\
# written by benchmarks/gpu_allocation.py: the test hub config plus trace lines
import functools
import time

load_subconfig({base!r})  # noqa: F821

import inspect

from ds01spawner.spawner.spawner import DS01Spawner


def _mark(self, event):
    self.log.info("ds01gbench-trace user=%s event=%s t=%.6f", self.user.name, event, time.time())


def _trace(name, enter, leave):
    orig = getattr(DS01Spawner, name, None)
    if orig is None:
        return

    if inspect.iscoroutinefunction(orig):

        @functools.wraps(orig)
        async def traced(self, *args, **kwargs):
            if enter:
                _mark(self, enter)
            try:
                return await orig(self, *args, **kwargs)
            finally:
                if leave:
                    _mark(self, leave)

    else:

        @functools.wraps(orig)
        def traced(self, *args, **kwargs):
            if enter:
                _mark(self, enter)
            try:
                return orig(self, *args, **kwargs)
            finally:
                if leave:
                    _mark(self, leave)

    setattr(DS01Spawner, name, traced)


_trace("start", "start", None)
_trace("allocate_and_create", "wants_lock", None)
_trace("_ds01_containers", "locked", "listed")
_trace("_assign_gpus", None, "decided")
_trace("_create_container", None, "created")
"""
BASE_CONFIG = REPO / "tests" / "integration" / "hub_config.py"
_TRACE = re.compile(r"ds01gbench-trace user=(\S+) event=(\w+) t=([\d.]+)")
_REQUEST = re.compile(r" (\d{3}) POST /hub/api/users/([\w.-]+)/servers/\S+ .*? ([\d.]+)ms")

#: Steps of a launch, from the trace: (key, label, from event, to event); "sent"/"answered" are
#: the client's clock, the rest the hub's (same machine, same clock).
STEPS = [
    ("hub", "POST sent -> spawner.start(): JupyterHub's own work", "sent", "start"),
    ("pre", "start() -> asks for the lock: workspace, docker inspect", "start", "wants_lock"),
    ("wait", "waiting for the allocation lock", "wants_lock", "locked"),
    ("ps", "under the lock: docker ps -a (the table)", "locked", "listed"),
    ("choose", "under the lock: holders + choose", "listed", "decided"),
    ("create", "under the lock: docker create (accepted only)", "decided", "created"),
    ("after", "decision -> 429 received: JupyterHub's clean-up", "decided", "answered"),
]


def trace_events(path: Path, users: list[str]) -> dict[str, dict[str, float]]:
    """Epoch times of each user's trace events, and the hub's own request time (``hub_ms``)."""
    out: dict[str, dict[str, float]] = {u: {} for u in users}
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return out
    for line in lines:
        m = _TRACE.search(line)
        if m and m[1] in out:
            out[m[1]].setdefault(m[2], float(m[3]))
            continue
        m = _REQUEST.search(line)
        if m and m[2] in out:
            out[m[2]].setdefault("hub_ms", float(m[3]))
    return out


def add_steps(result: dict, events: dict[str, float]) -> None:
    """Durations of the launch's steps (seconds), where both ends were seen."""
    ev = dict(events)
    if "sent_epoch" in result:
        ev["sent"] = result["sent_epoch"]
        if "answer_s" in result:
            ev["answered"] = result["sent_epoch"] + result["answer_s"]
    steps = {}
    for key, _, a, b in STEPS:
        if a in ev and b in ev and not (key == "after" and result.get("status") != 429):
            steps[key] = ev[b] - ev[a]
    result["steps"] = steps
    if "hub_ms" in ev:
        result["hub_ms"] = ev["hub_ms"]


def launch(hub: Hub, user: str, barrier: threading.Barrier, timeout: float) -> dict:
    """POST the launch at the barrier; follow progress when the hub answers 202."""
    session = requests.Session()
    session.headers["Authorization"] = f"token {hub.token}"
    url = f"{hub.url}/hub/api/users/{user}/servers/{STORM_SERVER}"
    res: dict = {"user": user}
    try:
        session.get(f"{hub.url}/hub/api/", timeout=10)  # open the connection before the barrier
        barrier.wait(timeout=60)
        res["sent_epoch"] = time.time()
        t0 = time.monotonic()
        res["sent"] = t0
        r = session.post(url, json={"gpus": 1}, timeout=timeout)
        res["answered"] = time.monotonic()
        res["status"] = r.status_code
        res["answer_s"] = res["answered"] - t0
        try:
            res["message"] = r.json().get("message", "")
        except ValueError:
            res["message"] = r.text[:200]
        if r.status_code == 201:
            res["ready_s"] = res["answer_s"]
        elif r.status_code == 202:
            p = session.get(f"{url}/progress", stream=True, timeout=timeout)
            last: dict = {}
            for line in p.iter_lines(decode_unicode=True):
                if line and line.startswith("data:"):
                    last = json.loads(line[5:])
                    if last.get("ready") or last.get("failed"):
                        break
            p.close()
            if last.get("ready"):
                res["ready_s"] = time.monotonic() - t0
            else:
                res["failed"] = last.get("message", str(last))
    except Exception as e:  # noqa: BLE001 - reported in the table
        res["error"] = f"{type(e).__name__}: {e}"
    finally:
        session.close()
    return res


def storm_round(
    k: int,
    client: docker.DockerClient,
    rid: str,
    tmp: Path,
    hubs: list,
    timeout: float,
    trace: bool,
) -> dict:
    prefix = f"{PREFIX}{rid}{k}"
    state = tmp / f"storm{k}"
    state.mkdir(parents=True)
    config = BASE_CONFIG
    if trace:
        config = tmp / "trace_hub_config.py"
        config.write_text(TRACE_CONFIG.format(base=str(BASE_CONFIG)))
    env = {"DS01_TEST_GPUS": json.dumps(STORM_SPEC)}
    hub = Hub(state, prefix, extra_env=env, config=config)
    hubs.append(hub)
    t = time.monotonic()
    hub.start(timeout=90)
    hub_start_s = time.monotonic() - t
    users = [f"storm{i:02d}" for i in range(STORM_USERS)]
    for u in users:
        hub.ensure_user(u)
    barrier = threading.Barrier(STORM_USERS)
    pool = ThreadPoolExecutor(STORM_USERS)
    try:
        results = list(pool.map(lambda u: launch(hub, u, barrier, timeout), users))
    finally:  # on Ctrl-C, go on to the clean-up (stopping the hub ends the launches' waits)
        barrier.abort()
        pool.shutdown(wait=False, cancel_futures=True)
    t0 = min(r["sent"] for r in results if "sent" in r)
    answered = [r["answered"] - t0 for r in results if "answered" in r]
    started = [r for r in results if "ready_s" in r]
    rejected = [r for r in results if r.get("status") == 429]
    other = [r for r in results if r not in started and r not in rejected]

    listed = client.api.containers(all=True, filters=hub_containers_filter(prefix))
    table = holders(listed)
    owners = sorted(h.user for h in table.values())
    assert owners == sorted(r["user"] for r in started), f"devices {owners} vs started {started}"

    # a refusal on a quiet hub, for comparison: one launch at a time while the 4 servers run
    lone = []
    for r in rejected[:LONE_REJECTIONS]:
        t = time.monotonic()
        answer = hub.api("POST", f"/users/{r['user']}/servers/{STORM_SERVER}", json={"gpus": 1})
        lone.append(time.monotonic() - t)
        assert answer.status_code == 429, f"lone launch: {answer.status_code} {answer.text}"

    events = trace_events(hub.log_path, users)
    for r in results:
        add_steps(r, events.get(r["user"], {}))
    # the allocation lock is held from the listing until the decision (or the create)
    held_lock = [
        ev.get("created", ev["decided"]) - ev["locked"]
        for ev in events.values()
        if "locked" in ev and "decided" in ev
    ]

    t = time.monotonic()
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda r: hub.stop_server(r["user"], STORM_SERVER, timeout=60), started))
    retire_s = time.monotonic() - t
    left = client.api.containers(all=True, quiet=True, filters={"name": f"^/{prefix}-"})
    hub.shutdown()
    hubs.remove(hub)  # shut down: clean-up must not signal its proxy's pid again
    removed = remove_containers(client, f"^/{prefix}-")
    (tmp / f"hub-{k}.log").write_bytes(hub.log_path.read_bytes())
    crash = state / "hub-crash.log"  # faulthandler's traces of a hub that crashed (if any)
    if crash.exists():
        (tmp / f"hub-{k}-crash.log").write_bytes(crash.read_bytes())
    for r in results:  # monotonic clock readings mean nothing outside this run
        r.pop("sent", None)
        r.pop("answered", None)
    return {
        "round": k,
        "hub_start_s": hub_start_s,
        "all_answered_s": max(answered) if answered else None,
        "started": len(started),
        "rejected": len(rejected),
        "other": [
            {k2: r.get(k2) for k2 in ("user", "status", "message", "error", "failed")}
            for r in other
        ],
        "devices_held": len(table),
        "lock_held_total_s": sum(held_lock) if held_lock else None,
        "retire_s": retire_s,
        "left_after_retire": len(left),
        "removed_after_shutdown": removed,
        "rejection_s": [r["answer_s"] for r in rejected],
        "lone_rejection_s": lone,
        "ready_s": [r["ready_s"] for r in started],
        "accepted_status": sorted(r["status"] for r in started),
        "results": results,
    }


def print_part3(rounds: list[dict]) -> None:
    print()
    print(
        f"3. Spawn storm through a real hub: {STORM_USERS} users POST "
        f'/hub/api/users/<u>/servers/{STORM_SERVER} {{"gpus": 1}} at once; '
        f"4 simulated A100s\n   (seconds; answered = until all {STORM_USERS} POSTs are "
        f"answered; ready = accepted launch until the server is ready; retire = DELETE of the 4\n"
        f"   until gone; lone 429 = median of {LONE_REJECTIONS} launches refused one at a time "
        f"after the storm; a fresh hub per round)"
    )
    print(
        f"   {'round':<6} {'hub up':>6} {'answered':>8} {'started':>7} {'rejected':>8} "
        f"{'429 min':>8} {'median':>7} {'max':>6}  {'ready min':>9} {'median':>7} "
        f"{'max':>6} {'retire':>7} {'lone 429':>8}"
    )

    def row(label, hub_up, answered, n_started, n_rejected, rej, ready, retire, lone):
        rs, ys = stats(rej, (99,)), stats(ready, (99,))
        lone_median = statistics.median(lone) if lone else None
        print(
            f"   {label:<6} {fmt(hub_up, 6)} {fmt(answered, 8)} {n_started:>7} {n_rejected:>8} "
            f"{fmt(rs.get('min'), 8)} {fmt(rs.get('median'), 7)} {fmt(rs.get('max'), 6)}  "
            f"{fmt(ys.get('min'), 9)} {fmt(ys.get('median'), 7)} {fmt(ys.get('max'), 6)} "
            f"{fmt(retire, 7)} {fmt(lone_median, 8)}"
        )

    for r in rounds:
        row(
            str(r["round"]),
            r["hub_start_s"],
            r["all_answered_s"],
            r["started"],
            r["rejected"],
            r["rejection_s"],
            r["ready_s"],
            r["retire_s"],
            r["lone_rejection_s"],
        )
    if len(rounds) > 1:
        row(
            "all",
            statistics.median(r["hub_start_s"] for r in rounds),
            max(r["all_answered_s"] or 0 for r in rounds),
            sum(r["started"] for r in rounds),
            sum(r["rejected"] for r in rounds),
            [x for r in rounds for x in r["rejection_s"]],
            [x for r in rounds for x in r["ready_s"]],
            statistics.median(r["retire_s"] for r in rounds),
            [x for r in rounds for x in r["lone_rejection_s"]],
        )
    rej = [x for r in rounds for x in r["rejection_s"]]
    ok = bool(rej) and max(rej) < TARGET_REJECTION_S
    expected = all(r["started"] == 4 and r["rejected"] == STORM_USERS - 4 for r in rounds)
    statuses = sorted({str(s) for r in rounds for s in r["accepted_status"]})
    print(
        f"   started 4 / rejected {STORM_USERS - 4} in every round: {'yes' if expected else 'NO'};"
        f" every rejection under {TARGET_REJECTION_S:g} s: {'met' if ok else 'NOT met'}; "
        f"accepted launches answered {'/'.join(statuses) or '-'}"
    )
    for r in rounds:
        for o in r["other"]:
            print(f"   round {r['round']}: unexpected answer {o}")
    results = [x for r in rounds for x in r["results"]]
    if not any(x.get("steps", {}).get("wait") is not None for x in results):
        return
    print()
    print(
        "   where a launch's time goes (trace lines in the hub log, all rounds; seconds)\n"
        f"   {'step':<56} {'rejected: median':>16} {'max':>6}   {'accepted: median':>16} "
        f"{'max':>6}"
    )
    for key, label, _, _ in STEPS:
        cells = []
        for want in (429, "ok"):
            xs = [
                x["steps"][key]
                for x in results
                if key in x.get("steps", {})
                and (x.get("status") == 429 if want == 429 else "ready_s" in x)
            ]
            s = stats(xs, (99,))
            cells.append(f"{fmt(s.get('median'), 16)} {fmt(s.get('max'), 6)}")
        print(f"   {label:<56} {cells[0]}   {cells[1]}")
    hub_ms = [x["hub_ms"] / 1000 for x in results if x.get("status") == 429 and "hub_ms" in x]
    held = [r["lock_held_total_s"] for r in rounds if r.get("lock_held_total_s") is not None]
    if hub_ms:
        s = stats(hub_ms, (99,))
        print(
            f"   {'429 requests as the hub logs them (its own request time)':<56} "
            f"{fmt(s['median'], 16)} {fmt(s['max'], 6)}"
        )
    if held:
        print(
            f"   the allocation lock was held {', '.join(f'{h:.2f}' for h in held)} s in all "
            f"per round ({STORM_USERS} holders each)"
        )


# ---- main ---------------------------------------------------------------------------------------


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--json", metavar="PATH", help="write the raw numbers to PATH")
    p.add_argument("--skip-engine", action="store_true", help="run table 1 only (no Docker)")
    p.add_argument("--reps", type=int, default=2000, help="table 1: calls per row (default 2000)")
    p.add_argument(
        "--budget", type=float, default=2.0, help="table 1: at most this many seconds per row"
    )
    p.add_argument("--containers", type=int, default=100, help="table 2: N (default 100)")
    p.add_argument("--ps-reps", type=int, default=7, help="table 2: repetitions (default 7)")
    p.add_argument("--storm-rounds", type=int, default=2, help="table 3: rounds (default 2)")
    p.add_argument(
        "--timeout", type=float, default=120, help="table 3: seconds per launch (default 120)"
    )
    p.add_argument(
        "--no-trace",
        action="store_true",
        help="table 3: run the test hub config alone, without the trace lines that split a "
        "launch into steps",
    )
    p.add_argument("--keep-logs", metavar="DIR", help="copy the storm hubs' logs to DIR")
    args = p.parse_args(argv)
    if args.reps < 1 or args.containers < 1 or args.ps_reps < 1 or args.storm_rounds < 0:
        p.error("--reps, --containers and --ps-reps must be >= 1, --storm-rounds >= 0")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, raise_interrupted)
    signal.signal(signal.SIGINT, raise_interrupted)
    rid = secrets.token_hex(3)
    began = time.monotonic()
    meta = {
        "run_id": rid,
        "started": datetime.now(timezone.utc).isoformat(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
    }
    raw: dict = {"meta": meta}
    status, error = 0, None
    client = None
    hubs: list[Hub] = []
    tmp = Path(tempfile.mkdtemp(prefix=f"{PREFIX}-{rid}-"))
    try:
        print("table 1: timing the pure decision ...", flush=True)
        raw["decision"] = part1(args.reps, args.budget)
        print_part1(raw["decision"])
        if not args.skip_engine:
            client = docker.from_env(timeout=120)
            client.images.get(IMAGE)  # fail early when the image is missing
            meta["docker_engine"] = client.version().get("Version")
            print(f"\ntable 2: creating {args.containers} containers ...", flush=True)
            try:
                raw["read_table"] = part2(client.api, rid, args.containers, args.ps_reps)
            finally:
                remove_containers(client, f"^/{PREFIX}-{rid}-")
            print_part2(raw["read_table"])
            rounds = []
            raw["storm"] = rounds
            for k in range(1, args.storm_rounds + 1):
                print(f"\ntable 3: storm round {k}/{args.storm_rounds} ...", flush=True)
                rounds.append(
                    storm_round(k, client, rid, tmp, hubs, args.timeout, not args.no_trace)
                )
            if rounds:
                print_part3(rounds)
    except KeyboardInterrupt as e:
        status, error = 130, f"interrupted ({e})"
    except Exception as e:  # noqa: BLE001 - reported, then what was measured
        status, error = 1, f"{type(e).__name__}: {e}"
        if hubs:
            error += f"\n--- hub log ---\n{hubs[-1].log_tail()}"
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # let the clean-up finish
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        cleanup(client, hubs, rid, tmp, args.keep_logs)
    meta["seconds_total"] = round(time.monotonic() - began, 1)
    meta["error"] = error
    if error:
        print(f"\nstopped: {error}", file=sys.stderr)
    print(f"\n(whole run: {meta['seconds_total']} s)")
    if args.json:
        Path(args.json).write_text(json.dumps(raw, indent=1) + "\n")
        print(f"raw numbers written to {args.json}")
    return status


def cleanup(client, hubs: list[Hub], rid: str, tmp: Path, keep_logs: str | None) -> None:
    for hub in hubs:
        stop_hub(hub, hub.prefix)
    if client is not None:
        try:
            for c in client.api.containers(all=True, quiet=True, filters={"name": f"^/{PREFIX}"}):
                info = client.api.inspect_container(c["Id"])
                if rid in info["Name"]:  # only this run's containers
                    client.api.remove_container(c["Id"], force=True, v=True)
        except docker.errors.DockerException as e:
            print(f"clean-up: containers: {e}", file=sys.stderr)
    if keep_logs:
        Path(keep_logs).mkdir(parents=True, exist_ok=True)
        for log in tmp.glob("hub-*.log"):
            shutil.copy(log, Path(keep_logs) / log.name)
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

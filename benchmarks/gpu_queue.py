#!/usr/bin/env python3
"""The GPU queue: how soon a freed GPU serves the next launch, and what waiting costs the hub.

Two tables, measured against real hubs (harness/hub.py's Hub running
benchmarks/hub_config.py, 4 simulated A100s, every server a real container of ds01/base:latest):

  1  release -> next launch. 4 GPUs held by 4 running servers and one more launch that wants a
     GPU; one running server is retired (``DELETE /hub/api/users/<u>/servers/<s>``). From the
     DELETE's answer (the freed container is gone) until the next launch's container has started
     (Docker's ``State.StartedAt``) and until the hub says it is ready. With the queue
     (``gpu_queue_timeout`` > 0: the launch waits in line and the retire serves it), side by side
     with the alternative without a queue (``gpu_queue_timeout = 0``: HTTP 429): a client that
     retries its launch every 1 s and one that retries every 10 s (a person refreshing). The three
     alternate within each of ``--rounds`` rounds.
  2  the hub while launches wait. With 4 GPUs held: 200 sequential ``GET /hub/api/users/<u>``
     and 200 ``GET /hub/api/users`` (interleaved), p50 / p95 / max, with the hub process's CPU
     use (/proc/<pid>/stat) and the spawner's ``docker ps -a`` listings per second over the
     window, then the same over an idle window; with 0 and with ``--waiters`` (50) launches
     waiting (checked on the queue API). Then ``--drain`` retires, each timed as in table 1:
     release -> the 1st in line's container, with 50 waiting. Then the hub is restarted (killed
     if it has not exited 10 s after SIGTERM, which is reported) and the 0 row is measured again,
     to show the drift of the machine within the run.

Usage: .venv/bin/python benchmarks/gpu_queue.py [--rounds 5] [--waiters 50] [--json out.json]
Everything it makes (containers named ds01qbench<id>*, two hubs and their proxies on free loopback
ports, a temp dir /tmp/ds01qbench-<id>-*) is removed at exit, also on Ctrl-C, SIGTERM or an error.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
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
    wait_for,
)
from benchmarks.spawn_latency import docker_time  # noqa: E402
from ds01spawner.projects.names import container_name  # noqa: E402

IMAGE = "ds01/base:latest"
PREFIX = "ds01qbench"  # every container this script makes starts with this (then the run id)
SERVER = "p"  # the named server (project) of every launch
LAUNCH = {"gpus": 1}
A100_40 = {"name": "NVIDIA A100-SXM4-40GB", "memory_mib": 40960}
GPUS = [A100_40] * 4
RUNNERS = [f"run{i}" for i in range(len(GPUS))]
BASE_CONFIG = REPO / "benchmarks" / "hub_config.py"
CLK_TCK = os.sysconf("SC_CLK_TCK")

#: The hub config of this run: the benchmark hub's (the test hub's config, poll_interval 30 s as in
#: production) with the queue's recheck interval, and one log line after each ``docker ps -a``
#: listing of the spawner (``--no-trace`` leaves the lines out; nothing else changes).
HUB_CONFIG = """\
# written by benchmarks/gpu_queue.py: the benchmark hub config, the recheck interval, trace lines
import functools
import time

c = get_config()  # noqa: F821
load_subconfig({base!r})  # noqa: F821
c.DS01Spawner.gpu_queue_recheck_seconds = {recheck!r}

if {trace!r}:
    from ds01spawner.spawner.spawner import DS01Spawner

    _listing = DS01Spawner._ds01_containers

    @functools.wraps(_listing)
    async def _traced(self):
        t0 = time.time()
        try:
            return await _listing(self)
        finally:
            self.log.info("ds01qbench-ps user=%s t0=%.6f t=%.6f", self.user.name, t0, time.time())

    DS01Spawner._ds01_containers = _traced
"""
_PS = re.compile(r"ds01qbench-ps user=\S+ t0=([\d.]+) t=([\d.]+)")

VARIANTS = {
    "queue": "queue: waits in line",
    "retry1": "no queue: retry every 1 s",
    "retry10": "no queue: retry every 10 s",
}
RETRY = {"queue": None, "retry1": 1.0, "retry10": 10.0}
EXIT_WAIT_S = 10  # table 2: a hub still running this long after SIGTERM is killed


# ---- the hubs -----------------------------------------------------------------------------------


class BenchHub(Hub):
    """A test hub with this run's config; ``running`` = users whose servers hold the 4 GPUs."""

    def __init__(self, tmp: Path, rid: str, tag: str, queue_timeout: int, config: Path) -> None:
        state = tmp / tag
        state.mkdir(parents=True)
        env = {"DS01_TEST_GPU_QUEUE": str(queue_timeout), "DS01_TEST_GPUS": json.dumps(GPUS)}
        super().__init__(state, f"{PREFIX}{rid}{tag[0]}", extra_env=env, config=config)
        self.tag = tag
        self.running: deque[str] = deque()
        self._admin_token = ""

    def boot(self, timeout: float) -> BenchHub:
        try:
            self.start(timeout)
        except (TimeoutError, AssertionError) as e:
            raise RuntimeError(f"the {self.tag} hub did not start: {e}") from e
        with ThreadPoolExecutor(len(RUNNERS)) as pool:  # fill the 4 GPUs
            list(pool.map(lambda u: self.start_server(u, SERVER, LAUNCH, timeout), RUNNERS))
        self.running.extend(RUNNERS)
        return self

    def container(self, user: str) -> str:
        return container_name(user, SERVER, self.prefix)

    def queue(self) -> list[dict]:
        """The waiting launches, in line order, from the ds01-limits service (as an admin)."""
        if not self._admin_token:
            self._admin_token = self.user_token("admin")
        r = self.session.get(
            f"{self.url}/services/ds01-limits/api/queue",
            headers={"Authorization": f"token {self._admin_token}"},
            timeout=30,
        )
        if r.status_code != 200:
            raise RuntimeError(f"queue API: {r.status_code} {r.text[:300]}")
        return r.json()["waiting"]

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.proc.pid)

    def listings_between(self, e0: float, e1: float) -> list[tuple[float, float]]:
        """(start, end) epoch times of the spawner's docker ps -a listings that ended between
        e0 and e1 (from the trace lines)."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return []
        spans = [(float(m[1]), float(m[2])) for m in _PS.finditer(text)]
        return sorted((a, b) for a, b in spans if e0 <= b <= e1)


def lock_use(spans: list[tuple[float, float]], e0: float, e1: float) -> float:
    """Share of [e0, e1] during which a listing ran. Listings run under the hub's allocation
    lock, one at a time, so this is a lower bound of the time the lock was held."""
    return sum(min(b, e1) - max(a, e0) for a, b in spans if b > e0 and a < e1) / (e1 - e0)


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, in seconds (/proc/<pid>/stat, fields 14 and 15)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def dockerd_pid() -> int | None:
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == "dockerd":
                    return int(entry.name)
            except OSError:
                continue
    return None


class Window:
    """CPU of the hub (and of dockerd, shared with everything on the engine) and the spawner's
    docker ps -a listings over a stretch of wall time."""

    def __init__(self, hub: BenchHub, dockerd: int | None) -> None:
        self.hub, self.dockerd = hub, dockerd
        self.m0, self.e0 = time.monotonic(), time.time()
        self.hub0 = hub.cpu_seconds()
        self.d0 = cpu_seconds(dockerd) if dockerd else None

    def close(self) -> dict:
        wall = time.monotonic() - self.m0
        e1 = time.time()
        hub_cpu = self.hub.cpu_seconds() - self.hub0
        out = {
            "wall_s": wall,
            "hub_cpu_s": hub_cpu,
            "hub_cpu_pct": 100 * hub_cpu / wall,
            "dockerd_cpu_pct": None,
            "load1": os.getloadavg()[0],
        }
        if self.dockerd and self.d0 is not None:
            try:
                out["dockerd_cpu_pct"] = 100 * (cpu_seconds(self.dockerd) - self.d0) / wall
            except OSError:
                pass
        time.sleep(0.3)  # let the last trace lines reach the log file
        spans = self.hub.listings_between(self.e0, e1)
        out["listings"] = len(spans)
        out["listings_per_s"] = len(spans) / wall
        out["lock_pct"] = 100 * lock_use(spans, self.e0, e1)
        out["listing_ms"] = 1000 * statistics.median(b - a for a, b in spans) if spans else None
        return out


# ---- clients ------------------------------------------------------------------------------------


class Launch(threading.Thread):
    """One client's launch: POST once (``retry`` None) or again every ``retry`` s while the hub
    answers 429, then follow the progress stream after a 202 until the server is ready."""

    def __init__(self, hub: Hub, user: str, retry: float | None, timeout: float) -> None:
        super().__init__(daemon=True, name=f"launch-{user}")
        self.hub, self.user, self.retry, self.timeout = hub, user, retry, timeout
        self.refused = threading.Event()  # set at the first 429
        self.halt = threading.Event()
        self.tries = 0
        self.sent_at: float | None = None  # monotonic: the accepted POST was sent
        self.ready_at: float | None = None  # monotonic: 201, or the progress stream's ready
        self.status: int | None = None
        self.error: str | None = None

    def run(self) -> None:
        session = requests.Session()
        session.headers["Authorization"] = f"token {self.hub.token}"
        url = f"{self.hub.url}/hub/api/users/{self.user}/servers/{SERVER}"
        deadline = time.monotonic() + self.timeout
        slot = time.monotonic()
        try:
            while not self.halt.is_set():
                self.tries += 1
                sent = time.monotonic()
                r = session.post(url, json=LAUNCH, timeout=self.timeout)
                self.status = r.status_code
                if r.status_code == 429 and self.retry:
                    self.refused.set()
                    while slot <= time.monotonic():
                        slot += self.retry
                    if slot > deadline:
                        raise TimeoutError(f"still refused after {self.tries} tries")
                    self.halt.wait(slot - time.monotonic())
                    continue
                self.sent_at = sent
                if r.status_code == 201:
                    self.ready_at = time.monotonic()
                elif r.status_code == 202:
                    last = follow(session, url, deadline - time.monotonic())
                    if not last.get("ready"):
                        raise RuntimeError(f"spawn failed: {last}")
                    self.ready_at = time.monotonic()
                else:
                    raise RuntimeError(f"POST answered {r.status_code}: {r.text[:300]}")
                return
        except Exception as e:  # noqa: BLE001 - reported by the caller
            self.error = f"{type(e).__name__}: {e}"
        finally:
            session.close()


def follow(session: requests.Session, url: str, timeout: float, opened=None) -> dict:
    """Read the server's progress stream until ready or failed; return the last event.
    ``opened`` (an Event) is set at the first event (the stream replays the ones so far)."""
    r = session.get(f"{url}/progress", stream=True, timeout=max(1.0, timeout))
    if r.status_code != 200:
        raise RuntimeError(f"progress: {r.status_code} {r.text[:300]}")
    last: dict = {}
    deadline = time.monotonic() + timeout
    try:
        for line in r.iter_lines(decode_unicode=True):
            if line and line.startswith("data:"):
                last = json.loads(line[5:])
                if opened is not None:
                    opened.set()
                if last.get("ready") or last.get("failed"):
                    break
            if time.monotonic() > deadline:
                raise TimeoutError("progress did not finish")
    finally:
        r.close()
    return last


class Follower(threading.Thread):
    """Follow an already waiting launch until its server is ready (monotonic ``ready_at``)."""

    def __init__(self, hub: Hub, user: str, timeout: float) -> None:
        super().__init__(daemon=True, name=f"follow-{user}")
        self.hub, self.user, self.timeout = hub, user, timeout
        self.opened = threading.Event()
        self.halt = threading.Event()  # unused: a follower only reads
        self.ready_at: float | None = None
        self.error: str | None = None
        self.tries = 1

    def run(self) -> None:
        session = requests.Session()
        session.headers["Authorization"] = f"token {self.hub.token}"
        url = f"{self.hub.url}/hub/api/users/{self.user}/servers/{SERVER}"
        try:
            last = follow(session, url, self.timeout, self.opened)
            if not last.get("ready"):
                raise RuntimeError(f"spawn failed: {last}")
            self.ready_at = time.monotonic()
        except Exception as e:  # noqa: BLE001 - reported by the caller
            self.error = f"{type(e).__name__}: {e}"
        finally:
            session.close()
            self.opened.set()


# ---- table 1: release -> next launch ------------------------------------------------------------


def retire_and_time(
    hub: BenchHub, client: docker.DockerClient, user: str, waiter, timeout: float
) -> dict:
    """Retire the oldest running server; time ``waiter`` (a Launch or a Follower of ``user``)."""
    retiring = hub.running[0]
    freed = client.api.inspect_container(hub.container(retiring))["Config"]["Labels"]["ds01.gpus"]
    e_del = time.time()
    r = hub.api("DELETE", f"/users/{retiring}/servers/{SERVER}", timeout=timeout)
    t0, e0 = time.monotonic(), time.time()
    delete_s = e0 - e_del
    if r.status_code == 202:  # a slow stop: the clock starts when the hub says it is gone
        wait_for(lambda: hub.server_model(retiring, SERVER) is None, timeout, f"{retiring} gone")
        t0, e0 = time.monotonic(), time.time()
    elif r.status_code != 204:
        raise RuntimeError(f"DELETE {retiring}: {r.status_code} {r.text[:300]}")
    waiter.join(timeout)
    if waiter.is_alive() or waiter.error or waiter.ready_at is None:
        waiter.halt.set()
        raise RuntimeError(f"{user}: {waiter.error or 'not ready in time'}\n{hub.log_tail()}")
    hub.running.popleft()
    hub.running.append(user)
    info = client.api.inspect_container(hub.container(user))
    created = docker_time(info.get("Created"))
    started = docker_time(info.get("State", {}).get("StartedAt"))
    destroyed = None
    for ev in client.api.events(
        since=int(e_del) - 1,
        until=int(time.time()) + 1,
        filters={"type": "container", "event": "destroy", "container": hub.container(retiring)},
        decode=True,
    ):
        destroyed = ev.get("timeNano", 0) / 1e9 or None
    # listings between the freed container's removal and this launch's create: the waiters that
    # took the allocation lock before the one that was served (and the served one itself)
    gone = destroyed or e0
    before = [s for s in hub.listings_between(gone, created or 0) if s[0] >= gone]
    return {
        "user": user,
        "retired": retiring,
        "delete_s": delete_s,
        "created_s": created - e0 if created else None,
        "started_s": started - e0 if started else None,
        "ready_s": waiter.ready_at - t0,
        "accepted_sent_s": (waiter.sent_at - t0) if getattr(waiter, "sent_at", None) else None,
        "destroy_before_answer_s": e0 - destroyed if destroyed else None,
        "tries": waiter.tries,
        "listings_before": max(0, len(before) - 1),  # without the served launch's own
        "freed_device_reused": info["Config"]["Labels"].get("ds01.gpus") == freed,
    }


def release_round(
    variant: str, hub: BenchHub, client, user: str, offset: float, timeout: float
) -> dict:
    hub.ensure_user(user)
    launch = Launch(hub, user, RETRY[variant], timeout)
    launch.start()
    try:
        if variant == "queue":  # in line before the release
            wait_for(
                lambda: launch.error or any(w["user"] == user for w in hub.queue()),
                timeout,
                f"{user} in the queue",
                interval=0.05,
            )
            if launch.error:
                raise RuntimeError(f"{user}: {launch.error}")
        else:  # refused at least once, then the release comes at a chosen phase of the interval
            if not launch.refused.wait(timeout) or launch.error:
                raise RuntimeError(f"{user}: no 429 ({launch.error or launch.status})")
            time.sleep(offset)
        res = retire_and_time(hub, client, user, launch, timeout)
    finally:
        launch.halt.set()
    res["variant"] = variant
    return res


def print_release(rows: list[dict], drain: list[dict], waiters: int) -> None:
    print()
    print(
        "1. From a release to the next launch: 4 simulated A100s held by 4 running servers, one "
        "more launch wants a GPU;\n   one server is retired (DELETE); seconds from the DELETE's "
        "answer until the next launch's container\n   has started (Docker's State.StartedAt) and "
        "until the hub says it is ready (201, or the progress stream's ready)"
    )
    print(
        f"   {'variant':<34} {'n':>2}   {'started min':>11} {'median':>6} {'max':>6}   "
        f"{'ready min':>9} {'median':>6} {'max':>6}   {'created':>7} {'tries':>5} "
        f"{'ps before':>9}"
    )
    groups = [(VARIANTS[v], [r for r in rows if r["variant"] == v]) for v in VARIANTS]
    if drain:
        groups.append((f"queue, {waiters} waiting: 1st in line", drain))
    for label, rs in groups:
        if not rs:
            continue
        st = stats([r["started_s"] for r in rs if r["started_s"] is not None])
        rd = stats([r["ready_s"] for r in rs])
        cr = [r["created_s"] for r in rs if r["created_s"] is not None]
        queued = rs[0]["variant"] in ("queue", "drain")
        before = statistics.median(r["listings_before"] for r in rs) if queued else None
        print(
            f"   {label:<34} {len(rs):>2}   {fmt(st.get('min'), 11)} {fmt(st.get('median'), 6)} "
            f"{fmt(st.get('max'), 6)}   {fmt(rd.get('min'), 9)} {fmt(rd.get('median'), 6)} "
            f"{fmt(rd.get('max'), 6)}   {fmt(statistics.median(cr) if cr else None)} "
            f"{statistics.median(r['tries'] for r in rs):>5g} "
            f"{before if before is not None else '-':>9}"
        )
    everything = rows + drain
    dl = [r["delete_s"] for r in everything]
    gone = [r["destroy_before_answer_s"] for r in everything if r["destroy_before_answer_s"]]
    reused = sum(1 for r in everything if r["freed_device_reused"])
    gone_s = statistics.median(gone) if gone else float("nan")
    print(
        "   (created = median, container created; tries = median POSTs per launch; ps before = "
        "median listings of other\n   waiters between the freed container's removal and the "
        f"create. The DELETE took {statistics.median(dl):.2f} s median; Docker's\n   'destroy' "
        f"event of the freed container came {gone_s:.2f} s median before its answer. The next "
        f"launch got the\n   freed device in {reused} of {len(everything)}.)"
    )


# ---- table 2: the hub while launches wait -------------------------------------------------------


def request_window(hub: BenchHub, user: str, n: int, dockerd: int | None) -> dict:
    session = requests.Session()
    session.headers["Authorization"] = f"token {hub.token}"
    urls = {
        "GET /hub/api/users/<u>": f"{hub.url}/hub/api/users/{user}",
        "GET /hub/api/users": f"{hub.url}/hub/api/users",
    }
    for url in urls.values():  # warm-up
        for _ in range(3):
            session.get(url, timeout=30).raise_for_status()
    ms: dict[str, list[float]] = {k: [] for k in urls}
    window = Window(hub, dockerd)
    try:
        for _ in range(n):
            for key, url in urls.items():
                t = time.perf_counter()
                r = session.get(url, timeout=30)
                ms[key].append((time.perf_counter() - t) * 1000)
                if r.status_code != 200:
                    raise RuntimeError(f"{key}: {r.status_code} {r.text[:200]}")
    finally:
        session.close()
    return {"ms": ms, "stats": {k: stats(v) for k, v in ms.items()}, "window": window.close()}


def idle_window(hub: BenchHub, seconds: float, dockerd: int | None) -> dict:
    window = Window(hub, dockerd)
    time.sleep(seconds)
    return window.close()


def join_waiters(
    hub: BenchHub, users: list[str], timeout: float, dockerd: int | None, stagger: float
) -> dict:
    """Launch ``users`` (4 GPUs held: each waits); until the queue API lists all of them, and
    the hub's CPU and listings until all POSTs were answered (202 after slow_spawn_timeout)."""
    hub.queue()  # the admin token, before the clock

    def post(u: str) -> int:
        with requests.Session() as s:
            s.headers["Authorization"] = f"token {hub.token}"
            url = f"{hub.url}/hub/api/users/{u}/servers/{SERVER}"
            return s.post(url, json=LAUNCH, timeout=timeout).status_code

    window = Window(hub, dockerd)
    t0 = time.monotonic()
    pool = ThreadPoolExecutor(len(users))
    try:
        futures = []
        for u in users:
            futures.append(pool.submit(post, u))
            time.sleep(stagger)
        queued = wait_for(
            lambda: (lambda q: q if len(q) >= len(users) else None)(hub.queue()),
            timeout,
            f"{len(users)} launches in the queue",
            interval=0.2,
        )
        joined_s = time.monotonic() - t0
        answers = [f.result(timeout) for f in futures]  # 202 once slow_spawn_timeout (10 s) passed
        stat = window.close()
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    if sorted(w["user"] for w in queued) != sorted(users) or set(answers) != {202}:
        raise RuntimeError(f"expected {len(users)} waiting and 202s: {queued} {answers}")
    return {
        "joined_s": joined_s,
        "window": stat,
        "positions": [w["position"] for w in queued],
        "answers": answers,
    }


def waiting_part(
    hub: BenchHub, client, args, dockerd: int | None, timeout: float, deadline: float
) -> dict:
    user = hub.running[-1]
    out: dict = {"recheck_s": args.recheck, "waiters": args.waiters}
    users = [f"wait{i:02d}" for i in range(1, args.waiters + 1)]
    for u in users:  # the same users in both cases (GET /hub/api/users lists them all)
        hub.ensure_user(u)
    print("table 2: 0 waiting ...", flush=True)
    if hub.queue():
        raise RuntimeError(f"the queue is not empty: {hub.queue()}")
    out["0"] = {
        "requests": request_window(hub, user, args.requests, dockerd),
        "idle": idle_window(hub, args.idle_seconds, dockerd),
    }
    print(f"table 2: {args.waiters} launches join the queue ...", flush=True)
    out["join"] = join_waiters(hub, users, timeout, dockerd, args.stagger)
    queued = hub.queue()
    if len(queued) != args.waiters:
        raise RuntimeError(f"{len(queued)} waiting, expected {args.waiters}")
    print(f"table 2: {args.waiters} waiting ...", flush=True)
    out["n"] = {
        "requests": request_window(hub, user, args.requests, dockerd),
        "idle": idle_window(hub, args.idle_seconds, dockerd),
    }
    out["still_waiting"] = len(hub.queue())
    drain = []
    for k in range(min(args.drain, len(users))):
        if time.monotonic() > deadline:
            print("--max-minutes reached; no more drain rounds", flush=True)
            break
        line = hub.queue()
        first = line[0]["user"]
        follower = Follower(hub, first, timeout)
        follower.start()
        follower.opened.wait(30)
        res = retire_and_time(hub, client, first, follower, timeout)
        after = hub.queue()
        res.update(
            variant="drain",
            waiting_before=len(line),
            waiting_after=len(after),
            next_moved_up=bool(after) and after[0]["user"] == line[1]["user"],
        )
        drain.append(res)
        print(f"  drain {k + 1}: {first} started {res['started_s']:.2f} s", flush=True)
    out["drain"] = drain
    if args.no_again or time.monotonic() > deadline:
        return out
    # restart the hub (it ends the waiting launches; running servers stay), then measure 0 waiting
    # again: the same users and servers as the first 0 row, so the difference shows drift on the
    # machine. (Not 47 DELETEs: JupyterHub answers each DELETE of a pending spawn after a fixed
    # 1 s, and concurrent ones can fail, see benchmarks/README.md.) A hub that has not exited
    # EXIT_WAIT_S after SIGTERM is killed, as systemd would, and that is reported.
    left = [w["user"] for w in hub.queue()]
    print(f"table 2: hub restart ({len(left)} waiting), then 0 waiting again ...", flush=True)
    t = time.monotonic()
    hub.proc.send_signal(signal.SIGTERM)
    try:
        hub.proc.wait(EXIT_WAIT_S)
        exited_s = time.monotonic() - t
    except subprocess.TimeoutExpired:
        hub.proc.kill()
        hub.proc.wait(30)
        exited_s = None
    hub.start(timeout)
    wait_for(
        lambda: not hub.queue() and all(hub.server_model(u, SERVER) is None for u in left),
        timeout,
        "the waiting launches to be gone after the restart",
        interval=0.2,
    )
    out["restart"] = {"n": len(left), "seconds": time.monotonic() - t, "exited_s": exited_s}
    out["again"] = {
        "requests": request_window(hub, user, args.requests, dockerd),
        "idle": idle_window(hub, args.idle_seconds, dockerd),
    }
    return out


def print_waiting(p2: dict) -> None:
    n = p2["waiters"]
    print()
    print(
        f"2. The hub while launches wait: 4 simulated A100s held; 0, then {n} launches in the "
        f"queue (recheck every {p2['recheck_s']:g} s);\n   sequential requests, interleaved "
        "(ms); hub CPU = the jupyterhub process, % of one core; dockerd = the whole engine,\n"
        "   shared with anything else on it; ps/s = the spawner's docker ps -a listings per "
        "second; lock = share of the\n   window in which a listing held the allocation lock; "
        "ps ms = a listing's median duration"
    )
    print(
        f"   {'waiting':<8} {'window':<26} {'n':>4} {'p50':>6} {'p95':>6} {'max':>6}  "
        f"{'hub CPU':>7} {'dockerd':>7} {'ps/s':>5} {'lock':>5} {'ps ms':>5} {'load1':>5}"
    )

    def win(w: dict) -> str:
        return (
            f"{fmt(w['hub_cpu_pct'], 6, 1)}% {fmt(w['dockerd_cpu_pct'], 6, 1)}% "
            f"{fmt(w['listings_per_s'], 5, 1)} {fmt(w.get('lock_pct'), 4, 0)}% "
            f"{fmt(w.get('listing_ms'), 5, 1)} {fmt(w['load1'], 5)}"
        )

    for key, label in (("0", "0"), ("n", str(n)), ("again", "0 again")):
        part = p2.get(key)
        if not part:
            continue
        req = part["requests"]
        for i, (endpoint, s) in enumerate(req["stats"].items()):
            cells = f"{s['n']:>4} {fmt(s['p50'], 6, 1)} {fmt(s['p95'], 6, 1)} {fmt(s['max'], 6, 1)}"
            last = i == len(req["stats"]) - 1  # one CPU window for both endpoints
            tail = f"  {win(req['window'])}" if last else ""
            print(f"   {label if i == 0 else '':<8} {endpoint:<26} {cells}{tail}")
        idle = part["idle"]
        what = f"idle {idle['wall_s']:.0f} s, no requests"
        print(f"   {'':<8} {what:<26} {'':>25}  {win(idle)}")
    j = p2.get("join")
    if j:
        w = j["window"]
        print(
            f"   joining: {n} launches (one every {p2.get('stagger', 0) * 1000:.0f} ms) were all "
            f"in the queue {j['joined_s']:.1f} s after the first POST; until all were answered "
            f"(202, {w['wall_s']:.1f} s):\n   hub CPU {w['hub_cpu_pct']:.0f}%, "
            f"{w['listings']} docker ps -a listings, lock {w['lock_pct']:.0f}%"
        )
    if "still_waiting" in p2:
        print(f"   still waiting after the measurements: {p2['still_waiting']} (queue API)")
    r = p2.get("restart")
    if r:
        how = (
            f"exited {r['exited_s']:.1f} s after SIGTERM"
            if r.get("exited_s") is not None
            else f"had NOT exited {EXIT_WAIT_S:g} s after SIGTERM and was killed"
        )
        print(
            f"   '0 again': the hub restarted with {r['n']} launches waiting ({how}; up and the "
            f"queue empty after {r['seconds']:.1f} s),\n   then the 0 row again: drift on the "
            "machine"
        )


# ---- main ---------------------------------------------------------------------------------------


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=5, help="table 1: rounds (default 5)")
    p.add_argument("--waiters", type=int, default=50, help="table 2: waiting launches (50)")
    p.add_argument("--requests", type=int, default=200, help="table 2: requests per endpoint (200)")
    p.add_argument(
        "--idle-seconds", type=float, default=10, help="table 2: idle window (default 10 s)"
    )
    p.add_argument(
        "--drain", type=int, default=3, help="table 2: retires with the queue full (default 3)"
    )
    p.add_argument(
        "--recheck",
        type=float,
        default=5.0,
        help="gpu_queue_recheck_seconds of the queue hub (default 5, the shipped default)",
    )
    p.add_argument(
        "--queue-timeout", type=int, default=600, help="gpu_queue_timeout of the queue hub (600)"
    )
    p.add_argument(
        "--stagger", type=float, default=0.05, help="table 2: seconds between the launches"
    )
    p.add_argument("--skip", choices=["release", "waiting"], help="leave out table 1 or table 2")
    p.add_argument("--timeout", type=float, default=120, help="seconds per wait (default 120)")
    p.add_argument(
        "--max-minutes",
        type=float,
        default=8,
        help="start no new round after this long, report what was measured (default 8)",
    )
    p.add_argument("--no-trace", action="store_true", help="no listing trace lines in the hub log")
    p.add_argument(
        "--no-again",
        action="store_true",
        help="table 2: leave out restarting the hub and measuring 0 waiting again",
    )
    p.add_argument("--json", metavar="PATH", help="write the raw numbers to PATH")
    p.add_argument("--keep-logs", metavar="DIR", help="copy the hubs' logs to DIR")
    args = p.parse_args(argv)
    if args.rounds < 1 or args.waiters < 2 or args.requests < 1 or args.drain < 0:
        p.error("--rounds and --requests must be >= 1, --waiters >= 2, --drain >= 0")
    if args.recheck <= 0 or args.queue_timeout <= 0:
        p.error("--recheck and --queue-timeout must be > 0")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, raise_interrupted)
    signal.signal(signal.SIGINT, raise_interrupted)
    rid = secrets.token_hex(3)
    began = time.monotonic()
    deadline = began + args.max_minutes * 60
    meta = {
        "run_id": rid,
        "started": datetime.now(timezone.utc).isoformat(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "args": vars(args),
    }
    raw: dict = {"meta": meta}
    status, error = 0, None
    client = None
    hubs: list[BenchHub] = []
    tmp = Path(tempfile.mkdtemp(prefix=f"{PREFIX}-{rid}-"))
    rows: list[dict] = []
    p2: dict = {}
    try:
        client = docker.from_env(timeout=120)
        client.images.get(IMAGE)  # fail early when the image is missing
        if not shutil.which("configurable-http-proxy"):
            raise RuntimeError("configurable-http-proxy is not on PATH")
        meta["docker_engine"] = client.version().get("Version")
        dockerd = dockerd_pid()
        config = tmp / "hub_config.py"
        config.write_text(
            HUB_CONFIG.format(base=str(BASE_CONFIG), recheck=args.recheck, trace=not args.no_trace)
        )
        print("starting the queue hub and 4 servers ...", flush=True)
        qhub = BenchHub(tmp, rid, "queue", args.queue_timeout, config)
        hubs.append(qhub)
        qhub.boot(args.timeout)
        if args.skip != "release":
            print("starting the no-queue hub and 4 servers ...", flush=True)
            nhub = BenchHub(tmp, rid, "noqueue", 0, config)
            hubs.append(nhub)
            nhub.boot(args.timeout)
            raw["release"] = rows
            for k in range(args.rounds):
                if time.monotonic() > deadline:
                    print("--max-minutes reached; no more rounds", flush=True)
                    break
                for v in VARIANTS:
                    hub = qhub if v == "queue" else nhub
                    # the release comes at phase (k + 0.5) / rounds of the retry interval
                    offset = (k + 0.5) / args.rounds * (RETRY[v] or 0)
                    res = release_round(v, hub, client, f"{v}w{k + 1}", offset, args.timeout)
                    res["round"] = k + 1
                    rows.append(res)
                    print(
                        f"  round {k + 1}/{args.rounds} {v:<8} started {res['started_s']:6.2f} s"
                        f"  ready {res['ready_s']:6.2f} s  ({res['tries']} tries)",
                        flush=True,
                    )
            nhub.shutdown()  # table 2 runs alone
            remove_containers(client, f"^/{nhub.prefix}-")
        if args.skip != "waiting" and time.monotonic() < deadline:
            raw["waiting"] = p2
            p2.update(stagger=args.stagger)
            p2.update(waiting_part(qhub, client, args, dockerd, args.timeout, deadline))
    except KeyboardInterrupt as e:
        status, error = 130, f"interrupted ({e})"
    except Exception as e:  # noqa: BLE001 - reported, then what was measured
        status, error = 1, f"{type(e).__name__}: {e}"
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # let the clean-up finish
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        cleanup(client, hubs, rid, tmp, args.keep_logs)
    meta["seconds_total"] = round(time.monotonic() - began, 1)
    meta["error"] = error
    if error:
        print(f"\nstopped: {error}", file=sys.stderr)
    if rows or p2.get("drain"):
        print_release(rows, p2.get("drain", []), args.waiters)
    if p2.get("0"):
        print_waiting(p2)
    print(f"\n(whole run: {meta['seconds_total']} s)")
    if args.json:
        Path(args.json).write_text(json.dumps(raw, indent=1) + "\n")
        print(f"raw numbers written to {args.json}")
    return status


def cleanup(client, hubs: list[BenchHub], rid: str, tmp: Path, keep_logs: str | None) -> None:
    for hub in hubs:
        stop_hub(hub, hub.tag, keep_logs)
    if client is not None:
        try:
            remove_containers(client, f"^/{PREFIX}{rid}")  # only this run's containers
        except docker.errors.DockerException as e:
            print(f"clean-up: containers: {e}", file=sys.stderr)
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

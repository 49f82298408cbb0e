"""The hub survives a launch storm (finding 8 of issue 14): rounds of 12 users launching at once
on 4 simulated GPUs. After each round the hub process is alive and answers, every GPU is held by
at most one container, exactly the launches that started hold one, the crash-trace file holds no
trace, and the next round starts from a clean slate. Bounded: 3 rounds, 90 s per launch.
"""

from __future__ import annotations

import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import requests

from ds01spawner.gpus.table import hub_containers_filter

from .hub import wait_for

USERS = 12
ROUNDS = 3
SERVER = "storm"


def launch(hub, user: str, barrier: threading.Barrier) -> str:
    """'started', 'refused' (429) or what else happened."""
    session = requests.Session()
    session.headers["Authorization"] = f"token {hub.token}"
    url = f"{hub.url}/hub/api/users/{user}/servers/{SERVER}"
    barrier.wait(timeout=60)
    r = session.post(url, json={"gpus": 1}, timeout=90)
    if r.status_code == 429:
        return "refused"
    if r.status_code == 202:
        last = hub.follow_progress(user, SERVER, timeout=90)
        return "started" if last.get("ready") else f"failed: {last.get('message')}"
    return "started" if r.status_code == 201 else f"{r.status_code}: {r.text[:200]}"


def gpu_holders(docker_client, prefix: str) -> Counter:
    listed = docker_client.api.containers(all=True, filters=hub_containers_filter(prefix))
    held: Counter = Counter()
    for c in listed:
        for uuid in filter(None, (c.get("Labels") or {}).get("ds01.gpus", "").split(",")):
            held[uuid] += 1
    return held


def test_the_hub_survives_launch_storms_without_double_allocation(hub_factory, docker_client):
    hub = hub_factory()
    users = [f"storm{i:02d}" for i in range(USERS)]
    for u in users:
        hub.ensure_user(u)
    crash_log = hub.state_dir / "hub-crash.log"
    for k in range(ROUNDS):
        barrier = threading.Barrier(USERS)
        with ThreadPoolExecutor(USERS) as pool:
            futures = [pool.submit(launch, hub, u, barrier) for u in users]
            outcomes = {u: f.result() for u, f in zip(users, futures, strict=True)}
        assert hub.proc.poll() is None, f"round {k}: the hub died\n{hub.log_tail(80)}"
        assert hub.api("GET", "/").status_code == 200
        counts = Counter(outcomes.values())
        assert counts == {"started": 4, "refused": USERS - 4}, (k, outcomes)
        held = gpu_holders(docker_client, hub.prefix)
        assert len(held) == 4 and set(held.values()) == {1}, (k, held)
        started = [u for u, o in outcomes.items() if o == "started"]
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda u: hub.stop_server(u, SERVER), started))
        wait_for(lambda: not gpu_holders(docker_client, hub.prefix), 60, "the GPUs freed")
    traces = crash_log.read_text()
    assert "# hub pid" in traces and "Fatal Python error" not in traces

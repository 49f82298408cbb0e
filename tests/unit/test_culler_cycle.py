"""Culler cycles with injected clients: restarts, failing peers, pending servers, concurrency.

The clients here are small stand-ins with the interface of ``signals.HubAPI``, ``KernelsAPI``,
``Engine`` and ``cycle.ProjectFolders``; the GPU meter is the real one on a simulated inventory
and the limits come from a real limits file. The integration tests run the same code against a
real hub and real containers.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

import docker
import pytest

from ds01spawner.culler.cycle import EVENT, Culler, LimitsSource
from ds01spawner.culler.signals import GpuMeter, HubServer, Kernels, SignalError
from ds01spawner.culler.state import State, read_for_page
from ds01spawner.gpus.simulated import SimulatedInventory, write_state
from ds01spawner.projects.names import container_name

T = datetime(2026, 11, 28, 12, 0, tzinfo=timezone.utc)
M = timedelta(minutes=1)
H = timedelta(hours=1)
LIMITS = """
defaults: {max_gpu_equivalents: null, max_gpus_per_server: null, allow_full_gpu: true,
           max_servers: null, cpus: null, memory: null, shm_size: null, pids_limit: null,
           max_runtime: 24, idle_timeout: 1}
groups: {patient: {idle_timeout: 4}}
"""
A100 = {"name": "NVIDIA A100-SXM4-40GB", "memory_mib": 40960}


class Hub:
    def __init__(self) -> None:
        self.servers: dict[str, HubServer] = {}
        self.fail: str | None = None
        self.fail_stop: str | None = None
        self.stops: list[str] = []
        self.calls = 0

    def add(self, user, name="proj", started=T - 10 * H, activity=None, groups=(), **kw):
        hs = HubServer(user, name, tuple(groups), started, activity or started, None, True)
        self.servers[hs.key] = HubServer(**{**hs.__dict__, **kw})
        return hs.key

    async def active_servers(self):
        self.calls += 1
        if self.fail:
            raise SignalError(self.fail)
        return list(self.servers.values())

    async def stop(self, user, name):
        self.calls += 1
        if self.fail_stop:
            raise SignalError(self.fail_stop)
        self.stops.append(f"{user}/{name}")
        del self.servers[f"{user}/{name}"]
        return 204


class Kernels_:
    def __init__(self) -> None:
        self.busy: set[str] = set()
        self.fail: set[str] = set()
        self.calls = 0
        self.inflight = self.most = 0
        self.tokens: dict[str, str] = {}  # url -> the token it was asked with

    async def kernels(self, url, token):
        self.calls += 1
        self.tokens[url] = token
        self.inflight += 1
        self.most = max(self.most, self.inflight)
        try:
            await asyncio.sleep(0.005)
            if url in self.fail:
                raise SignalError(f"{url}: HTTP 500")
            return Kernels(url in self.busy, None)
        finally:
            self.inflight -= 1


class Engine:
    """Containers named as the spawner names them, for every server of the hub."""

    def __init__(self, hub: Hub, prefix="ds01") -> None:
        self.hub, self.prefix = hub, prefix
        self.fail = False
        self.cpu_ns: dict[str, int] = {}  # container id -> total CPU ns, set by tests
        self.gpus: dict[str, str] = {}  # server key -> ds01.gpus label
        self.clock = None
        self.calls = 0

    def _id(self, key):
        return "c" + key.replace("/", "-")

    def containers(self, filters):
        self.calls += 1
        if self.fail:
            raise docker.errors.APIError("engine down")
        return [
            {
                "Id": self._id(k),
                "Names": ["/" + container_name(hs.user, hs.name, self.prefix)],
                "State": "running",
                "Labels": {
                    "ds01.managed": "true",
                    "ds01.user": hs.user,
                    "ds01.server": hs.name,
                    "ds01.gpus": self.gpus.get(k, ""),
                },
            }
            for k, hs in self.hub.servers.items()
        ]

    def inspect(self, cid):
        self.calls += 1
        key = cid[1:].replace("-", "/", 1)
        return {
            "Id": cid,
            "Config": {
                "User": "1000:100",
                "Env": [
                    f"JUPYTERHUB_SERVICE_URL=http://127.0.0.1:9/user/{key}/",
                    f"JUPYTERHUB_API_TOKEN=server-token-of-{key}",
                ],
                "Labels": {
                    "ds01.project": key.split("/")[1] or "default",
                    "ds01.gpus": self.gpus.get(key, ""),
                },
            },
            "Mounts": [{"Type": "bind", "Source": f"/ws/{key}", "Destination": "/workspace"}],
        }

    def stats(self, cid):
        self.calls += 1
        now = self.clock()
        return {
            "read": now.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "cpu_stats": {"cpu_usage": {"total_usage": self.cpu_ns.get(cid, 10**9)}},
        }


class Folders:
    def __init__(self) -> None:
        self.keep_alive_times: dict[str, datetime] = {}
        self.notices: dict[str, list[str]] = {}

    def keep_alive(self, folder):
        return self.keep_alive_times.get(folder)

    def notify(self, folder, uid, gid, line):
        assert (uid, gid) == (1000, 100)
        self.notices.setdefault(folder, []).append(line)


class World:
    """A hub, its containers and a clock; ``culler()`` makes a culler on the shared state file,
    as a restarted process would. A culler's first cycle cannot tell CPU use yet (one sample),
    so it never warns or retires for idleness: tests start with a cycle a minute early."""

    def __init__(self, tmp_path) -> None:
        self.now = T
        self.hub = Hub()
        self.kernels = Kernels_()
        self.engine = Engine(self.hub)
        self.engine.clock = lambda: self.now
        self.folders = Folders()
        self.limits = tmp_path / "limits.yaml"
        self.limits.write_text(LIMITS)
        self.state_file = str(tmp_path / "culler-state.json")
        self.gpu_state = tmp_path / "gpus.json"
        self.inventory = SimulatedInventory([A100, A100], state_file=str(self.gpu_state))
        self.logs: list[str] = []
        self.c = self.culler()

    def culler(self, **kw) -> Culler:
        world = self

        class Log:
            def _add(self, level, msg, *args):
                world.logs.append(msg % args if args else msg)

            def log(self, level, msg, *args):
                self._add(level, msg, *args)

            info = warning = error = exception = lambda self, msg, *a: self._add(0, msg, *a)

            def debug(self, msg, *args):
                pass  # what a production log leaves out

        self.c = Culler(
            hub=self.hub,
            kernels=self.kernels,
            engine=self.engine,
            gpus=GpuMeter(self.inventory, window=300, busy_percent=10),
            limits=LimitsSource(str(self.limits)),
            state_file=self.state_file,
            folders=self.folders,
            clock=lambda: self.now,
            log=Log(),
            **kw,
        )
        return self.c

    def cycle(self, at: timedelta | None = None):
        if at is not None:
            self.now = T + at
        return asyncio.run(self.c.cycle())

    def notices(self, key="alice/proj") -> list[str]:
        return [
            line.split("  ")[1] + " " + line.split("  ")[2]
            for line in self.folders.notices.get(f"/ws/{key}", [])
        ]

    def events(self, kind: str) -> list[str]:
        return [line for line in self.logs if line.startswith(f"{EVENT} {kind} ")]


@pytest.fixture
def world(tmp_path):
    return World(tmp_path)


def test_an_idle_server_is_warned_twice_then_retired_once(world):
    world.hub.add("alice", activity=T - 45 * M)
    assert world.cycle(-M).warned == 0  # the first sample of CPU use
    r = world.cycle(0 * M)  # 45 of 60 min idle: 75%
    assert (r.servers, r.warned, r.retired, r.hub_calls) == (1, 1, 0, 1)
    page = read_for_page(world.state_file)
    assert page["alice/proj"]["idle_deadline"] == (T + 15 * M).isoformat()
    assert [w["reason"] for w in page["alice/proj"]["warnings"]] == ["idle"]
    world.cycle(5 * M)
    world.cycle(9 * M)  # 90%
    world.cycle(14 * M)
    assert world.notices() == ["WARNING idle", "WARNING idle"] and world.hub.stops == []
    r = world.cycle(15 * M)
    assert r.retired == 1 and world.hub.stops == ["alice/proj"]
    assert world.notices() == ["WARNING idle", "WARNING idle", "RETIRED idle"]
    assert read_for_page(world.state_file) == {}
    assert len(world.events("warned")) == 2 and len(world.events("retired")) == 1
    assert "reason=idle fraction=0.75" in world.events("warned")[0]


def test_a_restarted_culler_gives_no_warning_twice(world):
    world.hub.add("alice", activity=T - 45 * M)
    world.cycle(-M)
    world.cycle(0 * M)
    for minute in (1, 2, 3):  # a new process each minute, the same state file
        world.culler()
        world.cycle(minute * M)
    assert world.notices() == ["WARNING idle"]
    world.culler()
    world.cycle(8 * M)  # a first cycle: no CPU sample yet
    world.cycle(9 * M)
    world.culler()
    world.cycle(10 * M)
    world.cycle(11 * M)
    assert world.notices() == ["WARNING idle", "WARNING idle"]
    world.culler()
    world.cycle(14 * M)
    world.cycle(15 * M)
    assert world.notices()[-1] == "RETIRED idle" and world.hub.stops == ["alice/proj"]


def test_idle_since_survives_a_restart(world):
    key = world.hub.add("alice", activity=T - 30 * M)
    world.engine.cpu_ns["calice-proj"] = 10**9
    world.cycle(0 * M)
    world.engine.cpu_ns["calice-proj"] = 10**9 + 60 * 10**9  # one core for a minute
    world.cycle(1 * M)
    assert State.load(world.state_file).servers[key].idle_since == T + M
    world.culler()  # the CPU samples are gone with the process; "idle since" is not
    world.cycle(40 * M)
    world.cycle(41 * M)
    assert world.notices() == [] and State.load(world.state_file).servers[key].idle_since == T + M


def test_a_failing_hub_api_decides_nothing_and_is_retried(world):
    world.hub.add("alice", activity=T - 5 * H)
    world.hub.fail = "GET /users answered 500"
    for minute in range(0, 30, 5):
        r = world.cycle(minute * M)
        assert not r.ok and r.warned == r.retired == 0
    assert world.hub.stops == [] and world.notices() == []
    assert "hub API: GET /users answered 500" in State.load(world.state_file).last_error
    assert sum("The hub API failed" in line for line in world.logs) == 6
    world.hub.fail = None
    world.cycle(29 * M)
    r = world.cycle(30 * M)
    assert r.ok and r.warned == 1 and State.load(world.state_file).last_error is None
    assert "The hub API answers again" in world.logs


def test_a_failing_stop_is_decided_again_next_cycle_and_announced_once(world):
    world.hub.add("alice", activity=T - 45 * M)
    world.cycle(-M)
    world.cycle(0 * M)  # 75%
    world.cycle(9 * M)  # 90%
    world.hub.fail_stop = "DELETE answered 500"
    r = world.cycle(15 * M)
    assert r.retired == 0 and world.hub.stops == [] and world.notices()[-1] == "WARNING idle"
    assert State.load(world.state_file).servers["alice/proj"].retiring["reason"] == "idle"
    assert any("Could not retire alice/proj" in line for line in world.logs)
    world.hub.fail_stop = None
    world.culler()  # even after a restart
    world.cycle(16 * M)
    r = world.cycle(17 * M)
    assert r.retired == 1 and world.hub.stops == ["alice/proj"]
    assert world.notices() == ["WARNING idle", "WARNING idle", "RETIRED idle"]


def test_a_failing_kernel_list_keeps_a_server_however_long_it_looks_idle(world):
    world.hub.add("alice", activity=T - 50 * M)
    world.kernels.fail.add("http://127.0.0.1:9/user/alice/proj/")
    for minute in range(0, 300, 30):
        r = world.cycle(minute * M)
        assert r.kept_unknown == 1 and r.warned == 0
    assert world.notices() == [] and world.hub.stops == []
    assert sum("Cannot read the kernels of alice/proj" in line for line in world.logs) == 1
    world.kernels.fail.clear()
    world.cycle(300 * M)  # readable again: the last warning first, with its notice period
    world.cycle(305 * M)
    assert world.notices() == ["WARNING idle"] and world.hub.stops == []
    world.cycle(306 * M)
    assert world.hub.stops == ["alice/proj"]
    assert "kernels of alice/proj can be read again" in world.logs


def test_a_failing_engine_keeps_idle_servers_but_max_runtime_still_applies(world):
    world.hub.add("alice", activity=T - 5 * H)
    world.hub.add("bob", started=T - 23 * H, activity=T)
    world.engine.fail = True
    world.cycle(0 * M)  # bob: 23 of 24 h, so the 90% warning, which promises him 2.4 h
    world.cycle(143 * M)
    assert world.hub.stops == []
    world.cycle(144 * M)
    assert world.hub.stops == ["bob/proj"] and world.notices("alice/proj") == []
    assert any("Docker failed" in line for line in world.logs)


def test_pending_servers_are_left_alone(world):
    world.hub.add("alice", activity=T - 5 * H, pending="spawn", ready=False)
    world.hub.add("bob", activity=T - 5 * H, pending="stop")
    for minute in (0, 10, 20):
        world.cycle(minute * M)
    assert world.hub.stops == [] and world.kernels.calls == 0


def test_a_new_run_of_a_server_starts_with_no_warnings(world):
    world.hub.add("alice", activity=T - 45 * M)
    world.cycle(-M)
    world.cycle(0 * M)
    assert read_for_page(world.state_file)["alice/proj"]["warnings"] != []
    world.hub.add("alice", started=T + M, activity=T + M)  # stopped by hand and started again
    world.cycle(2 * M)
    assert read_for_page(world.state_file)["alice/proj"]["warnings"] == []


def test_busy_kernel_cpu_gpu_and_keep_alive_each_keep_a_server(world):
    keys = {
        "kernels": world.hub.add("k", activity=T - 5 * H),
        "cpu": world.hub.add("c", activity=T - 5 * H),
        "gpu": world.hub.add("g", activity=T - 5 * H),
        "keep_alive": world.hub.add("a", activity=T - 5 * H),
        "nothing": world.hub.add("n", activity=T - 5 * H),
    }
    world.kernels.busy.add("http://127.0.0.1:9/user/k/proj/")
    gpu0 = world.inventory.devices()[0].uuid
    world.engine.gpus[keys["gpu"]] = gpu0
    write_state(str(world.gpu_state), {gpu0: {"utilization_pct": 80}})
    world.folders.keep_alive_times["/ws/a/proj"] = T - 2 * H
    for minute in range(0, 30, 3):
        world.engine.cpu_ns["cc-proj"] = 10**9 + minute * 60 * 10**9  # one core
        world.cycle(minute * M)
    state = State.load(world.state_file).servers
    for signal, key in keys.items():
        if signal != "nothing":
            assert state[key].warnings == [] and state[key].activity[signal] == T + 27 * M, signal
    assert world.hub.stops == ["n/proj"]


def test_each_server_is_asked_only_with_its_own_token_never_the_cullers(world):
    world.hub.add("alice", activity=T)
    world.hub.add("bob", activity=T)
    world.cycle(0 * M)
    assert world.kernels.tokens == {
        "http://127.0.0.1:9/user/alice/proj/": "server-token-of-alice/proj",
        "http://127.0.0.1:9/user/bob/proj/": "server-token-of-bob/proj",
    }


def test_groups_of_the_hub_decide_the_limits(world):
    world.hub.add("alice", activity=T - 2 * H, groups=["patient"])  # idle_timeout 4 h
    world.cycle(0 * M)
    page = read_for_page(world.state_file)["alice/proj"]
    assert page["idle_deadline"] == (T + 2 * H).isoformat() and page["warnings"] == []
    assert page["runtime_deadline"] == (T + 14 * H).isoformat()


def test_high_demand_shortens_only_gpu_servers(world):
    uuids = [d.uuid for d in world.inventory.devices()]
    world.hub.add("g1", activity=T - 35 * M)
    world.hub.add("g2", activity=T)
    world.hub.add("cpu", activity=T - 35 * M)
    world.engine.gpus.update({"g1/proj": uuids[0], "g2/proj": uuids[1]})
    world.cycle(-M)
    world.cycle(0 * M)
    page = read_for_page(world.state_file)
    assert page["g1/proj"]["idle_deadline"] == (T + 3 * M).isoformat()  # 35 of 30 min: 90% notice
    assert page["cpu/proj"]["idle_deadline"] == (T + 25 * M).isoformat()


def test_concurrent_signal_reads_are_bounded(world):
    for i in range(30):
        world.hub.add(f"u{i}", activity=T)
    world.culler(concurrency=4)
    r = world.cycle(0 * M)
    assert r.servers == 30 and r.kernel_calls == 30 and world.kernels.most == 4
    assert r.hub_calls == 1

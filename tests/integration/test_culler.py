"""The ds01-culler service on a real hub with real containers, with limits of a few seconds.

The culler runs as the hub starts it (jupyterhub_config.py's configure_services, its own role),
with a cycle every second. GPUs are simulated: their utilization is set in the inventory's state
file, as NVML would report it.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from ds01spawner.culler.state import read_for_page
from ds01spawner.gpus.simulated import write_state

from .conftest import run_code
from .hub import ds01_containers, wait_for

IDLE_S = 8  # idle_timeout of everyone
RUNTIME_S = 10  # max_runtime of "runner" (who has no idle timeout)
LIMITS = f"""
defaults:
  max_gpu_equivalents: null
  max_gpus_per_server: null
  allow_full_gpu: true
  max_servers: null
  cpus: null
  memory: null
  shm_size: null
  pids_limit: null
  max_runtime: null
  idle_timeout: "{IDLE_S}s"
users:
  runner:
    max_runtime: "{RUNTIME_S}s"
    idle_timeout: null
"""
CULLER = {"cull_every": 1, "gpu_window": 2}


def culler_hub(hub_factory, tmp_path_factory, **culler):
    limits = tmp_path_factory.mktemp("culler-limits") / "limits.yaml"
    limits.write_text(LIMITS)
    return hub_factory(
        {"DS01_TEST_LIMITS": str(limits), "DS01_TEST_CULLER": json.dumps({**CULLER, **culler})}
    )


@pytest.fixture(scope="module")
def hub(hub_factory, tmp_path_factory):
    return culler_hub(hub_factory, tmp_path_factory)


def page(hub) -> dict:
    return read_for_page(str(hub.state_dir / "culler-state.json"))


def notices(hub, user, project) -> list[str]:
    path = hub.workspaces / user / project / ".ds01" / "notices.log"
    if not path.exists():
        return []
    return [" ".join(line.split("  ")[1:3]) for line in path.read_text().splitlines()]


def wait_retired(hub, user: str, project: str, reason: str, timeout: float) -> None:
    """Until the hub has no such server and the culler has written its RETIRED notice (it
    writes it once the hub answered the stop, which can be just after the server is gone)."""

    def retired():
        gone = hub.server_model(user, project) is None
        return gone and notices(hub, user, project)[-1:] == [f"RETIRED {reason}"]

    wait_for(retired, timeout, f"{user}/{project} retired ({reason})")


def gpu_of(docker_client, hub, user) -> str:
    (c,) = ds01_containers(docker_client, hub.prefix, user=user)
    return c.labels["ds01.gpus"]


def held_gpus(docker_client, hub) -> set[str]:
    return {
        c.labels["ds01.gpus"]
        for c in ds01_containers(docker_client, hub.prefix)
        if c.status not in ("exited", "dead") and c.labels.get("ds01.gpus")
    }


def set_utilization(hub, uuid: str, pct: float) -> None:
    write_state(str(hub.state_dir / "gpus.json"), {uuid: {"utilization_pct": pct}})


def checked_after(hub, key: str, t: float) -> bool:
    """The culler has looked at ``key`` in a cycle that began after the epoch time ``t``."""
    from ds01spawner.culler.state import State

    record = State.load(str(hub.state_dir / "culler-state.json")).servers.get(key)
    return record is not None and record.checked.timestamp() > t


def test_an_idle_server_is_warned_then_retired_while_active_ones_are_kept(hub, docker_client):
    # a training run on a GPU (busy utilization), a notebook in a long silent cell, a server
    # kept by its keep-alive file, and an idle server with a GPU
    hub.start_server("trainer", "train", {"gpus": 1})
    busy_gpu = gpu_of(docker_client, hub, "trainer")
    set_utilization(hub, busy_gpu, 90)
    hub.start_server("writer", "nb", {"gpus": 0})
    writer = hub.user_token("writer")
    cell = threading.Thread(
        target=lambda: _quietly(
            run_code, hub, "writer", "nb", writer, "import time; time.sleep(60)"
        ),
        daemon=True,
    )
    cell.start()
    hub.start_server("keeper", "long", {"gpus": 0})
    (hub.workspaces / "keeper" / "long" / ".keep-alive").touch()
    idle = hub.start_server("alice", "idle", {"gpus": 1})
    idle_gpu = gpu_of(docker_client, hub, "alice")
    assert idle_gpu != busy_gpu

    # the home page's view: deadline and warnings while it runs
    shown = wait_for(
        lambda: page(hub).get("alice/idle", {}).get("warnings"), 3 * IDLE_S, "a warning on the page"
    )
    assert shown[0]["reason"] == "idle" and "unless it is used" in shown[0]["message"]
    assert page(hub)["alice/idle"]["idle_deadline"] is not None
    # ... and the hub's home page shows the warning next to the server, and the idle time left
    home = hub.login("alice").get(f"{hub.url}/hub/home", timeout=30).text
    row = home[home.index('data-project="idle"') :].split("</tr>")[0]
    assert 'class="alert alert-warning py-1 px-2 my-1 small ds01-warning"' in row
    assert "unless it is used" in row
    assert "under a minute" in row  # idle time left, with a timeout of seconds

    wait_retired(hub, "alice", "idle", "idle", 4 * IDLE_S)
    assert ds01_containers(docker_client, hub.prefix, user="alice") == []
    assert idle_gpu not in held_gpus(docker_client, hub)  # free for the next person
    assert notices(hub, "alice", "idle") == ["WARNING idle", "WARNING idle", "RETIRED idle"]
    assert (hub.workspaces / "alice" / "idle").is_dir()  # the workspace stays
    assert "alice/idle" not in page(hub)
    assert idle["started"]
    log = hub.log_tail(2000)
    assert "culler event: warned user=alice server=idle reason=idle fraction=0.75" in log
    assert "culler event: retired user=alice server=idle reason=idle" in log

    # the others, idle by every other signal for well over the idle timeout, are kept
    since = time.time()
    for key in ("trainer/train", "writer/nb", "keeper/long"):
        wait_for(lambda k=key: checked_after(hub, k, since + IDLE_S), 4 * IDLE_S, f"{key} checked")
    for key, user, server in (
        ("trainer/train", "trainer", "train"),
        ("writer/nb", "writer", "nb"),
        ("keeper/long", "keeper", "long"),
    ):
        assert hub.server_model(user, server) is not None, key
        assert page(hub)[key]["warnings"] == [], key
        assert notices(hub, user, server) == [], key
    from ds01spawner.culler.state import State

    servers = State.load(str(hub.state_dir / "culler-state.json")).servers
    assert servers["trainer/train"].activity["gpu"] > servers["trainer/train"].activity["hub"]
    assert servers["writer/nb"].activity["kernels"].timestamp() > since + IDLE_S - 2
    assert servers["keeper/long"].activity["keep_alive"].timestamp() > since + IDLE_S - 2

    # the training run ends: its GPU is idle from now on, so it goes too
    set_utilization(hub, busy_gpu, 0)
    wait_retired(hub, "trainer", "train", "idle", 5 * IDLE_S)
    assert busy_gpu not in held_gpus(docker_client, hub)
    assert notices(hub, "trainer", "train")[-1] == "RETIRED idle"
    hub.stop_server("writer", "nb")
    hub.stop_server("keeper", "long")


def _quietly(fn, *args):
    try:
        fn(*args)
    except Exception:  # noqa: BLE001 - the server is stopped under the running cell
        pass


def test_max_runtime_retires_a_busy_server(hub, docker_client):
    hub.start_server("runner", "sim", {"gpus": 1})
    gpu = gpu_of(docker_client, hub, "runner")
    set_utilization(hub, gpu, 95)
    shown = wait_for(lambda: page(hub).get("runner/sim"), 2 * RUNTIME_S, "the runtime deadline")
    assert shown["runtime_deadline"] is not None and shown["idle_deadline"] is None
    wait_retired(hub, "runner", "sim", "max_runtime", 4 * RUNTIME_S)
    # Warned (at 75% and 90%, or once at 90% when a loaded machine's first cycle came after 90%:
    # never a burst, see culler/decision.py), then retired.
    got = notices(hub, "runner", "sim")
    assert got[-1] == "RETIRED max_runtime", got
    assert got[:-1] in (["WARNING max_runtime"], ["WARNING max_runtime"] * 2), got
    assert gpu not in held_gpus(docker_client, hub)
    set_utilization(hub, gpu, 0)


# ---- a failing hub API --------------------------------------------------------------------------


class FlakyHubAPI:
    """A real HTTP peer on 127.0.0.1 in front of the hub API: it answers 500, or holds the
    request past the culler's timeout, or forwards to the hub."""

    def __init__(self) -> None:
        self.mode = "500"
        self.target = ""  # the hub's public URL, once the hub runs
        self.requests: list[tuple[float, str, str]] = []  # (time, mode, method + path)
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _any(self):
                outer.requests.append((time.time(), outer.mode, f"{self.command} {self.path}"))
                if outer.mode == "500":
                    self._answer(500, b'{"status": 500, "message": "database is locked"}')
                elif outer.mode == "hang":
                    time.sleep(3)
                    self._answer(504, b"{}")
                else:
                    headers = {
                        k: v for k, v in self.headers.items() if k in ("Authorization", "Accept")
                    }
                    r = requests.request(self.command, outer.target + self.path, headers=headers)
                    self._answer(r.status_code, r.content)

            def _answer(self, code, body):
                try:
                    self.send_response(code)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:
                    pass  # the culler gave up waiting

            do_GET = do_DELETE = do_POST = _any

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hub/api"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def answered(self, mode: str, after: float) -> int:
        return sum(1 for t, m, _ in self.requests if m == mode and t > after)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_a_failing_hub_api_retires_nothing_and_the_culler_recovers(hub_factory, tmp_path_factory):
    flaky = FlakyHubAPI()
    hub = culler_hub(hub_factory, tmp_path_factory, hub_api_url=flaky.url, request_timeout=1)
    flaky.target = hub.url  # when it forwards: to the hub's public address
    try:
        hub.start_server("alice", "idle", {"gpus": 0})
        past_deadline = time.time() + IDLE_S + 2
        wait_for(
            lambda: flaky.answered("500", past_deadline) >= 3, 6 * IDLE_S, "500s past the deadline"
        )
        flaky.mode = "hang"
        now = time.time()
        wait_for(lambda: flaky.answered("hang", now) >= 2, 30, "timeouts")
        assert hub.server_model("alice", "idle") is not None
        assert notices(hub, "alice", "idle") == [] and page(hub) == {}
        state = json.loads((hub.state_dir / "culler-state.json").read_text())
        assert "hub API" in state["last_error"]
        assert "The hub API failed" in hub.log_tail(400)

        flaky.mode = "forward"
        wait_retired(hub, "alice", "idle", "idle", 6 * IDLE_S)
        # long past its deadline, it still gets a warning first (the last fraction, with the
        # notice period it promises), never a retirement out of the blue; two when the server's
        # CPU showed activity at the culler's first look
        *warned, retired = notices(hub, "alice", "idle")
        assert retired == "RETIRED idle" and warned in (["WARNING idle"], ["WARNING idle"] * 2)
        assert "culler event: warned user=alice server=idle reason=idle" in hub.log_tail(400)
        assert "The hub API answers again" in hub.log_tail(400)
    finally:
        flaky.close()

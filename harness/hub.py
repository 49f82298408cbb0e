"""A real `jupyterhub` process for tests and benchmarks: start, talk to it over 127.0.0.1,
restart, clean up.

Waiting is always for a condition (an HTTP answer, a progress event), bounded by a deadline.
The integration tests import it as ``tests.integration.hub`` (a re-export), the benchmarks
through ``benchmarks.common``; the default config is the test hub's
(tests/integration/hub_config.py), which a benchmark may replace with its own.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import docker
import requests

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "tests" / "integration" / "hub_config.py"


def free_port_block(size: int = 82) -> int:
    """A port p with p .. p+3 and p+81 free (public, proxy API, limits and admin services,
    hub API)."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            p = s.getsockname()[1]
        if p + size > 65000:
            continue
        ok = True
        for q in (p, p + 1, p + 2, p + 3, p + 81):
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", q))
                except OSError:
                    ok = False
        if ok:
            return p
    raise RuntimeError("no free port block")


class HubExited(AssertionError):
    """The hub process ended while we waited for it: waiting longer cannot help."""


def wait_for(condition, timeout: float, what: str, interval: float = 0.1):
    """Call ``condition`` until it returns a truthy value; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            value = condition()
        except HubExited:
            raise
        except Exception as e:  # noqa: BLE001 - retried until the deadline, then reported
            last, value = e, None
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what} (last error: {last!r})")


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class Hub:
    def __init__(
        self,
        state_dir: Path,
        prefix: str,
        extra_env: dict | None = None,
        config: Path = CONFIG,
        python: str = sys.executable,
        swarm=None,
    ) -> None:
        self.state_dir = state_dir
        self.python = python
        self.config = config
        self.port = free_port_block()
        self.url = f"http://127.0.0.1:{self.port}"
        self.token = secrets.token_hex(16)
        self.prefix = prefix
        self.workspaces = state_dir / "workspaces"
        self.log_path = state_dir / "hub.log"
        self.env = dict(os.environ)
        self.env.update(
            {
                "DS01_HUB_PORT": str(self.port),
                "DS01_STATE_DIR": str(state_dir),
                "DS01_WORKSPACE_ROOT": str(self.workspaces / "{username}"),
                "DS01_TEST_TOKEN": self.token,
                "DS01_TEST_PREFIX": prefix,
                "PATH": f"{REPO / '.venv' / 'bin'}:{os.environ.get('PATH', '')}",
                # the hub and its services import this checkout's ds01spawner, whatever
                # checkout the venv's editable install points at
                "PYTHONPATH": os.pathsep.join(
                    p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p
                ),
            }
        )
        extra = dict(extra_env or {})
        self._swarm: tuple | None = None
        if swarm is not None:  # the test's spawner settings are merged into the swarm's
            spawner = extra.pop("DS01_TEST_SPAWNER", None) or self.env.get("DS01_TEST_SPAWNER")
            self._swarm = (swarm, spawner)
            self.env.update(swarm_env(swarm, self.port, spawner))
        self.env.update(extra)
        self.proc: subprocess.Popen | None = None
        self._started = False  # a restart keeps its ports (the proxy and servers use them)
        self.session = requests.Session()
        self._user_tokens: dict[str, str] = {}

    # ---- process --------------------------------------------------------------------------------

    def start(self, timeout: float = 60) -> Hub:
        """Start the hub and wait until its API answers. At a first start only, a port taken
        between its choice (``free_port_block``) and the hub's bind, by a process of another
        test worker, is answered with a new block (at most twice); a restart keeps its ports."""
        for attempt in range(3):
            mark = self.log_path.stat().st_size if self.log_path.exists() else 0
            try:
                self._start(timeout)
            except HubExited:
                with open(self.log_path, "rb") as f:
                    f.seek(mark)
                    lost_race = b"Address already in use" in f.read()
                if self._started or not lost_race or attempt == 2:
                    raise
                self._new_ports()
                continue
            self._started = True
            return self
        raise AssertionError("unreachable")

    def _new_ports(self) -> None:
        self.port = free_port_block()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env["DS01_HUB_PORT"] = str(self.port)
        if self._swarm is not None:
            self.env.update(swarm_env(self._swarm[0], self.port, self._swarm[1]))

    def _start(self, timeout: float) -> None:
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [self.python, "-m", "jupyterhub", "-f", str(self.config)],
            cwd=self.state_dir,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            # as a background job of a non-interactive shell starts it (SIGINT ignored)
            preexec_fn=_ignore_sigint if self.env.get("DS01_TEST_IGNORE_SIGINT") else None,
        )
        log.close()

        def up():
            if self.proc.poll() is not None:
                raise HubExited(f"hub exited with {self.proc.returncode}:\n{self.log_tail()}")
            return self.session.get(f"{self.url}/hub/api/", timeout=2).status_code == 200

        wait_for(up, timeout, "the hub to answer")

    def signal(self, sig: int, timeout: float = 30) -> None:
        """Send ``sig`` to the hub process alone (the proxy may survive, as in production)."""
        assert self.proc is not None
        self.proc.send_signal(sig)
        self.proc.wait(timeout)

    def shutdown(self) -> None:
        """Stop the hub and its proxy; used at the end of a test module."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        pid_file = self.state_dir / "jupyterhub-proxy.pid"
        if pid_file.exists():
            try:
                os.kill(int(pid_file.read_text().strip()), signal.SIGTERM)
            except (ProcessLookupError, ValueError):
                pass

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    # ---- REST API -------------------------------------------------------------------------------

    def api(self, method: str, path: str, token: str | None = None, **kw) -> requests.Response:
        headers = {"Authorization": f"token {token or self.token}"}
        return self.session.request(
            method,
            f"{self.url}/hub/api{path}",
            headers=headers,
            timeout=kw.pop("timeout", 60),
            **kw,
        )

    def ensure_user(self, name: str) -> None:
        r = self.api("GET", f"/users/{name}")
        if r.status_code == 404:
            r = self.api("POST", f"/users/{name}")
            assert r.status_code == 201, r.text

    def user_token(self, name: str) -> str:
        if name not in self._user_tokens:
            self.ensure_user(name)
            r = self.api("POST", f"/users/{name}/tokens", json={"note": "ds01 tests"})
            assert r.status_code == 201, r.text
            self._user_tokens[name] = r.json()["token"]
        return self._user_tokens[name]

    def request_server(self, user: str, server: str = "", options: dict | None = None):
        """POST the launch; returns the response (201/202 on success, 4xx/5xx refusals)."""
        self.ensure_user(user)
        return self.api("POST", f"/users/{user}/servers/{server}", json=options or {})

    def follow_progress(self, user: str, server: str = "", timeout: float = 120) -> dict:
        """Read the progress event stream until the spawn is ready or failed; return last event."""
        r = self.api(
            "GET", f"/users/{user}/servers/{server}/progress", stream=True, timeout=timeout
        )
        assert r.status_code == 200, r.text
        last: dict = {}
        deadline = time.monotonic() + timeout
        for line in r.iter_lines(decode_unicode=True):
            if time.monotonic() > deadline:
                raise TimeoutError(f"progress of {user}/{server} did not finish")
            if line and line.startswith("data:"):
                last = json.loads(line[5:])
                if last.get("ready") or last.get("failed"):
                    break
        r.close()
        return last

    def start_server(
        self, user: str, server: str = "", options: dict | None = None, timeout: float = 120
    ) -> dict:
        """Launch and wait until ready; returns the server model."""
        r = self.request_server(user, server, options)
        assert r.status_code in (201, 202), f"{r.status_code}: {r.text}\n{self.log_tail()}"
        if r.status_code == 202:
            last = self.follow_progress(user, server, timeout)
            assert last.get("ready"), f"spawn failed: {last}\n{self.log_tail()}"
        return self.server_model(user, server)

    def server_model(self, user: str, server: str = "") -> dict | None:
        r = self.api("GET", f"/users/{user}")
        assert r.status_code == 200, r.text
        return r.json()["servers"].get(server)

    def stop_server(self, user: str, server: str = "", timeout: float = 60) -> None:
        r = self.api("DELETE", f"/users/{user}/servers/{server}")
        assert r.status_code in (202, 204), r.text
        wait_for(
            lambda: self.server_model(user, server) is None, timeout, f"{user}/{server} to stop"
        )

    def login(self, user: str, password: str = "ds01-demo") -> requests.Session:
        """A browser-like session logged in to the hub as ``user`` (the demo's password)."""
        s = requests.Session()
        r = s.get(f"{self.url}/hub/login", timeout=30)
        assert r.status_code == 200, r.status_code
        r = s.post(
            f"{self.url}/hub/login",
            data={"username": user, "password": password, "_xsrf": s.cookies.get("_xsrf")},
            timeout=30,
        )
        assert r.status_code == 200 and r.url.endswith("/hub/home"), (r.status_code, r.url)
        return s

    # ---- single-user server ---------------------------------------------------------------------

    def server_api(self, method: str, user: str, server: str, path: str, token: str, **kw):
        base = f"{self.url}/user/{user}/{server + '/' if server else ''}api"
        return self.session.request(
            method,
            base + path,
            timeout=kw.pop("timeout", 30),
            headers={"Authorization": f"token {token}"},
            allow_redirects=False,
            **kw,
        )


def swarm_env(swarm, port: int, spawner_json: str | None = None) -> dict:
    """The test hub's environment for the Swarm mode on ``swarm`` (``harness.swarm.TwoNodeSwarm``).

    The manager is node n1's engine; servers run on both nodes with host networking, so the hub's
    own API (port + 81) must be reachable from the nodes' namespaces: it listens on the host end
    of n1's veth, and node n2 gets a route to that address through its own veth (no forwarding:
    the address is the host's). The workspaces are host folders, which both engines see. A 1 s
    stop grace keeps retirements short.
    """
    n1, n2 = swarm.node("n1"), swarm.node("n2")
    hub_addr = n1.host_addr
    for node in (n2,):
        subprocess.run(
            ["ip", "-n", node.netns, "route", "replace", f"{hub_addr}/32", "via", node.host_addr],
            check=True,
        )
    settings = json.loads(spawner_json or "{}")
    settings.update(
        {
            "engine_kind": "swarm",
            "swarm_manager_url": n1.engine,
            "hub_connect_url": f"http://{hub_addr}:{port + 81}",
        }
    )
    return {
        "DS01_TEST_SPAWNER": json.dumps(settings),
        "DS01_TEST_HUB_IP": hub_addr,
        "DS01_TEST_GRACE": "1",
    }


def ds01_containers(client: docker.DockerClient, prefix: str, **labels) -> list:
    filters = {
        "label": ["ds01.managed=true"] + [f"ds01.{k}={v}" for k, v in labels.items()],
        "name": f"^/{prefix}-",
    }
    # ignore_removed: docker-py inspects each listed container; one the hub removes in between
    # (a killed server) would otherwise fail the listing with NotFound
    return client.containers.list(all=True, filters=filters, ignore_removed=True)

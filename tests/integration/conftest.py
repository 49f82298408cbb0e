"""Fixtures for integration tests: a real Docker engine and a real jupyterhub process.

scripts/test.sh starts the engine and builds the base image before pytest runs; if either is
missing these tests fail (they never skip), with the command that fixes it.
"""

from __future__ import annotations

import asyncio
import glob
import json
import os
import secrets
import uuid

import docker
import pytest
from tornado.httpclient import HTTPRequest
from tornado.websocket import websocket_connect

from .hub import Hub, ds01_containers
from .swarm_fixtures import two_node_swarm  # noqa: F401 - one swarm per session, for all modules

pytestmark = pytest.mark.integration


@pytest.fixture(scope="session")
def docker_client():
    try:
        client = docker.from_env()
        client.ping()
    except docker.errors.DockerException as e:
        pytest.fail(f"No Docker engine answers ({e}). Run scripts/setup.sh (or scripts/test.sh).")
    try:
        client.images.get("ds01/base:latest")
    except docker.errors.ImageNotFound:
        pytest.fail("Image ds01/base:latest is missing. Run scripts/setup.sh.")
    return client


def _remove_all(client, prefix: str) -> None:
    for c in ds01_containers(client, prefix):
        c.remove(force=True)
    # the per-user build cgroups of this hub (image_build_pids); empty once its builds ended
    for cgroup in glob.glob(f"/sys/fs/cgroup/pids/{prefix}-build-*"):
        try:
            os.rmdir(cgroup)
        except OSError:
            pass


@pytest.fixture(scope="module")
def hub_factory(tmp_path_factory, docker_client):
    """Start hubs for one test module; everything they made is removed afterwards."""
    made: list[Hub] = []

    def make(extra_env: dict | None = None) -> Hub:
        prefix = f"ds01t{secrets.token_hex(3)}"
        hub = Hub(tmp_path_factory.mktemp(prefix), prefix, extra_env).start()
        made.append(hub)
        return hub

    yield make
    for hub in made:
        hub.shutdown()
        _remove_all(docker_client, hub.prefix)


@pytest.fixture(scope="module")
def hub(hub_factory) -> Hub:
    return hub_factory()


def run_code(
    hub: Hub,
    user: str,
    server: str,
    token: str,
    code: str,
    timeout: float = 60,
    keep_kernel: bool = False,
) -> str:
    """Run ``code`` in a new kernel of the user's server (Jupyter's kernel API); return stdout.

    The kernel is shut down afterwards unless ``keep_kernel``.
    """
    base = f"/user/{user}/{server + '/' if server else ''}api"
    r = hub.session.post(
        f"{hub.url}{base}/kernels",
        json={"name": "python3"},
        headers={"Authorization": f"token {token}"},
        timeout=30,
    )
    assert r.status_code == 201, r.text
    kernel_id = r.json()["id"]
    try:
        return asyncio.run(
            _execute(
                hub.url.replace("http", "ws", 1) + f"{base}/kernels/{kernel_id}/channels",
                token,
                code,
                timeout,
            )
        )
    finally:
        if not keep_kernel:
            hub.session.delete(
                f"{hub.url}{base}/kernels/{kernel_id}",
                headers={"Authorization": f"token {token}"},
                timeout=30,
            )


async def _execute(url: str, token: str, code: str, timeout: float) -> str:
    ws = await websocket_connect(HTTPRequest(url, headers={"Authorization": f"token {token}"}))
    msg_id = uuid.uuid4().hex
    ws.write_message(
        json.dumps(
            {
                "header": {
                    "msg_id": msg_id,
                    "msg_type": "execute_request",
                    "username": "test",
                    "session": uuid.uuid4().hex,
                    "date": "",
                    "version": "5.3",
                },
                "parent_header": {},
                "metadata": {},
                "buffers": [],
                "channel": "shell",
                "content": {
                    "code": code,
                    "silent": False,
                    "store_history": False,
                    "user_expressions": {},
                    "allow_stdin": False,
                    "stop_on_error": True,
                },
            }
        )
    )
    out: list[str] = []
    try:
        while True:
            raw = await asyncio.wait_for(ws.read_message(), timeout)
            assert raw is not None, "kernel websocket closed"
            msg = json.loads(raw)
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind = msg["msg_type"]
            if kind == "stream":
                out.append(msg["content"]["text"])
            elif kind == "error":
                raise AssertionError("\n".join(msg["content"]["traceback"]))
            elif kind == "status" and msg["content"]["execution_state"] == "idle":
                return "".join(out)
    finally:
        ws.close()

"""The port-owner check's pure parts: the helper program a swarm node runs (the same source as
the hub's own check), its answer, and the helper container's settings."""

import asyncio
import json
import subprocess
import sys
from types import SimpleNamespace

import pytest
from tornado import web

from ds01spawner.engine.port_owner import (
    PROBE_CAPS,
    PortCheckError,
    PortHolder,
    parse_probe_output,
    port_holder,
    probe_container,
    probe_script,
)
from ds01spawner.gpus.table import is_server_container
from ds01spawner.spawner import network_steps
from ds01spawner.spawner.network_steps import PORT_TAKEN_MESSAGE, NetworkSteps

from .test_netguard import PROC_NET_TCP

IMAGE = "sha256:" + "ab" * 32


@pytest.fixture
def proc(tmp_path):
    (tmp_path / "net").mkdir()
    (tmp_path / "net" / "tcp").write_text(PROC_NET_TCP)
    for pid, inode in ((41, 111), (99, 222)):
        fd = tmp_path / str(pid) / "fd"
        fd.mkdir(parents=True)
        (fd / "3").symlink_to(f"socket:[{inode}]")
    return tmp_path


def run_script(port: int, pids: str, proc) -> str:
    argv = [sys.executable, "-I", "-c", probe_script(), "127.0.0.1", str(port), pids, str(proc)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=True)
    return done.stdout


@pytest.mark.parametrize(
    ("port", "pids", "inode", "ours"),
    [(20001, "41", 111, True), (20002, "41", 222, False), (20009, "41", None, False)],
)
def test_the_shipped_program_answers_as_the_hubs_own_check(proc, port, pids, inode, ours):
    """The helper runs the hub's scan from its source text (-I: nothing of DS01 importable)."""
    holder = parse_probe_output(run_script(port, pids, proc), [41], "n2")
    assert (holder.inode, holder.ours, holder.node, holder.pids) == (inode, ours, "n2", (41,))
    local = port_holder("127.0.0.1", port, [41], str(proc))
    assert (local.inode, local.ours, local.readable) == (holder.inode, holder.ours, True)


def test_an_unreadable_process_is_not_ours(proc):
    holder = parse_probe_output(run_script(20001, "12345", proc), [12345], "n2")
    assert (holder.ours, holder.readable) == (False, False)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "Traceback ...",
        '{"inode": "1", "ours": true, "readable": true}',
        '{"inode": 1, "ours": "yes", "readable": true}',
        '{"inode": 1, "ours": true}',
        "[1, 2]",
    ],
)
def test_anything_but_the_answer_is_an_error_naming_the_node(text):
    with pytest.raises(PortCheckError, match="node n2"):
        parse_probe_output(text, [1], "n2")


def test_the_answer_is_the_last_line():
    out = "a warning\n" + json.dumps({"inode": 7, "ours": True, "readable": True}) + "\n"
    assert parse_probe_output(out, [3], "n1").ours


def test_the_helper_container_sees_the_node_and_nothing_more():
    kw = probe_container(IMAGE, "ds01", "10.0.0.2", 20001, [41, 42])
    hc = kw["host_config"]
    assert kw["image"] == IMAGE and kw["user"] == "0" and kw["entrypoint"] == ["python3"]
    assert kw["command"][0] == "-c" and kw["command"][2:] == ["10.0.0.2", "20001", "41,42"]
    assert (hc["PidMode"], hc["NetworkMode"]) == ("host", "host")
    assert hc["CapDrop"] == ["ALL"] and sorted(hc["CapAdd"]) == sorted(PROBE_CAPS)
    assert set(PROBE_CAPS) == {"SYS_PTRACE", "DAC_READ_SEARCH"}
    assert hc["ReadonlyRootfs"] is True and hc["Binds"] == [] and "Mounts" not in hc
    assert "no-new-privileges" in hc["SecurityOpt"] and "Privileged" not in hc
    assert kw["environment"] == {"NVIDIA_VISIBLE_DEVICES": "void"}
    assert kw["labels"] == {"ds01.probe": "port-owner"}
    listing = {"Names": ["/" + kw["name"]], "Labels": kw["labels"], "State": "running"}
    assert kw["name"].startswith("ds01_portcheck_") and not is_server_container(listing, "ds01")


def test_the_helper_is_run_by_image_id_only():
    with pytest.raises(PortCheckError, match="image id"):
        probe_container("ds01/base:latest", "ds01", "10.0.0.2", 20001, [41])


class _Engine:
    """An engine whose port check answers ``answer`` (a PortHolder, an error, or never)."""

    def __init__(self, answer):
        self.answer = answer

    async def port_holder(self, target, ip, port, probe_image):
        if self.answer == "never":
            await asyncio.sleep(3600)
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


class _Steps(NetworkSteps):
    prefix = "t"
    container_id = "c0ffee"
    image = "ds01/base:latest"
    name = "p"
    ip = "10.0.0.2"
    on_swarm = True
    user = SimpleNamespace(name="bob")


@pytest.mark.parametrize(
    ("answer", "logged"),
    [
        (PortCheckError("node n2: the port check exited 1"), "node n2: the port check exited 1"),
        ("never", "no answer in 0 s"),
        (PortHolder(222, False, True, (41,), "n2"), "held by socket inode 222 on node n2"),
        (PortHolder(222, False, False, (41,), "n2"), "server=p on node n2: the processes"),
    ],
)
def test_a_port_check_that_fails_or_finds_another_holder_refuses(
    monkeypatch, caplog, answer, logged
):
    monkeypatch.setattr(network_steps, "PORT_CHECK_TIMEOUT", 0.2)
    steps = _Steps()
    steps.engine = _Engine(answer)
    with pytest.raises(web.HTTPError) as e:
        asyncio.run(steps._verify_port_owner("10.0.0.2", 20001))
    assert e.value.status_code == 503 and e.value.jupyterhub_message == PORT_TAKEN_MESSAGE
    assert logged in caplog.text, caplog.text


def test_a_port_held_by_the_server_passes(caplog):
    steps = _Steps()
    steps.engine = _Engine(PortHolder(111, True, True, (41,), "n2"))
    asyncio.run(steps._verify_port_owner("10.0.0.2", 20001))


@pytest.mark.parametrize("image", ["ds01-bob/p:0123", ""])
def test_a_swarm_never_runs_a_users_image_as_the_helper(image):
    """The helper is root with ptrace on the node: only the hub's base image may be it."""
    from ds01spawner.engine.swarm import SwarmEngine
    from ds01spawner.swarm.nodes import NodeEngines

    engine = SwarmEngine(NodeEngines("unix:///nonexistent/docker.sock"), "ds01", threads=1)
    with pytest.raises(PortCheckError, match="base image"):
        engine._port_holder("ds01-bob.p", "10.0.0.2", 20001, image)

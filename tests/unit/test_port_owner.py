"""The port-owner check's pure parts: the helper program a swarm node runs (the same source as
the hub's own check), its answer, and the helper container's settings."""

import json
import subprocess
import sys

import pytest

from ds01spawner.engine.port_owner import (
    PROBE_CAPS,
    PortCheckError,
    parse_probe_output,
    port_holder,
    probe_container,
    probe_script,
)
from ds01spawner.gpus.table import is_server_container

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

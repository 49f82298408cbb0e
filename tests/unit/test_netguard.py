"""Network isolation, the pure parts: firewall rules, who holds a port, port ranges."""

import asyncio
import subprocess

import pytest
from tornado import web

from ds01spawner.spawner.netguard import (
    NetGuardError,
    apply_firewall,
    chain_name,
    firewall_rules,
    ipv6_loopback_up,
    listening_inode,
    parse_range,
    port_holder,
    socket_inodes,
    top_pids,
)
from ds01spawner.spawner.network_steps import NetworkSteps
from ds01spawner.spawner.ports import PortPool

# /proc/net/tcp as the kernel writes it: 127.0.0.1:20001 LISTEN (inode 111), 0.0.0.0:20002
# LISTEN (222), 127.0.0.1:20003 ESTABLISHED (333)
PROC_NET_TCP = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:4E21 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 111 1
   1: 00000000:4E22 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 222 1
   2: 0100007F:4E23 0100007F:9C40 01 00000000:00000000 00:00000000 00000000  1000        0 333 1
"""


def test_listening_inode_reads_listeners_only():
    assert listening_inode(PROC_NET_TCP, "127.0.0.1", 20001) == 111
    assert listening_inode(PROC_NET_TCP, "127.0.0.1", 20002) == 222  # bound to every address
    assert listening_inode(PROC_NET_TCP, "127.0.0.1", 20003) is None  # not listening
    assert listening_inode(PROC_NET_TCP, "127.0.0.1", 20004) is None


def test_socket_inodes_and_top_pids():
    assert socket_inodes(["socket:[5]", "/dev/null", "pipe:[7]", "socket:[9]"]) == {5, 9}
    top = {"Titles": ["UID", "PID", "PPID", "CMD"], "Processes": [["1000", "41", "1", "x"]]}
    assert top_pids(top) == [41] and top_pids({}) == []


def test_port_holder_finds_the_container_process(tmp_path):
    (tmp_path / "net").mkdir()
    (tmp_path / "net" / "tcp").write_text(PROC_NET_TCP)
    for pid, inode in ((41, 111), (99, 222)):
        fd = tmp_path / str(pid) / "fd"
        fd.mkdir(parents=True)
        (fd / "3").symlink_to(f"socket:[{inode}]")
        (fd / "0").symlink_to("/dev/null")
    mine = port_holder("127.0.0.1", 20001, [41], str(tmp_path))
    assert mine.ours and mine.inode == 111
    stolen = port_holder("127.0.0.1", 20002, [41], str(tmp_path))  # pid 99 holds it
    assert not stolen.ours and stolen.inode == 222
    assert port_holder("127.0.0.1", 20009, [41], str(tmp_path)).inode is None
    unreadable = port_holder("127.0.0.1", 20001, [12345], str(tmp_path))  # no such fd folder
    assert not unreadable.ours and not unreadable.readable


def test_firewall_rules_refuse_student_uids_to_servers_and_protected_ports():
    rules = firewall_rules("DS01-x", (1000, 59999), (20000, 29999), [8001, 20005, 8001])
    owner = ["-m", "owner", "--uid-owner", "1000-59999"]
    reject = ["-j", "REJECT", "--reject-with", "tcp-reset"]
    assert rules == [
        ["-A", "DS01-x", "-p", "tcp", "--dport", "20000:29999", *owner, *reject],
        ["-A", "DS01-x", "-p", "tcp", "--dport", "8001", *owner, *reject],
        # UDP too, refused with ICMP port-unreachable (the default of both iptables tools)
        ["-A", "DS01-x", "-p", "udp", "--dport", "20000:29999", *owner, "-j", "REJECT"],
        ["-A", "DS01-x", "-p", "udp", "--dport", "8001", *owner, "-j", "REJECT"],
    ]
    assert len(chain_name("p" * 40)) == 28


def test_apply_firewall_is_idempotent_atomic_and_fails_loudly():
    calls, restored = [], []
    state = {"jump": False}

    def run(args):
        calls.append(args)
        ok = True
        if args[0] == "-C":
            ok = state["jump"]
        elif args[0] == "-I":
            state["jump"] = True
        return subprocess.CompletedProcess(args, 0 if ok else 1, "", "no")

    def restore(text):
        restored.append(text)
        return subprocess.CompletedProcess([], 0, "", "")

    rules = firewall_rules("DS01-x", (1000, 2000), (20000, 20010), [])
    apply_firewall("DS01-x", rules, run, restore=restore)
    apply_firewall("DS01-x", rules, run, restore=restore)
    assert sum(1 for c in calls if c[0] == "-I") == 1
    # never a flush then refill: the chain is replaced in one restore commit
    assert not any(c[0] in ("-F", "-A", "-N") for c in calls)
    lines = restored[0].splitlines()
    assert lines[:2] == ["*filter", ":DS01-x - [0:0]"] and lines[-1] == "COMMIT"
    assert lines[2:-1] == [" ".join(r) for r in rules] and len(rules) == 2
    assert restored[1] == restored[0]

    def failing(args):
        return subprocess.CompletedProcess(args, 1, "", "iptables: No chain/target/match")

    with pytest.raises(NetGuardError, match="No chain"):
        apply_firewall("DS01-x", rules, failing, restore=restore)
    with pytest.raises(NetGuardError, match="restore of chain DS01-x failed: bad rule"):
        bad = subprocess.CompletedProcess([], 1, "", "bad rule")
        apply_firewall("DS01-x", rules, run, restore=lambda text: bad)


@pytest.mark.parametrize(
    "text,expected",
    [("20000-29999", (20000, 29999)), ("4000", (4000, 4000)), (" 1 - 2 ", (1, 2))],
)
def test_parse_range(text, expected):
    assert parse_range(text, "x", 1, 65535) == expected


@pytest.mark.parametrize("text", ["", "a-b", "30-20", "0-10", "1-70000"])
def test_parse_range_refuses(text):
    with pytest.raises(NetGuardError):
        parse_range(text, "server_ports", 1, 65535)


def test_port_pool_picks_from_its_range():
    pool = PortPool()
    ports = {pool.reserve(port_range=(20900, 20999), attempts=500) for _ in range(5)}
    assert len(ports) == 5 and all(20900 <= p <= 20999 for p in ports)


IF_INET6 = """\
fd000000000000000000000000000002 04 40 00 82     eth0
00000000000000000000000000000001 01 80 10 80       lo
fe800000000000000042b2fffe9c3751 05 40 20 80  docker0
"""


def test_ipv6_loopback_up_reads_proc_net_if_inet6():
    assert ipv6_loopback_up(IF_INET6)
    assert not ipv6_loopback_up(IF_INET6.replace("       lo", "     eth1"))
    assert not ipv6_loopback_up("")


class _Steps(NetworkSteps):
    prefix = "t"


@pytest.mark.parametrize("ip6tables", [True, False])
def test_uid_firewall_covers_ipv6_or_fails_closed(monkeypatch, caplog, ip6tables):
    import ds01spawner.spawner.network_steps as steps

    applied = []
    monkeypatch.setattr(
        steps,
        "apply_firewall",
        lambda chain, rules, run=None, tool="iptables": applied.append(tool),
    )
    monkeypatch.setattr(steps, "read_ipv6_loopback", lambda: True)
    monkeypatch.setattr(
        steps.shutil, "which", lambda name: "/usr/sbin/" + name if ip6tables else None
    )
    monkeypatch.setattr(NetworkSteps, "_firewall_ready", set())
    s = _Steps(network_isolation="uid-firewall", isolated_uids="47000")
    if ip6tables:
        asyncio.run(s._network_setup())
        assert applied == ["iptables", "ip6tables"]
        return
    with pytest.raises(web.HTTPError) as e:
        asyncio.run(s._network_setup())
    assert e.value.status_code == 503
    assert "network isolation could not be set up" in e.value.jupyterhub_message
    assert "IPv6 loopback (::1) is up but ip6tables is missing" in caplog.text
    assert NetworkSteps._firewall_ready == set()  # the next launch tries again

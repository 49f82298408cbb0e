"""Network isolation of user servers on the host network: loopback firewall rules per uid, and
the check that a server's port is held by that server's own container.

With host networking every container shares the host's loopback. Two defences:

- **uid firewall** (``firewall_rules``): ``iptables`` rules on ``OUTPUT -o lo`` that refuse TCP
  connections made by the students' uids to the user servers' port range and to protected ports
  (the proxy's API, a Docker TCP port, ...). The hub and the proxy run as root (or another uid
  outside the range), so they still reach every server. Host-network containers have no user
  namespace: their processes are the student's uid in the host's kernel, so the owner match
  sees them.
- **port owner** (``listening_inode``, ``socket_inodes``): a port cannot be kept from being bound
  by a student (any unprivileged port can be), so before the hub reports a server, the socket
  that listens on its port must belong to a process of its own container; otherwise a student
  who raced for the port would get the victim's traffic.

Pure parsing and rule building; the few I/O helpers (``apply_firewall``, ``port_holder``) take
their runner / proc root as parameters. Imports nothing of DS01.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Callable, Iterable
from dataclasses import dataclass

_RANGE = re.compile(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?")
LISTEN = "0A"


class NetGuardError(Exception):
    """A rule could not be installed or a setting is invalid; str() is for the admin."""


def parse_range(text: str, what: str, lo: int, hi: int) -> tuple[int, int]:
    """``"20000-29999"`` or ``"4000"`` -> (first, last), within [lo, hi]."""
    m = _RANGE.fullmatch(text or "")
    if not m:
        raise NetGuardError(f"{what} must look like 20000-29999 or 4000, not {text!r}")
    first = int(m[1])
    last = int(m[2]) if m[2] else first
    if not lo <= first <= last <= hi:
        raise NetGuardError(f"{what} {text!r} must be within {lo}-{hi}, first <= last")
    return first, last


def chain_name(prefix: str) -> str:
    """``DS01-<prefix>``, cut to iptables' 28 characters."""
    return f"DS01-{prefix}"[:28]


def firewall_rules(
    chain: str, uids: tuple[int, int], server_ports: tuple[int, int], protected: Iterable[int]
) -> list[list[str]]:
    """The rules of ``chain`` (without the chain's creation): connections from ``uids`` to the
    server port range and to each protected port are refused with a TCP reset."""
    owner = ["-m", "owner", "--uid-owner", f"{uids[0]}-{uids[1]}"]
    reject = ["-j", "REJECT", "--reject-with", "tcp-reset"]
    rules = [
        [
            "-A",
            chain,
            "-p",
            "tcp",
            "--dport",
            f"{server_ports[0]}:{server_ports[1]}",
            *owner,
            *reject,
        ]
    ]
    for port in sorted(set(protected)):
        if not server_ports[0] <= port <= server_ports[1]:
            rules.append(["-A", chain, "-p", "tcp", "--dport", str(port), *owner, *reject])
    return rules


def apply_firewall(
    chain: str,
    rules: list[list[str]],
    run: Callable[[list[str]], subprocess.CompletedProcess] | None = None,
) -> None:
    """Create (or refill) ``chain`` with ``rules`` and jump to it from ``OUTPUT -o lo`` once.
    Idempotent; NetGuardError with iptables' words when a command fails."""
    run = run or _iptables

    def must(args: list[str]) -> None:
        done = run(args)
        if done.returncode != 0:
            raise NetGuardError(f"iptables {' '.join(args)} failed: {done.stderr.strip()}")

    if run(["-n", "-L", chain]).returncode != 0:
        must(["-N", chain])
    must(["-F", chain])
    for rule in rules:
        must(rule)
    jump = ["OUTPUT", "-o", "lo", "-j", chain]
    if run(["-C", *jump]).returncode != 0:
        must(["-I", *jump])


def remove_firewall(chain: str, run=None) -> None:
    """Remove the jump and the chain (tests, uninstall); missing parts are fine."""
    run = run or _iptables
    while run(["-D", "OUTPUT", "-o", "lo", "-j", chain]).returncode == 0:
        pass
    run(["-F", chain])
    run(["-X", chain])


def _iptables(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["iptables", "-w", "5", *args], capture_output=True, text=True, timeout=30, check=False
    )


# ---- who holds a port ------------------------------------------------------------------------


def listening_inode(proc_net_tcp: str, ip: str, port: int) -> int | None:
    """The inode of the socket listening on ``ip:port`` (IPv4) or on 0.0.0.0:``port``, from the
    text of ``/proc/net/tcp``; None when nothing listens."""
    want = {_hex_addr(ip, port), _hex_addr("0.0.0.0", port)}
    for line in proc_net_tcp.splitlines()[1:]:
        fields = line.split()
        if len(fields) > 9 and fields[1] in want and fields[3] == LISTEN:
            return int(fields[9])
    return None


def _hex_addr(ip: str, port: int) -> str:
    packed = bytes(int(part) for part in ip.split("."))
    return f"{int.from_bytes(packed, 'little'):08X}:{port:04X}"


def socket_inodes(fd_targets: Iterable[str]) -> set[int]:
    """Inodes of the ``socket:[N]`` links among a process's fd link targets."""
    out = set()
    for target in fd_targets:
        if target.startswith("socket:[") and target.endswith("]"):
            out.add(int(target[8:-1]))
    return out


@dataclass(frozen=True)
class PortHolder:
    inode: int | None  # the listening socket, None when nothing listens
    ours: bool  # held by one of the given pids
    readable: bool = True  # False: no pid's fd folder could be read (not root?)


def port_holder(ip: str, port: int, pids: Iterable[int], proc: str = "/proc") -> PortHolder:
    """Is the socket listening on ``ip:port`` held by one of ``pids`` (the container's)?"""
    with open(os.path.join(proc, "net", "tcp")) as f:
        inode = listening_inode(f.read(), ip, port)
    if inode is None:
        return PortHolder(None, False)
    readable = False
    for pid in pids:
        fd_dir = os.path.join(proc, str(pid), "fd")
        try:
            names = os.listdir(fd_dir)
        except OSError:
            continue
        readable = True
        targets = []
        for name in names:
            try:
                targets.append(os.readlink(os.path.join(fd_dir, name)))
            except OSError:
                continue
        if inode in socket_inodes(targets):
            return PortHolder(inode, True)
    return PortHolder(inode, False, readable)


def top_pids(top: dict) -> list[int]:
    """Host pids from the engine's ``top`` answer (``Titles`` / ``Processes``)."""
    titles = top.get("Titles") or []
    if "PID" not in titles:
        return []
    i = titles.index("PID")
    return [int(row[i]) for row in top.get("Processes") or [] if len(row) > i]

"""Network isolation of user servers on the host network: loopback firewall rules per uid, and
the check that a server's port is held by that server's own container.

With host networking every container shares the host's loopback. Two defences:

- **uid firewall** (``firewall_rules``): ``iptables`` (and, where ``::1`` is up, ``ip6tables``)
  rules on ``OUTPUT -o lo`` that refuse TCP connections and UDP datagrams of the students'
  uids to the user servers' port range and to protected ports (the proxy's API, a Docker TCP
  port, ...). The hub and the proxy run as root (or another uid
  outside the range), so they still reach every server. Host-network containers have no user
  namespace: their processes are the student's uid in the host's kernel, so the owner match
  sees them.
- **port owner** (``engine/port_owner.py``, re-exported here): a port cannot be kept from
  being bound by a student (any unprivileged port can be), so before the hub reports a server,
  the socket that listens on its port must belong to a process of its own container; otherwise
  a student who raced for the port would get the victim's traffic.

Pure parsing and rule building; the few I/O helpers (``apply_firewall``, ``port_holder``) take
their runner / proc root as parameters. Imports nothing of DS01 but the engine's port check.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable, Iterable

from ..engine.port_owner import PortHolder as PortHolder  # re-exported: the port check
from ..engine.port_owner import listening_inode as listening_inode
from ..engine.port_owner import port_holder as port_holder
from ..engine.port_owner import socket_inodes as socket_inodes
from ..engine.port_owner import top_pids as top_pids

_RANGE = re.compile(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?")


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
    server port range and to each protected port are refused, TCP with a reset, UDP with the
    default ICMP port-unreachable. The same rules serve ``iptables`` and ``ip6tables``."""
    owner = ["-m", "owner", "--uid-owner", f"{uids[0]}-{uids[1]}"]
    ports = [f"{server_ports[0]}:{server_ports[1]}"]
    ports += [str(p) for p in sorted(set(protected)) if not server_ports[0] <= p <= server_ports[1]]
    rules = []
    for proto, reject in (
        ("tcp", ["-j", "REJECT", "--reject-with", "tcp-reset"]),
        ("udp", ["-j", "REJECT"]),
    ):
        for port in ports:
            rules.append(["-A", chain, "-p", proto, "--dport", port, *owner, *reject])
    return rules


def ipv6_loopback_up(if_inet6: str) -> bool:
    """Does ``/proc/net/if_inet6`` (its text) list ``::1`` on ``lo``?"""
    for line in if_inet6.splitlines():
        fields = line.split()
        if len(fields) >= 6 and fields[0] == "0" * 31 + "1" and fields[5] == "lo":
            return True
    return False


def read_ipv6_loopback(path: str = "/proc/net/if_inet6") -> bool:
    """``ipv6_loopback_up`` of this host; False when the kernel has no IPv6 (no such file)."""
    try:
        with open(path) as f:
            return ipv6_loopback_up(f.read())
    except FileNotFoundError:
        return False


def restore_input(chain: str, rules: list[list[str]]) -> str:
    """The ``iptables-restore --noflush`` input that replaces ``chain``'s rules in one commit:
    declaring the chain creates it where missing and empties it, and the new rules take effect
    together with that, so there is no moment without rules (a plain ``-F`` then ``-A`` would
    leave the servers open between the two)."""
    lines = ["*filter", f":{chain} - [0:0]"]
    lines += [" ".join(rule) for rule in rules]
    lines.append("COMMIT")
    return "\n".join(lines) + "\n"


def apply_firewall(
    chain: str,
    rules: list[list[str]],
    run: Callable[[list[str]], subprocess.CompletedProcess] | None = None,
    tool: str = "iptables",
    restore: Callable[[str], subprocess.CompletedProcess] | None = None,
) -> None:
    """Fill ``chain`` with ``rules`` atomically (``restore_input`` through ``<tool>-restore
    --noflush``) and jump to it from ``OUTPUT -o lo`` once. Idempotent; NetGuardError with the
    tool's words when a command fails. ``run`` / ``restore`` default to ``tool`` (``iptables``
    or ``ip6tables``) and ``<tool>-restore``."""
    run = run or _runner(tool)
    restore = restore or _restorer(tool + "-restore")

    def must(args: list[str]) -> None:
        done = run(args)
        if done.returncode != 0:
            raise NetGuardError(f"{tool} {' '.join(args)} failed: {done.stderr.strip()}")

    done = restore(restore_input(chain, rules))
    if done.returncode != 0:
        raise NetGuardError(f"{tool}-restore of chain {chain} failed: {done.stderr.strip()}")
    jump = ["OUTPUT", "-o", "lo", "-j", chain]
    if run(["-C", *jump]).returncode != 0:
        must(["-I", *jump])


def remove_firewall(chain: str, run=None, tool: str = "iptables") -> None:
    """Remove the jump and the chain (tests, uninstall); missing parts (or tool) are fine."""
    if run is None and shutil.which(tool) is None:
        return
    run = run or _runner(tool)
    while run(["-D", "OUTPUT", "-o", "lo", "-j", chain]).returncode == 0:
        pass
    run(["-F", chain])
    run(["-X", chain])


def _runner(tool: str) -> Callable[[list[str]], subprocess.CompletedProcess]:
    def run(args: list[str]) -> subprocess.CompletedProcess:
        try:
            return subprocess.run(
                [tool, "-w", "5", *args], capture_output=True, text=True, timeout=30, check=False
            )
        except FileNotFoundError:
            return subprocess.CompletedProcess(args, 127, "", f"{tool} is not installed")

    return run


def _restorer(tool: str) -> Callable[[str], subprocess.CompletedProcess]:
    def restore(text: str) -> subprocess.CompletedProcess:
        try:
            return subprocess.run(
                [tool, "-w", "5", "--noflush"],
                input=text,
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
        except FileNotFoundError:
            return subprocess.CompletedProcess([tool], 127, "", f"{tool} is not installed")

    return restore

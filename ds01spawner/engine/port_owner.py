"""Who holds a server's port: the socket listening on it must belong to a process of the
server's own container (docs/security-availability.md#network, docs/scale-out.md).

A student can bind any unprivileged port on a host (or a swarm node) before a server that was
given it starts; the hub's readiness wait would then connect to the student's process and the
proxy would route the victim to it. The check: the inode of the socket listening on ``ip:port``
(``/proc/net/tcp``) must be among the socket links of ``/proc/<pid>/fd`` of the container's
processes, the pids coming from the engine (``top``), never from the container.

- single engine (``engine.docker``): :func:`port_holder` reads the hub host's /proc;
- swarm (``engine.swarm``): the same scan runs **on the server's node**, in a short-lived trusted
  helper container (:func:`probe_container`: the hub's base image by id, host pid and network
  namespaces, root with only the capabilities the scan needs, read-only, no mounts); its
  command is the source text of :func:`scan_port` and the two parsers below (one logic, shipped
  as source), and it prints the answer as JSON (:func:`parse_probe_output`).

Imports nothing of DS01 (the engine layer's leaf).
"""

from __future__ import annotations

import inspect
import json
import os
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

LISTEN = "0A"
#: labels of the helper container: never a server (no ``ds01.managed``; not named like one)
PROBE_LABELS = {"ds01.probe": "port-owner"}
#: what reading another uid's ``/proc/<pid>/fd`` needs as root: ptrace-read access to the
#: process (CAP_SYS_PTRACE, the uids differ) and search on its mode-0500 fd folder
#: (CAP_DAC_READ_SEARCH); every other capability is dropped (tests/integration/test_swarm_spawn)
PROBE_CAPS = ("SYS_PTRACE", "DAC_READ_SEARCH")


class PortCheckError(Exception):
    """The port check could not run (node engine down, helper failed); str() names the node."""


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


def scan_port(ip: str, port: int, pids: Iterable[int], proc: str = "/proc") -> dict:
    """``{"inode", "ours", "readable"}`` for ``ip:port`` and ``pids``, read from ``proc``.
    Self-contained (``os`` and the functions above): its source runs in the swarm helper."""
    with open(os.path.join(proc, "net", "tcp")) as f:
        inode = listening_inode(f.read(), ip, port)
    if inode is None:
        return {"inode": None, "ours": False, "readable": True}
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
            return {"inode": inode, "ours": True, "readable": True}
    return {"inode": inode, "ours": False, "readable": readable}


@dataclass(frozen=True)
class PortHolder:
    inode: int | None  # the listening socket, None when nothing listens
    ours: bool  # held by one of the given pids
    readable: bool = True  # False: no pid's fd folder could be read (not root?)
    pids: tuple[int, ...] = ()  # the container's processes (from the engine)
    node: str = ""  # where it was checked ("" : the hub's host)


def port_holder(ip: str, port: int, pids: Iterable[int], proc: str = "/proc") -> PortHolder:
    """Is the socket listening on ``ip:port`` held by one of ``pids`` (the container's)?"""
    pids = tuple(pids)
    return PortHolder(**scan_port(ip, port, pids, proc), pids=pids)


def top_pids(top: Mapping) -> list[int]:
    """Host pids from the engine's ``top`` answer (``Titles`` / ``Processes``)."""
    titles = top.get("Titles") or []
    if "PID" not in titles:
        return []
    i = titles.index("PID")
    return [int(row[i]) for row in top.get("Processes") or [] if len(row) > i]


# ---- the helper container of a swarm node ----------------------------------------------------


def probe_script() -> str:
    """The helper's ``python3 -c`` program: the scan's own source, then ``argv`` (ip, port,
    comma-separated pids, optionally a proc root) in, one JSON line out."""
    parts = [
        "from __future__ import annotations",
        "import json, os, sys",
        f"LISTEN = {LISTEN!r}",
    ]
    parts += [
        inspect.getsource(fn) for fn in (listening_inode, _hex_addr, socket_inodes, scan_port)
    ]
    parts.append(
        "print(json.dumps(scan_port(sys.argv[1], int(sys.argv[2]), "
        "[int(p) for p in sys.argv[3].split(',') if p], *sys.argv[4:5])))"
    )
    return "\n".join(parts) + "\n"


def probe_container(image_id: str, prefix: str, ip: str, port: int, pids: Iterable[int]) -> dict:
    """``APIClient.create_container`` kwargs of the helper (``host_config`` as the API's dict):
    the image by id, host pid + network namespaces, root with ``PROBE_CAPS`` only, read-only,
    no mounts, no GPU, no new privileges, small limits."""
    if not image_id.startswith("sha256:"):
        raise PortCheckError(f"the port check needs an image id, not {image_id!r}")
    return {
        "image": image_id,
        "name": f"{prefix}_portcheck_{secrets.token_hex(4)}",
        "entrypoint": ["python3"],
        "command": ["-c", probe_script(), ip, str(int(port)), ",".join(str(int(p)) for p in pids)],
        "user": "0",
        "labels": dict(PROBE_LABELS),
        "environment": {"NVIDIA_VISIBLE_DEVICES": "void"},
        "host_config": {
            "NetworkMode": "host",
            "PidMode": "host",
            "ReadonlyRootfs": True,
            "CapDrop": ["ALL"],
            "CapAdd": list(PROBE_CAPS),
            "SecurityOpt": ["no-new-privileges"],
            "Binds": [],
            "Memory": 128 * 1024 * 1024,
            "PidsLimit": 16,
            "AutoRemove": False,  # removed by run_probe once its output is read
        },
    }


def parse_probe_output(text: str, pids: Iterable[int], node: str) -> PortHolder:
    """The helper's last output line -> PortHolder; PortCheckError when it is not the answer."""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    try:
        found = json.loads(lines[-1])
        inode, ours, readable = found["inode"], found["ours"], found["readable"]
    except (IndexError, ValueError, KeyError, TypeError) as e:
        raise PortCheckError(
            f"node {node}: the port check printed no answer: {text[-300:]!r}"
        ) from e
    if not (inode is None or type(inode) is int) or type(ours) is not bool:
        raise PortCheckError(f"node {node}: the port check answered {found!r}")
    if type(readable) is not bool:
        raise PortCheckError(f"node {node}: the port check answered {found!r}")
    return PortHolder(inode, ours, readable, tuple(pids), node)


def run_probe(client: Any, kwargs: Mapping, node: str, timeout: float) -> PortHolder:
    """Run the helper on ``client`` (a node's engine; blocking, at most ``timeout`` seconds of
    waiting), read its answer, remove it whatever happens."""
    kwargs = dict(kwargs)
    pids = [int(p) for p in kwargs["command"][-1].split(",") if p]
    cid = client.create_container(**kwargs)["Id"]
    try:
        client.start(cid)
        code = client.wait(cid, timeout=timeout).get("StatusCode")
        out = client.logs(cid, stdout=True, stderr=True).decode("utf-8", "replace")
        if code != 0:
            raise PortCheckError(f"node {node}: the port check exited {code}: {out[-300:]!r}")
        return parse_probe_output(out, pids, node)
    finally:
        try:
            client.remove_container(cid, force=True)
        except Exception:  # noqa: BLE001 - gone already, or the engine is down: nothing to keep
            pass

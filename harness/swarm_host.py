"""Host-level pieces of the two-node swarm harness (``harness.swarm``): network namespaces, veths,
our dockerd processes, mounts, cgroups; what a run leaves behind and how to remove it.

Everything a run creates is named after its run id (``dsw`` + 5 hex digits, ``FAMILY`` is the
common prefix), so leftovers of an interrupted run can be found and removed by name alone:

- netns ``<id>-n1``, ``<id>-n2``; host-side veths ``<id>h1``, ``<id>h2`` (node ends ``<id>c1``,
  ``<id>c2``, node1<->node2 ``<id>x1``/``<id>x2`` live inside the namespaces);
- ``/run/dsw/<id>/`` (exec-roots, sockets, pidfiles, the ``owner`` file), ``/var/lib/dsw/<id>/``
  (data-roots, dockerd logs); cgroups ``/sys/fs/cgroup/*/<id>-n1`` (``--cgroup-parent``).

A run is alive while the process named in its ``owner`` file (pid + start time) is; only runs
whose owner is gone are removed by ``cleanup_leftovers`` (parallel test workers are left alone).
"""

from __future__ import annotations

import glob
import ipaddress
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

FAMILY = "dsw"
RUN_ROOT = Path("/run/dsw")
STATE_ROOT = Path("/var/lib/dsw")


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run a command (no shell), capture its output; raise with its stderr if ``check``."""
    r = subprocess.run(args, capture_output=True, text=True)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({r.returncode}): {r.stderr.strip()}")
    return r


def netns_unavailable() -> str | None:
    """Why this machine cannot build the swarm (not root, no ``ip netns``), or None if it can."""
    if os.geteuid() != 0:
        return "the two-node swarm needs root (network namespaces, a dockerd per node)"
    probe = f"{FAMILY}probe{os.getpid()}"
    r = sh("ip", "netns", "add", probe, check=False)
    if r.returncode != 0:
        return f"cannot create a network namespace: {r.stderr.strip()}"
    sh("ip", "netns", "del", probe, check=False)
    for tool in ("dockerd", "nsenter", "unshare", "docker"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    return None


# ---------------------------------------------------------------- addresses
def host_networks() -> list[ipaddress.IPv4Network]:
    """Every IPv4 network the host has an address or a route in."""
    nets = []
    for a in json.loads(sh("ip", "-4", "-j", "addr").stdout or "[]"):
        for info in a.get("addr_info", []):
            nets.append(ipaddress.ip_interface(f"{info['local']}/{info['prefixlen']}").network)
    for r in json.loads(sh("ip", "-4", "-j", "route").stdout or "[]"):
        if r.get("dst") and r["dst"] != "default":
            nets.append(ipaddress.ip_network(r["dst"], strict=False))
    return nets


def pick_subnets(
    pool: str = "10.213.0.0/16", wanted: list[str] | None = None
) -> list[ipaddress.IPv4Network]:
    """Three /24s (host<->n1, host<->n2, n1<->n2) that no host address or route overlaps.

    ``wanted`` (three networks) is checked and refused with a clear error if one is in use;
    otherwise the first free trio of ``pool`` is taken.
    """
    used = host_networks()

    def free(n: ipaddress.IPv4Network) -> bool:
        return not any(n.overlaps(u) for u in used)

    if wanted:
        nets = [ipaddress.ip_network(w, strict=False) for w in wanted]
        busy = [str(n) for n in nets if not free(n)]
        if len(nets) != 3 or busy:
            raise RuntimeError(
                f"swarm subnets {wanted}: need 3 networks not in use on the host; in use: {busy}"
            )
        return nets
    subs = list(ipaddress.ip_network(pool).subnets(new_prefix=24))
    for i in range(0, len(subs) - 2, 3):
        trio = subs[i : i + 3]
        if all(free(n) for n in trio):
            return trio
    raise RuntimeError(f"no three free /24 networks left in {pool} on this host")


def add_veth(host_if: str, node_if: str, ns: str, host_ip: str, node_ip: str) -> None:
    """A veth pair host <-> ``ns`` with a /24 address on each end (no default route)."""
    sh("ip", "link", "add", host_if, "type", "veth", "peer", "name", node_if, "netns", ns)
    sh("ip", "addr", "add", f"{host_ip}/24", "dev", host_if)
    sh("ip", "link", "set", host_if, "up")
    sh("ip", "-n", ns, "addr", "add", f"{node_ip}/24", "dev", node_if)
    sh("ip", "-n", ns, "link", "set", node_if, "up")


def add_ns_link(ns1: str, if1: str, ip1: str, ns2: str, if2: str, ip2: str) -> None:
    """A veth pair between two namespaces (the swarm's own traffic)."""
    sh("ip", "-n", ns1, "link", "add", if1, "type", "veth", "peer", "name", if2, "netns", ns2)
    for ns, iface, ip in ((ns1, if1, ip1), (ns2, if2, ip2)):
        sh("ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", iface)
        sh("ip", "-n", ns, "link", "set", iface, "up")


# ---------------------------------------------------------------- processes
def proc_cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def proc_start(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def owner_token() -> str:
    return f"{os.getpid()} {proc_start(os.getpid())}"


def owner_alive(token: str) -> bool:
    try:
        pid, start = token.split()
        return proc_start(int(pid)) == start
    except ValueError:
        return False


def pids_matching(needle: str) -> list[int]:
    """Processes whose command line contains ``needle`` (e.g. an exec-root path)."""
    out = []
    for d in glob.glob("/proc/[0-9]*"):
        pid = int(d[6:])
        if pid != os.getpid() and needle in proc_cmdline(pid):
            out.append(pid)
    return out


def stop_pids(pids: list[int], needle: str, timeout: float = 20) -> None:
    """SIGTERM each pid whose command line contains ``needle`` (checked: a pidfile may be stale);
    wait for all of them together; SIGKILL what is left after ``timeout``."""
    pids = [p for p in pids if needle in proc_cmdline(p)]
    for pid in pids:
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout

    def alive() -> list[int]:
        return [p for p in pids if needle in proc_cmdline(p) and not _zombie(p)]

    while alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    for pid in alive():
        os.kill(pid, signal.SIGKILL)


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


# ---------------------------------------------------------------- mounts, cgroups
def mounts_under(*roots: Path) -> list[str]:
    """Mount points at or under any of ``roots``, deepest first."""
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        mp = line.split()[4].encode().decode("unicode_escape")
        if any(mp == str(r) or mp.startswith(f"{r}/") for r in roots):
            points.append(mp)
    return sorted(points, key=len, reverse=True)


def unmount_all(*roots: Path) -> None:
    for mp in mounts_under(*roots):
        if sh("umount", mp, check=False).returncode != 0:
            sh("umount", "-l", mp, check=False)


def remove_cgroups(name: str) -> None:
    """Kill what still runs in the ``--cgroup-parent`` cgroups named ``name`` (containers of a
    dockerd that was SIGKILLed outlive it), then rmdir them, deepest first."""
    tops = glob.glob(f"/sys/fs/cgroup/*/{name}") + glob.glob(f"/sys/fs/cgroup/{name}")

    def procs() -> set[int]:
        found = set()
        for top in tops:
            for f in glob.glob(f"{top}/**/cgroup.procs", recursive=True):
                try:
                    found |= {int(x) for x in Path(f).read_text().split()}
                except OSError:
                    pass
        return found

    deadline = time.monotonic() + 10
    while (left := procs()) and time.monotonic() < deadline:
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.05)
    for top in tops:
        for d, _, _ in sorted(os.walk(top), key=lambda t: len(t[0]), reverse=True):
            try:
                os.rmdir(d)
            except OSError:
                pass


# ---------------------------------------------------------------- leftovers
def leftovers(run_id: str = FAMILY) -> list[str]:
    """Everything of ``run_id`` (or of every run, by default) still present on the host."""
    found = []
    found += [f"netns {n}" for n in _netns_names() if n.startswith(run_id)]
    links = json.loads(sh("ip", "-j", "link").stdout or "[]")
    found += [f"link {link['ifname']}" for link in links if link["ifname"].startswith(run_id)]
    for root in (RUN_ROOT, STATE_ROOT):
        found += [f"dir {p}" for p in sorted(root.glob(f"{run_id}*"))]
    found += [f"mount {m}" for m in mounts_under(RUN_ROOT, STATE_ROOT) if f"/{run_id}" in m]
    procs = pids_matching(f"{RUN_ROOT}/{run_id}")
    found += [f"process {p}: {proc_cmdline(p)[:120]}" for p in procs]
    found += [f"cgroup {c}" for c in glob.glob(f"/sys/fs/cgroup/*/{run_id}*")]
    return found


def _netns_names() -> list[str]:
    return [line.split()[0] for line in sh("ip", "netns", "list").stdout.splitlines() if line]


def run_ids() -> set[str]:
    """Ids of every run that left a name on the host."""
    ids = {p.name for root in (RUN_ROOT, STATE_ROOT) for p in root.glob(f"{FAMILY}?????")}
    ids |= {n.split("-")[0] for n in _netns_names() if n.startswith(FAMILY)}
    return ids


def teardown_run(run_id: str, keep_data: bool = False) -> None:
    """Remove what run ``run_id`` made on the host: its dockerds (and their containerd and shims),
    mounts, veths, netns, directories, cgroups. Idempotent; the engines are not asked anything
    (``TwoNodeSwarm.down`` leaves the swarm first while they still answer)."""
    run_dir = RUN_ROOT / run_id
    # worker first: measured 3.2 + 1.3 s; the manager first (or both at once) takes 7.3-7.8 s
    for n in ("n2", "n1"):
        pid = _pidfile(run_dir / f"{n}.pid")
        stop_pids([pid] if pid else [], f"--exec-root {run_dir}/")
    stop_pids(pids_matching(f"{run_dir}/"), f"{run_dir}/", timeout=5)  # containerd, shims
    unmount_all(run_dir, STATE_ROOT / run_id)
    for n in ("1", "2"):
        sh("ip", "link", "del", f"{run_id}h{n}", check=False)
    for ns in _netns_names():
        if ns.startswith(f"{run_id}-"):
            sh("ip", "netns", "del", ns, check=False)
    shutil.rmtree(run_dir, ignore_errors=True)
    if not keep_data:
        shutil.rmtree(STATE_ROOT / run_id, ignore_errors=True)
    for n in ("n1", "n2"):
        remove_cgroups(f"{run_id}-{n}")


def _pidfile(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def cleanup_leftovers() -> list[str]:
    """Tear down every run whose owner process is gone; return the ids removed."""
    removed = []
    for run_id in sorted(run_ids()):
        try:
            token = (RUN_ROOT / run_id / "owner").read_text()
        except OSError:
            token = ""
        if token and owner_alive(token):
            continue
        teardown_run(run_id)
        removed.append(run_id)
    return removed

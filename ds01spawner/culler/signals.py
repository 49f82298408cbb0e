"""Where the culler's signals come from: thin I/O clients, injected into the service, and the pure
parsers of what they return (unit-tested on their own).

- :class:`HubAPI`: the hub's REST API with the service's token: the running servers with their
  ``last_activity`` and the users' groups (``GET /users?state=active``, paginated), and the stop
  (``DELETE /users/{name}/servers/{server}``, which runs DS01Spawner.stop).
- :class:`KernelsAPI`: each single-user server's ``/api/kernels``, asked **directly** (the URL
  the server listens on, from its container), never through the proxy: the proxy counts every
  request it forwards as activity of the server, so asking through it would keep every server
  alive. ``no_track_activity=1`` keeps the server's own activity clock untouched as well.
  A user's server is untrusted (its user controls the code that answers): it is called only with
  **that server's own token** (``JUPYTERHUB_API_TOKEN`` of its container, scoped by the hub to
  ``access:servers`` of that one server; its user has it already), never with the culler's
  token, which reaches every user's server (docs/security.md).
- :class:`Engine`: Docker (``docker ps``, ``inspect``, one-shot ``stats`` for CPU), from
  ``docker_engine`` (the services' one Docker client).
- :class:`CpuMeter` and :class:`GpuMeter`: remember samples between cycles and say whether a
  server's CPU or GPUs are in use.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import quote, urlencode, urlsplit, urlunsplit

from tornado import httpclient

from ..engine.services import ServiceEngine as Engine  # noqa: F401  (signals.Engine: the culler's Docker client)
from ..gpus.model import Device, Inventory
from ..gpus.table import GPU_LABEL, HOLDING_STATES, parse_gpu_label
from .state import parse_time

PAGINATION = "application/jupyterhub-pagination+json"


class SignalError(Exception):
    """A signal could not be read (the peer answered an error, timed out or is down)."""


# ---- the hub ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HubServer:
    """A running server as the hub's REST API shows it."""

    user: str
    name: str  # "" for the default server
    groups: tuple[str, ...]
    started: datetime | None
    last_activity: datetime | None
    pending: str | None  # "spawn", "stop", ... or None
    ready: bool

    @property
    def key(self) -> str:
        return f"{self.user}/{self.name}"


def parse_users(items: Iterable[Mapping]) -> list[HubServer]:
    """The servers of ``GET /users?state=active`` user models (needs ``read:servers``; groups
    need ``read:users:groups``). Malformed entries are left out."""
    out = []
    for user in items:
        if not isinstance(user, Mapping) or not isinstance(user.get("name"), str):
            continue
        groups = tuple(g for g in user.get("groups") or [] if isinstance(g, str))
        servers = user.get("servers")
        for name, model in (servers if isinstance(servers, Mapping) else {}).items():
            if not isinstance(model, Mapping):
                continue
            out.append(
                HubServer(
                    user=user["name"],
                    name=str(name),
                    groups=groups,
                    started=parse_time(model.get("started")),
                    last_activity=parse_time(model.get("last_activity")),
                    pending=model.get("pending") or None,
                    ready=bool(model.get("ready")),
                )
            )
    return out


def check_fields(items: Iterable[Mapping]) -> None:
    """SignalError when the hub leaves out a user's servers or groups: the token lacks
    ``read:servers`` or ``read:users:groups``, and going on would cull nothing (no servers seen)
    or the wrong servers (everyone on the default limits)."""
    for user in items:
        missing = [k for k in ("servers", "groups") if isinstance(user, Mapping) and k not in user]
        if missing:
            scopes = {"servers": "read:servers", "groups": "read:users:groups"}
            raise SignalError(
                f"the hub's user models have no {' or '.join(missing)}: the culler's role needs "
                f"{' and '.join(scopes[k] for k in missing)}"
            )


def next_offset(page: Mapping) -> int | None:
    """The offset of the next page of a paginated hub answer, None after the last."""
    following = (page.get("_pagination") or {}).get("next")
    if not following:
        return None
    offset = following.get("offset")
    return offset if isinstance(offset, int) else None


class HubAPI:
    """The hub's REST API as this service (its token, its role's scopes)."""

    def __init__(
        self,
        api_url: str,
        token: str,
        timeout: float = 30,
        page_size: int = 200,
        max_clients: int = 10,
    ) -> None:
        self.api_url = api_url.rstrip("/")
        self.token = token
        self.timeout = timeout
        self.page_size = page_size
        self.max_clients = max_clients
        self._client: httpclient.AsyncHTTPClient | None = None
        self.calls = 0  # requests made, for the benchmark and the log

    @property
    def client(self) -> httpclient.AsyncHTTPClient:
        """Made at first use, on the running event loop, with room for the stops of a cycle."""
        if self._client is None:
            self._client = _http_client(self.max_clients)
        return self._client

    async def request(
        self, method: str, path: str, timeout: float | None = None, **headers: str
    ) -> tuple[int, Any]:
        """(status, parsed JSON body or None); SignalError for a network error or a timeout.
        HTTP errors are returned, not raised: the caller decides what each status means."""
        self.calls += 1
        req = httpclient.HTTPRequest(
            self.api_url + path,
            method=method,
            headers={"Authorization": f"token {self.token}", **headers},
            request_timeout=timeout or self.timeout,
            connect_timeout=self.timeout,
            allow_nonstandard_methods=True,
        )
        try:
            r = await self.client.fetch(req, raise_error=False)
        except (OSError, httpclient.HTTPError, asyncio.TimeoutError) as e:
            raise SignalError(f"{method} {path}: {e}") from e
        if r.code == 599:  # tornado: timeout or connection error
            raise SignalError(f"{method} {path}: {r.error}")
        try:
            body = json.loads(r.body) if r.body else None
        except ValueError:
            body = None
        return r.code, body

    async def active_servers(self) -> list[HubServer]:
        """Every running (or starting, or stopping) server, one page of users at a time."""
        servers: list[HubServer] = []
        offset: int | None = 0
        while offset is not None:
            query = urlencode({"state": "active", "offset": offset, "limit": self.page_size})
            code, body = await self.request("GET", f"/users?{query}", Accept=PAGINATION)
            if code != 200 or not isinstance(body, dict) or not isinstance(body.get("items"), list):
                raise SignalError(f"GET /users answered {code}: {_short(body)}")
            check_fields(body["items"])
            servers.extend(parse_users(body["items"]))
            offset = next_offset(body)
        return servers

    async def stop(self, user: str, server: str) -> int:
        """Ask the hub to stop a server (container removed, GPU freed; the workspace stays).

        Returns 202 (stopping) or 204 (stopped); 404/400 when it is already gone or not
        running. SignalError for anything else.
        """
        path = f"/users/{quote(user, safe='')}/servers/{quote(server, safe='')}"
        # The hub answers a DELETE when the server has stopped (its grace period included),
        # or with 202 after its slow_stop_timeout (10 s): a shorter wait would give up on a
        # stop that succeeds, and the retirement would never be recorded.
        code, body = await self.request("DELETE", path, timeout=max(self.timeout, STOP_WAIT_S))
        if code in (202, 204, 400, 404):
            return code
        raise SignalError(f"DELETE {path} answered {code}: {_short(body)}")


STOP_WAIT_S = 20.0


def _http_client(max_clients: int) -> httpclient.AsyncHTTPClient:
    """A client of its own (not tornado's shared one), so that up to ``max_clients`` requests run
    at once and a queued request does not time out waiting for another's connection."""
    return httpclient.AsyncHTTPClient(force_instance=True, max_clients=max(1, max_clients))


def _short(body: Any) -> str:
    text = json.dumps(body) if not isinstance(body, str) else body
    return text if len(text) < 200 else text[:197] + "..."


# ---- kernels ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Kernels:
    busy: bool  # a kernel is executing (or starting)
    last_activity: datetime | None  # the latest kernel activity


def parse_kernels(body: Any) -> Kernels:
    """Jupyter Server's ``GET /api/kernels`` list -> busy or not, and the latest activity."""
    if not isinstance(body, list):
        raise SignalError(f"/api/kernels did not answer a list: {_short(body)}")
    busy = False
    latest = None
    for k in body:
        if not isinstance(k, Mapping):
            continue
        if k.get("execution_state") in ("busy", "starting"):
            busy = True
        t = parse_time(k.get("last_activity"))
        if t is not None and (latest is None or t > latest):
            latest = t
    return Kernels(busy, latest)


def kernels_url(server_url: str) -> str:
    """``http://127.0.0.1:PORT/user/alice/proj/`` -> its kernel list, without counting as
    activity of the server."""
    return server_url.rstrip("/") + "/api/kernels?no_track_activity=1"


class KernelsAPI:
    """Kernel lists of single-user servers, each asked with that server's own token only."""

    def __init__(self, timeout: float = 30, max_clients: int = 10) -> None:
        self.timeout = timeout
        self.max_clients = max_clients
        self._client: httpclient.AsyncHTTPClient | None = None
        self.calls = 0

    @property
    def client(self) -> httpclient.AsyncHTTPClient:
        if self._client is None:
            self._client = _http_client(self.max_clients)
        return self._client

    async def kernels(self, server_url: str, server_token: str) -> Kernels:
        """The kernels of the server at ``server_url``, asked with ``server_token``: the token the
        hub gave that server (its container's ``JUPYTERHUB_API_TOKEN``), which the server's user
        already holds. Never pass a token that reaches anything else: the server may record it."""
        if not server_token:
            raise SignalError(f"kernels of {server_url}: the server has no token of its own")
        self.calls += 1
        req = httpclient.HTTPRequest(
            kernels_url(server_url),
            headers={"Authorization": f"token {server_token}"},
            request_timeout=self.timeout,
            connect_timeout=self.timeout,
            follow_redirects=False,
        )
        try:
            r = await self.client.fetch(req, raise_error=False)
        except (OSError, httpclient.HTTPError, asyncio.TimeoutError) as e:
            raise SignalError(f"kernels of {server_url}: {e}") from e
        if r.code != 200:
            raise SignalError(f"kernels of {server_url}: HTTP {r.code} {r.reason or ''}".strip())
        try:
            return parse_kernels(json.loads(r.body))
        except ValueError as e:
            raise SignalError(f"kernels of {server_url}: not JSON ({e})") from e


# ---- containers ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Container:
    """What the culler needs of a server's container (``docker inspect``); it never changes
    while the container lives, so it is read once per container."""

    id: str
    workspace: str | None  # host folder mounted at /workspace
    uid: int | None  # the container's user (Config.User "uid:gid"), owner of notices
    gid: int | None
    server_url: str | None  # where jupyterhub-singleuser listens, as the culler reaches it
    gpus: tuple[str, ...]
    project: str
    pid: int | None = None  # the container's init process on the host (its cgroup: CPU time)
    # The token the hub gave this server (scoped to it alone): the only credential ever sent to it.
    server_token: str = field(default="", repr=False)


def parse_container(inspect: Mapping, mount: str = "/workspace") -> Container:
    config = inspect.get("Config") or {}
    labels = config.get("Labels") or {}
    env = dict(e.split("=", 1) for e in config.get("Env") or [] if "=" in e)
    workspace = next(
        (
            m.get("Source")
            for m in inspect.get("Mounts") or []
            if m.get("Destination") == mount and m.get("Type", "bind") == "bind"
        ),
        None,
    )
    uid = gid = None
    user = str(config.get("User") or "")
    parts = user.split(":")
    if parts[0].isdigit():
        uid = int(parts[0])
        gid = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else uid
    return Container(
        id=str(inspect.get("Id") or ""),
        workspace=workspace,
        uid=uid,
        gid=gid,
        server_url=_server_url(env.get("JUPYTERHUB_SERVICE_URL"), inspect),
        gpus=tuple(parse_gpu_label(labels.get(GPU_LABEL))),
        project=str(labels.get("ds01.project") or ""),
        pid=(inspect.get("State") or {}).get("Pid") or None,
        server_token=env.get("JUPYTERHUB_API_TOKEN", ""),
    )


def _server_url(service_url: str | None, inspect: Mapping) -> str | None:
    """The server's own URL (JUPYTERHUB_SERVICE_URL); an address it binds on all interfaces
    (0.0.0.0, on a Docker network) is replaced by the container's address on its network."""
    if not service_url:
        return None
    parts = urlsplit(service_url)
    if parts.hostname not in (None, "", "0.0.0.0", "::"):
        return service_url
    networks = (inspect.get("NetworkSettings") or {}).get("Networks") or {}
    ip = next((n.get("IPAddress") for n in networks.values() if n.get("IPAddress")), None)
    if not ip:
        return None
    return urlunsplit(parts._replace(netloc=f"{ip}:{parts.port or 80}"))


# ---- CPU ----------------------------------------------------------------------------------------


def cpu_sample(stats: Mapping) -> tuple[datetime, int] | None:
    """(when, total CPU nanoseconds) from one-shot stats; None for a container not running."""
    when = docker_time(str(stats.get("read") or ""))
    total = ((stats.get("cpu_stats") or {}).get("cpu_usage") or {}).get("total_usage")
    if when is None or when.year < 2000 or not isinstance(total, int):
        return None
    return when, total


def docker_time(text: str) -> datetime | None:
    """Docker's nanosecond RFC 3339 times (``2026-11-28T16:53:36.03699596Z``) as datetimes."""
    text = text.strip()
    if not text.endswith("Z"):
        return parse_time(text)
    head, _, frac = text[:-1].partition(".")
    digits = "".join(ch for ch in frac if ch.isdigit())[:6].ljust(6, "0")
    return parse_time(f"{head}.{digits}+00:00")


def parse_mountinfo(text: str) -> dict[str, tuple[str, str]]:
    """The cgroup hierarchies that count CPU time: ``{"cpuacct": (mount point, root)}`` for
    cgroup v1 and ``{"unified": (mount point, root)}`` for v2, from /proc/self/mountinfo."""
    found: dict[str, tuple[str, str]] = {}
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        fields, after = left.split(), right.split()
        if not sep or len(fields) < 5 or len(after) < 3:
            continue
        root, point = (f.replace("\\040", " ") for f in fields[3:5])
        if after[0] == "cgroup" and "cpuacct" in after[2].split(","):
            found.setdefault("cpuacct", (point, root))
        elif after[0] == "cgroup2":
            found.setdefault("unified", (point, root))
    return found


def cgroup_cpu_file(proc_cgroup: str, mounts: Mapping[str, tuple[str, str]]) -> str | None:
    """The file with a process's cgroup CPU time: v1 ``cpuacct.usage`` (nanoseconds), else v2
    ``cpu.stat`` (``usage_usec``); from /proc/<pid>/cgroup and :func:`parse_mountinfo`."""
    v2 = None
    for line in proc_cgroup.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hid, controllers, path = parts
        for kind, name in (("cpuacct", "cpuacct.usage"), ("unified", "cpu.stat")):
            is_it = "cpuacct" in controllers.split(",") if kind == "cpuacct" else hid == "0"
            if not is_it or kind not in mounts:
                continue
            point, root = mounts[kind]
            rel = path[len(root) :] if root != "/" and path.startswith(root) else path
            file = os.path.join(point, rel.lstrip("/"), name)
            if kind == "cpuacct":
                return file
            v2 = file
    return v2


class CgroupCpu:
    """A container's CPU time read from the host's cgroup files, through its init process: a
    few file reads, no Docker call. None where they cannot be read (another host's engine, a
    layout not known here); the caller then asks Docker."""

    def __init__(self, proc: str = "/proc") -> None:
        self.proc = proc
        self._mounts: dict[str, tuple[str, str]] | None = None

    def read(self, pid: int) -> int | None:
        try:
            if self._mounts is None:
                with open(os.path.join(self.proc, "self", "mountinfo")) as f:
                    self._mounts = parse_mountinfo(f.read())
            with open(os.path.join(self.proc, str(pid), "cgroup")) as f:
                file = cgroup_cpu_file(f.read(), self._mounts)
            if file is None:
                return None
            with open(file) as f:
                text = f.read()
        except (OSError, ValueError):
            return None
        if file.endswith("cpuacct.usage"):
            return int(text.strip()) if text.strip().isdigit() else None
        for line in text.splitlines():
            key, _, value = line.partition(" ")
            if key == "usage_usec" and value.strip().isdigit():
                return int(value) * 1000
        return None


class CpuMeter:
    """CPU use of each container between two samples, in cores (1.0 = one core all the time)."""

    def __init__(self) -> None:
        self._last: dict[str, tuple[datetime, int]] = {}

    def update(self, container_id: str, sample: tuple[datetime, int] | None) -> float | None:
        """The cores used since the previous sample (``(when, total CPU ns)``); None for the
        first sample of a container, or no sample."""
        if sample is None:
            return None
        before = self._last.get(container_id)
        self._last[container_id] = sample
        if before is None or sample[0] <= before[0] or sample[1] < before[1]:
            return None
        seconds = (sample[0] - before[0]).total_seconds()
        return (sample[1] - before[1]) / 1e9 / seconds

    def forget_except(self, ids: Iterable[str]) -> None:
        keep = set(ids)
        for cid in list(self._last):
            if cid not in keep:
                del self._last[cid]


# ---- GPUs ---------------------------------------------------------------------------------------

GPU_BUSY, GPU_IDLE, GPU_UNKNOWN, GPU_SILENT = "busy", "idle", "unknown", "silent"


class GpuMeter:
    """GPU utilization per device over a window of samples, one sample per cycle.

    A server's GPUs are busy when the mean utilization of any of its devices over the window
    (samples since the server started only) is at or above the threshold. A device whose
    utilization the driver cannot tell (NVML on MIG slices) is silent: it neither keeps the
    server alive nor blocks its retirement. A device that is missing (lost), or an inventory
    that failed this cycle, makes the answer unknown.
    """

    def __init__(self, inventory: Inventory | None, window: float, busy_percent: float) -> None:
        self.inventory = inventory
        self.window = timedelta(seconds=window)
        self.busy_percent = busy_percent
        self._samples: dict[str, deque[tuple[datetime, float | None]]] = {}
        self._read: set[str] = set()  # devices read in the last sample
        self.failed: str | None = None
        self.devices: list[Device] = []

    def sample(self, now: datetime) -> None:
        """Read every device's utilization (one inventory call; run it off the event loop)."""
        self._read = set()
        if self.inventory is None:
            return
        try:
            self.devices = self.inventory.devices()
            usage = self.inventory.usage()
        except Exception as e:  # noqa: BLE001 - NVML raises its own types; logged by caller
            self.failed = f"the GPU inventory failed: {e}"
            return
        self.failed = None
        for uuid, u in usage.items():
            q = self._samples.setdefault(uuid, deque())
            q.append((now, u.utilization_pct))
            while q and q[0][0] < now - self.window - self.window:
                q.popleft()
        self._read = set(usage)

    def state_of(self, uuids: Iterable[str], started: datetime, now: datetime) -> str:
        uuids = list(uuids)
        if not uuids:
            return GPU_SILENT
        if self.failed or any(u not in self._read for u in uuids):
            return GPU_UNKNOWN
        since = max(started, now - self.window)
        silent = True
        for uuid in uuids:
            values = [p for t, p in self._samples.get(uuid, ()) if t >= since and p is not None]
            if not values:
                continue
            silent = False
            if sum(values) / len(values) >= self.busy_percent:
                return GPU_BUSY
        return GPU_SILENT if silent else GPU_IDLE


def gpu_demand(devices: Iterable[Device], containers: Iterable[Mapping]) -> float:
    """The share (0..1) of this host's GPU capacity held by DS01 containers, in
    GPU-equivalents (a MIG slice counts its share): the high-demand rule's measure."""
    devices = list(devices)
    total = sum(d.share for d in devices)
    if total <= 0 or math.isclose(total, 0):
        return 0.0
    held: set[str] = set()
    for c in containers:
        if c.get("State") in HOLDING_STATES:
            held.update(parse_gpu_label((c.get("Labels") or {}).get(GPU_LABEL)))
    return sum(d.share for d in devices if d.uuid in held) / total


def utcnow() -> datetime:
    return datetime.now(timezone.utc)

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
  ``engine.services`` (the services' one Docker client).
- :class:`CpuMeter` and :class:`GpuMeter` (from ``meters``): remember samples between cycles
  and say whether a server's CPU or GPUs are in use.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any
from urllib.parse import quote, urlencode, urlsplit, urlunsplit

from tornado import httpclient

from ..engine.services import ServiceEngine as Engine  # noqa: F401  (signals.Engine: the culler's Docker client)
from ..gpus.table import GPU_LABEL, parse_gpu_label
from .meters import (  # noqa: F401  (signals.<name>: the culler's signals, one import)
    GPU_BUSY,
    GPU_IDLE,
    GPU_SILENT,
    GPU_UNKNOWN,
    CgroupCpu,
    CpuMeter,
    GpuMeter,
    cgroup_cpu_file,
    cpu_sample,
    docker_time,
    gpu_demand,
    parse_mountinfo,
)
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


def utcnow() -> datetime:
    return datetime.now(timezone.utc)

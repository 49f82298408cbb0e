"""The hub's home page for DS01: a user's projects and servers, with GPU, times and Retire.

``configure_pages(c)`` (called from jupyterhub_config.py) puts DS01's ``home.html`` in front of
the hub's templates and gives it ``ds01_home``: a small view object whose ``rows()`` the
template awaits. The rows are built by ``home_rows``, a pure function of what the hub knows
(servers), what the disk has (project folders), the GPU inventory and the user's limits.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from ..durations import left
from ..projects.catalog import ProjectInfo, list_projects
from ..projects.workspace import WorkspaceError

HUB_TEMPLATES = Path(__file__).with_name("templates") / "hub"
SERVICE_LINKS = r"/api/ds01/services"  # below the hub's prefix: /hub/api/ds01/services


@dataclass(frozen=True)
class ServerFacts:
    """What the hub knows about one of the user's servers."""

    name: str  # "" for the default server
    project: str
    state: str  # "running", "starting", "stopping", "not running"
    url: str
    started: datetime | None
    last_activity: datetime | None
    gpus: tuple[str, ...]  # shown names, e.g. "GPU 1 (NVIDIA A100-SXM4-40GB)"
    note: str = ""  # e.g. "Waiting for a GPU: 2nd in line (4 of 4 GPUs busy)"


@dataclass(frozen=True)
class HomeRow:
    project: str
    server: str | None  # None: no server record
    state: str
    url: str | None
    launch_url: str
    gpus: str
    started: str  # ISO 8601 or ""

    @property
    def started_shown(self) -> str:
        """``2026-11-28 16:57 UTC``."""
        return self.started[:16].replace("T", " ") + " UTC" if self.started else ""

    runtime_left: str
    idle_left: str
    warnings: tuple[str, ...]
    note: str = ""

    @property
    def active(self) -> bool:
        return self.state in ("running", "starting")


def home_rows(
    projects: Iterable[ProjectInfo],
    servers: Iterable[ServerFacts],
    *,
    max_runtime_hours: float | None,
    now: datetime,
    launch_base: str,
    culler: Mapping[str, Mapping] | None = None,
    username: str = "",
) -> list[HomeRow]:
    """One row per project folder and per server (a server whose folder is gone still shows).

    Runtime left comes from ``max_runtime``; idle time left and warnings from the culler's
    state (``"<user>/<server>"`` -> ``{"idle_deadline", "runtime_deadline", "warnings"}``)
    when a culler runs.
    """
    culler = culler or {}
    by_project: dict[str, ServerFacts] = {}
    for s in servers:
        if s.project and (s.project not in by_project or s.state != "not running"):
            by_project[s.project] = s
    names = sorted({p.name for p in projects} | set(by_project))
    rows = []
    for name in names:
        s = by_project.get(name)
        active = s is not None and s.state in ("running", "starting")
        runtime_left = idle_left = ""
        warnings: tuple[str, ...] = ()
        if active:
            info = culler.get(f"{username}/{s.name}") or {}
            deadline = _parse_time(info.get("runtime_deadline"))
            if deadline is None and max_runtime_hours is not None and s.started is not None:
                deadline = _aware(s.started) + _hours(max_runtime_hours)
            runtime_left = left(deadline, now) or "unlimited"
            idle_left = left(_parse_time(info.get("idle_deadline")), now)
            warnings = tuple(
                str(w.get("message", "")) for w in info.get("warnings") or () if w.get("message")
            )
        rows.append(
            HomeRow(
                project=name,
                server=s.name if s is not None else None,
                state=s.state if s is not None else "not running",
                url=s.url if active else None,
                launch_url=f"{launch_base}{name}",
                gpus=", ".join(s.gpus) if active and s.gpus else ("none" if active else ""),
                started=_aware(s.started).isoformat(timespec="seconds")
                if active and s.started
                else "",
                runtime_left=runtime_left,
                idle_left=idle_left,
                warnings=warnings,
                note=s.note if s is not None and s.state == "starting" else "",
            )
        )
    return rows


def _hours(h: float) -> timedelta:
    return timedelta(hours=h)


def _aware(t: datetime) -> datetime:
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)


def _parse_time(value: Any) -> datetime | None:
    if not value:
        return None
    try:
        return _aware(datetime.fromisoformat(str(value)))
    except ValueError:
        return None


# ---- the hub side ----------------------------------------------------------------------------


def _state(spawner) -> str:
    if spawner.pending == "stop":
        return "stopping"
    if spawner.pending:
        return "starting"
    if spawner.ready:
        return "running"
    return "not running"  # the word of the form, the home page and the CLI


def shown_workspace(template: str, username: str) -> str:
    """The user's workspace folder as the deployment names it (``workspace_root`` with the
    user's name, not expanded: no account lookup), for the pages' sentences."""
    from ..projects.names import path_safe_username

    return template.format(username=path_safe_username(username)).rstrip("/")


class HomeView:
    """``ds01_home`` in the home page's template: built per request, cheap until awaited."""

    def __init__(self, user, culler_state_file: str = "") -> None:
        self.user = user
        self.culler_state_file = culler_state_file
        self.problems: list[str] = []

    @property
    def workspace(self) -> str:
        return shown_workspace(self.user.spawner.workspace_root, self.user.name)

    def service_href(self, name: str) -> str:
        """A link to a service from JupyterHub's own fields: ``<its host>/services/<name>/``
        under ``subdomain_host`` (each service on its own origin, ``host`` with the port, which
        JupyterHub 6's ``Service.href`` drops), else ``/services/<name>/``."""
        service = (self.user.settings.get("services") or {}).get(name)
        if service is not None:
            return f"{service.host}{service.prefix}"
        return f"{self.user.settings.get('base_url', '/')}services/{name}/"

    async def rows(self) -> list[HomeRow]:
        user = self.user
        default = user.spawner  # DS01Spawner: its traits say where projects live
        problems = []
        try:
            projects = await asyncio.to_thread(list_projects, default.workspace_root, user.name)
        except WorkspaceError as e:
            default.log.error("Cannot list projects of user=%s: %s", user.name, e.admin_hint or e)
            problems.append(str(e))
            projects = []
        names = await self._gpu_names(default)
        servers = []
        for orm_spawner in user.orm_user._orm_spawners:
            spawner = user.spawners.get(orm_spawner.name)
            if spawner is None:
                continue
            project = getattr(spawner, "project", "") or orm_spawner.name or ""
            if not project and not spawner.active:
                continue
            servers.append(
                ServerFacts(
                    name=orm_spawner.name,
                    project=project or default.default_project,
                    state=_state(spawner),
                    url=user.server_url(orm_spawner.name),
                    started=orm_spawner.started,
                    last_activity=orm_spawner.last_activity,
                    gpus=tuple(names.get(u, u) for u in getattr(spawner, "gpu_uuids", [])),
                    note=getattr(spawner, "queue_position", "") if spawner.pending else "",
                )
            )
        try:
            limits = await default.effective_limits()
            max_runtime = limits.max_runtime
        except Exception:  # noqa: BLE001 - the page shows "unlimited"; the spawner logged why
            max_runtime = None
        self.problems = problems
        return home_rows(
            projects,
            servers,
            max_runtime_hours=max_runtime,
            now=datetime.now(timezone.utc),
            launch_base=f"{default.hub.base_url}spawn/{user.escaped_name}/",
            culler=await asyncio.to_thread(read_culler_state, self.culler_state_file),
            username=user.name,
        )

    async def _gpu_names(self, spawner) -> dict[str, str]:
        try:
            broker = await asyncio.to_thread(spawner._broker)
            devices = await broker.devices()
        except Exception:  # noqa: BLE001 - no inventory: show the UUIDs
            return {}
        what = "simulated GPU" if broker.simulated else "GPU"
        return {d.uuid: f"{what} {d.index} ({d.mig_profile or d.name})" for d in devices}


def read_culler_state(path: str) -> dict:
    """The culler's per-server deadlines and warnings ({} when no culler runs)."""
    if not path:
        return {}
    try:
        from ..culler.state import read_for_page  # the culler service, when installed
    except ImportError:
        return {}
    return read_for_page(path)


def service_links_handler():
    """``GET /hub/api/ds01/services``: ``{"services": {name: address}}`` of the services the
    token may use, each address from JupyterHub's own ``Service.host`` and ``prefix``. Under
    ``subdomain_host`` every service is on its own origin, which a client (the ``ds01`` CLI)
    cannot know otherwise: the hub's API shows a service's host to no user."""
    from jupyterhub.apihandlers.base import APIHandler
    from tornado import web

    class ServiceLinksHandler(APIHandler):
        def get(self) -> None:
            if self.current_user is None:
                raise web.HTTPError(403, "A user's token is needed.")
            links = {
                name: f"{service.host}{service.prefix}"
                for name, service in self.services.items()
                if service.url
                and {"access:services", f"access:services!service={name}"} & self.expanded_scopes
            }
            self.finish({"services": links})

    return ServiceLinksHandler


def configure_pages(config: Any, culler_state_file: str = "") -> None:
    """Use DS01's home page: put its templates first and give it ``ds01_home``.

    Idle time left and the culler's warnings come from the culler's state file
    (``c.DS01Culler.state_file``, see culler/state.py), unless ``culler_state_file`` is given.
    """
    if not culler_state_file:
        from ..culler.state import state_path

        culler_state_file = state_path(config)
    paths = [p for p in config.JupyterHub.get("template_paths", []) if p != str(HUB_TEMPLATES)]
    config.JupyterHub.template_paths = [str(HUB_TEMPLATES), *paths]
    template_vars = dict(config.JupyterHub.get("template_vars", {}))

    def ds01_home(user):
        return HomeView(user, culler_state_file) if user is not None else None

    template_vars["ds01_home"] = ds01_home
    config.JupyterHub.template_vars = template_vars
    # (JupyterHub logs extra_handlers as deprecated; a service cannot say where services are)
    handlers = [h for h in config.JupyterHub.get("extra_handlers", []) if h[0] != SERVICE_LINKS]
    config.JupyterHub.extra_handlers = [*handlers, (SERVICE_LINKS, service_links_handler())]

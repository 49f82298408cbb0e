"""``check limits`` as a JSON API: a small JupyterHub-managed service.

    GET /services/ds01-limits/api/limits            the caller's limits, their sources, and use
    GET /services/ds01-limits/api/limits?user=bob   someone else's (hub admins only)
    GET /services/ds01-limits/api/queue             the GPU queue: everyone for hub admins,
                                                    the caller's own places for others
    GET|POST /services/ds01-limits/api/projects     the caller's projects; create one
                                                    (projects_api.py)
    GET|DELETE /services/ds01-limits/api/images     the caller's project images; delete a
                                                    project's (images_api.py)
    GET /services/ds01-limits/                      the caller's own usage, read-only (HTML:
                                                    servers, GPUs, time left, limits)
    GET /services/ds01-limits/api/session/<server>  one of the caller's servers at a glance (the
                                                    JupyterLab "DS01 session" panel; session_api.py)
    POST .../api/session/<server>/keep-running      count as activity now ("Keep running")

Authenticated with the caller's hub token (``Authorization: token ...``) or hub login cookie.
Limits come from the same file and the same resolution as the spawner's, and "what I use now"
from the same container labels as the GPU table, so this page can never disagree with a refusal.
Registered by ``ds01spawner.spawner.startup.configure_services`` (see jupyterhub_config.py).
"""

from __future__ import annotations

import asyncio
import json
import os
from datetime import datetime, timezone
from urllib.parse import quote, urlparse

from jupyterhub.services.auth import HubOAuthCallbackHandler, HubOAuthenticated
from jupyterhub.utils import url_path_join
from tornado import httpclient, web

from ..engine.services import ServiceEngine, service_engine
from ..errors import DOCKER_ERRORS
from ..gpus.table import hub_containers_filter, server_containers
from ..limits.model import KEYS, LimitsError, format_limit
from ..limits.resolve import explain
from ..limits.store import limits_store, unix_groups
from ..limits.usage import usage_of
from .images_api import ImagesAPI
from .projects_api import ProjectsAPI, spawner_settings
from .session_api import KeepRunningAPI, SessionAPI
from .signals import run_until_signalled

SERVICE_NAME = "ds01-limits"


class LimitsAPI(HubOAuthenticated, web.RequestHandler):
    def initialize(
        self, limits_file: str, engine: ServiceEngine, prefix: str, unix_groups: bool
    ) -> None:
        self.limits_file, self.engine, self.prefix = limits_file, engine, prefix
        self.unix_groups = unix_groups

    def write_error(self, status_code: int, **kwargs) -> None:
        exc = kwargs.get("exc_info", (None, None))[1]
        message = getattr(exc, "log_message", None) or self._reason
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"status": status_code, "message": message}))

    @web.authenticated
    async def get(self) -> None:
        caller = self.current_user["name"]
        name = self.get_argument("user", caller)
        if name != caller and not await self.caller_is_admin():
            raise web.HTTPError(403, "Only hub admins may see another user's limits.")
        model = await self.hub_user(name)
        groups = await self.groups_of(name, model)
        now = datetime.now(timezone.utc)
        containers = await self.server_containers()
        usage = usage_of(name, containers)
        body = {"user": name, "groups": groups, "checked_at": now.isoformat(timespec="seconds")}
        if not self.limits_file:
            body.update(limits_file=None, limits=None, shown={}, sources={})
        else:
            try:
                store = await asyncio.to_thread(limits_store, self.limits_file)
            except LimitsError as e:  # broken since the hub checked it, and never good here
                raise web.HTTPError(
                    503, "The limits file cannot be read; an admin can fix it."
                ) from e
            resolved = explain(name, groups, await asyncio.to_thread(store.current), now)
            body.update(
                limits_file=self.limits_file,
                limits=resolved.limits.as_dict(),
                shown={k: format_limit(k, getattr(resolved.limits, k)) for k in KEYS},
                sources=resolved.sources,
            )
        body["usage"] = usage.as_dict()
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(body))

    async def caller_is_admin(self) -> bool:
        """Admin powers here need a hub admin **and** a token that carries them (``admin:users``
        among its own scopes, e.g. an admin's API token). A server's token never does, whoever's
        server it is: its user's code and the culler hold it (docs/security.md)."""
        if "admin:users" not in (self.current_user.get("scopes") or []):
            return False
        return bool((await self.hub_user(self.current_user["name"])).get("admin"))

    async def groups_of(self, name: str, model: dict) -> list[str]:
        """The user's groups as the spawner resolves them: the hub's, and Unix groups if set."""
        groups = set(model.get("groups") or [])
        if self.unix_groups:
            groups.update(await asyncio.to_thread(unix_groups, name))
        return sorted(groups)

    async def server_containers(self) -> list[dict]:
        """The hub's user-server containers (``docker ps -a``); 503 when the engine is down.
        Only containers the hub made as servers count: a build step inherits its image's
        labels (gpus.table.is_server_container)."""
        try:
            listed = await asyncio.to_thread(
                self.engine.containers, hub_containers_filter(self.prefix)
            )
        except DOCKER_ERRORS as e:
            raise web.HTTPError(
                503, "The container engine is not answering, so what you use cannot be shown."
            ) from e
        return server_containers(listed, self.prefix)

    async def hub_user(self, name: str) -> dict:
        """The hub's model of a user (groups, admin), read with this service's own token."""
        # Quoted whole: a user named "admin?x" or "a#b" (JupyterHub allows both) must not
        # become a query or fragment, and read admin's model (docs/security.md).
        url = url_path_join(self.hub_auth.api_url, "users", quote(name, safe=""))
        try:
            r = await httpclient.AsyncHTTPClient().fetch(
                url, headers={"Authorization": f"token {self.hub_auth.api_token}"}
            )
        except httpclient.HTTPClientError as e:
            if e.code == 404:
                raise web.HTTPError(404, f"There is no user {name!r} on this hub.") from e
            raise
        model = json.loads(r.body)
        if not isinstance(model, dict) or model.get("name") != name:  # never someone else's
            raise web.HTTPError(502, f"The hub answered for another user than {name!r}.")
        return model


class UsagePage(LimitsAPI):
    """The caller's own usage as a page: the admin view's user row of the caller (servers,
    GPU equivalents against the limit, runtime and idle time left), and their limits."""

    @web.authenticated
    async def get(self) -> None:
        from ..admin.views import user_rows
        from ..culler.state import read_for_page

        name = self.current_user["name"]
        model = await self.hub_user(name)
        model["groups"] = await self.groups_of(name, model)
        now = datetime.now(timezone.utc)
        containers = await self.server_containers()
        limits = shown = None
        if self.limits_file:
            try:
                store = await asyncio.to_thread(limits_store, self.limits_file)
                doc = await asyncio.to_thread(store.current)
                resolved = explain(name, model["groups"], doc, now)
                limits = resolved.limits
                shown = [
                    (k, format_limit(k, getattr(limits, k)), resolved.sources.get(k, ""))
                    for k in KEYS
                ]
            except LimitsError:
                pass
        culler = await asyncio.to_thread(
            read_for_page, os.environ.get("DS01_CULLER_STATE_FILE", "")
        )
        (row,) = user_rows([model], containers, lambda n, g: limits, culler, now)
        template = _jinja().get_template("admin/usage.html")
        # JUPYTERHUB_HOST: the hub's origin under subdomain_host (this service has its own)
        hub_prefix = (
            os.environ.get("JUPYTERHUB_HOST", "")
            + os.environ.get("JUPYTERHUB_BASE_URL", "/")
            + "hub/"
        )
        self.finish(
            template.render(
                row=row,
                shown=shown,
                checked_at=now.isoformat(timespec="seconds"),
                user=name,
                hub=hub_prefix,
                base=os.environ.get("JUPYTERHUB_SERVICE_PREFIX", f"/services/{SERVICE_NAME}/"),
            )
        )


def _jinja():
    import jinja2

    here = os.path.dirname(os.path.abspath(__file__))
    templates = os.path.join(os.path.dirname(here), "web", "templates")
    return jinja2.Environment(loader=jinja2.FileSystemLoader(templates), autoescape=True)


class QueueAPI(LimitsAPI):
    """The GPU queue the hub publishes (``DS01Spawner.gpu_queue_file``)."""

    def initialize(self, queue_file: str, **kw) -> None:
        super().initialize(**kw)
        self.queue_file = queue_file

    @web.authenticated
    async def get(self) -> None:
        caller = self.current_user["name"]
        admin = await self.caller_is_admin()
        waiting: list[dict] = []
        updated = None
        if self.queue_file:
            try:
                with open(self.queue_file) as f:
                    published = json.load(f)
                waiting, updated = published.get("waiting", []), published.get("updated")
            except FileNotFoundError:
                pass
            except (OSError, ValueError) as e:
                raise web.HTTPError(503, "The GPU queue cannot be read right now.") from e
        shown = waiting if admin else [w for w in waiting if w.get("user") == caller]
        body = {
            "enabled": bool(self.queue_file),
            "updated": updated,
            "waiting_total": len(waiting),
            "waiting": shown,
        }
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(body))


class ProjectsHandler(ProjectsAPI, LimitsAPI):
    """GET/POST /api/projects (projects_api.py) with this service's authentication."""


class ImagesHandler(ImagesAPI, LimitsAPI):
    """GET/DELETE /api/images (images_api.py) with this service's authentication."""


class SessionHandler(SessionAPI, LimitsAPI):
    """GET /api/session/<server> (session_api.py) with this service's authentication."""


class KeepRunningHandler(KeepRunningAPI, LimitsAPI):
    """POST /api/session/<server>/keep-running (session_api.py)."""


def make_app(limits_file: str, prefix: str, engine: ServiceEngine) -> web.Application:
    service_prefix = os.environ.get("JUPYTERHUB_SERVICE_PREFIX", f"/services/{SERVICE_NAME}/")
    args = {
        "limits_file": limits_file,
        "engine": engine,
        "prefix": prefix,
        "unix_groups": bool(os.environ.get("DS01_LIMITS_UNIX_GROUPS")),
    }
    return web.Application(
        [
            (url_path_join(service_prefix, "api/limits"), LimitsAPI, args),
            (
                url_path_join(service_prefix, "api/queue"),
                QueueAPI,
                {**args, "queue_file": os.environ.get("DS01_GPU_QUEUE_FILE", "")},
            ),
            (
                url_path_join(service_prefix, "api/projects"),
                ProjectsHandler,
                {**args, "settings": spawner_settings()},
            ),
            (url_path_join(service_prefix, "api/images"), ImagesHandler, args),
            (url_path_join(service_prefix, "api/session/([^/]*)"), SessionHandler, args),
            (
                url_path_join(service_prefix, "api/session/([^/]*)/keep-running"),
                KeepRunningHandler,
                args,
            ),
            (service_prefix, UsagePage, args),
            (url_path_join(service_prefix, "oauth_callback"), HubOAuthCallbackHandler),
        ],
        cookie_secret=os.urandom(32),
    )


def main() -> None:
    import logging

    # lifecycle lines (e.g. "keep-running: user=... server=...") in the hub's log; not every request
    logging.basicConfig(
        level=logging.INFO, format="[%(levelname)1.1s %(asctime)s ds01-limits] %(message)s"
    )
    logging.getLogger("tornado.access").setLevel(logging.WARNING)
    limits_file = os.environ.get("DS01_LIMITS_FILE", "")
    prefix = os.environ.get("DS01_CONTAINER_PREFIX", "ds01")
    app = make_app(limits_file, prefix, service_engine(os.environ))
    url = urlparse(os.environ["JUPYTERHUB_SERVICE_URL"])
    app.listen(url.port, url.hostname)
    run_until_signalled()  # SIGINT (how the hub stops its services) or SIGTERM


if __name__ == "__main__":
    main()

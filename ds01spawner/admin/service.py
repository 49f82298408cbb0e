"""The ``ds01-admin`` service: a page and a JSON API for hub admins (docs/admin-view.md).

    GET  /services/ds01-admin/                       the page: GPU map, users, actions
    GET  /services/ds01-admin/api/overview           everything on the page, as JSON
    GET  /services/ds01-admin/api/gpus | api/users | api/queue
    GET  /services/ds01-admin/confirm/<action>?...   the confirmation step of an action
    POST /services/ds01-admin/confirm/<action>       do it (login cookie + _xsrf field)
    POST /services/ds01-admin/api/actions/<action>   do it (JSON body; token or cookie + XSRF)
    GET  /services/ds01-admin/metrics                Prometheus gauges of the current state

Actions: ``retire`` (user, server), ``exempt`` (user, lifts, reason, expires), ``reload-limits``.
Only hub admins get anything: the hub lets only the ``admin`` role reach the service (OAuth),
and every handler checks the caller's admin flag again. Cookie-authenticated POSTs must carry
the XSRF token (JupyterHub's HubOAuth checks it); token-authenticated API calls need none.
"""

from __future__ import annotations

import asyncio
import json
import os
from datetime import date, datetime, timezone
from pathlib import Path
from urllib.parse import quote, urlencode, urlparse

import jinja2
from jupyterhub.services.auth import HubOAuthCallbackHandler, HubOAuthenticated
from jupyterhub.utils import url_path_join
from prometheus_client import CollectorRegistry, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from tornado import httpclient, web

from .. import audit
from ..culler.state import read_for_page
from ..engine.services import service_engine, service_inventory
from ..errors import DOCKER_ERRORS
from ..gpus import InventoryError
from ..gpus.table import hub_containers_filter, server_containers
from ..limits.file import load_limits_file
from ..limits.model import KEYS, LimitsError
from ..limits.resolve import explain
from ..limits.store import limits_store
from ..services.signals import run_until_signalled
from .exemptions import ExemptionError, grant
from .views import gpu_rows, gpu_summary, queue_rows, user_rows

SERVICE_NAME = "ds01-admin"
TEMPLATES = Path(__file__).resolve().parents[1] / "web" / "templates"
ACTIONS = ("retire", "exempt", "reload-limits")


class Context:
    """What the handlers share: settings from the environment, the engine, the inventory."""

    def __init__(self, environ=None) -> None:
        env = os.environ if environ is None else environ
        self.limits_file = env.get("DS01_LIMITS_FILE", "")
        self.prefix = env.get("DS01_CONTAINER_PREFIX", "ds01")
        self.queue_file = env.get("DS01_GPU_QUEUE_FILE", "")
        self.culler_state = env.get("DS01_CULLER_STATE_FILE", "")
        self.respect_foreign = env.get("DS01_GPUS_BUSY_OUTSIDE", "1") == "1"
        self.engine = service_engine(env)  # the Docker engine, or the swarm's manager and nodes
        self.audit = audit.from_environment(env)
        self.inventory_error = ""
        try:
            self.inventory = service_inventory(self.engine, env)  # the swarm's, on a swarm
        except InventoryError as e:
            self.inventory, self.inventory_error = None, str(e)
        self.jinja = jinja2.Environment(
            loader=jinja2.FileSystemLoader(str(TEMPLATES)), autoescape=True
        )


class AdminHandler(HubOAuthenticated, web.RequestHandler):
    def initialize(self, ctx: Context) -> None:
        self.ctx = ctx

    @property
    def is_api(self) -> bool:
        return "/api/" in self.request.path or self.request.path.endswith("/metrics")

    def write_error(self, status_code: int, **kwargs) -> None:
        exc = kwargs.get("exc_info", (None, None))[1]
        message = getattr(exc, "log_message", None) or self._reason
        if self.is_api:
            self.set_header("Content-Type", "application/json")
            self.finish(json.dumps({"status": status_code, "message": message}))
            return
        self.finish(self.render_page("admin/error.html", status=status_code, message=message))

    async def hub(self, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
        """The hub's REST API with this service's token; (status, JSON body)."""
        url = url_path_join(self.hub_auth.api_url, path)
        try:
            r = await httpclient.AsyncHTTPClient().fetch(
                url,
                method=method,
                headers={
                    "Authorization": f"token {self.hub_auth.api_token}",
                    "Accept": "application/jupyterhub-pagination+json",
                },
                body=None if body is None and method == "GET" else json.dumps(body or {}),
                allow_nonstandard_methods=True,
            )
        except httpclient.HTTPClientError as e:
            text = e.response.body.decode("utf-8", "replace") if e.response else ""
            try:
                return e.code, json.loads(text)
            except ValueError:
                return e.code, {"message": text or str(e)}
        return r.code, (json.loads(r.body) if r.body else {})

    async def require_admin(self) -> str:
        """The caller's name when they are a hub admin; 403 otherwise (and for API calls
        without a valid token or cookie; pages redirect to the hub's login instead)."""
        user = self.current_user
        if user is None:
            if self.is_api or self.request.method != "GET":
                raise web.HTTPError(403, "Log in as a hub admin, or send an admin's token.")
            self.redirect(self.get_login_url())  # HubOAuth's state brings them back here
            raise web.Finish()
        status, model = await self.hub("GET", f"users/{quote(user['name'], safe='')}")
        if status != 200 or not model.get("admin"):
            raise web.HTTPError(403, "Only hub admins may use the DS01 admin view.")
        return user["name"]

    # ---- data ---------------------------------------------------------------------------------

    async def users(self) -> list[dict]:
        """Hub users with active servers (every page of the paginated API)."""
        found, offset = [], 0
        while True:
            status, page = await self.hub("GET", f"users?state=active&offset={offset}&limit=200")
            if status != 200:
                raise web.HTTPError(503, f"The hub's user list cannot be read ({status}).")
            items = page.get("items", page if isinstance(page, list) else [])
            found.extend(items)
            nxt = (page.get("_pagination") or {}).get("next") if isinstance(page, dict) else None
            if not nxt:
                return found
            offset = nxt["offset"]

    async def containers(self) -> list[dict]:
        try:
            found = await asyncio.to_thread(
                self.ctx.engine.containers, hub_containers_filter(self.ctx.prefix)
            )
            return server_containers(found, self.ctx.prefix)
        except DOCKER_ERRORS as e:
            raise web.HTTPError(503, "The container engine is not answering.") from e

    async def gpus(self, containers: list[dict]) -> list[dict]:
        inv = self.ctx.inventory
        if inv is None:
            return []
        devices = await asyncio.to_thread(inv.devices)
        usage = await asyncio.to_thread(inv.usage)
        nodes = getattr(inv, "node_of", None)  # a swarm's: the node of each device
        return gpu_rows(devices, usage, containers, self.ctx.respect_foreign, nodes)

    def limits_of(self):
        if not self.ctx.limits_file:
            return lambda name, groups: None
        try:
            doc = limits_store(self.ctx.limits_file).current()
        except LimitsError:
            return lambda name, groups: None
        now = datetime.now(timezone.utc)
        return lambda name, groups: explain(name, groups, doc, now).limits

    def queue(self) -> dict:
        if not self.ctx.queue_file:
            return {"enabled": False, "waiting": []}
        try:
            with open(self.ctx.queue_file) as f:
                published = json.load(f)
        except (OSError, ValueError):
            published = {}
        return {"enabled": True, "waiting": published.get("waiting", [])}

    async def overview(self) -> dict:
        containers = await self.containers()
        gpus = await self.gpus(containers)
        users = await self.users()
        now = datetime.now(timezone.utc)
        culler = await asyncio.to_thread(read_for_page, self.ctx.culler_state)
        limits_of = await asyncio.to_thread(self.limits_of)
        queue = await asyncio.to_thread(self.queue)  # one read: the count and rows agree
        return {
            "checked_at": now.isoformat(timespec="seconds"),
            "summary": gpu_summary(gpus),
            "gpus": gpus,
            "inventory_error": self.ctx.inventory_error or None,
            "users": user_rows(users, containers, limits_of, culler, now),
            "queue": queue,
            "queue_rows": queue_rows(queue["waiting"], now),
            "limits_file": self.ctx.limits_file or None,
        }

    # ---- output -------------------------------------------------------------------------------

    def render_page(self, name: str, **ns) -> str:
        base = os.environ.get("JUPYTERHUB_SERVICE_PREFIX", f"/services/{SERVICE_NAME}/")
        # JUPYTERHUB_HOST: the hub's origin under subdomain_host (this service has its own)
        hub_prefix = (
            os.environ.get("JUPYTERHUB_HOST", "")
            + os.environ.get("JUPYTERHUB_BASE_URL", "/")
            + "hub/"
        )
        user = self.current_user
        return self.ctx.jinja.get_template(name).render(
            base=base,
            hub=hub_prefix,
            user=user["name"] if user else "",
            xsrf=self.xsrf_token.decode() if user else "",
            keys=KEYS,
            **ns,
        )

    def json(self, body: dict) -> None:
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(body, default=str))


class PageHandler(AdminHandler):
    async def get(self) -> None:
        await self.require_admin()
        data = await self.overview()
        self.finish(
            self.render_page(
                "admin/admin.html", data=data, done=self.get_argument("done", ""), error=""
            )
        )


class ApiHandler(AdminHandler):
    async def get(self, what: str) -> None:
        await self.require_admin()
        if what == "queue":
            self.json(self.queue())
            return
        data = await self.overview()
        if what == "overview":
            self.json(data)
        elif what == "gpus":
            self.json({"summary": data["summary"], "gpus": data["gpus"]})
        elif what == "users":
            self.json({"users": data["users"]})
        else:
            raise web.HTTPError(404)


class MetricsHandler(AdminHandler):
    async def get(self) -> None:
        await self.require_admin()
        containers = await self.containers()
        gpus = await self.gpus(containers)
        self.set_header("Content-Type", CONTENT_TYPE_LATEST)
        self.finish(render_metrics(gpus, containers))


def render_metrics(gpus: list[dict], containers: list[dict]) -> bytes:
    """Prometheus text of the current state, from the GPU map rows and container labels."""
    from ..limits.usage import usage_of

    registry = CollectorRegistry()
    devices = Gauge(
        "ds01_gpu_devices", "Devices (GPUs and MIG slices) by state", ["state"], registry=registry
    )
    summary = gpu_summary(gpus)
    for state in ("allocated", "free", "busy_outside"):
        devices.labels(state).set(summary[state])
    held = Gauge(
        "ds01_gpu_device_allocated",
        "1 when a DS01 server holds the device",
        ["uuid", "index", "user", "project"],
        registry=registry,
    )
    for g in gpus:
        h = g["holder"] or {}
        held.labels(g["uuid"], g["index"], h.get("user", ""), h.get("project", "")).set(
            1 if g["state"] == "allocated" else 0
        )
    eq = Gauge(
        "ds01_user_gpu_equivalents",
        "GPU equivalents a user's servers hold",
        ["user"],
        registry=registry,
    )
    servers = Gauge(
        "ds01_user_servers", "Running DS01 servers of a user", ["user"], registry=registry
    )
    names = sorted({(c.get("Labels") or {}).get("ds01.user", "") for c in containers} - {""})
    for name in names:
        use = usage_of(name, containers)
        if use.servers:
            eq.labels(name).set(use.gpu_equivalents)
            servers.labels(name).set(len(use.servers))
    return generate_latest(registry)


class ConfirmHandler(AdminHandler):
    """GET: the confirmation page of an action; POST: do it (cookie + XSRF), then go back."""

    async def get(self, action: str) -> None:
        await self.require_admin()
        args = {k: self.get_argument(k, "") for k in ("user", "server", "reason", "expires")}
        args["lifts"] = self.get_arguments("lifts")
        self.finish(self.render_page("admin/confirm.html", action=action, args=args))

    async def post(self, action: str) -> None:
        actor = await self.require_admin()
        body = {k: self.get_argument(k, "") for k in ("user", "server", "reason", "expires")}
        body["lifts"] = self.get_arguments("lifts")
        try:
            result = await do_action(self, action, body, actor)
        except web.HTTPError as e:
            data = await self.overview()
            self.set_status(e.status_code)
            self.finish(
                self.render_page(
                    "admin/admin.html", data=data, done="", error=e.log_message or str(e)
                )
            )
            return
        self.redirect(self.ctx_base() + "?" + urlencode({"done": result["message"]}))

    def ctx_base(self) -> str:
        return os.environ.get("JUPYTERHUB_SERVICE_PREFIX", f"/services/{SERVICE_NAME}/")


class ActionApiHandler(AdminHandler):
    async def post(self, action: str) -> None:
        actor = await self.require_admin()
        try:
            body = json.loads(self.request.body or b"{}")
        except ValueError as e:
            raise web.HTTPError(400, "The body must be JSON.") from e
        if not isinstance(body, dict):
            raise web.HTTPError(400, "The body must be a JSON object.")
        self.json(await do_action(self, action, body, actor))


async def do_action(h: AdminHandler, action: str, body: dict, actor: str) -> dict:
    """Do one action for ``actor``; HTTPError 400/404/409/503 when it cannot be done."""
    if action not in ACTIONS:
        raise web.HTTPError(404, f"No action {action!r}.")
    log = h.ctx.audit
    if action == "retire":
        user, server = str(body.get("user") or ""), str(body.get("server") or "")
        if not user:
            raise web.HTTPError(400, "Name the user whose server to retire.")
        await asyncio.to_thread(audit.mark_retire, log.path, user, server, f"admin: {actor}", actor)
        path = f"users/{quote(user, safe='')}/" + (
            f"servers/{quote(server, safe='')}" if server else "server"
        )
        status, answer = await h.hub("DELETE", path)
        if status not in (202, 204):
            audit.take_retire(log.path, user, server)
            raise web.HTTPError(
                status if status in (400, 404) else 409,
                f"The hub did not retire {user}/{server}: {answer.get('message', status)}",
            )
        log.write("admin", actor=actor, action="retire", target=f"{user}/{server}")
        done = "is being retired" if status == 202 else "was retired"
        return {"ok": True, "status": status, "message": f"Server {user}/{server} {done}."}
    if not h.ctx.limits_file:
        raise web.HTTPError(409, "This hub has no limits file (c.DS01Spawner.limits_file).")
    if action == "reload-limits":
        try:
            await asyncio.to_thread(load_limits_file, h.ctx.limits_file)
        except LimitsError as e:
            log.write("limits_error", file=h.ctx.limits_file, error=str(e), actor=actor)
            log.write("admin", actor=actor, action="reload-limits", ok=False, error=str(e))
            return {"ok": False, "message": f"The limits file cannot be used: {e}"}
        await asyncio.to_thread(limits_store(h.ctx.limits_file).current)
        log.write("limits_reload", file=h.ctx.limits_file, actor=actor)
        log.write("admin", actor=actor, action="reload-limits", ok=True)
        return {
            "ok": True,
            "message": "The limits file is valid; the hub uses it from the next launch "
            "(it re-reads the file when it changes), the culler at its next cycle.",
        }
    # exempt
    user, reason = str(body.get("user") or "").strip(), str(body.get("reason") or "").strip()
    lifts = body.get("lifts") or []
    lifts = [lifts] if isinstance(lifts, str) else [str(x) for x in lifts]
    try:
        expires = date.fromisoformat(str(body.get("expires") or ""))
    except ValueError as e:
        raise web.HTTPError(400, "expires must be a date such as 2026-12-31.") from e
    try:
        await asyncio.to_thread(
            grant,
            h.ctx.limits_file,
            user,
            lifts,
            reason,
            expires,
            actor,
            datetime.now(timezone.utc).date(),
        )
    except ExemptionError as e:
        raise web.HTTPError(400, str(e)) from e
    except OSError as e:
        raise web.HTTPError(503, f"The limits file cannot be written: {e}") from e
    log.write(
        "admin",
        actor=actor,
        action="exempt",
        target=user,
        reason=reason,
        details={"lifts": lifts, "expires": expires.isoformat()},
    )
    return {
        "ok": True,
        "message": f"Exemption for {user} ({', '.join(lifts)}) until {expires.isoformat()} "
        f"written to the limits file.",
    }


def make_app(ctx: Context) -> web.Application:
    prefix = os.environ.get("JUPYTERHUB_SERVICE_PREFIX", f"/services/{SERVICE_NAME}/")
    args = {"ctx": ctx}
    return web.Application(
        [
            (prefix, PageHandler, args),
            (url_path_join(prefix, r"api/(overview|gpus|users|queue)"), ApiHandler, args),
            (url_path_join(prefix, r"api/actions/([a-z-]+)"), ActionApiHandler, args),
            (url_path_join(prefix, r"confirm/([a-z-]+)"), ConfirmHandler, args),
            (url_path_join(prefix, "metrics"), MetricsHandler, args),
            (url_path_join(prefix, "oauth_callback"), HubOAuthCallbackHandler),
        ],
        cookie_secret=os.urandom(32),
    )


def main() -> None:
    app = make_app(Context())
    url = urlparse(os.environ["JUPYTERHUB_SERVICE_URL"])
    app.listen(url.port, url.hostname)
    run_until_signalled()  # SIGINT (how the hub stops its services) or SIGTERM

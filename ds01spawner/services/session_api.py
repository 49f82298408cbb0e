"""The JupyterLab "DS01 session" panel's data, and its "Keep running": ds01-limits handlers.

    GET  /services/ds01-limits/api/session/<server>               the panel's data (session.py)
    POST /services/ds01-limits/api/session/<server>/keep-running  count as activity now

The caller is whoever the hub says the token (or login) belongs to: a server's own
``$JUPYTERHUB_API_TOKEN`` (``DS01Spawner.server_token_scopes`` gives it access to this service)
reads and keeps alive only its owner's servers; there is no way to name another user here.
"Keep running" asks the hub to record activity for that server (``POST /users/<name>/activity``,
this service's ``users:activity`` scope): the culler reads the hub's ``last_activity`` as one of
its trusted signals, which ends the idle stretch. It never moves the ``max_runtime`` deadline.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from datetime import datetime, timezone
from typing import Any
from urllib.parse import quote

from jupyterhub.utils import url_path_join
from tornado import httpclient, web

from ..limits.model import KEYS, LimitsError, format_limit
from ..limits.resolve import explain
from ..limits.store import limits_store
from .session import culler_record, session_view

log = logging.getLogger("ds01spawner.session")
_inventory: dict[str, Any] = {}


def inventory_from_environment(environ=None):
    """The GPU inventory of the hub's settings (as the admin view makes it), made once; None
    when it cannot work (the panel then shows no GPU figures)."""
    if "inv" not in _inventory:
        from ..engine.services import service_engine, service_inventory
        from ..gpus import InventoryError

        env = os.environ if environ is None else environ
        try:  # on a swarm: the devices the nodes advertise (with their node)
            _inventory["inv"] = service_inventory(service_engine(env), env)
        except (InventoryError, ValueError) as e:
            log.warning("ds01-limits: no GPU figures for the session panel: %s", e)
            _inventory["inv"] = None
    return _inventory["inv"]


async def _gpu_rows(containers: list[dict]) -> list[dict]:
    from ..admin.views import gpu_rows

    inv = await asyncio.to_thread(inventory_from_environment)  # the first call inits NVML
    if inv is None:
        return []
    devices = await asyncio.to_thread(inv.devices)
    usage = await asyncio.to_thread(inv.usage)
    busy_outside = os.environ.get("DS01_GPUS_BUSY_OUTSIDE", "1") == "1"
    return gpu_rows(devices, usage, containers, busy_outside, getattr(inv, "node_of", None))


def _queue(path: str) -> list[dict]:
    if not path:
        return []
    try:
        with open(path) as f:
            waiting = json.load(f).get("waiting", [])
    except (OSError, ValueError, AttributeError):
        return []
    return waiting if isinstance(waiting, list) else []


class SessionAPI(web.RequestHandler):
    """Mixed into the service's authenticated handler (see limits_service.make_app)."""

    async def _own_server(self, server: str) -> tuple[str, dict, dict | None]:
        """(caller, their hub model, the server's entry or None): the caller only."""
        if server and not all(c.isalnum() or c in "-_." for c in server):
            raise web.HTTPError(400, "A server name has letters, digits and '-' only.")
        name = self.current_user["name"]
        model = await self.hub_user(name)
        return name, model, (model.get("servers") or {}).get(server)

    @web.authenticated
    async def get(self, server: str) -> None:
        name, model, hub_server = await self._own_server(server)
        groups = await self.groups_of(name, model)  # LimitsAPI's, as the handlers mix it in
        now = datetime.now(timezone.utc)
        containers = await self.server_containers()
        limits, shown = None, {}
        if self.limits_file:
            try:
                store = await asyncio.to_thread(limits_store, self.limits_file)
                resolved = explain(
                    name, sorted(groups), await asyncio.to_thread(store.current), now
                )
                limits = resolved.limits
                shown = {k: format_limit(k, getattr(limits, k)) for k in KEYS}
            except LimitsError as e:
                raise web.HTTPError(
                    503, "The limits file cannot be read; an admin can fix it."
                ) from e
        record = await asyncio.to_thread(
            culler_record, os.environ.get("DS01_CULLER_STATE_FILE", ""), f"{name}/{server}"
        )
        body = session_view(
            user=name,
            server=server,
            hub_server=hub_server,
            containers=containers,
            gpu_rows=await _gpu_rows(containers),
            record=record,
            limits=limits,
            shown_limits=shown,
            queue=await asyncio.to_thread(_queue, os.environ.get("DS01_GPU_QUEUE_FILE", "")),
            now=now,
        )
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        self.finish(json.dumps(body))


class KeepRunningAPI(SessionAPI):
    """POST .../api/session/<server>/keep-running: record activity at the hub, now."""

    def get(self, server: str) -> None:  # only POST here
        raise web.HTTPError(405, "POST to keep the server running.")

    @web.authenticated
    async def post(self, server: str) -> None:
        name, _, hub_server = await self._own_server(server)
        if hub_server is None:
            raise web.HTTPError(404, f"You have no running server {server!r}.")
        now = datetime.now(timezone.utc)
        stamp = now.isoformat(timespec="seconds").replace("+00:00", "Z")
        url = url_path_join(self.hub_auth.api_url, "users", quote(name, safe=""), "activity")
        try:
            await httpclient.AsyncHTTPClient().fetch(
                url,
                method="POST",
                headers={"Authorization": f"token {self.hub_auth.api_token}"},
                body=json.dumps({"servers": {server: {"last_activity": stamp}}}),
            )
        except (httpclient.HTTPClientError, OSError) as e:
            log.warning("keep-running for %s/%s: the hub refused the activity: %s", name, server, e)
            raise web.HTTPError(502, "The hub did not record the activity; try again.") from e
        log.info("keep-running: user=%s server=%s activity recorded at %s", name, server, stamp)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"user": name, "server": server, "last_activity": stamp}))

"""DS01 session: the server side of the JupyterLab "DS01 session" panel, in the user's container.

    GET  <base_url>ds01/session        the session's figures (JSON), read from the hub side
    POST <base_url>ds01/keep-running   "Keep running": the hub records activity for this server

It only relays: every figure comes from the hub's ds01-limits service ($DS01_SESSION_URL), asked
with this server's own $JUPYTERHUB_API_TOKEN, which the service accepts for its owner's servers
only (ds01spawner/session_api.py). Nothing here decides anything. Without $DS01_SESSION_URL (an
image run outside DS01) both answer 404 and the panel says so.

The panel's polling does not count as activity (``_track_activity = False``): an open browser
tab must not keep an idle server alive; only "Keep running" does, and it says so to the hub.
"""

from __future__ import annotations

import json
import os
from urllib.parse import quote

from jupyter_server.base.handlers import APIHandler
from jupyter_server.utils import url_path_join
from tornado import httpclient, web

TIMEOUT = 10.0


def _jupyter_server_extension_points():
    return [{"module": "ds01_session"}]


class _Relay(APIHandler):
    _track_activity = False

    async def relay(self, method: str, suffix: str = "") -> dict:
        base = os.environ.get("DS01_SESSION_URL", "")
        token = os.environ.get("JUPYTERHUB_API_TOKEN", "")
        if not base or not token:
            raise web.HTTPError(404, "This server was not started by DS01: no session data.")
        server = quote(os.environ.get("JUPYTERHUB_SERVER_NAME", ""), safe="")
        url = f"{base.rstrip('/')}/api/session/{server}{suffix}"
        try:
            r = await httpclient.AsyncHTTPClient().fetch(
                url,
                method=method,
                body="" if method == "POST" else None,
                headers={"Authorization": f"token {token}", "Accept": "application/json"},
                request_timeout=TIMEOUT,
            )
        except httpclient.HTTPClientError as e:
            message = "The DS01 service did not answer."
            try:
                message = json.loads(e.response.body).get("message") or message
            except Exception:  # noqa: BLE001 - any body: the generic sentence
                pass
            code = e.code if 400 <= e.code < 500 else 502
            raise web.HTTPError(code, message) from e
        except OSError as e:
            raise web.HTTPError(502, "The DS01 service cannot be reached.") from e
        return json.loads(r.body)


class SessionHandler(_Relay):
    @web.authenticated
    async def get(self) -> None:
        data = await self.relay("GET")
        try:
            data["poll_seconds"] = float(os.environ.get("DS01_SESSION_POLL_SECONDS") or 60)
        except ValueError:
            data["poll_seconds"] = 60.0
        # JUPYTERHUB_HOST: the hub's origin under subdomain_host (this server is on its own)
        hub = os.environ.get("JUPYTERHUB_HOST", "") + os.environ.get("JUPYTERHUB_BASE_URL", "/")
        data["home_url"] = hub + "hub/home"
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(data))


class KeepRunningHandler(_Relay):
    @web.authenticated
    async def post(self) -> None:
        data = await self.relay("POST", "/keep-running")
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(data))


def _load_jupyter_server_extension(serverapp) -> None:
    web_app = serverapp.web_app
    base = web_app.settings["base_url"]
    web_app.add_handlers(
        ".*$",
        [
            (url_path_join(base, "ds01/session"), SessionHandler),
            (url_path_join(base, "ds01/keep-running"), KeepRunningHandler),
        ],
    )
    serverapp.log.info("ds01_session: the DS01 session panel's data at %sds01/session", base)

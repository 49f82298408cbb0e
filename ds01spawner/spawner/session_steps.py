"""The spawner's part of the JupyterLab "DS01 session" panel (images/labextension).

The panel's server extension, inside the container, asks the ds01-limits service for the
server's figures with the server's own ``$JUPYTERHUB_API_TOKEN`` (session_api.py). This mixin
gives that token access to the service (``server_token_scopes``) and tells the server where the
service is and how often the status bar may ask (environment). Nothing else: the data is read
and checked hub-side. Imports nothing of the spawner.
"""

from __future__ import annotations

from traitlets import Float, Unicode, default
from traitlets.config import LoggingConfigurable

#: The server token's scopes: JupyterHub's ``server`` role, plus the ds01-limits service, which
#: answers only about the token's owner (session_api.py).
SERVER_TOKEN_SCOPES = [
    "users:activity!user",
    "access:servers!server",
    "access:services!service=ds01-limits",
]


class SessionSteps(LoggingConfigurable):
    session_service_url = Unicode(
        "",
        help="""Where a user's server reaches the ds01-limits service for the JupyterLab
        "DS01 session" panel (given to the server as ``$DS01_SESSION_URL``).

        ``""``: the service's own address, set by ``configure_services`` (``http://127.0.0.1:
        <port>/services/ds01-limits/``; servers on the host network reach it). With servers on a
        Docker network, give an address they can reach. Default: ``""``.
        Example: ``c.DS01Spawner.session_service_url = "http://10.0.0.1:8002/services/ds01-limits/"``.
        """,
    ).tag(config=True)

    session_poll_seconds = Float(
        60.0,
        help="""How often the status bar item of the "DS01 session" panel asks for fresh
        figures (seconds; the open panel asks every 5 s or this, whichever is shorter). It is also
        how late a culler warning can show as a notification in JupyterLab. Default: ``60``.
        Example: ``c.DS01Spawner.session_poll_seconds = 30``.
        """,
    ).tag(config=True)

    @default("server_token_scopes")
    def _default_server_token_scopes(self) -> list[str]:
        return list(SERVER_TOKEN_SCOPES)

    def get_env(self) -> dict:
        env = super().get_env()
        if self.session_service_url:
            env["DS01_SESSION_URL"] = self.session_service_url
            env["DS01_SESSION_POLL_SECONDS"] = f"{self.session_poll_seconds:g}"
        return env

"""The hub's REST API and the ds01-limits service, as the CLI uses them.

Every failure becomes a HubError whose str() is one line for the terminal: the hub's own
message for refusals (limits, no GPU, bad name), or what to do (wrong token, hub unreachable).
"""

from __future__ import annotations

import ipaddress
import json
import time
from collections.abc import Iterator
from urllib.parse import quote, urlsplit

import requests

SERVICE = "ds01-limits"


class HubError(Exception):
    """A request the hub refused or that never reached it; ``status`` 0 when unreachable."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


def plain_http_problem(url: str) -> str | None:
    """Why sending a token to ``url`` would expose it, or None: plain ``http://`` to a host that
    is not this machine's loopback sends the token readable to anyone on the path."""
    parts = urlsplit(url)
    if parts.scheme != "http":
        return None
    host = parts.hostname or ""
    if host == "localhost":
        return None
    try:
        if ipaddress.ip_address(host).is_loopback:
            return None
    except ValueError:
        pass
    return (
        f"{url} is plain http:// to another machine: your token would cross the network "
        f"unencrypted, readable by anyone on the way. Use the hub's https:// address, or pass "
        f"--insecure if you really mean it."
    )


class HubClient:
    def __init__(self, url: str, token: str, timeout: float = 30, insecure: bool = False) -> None:
        problem = plain_http_problem(url)
        if problem and not insecure:
            raise HubError(problem)
        self.insecure_warning = problem  # shown by the CLI when --insecure lets it through
        self.url = url
        self.timeout = timeout
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"token {token}"
        self._me: dict | None = None
        self._service: str | None = None

    # ---- plumbing -------------------------------------------------------------------------

    def absolute(self, url: str) -> str:
        """A path of the hub's origin (``/user/ann/x/``) made absolute; a full URL (a server's
        ``url`` under ``subdomain_host``, on the user's own origin) is kept as it is."""
        return url if urlsplit(url).scheme else self.url + url

    def request(self, method: str, path: str, **kw) -> requests.Response:
        kw.setdefault("timeout", self.timeout)
        try:
            r = self.session.request(method, self.absolute(path), **kw)
        except requests.exceptions.ConnectionError as e:
            raise HubError(f"Cannot reach the hub at {self.url} ({_reason(e)}).") from e
        except requests.exceptions.Timeout as e:
            raise HubError(f"The hub at {self.url} did not answer in {self.timeout:g} s.") from e
        if r.status_code in (401, 403) and path == "/hub/api/user":
            raise HubError(
                f"The hub refused the token (HTTP {r.status_code}). Create one at "
                f"{self.url}/hub/token and run 'ds01 login'.",
                r.status_code,
            )
        if r.status_code >= 400:
            raise HubError(_message(r), r.status_code)
        return r

    def me(self) -> dict:
        """The token's user (checked once per run)."""
        if self._me is None:
            self._me = self.request("GET", "/hub/api/user").json()
            if "name" not in self._me or self._me.get("kind") == "service":
                raise HubError("This token belongs to a service, not a user; use a user's token.")
        return self._me

    def _servers_path(self, server: str = "") -> str:
        user = quote(self.me()["name"], safe="")
        return f"/hub/api/users/{user}/servers/{quote(server, safe='')}"

    # ---- servers --------------------------------------------------------------------------

    def servers(self) -> dict[str, dict]:
        name = quote(self.me()["name"], safe="")
        return self.request("GET", f"/hub/api/users/{name}").json().get("servers") or {}

    def server_url(self, server: str) -> str:
        """The server's address from the hub's model: ``url`` is a path on the hub's origin, or
        a full URL on the user's own origin under ``subdomain_host``."""
        model = self.servers().get(server)
        if not model or not model.get("url"):
            raise HubError(f"The server '{server}' is not running. See: ds01 container list")
        return self.absolute(model["url"])

    def start(self, server: str, options: dict) -> int:
        """Ask for the launch; 201 (ready) or 202 (starting). HubError for refusals."""
        return self.request("POST", self._servers_path(server), json=options).status_code

    def progress(self, server: str, timeout: float) -> Iterator[dict]:
        """The launch's progress events until ready or failed (the hub's event stream)."""
        r = self.request(
            "GET", self._servers_path(server) + "/progress", stream=True, timeout=timeout
        )
        try:
            for line in r.iter_lines(decode_unicode=True):
                if line and line.startswith("data:"):
                    event = json.loads(line[5:])
                    yield event
                    if event.get("ready") or event.get("failed"):
                        return
        except requests.exceptions.RequestException as e:
            raise HubError(f"Lost the hub's progress stream ({_reason(e)}).") from e
        finally:
            r.close()

    def stop(self, server: str, wait: float = 120) -> None:
        """Retire: stop the server, remove its container, drop it from the hub's list."""
        body = {"remove": True} if server else None
        self.request("DELETE", self._servers_path(server) if server else self._default(), json=body)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            model = self.servers().get(server)
            if model is None or not (model.get("pending") or model.get("ready")):
                return
            time.sleep(0.5)
        raise HubError(f"The server '{server}' is still stopping after {wait:g} s.")

    def _default(self) -> str:
        return f"/hub/api/users/{quote(self.me()['name'], safe='')}/server"

    # ---- the ds01-limits service ----------------------------------------------------------

    def service(self, method: str, path: str, **kw) -> dict:
        r = self.request(method, f"{self._service_base()}api/{path}", **kw)
        return r.json()

    def _service_base(self) -> str:
        """The service's address as the hub gives it (its own origin under ``subdomain_host``);
        ``/services/ds01-limits/`` on the hub's origin where the hub does not say."""
        if self._service is None:
            self._service = f"/services/{SERVICE}/"
            try:
                links = self.request("GET", "/hub/api/ds01/services").json().get("services")
            except (HubError, ValueError):
                links = None
            if isinstance(links, dict) and isinstance(links.get(SERVICE), str):
                self._service = links[SERVICE]
        return self._service


def _message(r: requests.Response) -> str:
    try:
        body = r.json()
        message = body.get("message") or body.get("reason") or ""
    except ValueError:
        message = ""
    return message or f"HTTP {r.status_code} {r.reason}"


def _reason(e: Exception) -> str:
    text = str(e)
    for known in ("Connection refused", "Name or service not known", "timed out"):
        if known in text:
            return known.lower()
    return type(e).__name__

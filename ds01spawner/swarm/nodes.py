"""The engine APIs of a swarm: the manager's, and each node's (from its ``ds01.engine`` label).

:class:`NodeEngines` is the one place DS01 makes Docker clients for a swarm: the spawner's Swarm
engine, the image distributor and the services (culler, ``ds01-limits``, ``ds01-admin``) share
the rule. A node's engine API is read from its ``ds01.engine`` label (docs/scale-out.md):

- ``unix:///path.sock``: a local socket (tests; a node whose socket the hub's host can reach);
- ``tcp://host:2376`` (or ``https://``): TLS with the client certificate and CA of the
  ``swarm_tls`` setting (``{"ca": ..., "cert": ..., "key": ...}``); the server is verified
  against the CA;
- **plain** ``tcp://`` / ``http://`` is refused unless the host is loopback (127.0.0.0/8,
  ``::1``, ``localhost``): an engine API is root on that node, so it never travels unencrypted
  and unauthenticated (:func:`check_engine_url`);
- anything else (``ssh://``, a missing label) is a clear :class:`NodeEngineError`.

Clients are made at first use and cached per URL (a docker-py ``APIClient`` is thread-safe for
requests and reconnects per call), never for a URL that failed: a node whose engine is down is
asked again next time. This module imports only docker-py and :mod:`.tasks` (no spawner, no
JupyterHub): the services use it.
"""

from __future__ import annotations

import ipaddress
import threading
from collections.abc import Mapping
from urllib.parse import urlsplit

import docker
import requests

from .tasks import ENGINE_LABEL, NodeInfo, parse_nodes

#: The keys of ``swarm_tls`` (paths of PEM files).
TLS_KEYS = frozenset({"ca", "cert", "key"})
#: What a dead or unreachable engine raises through docker-py.
ENGINE_DOWN_ERRORS = (docker.errors.DockerException, requests.RequestException, OSError)


class NodeEngineError(RuntimeError):
    """A node's engine API that DS01 cannot use; str() is a sentence an admin can act on."""


def _loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return host == "localhost"
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_tls(tls: Mapping[str, str] | None) -> dict[str, str]:
    """The ``swarm_tls`` setting, checked: only ``ca``/``cert``/``key``, cert and key together."""
    tls = {k: str(v) for k, v in (tls or {}).items() if v}
    unknown = sorted(set(tls) - TLS_KEYS)
    if unknown:
        raise NodeEngineError(
            f"swarm_tls has unknown keys {unknown}: use 'ca', 'cert' and 'key' (paths)."
        )
    if ("cert" in tls) != ("key" in tls):
        raise NodeEngineError("swarm_tls needs both 'cert' and 'key' (the client's certificate).")
    return tls


def check_engine_url(url: str, tls: Mapping[str, str] | None = None) -> str:
    """``url`` as docker-py takes it, or :class:`NodeEngineError` saying why it is refused.

    Pure: the TLS rule of the module docstring. ``tls`` is the checked ``swarm_tls``.
    """
    url = (url or "").strip()
    if not url:
        raise NodeEngineError(
            f"the node has no {ENGINE_LABEL} label (its engine API URL): set it with "
            f"`docker node update --label-add {ENGINE_LABEL}=tcp://<addr>:2376 <node>`."
        )
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "unix":
        if not parts.path:
            raise NodeEngineError(f"engine URL {url!r} names no socket path.")
        return url
    if scheme not in ("tcp", "http", "https"):
        raise NodeEngineError(
            f"engine URL {url!r}: DS01 speaks to engines over unix:// or tcp:// with TLS only."
        )
    if not parts.hostname:
        raise NodeEngineError(f"engine URL {url!r} names no host.")
    if tls and tls.get("cert"):
        return url
    if scheme == "https":
        raise NodeEngineError(
            f"engine URL {url!r} asks for TLS, but swarm_tls has no client certificate "
            "('cert' and 'key')."
        )
    if not _loopback(parts.hostname):
        raise NodeEngineError(
            f"refusing plain {url}: an engine API is root on its node; set DS01Spawner.swarm_tls "
            "(ca, cert, key) and run that dockerd with --tlsverify on port 2376."
        )
    return url


def _tls_config(tls: Mapping[str, str]) -> docker.tls.TLSConfig | None:
    if not tls.get("cert"):
        return None
    try:
        return docker.tls.TLSConfig(
            client_cert=(tls["cert"], tls["key"]),
            ca_cert=tls.get("ca"),
            verify=True,  # against ``ca``, else the system's CAs: never unverified
        )
    except docker.errors.TLSParameterError as e:
        raise NodeEngineError(f"swarm_tls: {e}") from e


class NodeEngines:
    """The manager's and the nodes' engine API clients (cached, made at first use).

    ``manager_url``: the manager's engine API (``""``: the default engine, ``DOCKER_HOST``);
    ``tls``: ``swarm_tls`` (used for every ``tcp://`` URL); ``timeout``: seconds per API call.
    """

    def __init__(
        self, manager_url: str, tls: Mapping[str, str] | None = None, timeout: float = 30
    ) -> None:
        self.manager_url = manager_url or ""
        self.tls = check_tls(tls)
        self.timeout = timeout
        self._lock = threading.Lock()
        self._manager: docker.APIClient | None = None
        self._clients: dict[str, docker.APIClient] = {}

    def _connect(self, url: str, what: str) -> docker.APIClient:
        try:
            return docker.APIClient(
                base_url=url,
                version="auto",
                timeout=int(self.timeout),
                tls=(not url.startswith("unix:") and _tls_config(self.tls)) or False,
            )
        except ENGINE_DOWN_ERRORS as e:
            raise NodeEngineError(f"the engine of {what} at {url} does not answer: {e}") from e

    def manager(self) -> docker.APIClient:
        """The manager's engine API (services, tasks, nodes; images are built here)."""
        with self._lock:
            if self._manager is None:
                if self.manager_url:
                    url = check_engine_url(self.manager_url, self.tls)
                    self._manager = self._connect(url, "the swarm manager")
                else:
                    try:
                        self._manager = docker.from_env(timeout=int(self.timeout)).api
                    except ENGINE_DOWN_ERRORS as e:
                        raise NodeEngineError(
                            f"the default engine (swarm manager) does not answer: {e}"
                        ) from e
            return self._manager

    def client(self, node: NodeInfo) -> docker.APIClient:
        """Node ``node``'s engine API, from its ``ds01.engine`` label.

        :class:`NodeEngineError` (naming the node) when the label is missing, the URL is
        refused by the TLS rule, or the engine does not answer the first call.
        """
        try:
            url = check_engine_url(node.engine, self.tls)
        except NodeEngineError as e:
            raise NodeEngineError(f"node {node.name}: {e}") from None
        with self._lock:
            client = self._clients.get(url)
        if client is None:
            client = self._connect(url, f"node {node.name}")  # outside the lock: may time out
            with self._lock:
                client = self._clients.setdefault(url, client)
        return client

    def nodes(self) -> dict[str, NodeInfo]:
        """The swarm's nodes by id (the manager's ``nodes()``, parsed)."""
        return parse_nodes(self.manager().nodes())

    def node(self, name_or_id: str) -> NodeInfo:
        """One node by id, DS01 name (``ds01.name``/``ds01.node`` label) or hostname."""
        nodes = self.nodes()
        if name_or_id in nodes:
            return nodes[name_or_id]
        for n in nodes.values():
            if name_or_id in (n.name, n.labels.get("ds01.node"), n.hostname):
                return n
        raise NodeEngineError(f"no swarm node is called {name_or_id!r}.")

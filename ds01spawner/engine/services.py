"""The Docker engine as the services see it (the culler, ``ds01-limits``, ``ds01-admin``).

One class, synchronous, connected at first use: a service must start (and keep the hub up:
JupyterHub stops when a managed service dies) while the engine is down. The spawner uses
``engine.docker.DockerEngine`` (the ``engine.base`` interface) instead; this module imports
neither side.
"""

from __future__ import annotations

import docker


class ServiceEngine:
    """The Docker engine, connected at first use. ``timeout``: seconds per API call (None:
    docker-py's default); ``calls`` counts the calls made (the culler reports it)."""

    def __init__(self, base_url: str | None = None, timeout: float | None = None) -> None:
        self.base_url = base_url
        self.timeout = timeout
        self._client = None
        self.calls = 0

    @property
    def api(self) -> docker.APIClient:
        if self._client is None:
            kw = {} if self.timeout is None else {"timeout": int(self.timeout)}
            if self.base_url:
                self._client = docker.APIClient(base_url=self.base_url, version="auto", **kw)
            else:
                self._client = docker.from_env(**kw).api
        return self._client

    def containers(self, filters: dict) -> list[dict]:
        """``docker ps -a`` with ``filters``."""
        self.calls += 1
        return self.api.containers(all=True, filters=filters)

    def inspect(self, container_id: str) -> dict:
        self.calls += 1
        return self.api.inspect_container(container_id)

    def stats(self, container_id: str) -> dict:
        """One-shot stats (API 1.41+): no second sample, but the daemon still answers at its
        collector's next tick (up to a second), so this is the fallback of the culler's
        ``signals.CgroupCpu``."""
        self.calls += 1
        return self.api.stats(container_id, stream=False, one_shot=True)

"""The Docker engine as the services see it (the culler, ``ds01-limits``, ``ds01-admin``).

One class, synchronous, connected at first use: a service must start (and keep the hub up:
JupyterHub stops when a managed service dies) while the engine is down. The spawner uses
``engine.docker.DockerEngine`` (the ``engine.base`` interface) instead; this module imports
neither side.

:func:`service_engine` picks the engine from the hub's settings as handed to the services
(``DS01_ENGINE_KIND``: ``docker`` -> :class:`ServiceEngine` on ``DS01_DOCKER_HOST``; ``swarm``
-> ``engine.swarm_services.SwarmServiceEngine`` on ``DS01_SWARM_MANAGER_URL`` with the TLS files
of ``DS01_SWARM_TLS``, JSON); :func:`service_inventory` the matching GPU inventory.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

import docker

ENGINE_KINDS = ("docker", "swarm")
#: Seconds per node engine API call of the services on a swarm (a dead node costs this once).
SWARM_TIMEOUT = 10.0


def service_engine(environ: Mapping[str, str] | None = None, timeout: float | None = None) -> Any:
    """The engine the hub's settings name: :class:`ServiceEngine` or a ``SwarmServiceEngine``.

    ValueError (a sentence) for an unknown kind or unusable swarm settings.
    """
    env = os.environ if environ is None else environ
    kind = (env.get("DS01_ENGINE_KIND") or "docker").strip().lower()
    if kind == "docker":
        return ServiceEngine(env.get("DS01_DOCKER_HOST") or None, timeout=timeout)
    if kind != "swarm":
        raise ValueError(f"DS01_ENGINE_KIND is {kind!r}: use one of {', '.join(ENGINE_KINDS)}.")
    from ..swarm.nodes import NodeEngineError, NodeEngines
    from .swarm_services import SwarmServiceEngine

    try:
        tls = json.loads(env.get("DS01_SWARM_TLS") or "{}")
        if not isinstance(tls, dict):
            raise ValueError("DS01_SWARM_TLS must be a JSON object (ca, cert, key)")
        url = env.get("DS01_SWARM_MANAGER_URL") or env.get("DS01_DOCKER_HOST") or ""
        engines = NodeEngines(url, tls, timeout or SWARM_TIMEOUT)
    except (ValueError, NodeEngineError) as e:
        raise ValueError(f"The swarm settings cannot be used: {e}") from e
    return SwarmServiceEngine(engines, prefix=env.get("DS01_CONTAINER_PREFIX", "ds01"))


def service_inventory(
    engine: Any, environ: Mapping[str, str] | None = None, log: Any = None
) -> Any:
    """The GPU inventory for ``engine``: the swarm's devices on a swarm, else this host's
    (``gpus.make_inventory`` from ``DS01_GPU_INVENTORY``, ``DS01_SIMULATED_GPUS``,
    ``DS01_SIMULATED_GPU_STATE_FILE``). ``InventoryError`` as ``make_inventory`` raises it."""
    swarm_inventory = getattr(engine, "inventory", None)
    if callable(swarm_inventory):
        return swarm_inventory()
    from ..gpus import make_inventory

    env = os.environ if environ is None else environ
    return make_inventory(
        env.get("DS01_GPU_INVENTORY", "none") or "none",
        json.loads(env.get("DS01_SIMULATED_GPUS") or "[]"),
        env.get("DS01_SIMULATED_GPU_STATE_FILE") or None,
        log,
    )


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

"""The spawner's settings as the spawner runs with them, for the hub-side code that hands them
to the services (startup.py, culler/registration.py) and checks them at start.

One rule, traitlets' own: a DS01Spawner reads every section of its class hierarchy
(``c.Spawner``, ``c.DockerSpawner``, ``c.ImageSteps``, ..., ``c.DS01Spawner``), the most
specific class winning. ``c.DockerSpawner.prefix = "x"`` therefore reaches the spawner *and*
the culler, the admin view and ``ds01-limits``. Imports the spawner class lazily (hub side only).

The engine settings (``engine_kind``, ``swarm_manager_url``, ``swarm_tls``) reach every service
as ``DS01_ENGINE_KIND``, ``DS01_SWARM_MANAGER_URL`` and ``DS01_SWARM_TLS`` (JSON), read there by
``engine.services.service_engine``.
"""

from __future__ import annotations

import json
from typing import Any

from traitlets.config import Configurable


def spawner_sections(config: Any = None) -> list[str]:
    """Config sections a DS01 spawner reads, least specific first (the configured
    ``spawner_class`` when it is a DS01Spawner subclass, else DS01Spawner)."""
    from ..spawner.spawner import DS01Spawner

    cls = DS01Spawner
    configured = config.JupyterHub.get("spawner_class") if config is not None else None
    if isinstance(configured, type) and issubclass(configured, DS01Spawner):
        cls = configured
    return [c.__name__ for c in reversed(cls.mro()) if issubclass(c, Configurable)]


def spawner_settings(config: Any) -> dict:
    """Every setting given for the spawner in ``config``, merged over its sections exactly as
    traitlets merges them for the spawner (later, more specific sections override)."""
    merged: dict = {}
    for name in spawner_sections(config):
        if name in config:
            merged.update(dict(config[name]))
    return merged


#: The engine settings the services share with the spawner: (trait, variable, default).
ENGINE_SETTINGS = (
    ("engine_kind", "DS01_ENGINE_KIND", "docker"),
    ("swarm_manager_url", "DS01_SWARM_MANAGER_URL", ""),
    ("swarm_tls", "DS01_SWARM_TLS", {}),
)


def engine_environment(section: dict) -> dict[str, str]:
    """The services' environment for the spawner's engine: ``DS01_ENGINE_KIND`` (docker or
    swarm), ``DS01_SWARM_MANAGER_URL`` and ``DS01_SWARM_TLS`` (JSON: ca, cert, key paths), from
    the spawner's settings (``spawner_settings``), with the spawner's defaults."""
    env = {}
    for trait, variable, default in ENGINE_SETTINGS:
        value = section.get(trait, default)
        env[variable] = json.dumps(dict(value or {})) if isinstance(default, dict) else str(value)
    return env


def check_engine_settings(section: dict) -> None:
    """ValueError (a sentence naming the setting) when the swarm settings cannot work: an
    unknown engine kind, ``swarm_tls`` with other keys or a cert without its key, or a manager
    URL the TLS rule refuses (plain tcp:// to another host)."""
    kind = str(section.get("engine_kind", "docker")).strip().lower()
    if kind not in ("docker", "swarm"):
        raise ValueError(f"DS01Spawner.engine_kind is {kind!r}: use 'docker' or 'swarm'.")
    if kind != "swarm":
        return
    from ..swarm.nodes import NodeEngineError, check_engine_url, check_tls

    try:
        tls = check_tls(dict(section.get("swarm_tls") or {}))
        url = section.get("swarm_manager_url") or ""
        if url:
            check_engine_url(url, tls)
    except NodeEngineError as e:
        raise ValueError(f"DS01Spawner.swarm_manager_url / swarm_tls: {e}") from e

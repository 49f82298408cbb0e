"""The spawner's settings as the spawner runs with them, for the hub-side code that hands them
to the services (startup.py, culler/registration.py) and checks them at start.

One rule, traitlets' own: a DS01Spawner reads every section of its class hierarchy
(``c.Spawner``, ``c.DockerSpawner``, ``c.ImageSteps``, ..., ``c.DS01Spawner``), the most
specific class winning. ``c.DockerSpawner.prefix = "x"`` therefore reaches the spawner *and*
the culler, the admin view and ``ds01-limits``. Imports the spawner class lazily (hub side only).
"""

from __future__ import annotations

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

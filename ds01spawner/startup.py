"""Checks that make the hub refuse to start on a DS01 configuration that cannot work.

JupyterHub has no start-up hook for spawner classes, so ``jupyterhub_config.py`` calls
:func:`check_config` at its end: the hub then exits with one clear line (naming what to fix)
instead of failing at the first launch.
"""

from __future__ import annotations

import logging
from typing import Any

from .gpus import InventoryError, make_inventory
from .limits import LimitsError

log = logging.getLogger("ds01spawner")


class ConfigCheckError(SystemExit):
    """Raised from jupyterhub_config.py: JupyterHub exits with this message."""


def check_config(config: Any) -> None:
    """Refuse to start on a limits file, a start timeout or a GPU inventory that cannot work.

    A limits file must exist and parse (the message names the file, the line and the key).
    GPU inventory ``auto`` and ``none`` always start (``auto`` falls back to no GPUs and logs
    why); ``nvml`` must initialise and ``simulated`` must have a valid list.
    """
    section = config.get("DS01Spawner", {})
    limits_file = section.get("limits_file", "")
    if limits_file:
        from .spawner_limits import limits_store

        try:
            limits_store(limits_file, log)  # this version is the last good one from now on
        except LimitsError as e:
            raise ConfigCheckError(f"DS01: the limits file cannot be used: {e}") from e
    check_start_timeout(config)
    kind = section.get("gpu_inventory", "auto")
    if str(kind).strip().lower() not in ("nvml", "simulated"):
        return
    try:
        inventory = make_inventory(
            kind,
            section.get("simulated_gpus", []),
            section.get("simulated_gpu_state_file") or None,
            log,
        )
    except InventoryError as e:
        raise ConfigCheckError(f"DS01: the GPU inventory {kind!r} cannot start: {e}") from e
    inventory.close()


def _setting(config: Any, name: str, default: Any) -> Any:
    """A spawner setting as the spawner would see it (the most specific section wins)."""
    for section in ("DS01Spawner", "ImageSteps", "DockerSpawner", "Spawner"):
        values = config.get(section, {})
        if name in values:
            return values[name]
    return default


def check_start_timeout(config: Any) -> None:
    """JupyterHub's ``start_timeout`` wraps the whole start, an image build included: refuse
    one that leaves no room for ``image_build_timeout`` plus ``http_timeout``.

    Without a configured ``start_timeout`` DS01's default already covers both.
    """
    if not _setting(config, "project_images", True):
        return
    start = _setting(config, "start_timeout", None)
    if start is None:
        return
    build = int(_setting(config, "image_build_timeout", 600))
    http = int(_setting(config, "http_timeout", 30))
    if int(start) < build + http:
        raise ConfigCheckError(
            f"DS01: start_timeout = {start} s leaves no room for a project image build "
            f"(image_build_timeout = {build} s, then http_timeout = {http} s): a build could "
            f"never finish. Remove the start_timeout setting (DS01's default is "
            f"{build + http + 60} s), set it to at least {build + http}, or lower "
            f"c.DS01Spawner.image_build_timeout."
        )


def configure_services(config: Any, port: int) -> None:
    """Register the ``ds01-limits`` service (the ``check limits`` JSON API) on ``port``.

    Call it after every change to ``DS01Spawner.limits_file`` or ``prefix``: it replaces its own
    earlier registration, and gives every user's token access to the service.
    """
    import sys

    section = config.get("DS01Spawner", {})
    env = {
        "DS01_LIMITS_FILE": section.get("limits_file", ""),
        "DS01_CONTAINER_PREFIX": section.get("prefix", "ds01"),
        "DS01_LIMITS_UNIX_GROUPS": "1" if section.get("limits_include_unix_groups") else "",
    }
    client_kwargs = section.get("client_kwargs", {})
    if client_kwargs.get("base_url"):
        env["DS01_DOCKER_HOST"] = client_kwargs["base_url"]
    services = [s for s in config.JupyterHub.get("services", []) if s.get("name") != "ds01-limits"]
    services.append(
        {
            "name": "ds01-limits",
            "url": f"http://127.0.0.1:{port}",
            "command": [sys.executable, "-m", "ds01spawner.limits_service"],
            "environment": env,
            "oauth_no_confirm": True,
            "display": False,
        }
    )
    config.JupyterHub.services = services
    roles = [r for r in config.JupyterHub.get("load_roles", []) if r.get("name") != "ds01-limits"]
    if not any(r.get("name") == "user" for r in roles):
        roles.append({"name": "user", "scopes": ["self"]})
    for role in roles:
        if role["name"] == "user" and "access:services!service=ds01-limits" not in role["scopes"]:
            role["scopes"] = [*role["scopes"], "access:services!service=ds01-limits"]
    roles.append({"name": "ds01-limits", "scopes": ["read:users"], "services": ["ds01-limits"]})
    config.JupyterHub.load_roles = roles

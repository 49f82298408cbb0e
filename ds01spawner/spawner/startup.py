"""Checks that make the hub refuse to start on a DS01 configuration that cannot work.

JupyterHub has no start-up hook for spawner classes, so ``jupyterhub_config.py`` calls
:func:`check_config` at its end: the hub then exits with one clear line (naming what to fix)
instead of failing at the first launch.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from ..gpus import InventoryError, make_inventory
from ..gpus.queue import GpuQueue
from ..limits.model import LimitsError
from ..services.projects_api import SETTING_DEFAULTS, SETTINGS_ENV
from ..services.settings import check_engine_settings, engine_environment, spawner_settings

log = logging.getLogger("ds01spawner")


class ConfigCheckError(SystemExit):
    """Raised from jupyterhub_config.py: JupyterHub exits with this message."""


def check_config(config: Any) -> None:
    """Refuse to start on a limits file, a start timeout or a GPU inventory that cannot work.

    A limits file must exist and parse (the message names the file, the line and the key).
    GPU inventory ``auto`` and ``none`` always start (``auto`` falls back to no GPUs and logs
    why); ``nvml`` must initialise and ``simulated`` must have a valid list.
    """
    section = spawner_settings(config)
    check_timeouts(config)
    try:
        check_engine_settings(section)
    except ValueError as e:
        raise ConfigCheckError(f"DS01: {e}") from e
    if section.get("gpu_queue_file"):
        # This hub process starts with nobody waiting: launches that waited in a previous one
        # ended with it (JupyterHub finds them without a container and marks them stopped).
        GpuQueue(section["gpu_queue_file"])
    limits_file = section.get("limits_file", "")
    if limits_file:
        from ..limits.store import limits_store

        try:
            limits_store(limits_file, log)  # this version is the last good one from now on
        except LimitsError as e:
            raise ConfigCheckError(f"DS01: the limits file cannot be used: {e}") from e
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
    return spawner_settings(config).get(name, default)


def check_timeouts(config: Any) -> None:
    """JupyterHub's ``start_timeout`` wraps the whole start, whatever the spawner does: refuse
    one that would kill launches that build their image (``image_build_timeout``), wait for a
    GPU (``gpu_queue_timeout``) and then take up to ``http_timeout`` to answer.

    Without a configured ``start_timeout`` DS01's default covers all three (+ 60 s).
    """
    start = _setting(config, "start_timeout", None)
    if start is None:
        return
    build = int(_setting(config, "image_build_timeout", 600))
    if not _setting(config, "project_images", True):
        build = 0
    queue = int(_setting(config, "gpu_queue_timeout", 0))
    if not build and not queue:
        return  # a start is JupyterHub's usual one: any start_timeout will do
    http = int(_setting(config, "http_timeout", 30))
    need = build + queue + http
    if int(start) < need:
        parts = [f"image_build_timeout = {build} s"] if build else []
        parts += [f"gpu_queue_timeout = {queue} s"] if queue else []
        parts.append(f"http_timeout = {http} s")
        raise ConfigCheckError(
            f"DS01: start_timeout = {start} s is shorter than a launch may legitimately take "
            f"({' + '.join(parts)}): the hub would kill such launches. Remove the "
            f"start_timeout setting (DS01's default is {need + 60} s) or set it to at least "
            f"{need}."
        )


def _culler_state_file(config: Any) -> str:
    from ..culler.state import state_path

    return state_path(config)


def configure_services(config: Any, port: int, admin_port: int | None = None) -> None:
    """Register the ``ds01-limits`` service (the ``check limits`` JSON API) on ``port``, the
    ``ds01-culler`` service (culler/registration.py; ``c.DS01Culler`` settings) and the
    ``ds01-admin`` service (admin view, docs/admin-view.md) on ``admin_port`` (``port + 1``).

    Call it after every change to ``DS01Spawner`` or ``DS01Culler`` settings: it replaces its
    own earlier registrations, and gives every user's token access to ``ds01-limits``.
    """

    section = spawner_settings(config)  # whichever section (Spawner, DockerSpawner, ...) set it
    env = {
        "DS01_LIMITS_FILE": section.get("limits_file", ""),
        "DS01_CONTAINER_PREFIX": section.get("prefix", "ds01"),
        "DS01_LIMITS_UNIX_GROUPS": "1" if section.get("limits_include_unix_groups") else "",
        "DS01_GPU_QUEUE_FILE": section.get("gpu_queue_file", ""),
        "DS01_CULLER_STATE_FILE": _culler_state_file(config),
        SETTINGS_ENV: json.dumps(
            {key: section[key] for key in SETTING_DEFAULTS if key in section}, default=str
        ),
    }
    client_kwargs = section.get("client_kwargs", {})
    if client_kwargs.get("base_url"):
        env["DS01_DOCKER_HOST"] = client_kwargs["base_url"]
    env.update(engine_environment(section))  # docker or swarm (manager URL, TLS files)
    # the session panel's GPU figures (session_api.py): the same inventory as the admin view
    session_env = {**env, **_inventory_environment(section)}
    _register_service(
        config,
        "ds01-limits",
        "ds01spawner.services.limits_service",
        port,
        session_env,
        False,
        # users:activity: "Keep running" in the session panel records activity (session_api.py)
        ["read:users", "read:servers", "users:activity"],
    )
    if not section.get("session_service_url"):
        # servers on the host network reach the service where the hub starts it
        config.DS01Spawner.session_service_url = f"http://127.0.0.1:{port}/services/ds01-limits/"
    # every user's token (and login) may use it: their own limits, queue, projects, images
    roles = list(config.JupyterHub.load_roles)
    if not any(r.get("name") == "user" for r in roles):
        roles.append({"name": "user", "scopes": ["self"]})
    for role in roles:
        if role["name"] == "user" and "access:services!service=ds01-limits" not in role["scopes"]:
            role["scopes"] = [*role["scopes"], "access:services!service=ds01-limits"]
    config.JupyterHub.load_roles = roles
    from ..culler.registration import register_culler

    register_culler(config, section)
    register_admin(config, env, port + 1 if admin_port is None else admin_port)


#: what ds01-admin may do at the hub: list users and their servers (with the admin flag and
#: groups), and stop servers (the retire action). Nothing else: it cannot create users, tokens
#: or servers, nor change roles.
ADMIN_SCOPES = ["list:users", "read:users", "read:servers", "delete:servers"]


def register_admin(config: Any, env: dict, port: int) -> None:
    """Add (or replace) the ``ds01-admin`` service and its role. Hub admins reach it through
    their ``admin`` role (``access:services``); no other role is given access, and the service
    checks the admin flag itself as well."""

    from ..audit import environment as audit_environment

    section = spawner_settings(config)
    admin_env = {**env, **audit_environment(section), **_inventory_environment(section)}
    _register_service(
        config, "ds01-admin", "ds01spawner.admin", port, admin_env, True, ADMIN_SCOPES
    )


def _inventory_environment(section: Any) -> dict[str, str]:
    """The environment that tells a service process the hub's GPU inventory settings."""
    return {
        "DS01_GPU_INVENTORY": str(section.get("gpu_inventory", "auto")),
        "DS01_SIMULATED_GPUS": json.dumps(list(section.get("simulated_gpus", []))),
        "DS01_SIMULATED_GPU_STATE_FILE": section.get("simulated_gpu_state_file", ""),
        "DS01_GPUS_BUSY_OUTSIDE": "1" if section.get("gpus_busy_outside_ds01", True) else "0",
    }


def _register_service(
    config: Any, name: str, module: str, port: int, env: dict, display: bool, scopes: list
) -> None:
    """Add (or replace) a managed service ``python -m module`` on 127.0.0.1:``port`` and the
    role of the same name that gives it ``scopes``."""
    import sys

    services = [s for s in config.JupyterHub.get("services", []) if s.get("name") != name]
    services.append(
        {
            "name": name,
            "url": f"http://127.0.0.1:{port}",
            "command": [sys.executable, "-m", module],
            "environment": env,
            "oauth_no_confirm": True,
            "display": display,
        }
    )
    config.JupyterHub.services = services
    roles = [r for r in config.JupyterHub.get("load_roles", []) if r.get("name") != name]
    roles.append({"name": name, "scopes": list(scopes), "services": [name]})
    config.JupyterHub.load_roles = roles

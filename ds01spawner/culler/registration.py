"""Register the ``ds01-culler`` service and its role with the hub (from configure_services).

Hub side only: this module runs in the hub process (``startup.configure_services``), never in
the culler's own process, whose import graph (``culler.__main__`` -> ``culler.service``) does
not reach it (tests/unit/test_layout.py).

The role holds only what the culler uses, each scope for one call:

=====================  =====================================================================
``list:users``          ``GET /users?state=active``: the users with running servers
``read:servers``        the ``servers`` of those user models: started, ``last_activity``, pending
``read:users:groups``   the users' groups, for their limits (as the spawner resolves them)
``delete:servers``      ``DELETE /users/{name}/servers/{server}``: the retirement
=====================  =====================================================================

No admin, no ``read:users`` (names, groups and servers are all it reads), no tokens, and no
``access:servers``: the culler asks a server for its kernels with that server's own token (the one
the hub gave it), never with its own, which the server's user could record (docs/security.md).
"""

from __future__ import annotations

import json
import sys
from typing import Any

from ..audit import environment as audit_environment
from .state import state_path

SERVICE_NAME = "ds01-culler"
SCOPES = ["list:users", "read:servers", "read:users:groups", "delete:servers"]

#: DS01Culler settings that stay with the hub (not passed to the process).
_HUB_ONLY = {"enabled"}


def _plain(name: str, value: Any) -> Any:
    try:
        json.dumps(value)
    except TypeError as e:
        raise TypeError(
            f"c.DS01Culler.{name} must be a plain value (number, text, list), not {value!r}"
        ) from e
    return value


def register_culler(config: Any, spawner: dict | None = None) -> None:
    """Add (or replace) the ``ds01-culler`` service and role in ``config``.

    The culler gets the spawner's limits file, prefix, Docker host and GPU inventory by
    environment, its own ``c.DS01Culler`` settings as JSON, and the state file's absolute path,
    which is also written back to ``c.DS01Culler.state_file`` for the hub's home page.
    ``c.DS01Culler.enabled = False`` removes it. ``spawner``: the spawner's effective settings
    (settings.spawner_settings, computed here when not given).
    """
    services = [s for s in config.JupyterHub.get("services", []) if s.get("name") != SERVICE_NAME]
    roles = [r for r in config.JupyterHub.get("load_roles", []) if r.get("name") != SERVICE_NAME]
    section = config.get("DS01Culler", {})
    if section.get("enabled", True) is False:
        config.JupyterHub.services, config.JupyterHub.load_roles = services, roles
        return
    path = state_path(config)
    config.DS01Culler.state_file = path
    from ..services.settings import engine_environment, spawner_settings  # hub side

    if spawner is None:
        spawner = spawner_settings(config)
    settings = {k: _plain(k, v) for k, v in section.items() if k not in _HUB_ONLY}
    env = {
        "DS01_CULLER_CONFIG": json.dumps(settings),
        "DS01_LIMITS_FILE": spawner.get("limits_file", ""),
        "DS01_LIMITS_UNIX_GROUPS": "1" if spawner.get("limits_include_unix_groups") else "",
        "DS01_CONTAINER_PREFIX": spawner.get("prefix", "ds01"),
        "DS01_GPU_INVENTORY": str(spawner.get("gpu_inventory", "auto")),
        "DS01_SIMULATED_GPUS": json.dumps(list(spawner.get("simulated_gpus", []))),
        "DS01_SIMULATED_GPU_STATE_FILE": spawner.get("simulated_gpu_state_file", ""),
    }
    env.update(audit_environment(spawner))
    env.update(engine_environment(spawner))  # docker or swarm (manager URL, TLS files)
    base_url = spawner.get("client_kwargs", {}).get("base_url")
    if base_url:
        env["DS01_DOCKER_HOST"] = base_url
    services.append(
        {
            "name": SERVICE_NAME,
            "command": [sys.executable, "-m", "ds01spawner.culler"],
            "environment": env,
            "display": False,
        }
    )
    roles.append({"name": SERVICE_NAME, "scopes": list(SCOPES), "services": [SERVICE_NAME]})
    config.JupyterHub.services, config.JupyterHub.load_roles = services, roles

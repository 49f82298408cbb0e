"""Checks that make the hub refuse to start on a DS01 configuration that cannot work.

JupyterHub has no start-up hook for spawner classes, so ``jupyterhub_config.py`` calls
:func:`check_config` at its end: the hub then exits with one clear line (naming what to fix)
instead of failing at the first launch.
"""

from __future__ import annotations

import logging
from typing import Any

from .gpus import InventoryError, make_inventory

log = logging.getLogger("ds01spawner")


class ConfigCheckError(SystemExit):
    """Raised from jupyterhub_config.py: JupyterHub exits with this message."""


def check_config(config: Any) -> None:
    """Refuse to start on a GPU inventory that cannot work (NVML failing, bad simulated spec).

    ``auto`` and ``none`` always start (``auto`` falls back to no GPUs and logs why).
    """
    section = config.get("DS01Spawner", {})
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

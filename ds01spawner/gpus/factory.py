"""Pick the GPU inventory the configuration asks for, and say in the log what was picked and why."""

from __future__ import annotations

import logging
from typing import Any

from .model import LOGGER_NAME, Inventory, InventoryError, NoneInventory
from .nvml import NvmlInventory
from .simulated import SimulatedInventory

INVENTORY_KINDS = ("auto", "nvml", "simulated", "none")


def make_inventory(
    kind: str,
    simulated_gpus: Any = (),
    state_file: str | None = None,
    log: Any = None,
    *,
    nvml: Any = None,
) -> Inventory:
    """The inventory of ``kind``; InventoryError (a sentence for the admin) when it cannot work.

    - ``"nvml"``: the NVIDIA driver through NVML; InventoryError when NVML does not initialise
      (the hub must refuse to start with that message).
    - ``"simulated"``: the devices of ``simulated_gpus`` (see ``simulated.py``), live state from
      ``state_file``; InventoryError for an empty or invalid list.
    - ``"none"``: no GPUs.
    - ``"auto"``: NVML when it initialises, else none.

    One info line in ``log`` says which inventory was picked and why. ``nvml`` is the pynvml
    module to use (tests pass a double); by default pynvml is imported when NVML is tried.
    """
    log = log or logging.getLogger(LOGGER_NAME)
    chosen = str(kind).strip().lower()
    if chosen not in INVENTORY_KINDS:
        raise InventoryError(
            f"Unknown GPU inventory {kind!r}: use 'auto', 'nvml', 'simulated' or 'none'."
        )
    if simulated_gpus and chosen != "simulated":
        log.warning(
            "GPU inventory: simulated_gpus is set but ignored, because the inventory is %r "
            "(set it to 'simulated' to use them).",
            chosen,
        )

    if chosen == "nvml":
        inventory: Inventory = NvmlInventory(nvml=nvml, log=log)
        log.info("GPU inventory: nvml, as configured: %s.", inventory.describe())
    elif chosen == "simulated":
        if not simulated_gpus:
            raise InventoryError(
                "The GPU inventory is 'simulated' but simulated_gpus is empty: list the GPUs "
                'to simulate, e.g. [{"name": "NVIDIA A100-SXM4-40GB", "memory_mib": 40960}], '
                "or use 'none' for no GPUs."
            )
        inventory = SimulatedInventory(simulated_gpus, state_file=state_file, log=log)
        log.info(
            "GPU inventory: simulated, as configured: %s%s.",
            inventory.describe(),
            f", state file {state_file}" if state_file else "",
        )
    elif chosen == "none":
        inventory = NoneInventory()
        log.info("GPU inventory: none, as configured: servers start without GPUs.")
    else:
        try:
            inventory = NvmlInventory(nvml=nvml, log=log)
        except InventoryError as e:
            log.info(
                "GPU inventory: none (auto: NVML is not usable on this host, so servers start "
                "without GPUs; set the inventory to 'nvml' to make this an error): %s",
                e,
            )
            return NoneInventory()
        log.info("GPU inventory: nvml (auto: NVML initialised): %s.", inventory.describe())
    return inventory

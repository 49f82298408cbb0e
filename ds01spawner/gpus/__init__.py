"""The GPUs of this host, as devices a server can be given: the inventory interface.

``make_inventory(kind, ...)`` picks an implementation: ``nvml`` (real GPUs through NVML),
``simulated`` (a GPU list from the configuration, for tests and demos), ``none``, or ``auto``.
Importing this package does not import pynvml; only an NVML inventory does.
"""

from .factory import INVENTORY_KINDS, make_inventory
from .model import Device, DeviceUsage, Inventory, InventoryError, NoneInventory

__all__ = [
    "INVENTORY_KINDS",
    "Device",
    "DeviceUsage",
    "Inventory",
    "InventoryError",
    "NoneInventory",
    "make_inventory",
]

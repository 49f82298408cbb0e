"""ds01spawner: a JupyterHub spawner that turns one shared GPU server into a fair lab.

``c.JupyterHub.spawner_class = "ds01"`` selects :class:`DS01Spawner`. The spawner (and with it
JupyterHub and docker) is imported on first use, so that ``python -m ds01spawner.gpus`` runs on
a GPU host with nvidia-ml-py alone.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .spawner.spawner import DS01Spawner

__all__ = ["DS01Spawner"]
__version__ = "0.1.0"


def __getattr__(name: str):
    if name == "DS01Spawner":
        from .spawner.spawner import DS01Spawner

        return DS01Spawner
    raise AttributeError(f"module 'ds01spawner' has no attribute {name!r}")

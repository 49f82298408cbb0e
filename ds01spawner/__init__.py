"""ds01spawner: a JupyterHub spawner that turns one shared GPU server into a fair lab.

``c.JupyterHub.spawner_class = "ds01"`` selects :class:`DS01Spawner`.
"""

from .spawner import DS01Spawner

__all__ = ["DS01Spawner"]
__version__ = "0.1.0"

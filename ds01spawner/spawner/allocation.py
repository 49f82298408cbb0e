"""``HubAllocation``: the hub-wide state of GPU allocation, one object per hub process.

It owns what every launch of the hub shares and what must be decided under one lock: the
allocation lock (choose devices and create the server, nothing else), the GPU queue, the
launches in progress (they count toward a user's limits), the servers whose removal failed
(retried at every allocation) and whether this process has swept the orphans of a hub that
died mid-spawn. The spawner holds it (``DS01Spawner.allocation``); the decisions stay pure
(``gpus.queue.plan``, ``gpus.allocator``, ``limits.usage``) and the steps in ``gpu_steps``.
"""

from __future__ import annotations

import asyncio
import threading

from ..gpus.queue import GpuQueue
from ..limits.usage import Launches


class HubAllocation:
    """The allocation lock, the GPU queue (persisted to ``queue_file``, "" for none), the
    launches in progress and the pending removals of one hub."""

    _shared: HubAllocation | None = None
    _shared_lock = threading.Lock()

    def __init__(self, queue_file: str = "") -> None:
        self.lock = asyncio.Lock()  # binds to the running loop at first use
        self.queue = GpuQueue(queue_file)
        self.launches = Launches()
        #: servers whose removal failed (engine error at retire or poll); retried at every
        #: allocation, so they cannot keep their GPUs after the engine recovers
        self.pending_removal: set[str] = set()
        self.orphans_swept = False

    @classmethod
    def shared(cls, queue_file: str = "") -> HubAllocation:
        """The hub process's one allocation state, made at first use (under a lock)."""
        if cls._shared is None:
            with cls._shared_lock:
                if cls._shared is None:
                    cls._shared = cls(queue_file)
        return cls._shared

"""``ImageWorks``: the hub-wide part of project images, one object per hub process.

It owns the image builder (its build threads, per-user slots and jobs shared by launches of the
same content), the "can this image run jupyterhub-singleuser" cache, the file-hash cache of
build contexts, the thread pool for file and short engine work of the image steps (never the
build threads) and the background tasks (pruning old images). The spawner holds it
(``ImageSteps.image_works``); the steps of one launch stay in ``image_steps``.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ..images import compat
from ..images.builder import ImageBuilder
from ..images.tarball import FileHashCache


class ImageWorks:
    """The builder (injected), the compat and hash caches, the I/O pool, background tasks."""

    _shared: ImageWorks | None = None
    _shared_lock = threading.Lock()

    def __init__(self, builder: ImageBuilder, io_threads: int = 4) -> None:
        self.builder = builder
        self.compat = compat.CompatChecker()
        self.hashes = FileHashCache()
        self.tasks: set[asyncio.Task] = set()
        self._io = ThreadPoolExecutor(io_threads, thread_name_prefix="ds01-image-io")

    @classmethod
    def shared(cls, make_builder: Callable[[], ImageBuilder]) -> ImageWorks:
        """The hub process's one ``ImageWorks``, its builder made by ``make_builder`` once."""
        if cls._shared is None:
            with cls._shared_lock:
                if cls._shared is None:
                    cls._shared = cls(make_builder())
        return cls._shared

    async def io(self, fn: Callable, *args, **kwargs) -> Any:
        """File and short engine work of the image steps, never on the build threads."""
        call = functools.partial(fn, *args, **kwargs)
        return await asyncio.get_running_loop().run_in_executor(self._io, call)

    def keep(self, task: asyncio.Task) -> None:
        """Hold a background task until it is done (asyncio keeps only weak references)."""
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

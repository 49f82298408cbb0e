"""A crash of the hub process leaves a trace: the Python stack of every thread.

``jupyterhub_config.py`` calls :func:`enable_crash_traces` with a file in the hub's state folder.
A segmentation fault, a bus error, an abort or a fatal Python error then appends the traceback of
every thread to that file (``faulthandler``), and ``SIGUSR1`` appends it without stopping the hub
(``kill -USR1 <hub pid>`` shows where a hung hub waits). The service unit in
docs/security-availability.md restarts a hub that died; servers keep running across it.
"""

from __future__ import annotations

import faulthandler
import logging
import os
import signal
import time
from typing import TextIO

log = logging.getLogger("ds01spawner")
_trace_file: list[TextIO] = []  # kept open for the life of the process (faulthandler needs it)


def enable_crash_traces(path: str) -> str:
    """Turn on faulthandler for this process, writing to ``path`` (appended, mode 0600)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    f = os.fdopen(fd, "a", buffering=1)
    f.write(f"# hub pid {os.getpid()} started {time.strftime('%Y-%m-%dT%H:%M:%S%z')}\n")
    _trace_file[:] = [f]
    faulthandler.enable(file=f, all_threads=True)
    if hasattr(signal, "SIGUSR1"):
        faulthandler.register(signal.SIGUSR1, file=f, all_threads=True, chain=False)
    log.info("Crash traces of the hub (all threads) go to %s", path)
    return path

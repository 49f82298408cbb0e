"""How DS01's Tornado services end: at once on SIGINT (the hub stops its managed services with
it) and SIGTERM, whatever signal dispositions they inherited.

A hub started in the background by a non-interactive shell (``demo.sh &``, some service units)
passes SIGINT on as *ignored*; a service that kept that waited out JupyterHub's 10 s interrupt
timeout and more, so stopping the demo took close to a minute and the hub's health check of the
half-stopped services ended in a traceback.
"""

from __future__ import annotations

import signal

from tornado import ioloop


def run_until_signalled() -> None:
    """Run the current IOLoop until SIGINT or SIGTERM, then return."""
    loop = ioloop.IOLoop.current()

    def stop(signum, frame) -> None:
        loop.add_callback_from_signal(loop.stop)

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, stop)
    loop.start()

"""Wait for a freshly started server to listen, and notice at once when it dies instead.

JupyterHub checks a new server over HTTP with exponential backoff (0.2 s doubling to 5 s), so a
server that is up after 3.3 s may be seen only at 6.2 s, and a container that exits at once is
noticed only after ``http_timeout``. Probing the TCP port every ``interval`` seconds from the
spawner fixes both: start() returns as soon as the port accepts connections, and fails within
about a second, with the container's last output, when the container stops.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable


class ServerExited(Exception):
    """The container stopped before its server listened."""

    def __init__(self, exit_code: object, output_tail: str) -> None:
        super().__init__(f"exited with code {exit_code}")
        self.exit_code = exit_code
        self.output_tail = output_tail


async def port_accepts(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except (OSError, asyncio.TimeoutError):
        return False
    writer.close()
    try:
        await writer.wait_closed()
    except OSError:
        pass
    return True


async def wait_until_listening(
    host: str,
    port: int,
    check_alive: Callable[[], Awaitable[None]],
    timeout: float,
    interval: float = 0.1,
    alive_every: float = 1.0,
) -> bool:
    """Return True once ``host:port`` accepts a connection, False after ``timeout``.

    ``check_alive`` is awaited about every ``alive_every`` seconds and raises (ServerExited)
    when the server is gone; that exception propagates.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    next_check = loop.time() + alive_every
    while loop.time() < deadline:
        if await port_accepts(host, port):
            return True
        if loop.time() >= next_check:
            await check_alive()
            next_check = loop.time() + alive_every
        await asyncio.sleep(interval)
    return False

import asyncio
import socket

import pytest

from ds01spawner.spawner.readiness import ServerExited, port_accepts, wait_until_listening


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_returns_once_the_port_listens():
    async def run():
        port = free_port()
        checks = []

        async def alive():
            checks.append(1)

        async def open_later():
            await asyncio.sleep(0.3)
            return await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", port)

        opener = asyncio.create_task(open_later())
        ok = await wait_until_listening("127.0.0.1", port, alive, timeout=5, alive_every=0.1)
        (await opener).close()
        return ok, checks

    ok, checks = asyncio.run(run())
    assert ok is True
    assert checks  # liveness was checked while waiting


def test_a_dead_server_fails_fast_with_its_output():
    async def dead():
        raise ServerExited(3, "Traceback: boom")

    with pytest.raises(ServerExited) as e:
        asyncio.run(
            wait_until_listening("127.0.0.1", free_port(), dead, timeout=30, alive_every=0.05)
        )
    assert e.value.exit_code == 3 and "boom" in e.value.output_tail


def test_gives_up_after_the_timeout():
    async def alive():
        return None

    assert asyncio.run(wait_until_listening("127.0.0.1", free_port(), alive, timeout=0.3)) is False


def test_port_accepts_is_false_for_a_closed_port():
    assert asyncio.run(port_accepts("127.0.0.1", free_port())) is False

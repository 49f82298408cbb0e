import asyncio
import pwd

import pytest

from ds01spawner.identity import IdentityError, resolve_identity
from ds01spawner.spawner.ports import PortPool
from ds01spawner.spawner.progress import ProgressLog


def test_user_without_account_gets_the_fallback():
    ident = resolve_identity("no-such-user-ds01", 1000, 100)
    assert (ident.uid, ident.gid, ident.system_account) == (1000, 100, False)
    assert ident.user_spec == "1000:100"


def test_system_account_is_used():
    pw = pwd.getpwnam("nobody")
    ident = resolve_identity("nobody", 1000, 100)
    assert (ident.uid, ident.gid, ident.system_account) == (pw.pw_uid, pw.pw_gid, True)


def test_system_accounts_can_be_ignored():
    assert resolve_identity("nobody", 1000, 100, use_system_accounts=False).uid == 1000


@pytest.mark.parametrize(
    "user,uid,gid", [("root", 1000, 100), ("x-ds01", 0, 100), ("x-ds01", 1, 0)]
)
def test_root_is_never_a_container_identity(user, uid, gid):
    with pytest.raises(IdentityError, match="never run as root"):
        resolve_identity(user, uid, gid)


def test_port_pool_never_hands_out_a_reserved_port_twice():
    pool = PortPool()
    ports = [pool.reserve() for _ in range(50)]
    assert len(set(ports)) == 50
    assert all(p in pool for p in ports)
    pool.release(ports[0])
    assert ports[0] not in pool


def test_progress_follow_gets_past_and_future_events_escaped():
    async def run():
        log = ProgressLog()
        log.emit(10, "first")
        got = []

        async def reader():
            async for event in log.follow():
                got.append(event)
                if len(got) == 3:
                    return

        task = asyncio.create_task(reader())
        await asyncio.sleep(0)
        log.emit(50, "<b>step</b>")
        log.emit(150, "done")
        await asyncio.wait_for(task, 5)
        return got

    got = asyncio.run(run())
    assert [e["progress"] for e in got] == [10, 50, 100]
    assert got[1]["html_message"] == "&lt;b&gt;step&lt;/b&gt;"
    assert got[1]["message"] == "<b>step</b>"


def test_the_docker_client_is_made_once_however_many_threads_ask(monkeypatch):
    """Finding 8 of issue 14: concurrent first uses made several clients, and the replaced
    ones were finalized while in use (a segfault of the hub)."""
    import threading
    import time
    from concurrent.futures import ThreadPoolExecutor

    import dockerspawner.dockerspawner as ds

    from ds01spawner.spawner.spawner import DS01Spawner

    made = []

    class SlowClient:
        def __init__(self, **kw):
            time.sleep(0.05)  # like APIClient(version="auto"): a request to the engine
            made.append(self)

    monkeypatch.setattr(ds.docker, "APIClient", SlowClient)
    monkeypatch.setattr(DS01Spawner, "_client", None)
    spawner = DS01Spawner.__new__(DS01Spawner)  # no hub: only the client property is used
    monkeypatch.setattr(DS01Spawner, "tls_config", {}, raising=False)
    monkeypatch.setattr(DS01Spawner, "client_kwargs", {}, raising=False)
    barrier = threading.Barrier(16)

    def get(_):
        barrier.wait()
        return DS01Spawner.client.fget(spawner)

    with ThreadPoolExecutor(16) as pool:
        clients = list(pool.map(get, range(16)))
    assert len(made) == 1 and all(c is made[0] for c in clients)

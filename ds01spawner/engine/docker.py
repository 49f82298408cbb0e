"""``DockerEngine``: the ``engine.base.ContainerEngine`` of one Docker daemon (docker-py).

One engine, so one API client, per hub process, made once under a lock (``DockerEngine.shared``):
docker-py clients made concurrently by several threads once closed each other's pooled
connections and killed the hub (issue 14, finding 8). Every call runs on the engine's thread
pool (``threads`` at a time, shared by all spawns; never on the event loop, never serialized
behind one thread); ``docker stop``, which waits up to the grace period, runs on a pool of its
own so that a wave of retirements never holds the threads that spawns and polls need.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import docker
from docker.utils import kwargs_from_env

from .base import EXITED, PENDING, RUNNING, CreateRequest, Placement, ServerRecord, ServerState
from .port_owner import PortHolder, port_holder, top_pids

#: docker-py names a local Unix socket http+docker://localhost (an ssh:// engine is
#: http+docker://ssh): only a local engine's /proc is the hub's to read
LOCAL_BASE_URL = "http+docker://localhost"


def client_kwargs(tls_config: Mapping | None, extra: Mapping | None) -> dict:
    """The API client's arguments as DockerSpawner builds them: the environment's
    (``DOCKER_HOST``...), then ``tls_config``, then ``client_kwargs``."""
    kwargs: dict = {"version": "auto"}
    if tls_config:
        kwargs["tls"] = docker.tls.TLSConfig(**tls_config)
    kwargs.update(kwargs_from_env())
    kwargs.update(extra or {})
    return kwargs


class DockerEngine:
    """One Docker daemon. ``client``: its docker-py ``APIClient``; ``threads``: the calls in
    flight at once."""

    creates_then_starts = True
    installs_identity = True

    _shared: DockerEngine | None = None
    _shared_lock = threading.Lock()

    def __init__(self, client: docker.APIClient, threads: int = 8) -> None:
        self.client = client
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="ds01-docker")
        self._stop_pool = ThreadPoolExecutor(32, thread_name_prefix="ds01-stop")

    @classmethod
    def shared(cls, factory: Callable[[], docker.APIClient], threads: int = 8) -> DockerEngine:
        """The hub process's one engine, made by ``factory`` at first use, under a lock."""
        if cls._shared is None:
            with cls._shared_lock:
                if cls._shared is None:
                    cls._shared = cls(factory(), threads)
        return cls._shared

    @property
    def local(self) -> bool:
        return str(getattr(self.client, "base_url", "")) == LOCAL_BASE_URL

    async def run(self, fn: Callable, *args, **kwargs) -> Any:
        call = functools.partial(fn, *args, **kwargs)
        return await asyncio.wrap_future(self._pool.submit(call))

    async def call(self, method: str, *args, **kwargs) -> Any:
        """One ``APIClient`` method by name, on the engine's threads (image work, and
        DockerSpawner's ``docker()`` for what of it DS01 still inherits)."""
        return await self.run(getattr(self.client, method), *args, **kwargs)

    # ---- a server -------------------------------------------------------------------------

    async def create(self, request: CreateRequest, placement: Placement) -> str:
        """The devices are in the request already (``container_spec`` put them there): a single
        engine takes the allocator's choice as it is."""
        host_config = await self.call("create_host_config", **request.host_config)
        created = await self.call(
            "create_container", host_config=host_config, **request.create_kwargs
        )
        return created["Id"]

    async def install_identity(
        self, server_id: str, install: Callable[..., Any], *args: Any
    ) -> None:
        await self.run(install, self.client, server_id, *args)

    async def start(self, server_id: str) -> None:
        await self.call("start", server_id)

    async def state(self, target: str) -> ServerState | None:
        try:
            obj = await self.call("inspect_container", target)
        except docker.errors.NotFound:
            return None
        return _state(obj)

    async def remove(self, target: str, grace: int | None = None) -> None:
        try:
            if grace is not None:
                try:
                    await asyncio.wrap_future(
                        self._stop_pool.submit(self.client.stop, target, timeout=grace)
                    )
                except docker.errors.NotFound:
                    pass
            await self.call("remove_container", target, v=True, force=True)
        except docker.errors.NotFound:
            pass

    async def list_servers(self, filters: Mapping[str, Sequence[str]]) -> list[ServerRecord]:
        found = await self.call("containers", all=True, filters=dict(filters))
        return [_record(c) for c in found]

    async def logs_tail(self, target: str, lines: int = 20) -> str:
        tail = await self.call("logs", target, tail=lines, timestamps=False)
        return tail.decode("utf-8", "replace").strip()

    async def pids(self, target: str) -> dict:
        return await self.call("top", target)

    async def port_holder(self, target: str, ip: str, port: int, probe_image: str) -> PortHolder:
        """This host's /proc (the hub runs next to the engine); ``probe_image`` is not needed."""
        pids = top_pids(await self.pids(target))
        return await asyncio.to_thread(port_holder, ip, port, pids)

    async def image(self, ref: str) -> dict | None:
        try:
            return await self.call("inspect_image", ref)
        except docker.errors.ImageNotFound:
            return None

    async def info(self) -> dict:
        return await self.call("info")


def _state(obj: Mapping) -> ServerState:
    state = obj.get("State") or {}
    if state.get("Running"):
        status = RUNNING
    elif state.get("Status") == "created":
        status = PENDING
    else:
        status = EXITED
    labels = (obj.get("Config") or {}).get("Labels") or {}
    return ServerState(
        id=obj.get("Id", ""),
        status=status,
        exit_code=state.get("ExitCode"),
        error=state.get("Error") or "",
        pid=state.get("Pid") or 0,
        devices=tuple(u for u in (labels.get("ds01.gpus") or "").split(",") if u),
    )


def _record(c: Mapping) -> ServerRecord:
    labels = c.get("Labels") or {}
    return ServerRecord(
        id=c["Id"],
        name=(c.get("Names") or ["/?"])[0].lstrip("/"),
        labels=labels,
        state=c.get("State") or "",
        created=c.get("Created", 0),
        devices=tuple(u for u in (labels.get("ds01.gpus") or "").split(",") if u),
    )

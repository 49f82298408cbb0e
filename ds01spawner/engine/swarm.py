"""``SwarmEngine``: the ``engine.base.ContainerEngine`` of a Docker Swarm (docs/scale-out.md).

A server is a **service with one task** (``swarm.service_spec``): host network of its node, pinned
to the node DS01 chose under its allocation lock (``Placement.node``), reserving ``gpu_count``
generic resources of one kind; Swarm's scheduler picks which named devices of that node, and the
devices are read back from the task (``state().devices``, ``list_servers()``), never assumed.

- ``creates_then_starts`` False: a service starts itself (``start`` is a no-op); a pending task is
  "not yet" (``state`` answers PENDING with Swarm's reason).
- ``installs_identity`` False: a service's container cannot be written to before it starts; the
  image's /etc/passwd stays (the server runs with the user's uid/gid; ``whoami`` may print
  "I have no name!"). A Swarm config mounted at /etc/passwd would work but is one more object per
  launch to create and remove, for a cosmetic gain: not done (docs/scale-out.md).
- ``local`` False: the server's /proc is its node's, so the hub's /proc check of the workspace mount
  does not apply; the spawner logs that once (``swarm_steps``). The port-owner check runs on the
  node instead (``port_holder``: a trusted helper container there, ``engine.port_owner``).
- the manager's engine API (``NodeEngines.manager()``) holds services, tasks, nodes and images
  (images are built there; ``ImageDistributor.ensure`` puts them on the chosen node before the
  service is made); a node's own engine API (``NodeEngines.client``) gives a server's processes,
  its output, and says when its container is gone after a removal.

Every blocking call runs on the engine's thread pool, never on the event loop. Failures of a
node's engine or of the image transfer are ``SwarmEngineError`` (a ``DockerException``: the
spawner's engine-error path answers the user and logs the sentence).
"""

from __future__ import annotations

import asyncio
import functools
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import docker

from ..projects.names import container_name
from ..swarm.images import ImageDistributionError, ImageDistributor
from ..swarm.nodes import ENGINE_DOWN_ERRORS, NodeEngineError, NodeEngines
from ..swarm.service_spec import SwarmSpecError, hub_service, service_name, service_spec
from ..swarm.tasks import MANAGED_LABEL, NodeInfo, ServerTask, parse_nodes, server_tasks
from .base import CreateRequest, Placement, ServerRecord, ServerState
from .port_owner import PortCheckError, PortHolder, probe_container, run_probe, top_pids
from .swarm_view import server_records, server_state

#: How long the port-owner helper container may run on a node before the check fails (closed).
PORT_CHECK_SECONDS = 15.0
#: How long ``remove`` waits, after the grace period, for the task's container to be gone.
REMOVE_SLACK_SECONDS = 10.0


class SwarmEngineError(docker.errors.DockerException):
    """A node's engine or an image transfer failed; str() is a sentence for the admin."""


class SwarmEngine:
    """A swarm, through its manager's engine API and its nodes' (``engines``); ``prefix``: the
    hub's container-name prefix (a service is a server of this hub only when its name is
    ``service_name(container_name(user, server, prefix))``)."""

    creates_then_starts = False
    installs_identity = False
    local = False

    _shared: SwarmEngine | None = None
    _shared_lock = threading.Lock()

    def __init__(
        self,
        engines: NodeEngines,
        prefix: str,
        distributor: ImageDistributor | None = None,
        threads: int = 8,
    ) -> None:
        self.engines = engines
        self.prefix = prefix
        self.distributor = distributor or ImageDistributor(engines)
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="ds01-swarm")
        self._stop_pool = ThreadPoolExecutor(32, thread_name_prefix="ds01-swarm-stop")
        # image transfers take seconds to minutes: a pool of their own, never the calls' pool
        self._image_pool = ThreadPoolExecutor(4, thread_name_prefix="ds01-swarm-images")

    @classmethod
    def shared(cls, factory: Callable[[], SwarmEngine]) -> SwarmEngine:
        """The hub process's one engine, made by ``factory`` at first use, under a lock."""
        if cls._shared is None:
            with cls._shared_lock:
                if cls._shared is None:
                    cls._shared = factory()
        return cls._shared

    @property
    def client(self) -> docker.APIClient:
        """The manager's API client: image work (inspect, tag, build) happens there."""
        try:
            return self.engines.manager()
        except NodeEngineError as e:  # an engine error to the spawner (503, kept on poll)
            raise SwarmEngineError(str(e)) from e

    async def run(self, fn: Callable, *args, **kwargs) -> Any:
        call = functools.partial(fn, *args, **kwargs)
        return await asyncio.wrap_future(self._pool.submit(call))

    async def call(self, method: str, *args, **kwargs) -> Any:
        """One manager ``APIClient`` method by name, on the engine's threads."""
        return await self.run(lambda: getattr(self.client, method)(*args, **kwargs))

    # ---- reading the swarm ----------------------------------------------------------------------

    def _accept(self, service: Mapping) -> bool:
        """A DS01 server of this hub (``service_spec.hub_service``)."""
        return hub_service(service, self.prefix)

    def _find(self, target: str) -> dict | None:
        """The service by id, service name, or the server's container name; None when gone."""
        for ref in dict.fromkeys((target, service_name(target))):
            try:
                return self.client.inspect_service(ref)
            except docker.errors.NotFound:
                continue
            except docker.errors.APIError as e:
                if e.status_code in (400, 404):  # an invalid name is no service either
                    continue
                raise
        return None

    def _server(self, target: str) -> tuple[ServerTask | None, dict[str, NodeInfo]]:
        service = self._find(target)
        if service is None:
            return None, {}
        tasks = self.client.tasks(filters={"service": service["ID"]})
        raw_nodes = self.client.nodes()
        found = server_tasks([service], tasks, raw_nodes, accept=self._accept)
        return (found[0] if found else None), parse_nodes(raw_nodes)

    def _node_client(self, s: ServerTask, nodes: Mapping[str, NodeInfo]) -> docker.APIClient:
        node = nodes.get(s.node_id)
        if node is None or not s.container_id:
            raise docker.errors.NotFound(f"server {s.service_name} has no container on a node")
        try:
            return self.engines.client(node)
        except NodeEngineError as e:
            raise SwarmEngineError(str(e)) from e

    # ---- a server -------------------------------------------------------------------------------

    async def create(self, request: CreateRequest, placement: Placement) -> str:
        """Put the image on ``placement.node`` (by id), then create the pinned service."""
        return await self.run(self._create, request, placement)

    def _create(self, request: CreateRequest, placement: Placement) -> str:
        nodes = parse_nodes(self.client.nodes())
        node = nodes.get(placement.node)
        if node is None or not node.schedulable:
            raise SwarmEngineError(f"node {placement.node!r} cannot take servers now")
        kinds = sorted({k for n in nodes.values() for k, _v in n.named})
        by_value = {v: k for k, v in node.named}
        gpu_kind = by_value.get(placement.gpu_uuids[0], "") if placement.gpu_uuids else ""
        if placement.gpu_count and not gpu_kind:
            raise SwarmEngineError(f"node {node.name} does not advertise {placement.gpu_uuids}")
        try:
            image_id = self.distributor.ensure_id(str(request.create_kwargs["image"]), node)
        except ImageDistributionError as e:
            raise SwarmEngineError(str(e)) from e
        # the service names the image by id: a worker then never pulls it by name (moby skips
        # the pull of an id), whatever DOCKER_SERVICE_PREFER_OFFLINE_IMAGE says on that node
        kwargs = service_spec(
            {**request.create_kwargs, "image": image_id},
            request.host_config,
            node_id=node.id,
            gpu_kind=gpu_kind or "NVIDIA-GPU",
            gpu_count=placement.gpu_count,
            void_kinds=kinds,
            api_version=str(self.client.api_version),
        )
        return str(self.client.create_service(**kwargs)["ID"])

    async def spread_image(self, image: str) -> dict[str, float | Exception]:
        """Put ``image`` on every node that can take servers and lacks it, at once (a launch
        does this before the hub's allocation lock, so that a long transfer never holds up
        other launches; under the lock ``create``'s ``ensure`` is then a presence check).
        Node name -> seconds spent (0.0: already there) or the error."""
        nodes = await self.run(lambda: parse_nodes(self.client.nodes()))
        targets = [n for n in nodes.values() if n.schedulable]
        loop = asyncio.get_running_loop()
        results = await asyncio.gather(
            *(
                loop.run_in_executor(self._image_pool, self.distributor.ensure, image, n)
                for n in targets
            ),
            return_exceptions=True,
        )
        return {n.name: r for n, r in zip(targets, results, strict=True)}

    async def install_identity(
        self, server_id: str, install: Callable[..., Any], *args: Any
    ) -> None:
        """Not on a swarm (``installs_identity`` is False): the spawner never calls it."""
        return None

    async def start(self, server_id: str) -> None:
        """A service starts itself."""
        return None

    async def state(self, target: str) -> ServerState | None:
        s, nodes = await self.run(self._server, target)
        return None if s is None else server_state(s, nodes)

    async def remove(self, target: str, grace: int | None = None) -> None:
        """Remove the service and wait (on a pool of its own) until its container has stopped
        on its node, so that its devices are free when this returns. The stop grace is the
        service's own (``stop_grace_seconds`` at create); ``grace`` bounds the wait."""
        await asyncio.wrap_future(self._stop_pool.submit(self._remove, target, grace))

    def _remove(self, target: str, grace: int | None) -> None:
        s, nodes = self._server(target)
        service = s.service_id if s is not None else (self._find(target) or {}).get("ID")
        if not service:
            return
        try:
            self.client.remove_service(service)
        except docker.errors.NotFound:
            return
        node = nodes.get(s.node_id) if s is not None else None
        if s is None or node is None or not node.ready or not s.container_id:
            return  # nothing runs, or its node is down: Swarm removes it when the node is back
        deadline = time.monotonic() + (grace or 0) + REMOVE_SLACK_SECONDS
        try:
            client = self.engines.client(node)
            while time.monotonic() < deadline:
                try:
                    if not client.inspect_container(s.container_id)["State"].get("Running"):
                        return
                except docker.errors.NotFound:
                    return
                time.sleep(0.2)
        except (NodeEngineError, *ENGINE_DOWN_ERRORS):
            return  # the node's engine is gone: so is what it ran

    async def list_servers(self, filters: Mapping[str, Sequence[str]]) -> list[ServerRecord]:
        """Every DS01 server of this hub on the swarm (``filters``' label/name rules are the
        single engine's; here a server is a managed service named as the hub names it)."""
        return await self.run(self._list)

    def _list(self) -> list[ServerRecord]:
        services = self.client.services(filters={"label": f"{MANAGED_LABEL}=true"})
        tasks = self.client.tasks()
        raw_nodes = self.client.nodes()
        found = server_tasks(services, tasks, raw_nodes, accept=self._accept)
        names, created = {}, {}
        for service in services:
            labels = (service.get("Spec") or {}).get("Labels") or {}
            sid = str(service.get("ID", ""))
            names[sid] = container_name(
                str(labels.get("ds01.user", "")), str(labels.get("ds01.server", "")), self.prefix
            )
            created[sid] = str(service.get("CreatedAt", ""))
        return server_records(found, parse_nodes(raw_nodes), names, created)

    async def nodes(self) -> dict[str, NodeInfo]:
        """The swarm's nodes by id."""
        return await self.run(self.engines.nodes)

    async def logs_tail(self, target: str, lines: int = 20) -> str:
        return await self.run(self._logs_tail, target, lines)

    def _logs_tail(self, target: str, lines: int) -> str:
        s, nodes = self._server(target)
        if s is None:
            raise docker.errors.NotFound(f"no server {target}")
        try:
            tail = self._node_client(s, nodes).logs(s.container_id, tail=lines, timestamps=False)
        except ENGINE_DOWN_ERRORS as e:
            raise SwarmEngineError(f"node {s.node_name} does not answer: {e}") from e
        return tail.decode("utf-8", "replace").strip()

    async def pids(self, target: str) -> dict:
        return await self.run(self._pids, target)

    def _pids(self, target: str) -> dict:
        s, nodes = self._server(target)
        if s is None:
            raise docker.errors.NotFound(f"no server {target}")
        try:
            return self._node_client(s, nodes).top(s.container_id)
        except ENGINE_DOWN_ERRORS as e:
            raise SwarmEngineError(f"node {s.node_name} does not answer: {e}") from e

    async def port_holder(self, target: str, ip: str, port: int, probe_image: str) -> PortHolder:
        """The port-owner check on the server's node: ``probe_image`` (the hub's base image) is
        resolved to its id on the manager, put on the node by id, and run there as the helper
        (``port_owner.probe_container``) with the pids the node's engine reports (``top``)."""
        return await self.run(self._port_holder, target, ip, port, probe_image)

    def _port_holder(self, target: str, ip: str, port: int, probe_image: str) -> PortHolder:
        if not probe_image or probe_image.startswith(f"{self.prefix}-"):  # a user's build: never
            raise PortCheckError(f"the port check runs the hub's base image, not {probe_image!r}")
        deadline = time.monotonic() + PORT_CHECK_SECONDS / 2
        s, nodes = self._server(target)
        while s is None or nodes.get(s.node_id) is None or not s.container_id:
            if time.monotonic() > deadline:  # something answered before the server existed
                raise PortCheckError(f"server {target} has no container on a node yet")
            time.sleep(0.25)
            s, nodes = self._server(target)
        node = nodes[s.node_id]
        try:
            client = self.engines.client(node)
            pids = top_pids(client.top(s.container_id))
            if not pids:
                raise PortCheckError(f"node {node.name}: the server's container has no processes")
            image_id = str(self.client.inspect_image(probe_image)["Id"])
            self.distributor.ensure(image_id, node)
            kwargs = probe_container(image_id, self.prefix, ip, port, pids)
            return run_probe(client, kwargs, node.name, PORT_CHECK_SECONDS)
        except (NodeEngineError, ImageDistributionError, *ENGINE_DOWN_ERRORS) as e:
            raise PortCheckError(f"node {node.name}: {e}") from e

    async def image(self, ref: str) -> dict | None:
        try:
            return await self.call("inspect_image", ref)
        except docker.errors.ImageNotFound:
            return None

    async def info(self) -> dict:
        return await self.call("info")


__all__ = ["SwarmEngine", "SwarmEngineError", "SwarmSpecError"]

"""The swarm as the services see it (the culler, ``ds01-limits``, ``ds01-admin``).

:class:`SwarmServiceEngine` has the methods of :class:`.services.ServiceEngine`, and answers in
the same shapes, so the code above it (the culler's cycle, the admin map, the limits' usage)
runs unchanged on a swarm:

- ``containers(filters)``: one ``docker ps`` entry per DS01 server, built from the manager's
  services, tasks and nodes (:func:`ds01spawner.swarm.tasks.server_tasks`): ``Id`` is the
  task's container id on its node, ``Names`` the hub's container name of the server
  (``container_name(ds01.user, ds01.server, prefix)``: service labels are set by the hub alone,
  an image's labels never reach them), ``Labels`` the service's labels plus ``ds01.gpus`` (the
  devices Swarm assigned, read back from the task) and ``ds01.node`` (the node's DS01 name),
  ``State`` in Docker's words (running; starting or pending -> created; stopping -> removing;
  exited; a server on a node that is down or gone -> dead: it holds no device);
- ``inspect(id)`` and ``stats(id)``: asked of **the node that runs the container**, through its
  engine API (:class:`ds01spawner.swarm.nodes.NodeEngines`); the inspect record gets the same
  two labels, its ``State.Pid`` cleared (a PID on another host: the culler then reads CPU from
  the node's ``stats``, never a local cgroup) and the node's address as the network address
  (where a server bound to all interfaces is reached).

A node whose engine does not answer raises :class:`NodeUnavailable` (a Docker error: the
culler counts the signal as unknown and keeps the server) and is logged **once per outage**
(a warning, then an info line when it answers again); for ``retry_after`` seconds after a
failure its calls fail at once instead of waiting for a timeout each, then it is asked again.

May import: docker-py, ``swarm/`` (nodes, tasks) and ``projects.names``; nothing of the spawner.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import docker

from ..gpus.table import EQUIVALENTS_LABEL
from ..projects.names import container_name
from ..swarm.gpu_metrics import MetricsReader
from ..swarm.inventory import SwarmInventory, kind_share
from ..swarm.nodes import ENGINE_DOWN_ERRORS, NodeEngineError, NodeEngines
from ..swarm.service_spec import GPU_LABEL, NODE_LABEL, hub_service
from ..swarm.tasks import DOCKER_WORDS, NodeInfo, ServerTask, epoch, parse_nodes, server_tasks

#: ServerTask.state -> the ``docker ps`` State the table code reads.


class NodeUnavailable(docker.errors.DockerException):
    """A node's engine that does not answer (or cannot be used); str() names the node."""


def listing(server: ServerTask, prefix: str, created: float = 0.0) -> dict:
    """One server as a ``docker ps`` entry (pure; see the module docstring)."""
    labels = dict(server.labels)
    labels[GPU_LABEL] = ",".join(value for _kind, value in server.devices)
    labels[NODE_LABEL] = server.node_name
    try:
        equivalents = float(labels.get(EQUIVALENTS_LABEL) or 0)
    except ValueError:
        equivalents = 0.0
    if not equivalents and (server.devices or server.reserved):  # set before Swarm chose
        held = [kind for kind, _value in server.devices] or [
            kind for kind, n in server.reserved.items() for _ in range(n)
        ]
        labels[EQUIVALENTS_LABEL] = str(round(sum(kind_share(k) for k in held), 3))
    return {
        "Id": server.container_id or f"task-{server.task_id or server.service_id}",
        "Names": ["/" + container_name(server.user, server.server, prefix)],
        "Labels": labels,
        "State": DOCKER_WORDS.get(server.state, "dead"),
        "Status": server.reason,
        "Created": created,
    }


def matches(entry: Mapping, filters: Mapping[str, Any]) -> bool:
    """``docker ps`` filters ``label`` (``k`` or ``k=v``) and ``name`` (a regex), on an entry."""
    labels = entry.get("Labels") or {}
    names = entry.get("Names") or []

    def each(value: Any) -> list[str]:
        return [value] if isinstance(value, str) else list(value or [])

    for want in each(filters.get("label")):
        key, sep, value = want.partition("=")
        if key not in labels or (sep and labels[key] != value):
            return False
    for pattern in each(filters.get("name")):
        if not any(re.search(pattern, n) or re.search(pattern, n.lstrip("/")) for n in names):
            return False
    return True


def node_view(inspect: dict, server: ServerTask, node: NodeInfo | None) -> dict:
    """A node's ``inspect_container`` record as the culler reads it on a single engine."""
    out = dict(inspect)
    config = dict(out.get("Config") or {})
    labels = dict(config.get("Labels") or {})
    labels[GPU_LABEL] = ",".join(value for _kind, value in server.devices)
    labels[NODE_LABEL] = server.node_name
    config["Labels"] = labels
    out["Config"] = config
    out["State"] = {**(out.get("State") or {}), "Pid": 0}
    if node is not None and node.addr:
        settings = dict(out.get("NetworkSettings") or {})
        settings["Networks"] = {"host": {"IPAddress": node.addr}}
        out["NetworkSettings"] = settings
    return out


class SwarmServiceEngine:
    """The services' engine on a swarm (see the module docstring). ``calls`` counts API calls."""

    def __init__(
        self,
        engines: NodeEngines,
        prefix: str = "ds01",
        log: logging.Logger | None = None,
        retry_after: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.engines = engines
        self.prefix = prefix
        self.log = log or logging.getLogger("ds01spawner.swarm")
        self.retry_after = retry_after
        self.clock = clock
        self.calls = 0
        self._lock = threading.Lock()
        self._servers: dict[str, ServerTask] = {}  # by listing Id, from the last containers()
        self._nodes: dict[str, NodeInfo] = {}
        self._down: dict[str, float] = {}  # node id -> when it last failed
        self._created: dict[str, float] = {}  # service id -> created (Unix time)

    # ---- the manager -----------------------------------------------------------------------------

    def servers(self) -> list[ServerTask]:
        """Every DS01 server of the swarm, with its task's state, node and devices."""
        try:
            api = self.engines.manager()
            self.calls += 3
            services = api.services(filters={"label": "ds01.managed=true"})
            tasks = api.tasks()
            nodes = api.nodes()
        except NodeEngineError as e:
            raise NodeUnavailable(str(e)) from e
        found = server_tasks(services, tasks, nodes, accept=lambda sv: hub_service(sv, self.prefix))
        with self._lock:
            self._nodes = parse_nodes(nodes)
            self._servers = {listing(s, self.prefix)["Id"]: s for s in found}
            self._created = {s["ID"]: epoch(s.get("CreatedAt", "")) for s in services}
        return found

    def nodes(self) -> dict[str, NodeInfo]:
        """The nodes as of the last ``containers``/``servers`` call (asked now when none yet)."""
        with self._lock:
            if self._nodes:
                return dict(self._nodes)
        self.calls += 1
        return self.engines.nodes()

    def containers(self, filters: dict) -> list[dict]:
        """``docker ps -a`` with ``filters``: the swarm's DS01 servers (module docstring)."""
        out = []
        for s in self.servers():
            entry = listing(s, self.prefix, self._created.get(s.service_id, 0.0))
            if matches(entry, filters):
                out.append(entry)
        return out

    # ---- the nodes -------------------------------------------------------------------------------

    def _where(self, container_id: str) -> tuple[ServerTask, NodeInfo | None]:
        with self._lock:
            server = self._servers.get(container_id)
        if server is None:  # not seen yet: list again
            self.servers()
            with self._lock:
                server = self._servers.get(container_id)
        if server is None:
            raise docker.errors.NotFound(f"no DS01 server has container {container_id}")
        with self._lock:
            return server, self._nodes.get(server.node_id)

    def _on_node(self, container_id: str, call: Callable[[docker.APIClient], Any]) -> Any:
        server, node = self._where(container_id)
        if node is None or not server.container_id:
            raise NodeUnavailable(
                f"the server {server.service_name} has no container on a node now ({server.state})"
            )
        failed = self._down.get(node.id)
        if failed is not None and self.clock() - failed < self.retry_after:
            raise NodeUnavailable(f"node {node.name}'s engine did not answer; retried later")
        try:
            self.calls += 1
            result = call(self.engines.client(node))
        except docker.errors.NotFound:
            self._node_answers(node)  # it answered: the container is gone
            raise
        except (NodeEngineError, *ENGINE_DOWN_ERRORS) as e:
            self._node_failed(node, e)
            raise NodeUnavailable(f"node {node.name}'s engine does not answer: {e}") from e
        self._node_answers(node)
        return result

    def _node_failed(self, node: NodeInfo, error: Exception) -> None:
        with self._lock:
            first = node.id not in self._down
            self._down[node.id] = self.clock()
        if first:
            self.log.warning(
                "Node %s's engine (%s) does not answer: %s; the signals of its servers are "
                "unknown (they are kept), retried every %.0f s",
                node.name,
                node.engine,
                error,
                self.retry_after,
            )

    def _node_answers(self, node: NodeInfo) -> None:
        with self._lock:
            was_down = self._down.pop(node.id, None) is not None
        if was_down:
            self.log.info("Node %s's engine answers again", node.name)

    def inspect(self, container_id: str) -> dict:
        server, node = self._where(container_id)
        record = self._on_node(container_id, lambda api: api.inspect_container(container_id))
        return node_view(record, server, node)

    def stats(self, container_id: str) -> dict:
        """One-shot stats from the node that runs the container."""
        return self._on_node(
            container_id, lambda api: api.stats(container_id, stream=False, one_shot=True)
        )

    def inventory(self) -> SwarmInventory:
        """The swarm's devices (from the nodes this engine lists) as a GPU inventory, their
        utilization from each node's dcgm-exporter (``swarm.gpu_metrics``)."""
        return SwarmInventory(self.nodes, MetricsReader(), log=self.log)

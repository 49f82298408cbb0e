"""The swarm as DS01 sees it: nodes, servers and devices, parsed from the Docker API's plain dicts.

Inputs are what docker-py's ``APIClient.nodes()``, ``services()`` and ``tasks()`` return (lists of
dicts in the Engine API's shape); nothing here calls Docker. The allocation table is read back from
each task's assigned generic resources (``GenericResources`` in what dockerd 20.10 returns,
``AssignedGenericResources`` in the API reference; both are read): Swarm's scheduler picked the
devices, and the tasks are the only source of truth, so a hub restart rebuilds the same table.

Device states, in DS01's words (docs/scale-out.md):

- a device is **held** by a server whose task is starting, running or stopping (Swarm shuts it
  down: its desired state is no longer running) on a node that is up;
- a server on a node that is down (or gone from the swarm) is **gone**, and holds nothing: its
  node cannot run anything until it comes back, when Swarm shuts the task down;
- a **pending** server holds no named device yet, but reserves ``count`` devices of its kind on the
  node it is pinned to, so :func:`free_counts` does not offer them twice.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

ADDR_LABEL = "ds01.addr"
ENGINE_LABEL = "ds01.engine"
NAME_LABEL = "ds01.name"
MANAGED_LABEL = "ds01.managed"

_PENDING = frozenset({"new", "allocated", "pending"})
_STARTING = frozenset({"assigned", "accepted", "preparing", "ready", "starting"})
_EXITED = frozenset({"complete", "failed", "shutdown", "rejected"})
_GONE = frozenset({"orphaned", "remove"})


@dataclass(frozen=True)
class NodeInfo:
    """One swarm node, with what DS01 needs of it."""

    id: str
    name: str  # label ds01.name, else the node's Spec.Name, else its hostname
    hostname: str
    state: str  # "ready", "down", "unknown", "disconnected"
    availability: str  # "active", "pause", "drain"
    role: str  # "manager" or "worker"
    addr: str  # label ds01.addr: where the hub reaches this node's servers ("" when unset)
    engine: str  # label ds01.engine: the node's engine API URL ("" when unset)
    labels: Mapping[str, str] = field(default_factory=dict)
    named: tuple[tuple[str, str], ...] = ()  # advertised (kind, value), e.g. ("NVIDIA-GPU", uuid)
    discrete: Mapping[str, int] = field(default_factory=dict)  # advertised kind -> count

    @property
    def ready(self) -> bool:
        return self.state == "ready"

    @property
    def lost(self) -> bool:
        """Whether the manager gave the node up ("down"). "unknown" (every node, for a moment,
        after a manager restart or a leadership change) and "disconnected" (a network blip) are
        not lost: their servers keep their last state until the node is down or answers again."""
        return self.state == "down"

    @property
    def schedulable(self) -> bool:
        """Whether DS01 may place a server here: up, active, and reachable (ds01.addr set)."""
        return self.ready and self.availability == "active" and bool(self.addr)


@dataclass(frozen=True)
class ServerTask:
    """One DS01 server (a one-task service) and where its task stands."""

    service_id: str
    service_name: str
    labels: Mapping[str, str]  # the service's labels (ds01.user, ds01.project, ...)
    state: str  # "pending", "starting", "running", "stopping", "exited", "gone"
    reason: str  # why (pending: "no suitable node (insufficient resources on 1 node)"), or ""
    exit_code: int | None
    node_id: str  # "" while pending
    node_name: str
    addr: str  # the node's ds01.addr
    devices: tuple[tuple[str, str], ...]  # assigned (kind, value)
    container_id: str
    task_id: str
    reserved: Mapping[str, int] = field(default_factory=dict)  # requested kind -> count
    pinned_node: str = ""  # node id of the placement constraint

    @property
    def user(self) -> str:
        return str(self.labels.get("ds01.user", ""))

    @property
    def server(self) -> str:
        return str(self.labels.get("ds01.server", ""))

    @property
    def holds_devices(self) -> bool:
        return self.state in ("starting", "running", "stopping")


@dataclass(frozen=True)
class ClusterDevice:
    """A device some node advertises."""

    node_id: str
    node_name: str
    kind: str  # e.g. "NVIDIA-GPU" or "NVIDIA-MIG-3G-20GB"
    uuid: str


def generic_resources(resources: Iterable[Mapping] | None) -> tuple[list, dict]:
    """``[{"NamedResourceSpec": {...}}, {"DiscreteResourceSpec": {...}}]`` ->
    ``([(kind, value), ...], {kind: count})``; anything else is skipped."""
    named: list[tuple[str, str]] = []
    discrete: dict[str, int] = {}
    for item in resources or []:
        if not isinstance(item, Mapping):
            continue
        spec = item.get("NamedResourceSpec")
        if isinstance(spec, Mapping) and spec.get("Kind") and spec.get("Value"):
            named.append((str(spec["Kind"]), str(spec["Value"])))
        spec = item.get("DiscreteResourceSpec")
        if isinstance(spec, Mapping) and spec.get("Kind"):
            try:
                discrete[str(spec["Kind"])] = discrete.get(str(spec["Kind"]), 0) + int(
                    spec.get("Value", 0)
                )
            except (TypeError, ValueError):
                continue
    return named, discrete


def parse_node(node: Mapping[str, Any]) -> NodeInfo:
    """One entry of ``APIClient.nodes()``."""
    spec = node.get("Spec") or {}
    description = node.get("Description") or {}
    status = node.get("Status") or {}
    labels = dict(spec.get("Labels") or {})
    hostname = str(description.get("Hostname") or "")
    named, discrete = generic_resources(
        (description.get("Resources") or {}).get("GenericResources")
    )
    return NodeInfo(
        id=str(node.get("ID", "")),
        name=str(labels.get(NAME_LABEL) or spec.get("Name") or hostname or node.get("ID", "")),
        hostname=hostname,
        state=str(status.get("State") or "unknown"),
        availability=str(spec.get("Availability") or "active"),
        role=str(spec.get("Role") or "worker"),
        addr=str(labels.get(ADDR_LABEL, "")),
        engine=str(labels.get(ENGINE_LABEL, "")),
        labels=labels,
        named=tuple(sorted(named)),
        discrete=discrete,
    )


def parse_nodes(nodes: Iterable[Mapping[str, Any]]) -> dict[str, NodeInfo]:
    """``APIClient.nodes()`` -> nodes by id."""
    parsed = (parse_node(n) for n in nodes)
    return {n.id: n for n in parsed if n.id}


def cluster_devices(nodes: Iterable[Mapping[str, Any]]) -> list[ClusterDevice]:
    """Every named device every node advertises (down nodes included), by node name, kind, value."""
    devices = [
        ClusterDevice(n.id, n.name, kind, value)
        for n in parse_nodes(nodes).values()
        for kind, value in n.named
    ]
    return sorted(devices, key=lambda d: (d.node_name, d.node_id, d.kind, d.uuid))


def cluster_kinds(nodes: Iterable[Mapping[str, Any]]) -> list[str]:
    """The generic-resource kinds the cluster advertises (for ``service_spec(void_kinds=...)``)."""
    return sorted({d.kind for d in cluster_devices(nodes)})


def _pinned_node(task_spec: Mapping) -> str:
    for constraint in (task_spec.get("Placement") or {}).get("Constraints") or []:
        key, sep, value = str(constraint).replace(" ", "").partition("==")
        if sep and key == "node.id":
            return value
    return ""


def _latest(tasks: Iterable[Mapping]) -> dict[str, Mapping]:
    """The newest task of each service (a one-task service normally has one)."""
    by_service: dict[str, Mapping] = {}
    for t in tasks:
        sid = str(t.get("ServiceID", ""))
        key = ((t.get("Version") or {}).get("Index", 0), str(t.get("CreatedAt", "")))
        old = by_service.get(sid)
        if old is None or key >= (
            (old.get("Version") or {}).get("Index", 0),
            str(old.get("CreatedAt", "")),
        ):
            by_service[sid] = t
    return by_service


def _task_state(task: Mapping, node: NodeInfo | None) -> tuple[str, str, int | None]:
    status = task.get("Status") or {}
    raw = str(status.get("State") or "new")
    reason = str(status.get("Err") or "")
    exit_code = (status.get("ContainerStatus") or {}).get("ExitCode")
    if raw in _GONE:
        return "gone", reason or f"the task is {raw}", None
    if raw in _EXITED:
        code = int(exit_code) if isinstance(exit_code, int) else None
        return "exited", reason or str(status.get("Message") or ""), code
    if task.get("NodeID") and (node is None or node.lost):
        where = f"node {node.name} is {node.state}" if node else "its node left the swarm"
        return "gone", where, None
    desired = str(task.get("DesiredState") or "running")
    if desired not in ("running", "ready", "accepted") and (raw in _STARTING or raw == "running"):
        return "stopping", f"Swarm is shutting the task down (desired state {desired})", None
    if raw in _PENDING:
        return "pending", reason or str(status.get("Message") or ""), None
    if raw in _STARTING:
        return "starting", "", None
    if raw == "running":
        return "running", "", None
    return "pending", f"unknown task state {raw}", None


def server_tasks(
    services: Iterable[Mapping[str, Any]],
    tasks: Iterable[Mapping[str, Any]],
    nodes: Iterable[Mapping[str, Any]],
    accept: Callable[[Mapping[str, Any]], bool] | None = None,
) -> list[ServerTask]:
    """One record per DS01 service (label ``ds01.managed=true``, and ``accept(service)`` if
    given, e.g. the hub's name check): its newest task's state, node, devices and container.

    A service without any task yet is pending ("no task yet").
    """
    by_node = parse_nodes(nodes)
    latest = _latest(tasks)
    out = []
    for service in services:
        spec = service.get("Spec") or {}
        labels = dict(spec.get("Labels") or {})
        if labels.get(MANAGED_LABEL) != "true" or (accept is not None and not accept(service)):
            continue
        sid = str(service.get("ID", ""))
        task = latest.get(sid) or {}
        template = task.get("Spec") or spec.get("TaskTemplate") or {}
        reservations = (template.get("Resources") or {}).get("Reservations") or {}
        _, reserved = generic_resources(reservations.get("GenericResources"))
        node = by_node.get(str(task.get("NodeID") or ""))
        if task:
            state, reason, exit_code = _task_state(task, node)
        else:
            state, reason, exit_code = "pending", "no task yet", None
        pinned = _pinned_node(template)
        if state == "pending" and pinned and (pinned not in by_node or by_node[pinned].lost):
            # pinned to a node that is down or gone: it can never start
            where = by_node[pinned].name if pinned in by_node else pinned
            state, reason = "gone", f"node {where} is down or left the swarm"
        # the engine returns "GenericResources" (Go's swarm.Task field); the API reference
        # names it "AssignedGenericResources": read either
        assigned = task.get("GenericResources") or task.get("AssignedGenericResources")
        named, _ = generic_resources(assigned)
        container = ((task.get("Status") or {}).get("ContainerStatus") or {}).get("ContainerID")
        out.append(
            ServerTask(
                service_id=sid,
                service_name=str(spec.get("Name", "")),
                labels=labels,
                state=state,
                reason=reason,
                exit_code=exit_code,
                node_id=str(task.get("NodeID") or ""),
                node_name=node.name if node else "",
                addr=node.addr if node else "",
                devices=tuple(sorted(named)),
                container_id=str(container or ""),
                task_id=str(task.get("ID", "")),
                reserved=reserved,
                pinned_node=pinned,
            )
        )
    return sorted(out, key=lambda s: s.service_name)


def allocation_table(
    servers: Iterable[ServerTask], nodes: Iterable[Mapping[str, Any]]
) -> dict[tuple[str, str], ServerTask]:
    """``(node id, device value) -> server`` for every device a starting or running server holds.

    ``servers`` is :func:`server_tasks`' output. A device named by two tasks (Swarm never assigns
    one twice; only a bug could) is shown as held by the first in service-name order.
    """
    known = parse_nodes(nodes)
    table: dict[tuple[str, str], ServerTask] = {}
    for s in sorted(servers, key=lambda s: s.service_name):
        if s.holds_devices and s.node_id in known:
            for _kind, value in s.devices:
                table.setdefault((s.node_id, value), s)
    return table


def free_devices(
    nodes: Iterable[Mapping[str, Any]], servers: Iterable[ServerTask]
) -> list[ClusterDevice]:
    """Devices on schedulable nodes that no server holds (what the admin map shows as free)."""
    nodes = list(nodes)
    by_node = parse_nodes(nodes)
    held = allocation_table(servers, nodes)
    return [
        d
        for d in cluster_devices(nodes)
        if by_node[d.node_id].schedulable and (d.node_id, d.uuid) not in held
    ]


def free_counts(
    nodes: Iterable[Mapping[str, Any]], servers: Iterable[ServerTask]
) -> dict[tuple[str, str], int]:
    """``(node id, kind) -> devices DS01 may still ask for`` on each schedulable node (0 for a
    kind the node advertises but has none free of).

    Free devices, less what pending servers pinned to that node reserve: Swarm will give them
    devices there first, so offering those again would leave a launch pending. DS01 calls this
    under its allocation lock and picks a node with ``count`` free of the kind.
    """
    nodes, servers = list(nodes), list(servers)
    counts: dict[tuple[str, str], int] = {
        (n.id, kind): 0 for n in parse_nodes(nodes).values() if n.schedulable for kind, _ in n.named
    }
    for d in free_devices(nodes, servers):
        counts[(d.node_id, d.kind)] = counts.get((d.node_id, d.kind), 0) + 1
    for s in servers:
        if s.state == "pending":
            for kind, n in s.reserved.items():
                key = (s.pinned_node, kind)
                if key in counts:
                    counts[key] = max(0, counts[key] - n)
    return counts


#: ServerTask.state -> the ``docker ps`` state the table reads (gpus.table.HOLDING_STATES hold)
DOCKER_WORDS = {
    "pending": "created",
    "starting": "created",
    "running": "running",
    "stopping": "removing",
    "exited": "exited",
    "gone": "dead",
}


def epoch(timestamp: str) -> float:
    """Swarm's ``CreatedAt`` (RFC 3339 with nanoseconds) as epoch seconds (0.0 when unreadable)."""
    text = (timestamp or "").strip()
    if not text:
        return 0.0
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    head, dot, rest = text.partition(".")
    if dot:  # at most microseconds for fromisoformat
        digits = "".join(c for c in rest if c.isdigit())
        zone = rest[len(digits) :]
        text = f"{head}.{digits[:6]}{zone}"
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        return 0.0

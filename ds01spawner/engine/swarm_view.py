"""Pure parts of the Swarm engine: the swarm's services, tasks and nodes as the spawner's records.

``engine.swarm.SwarmEngine`` reads ``services()``, ``tasks()`` and ``nodes()`` from the manager and
hands them here (``swarm.tasks.server_tasks`` parses them); nothing here calls Docker.

- :func:`server_records`: the allocation table's rows (``ServerRecord``), in the ``docker ps``
  words the pure table code reads. A server's ``ds01.gpus`` label is what its task was **assigned**
  (read back from the task, never assumed); a **pending** server, which Swarm has not given named
  devices yet, is shown holding ``count`` free devices of its kind on the node it is pinned to
  (sorted, not held by anyone else): they are the devices it will get or equivalents of them, and
  counting them keeps a storm of launches from being offered the same free device twice.
- :func:`server_state`: one server's ``ServerState`` (pending with Swarm's reason, running,
  exited with the code, or exited with "node ... is down" when its node is gone).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from ..gpus.table import GPU_LABEL
from ..swarm.tasks import DOCKER_WORDS, NodeInfo, ServerTask, epoch
from .base import EXITED, PENDING, RUNNING, ServerRecord, ServerState


def reserved_devices(
    servers: Iterable[ServerTask], nodes: Mapping[str, NodeInfo]
) -> dict[str, tuple[str, ...]]:
    """``service id -> devices shown as held`` for each pending server (see the module doc)."""
    servers = sorted(servers, key=lambda s: s.service_name)
    taken = {(s.node_id, v) for s in servers if s.holds_devices for _k, v in s.devices}
    shown: dict[str, tuple[str, ...]] = {}
    for s in servers:
        if s.state != "pending" or s.pinned_node not in nodes:
            continue
        node = nodes[s.pinned_node]
        picked: list[str] = []
        for kind, count in sorted(s.reserved.items()):
            free = [v for k, v in node.named if k == kind and (node.id, v) not in taken]
            for value in free[:count]:
                taken.add((node.id, value))
                picked.append(value)
        shown[s.service_id] = tuple(picked)
    return shown


def server_records(
    servers: Iterable[ServerTask],
    nodes: Mapping[str, NodeInfo],
    names: Mapping[str, str],
    created: Mapping[str, str],
) -> list[ServerRecord]:
    """The table's rows. ``names``: service id -> the hub's container name of that server (the
    name ``gpus.table.is_server_container`` checks); ``created``: service id -> ``CreatedAt``."""
    servers = list(servers)
    reserved = reserved_devices(servers, nodes)
    out = []
    for s in servers:
        assigned = tuple(v for _k, v in s.devices) if s.holds_devices else ()
        shown = assigned or reserved.get(s.service_id, ())
        labels = {**s.labels, GPU_LABEL: ",".join(shown)}
        node = nodes.get(s.node_id or s.pinned_node)
        out.append(
            ServerRecord(
                id=s.service_id,
                name=names.get(s.service_id, s.service_name),
                labels=labels,
                state=DOCKER_WORDS.get(s.state, "created"),
                created=epoch(created.get(s.service_id, "")),
                node=node.name if node else "",
                devices=assigned,
            )
        )
    return out


def server_state(s: ServerTask, nodes: Mapping[str, NodeInfo] | None = None) -> ServerState:
    """One server's state; a server whose node is down or gone is EXITED (no exit code) with
    the reason in ``error``, so that poll retires it and frees its devices."""
    nodes = nodes or {}
    node = nodes.get(s.node_id or s.pinned_node)
    devices = tuple(v for _k, v in s.devices)
    common = {"id": s.service_id, "ip": s.addr, "node": node.name if node else s.node_name}
    if s.state in ("pending", "starting"):
        return ServerState(status=PENDING, error=s.reason, **common)
    if s.state in ("running", "stopping"):
        return ServerState(status=RUNNING, devices=devices, **common)
    if s.state == "exited":
        return ServerState(status=EXITED, exit_code=s.exit_code, error=s.reason, **common)
    return ServerState(status=EXITED, error=s.reason or "its node is gone", **common)

"""The container engine as the spawner sees it: one narrow interface, plain records.

The spawner (start, poll, stop, the allocation table) calls only what ``ContainerEngine``
declares; no docker-py object crosses it (records are frozen dataclasses). ``engine.docker``
is the single-engine implementation (one Docker daemon, docker-py's ``APIClient``).

**A second engine must fit this interface without touching policy code.** Docker Swarm is the
next one (issue 17); the interface is shaped for it:

- a server is a *service with one task*; ``create`` returns the service's id, and
  ``creates_then_starts`` is False: a service starts itself, ``start`` is then a no-op;
- placement is asynchronous: after ``create`` the task may stay pending (e.g. "insufficient
  resources"): ``state`` answers ``PENDING`` with the reason in ``error``, and the spawner's
  readiness wait treats pending as "not yet", never as an exit;
- the devices are assigned by Swarm (generic resources), so ``Placement`` carries the *count*
  the spawner wants next to the UUIDs the single engine was given; ``ServerState.devices``
  and ``ServerRecord.devices`` are read back from the engine (the task's assigned generic
  resources), never assumed;
- the server's address is its node's address (host networking): ``ServerState.ip`` and
  ``node`` come from the engine; on a single engine ``node`` is ``""`` and ``ip`` 127.0.0.1;
- identity files cannot be copied into a service's container before it starts:
  ``install_identity`` is an engine concern, and ``installs_identity`` says whether the engine
  does it (a Swarm engine answers False and the image's own /etc/passwd stays).

Image work (inspect, tag, build) stays in ``images/`` but goes through the same engine
object: ``client`` (its one API client) and ``run`` (its thread pool), never a second client.

This module imports nothing of DS01 (a leaf of the layout).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

PENDING = "pending"
RUNNING = "running"
EXITED = "exited"


@dataclass(frozen=True)
class Placement:
    """Where a server goes: the devices chosen by DS01's allocator (single engine) and how many
    the engine is asked for (an engine that places devices itself, Swarm, uses the count)."""

    gpu_uuids: tuple[str, ...] = ()
    gpu_count: int = 0
    #: the node DS01 chose (its Swarm node id; "" on a single engine). On a swarm ``gpu_uuids``
    #: are free devices of the wanted kind on that node: Swarm assigns these or equivalents
    node: str = ""


@dataclass(frozen=True)
class CreateRequest:
    """A server as ``container_spec.build_container_spec`` describes it: the create arguments
    and the host configuration, both as plain dicts."""

    create_kwargs: Mapping[str, Any]
    host_config: Mapping[str, Any]


@dataclass(frozen=True)
class ServerState:
    """One server as the engine sees it now (``state`` answers None when it is gone)."""

    id: str
    status: str  # PENDING, RUNNING or EXITED
    exit_code: int | None = None
    error: str = ""
    pid: int = 0  # the server's main process on its node (0: unknown or not running)
    ip: str = ""  # where the hub reaches it ("" : the spawner's own choice, e.g. 127.0.0.1)
    node: str = ""  # the node it runs on ("" on a single engine)
    devices: tuple[str, ...] = ()

    @property
    def running(self) -> bool:
        return self.status == RUNNING


@dataclass(frozen=True)
class ServerRecord:
    """One server in the allocation table (``list_servers``): its labels, state and devices.

    ``state`` uses Docker's words (created, running, restarting, exited, paused, dead,
    removing); an engine with other words maps them (Swarm: a pending task is "created").
    """

    id: str
    name: str
    labels: Mapping[str, str] = field(default_factory=dict)
    state: str = ""
    created: float = 0.0
    node: str = ""
    devices: tuple[str, ...] = ()

    def as_listing(self) -> dict:
        """The ``docker ps`` shape the pure table code reads (``gpus.table``, ``quota``)."""
        return {
            "Id": self.id,
            "Names": ["/" + self.name],
            "Labels": dict(self.labels),
            "State": self.state,
            "Created": self.created,
        }


@runtime_checkable
class ContainerEngine(Protocol):
    """What the spawner needs from an engine. Every coroutine runs its blocking work off the
    event loop; errors are the engine client's own (``errors.DOCKER_ERRORS``), and
    ``NotFound``-like errors are answered as None / ignored where documented."""

    #: True: ``create`` leaves the server stopped until ``start`` (a single Docker engine)
    creates_then_starts: bool
    #: True: ``install_identity`` writes the user's passwd/group files before start
    installs_identity: bool
    #: True: the server's /proc is this host's (the hub may check its mounts)
    local: bool
    #: the API client image work uses (images/), the same one the engine uses
    client: Any

    async def run(self, fn: Callable, *args, **kwargs) -> Any:
        """``fn(*args, **kwargs)`` on the engine's threads (image work, identity files)."""

    async def create(self, request: CreateRequest, placement: Placement) -> str:
        """Create the server; its id."""

    async def install_identity(
        self, server_id: str, install: Callable[..., Any], *args: Any
    ) -> None:
        """Run ``install(client, server_id, *args)`` before start (engines that can)."""

    async def start(self, server_id: str) -> None:
        """Start a created server (a no-op where servers start themselves)."""

    async def state(self, target: str) -> ServerState | None:
        """The server by id or name, None when it is gone."""

    async def remove(self, target: str, grace: int | None = None) -> None:
        """Stop (SIGTERM, ``grace`` seconds, SIGKILL) and remove; ``grace=None``: at once.
        A server that is already gone is not an error."""

    async def list_servers(self, filters: Mapping[str, Sequence[str]]) -> list[ServerRecord]:
        """Every server matching the label/name ``filters``, in any state."""

    async def logs_tail(self, target: str, lines: int = 20) -> str:
        """The last ``lines`` of the server's output (decoded, untrusted)."""

    async def pids(self, target: str) -> dict:
        """The server's processes as the engine reports them (``top``: Titles/Processes)."""

    async def port_holder(self, target: str, ip: str, port: int, probe_image: str) -> Any:
        """Who holds ``ip:port`` where the server runs (``engine.port_owner.PortHolder``): the
        socket listening there and whether one of the server's processes (the engine's ``top``)
        holds it. ``probe_image``: the hub's base image (an engine that checks on a remote node
        runs it there, by id). ``engine.port_owner.PortCheckError`` when it cannot be checked."""

    async def image(self, ref: str) -> dict | None:
        """The image's inspect record, None when it is not on the engine."""

    async def info(self) -> dict:
        """The engine's own description (``docker info``)."""

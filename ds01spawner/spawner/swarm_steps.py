"""The Swarm mode of the spawner: its settings, its engine and broker, and where a server goes.

A mixin of DS01Spawner. With ``engine_kind = "swarm"`` the hub's one engine is a
``engine.swarm.SwarmEngine`` (made once per hub process) and its GPU broker a
``cluster_broker.ClusterBroker``; everything above them (the plan, limits, the allocation lock and
the GPU queue, image builds on the manager, the audit log) is the single engine's. The node a
server goes to is decided under the allocation lock (:meth:`_place`): the node of the devices the
broker chose, or, without GPUs, the schedulable node with the fewest DS01 servers; the server
listens on that node's ``ds01.addr`` (host network). docs/scale-out.md.
"""

from __future__ import annotations

import threading

import docker
from traitlets import CaselessStrEnum, Dict, Unicode, validate
from traitlets.config import LoggingConfigurable

from ..engine.base import Placement
from ..engine.swarm import SwarmEngine, SwarmEngineError
from ..gpus.model import Device
from ..swarm.images import ImageDistributor
from ..swarm.nodes import NodeEngineError, NodeEngines, check_tls
from .cluster_broker import ClusterBroker

#: hub-side checks that read this host's /proc or firewall: skipped on a swarm (logged once)
SKIPPED_ON_SWARM = (
    "the /workspace mount check (it reads the server's /proc/<pid>/root on the hub's host)",
    "network_isolation = 'uid-firewall' (its rules are on the hub host's loopback; on a swarm "
    "each node's firewall keeps servers apart, docs/scale-out.md)",
)


class SwarmSteps(LoggingConfigurable):
    """Traits and methods of the Swarm mode (mixed into the spawner)."""

    engine_kind = CaselessStrEnum(
        ["docker", "swarm"],
        "docker",
        help="""The container engine servers run on, chosen once per hub process.

        ``"docker"``: one Docker engine (``DOCKER_HOST`` or the local socket), one container per
        server. ``"swarm"``: a Docker Swarm; each server is a one-task service pinned to the node
        DS01 chose, with host networking on that node (``network_name = "host"``), GPUs as
        generic resources, workspaces on storage every node sees (docs/scale-out.md).
        Default: ``"docker"``. Example: ``c.DS01Spawner.engine_kind = "swarm"``.
        """,
    ).tag(config=True)

    swarm_manager_url = Unicode(
        "",
        help="""The swarm manager's engine API (``engine_kind = "swarm"``): services, tasks and
        nodes are read there, and images are built there. ``unix://`` or ``tcp://`` with TLS
        (``swarm_tls``); plain ``tcp://`` is refused unless the host is loopback.
        Default: ``""`` (the default engine: ``DOCKER_HOST`` or the local socket).
        Example: ``c.DS01Spawner.swarm_manager_url = "tcp://manager.example.org:2376"``.
        """,
    ).tag(config=True)

    swarm_tls = Dict(
        {},
        help="""TLS files for the manager's and every node's engine API when they are ``tcp://``
        (``engine_kind = "swarm"``): keys ``"ca"``, ``"cert"``, ``"key"`` (paths of PEM files).
        Without ``cert``/``key`` a plain ``tcp://`` URL to a non-loopback host is refused with
        a clear error (an engine API is root on its node). Default: ``{}``. Example:
        ``c.DS01Spawner.swarm_tls = {"ca": "/etc/ds01/ca.pem", "cert": "/etc/ds01/cert.pem",
        "key": "/etc/ds01/key.pem"}``.
        """,
    ).tag(config=True)

    @validate("swarm_tls")
    def _valid_tls(self, proposal) -> dict:
        try:
            check_tls(proposal.value)
        except NodeEngineError as e:
            raise ValueError(str(e)) from e
        return proposal.value

    _cluster_broker: ClusterBroker | None = None
    _broker_lock = threading.Lock()
    _skips_logged = False

    @property
    def on_swarm(self) -> bool:
        return self.engine_kind == "swarm"

    def _make_swarm_engine(self) -> SwarmEngine:
        engines = NodeEngines(self.swarm_manager_url, self.swarm_tls)
        self.log.info(
            "DS01 engine: Docker Swarm, manager %s", self.swarm_manager_url or "(default engine)"
        )
        return SwarmEngine(engines, self.prefix, ImageDistributor(engines, self.log))

    def _swarm_broker(self) -> ClusterBroker:
        """The hub's one broker of the swarm's GPUs (made at first use)."""
        with SwarmSteps._broker_lock:
            if SwarmSteps._cluster_broker is None:
                SwarmSteps._cluster_broker = ClusterBroker(
                    self.engine, self.gpu_inventory == "simulated", self.log
                )
            return SwarmSteps._cluster_broker

    def swarm_build_kwargs(self) -> dict:
        """The image builder's client settings on a swarm: the manager's engine API (builds
        stream on connections of their own, ``image_steps._make_builder``)."""
        if not self.swarm_manager_url:
            return {}  # the default engine, as the single engine's builder
        kwargs: dict = {"base_url": self.swarm_manager_url, "tls": False}
        tls = check_tls(self.swarm_tls)
        if tls.get("cert") and not self.swarm_manager_url.startswith("unix:"):
            kwargs["tls"] = docker.tls.TLSConfig(
                client_cert=(tls["cert"], tls["key"]), ca_cert=tls.get("ca"), verify=True
            )
        return kwargs

    def _log_swarm_skips(self) -> None:
        """Say once, at the first launch, which of the hub's own checks a swarm does not run."""
        if SwarmSteps._skips_logged:
            return
        SwarmSteps._skips_logged = True
        for check in SKIPPED_ON_SWARM:
            self.log.warning("DS01 on a swarm: not checked by the hub: %s", check)

    async def _place(self, plan, devices: list[Device]) -> Placement:
        """Where this server goes (under the allocation lock), and its address: the node of the
        chosen devices, else the schedulable node with the fewest of this hub's servers."""
        uuids = tuple(d.uuid for d in devices)
        if not self.on_swarm:
            return Placement(uuids, len(devices))
        self._log_swarm_skips()
        nodes = await self.engine.nodes()
        if devices:
            node_id = plan.gpu_broker.node_of(devices) if plan.gpu_broker else ""
        else:
            servers = await self.engine.list_servers({})
            load = {n: 0 for n in nodes}
            for s in servers:
                for n in nodes.values():
                    if n.name == s.node and s.state in ("created", "running"):
                        load[n.id] += 1
            ready = sorted((load[n.id], n.name, n.id) for n in nodes.values() if n.schedulable)
            node_id = ready[0][2] if ready else ""
        node = nodes.get(node_id)
        if node is None or not node.schedulable:
            raise SwarmEngineError("no swarm node can take servers now (none is ready and active)")
        self.ip = node.addr
        return Placement(uuids, len(devices), node=node.id)

    async def _spread_image(self, image: str) -> None:
        """The launch's image on every node that can take servers, before the allocation lock
        (``SwarmEngine.spread_image``). A node it cannot reach is logged; a launch placed there
        fails with that node's error under the lock."""
        self.progress_log.emit(25, "Making your image available on the lab's nodes")
        for node, result in (await self.engine.spread_image(image)).items():
            if isinstance(result, Exception):
                self.log.warning(
                    "Image %s could not be put on node %s for user=%s project=%s: %s",
                    image,
                    node,
                    self.user.name,
                    self.project,
                    result,
                )
            elif result:
                self.log.info("Image %s put on node %s in %.1f s", image, node, result)

    async def _read_back_devices(self) -> None:
        """The devices Swarm assigned (read from the task), in place of the ones DS01 counted
        (free devices of the same kind on the same node: equivalents)."""
        state = await self.engine.state(self.object_id)
        if state is None or not state.devices or list(state.devices) == self.gpu_uuids:
            return
        self.log.info(
            "Swarm assigned %s to user=%s project=%s on node %s (DS01 counted %s)",
            ",".join(state.devices),
            self.user.name,
            self.project,
            state.node,
            ",".join(self.gpu_uuids),
        )
        self.gpu_uuids = list(state.devices)

"""DS01Spawner: one project, one fresh container, one permanent workspace.

``start`` reads top to bottom: plan (``launch.LaunchPlan``, ``plan_steps``) -> obtain image ->
allocate and create (``gpu_steps.allocate_and_create`` under the hub's lock, then
``server_steps``: identity files, start) -> wait until it listens; each step takes the plan
(docs/architecture.md). Every container call goes through ``self.engine`` (engine/). The
settings are in ``traits``; the decisions in small pure modules (``launch``, ``container_spec``,
``projects``, ``limits``, ``gpus``).
"""

from __future__ import annotations

import asyncio

import docker
from dockerspawner import DockerSpawner
from traitlets import List, Unicode, default, validate

from ..audit import audit_log, take_retire
from ..engine.base import PENDING, ContainerEngine, ServerState
from ..engine.docker import DockerEngine, client_kwargs
from ..engine.swarm import SwarmEngine, SwarmEngineError
from ..errors import DOCKER_ERRORS, ENGINE_DOWN_MESSAGE, NODE_UNAVAILABLE_MESSAGE, user_error
from ..logsafe import untrusted
from ..metrics import observe
from ..projects.names import container_name, oauth_client_id
from ..projects.safepath import still_there
from ..web.form_steps import FormSteps
from .container_spec import HOST_NETWORK, SpecError
from .gpu_steps import GpuSteps
from .image_steps import ImageSteps
from .launch import LaunchPhases, LaunchPlan
from .limit_steps import LimitSteps
from .network_steps import NetworkSteps
from .plan_steps import PlanSteps
from .ports import PortPool
from .progress import ProgressLog
from .readiness import ServerExited, wait_until_listening
from .server_steps import ServerSteps
from .session_steps import SessionSteps
from .swarm_steps import SwarmSteps
from .traits import SpawnerSettings


class DS01Spawner(
    SpawnerSettings,
    PlanSteps,
    ServerSteps,
    FormSteps,
    GpuSteps,
    LimitSteps,
    ImageSteps,
    SessionSteps,
    NetworkSteps,
    SwarmSteps,
    DockerSpawner,
):
    """Spawn each project of a user as a named server in a fresh, temporary container.

    The project folder ``<workspace_root>/<project>`` is mounted at ``/workspace``; everything
    else in the container is gone when the server is retired.
    """

    # ---- shared state of the hub process ------------------------------------------------------

    _port_pool = PortPool()
    _port_reserved = False

    @property
    def engine(self) -> ContainerEngine:
        """The hub's one container engine (engine/): every container call of a launch, a poll
        and a retirement goes through it; made once per hub process, under a lock (a swarm's
        with ``engine_kind = "swarm"``, swarm_steps)."""
        if self.on_swarm:
            return SwarmEngine.shared(self._make_swarm_engine)
        return DockerEngine.shared(self._make_client, self.docker_threads)

    def _make_client(self) -> docker.APIClient:
        return docker.APIClient(**client_kwargs(self.tls_config, self.client_kwargs))

    @property
    def client(self) -> docker.APIClient:
        """The engine's API client (image work in images/ uses it; DockerSpawner's name)."""
        return self.engine.client

    async def docker(self, method: str, *args, **kwargs):
        """DockerSpawner's ``docker()``, for what DS01 still inherits from it: the engine's
        client and threads, never a second client."""
        return await self.engine.call(method, *args, **kwargs)

    # ---- per-server state ---------------------------------------------------------------------

    project = Unicode("", help="Project of this server (set at start, kept in the state).")

    gpu_uuids = List(Unicode(), help="Devices held by this server (kept in the state).")

    def audit(self, event: str, **fields) -> None:
        """One audit record (docs/audit-log.md) and the hub's metrics of it; never raises."""
        record = {"event": event, **{k: v for k, v in fields.items() if v is not None}}
        try:
            observe(record)
        except Exception as e:  # noqa: BLE001 - metrics must never break a spawn
            self.log.error("DS01 metrics: cannot count %s: %s", event, e)
        audit_log(self.audit_log_file, self.audit_log_max_bytes, self.audit_log_backups).write(
            event, **fields
        )

    def _who(self) -> dict:
        return {"user": self.user.name, "project": self.project or "", "server": self.name or ""}

    def _reserve_port(self) -> None:
        self.port = self._port_pool.reserve(port_range=self._server_port_range())
        self._port_reserved = True

    def _release_port(self) -> None:
        """Release the port this server holds, once; never one it does not hold."""
        if self._port_reserved:
            self._port_pool.release(self.port)
            self._port_reserved = False

    async def get_object(self) -> dict | None:
        """Our container, or None when Docker says it does not exist (404 only).

        DockerSpawner also reads a 500 as "gone", which would retire a live server on a
        passing engine error; here any other error propagates (poll() then keeps the server).
        """
        try:
            obj = await self.docker("inspect_container", self.object_name)
        except docker.errors.NotFound:
            self.log.info("Container %s is gone", self.object_name)
            self.object_id = ""
            return None
        self.object_id = obj["Id"]
        return obj

    async def _server_state(self) -> ServerState | None:
        """Our server as the engine sees it (by name), None when it is gone; like
        ``get_object``, only "not found" is gone (any other engine error propagates)."""
        state = await self.engine.state(self.object_name)
        if state is None:
            self.log.info("Container %s is gone", self.object_name)
            self.object_id = ""
            return None
        self.object_id = state.id
        return state

    def get_state(self) -> dict:
        state = super().get_state()
        if self.object_id:
            state["ds01"] = {"project": self.project, "port": self.port, "gpus": self.gpu_uuids}
            if self.on_swarm:
                state["ds01"]["ip"] = self.ip
        return state

    def load_state(self, state: dict) -> None:
        super().load_state(state)
        ds01 = state.get("ds01") or {}
        if ds01.get("project"):
            self.project = ds01["project"]
        self.gpu_uuids = list(ds01.get("gpus") or [])
        if ds01.get("ip") and self.on_swarm:
            self.ip = ds01["ip"]
        if ds01.get("port") and self.network_name == HOST_NETWORK and self.object_id:
            self.port = int(ds01["port"])
            self._port_pool.claim(self.port)
            self._port_reserved = True

    def clear_state(self) -> None:
        super().clear_state()
        self.project = ""
        self.gpu_uuids = []

    @default("prefix")
    def _default_prefix(self) -> str:
        return "ds01"

    @default("object_name")
    def _object_name_default(self) -> str:
        """``<prefix>-<escaped user>.<server>`` (see names.container_name); collision-free."""
        return container_name(self.user.name, self.name, self.prefix)

    @validate("oauth_client_id")
    def _collision_free_client_id(self, proposal) -> str:
        """Replace JupyterHub's client id, which collides for a-b/c vs a/b-c (names.py)."""
        if self.user is None or self.orm_spawner is None:
            return proposal.value
        return oauth_client_id(self.user.name, self.name)

    # ---- decisions ----------------------------------------------------------------------------

    # ---- lifecycle ----------------------------------------------------------------------------

    @property
    def progress_log(self) -> ProgressLog:
        if getattr(self, "_progress_log", None) is None:
            self._progress_log = ProgressLog()
        return self._progress_log

    async def progress(self):
        async for event in self.progress_log.follow():
            yield event

    _queue_position = ""

    @property
    def queue_position(self) -> str:
        """While this launch waits in the GPU queue: its place in line, as shown on the
        progress page and the home page ("" otherwise)."""
        return self._queue_position

    async def start(self):
        """A launch, top to bottom: plan -> obtain image -> allocate and create (one atomic
        step under the hub's lock, DockerSpawner's ``create_object``) -> wait until it listens."""
        self._progress_log = ProgressLog()
        self._queue_position = ""
        options = self.launch_options()
        self._check_project_free(options.project)
        self.project = options.project  # at once: a concurrent launch of the same project sees it
        phases = LaunchPhases()
        try:
            try:
                plan = await self._plan_launch(options)
                plan = await self._obtain_image(plan, phases)
                if self.on_swarm:  # transfers before the allocation lock, never under it
                    await self._spread_image(plan.image)
            except BaseException:
                self.project = ""
                raise
            return await self._create_and_wait(plan, phases)
        finally:
            self.release_launch()

    async def _create_and_wait(self, plan: LaunchPlan, phases: LaunchPhases) -> tuple[str, int]:
        project = plan.project
        if self.network_name == HOST_NETWORK:
            self._reserve_port()
            self.ip = "127.0.0.1"  # on a swarm: its node's address, set at placement
        try:
            if self.network_name == HOST_NETWORK:
                await self._network_setup()  # fails closed, before any container exists
            ip, port = await self._create_and_start(plan, phases)
            await self._check_mounted_workspace(plan)
            self.progress_log.emit(70, "Container started; waiting for JupyterLab to listen")
            await wait_until_listening(ip, port, self._check_alive, timeout=self.http_timeout)
            if self.network_name == HOST_NETWORK:
                await self._verify_port_owner(ip, port)
            if self.on_swarm:
                await self._read_back_devices()
        except BaseException as e:
            await self._cleanup_failed_start()
            if isinstance(e, DOCKER_ERRORS) and not await asyncio.to_thread(
                still_there, plan.workspace_dir, plan.workspace_identity
            ):  # e.g. the engine could not mount a folder swapped for a link meanwhile
                raise self._workspace_swapped("while the container started") from e
            if isinstance(e, SwarmEngineError):  # a node, its engine or an image transfer
                self.log.error(
                    "Swarm error while starting user=%s project=%s: %s "
                    "(docs/scale-out.md, failure behaviour)",
                    self.user.name,
                    project,
                    e,
                )
                raise user_error(503, NODE_UNAVAILABLE_MESSAGE) from e
            if isinstance(e, DOCKER_ERRORS):
                self.log.error(
                    "Docker engine error while starting user=%s project=%s: %s. "
                    "Check that dockerd runs (docker info).",
                    self.user.name,
                    project,
                    e,
                )
                raise user_error(503, ENGINE_DOWN_MESSAGE) from e
            if isinstance(e, ServerExited):
                self.log.error(
                    "Server of user=%s project=%s exited while starting (code %s):\n%s",
                    self.user.name,
                    project,
                    e.exit_code,
                    untrusted(e.output_tail),
                )
                raise user_error(
                    500,
                    f"Your server stopped while starting (exit code {e.exit_code}). "
                    f"Your files are safe. Last lines of its output:\n{e.output_tail}",
                ) from e
            if isinstance(e, SpecError):
                self.log.error(
                    "Refused container spec for user=%s project=%s: %s", self.user.name, project, e
                )
                raise user_error(
                    500, "This server is misconfigured; an admin has been told."
                ) from e
            raise
        self.progress_log.emit(90, "JupyterLab is listening; connecting you")
        phases.started()
        self.audit(
            "start",
            **self._who(),
            gpus=list(self.gpu_uuids),
            container=self.object_id[:12],
            phases=dict(phases.timings),
        )
        self.log.info(
            "Started server user=%s project=%s server=%s container=%s port=%s gpus=%s",
            self.user.name,
            project,
            self.name or "(default)",
            self.object_id[:12],
            port,
            ",".join(self.gpu_uuids) or "-",
        )
        return ip, port

    async def get_ip_and_port(self) -> tuple[str, int]:
        if self.network_name == HOST_NETWORK:
            return (self.ip if self.on_swarm else "127.0.0.1"), self.port
        return await super().get_ip_and_port()

    async def poll(self):
        try:
            state = await self._server_state()
        except DOCKER_ERRORS as e:
            # Not knowing is not the same as stopped: keep the server, try again next poll.
            self.log.warning(
                "Cannot reach Docker to poll %s (%s); assuming it still runs", self.object_name, e
            )
            return None
        if state is None:
            self._release_port()
            return 0
        if state.running or (state.status == PENDING and not self.engine.creates_then_starts):
            return None  # running, or placed by an engine that starts it itself (Swarm)
        # Dead (killed, crashed, OOM): log why, then remove it now. JupyterHub calls stop() only
        # for servers that poll as running, so nothing else would remove this container.
        await self._log_exit(state)
        status = f"ExitCode={state.exit_code}, Error='{state.error}'"
        try:
            await self.remove_object()
        except DOCKER_ERRORS as e:
            self.log.error("Could not remove dead container %s: %s", self.object_name, e)
            self.pending_removal.add(self.object_id or self.object_name)
        self._release_port()
        self.audit(
            "retire",
            **self._who(),
            gpus=list(self.gpu_uuids),
            reason="died",
            details={"exit": status},
        )
        if self.gpu_uuids:
            self.audit("release", **self._who(), gpus=list(self.gpu_uuids))
        self.gpu_queue().changed()
        return status

    async def stop(self, now: bool = False) -> None:
        if self.gpu_queue().cancel(self.user.name, self.name):
            self.log.info(
                "Stopped the launch of user=%s project=%s while it waited for a GPU",
                self.user.name,
                self.project or "?",
            )
        grace = 1 if now else self.stop_grace_seconds
        self.log.info(
            "Retiring server user=%s project=%s container=%s (grace %ss)",
            self.user.name,
            self.project or "?",
            self.object_name,
            grace,
        )
        target = self.object_id or self.object_name
        ran = bool(self.object_id)
        intent = take_retire(self.audit_log_file, self.user.name, self.name or "")
        reason, actor = intent or ("user", self.user.name)
        try:
            await self.engine.remove(target, grace)
        except DOCKER_ERRORS as e:
            # JupyterHub counts the server as stopped whatever happens here; the container
            # (and its GPUs) must not outlive that. Retried at every allocation until gone.
            self.log.error(
                "Could not retire container %s of user=%s (%s); removal will be retried",
                target,
                self.user.name,
                e,
            )
            self.pending_removal.add(target)
        self._release_port()
        if ran:
            who, gpus = self._who(), list(self.gpu_uuids)
            self.audit("retire", **who, gpus=gpus, reason=reason, actor=actor or None)
            if gpus:
                self.audit("release", **who, gpus=gpus)
        self.object_id = ""
        self.clear_state()
        self.gpu_queue().changed()  # a device may be free: the next waiter's turn

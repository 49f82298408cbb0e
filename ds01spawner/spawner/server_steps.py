"""The engine-facing steps of one server: create (devices and server atomically, through
``gpu_steps.allocate_and_create``), the identity files, start, the mount check, the readiness
probe's liveness check, the output tail, and the clean-up of a failed start. Every container
call goes through ``self.engine`` (``engine.base.ContainerEngine``).
"""

from __future__ import annotations

import asyncio
import functools
from datetime import datetime, timezone

import docker

from ..engine.base import PENDING, CreateRequest, ServerState
from ..errors import DOCKER_ERRORS, user_error
from ..gpus.allocator import equivalents
from ..gpus.model import Device
from ..logsafe import untrusted
from ..projects.safepath import mounted_identity, still_there
from ..swarm.service_spec import SwarmSpecError
from .container_spec import WORKSPACE_MOUNT, ServerSpec, SpecError, build_container_spec
from .launch import LaunchPhases, LaunchPlan
from .passwd import install_identity
from .readiness import ServerExited


class ServerSteps:
    """One server's life on the engine (mixed into the spawner)."""

    async def _cleanup_failed_start(self) -> None:
        """Leave nothing behind after a failed start: no container (so no GPU), no port.

        The container is removed by name too: a create that failed on the way back may still
        have made it.
        """
        try:
            await self.engine.remove(self.object_id or self.object_name)
        except DOCKER_ERRORS as e:
            self.log.warning(
                "Could not remove container %s after a failed start: %s", self.object_name, e
            )
        if self.gpu_uuids:
            self.audit("release", **self._who(), gpus=list(self.gpu_uuids), reason="start failed")
        self.object_id = ""
        self.gpu_uuids = []
        self._release_port()
        self.gpu_queue().changed()

    async def pull_image(self, image: str) -> None:
        """Check the image exists locally; DS01 never pulls from a registry at spawn."""
        self.progress_log.emit(20, f"Checking image {image}")
        if await self.engine.image(image) is None:
            self.log.error(
                "Image %s is missing for user=%s; build it with scripts/setup.sh",
                image,
                self.user.name,
            )
            raise user_error(
                503,
                f"The image {image} is not on this server yet, so your server could not start. "
                f"An admin has been told.",
            )

    async def remove_object(self) -> None:
        """Remove our container even when it still runs (a stale one found at start)."""
        self.log.info("Removing container %s (%s)", self.object_name, self.object_id[:12])
        await self.engine.remove(self.object_id)

    async def _create_and_start(self, plan: LaunchPlan, phases: LaunchPhases) -> tuple[str, int]:
        """The image is there; a stale server of the same name goes; devices and server are
        made atomically (gpu_steps); the identity files go in; the server starts."""
        await self.pull_image(plan.image)
        stale = await self._server_state()
        if stale is not None:
            self.log.warning(
                "Removing container that should have been cleaned up: %s (id: %s)",
                self.object_name,
                stale.id[:7],
            )
            await self.remove_object()
        create = functools.partial(self._create_container, plan)
        self.object_id = await self.allocate_and_create(plan, phases, create)
        self.log.info(
            "Created container %s (id: %s) from image %s",
            self.object_name,
            self.object_id[:7],
            plan.image,
        )
        if self.engine.installs_identity:
            await self._install_identity(plan, self.object_id)
        self.progress_log.emit(60, "Starting the container")
        await self.engine.start(self.object_id)
        if self.post_start_cmd:
            await self.post_start_exec()
        return await self.get_ip_and_port()

    async def _install_identity(self, plan: LaunchPlan, container_id: str) -> None:
        """The user's name in the container (passwd.py): whoami, the terminal prompt."""
        ident = plan.identity
        try:
            await self.engine.install_identity(
                container_id,
                install_identity,
                self.user.name,
                ident.uid,
                ident.gid,
                plan.home,
                [WORKSPACE_MOUNT] + [b["bind"] for b in self.volume_binds.values()],
            )
        except ValueError as e:  # the image's own files stay; the server still starts
            self.log.warning(
                "No user name in the container of user=%s project=%s: %s",
                self.user.name,
                self.project,
                e,
            )

    async def _create_container(self, plan: LaunchPlan, devices: list[Device]) -> str:
        self.progress_log.emit(40, "Creating a fresh container")
        placement = await self._place(plan, devices)  # a swarm's node, and self.ip on it
        ident, limits = plan.identity, plan.limits
        spec = ServerSpec(
            name=self.object_name,
            image=plan.image,
            # Jupyter kills kernels 5 s after its own SIGTERM; give them the whole grace period.
            command=list(self.cmd)
            + [f"--KernelManager.shutdown_wait_time={self.stop_grace_seconds}"]
            + list(self.get_args()),
            env={**self.get_env(), "JUPYTER_IMAGE_SPEC": plan.image},
            username=self.user.name,
            project=plan.project,
            server_name=self.name,
            uid=ident.uid,
            gid=ident.gid,
            supplementary_gids=ident.supplementary_gids,
            project_dir=plan.workspace_dir,
            home=plan.home,
            created_at=datetime.now(timezone.utc),
            network=self.network_name,
            port=self.port,
            cap_add=self.extra_capabilities,
            stop_grace_seconds=self.stop_grace_seconds,
            mem_limit=limits.memory or self.mem_limit or None,
            cpu_limit=limits.cpus or self.cpu_limit or None,
            shm_size=limits.shm_size,
            pids_limit=limits.pids_limit,
            extra_binds=self.volume_binds,
            extra_labels={"ds01.hub": self.hub_id()},
            extra_host_config=self._eval_if_callable(self.extra_host_config) or {},
            extra_create_kwargs=self._eval_if_callable(self.extra_create_kwargs) or {},
            gpu_uuids=[d.uuid for d in devices],
            gpu_equivalents=equivalents(devices),
            gpu_runtime=not (plan.gpu_broker and plan.gpu_broker.simulated),
        )
        create_kwargs, host_config_kwargs = build_container_spec(spec)
        # The image step may have taken minutes: the path must still lead, without a link the
        # user could have swapped in, to the folder prepared for this launch.
        if not await asyncio.to_thread(still_there, spec.project_dir, plan.workspace_identity):
            raise self._workspace_swapped("before the container was created")
        try:
            return await self.engine.create(
                CreateRequest(create_kwargs, host_config_kwargs), placement
            )
        except SwarmSpecError as e:  # what a Swarm service cannot express: the admin's config
            raise SpecError(str(e)) from e

    def _workspace_swapped(self, when: str):
        self.log.error(
            "Workspace of user=%s project=%s changed %s (a folder on its path was replaced, "
            "e.g. by a link): launch refused",
            self.user.name,
            self.project,
            when,
        )
        return user_error(
            409,
            "Your project folder was moved or replaced by a link while your server was being "
            "prepared, so it was not mounted. Keep the folder in place and launch again.",
        )

    async def _check_mounted_workspace(self, plan: LaunchPlan) -> None:
        """The engine mounted the very folder prepared for this launch at /workspace: compared
        by device and inode through the container's root (/proc/<pid>/root), so a path swapped
        between the check and the engine's mount is caught. Local engines only."""
        if not self.engine.local:
            return  # a remote engine (TCP, SSH, Swarm): its /proc is not ours to read
        state = await self.engine.state(self.object_id)
        pid = state.pid if state is not None else 0
        if not pid:
            return  # it exited: the readiness wait reports that, with its output
        error: OSError | None = None
        try:
            mounted = await asyncio.to_thread(
                mounted_identity, f"/proc/{pid}/root", WORKSPACE_MOUNT
            )
        except OSError as e:
            error, mounted = e, None
        if mounted == plan.workspace_identity:
            return
        # A server that exits at once loses its mounts (its mount namespace goes) while its
        # root can still be read: only a container still running as the same process proves a
        # swap; else the readiness wait reports the exit, with its output.
        again = await self.engine.state(self.object_id)
        if again is None or not again.running or again.pid != pid:
            return
        # read once more, now that the engine still says running as the same process: a swap
        # stays (the engine bound the other folder for the container's life), an exit does not
        try:
            second = await asyncio.to_thread(mounted_identity, f"/proc/{pid}/root", WORKSPACE_MOUNT)
        except OSError:
            second = None
        if second == plan.workspace_identity or not await asyncio.to_thread(_alive, pid):
            return
        if error is not None:
            self.log.error("Cannot check the /workspace mount of %s: %s", self.object_name, error)
        raise self._workspace_swapped("while the container started") from error

    async def _output_tail(self, lines: int = 20) -> str:
        try:
            return await self.engine.logs_tail(self.object_id, lines)
        except DOCKER_ERRORS:
            return "(output unavailable)"

    async def _check_alive(self) -> None:
        """Raise ServerExited when our container has stopped (used while it starts)."""
        state = await self.engine.state(self.object_id)
        if state is None:  # removed behind our back: an engine error, as before the seam
            raise docker.errors.NotFound(f"Container {self.object_name} is gone")
        if not state.running and not (
            state.status == PENDING and not self.engine.creates_then_starts
        ):
            raise ServerExited(state.exit_code, await self._output_tail(10))

    async def _log_exit(self, state: ServerState) -> None:
        self.log.warning(
            "Container %s of user=%s project=%s exited with code %s; last output:\n%s",
            self.object_name,
            self.user.name,
            self.project,
            state.exit_code,
            untrusted(await self._output_tail()),
        )


def _alive(pid: int) -> bool:
    """Whether host process ``pid`` still runs (not gone, not a zombie)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat_line = f.read()
    except OSError:
        return False
    # "pid (comm) S ...": the state follows the last ")" (comm may hold anything)
    fields = stat_line[stat_line.rfind(b")") + 1 :].split()
    return bool(fields) and fields[0] not in (b"Z", b"X", b"x")

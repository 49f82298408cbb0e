"""Limits of project image builds and of the image check: CPU, memory, processes, per user.

A mixin of DS01Spawner through ``ImageSteps`` (it uses the spawner's ``docker()``, ``prefix``,
``user``, ``log``, ``_limits`` and ``ImageSteps._in_io``). Disk is not limited per build: the
engine has no per-build disk limit on overlay2 without project quotas; what bounds it is the build
context limit (``image_context_limit``) and the build timeout (docs/security-availability.md).
"""

from __future__ import annotations

from jupyterhub.traitlets import ByteSpecification
from traitlets import Bool, Float, Int
from traitlets.config import LoggingConfigurable

from ..images.cgroups import build_cgroup


class BuildLimitSteps(LoggingConfigurable):
    """Traits and methods that bound what one build (and one image check) may take."""

    image_builds_per_user = Int(
        1,
        min=1,
        help="""Project image builds of one user that run at the same time.

        A user's further builds wait for their turn without taking a slot of
        ``image_build_threads`` (their launch page says "Waiting for your other build to
        finish"), and a waiting build whose launch gave up is dropped; so one user cannot hold
        every build slot. Launches of the same content share one build.
        Default: ``1``. Example: ``c.DS01Spawner.image_builds_per_user = 2``.
        """,
    ).tag(config=True)

    image_build_cpus = Float(
        2.0,
        min=0.0,
        help="""CPU cores a project image build may use (the engine's CFS quota for the build's
        ``RUN`` containers). The user's ``cpus`` limit applies when it is lower. ``0``: no
        CPU limit. Default: ``2.0``. Example: ``c.DS01Spawner.image_build_cpus = 4``.
        """,
    ).tag(config=True)

    image_build_memory = ByteSpecification(
        "4G",
        help="""Memory (and memory plus swap) of a project image build's ``RUN`` containers.
        The user's ``memory`` limit applies when it is lower. ``0``: no memory limit.
        Default: ``"4G"``. Example: ``c.DS01Spawner.image_build_memory = "16G"``.
        """,
    ).tag(config=True)

    image_build_pids = Int(
        1024,
        min=0,
        help="""Processes and threads all of one user's image builds may have together: the
        ``pids.max`` of a cgroup made per user (``/<prefix>-build-<hash>``) and given to the
        engine as the build's ``cgroupparent``. Needs Docker's ``cgroupfs`` cgroup driver; with
        ``systemd`` the hub logs that the limit is off. ``0``: no limit.
        Default: ``1024``. Example: ``c.DS01Spawner.image_build_pids = 4096``.
        """,
    ).tag(config=True)

    image_check_limits = Bool(
        True,
        help="""Run the short check container of a new image (``jupyterhub-singleuser
        --version``) with at most 128 processes, one CPU and 1 GiB of memory.
        Default: ``True``. Example: ``c.DS01Spawner.image_check_limits = False``.
        """,
    ).tag(config=True)

    _cgroup_driver: str | None = None

    def _build_limits(self) -> dict | None:
        """A build's RUN steps get ``image_build_memory``, or the memory limit of the user's
        servers (limits file) when that is lower."""
        user = getattr(getattr(self, "_limits", None), "memory", None)
        memory = min([m for m in (user, int(self.image_build_memory or 0)) if m] or [0])
        return {"memory": memory, "memswap": memory} if memory else None

    async def _build_engine_params(self, who: str) -> dict:
        """CPU quota and the per-user pids cgroup of a build (engine /build parameters)."""
        params: dict = {}
        user = getattr(getattr(self, "_limits", None), "cpus", None)
        cpus = min([c for c in (user, self.image_build_cpus) if c] or [0])
        if cpus:
            params.update(cpuperiod=100000, cpuquota=max(1000, int(cpus * 100000)))
        if self.image_build_pids:
            if BuildLimitSteps._cgroup_driver is None:
                BuildLimitSteps._cgroup_driver = (await self.engine.info()).get("CgroupDriver", "")
            try:
                parent = await self._in_io(
                    build_cgroup,
                    self.prefix,
                    self.user.name,
                    self.image_build_pids,
                    BuildLimitSteps._cgroup_driver,
                )
            except OSError as e:
                parent = None
                self.log.warning("Cannot set up the build cgroup %s: %s", who, e)
            if parent:
                params["cgroupparent"] = parent
            else:
                self.log.warning(
                    "Build of %s runs without a pids limit (cgroup driver %r)",
                    who,
                    BuildLimitSteps._cgroup_driver,
                )
        return params

"""Step 1 and 2 of a launch: every check and decision before the engine is asked for anything
(identity, the GPU request, the user's limits, the workspace, a template) made into a
``launch.LaunchPlan``, and the plan's image obtained (standard, offered, or the project's own).
"""

from __future__ import annotations

import asyncio

from ..errors import user_error
from ..identity import Identity, IdentityError, resolve_identity
from ..limits.usage import LimitRefused, shape_request
from ..projects.catalog import apply_template
from ..projects.names import path_safe_username
from ..projects.workspace import WorkspaceError, prepare_workspace
from ..web.form import LaunchOptions
from .launch import (
    IMAGE_BASE,
    IMAGE_DOCKERFILE,
    IMAGE_OFFERED,
    IMAGE_STANDARD,
    LaunchPhases,
    LaunchPlan,
    launch_plan,
)


class PlanSteps:
    """Plan a launch and obtain its image (mixed into the spawner)."""

    def _check_project_free(self, project: str) -> None:
        for other in self.user.spawners.values():
            if other is self or not (other.active or other.ready):
                continue
            if getattr(other, "project", "") == project:
                where = f"server '{other.name}'" if other.name else "your default server"
                raise user_error(
                    409,
                    f"Project '{project}' is already running as {where}. "
                    f"Open it from the home page, or retire it first.",
                )

    async def _identity(self) -> Identity:
        # getpwnam and the group list can go to LDAP/sssd: off the event loop
        try:
            return await asyncio.to_thread(
                resolve_identity,
                self.user.name,
                self.user_uid,
                self.user_gid,
                self.use_system_accounts,
            )
        except IdentityError as e:
            self.log.error("Refused to start a server for user=%s: %s", self.user.name, e)
            raise user_error(403, str(e)) from e

    async def _plan_launch(self, options: LaunchOptions) -> LaunchPlan:
        """Every check and decision before Docker is asked for anything: identity, the GPU
        request, the user's limits, the workspace. Each refusal is a user_error."""
        project = options.project
        ident = await self._identity()
        broker, request, devices = await self._parse_gpu_request(options.gpu_options)
        limits = await self.effective_limits()
        try:
            request = shape_request(request, limits, devices)
        except LimitRefused as e:
            self.refuse(e)
        # servers and GPUs, before any folder or image is made
        await self.claim_launch(request, devices, limits)
        self.progress_log.emit(10, f"Preparing workspace for project {project}")
        try:
            ws = await asyncio.get_running_loop().run_in_executor(
                None,
                prepare_workspace,
                self.workspace_root,
                self.user.name,
                project,
                ident.uid,
                ident.gid,
                self.workspace_mode,
            )
        except WorkspaceError as e:
            self.log.error(
                "Workspace refused for user=%s project=%s: %s",
                self.user.name,
                project,
                e.admin_hint or e,
            )
            raise user_error(400, str(e)) from e
        if options.template and not ws.created:
            raise user_error(
                400,
                f"A project named '{project}' already exists, so it cannot be made from a "
                f"template. Launch it as it is, or choose another name.",
            )
        if ws.created:
            self.log.info(
                "Created workspace %s for user=%s project=%s template=%s",
                ws.project_dir,
                self.user.name,
                project,
                options.template or "-",
            )
        if options.template:
            await self._apply_template(ws.project_dir, options.template, ident)
        return launch_plan(
            user=self.user.name,
            server=self.name or "",
            options=options,
            identity=ident,
            home=self.home_dir.format(username=path_safe_username(self.user.name)),
            gpu_broker=broker,
            gpu_request=request,
            gpu_devices=devices,
            limits=limits,
            workspace_dir=str(ws.project_dir),
            workspace_identity=ws.identity,
            base_image=self.image,
        )

    async def _obtain_image(self, plan: LaunchPlan, phases: LaunchPhases) -> LaunchPlan:
        """The plan with its image: the standard or an offered one as chosen, else the
        project's own when it has a Dockerfile (built when needed), else ``image``."""
        if plan.image_source == IMAGE_STANDARD:
            self.progress_log.emit(
                20, f"Using the standard image {self.image}, not the project's Dockerfile"
            )
            self.log.info(
                "user=%s project=%s launches with the standard image %s (Dockerfile ignored)",
                self.user.name,
                plan.project,
                self.image,
            )
            return plan
        if plan.image_source == IMAGE_OFFERED:
            return plan
        ref = await self.project_image(plan.project, plan.workspace_dir, plan.identity, phases)
        if ref:
            return plan.with_image(ref, IMAGE_DOCKERFILE)
        return plan.with_image(self.image, IMAGE_BASE)

    async def _apply_template(self, project_dir, template: str, ident: Identity) -> None:
        self.progress_log.emit(12, f"Creating the project from the template {template}")
        try:
            written = await asyncio.to_thread(
                apply_template,
                project_dir,
                self.templates[template],
                ident.uid,
                ident.gid,
                {"project": self.project, "base_image": self.image},
                self.workspace_mode,
            )
        except WorkspaceError as e:
            self.log.error(
                "Template %s failed for user=%s project=%s: %s",
                template,
                self.user.name,
                self.project,
                e.admin_hint or e,
            )
            raise user_error(500, f"{e} Your folder was created; an admin has been told.") from e
        self.log.info(
            "Wrote template %s into project=%s of user=%s: %s",
            template,
            self.project,
            self.user.name,
            ", ".join(written) or "(nothing)",
        )

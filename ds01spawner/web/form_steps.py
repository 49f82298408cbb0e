"""Form steps of DS01Spawner: render the spawn form, read it, and check ``user_options``.

A mixin of DS01Spawner (it uses the spawner's traits, ``docker()``, ``log`` and the GPU and
limit steps). The rules are the pure functions of ``form``; this module gathers the facts
(projects, devices, containers, limits) and turns errors into HTTP 400s.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

import docker
import jinja2
from tornado import web

from ..errors import DOCKER_ERRORS, user_error
from ..gpus import InventoryError
from ..gpus.allocator import busy_outside
from ..gpus.table import holders
from ..images.context import read_top_file
from ..limits.usage import LimitRefused, check_servers, usage_of, with_launches
from ..projects.catalog import list_projects
from ..projects.workspace import WorkspaceError, workspace_root_for
from .form import (
    NEW_PROJECT,
    OPTION_KEYS,
    STANDARD_IMAGE,
    GpuOffer,
    LaunchOptions,
    OptionsError,
    gpu_offer,
    limits_lines,
    options_from_form,
    validate_user_options,
)
from .pages import shown_workspace

TEMPLATES_DIR = Path(__file__).with_name("templates")
BUILTIN_FORM = "ds01_spawn_form.html"
_environments: dict[str, jinja2.Environment] = {}


def form_environment(template_file: str) -> tuple[jinja2.Environment, str]:
    """A Jinja environment with autoescape on, and the name of the form template in it."""
    folder, name = (str(TEMPLATES_DIR), BUILTIN_FORM)
    if template_file:
        folder, name = str(Path(template_file).parent), Path(template_file).name
    if folder not in _environments:
        _environments[folder] = jinja2.Environment(
            loader=jinja2.FileSystemLoader([folder, str(TEMPLATES_DIR)]),
            autoescape=True,
            enable_async=True,
            undefined=jinja2.StrictUndefined,
        )
    return _environments[folder], name


class FormSteps:
    """Methods DS01Spawner uses for the spawn form and ``user_options``."""

    # ---- user_options ---------------------------------------------------------------------

    def launch_options(self) -> LaunchOptions:
        """This launch's validated ``user_options``; HTTP 400 with the reason when invalid."""
        try:
            return validate_user_options(
                self.user_options,
                server_name=self.name,
                default_project=self.default_project,
                templates=self.templates,
                offered_images=self.offered_images,
            )
        except OptionsError as e:
            self.log.warning("Refused server options of user=%s: %s", self.user.name, e)
            raise user_error(400, str(e)) from e

    def _form_to_options(self, formdata: dict) -> dict:
        try:
            options = options_from_form(formdata)
        except OptionsError as e:
            raise user_error(400, str(e)) from e
        # check now, so the form is shown again with the reason; start() checks again
        saved = self.user_options
        self.user_options = options
        try:
            self.launch_options()
        finally:
            self.user_options = saved
        return options

    def _query_to_options(self, query: dict) -> dict:
        """``/hub/spawn/<user>/<project>?gpus=1`` (or ``opt-gpus=1``): the option keys only."""
        options = {}
        for key, values in query.items():
            if key not in OPTION_KEYS:
                raise user_error(
                    400, f"Unknown server option; the options are: {', '.join(OPTION_KEYS)}."
                )
            options[key] = values[0] if isinstance(values, list) else values
        return options

    # ---- the form ---------------------------------------------------------------------------

    async def _environment_of(self, project, ident) -> str:
        """How a project's server gets its image, for the form: the base image, or its
        Dockerfile with whether the image is built and current (a content-hash lookup, no
        build) or needs a build, or why it will be refused."""
        if not project.has_dockerfile:
            return f"image {self.image}"
        if not self.project_images:
            return f"image {self.image} (Dockerfiles are not built here)"
        folder = str(workspace_root_for(self.workspace_root, self.user.name) / project.name)
        try:
            dockerfile = await self._in_io(read_top_file, folder, "Dockerfile", 1 << 20)
            plan = await self._plan(project.name, folder, ident, dockerfile or b"")
            await self.docker("inspect_image", plan["ref"])
        except web.HTTPError as e:
            reason = getattr(e, "jupyterhub_message", "") or "it cannot be built"
            return f"its Dockerfile, which will be refused: {reason[:120]}"
        except docker.errors.ImageNotFound:
            return "its Dockerfile (changed since the last build: built at launch)"
        except Exception as e:  # noqa: BLE001 - the form shows the project anyway
            self.log.warning("Image state of project=%s unknown: %s", project.name, e)
            return "its Dockerfile"
        return "its Dockerfile (image built and up to date)"

    async def _environments(self, projects) -> dict[str, str]:
        try:
            ident = await self._identity()
        except web.HTTPError:
            return {
                p.name: ("its Dockerfile" if p.has_dockerfile else f"image {self.image}")
                for p in projects
            }
        found = await asyncio.gather(*(self._environment_of(p, ident) for p in projects))
        return {p.name: env for p, env in zip(projects, found, strict=True)}

    async def _gpu_offer(self, containers: list[dict], limits, problems: list[str]) -> GpuOffer:
        try:
            broker = await asyncio.to_thread(self._broker)
            devices, usage = await broker.snapshot()
        except InventoryError as e:
            self.log.error(
                "GPU inventory unavailable for the form of user=%s: %s", self.user.name, e
            )
            problems.append("GPUs cannot be listed right now; you can launch without a GPU.")
            devices, usage = [], {}
        held = holders(containers)
        taken = set(held) | busy_outside(usage, held)
        used = usage_of(self.user.name, containers).gpu_equivalents
        default = self.default_gpus if devices else 0
        offer = gpu_offer(devices, taken, limits, used, default)
        waiting = len(self.gpu_queue())
        if waiting:
            people = "person waits" if waiting == 1 else "people wait"
            offer = replace(offer, summary=f"{offer.summary} · {waiting} {people} for a GPU")
        return offer

    async def render_options_form(self) -> str:
        """The spawn form of this server (the default server's offers every project)."""
        problems: list[str] = []
        try:
            projects = await asyncio.to_thread(list_projects, self.workspace_root, self.user.name)
        except WorkspaceError as e:
            self.log.error("Cannot list projects of user=%s: %s", self.user.name, e.admin_hint or e)
            problems.append(str(e))
            projects = []
        try:
            containers = await self._ds01_containers()
        except DOCKER_ERRORS as e:
            self.log.error("Docker unavailable for the form of user=%s: %s", self.user.name, e)
            problems.append(
                "The container engine is not answering; launching will fail until it is back."
            )
            containers = []
        limits = await self.effective_limits()
        offer = await self._gpu_offer(containers, limits, problems)
        usage = usage_of(self.user.name, containers)
        blocked = False
        try:  # the same sentence a launch would be refused with (quota.check_servers)
            check_servers(with_launches(usage, self.launches.others(self.user.name, "")), limits)
        except LimitRefused as e:
            problems.append(str(e))
            blocked = True
        running = {s.project for s in usage.servers}
        environments = await self._environments(projects)
        rows = [
            {
                "name": p.name,
                "running": p.name in running,
                "state": "running" if p.name in running else "not running",
                "environment": environments[p.name],
            }
            for p in projects
        ]
        free = [r["name"] for r in rows if not r["running"]]
        fixed = self.name or ""
        known = {p.name: p for p in projects}
        env, name = form_environment(self.options_form_template)
        return await env.get_template(name).render_async(
            problems=problems,
            fixed_project=fixed,
            fixed_is_new=bool(fixed) and fixed not in known,
            fixed_has_dockerfile=bool(fixed) and fixed in known and known[fixed].has_dockerfile,
            projects=rows,
            selected_project=free[0] if free else NEW_PROJECT,
            new_value=NEW_PROJECT,
            templates=[
                {"name": n, "description": t.get("description", "")}
                for n, t in self.templates.items()
            ],
            gpu=offer,
            images=[{"ref": r, "description": d} for r, d in self.offered_images.items()],
            default_image=self.image,
            standard_value=STANDARD_IMAGE,
            limits=limits_lines(limits, len(usage.servers)),
            user_name=self.user.name,
            workspace=shown_workspace(self.workspace_root, self.user.name),
            blocked=blocked,
            spawn_base=f"{self.hub.base_url}spawn/{self.user.escaped_name}/",
        )

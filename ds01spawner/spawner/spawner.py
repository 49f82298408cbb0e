"""DS01Spawner: one project, one fresh container, one permanent workspace.

This class holds the traits and orchestrates start/stop/poll/progress. ``start`` reads top to
bottom: plan (``launch.LaunchPlan``) -> obtain image -> allocate and create -> wait; each step
takes the plan (docs/architecture.md). The decisions live in small modules: ``names`` (project
names, container names), ``workspace`` (paths and confinement), ``identity`` (uid:gid),
``container_spec`` (the container as dicts), ``ports``, ``gpus`` (inventory, allocator, label
table), ``spawner_gpus`` (the GPU steps of a spawn) and ``spawner_images`` (a project's own image
from its Dockerfile).
"""

from __future__ import annotations

import asyncio
import functools
from datetime import datetime, timezone

import docker
from dockerspawner import DockerSpawner
from traitlets import Bool, CaselessStrEnum, Dict, Float, Int, List, Unicode, default, validate

from ..audit import audit_log, take_retire
from ..engine.base import PENDING, ContainerEngine, CreateRequest, Placement, ServerState
from ..engine.docker import DockerEngine, client_kwargs
from ..errors import DOCKER_ERRORS, ENGINE_DOWN_MESSAGE, user_error
from ..gpus.allocator import equivalents
from ..gpus.model import Device
from ..identity import Identity, IdentityError, resolve_identity
from ..limits.usage import LimitRefused, shape_request
from ..logsafe import untrusted
from ..metrics import observe
from ..projects.catalog import BUILTIN_TEMPLATES, TemplateError, apply_template, check_templates
from ..projects.names import container_name, oauth_client_id, path_safe_username
from ..projects.safepath import mounted_identity, still_there
from ..projects.workspace import WorkspaceError, prepare_workspace
from ..web.form import STANDARD_IMAGE, LaunchOptions
from ..web.form_steps import FormSteps
from .container_spec import (
    HOST_NETWORK,
    WORKSPACE_MOUNT,
    ServerSpec,
    SpecError,
    build_container_spec,
)
from .gpu_steps import GpuSteps
from .image_steps import ImageSteps
from .launch import (
    IMAGE_BASE,
    IMAGE_DOCKERFILE,
    IMAGE_OFFERED,
    IMAGE_STANDARD,
    LaunchPhases,
    LaunchPlan,
    launch_plan,
)
from .limit_steps import LimitSteps
from .network_steps import NetworkSteps
from .passwd import install_identity
from .ports import PortPool
from .progress import ProgressLog
from .readiness import ServerExited, wait_until_listening
from .session_steps import SessionSteps


class DS01Spawner(
    FormSteps, GpuSteps, LimitSteps, ImageSteps, SessionSteps, NetworkSteps, DockerSpawner
):
    """Spawn each project of a user as a named server in a fresh, temporary container.

    The project folder ``<workspace_root>/<project>`` is mounted at ``/workspace``; everything
    else in the container is gone when the server is retired.
    """

    # ---- traits -------------------------------------------------------------------------------

    workspace_root = Unicode(
        "/srv/ds01/workspaces/{username}",
        help="""Folder on the host that holds a user's projects; ``{username}`` is replaced.

        Each project is the sub-folder ``<workspace_root>/<project>``, created on first launch,
        owned by the user, and mounted read-write at ``/workspace``.
        Default: ``/srv/ds01/workspaces/{username}``.
        Example for system users: ``c.DS01Spawner.workspace_root = "/home/{username}/workspace"``.
        """,
    ).tag(config=True)

    default_project = Unicode(
        "default",
        help="""Project of the default (unnamed) server when ``user_options`` names none.

        Named servers always use their server name as the project.
        Default: ``"default"``. Example: ``c.DS01Spawner.default_project = "scratch"``.
        """,
    ).tag(config=True)

    user_uid = Int(
        1000,
        help="""Uid a container runs as when the user has no system account.

        Users with a system account (``pwd.getpwnam``) always run as that account.
        Default: ``1000``. Example: ``c.DS01Spawner.user_uid = 2000``. Never 0.
        """,
    ).tag(config=True)

    user_gid = Int(
        100,
        help="""Gid a container runs as when the user has no system account.

        Default: ``100`` (``users`` on Debian). Example: ``c.DS01Spawner.user_gid = 2000``.
        """,
    ).tag(config=True)

    use_system_accounts = Bool(
        True,
        help="""Run as the user's system account (uid, gid, groups) when one exists.

        Turn off when hub usernames may coincide with unrelated system accounts.
        Default: ``True``. Example: ``c.DS01Spawner.use_system_accounts = False``.
        """,
    ).tag(config=True)

    home_dir = Unicode(
        "/home/{username}",
        help="""``HOME`` inside the container: writable, outside ``/workspace``, gone on retire.

        ``{username}`` is replaced by a path-safe form of the username. It must lie in the
        container's own filesystem: at or under ``/workspace`` or a ``volumes`` target the hub
        writes nothing into it (no JupyterLab settings), and logs a warning at each launch.
        Default: ``/home/{username}``. Example: ``c.DS01Spawner.home_dir = "/home/user"``.
        """,
    ).tag(config=True)

    stop_grace_seconds = Int(
        30,
        min=0,
        help="""Seconds between SIGTERM and SIGKILL when a server is retired.

        Running code can catch SIGTERM and save a checkpoint in this time.
        Default: ``30``. Example: ``c.DS01Spawner.stop_grace_seconds = 120``.
        """,
    ).tag(config=True)

    extra_capabilities = List(
        Unicode(),
        help="""Linux capabilities added back after all are dropped.

        Default: ``[]`` (none). Example: ``c.DS01Spawner.extra_capabilities = ["SYS_PTRACE"]``.
        """,
    ).tag(config=True)

    docker_threads = Int(
        8,
        min=1,
        help="""Threads that make Docker API calls, shared by all spawners of the hub.

        Calls from different users' spawns run in parallel up to this number.
        Default: ``8``. Example: ``c.DS01Spawner.docker_threads = 16``.
        """,
    ).tag(config=True)

    workspace_mode = Int(
        0o750,
        help="""Permission bits of workspace folders the spawner creates.

        Default: ``0o750`` (owner and group). Example: ``c.DS01Spawner.workspace_mode = 0o700``.
        """,
    ).tag(config=True)

    gpu_inventory = CaselessStrEnum(
        ["auto", "nvml", "simulated", "none"],
        default_value="auto",
        help="""Where the GPUs to assign come from.

        ``"nvml"``: the NVIDIA driver through NVML (nvidia-ml-py); every full GPU and every MIG
        instance is a device. ``"simulated"``: the devices of ``simulated_gpus``, for machines
        without NVIDIA hardware (demo, tests). ``"none"``: no GPUs. ``"auto"``: NVML when the
        driver loads, else none; the hub log says which.
        Default: ``"auto"``. Example: ``c.DS01Spawner.gpu_inventory = "nvml"``.
        """,
    ).tag(config=True)

    simulated_gpus = List(
        Dict(),
        help="""The devices of the simulated inventory (``gpu_inventory = "simulated"``).

        A GPU with ``mig_profiles`` is split into those MIG instances.
        Default: ``[]``. Example: ``c.DS01Spawner.simulated_gpus = [{"name":
        "NVIDIA A100-SXM4-40GB", "memory_mib": 40960}, {"name": "NVIDIA A100-SXM4-40GB",
        "memory_mib": 40960, "mig_profiles": ["3g.20gb", "2g.10gb", "2g.10gb"]}]``.
        """,
    ).tag(config=True)

    simulated_gpu_state_file = Unicode(
        "",
        help="""JSON file with live utilization, memory use, processes and 'lost' flags of
        simulated devices, re-read at every use (see docs/gpus.md).

        Default: ``""`` (all simulated devices idle). Example:
        ``c.DS01Spawner.simulated_gpu_state_file = "/srv/ds01/simulated-gpus.json"``.
        """,
    ).tag(config=True)

    default_gpus = Int(
        1,
        min=0,
        help="""GPUs a launch gets when ``user_options`` has no ``gpus``.

        On a server whose inventory has no devices the default is 0. ``0`` means no GPU.
        Default: ``1``. Example: ``c.DS01Spawner.default_gpus = 0``.
        """,
    ).tag(config=True)

    gpus_busy_outside_ds01 = Bool(
        True,
        help="""Count a device as busy while processes that belong to no DS01 container use it
        (someone running CUDA directly on the host).

        Default: ``True``. Example: ``c.DS01Spawner.gpus_busy_outside_ds01 = False``.
        """,
    ).tag(config=True)

    gpu_queue_timeout = Int(
        0,
        min=0,
        help="""Seconds a launch that finds no free GPU waits in the queue for one.

        The progress page shows its place in line ("Waiting for a GPU: 2nd in line (4 of 4
        GPUs busy)"); docs/gpus.md has the order rule. ``0``: no queue, such a launch is refused
        at once with HTTP 429. DS01's default ``start_timeout`` includes it; the hub refuses to
        start when a configured one is shorter than build + queue + ``http_timeout``.
        Default: ``0``. Example: ``c.DS01Spawner.gpu_queue_timeout = 3600``.
        """,
    ).tag(config=True)

    gpu_queue_recheck_seconds = Float(
        5.0,
        min=0.1,
        help="""Seconds between two looks at the GPUs while launches wait, besides the moments a
        DS01 server is retired (which wake the queue at once). Catches devices freed outside
        DS01 (a CUDA process on the host ending, a container removed by hand).
        Default: ``5.0``. Example: ``c.DS01Spawner.gpu_queue_recheck_seconds = 2``.
        """,
    ).tag(config=True)

    audit_log_file = Unicode(
        "",
        help="""File of the audit log: one JSON line per event (allocate, release, refuse,
        start, retire, warn, build, limits reload and error, admin action), written by the hub,
        the culler and the admin service; schema in docs/audit-log.md.

        Default: ``""`` (no audit log). Example:
        ``c.DS01Spawner.audit_log_file = "/var/log/ds01/audit.jsonl"``.
        """,
    ).tag(config=True)

    audit_log_max_bytes = Int(
        10 * 2**20,
        min=1024,
        help="""Size in bytes at which the audit log is rotated (to ``<file>.1``, ...).

        Default: ``10485760`` (10 MiB).
        Example: ``c.DS01Spawner.audit_log_max_bytes = 100 * 2**20``.
        """,
    ).tag(config=True)

    audit_log_backups = Int(
        5,
        min=0,
        help="""Rotated audit log files kept (``<file>.1`` is the newest); ``0`` keeps none.

        Default: ``5``. Example: ``c.DS01Spawner.audit_log_backups = 20``.
        """,
    ).tag(config=True)

    gpu_queue_file = Unicode(
        "",
        help="""JSON file where the hub publishes its GPU queue (who waits for what, since
        when) for the ``ds01-limits`` service's ``/api/queue`` and the admin view.

        Default: ``""`` (not published). Example:
        ``c.DS01Spawner.gpu_queue_file = "/var/lib/ds01/gpu-queue.json"``.
        """,
    ).tag(config=True)

    limits_file = Unicode(
        "",
        help="""YAML file with per-user and per-group limits (docs/limits.md).

        Checked when the hub starts (a broken file stops it, naming the line and the key) and
        re-read at every launch after it changes; a broken edit keeps the last good limits.
        Default: ``""`` (no limits). Example:
        ``c.DS01Spawner.limits_file = "/etc/ds01/limits.yaml"``.
        """,
    ).tag(config=True)

    limits_include_unix_groups = Bool(
        False,
        help="""Count a system user's Unix groups as groups of the limits file, besides their
        JupyterHub groups.

        Default: ``False``. Example: ``c.DS01Spawner.limits_include_unix_groups = True``.
        """,
    ).tag(config=True)

    options_form_template = Unicode(
        "",
        help="""Jinja template file of the spawn form, instead of DS01's own.

        Rendered with autoescape on; DS01's template (``ds01spawner/web/templates/
        ds01_spawn_form.html``) shows the variables it gets and can be included or extended
        from yours. The fields it must post are described in docs/configuration.md.
        Default: ``""`` (DS01's form). Example:
        ``c.DS01Spawner.options_form_template = "/etc/ds01/spawn_form.html"``.
        """,
    ).tag(config=True)

    offered_images = Dict(
        Unicode(),
        help="""Images users may choose on the spawn form instead of their project's
        Dockerfile or ``image``, as ``{image: description}``.

        A launch (form or REST API) may only name one of these; anything else is refused with
        HTTP 400. The images must exist locally: DS01 never pulls.
        Default: ``{}`` (no choice: the project's Dockerfile, else ``image``). Example:
        ``c.DS01Spawner.offered_images = {"ds01/base:latest": "Python 3 and JupyterLab",
        "ds01/pytorch:2.4": "PyTorch 2.4 with CUDA"}``.
        """,
    ).tag(config=True)

    project_templates = Dict(
        Dict(),
        help="""Templates a new project can start from, as ``{name: {"description": ...,
        "folders": [...], "files": {path: content}}}``.

        Paths are relative to the project folder; ``{project}`` and ``{base_image}`` in file
        contents are replaced. Files are created owned by the user and never overwrite
        anything. Your dict replaces DS01's templates.
        Default: ``{}``, meaning DS01's own: ``empty`` (nothing) and ``python-ml`` (``data/``,
        ``models/``, ``notebooks/``, ``outputs/``, a starter ``Dockerfile`` from ``image``, a
        README). Example: ``c.DS01Spawner.project_templates = {"empty": {"description": "An empty
        folder."}, "course": {"description": "ML course", "files": {"README.md": "# {project}"}}}``.
        """,
    ).tag(config=True)

    @property
    def templates(self) -> dict:
        """The templates of new projects in force (``project_templates`` or DS01's own)."""
        return self.project_templates or BUILTIN_TEMPLATES

    @validate("project_templates")
    def _valid_templates(self, proposal) -> dict:
        try:
            check_templates(proposal.value)
        except TemplateError as e:
            raise ValueError(f"DS01Spawner.project_templates: {e}") from e
        return proposal.value

    @default("apply_user_options")
    def _default_apply_user_options(self):
        # start() reads and checks user_options itself (form.validate_user_options); this only
        # stops JupyterHub from warning that they are unhandled.
        return lambda spawner, options: None

    @default("options_form")
    def _default_options_form(self):
        return lambda spawner: spawner.render_options_form()

    @default("options_from_form")
    def _default_options_from_form(self):
        return self._form_to_options

    def options_from_query(self, query_data: dict) -> dict:
        return self._query_to_options(query_data)

    async def check_allowed(self, image: str) -> str:
        """DockerSpawner's image check: only ``offered_images`` (launch_options checked it),
        or ``standard``: the configured image, without the project's Dockerfile."""
        if image == STANDARD_IMAGE:
            return self.image
        if image in self.offered_images:
            return image
        raise user_error(400, "That image is not offered on this server.")

    @default("image")
    def _default_image(self) -> str:
        return "ds01/base:latest"

    @default("network_name")
    def _default_network(self) -> str:
        return HOST_NETWORK

    @default("cmd")
    def _default_ds01_cmd(self) -> list[str]:
        return ["jupyterhub-singleuser"]

    @default("notebook_dir")
    def _default_notebook_dir(self) -> str:
        return "/workspace"

    @default("remove")
    def _default_remove(self) -> bool:
        return True

    @validate("remove")
    def _always_remove(self, proposal) -> bool:
        if not proposal.value:
            self.log.warning("DS01Spawner.remove=False ignored: containers are always removed")
        return True

    @default("pull_policy")
    def _default_pull_policy(self) -> str:
        return "never"

    # ---- shared state of the hub process ------------------------------------------------------

    _port_pool = PortPool()
    _port_reserved = False

    @property
    def engine(self) -> ContainerEngine:
        """The hub's one container engine (engine/): every container call of a launch, a poll
        and a retirement goes through it; made once per hub process, under a lock."""
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
        return state

    def load_state(self, state: dict) -> None:
        super().load_state(state)
        ds01 = state.get("ds01") or {}
        if ds01.get("project"):
            self.project = ds01["project"]
        self.gpu_uuids = list(ds01.get("gpus") or [])
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
            self.ip = "127.0.0.1"
        try:
            if self.network_name == HOST_NETWORK:
                await self._network_setup()  # fails closed, before any container exists
            ip, port = await self._create_and_start(plan, phases)
            await self._check_mounted_workspace(plan)
            self.progress_log.emit(70, "Container started; waiting for JupyterLab to listen")
            await wait_until_listening(ip, port, self._check_alive, timeout=self.http_timeout)
            if self.network_name == HOST_NETWORK:
                await self._verify_port_owner(ip, port)
        except BaseException as e:
            await self._cleanup_failed_start()
            if isinstance(e, DOCKER_ERRORS) and not await asyncio.to_thread(
                still_there, plan.workspace_dir, plan.workspace_identity
            ):  # e.g. the engine could not mount a folder swapped for a link meanwhile
                raise self._workspace_swapped("while the container started") from e
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
        made atomically (spawner_gpus); the identity files go in; the server starts."""
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
        return await self.engine.create(
            CreateRequest(create_kwargs, host_config_kwargs),
            Placement(tuple(spec.gpu_uuids), len(devices)),
        )

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
        if error is not None:
            self.log.error("Cannot check the /workspace mount of %s: %s", self.object_name, error)
        raise self._workspace_swapped("while the container started") from error

    async def get_ip_and_port(self) -> tuple[str, int]:
        if self.network_name == HOST_NETWORK:
            return "127.0.0.1", self.port
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

    async def _output_tail(self, lines: int = 20) -> str:
        try:
            return await self.engine.logs_tail(self.object_id, lines)
        except DOCKER_ERRORS:
            return "(output unavailable)"

    async def _check_alive(self) -> None:
        """Raise ServerExited when our container has stopped (used while it starts)."""
        state = await self.engine.state(self.object_id)
        if state is None:
            raise ServerExited(None, await self._output_tail(10))
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

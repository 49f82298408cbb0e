"""The settings of ``DS01Spawner`` that are its own (not a step's or a component's): where
workspaces are, who a container runs as, the GPU inventory, the images offered, templates, and
the DockerSpawner defaults DS01 changes. ``c.DS01Spawner.<name>`` sets them (traitlets reads
every class of the hierarchy); docs/configuration.md lists them.
"""

from __future__ import annotations

from traitlets import Bool, CaselessStrEnum, Dict, Float, Int, List, Unicode, default, validate
from traitlets.config import LoggingConfigurable

from ..errors import user_error
from ..projects.catalog import BUILTIN_TEMPLATES, TemplateError, check_templates
from ..web.form import STANDARD_IMAGE
from .container_spec import HOST_NETWORK


class SpawnerSettings(LoggingConfigurable):
    """DS01Spawner's own settings and the defaults it changes (mixed into the spawner)."""

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

"""``ds01-culler``: the JupyterHub-managed service that retires idle and over-limit servers.

Started by the hub (``python -m ds01spawner.culler``; registered by
``startup.configure_services``, see ``culler/registration.py``). Its settings are the traits of
:class:`DS01Culler`, set in ``jupyterhub_config.py`` as ``c.DS01Culler.<name>`` and passed to
the process as JSON in ``DS01_CULLER_CONFIG``; ``--DS01Culler.<name>=<value>`` on the command
line works too. What it shares with the spawner (limits file, container prefix, Docker host, GPU
inventory) comes from the spawner's own settings, by environment (``DS01_*``), so the two can
never disagree.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys

from traitlets import Bool, Float, Int, List, Unicode, default, validate
from traitlets.config import Application, Config

from ..audit import from_environment as audit_from_environment
from ..engine.services import service_engine, service_inventory
from ..gpus import InventoryError
from .cycle import Culler, LimitsSource
from .decision import Settings
from .signals import CgroupCpu, GpuMeter, HubAPI, KernelsAPI
from .state import state_path


class DS01Culler(Application):
    """Retire idle and over-limit servers, warning their users first (docs/culler.md)."""

    name = Unicode("ds01-culler")
    description = Unicode(__doc__.splitlines()[0] if __doc__ else "")

    enabled = Bool(
        True,
        help="""Run the culler with the hub.

        Read by ``startup.configure_services``: ``False`` registers no culler, and nothing is
        ever retired for idleness or run time.
        Default: ``True``. Example: ``c.DS01Culler.enabled = False``.
        """,
    ).tag(config=True)

    cull_every = Float(
        60.0,
        min=0.1,
        help="""Seconds between two cycles; each cycle looks at every running server.

        Warnings and retirements happen at cycles, so this is how late they can be.
        Default: ``60.0``. Example: ``c.DS01Culler.cull_every = 30``.
        """,
    ).tag(config=True)

    warn_at = List(
        Float(),
        [0.75, 0.9],
        minlen=1,
        help="""Fractions of a limit (idle timeout, max runtime) at which the user is warned.

        A retirement always comes after a warning, and never before the deadline a warning
        announced: a warning given late gives the user ``(1 - fraction)`` of the limit.
        Default: ``[0.75, 0.9]``. Example: ``c.DS01Culler.warn_at = [0.5, 0.8, 0.95]``.
        """,
    ).tag(config=True)

    keep_alive_max_age = Float(
        24 * 3600.0,
        min=0,
        help="""Seconds a touch of ``/workspace/.keep-alive`` counts as activity.

        ``touch /workspace/.keep-alive`` keeps a server alive this long (its idle time starts
        when this has passed); ``max_runtime`` still applies.
        Default: ``86400.0`` (24 h). Example: ``c.DS01Culler.keep_alive_max_age = 6 * 3600``.
        """,
    ).tag(config=True)

    gpu_window = Float(
        300.0,
        min=0,
        help="""Seconds of GPU utilization samples (one per cycle) averaged per device.

        Default: ``300.0``. Example: ``c.DS01Culler.gpu_window = 600``.
        """,
    ).tag(config=True)

    gpu_busy_percent = Float(
        5.0,
        min=0,
        help="""Mean utilization (percent, over ``gpu_window``) at which a GPU counts as in use.

        Default: ``5.0``. Example: ``c.DS01Culler.gpu_busy_percent = 10``.
        """,
    ).tag(config=True)

    cpu_busy_cores = Float(
        0.1,
        min=0,
        help="""CPU use of a server's container (cores, averaged since the previous cycle) at
        which it counts as in use; an idle JupyterLab uses about 0.01.

        Default: ``0.1``. Example: ``c.DS01Culler.cpu_busy_cores = 0.5``.
        """,
    ).tag(config=True)

    high_demand_share = Float(
        0.8,
        min=0,
        max=1,
        help="""Share of GPU capacity (GPU-equivalents) held by servers above which GPUs are in
        high demand, and idle timeouts of servers with GPUs shrink by ``high_demand_factor``.

        Default: ``0.8``. Example: ``c.DS01Culler.high_demand_share = 0.9``.
        """,
    ).tag(config=True)

    high_demand_factor = Float(
        0.5,
        min=0,
        max=1,
        help="""Factor applied to the idle timeout of servers with GPUs under high demand.

        ``1`` turns the high-demand rule off.
        Default: ``0.5``. Example: ``c.DS01Culler.high_demand_factor = 0.25``.
        """,
    ).tag(config=True)

    concurrency = Int(
        10,
        min=1,
        help="""Servers whose signals are read at the same time (Docker calls, kernel lists).

        Default: ``10``. Example: ``c.DS01Culler.concurrency = 20``.
        """,
    ).tag(config=True)

    request_timeout = Float(
        30.0,
        min=0.1,
        help="""Seconds before a call to the hub, a server or Docker counts as failed.

        A failed call keeps the servers it concerns; it is tried again next cycle.
        Default: ``30.0``. Example: ``c.DS01Culler.request_timeout = 10``.
        """,
    ).tag(config=True)

    state_file = Unicode(
        "",
        help="""The culler's state (warnings given, deadlines), read by the hub's home page.

        ``""`` means ``culler-state.json`` in ``$DS01_STATE_DIR``, else in the hub's working
        folder; ``configure_services`` replaces it with the absolute path it uses.
        Default: ``""``. Example: ``c.DS01Culler.state_file = "/srv/ds01/culler-state.json"``.
        """,
    ).tag(config=True)

    hub_api_url = Unicode(
        "",
        help="""The hub API the culler calls; ``""`` is the one the hub gives its services.

        Default: ``""``. Example: ``c.DS01Culler.hub_api_url = "http://127.0.0.1:8081/hub/api"``.
        """,
    ).tag(config=True)

    @default("log_level")
    def _info(self) -> int:
        return logging.INFO  # warnings, retirements and each failure belong in the hub's log

    @default("log_format")
    def _hub_like_format(self) -> str:
        return "[%(levelname)1.1s %(asctime)s.%(msecs).03d %(name)s] %(message)s"

    @default("log_datefmt")
    def _hub_like_datefmt(self) -> str:
        return "%Y-%m-%d %H:%M:%S"

    @validate("warn_at")
    def _fractions(self, proposal):
        value = proposal.value
        if any(not 0 < f < 1 for f in value):
            raise ValueError(f"warn_at must hold fractions between 0 and 1, got {value!r}")
        return sorted(set(value))

    def initialize(self, argv=None) -> None:
        raw = os.environ.get("DS01_CULLER_CONFIG")
        if raw:
            self.update_config(Config({"DS01Culler": json.loads(raw)}))
        self.parse_command_line(argv)

    def settings(self) -> Settings:
        from datetime import timedelta

        return Settings(
            warn_at=tuple(self.warn_at),
            keep_alive_max_age=timedelta(seconds=self.keep_alive_max_age),
            high_demand_share=self.high_demand_share,
            high_demand_factor=self.high_demand_factor,
        )

    def make_culler(self, environ=None) -> Culler:
        """The culler wired to this process's hub, engine (Docker, or the swarm's manager and
        nodes: ``engine.services.service_engine``), GPUs and limits file."""
        env = os.environ if environ is None else environ
        token = env.get("JUPYTERHUB_API_TOKEN", "")
        api_url = self.hub_api_url or env.get("JUPYTERHUB_API_URL", "")
        if not api_url or not token:
            raise SystemExit("ds01-culler: run it as a JupyterHub service (no hub API URL/token)")
        try:
            engine = service_engine(env, timeout=self.request_timeout)
        except ValueError as e:
            raise SystemExit(f"ds01-culler: {e}") from e
        try:
            inventory = service_inventory(engine, env, self.log)  # the swarm's, on a swarm
        except InventoryError as e:
            self.log.error("No GPU inventory (%s): servers with GPUs are never retired idle", e)
            inventory = None
        limits_file = env.get("DS01_LIMITS_FILE", "")
        if not limits_file:
            self.log.info("No limits file: the culler watches, but nothing has a time limit")
        return Culler(
            hub=HubAPI(api_url, token, self.request_timeout, max_clients=self.concurrency),
            kernels=KernelsAPI(self.request_timeout, max_clients=self.concurrency),
            engine=engine,
            gpus=GpuMeter(inventory, self.gpu_window, self.gpu_busy_percent),
            cgroups=CgroupCpu(),
            limits=LimitsSource(limits_file, bool(env.get("DS01_LIMITS_UNIX_GROUPS")), self.log),
            state_file=self.state_file or state_path(None, env),
            prefix=env.get("DS01_CONTAINER_PREFIX", "ds01"),
            settings=self.settings(),
            cpu_busy_cores=self.cpu_busy_cores,
            concurrency=self.concurrency,
            log=self.log,
            audit=audit_from_environment(env),
        )

    async def run(self, culler: Culler, stop: asyncio.Event) -> None:
        """A cycle every ``cull_every`` seconds until ``stop`` is set; no error ends the loop."""
        loop = asyncio.get_running_loop()
        self.log.info(
            "ds01-culler: a cycle every %gs, warnings at %s, state in %s",
            self.cull_every,
            ", ".join(f"{f:.0%}" for f in self.warn_at),
            culler.state_file,
        )
        while not stop.is_set():
            started = loop.time()
            try:
                await culler.cycle()
            except Exception:  # a bug must not stop the hub (it stops when a service dies)
                self.log.exception("The culler cycle failed; trying again next cycle")
            wait = max(0.0, self.cull_every - (loop.time() - started))
            try:
                await asyncio.wait_for(stop.wait(), wait)
            except asyncio.TimeoutError:
                pass

    def start(self) -> None:
        culler = self.make_culler()

        async def main() -> None:
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):  # how the hub stops its services
                loop.add_signal_handler(sig, stop.set)
            try:
                await self.run(culler, stop)
            finally:
                culler.close()

        asyncio.run(main())


def main(argv=None) -> None:
    app = DS01Culler.instance()
    app.initialize(argv)
    app.start()
    sys.exit(0)

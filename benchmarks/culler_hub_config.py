# Culler benchmark hub: the test hub's configuration (tests/integration/hub_config.py, itself the
# shipped jupyterhub_config.py plus a service token), with benchmarks/culler_cycle.py's
# NoopSpawner (a server is a record in the hub; nothing runs) and a service token holding exactly
# the ds01-culler role's scopes for the benchmark's own culler. The hub's managed culler is off.
import os
import sys

c = get_config()  # noqa: F821
repo = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
load_subconfig(os.path.join(repo, "tests", "integration", "hub_config.py"))  # noqa: F821
sys.path.insert(0, repo)

from benchmarks.culler_cycle import NoopSpawner  # noqa: E402
from ds01spawner.culler.registration import SCOPES  # noqa: E402
from ds01spawner.spawner.startup import configure_services  # noqa: E402

c.JupyterHub.spawner_class = NoopSpawner
c.NoopSpawner.stub_port = int(os.environ["DS01_BENCH_STUB_PORT"])
c.JupyterHub.log_level = "WARN"
c.Spawner.poll_interval = 30  # the hub's default, as in production
c.JupyterHub.concurrent_spawn_limit = 0
c.DS01Culler.enabled = False
configure_services(c, port=int(os.environ["DS01_HUB_PORT"]) + 2)
c.JupyterHub.services = [
    *c.JupyterHub.services,
    {"name": "ds01-culler-bench", "api_token": os.environ["DS01_BENCH_CULLER_TOKEN"]},
]
c.JupyterHub.load_roles = [
    *c.JupyterHub.load_roles,
    {"name": "ds01-culler-bench", "scopes": SCOPES, "services": ["ds01-culler-bench"]},
]

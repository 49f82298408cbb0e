# Benchmark hub: the top-level jupyterhub_config.py as shipped, plus one service token for the
# benchmark, and (for DS01_BENCH_VARIANT=plain) plain DockerSpawner in place of DS01Spawner.
# Ports, folders, token and container prefix come from the environment, set by
# tests/integration/hub.py's Hub (see benchmarks/spawn_latency.py).
import os
import sys

c = get_config()  # noqa: F821
repo = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
load_subconfig(os.path.join(repo, "jupyterhub_config.py"))  # noqa: F821

c.Authenticator.allow_all = True
c.JupyterHub.services = [{"name": "ds01-bench", "api_token": os.environ["DS01_TEST_TOKEN"]}]
c.JupyterHub.load_roles = [
    {
        "name": "ds01-bench",
        "scopes": ["admin:users", "admin:servers", "tokens", "list:users", "read:users"],
        "services": ["ds01-bench"],
    }
]
c.JupyterHub.log_level = "DEBUG" if os.environ.get("DS01_BENCH_DEBUG") else "INFO"
prefix = os.environ.get("DS01_TEST_PREFIX", "ds01bench")

if os.environ.get("DS01_BENCH_VARIANT") == "plain":
    sys.path.insert(0, repo)
    from benchmarks.plain_spawner import HostNetworkDockerSpawner

    c.JupyterHub.spawner_class = HostNetworkDockerSpawner
    c.DockerSpawner.prefix = prefix
    c.DockerSpawner.image = "ds01/base:latest"
    c.DockerSpawner.remove = True
    # The image has no USER and Jupyter Server refuses to run as root: same uid:gid as DS01 uses
    # for users without a system account, and a writable HOME.
    c.DockerSpawner.extra_create_kwargs = {"user": "1000:100"}
    c.DockerSpawner.environment = {"HOME": "/tmp"}
else:
    c.DS01Spawner.prefix = prefix
    c.DS01Spawner.stop_grace_seconds = 2

# Benchmark hub: the test hub's configuration (the top-level jupyterhub_config.py as shipped, plus
# a service token; see tests/integration/hub_config.py) and, for DS01_BENCH_VARIANT=plain, plain
# DockerSpawner in place of DS01Spawner. Ports, folders, token and container prefix come from the
# environment, set by harness/hub.py's Hub (see benchmarks/spawn_latency.py).
import os
import sys

c = get_config()  # noqa: F821
repo = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
load_subconfig(os.path.join(repo, "tests", "integration", "hub_config.py"))  # noqa: F821

c.JupyterHub.log_level = "DEBUG" if os.environ.get("DS01_BENCH_DEBUG") else "INFO"
c.Spawner.poll_interval = 30  # the hub's default, as in production
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

# Test hub: the top-level jupyterhub_config.py as shipped, plus one service with an API token that
# the tests use to create users, tokens and servers. Ports and folders come from the environment
# (see the top of jupyterhub_config.py), set by harness/hub.py.
import json
import os

c = get_config()  # noqa: F821
load_subconfig(os.path.join(os.path.dirname(__file__), "..", "..", "jupyterhub_config.py"))  # noqa: F821

c.Authenticator.allow_all = True
c.JupyterHub.services = [
    *c.JupyterHub.services,
    {"name": "ds01-tests", "api_token": os.environ["DS01_TEST_TOKEN"]},
]
c.JupyterHub.load_roles = [
    *c.JupyterHub.load_roles,
    {
        "name": "ds01-tests",
        "scopes": [
            "admin:users",
            "admin:servers",
            "tokens",
            "list:users",
            "read:users",
            "admin:groups",
        ],
        "services": ["ds01-tests"],
    },
]
# No limits unless a test gives a limits file.
c.DS01Spawner.limits_file = os.environ.get("DS01_TEST_LIMITS", "")
c.DS01Spawner.prefix = os.environ.get("DS01_TEST_PREFIX", "ds01test")
c.DS01Spawner.stop_grace_seconds = int(os.environ.get("DS01_TEST_GRACE", "2"))
c.JupyterHub.log_level = "DEBUG" if os.environ.get("DS01_TEST_DEBUG") else "INFO"
# GPUs: simulated (also on hosts with a driver), 4 whole GPUs unless a test asks for others; a
# launch gets no GPU unless it asks or the test sets a default.
A100 = {"name": "NVIDIA A100-SXM4-40GB", "memory_mib": 40960}
c.DS01Spawner.gpu_inventory = "simulated"
c.DS01Spawner.simulated_gpus = json.loads(os.environ.get("DS01_TEST_GPUS", "null")) or [A100] * 4
c.DS01Spawner.simulated_gpu_state_file = os.path.join(os.environ["DS01_STATE_DIR"], "gpus.json")
c.DS01Spawner.default_gpus = int(os.environ.get("DS01_TEST_DEFAULT_GPUS", "0"))
# Poll servers often so that a killed container is noticed within seconds.
c.Spawner.poll_interval = 2
# A command that fails on purpose, for the crash-while-starting test.
if os.environ.get("DS01_TEST_CMD"):
    c.DS01Spawner.cmd = json.loads(os.environ["DS01_TEST_CMD"])
if os.environ.get("DS01_TEST_INVENTORY"):
    c.DS01Spawner.gpu_inventory = os.environ["DS01_TEST_INVENTORY"]
# The GPU queue: off unless a test sets its timeout (seconds); DS01's start_timeout covers it.
c.DS01Spawner.gpu_queue_timeout = int(os.environ.get("DS01_TEST_GPU_QUEUE", "0"))
c.DS01Spawner.gpu_queue_recheck_seconds = 1
# Spawn form settings a test may change (JSON).
if os.environ.get("DS01_TEST_TEMPLATES"):
    c.DS01Spawner.project_templates = json.loads(os.environ["DS01_TEST_TEMPLATES"])
if os.environ.get("DS01_TEST_OFFERED_IMAGES"):
    c.DS01Spawner.offered_images = json.loads(os.environ["DS01_TEST_OFFERED_IMAGES"])
# Culler settings of a test: JSON {"<DS01Culler setting>": value}, e.g. {"cull_every": 1}.
for key, value in json.loads(os.environ.get("DS01_TEST_CULLER") or "{}").items():
    setattr(c.DS01Culler, key, value)
# Project images: a small context limit and short timeouts for the image tests.
if os.environ.get("DS01_TEST_BUILD_TIMEOUT"):
    c.DS01Spawner.image_build_timeout = int(os.environ["DS01_TEST_BUILD_TIMEOUT"])
if os.environ.get("DS01_TEST_CONTEXT_LIMIT"):
    c.DS01Spawner.image_context_limit = os.environ["DS01_TEST_CONTEXT_LIMIT"]
if os.environ.get("DS01_TEST_KEEP_IMAGES"):
    c.DS01Spawner.images_kept_per_project = int(os.environ["DS01_TEST_KEEP_IMAGES"])
# 0: every launch answers 202 at once and its outcome is read from the progress stream
if os.environ.get("DS01_TEST_SLOW_SPAWN_TIMEOUT"):
    c.JupyterHub.tornado_settings = {
        **c.JupyterHub.get("tornado_settings", {}),
        "slow_spawn_timeout": float(os.environ["DS01_TEST_SLOW_SPAWN_TIMEOUT"]),
    }
# Settings a test gives in a parent section instead (JSON {"<setting>": "DockerSpawner" or
# "Spawner"}): the spawner and every service must still see them (issue 15 item 3).
for key, section in json.loads(os.environ.get("DS01_TEST_SECTIONS") or "{}").items():
    setattr(getattr(c, section), key, c.DS01Spawner.pop(key))
# User servers on their own origin: http://<user>.localhost:<port> (requests go to 127.0.0.1).
if os.environ.get("DS01_TEST_SUBDOMAINS"):
    c.JupyterHub.subdomain_host = f"http://localhost:{os.environ['DS01_HUB_PORT']}"
# The hub's own API on another address (the Swarm mode: nodes reach it there, harness.hub.swarm_env)
if os.environ.get("DS01_TEST_HUB_IP"):
    c.JupyterHub.hub_ip = os.environ["DS01_TEST_HUB_IP"]
# Any other DS01Spawner settings of a test: JSON {"<setting>": value}.
for key, value in json.loads(os.environ.get("DS01_TEST_SPAWNER") or "{}").items():
    setattr(c.DS01Spawner, key, value)
# the shipped config checked its own settings; check what this file changed, as it would
from ds01spawner.spawner.startup import check_config, configure_services  # noqa: E402

check_config(c)
configure_services(c, port=int(os.environ["DS01_HUB_PORT"]) + 2)
# The session panel (issue 18): how often JupyterLab's status bar asks; the image a test runs
# (a freshly built base image before ds01/base:latest moves to it).
if os.environ.get("DS01_TEST_SESSION_POLL"):
    c.DS01Spawner.session_poll_seconds = float(os.environ["DS01_TEST_SESSION_POLL"])
if os.environ.get("DS01_TEST_IMAGE"):
    c.DS01Spawner.image = os.environ["DS01_TEST_IMAGE"]

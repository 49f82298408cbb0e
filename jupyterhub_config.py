# JupyterHub configuration for ds01spawner.
#
# As it is, this file runs the demo: JupyterHub on http://127.0.0.1:8000 with SQLite, named servers,
# the DS01 spawner and a demo login (users alice, bob and admin; password "ds01-demo").
# Start it with `scripts/demo.sh`. Lines marked PRODUCTION say what to change on a real server.
#
# Environment variables (all optional) let tests and admins move the demo without editing the file:
#   DS01_HUB_PORT        public port of the proxy (8000)
#   DS01_STATE_DIR       where the hub keeps its database, cookie secret and proxy pid (./.ds01)
#   DS01_WORKSPACE_ROOT  workspace root template (<state dir>/workspaces/{username})
#   DS01_DEMO_PASSWORD   the demo password (ds01-demo)
#   DS01_DOCKER_HOST     Docker engine URL for the spawner (the environment's DOCKER_HOST)
import os

c = get_config()  # noqa: F821 - provided by JupyterHub when it loads this file

here = os.path.dirname(os.path.abspath(__file__))
state_dir = os.path.abspath(os.environ.get("DS01_STATE_DIR", os.path.join(here, ".ds01")))
os.makedirs(state_dir, exist_ok=True)
port = int(os.environ.get("DS01_HUB_PORT", "8000"))

# A crash of the hub (segfault, abort) appends the Python stack of every thread to this file;
# `kill -USR1 <hub pid>` appends it without stopping the hub (docs/security-availability.md).
from ds01spawner.crash import enable_crash_traces  # noqa: E402

enable_crash_traces(os.path.join(state_dir, "hub-crash.log"))

# ---- network: loopback only ----
# PRODUCTION: put TLS in front (c.JupyterHub.ssl_cert / ssl_key, or a reverse proxy such as nginx
# terminating TLS) and bind the public side to the server's address: c.JupyterHub.ip = "0.0.0.0".
c.JupyterHub.ip = "127.0.0.1"
c.JupyterHub.port = port
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = port + 81  # the hub's own API, reached by servers on the host network
c.ConfigurableHTTPProxy.api_url = f"http://127.0.0.1:{port + 1}"

# ---- state ----
# PRODUCTION: SQLite is fine for one server; keep state_dir on a disk that is backed up.
c.JupyterHub.db_url = f"sqlite:///{os.path.join(state_dir, 'jupyterhub.sqlite')}"
c.JupyterHub.cookie_secret_file = os.path.join(state_dir, "jupyterhub_cookie_secret")
c.ConfigurableHTTPProxy.pid_file = os.path.join(state_dir, "jupyterhub-proxy.pid")

# ---- login ----
# Demo: any of these users with the shared password. PRODUCTION: use PAM for system users
#   c.JupyterHub.authenticator_class = "pam"
# or OAuth (pip install oauthenticator), e.g. c.JupyterHub.authenticator_class = "github".
c.JupyterHub.authenticator_class = "dummy"
c.DummyAuthenticator.password = os.environ.get("DS01_DEMO_PASSWORD", "ds01-demo")
c.Authenticator.allowed_users = {"alice", "bob", "admin"}
c.Authenticator.admin_users = {"admin"}
# Groups give limits (see docs/limits.md). PRODUCTION: manage groups in the admin panel, or let
# the authenticator set them (Authenticator.manage_groups), or read Unix groups with
# c.DS01Spawner.limits_include_unix_groups = True.
c.JupyterHub.load_groups = {
    "students": {"users": ["alice", "bob"]},
    "researchers": {"users": ["bob"]},
    "staff": {"users": ["admin"]},
}

# ---- servers: one named server per project ----
c.JupyterHub.allow_named_servers = True
# After login, land on the home page (the project list) instead of starting the default server.
c.JupyterHub.default_url = "/hub/home"
# 0: JupyterHub does not cap how many named servers (projects) a user has; how many run or
# start at once is max_servers of the DS01 limits file, which counts launches waiting for a GPU
# or building too, so one user cannot fill the hub-wide pending-spawn limit below.
c.JupyterHub.named_server_limit_per_user = 0
c.JupyterHub.concurrent_spawn_limit = 100  # pending launches of all users together (429 above)
# Servers keep running across hub restarts; the spawner finds them again from its state.
c.JupyterHub.cleanup_servers = False
# No start_timeout here: it wraps the whole start, a project image build and a wait in the GPU
# queue included, and DS01's default (image_build_timeout + gpu_queue_timeout + http_timeout +
# 60 s) covers them; check_config below refuses a shorter one (docs/images.md, docs/gpus.md).
# Servers that hang are still given up after http_timeout.
c.JupyterHub.spawner_class = "ds01"

# ---- the DS01 spawner (see docs/configuration.md for every setting) ----
# PRODUCTION: for system users, c.DS01Spawner.workspace_root = "/home/{username}/workspace"
c.DS01Spawner.workspace_root = os.environ.get(
    "DS01_WORKSPACE_ROOT", os.path.join(state_dir, "workspaces", "{username}")
)
c.DS01Spawner.image = "ds01/base:latest"
c.DS01Spawner.network_name = "host"  # one loopback port per server; see docs/admin-guide.md
# PRODUCTION: keep containers away from other users' servers and the proxy's API on loopback, and
# put each user's servers on their own origin (docs/security-availability.md#network):
#   c.DS01Spawner.network_isolation = "uid-firewall"
#   c.JupyterHub.subdomain_host = "https://ds01.example.org"   # wildcard DNS and certificate
c.DS01Spawner.stop_grace_seconds = 30

# ---- project images ----
# A project with a Dockerfile gets its own image, built at launch when its content changed
# (docs/images.md). Dockerfiles may start FROM these images only; they must exist locally.
# PRODUCTION: add the CUDA variants you provide, e.g. ["ds01/*", "nvidia/cuda:12.4*"].
c.DS01Spawner.allowed_base_images = ["ds01/*"]
c.DS01Spawner.image_build_timeout = 600

# ---- GPUs ----
# With an NVIDIA driver, the real GPUs and MIG instances (NVML). Without one (the demo machine),
# a simulated server of 4 GPUs, one split into MIG slices; everything shown says "simulated".
# PRODUCTION: c.DS01Spawner.gpu_inventory = "nvml" (the hub then refuses GPU launches with a
# clear message while NVML fails, instead of silently running without GPUs).
if os.path.exists("/proc/driver/nvidia/version"):
    c.DS01Spawner.gpu_inventory = "nvml"
else:
    c.DS01Spawner.gpu_inventory = "simulated"
    c.DS01Spawner.simulated_gpus = [
        {"name": "NVIDIA A100-SXM4-40GB", "memory_mib": 40960},
        {"name": "NVIDIA A100-SXM4-40GB", "memory_mib": 40960},
        {"name": "NVIDIA A100-SXM4-40GB", "memory_mib": 40960},
        {
            "name": "NVIDIA A100-SXM4-40GB",
            "memory_mib": 40960,
            "mig_profiles": ["3g.20gb", "2g.10gb", "2g.10gb"],
        },
    ]
    c.DS01Spawner.simulated_gpu_state_file = os.path.join(state_dir, "simulated-gpus.json")
c.DS01Spawner.default_gpus = 1
# A launch that finds no free GPU waits up to 15 min in a fair queue, its place in line shown on
# the progress page (docs/gpus.md); 0 turns the queue off (immediate HTTP 429). DS01's default
# start_timeout covers the wait (see the start_timeout note above).
c.DS01Spawner.gpu_queue_timeout = 15 * 60
c.DS01Spawner.gpu_queue_file = os.path.join(state_dir, "gpu-queue.json")

# ---- limits ----
# Per-user and per-group limits, checked at every launch. The demo uses the commented example.
# PRODUCTION: c.DS01Spawner.limits_file = "/etc/ds01/limits.yaml" (start from that example).
c.DS01Spawner.limits_file = os.environ.get(
    "DS01_LIMITS_FILE", os.path.join(here, "docs", "limits.example.yaml")
)
if os.environ.get("DS01_DOCKER_HOST"):
    c.DS01Spawner.client_kwargs = {"base_url": os.environ["DS01_DOCKER_HOST"]}

# ---- the culler (docs/culler.md) ----
# Retires servers idle longer than their idle_timeout or running longer than their max_runtime
# (limits file), after warnings at 75% and 90% of the limit. Settings: c.DS01Culler.<name>.
# Its state file (deadlines and warnings, shown on the home page) lives with the hub's state:
c.DS01Culler.state_file = os.path.join(state_dir, "culler-state.json")
# The audit log: one JSON line per event, rotated at 10 MiB (docs/audit-log.md).
# PRODUCTION: e.g. "/var/log/ds01/audit.jsonl".
c.DS01Spawner.audit_log_file = os.path.join(state_dir, "audit.jsonl")

# ---- the spawn form and the home page ----
# The spawn form (projects, new project from a template, GPU choice, limits) is DS01Spawner's
# own; c.DS01Spawner.options_form_template replaces it. Images users may pick instead of their
# project's Dockerfile: c.DS01Spawner.offered_images = {"ds01/base:latest": "Python 3, JupyterLab"}
# configure_pages puts DS01's home page (projects, GPUs, runtime left, Retire) in front.
from ds01spawner.web.pages import configure_pages  # noqa: E402

configure_pages(c)

# ---- start-up checks and DS01 services ----
# Refuse to start, with one clear line, when the limits file is broken or the GPU inventory cannot
# work (NVML failing, a bad simulated_gpus list). Keep this at the end of the file.
# Also registers the ds01-limits service: `check limits` as JSON at
# /services/ds01-limits/api/limits (docs/limits.md), and the ds01-culler service.
from ds01spawner.spawner.startup import check_config, configure_services  # noqa: E402

check_config(c)
configure_services(c, port=port + 2)

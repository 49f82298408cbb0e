"""Pure builders for the Docker container of one server.

``build_container_spec`` turns a :class:`ServerSpec` (everything the spawner decided) into two plain
dicts: keyword arguments for ``APIClient.create_container`` and for
``APIClient.create_host_config``. No I/O happens here, so tests compare dicts.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

LABEL_PREFIX = "ds01"
WORKSPACE_MOUNT = "/workspace"
HOST_NETWORK = "host"

# The container's main process (under Docker's init). It makes the writable HOME, starts Jupyter
# in /workspace, and on SIGTERM (a retire) passes the signal to *every* process of the user, then
# waits until all have exited, so a training run in a terminal or in the background can save a
# checkpoint. Docker sends SIGKILL when the grace period (stop_timeout) is over.
START_SCRIPT = """\
mkdir -p "$HOME" && cd "$DS01_WORKSPACE" || exit 1
term() { stopping=1; kill -TERM -1 2>/dev/null; }
trap term TERM INT
"$@" &
child=$!
wait "$child"; status=$?
[ -n "$stopping" ] || exit "$status"
wait "$child" 2>/dev/null
while kill -0 -1 2>/dev/null; do sleep 0.2; done
exit 0
"""

_DOCKER_SOCKETS = ("docker.sock", "containerd.sock", "podman.sock")

#: Keys of DockerSpawner.extra_host_config an admin may set. Anything that could undo the
#: isolation (privileged, pid/ipc/userns "host", devices, binds, capabilities) is not here.
ALLOWED_EXTRA_HOST_CONFIG = frozenset(
    {
        "shm_size",
        "pids_limit",
        "ulimits",
        "mem_reservation",
        "memswap_limit",
        "cpu_shares",
        "cpuset_cpus",
        "cpuset_mems",
        "blkio_weight",
        "dns",
        "dns_search",
        "extra_hosts",
        "log_config",
        "storage_opt",
        "tmpfs",
        "oom_score_adj",
    }
)
#: Keys of DockerSpawner.extra_create_kwargs an admin may set (environment and labels are merged).
ALLOWED_EXTRA_CREATE = frozenset({"environment", "labels", "hostname", "domainname", "healthcheck"})


class SpecError(ValueError):
    """A container spec that DS01 refuses to create (an admin's configuration error)."""


@dataclass(frozen=True)
class ServerSpec:
    """What one server's container is made of. Every field is decided before Docker is called."""

    name: str  # container name (names.container_name)
    image: str
    command: Sequence[str]  # e.g. ["jupyterhub-singleuser"] + Spawner.args
    env: Mapping[str, str]  # the hub's environment for the server (token included: never log)
    username: str
    project: str
    server_name: str  # "" for the default server
    uid: int
    gid: int
    project_dir: str  # host path, resolved; mounted read-write at /workspace
    home: str  # HOME inside the container, outside /workspace
    created_at: datetime
    network: str = HOST_NETWORK  # "host" or a Docker network name
    port: int = 8888  # where jupyterhub-singleuser listens
    supplementary_gids: Sequence[int] = ()
    cap_add: Sequence[str] = ()
    stop_grace_seconds: int = 30
    mem_limit: str | int | None = None
    cpu_limit: float | None = None
    extra_binds: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    extra_labels: Mapping[str, str] = field(default_factory=dict)
    gpu_uuids: Sequence[str] = ()  # devices assigned to this server (GPU-... / MIG-...)
    gpu_equivalents: float = 0.0
    gpu_runtime: bool = True  # False with the simulated inventory: no DeviceRequest
    shm_size: int | None = None  # bytes of /dev/shm (from the limits file)
    pids_limit: int | None = None
    extra_host_config: Mapping[str, object] = field(default_factory=dict)
    extra_create_kwargs: Mapping[str, object] = field(default_factory=dict)


def labels_for(spec: ServerSpec) -> dict[str, str]:
    """The ``ds01.*`` labels that identify a DS01 container (and rebuild state from it)."""
    labels = {
        f"{LABEL_PREFIX}.managed": "true",
        f"{LABEL_PREFIX}.user": spec.username,
        f"{LABEL_PREFIX}.project": spec.project,
        f"{LABEL_PREFIX}.server": spec.server_name,
        f"{LABEL_PREFIX}.created": spec.created_at.isoformat(timespec="seconds"),
        f"{LABEL_PREFIX}.gpus": ",".join(spec.gpu_uuids),
        f"{LABEL_PREFIX}.gpu_equivalents": f"{spec.gpu_equivalents:g}",
    }
    for key, value in spec.extra_labels.items():
        labels.setdefault(key, value)
    return labels


#: Where container engines put their API sockets (rootless ones under /run/user/<uid>/).
ENGINE_SOCKETS = (
    "/var/run/docker.sock",
    "/run/docker.sock",
    "/run/containerd/containerd.sock",
    "/run/podman/podman.sock",
    "/run/user",
    "/var/lib/docker",
    "/var/lib/containerd",
)


def refused_bind(source: str, sockets: tuple[str, ...] = ENGINE_SOCKETS) -> str | None:
    """Why ``source`` must not be bind-mounted, or None. Looks at the **resolved** path: an
    engine socket itself, any folder that holds one (``/var/run``, ``/run``, ``/``), or the
    engine's own state, wherever links point."""
    real = os.path.realpath(source)
    if os.path.basename(real) in _DOCKER_SOCKETS or os.path.basename(source) in _DOCKER_SOCKETS:
        return "a container engine socket gives root on the host"
    for sock in sockets:
        for path in {sock, os.path.realpath(sock)}:
            if path == real or path.startswith(real.rstrip("/") + "/"):
                return f"it holds {path}, and a container engine socket gives root on the host"
    return None


def check_binds(binds: Mapping[str, Mapping[str, str]]) -> None:
    """Refuse a bind mount of the Docker (or containerd) socket, or of any folder above one
    (it would give root on the host), by the mount source's resolved real path."""
    for source in binds:
        why = refused_bind(source)
        if why:
            raise SpecError(
                f"Refusing to mount {source}: {why}. Remove it from DockerSpawner.volumes."
            )


def build_container_spec(spec: ServerSpec) -> tuple[dict, dict]:
    """Return ``(create_kwargs, host_config_kwargs)`` for docker-py's low-level API."""
    if spec.uid == 0 or spec.gid == 0:
        raise SpecError("DS01 never runs a server as root (uid or gid 0)")
    binds = {spec.project_dir: {"bind": WORKSPACE_MOUNT, "mode": "rw"}}
    for source, target in spec.extra_binds.items():
        if target.get("bind") == WORKSPACE_MOUNT or source == spec.project_dir:
            raise SpecError(f"{source} would hide the project mount at {WORKSPACE_MOUNT}")
        binds[source] = dict(target)
    check_binds(binds)

    env = dict(spec.env)
    env.update(
        {
            "HOME": spec.home,
            "DS01_USER": spec.username,
            "DS01_PROJECT": spec.project,
            "DS01_SERVER": spec.server_name,
            "DS01_WORKSPACE": WORKSPACE_MOUNT,
            "JUPYTERHUB_ROOT_DIR": WORKSPACE_MOUNT,
            "SHELL": "/bin/bash",
            # "void" hides every GPU even where the image or the runtime default says "all".
            "NVIDIA_VISIBLE_DEVICES": ",".join(spec.gpu_uuids) or "void",
            "CUDA_VISIBLE_DEVICES": ",".join(spec.gpu_uuids),
        }
    )

    host_config: dict = {
        "binds": binds,
        "network_mode": spec.network,
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges:true"],
        "init": True,
        "auto_remove": False,  # removed by the spawner, after its exit is logged
    }
    if spec.gpu_uuids and spec.gpu_runtime:
        host_config["device_requests"] = [
            {"driver": "nvidia", "device_ids": list(spec.gpu_uuids), "capabilities": [["gpu"]]}
        ]
    if spec.cap_add:
        host_config["cap_add"] = list(spec.cap_add)
    if spec.supplementary_gids:
        host_config["group_add"] = [str(g) for g in spec.supplementary_gids]
    if spec.mem_limit is not None:
        host_config["mem_limit"] = spec.mem_limit
    if spec.cpu_limit is not None:
        host_config["cpu_period"] = 100_000
        host_config["cpu_quota"] = int(spec.cpu_limit * 100_000)

    create_kwargs: dict = {
        "name": spec.name,
        "image": spec.image,
        "command": ["/bin/sh", "-c", START_SCRIPT, "ds01-start", *spec.command],
        "environment": env,
        "user": f"{spec.uid}:{spec.gid}",
        "working_dir": WORKSPACE_MOUNT,
        "labels": labels_for(spec),
        "volumes": [WORKSPACE_MOUNT]
        + [b["bind"] for s, b in binds.items() if s != spec.project_dir],
        "stop_signal": "SIGTERM",
        "stop_timeout": spec.stop_grace_seconds,
    }
    if spec.network != HOST_NETWORK:
        create_kwargs["ports"] = [spec.port]
    _merge_extras(spec, create_kwargs, host_config)
    # the user's limits (limits file) win over the admin's global extra_host_config
    if spec.shm_size is not None:
        host_config["shm_size"] = spec.shm_size
    if spec.pids_limit is not None:
        host_config["pids_limit"] = spec.pids_limit
    return create_kwargs, host_config


def _merge_extras(spec: ServerSpec, create_kwargs: dict, host_config: dict) -> None:
    refused = sorted(set(spec.extra_host_config) - ALLOWED_EXTRA_HOST_CONFIG)
    if refused:
        raise SpecError(
            f"DockerSpawner.extra_host_config may not set {', '.join(refused)}; "
            f"allowed: {', '.join(sorted(ALLOWED_EXTRA_HOST_CONFIG))}"
        )
    refused = sorted(set(spec.extra_create_kwargs) - ALLOWED_EXTRA_CREATE)
    if refused:
        raise SpecError(
            f"DockerSpawner.extra_create_kwargs may not set {', '.join(refused)}; "
            f"allowed: {', '.join(sorted(ALLOWED_EXTRA_CREATE))}"
        )
    host_config.update(spec.extra_host_config)
    for key, value in spec.extra_create_kwargs.items():
        if key == "environment":
            extra_env = {k: v for k, v in dict(value).items() if k not in create_kwargs[key]}
            create_kwargs[key] = {**extra_env, **create_kwargs[key]}
        elif key == "labels":
            extra = {k: v for k, v in dict(value).items() if not k.startswith(f"{LABEL_PREFIX}.")}
            create_kwargs[key] = {**extra, **create_kwargs[key]}
        else:
            create_kwargs[key] = value

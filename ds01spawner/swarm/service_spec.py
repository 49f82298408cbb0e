"""Pure builder of the Swarm service that runs one server, from the single-engine container spec.

``service_spec`` takes what :func:`ds01spawner.spawner.container_spec.build_container_spec` returns
(keyword arguments for ``APIClient.create_container`` and ``APIClient.create_host_config``), the
node DS01 chose and the GPU request, and returns keyword arguments for
``APIClient.create_service``: ``api.create_service(**service_spec(...))``. No I/O happens here.

A server is a service with exactly one task: replicated, 1 replica, restart condition ``none``
(DS01 never restarts a server; an exited task stays exited), on the host network (no routing
mesh, no published ports), pinned to the chosen node by ``node.id==<id>``. DS01 picks the node
and the number of devices; Swarm's scheduler picks which named device of that node (generic
resources are exclusive). See docs/scale-out.md.

Every host-config key the single-engine path may set is in :data:`HOST_CONFIG_FIELDS`, with what
it becomes on Swarm; a key that Swarm cannot express and that is not safe to drop raises
:class:`SwarmSpecError` (an admin's configuration sentence), and so does any key not listed.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from typing import Any

from docker.types import Healthcheck
from docker.utils import parse_bytes

from ..projects.names import container_name

HOST_NETWORK = "host"
GPU_LABEL = "ds01.gpus"
GPU_REQUEST_LABEL = "ds01.gpu_request"
NODE_LABEL = "ds01.node"
#: Prefix of the variables Swarm sets in a task for its assigned generic resources.
RESOURCE_ENV_PREFIX = "DOCKER_RESOURCE_"
#: The first API version whose ContainerSpec has ``Privileges.NoNewPrivileges`` (Docker 27).
NO_NEW_PRIVILEGES_API = (1, 46)
#: Swarm's rule for service names (swarmkit: a DNS name component, at most 63 characters).
_SERVICE_NAME_RE = re.compile(r"^[a-zA-Z0-9](?:[-_]*[A-Za-z0-9]+)*$")
_KIND_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
_NODE_ID_RE = re.compile(r"^[a-z0-9]+$")

#: What each host-config key of the single-engine spec becomes on Swarm (docs/scale-out.md).
HOST_CONFIG_FIELDS: dict[str, str] = {
    "binds": "ContainerSpec.Mounts (type bind; 'ro' -> ReadOnly; SELinux z/Z refused)",
    "network_mode": "TaskTemplate.Networks [host]; any other network is refused",
    "cap_drop": "ContainerSpec.CapabilityDrop (API 1.41)",
    "cap_add": "ContainerSpec.CapabilityAdd (API 1.41)",
    "security_opt": "no-new-privileges: ContainerSpec.Privileges.NoNewPrivileges from API 1.46, "
    "before that the node's daemon setting no-new-privileges (node-settings prints it); "
    "any other option is refused",
    "init": "ContainerSpec.Init",
    "auto_remove": "dropped: the spawner removes the service, which removes its task's container",
    "device_requests": "dropped: the NVIDIA runtime exposes the device Swarm assigns "
    "(DOCKER_RESOURCE_<KIND>), requested as a generic resource",
    "group_add": "ContainerSpec.Groups",
    "mem_limit": "Resources.Limits.MemoryBytes",
    "cpu_period": "with cpu_quota: Resources.Limits.NanoCPUs",
    "cpu_quota": "with cpu_period: Resources.Limits.NanoCPUs",
    "shm_size": "a tmpfs mount at /dev/shm (SizeBytes, mode 1777)",
    "pids_limit": "Resources.Limits.Pids (API 1.41)",
    "ulimits": "ContainerSpec.Ulimits (API 1.41)",
    "mem_reservation": "Resources.Reservations.MemoryBytes",
    "dns": "ContainerSpec.DNSConfig.Nameservers",
    "dns_search": "ContainerSpec.DNSConfig.Search",
    "extra_hosts": "ContainerSpec.Hosts",
    "log_config": "TaskTemplate.LogDriver",
    "tmpfs": "tmpfs mounts (size= and mode= only; other options refused)",
    "memswap_limit": "refused: a service cannot limit swap",
    "cpu_shares": "refused: a service cannot set CPU shares",
    "cpuset_cpus": "refused: a service cannot pin CPUs",
    "cpuset_mems": "refused: a service cannot pin memory nodes",
    "blkio_weight": "refused: a service cannot set a block I/O weight",
    "storage_opt": "refused: a service cannot set storage options",
    "oom_score_adj": "refused: a service cannot set the OOM score (API 1.41)",
}
_REFUSED = {k for k, v in HOST_CONFIG_FIELDS.items() if v.startswith("refused")}
#: Create-container keys that carry over (``volumes`` is implied by the mounts, ``name`` names the
#: service, ``ports`` only exists off the host network, which is refused).
CREATE_FIELDS = frozenset(
    {
        "name",
        "image",
        "command",
        "environment",
        "user",
        "working_dir",
        "labels",
        "volumes",
        "stop_signal",
        "stop_timeout",
        "hostname",
        "healthcheck",
        "ports",
    }
)


class SwarmSpecError(ValueError):
    """A server spec that cannot run as a Swarm service; str() is a sentence for the admin."""


def service_name(container_name: str) -> str:
    """The service name for a server's container name: valid for Swarm, stable, collision-free.

    Container names carry a '.' (``ds01-alice.proj``), which Swarm refuses; it becomes '-', and a
    short hash of the whole container name keeps ``a-b.c`` and ``a.b-c`` apart.
    """
    digest = hashlib.sha256(container_name.encode()).hexdigest()[:10]
    readable = re.sub(r"[^A-Za-z0-9_-]+", "-", container_name).strip("-_")[:50].strip("-_")
    return f"{readable}-{digest}" if readable else f"ds01-{digest}"


def gpu_kind_env(kind: str) -> str:
    """The variable in which a task sees its devices of ``kind`` (Swarm upper-cases the kind)."""
    return RESOURCE_ENV_PREFIX + kind.upper()


def _api_at_least(api_version: str, wanted: tuple[int, int]) -> bool:
    try:
        major, minor = (int(p) for p in api_version.split(".")[:2])
    except ValueError as e:
        raise SwarmSpecError(f"Unknown Docker API version {api_version!r}") from e
    return (major, minor) >= wanted


def _bind_mounts(binds: Mapping[str, Mapping[str, str]]) -> list[dict]:
    mounts = []
    for source, target in binds.items():
        read_only = False
        for option in filter(None, str(target.get("mode", "rw")).split(",")):
            if option in ("ro", "rw"):
                read_only = option == "ro"
            else:
                raise SwarmSpecError(
                    f"The bind mount of {source} has option {option!r}, which a Swarm service "
                    "cannot set; use 'ro' or 'rw'."
                )
        mounts.append(
            {"Type": "bind", "Source": source, "Target": target["bind"], "ReadOnly": read_only}
        )
    return mounts


def _tmpfs_mount(target: str, options: str) -> dict:
    tmpfs: dict[str, int] = {}
    for option in filter(None, options.split(",")):
        key, _, value = option.partition("=")
        if key == "size" and value:
            tmpfs["SizeBytes"] = parse_bytes(value)
        elif key == "mode" and value:
            tmpfs["Mode"] = int(value, 8)
        elif key != "rw":
            raise SwarmSpecError(
                f"The tmpfs at {target} has option {option!r}; a Swarm service sets only "
                "size= and mode= of a tmpfs."
            )
    mount: dict[str, Any] = {"Type": "tmpfs", "Target": target, "ReadOnly": False}
    if tmpfs:
        mount["TmpfsOptions"] = tmpfs
    return mount


def _tmpfs_mounts(tmpfs: Any) -> list[dict]:
    if isinstance(tmpfs, Mapping):
        items = [(str(k), str(v or "")) for k, v in tmpfs.items()]
    else:
        items = [tuple((str(t) + ":").split(":", 2)[:2]) for t in tmpfs]  # "path:opts"
    return [_tmpfs_mount(path, opts) for path, opts in items]


def _env(environment: Mapping[str, str], gpu_kind: str, void_kinds: Iterable[str]) -> list[str]:
    """The service's environment: the single-engine one without its device choice.

    ``NVIDIA_VISIBLE_DEVICES=void`` and an EMPTY ``DOCKER_RESOURCE_<KIND>`` for every kind that
    was not requested keep an image's ENV (a user's image is not trusted) from naming devices:
    the NVIDIA runtime reads the configured ``DOCKER_RESOURCE_*`` variables first and joins
    their values. Empty, not ``void``: one ``void`` among them voids the whole list, so a server
    on a node with two kinds (two MIG profiles, or GPUs and slices) would get no device at all
    (found in review, nvidia-container-toolkit's ``DevicesFromEnvvars``); a set but empty
    variable overrides the image's and adds nothing, and all of them empty is "no device". The
    requested kind's variable is left to Swarm, which sets it to the devices it assigned.
    """
    drop = {"NVIDIA_VISIBLE_DEVICES", "CUDA_VISIBLE_DEVICES"}
    env = {k: v for k, v in environment.items() if k not in drop}
    env["NVIDIA_VISIBLE_DEVICES"] = "void"
    for kind in sorted(set(void_kinds) - {gpu_kind}):
        env[gpu_kind_env(kind)] = ""
    return [f"{k}={v}" for k, v in env.items()]


def _refuse_unknown(create_kwargs: Mapping, host_config: Mapping) -> None:
    unknown = sorted(set(host_config) - set(HOST_CONFIG_FIELDS))
    refused = sorted(k for k in host_config if k in _REFUSED)
    if refused:
        why = "; ".join(HOST_CONFIG_FIELDS[k].removeprefix("refused: ") for k in refused)
        raise SwarmSpecError(
            f"On a swarm, servers cannot have {', '.join(refused)} ({why}): remove "
            "it from DockerSpawner.extra_host_config."
        )
    if unknown:
        raise SwarmSpecError(f"DS01 does not know how to run {', '.join(unknown)} on a swarm.")
    if "domainname" in create_kwargs:
        raise SwarmSpecError(
            "A Swarm service cannot set a domain name: remove 'domainname' from "
            "DockerSpawner.extra_create_kwargs."
        )
    unknown_create = sorted(set(create_kwargs) - CREATE_FIELDS)
    if unknown_create:
        raise SwarmSpecError(
            f"DS01 does not know how to run {', '.join(unknown_create)} on a swarm."
        )
    if host_config.get("network_mode", HOST_NETWORK) != HOST_NETWORK:
        raise SwarmSpecError(
            "On a swarm, servers use the host network of their node (no routing mesh): set "
            "DockerSpawner.network_name to 'host'."
        )
    for option in host_config.get("security_opt") or []:
        if option.replace("=", ":") not in ("no-new-privileges:true", "no-new-privileges"):
            raise SwarmSpecError(f"A Swarm service cannot set the security option {option!r}.")


def _resources(host_config: Mapping, gpu_kind: str, gpu_count: int) -> dict:
    limits: dict[str, int] = {}
    reservations: dict[str, Any] = {}
    quota, period = host_config.get("cpu_quota"), host_config.get("cpu_period")
    if quota is not None:
        limits["NanoCPUs"] = int(quota) * 1_000_000_000 // int(period or 100_000)
    if host_config.get("mem_limit") is not None:
        limits["MemoryBytes"] = parse_bytes(host_config["mem_limit"])
    if host_config.get("pids_limit") is not None:
        limits["Pids"] = int(host_config["pids_limit"])
    if host_config.get("mem_reservation") is not None:
        reservations["MemoryBytes"] = parse_bytes(host_config["mem_reservation"])
    if gpu_count:
        reservations["GenericResources"] = [
            {"DiscreteResourceSpec": {"Kind": gpu_kind, "Value": gpu_count}}
        ]
    resources: dict[str, Any] = {}
    if limits:
        resources["Limits"] = limits
    if reservations:
        resources["Reservations"] = reservations
    return resources


def _container_spec(
    create_kwargs: Mapping, host_config: Mapping, env: list[str], labels: dict, api_version: str
) -> dict:
    mounts = _bind_mounts(host_config.get("binds") or {})
    if host_config.get("shm_size") is not None:
        size = parse_bytes(host_config["shm_size"])
        mounts.append(_tmpfs_mount("/dev/shm", f"size={size},mode=1777"))
    mounts += _tmpfs_mounts(host_config.get("tmpfs") or {})
    spec: dict[str, Any] = {
        "Image": create_kwargs["image"],
        # Args is the CMD: the image's ENTRYPOINT stays, as with create_container
        "Args": list(create_kwargs.get("command") or []),
        "Env": env,
        "Labels": labels,
        "Mounts": mounts,
        "Init": bool(host_config.get("init", True)),
        "StopSignal": create_kwargs.get("stop_signal", "SIGTERM"),
        "StopGracePeriod": int(create_kwargs.get("stop_timeout", 10)) * 1_000_000_000,
    }
    optional = {
        "User": create_kwargs.get("user"),
        "Dir": create_kwargs.get("working_dir"),
        "Hostname": create_kwargs.get("hostname"),
        "Groups": list(host_config.get("group_add") or []) or None,
        "CapabilityDrop": list(host_config.get("cap_drop") or []) or None,
        "CapabilityAdd": list(host_config.get("cap_add") or []) or None,
        "Ulimits": [_ulimit(u) for u in host_config.get("ulimits") or []] or None,
        "Hosts": _hosts(host_config.get("extra_hosts")),
        "Healthcheck": _healthcheck(create_kwargs.get("healthcheck")),
    }
    spec.update({k: v for k, v in optional.items() if v is not None})
    dns = {"Nameservers": host_config.get("dns"), "Search": host_config.get("dns_search")}
    if any(dns.values()):
        spec["DNSConfig"] = {k: list(v) for k, v in dns.items() if v}
    if host_config.get("security_opt") and _api_at_least(api_version, NO_NEW_PRIVILEGES_API):
        spec["Privileges"] = {"NoNewPrivileges": True}
    return spec


def _ulimit(value: Mapping) -> dict:
    """A docker-py ``Ulimit`` (a dict with Name/Soft/Hard) or ``{"name", "soft", "hard"}``."""
    return {k: value[k] if k in value else value[k.lower()] for k in ("Name", "Soft", "Hard")}


def _healthcheck(value: Any) -> dict | None:
    """docker-py's ``healthcheck`` (API keys, or test/interval/... keys) in the API's shape."""
    if not value:
        return None
    if "test" in value:
        return dict(Healthcheck(**value))
    return dict(value)


def _hosts(extra_hosts: Any) -> list[str] | None:
    """``{"name": "ip"}`` or ``["name:ip"]`` -> Swarm's ``["ip name"]``."""
    if not extra_hosts:
        return None
    if isinstance(extra_hosts, Mapping):
        pairs = list(extra_hosts.items())
    else:
        pairs = [tuple(str(h).split(":", 1)) for h in extra_hosts]
    return [f"{ip} {name}" for name, ip in pairs]


def _log_driver(log_config: Any) -> dict | None:
    if not log_config:
        return None
    name = log_config.get("Type") or log_config.get("type")
    options = log_config.get("Config") or log_config.get("config") or {}
    driver: dict[str, Any] = {"Name": name}
    if options:
        driver["Options"] = dict(options)
    return driver


def service_spec(
    create_kwargs: Mapping[str, Any],
    host_config: Mapping[str, Any],
    *,
    node_id: str,
    gpu_kind: str = "NVIDIA-GPU",
    gpu_count: int = 0,
    void_kinds: Iterable[str] = (),
    api_version: str = "1.41",
) -> dict[str, Any]:
    """Keyword arguments for ``APIClient.create_service`` for one server on node ``node_id``.

    ``gpu_count`` devices of generic-resource kind ``gpu_kind`` are reserved (Swarm picks which);
    ``void_kinds`` are the other kinds the cluster advertises (see ``tasks.cluster_kinds``), set
    empty so that an image cannot name devices of them. ``api_version`` is the manager's API
    version (``APIClient.api_version``): from 1.46 no-new-privileges is set on the service itself.
    Raises SwarmSpecError for anything Swarm cannot run as the single engine would.
    """
    if not _NODE_ID_RE.fullmatch(node_id or ""):
        raise SwarmSpecError(f"Not a Swarm node id: {node_id!r}")
    if gpu_count < 0 or (gpu_count and not _KIND_RE.fullmatch(gpu_kind)):
        raise SwarmSpecError(f"Not a GPU request: {gpu_count} x {gpu_kind!r}")
    _refuse_unknown(create_kwargs, host_config)
    name = service_name(str(create_kwargs["name"]))
    labels = dict(create_kwargs.get("labels") or {})
    labels[GPU_LABEL] = ""  # the devices are Swarm's choice: read back from the task
    labels[GPU_REQUEST_LABEL] = f"{gpu_kind}={gpu_count}" if gpu_count else ""
    labels[NODE_LABEL] = node_id
    env = _env(create_kwargs.get("environment") or {}, gpu_kind if gpu_count else "", void_kinds)
    task_template: dict[str, Any] = {
        "ContainerSpec": _container_spec(create_kwargs, host_config, env, labels, api_version),
        "Resources": _resources(host_config, gpu_kind, gpu_count),
        "RestartPolicy": {"Condition": "none", "MaxAttempts": 0},
        "Placement": {"Constraints": [f"node.id=={node_id}"]},
        "Networks": [{"Target": HOST_NETWORK}],
    }
    log_driver = _log_driver(host_config.get("log_config"))
    if log_driver:
        task_template["LogDriver"] = log_driver
    return {
        "name": name,
        "labels": dict(labels),
        "mode": {"Replicated": {"Replicas": 1}},
        "task_template": task_template,
    }


def valid_service_name(name: str) -> bool:
    """Whether Swarm accepts ``name`` for a service."""
    return len(name) <= 63 and bool(_SERVICE_NAME_RE.fullmatch(name))


def hub_service(service: Mapping, prefix: str) -> bool:
    """Whether a service is a server of the hub with ``prefix``: its name is the hub's name for
    the server its labels claim (as ``gpus.table.is_server_container`` checks a container), so
    another hub's servers on the same swarm are not this hub's."""
    spec = service.get("Spec") or {}
    labels = spec.get("Labels") or {}
    user, server = labels.get("ds01.user"), labels.get("ds01.server")
    if not isinstance(user, str) or not user or not isinstance(server, str):
        return False
    return spec.get("Name") == service_name(container_name(user, server, prefix))

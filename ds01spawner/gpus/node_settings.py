"""A swarm node's engine settings for its GPUs: ``python -m ds01spawner.gpus node-settings``.

Each device the inventory offers (a full GPU, or a MIG slice) becomes a Swarm *generic resource*
that the node advertises, ``<kind>=<uuid>`` in ``node-generic-resources`` of
``/etc/docker/daemon.json``:

- a full GPU is kind ``NVIDIA-GPU``;
- a MIG slice is kind ``NVIDIA-MIG-<PROFILE>``, the profile upper-cased with every character
  other than a letter or digit made ``-``: ``3g.20gb`` -> ``NVIDIA-MIG-3G-20GB``,
  ``1g.5gb+me`` -> ``NVIDIA-MIG-1G-5GB-ME``. Swarm matches kinds exactly, so a request for a
  ``3g.20gb`` slice can only get one; and a task sees its devices in ``DOCKER_RESOURCE_<KIND>``
  (Swarm upper-cases the kind), a name without dots.

A task's container sees its devices only through the NVIDIA runtime: it must be the engine's
default runtime (a service cannot choose one), and its ``swarm-resource`` setting in
``/etc/nvidia-container-runtime/config.toml`` must list the ``DOCKER_RESOURCE_<KIND>`` variable of
every kind, comma-separated, so that the runtime exposes exactly the devices Swarm assigned.

Pure functions build the settings; ``main`` reads the inventory (NVML, or the simulated list).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Iterable, Sequence
from typing import Any

from .factory import make_inventory
from .model import Device, Inventory, InventoryError

GPU_KIND = "NVIDIA-GPU"
MIG_KIND_PREFIX = "NVIDIA-MIG"
RESOURCE_ENV_PREFIX = "DOCKER_RESOURCE_"
NVIDIA_RUNTIME_CONFIG = "/etc/nvidia-container-runtime/config.toml"
DAEMON_JSON = "/etc/docker/daemon.json"


def mig_kind(profile: str) -> str:
    """``"3g.20gb"`` -> ``"NVIDIA-MIG-3G-20GB"``: the kind of a MIG profile's slices."""
    return f"{MIG_KIND_PREFIX}-" + re.sub(r"[^A-Z0-9]+", "-", profile.upper()).strip("-")


def device_kind(device: Device) -> str:
    """The generic-resource kind a device is advertised as (see the module's docstring)."""
    if device.kind != "mig":
        return GPU_KIND
    return mig_kind(device.mig_profile) if device.mig_profile else MIG_KIND_PREFIX


def node_generic_resources(devices: Iterable[Device]) -> list[str]:
    """``["NVIDIA-GPU=GPU-...", "NVIDIA-MIG-3G-20GB=MIG-..."]`` in the inventory's order."""
    return [f"{device_kind(d)}={d.uuid}" for d in devices]


def node_settings(devices: Iterable[Device], addr: str = "") -> dict[str, Any]:
    """Everything a node's engine needs, as one JSON-able object.

    ``daemon_json`` is the fragment to merge into /etc/docker/daemon.json; ``swarm_resource``
    the value of ``swarm-resource`` in the NVIDIA runtime's config.toml; ``kinds`` counts the
    devices per kind; ``labels`` are the node labels the manager sets (``addr``: the address the
    hub reaches this node's servers at).
    """
    devices = list(devices)
    kinds: dict[str, int] = {}
    for d in devices:
        kinds[device_kind(d)] = kinds.get(device_kind(d), 0) + 1
    daemon: dict[str, Any] = {
        "node-generic-resources": node_generic_resources(devices),
        # Swarm cannot set no-new-privileges per service before API 1.46: the engine does.
        "no-new-privileges": True,
    }
    if devices:
        daemon["default-runtime"] = "nvidia"
        daemon["runtimes"] = {"nvidia": {"path": "nvidia-container-runtime", "runtimeArgs": []}}
    addr = addr or "<this node's address>"
    return {
        "daemon_json": daemon,
        "swarm_resource": ",".join(RESOURCE_ENV_PREFIX + k for k in sorted(kinds)),
        "kinds": dict(sorted(kinds.items())),
        "labels": {"ds01.addr": addr, "ds01.engine": f"tcp://{addr}:2376"},
        "dockerd_environment": {"DOCKER_SERVICE_PREFER_OFFLINE_IMAGE": "1"},
    }


def render_text(settings: dict[str, Any], describe: str = "") -> str:
    """The settings as steps an admin follows on the node (and one on the manager)."""
    daemon = json.dumps(settings["daemon_json"], indent=2)
    labels = " ".join(f"--label-add {k}={v}" for k, v in settings["labels"].items())
    kinds = ", ".join(f"{n} x {k}" for k, n in settings["kinds"].items()) or "no GPUs"
    lines = [
        f"Swarm node settings for this node's GPUs ({describe or kinds})",
        "",
        f"1. Merge into {DAEMON_JSON} (no --node-generic-resource flags on dockerd at the same "
        "time), then restart docker:",
        daemon,
        "",
    ]
    if settings["swarm_resource"]:
        lines += [
            f"2. In {NVIDIA_RUNTIME_CONFIG} (top level), so that a task sees exactly the "
            "devices Swarm assigned it:",
            f'swarm-resource = "{settings["swarm_resource"]}"',
            "",
        ]
    else:
        lines += ["2. No GPUs: the NVIDIA runtime needs no setting.", ""]
    env = " ".join(f"{k}={v}" for k, v in settings["dockerd_environment"].items())
    lines += [
        "3. dockerd's environment (systemctl edit docker: [Service] Environment=...), so that a "
        "worker never pulls a server's image from a registry (DS01 names images by id and puts "
        "them on the node itself):",
        f"Environment={env}",
        "",
        "4. Join the swarm (the token from `docker swarm join-token worker` on the manager):",
        "docker swarm join --token <worker token> <manager address>:2377",
        "",
        "5. On the manager, label the node (the engine URL is for per-node signals, TLS):",
        f"docker node update {labels} <node id>",
    ]
    return "\n".join(lines)


def _inventory(simulated: str | None, nvml: Any) -> Inventory:
    """The simulated list of ``--simulated``, else what DS01_GPU_INVENTORY says (default nvml)."""
    if simulated:
        try:
            with open(simulated, encoding="utf-8") as f:
                data = json.load(f)
        except (OSError, ValueError) as e:
            raise InventoryError(f"Cannot read the simulated GPU list {simulated}: {e}") from e
        gpus = data["gpus"] if isinstance(data, dict) and "gpus" in data else data
        return make_inventory("simulated", gpus, nvml=nvml)
    kind = os.environ.get("DS01_GPU_INVENTORY") or "nvml"
    gpus = json.loads(os.environ.get("DS01_SIMULATED_GPUS") or "[]") if kind == "simulated" else []
    state = os.environ.get("DS01_SIMULATED_GPU_STATE_FILE") or None
    return make_inventory(kind, gpus, state, nvml=nvml)


def main(argv: Sequence[str] | None = None, nvml: Any = None) -> int:
    """``python -m ds01spawner.gpus node-settings``; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m ds01spawner.gpus node-settings",
        description="Print this node's Docker engine settings for a DS01 swarm: its GPUs and MIG "
        "slices as generic resources, the NVIDIA runtime's settings, the join and the labels.",
    )
    parser.add_argument("--simulated", metavar="FILE.json", help="a simulated GPU list")
    parser.add_argument("--addr", default="", help="the address the hub reaches this node at")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    inventory: Inventory | None = None
    try:
        inventory = _inventory(args.simulated, nvml)
        settings = node_settings(inventory.devices(), addr=args.addr)
        describe = inventory.describe()
    except (InventoryError, ValueError) as e:
        print(f"ds01 node settings: {e}", file=sys.stderr)
        return 1
    finally:
        if inventory is not None:
            inventory.close()
    if args.json:
        print(json.dumps(settings, indent=2))
    else:
        print(render_text(settings, describe))
    return 0

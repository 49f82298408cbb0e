"""The GPU probe: what NVML reports, and what the inventory makes of it.

    python -m ds01spawner.gpus                         # this host, through NVML
    python -m ds01spawner.gpus --simulated gpus.json   # a simulated inventory instead
    python -m ds01spawner.gpus --json                  # the same, as one JSON object
    python -m ds01spawner.gpus node-settings [--json]  # a swarm node's engine settings (GPUs)

Run it on a GPU server before pointing the hub at it, and compare with ``nvidia-smi -L``: every
full GPU and every MIG device there should be a row of the inventory table, with the same UUID.
Without a usable driver it prints one line and exits with 1.

The ``--simulated`` file holds the list of GPUs (as in ``simulated_gpus``), or an object
``{"gpus": [...], "state_file": "..."}``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any

from .model import Device, DeviceUsage, Inventory, InventoryError
from .nvml import MIB, NvmlInventory, reason, text
from .simulated import SimulatedInventory


def _try(fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)``, or ``{"error": "..."}`` when it raises: the probe shows failures."""
    try:
        return fn(*args)
    except Exception as e:
        return {"error": reason(e)}


def _ok(value: Any) -> bool:
    return not (isinstance(value, dict) and "error" in value)


def _fields(struct: Any, names: Sequence[str]) -> dict[str, Any]:
    out = {}
    for name in names:
        value = getattr(struct, name, None)
        out[name] = text(value) if isinstance(value, bytes) else value
    return out


_ATTRIBUTE_FIELDS = (
    "gpuInstanceSliceCount",
    "computeInstanceSliceCount",
    "memorySizeMB",
    "multiprocessorCount",
    "sharedCopyEngineCount",
    "sharedDecoderCount",
    "sharedEncoderCount",
    "sharedJpegCount",
    "sharedOfaCount",
)


def raw_nvml(inventory: NvmlInventory) -> dict[str, Any]:
    """What NVML itself says, call by call; a failing call shows as ``{"error": ...}``."""
    nvml = inventory.nvml

    def string(fn: Callable[..., Any], *args: Any) -> Any:
        value = _try(fn, *args)
        return text(value) if _ok(value) else value

    def memory_mib(handle: Any) -> Any:
        info = _try(nvml.nvmlDeviceGetMemoryInfo, handle)
        return int(info.total) // MIB if _ok(info) else info

    out: dict[str, Any] = {
        "driver_version": string(nvml.nvmlSystemGetDriverVersion),
        "nvml_version": string(nvml.nvmlSystemGetNVMLVersion),
    }
    if hasattr(nvml, "nvmlSystemGetCudaDriverVersion"):
        out["cuda_driver_version"] = _try(nvml.nvmlSystemGetCudaDriverVersion)
    count = _try(nvml.nvmlDeviceGetCount)
    out["device_count"] = count
    gpus = []
    for i in range(count if isinstance(count, int) else 0):
        handle = _try(nvml.nvmlDeviceGetHandleByIndex, i)
        if not _ok(handle):
            gpus.append({"index": i, **handle})
            continue
        gpu: dict[str, Any] = {
            "index": i,
            "name": string(nvml.nvmlDeviceGetName, handle),
            "uuid": string(nvml.nvmlDeviceGetUUID, handle),
            "memory_total_mib": memory_mib(handle),
        }
        mode = _try(nvml.nvmlDeviceGetMigMode, handle)
        enable = getattr(nvml, "NVML_DEVICE_MIG_ENABLE", 1)
        if _ok(mode):
            gpu["mig_mode"] = {"current": mode[0] == enable, "pending": mode[1] == enable}
        else:
            gpu["mig_mode"] = mode  # NotSupported: a GPU without MIG
        if _ok(mode) and mode[0] == enable:
            gpu["mig_total_slices"] = inventory.total_slices(
                handle, str(gpu["uuid"]), str(gpu["name"])
            )
            gpu["mig_devices"] = _raw_migs(inventory, i, handle)
        gpus.append(gpu)
    out["gpus"] = gpus
    return out


def _raw_migs(inventory: NvmlInventory, i: int, handle: Any) -> Any:
    nvml = inventory.nvml
    slots = _try(nvml.nvmlDeviceGetMaxMigDeviceCount, handle)
    if not _ok(slots):
        return slots
    migs = []
    for j in range(slots):
        try:
            mig = nvml.nvmlDeviceGetMigDeviceHandleByIndex(handle, j)
        except Exception as e:
            not_found = getattr(nvml, "NVMLError_NotFound", None)
            if not (isinstance(not_found, type) and isinstance(e, not_found)):
                migs.append({"index": f"{i}:{j}", "error": reason(e)})
            continue  # an empty slot
        attrs = _try(nvml.nvmlDeviceGetAttributes, mig)
        memory = _try(nvml.nvmlDeviceGetMemoryInfo, mig)
        name = _try(nvml.nvmlDeviceGetName, mig)
        uuid = _try(nvml.nvmlDeviceGetUUID, mig)
        migs.append(
            {
                "index": f"{i}:{j}",
                "name": text(name) if _ok(name) else name,
                "uuid": text(uuid) if _ok(uuid) else uuid,
                "gpu_instance_id": _try(nvml.nvmlDeviceGetGpuInstanceId, mig),
                "compute_instance_id": _try(nvml.nvmlDeviceGetComputeInstanceId, mig),
                "memory_total_mib": int(memory.total) // MIB if _ok(memory) else memory,
                "attributes": _fields(attrs, _ATTRIBUTE_FIELDS) if _ok(attrs) else attrs,
            }
        )
    return migs


def _print_raw(raw: dict[str, Any], out: Any) -> None:
    def show(value: Any) -> str:
        return f"error: {value['error']}" if not _ok(value) else str(value)

    print("What NVML reports", file=out)
    print(
        f"  driver {show(raw['driver_version'])}, NVML {show(raw['nvml_version'])}, "
        f"CUDA driver API {show(raw.get('cuda_driver_version', '-'))}, "
        f"GPUs {show(raw['device_count'])}",
        file=out,
    )
    for gpu in raw["gpus"]:
        if "error" in gpu:
            print(f"  GPU {gpu['index']}: error: {gpu['error']}", file=out)
            continue
        mode = gpu["mig_mode"]
        if _ok(mode):
            mig = (
                f"MIG current {'on' if mode['current'] else 'off'}, "
                f"pending {'on' if mode['pending'] else 'off'}"
            )
        else:
            mig = f"MIG: {mode['error']}"
        print(
            f"  GPU {gpu['index']}: {show(gpu['name'])}  {show(gpu['uuid'])}  "
            f"{show(gpu['memory_total_mib'])} MiB  {mig}",
            file=out,
        )
        if "mig_devices" in gpu:
            migs = gpu["mig_devices"]
            print(f"    compute slices of the GPU: {gpu['mig_total_slices']}", file=out)
            if not _ok(migs):
                print(f"    MIG devices: error: {migs['error']}", file=out)
            elif not migs:
                print("    no MIG devices", file=out)
            for m in migs if _ok(migs) else []:
                if "error" in m and "name" not in m:
                    print(f"    MIG device {m['index']}: error: {m['error']}", file=out)
                    continue
                a = m["attributes"]
                attrs = (
                    f"slices g={a['gpuInstanceSliceCount']} c={a['computeInstanceSliceCount']}, "
                    f"memorySizeMB={a['memorySizeMB']}, SMs={a['multiprocessorCount']}"
                    if _ok(a)
                    else f"attributes: error: {a['error']}"
                )
                print(
                    f"    MIG device {m['index']}: {show(m['name'])}  {show(m['uuid'])}  "
                    f"GI {show(m['gpu_instance_id'])} CI {show(m['compute_instance_id'])}  "
                    f"{show(m['memory_total_mib'])} MiB  {attrs}",
                    file=out,
                )


def _rows(devices: list[Device], usage: dict[str, DeviceUsage]) -> list[dict[str, Any]]:
    rows = []
    for d in devices:
        u = usage.get(d.uuid)
        rows.append(
            {
                "index": d.index,
                "uuid": d.uuid,
                "kind": d.kind,
                "profile": d.mig_profile,
                "share": round(d.share, 4),
                "memory_mib": d.memory_mib,
                "utilization_pct": u.utilization_pct if u else None,
                "memory_used_mib": u.memory_used_mib if u else None,
                "pids": list(u.pids) if u else None,
                "name": d.name,
                "parent_uuid": d.parent_uuid,
                "simulated": d.simulated,
            }
        )
    return rows


def _print_table(rows: list[dict[str, Any]], out: Any) -> None:
    def cell(v: Any, fmt: str = "{}") -> str:
        return "-" if v is None or v == [] else fmt.format(v)

    header = ("INDEX", "UUID", "KIND", "PROFILE", "SHARE", "MEMORY", "UTIL", "MEM USED", "PIDS")
    table = [header] + [
        (
            r["index"],
            r["uuid"],
            r["kind"],
            cell(r["profile"]),
            f"{r['share']:.3f}",
            f"{r['memory_mib']} MiB",
            cell(r["utilization_pct"], "{:.0f}%"),
            cell(r["memory_used_mib"], "{} MiB"),
            ",".join(map(str, r["pids"])) if r["pids"] else "-",
        )
        for r in rows
    ]
    widths = [max(len(str(row[k])) for row in table) for k in range(len(header))]
    for row in table:
        print(
            "  " + "  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip(),
            file=out,
        )
    if not rows:
        print("  (no devices)", file=out)


def _load_simulated(path: str, state_file: str | None) -> tuple[Any, str | None]:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError) as e:
        raise InventoryError(f"Cannot read the simulated GPU list {path}: {e}") from e
    if isinstance(data, dict) and "gpus" in data:
        return data["gpus"], state_file or data.get("state_file")
    return data, state_file


def _probe_logger() -> tuple[logging.Logger, logging.Handler]:
    """A logger whose warnings (devices left out) go to this run's stderr, and nowhere else."""
    log = logging.getLogger("ds01spawner.gpus.probe")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    return log, handler


def main(argv: Sequence[str] | None = None, nvml: Any = None) -> int:
    """Run the probe; return the exit status. ``nvml`` replaces pynvml (tests)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["node-settings"]:
        from .node_settings import main as node_settings_main

        return node_settings_main(argv[1:], nvml=nvml)
    parser = argparse.ArgumentParser(
        prog="python -m ds01spawner.gpus",
        description="Show what NVML reports about this host's GPUs and what the DS01 GPU "
        "inventory makes of it.",
    )
    parser.add_argument(
        "--simulated",
        metavar="FILE.json",
        help="show a simulated inventory from this GPU list instead of NVML",
    )
    parser.add_argument(
        "--state", metavar="STATE.json", help="state file of the simulated inventory"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)

    log, handler = _probe_logger()
    inventory: Inventory | None = None
    try:
        raw = None
        try:
            if args.simulated:
                spec, state_file = _load_simulated(args.simulated, args.state)
                inventory = SimulatedInventory(spec, state_file=state_file, log=log)
            else:
                inventory = NvmlInventory(nvml=nvml, log=log)
        except InventoryError as e:
            what = "simulated GPUs" if args.simulated else "no usable NVIDIA driver"
            print(f"ds01 GPU probe: {what}: {e}", file=sys.stderr)
            return 1
        if isinstance(inventory, NvmlInventory):
            raw = raw_nvml(inventory)
        rows = _rows(inventory.devices(), inventory.usage())
        summary = inventory.describe()
        if args.json:
            result = {"inventory": inventory.kind, "describe": summary, "devices": rows}
            if raw is not None:
                result["nvml"] = raw
            print(json.dumps(result, indent=2))
            return 0
        if raw is not None:
            _print_raw(raw, sys.stdout)
            print(file=sys.stdout)
        if raw is not None:
            print("What the DS01 inventory makes of it")
        else:
            print(f"The simulated DS01 inventory of {args.simulated}")
        _print_table(rows, sys.stdout)
        print(f"  {summary}")
        return 0
    finally:
        if inventory is not None:
            inventory.close()
        log.removeHandler(handler)


if __name__ == "__main__":
    sys.exit(main())

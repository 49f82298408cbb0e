"""What the benchmark scripts share: statistics, table cells, Ctrl-C/SIGTERM, clean-up, a hub.

The hub is ``harness.hub.Hub`` (the integration tests' too): a real ``jupyterhub`` on 127.0.0.1,
started with the test hub's config unless a script passes its own. Benchmarks import nothing
from ``tests`` (tests/unit/test_layout.py checks it).
"""

from __future__ import annotations

import math
import shutil
import statistics
import sys
from collections.abc import Iterable
from pathlib import Path

import docker

from harness.hub import REPO, Hub, HubExited, ds01_containers, wait_for  # noqa: F401


class Interrupted(KeyboardInterrupt):
    """SIGTERM (or SIGINT): handled like Ctrl-C."""


def raise_interrupted(signum, frame):
    """A signal handler: ``signal.signal(signal.SIGTERM, raise_interrupted)``."""
    raise Interrupted(f"signal {signum}")


# ---- statistics ---------------------------------------------------------------------------------


def pct(xs: list[float], p: float) -> float:
    """The p-th percentile (nearest rank) of xs."""
    s = sorted(xs)
    return s[max(0, math.ceil(p / 100 * len(s)) - 1)]


def stats(xs: list[float], percentiles: Iterable[float] = (50, 95)) -> dict:
    """n, min, median, the ``p<k>`` asked for, max; ``{"n": 0}`` for no samples."""
    if not xs:
        return {"n": 0}
    return {
        "n": len(xs),
        "min": min(xs),
        "median": statistics.median(xs),
        **{f"p{p}": pct(xs, p) for p in percentiles},
        "max": max(xs),
    }


def fmt(x: float | None, width: int = 7, digits: int = 2) -> str:
    """A right-aligned table cell; ``-`` for no value."""
    return f"{x:{width}.{digits}f}" if x is not None else f"{'-':>{width}}"


# ---- clean-up -----------------------------------------------------------------------------------


def stop_hub(hub: Hub, label: str, keep_logs: str | None = None, log_name: str = "") -> None:
    """Stop a benchmark's hub, keeping its log in ``keep_logs`` (as ``log_name``) when asked;
    errors are printed, never raised: clean-up goes on."""
    try:
        hub.shutdown()
    except Exception as e:  # noqa: BLE001 - keep cleaning up
        print(f"clean-up: hub {label}: {e}", file=sys.stderr)
    if keep_logs:
        try:
            Path(keep_logs).mkdir(parents=True, exist_ok=True)
            shutil.copy(hub.log_path, Path(keep_logs) / (log_name or f"hub-{label}.log"))
        except OSError as e:
            print(f"clean-up: copying {hub.log_path}: {e}", file=sys.stderr)


def remove_containers(client: docker.DockerClient, name_regex: str) -> int:
    """Remove (forced, with volumes) the containers whose name matches; how many were."""
    n = 0
    for c in client.api.containers(all=True, quiet=True, filters={"name": name_regex}):
        try:
            client.api.remove_container(c["Id"], force=True, v=True)
            n += 1
        except docker.errors.NotFound:
            pass
    return n

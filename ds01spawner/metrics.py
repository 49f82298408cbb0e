"""Prometheus metrics of the hub process (on JupyterHub's ``/hub/metrics``).

Counted where things happen, from the same records the audit log gets (``observe``): spawn
durations by phase, retirements by reason, builds and build failures, limit refusals. Gauges of
the current state (devices allocated and free, GPU equivalents per user) are computed by the
``ds01-admin`` service at each scrape from the container labels (admin/metrics.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from prometheus_client import Counter, Histogram

SPAWN_PHASE = Histogram(
    "ds01_spawn_phase_seconds",
    "Seconds a successful DS01 launch spent in each phase (build, allocate, start)",
    ["phase"],
    buckets=(0.1, 0.25, 0.5, 1, 2, 3, 5, 8, 13, 21, 34, 60, 120, 300, 600, 1800, 3600),
)
RETIREMENTS = Counter(
    "ds01_retirements", "DS01 servers retired, by reason (admin: any admin)", ["reason"]
)
BUILDS = Counter("ds01_image_builds", "Project image builds, by result (ok, failed)", ["result"])
REFUSALS = Counter(
    "ds01_refusals", "Launches refused, by kind (limit, no_gpu, queue_timeout)", ["kind"]
)


def reason_label(reason: str) -> str:
    """``admin: <name>`` counts as ``admin``: one series per reason, not per admin."""
    return "admin" if reason.startswith("admin") else reason


def observe(record: Mapping[str, Any]) -> None:
    """Count one audit record (the hub process's metrics)."""
    kind = record.get("event")
    if kind == "start":
        for phase, seconds in (record.get("phases") or {}).items():
            SPAWN_PHASE.labels(phase).observe(float(seconds))
    elif kind == "retire":
        RETIREMENTS.labels(reason_label(str(record.get("reason", "")))).inc()
    elif kind == "build" and not record.get("joined"):
        BUILDS.labels("ok" if record.get("ok") else "failed").inc()
    elif kind == "refuse":
        REFUSALS.labels(str(record.get("kind") or "limit")).inc()

"""The allocation table: which device each DS01 container holds, read from container labels.

The labels of existing containers are the only source of truth. The table is rebuilt from
``docker ps -a`` output at every allocation, so a hub restart (even SIGKILL), a container killed or
removed by hand, or a crashed start can never leave a device marked as held by nobody or held
twice. A container holds its devices from ``docker create`` until it has exited; DS01 never
restarts an exited container, so an exited one holds nothing even before it is removed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

GPU_LABEL = "ds01.gpus"
EQUIVALENTS_LABEL = "ds01.gpu_equivalents"
# Docker container states in which the devices are (or are about to be) in use.
HOLDING_STATES = frozenset({"created", "running", "paused", "restarting", "removing"})


@dataclass(frozen=True)
class Holder:
    """Who holds a device: enough for an error message, the admin view and the culler."""

    uuid: str
    user: str
    project: str
    server: str
    container: str
    since: str  # the ds01.created label (ISO 8601, UTC)


def hub_containers_filter(prefix: str) -> dict:
    """``docker ps -a`` filters for the DS01 containers of the hub with this name prefix."""
    return {"label": "ds01.managed=true", "name": f"^/{re.escape(prefix)}-"}


def gpu_label(uuids: Iterable[str]) -> str:
    return ",".join(uuids)


def parse_gpu_label(value: str | None) -> list[str]:
    return [u for u in (value or "").split(",") if u.strip()]


def holders(containers: Iterable[Mapping]) -> dict[str, Holder]:
    """Devices held by containers, from ``APIClient.containers(all=True)`` dicts.

    When two containers claim one device (only hand-made labels can do that), the older one is
    shown as its holder; the device is held either way.
    """
    table: dict[str, Holder] = {}
    for c in sorted(containers, key=lambda c: c.get("Created", 0)):
        if c.get("State") not in HOLDING_STATES:
            continue
        labels = c.get("Labels") or {}
        name = (c.get("Names") or ["?"])[0].lstrip("/")
        for uuid in parse_gpu_label(labels.get(GPU_LABEL)):
            table.setdefault(
                uuid,
                Holder(
                    uuid=uuid,
                    user=labels.get("ds01.user", "?"),
                    project=labels.get("ds01.project", "?"),
                    server=labels.get("ds01.server", ""),
                    container=name,
                    since=labels.get("ds01.created", ""),
                ),
            )
    return table

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

from ..projects.names import container_name

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


def is_server_container(container: Mapping, prefix: str) -> bool:
    """Whether a ``docker ps`` entry is a user's server that this hub created.

    Labels alone prove nothing: Docker copies an image's labels into every container made from
    it, so any container run from a user's image (the image check, a build step) can carry
    ``LABEL ds01.managed=true ds01.user=<victim> ds01.gpus=<every GPU>``. A server container is
    one whose **name** is exactly the hub's name for the server its labels claim,
    ``container_name(ds01.user, ds01.server, prefix)``: only the hub creates containers on the
    engine, it gives that name to user servers only (the image check is ``<prefix>_imagecheck_*``),
    and on a server it sets every ``ds01.*`` label it reads itself, which beats the image's.
    """
    labels = container.get("Labels") or {}
    user, server = labels.get("ds01.user"), labels.get("ds01.server")
    if labels.get("ds01.managed") != "true" or not isinstance(user, str) or not user:
        return False
    if not isinstance(server, str):
        return False
    names = [str(n).lstrip("/") for n in container.get("Names") or []]
    return container_name(user, server, prefix) in names


def server_containers(containers: Iterable[Mapping], prefix: str) -> list:
    """The entries of ``docker ps`` that are user servers of this hub (see is_server_container)."""
    return [c for c in containers if is_server_container(c, prefix)]


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

"""A cgroup that bounds the processes of a user's image builds (the engine's build API has no
``pids_limit``; its ``cgroupparent`` has).

With Docker's ``cgroupfs`` driver a build's containers go below ``cgroupparent``; the limit written
to that parent's ``pids.max`` bounds all of them together (cgroup limits are hierarchical). Works
on cgroup v1 (``<root>/pids/<name>``) and v2 (``<root>/<name>``). With the ``systemd`` driver the
parent must be a slice: ``build_cgroup`` returns None and the caller logs that the limit is off.

Imports nothing of DS01; the cgroup root is a parameter (tests pass a folder).
"""

from __future__ import annotations

import hashlib
import os

CGROUP_ROOT = "/sys/fs/cgroup"


def cgroup_name(prefix: str, owner: str) -> str:
    """``/<prefix>-build-<8 hex of the owner>``: one parent per user, whatever their name."""
    digest = hashlib.sha256(owner.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return f"/{prefix}-build-{digest}"


def build_cgroup(
    prefix: str, owner: str, pids_max: int, driver: str, root: str = CGROUP_ROOT
) -> str | None:
    """Create (or update) the user's build cgroup with ``pids.max``; its ``cgroupparent`` name,
    or None when it cannot be done here (systemd driver, no pids controller). OSError when
    writing fails."""
    if driver != "cgroupfs" or pids_max <= 0:
        return None
    name = cgroup_name(prefix, owner)
    if os.path.isdir(os.path.join(root, "pids")):  # v1: one hierarchy per controller
        where = os.path.join(root, "pids", name.lstrip("/"))
    elif os.path.exists(os.path.join(root, "cgroup.controllers")):  # v2: one tree
        with open(os.path.join(root, "cgroup.subtree_control")) as f:
            if "pids" not in f.read().split():
                return None
        where = os.path.join(root, name.lstrip("/"))
    else:
        return None
    os.makedirs(where, exist_ok=True)
    with open(os.path.join(where, "pids.max"), "w") as f:
        f.write(str(int(pids_max)))
    return name

"""Where a process gets the limits file and a user's Unix groups from.

One :class:`~ds01spawner.limits.file.LimitsStore` per limits file and process, made at first use
(in the hub by ``startup.check_config`` while it starts, so that the version good at start is
the last good one). Shared by the spawner (``limit_steps``) and the services (``limits_service``,
``session_api``, ``admin.service``, the culler), so it imports neither side: only ``limits``
and ``identity``.
"""

from __future__ import annotations

from ..identity import group_names
from .file import LimitsStore

_stores: dict[str, LimitsStore] = {}


def limits_store(path: str, log=None, on_event=None) -> LimitsStore:
    """This process's store for ``path``, made once: by ``startup.check_config`` while the
    hub starts (so the version good at start is the last good one), else at first use.
    LimitsError when there is no good version at all."""
    if path not in _stores:
        _stores[path] = LimitsStore(path, log)
    if on_event is not None and _stores[path].on_event is None:
        _stores[path].on_event = on_event
    return _stores[path]


def unix_groups(username: str) -> list[str]:
    """Names of the system account's groups (primary included); [] without an account.
    Called in worker threads: reentrant lookups only (identity.group_names)."""
    return group_names(username)

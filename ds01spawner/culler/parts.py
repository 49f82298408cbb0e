"""What a culler cycle reads and reports, apart from the hub and the engine: the users' limits
(``LimitsSource``: the spawner's limits file, same resolution and hot reload), the project
folders (``ProjectFolders``: keep-alive and notices), and the records of a cycle (``Report``,
``_Seen``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ..limits.model import Limits, LimitsError
from ..limits.resolve import explain
from ..limits.store import limits_store, unix_groups
from . import notices as project_notices
from .decision import Decision
from .signals import (
    Container,
    HubServer,
)
from .state import ServerRecord


class LimitsSource:
    """The users' effective limits from the spawner's limits file (the same file, the same
    resolution and the same hot reload as at launch). No file: unlimited, nobody is culled."""

    def __init__(self, path: str, unix_groups: bool = False, log: Any = None) -> None:
        self.path = path
        self.unix_groups = unix_groups
        self.log = log or logging.getLogger("ds01spawner.culler")
        self._doc = None

    def refresh(self) -> None:
        """Read the file when it changed (once per cycle; blocking: call it in a thread).
        LimitsError when there has never been a good version."""
        if not self.path:
            return
        self._doc = limits_store(self.path, self.log).current()

    def resolve(self, user: str, groups: tuple[str, ...], now: datetime) -> Limits:
        if not self.path:
            return Limits.unlimited()
        if self._doc is None:
            raise LimitsError([])
        names = set(groups)
        if self.unix_groups:
            names.update(unix_groups(user))
        return explain(user, sorted(names), self._doc, now).limits


class ProjectFolders:
    """The project folder on the host: keep-alive age and notices (see notices.py)."""

    def keep_alive(self, folder: str) -> datetime | None:
        return project_notices.keep_alive_mtime(folder)

    def notify(self, folder: str, uid: int, gid: int, line: str) -> None:
        project_notices.append_notice(folder, uid, gid, line)


@dataclass
class Report:
    """What one cycle did, for the log and the benchmark."""

    servers: int = 0
    warned: int = 0
    retired: int = 0
    kept_unknown: int = 0  # over the idle limit as far as seen, kept because a signal failed
    errors: list[str] = field(default_factory=list)
    hub_calls: int = 0
    kernel_calls: int = 0
    docker_calls: int = 0
    seconds: float = 0.0
    ok: bool = True  # False when the hub could not be asked: nothing was decided


@dataclass
class _Seen:
    """One server's signals and decision in this cycle."""

    hub: HubServer
    record: ServerRecord | None = None
    decision: Decision | None = None
    container: Container | None = None

"""Limit steps of a spawn: resolve the user's limits, check the request before the lock.

A mixin of DS01Spawner. The checks that depend on what the user already runs (servers, GPU
equivalents) happen in ``gpu_steps.allocate_and_create``, under the hub's allocation lock,
so two launches of one user can never both pass.
"""

from __future__ import annotations

import asyncio
import functools
from datetime import datetime, timezone

from jupyterhub import orm

from ..errors import user_error
from ..limits.model import Limits, LimitsError
from ..limits.resolve import explain, unmatched_groups
from ..limits.store import limits_store, unix_groups

LIMITS_DOWN_MESSAGE = (
    "Your limits cannot be read right now, so your server could not start. Your files are "
    "safe. An admin has been told."
)
# limits documents whose group names were checked (kept, so that their ids are never reused)
_checked_versions: dict[int, object] = {}


def _limits_event(settings: tuple, event: str, **fields) -> None:
    from ..audit import audit_log

    audit_log(*settings).write(event, **fields)


class LimitSteps:
    """Methods DS01Spawner uses to find and apply a user's limits."""

    async def user_group_names(self) -> list[str]:
        """JupyterHub groups (read on the event loop: the hub's database session is not
        thread-safe) and, when enabled, Unix groups (NSS may be slow: in a thread)."""
        names = {g.name for g in self.user.groups}
        if self.limits_include_unix_groups:
            names.update(await asyncio.to_thread(unix_groups, self.user.name))
        return sorted(names)

    async def effective_limits(self) -> Limits:
        """The user's limits now (unlimited without a limits file)."""
        if not self.limits_file:
            return Limits.unlimited()
        groups = await self.user_group_names()
        try:
            store = await asyncio.to_thread(
                limits_store, self.limits_file, self.log, self._limits_event()
            )
        except LimitsError as e:  # only when the hub started without check_config
            self.log.error("No usable limits for user=%s: %s", self.user.name, e)
            raise user_error(503, LIMITS_DOWN_MESSAGE) from e
        doc = await asyncio.to_thread(store.current)  # re-reads the file when it changed
        if id(doc) not in _checked_versions:
            _checked_versions[id(doc)] = doc
            hub_groups = [name for (name,) in self.user.db.query(orm.Group.name)]
            for warning in unmatched_groups(doc, hub_groups):
                self.log.warning("%s", warning)
        resolved = explain(self.user.name, groups, doc, datetime.now(timezone.utc))
        self.log.debug("Limits of user=%s: %s", self.user.name, "; ".join(resolved.lines()))
        return resolved.limits

    def _limits_event(self):
        """The limits store's reload/error into the audit log (a function of the settings
        only: the store outlives this spawner)."""
        settings = (self.audit_log_file, self.audit_log_max_bytes, self.audit_log_backups)
        return functools.partial(_limits_event, settings)

    def refuse(self, e) -> None:
        """Turn a quota.LimitRefused into the user's HTTP error, with an admin log line."""
        self.log.warning(
            "Limit refused user=%s project=%s: %s", self.user.name, self.project or "?", e
        )
        raise self.refused(e.status, "limit", str(e)) from e

    def refused(self, status: int, kind: str, reason: str, message: str = ""):
        """The audit record of a refused launch (docs/audit-log.md: ``kind`` and ``reason``),
        and the user's HTTP error to raise (``message``, else ``reason``)."""
        self.audit(
            "refuse",
            user=self.user.name,
            project=self.project or "",
            server=self.name or "",
            status=status,
            kind=kind,
            reason=reason,
        )
        return user_error(status, message or reason)

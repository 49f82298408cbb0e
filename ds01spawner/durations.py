"""Time left as words, the same on the hub's home page (``pages``) and the services' pages
(``admin.views``, the usage page): a pure function of the standard library only."""

from __future__ import annotations

from datetime import datetime


def left(deadline: datetime | None, now: datetime) -> str:
    """``"2 h 05 min"``, ``"4 min"``, ``"under a minute"``; ``""`` without a deadline."""
    if deadline is None:
        return ""
    seconds = (deadline - now).total_seconds()
    if seconds <= 60:
        return "under a minute"
    minutes = int(seconds // 60)
    if minutes < 60:
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60:02d} min"

"""The limits file on disk: ``load_limits_file`` (read and parse once) and ``LimitsStore`` (hot
reload: the file is read again when it changes; a broken version keeps the last good one and
says why).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

from .model import LOGGER_NAME, Limits, LimitsError, LimitsFile, Problem, parse_limits
from .resolve import Resolved, explain

T = TypeVar("T")


# ---- the file on disk ---------------------------------------------------------------------------


def _io(path: Path, action: Callable[[], T]) -> T:
    """Run a read of the file; FileNotFoundError and the like become LimitsError."""
    try:
        return action()
    except FileNotFoundError:
        message = "the limits file does not exist."
    except (OSError, UnicodeError) as e:
        message = f"the limits file cannot be read ({e})."
    raise LimitsError([Problem(str(path), None, None, message)])


def _signature(path: Path) -> tuple[int, ...]:
    st = os.stat(path)
    return (st.st_ino, st.st_dev, st.st_size, st.st_mtime_ns)


def load_limits_file(path: str | os.PathLike) -> LimitsFile:
    """Read and parse a limits file; LimitsError when it is missing, unreadable or broken."""
    path = Path(path)
    return parse_limits(_io(path, lambda: path.read_text("utf-8")), str(path))


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


class LimitsStore:
    """The limits file as the hub sees it: checked at start, re-read when it changes.

    The constructor raises LimitsError (the hub must not start). ``current()`` stats the file
    and re-reads it when it changed; a broken or missing new version leaves the last good one in
    force and logs one error per broken version; a good new version logs one info line.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        log: logging.Logger | logging.LoggerAdapter | None = None,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        self.path, self.clock = Path(path), clock
        self.log = log or logging.getLogger(LOGGER_NAME)
        self._lock = threading.Lock()
        self._sig: tuple[int, ...] | None = _io(self.path, lambda: _signature(self.path))
        self._text = _io(self.path, lambda: self.path.read_text("utf-8"))
        self._doc = parse_limits(self._text, str(self.path))
        if self._doc.builtin:
            self.log.info("%s (docs/limits.md).", self._doc.builtin_note())
        self._broken: str | None = None  # the error already logged for the version on disk
        self.loaded_at = clock()
        #: called as ``on_event("limits_reload", file=...)`` / ``("limits_error", file=...,
        #: error=...)`` once per new version (the audit log); None: nothing is told
        self.on_event: Callable[..., Any] | None = None

    def _tell(self, event: str, **fields: Any) -> None:
        if self.on_event is not None:
            try:
                self.on_event(event, file=str(self.path), **fields)
            except Exception as e:  # noqa: BLE001 - telling must not break a launch
                self.log.error("Cannot record %s of %s: %s", event, self.path, e)

    def current(self) -> LimitsFile:
        """The limits in force: the file on disk when it is good, else the last good version."""
        with self._lock:
            sig = text = None
            try:
                sig = _io(self.path, lambda: _signature(self.path))
                if sig == self._sig:
                    return self._doc
                text = _io(self.path, lambda: self.path.read_text("utf-8"))
                doc = parse_limits(text, str(self.path))
            except LimitsError as e:
                # a broken version is read again once it changes; an unreadable file every time
                self._sig = sig if text is not None else None
                if str(e) != self._broken:
                    self._broken = str(e)
                    self.log.error(
                        "The limits file %s cannot be used, so the limits loaded at %s stay in "
                        "force until it is fixed. %s",
                        self.path,
                        f"{self.loaded_at:%Y-%m-%d %H:%M:%S}",
                        e,
                    )
                    self._tell("limits_error", error=str(e))
                return self._doc
            if text != self._text or self._broken is not None:
                self.log.info("Loaded the limits file %s; its limits are in force now.", self.path)
                if doc.builtin:
                    self.log.info("%s (docs/limits.md).", doc.builtin_note())
                self._doc, self._text, self.loaded_at = doc, text, self.clock()
                self._tell("limits_reload")
            self._sig, self._broken = sig, None
            return self._doc

    def explain(self, user: str, groups: Iterable[str]) -> Resolved:
        return explain(user, groups, self.current(), self.clock())

    def resolve(self, user: str, groups: Iterable[str]) -> Limits:
        return self.explain(user, groups).limits

"""The cull decision for one server: keep it, warn its user, or retire it. Pure: no I/O, no clock.

Inputs: the server (who, which project, since when, with GPUs or not), the user's effective
limits (``limits.Limits``: exemptions are already applied, an exempt limit is None), what the
signals say (:class:`Signals`), the warnings given earlier (:class:`Given`, from the culler's
state), the share of GPUs in use and ``now``.

The rules (docs/culler.md tells users and admins the same):

- **Idle since** is the latest activity any signal shows: the server's start, the hub's
  ``last_activity``, the kernels' last activity, a fresh keep-alive file, what earlier cycles
  saw, and ``now`` when a kernel is busy or the GPUs or the CPU are in use right now. So every
  signal alone keeps a server alive, and a server is idle only when all of them say so.
- A signal that could not be read this cycle (``Signals.unknown``) means "maybe active": no idle
  warning and no idle retirement until it can be read again. ``max_runtime`` needs no signal.
- When more than ``high_demand_share`` of the GPUs are held, the idle timeout of a server with
  GPUs is multiplied by ``high_demand_factor``.
- **Warnings** come at the fractions ``warn_at`` of each limit (idle time of ``idle_timeout``,
  run time of ``max_runtime``). Each states a deadline, and a server is never retired before the
  deadline of its latest warning, nor without one: a warning that comes late (the culler was
  down, the limit was lowered, demand went up) moves the deadline to ``now + (1 - fraction) *
  limit``, the notice that fraction promises.
- Idle warnings belong to one idle stretch (``since`` = idle since); activity ends the stretch and
  clears them. Runtime warnings belong to one run (``since`` = started). A limit that becomes
  unlimited (an exemption) clears its warnings.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from ..limits.model import Limits

IDLE = "idle"
MAX_RUNTIME = "max_runtime"
REASONS = (IDLE, MAX_RUNTIME)

#: The signals a server has; names used in ``Signals.busy``/``unknown`` and in the state file.
SIGNALS = ("hub", "kernels", "gpu", "cpu", "keep_alive")

#: A keep-alive file up to this far in the future is a clock step: taken as touched ``now``.
#: Further ahead it is ignored (a future mtime must not keep a server forever).
CLOCK_SKEW = timedelta(seconds=60)


@dataclass(frozen=True)
class Settings:
    """The culler's tunables that shape a decision (traits of ``DS01Culler``)."""

    warn_at: tuple[float, ...] = (0.75, 0.9)
    keep_alive_max_age: timedelta = timedelta(hours=24)
    high_demand_share: float = 0.8
    high_demand_factor: float = 0.5

    def __post_init__(self) -> None:
        if not self.warn_at or any(not 0 < f < 1 for f in self.warn_at):
            raise ValueError(f"warn_at must be fractions between 0 and 1, got {self.warn_at!r}")
        object.__setattr__(self, "warn_at", tuple(sorted(set(self.warn_at))))


@dataclass(frozen=True)
class Server:
    user: str
    name: str  # the JupyterHub server name; "" for the default server
    project: str  # what the user calls it (the ds01.project label)
    started: datetime
    has_gpu: bool = False

    @property
    def key(self) -> str:
        """``"<user>/<server name>"``: JupyterHub's ``full_name``, the state file's key."""
        return f"{self.user}/{self.name}"


@dataclass(frozen=True)
class Signals:
    """What the signals say about one server at one cycle.

    Timestamps are the last activity a signal reports (None: none). ``busy`` names the signals
    that show activity right now (``kernels``: a kernel is busy; ``gpu``: utilization over the
    window at or above the threshold; ``cpu``: the container's CPU use since the last cycle at or
    above the threshold). ``unknown`` names the signals that could not be read this cycle.
    """

    hub_activity: datetime | None = None
    kernel_activity: datetime | None = None
    keep_alive: datetime | None = None  # mtime of /workspace/.keep-alive
    busy: frozenset[str] = frozenset()
    unknown: frozenset[str] = frozenset()
    remembered: datetime | None = None  # idle since, as earlier cycles saw it


@dataclass(frozen=True)
class Given:
    """A warning given to the user (kept in the culler's state while it is current)."""

    reason: str  # IDLE or MAX_RUNTIME
    fraction: float  # of the limit, e.g. 0.75
    at: datetime  # when it was given
    deadline: datetime  # the retirement it announced; never earlier than this
    since: datetime  # the idle stretch (idle since) or the run (started) it belongs to
    message: str = ""


@dataclass(frozen=True)
class Decision:
    action: Literal["keep", "warn", "retire"]
    reason: str | None  # for "retire": IDLE or MAX_RUNTIME
    new_warnings: tuple[Given, ...]  # to give now (state, notices file, log)
    current: tuple[Given, ...]  # every warning in force after this decision, new ones included
    cleared: tuple[Given, ...]  # earlier warnings that no longer hold (activity, exemption)
    idle_since: datetime
    activity: dict[str, datetime] = field(default_factory=dict)  # signal -> its activity
    idle_limit: timedelta | None = None  # after the high-demand rule
    idle_deadline: datetime | None = None  # None: not retired for idleness (unlimited)
    runtime_deadline: datetime | None = None
    note: str = ""  # why a server is kept although over a limit (for the log)


def hours(value: float | None) -> timedelta | None:
    return None if value is None else timedelta(hours=value)


def idle_timeout_of(
    server: Server, limits: Limits, demand: float, settings: Settings
) -> timedelta | None:
    """The idle timeout that applies now: shortened for GPU servers under high demand."""
    limit = hours(limits.idle_timeout)
    if limit is not None and server.has_gpu and demand > settings.high_demand_share:
        limit = limit * settings.high_demand_factor
    return limit


def activity_of(server: Server, signals: Signals, now: datetime, settings: Settings) -> dict:
    """Each signal's latest activity (capped at ``now``), ``started`` included."""
    seen: dict[str, datetime] = {"started": server.started}
    for name, when in (
        ("hub", signals.hub_activity),
        ("kernels", signals.kernel_activity),
        ("remembered", signals.remembered),
    ):
        if when is not None:
            seen[name] = min(when, now)
    if signals.keep_alive is not None:
        # touched at t: the server counts as active until t + max age (a future mtime: now)
        touched = min(signals.keep_alive, now) if signals.keep_alive <= now + CLOCK_SKEW else None
        if touched is not None:
            seen["keep_alive"] = min(now, touched + settings.keep_alive_max_age)
    for name in signals.busy:
        seen[name] = now
    return seen


def _fmt(t: datetime) -> str:
    return f"{t:%Y-%m-%d %H:%M:%S} UTC"


def span(delta: timedelta) -> str:
    """``"2 h 5 min"``, ``"15 min"``, ``"40 s"``: a duration for people."""
    s = max(0, math.ceil(delta.total_seconds()))
    if s < 120:
        return f"{s} s"
    m = math.ceil(s / 60)
    if m < 120:
        return f"{m} min"
    h, m = divmod(m, 60)
    return f"{h} h {m} min" if m else f"{h} h"


def message_for(
    server: Server, reason: str, limit: timedelta, since: datetime, deadline: datetime, now
) -> str:
    what = f"Your server for project '{server.project}'"
    if reason == IDLE:
        return (
            f"{what} has been idle since {_fmt(since)} (idle limit {span(limit)}). It will be "
            f"retired at {_fmt(deadline)} (in {span(deadline - now)}) unless it is used: run "
            f"code, or touch /workspace/.keep-alive. Your files in /workspace stay."
        )
    return (
        f"{what} has been running since {_fmt(since)} and reaches its runtime limit of "
        f"{span(limit)}: it will be retired at {_fmt(deadline)} (in {span(deadline - now)}), "
        f"however busy it is. Save your work now; your files in /workspace stay."
    )


@dataclass(frozen=True)
class _Clock:
    """One limit of one server: where it stands, which warning is due, whether it is up."""

    deadline: datetime  # the nominal deadline, or later where a warning promised more
    due: Given | None  # the warning to give now
    expired: bool  # retire now


def _limit_clock(
    server: Server,
    reason: str,
    since: datetime,
    limit: timedelta,
    given: list[Given],
    now: datetime,
    settings: Settings,
) -> _Clock:
    nominal = since + limit
    promised = max((g.deadline for g in given), default=nominal)
    crossed = [f for f in settings.warn_at if now >= since + limit * f]
    top_given = max((g.fraction for g in given), default=0.0)
    if crossed and crossed[-1] > top_given:
        f = crossed[-1]  # only the highest fraction crossed: one warning, never a burst
        deadline = max(nominal, promised, now + limit * (1 - f))
        message = message_for(server, reason, limit, since, deadline, now)
        return _Clock(deadline, Given(reason, f, now, deadline, since, message), False)
    deadline = max(nominal, promised)
    return _Clock(deadline, None, bool(given) and now >= deadline)


def _still_given(
    given: Iterable[Given],
    idle_limit: timedelta | None,
    idle_since: datetime,
    run_limit: timedelta | None,
    started: datetime,
) -> tuple[list[Given], list[Given]]:
    """The warnings in force that still hold (same limit, same idle stretch or run), and the
    ones cleared (the user came back, or the limit went)."""
    kept: list[Given] = []
    cleared: list[Given] = []
    for g in given:
        if g.reason == IDLE:
            holds = idle_limit is not None and g.since == idle_since
        else:
            holds = run_limit is not None and g.since == started
        (kept if holds else cleared).append(g)
    return kept, cleared


def decide(
    server: Server,
    limits: Limits,
    signals: Signals,
    now: datetime,
    *,
    given: Iterable[Given] = (),
    demand: float = 0.0,
    settings: Settings = Settings(),  # noqa: B008 - frozen
) -> Decision:
    """Keep, warn or retire ``server`` at ``now`` (see the module's docstring for the rules).

    ``given``: the warnings in force from earlier cycles; ``demand``: the share of the GPUs held
    (0..1). The result lists the new warnings to give, the warnings in force afterwards and the
    deadlines the hub's home page shows.
    """
    activity = activity_of(server, signals, now, settings)
    idle_since = max(activity.values())
    idle_limit = idle_timeout_of(server, limits, demand, settings)
    run_limit = hours(limits.max_runtime)

    kept, cleared = _still_given(given, idle_limit, idle_since, run_limit, server.started)

    new: list[Given] = []
    retire: str | None = None
    runtime_deadline = idle_deadline = None
    note = ""
    if run_limit is not None:
        clock = _limit_clock(
            server,
            MAX_RUNTIME,
            server.started,
            run_limit,
            [g for g in kept if g.reason == MAX_RUNTIME],
            now,
            settings,
        )
        runtime_deadline = clock.deadline
        if clock.due:
            new.append(clock.due)
        elif clock.expired:
            retire = MAX_RUNTIME
    if idle_limit is not None:
        clock = _limit_clock(
            server,
            IDLE,
            idle_since,
            idle_limit,
            [g for g in kept if g.reason == IDLE],
            now,
            settings,
        )
        idle_deadline = clock.deadline
        if signals.unknown:
            if clock.due or clock.expired:
                note = (
                    f"idle for {span(now - idle_since)} as far as can be seen, but "
                    f"{', '.join(sorted(signals.unknown))} could not be read: kept, not warned"
                )
        elif clock.due:
            new.append(clock.due)
        elif clock.expired and retire is None:
            retire = IDLE
    if retire is not None:
        new = []  # a warning about the other limit would come after the server is gone
    current = tuple(kept + new)
    action = "retire" if retire is not None else "warn" if new else "keep"
    return Decision(
        action=action,
        reason=retire,
        new_warnings=tuple(new),
        current=current,
        cleared=tuple(cleared),
        idle_since=idle_since,
        activity=activity,
        idle_limit=idle_limit,
        idle_deadline=idle_deadline,
        runtime_deadline=runtime_deadline,
        note=note,
    )

"""A user's limits from the parsed limits file: ``explain`` (each limit with where it came
from: defaults, a group, the user, an exemption), ``resolve`` (the values only) and the groups a
file names that the system does not know. Pure.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from .model import BUILTIN_SOURCE, KEYS, Limits, LimitsFile, Value, _hint, format_limit

# ---- resolution ---------------------------------------------------------------------------------


def _rank(value: Value) -> float:
    """Bigger is more generous: None (unlimited) above every number, True above False."""
    return math.inf if value is None else float(value)


@dataclass(frozen=True)
class Resolved:
    limits: Limits
    sources: dict[str, str]  # key -> "defaults", "group students", "user alice", "exemption ..."

    def lines(self) -> list[str]:
        """``"memory: 64G (group researchers)"``, one per limit, for "check limits"."""
        return [
            f"{key}: {format_limit(key, getattr(self.limits, key))} ({self.sources[key]})"
            for key in KEYS
        ]


def explain(user: str, groups: Iterable[str], doc: LimitsFile, now: datetime) -> Resolved:
    """A user's limits and where each one comes from (docs/limits.md has the rule).

    1. Each group's limits are ``defaults`` with the group's own values in place; a user in
       groups of the file gets, limit by limit, the most generous of those groups' limits (None
       beats any number, a bigger number a smaller one, true false). A user in none of the
       file's groups gets ``defaults``; group names the file does not know are ignored.
    2. ``users.<user>`` replaces the limits it sets, stricter or not.
    3. Each active exemption (``now``'s UTC date <= ``expires``) lifts the limits it names to
       unlimited (``allow_full_gpu``: true). A naive ``now`` is taken as UTC.
    """
    values, sources = dict(doc.defaults), dict.fromkeys(KEYS, "defaults")
    sources.update(dict.fromkeys(doc.builtin, BUILTIN_SOURCE))
    names = {groups} if isinstance(groups, str) else set(groups)  # one group name, by mistake
    member = sorted(names & doc.groups.keys())
    for key in KEYS:
        offers = [
            (doc.groups[g][key], f"group {g}")
            if key in doc.groups[g]
            else (values[key], sources[key])
            for g in member
        ]
        if offers:  # the most generous; on a tie, a group that sets it over the defaults
            values[key], sources[key] = max(
                offers, key=lambda o: (_rank(o[0]), o[1] not in ("defaults", BUILTIN_SOURCE))
            )
    for key, value in doc.users.get(user, {}).items():
        values[key], sources[key] = value, f"user {user}"
    active = [e for e in doc.exemptions if e.user == user and e.active(now)]
    for ex in sorted(active, key=lambda e: e.expires, reverse=True):
        for key in ex.lifts:
            lifted = True if key == "allow_full_gpu" else None
            if _rank(values.get(key, lifted)) < _rank(lifted):
                values[key], sources[key] = lifted, f"exemption until {ex.expires}: {ex.reason}"
    return Resolved(Limits(**{k: values.get(k) for k in KEYS}), sources)


def unmatched_groups(doc: LimitsFile, known_groups: Iterable[str]) -> list[str]:
    """Sentences for the groups the file names but nobody is in (likely a typo), for a warning."""
    known = sorted(set(known_groups))
    return [
        f"{doc.source}: groups.{name} is not a group on this hub, so it limits nobody"
        f"{_hint(name, known)}"
        for name in doc.groups
        if name not in known
    ]


def resolve(user: str, groups: Iterable[str], doc: LimitsFile, now: datetime) -> Limits:
    """A user's effective limits; see :func:`explain` for the rule."""
    return explain(user, groups, doc, now).limits

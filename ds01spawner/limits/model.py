"""Per-user and per-group limits: read and check the limits file, resolve a user's limits.

The file has four sections (docs/limits.md is the reference, docs/limits.example.yaml an
example): ``defaults`` sets limits for everyone (a limit it leaves out takes its value from
BUILTIN_DEFAULTS), ``groups`` and ``users`` change some of them, and
``exemptions`` lift some for one user until a date. ``null`` means unlimited.

:func:`parse_limits` is pure, as are ``resolve.explain`` and ``resolve.resolve``;
``file.LimitsStore`` and ``file.load_limits_file`` read the file. A :class:`LimitsError`'s
str() names the file, the line and the key of every problem, so the hub can refuse to start
with a sentence an admin can
act on.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields
from datetime import date, datetime, timezone

import yaml

LOGGER_NAME = "ds01spawner.limits"
Value = float | int | bool | None


@dataclass(frozen=True)
class Limits:
    """A user's effective limits; None means unlimited."""

    max_gpu_equivalents: float | None  # all servers together; a MIG slice counts its share
    max_gpus_per_server: int | None  # devices (GPUs or MIG slices) one server may get
    allow_full_gpu: bool  # may get a whole GPU, not only MIG slices
    max_servers: int | None  # servers running at once
    cpus: float | None  # CPU cores per server
    memory: int | None  # bytes per server
    shm_size: int | None  # bytes of /dev/shm per server
    pids_limit: int | None  # processes and threads per server
    max_runtime: float | None  # hours a server may run
    idle_timeout: float | None  # hours a server may sit idle

    @classmethod
    def unlimited(cls) -> Limits:
        return cls(None, None, True, None, None, None, None, None, None, None)

    def as_dict(self) -> dict[str, Value]:
        """JSON-ready values: sizes in bytes, times in hours, None for unlimited."""
        return {key: getattr(self, key) for key in KEYS}


KEYS: tuple[str, ...] = tuple(f.name for f in fields(Limits))
#: the value of a limit that ``defaults`` leaves out (docs/limits.md): fair shares of the GPUs
#: and of the servers, a day of runtime; cores, memory, /dev/shm, processes and idle time are
#: not limited unless the file says so. A new key gets a built-in value too, so existing files
#: keep working.
BUILTIN_DEFAULTS: dict[str, Value] = {
    "max_gpu_equivalents": 1.0,
    "max_gpus_per_server": 1,
    "allow_full_gpu": True,
    "max_servers": 2,
    "cpus": None,
    "memory": None,
    "shm_size": None,
    "pids_limit": None,
    "max_runtime": 24.0,
    "idle_timeout": None,
}
BUILTIN_SOURCE = "built-in default"
SECTIONS = ("defaults", "groups", "users", "exemptions")
EXEMPTION_KEYS = ("user", "lifts", "reason", "expires", "granted_by")

# DS01's resource-limits.yaml names, so that its admins learn what to rename or delete.
_DS01_RENAMED = {
    "max_mig_instances": "max_gpu_equivalents",
    "max_gpus_per_container": "max_gpus_per_server",
    "max_cpus": "cpus",
    "max_containers_per_user": "max_servers",
    "user_overrides": "users",
}
_MEMBERS_HINT = (
    "; group members come from JupyterHub's groups (c.JupyterHub.load_groups or the "
    "authenticator), not from this file."
)


def _hint(name: str, known: Iterable[str]) -> str:
    if name in _DS01_RENAMED:
        return f"; DS01's {name!r} is called {_DS01_RENAMED[name]!r} here."
    if name == "members":
        return _MEMBERS_HINT
    if name == "<<":
        return "; YAML merge keys are not supported: write the values out."
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    if close:
        return f"; did you mean {close[0]!r}?"
    return f". Known names: {', '.join(known)}."


# ---- errors -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    source: str  # the file, as the admin named it
    line: int | None  # 1-based
    key: str | None  # dotted path such as "groups.students.memory"
    message: str

    def __str__(self) -> str:
        where = self.source + (f" line {self.line}" if self.line else "")
        return f"{where}, {self.key}: {self.message}" if self.key else f"{where}: {self.message}"


class LimitsError(ValueError):
    """The limits file cannot be used; str() names the file, line and key of each problem."""

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems = tuple(sorted(dict.fromkeys(problems), key=lambda p: p.line or 0))
        lines = [str(p) for p in self.problems]
        if len(lines) > 1:
            lines.insert(0, f"The limits file has {len(lines)} problems:")
        super().__init__("\n".join(lines))


class _Bad(ValueError):
    """A value problem; the message follows "file line N, key: "."""


# ---- values -------------------------------------------------------------------------------------

_SIZE_RE = re.compile(r"(\d+(?:\.\d+)?)\s*(?:([kmgt])i?b?|b)?", re.IGNORECASE)
_SIZE_UNITS = {None: 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}
MIN_SIZE = 6 * 1024**2  # Docker's smallest memory limit; anything less is a missing unit
_HOURS_RE = re.compile(r"(\d+(?:\.\d+)?)\s*([smhd])", re.IGNORECASE)
_HOURS_PER = {"s": 1 / 3600, "m": 1 / 60, "h": 1.0, "d": 24.0}


def _show(value: object) -> str:
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    return repr(value)


def _number(
    value: object, what: str, whole: bool = False, least: float = 0, above: bool = False
) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _Bad(f"{_show(value)} is not {what}.")
    if not math.isfinite(value):
        raise _Bad(f"{value} is not {what}; write null for unlimited.")
    if value < 0:
        raise _Bad(f"{value} is negative; write {what}, or null for unlimited.")
    if whole and value != int(value):
        raise _Bad(f"{value} is not a whole number; write {what}.")
    if value < least or (above and value == 0):
        raise _Bad(f"{value} is too small; write {what}, or null for unlimited.")
    return int(value) if whole else float(value)


def parse_size(value: object) -> int:
    """``"16G"``, ``"512m"``, ``"1.5GiB"`` or integer bytes -> bytes (units of 1024, as Docker)."""
    what = "a size such as 16G or 512M"
    if isinstance(value, str) and (m := _SIZE_RE.fullmatch(value.strip())):
        size = int(float(m[1]) * _SIZE_UNITS[m[2] and m[2].lower()])
    elif isinstance(value, int) and not isinstance(value, bool):
        size = int(_number(value, what, whole=True))
    else:
        raise _Bad(f"{_show(value)} is not {what}.")
    if size < MIN_SIZE:
        raise _Bad(f"{_show(value)} is less than 6M, surely a missing unit; write {what}.")
    return size


def parse_hours(value: object) -> float:
    """A number of hours, or ``"90m"``, ``"24h"``, ``"2d"`` -> hours; at least one minute.

    ``"30s"`` (seconds, at least one) is for tests and demos of the culler: the minute floor
    catches a forgotten unit, and a seconds value cannot be written without one.
    """
    what = "a time in hours such as 24, 0.5 or '90m'"
    floor = 1 / 60
    if isinstance(value, str) and (m := _HOURS_RE.fullmatch(value.strip())):
        floor = 1 / 3600 if m[2].lower() == "s" else floor
        value = float(m[1]) * _HOURS_PER[m[2].lower()]
    hours = _number(value, what)
    if hours < floor - 1e-9:
        least = "a second" if floor < 1 / 60 else "a minute"
        raise _Bad(f"{_show(value)} is less than {least}; write {what}, or null for unlimited.")
    return hours


def _flag(value: object) -> bool:
    if not isinstance(value, bool):
        raise _Bad(f"{_show(value)} is not true or false.")
    return value


_PARSERS: dict[str, Callable[[object], Value]] = {
    "max_gpu_equivalents": lambda v: _number(v, "a number of GPU-equivalents such as 1 or 0.5"),
    "max_gpus_per_server": lambda v: _number(v, "a whole number of GPUs such as 1", whole=True),
    "allow_full_gpu": _flag,
    "max_servers": lambda v: _number(v, "a whole number of servers of 1 or more", True, 1),
    "cpus": lambda v: _number(v, "a number of CPU cores above 0 such as 4 or 2.5", above=True),
    "memory": parse_size,
    "shm_size": parse_size,
    "pids_limit": lambda v: _number(v, "a whole number of processes of 1 or more", True, 1),
    "max_runtime": parse_hours,
    "idle_timeout": parse_hours,
}


def format_limit(key: str, value: Value) -> str:
    """A value for people: ``"16G"``, ``"24 h"``, ``"unlimited"``, ``"yes"``."""
    if value is None:
        return "unlimited"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if key in ("memory", "shm_size"):
        for unit in "TGMK":
            if value >= _SIZE_UNITS[unit.lower()]:
                return f"{round(value / _SIZE_UNITS[unit.lower()], 2):g}{unit}"
    if key in ("max_runtime", "idle_timeout"):
        if value < 1 / 60:  # the seconds form of tests and demos
            return f"{round(value * 3600, 1):g} s"
        return f"{round(value, 2):g} h"
    return f"{value:g}"


# ---- the document -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Exemption:
    user: str
    lifts: tuple[str, ...]  # limit keys; "lifts: all" gives every key
    reason: str
    expires: date  # counts through this day (UTC)
    granted_by: str | None = None
    line: int | None = None

    def active(self, now: datetime) -> bool:
        return _utc_day(now) <= self.expires


@dataclass(frozen=True)
class LimitsFile:
    source: str
    defaults: dict[str, Value]  # every key
    groups: dict[str, dict[str, Value]]  # the keys each group sets
    users: dict[str, dict[str, Value]]  # the keys each user override sets
    exemptions: tuple[Exemption, ...] = ()
    builtin: tuple[str, ...] = ()  # keys ``defaults`` left out: BUILTIN_DEFAULTS apply

    def builtin_note(self) -> str:
        """One line for the hub log: which limits take built-in values ("" when none)."""
        if not self.builtin:
            return ""
        shown = ", ".join(f"{k}={format_limit(k, self.defaults[k])}" for k in self.builtin)
        return f"The limits file {self.source} leaves out defaults; built-in values apply: {shown}"


def parse_limits(text: str, source: str = "limits file") -> LimitsFile:
    """Parse and check a limits file; LimitsError names the file, line and key of each problem."""
    loader = None
    try:
        loader = yaml.SafeLoader(text)
        root = loader.get_single_node()
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
        what = getattr(e, "problem", None) or str(e)
        message = f"this is not valid YAML ({what}); check the indentation and the ':' after keys."
        raise LimitsError([Problem(source, mark and mark.line + 1, None, message)]) from None
    finally:
        if loader is not None:
            loader.dispose()
    return _Parser(source, loader).document(root)


_NULL = "tag:yaml.org,2002:null"
_TEXTS = ("user", "reason", "granted_by")
_EXEMPTION_NEEDS = "every exemption needs a user, what it lifts, a reason and an expiry date."


def _is_null(node: yaml.Node | None) -> bool:
    return node is None or (isinstance(node, yaml.ScalarNode) and node.tag == _NULL)


def _join(path: str, name: str) -> str:
    shown = name if re.fullmatch(r"[\w-]+", name) else repr(name)
    return f"{path}.{shown}" if path else shown


class _Parser:
    def __init__(self, source: str, loader: yaml.SafeLoader) -> None:
        self.source, self.loader, self.problems = source, loader, []

    def problem(self, node: yaml.Node | None, key: str | None, message: str) -> None:
        line = node.start_mark.line + 1 if node is not None else None
        self.problems.append(Problem(self.source, line, key or None, message))

    def mapping(self, node: yaml.Node, path: str) -> dict[str, tuple[yaml.Node, yaml.Node]]:
        """Key -> (key node, value node) of a mapping node; null is an empty mapping."""
        if _is_null(node):
            return {}
        if not isinstance(node, yaml.MappingNode):
            kind = "a list" if isinstance(node, yaml.SequenceNode) else f"{node.value!r}"
            self.problem(node, path, f"must be a mapping of 'name: value' lines, not {kind}.")
            return {}
        out: dict[str, tuple[yaml.Node, yaml.Node]] = {}
        for k, v in node.value:
            if not isinstance(k, yaml.ScalarNode):
                self.problem(k, path, "has a key that is not a plain name.")
            elif k.value in out:
                first = out[k.value][0].start_mark.line + 1
                self.problem(k, _join(path, k.value), f"is given twice (first on line {first}).")
            else:
                out[k.value] = (k, v)
        return out

    def scalar(self, node: yaml.Node) -> object:
        if not isinstance(node, yaml.ScalarNode):
            raise _Bad(f"must be one value, not a {node.id.replace('sequence', 'list')}.")
        try:
            return self.loader.construct_object(node, deep=True)
        except Exception as e:  # e.g. a date with month 13
            raise _Bad(f"{node.value!r} cannot be read ({e}).") from None

    def text(self, node: yaml.Node, key: str) -> str | None:
        if _is_null(node) or not isinstance(node, yaml.ScalarNode) or not node.value.strip():
            self.problem(node, key, "must be some text.")
            return None
        return node.value.strip()

    def limits(self, node: yaml.Node, path: str) -> dict[str, Value]:
        out: dict[str, Value] = {}
        for name, (k, v) in self.mapping(node, path).items():
            if name not in KEYS:
                self.problem(k, _join(path, name), f"is not a limit{_hint(name, KEYS)}")
                continue
            try:
                value = self.scalar(v)
                keep_null = value is None and name != "allow_full_gpu"
                out[name] = None if keep_null else _PARSERS[name](value)
            except _Bad as e:
                self.problem(v, _join(path, name), str(e))
        return out

    def document(self, root: yaml.Node | None) -> LimitsFile:
        sections = {} if _is_null(root) else self.mapping(root, "")
        for name, (k, _) in sections.items():
            if name not in SECTIONS:
                self.problem(k, name, f"is not a section{_hint(name, SECTIONS)}")
        defaults: dict[str, Value] = {}
        if not sections:  # an empty file is a mistake (a truncated write), not "built-ins"
            self.problem(root, "defaults", "is missing, and so is every other section.")
        if "defaults" in sections:
            defaults = self.limits(sections["defaults"][1], "defaults")
        builtin = tuple(key for key in KEYS if key not in defaults)
        defaults = {key: defaults.get(key, BUILTIN_DEFAULTS[key]) for key in KEYS}
        named = {}
        for section in ("groups", "users"):
            pairs = self.mapping(sections[section][1], section) if section in sections else {}
            named[section] = {n: self.limits(v, _join(section, n)) for n, (_, v) in pairs.items()}
        exemptions = self.exemptions(sections["exemptions"][1]) if "exemptions" in sections else ()
        if self.problems:
            raise LimitsError(self.problems)
        return LimitsFile(
            self.source, defaults, named["groups"], named["users"], exemptions, builtin
        )

    def exemptions(self, node: yaml.Node) -> tuple[Exemption, ...]:
        if _is_null(node):
            return ()
        if not isinstance(node, yaml.SequenceNode):
            self.problem(node, "exemptions", "must be a list, each item starting '- user: ...'.")
            return ()
        found = (self.exemption(item, f"exemptions[{i}]") for i, item in enumerate(node.value, 1))
        return tuple(e for e in found if e is not None)

    def exemption(self, item: yaml.Node, path: str) -> Exemption | None:
        before, got = len(self.problems), self.mapping(item, path)
        if not isinstance(item, yaml.MappingNode) and not _is_null(item):
            return None
        for name, (k, _) in got.items():
            if name not in EXEMPTION_KEYS:
                self.problem(
                    k,
                    _join(path, name),
                    f"is not a field of an exemption{_hint(name, EXEMPTION_KEYS)}",
                )
        for name in (n for n in EXEMPTION_KEYS[:4] if n not in got):
            self.problem(item, _join(path, name), f"is missing; {_EXEMPTION_NEEDS}")
        text = {n: self.text(v, _join(path, n)) for n, (_, v) in got.items() if n in _TEXTS}
        lifts = self.lifts(got["lifts"][1], _join(path, "lifts")) if "lifts" in got else ()
        when = got.get("expires")
        expires = self.expires(when[1], _join(path, "expires")) if when else None
        if len(self.problems) > before or expires is None:
            return None
        line = item.start_mark.line + 1
        return Exemption(text["user"], lifts, text["reason"], expires, text.get("granted_by"), line)

    def lifts(self, node: yaml.Node, path: str) -> tuple[str, ...]:
        if isinstance(node, yaml.ScalarNode) and node.value in ("all", *KEYS):
            return KEYS if node.value == "all" else (node.value,)
        if not isinstance(node, yaml.SequenceNode) or not node.value:
            self.problem(node, path, "must be 'all' or a list of limits such as [max_runtime].")
            return ()
        names = [item.value if isinstance(item, yaml.ScalarNode) else "?" for item in node.value]
        for item, name in zip(node.value, names, strict=True):
            if name not in KEYS:
                self.problem(item, path, f"{name!r} is not a limit{_hint(name, KEYS)}")
        return tuple(dict.fromkeys(names))

    def expires(self, node: yaml.Node, path: str) -> date | None:
        raw = node.value.strip() if isinstance(node, yaml.ScalarNode) else "a " + node.id
        try:
            if re.fullmatch(r"\d{4}-\d\d-\d\d", raw):
                return date.fromisoformat(raw)
        except ValueError:
            pass
        self.problem(node, path, f"{raw!r} is not a date such as 2026-12-31 (its last day).")
        return None


def _utc_day(now: datetime) -> date:
    return (now.astimezone(timezone.utc) if now.tzinfo else now).date()

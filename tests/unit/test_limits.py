"""The limits file: parsing and its errors, resolution, the example file, and hot reload."""

import os
from dataclasses import replace
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from textwrap import dedent

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from ds01spawner.limits.file import LimitsStore, load_limits_file
from ds01spawner.limits.model import (
    KEYS,
    MIN_SIZE,
    Exemption,
    Limits,
    LimitsError,
    LimitsFile,
    format_limit,
    parse_hours,
    parse_limits,
    parse_size,
)
from ds01spawner.limits.resolve import explain, resolve, unmatched_groups

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "limits.example.yaml"
G = 1024**3
UTC = timezone.utc
NOW = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)

DEFAULTS = dict(
    max_gpu_equivalents=0.5,
    max_gpus_per_server=1,
    allow_full_gpu=False,
    max_servers=2,
    cpus=4.0,
    memory=16 * G,
    shm_size=1 * G,
    pids_limit=1024,
    max_runtime=24.0,
    idle_timeout=2.0,
)

BASE = """\
defaults:
  max_gpu_equivalents: 0.5
  max_gpus_per_server: 1
  allow_full_gpu: false
  max_servers: 2
  cpus: 4
  memory: 16G
  shm_size: 1G
  pids_limit: 1024
  max_runtime: 24
  idle_timeout: 2
groups:
  students: {max_servers: 1, idle_timeout: 1, memory: 8G}
  researchers: {max_gpu_equivalents: 2, allow_full_gpu: true, max_servers: 4, memory: 64G,
                max_runtime: 72}
  gpu-heavy: {max_gpu_equivalents: null, max_gpus_per_server: 4, max_runtime: 48}
  cpu-only: {max_gpu_equivalents: 0, max_gpus_per_server: 0}
users:
  carol: {memory: 4G, max_servers: 3}
  dave: {cpus: null}
exemptions:
  - {user: erin, lifts: [max_runtime, allow_full_gpu], reason: thesis, expires: 2026-06-15}
  - {user: frank, lifts: all, reason: conference, expires: 2026-07-01}
  - {user: gina, lifts: [memory], reason: old deadline, expires: 2026-06-14}
  - {user: henry, lifts: [max_gpu_equivalents, memory], reason: big model, expires: 2026-12-31}
"""


def parse(text: str) -> LimitsFile:
    return parse_limits(dedent(text), "limits.yaml")


DOC = parse(BASE)


# ---- resolution ---------------------------------------------------------------------------------

# (user, groups, now, the limits that differ from DEFAULTS, where those come from)
RESOLUTION_CASES = [
    ("nobody", [], NOW, {}, {}),
    ("nobody", ["no-such-group", "wheel"], NOW, {}, {}),
    (
        "sam",
        ["students"],
        NOW,
        {"max_servers": 1, "idle_timeout": 1.0, "memory": 8 * G},  # a group may be stricter
        {"max_servers": "group students", "memory": "group students"},
    ),
    (
        "sam",
        ["students", "researchers"],  # the most generous of the two groups' limits
        NOW,
        {
            "max_gpu_equivalents": 2.0,
            "allow_full_gpu": True,
            "max_servers": 4,
            "memory": 64 * G,
            "max_runtime": 72.0,
        },  # idle_timeout: researchers' (the default 2 h) beats students' 1 h
        {"max_servers": "group researchers", "idle_timeout": "defaults"},
    ),
    (
        "sam",
        ["researchers", "gpu-heavy"],
        NOW,
        {
            "max_gpu_equivalents": None,  # null beats any number
            "max_gpus_per_server": 4,
            "allow_full_gpu": True,
            "max_servers": 4,
            "memory": 64 * G,
            "max_runtime": 72.0,  # 72 beats 48
        },
        {"max_gpu_equivalents": "group gpu-heavy", "max_runtime": "group researchers"},
    ),
    ("sam", ["cpu-only"], NOW, {"max_gpu_equivalents": 0.0, "max_gpus_per_server": 0}, {}),
    (
        "sam",
        ["cpu-only", "students", "nope"],
        NOW,
        {},  # cpu-only keeps the default servers, students the default GPUs: the defaults win
        {"max_gpu_equivalents": "defaults", "max_servers": "defaults"},
    ),
    (
        "carol",
        ["researchers"],  # a user override wins, even when stricter than the group
        NOW,
        {
            "max_gpu_equivalents": 2.0,
            "allow_full_gpu": True,
            "max_servers": 3,
            "memory": 4 * G,
            "max_runtime": 72.0,
        },
        {
            "memory": "user carol",
            "max_servers": "user carol",
            "allow_full_gpu": "group researchers",
        },
    ),
    ("dave", [], NOW, {"cpus": None}, {"cpus": "user dave"}),
    (
        "erin",  # exemption before its last day
        [],
        datetime(2026, 6, 1, tzinfo=UTC),
        {"max_runtime": None, "allow_full_gpu": True},
        {"max_runtime": "exemption until 2026-06-15: thesis"},
    ),
    (
        "erin",  # on its last day, up to midnight UTC
        [],
        datetime(2026, 6, 15, 23, 59, 59, tzinfo=UTC),
        {"max_runtime": None, "allow_full_gpu": True},
        {"allow_full_gpu": "exemption until 2026-06-15: thesis"},
    ),
    (
        "erin",  # 01:00 in UTC+2 is still the 15th in UTC
        [],
        datetime(2026, 6, 16, 1, 0, tzinfo=timezone(timedelta(hours=2))),
        {"max_runtime": None, "allow_full_gpu": True},
        {},
    ),
    ("erin", [], datetime(2026, 6, 16, tzinfo=UTC), {}, {"max_runtime": "defaults"}),  # expired
    ("erin", [], datetime(2026, 6, 16, 0, 0, 1), {}, {}),  # a naive clock counts as UTC
    (
        "frank",  # lifts: all
        ["students"],
        NOW,
        {k: (True if k == "allow_full_gpu" else None) for k in KEYS},
        {"pids_limit": "exemption until 2026-07-01: conference"},
    ),
    ("gina", [], NOW, {}, {"memory": "defaults"}),  # expired the day before
    (
        "henry",  # a lift that changes nothing does not show as the reason
        ["gpu-heavy"],
        NOW,
        {
            "max_gpu_equivalents": None,
            "max_gpus_per_server": 4,
            "max_runtime": 48.0,
            "memory": None,
        },
        {
            "max_gpu_equivalents": "group gpu-heavy",
            "memory": "exemption until 2026-12-31: big model",
        },
    ),
]


@pytest.mark.parametrize(("user", "groups", "now", "changed", "sources"), RESOLUTION_CASES)
def test_resolution(user, groups, now, changed, sources):
    resolved = explain(user, groups, DOC, now)
    assert resolved.limits == Limits(**{**DEFAULTS, **changed})
    assert resolve(user, groups, DOC, now) == resolved.limits
    for key, source in sources.items():
        assert resolved.sources[key] == source, key
    assert set(resolved.sources) == set(KEYS)


def test_unknown_users_and_the_order_of_groups_do_not_matter():
    a = explain("x", ["researchers", "students", "gpu-heavy"], DOC, NOW)
    b = explain("x", ("gpu-heavy", "students", "researchers"), DOC, NOW)
    assert a == b
    assert explain("x", "students", DOC, NOW) == explain("x", ["students"], DOC, NOW)


def test_lines_say_value_and_source():
    lines = explain("carol", ["researchers"], DOC, NOW).lines()
    assert "memory: 4G (user carol)" in lines
    assert "max_runtime: 72 h (group researchers)" in lines
    assert "pids_limit: 1024 (defaults)" in lines
    assert "allow_full_gpu: yes (group researchers)" in lines


def test_unlimited_and_as_dict():
    assert all(v is None for k, v in Limits.unlimited().as_dict().items() if k != "allow_full_gpu")
    assert Limits.unlimited().allow_full_gpu is True
    assert Limits(**DEFAULTS).as_dict() == DEFAULTS
    assert list(Limits(**DEFAULTS).as_dict()) == list(KEYS)


def test_unmatched_groups_name_likely_typos():
    warnings = unmatched_groups(DOC, ["students", "researcher", "gpu-heavy"])
    assert len(warnings) == 2
    assert "groups.researchers is not a group on this hub" in warnings[0]
    assert "did you mean 'researcher'?" in warnings[0]
    assert "groups.cpu-only" in warnings[1]
    assert unmatched_groups(DOC, ["students", "researchers", "gpu-heavy", "cpu-only"]) == []


# ---- values -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("16G", 16 * G),
        ("16g", 16 * G),
        ("16GB", 16 * G),
        ("16GiB", 16 * G),
        ("512M", 512 * 1024**2),
        ("1.5G", 1536 * 1024**2),
        ("1T", 1024 * G),
        ("8388608", 8 * 1024**2),
        (8 * 1024**2, 8 * 1024**2),
        (" 32 g ", 32 * G),
    ],
)
def test_sizes(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize(
    ("text", "hours"),
    [(24, 24.0), (0.5, 0.5), ("90m", 1.5), ("24h", 24.0), ("0.25h", 0.25), ("2d", 48.0)],
)
def test_hours(text, hours):
    assert parse_hours(text) == hours


def test_seconds_are_for_tests_and_need_their_unit():
    assert parse_hours("8s") == pytest.approx(8 / 3600)
    assert parse_hours("90s") == pytest.approx(1.5 / 60)
    assert format_limit("idle_timeout", 8 / 3600) == "8 s"
    with pytest.raises(ValueError, match="less than a second"):
        parse_hours("0.5s")
    with pytest.raises(ValueError, match="less than a minute"):
        parse_hours(0.001)  # a number is hours: a forgotten unit, not seconds


@pytest.mark.parametrize(
    ("key", "value", "shown"),
    [
        ("memory", 16 * G, "16G"),
        ("memory", 1536 * 1024**2, "1.5G"),
        ("shm_size", 512 * 1024**2, "512M"),
        ("max_runtime", 0.5, "0.5 h"),
        ("cpus", 2.5, "2.5"),
        ("max_servers", 3, "3"),
        ("allow_full_gpu", False, "no"),
        ("idle_timeout", None, "unlimited"),
    ],
)
def test_format_limit(key, value, shown):
    assert format_limit(key, value) == shown


# ---- malformed files ----------------------------------------------------------------------------


def edit(old: str, new: str) -> str:
    assert old in BASE, old
    return BASE.replace(old, new, 1)


# (name, file text, line, key (None: no key), words the message must contain)
MALFORMED = [
    ("bad YAML", edit("  cpus: 4\n", "  cpus: [4\n"), 7, None, "not valid YAML"),
    ("bad indentation", edit("  cpus: 4\n", "   cpus: 4\n"), 6, None, "not valid YAML"),
    ("two documents", BASE + "---\ndefaults: {}\n", 26, None, "not valid YAML"),
    ("unknown section", edit("users:", "user:"), 18, "user", "did you mean 'users'?"),
    ("unknown section, far", BASE + "colour: blue\n", 26, "colour", "Known names: defaults"),
    (
        "unknown key",
        edit("  memory: 16G", "  memroy: 16G"),
        7,
        "defaults.memroy",
        "did you mean 'memory'?",
    ),
    (
        "DS01 name",
        edit("max_servers: 1,", "max_containers_per_user: 1,"),
        13,
        "groups.students.max_containers_per_user",
        "is called 'max_servers' here",
    ),
    (
        "DS01 members",
        edit("dave: {cpus: null}", "dave: {members: [x]}"),
        20,
        "users.dave.members",
        "c.JupyterHub.load_groups",
    ),
    (
        "negative number",
        edit("max_servers: 4", "max_servers: -1"),
        14,
        "groups.researchers.max_servers",
        "negative; write a whole number of servers of 1 or more, or null",
    ),
    ("wrong type", edit("  cpus: 4", "  cpus: four"), 6, "defaults.cpus", "'four' is not a number"),
    ("yes for a number", edit("  cpus: 4", "  cpus: yes"), 6, "defaults.cpus", "true is not a"),
    ("wrong type, list", edit("  cpus: 4", "  cpus: [4]"), 6, "defaults.cpus", "not a list"),
    (
        "parsecs",
        edit("memory: 8G", "memory: 12 parsecs"),
        13,
        "groups.students.memory",
        "'12 parsecs' is not a size such as 16G or 512M",
    ),
    ("size without unit", edit("  memory: 16G", "  memory: 16"), 7, "defaults.memory", "unit"),
    ("float size", edit("  shm_size: 1G", "  shm_size: 1.5"), 8, "defaults.shm_size", "16G"),
    (
        "duplicate key",
        edit("  pids_limit: 1024\n", "  pids_limit: 1024\n  pids_limit: 2048\n"),
        10,
        "defaults.pids_limit",
        "given twice (first on line 9)",
    ),
    (
        "duplicate group",
        edit("users:", "  students: {}\nusers:"),
        18,
        "groups.students",
        "given twice (first on line 13)",
    ),
    ("cpus 0", edit("  cpus: 4", "  cpus: 0"), 6, "defaults.cpus", "above 0"),
    (
        "max_servers 0",
        edit("  max_servers: 2", "  max_servers: 0"),
        5,
        "defaults.max_servers",
        "1 or more",
    ),
    ("pids 0", edit("pids_limit: 1024", "pids_limit: 0"), 9, "defaults.pids_limit", "1 or more"),
    (
        "half a GPU",
        edit("max_gpus_per_server: 4", "max_gpus_per_server: 1.5"),
        16,
        "groups.gpu-heavy.max_gpus_per_server",
        "not a whole number",
    ),
    (
        "runtime 0",
        edit("max_runtime: 48", "max_runtime: 0"),
        16,
        "groups.gpu-heavy.max_runtime",
        "less than a minute",
    ),
    (
        "infinite",
        edit("  idle_timeout: 2", "  idle_timeout: .inf"),
        11,
        "defaults.idle_timeout",
        "null for unlimited",
    ),
    (
        "bool",
        edit("allow_full_gpu: true", "allow_full_gpu: sometimes"),
        14,
        "groups.researchers.allow_full_gpu",
        "'sometimes' is not true or false",
    ),
    (
        "bool null",
        edit("allow_full_gpu: false", "allow_full_gpu: null"),
        4,
        "defaults.allow_full_gpu",
        "not true or false",
    ),
    (
        "unknown default",
        edit("  pids_limit: 1024\n", "  pid_limit: 1024\n"),
        9,
        "defaults.pid_limit",
        "is not a limit",
    ),
    (
        "groups not a mapping",
        edit("groups:", "groups: [students]\nx-groups:"),
        12,
        "groups",
        "must be a mapping",
    ),
    (
        "a group not a mapping",
        edit("dave: {cpus: null}", "dave: 4"),
        20,
        "users.dave",
        "must be a mapping",
    ),
    (
        "exemptions not a list",
        edit("exemptions:", "exemptions: {}\nx:"),
        21,
        "exemptions",
        "must be a list",
    ),
    (
        "exemption without reason",
        edit("reason: thesis, ", ""),
        22,
        "exemptions[1].reason",
        "is missing; every exemption needs",
    ),
    (
        "exemption with empty reason",
        edit("reason: thesis", "reason: ''"),
        22,
        "exemptions[1].reason",
        "must be some text",
    ),
    ("exemption without user", edit("{user: frank, ", "{"), 23, "exemptions[2].user", "is missing"),
    (
        "exemption bad date",
        edit("expires: 2026-07-01", "expires: 2026-02-30"),
        23,
        "exemptions[2].expires",
        "'2026-02-30' is not a date such as 2026-12-31",
    ),
    (
        "exemption date format",
        edit("expires: 2026-07-01", "expires: 07/01/2026"),
        23,
        "exemptions[2].expires",
        "is not a date",
    ),
    (
        "lifts unknown key",
        edit("lifts: [memory]", "lifts: [memory, ram]"),
        24,
        "exemptions[3].lifts",
        "'ram' is not a limit",
    ),
    (
        "lifts empty",
        edit("lifts: [memory]", "lifts: []"),
        24,
        "exemptions[3].lifts",
        "must be 'all' or a list",
    ),
    (
        "exemption unknown key",
        edit("reason: big model", "reason: big model, until: 2027-01-01"),
        25,
        "exemptions[4].until",
        "is not a field of an exemption",
    ),
]


@pytest.mark.parametrize(
    ("text", "line", "key", "words"),
    [pytest.param(*case[1:], id=case[0]) for case in MALFORMED],
)
def test_malformed_files_are_refused_with_file_line_and_key(text, line, key, words):
    with pytest.raises(LimitsError) as info:
        parse_limits(text, "limits.yaml")
    message = str(info.value)
    where = "limits.yaml" + (f" line {line}" if line else "") + (f", {key}: " if key else ": ")
    assert where in message, message
    assert words in message, message
    assert "Traceback" not in message


def test_there_are_enough_malformed_cases():
    assert len(MALFORMED) >= 12


def test_limits_left_out_of_defaults_take_the_documented_built_in_values():
    from ds01spawner.limits.model import BUILTIN_DEFAULTS, BUILTIN_SOURCE, KEYS

    assert set(BUILTIN_DEFAULTS) == set(KEYS)  # a new key needs a built-in value
    doc = parse_limits("defaults:\n  max_servers: 3\ngroups:\n  big:\n    cpus: 8\n", "l.yaml")
    assert doc.builtin == tuple(k for k in KEYS if k != "max_servers")
    assert doc.defaults["max_servers"] == 3
    assert doc.defaults["max_gpu_equivalents"] == 1.0 and doc.defaults["max_runtime"] == 24.0
    assert doc.defaults["memory"] is None and doc.defaults["allow_full_gpu"] is True
    note = doc.builtin_note()
    assert note.startswith("The limits file l.yaml leaves out defaults; built-in values apply: ")
    assert "max_gpu_equivalents=1, max_gpus_per_server=1, allow_full_gpu=yes" in note
    resolved = explain("x", ["big"], doc, datetime(2027, 1, 1, tzinfo=timezone.utc))
    assert resolved.sources["max_servers"] == "defaults"
    assert resolved.sources["max_runtime"] == BUILTIN_SOURCE
    assert resolved.sources["cpus"] == "group big" and resolved.limits.cpus == 8
    # no defaults section at all: every limit built in; unknown keys and bad values stay errors
    assert parse_limits("users:\n  bob:\n    max_servers: 1\n").builtin == KEYS
    with pytest.raises(LimitsError, match="defaults.max_server: is not a limit"):
        parse_limits("defaults:\n  max_server: 1\n")
    with pytest.raises(LimitsError, match="defaults.max_servers"):
        parse_limits("defaults:\n  max_servers: lots\n")


def test_an_empty_file_is_refused():
    for text in ("", "# nothing\n", "~\n"):
        with pytest.raises(LimitsError, match=r"limits.yaml( line 1)?, defaults: is missing"):
            parse_limits(text, "limits.yaml")


def test_every_problem_is_listed_in_line_order():
    text = edit("  cpus: 4", "  cpus: 0").replace("memory: 8G", "memory: 12 parsecs")
    text = text.replace("users:", "user:")
    with pytest.raises(LimitsError) as info:
        parse_limits(text, "limits.yaml")
    lines = str(info.value).splitlines()
    assert lines[0] == "The limits file has 3 problems:"
    assert [p.line for p in info.value.problems] == [6, 13, 18]
    assert lines[1].startswith("limits.yaml line 6, defaults.cpus: ")
    assert lines[2].startswith("limits.yaml line 13, groups.students.memory: ")
    assert lines[3].startswith("limits.yaml line 18, user: ")


def test_names_are_text_as_written():
    doc = parse(BASE + "  - {user: 007, lifts: memory, reason: yes, expires: 2030-01-01}\n")
    assert doc.exemptions[-1] == Exemption("007", ("memory",), "yes", date(2030, 1, 1), None, 26)
    doc = parse(edit("dave:", "'j.doe':"))
    assert "j.doe" in doc.users


def test_null_sections_are_empty():
    head = BASE[: BASE.index("groups:")]
    doc = parse(head + "groups:\nusers:\nexemptions:\n")
    assert (doc.groups, doc.users, doc.exemptions) == ({}, {}, ())
    assert resolve("x", ["students"], doc, NOW) == Limits(**DEFAULTS)


def test_anchors_work_and_merge_keys_are_refused():
    doc = parse(edit("  dave: {cpus: null}", "  dave: &dave {cpus: null}\n  erin: *dave"))
    assert doc.users["erin"] == {"cpus": None}
    with pytest.raises(LimitsError, match=r"line 21, users.erin.'<<': .*merge keys"):
        parse(edit("  dave: {cpus: null}", "  dave: &dave {cpus: null}\n  erin: {<<: *dave}"))


def test_ds01_values_after_renaming_keys():
    ds01 = """\
        defaults:
          max_gpu_equivalents: 2          # was max_mig_instances
          max_gpus_per_server: 1          # was max_gpus_per_container
          allow_full_gpu: false
          cpus: 16                        # was max_cpus
          memory: 32g
          shm_size: 16g
          pids_limit: 4096
          max_servers: 3                  # was max_containers_per_user
          max_runtime: 24h
          idle_timeout: 2h
        groups:
          admin: {max_gpu_equivalents: null, idle_timeout: null, max_runtime: null, memory: 128g}
          researcher: {idle_timeout: 0.25h}
    """
    doc = parse(ds01)
    assert resolve("x", [], doc, NOW) == Limits(
        2.0, 1, False, 3, 16.0, 32 * G, 16 * G, 4096, 24.0, 2.0
    )
    assert doc.groups["researcher"]["idle_timeout"] == 0.25
    with pytest.raises(LimitsError, match="'max_cpus' is called 'cpus' here"):
        parse(ds01.replace("cpus: 16", "max_cpus: 16"))


# ---- the shipped example ------------------------------------------------------------------------


def test_the_example_parses_and_resolves_as_its_comments_say():
    doc = load_limits_file(EXAMPLE)
    today = datetime(2026, 11, 28, tzinfo=UTC)
    nobody = resolve("eve", [], doc, today)
    assert nobody == Limits(0.5, 1, False, 2, 4.0, 32 * G, 8 * G, 4096, 24.0, 2.0)

    alice = explain("alice", ["students"], doc, today)
    assert alice.limits == replace(nobody, max_servers=1, max_runtime=None, idle_timeout=None)
    assert alice.sources["idle_timeout"].startswith("exemption until 2027-06-30: Thesis deadline")
    assert (
        resolve("alice", ["students"], doc, datetime(2027, 6, 30, 23, tzinfo=UTC)) == alice.limits
    )
    later = resolve("alice", ["students"], doc, datetime(2027, 7, 1, tzinfo=UTC))
    assert later == replace(nobody, max_servers=1, idle_timeout=1.0)

    bob = explain("bob", ["students", "researchers"], doc, today)
    assert bob.limits == Limits(2.0, 2, True, 4, 16.0, 96 * G, 32 * G, 4096, 72.0, 4.0)
    assert bob.sources["memory"] == "user bob"
    assert bob.sources["idle_timeout"] == "group researchers"

    admin = resolve("admin", ["staff"], doc, today)
    assert admin == Limits(None, None, True, 10, 32.0, 128 * G, 64 * G, 4096, None, 8.0)
    assert doc.exemptions[0].granted_by == "admin"


# ---- LimitsStore: start and hot reload ----------------------------------------------------------


class RecordingLog:
    def __init__(self):
        self.errors: list[str] = []
        self.infos: list[str] = []

    def error(self, msg, *args):
        self.errors.append(msg % args)

    def info(self, msg, *args):
        self.infos.append(msg % args)


class Clock:
    def __init__(self, now: datetime):
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def write(path: Path, text: str, tick: list[int]) -> None:
    """Write and give the file a new mtime, so that even fast edits look changed."""
    path.write_text(text, encoding="utf-8")
    tick[0] += 1_000_000_000
    os.utime(path, ns=(tick[0], tick[0]))


@pytest.fixture
def store(tmp_path):
    path = tmp_path / "limits.yaml"
    tick = [1_700_000_000_000_000_000]
    write(path, BASE, tick)
    log, clock = RecordingLog(), Clock(NOW)
    return LimitsStore(path, log, clock), path, log, clock, tick


def test_store_reload_good_broken_fixed(store):
    s, path, log, _, tick = store
    assert s.resolve("sam", ["students"]).max_servers == 1

    write(path, BASE.replace("memory: 8G", "memory: 12 parsecs"), tick)  # a broken edit
    for _ in range(3):
        assert s.current().groups["students"]["memory"] == 8 * G  # the last good limits
    assert len(log.errors) == 1, log.errors
    assert f"{path} line 13, groups.students.memory: '12 parsecs'" in log.errors[0]
    assert "stay in force" in log.errors[0]
    assert log.infos == []

    write(path, BASE.replace("memory: 8G", "memory: 12 parsec"), tick)  # another broken version
    s.current()
    assert len(log.errors) == 2

    write(path, BASE.replace("memory: 8G", "memory: 12G"), tick)  # fixed
    assert s.resolve("sam", ["students"]).memory == 12 * G
    assert len(log.infos) == 1 and str(path) in log.infos[0]
    s.current()
    assert len(log.errors) == 2 and len(log.infos) == 1


def test_store_ignores_a_touch_and_picks_up_a_change(store):
    s, path, log, _, tick = store
    first = s.current()
    write(path, BASE, tick)  # same text, new mtime
    assert s.current() == first
    assert log.infos == [] and log.errors == []
    write(path, BASE.replace("max_servers: 2", "max_servers: 5"), tick)
    assert s.resolve("nobody", []).max_servers == 5
    assert len(log.infos) == 1


def test_store_keeps_the_last_good_limits_when_the_file_goes(store):
    s, path, log, _, tick = store
    path.unlink()
    assert s.resolve("sam", ["students"]).max_servers == 1
    s.current()
    assert len(log.errors) == 1 and "does not exist" in log.errors[0]
    write(path, BASE, tick)
    assert s.resolve("sam", ["students"]).max_servers == 1
    assert len(log.infos) == 1  # in force again


def test_store_uses_its_clock_for_exemptions(store):
    s, _, _, clock, _ = store
    clock.now = datetime(2026, 6, 15, 23, tzinfo=UTC)
    assert s.resolve("erin", []).max_runtime is None
    clock.now = datetime(2026, 6, 16, tzinfo=UTC)
    assert s.resolve("erin", []).max_runtime == 24.0
    assert s.explain("erin", []).sources["max_runtime"] == "defaults"


def test_the_hub_refuses_to_start_on_a_missing_or_broken_file(tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(LimitsError, match=r"nope\.yaml: the limits file does not exist"):
        LimitsStore(missing, RecordingLog())
    broken = tmp_path / "limits.yaml"
    broken.write_text(BASE.replace("  cpus: 4", "  cpus: 0"), encoding="utf-8")
    with pytest.raises(LimitsError, match=r"limits\.yaml line 6, defaults\.cpus: 0 is too small"):
        LimitsStore(broken, RecordingLog())
    with pytest.raises(LimitsError, match="limits.yaml line 6, defaults.cpus"):
        load_limits_file(broken)
    broken.write_bytes(b"defaults: \xff\n")
    with pytest.raises(LimitsError, match="cannot be read"):
        load_limits_file(broken)


# ---- properties ---------------------------------------------------------------------------------

VALUES = {
    "max_gpu_equivalents": st.none() | st.sampled_from([0.0, 0.25, 0.5, 1.0, 2.0, 7.5]),
    "max_gpus_per_server": st.none() | st.integers(0, 8),
    "allow_full_gpu": st.booleans(),
    "max_servers": st.none() | st.integers(1, 10),
    "cpus": st.none() | st.sampled_from([0.5, 1.0, 4.0, 64.0]),
    "memory": st.none() | st.integers(MIN_SIZE, 2**40),
    "shm_size": st.none() | st.integers(MIN_SIZE, 2**36),
    "pids_limit": st.none() | st.integers(1, 100_000),
    "max_runtime": st.none() | st.sampled_from([0.5, 1.0, 24.0, 168.0]),
    "idle_timeout": st.none() | st.sampled_from([0.25, 2.0, 8.0]),
}
GROUPS = ["students", "researchers", "staff", "guests"]
USERS = ["alice", "bob", "carol"]
full = st.fixed_dictionaries(VALUES)
partial = st.fixed_dictionaries({}, optional=VALUES)
exemption = st.builds(
    Exemption,
    user=st.sampled_from(USERS),
    lifts=st.sampled_from([KEYS]) | st.lists(st.sampled_from(KEYS), min_size=1).map(tuple),
    reason=st.just("because"),
    expires=st.dates(date(2026, 1, 1), date(2027, 1, 1)),
)
docs = st.builds(
    LimitsFile,
    source=st.just("limits.yaml"),
    defaults=full,
    groups=st.dictionaries(st.sampled_from(GROUPS), partial),
    users=st.dictionaries(st.sampled_from(USERS), partial),
    exemptions=st.lists(exemption, max_size=3).map(tuple),
)
moments = st.datetimes(datetime(2026, 1, 1), datetime(2027, 1, 1))


def at_least_as_generous(a: Limits, b: Limits) -> bool:
    def rank(v):
        return float("inf") if v is None else float(v)

    return all(rank(getattr(a, k)) >= rank(getattr(b, k)) for k in KEYS)


@settings(max_examples=100, deadline=None)
@given(defaults=full, doc=docs, now=moments)
def test_a_user_in_no_group_without_overrides_or_exemptions_gets_the_defaults(defaults, doc, now):
    doc = replace(doc, defaults=defaults)
    resolved = explain("dora", ["not-in-the-file"], doc, now)
    assert resolved.limits == Limits(**defaults)
    assert set(resolved.sources.values()) == {"defaults"}


@settings(max_examples=150, deadline=None)
@given(
    doc=docs,
    user=st.sampled_from(USERS),
    groups=st.lists(st.sampled_from(GROUPS)),
    extra=exemption,
    now=moments,
)
def test_an_exemption_never_makes_a_limit_stricter(doc, user, groups, extra, now):
    before = resolve(user, groups, doc, now)
    after = resolve(user, groups, replace(doc, exemptions=(*doc.exemptions, extra)), now)
    assert at_least_as_generous(after, before)
    if extra.user == user and extra.active(now):
        for key in extra.lifts:
            assert getattr(after, key) is (True if key == "allow_full_gpu" else None)


@settings(max_examples=150, deadline=None)
@given(
    doc=docs,
    user=st.sampled_from(USERS),
    groups=st.lists(st.sampled_from(GROUPS), min_size=1),
    more=st.sampled_from(GROUPS),
    now=moments,
)
def test_a_second_group_never_takes_anything_away(doc, user, groups, more, now):
    if not set(groups) & doc.groups.keys():
        return  # from no group to one, a group may be stricter than the defaults, by design
    before = resolve(user, groups, doc, now)
    assert at_least_as_generous(resolve(user, [*groups, more], doc, now), before)


@settings(max_examples=100, deadline=None)
@given(doc=docs)
def test_a_written_file_parses_back_to_the_same_document(doc):
    data = {
        "defaults": doc.defaults,
        "groups": doc.groups,
        "users": doc.users,
        "exemptions": [
            {"user": e.user, "lifts": list(e.lifts), "reason": e.reason, "expires": e.expires}
            for e in doc.exemptions
        ],
    }
    parsed = parse_limits(yaml.safe_dump(data), "limits.yaml")
    assert (parsed.defaults, parsed.groups, parsed.users) == (doc.defaults, doc.groups, doc.users)
    assert [(e.user, e.lifts, e.expires) for e in parsed.exemptions] == [
        (e.user, tuple(dict.fromkeys(e.lifts)), e.expires) for e in doc.exemptions
    ]

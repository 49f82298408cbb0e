"""The cull decision, pure, with a fixed clock."""

from dataclasses import replace
from datetime import date, datetime, timedelta, timezone

import pytest

from ds01spawner.culler.decision import (
    IDLE,
    MAX_RUNTIME,
    Given,
    Server,
    Settings,
    Signals,
    decide,
    span,
)
from ds01spawner.limits.model import Exemption, Limits, LimitsFile
from ds01spawner.limits.resolve import explain

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=timezone.utc)
H = timedelta(hours=1)
M = timedelta(minutes=1)
IDLE_1H = replace(Limits.unlimited(), idle_timeout=1.0)
RUN_24H = replace(Limits.unlimited(), max_runtime=24.0)
BOTH = replace(Limits.unlimited(), idle_timeout=1.0, max_runtime=24.0)


def server(started=NOW - 10 * H, gpu=False, name="proj") -> Server:
    return Server(user="alice", name=name, project=name, started=started, has_gpu=gpu)


def idle_since(t: datetime) -> Signals:
    """Every signal quiet; the hub saw activity last at ``t``."""
    return Signals(hub_activity=t)


def given(reason, fraction, since, deadline, at=None) -> Given:
    return Given(reason, fraction, at or since + (deadline - since) * fraction, deadline, since)


def both_idle_warnings(since: datetime, limit=H) -> tuple[Given, ...]:
    return (
        given(IDLE, 0.75, since, since + limit),
        given(IDLE, 0.9, since, since + limit),
    )


# ---- all quiet ----------------------------------------------------------------------------------


def test_idle_for_less_than_the_first_fraction_is_kept_with_its_deadline():
    d = decide(server(), IDLE_1H, idle_since(NOW - 30 * M), NOW)
    assert d.action == "keep" and not d.new_warnings
    assert d.idle_since == NOW - 30 * M
    assert d.idle_deadline == NOW + 30 * M and d.runtime_deadline is None


def test_idle_at_75_percent_is_warned_with_the_deadline():
    d = decide(server(), IDLE_1H, idle_since(NOW - 45 * M), NOW)
    assert d.action == "warn"
    (w,) = d.new_warnings
    assert (w.reason, w.fraction, w.deadline, w.at) == (IDLE, 0.75, NOW + 15 * M, NOW)
    assert w.since == NOW - 45 * M and d.current == (w,)


def test_idle_at_90_percent_after_the_75_percent_warning_is_warned_again():
    since = NOW - 54 * M
    first = given(IDLE, 0.75, since, since + H)
    d = decide(server(), IDLE_1H, idle_since(since), NOW, given=[first])
    assert d.action == "warn" and [w.fraction for w in d.new_warnings] == [0.9]
    assert d.current == (first, d.new_warnings[0])


def test_a_warning_already_given_is_not_given_again():
    since = NOW - 50 * M
    first = given(IDLE, 0.75, since, since + H)
    d = decide(server(), IDLE_1H, idle_since(since), NOW, given=[first])
    assert d.action == "keep" and d.current == (first,)


def test_all_signals_idle_past_the_deadline_after_both_warnings_is_retired():
    since = NOW - 61 * M
    d = decide(server(), IDLE_1H, idle_since(since), NOW, given=both_idle_warnings(since))
    assert d.action == "retire" and d.reason == IDLE and not d.new_warnings


def test_a_server_never_used_is_idle_since_it_started():
    d = decide(server(started=NOW - 50 * M), IDLE_1H, Signals(), NOW)
    assert d.idle_since == NOW - 50 * M and d.action == "warn"


# ---- each signal alone keeps the server ---------------------------------------------------------

OLD = NOW - 5 * H


@pytest.mark.parametrize(
    ("signals", "source"),
    [
        (Signals(hub_activity=NOW - 5 * M), "hub"),
        (Signals(hub_activity=OLD, busy=frozenset({"kernels"})), "kernels"),
        (Signals(hub_activity=OLD, kernel_activity=NOW - 2 * M), "kernels"),
        (Signals(hub_activity=OLD, busy=frozenset({"gpu"})), "gpu"),
        (Signals(hub_activity=OLD, busy=frozenset({"cpu"})), "cpu"),
        (Signals(hub_activity=OLD, keep_alive=NOW - 10 * H), "keep_alive"),
        (Signals(hub_activity=OLD, remembered=NOW - M), "remembered"),
    ],
    ids=["hub", "busy-kernel", "kernel-activity", "gpu", "cpu", "keep-alive", "remembered"],
)
def test_each_signal_alone_keeps_an_otherwise_idle_server(signals, source):
    stale = both_idle_warnings(OLD)
    d = decide(server(), IDLE_1H, signals, NOW, given=stale)
    assert d.action == "keep" and not d.new_warnings and not d.current
    assert d.cleared == stale  # activity ends the idle stretch: its warnings are withdrawn
    assert max(d.activity, key=lambda k: (d.activity[k], k == source)) == source
    assert d.idle_deadline > NOW + 50 * M


def test_a_busy_kernel_is_activity_now_even_with_a_silent_long_cell():
    d = decide(server(), IDLE_1H, Signals(hub_activity=OLD, busy=frozenset({"kernels"})), NOW)
    assert d.idle_since == NOW and d.idle_deadline == NOW + H


# ---- keep-alive ---------------------------------------------------------------------------------


def test_a_fresh_keep_alive_counts_as_activity_now():
    d = decide(server(), IDLE_1H, Signals(hub_activity=OLD, keep_alive=NOW - 23 * H), NOW)
    assert d.idle_since == NOW and d.action == "keep"


def test_a_keep_alive_older_than_its_maximum_age_lets_the_server_be_retired():
    touched = NOW - 30 * H  # honoured until 6 h ago
    since = touched + 24 * H
    d = decide(
        server(started=NOW - 40 * H),
        IDLE_1H,
        Signals(hub_activity=NOW - 35 * H, keep_alive=touched),
        NOW,
        given=both_idle_warnings(since),
    )
    assert d.idle_since == since and d.action == "retire"


def test_the_keep_alive_maximum_age_is_a_setting():
    s = Settings(keep_alive_max_age=2 * H)
    d = decide(
        server(), IDLE_1H, Signals(hub_activity=OLD, keep_alive=NOW - 150 * M), NOW, settings=s
    )
    assert d.idle_since == NOW - 30 * M


def test_a_keep_alive_in_the_future_is_ignored():
    d = decide(server(), IDLE_1H, Signals(hub_activity=OLD, keep_alive=NOW + 365 * 24 * H), NOW)
    assert d.idle_since == OLD and "keep_alive" not in d.activity


# ---- max_runtime --------------------------------------------------------------------------------


def test_runtime_warnings_come_however_active_the_server_is():
    busy = Signals(hub_activity=NOW, busy=frozenset({"kernels", "gpu", "cpu"}))
    d = decide(server(started=NOW - 18 * H), RUN_24H, busy, NOW)
    (w,) = d.new_warnings
    assert (w.reason, w.fraction, w.deadline) == (MAX_RUNTIME, 0.75, NOW + 6 * H)
    assert d.runtime_deadline == NOW + 6 * H and d.idle_deadline is None


def test_runtime_exceeded_retires_an_active_server():
    started = NOW - 24 * H - M
    warned = [
        given(MAX_RUNTIME, 0.75, started, started + 24 * H),
        given(MAX_RUNTIME, 0.9, started, started + 24 * H),
    ]
    busy = Signals(hub_activity=NOW, busy=frozenset({"kernels", "gpu", "cpu"}))
    d = decide(server(started=started), BOTH, busy, NOW, given=warned)
    assert d.action == "retire" and d.reason == MAX_RUNTIME


def test_runtime_retirement_needs_no_signal():
    started = NOW - 25 * H
    warned = [given(MAX_RUNTIME, 0.9, started, started + 24 * H)]
    blind = Signals(unknown=frozenset({"kernels", "cpu", "gpu", "keep_alive"}))
    d = decide(server(started=started), RUN_24H, blind, NOW, given=warned)
    assert d.action == "retire" and d.reason == MAX_RUNTIME


def test_runtime_warnings_of_an_earlier_run_do_not_count():
    earlier = NOW - 30 * H
    old = [given(MAX_RUNTIME, 0.9, earlier, earlier + 24 * H)]
    d = decide(server(started=NOW - H), RUN_24H, Signals(hub_activity=NOW), NOW, given=old)
    assert d.action == "keep" and d.cleared == tuple(old) and not d.current


def test_retiring_for_runtime_gives_no_idle_warning_on_the_way_out():
    started = NOW - 25 * H
    warned = [given(MAX_RUNTIME, 0.9, started, started + 24 * H)]
    d = decide(server(started=started), BOTH, idle_since(NOW - 50 * M), NOW, given=warned)
    assert d.action == "retire" and d.reason == MAX_RUNTIME and not d.new_warnings


def test_both_limits_can_warn_in_one_cycle():
    d = decide(server(started=NOW - 18 * H), BOTH, idle_since(NOW - 45 * M), NOW)
    assert sorted((w.reason, w.fraction) for w in d.new_warnings) == [
        (IDLE, 0.75),
        (MAX_RUNTIME, 0.75),
    ]


# ---- exemptions ---------------------------------------------------------------------------------


def limits_file(expires: date) -> LimitsFile:
    defaults = {**Limits.unlimited().as_dict(), "idle_timeout": 1.0, "max_runtime": 24.0}
    ex = Exemption("alice", ("max_runtime", "idle_timeout"), "thesis", expires)
    return LimitsFile("limits.yaml", defaults, {}, {}, (ex,))


def test_a_valid_exemption_keeps_the_server_and_withdraws_its_warnings():
    limits = explain("alice", [], limits_file(date(2026, 11, 28)), NOW).limits  # its last day
    started = NOW - 30 * H
    stale = [
        *both_idle_warnings(NOW - 2 * H),
        given(MAX_RUNTIME, 0.9, started, started + 24 * H),
    ]
    d = decide(server(started=started), limits, idle_since(NOW - 2 * H), NOW, given=stale)
    assert d.action == "keep" and not d.current and d.cleared == tuple(stale)
    assert d.idle_deadline is None and d.runtime_deadline is None


def test_an_expired_exemption_no_longer_protects_the_server():
    limits = explain("alice", [], limits_file(date(2026, 11, 27)), NOW).limits
    assert limits.idle_timeout == 1.0
    since = NOW - 2 * H
    d = decide(server(), limits, idle_since(since), NOW, given=both_idle_warnings(since))
    assert d.action == "retire" and d.reason == IDLE


def test_unlimited_limits_never_warn_or_retire():
    d = decide(server(started=NOW - 1000 * H), Limits.unlimited(), Signals(), NOW)
    assert d.action == "keep" and d.idle_deadline is None and d.runtime_deadline is None


# ---- high demand --------------------------------------------------------------------------------


def test_high_demand_shrinks_the_idle_timeout_of_a_gpu_server():
    d = decide(server(gpu=True), IDLE_1H, idle_since(NOW - 40 * M), NOW, demand=0.9)
    assert d.idle_limit == 30 * M
    (w,) = d.new_warnings  # 40 of 30 min: past the deadline, so the notice 90% promises
    assert w.fraction == 0.9 and w.deadline == NOW + 3 * M
    assert d.action == "warn"


def test_high_demand_off_at_or_below_the_share():
    d = decide(server(gpu=True), IDLE_1H, idle_since(NOW - 40 * M), NOW, demand=0.8)
    assert d.idle_limit == H and d.action == "keep"


def test_high_demand_share_and_factor_are_settings():
    s = Settings(high_demand_share=0.5, high_demand_factor=0.25)
    d = decide(server(gpu=True), IDLE_1H, idle_since(NOW - 5 * M), NOW, demand=0.6, settings=s)
    assert d.idle_limit == 15 * M


def test_a_server_without_gpu_keeps_its_idle_timeout_under_high_demand():
    d = decide(server(gpu=False), IDLE_1H, idle_since(NOW - 40 * M), NOW, demand=1.0)
    assert d.idle_limit == H and d.action == "keep"


def test_a_server_without_gpu_is_retired_like_any_other():
    since = NOW - 2 * H
    s = Signals(hub_activity=since)  # no GPU signal at all
    d = decide(server(gpu=False), IDLE_1H, s, NOW, given=both_idle_warnings(since))
    assert d.action == "retire"


# ---- failures and late warnings -----------------------------------------------------------------


def test_a_signal_that_could_not_be_read_blocks_idle_warnings_and_retirement():
    since = NOW - 2 * H
    for warned in ((), both_idle_warnings(since)):
        s = Signals(hub_activity=since, unknown=frozenset({"kernels"}))
        d = decide(server(), IDLE_1H, s, NOW, given=warned)
        assert d.action == "keep" and not d.new_warnings
        assert "kernels could not be read" in d.note
        assert d.current == tuple(warned)  # warnings given stay in force


def test_a_culler_that_was_down_warns_before_it_retires():
    since = NOW - 5 * H  # far past the deadline, and nobody was told
    d = decide(server(), IDLE_1H, idle_since(since), NOW)
    (w,) = d.new_warnings  # one warning, the last fraction, not a burst
    assert w.fraction == 0.9 and w.deadline == NOW + 6 * M and d.action == "warn"
    later = decide(server(), IDLE_1H, idle_since(since), NOW + 5 * M, given=d.current)
    assert later.action == "keep" and later.idle_deadline == NOW + 6 * M
    due = decide(server(), IDLE_1H, idle_since(since), NOW + 6 * M, given=d.current)
    assert due.action == "retire"


def test_a_late_first_fraction_still_leads_to_the_last_one_before_retirement():
    since = NOW - 62 * M
    first = given(IDLE, 0.75, since, since + H)  # the 90% warning was missed
    d = decide(server(), IDLE_1H, idle_since(since), NOW, given=[first])
    assert d.action == "warn" and d.new_warnings[0].fraction == 0.9
    assert d.idle_deadline == NOW + 6 * M


def test_settings_refuse_fractions_outside_zero_and_one():
    with pytest.raises(ValueError):
        Settings(warn_at=(0.5, 1.0))
    with pytest.raises(ValueError):
        Settings(warn_at=())
    assert Settings(warn_at=(0.9, 0.5, 0.9)).warn_at == (0.5, 0.9)


def test_warning_messages_say_when_and_how_to_keep_the_server():
    d = decide(server(), IDLE_1H, idle_since(NOW - 45 * M), NOW)
    text = d.new_warnings[0].message
    assert "2026-11-28 12:15:00 UTC" in text and "in 15 min" in text
    assert "/workspace/.keep-alive" in text and "files in /workspace stay" in text
    d = decide(server(started=NOW - 18 * H), RUN_24H, Signals(hub_activity=NOW), NOW)
    assert "however busy it is" in d.new_warnings[0].message


def test_span_is_short_and_readable():
    assert [span(timedelta(seconds=s)) for s in (0, 40, 119, 900, 7500, 7200)] == [
        "0 s",
        "40 s",
        "119 s",
        "15 min",
        "2 h 5 min",
        "2 h",
    ]

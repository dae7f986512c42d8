"""The fraud engine (voipsec.monitor.fraud): every check at and past its thresholds,
sliding windows across minute and day boundaries, time windows and zones, graded
actions, suspension, snapshots, rule-file errors and limits. Times are Unix seconds
the tests pass in; no clock is read.
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterable, Mapping
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from voipsec.monitor import fraud
from voipsec.monitor.fraud import (
    CHECKS,
    HIGH_RISK_FILE,
    MAX_ACTIVE_CALLS,
    MAX_BASELINE_CATCH_UP_HOURS,
    MAX_COUNTRIES_PER_USER,
    MAX_DESTINATIONS_PER_HOUR,
    MAX_PREFIXES,
    MAX_PREFIXES_PER_RULE,
    MAX_RATES,
    MAX_RULE_FILE_BYTES,
    MAX_RULE_ID_LENGTH,
    MAX_RULES,
    MAX_TRACKED_USERS,
    MAX_USERS_PER_RULE,
    MAX_WANGIRI_CALLS_PER_NUMBER,
    MAX_WANGIRI_NUMBERS,
    MAX_WINDOW_TIMESTAMPS,
    RATES_FILE,
    RULES_FILE,
    Attempt,
    Decision,
    FraudEngine,
    FraudRule,
    FraudRuleError,
    FraudStateError,
    Level,
    Rate,
    RateTable,
    Violation,
    country_code,
    default_data_dir,
    load_prefixes,
    load_rates,
    load_rules,
)

UTC = ZoneInfo("UTC")
#: Monday 2024-01-01 12:00:00 UTC.
MONDAY_NOON = datetime(2024, 1, 1, 12, 0, tzinfo=UTC).timestamp()
WEEK = 7 * 86400.0


def at(*args: int, tz: str = "UTC") -> float:
    """Unix time of a wall-clock time in ``tz``: at(2024, 1, 1, 12, 0)."""
    return datetime(*args, tzinfo=ZoneInfo(tz)).timestamp()  # type: ignore[misc]


def rules_file(tmp_path: Path, text: str, name: str = "fraud.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def engine(
    tmp_path: Path,
    text: str,
    *,
    rates: Mapping[str, float] | None = None,
    high_risk: Iterable[str] = (),
    groups: Mapping[str, list[str]] | None = None,
) -> FraudEngine:
    table = RateTable(Rate(prefix=p, per_minute=r) for p, r in (rates or {}).items())
    return FraudEngine(
        load_rules([rules_file(tmp_path, text)]),
        rates=table,
        high_risk=list(high_risk),
        groups=groups,
    )


def shipped_engine() -> FraudEngine:
    data = default_data_dir()
    return FraudEngine(
        load_rules([data / RULES_FILE]),
        rates=load_rates(data / RATES_FILE),
        high_risk=load_prefixes(data / HIGH_RISK_FILE),
    )


_ids = iter(range(10**9))


def call(
    number: str,
    t: float,
    *,
    user: str = "alice",
    kind: str = "international",
    call_id: str | None = None,
) -> Attempt:
    return Attempt(
        call_id=call_id or f"call-{next(_ids)}",
        user=user,
        dialled=number,
        e164=number if number.startswith("+") else None,
        kind=kind,
        time=t,
    )


def rule_error(tmp_path: Path, text: str) -> str:
    with pytest.raises(FraudRuleError) as info:
        load_rules([rules_file(tmp_path, text)])
    return str(info.value)


PER_MINUTE = """
    rules:
      - id: burst
        check: calls_per_minute
        critical: {threshold: 5, action: block}
"""


# -- shipped data ----------------------------------------------------------------------


def test_fraud_shipped_data_loads() -> None:
    e = shipped_engine()
    assert [r.id for r in e.rules] == [
        "premium-rate",
        "high-risk-destination",
        "new-country",
        "after-hours-international",
        "international-burst",
        "concurrent-calls",
        "international-hourly",
        "calls-per-day",
        "international-duration",
        "daily-budget",
        "incrementing-numbers",
        "repeated-number",
        "wangiri-callback",
        "unusual-calls",
        "unusual-international-minutes",
    ]
    data = default_data_dir()
    assert load_prefixes(data / HIGH_RISK_FILE) == [
        "+870",
        "+881",
        "+882",
        "+883",
        "+979",
        "+53",
        "+252",
    ]
    rates = load_rates(data / RATES_FILE)
    assert rates.lookup("+447700900123") == Rate(
        prefix="+447", per_minute=0.05, description="United Kingdom mobile"
    )
    assert rates.lookup("+6421000000") is not None
    assert rates.lookup("+6421000000").prefix == "+"  # type: ignore[union-attr]


def test_fraud_shipped_premium_rate_blocked_with_every_violation() -> None:
    decision = shipped_engine().check(call("+88212345678", MONDAY_NOON, kind="premium-rate"))
    assert decision == Decision(
        allowed=False,
        status=403,
        reason="blocked by fraud rule premium-rate",
        violations=(
            Violation(
                rule="premium-rate",
                check="destination",
                value=1.0,
                threshold=0.0,
                level="critical",
                action="block",
                detail="alice: premium-rate call to +88212345678",
            ),
            Violation(
                rule="high-risk-destination",
                check="high_risk",
                value=1.0,
                threshold=0.0,
                level="critical",
                action="block",
                detail="alice: call to +88212345678 is on the high-risk list (+882)",
            ),
        ),
        max_duration=None,
    )


def test_fraud_shipped_international_burst_new_country_and_duration() -> None:
    e = shipped_engine()
    first = e.check(call("+33140000000", MONDAY_NOON))
    assert first.allowed
    assert [(v.rule, v.level, v.action) for v in first.violations] == [
        ("new-country", "warning", "alert")
    ]
    # Cut at 2 h (international-duration) before the budget (50 at 0.02/min) runs out.
    assert first.max_duration == 7200.0
    for i in range(1, 5):
        assert e.check(call(f"+3314000{i:04d}", MONDAY_NOON + i)).allowed
    sixth = e.check(call("+33149999999", MONDAY_NOON + 5))
    assert (sixth.allowed, sixth.status, sixth.reason) == (
        False,
        403,
        "blocked by fraud rule international-burst",
    )
    burst = [v for v in sixth.violations if v.rule == "international-burst"]
    assert burst == [
        Violation(
            rule="international-burst",
            check="calls_per_minute",
            value=6.0,
            threshold=5.0,
            level="critical",
            action="block",
            detail="alice: 6 international/premium-rate calls in 60 s > 5",
        )
    ]


def test_fraud_shipped_national_call_is_quiet() -> None:
    decision = shipped_engine().check(call("+442071234567", MONDAY_NOON, kind="national"))
    assert decision.allowed
    assert decision.violations == ()
    # 50 of budget at 0.01 a minute: 5,000 minutes.
    assert decision.max_duration == pytest.approx(300_000.0)


# -- calls per minute: a true sliding window --------------------------------------------


def test_fraud_per_minute_sixth_call_in_60_s_blocked(tmp_path: Path) -> None:
    e = engine(tmp_path, PER_MINUTE)
    for i in range(5):
        assert e.check(call("+33123", MONDAY_NOON + i * 10)).violations == ()
    decision = e.check(call("+33123", MONDAY_NOON + 50))
    assert decision == Decision(
        allowed=False,
        status=403,
        reason="blocked by fraud rule burst",
        violations=(
            Violation(
                rule="burst",
                check="calls_per_minute",
                value=6.0,
                threshold=5.0,
                level="critical",
                action="block",
                detail="alice: 6 calls in 60 s > 5",
            ),
        ),
        max_duration=None,
    )


def test_fraud_per_minute_window_is_exactly_60_s(tmp_path: Path) -> None:
    e = engine(tmp_path, PER_MINUTE)
    for _ in range(5):
        assert e.check(call("+33123", MONDAY_NOON)).allowed
    # 59.999 s later the five are still in the window; 60 s later they are not.
    assert e.check(call("+33123", MONDAY_NOON + 59.999)).violations[0].value == 6
    e2 = engine(tmp_path, PER_MINUTE)
    for _ in range(5):
        e2.check(call("+33123", MONDAY_NOON))
    assert e2.check(call("+33123", MONDAY_NOON + 60)).violations == ()


def test_fraud_per_minute_across_a_minute_boundary(tmp_path: Path) -> None:
    # 12:00:50 .. 12:01:00: six calls in 10 s, split over two clock minutes.
    e = engine(tmp_path, PER_MINUTE)
    times = [at(2024, 1, 1, 12, 0, 50 + 2 * i) for i in range(5)] + [at(2024, 1, 1, 12, 1, 0)]
    decisions = [e.check(call("+33123", t)) for t in times]
    assert [d.allowed for d in decisions] == [True] * 5 + [False]


def test_fraud_per_minute_across_midnight(tmp_path: Path) -> None:
    e = engine(tmp_path, PER_MINUTE)
    times = [at(2024, 1, 1, 23, 59, 57 + i) for i in range(3)]
    times += [at(2024, 1, 2, 0, 0, i) for i in range(3)]
    decisions = [e.check(call("+33123", t)) for t in times]
    assert [d.allowed for d in decisions] == [True] * 5 + [False]
    assert decisions[-1].violations[0].value == 6


def test_fraud_per_minute_blocked_burst_still_counts(tmp_path: Path) -> None:
    e = engine(tmp_path, PER_MINUTE)
    for i in range(6):
        e.check(call("+33123", MONDAY_NOON + i))
    # The first call leaves the window at +60, but the refused ones keep it over 5.
    assert [e.check(call("+33123", MONDAY_NOON + 60 + i)).allowed for i in range(3)] == [False] * 3
    assert e.check(call("+33123", MONDAY_NOON + 200)).allowed
    stats = e.statistics()
    assert (stats.checks, stats.allowed, stats.blocked) == (10, 6, 4)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(min_value=0, max_value=600, allow_nan=False), max_size=60))
def test_fraud_per_minute_value_is_the_count_in_the_last_60_s(offsets: list[float]) -> None:
    rule = FraudRule(id="w", check="calls_per_minute", warning=Level(threshold=0, action="alert"))
    e = FraudEngine([rule], rates=RateTable(), high_risk=[])
    seen: list[float] = []
    for t in sorted(MONDAY_NOON + offset for offset in offsets):
        seen.append(t)
        decision = e.check(call("+33123", t))
        expected = sum(1 for s in seen if t - 60 < s <= t)
        assert decision.violations[0].value == expected


# -- concurrent calls --------------------------------------------------------------------


def test_fraud_concurrent_calls(tmp_path: Path) -> None:
    e = engine(
        tmp_path,
        """
        rules:
          - id: concurrent
            check: concurrent_calls
            critical: {threshold: 2, action: block}
        """,
    )
    assert e.check(call("+33123", MONDAY_NOON, call_id="c1")).allowed
    e.answered("c1", MONDAY_NOON + 2)
    assert e.check(call("+33124", MONDAY_NOON + 1, call_id="c2")).allowed
    third = e.check(call("+33125", MONDAY_NOON + 3, call_id="c3"))
    assert not third.allowed
    assert third.violations[0].detail == "alice: 3 concurrent calls > 2"
    assert (third.violations[0].value, third.violations[0].threshold) == (3.0, 2.0)
    # A refused attempt never holds a place; ending it changes nothing.
    assert e.ended("c3", MONDAY_NOON + 4, 0) == []
    assert not e.check(call("+33125", MONDAY_NOON + 5, call_id="c4")).allowed
    assert e.ended("c1", MONDAY_NOON + 6, 4) == []
    assert e.check(call("+33125", MONDAY_NOON + 7, call_id="c5")).allowed
    # Other users have their own count.
    assert e.check(call("+33125", MONDAY_NOON + 7, user="bob")).allowed
    assert e.statistics().active_calls == 3


def test_fraud_same_call_id_checked_twice_counts_once(tmp_path: Path) -> None:
    e = engine(
        tmp_path,
        """
        rules:
          - id: concurrent
            check: concurrent_calls
            critical: {threshold: 1, action: block}
        """,
    )
    assert e.check(call("+33123", MONDAY_NOON, call_id="c1")).allowed
    assert e.check(call("+33123", MONDAY_NOON + 1, call_id="c1")).allowed
    assert e.pending_calls() == ("c1",)


def test_fraud_discard_frees_the_place_of_a_call_that_never_started(tmp_path: Path) -> None:
    e = engine(
        tmp_path,
        """
        rules:
          - id: concurrent
            check: concurrent_calls
            critical: {threshold: 2, action: block}
        """,
    )
    for n in range(12):
        # Allowed, then refused by the B2BUA (e.g. a Contact it cannot parse): discarded.
        assert e.check(call("+33123", MONDAY_NOON + n, call_id=f"bad-{n}")).allowed
        e.discard(f"bad-{n}")
    assert e.pending_calls() == ()
    assert e.statistics().active_calls == 0
    assert e.check(call("+33123", MONDAY_NOON + 20, call_id="good-1")).allowed
    assert e.check(call("+33123", MONDAY_NOON + 21, call_id="good-2")).allowed
    assert not e.check(call("+33123", MONDAY_NOON + 22, call_id="good-3")).allowed
    # Discarding an unknown or refused call changes nothing.
    e.discard("good-3")
    e.discard("never-seen")
    assert e.pending_calls() == ("good-1", "good-2")


def test_fraud_discard_books_nothing_for_wangiri(tmp_path: Path) -> None:
    e = engine(tmp_path, WANGIRI)
    e.inbound(call_id="in1", caller_e164="+23761234567", user="bob", time=MONDAY_NOON)
    e.discard("in1")
    e.inbound_ended("in1", MONDAY_NOON + 4, answered=False, duration=4.0)
    assert e.statistics().wangiri_numbers == 0


# -- calls in a rolling hour and day -----------------------------------------------------


def test_fraud_calls_per_hour_rolling(tmp_path: Path) -> None:
    e = engine(
        tmp_path,
        """
        rules:
          - id: hourly
            check: calls_per_hour
            warning: {threshold: 3, action: alert}
        """,
    )
    for t in (0, 1000, 2000):
        assert e.check(call("+33123", MONDAY_NOON + t)).violations == ()
    fourth = e.check(call("+33123", MONDAY_NOON + 3599))
    assert (fourth.allowed, fourth.violations[0].value, fourth.violations[0].detail) == (
        True,
        4.0,
        "alice: 4 calls in 1 h > 3",
    )
    # At +3600 the first call has left the window: 1000, 2000, 3599, 3600.
    assert e.check(call("+33123", MONDAY_NOON + 3600)).violations[0].value == 4
    assert e.check(call("+33123", MONDAY_NOON + 5000)).violations[0].value == 4
    assert e.check(call("+33123", MONDAY_NOON + 7200)).violations == ()  # 5000, 7200


def test_fraud_calls_per_day_rolling_over_midnight(tmp_path: Path) -> None:
    e = engine(
        tmp_path,
        """
        rules:
          - id: daily
            check: calls_per_day
            critical: {threshold: 3, action: block}
        """,
    )
    start = at(2024, 1, 1, 18, 0)
    for t in (0, 6 * 3600, 86399):  # 18:00, 00:00 (midnight), 17:59:59 next day
        assert e.check(call("+33123", start + t)).allowed
    assert e.check(call("+33123", start + 86400)).allowed  # 18:00 has left
    fifth = e.check(call("+33123", start + 86401))
    assert not fifth.allowed
    assert fifth.violations[0].detail == "alice: 4 calls in 24 h > 3"


# -- call duration -----------------------------------------------------------------------

DURATION = """
    rules:
      - id: duration
        check: duration
        kinds: [international]
        warning: {threshold: 3600, action: alert}
        critical: {threshold: 7200, action: block}
"""


def test_fraud_duration_limit_and_violations_at_end(tmp_path: Path) -> None:
    e = engine(tmp_path, DURATION)
    decision = e.check(call("+33123456789", MONDAY_NOON, call_id="c1"))
    assert (decision.allowed, decision.violations, decision.max_duration) == (True, (), 7200.0)
    e.answered("c1", MONDAY_NOON + 5)
    assert e.ended("c1", MONDAY_NOON + 7205, 7200.0) == [
        Violation(
            rule="duration",
            check="duration",
            value=7200.0,
            threshold=7200.0,
            level="critical",
            action="block",
            detail=(
                "alice: international call to +33123456789 lasted 7200 s >= 7200 (cut at the limit)"
            ),
        )
    ]
    e.check(call("+33123456789", MONDAY_NOON, call_id="c2"))
    [warning] = e.ended("c2", MONDAY_NOON + 4000, 3600.0)
    assert (warning.level, warning.action, warning.value, warning.threshold) == (
        "warning",
        "alert",
        3600.0,
        3600.0,
    )
    e.check(call("+33123456789", MONDAY_NOON, call_id="c3"))
    assert e.ended("c3", MONDAY_NOON + 4000, 3599.0) == []


def test_fraud_duration_only_for_its_kinds(tmp_path: Path) -> None:
    e = engine(tmp_path, DURATION)
    decision = e.check(call("+442071234567", MONDAY_NOON, kind="national", call_id="n"))
    assert decision.max_duration is None
    assert e.ended("n", MONDAY_NOON + 9000, 9000.0) == []


def test_fraud_duration_alert_only_sets_no_limit(tmp_path: Path) -> None:
    e = engine(
        tmp_path,
        """
        rules:
          - id: long
            check: duration
            warning: {threshold: 60, action: alert}
        """,
    )
    assert e.check(call("+33123", MONDAY_NOON, call_id="c")).max_duration is None
    assert [v.rule for v in e.ended("c", MONDAY_NOON + 100, 60)] == ["long"]


# -- sequential dialling -----------------------------------------------------------------


def test_fraud_repeated_number(tmp_path: Path) -> None:
    e = engine(
        tmp_path,
        """
        rules:
          - id: repeat
            check: repeated_number
            window: 60
            warning: {threshold: 2, action: alert}
        """,
    )
    assert e.check(call("+441611234567", MONDAY_NOON)).violations == ()
    assert e.check(call("+441611234567", MONDAY_NOON + 10)).violations == ()
    assert e.check(call("+33123", MONDAY_NOON + 15)).violations == ()
    third = e.check(call("+441611234567", MONDAY_NOON + 20))
    assert third.violations == (
        Violation(
            rule="repeat",
            check="repeated_number",
            value=3.0,
            threshold=2.0,
            level="warning",
            action="alert",
            detail="alice: 3 calls to +441611234567 in 60 s > 2",
        ),
    )
    # At +65 the first two have left the window.
    assert e.check(call("+441611234567", MONDAY_NOON + 70.5)).violations == ()


INCREMENTING = """
    rules:
      - id: incrementing
        check: incrementing_numbers
        window: 600
        warning: {threshold: 2, action: alert}
"""


def test_fraud_incrementing_numbers(tmp_path: Path) -> None:
    e = engine(tmp_path, INCREMENTING)
    assert e.check(call("+442079460001", MONDAY_NOON)).violations == ()
    assert e.check(call("+442079460002", MONDAY_NOON + 5)).violations == ()
    third = e.check(call("+442079460003", MONDAY_NOON + 10))
    assert third.violations == (
        Violation(
            rule="incrementing",
            check="incrementing_numbers",
            value=3.0,
            threshold=2.0,
            level="warning",
            action="alert",
            detail=(
                "alice: 3 incrementing numbers in a row (+442079460001 .. +442079460003) "
                "within 600 s > 2"
            ),
        ),
    )
    # A retry of the last number neither extends nor breaks the run; a carry does.
    assert e.check(call("+442079460003", MONDAY_NOON + 11)).violations[0].value == 3
    assert e.check(call("+442079460004", MONDAY_NOON + 12)).violations[0].value == 4


def test_fraud_incrementing_run_broken_and_carry(tmp_path: Path) -> None:
    e = engine(tmp_path, INCREMENTING)
    for n in ("+44207946009", "+44207946010"):
        assert e.check(call(n, MONDAY_NOON)).violations == ()
    assert e.check(call("+33123", MONDAY_NOON + 1)).violations == ()  # breaks the run
    assert e.check(call("+44207946011", MONDAY_NOON + 2)).violations == ()
    assert e.check(call("+44207946012", MONDAY_NOON + 3)).violations == ()
    assert e.check(call("+44207946013", MONDAY_NOON + 4)).violations[0].value == 3
    # Another length is another number, not a step.
    assert e.check(call("+442079460140", MONDAY_NOON + 5)).violations == ()


def test_fraud_incrementing_run_must_fit_the_window(tmp_path: Path) -> None:
    e = engine(tmp_path, INCREMENTING)
    assert e.check(call("+442079460001", MONDAY_NOON)).violations == ()
    assert e.check(call("+442079460002", MONDAY_NOON + 300)).violations == ()
    # At +700 the first step is older than 600 s: the run is 0002, 0003.
    assert e.check(call("+442079460003", MONDAY_NOON + 700)).violations == ()
    [v] = e.check(call("+442079460004", MONDAY_NOON + 800)).violations
    assert v.detail == (
        "alice: 3 incrementing numbers in a row (+442079460002 .. +442079460004) within 600 s > 2"
    )


def test_fraud_incrementing_internal_extensions(tmp_path: Path) -> None:
    e = engine(tmp_path, INCREMENTING)
    for ext in ("1001", "1002"):
        assert e.check(call(ext, MONDAY_NOON, kind="internal")).violations == ()
    [v] = e.check(call("1003", MONDAY_NOON, kind="internal")).violations
    assert v.detail == "alice: 3 incrementing numbers in a row (1001 .. 1003) within 600 s > 2"
    assert e.check(call("bob", MONDAY_NOON, kind="internal")).violations == ()


# -- spend -------------------------------------------------------------------------------

BUDGET = """
    rules:
      - id: budget
        check: spend
        timezone: America/New_York
        warning: {threshold: 5, action: alert}
        critical: {threshold: 10, action: block}
"""
RATES = {"+": 0.1, "+44": 0.01, "+882": 2.0}


def test_fraud_spend_budget_from_billable_seconds(tmp_path: Path) -> None:
    e = engine(tmp_path, BUDGET, rates=RATES)
    t = at(2024, 1, 1, 9, 0, tz="America/New_York")
    first = e.check(call("+88212345678", t, call_id="c1"))
    # Projected 0 + 2.00 for the first minute; the budget of 10 lasts 5 minutes.
    assert (first.allowed, first.violations, first.max_duration) == (True, (), 300.0)
    assert e.ended("c1", t + 200, 150.0) == []  # 5.00 spent: not above 5
    second = e.check(call("+88212345678", t + 300, call_id="c2"))
    assert second.allowed
    assert second.violations == (
        Violation(
            rule="budget",
            check="spend",
            value=7.0,
            threshold=5.0,
            level="warning",
            action="alert",
            detail="alice: spend today 5.00 + 1 min to +88212345678 at 2/min = 7.00 > 5",
        ),
    )
    assert second.max_duration == 150.0
    assert e.ended("c2", t + 500, 150.0) == [
        Violation(
            rule="budget",
            check="spend",
            value=10.0,
            threshold=5.0,
            level="warning",
            action="alert",
            detail="alice: spend today 10.00 after 150 s to +88212345678 (5.00) > 5",
        )
    ]
    # Today's spend is used up: even a cheap call would pass the budget.
    third = e.check(call("+442071234567", t + 600, kind="national"))
    assert (third.allowed, third.reason) == (False, "blocked by fraud rule budget")
    assert third.violations[0].value == pytest.approx(10.01)
    assert third.violations[0].level == "critical"
    # Other users have their own budget.
    assert e.check(call("+88212345678", t + 600, user="bob")).allowed


def test_fraud_spend_reported_at_the_end_of_the_call_that_crosses(tmp_path: Path) -> None:
    e = engine(
        tmp_path,
        """
        rules:
          - id: budget
            check: spend
            warning: {threshold: 5, action: alert}
        """,
        rates=RATES,
    )
    ends = []
    for i, seconds in enumerate((120.0, 60.0, 60.0, 60.0)):  # 4.00, 6.00, 8.00, 10.00
        e.check(call("+88212345678", MONDAY_NOON + i * 300, call_id=f"c{i}"))
        ends.append([v.value for v in e.ended(f"c{i}", MONDAY_NOON + i * 300 + 200, seconds)])
    assert ends == [[], [6.0], [], []]


def test_fraud_spend_day_is_the_rules_time_zone(tmp_path: Path) -> None:
    e = engine(tmp_path, BUDGET, rates=RATES)
    t = at(2024, 1, 1, 22, 0, tz="America/New_York")  # 03:00 UTC on the 2nd
    e.check(call("+88212345678", t, call_id="c1"))
    e.ended("c1", t + 400, 300.0)  # 10.00
    late = at(2024, 1, 1, 23, 59, 59, tz="America/New_York")
    assert not e.check(call("+88212345678", late)).allowed
    midnight = at(2024, 1, 2, 0, 0, tz="America/New_York")
    assert e.check(call("+88212345678", midnight)).allowed


def test_fraud_spend_ignores_free_and_internal_calls(tmp_path: Path) -> None:
    e = engine(tmp_path, BUDGET, rates={"+44": 0.0})
    assert e.check(call("+442071234567", MONDAY_NOON, kind="national")).max_duration is None
    assert e.check(call("+33123", MONDAY_NOON)).max_duration is None  # no rate: no cost
    assert e.check(call("bob", MONDAY_NOON, kind="internal")).max_duration is None


def test_fraud_rate_table_longest_prefix() -> None:
    table = RateTable(
        [
            Rate(prefix="+", per_minute=0.5),
            Rate(prefix="+44", per_minute=0.01),
            Rate(prefix="+447", per_minute=0.05),
        ]
    )
    assert table.lookup("+447700900123") == Rate(prefix="+447", per_minute=0.05)
    assert table.lookup("+442071234567") == Rate(prefix="+44", per_minute=0.01)
    assert table.lookup("+33123") == Rate(prefix="+", per_minute=0.5)
    assert RateTable([Rate(prefix="+44", per_minute=1)]).lookup("+33") is None
    assert len(table) == 3


# -- destinations ------------------------------------------------------------------------


def test_fraud_high_risk_names_the_longest_listed_prefix(tmp_path: Path) -> None:
    e = engine(
        tmp_path,
        """
        rules:
          - id: irsf
            check: high_risk
            warning: {action: alert}
        """,
        high_risk=["+882", "+88216", "+53"],
    )
    [v] = e.check(call("+882161234567", MONDAY_NOON)).violations
    assert v.detail == "alice: call to +882161234567 is on the high-risk list (+88216)"
    assert e.check(call("+5371234567", MONDAY_NOON)).violations[0].rule == "irsf"
    assert e.check(call("+33123456", MONDAY_NOON)).violations == ()
    assert e.check(call("5", MONDAY_NOON, kind="internal")).violations == ()


def test_fraud_destination_rule_with_prefixes_and_exceptions(tmp_path: Path) -> None:
    e = engine(
        tmp_path,
        """
        rules:
          - id: uk-mobile
            check: destination
            prefixes: ["+447", "+4470"]
            except_prefixes: ["+44770090"]
            warning: {action: alert}
        """,
    )
    [v] = e.check(call("+447911123456", MONDAY_NOON, kind="national")).violations
    assert v.detail == "alice: call to +447..., +4470..."
    assert e.check(call("+447009123456", MONDAY_NOON, kind="national")).violations != ()
    assert e.check(call("+447700900123", MONDAY_NOON, kind="national")).violations == ()
    assert e.check(call("+442071234567", MONDAY_NOON, kind="national")).violations == ()


def test_fraud_new_country(tmp_path: Path) -> None:
    e = engine(
        tmp_path,
        """
        rules:
          - id: new-country
            check: new_country
            warning: {action: alert}
          - id: no-cuba
            check: destination
            prefixes: ["+53"]
            critical: {action: block}
        """,
    )
    first = e.check(call("+33140000000", MONDAY_NOON))
    assert first.violations == (
        Violation(
            rule="new-country",
            check="new_country",
            value=1.0,
            threshold=0.0,
            level="warning",
            action="alert",
            detail="alice: first call to country code +33 (+33140000000)",
        ),
    )
    assert e.check(call("+33600000000", MONDAY_NOON + 1)).violations == ()
    assert e.check(call("+12125550100", MONDAY_NOON + 2)).violations[0].detail == (
        "alice: first call to country code +1 (+12125550100)"
    )
    assert e.check(call("+33140000000", MONDAY_NOON, user="bob")).violations != ()
    # A refused call teaches nothing: the next call to Cuba is still a new country.
    assert len(e.check(call("+5371234567", MONDAY_NOON + 3)).violations) == 2
    assert [v.rule for v in e.check(call("+5371234567", MONDAY_NOON + 4)).violations] == [
        "new-country",
        "no-cuba",
    ]


@pytest.mark.parametrize(
    ("number", "code"),
    [
        ("+12125550100", "1"),
        ("+74951234567", "7"),
        ("+442071234567", "44"),
        ("+33140000000", "33"),
        ("+35312345678", "353"),
        ("+3581234567", "358"),
        ("+88216123456", "882"),
        ("+212612345678", "212"),
        ("+2", None),
        ("+21", None),
        ("44", None),
        ("", None),
    ],
)
def test_fraud_country_code(number: str, code: str | None) -> None:
    assert country_code(number) == code


# -- Wangiri -----------------------------------------------------------------------------

WANGIRI = """
    rules:
      - id: wangiri
        check: wangiri_callback
        kinds: [international]
        ring_seconds: 10
        window: 86400
        warning: {action: alert}
        critical: {threshold: 1, action: block}
"""


def test_fraud_wangiri_callback_flagged_then_blocked(tmp_path: Path) -> None:
    e = engine(tmp_path, WANGIRI)
    e.inbound(call_id="in1", caller_e164="+23761234567", user="bob", time=MONDAY_NOON)
    e.inbound_ended("in1", MONDAY_NOON + 4, answered=False, duration=4.0)
    assert e.statistics().wangiri_numbers == 1
    decision = e.check(call("+23761234567", MONDAY_NOON + 100))
    assert decision.allowed
    assert decision.violations == (
        Violation(
            rule="wangiri",
            check="wangiri_callback",
            value=1.0,
            threshold=0.0,
            level="warning",
            action="alert",
            detail=(
                "alice: call-back to +23761234567, which rang 1 time(s) unanswered for < 10 s "
                "in 86400 s (last: bob, 4 s) > 0"
            ),
        ),
    )
    e.inbound(call_id="in2", caller_e164="+23761234567", user="carol", time=MONDAY_NOON + 200)
    e.inbound_ended("in2", MONDAY_NOON + 202, answered=False, duration=2.0)
    second = e.check(call("+23761234567", MONDAY_NOON + 300))
    assert (second.allowed, second.reason) == (False, "blocked by fraud rule wangiri")
    # A day after the last short call the number is no longer suspect.
    assert e.check(call("+23761234567", MONDAY_NOON + 202 + 86400)).violations == ()


def test_fraud_wangiri_ignores_answered_long_and_anonymous_calls(tmp_path: Path) -> None:
    e = engine(tmp_path, WANGIRI)
    e.inbound(call_id="a", caller_e164="+23761234567", user="bob", time=MONDAY_NOON)
    e.inbound_ended("a", MONDAY_NOON + 3, answered=True, duration=3.0)
    e.inbound(call_id="b", caller_e164="+23761234567", user="bob", time=MONDAY_NOON)
    e.inbound_ended("b", MONDAY_NOON + 10, answered=False, duration=10.0)
    e.inbound(call_id="c", caller_e164=None, user="bob", time=MONDAY_NOON)
    e.inbound_ended("c", MONDAY_NOON + 1, answered=False, duration=1.0)
    e.inbound_ended("unknown", MONDAY_NOON + 1, answered=False, duration=1.0)
    assert e.statistics().wangiri_numbers == 0
    assert e.check(call("+23761234567", MONDAY_NOON + 20)).violations == ()


def test_fraud_wangiri_callback_national_is_out_of_scope(tmp_path: Path) -> None:
    e = engine(tmp_path, WANGIRI)
    e.inbound(call_id="a", caller_e164="+442071234567", user="bob", time=MONDAY_NOON)
    e.inbound_ended("a", MONDAY_NOON + 2, answered=False, duration=2.0)
    assert e.check(call("+442071234567", MONDAY_NOON + 9, kind="national")).violations == ()


# -- unusual patterns --------------------------------------------------------------------

UNUSUAL = """
    rules:
      - id: unusual
        check: unusual_pattern
        metric: {metric}
        alpha: 0.5
        warmup: 2
        floor: 1
        warning: {{threshold: 3, action: alert}}
"""


def _learn_two_weeks(e: FraudEngine, per_hour: int) -> None:
    """``per_hour`` calls on Monday 12:00 in two weeks (every other hour silent)."""
    for week in range(2):
        for i in range(per_hour):
            e.check(call(f"+3314000{i:04d}", MONDAY_NOON + week * WEEK + i * 60))


def test_fraud_unusual_calls_after_warm_up(tmp_path: Path) -> None:
    e = engine(tmp_path, UNUSUAL.format(metric="calls"))
    _learn_two_weeks(e, 2)
    # Week 3, Monday 12h: baseline EWMA 2 (seen twice), limit 2 x 3 = 6.
    t = MONDAY_NOON + 2 * WEEK
    results = [e.check(call("+33140000000", t + i)).violations for i in range(7)]
    assert results[:6] == [()] * 6
    assert results[6] == (
        Violation(
            rule="unusual",
            check="unusual_pattern",
            value=7.0,
            threshold=6.0,
            level="warning",
            action="alert",
            detail="alice: 7 calls this hour (mon 12h), baseline 2.00 x 3 = 6.00",
        ),
    )


def test_fraud_unusual_quiet_hour_uses_the_floor(tmp_path: Path) -> None:
    e = engine(tmp_path, UNUSUAL.format(metric="calls"))
    _learn_two_weeks(e, 2)
    # Tuesday 12h was silent twice: baseline 0, floor 1, limit 3.
    t = MONDAY_NOON + 2 * WEEK + 86400
    results = [e.check(call("+33140000000", t + i)).violations for i in range(4)]
    assert results[:3] == [()] * 3
    assert results[3][0].detail == "alice: 4 calls this hour (tue 12h), baseline 1.00 x 3 = 3.00"


def test_fraud_unusual_needs_warm_up(tmp_path: Path) -> None:
    e = engine(tmp_path, UNUSUAL.format(metric="calls"))
    for i in range(50):
        assert e.check(call("+33140000000", MONDAY_NOON + i)).violations == ()
    for i in range(50):  # a week later the slot was seen once: warmup is 2
        assert e.check(call("+33140000000", MONDAY_NOON + WEEK + i)).violations == ()


def test_fraud_unusual_destinations(tmp_path: Path) -> None:
    e = engine(tmp_path, UNUSUAL.format(metric="destinations"))
    _learn_two_weeks(e, 1)
    t = MONDAY_NOON + 2 * WEEK
    for i in range(3):
        assert e.check(call(f"+3314000{i:04d}", t + i)).violations == ()
        assert e.check(call(f"+3314000{i:04d}", t + i)).violations == ()  # same again
    [v] = e.check(call("+33149999999", t + 10)).violations
    assert (v.value, v.threshold) == (4.0, 3.0)
    assert v.detail == (
        "alice: 4 distinct destinations this hour (mon 12h), baseline 1.00 x 3 = 3.00"
    )


def test_fraud_unusual_minutes_at_the_end_of_calls(tmp_path: Path) -> None:
    e = engine(tmp_path, UNUSUAL.format(metric="minutes"))
    for week in range(2):
        t = MONDAY_NOON + week * WEEK
        e.check(call("+33140000000", t, call_id=f"w{week}"))
        assert e.ended(f"w{week}", t + 700, 600.0) == []  # 10 minutes
    t = MONDAY_NOON + 2 * WEEK
    e.check(call("+33140000000", t, call_id="a"))
    assert e.ended("a", t + 1000, 1800.0) == []  # 30 minutes: not above 3 x 10
    e.check(call("+33140000000", t + 1000, call_id="b"))
    [v] = e.ended("b", t + 1100, 60.0)
    assert (v.value, v.threshold) == (31.0, 30.0)
    assert v.detail == "alice: 31 minutes this hour (mon 12h), baseline 10.00 x 3 = 30.00"


# -- scope: users, groups, time windows and zones ---------------------------------------


def test_fraud_rules_per_user_and_group(tmp_path: Path) -> None:
    e = engine(
        tmp_path,
        """
        rules:
          - id: alice-only
            check: destination
            users: [alice]
            warning: {action: alert}
          - id: sales
            check: destination
            groups: [sales]
            warning: {action: alert}
          - id: both
            check: destination
            users: [alice]
            groups: [sales]
            warning: {action: alert}
        """,
        groups={"sales": ["alice", "bob"], "support": ["carol"]},
    )

    def fired(user: str) -> list[str]:
        return [v.rule for v in e.check(call("+33123", MONDAY_NOON, user=user)).violations]

    assert fired("alice") == ["alice-only", "sales", "both"]
    assert fired("bob") == ["sales", "both"]
    assert fired("carol") == []


LONDON_NIGHTS = """
    rules:
      - id: night
        check: destination
        kinds: [international]
        hours: ["20:00-07:00"]
        timezone: Europe/London
        warning: {action: alert}
"""


@pytest.mark.parametrize(
    ("when", "fires"),
    [
        ((2024, 1, 1, 19, 59, 59), False),  # winter: London is UTC
        ((2024, 1, 1, 20, 0, 0), True),
        ((2024, 1, 2, 6, 59, 59), True),
        ((2024, 1, 2, 7, 0, 0), False),
        ((2024, 7, 1, 19, 0, 0), True),  # summer: 20:00 BST
        ((2024, 7, 1, 6, 0, 0), False),  # 07:00 BST
        ((2024, 7, 1, 5, 59, 59), True),
    ],
)
def test_fraud_hours_in_a_time_zone(tmp_path: Path, when: tuple[int, ...], fires: bool) -> None:
    e = engine(tmp_path, LONDON_NIGHTS)
    decision = e.check(call("+33123", at(*when)))
    assert bool(decision.violations) is fires


def test_fraud_days_in_a_time_zone(tmp_path: Path) -> None:
    e = engine(
        tmp_path,
        """
        rules:
          - id: weekend
            check: destination
            days: [Saturday, sun]
            timezone: Australia/Sydney
            warning: {action: alert}
        """,
    )
    # Friday 14:00 UTC is Saturday 01:00 in Sydney (AEDT, UTC+11).
    assert e.check(call("+33123", at(2024, 1, 5, 14, 0))).violations != ()
    assert e.check(call("+33123", at(2024, 1, 5, 12, 59))).violations == ()
    # Sunday 13:00 UTC is Monday 00:00 in Sydney.
    assert e.check(call("+33123", at(2024, 1, 7, 12, 59))).violations != ()
    assert e.check(call("+33123", at(2024, 1, 7, 13, 0))).violations == ()


def test_fraud_rule_out_of_its_window_does_not_count(tmp_path: Path) -> None:
    e = engine(
        tmp_path,
        """
        rules:
          - id: office-burst
            check: calls_per_minute
            hours: "09:00-17:00"
            critical: {threshold: 1, action: block}
        """,
    )
    evening = at(2024, 1, 1, 16, 59, 30)
    assert e.check(call("+33123", evening)).allowed
    assert e.check(call("+33123", evening + 31)).allowed  # 17:00:01: out of the window
    assert not e.check(call("+33123", evening + 20)).allowed  # 2nd counted in the window


# -- graded actions ----------------------------------------------------------------------


def test_fraud_throttle_lets_one_call_through_per_interval(tmp_path: Path) -> None:
    e = engine(
        tmp_path,
        """
        rules:
          - id: slow-down
            check: calls_per_minute
            warning: {threshold: 2, action: throttle, interval: 30}
        """,
    )
    results = [e.check(call("+33123", MONDAY_NOON + t)) for t in (0, 1, 2, 3, 31, 32, 60)]
    assert [d.allowed for d in results] == [True, True, True, False, False, True, False]
    assert results[3].reason == "throttled by fraud rule slow-down"
    assert results[2].violations[0].action == "throttle"
    stats = e.statistics()
    assert (stats.blocked, stats.throttled) == (3, 3)


def test_fraud_warning_alerts_and_critical_blocks(tmp_path: Path) -> None:
    e = engine(
        tmp_path,
        """
        rules:
          - id: graded
            check: calls_per_minute
            warning: {threshold: 1, action: alert}
            critical: {threshold: 2, action: block}
        """,
    )
    levels = []
    for i in range(3):
        d = e.check(call("+33123", MONDAY_NOON + i))
        levels.append((d.allowed, [(v.level, v.action, v.threshold) for v in d.violations]))
    assert levels == [
        (True, []),
        (True, [("warning", "alert", 1.0)]),
        (False, [("critical", "block", 2.0)]),
    ]
    stats = e.statistics()
    assert (stats.alerts, stats.warnings, stats.criticals) == (2, 1, 1)
    assert stats.rule_violations == {"graded": 2}


SUSPEND = """
    rules:
      - id: premium
        check: destination
        kinds: [premium-rate]
        critical: {action: suspend}
      - id: burst
        check: calls_per_minute
        critical: {threshold: 2, action: block}
"""


def test_fraud_suspend_until_lifted(tmp_path: Path) -> None:
    e = engine(tmp_path, SUSPEND)
    decision = e.check(call("+449012345678", MONDAY_NOON, kind="premium-rate"))
    assert (decision.allowed, decision.status, decision.reason) == (
        False,
        403,
        "suspended by fraud rule premium",
    )
    assert e.suspended("alice")
    assert e.suspensions() == {
        "alice": ("premium", MONDAY_NOON, "alice: premium-rate call to +449012345678")
    }
    later = e.check(call("+442071234567", MONDAY_NOON + 3600, kind="national"))
    assert (later.allowed, later.reason, later.violations) == (
        False,
        "user suspended by fraud rule premium",
        (),
    )
    assert e.check(call("+442071234567", MONDAY_NOON + 3600, user="bob")).allowed
    e.lift("alice")
    assert not e.suspended("alice")
    assert e.check(call("+442071234567", MONDAY_NOON + 7200, kind="national")).allowed
    stats = e.statistics()
    assert (stats.suspensions, stats.suspended_users) == (1, 0)


def test_fraud_most_severe_action_gives_the_reason(tmp_path: Path) -> None:
    e = engine(tmp_path, SUSPEND)
    e.check(call("+33123", MONDAY_NOON))
    e.check(call("+33123", MONDAY_NOON + 1))
    decision = e.check(call("+449012345678", MONDAY_NOON + 2, kind="premium-rate"))
    assert [(v.rule, v.action) for v in decision.violations] == [
        ("premium", "suspend"),
        ("burst", "block"),
    ]
    assert decision.reason == "suspended by fraud rule premium"


def test_fraud_suspend_from_the_end_of_a_call(tmp_path: Path) -> None:
    e = engine(
        tmp_path,
        """
        rules:
          - id: marathon
            check: duration
            critical: {threshold: 600, action: suspend}
        """,
    )
    assert e.check(call("+33123", MONDAY_NOON, call_id="c")).max_duration == 600.0
    [v] = e.ended("c", MONDAY_NOON + 700, 600.0)
    assert v.action == "suspend"
    assert e.suspended("alice")
    assert e.check(call("+33123", MONDAY_NOON + 800)).reason == (
        "user suspended by fraud rule marathon"
    )


# -- snapshots ---------------------------------------------------------------------------


def _busy_shipped_engine() -> FraudEngine:
    e = shipped_engine()
    t = MONDAY_NOON
    for i in range(5):
        e.check(call(f"+3314000{i:04d}", t + i, call_id=f"c{i}"))
    e.ended("c0", t + 100, 600.0)  # 12 minutes at 0.02
    e.check(call("+449012345678", t + 5, user="bob", kind="premium-rate"))
    e.inbound(call_id="in", caller_e164="+23761234567", user="carol", time=t)
    e.inbound_ended("in", t + 3, answered=False, duration=3.0)
    e.inbound(call_id="ringing", caller_e164="+23761234568", user="carol", time=t + 4)
    return e


def test_fraud_snapshot_round_trip_keeps_counters() -> None:
    e = _busy_shipped_engine()
    snapshot = json.loads(json.dumps(e.snapshot()))
    data = default_data_dir()
    restored = FraudEngine.restore(
        snapshot,
        load_rules([data / RULES_FILE]),
        rates=load_rates(data / RATES_FILE),
        high_risk=load_prefixes(data / HIGH_RISK_FILE),
    )
    assert restored.snapshot() == snapshot
    assert restored.statistics() == e.statistics()
    assert restored.pending_calls() == ("c1", "c2", "c3", "c4")
    # The sixth international call within a minute is blocked after the restart too.
    for engine_ in (e, restored):
        decision = engine_.check(call("+33149999999", MONDAY_NOON + 6, call_id="next"))
        assert decision.reason == "blocked by fraud rule international-burst"
        # The day's spend survived: 12 minutes at 0.02 already booked.
        spend = engine_.ended("c1", MONDAY_NOON + 200, 60.0)
        assert spend == []
    assert restored.snapshot() == e.snapshot()


def test_fraud_snapshot_keeps_suspension_and_wangiri(tmp_path: Path) -> None:
    e = engine(tmp_path, SUSPEND + WANGIRI.split("rules:\n", 1)[1])
    e.check(call("+449012345678", MONDAY_NOON, kind="premium-rate"))
    e.inbound(call_id="in", caller_e164="+23761234567", user="carol", time=MONDAY_NOON)
    e.inbound_ended("in", MONDAY_NOON + 3, answered=False, duration=3.0)
    restored = FraudEngine.restore(
        json.loads(json.dumps(e.snapshot())), e.rules, rates=RateTable(), high_risk=[]
    )
    assert restored.suspended("alice")
    callback = restored.check(call("+23761234567", MONDAY_NOON + 9, user="bob"))
    assert [v.rule for v in callback.violations] == ["wangiri"]


def test_fraud_snapshot_drops_state_of_changed_rules(tmp_path: Path) -> None:
    e = engine(tmp_path, PER_MINUTE)
    for i in range(5):
        e.check(call("+33123", MONDAY_NOON + i))
    state = e.snapshot()
    changed = engine(
        tmp_path,
        """
        rules:
          - id: burst
            check: calls_per_hour
            critical: {threshold: 5, action: block}
        """,
    )
    changed.load_state(state)
    assert changed.check(call("+33123", MONDAY_NOON + 5)).allowed
    same = engine(tmp_path, PER_MINUTE)
    same.load_state(state)
    assert not same.check(call("+33123", MONDAY_NOON + 5)).allowed


@pytest.mark.parametrize(
    ("state", "message"),
    [
        ({}, "state: version: must be 1"),
        ({"version": 1, "users": []}, "state: users: must be a mapping"),
        (
            {"version": 1, "users": {"alice": {"rules": {"burst": {"check": "calls_per_minute"}}}}},
            "state: users.alice.rules.burst: must be a list",
        ),
        (
            {
                "version": 1,
                "users": {
                    "alice": {"rules": {"burst": {"check": "calls_per_minute", "state": ["x"]}}}
                },
            },
            "state: users.alice.rules.burst: must be a number",
        ),
        ({"version": 1, "counters": {"checks": -1}}, "state: counters.checks: must be a count"),
        ({"version": 1, "calls": {"c": {"user": "a"}}}, "state: calls.c.number: must be a string"),
    ],
)
def test_fraud_snapshot_errors(tmp_path: Path, state: dict[str, object], message: str) -> None:
    e = engine(tmp_path, PER_MINUTE)
    e.check(call("+33123", MONDAY_NOON))
    with pytest.raises(FraudStateError) as info:
        e.load_state(state)
    assert str(info.value) == message
    assert e.statistics().tracked_users == 0  # left empty, not half loaded


# -- rule files --------------------------------------------------------------------------


def test_fraud_later_file_replaces_and_disables(tmp_path: Path) -> None:
    base = rules_file(
        tmp_path,
        """
        rules:
          - id: a
            check: calls_per_minute
            critical: {threshold: 5, action: block}
          - id: b
            check: new_country
            warning: {action: alert}
          - id: c
            check: high_risk
            critical: {action: block}
        """,
        "base.yaml",
    )
    site = rules_file(
        tmp_path,
        """
        rules:
          - id: a
            check: calls_per_minute
            critical: {threshold: 9, action: alert}
          - id: b
            enabled: false
            check: new_country
            warning: {action: alert}
          - id: d
            check: destination
            kinds: [premium-rate]
            critical: {action: block}
        """,
        "site.yaml",
    )
    rules = load_rules([base, site])
    assert [(r.id, r.origin) for r in rules] == [
        ("a", str(site)),
        ("c", str(base)),
        ("d", str(site)),
    ]
    assert rules[0].critical == Level(threshold=9.0, action="alert")


def test_fraud_rule_switched_off_by_id_alone(tmp_path: Path) -> None:
    base = rules_file(
        tmp_path,
        """
        rules:
          - id: premium-rate
            check: destination
            kinds: [premium-rate]
            critical: {action: block}
          - id: c
            check: high_risk
            critical: {action: block}
        """,
        "base.yaml",
    )
    site = rules_file(tmp_path, "rules:\n  - {id: premium-rate, enabled: false}\n", "site.yaml")
    assert [r.id for r in load_rules([base, site])] == ["c"]


def test_fraud_rule_defaults(tmp_path: Path) -> None:
    [rule] = load_rules(
        [
            rules_file(
                tmp_path,
                """
                rules:
                  - id: u
                    check: unusual_pattern
                    users: [alice]
                    days: [mon, Tue]
                    hours: ["09:00-12:30", "13:30-24:00"]
                    warning: {threshold: 2.5, action: alert}
                """,
            )
        ]
    )
    assert rule == FraudRule(
        id="u",
        check="unusual_pattern",
        warning=Level(threshold=2.5, action="alert"),
        users=frozenset({"alice"}),
        days=frozenset({0, 1}),
        hours=((540, 750), (810, 1440)),
        metric="calls",
        alpha=0.2,
        warmup=3,
        floor=1.0,
        origin=str(tmp_path / "fraud.yaml"),
    )


def _one_rule(body: str) -> str:
    return "rules:\n  - " + textwrap.indent(textwrap.dedent(body).strip(), "    ")[4:] + "\n"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("check: spend", "rule #1: id: must be 1 to 64 letters, digits, '.', '_' or '-'"),
        (
            "id: x\ncheck: calls_per_second\ncritical: {action: block}",
            f"rule 'x': check: must be one of {', '.join(CHECKS)}",
        ),
        (
            "id: x\ncheck: new_country",
            "rule 'x': critical: a rule needs a warning or a critical level",
        ),
        (
            "id: x\ncheck: calls_per_minute\ncritical: {action: block}",
            "rule 'x': critical.threshold: is required",
        ),
        (
            "id: x\ncheck: calls_per_minute\ncritical: {threshold: 2.5, action: block}",
            "rule 'x': critical.threshold: must be a whole number from 0 to 9999",
        ),
        (
            "id: x\ncheck: calls_per_minute\ncritical: {threshold: 5, action: ban}",
            "rule 'x': critical.action: must be one of alert, throttle, block, suspend",
        ),
        (
            "id: x\ncheck: calls_per_minute\nwarning: {threshold: 5, action: alert}\n"
            "critical: {threshold: 5, action: block}",
            "rule 'x': warning.threshold: must be below the critical threshold (5)",
        ),
        (
            "id: x\ncheck: calls_per_minute\nwarning: {threshold: 1, action: block}\n"
            "critical: {threshold: 5, action: alert}",
            "rule 'x': warning.action: must not be harsher than the critical action",
        ),
        (
            "id: x\ncheck: calls_per_minute\ncritical: {threshold: 5, action: throttle}",
            "rule 'x': critical.interval: throttle needs seconds between calls (> 0)",
        ),
        (
            "id: x\ncheck: calls_per_minute\ncritical: {threshold: 5, action: block, interval: 3}",
            "rule 'x': critical.interval: only for action throttle",
        ),
        (
            "id: x\ncheck: duration\ncritical: {threshold: 60, action: throttle, interval: 3}",
            "rule 'x': critical.action: a call in progress cannot be throttled",
        ),
        (
            "id: x\ncheck: high_risk\ncritical: {threshold: 1, action: block}",
            "rule 'x': critical.threshold: must be 0 (or left out) for check high_risk",
        ),
        (
            "id: x\ncheck: duration\ncritical: {threshold: 0, action: block}",
            "rule 'x': critical.threshold: must be seconds > 0",
        ),
        (
            "id: x\ncheck: unusual_pattern\nwarning: {threshold: 0.5, action: alert}",
            "rule 'x': warning.threshold: must be a factor >= 1 over the baseline",
        ),
        (
            "id: x\ncheck: high_risk\ncritical: {action: block, why: 1}",
            "rule 'x': critical.why: unknown field (known: action, interval, threshold)",
        ),
        (
            "id: x\ncheck: high_risk\ncritical: {action: block}\ntimezone: Mars/Olympus",
            "rule 'x': timezone: unknown time zone 'Mars/Olympus'",
        ),
        (
            "id: x\ncheck: high_risk\ncritical: {action: block}\ntimezone: ../etc/passwd",
            "rule 'x': timezone: '../etc/passwd' is not an IANA time zone name",
        ),
        (
            "id: x\ncheck: high_risk\ncritical: {action: block}\nhours: ['25:00-07:00']",
            "rule 'x': hours: '25:00-07:00' is not HH:MM-HH:MM (24 h clock)",
        ),
        (
            "id: x\ncheck: high_risk\ncritical: {action: block}\nhours: ['08:00-08:00']",
            "rule 'x': hours: '08:00-08:00' is an empty or impossible range",
        ),
        (
            "id: x\ncheck: high_risk\ncritical: {action: block}\ndays: [funday]",
            "rule 'x': days: 'funday' is not a day (mon, tue, wed, thu, fri, sat, sun)",
        ),
        (
            "id: x\ncheck: high_risk\ncritical: {action: block}\nkinds: [local]",
            "rule 'x': kinds: must be a non-empty list of: internal, national, "
            "international, premium-rate",
        ),
        (
            "id: x\ncheck: high_risk\ncritical: {action: block}\nprefixes: ['0044']",
            "rule 'x': prefixes: '0044' is not an E.164 prefix ('+' and 1 to 15 digits)",
        ),
        (
            "id: x\ncheck: high_risk\ncritical: {action: block}\nusers: []",
            "rule 'x': users: must be a non-empty list of names",
        ),
        (
            "id: x\ncheck: calls_per_minute\ncritical: {threshold: 5, action: block}\nwindow: 9",
            "rule 'x': window: does not apply to check calls_per_minute",
        ),
        (
            "id: x\ncheck: high_risk\ncritical: {action: block}\ncolour: red",
            "rule 'x': colour: unknown field (known: check, critical, days, description, "
            "enabled, except_prefixes, groups, hours, id, kinds, prefixes, timezone, "
            "users, warning)",
        ),
        (
            "id: x\ncheck: repeated_number\nwarning: {threshold: 3, action: alert}",
            "rule 'x': window: is required (seconds) for check repeated_number",
        ),
        (
            "id: x\ncheck: wangiri_callback\nwarning: {action: alert}",
            "rule 'x': ring_seconds: is required: seconds from 1 to 600",
        ),
        (
            "id: x\ncheck: unusual_pattern\nmetric: money\nwarning: {threshold: 3, action: alert}",
            "rule 'x': metric: must be one of calls, minutes, destinations",
        ),
        (
            "id: x\ncheck: high_risk\ncritical: {action: block}\nenabled: 'no'",
            "rule 'x': enabled: must be true or false",
        ),
    ],
)
def test_fraud_rule_errors(tmp_path: Path, body: str, message: str) -> None:
    path = tmp_path / "fraud.yaml"
    assert rule_error(tmp_path, _one_rule(body)) == f"{path}: {message}"


def test_fraud_rule_file_errors(tmp_path: Path) -> None:
    path = tmp_path / "fraud.yaml"
    # The wording is libyaml's or PyYAML's; where it is, is ours.
    assert rule_error(tmp_path, "rules: [\n").startswith(f"{path}: line 2: invalid YAML: ")
    assert rule_error(tmp_path, "- id: x\n").startswith(f"{path}: the file must be a mapping")
    assert rule_error(tmp_path, "rules: {}\n") == f"{path}: rules: must be a list"
    assert rule_error(tmp_path, "rules: [3]\n") == f"{path}: rule #1: must be a mapping"
    twice = _one_rule("id: x\ncheck: high_risk\ncritical: {action: block}")
    twice += twice.replace("rules:\n", "")
    assert rule_error(tmp_path, twice) == f"{path}: rule 'x': id: defined twice in this file"
    missing = tmp_path / "missing.yaml"
    with pytest.raises(FraudRuleError) as info:
        load_rules([missing])
    assert str(info.value) == f"{missing}: cannot read: No such file or directory"
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"rules: [\xff]\n")
    with pytest.raises(FraudRuleError) as info:
        load_rules([binary])
    assert str(info.value) == f"{binary}: not UTF-8: invalid start byte at byte 8"


def test_fraud_rate_file_errors(tmp_path: Path) -> None:
    def error(text: str) -> str:
        path = tmp_path / "rates.csv"
        path.write_text(text, encoding="utf-8")
        with pytest.raises(FraudRuleError) as info:
            load_rates(path)
        return str(info.value).removeprefix(f"{path}")

    assert error("# nothing\n") == ": no header line (prefix,per_minute[,description])"
    assert error("prefix,price\n") == ":1: the header must be prefix,per_minute[,description]"
    assert error("prefix,per_minute\n+44,cheap\n") == ":2: 'cheap' is not a price >= 0"
    assert error("prefix,per_minute\n+44,-1\n") == ":2: '-1' is not a price >= 0"
    assert error("prefix,per_minute\n+44,nan\n") == ":2: 'nan' is not a price >= 0"
    assert error("prefix,per_minute\n0044,1\n") == ":2: '0044' is not an E.164 prefix"
    assert error("prefix,per_minute\n+44,1\n+44,2\n") == ":3: +44 is listed twice"
    assert error("prefix,per_minute\n+44,1,uk\n") == ":2: expected 2 columns"


def test_fraud_rate_file_comments_and_description(tmp_path: Path) -> None:
    path = tmp_path / "rates.csv"
    path.write_text(
        '# comment\nprefix,per_minute,description\n\n+,0.5,default\n+44, 0.01 ,"UK, fixed"\n',
        encoding="utf-8",
    )
    table = load_rates(path)
    assert table.lookup("+442071234567") == Rate(
        prefix="+44", per_minute=0.01, description="UK, fixed"
    )
    assert len(table) == 2


def test_fraud_prefix_file(tmp_path: Path) -> None:
    path = tmp_path / "high-risk.txt"
    path.write_text("# list\n+882  # networks\n\n+53\n+882\n", encoding="utf-8")
    assert load_prefixes(path) == ["+882", "+53"]
    path.write_text("+882\n882\n", encoding="utf-8")
    with pytest.raises(FraudRuleError) as info:
        load_prefixes(path)
    assert str(info.value) == (f"{path}:2: '882' is not an E.164 prefix ('+' and 1 to 15 digits)")


def test_fraud_engine_refuses_duplicate_ids_and_bad_zones() -> None:
    rule = FraudRule(id="x", check="high_risk", critical=Level(action="block"))
    with pytest.raises(ValueError, match="fraud rule ids must be unique"):
        FraudEngine([rule, rule], rates=RateTable(), high_risk=[])
    bad = FraudRule(
        id="y", check="high_risk", critical=Level(action="block"), timezone="Nowhere/City"
    )
    with pytest.raises(ValueError, match="unknown time zone 'Nowhere/City'"):
        FraudEngine([bad], rates=RateTable(), high_risk=[])


# -- limits ------------------------------------------------------------------------------


def test_fraud_limit_rules(tmp_path: Path) -> None:
    one = "  - {id: r%d, check: high_risk, critical: {action: block}}\n"
    text = "rules:\n" + "".join(one % i for i in range(MAX_RULES + 1))
    path = tmp_path / "many.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(FraudRuleError) as info:
        load_rules([path])
    assert str(info.value) == f"{path}: more than {MAX_RULES} rules"
    # Two files with MAX_RULES between them are fine; one more is not.
    first, second = tmp_path / "a.yaml", tmp_path / "b.yaml"
    first.write_text("rules:\n" + "".join(one % i for i in range(MAX_RULES)), encoding="utf-8")
    second.write_text("rules:\n" + one % MAX_RULES, encoding="utf-8")
    assert len(load_rules([first])) == MAX_RULES
    with pytest.raises(FraudRuleError) as info:
        load_rules([first, second])
    assert str(info.value) == f"{second}: more than {MAX_RULES} rules"
    rules = [
        FraudRule(id=f"r{i}", check="high_risk", critical=Level(action="block"))
        for i in range(MAX_RULES + 1)
    ]
    with pytest.raises(ValueError, match=f"more than {MAX_RULES} fraud rules"):
        FraudEngine(rules, rates=RateTable(), high_risk=[])


def test_fraud_limit_rule_file_bytes(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    path.write_text("#" * MAX_RULE_FILE_BYTES + "\nrules: []\n", encoding="utf-8")
    with pytest.raises(FraudRuleError) as info:
        load_rules([path])
    assert str(info.value) == f"{path}: larger than {MAX_RULE_FILE_BYTES} bytes"


def test_fraud_limit_rule_id_length(tmp_path: Path) -> None:
    ok = "a" * MAX_RULE_ID_LENGTH
    assert load_rules(
        [
            rules_file(
                tmp_path, _one_rule(f"id: {ok}\ncheck: high_risk\ncritical: {{action: block}}")
            )
        ]
    )
    message = rule_error(
        tmp_path, _one_rule(f"id: {ok}b\ncheck: high_risk\ncritical: {{action: block}}")
    )
    assert message.endswith("rule #1: id: must be 1 to 64 letters, digits, '.', '_' or '-'")


def test_fraud_limit_users_and_prefixes_per_rule(tmp_path: Path) -> None:
    users = ", ".join(f"u{i}" for i in range(MAX_USERS_PER_RULE + 1))
    message = rule_error(
        tmp_path,
        _one_rule(f"id: x\ncheck: high_risk\ncritical: {{action: block}}\nusers: [{users}]"),
    )
    assert message.endswith(f"rule 'x': users: more than {MAX_USERS_PER_RULE} names")
    prefixes = ", ".join(f"'+1{i:05d}'" for i in range(MAX_PREFIXES_PER_RULE + 1))
    message = rule_error(
        tmp_path,
        _one_rule(f"id: x\ncheck: high_risk\ncritical: {{action: block}}\nprefixes: [{prefixes}]"),
    )
    assert message.endswith(f"rule 'x': prefixes: more than {MAX_PREFIXES_PER_RULE} prefixes")


def test_fraud_limit_prefix_and_rate_files(tmp_path: Path) -> None:
    path = tmp_path / "high-risk.txt"
    path.write_text("".join(f"+1{i:06d}\n" for i in range(MAX_PREFIXES + 1)), encoding="utf-8")
    with pytest.raises(FraudRuleError) as info:
        load_prefixes(path)
    assert str(info.value) == f"{path}:{MAX_PREFIXES + 1}: more than {MAX_PREFIXES} prefixes"
    with pytest.raises(ValueError, match=f"more than {MAX_PREFIXES} high-risk prefixes"):
        FraudEngine(
            [], rates=RateTable(), high_risk=[f"+1{i:06d}" for i in range(MAX_PREFIXES + 1)]
        )
    rates = tmp_path / "rates.csv"
    rows = "".join(f"+1{i:06d},0.1\n" for i in range(MAX_RATES + 1))
    rates.write_text("prefix,per_minute\n" + rows, encoding="utf-8")
    with pytest.raises(FraudRuleError) as info:
        load_rates(rates)
    assert str(info.value) == f"{rates}:{MAX_RATES + 2}: more than {MAX_RATES} rates"
    with pytest.raises(ValueError, match=f"more than {MAX_RATES} rates"):
        RateTable(Rate(prefix=f"+1{i:06d}", per_minute=1) for i in range(MAX_RATES + 1))


def test_fraud_limit_tracked_users() -> None:
    rule = FraudRule(id="day", check="calls_per_day", critical=Level(threshold=1, action="block"))
    e = FraudEngine([rule], rates=RateTable(), high_risk=[])
    e.check(call("+33123", MONDAY_NOON, user="first"))
    for i in range(MAX_TRACKED_USERS - 1):
        e.check(call("+33123", MONDAY_NOON, user=f"u{i}", call_id="x"))
    assert e.statistics().tracked_users == MAX_TRACKED_USERS
    assert not e.check(call("+33123", MONDAY_NOON + 1, user="first")).allowed  # remembered
    e.check(call("+33123", MONDAY_NOON, user="one-more", call_id="x"))
    stats = e.statistics()
    assert (stats.tracked_users, stats.evicted_users) == (MAX_TRACKED_USERS, 1)
    # "u0", the least recently seen, was forgotten: its day restarts.
    assert e.check(call("+33123", MONDAY_NOON + 2, user="u0", call_id="x")).allowed


def test_fraud_limit_window_timestamps(tmp_path: Path) -> None:
    message = rule_error(
        tmp_path,
        _one_rule(
            f"id: x\ncheck: calls_per_day\ncritical: {{threshold: {MAX_WINDOW_TIMESTAMPS}, "
            "action: block}"
        ),
    )
    assert message.endswith(
        f"critical.threshold: must be a whole number from 0 to {MAX_WINDOW_TIMESTAMPS - 1}"
    )
    rule = FraudRule(
        id="day",
        check="calls_per_day",
        warning=Level(threshold=MAX_WINDOW_TIMESTAMPS - 1, action="alert"),
    )
    e = FraudEngine([rule], rates=RateTable(), high_risk=[])
    values = [
        e.check(call("+33123", MONDAY_NOON + i, call_id="x")).violations
        for i in range(MAX_WINDOW_TIMESTAMPS + 5)
    ]
    assert values[MAX_WINDOW_TIMESTAMPS - 2] == ()
    assert {v[0].value for v in values[MAX_WINDOW_TIMESTAMPS - 1 :]} == {MAX_WINDOW_TIMESTAMPS}
    state = e.snapshot()["users"]["alice"]["rules"]["day"]["state"]  # type: ignore[index]
    assert len(state) == MAX_WINDOW_TIMESTAMPS


def test_fraud_limit_window_timestamps_of_a_run() -> None:
    rule = FraudRule(
        id="run",
        check="incrementing_numbers",
        window=86400,
        warning=Level(threshold=MAX_WINDOW_TIMESTAMPS - 1, action="alert"),
    )
    e = FraudEngine([rule], rates=RateTable(), high_risk=[])
    for i in range(MAX_WINDOW_TIMESTAMPS + 2):
        decision = e.check(call(f"+44207{i:06d}", MONDAY_NOON + i, call_id="x"))
    [v] = decision.violations
    assert v.value == MAX_WINDOW_TIMESTAMPS
    assert v.detail == (
        f"alice: {MAX_WINDOW_TIMESTAMPS} incrementing numbers in a row (+44207000002 .. "
        f"+44207010001) within 86400 s > {MAX_WINDOW_TIMESTAMPS - 1}"
    )


def test_fraud_limit_active_calls() -> None:
    e = FraudEngine([], rates=RateTable(), high_risk=[])
    for i in range(MAX_ACTIVE_CALLS + 1):
        assert e.check(call("+33123", MONDAY_NOON, call_id=f"c{i}")) is not None
    stats = e.statistics()
    assert (stats.active_calls, stats.evicted_calls) == (MAX_ACTIVE_CALLS, 1)
    assert "c0" not in e.pending_calls()


def test_fraud_limit_wangiri_numbers_and_calls(tmp_path: Path) -> None:
    e = engine(tmp_path, WANGIRI)
    for i in range(MAX_WANGIRI_NUMBERS + 1):
        e.inbound(call_id="x", caller_e164=f"+2376{i:08d}", user="bob", time=MONDAY_NOON)
        e.inbound_ended("x", MONDAY_NOON + 1, answered=False, duration=1.0)
    assert e.statistics().wangiri_numbers == MAX_WANGIRI_NUMBERS
    assert e.check(call("+237600000000", MONDAY_NOON + 2)).violations == ()  # forgotten
    for _ in range(MAX_WANGIRI_CALLS_PER_NUMBER + 3):
        e.inbound(call_id="y", caller_e164="+23761111111", user="bob", time=MONDAY_NOON)
        e.inbound_ended("y", MONDAY_NOON + 1, answered=False, duration=1.0)
    [v] = e.check(call("+23761111111", MONDAY_NOON + 2)).violations
    assert v.value == MAX_WANGIRI_CALLS_PER_NUMBER


def _all_country_codes() -> list[str]:
    codes = ["1", "7", *sorted(fraud.rates._TWO_DIGIT_CODES)]
    for first in "234568 9".replace(" ", ""):
        for second in "0123456789":
            if first + second not in fraud.rates._TWO_DIGIT_CODES:
                codes += [first + second + third for third in "0123456789"]
    return codes


def test_fraud_limit_countries_per_user(tmp_path: Path) -> None:
    e = engine(
        tmp_path,
        """
        rules:
          - id: new-country
            check: new_country
            warning: {action: alert}
        """,
    )
    codes = _all_country_codes()
    assert len(codes) > MAX_COUNTRIES_PER_USER
    for i, code in enumerate(codes[:MAX_COUNTRIES_PER_USER]):
        assert country_code(f"+{code}123456") == code
        assert e.check(call(f"+{code}123456", MONDAY_NOON + i)).violations != ()
    assert e.check(call(f"+{codes[0]}123456", MONDAY_NOON)).violations == ()
    extra = f"+{codes[MAX_COUNTRIES_PER_USER]}123456"
    # Not learned past the limit: it alerts every time.
    assert e.check(call(extra, MONDAY_NOON)).violations != ()
    assert e.check(call(extra, MONDAY_NOON)).violations != ()


def test_fraud_limit_destinations_per_hour(tmp_path: Path) -> None:
    e = engine(tmp_path, UNUSUAL.format(metric="destinations"))
    for i in range(MAX_DESTINATIONS_PER_HOUR + 5):
        e.check(call(f"+33{100000000 + i}", MONDAY_NOON + i * 0.1))
    state = e.snapshot()["users"]["alice"]["rules"]["unusual"]["state"]  # type: ignore[index]
    assert state["current"] == MAX_DESTINATIONS_PER_HOUR
    assert len(state["destinations"]) == MAX_DESTINATIONS_PER_HOUR


def test_fraud_limit_baseline_catch_up(tmp_path: Path) -> None:
    e = engine(tmp_path, UNUSUAL.format(metric="calls"))
    e.check(call("+33123", MONDAY_NOON))
    e.check(call("+33123", MONDAY_NOON + 10 * WEEK))  # ten silent weeks
    state = e.snapshot()["users"]["alice"]["rules"]["unusual"]["state"]  # type: ignore[index]
    weeks = MAX_BASELINE_CATCH_UP_HOURS // 168
    # The hour of the first call, then at most MAX_BASELINE_CATCH_UP_HOURS silent ones.
    assert sum(state["seen"]) == 1 + MAX_BASELINE_CATCH_UP_HOURS
    assert sorted(set(state["seen"])) == [weeks, weeks + 1]


def test_fraud_is_sans_io() -> None:
    package = Path(fraud.__file__).parent
    modules = sorted(package.glob("*.py"))
    assert [m.name for m in modules] == [
        "__init__.py",
        "checks.py",
        "counters.py",
        "engine.py",
        "loader.py",
        "model.py",
        "rates.py",
        "rules.py",
        "state.py",
    ]
    for module in modules:
        source = module.read_text(encoding="utf-8")
        for forbidden in ("import asyncio", "import socket", "import ssl", "time.time(", "now()"):
            assert forbidden not in source, (module.name, forbidden)
        if module.name != "loader.py":  # the shell's loader is the one module that reads
            for reading in ("open(", "read_text", "read_bytes", "import yaml", "import csv"):
                assert reading not in source, (module.name, reading)

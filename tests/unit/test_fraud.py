"""The fraud engine (voipsec.monitor.fraud): every check at and past its thresholds,
sliding windows, time windows and zones, graded actions, suspension, snapshots,
rule-file errors and limits. Times are Unix seconds the tests pass in.
"""

from __future__ import annotations

from pathlib import Path

from voipsec.monitor.fraud import (
    HIGH_RISK_FILE,
    RATES_FILE,
    RULES_FILE,
    Attempt,
    Decision,
    FraudEngine,
    RateTable,
    Violation,
    default_data_dir,
    load_prefixes,
    load_rates,
    load_rules,
)

#: Monday 2024-01-01 12:00:00 UTC.
MONDAY_NOON = 1_704_110_400.0


def shipped_engine() -> FraudEngine:
    data = default_data_dir()
    return FraudEngine(
        load_rules([data / RULES_FILE]),
        rates=load_rates(data / RATES_FILE),
        high_risk=load_prefixes(data / HIGH_RISK_FILE),
    )


def call(
    number: str,
    t: float,
    *,
    user: str = "alice",
    kind: str = "international",
    call_id: str | None = None,
) -> Attempt:
    return Attempt(
        call_id=call_id or f"{user}-{number}-{t}",
        user=user,
        dialled=number,
        e164=number if number.startswith("+") else None,
        kind=kind,
        time=t,
    )


def test_fraud_shipped_rules_load() -> None:
    engine = shipped_engine()
    assert [r.id for r in engine.rules][:3] == [
        "premium-rate",
        "high-risk-destination",
        "new-country",
    ]


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


def test_fraud_shipped_international_burst_blocks_sixth_call(tmp_path: Path) -> None:
    engine = shipped_engine()
    for i in range(5):
        assert engine.check(call(f"+3312345{i:04d}", MONDAY_NOON + i * 2)).allowed
    decision = engine.check(call("+33123459999", MONDAY_NOON + 10))
    assert not decision.allowed
    assert decision.reason == "blocked by fraud rule international-burst"
    burst = [v for v in decision.violations if v.rule == "international-burst"]
    assert burst[0].value == 6 and burst[0].threshold == 5
    assert burst[0].detail == "alice: 6 international/premium-rate calls in 60 s > 5"
    assert RateTable() is not None

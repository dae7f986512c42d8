"""Latency of the fraud pre-call check (voipsec.monitor.fraud) at 10,000 users and
1,000 rules, one core.

The ruleset is the shipped ``fraud.yaml`` (15 rules for everyone) plus generated rules
up to ``--rules``: a third per user (``users: [uNNNN]``, calls per hour), a third per
destination prefix (``prefixes: [+CC...]``, calls per day) and a third per group of
100 users (concurrent calls). Each attempt is from a random one of ``--users`` users
to a random destination (60% national, 35% international, 5% premium or high-risk),
100 attempts a second in fake time; each allowed call ends (with a billable time) a
few attempts later, so concurrency, spend and baselines move as in service. A warm-up
of ``--warm`` attempts (ten per user by default, every user at least once) fills the
tables before anything is measured: the figures are those of a running service, not
of a user's first call.

Each ``check()`` is timed on its own with ``perf_counter_ns`` (the timer's own cost,
measured on an empty call, is subtracted); the median and p99 are printed.

    .venv/bin/python bench/fraud_bench.py [--users 10000] [--rules 1000] [--count 200000]
                                          [--warm 100000] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from voipsec.monitor.fraud import (  # noqa: E402
    HIGH_RISK_FILE,
    RATES_FILE,
    RULES_FILE,
    Attempt,
    FraudEngine,
    FraudRule,
    Level,
    default_data_dir,
    load_prefixes,
    load_rates,
    load_rules,
)

COUNTRIES = ["+33", "+49", "+34", "+39", "+31", "+353", "+1", "+61", "+81", "+91", "+55", "+27"]
START = 1_704_110_400.0  # Monday 2024-01-01 12:00 UTC


def generated_rules(n: int, users: int) -> list[FraudRule]:
    rules: list[FraudRule] = []
    for i in range(n):
        if i % 3 == 0:
            rules.append(
                FraudRule(
                    id=f"user-{i}",
                    check="calls_per_hour",
                    users=frozenset({f"u{(i * 7) % users:05d}"}),
                    warning=Level(threshold=30, action="alert"),
                    critical=Level(threshold=60, action="block"),
                )
            )
        elif i % 3 == 1:
            rules.append(
                FraudRule(
                    id=f"prefix-{i}",
                    check="calls_per_day",
                    prefixes=(f"{COUNTRIES[i % len(COUNTRIES)]}{i % 1000:03d}",),
                    warning=Level(threshold=50, action="alert"),
                )
            )
        else:
            rules.append(
                FraudRule(
                    id=f"group-{i}",
                    check="concurrent_calls",
                    groups=frozenset({f"g{i % (users // 100 or 1)}"}),
                    critical=Level(threshold=4, action="block"),
                )
            )
    return rules


def destination(rng: random.Random) -> tuple[str, str]:
    roll = rng.random()
    if roll < 0.60:
        return f"+44{rng.randrange(1_000_000_000, 9_999_999_999)}", "national"
    if roll < 0.95:
        cc = rng.choice(COUNTRIES)
        return f"{cc}{rng.randrange(100_000_000, 999_999_999)}", "international"
    return f"+882{rng.randrange(10_000_000, 99_999_999)}", "premium-rate"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--rules", type=int, default=1_000)
    parser.add_argument("--count", type=int, default=200_000)
    parser.add_argument("--warm", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    data = default_data_dir()
    shipped = load_rules([data / RULES_FILE])
    rules = shipped + generated_rules(args.rules - len(shipped), args.users)
    groups = {f"g{g}": [f"u{u:05d}" for u in range(g * 100, g * 100 + 100)] for g in range(100)}
    engine = FraudEngine(
        rules,
        rates=load_rates(data / RATES_FILE),
        high_risk=load_prefixes(data / HIGH_RISK_FILE),
        groups=groups,
    )
    rng = random.Random(args.seed)
    users = [f"u{u:05d}" for u in range(args.users)]

    def attempts(n: int, start: float, every_user: bool) -> list[Attempt]:
        out = []
        for i in range(n):
            e164, kind = destination(rng)
            user = users[i % len(users)] if every_user else rng.choice(users)
            out.append(
                Attempt(
                    call_id=f"{start}-{i}",
                    user=user,
                    dialled=e164,
                    e164=e164,
                    kind=kind,
                    time=start + i * 0.01,
                )
            )
        return out

    warm = attempts(args.users, START, every_user=True)
    warm += attempts(args.warm, START + args.users * 0.01, every_user=False)
    measured = attempts(args.count, START + (args.users + args.warm) * 0.01 + 1, every_user=False)
    ended = engine.ended
    pending: list[tuple[str, float]] = []
    for a in warm:
        engine.check(a)
        ended(a.call_id, a.time + 1, rng.uniform(0, 300))

    clock = time.perf_counter_ns
    overhead = min(-(clock() - clock()) for _ in range(10_000))
    samples: list[int] = []
    check = engine.check
    refused = 0
    for a in measured:
        t0 = clock()
        decision = check(a)
        t1 = clock()
        samples.append(t1 - t0 - overhead)
        refused += not decision.allowed
        if decision.allowed:
            pending.append((a.call_id, a.time))
        if len(pending) > 8:
            call_id, began = pending.pop(0)
            ended(call_id, a.time, min(a.time - began, 300.0))
    samples.sort()
    median = statistics.median(samples) / 1000
    p99 = samples[int(len(samples) * 0.99)] / 1000
    stats = engine.statistics()
    row = {
        "users": args.users,
        "rules": len(rules),
        "checks": len(samples),
        "median_us": round(median, 2),
        "p99_us": round(p99, 2),
        "mean_us": round(sum(samples) / len(samples) / 1000, 2),
        "refused": refused,
        "alerts": stats.alerts,
        "tracked_users": stats.tracked_users,
    }
    print(
        f"fraud check(): {row['users']:,} users, {row['rules']:,} rules, "
        f"{row['checks']:,} checks: median {row['median_us']} us, p99 {row['p99_us']} us, "
        f"mean {row['mean_us']} us ({refused:,} refused, {stats.alerts:,} alerts)"
    )
    if args.json:
        args.json.write_text(json.dumps(row, indent=2))


if __name__ == "__main__":
    main()

"""Observations per second through the default IDS ruleset (voipsec.edge.ids), one core.

Scenarios, each a loop over pre-built observations (the engine's own cost; building an
Observation from a parsed message is measured separately):

* ``register``: a benign REGISTER (phone user agent, random tags) from 1,000 phones,
  100 a second in fake time — the request rules the index selects for REGISTER run,
  none fires;
* ``response``: the 401 and 200 the server sends back for it (response rules);
* ``svmap``: the captured svmap OPTIONS (tests/data/ids/svmap-options.sip), each from a
  new source, so every one fires two rules and is banned (the worst case: the guard drops
  a banned source's later packets before the IDS sees them);
* ``svmap-compact``: the same for ``svmap -c``;
* ``construct``: ``Observation(...)`` alone, from values at hand (a frozen dataclass);
* ``parse`` and ``parse+build``: parse_message of that REGISTER, then the same plus
  building its Observation the way the server does (the difference is the build).

    .venv/bin/python bench/ids_bench.py [--count 200000] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from voipsec.edge.ids import IdsEngine, Observation  # noqa: E402
from voipsec.edge.ids_loader import default_rules_path, load_rules  # noqa: E402
from voipsec.sip import Request, SipUri, parse_message  # noqa: E402

DATA = ROOT / "tests" / "data" / "ids"
REGISTER = (
    b"REGISTER sip:example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bK776asdhds;rport\r\n"
    b"Max-Forwards: 70\r\n"
    b"From: <sip:alice@example.com>;tag=87c3e3320b0282d3\r\n"
    b"To: <sip:alice@example.com>\r\n"
    b"Call-ID: 41589de8d27692a7@198.51.100.7\r\n"
    b"CSeq: 30515 REGISTER\r\n"
    b"Contact: <sip:alice@198.51.100.7:5060>;expires=600\r\n"
    b"User-Agent: Yealink SIP-T46S 66.86.0.15\r\n"
    b"Content-Length: 0\r\n\r\n"
)


def observation_of(data: bytes, source: str) -> Observation:
    """What the server builds for a request (see docs/ids.md, "Wiring")."""
    message = parse_message(data)
    assert isinstance(message, Request)
    headers: dict[str, str] = {}
    for h in message.headers:
        headers.setdefault(h.key, h.value)
    to_uri = message.to.uri
    return Observation(
        source=source,
        zone="internet",
        kind="request",
        method=message.method,
        user_agent=headers.get("user-agent"),
        from_tag=message.from_.tag,
        call_id=message.call_id,
        branch=message.top_via.branch,
        to_user=to_uri.user if isinstance(to_uri, SipUri) else None,
        headers=headers,
        compact=any(len(h.name) == 1 for h in message.headers),
    )


def rebased(obs: Observation, source: str) -> Observation:
    return Observation(
        source=source,
        zone=obs.zone,
        kind=obs.kind,
        method=obs.method,
        status=obs.status,
        user_agent=obs.user_agent,
        from_tag=obs.from_tag,
        call_id=obs.call_id,
        branch=obs.branch,
        to_user=obs.to_user,
        target_known=obs.target_known,
        auth_user=obs.auth_user,
        headers=obs.headers,
        compact=obs.compact,
    )


def source(i: int) -> str:
    return f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}"


def timed(label: str, count: int, run: Callable[[], int]) -> dict[str, object]:
    best = float("inf")
    actions = 0
    for _ in range(3):
        start = time.perf_counter()
        actions = run()
        best = min(best, time.perf_counter() - start)
    return {
        "scenario": label,
        "count": count,
        "per_second": round(count / best),
        "us_each": round(best / count * 1e6, 2),
        "actions": actions,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=200_000)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    count: int = args.count
    rules = load_rules([default_rules_path()])

    phones = [observation_of(REGISTER, source(i)) for i in range(1000)]
    challenge = [
        Observation(
            source=p.source,
            zone="internet",
            kind="response_sent",
            method="REGISTER",
            status=401 if i % 2 else 200,
            to_user="alice",
            target_known=True,
            auth_user=None if i % 2 else "alice",
        )
        for i, p in enumerate(phones)
    ]
    svmap = observation_of((DATA / "svmap-options.sip").read_bytes(), "0.0.0.0")
    compact = observation_of((DATA / "svmap-compact-options.sip").read_bytes(), "0.0.0.0")
    scanners = [rebased(svmap, source(i)) for i in range(count)]
    compact_scanners = [rebased(compact, source(i)) for i in range(count)]

    def loop(observations: list[Observation], step: float) -> Callable[[], int]:
        def run() -> int:
            engine = IdsEngine(rules)
            observe = engine.observe
            n = len(observations)
            actions = 0
            for i in range(count):
                actions += len(observe(observations[i % n], i * step))
            return actions

        return run

    def construct() -> int:
        headers = {"user-agent": "Yealink SIP-T46S 66.86.0.15"}
        for _ in range(count // 10):
            Observation(
                source="10.0.0.1",
                zone="internet",
                kind="request",
                method="REGISTER",
                user_agent="Yealink SIP-T46S 66.86.0.15",
                from_tag="87c3e3320b0282d3",
                call_id="41589de8d27692a7@198.51.100.7",
                branch="z9hG4bK776asdhds",
                to_user="alice",
                headers=headers,
            )
        return 0

    def parse() -> int:
        for _ in range(count // 10):
            parse_message(REGISTER)
        return 0

    def parse_and_build() -> int:
        for _ in range(count // 10):
            observation_of(REGISTER, "10.0.0.1")
        return 0

    rows = [
        timed("register", count, loop(phones, 0.01)),
        timed("response", count, loop(challenge, 0.01)),
        timed("svmap", count, loop(scanners, 0.0001)),
        timed("svmap-compact", count, loop(compact_scanners, 0.0001)),
        timed("construct", count // 10, construct),
        timed("parse", count // 10, parse),
        timed("parse+build", count // 10, parse_and_build),
    ]
    print(f"{'scenario':<14} {'obs/s':>10} {'us each':>8} {'actions':>8}")
    for row in rows:
        print(
            f"{row['scenario']:<14} {row['per_second']:>10,} {row['us_each']:>8} "
            f"{row['actions']:>8}"
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()

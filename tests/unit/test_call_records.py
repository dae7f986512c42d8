"""Call records (voipsec.call_records): CDR rows of refused calls, the overflow alert,
the fraud state file. A real SQLite store and writer; no server, no network."""

from __future__ import annotations

import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from voipsec.call_records import (
    CDR_OVERFLOW_ALERT_INTERVAL,
    FRAUD_STATE,
    CallRecords,
    media_encryption,
)
from voipsec.config import Config
from voipsec.core.routing import Refusal, user_caller
from voipsec.events import AlertRaised, Event, EventBus
from voipsec.media.quality import StreamStats
from voipsec.media.relay import LegReport
from voipsec.sip.message import Request, parse_message
from voipsec.storage import CdrStart, Store

from .fakes import FakeClock, FakeFlow

DOMAIN = "example.com"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "voipsec.db")
    yield s
    s.close()


def _records(
    store: Store, tmp_path: Path, clock: FakeClock, events: list[Event], **config: object
) -> CallRecords:
    bus = EventBus()
    bus.subscribe(events.append)
    return CallRecords(
        config=Config.model_validate({"sip": {"domain": DOMAIN}, **config}),
        data_dir=tmp_path,
        store=store,
        events=bus,
        clock=clock,
        media_report=lambda call, done: done([]),
    )


def _invite() -> Request:
    message = parse_message(
        (
            f"INVITE sip:0049301234567@{DOMAIN} SIP/2.0\r\n"
            "Via: SIP/2.0/TLS 192.0.2.10:40000;branch=z9hG4bKrec1\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:alice@{DOMAIN}>;tag=a1\r\n"
            f"To: <sip:0049301234567@{DOMAIN}>\r\n"
            "Call-ID: refused-1\r\n"
            "CSeq: 1 INVITE\r\n"
            "User-Agent: phone/1.0\r\n"
            "Content-Length: 0\r\n\r\n"
        ).encode()
    )
    assert isinstance(message, Request)
    return message


def test_call_records_refused_call_is_one_closed_row(store: Store, tmp_path: Path) -> None:
    clock = FakeClock()
    records = _records(store, tmp_path, clock, [])
    records.cdr.start()
    refusal = Refusal(
        status=403,
        reason="international calls not allowed for class national",
        callee="+49301234567",
    )
    records.refused(
        FakeFlow(), _invite(), user_caller("alice", DOMAIN), "0049301234567", refusal, clock.now
    )
    assert records.cdr.stop() == 0
    (row,) = store.cdrs()
    assert (row.call_id, row.caller, row.callee_dialled, row.callee, row.user) == (
        "refused-1",
        f"sip:alice@{DOMAIN}",
        "0049301234567",
        "+49301234567",
        "alice",
    )
    assert (row.source, row.transport, row.user_agent, row.trunk) == (
        "192.0.2.10:40000",
        "tls",
        "phone/1.0",
        "",
    )
    assert (row.disposition, row.status, row.reason, row.hangup_by) == (
        "rejected",
        403,
        "international calls not allowed for class national",
        "",
    )
    assert (row.start, row.end) == (clock.now, clock.now)
    assert records.calls() == []  # a refused call is never tracked


def _start(n: int) -> CdrStart:
    return CdrStart(
        call_id=f"c{n}",
        caller="sip:alice@example.com",
        callee_dialled="bob",
        callee="bob",
        user="alice",
        source="192.0.2.10:40000",
        transport="tls",
        tls_identity="",
        trunk="",
        user_agent="",
        start=0.0,
    )


def test_call_records_overflow_alerts_once_per_interval(store: Store, tmp_path: Path) -> None:
    clock = FakeClock()
    events: list[Event] = []
    records = _records(store, tmp_path, clock, events, cdr={"max_pending": 1})
    # The writer is not started: the first open waits, every later one is dropped.
    for n in range(3):
        records.cdr.open(_start(n))
    clock.now += CDR_OVERFLOW_ALERT_INTERVAL - 1
    records.cdr.open(_start(3))
    clock.now += 1
    records.cdr.open(_start(4))
    alerts = [e for e in events if isinstance(e, AlertRaised)]
    why = (
        "{} CDR write(s) dropped so far: the CDR database is unavailable "
        "and 1 writes are queued ([cdr] max_pending)"
    )
    assert [(a.what, a.who, a.why, a.action, a.rule, a.source) for a in alerts] == [
        ("CDR writes dropped", "cdr", why.format(1), "dropped", "cdr_overflow", ""),
        ("CDR writes dropped", "cdr", why.format(4), "dropped", "cdr_overflow", ""),
    ]
    assert records.cdr.statistics().overflowed == 4


def test_call_records_fraud_state_is_saved_0600_and_read_back(store: Store, tmp_path: Path) -> None:
    records = _records(store, tmp_path, FakeClock(), [])
    assert records.fraud is not None
    records.save_fraud_state()
    path = tmp_path / FRAUD_STATE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert not path.with_suffix(".tmp").exists()
    again = _records(store, tmp_path, FakeClock(), [])
    assert again.fraud is not None
    assert again.fraud.snapshot() == records.fraud.snapshot()


def test_call_records_without_fraud_checks_nothing(store: Store, tmp_path: Path) -> None:
    records = _records(store, tmp_path, FakeClock(), [], fraud={"enabled": False})
    assert records.fraud is None
    records.save_fraud_state()
    assert not (tmp_path / FRAUD_STATE).exists()


def _leg(side: str, suite: str) -> LegReport:
    return LegReport(
        leg=side,
        suite=suite,
        rtcp_packets=0,
        received=StreamStats().snapshot(),
        local=("127.0.0.1", 20000),
        remote=None,
    )


@pytest.mark.parametrize(
    ("suites", "text"),
    [
        (("AES_CM_128_HMAC_SHA1_80", "RTP"), "a:srtp b:rtp"),
        (("RTP", "AEAD_AES_256_GCM"), "a:rtp b:srtp"),
        (("AEAD_AES_128_GCM", "AES_CM_128_HMAC_SHA1_32"), "a:srtp b:srtp"),
        (("RTP", "RTP"), "a:rtp b:rtp"),
    ],
)
def test_call_records_media_encryption_names_each_leg(suites: tuple[str, str], text: str) -> None:
    assert media_encryption([_leg("a", suites[0]), _leg("b", suites[1])]) == text

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
    CallRecord,
    CallRecords,
    TransferRow,
    media_encryption,
)
from voipsec.config import Config
from voipsec.core.b2bua import Answered, Ended
from voipsec.core.routing import Refusal, user_caller
from voipsec.events import AlertRaised, Event, EventBus
from voipsec.media.quality import StreamStats
from voipsec.media.relay import LegReport
from voipsec.monitor.fraud.model import Attempt
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


@pytest.mark.parametrize(
    ("legs", "text"),
    [
        # A browser (DTLS-SRTP) calling a desk phone (SDES), issue 17.
        ((("a", "DTLS/AEAD_AES_128_GCM"), ("b", "AES_CM_128_HMAC_SHA1_80")), "a:dtls-srtp b:srtp"),
        # Video the callee refused: its never-keyed legs do not lower the side.
        (
            (("a", "AEAD_AES_256_GCM"), ("b", "AEAD_AES_256_GCM"), ("a", "none"), ("b", "none")),
            "a:srtp b:srtp",
        ),
        # Several streams: the weakest keyed one names the side.
        (
            (("a", "AEAD_AES_256_GCM"), ("a", "RTP"), ("b", "DTLS/AEAD_AES_128_GCM")),
            "a:rtp b:dtls-srtp",
        ),
        # A DTLS handshake that never completed, and nothing else on that side.
        ((("a", "DTLS/none"), ("b", "AES_CM_128_HMAC_SHA1_80")), "a:none b:srtp"),
    ],
)
def test_call_records_media_encryption_with_streams_and_dtls(
    legs: tuple[tuple[str, str], ...], text: str
) -> None:
    assert media_encryption([_leg(side, suite) for side, suite in legs]) == text


def test_call_records_transferred_call_splits_and_links_its_rows(
    store: Store, tmp_path: Path
) -> None:
    """A transfer ends the first row ("transferred to carol") and opens a second, the
    transferor's, answered at once, with the same call_id and source refer:<first id>;
    the events count the call in progress once throughout."""
    clock = FakeClock()
    events: list[Event] = []
    records = _records(store, tmp_path, clock, events, fraud={"enabled": False})
    records.cdr.start()
    caller = user_caller("alice", DOMAIN)
    ticket = records.open(FakeFlow(), _invite(), caller, "bob", "bob", None, clock.now)
    records.track("c1", CallRecord(ticket=ticket, a_call_id="refused-1", start=clock.now,
                                   user="alice", source="192.0.2.10:40000"))  # fmt: skip
    records.row_written("c1", 1)
    records.answered(Answered("c1", clock.now + 1))
    row = TransferRow(
        cdr_call_id="refused-1",
        caller=f"sip:alice@{DOMAIN}",
        user="bob",
        dialled="carol",
        callee="carol",
        trunk="",
        fraud_id="b-leg/refer/7",
        transport="tls",
        ended_by="callee",
    )
    records.transferred("c1", row, clock.now + 10)
    records.ended(Ended("c1", clock.now + 30, "answered", 200, "normal clearing", "caller"))
    assert records.cdr.stop() == 0
    first, second = store.cdrs()
    assert (first.reason, first.hangup_by, first.billable) == ("transferred to carol", "callee", 9)
    assert (second.call_id, second.source, second.user) == ("refused-1", "refer:1", "bob")
    assert (second.caller, second.callee_dialled, second.callee) == (row.caller, "carol", "carol")
    assert (second.start, second.answer, second.billable) == (clock.now + 10, clock.now + 10, 20)
    assert (second.reason, second.hangup_by) == ("normal clearing", "caller")
    kinds = [(type(e).__name__, getattr(e, "call_id", "")) for e in events]
    assert kinds == [
        ("CallAnswered", "refused-1"),
        ("CallEnded", "refused-1"),
        ("CallStarted", "b-leg/refer/7"),
        ("CallAnswered", "b-leg/refer/7"),
        ("CallEnded", "b-leg/refer/7"),
    ]


def _call(records: CallRecords, clock: FakeClock, *, trunk: str = "carrier") -> None:
    """alice's call "c1" (to +49 30 1234567 through ``trunk``; to bob without one),
    counted by the fraud engine as hers (out), answered at now + 1."""
    assert records.fraud is not None
    e164, kind = ("+49301234567", "international") if trunk else (None, "internal")
    _check(records, "refused-1", "alice", e164, kind, clock.now)
    caller = user_caller("alice", DOMAIN)
    callee = e164 or "bob"
    ticket = records.open(FakeFlow(), _invite(), caller, callee, callee, trunk or None, clock.now)
    records.track("c1", CallRecord(ticket=ticket, a_call_id="refused-1", start=clock.now,
                                   user="alice", source="192.0.2.10:40000", fraud="out",
                                   trunk=trunk))  # fmt: skip
    records.row_written("c1", 1)
    records.answered(Answered("c1", clock.now + 1))


def _check(
    records: CallRecords, call_id: str, user: str, e164: str | None, kind: str, now: float
) -> None:
    assert records.fraud is not None
    attempt = Attempt(call_id=call_id, user=user, dialled=e164 or "someone", e164=e164,
                      kind=kind, time=now)  # fmt: skip
    assert records.fraud.check(attempt).allowed


def _row(fraud_id: str, user: str, ended_by: str) -> TransferRow:
    return TransferRow(cdr_call_id="refused-1", caller="sip:+49301234567@example.com",
                       user=user, dialled="carol", callee="carol", trunk="",
                       fraud_id=fraud_id, transport="tls", ended_by=ended_by)  # fmt: skip


def test_call_records_caller_transfer_keeps_the_paid_leg_counted(
    store: Store, tmp_path: Path
) -> None:
    """Security review, HIGH: alice REFERs her own leg of an international call to a
    local phone. The trunk leg to +49 stays up, so the fraud engine keeps counting her
    call (out, concurrent) until it ends and books it whole; the new row names the
    trunk of that leg, not the local target's ("")."""
    clock = FakeClock()
    records = _records(store, tmp_path, clock, [])
    assert records.fraud is not None
    records.cdr.start()
    _call(records, clock)
    _check(records, "a/refer/2", "alice", None, "internal", clock.now + 9)
    records.transferred("c1", _row("a/refer/2", "alice", "caller"), clock.now + 10)
    assert set(records.fraud.pending_calls()) == {"refused-1", "a/refer/2"}
    records.ended(Ended("c1", clock.now + 30, "answered", 200, "normal clearing", "callee"))
    assert records.fraud.pending_calls() == ()
    assert records.cdr.stop() == 0
    first, second = store.cdrs()
    assert (first.trunk, first.reason, first.billable) == ("carrier", "transferred to carol", 9)
    assert (second.trunk, second.source, second.billable) == ("carrier", "refer:1", 20)


def test_call_records_callee_transfer_books_the_leg_that_left(store: Store, tmp_path: Path) -> None:
    """A callee's transfer ends the B-leg: a record held for it by an earlier caller's
    transfer is booked then, with the first part (as before the review's fix); only
    the callee's own new call stays counted."""
    clock = FakeClock()
    records = _records(store, tmp_path, clock, [])
    assert records.fraud is not None
    _call(records, clock, trunk="")
    _check(records, "a/refer/2", "alice", None, "internal", clock.now + 9)
    records.transferred("c1", _row("a/refer/2", "alice", "caller"), clock.now + 10)
    assert set(records.fraud.pending_calls()) == {"refused-1", "a/refer/2"}
    _check(records, "b/refer/3", "bob", None, "internal", clock.now + 11)
    records.transferred("c1", _row("b/refer/3", "bob", "callee"), clock.now + 12)
    assert records.fraud.pending_calls() == ("b/refer/3",)
    records.ended(Ended("c1", clock.now + 30, "answered", 200, "normal clearing", "callee"))
    assert records.fraud.pending_calls() == ()

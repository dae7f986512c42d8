"""Call records: the CDR row of every call, its media report, and the fraud engine's view.

Call control tells this module what happened to a call (refused, routed, answered,
ended); it writes the CDR row through the writer thread (storage/writer.py, so the
event loop never waits on a database), publishes ``CallAnswered``, ``CallEnded``,
``MediaStats`` and ``AlertRaised`` on the event stream, and keeps the fraud engine's
counters (checked before a call is routed, booked when it ends, saved across
restarts). An emergency call (core/emergency.py) is shown to the fraud engine like any
other, but nothing it decides refuses or shortens the call; the call raises its own
``emergency_call`` alert.

Failure mode: a CDR database that is slow or gone never stops calls. Writes queue up
to ``[cdr] max_pending``; beyond that they are dropped, counted and alerted (at most
once per CDR_OVERFLOW_ALERT_INTERVAL). A fraud state file that cannot be read starts
the counters again (logged); bad fraud rules refuse to start the server.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

from .config import Config, ConfigError
from .core.b2bua import Answered, Ended
from .core.dialplan import CallKind
from .core.emergency import exempt
from .core.routing import Caller, Refusal, Route
from .events import AlertRaised, CallAnswered, CallEnded, CallStarted, EventBus, MediaStats
from .media.relay import LegReport
from .monitor.fraud import (
    Attempt,
    FraudEngine,
    FraudRuleError,
    Violation,
    default_data_dir,
    load_prefixes,
    load_rates,
    load_rules,
)
from .ports import CallStore, Clock
from .sip.message import Request
from .sip.uri import SipUri
from .storage import CdrStart, StoreError
from .storage.writer import CdrWriter
from .transport.connections import Flow

log = logging.getLogger("voipsec.calls")

#: The fraud engine's counters, saved in the data directory (0600).
FRAUD_STATE = "fraud-state.json"
#: How an alert names what was done for each graded action.
_ACTION_DONE = {
    "alert": "alerted",
    "throttle": "throttled",
    "block": "blocked",
    "suspend": "user suspended",
}
#: The alert rule of every emergency call (docs/calls.md "Emergency calls").
EMERGENCY_RULE = "emergency_call"
#: What the alert of a fraud rule an emergency call violated says was done.
EXEMPT_DONE = "allowed (emergency call)"
#: Emergency calls one user may have in progress at once. Emergency calls pass every
#: limit of the caller's (class, fraud, budget, concurrency), so one stolen credential
#: could otherwise hold any number of them: a PSAP flood that also takes the trunk
#: channels other people's emergency calls need. Two allow a call and its redial.
MAX_EMERGENCY_CALLS_PER_USER = 2
#: Seconds between two alerts about CDR writes dropped on a full queue.
CDR_OVERFLOW_ALERT_INTERVAL = 60.0
#: Days of CDRs read at start to book the calls a crash left in the fraud state.
CRASH_LOOKBACK_DAYS = 7


@dataclass(slots=True)
class CallRecord:
    """The shell's side of a call: its CDR row, and what the fraud engine tracks.

    What the row holds that the end of the call needs is kept here: it is never read
    back from the database.
    """

    #: The writer's ticket of the call's CDR row.
    ticket: int
    a_call_id: str
    start: float
    user: str
    source: str
    #: "out" (a user's call the engine checked), "in" (from a trunk) or "".
    fraud: str = ""
    #: The row's database id once the writer reported it (0 until then), for events.
    cdr_id: int = 0
    answer: float | None = None
    #: The row's trunk ("" between users). A caller's transfer leaves the B-leg up:
    #: the new row names the trunk that leg goes through.
    trunk: str = ""
    #: An emergency call (core/emergency.py): counted against its user's
    #: MAX_EMERGENCY_CALLS_PER_USER.
    emergency: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class Admission:
    """The fraud engine's word on a routed call before the B2BUA gets it."""

    #: Set when the engine refuses the call.
    refusal: Refusal | None = None
    #: The longest the call may last (a throttle), None: the configured maximum.
    max_duration: float | None = None
    #: What the engine tracks: "out", "in" or "" (see CallRecord.fraud).
    tracked: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class TransferRow:
    """What the CDR row of a transferred call says (calls.py gathers it when it
    authorises the REFER; core/transfer.py carries the transfer out)."""

    #: The Call-ID of the original call's row: both rows carry it.
    cdr_call_id: str
    #: The transferee, as the target sees the call.
    caller: str
    #: The transferor: the call is placed, counted and billed as this user's.
    user: str
    dialled: str
    callee: str
    trunk: str
    #: The id the fraud engine tracks the transferred call under.
    fraud_id: str
    transport: str
    #: Who left the first part of the call: the transferor, ``caller`` or ``callee``.
    ended_by: str


class FraudFeedPort(Protocol):
    """Where this worker's fraud decisions and call outcomes go for the other signaling
    workers' engines (app/shared/fraud.py); None with one worker."""

    def checked(self, attempt: Attempt, *, allowed: bool) -> None: ...

    def answered(self, call_id: str, now: float) -> None: ...

    def ended(self, call_id: str, now: float, billable: float, user: str) -> None: ...

    def discarded(self, call_id: str) -> None: ...

    def inbound(self, call_id: str, caller_e164: str | None, user: str, now: float) -> None: ...

    def inbound_ended(self, call_id: str, now: float, answered: bool, duration: float) -> None: ...


class CallRecords:
    """The CDR rows and fraud counters of the calls of one server.

    ``media_report`` hands a callback the relay's statistics of a call's legs when it
    ends: at once from the relay in this process, with the release reply of a relay
    worker (media/pool.py); the row is closed and ``CallEnded`` published then, after
    the ``MediaStats``, as with the relay in process.
    """

    def __init__(
        self,
        *,
        config: Config,
        data_dir: Path | None,
        store: CallStore,
        events: EventBus,
        clock: Clock,
        media_report: Callable[[str, Callable[[Sequence[LegReport]], None]], None],
    ) -> None:
        self._store = store
        self._data_dir = data_dir
        self._clock = clock
        self._media_report_of = media_report
        self.events = events
        self._calls: dict[str, CallRecord] = {}
        #: A caller's transfer leaves the B-leg up: the record of the call it belongs
        #: to stays counted by the fraud engine until that leg ends (``transferred``).
        self._held: dict[str, CallRecord] = {}
        self.fraud = self._load_fraud(config, data_dir)
        #: CDR rows leave the event loop through this writer (the server starts it).
        self.cdr = CdrWriter(
            store.open_writer_database,
            max_pending=config.cdr.max_pending,
            on_overflow=self._overflow,
            fast=store.open_fast_cdr_database,
        )
        self._overflow_alerted = -CDR_OVERFLOW_ALERT_INTERVAL
        #: The other signaling workers' engines (app/shared/fraud.py); None: one worker.
        self.fraud_feed: FraudFeedPort | None = None
        #: Whether this worker writes fraud-state.json (with several, worker 0 only:
        #: every engine holds every worker's calls).
        self.saves_fraud_state = True

    # -- the calls ----------------------------------------------------------------------

    def refused(
        self,
        flow: Flow,
        request: Request,
        caller: Caller,
        dialled: str,
        refusal: Refusal,
        now: float,
    ) -> None:
        """A call refused before routing: one CDR row, opened and closed at once."""
        ticket = self.open(
            flow, request, caller, dialled, refusal.callee, None, now, kind=refusal.kind
        )
        self.close(
            ticket,
            request.call_id,
            now,
            refusal.disposition,
            refusal.status,
            refusal.reason,
            "",
        )

    def emergency_calls(self, user: str) -> int:
        """The emergency calls ``user`` has in progress."""
        return sum(1 for r in self._calls.values() if r.emergency and r.user == user)

    def track(self, call: str, record: CallRecord) -> None:
        """``call`` (the B2BUA's id) is routed; its row is ``record.ticket``."""
        self._calls[call] = record

    def row_written(self, call: str, row_id: int) -> None:
        """The writer committed the open row of ``call``: later events carry its id."""
        record = self._calls.get(call)
        if record is not None and row_id:
            record.cdr_id = row_id

    def calls(self) -> list[str]:
        """The calls routed and not ended yet (the B2BUA's ids)."""
        return list(self._calls)

    def admit(
        self,
        request: Request,
        caller: Caller,
        dialled: str,
        routed: Route,
        source: str,
        now: float,
        *,
        call_id: str | None = None,
    ) -> Admission:
        """Ask the fraud engine about a routed call (a user's call is checked before
        it goes anywhere; a trunk's call is only counted) and alert on what it found;
        ``source`` is the caller's address, for the alerts; ``call_id`` the id the
        engine tracks the call under when it is not the request's (a transfer's)."""
        if self.fraud is None:
            return Admission()
        destination = routed.destination
        if caller.user is not None and destination is not None:
            attempt = Attempt(
                call_id=call_id or request.call_id,
                user=caller.user,
                dialled=dialled,
                e164=destination.e164,
                kind=destination.kind,
                time=now,
            )
            decision = self.fraud.check(attempt)
            if self.fraud_feed is not None:
                self.fraud_feed.checked(attempt, allowed=decision.allowed)
            if exempt(destination.kind):
                if self.emergency_calls(caller.user) >= MAX_EMERGENCY_CALLS_PER_USER:
                    reason = "too many emergency calls in progress for this user"
                    log.warning("emergency call of %s refused: %s", caller.user, reason)
                    refusal = Refusal(status=486, reason=reason, callee=routed.callee)
                    return Admission(refusal=refusal)
                # Seen and counted, never refused nor cut short (issue 18: emergency
                # calls always go through); a refused attempt is not tracked as a call.
                self._fraud_alerts(decision.violations, caller.user, source, now, EXEMPT_DONE)
                return Admission(tracked="out" if decision.allowed else "")
            self._fraud_alerts(decision.violations, caller.user, source, now)
            if not decision.allowed:
                refusal = Refusal(
                    status=decision.status or 403, reason=decision.reason, callee=routed.callee
                )
                return Admission(refusal=refusal)
            return Admission(max_duration=decision.max_duration, tracked="out")
        if caller.trunk is not None:
            number = request.from_.uri.user if isinstance(request.from_.uri, SipUri) else None
            e164 = number if number and number.startswith("+") and number[1:].isdigit() else None
            self.fraud.inbound(
                call_id=request.call_id, caller_e164=e164, user=routed.callee, time=now
            )
            if self.fraud_feed is not None:
                self.fraud_feed.inbound(request.call_id, e164, routed.callee, now)
            return Admission(tracked="in")
        return Admission()

    def discard(self, call_id: str) -> None:
        """A call the engine counted never started: forget it (it would count forever)."""
        if self.fraud is not None:
            self.fraud.discard(call_id)
            if self.fraud_feed is not None:
                self.fraud_feed.discarded(call_id)

    def open(
        self,
        flow: Flow,
        request: Request,
        caller: Caller,
        dialled: str,
        callee: str,
        trunk: str | None,
        now: float,
        on_written: Callable[[int], None] | None = None,
        *,
        kind: CallKind | None = None,
    ) -> int:
        """Queue the open row of a call (``kind``: the dial plan's, None when unknown);
        returns the writer's ticket."""
        identity = flow.identity
        return self.cdr.open(
            CdrStart(
                call_id=request.call_id,
                caller=caller.uri,
                callee_dialled=dialled,
                callee=callee,
                user=caller.user or "",
                source=f"{flow.peer[0]}:{flow.peer[1]}",
                transport=flow.transport,
                tls_identity=(identity.aor or identity.subject) if identity else "",
                trunk=trunk or (caller.trunk.name if caller.trunk else ""),
                user_agent=request.headers.get("user-agent") or "",
                start=now,
                kind=kind or "",
            ),
            on_written,
        )

    def emergency(
        self, caller: Caller, number: str, peer: tuple[str, int], now: float, *, trunk: str | None
    ) -> None:
        """An emergency call: alerted at once (webhook, syslog, e-mail as configured,
        and stored) with the caller, its source address and the number; logged
        WARNING when it goes to ``trunk``, CRITICAL when no trunk routes it."""
        who = caller.user or caller.uri
        source = f"{peer[0]}:{peer[1]}"
        if trunk is None:
            log.critical("emergency call from %s (%s) to %s FAILED: no trunk routes it "
                         "(set calls.emergency_trunk)", who, source, number)  # fmt: skip
            why, action = f"dialled {number} from {source}; no trunk routes it", "failed (503)"
        else:
            log.warning(
                "emergency call from %s (%s) to %s via trunk %s", who, source, number, trunk
            )
            why, action = f"dialled {number} from {source}", f"routed to trunk {trunk}"
        self.events.publish(
            AlertRaised(
                what="emergency call",
                who=who,
                why=why,
                action=action,
                rule=EMERGENCY_RULE,
                time=now,
                source=peer[0],
            )
        )

    def close(
        self,
        ticket: int,
        call_id: str,
        now: float,
        disposition: str,
        status: int,
        reason: str,
        hangup_by: str,
    ) -> None:
        try:
            self.cdr.end(
                ticket,
                end=now,
                disposition=disposition,
                status=status,
                reason=reason,
                hangup_by=hangup_by,
            )
        except StoreError:
            log.exception("could not close the CDR of call %s", call_id[:64])

    def answered(self, action: Answered) -> None:
        """The call was answered: the row, the fraud engine and the event."""
        info = self._calls.get(action.call)
        if info is None:
            return
        if self.fraud is not None and info.fraud == "out":
            self.fraud.answered(info.a_call_id, action.time)
            if self.fraud_feed is not None:
                self.fraud_feed.answered(info.a_call_id, action.time)
        if info.answer is None:  # the first answer counts, as in the table
            info.answer = action.time
        self.cdr.answer(info.ticket, action.time)
        self.events.publish(
            CallAnswered(call_id=info.a_call_id, cdr_id=info.cdr_id, time=action.time)
        )

    def ended(self, action: Ended) -> None:
        """The call is over: close its row, book it with the fraud engine, publish it."""
        held = self._held.pop(action.call, None)
        if held is not None:
            self._book(held, action)
        info = self._calls.pop(action.call, None)
        if info is None:
            return
        self._media_report_of(action.call, lambda legs: self._finish(info, action, legs))

    def transferred(
        self,
        call: str,
        row: TransferRow,
        now: float,
        on_written: Callable[[int], None] | None = None,
    ) -> None:
        """``call`` was transferred (core/transfer.py): its row ends, answered, with the
        reason ``transferred to <callee>``, booked with the fraud engine as it stands;
        a new row opens for the rest of the call, answered now and linked to the first:
        the same ``call_id``, and ``source`` ``refer:<id of the first row>``. The
        media report goes into the new row when the call ends (one relay, both rows).
        ``CallEnded`` of the first part and ``CallStarted`` (``cdr_id`` 0: the row is
        queued; ``on_written`` gets its id) and ``CallAnswered`` of the second are
        published, so a call in progress is counted once throughout.

        A caller's transfer leaves the B-leg up (a trunk to +X, say): the fraud engine
        keeps counting the record that leg belongs to, as out and concurrent, until it
        ends (never freed by a REFER to a phone of one's own), and the new row names
        its trunk. A callee's transfer ends that leg: its record is booked now."""
        old = self._calls.pop(call, None)
        if old is None:
            return
        ended = Ended(call, now, "answered", 200, f"transferred to {row.callee}", row.ended_by)
        held = self._held.pop(call, None)
        by_caller = row.ended_by == "caller"
        if by_caller and held is None:
            self._held[call] = held = old
            self._finish(replace(old, fraud=""), ended, ())  # row and events, not fraud
        else:
            if held is not None and not by_caller:
                self._book(held, ended)  # the held record's leg has left now
                held = None
            elif held is not None:
                self._held[call] = held
            self._finish(old, ended, ())
        trunk = (held.trunk if held is not None else "") or row.trunk
        source = f"refer:{old.cdr_id}"
        ticket = self.cdr.open(
            CdrStart(
                call_id=row.cdr_call_id,
                caller=row.caller,
                callee_dialled=row.dialled,
                callee=row.callee,
                user=row.user,
                source=source,
                transport=row.transport,
                tls_identity="",
                trunk=trunk,
                user_agent="",
                start=now,
            ),
            on_written,
        )
        tracked = "out" if self.fraud is not None else ""
        record = CallRecord(
            ticket=ticket,
            a_call_id=row.fraud_id,
            start=now,
            user=row.user,
            source="",
            fraud=tracked,
            trunk=trunk,
        )
        self._calls[call] = record
        self.events.publish(
            CallStarted(
                call_id=row.fraud_id,
                cdr_id=0,
                caller=row.caller,
                callee=row.callee,
                user=row.user,
                source=source,
                trunk=trunk or None,
                time=now,
            )
        )
        self.answered(Answered(call, now))

    def _finish(self, info: CallRecord, action: Ended, legs: Sequence[LegReport]) -> None:
        """The call's media report is in: store it, close the row, book and publish."""
        self._media_report(info, legs, action.time)
        self.close(
            info.ticket,
            info.a_call_id,
            action.time,
            action.disposition,
            action.status,
            action.reason,
            action.hangup_by,
        )
        # As the table computes them: clamped at 0 if the wall clock stepped back.
        duration = max(action.time - info.start, 0.0)
        billable = max(action.time - info.answer, 0.0) if info.answer is not None else 0.0
        self._fraud_ended(info, action, duration, billable)
        self.events.publish(
            CallEnded(
                call_id=info.a_call_id,
                cdr_id=info.cdr_id,
                time=action.time,
                disposition=action.disposition,
                status=action.status,
                reason=action.reason,
                hangup_by=action.hangup_by,
                duration=duration,
                billable=billable,
            )
        )

    def _media_report(self, info: CallRecord, legs: Sequence[LegReport], now: float) -> None:
        """The relay's statistics of both legs: into the CDR and onto the events stream."""
        if not legs:
            return
        report = [_leg_json(leg) for leg in legs]
        try:
            text = json.dumps(report, separators=(",", ":"))
            # Only an answered call negotiated both legs' media; an unanswered one's
            # callee leg never had a suite (its report says "none").
            encryption = media_encryption(legs) if info.answer is not None else ""
            self.cdr.media(info.ticket, text, encryption)
        except StoreError:
            log.exception("could not store the media report of call %s", info.a_call_id[:64])
        for leg in legs:
            r = leg.received
            self.events.publish(
                MediaStats(
                    call_id=info.a_call_id,
                    cdr_id=info.cdr_id,
                    time=now,
                    leg=leg.leg,
                    suite=leg.suite,
                    packets=r.packets,
                    lost=r.lost,
                    jitter_ms=r.jitter_ms,
                    auth_failures=r.auth_failures,
                    replays=r.replays,
                    wrong_source=r.wrong_source,
                    malformed=r.malformed,
                    mos=r.mos,
                    local=leg.local,
                    remote=leg.remote,
                    stun_answered=r.stun_answered,
                    stun_dropped=r.stun_dropped,
                )
            )

    # -- fraud ----------------------------------------------------------------------

    def _overflow(self, total: int) -> None:
        """The writer dropped a CDR write (its queue is full): alert, at most once per
        CDR_OVERFLOW_ALERT_INTERVAL, through the same path as every other alert."""
        now = self._clock()
        if now - self._overflow_alerted < CDR_OVERFLOW_ALERT_INTERVAL:
            return
        self._overflow_alerted = now
        alert = AlertRaised(
            what="CDR writes dropped",
            who="cdr",
            why=(
                f"{total} CDR write(s) dropped so far: the CDR database is unavailable "
                f"and {self.cdr.max_pending} writes are queued ([cdr] max_pending)"
            ),
            action="dropped",
            rule="cdr_overflow",
            time=now,
            source="",
        )
        self.events.publish(alert)

    def _book(self, info: CallRecord, action: Ended) -> None:
        """Book a held record (its row closed at the transfer) with the fraud engine
        when its leg ends: billed up to ``action.time``."""
        duration = max(action.time - info.start, 0.0)
        billable = max(action.time - info.answer, 0.0) if info.answer is not None else 0.0
        self._fraud_ended(info, action, duration, billable)

    def _fraud_ended(
        self, info: CallRecord, action: Ended, duration: float, billable: float
    ) -> None:
        if self.fraud is None or not info.fraud:
            return
        if info.fraud == "out":
            violations = self.fraud.ended(info.a_call_id, action.time, billable)
            if self.fraud_feed is not None:
                self.fraud_feed.ended(info.a_call_id, action.time, billable, info.user)
            self._fraud_alerts(violations, info.user, info.source, action.time)
        else:
            self.fraud.inbound_ended(
                info.a_call_id, action.time, answered=billable > 0, duration=duration
            )
            if self.fraud_feed is not None:
                self.fraud_feed.inbound_ended(info.a_call_id, action.time, billable > 0, duration)

    def _fraud_alerts(
        self,
        violations: Sequence[Violation],
        user: str,
        source: str,
        now: float,
        done: str | None = None,
    ) -> None:
        """One alert per violation; ``done`` overrides what the alert says was done
        (an emergency call's violations are only reported)."""
        for v in violations:
            self.events.publish(
                AlertRaised(
                    what=f"fraud check {v.check} ({v.level})",
                    who=user,
                    why=v.detail.removeprefix(f"{user}: "),
                    action=done or _ACTION_DONE.get(v.action, v.action),
                    rule=v.rule,
                    time=now,
                    source=source,
                )
            )

    def save_fraud_state(self) -> None:
        """Write the engine's counters (they persist across restarts), atomically, 0600."""
        if self.fraud is None or self._data_dir is None or not self.saves_fraud_state:
            return
        path = self._data_dir / FRAUD_STATE
        tmp = path.with_suffix(".tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(self.fraud.snapshot(), handle, separators=(",", ":"))
            os.replace(tmp, path)
        except OSError as err:
            log.error("could not save the fraud state: %s", err)

    def _load_fraud(self, config: Config, data_dir: Path | None) -> FraudEngine | None:
        if not config.fraud.enabled:
            return None
        shipped = default_data_dir()
        files = [shipped / "fraud.yaml"]
        if data_dir is not None:
            user_dir = data_dir / config.fraud.rules_dir
            if user_dir.is_dir():
                files += sorted(user_dir.glob("*.yaml"))
        try:
            engine = FraudEngine(
                load_rules(files),
                rates=load_rates(shipped / "rates.csv"),
                high_risk=load_prefixes(shipped / "high-risk.txt"),
            )
        except (FraudRuleError, ValueError) as err:
            raise ConfigError([f"fraud rules: {err}"]) from None
        state = data_dir / FRAUD_STATE if data_dir is not None else None
        if state is not None and state.exists():
            try:
                engine.load_state(json.loads(state.read_text(encoding="utf-8")))
            except (OSError, ValueError) as err:
                log.error("fraud state %s not loaded, counters start again: %s", state, err)
        self._end_calls_of_a_crash(engine)
        return engine

    def _end_calls_of_a_crash(self, engine: FraudEngine) -> None:
        """Calls the saved state still holds died with the last process: end them.

        Their CDRs were closed as incomplete at start; their billable time (an upper
        bound: until the restart) is booked, so no spend is lost either.
        """
        pending = engine.pending_calls()
        if not pending:
            return
        now = self._clock()
        billable: dict[str, float] = {}
        with contextlib.suppress(sqlite3.Error, StoreError):
            for record in self._store.cdrs(since=now - CRASH_LOOKBACK_DAYS * 86400):
                billable[record.call_id] = record.billable or 0.0
        for call_id in pending:
            engine.ended(call_id, now, billable.get(call_id, 0.0))
        log.warning("fraud: %d call(s) of the previous run ended at restart", len(pending))


def media_encryption(legs: Sequence[LegReport]) -> str:
    """The CDR's media_encryption: each side and how its media was keyed, e.g.
    "a:srtp b:rtp" for an SRTP caller bridged to a plain-RTP callee (issue 16), or
    "a:dtls-srtp b:srtp" for a browser calling a desk phone (issue 17). With several
    streams (video, issue 17) a side gets the weakest of those that were keyed; a leg
    never keyed (a stream the callee refused, a DTLS handshake that never completed)
    counts only when the side has nothing else: "none"."""
    kinds: dict[str, set[str]] = {}
    for leg in legs:
        kinds.setdefault(leg.leg, set()).add(_keying(leg.suite))
    return " ".join(f"{side}:{_weakest(found)}" for side, found in kinds.items())


#: Keyings from the weakest: what a side with several streams is reported as.
_KEYING_RANK = ("rtp", "dtls-srtp", "srtp")


def _keying(suite: str) -> str:
    if suite == "RTP":
        return "rtp"
    if suite in ("none", "DTLS/none"):
        return "none"
    return "dtls-srtp" if suite.startswith("DTLS/") else "srtp"


def _weakest(found: set[str]) -> str:
    return next((kind for kind in _KEYING_RANK if kind in found), "none")


def _leg_json(leg: LegReport) -> dict[str, object]:
    r = leg.received
    return {
        "leg": leg.leg,
        "stream": leg.stream,
        "kind": leg.kind,
        "suite": leg.suite,
        "packets": r.packets,
        "bytes": r.bytes,
        "lost": r.lost,
        "out_of_order": r.out_of_order,
        "jitter_ms": round(r.jitter_ms, 2),
        "auth_failures": r.auth_failures,
        "replays": r.replays,
        "wrong_source": r.wrong_source,
        "malformed": r.malformed,
        "stun_answered": r.stun_answered,
        "stun_dropped": r.stun_dropped,
        "rtcp_packets": leg.rtcp_packets,
        "mos": round(r.mos, 2),
        "far_reports": r.far_reports,
        "far_lost": r.far_lost,
        "far_fraction_lost": round(r.far_fraction_lost, 3),
        "far_jitter_ms": round(r.far_jitter_ms, 2),
    }


__all__ = [
    "CDR_OVERFLOW_ALERT_INTERVAL",
    "EMERGENCY_RULE",
    "FRAUD_STATE",
    "Admission",
    "CallRecord",
    "CallRecords",
    "FraudFeedPort",
    "TransferRow",
    "media_encryption",
]

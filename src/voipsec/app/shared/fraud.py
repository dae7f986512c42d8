"""Every signaling worker's fraud engine sees every worker's calls.

How this works: the worker that decides a user's call (the one whose connection the
INVITE came in on) reports the attempt and its decision, and later its answer, end or
discard, to every other worker at once (one frame each, not batched: the fraud limits
are about few, costly events). Each other worker replays it on its own engine
(``FraudEngine.mirror``, ``answered``, ``ended``, ``discard``, ``inbound``...), so the
counters behind a concurrent-call limit, the call rates, the day's spend and the
suspensions hold every worker's calls, and the next decision anywhere uses them.
Alerts are raised only where the call was decided.

What remains open: two calls of one user decided at the same moment on two workers,
within one channel hop of each other (tens of microseconds), both see the counters
without the other; a limit of N concurrent calls can then let N+1 through, once.
Closing it would make every call wait for one owner worker's answer (a round trip on
the call path); the window is small enough to be documented instead
(docs/workers.md "Global state"). Failure mode: fails open to per-worker counting: a
report that is lost or malformed is counted and ignored; the worker's own calls are
still limited by its own counters. The saved counters (fraud-state.json) are written by
worker 0 only: every engine holds the same calls.

A worker that dies takes its calls with it (the supervisor restarts it; worker 0 closes
their CDR rows): the others end their copies of its calls then, booking the answered
time until that moment (an upper bound, as after a restart), so its calls do not hold
places in the concurrent-call counts forever.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Protocol

from ...ipc import Frame
from ...monitor.fraud import MAX_ACTIVE_CALLS, Attempt
from ...monitor.fraud.model import CALL_KINDS
from .port import FRAUD, BadPayload, ClusterPort, SharedCounters, dump, load_object, number, text

log = logging.getLogger("voipsec.shared")

#: Longest Call-ID, user, number or rule text accepted from another worker: a SIP
#: header line may be 8 kB, but what the engine keys on is cut here.
MAX_FIELD = 1_024


class MirroredEngine(Protocol):
    """The fraud engine's side that replays other workers' calls (monitor/fraud)."""

    def mirror(self, attempt: Attempt, *, allowed: bool) -> None: ...

    def mirror_suspension(self, user: str, rule: str, time: float, detail: str) -> None: ...

    def suspensions(self) -> dict[str, tuple[str, float, str]]: ...

    def answered(self, call_id: str, now: float) -> None: ...

    def ended(self, call_id: str, now: float, billable: float) -> list[Any]: ...

    def discard(self, call_id: str) -> None: ...

    def inbound(self, *, call_id: str, caller_e164: str | None, user: str, time: float) -> None: ...

    def inbound_ended(self, call_id: str, now: float, answered: bool, duration: float) -> None: ...


class FraudFeed:
    """Reports this worker's calls to the others and replays theirs on the engine here.

    call_records.py calls the ``checked``... methods after its own engine did.
    """

    def __init__(
        self,
        *,
        cluster: ClusterPort,
        engine: MirroredEngine,
        counters: SharedCounters,
        clock: Callable[[], float],
    ) -> None:
        self._cluster = cluster
        self._engine = engine
        self._counters = counters
        self._clock = clock
        #: Other workers' calls replayed here and not ended: Call-ID -> (worker, answer
        #: time or None); at most MAX_ACTIVE_CALLS, as in the engine.
        self._remote: OrderedDict[str, tuple[int, float | None]] = OrderedDict()
        cluster.on(FRAUD, self.on_frame)
        cluster.on_lost(self.on_lost)

    # -- this worker's calls -------------------------------------------------------------

    def checked(self, attempt: Attempt, *, allowed: bool) -> None:
        """The engine here decided ``attempt``."""
        self._send(
            {
                "op": "check",
                "call_id": attempt.call_id,
                "user": attempt.user,
                "dialled": attempt.dialled,
                "e164": attempt.e164,
                "kind": attempt.kind,
                "time": attempt.time,
                "allowed": allowed,
                "suspended": self._suspension(attempt.user),
            }
        )

    def answered(self, call_id: str, now: float) -> None:
        self._send({"op": "answered", "call_id": call_id, "time": now})

    def ended(self, call_id: str, now: float, billable: float, user: str) -> None:
        self._send(
            {
                "op": "ended",
                "call_id": call_id,
                "time": now,
                "billable": billable,
                "user": user,
                "suspended": self._suspension(user),
            }
        )

    def discarded(self, call_id: str) -> None:
        self._send({"op": "discard", "call_id": call_id})

    def inbound(self, call_id: str, caller_e164: str | None, user: str, now: float) -> None:
        self._send(
            {"op": "inbound", "call_id": call_id, "e164": caller_e164, "user": user, "time": now}
        )

    def inbound_ended(self, call_id: str, now: float, answered: bool, duration: float) -> None:
        self._send(
            {
                "op": "inbound_ended",
                "call_id": call_id,
                "time": now,
                "answered": answered,
                "duration": duration,
            }
        )

    def _suspension(self, user: str) -> list[object] | None:
        found = self._engine.suspensions().get(user)
        return list(found) if found is not None else None

    def _send(self, report: dict[str, object]) -> None:
        self._cluster.broadcast(FRAUD, {}, dump(report))
        self._counters.frames_sent += 1

    # -- the other workers' calls ----------------------------------------------------------

    def on_frame(self, origin: int, frame: Frame) -> None:
        """Another worker's call, replayed on the engine here."""
        self._counters.frames_received += 1
        try:
            self._replay(origin, load_object(frame))
        except BadPayload as err:
            self._counters.rejected += 1
            log.debug("fraud report from worker %d ignored: %s", origin, err)

    def on_lost(self, worker: int) -> None:
        """Worker ``worker`` is gone: its calls end here, answered time booked to now."""
        now = self._clock()
        lost = [(c, answer) for c, (w, answer) in self._remote.items() if w == worker]
        for call_id, answer in lost:
            del self._remote[call_id]
            self._engine.ended(call_id, now, now - answer if answer is not None else 0.0)
        if lost:
            log.warning("fraud: %d call(s) of lost worker %d ended", len(lost), worker)

    def _replay(self, origin: int, report: dict[str, Any]) -> None:
        op = report.get("op")
        call_id = text(report.get("call_id"), MAX_FIELD)
        engine = self._engine
        remote = self._remote
        if op == "check":
            allowed = report.get("allowed") is True
            engine.mirror(_attempt(call_id, report), allowed=allowed)
            if allowed:
                remote[call_id] = (origin, None)
                if len(remote) > MAX_ACTIVE_CALLS:
                    remote.popitem(last=False)
            self._suspend(report, text(report.get("user"), MAX_FIELD))
        elif op == "answered":
            time = number(report.get("time"))
            engine.answered(call_id, time)
            if call_id in remote and remote[call_id][1] is None:
                remote[call_id] = (origin, time)
        elif op == "ended":
            time = number(report.get("time"))
            engine.ended(call_id, time, number(report.get("billable")))
            remote.pop(call_id, None)
            self._suspend(report, text(report.get("user"), MAX_FIELD))
        elif op == "discard":
            engine.discard(call_id)
            remote.pop(call_id, None)
        elif op == "inbound":
            engine.inbound(
                call_id=call_id,
                caller_e164=_optional(report.get("e164")),
                user=text(report.get("user"), MAX_FIELD),
                time=number(report.get("time")),
            )
        elif op == "inbound_ended":
            engine.inbound_ended(
                call_id,
                number(report.get("time")),
                report.get("answered") is True,
                number(report.get("duration")),
            )
        else:
            raise BadPayload(f"unknown fraud report {str(op)[:32]!r}")

    def _suspend(self, report: dict[str, Any], user: str) -> None:
        suspended = report.get("suspended")
        if suspended is None:
            return
        if not isinstance(suspended, list) or len(suspended) != 3:
            raise BadPayload("suspended is not [rule, time, detail]")
        rule, time, detail = suspended
        self._engine.mirror_suspension(
            user, text(rule, MAX_FIELD), number(time), text(detail, MAX_FIELD)
        )


def _attempt(call_id: str, report: dict[str, Any]) -> Attempt:
    kind = report.get("kind")
    if kind not in CALL_KINDS:
        raise BadPayload(f"unknown call kind {str(kind)[:32]!r}")
    return Attempt(
        call_id=call_id,
        user=text(report.get("user"), MAX_FIELD),
        dialled=text(report.get("dialled"), MAX_FIELD),
        e164=_optional(report.get("e164")),
        kind=str(kind),
        time=number(report.get("time")),
    )


def _optional(value: object) -> str | None:
    return None if value is None else text(value, MAX_FIELD)

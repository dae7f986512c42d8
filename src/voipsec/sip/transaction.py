"""The four SIP transaction state machines (RFC 3261 §17, with RFC 6026's Accepted state).

How this works: each machine is one transition table ``(state, event) -> (next state,
effect)`` and one :meth:`Transaction.process` function. Events come from the network
(a response or a retransmitted request), from the transaction user (a response to
send) or from a timer firing. Effects return *actions* — send these bytes, pass this
message up, start or cancel a timer, the transaction is over — and never touch a
socket or the clock: ``now`` is an argument and timers are data. The shell carries the
actions out and calls :meth:`process` with ``timer_X`` when a timer fires.

Network events that a state does not expect (a late retransmission, say) are absorbed
and counted; TU events a state does not allow raise :class:`InvalidTransition`,
because they are programming errors.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

#: RFC 3261 §17.1.1.1 timer base values, seconds.
T1 = 0.5
T2 = 4.0
T4 = 5.0


class Kind(Enum):
    INVITE_CLIENT = "ict"
    NON_INVITE_CLIENT = "nict"
    INVITE_SERVER = "ist"
    NON_INVITE_SERVER = "nist"


class State(Enum):
    CALLING = "calling"
    TRYING = "trying"
    PROCEEDING = "proceeding"
    COMPLETED = "completed"
    CONFIRMED = "confirmed"
    ACCEPTED = "accepted"
    TERMINATED = "terminated"


# -- actions --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Send:
    """Transmit these bytes on the transaction's transport."""

    data: bytes


@dataclass(frozen=True, slots=True)
class PassUp:
    """Give a response (client) or request (server) to the transaction user."""

    message: object


@dataclass(frozen=True, slots=True)
class StartTimer:
    name: str
    at: float


@dataclass(frozen=True, slots=True)
class CancelTimer:
    name: str


@dataclass(frozen=True, slots=True)
class Terminated:
    """The transaction is over; the layer forgets it."""

    reason: str


Action = Send | PassUp | StartTimer | CancelTimer | Terminated


#: What an INVITE server transaction passes up when its 2xx was resent for 64*T1 and no
#: ACK came (RFC 3261 §13.3.1.4): the TU ends the session.
NO_ACK = "no_ack"


class InvalidTransition(Exception):
    """The transaction user asked for something the current state does not allow."""


_TU_EVENTS = frozenset({"tu_1xx", "tu_2xx", "tu_final"})

Effect = Callable[["Transaction", float, object], list[Action]]


INITIAL_STATE: dict[Kind, State] = {
    Kind.INVITE_CLIENT: State.CALLING,
    Kind.NON_INVITE_CLIENT: State.TRYING,
    Kind.INVITE_SERVER: State.PROCEEDING,
    Kind.NON_INVITE_SERVER: State.TRYING,
}


class Transaction:
    """One transaction: its kind's table, its state and its retransmission timers."""

    __slots__ = ("_interval", "_last", "absorbed", "kind", "reliable", "state")

    def __init__(self, kind: Kind, *, reliable: bool) -> None:
        self.kind = kind
        self.state = INITIAL_STATE[kind]
        self.reliable = reliable
        self._last = b""
        self._interval = T1
        self.absorbed = 0

    # -- entry points -------------------------------------------------------------

    def start(self, now: float, request: bytes) -> list[Action]:
        """Client: send the request (§17.1.1.2, §17.1.2.2). Server: nothing to send yet."""
        if self.kind in (Kind.INVITE_SERVER, Kind.NON_INVITE_SERVER):
            # §17.2.1: an INVITE server transaction may send 100 Trying on its own;
            # the TU decides (it knows whether it answers within 200 ms).
            return []
        self._last = request
        actions: list[Action] = [Send(request)]
        if self.kind is Kind.INVITE_CLIENT:
            if not self.reliable:
                actions.append(StartTimer("A", now + T1))
            actions.append(StartTimer("B", now + 64 * T1))
        else:
            if not self.reliable:
                actions.append(StartTimer("E", now + T1))
            actions.append(StartTimer("F", now + 64 * T1))
        return actions

    def process(self, event: str, now: float, payload: object = None) -> list[Action]:
        """Feed one event; return the actions it causes."""
        entry = TABLES[self.kind].get((self.state, event))
        if entry is None:
            if event in _TU_EVENTS:
                raise InvalidTransition(f"{self.kind.value}: {event} in state {self.state.value}")
            self.absorbed += 1
            return []
        next_state, effect = entry
        self.state = next_state
        return effect(self, now, payload)

    @property
    def terminated(self) -> bool:
        return self.state is State.TERMINATED


def response_event(status: int) -> str:
    """Client-side event name for a received response."""
    if status < 200:
        return "1xx"
    if status < 300:
        return "2xx"
    return "final"


def tu_event(status: int) -> str:
    """Server-side event name for a response the TU sends."""
    if status < 200:
        return "tu_1xx"
    if status < 300:
        return "tu_2xx"
    return "tu_final"


# -- effects --------------------------------------------------------------------


def _nothing(t: Transaction, now: float, payload: object) -> list[Action]:
    return []


def _pass_up(t: Transaction, now: float, payload: object) -> list[Action]:
    return [PassUp(payload)]


def _terminate(reason: str) -> Effect:
    def effect(t: Transaction, now: float, payload: object) -> list[Action]:
        return [Terminated(reason)]

    return effect


def _timeout(t: Transaction, now: float, payload: object) -> list[Action]:
    # §17.1.1.2 / §17.1.2.2: Timer B or F fired: the TU hears of a timeout.
    return [PassUp("timeout"), Terminated("timeout")]


def _transport_error(t: Transaction, now: float, payload: object) -> list[Action]:
    # §17.1.4 / §17.2.4: inform the TU and terminate.
    return [PassUp("transport_error"), Terminated("transport error")]


# Client INVITE (§17.1.1, RFC 6026 §7.2)


def _ict_retransmit(t: Transaction, now: float, payload: object) -> list[Action]:
    t._interval *= 2
    return [Send(t._last), StartTimer("A", now + t._interval)]


def _ict_provisional(t: Transaction, now: float, payload: object) -> list[Action]:
    return [CancelTimer("A"), PassUp(payload)]


def _ict_accepted(t: Transaction, now: float, payload: object) -> list[Action]:
    t._last = b""  # RFC 6026 §7.2: never retransmitted after a 2xx; free it meanwhile
    return [CancelTimer("A"), CancelTimer("B"), PassUp(payload), StartTimer("M", now + 64 * T1)]


def _ict_failure(t: Transaction, now: float, payload: object) -> list[Action]:
    # The transaction builds and sends the ACK for a non-2xx final response (§17.1.1.3);
    # the TU supplies the ACK bytes as part of the payload tuple (response, ack).
    response, ack = payload if isinstance(payload, tuple) else (payload, b"")
    t._last = ack
    wait = 0.0 if t.reliable else 32.0
    actions: list[Action] = [CancelTimer("A"), CancelTimer("B")]
    if ack:
        actions.append(Send(ack))
    actions += [PassUp(response), StartTimer("D", now + wait)]
    return actions


def _ict_resend_ack(t: Transaction, now: float, payload: object) -> list[Action]:
    return [Send(t._last)] if t._last else []


# Client non-INVITE (§17.1.2)


def _nict_retransmit(t: Transaction, now: float, payload: object) -> list[Action]:
    if t.state is State.PROCEEDING:
        t._interval = T2
    else:
        t._interval = min(t._interval * 2, T2)
    return [Send(t._last), StartTimer("E", now + t._interval)]


def _nict_final(t: Transaction, now: float, payload: object) -> list[Action]:
    t._last = b""  # §17.1.2.2: Completed only absorbs retransmitted responses
    wait = 0.0 if t.reliable else T4
    return [CancelTimer("E"), CancelTimer("F"), PassUp(payload), StartTimer("K", now + wait)]


# Server INVITE (§17.2.1, RFC 6026 §7.1)


def _ist_send_provisional(t: Transaction, now: float, payload: object) -> list[Action]:
    t._last = _as_bytes(payload)
    return [Send(t._last)]


def _ist_resend(t: Transaction, now: float, payload: object) -> list[Action]:
    return [Send(t._last)] if t._last else []


def _ist_accept(t: Transaction, now: float, payload: object) -> list[Action]:
    data = _as_bytes(payload)
    actions: list[Action] = [Send(data), StartTimer("L", now + 64 * T1)]
    if t.reliable:
        t._last = b""  # nothing to resend: the transport delivers the 2xx or fails
        return actions
    # RFC 3261 §13.3.1.4: over an unreliable transport the UAS core resends its 2xx,
    # T1 doubling up to T2, until the ACK comes (the layer matches the ACK, which has
    # a branch of its own); Timer G's name and schedule, in the Accepted state.
    t._last = data
    t._interval = T1
    return [*actions, StartTimer("G", now + T1)]


def _ist_send_2xx_again(t: Transaction, now: float, payload: object) -> list[Action]:
    # RFC 6026 §7.1: the TU retransmits its 2xx through the Accepted state.
    data = _as_bytes(payload)
    if t._last:
        t._last = data  # the copy the timer resends, until the ACK
    return [Send(data)]


def _ist_resend_2xx(t: Transaction, now: float, payload: object) -> list[Action]:
    if not t._last:
        return []  # ACKed meanwhile (its CancelTimer raced the timer)
    t._interval = min(t._interval * 2, T2)
    return [Send(t._last), StartTimer("G", now + t._interval)]


def _ist_2xx_acked(t: Transaction, now: float, payload: object) -> list[Action]:
    # §13.3.1.4: "Response retransmissions cease when an ACK request for the response
    # is received." The ACK still goes to the TU (it may carry a late-offer answer).
    if not t._last:
        return [PassUp(payload)]
    t._last = b""
    return [CancelTimer("G"), PassUp(payload)]


def _ist_accepted_over(t: Transaction, now: float, payload: object) -> list[Action]:
    if not t._last:
        return [Terminated("accepted, timer L")]
    # §13.3.1.4: 64*T1 of retransmissions and no ACK: "the dialog is confirmed, but
    # the session SHOULD be terminated" -- the TU hears of it and sends the BYE.
    t._last = b""
    return [CancelTimer("G"), PassUp(NO_ACK), Terminated("no ACK for the 2xx (timer L)")]


def _ist_final(t: Transaction, now: float, payload: object) -> list[Action]:
    t._last = _as_bytes(payload)
    t._interval = T1
    actions: list[Action] = [Send(t._last), StartTimer("H", now + 64 * T1)]
    if not t.reliable:
        actions.append(StartTimer("G", now + T1))
    return actions


def _ist_retransmit(t: Transaction, now: float, payload: object) -> list[Action]:
    t._interval = min(t._interval * 2, T2)
    return [Send(t._last), StartTimer("G", now + t._interval)]


def _ist_confirmed(t: Transaction, now: float, payload: object) -> list[Action]:
    t._last = b""  # §17.2.1: Confirmed only absorbs ACKs; the final is not resent
    wait = 0.0 if t.reliable else T4
    return [CancelTimer("G"), CancelTimer("H"), StartTimer("I", now + wait)]


def _ist_no_ack(t: Transaction, now: float, payload: object) -> list[Action]:
    return [CancelTimer("G"), PassUp("timeout"), Terminated("no ACK (timer H)")]


# Server non-INVITE (§17.2.2)


def _nist_send(t: Transaction, now: float, payload: object) -> list[Action]:
    t._last = _as_bytes(payload)
    return [Send(t._last)]


def _nist_final(t: Transaction, now: float, payload: object) -> list[Action]:
    t._last = _as_bytes(payload)
    wait = 0.0 if t.reliable else 64 * T1
    return [Send(t._last), StartTimer("J", now + wait)]


def _as_bytes(payload: object) -> bytes:
    if isinstance(payload, bytes):
        return payload
    to_bytes = getattr(payload, "to_bytes", None)
    if to_bytes is None:
        raise InvalidTransition("a response to send must be bytes or a message")
    data = to_bytes()
    if not isinstance(data, bytes):
        raise InvalidTransition("a response to send must serialize to bytes")
    return data


C, TR, P, CO, CF, A, X = (
    State.CALLING,
    State.TRYING,
    State.PROCEEDING,
    State.COMPLETED,
    State.CONFIRMED,
    State.ACCEPTED,
    State.TERMINATED,
)

#: The four machines: (state, event) -> (next state, effect). Anything else is refused.
TABLES: dict[Kind, dict[tuple[State, str], tuple[State, Effect]]] = {
    Kind.INVITE_CLIENT: {
        (C, "timer_A"): (C, _ict_retransmit),
        (C, "timer_B"): (X, _timeout),
        (C, "1xx"): (P, _ict_provisional),
        (P, "1xx"): (P, _pass_up),
        (C, "2xx"): (A, _ict_accepted),
        (P, "2xx"): (A, _ict_accepted),
        (A, "2xx"): (A, _pass_up),
        (A, "timer_M"): (X, _terminate("accepted, timer M")),
        (C, "final"): (CO, _ict_failure),
        (P, "final"): (CO, _ict_failure),
        (CO, "final"): (CO, _ict_resend_ack),
        (CO, "timer_D"): (X, _terminate("completed, timer D")),
        (C, "transport_error"): (X, _transport_error),
        (P, "transport_error"): (X, _transport_error),
    },
    Kind.NON_INVITE_CLIENT: {
        (TR, "timer_E"): (TR, _nict_retransmit),
        (P, "timer_E"): (P, _nict_retransmit),
        (TR, "timer_F"): (X, _timeout),
        (P, "timer_F"): (X, _timeout),
        (TR, "1xx"): (P, _pass_up),
        (P, "1xx"): (P, _pass_up),
        (TR, "2xx"): (CO, _nict_final),
        (P, "2xx"): (CO, _nict_final),
        (TR, "final"): (CO, _nict_final),
        (P, "final"): (CO, _nict_final),
        (CO, "timer_K"): (X, _terminate("completed, timer K")),
        (TR, "transport_error"): (X, _transport_error),
        (P, "transport_error"): (X, _transport_error),
    },
    Kind.INVITE_SERVER: {
        (P, "request"): (P, _ist_resend),
        (P, "tu_1xx"): (P, _ist_send_provisional),
        (P, "tu_2xx"): (A, _ist_accept),
        (A, "tu_2xx"): (A, _ist_send_2xx_again),
        (A, "request"): (A, _nothing),
        (A, "ack"): (A, _ist_2xx_acked),
        (A, "timer_G"): (A, _ist_resend_2xx),
        (A, "timer_L"): (X, _ist_accepted_over),
        (P, "tu_final"): (CO, _ist_final),
        (CO, "request"): (CO, _ist_resend),
        (CO, "timer_G"): (CO, _ist_retransmit),
        (CO, "timer_H"): (X, _ist_no_ack),
        (CO, "ack"): (CF, _ist_confirmed),
        (CF, "ack"): (CF, _nothing),
        (CF, "timer_I"): (X, _terminate("confirmed, timer I")),
        (P, "transport_error"): (X, _transport_error),
        (CO, "transport_error"): (X, _transport_error),
    },
    Kind.NON_INVITE_SERVER: {
        (TR, "request"): (TR, _nothing),
        (TR, "tu_1xx"): (P, _nist_send),
        (P, "tu_1xx"): (P, _nist_send),
        (P, "request"): (P, _ist_resend),
        (TR, "tu_2xx"): (CO, _nist_final),
        (TR, "tu_final"): (CO, _nist_final),
        (P, "tu_2xx"): (CO, _nist_final),
        (P, "tu_final"): (CO, _nist_final),
        (CO, "request"): (CO, _ist_resend),
        (CO, "timer_J"): (X, _terminate("completed, timer J")),
        (P, "transport_error"): (X, _transport_error),
        (CO, "transport_error"): (X, _transport_error),
    },
}

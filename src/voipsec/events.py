"""The internal event stream: what signaling tells everything else.

The call path publishes typed, frozen events (DESIGN.md "Shape of the code"); the CDR
writer, fraud detector, metrics and dashboard subscribe. Fan-out is synchronous and
in order of subscription, so a subscriber sees a call's events in the order they
happened, and a subscriber must be quick (hand slow work to a queue of its own).

A subscriber names the event types it wants (``subscribe(callback, CallEnded)``), or
gets every event when it names none; a publisher on a hot path asks
:meth:`EventBus.wanted` before it builds an event nobody would receive (one per SIP
message, say).

Failure mode: fails open for the publisher. A subscriber that raises is logged and
counted; the remaining subscribers still get the event and ``publish`` returns
normally, so a broken listener never takes a call down with it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, get_args

__all__ = [
    "AlertRaised",
    "BanImposed",
    "BanLifted",
    "BindingsChanged",
    "CallAnswered",
    "CallEnded",
    "CallStarted",
    "ConnectionClosed",
    "CredentialsRejected",
    "DeviceRestrictionChanged",
    "Event",
    "EventBus",
    "EventBusStatistics",
    "MediaStats",
    "MessageSeen",
    "RegistrationChanged",
    "RemoteEvent",
    "RequestHandled",
    "Subscriber",
]

logger = logging.getLogger("voipsec.events")


@dataclass(frozen=True, slots=True, kw_only=True)
class CallStarted:
    """An INVITE was accepted for routing and a CDR row opened (``cdr_id``)."""

    call_id: str
    cdr_id: int
    caller: str
    callee: str
    #: The authenticated user placing the call; None for calls from a trunk.
    user: str | None
    #: "ip:port" the INVITE came from.
    source: str
    #: Trunk the call came from or goes to; None for user-to-user calls.
    trunk: str | None
    time: float


@dataclass(frozen=True, slots=True, kw_only=True)
class CallAnswered:
    """The callee answered (2xx to the INVITE)."""

    call_id: str
    cdr_id: int
    time: float


@dataclass(frozen=True, slots=True, kw_only=True)
class CallEnded:
    """The call is over; the fields match the closed CDR row (see store.CdrRecord)."""

    call_id: str
    cdr_id: int
    time: float
    #: "answered", "no_answer", "busy", "failed" or "rejected".
    disposition: str
    #: Final SIP status of the INVITE (200 for an answered call).
    status: int
    reason: str
    #: "caller", "callee", "system", or "" when the call was never answered.
    hangup_by: str
    #: Seconds from start to end.
    duration: float
    #: Seconds from answer to end; 0.0 when not answered.
    billable: float


@dataclass(frozen=True, slots=True, kw_only=True)
class MediaStats:
    """What the relay received from one leg of a call, sent when the call ends."""

    call_id: str
    cdr_id: int
    time: float
    #: "a" (the caller's leg) or "b" (the callee's).
    leg: str
    #: SRTP suite of the leg, or "RTP".
    suite: str
    packets: int
    lost: int
    jitter_ms: float
    auth_failures: int
    replays: int
    wrong_source: int
    malformed: int
    mos: float
    #: The relay's RTP address for this leg and the peer's (None when never known).
    local: tuple[str, int]
    remote: tuple[str, int] | None
    #: STUN checks answered and STUN messages dropped (ICE-lite, docs/media.md).
    stun_answered: int = 0
    stun_dropped: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class CredentialsRejected:
    """A request's credentials were refused: wrong password, unknown or expired user.

    Published by services whose failures the IDS, the alerts and the
    ``auth_failures`` metric must see (TURN, RFC 8489 §9.2.4 401). Never carries a
    password, key, nonce or digest.
    """

    #: "turn" (the label of the ``auth_failures`` metric).
    service: str
    #: IP address the request came from.
    source: str
    #: The user name the request claimed (cut to 64 characters by the service).
    user: str
    reason: str
    #: The request proved it came from ``source`` (it echoed a fresh nonce issued to
    #: that address): not a spoofed UDP source. Only such failures may lead to a ban.
    verified_source: bool
    time: float


@dataclass(frozen=True, slots=True, kw_only=True)
class RegistrationChanged:
    """A REGISTER that passed authentication was applied (or refused by the registrar)."""

    user: str
    #: The registrar accepted it (200); False for 403 Too Many Contacts, 423, ...
    accepted: bool
    #: "transport:ip:port" the REGISTER came from.
    source: str
    time: float


@dataclass(frozen=True, slots=True, kw_only=True)
class BanImposed:
    """A source was banned (by the guard's rate limit, an IDS rule or a connection flood)."""

    source: str
    until: float
    seconds: float
    reason: str
    #: "all" transports, or "udp" only (a ban on spoofable evidence).
    scope: str
    time: float


@dataclass(frozen=True, slots=True, kw_only=True)
class BanLifted:
    """A ban was removed before it ran out (``voipsec bans remove``)."""

    source: str
    time: float


@dataclass(frozen=True, slots=True, kw_only=True)
class AlertRaised:
    """Something an administrator must hear about: an alert (``monitor.alerts.Alert``
    is this type). The monitor stores and counts every one, and delivers it where a
    webhook, syslog or e-mail sink is set: what is recorded never depends on the sinks.
    """

    #: Short description: "call to a high-risk destination".
    what: str
    #: The user, trunk or address responsible.
    who: str
    #: Values against thresholds.
    why: str
    #: What voipsec did: "alerted", "blocked", "banned for 300 s"...
    action: str
    #: Id of the rule that fired.
    rule: str
    time: float
    #: Address the traffic came from, or "" when not from the net.
    source: str

    def detail(self) -> str:
        """What the store's detail column and a log line say."""
        return f"{self.what}: {self.who}: {self.why}; {self.action}"


@dataclass(frozen=True, slots=True, kw_only=True)
class MessageSeen:
    """One SIP message received or sent (decrypted bytes), for the SIP log and HEP.

    Built only when someone subscribed (:meth:`EventBus.wanted`): one per message.
    """

    direction: Literal["in", "out"]
    transport: str
    local: tuple[str, int]
    peer: tuple[str, int]
    #: The TLS client certificate's AOR or subject, if one was presented.
    tls_identity: str | None
    data: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestHandled:
    """How long the SIP service took to handle one request (the latency histogram)."""

    method: str
    seconds: float


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectionAdmitted:
    """A TCP or TLS connection was admitted (TLS: its handshake completed, the client
    certificate, if any, verified and not revoked); metrics count TLS handshakes."""

    transport: str
    peer: tuple[str, int]


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectionClosed:
    """An admitted TCP or TLS connection ended (with sip.workers > 1, the other workers
    forget which worker owned it: app/handoff.py)."""

    transport: str
    peer: tuple[str, int]


#: A binding as it crosses between workers: aor, contact, expires_at, call_id, cseq,
#: source, user_agent (records.Binding's fields, in order).
BindingFields = tuple[str, str, float, str, int, str, str]


@dataclass(frozen=True, slots=True, kw_only=True)
class BindingsChanged:
    """The registrar applied a REGISTER: the bindings it added or refreshed and the
    (aor, contact) pairs it removed; replicated so every worker's registrar finds every
    callee (sip.workers > 1). Expiry is not an event: each worker expires by the clock."""

    upserts: tuple[BindingFields, ...]
    removals: tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceRestrictionChanged:
    """The endpoint policy restricted a device at REGISTER (issue 18 ``restrict``), or
    no longer does (``reason`` ""); replicated so every worker's device gate restricts
    the device's calls whichever connection they come on (sip.workers > 1)."""

    user: str
    #: The device's keys in the gate (app/devices.py): its key, its User-Agent at its address.
    keys: tuple[str, ...]
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class RemoteEvent:
    """An event another signaling worker published (sip.workers > 1), as it arrives on
    this worker's bus: replicas (bans, bindings, counters) subscribe to it; the stores
    and alert sinks do not, so a remote event is never stored or delivered twice."""

    #: The index of the worker that published it.
    origin: int
    event: Event


Event = (
    CallStarted
    | CallAnswered
    | CallEnded
    | MediaStats
    | CredentialsRejected
    | RegistrationChanged
    | BanImposed
    | BanLifted
    | AlertRaised
    | MessageSeen
    | RequestHandled
    | ConnectionAdmitted
    | ConnectionClosed
    | BindingsChanged
    | DeviceRestrictionChanged
    | RemoteEvent
)
Subscriber = Callable[[Event], None]
#: Every event type, for subscribers that want them all.
EVENT_TYPES: tuple[type, ...] = get_args(Event)


@dataclass(frozen=True, slots=True, kw_only=True)
class EventBusStatistics:
    #: Events handed to ``publish``.
    published: int
    #: Subscriber calls that raised.
    subscriber_errors: int


class EventBus:
    """Synchronous fan-out of events to subscribers, isolated from their failures."""

    def __init__(self) -> None:
        self._subscribers: dict[type, tuple[Subscriber, ...]] = {}
        self._published = 0
        self._subscriber_errors = 0

    def subscribe(self, callback: Subscriber, *types: type) -> None:
        """Call ``callback`` with every event of ``types`` (all events when none)."""
        for kind in types or EVENT_TYPES:
            if kind not in EVENT_TYPES:
                raise TypeError(f"{kind.__name__} is not an event type")
            # A new tuple, so a subscription made during publish takes effect next event.
            self._subscribers[kind] = (*self._subscribers.get(kind, ()), callback)

    def wanted(self, kind: type) -> bool:
        """Whether anyone subscribed to ``kind`` (so it is worth building)."""
        return kind in self._subscribers

    def publish(self, event: Event) -> None:
        """Hand ``event`` to its subscribers in order; never raises for them."""
        self._published += 1
        for callback in self._subscribers.get(type(event), ()):
            self._deliver(callback, event)

    def _deliver(self, callback: Subscriber, event: Event) -> None:
        try:
            callback(event)
        except Exception:
            self._subscriber_errors += 1
            logger.exception("event subscriber %r failed on %s", callback, type(event).__name__)

    def statistics(self) -> EventBusStatistics:
        return EventBusStatistics(
            published=self._published, subscriber_errors=self._subscriber_errors
        )

"""The call model of the B2BUA (sans-IO): legs, targets, actions, call state, and the
pure rules of what crosses from one leg to the other.

:mod:`.b2bua` decides; this module holds what it decides about and what it returns,
so that the shell (``calls.py``) and the tests can name the actions without reading
the state machine. Media is a request/result pair like any other I/O: the B2BUA
returns :class:`AllocateMedia` (an SDP offer) or :class:`AnswerMedia` (an SDP answer)
with a ``key``, parks the step that needs the rewritten SDP, and continues when the
shell feeds the outcome back with :meth:`.b2bua.B2bua.on_media`: the rewritten SDP,
or :class:`MediaRefused` with the status and Warning the request gets.
:class:`MediaAnswered` and :class:`ReleaseMedia` expect no result.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum

from ..media.destinations import MediaPeer
from ..media.errors import MediaRefused
from ..sip.dialog import Dialog, uas_dialog
from ..sip.headers import Headers
from ..sip.layer import TxKey
from ..sip.message import Request, Response
from ..sip.uac import LocalAddress
from .dispatch import DIALOG_ALLOW, DIALOG_SUPPORTED

#: Transports of a browser's SIP (RFC 7118): its calls take DTLS-SRTP (webrtc_forks).
WEBSOCKET_TRANSPORTS = frozenset({"ws", "wss"})

#: Headers of a request copied onto the other leg; everything else stays on its own
#: leg (issue 16: nothing of one phone identifies it to the other unless this list
#: says so): Via, Contact, Record-Route, User-Agent, Server, Organization, Call-Info,
#: Reply-To, P-* and X- headers, and the phone's capabilities (Allow, Supported,
#: Allow-Events, Accept), which describe that phone and not voipsec: each leg gets
#: voipsec's own Allow and Supported instead (:data:`LEG_CAPABILITIES`). Accept is not
#: written: without it a body is application/sdp (RFC 3261 §20.1), all a call needs.
REQUEST_HEADERS_CROSSING = (
    "content-type",
    "content-disposition",
    "subject",
    "priority",
)
#: Headers of a response copied onto the other leg (the same rule).
RESPONSE_HEADERS_CROSSING = (
    "content-type",
    "content-disposition",
    "retry-after",
)
#: What voipsec tells each leg it allows and supports (RFC 3261 §20.5, §20.37) in the
#: INVITEs and UPDATEs it writes, their 1xx/2xx answers and any 405 (:func:`leg_headers`).
#: It is voipsec that answers the phone's next request, so the phone must learn
#: voipsec's methods: a phone told the other side's "REFER, SUBSCRIBE, MESSAGE" sends
#: them and gets 405.
LEG_CAPABILITIES: tuple[tuple[str, str], ...] = (("Allow", DIALOG_ALLOW),) + (
    (("Supported", ", ".join(DIALOG_SUPPORTED)),) if DIALOG_SUPPORTED else ()
)
#: An OPTIONS inside a dialog is answered with what the dialog takes (RFC 3261 §11.2).
OPTIONS_CAPABILITIES = (*LEG_CAPABILITIES, ("Accept", "application/sdp"))
#: The longest header value, display name or reason phrase copied onto the other leg.
#: Subjects, display names and content types of real phones are far shorter; a longer
#: value is dropped (not cut: a cut quoted string or parameter may mean something else).
MAX_CROSSING_VALUE = 256


class Side(Enum):
    A = "a"
    B = "b"

    @property
    def other(self) -> Side:
        return Side.B if self is Side.A else Side.A


class Phase(Enum):
    ROUTING = "routing"
    EARLY = "early"
    CONFIRMED = "confirmed"
    ENDED = "ended"


@dataclass(frozen=True, slots=True, kw_only=True)
class Target:
    """Where a leg's requests go: an existing connection, or a trunk to connect to."""

    transport: str
    host: str
    port: int
    #: The trunk's name when the shell may open a new TLS connection to it.
    trunk: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Origin:
    """The caller side, as authorized by the shell."""

    target: Target
    local: LocalAddress
    #: The From URI of the B-leg: ``sip:alice@domain`` (never the caller's own From).
    caller_uri: str
    caller_display: str | None = None
    #: Where the caller's media may go before it latches; None: ``target.host``.
    media_peer: MediaPeer | None = None
    #: The authenticated user on this side (None for a trunk's call): who may transfer
    #: it (core/transfer.py).
    user: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Fork:
    """One B-leg destination: a registered contact of the callee, or a trunk."""

    request_uri: str
    to_uri: str
    target: Target
    local: LocalAddress
    #: Digest credentials for a trunk's 401/407 (user name, password).
    credentials: tuple[str, str] | None = None
    #: Where the callee's media may go before it latches; None: ``target.host``.
    media_peer: MediaPeer | None = None
    #: The SDP offered instead of the call's: the RTP/AVP offer of a plain retry
    #: (core/srtpfallback.py); None for the call's own offer.
    offer: bytes | None = field(default=None, repr=False)


# -- actions ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Respond:
    """Answer the server transaction ``tx``."""

    tx: TxKey
    response: Response


@dataclass(frozen=True, slots=True)
class SendRequest:
    """Send a request to ``target``: an ACK directly, anything else in a transaction."""

    request: Request
    target: Target


@dataclass(frozen=True, slots=True)
class StartCallTimer:
    call: str
    name: str
    at: float


@dataclass(frozen=True, slots=True)
class CancelCallTimer:
    call: str
    name: str


@dataclass(frozen=True, slots=True)
class Answered:
    call: str
    time: float


@dataclass(frozen=True, slots=True)
class Ended:
    call: str
    time: float
    disposition: str
    status: int
    reason: str
    hangup_by: str


@dataclass(frozen=True, slots=True)
class AllocateMedia:
    """Rewrite the SDP offer ``sdp`` from ``side`` for the other side; the relay opens
    the call's port pairs on its first offer. The result comes back under ``key``.

    ``peer`` is where that side's SIP comes from, the only address its SDP may name
    (SSRF, issue 13).

    ``rekey``: the other side's leg goes to a new phone (a blind transfer,
    core/transfer.py); ``sdp`` is this side's last SDP, which leaves its leg as it is,
    and the offer carries fresh keys for the other leg (media/relay.py).

    ``webrtc``: the other side is a browser (every fork a WebSocket contact,
    :func:`webrtc_forks`): it is offered DTLS-SRTP with ICE, not SDES (RFC 8827 §6.5)."""

    key: int
    call: str
    side: Side
    sdp: bytes
    peer: MediaPeer
    rekey: bool = False
    webrtc: bool = False


@dataclass(frozen=True, slots=True)
class AnswerMedia:
    """Rewrite the SDP answer ``sdp`` from ``side`` to the relay's offer, for the offerer."""

    key: int
    call: str
    side: Side
    sdp: bytes
    peer: MediaPeer


@dataclass(frozen=True, slots=True)
class MediaAnswered:
    """The call was answered: its media timeout starts counting (no result)."""

    call: str


@dataclass(frozen=True, slots=True)
class ReleaseMedia:
    """The call is over: its ports go back to the pool (no result). Comes before
    :class:`Ended`, so the media report is final when the call's end is recorded."""

    call: str


@dataclass(frozen=True, slots=True)
class TransferEnded:
    """A blind transfer of ``call`` is over (core/transfer.py): ``status`` 200 when the
    target took the transferor's place (the CDR is split and linked), else why not."""

    call: str
    time: float
    status: int
    target: str
    reason: str


#: A media request: the B2BUA waits for its result (:meth:`.b2bua.B2bua.on_media`).
MediaRequest = AllocateMedia | AnswerMedia
#: What a media request gives back: the rewritten SDP, or why it cannot be carried.
MediaResult = bytes | MediaRefused


CallAction = (
    Respond
    | SendRequest
    | StartCallTimer
    | CancelCallTimer
    | Answered
    | Ended
    | AllocateMedia
    | AnswerMedia
    | MediaAnswered
    | ReleaseMedia
    | TransferEnded
)

#: The call timers, their names as the shell sees them.
RING, DURATION, PROBE = "ring", "duration", "probe"


# -- state -------------------------------------------------------------------------


@dataclass(slots=True)
class ForkLeg:
    fork: Fork
    invite: Request
    provisional: bool = False
    done: bool = False
    cancel_when_provisional: bool = False
    authenticated: bool = False


@dataclass(slots=True)
class Relayed:
    """A request relayed from one leg; its answer goes back to ``tx`` on ``side``."""

    side: Side
    tx: TxKey
    request: Request

    @property
    def method(self) -> str:
        return self.request.method


@dataclass(slots=True)
class ProbeSent:
    side: Side


@dataclass(slots=True)
class Ignored:
    """BYE, CANCEL and stray-dialog clean-up: the answer changes nothing."""


Purpose = ForkLeg | Relayed | ProbeSent | Ignored


@dataclass(slots=True)
class Call:
    id: str
    a_tx: TxKey
    a_invite: Request
    a_tag: str
    a_dialog: Dialog
    origin: Origin
    b_call_id: str
    b_tag: str
    started: float
    phase: Phase = Phase.ROUTING
    b_cseq: int = 1
    forks: list[ForkLeg] = field(default_factory=list)
    b_dialog: Dialog | None = None
    b_leg: ForkLeg | None = None
    answered: float | None = None
    failures: list[Response] = field(default_factory=list)
    #: The SDP of the B-leg INVITE (the caller's offer, rewritten by the media relay).
    b_offer: bytes = b""
    #: A limit on this call's duration stricter than the policy's (a fraud rule's).
    max_duration: float | None = None
    #: The side whose re-INVITE/UPDATE is being relayed, if any (§14: one at a time).
    relaying: Side | None = None
    #: Late offer (§13.2.2.4): the ACK towards this side waits for the other side's
    #: ACK, which carries the SDP answer. Value: the CSeq number the ACK must carry.
    deferred_ack: dict[Side, int] = field(default_factory=dict)
    #: Keys of the media requests whose results this call waits for (B2bua.on_media).
    parked: list[int] = field(default_factory=list)

    def dialog(self, side: Side) -> Dialog | None:
        return self.a_dialog if side is Side.A else self.b_dialog

    def set_dialog(self, side: Side, dialog: Dialog) -> None:
        if side is Side.A:
            self.a_dialog = dialog
        else:
            self.b_dialog = dialog

    def target(self, side: Side) -> Target:
        if side is Side.A:
            return self.origin.target
        assert self.b_leg is not None
        return self.b_leg.fork.target

    def local(self, side: Side) -> LocalAddress:
        if side is Side.A:
            return self.origin.local
        assert self.b_leg is not None
        return self.b_leg.fork.local

    def media_peer(self, side: Side, leg: ForkLeg | None = None) -> MediaPeer:
        """The signalling source of ``side`` (of ``leg``, for a B-leg not yet chosen)."""
        if side is Side.A:
            return self.origin.media_peer or MediaPeer(source=self.origin.target.host)
        chosen = leg or self.b_leg
        if chosen is None:
            return MediaPeer(source="")
        return chosen.fork.media_peer or MediaPeer(source=chosen.fork.target.host)


def webrtc_forks(forks: Sequence[Fork]) -> bool:
    """Are all ``forks`` browsers, reached over a WebSocket (RFC 7118)? Then the callee
    leg is offered DTLS-SRTP (docs/webrtc.md). Mixed forks get the SDES offer: one
    relay leg serves them all, and desk phones do not speak DTLS-SRTP."""
    return bool(forks) and all(fork.target.transport in WEBSOCKET_TRANSPORTS for fork in forks)


@dataclass(frozen=True, slots=True, kw_only=True)
class CallPolicy:
    ring_timeout: float = 60.0
    max_duration: float = 14_400.0
    #: Seconds between in-dialog OPTIONS probes of an answered call; 0 turns them off.
    probe_interval: float = 300.0
    #: The warn-agent of Warning headers (RFC 3261 §20.43): our domain.
    warn_agent: str = "voipsec"
    #: ``media.srtp = "optional"``: a fork refusing the SRTP offer is retried once with
    #: RTP/AVP (core/srtpfallback.py).
    srtp_fallback: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class B2buaStatistics:
    active_calls: int
    started: int
    answered: int
    ended: int
    relayed_requests: int
    stray_responses: int
    #: Media requests whose results have not come back yet.
    pending_media: int = 0


# -- pure helpers --------------------------------------------------------------------


def check_invite(invite: Request) -> None:
    """Raise :class:`SipParseError` now for anything of ``invite`` that :meth:`B2bua.start`
    parses: the From tag and Contact of the dialog (RFC 3261 §12.1.1, §8.1.1.8), the
    To/From URIs, the CSeq and Max-Forwards. Header bodies are parsed on first use, so
    the shell calls this before it books the call anywhere (fraud engine, CDR)."""
    uas_dialog(invite, "check")
    invite.int_header("max-forwards")


def crossing_value(value: str) -> str | None:
    """``value`` as it may be copied onto the other leg: every C0 control character but
    HTAB, DEL and every C1 control (ESC, bare CR or LF, NUL, CSI...) replaced by a space,
    or ``None`` when it is longer than :data:`MAX_CROSSING_VALUE`.

    A space keeps a quoted string valid (RFC 3261 §25.1: qdtext and quoted-pair take
    SP but never CR or LF) and words apart; dropping the character could join ``\\``
    to the closing quote. Terminals and log viewers act on ESC and C1 codes."""
    if len(value) > MAX_CROSSING_VALUE:
        return None
    return value.translate(_CONTROLS)


#: C0 (HTAB kept), DEL and C1 to a space; see crossing_value.
_CONTROLS = {c: " " for c in [*range(0x09), *range(0x0A, 0x20), *range(0x7F, 0xA0)]}


def crossing_headers(
    message: Request | Response, allowed: tuple[str, ...]
) -> tuple[tuple[str, str], ...]:
    """The headers of ``message`` allowed onto the other leg, in their order, each value
    through :func:`crossing_value` (one that is too long stays behind)."""
    out: list[tuple[str, str]] = []
    for h in message.headers:
        if h.key in allowed:
            value = crossing_value(h.value)
            if value is not None:
                out.append((h.name, value))
    return tuple(out)


def leg_headers(
    message: Request | Response, allowed: tuple[str, ...]
) -> tuple[tuple[str, str], ...]:
    """The headers a message written on one leg takes from ``message`` of the other
    leg (:func:`crossing_headers`), followed by voipsec's own :data:`LEG_CAPABILITIES`
    where a message says what its sender takes (see :func:`_tells_capabilities`)."""
    crossing = crossing_headers(message, allowed)
    if _tells_capabilities(message):
        return (*LEG_CAPABILITIES, *crossing)
    return crossing


def _tells_capabilities(message: Request | Response) -> bool:
    """Whether the message written from ``message`` carries Allow and Supported: an
    INVITE (RFC 3261 §13.2.1) or UPDATE (RFC 3311 §5.1) and their 1xx/2xx answers
    (§13.3.1.4: the callee's 2xx SHOULD), which set up or refresh a dialog, and a 405,
    which MUST list what is allowed (§8.2.1)."""
    if isinstance(message, Request):
        return message.method in _DIALOG_SETTERS
    if message.status == 405:
        return True
    return message.status < 300 and message.cseq.method in _DIALOG_SETTERS


_DIALOG_SETTERS = frozenset({"INVITE", "UPDATE"})


def reason_of(response: Response) -> str:
    """The reason phrase of ``response`` for the other leg (RFC 3261 §7.2: the phrase is
    for humans only). A 1xx or 2xx gets the standard phrase of its code: it says
    nothing the code does not, and a phone's own ("OK - SecretPhone 9.9") would name
    it to the other phone (issue 16). A failure keeps the phone's phrase when it may
    cross ("Declined by user" tells the caller why), else its class's name."""
    if response.status < 300:
        return _STANDARD_PHRASES.get(response.status, _CLASS_PHRASES[response.status // 100])
    reason = crossing_value(response.reason)
    return reason if reason is not None else _CLASS_PHRASES.get(response.status // 100, "")


#: RFC 3261 §21.1, §21.2; 199 RFC 6228, 202 RFC 6665, 204 RFC 5839.
_STANDARD_PHRASES = {
    100: "Trying",
    180: "Ringing",
    181: "Call Is Being Forwarded",
    182: "Queued",
    183: "Session Progress",
    199: "Early Dialog Terminated",
    200: "OK",
    202: "Accepted",
    204: "No Notification",
}


_CLASS_PHRASES = {
    1: "Provisional",
    2: "Success",
    3: "Redirection",
    4: "Client Error",
    5: "Server Error",
    6: "Global Failure",
}


#: §16.7 step 6 in spirit: which failure the caller hears when every fork failed.
def best_failure(failures: list[Response]) -> Response:
    def rank(r: Response) -> tuple[int, int]:
        s = r.status
        if s >= 600:
            return (0, s)
        if s in (486, 487):
            return (1, s)
        if 400 <= s < 500 and s != 408:
            return (2, s)
        if 500 <= s < 600:
            return (3, s)
        return (4, s)

    return min(failures, key=rank)


#: A callee-side status the caller should not see as such. 503 means "this server is
#: overloaded, try another" to the caller's phone (RFC 3261 §21.5.4, RFC 3263), which
#: is false of voipsec when the callee side failed; 401/407 are the far end's
#: challenges that we could not answer.
_MAPPED: dict[int, tuple[int, str]] = {
    503: (480, "Temporarily Unavailable"),
    401: (403, "Forbidden"),
    407: (403, "Forbidden"),
}


def map_failure(status: int, reason: str) -> tuple[int, str]:
    return _MAPPED.get(status, (status, reason))


def disposition_of(status: int) -> str:
    if status in (486, 600, 603):
        return "busy"
    if status in (408, 480, 487):
        return "no_answer"
    return "failed"


#: What an answered or ended call still reads from its INVITEs: the headers an answer
#: copies (RFC 3261 §8.2.6.2) and a UAS copies into it (Record-Route, §12.1.1), those a
#: CANCEL or a dialog names (§9.1, §12.1.2: Via, Route, From, To, Call-ID, CSeq), and
#: the credentials the ACK of a 2xx repeats (§13.2.2.4, §22.3).
KEPT_HEADERS = frozenset(
    {"via", "from", "to", "call-id", "cseq", "route", "record-route"}
    | {"authorization", "proxy-authorization"}
)


def compact(call: Call) -> None:
    """Free what an answered or ended call no longer reads (issue 15: memory per call).

    A call stays in memory as long as it lasts, and an ended one until its last
    client transaction ends (Timer M, 64*T1 after a 2xx: RFC 6026 §7.2). Neither
    looks for a callee any more, so only :data:`KEPT_HEADERS` of its INVITEs, and no
    failure responses or B-leg offer, are kept: a CANCEL, an ACK or BYE for a late 2xx,
    and an answer to the caller are still built exactly as before.
    """
    call.a_invite = _slim(call.a_invite)
    for leg in call.forks:
        leg.invite = _slim(leg.invite)
    call.failures.clear()
    call.b_offer = b""


def _slim(request: Request) -> Request:
    """``request`` with only :data:`KEPT_HEADERS` and none of its parsed forms cached.

    Never sent as it is: CANCEL, ACK and responses are built anew from it."""
    kept = tuple(h for h in request.headers if h.key in KEPT_HEADERS)
    if len(kept) == len(request.headers):
        return request  # already slim (an ended call that was answered)
    return request.with_headers(Headers(kept))

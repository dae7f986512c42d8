"""Which handler takes a request, or how it is refused (sans-IO).

The SIP shell (``voipsec.server``) parses a request, runs the transaction layer and
asks the IDS and the sanity checks; it hands the facts it gathered to this module
and carries out the one decision it gets back:

- :class:`ToHandler` to a handler (the registrar, the call layer's INVITE, in-dialog,
  CANCEL or ACK entry points),
- :class:`Answer` with a status, reason and extra headers, through the server
  transaction (or statelessly before one exists: the overload answer),
- :class:`Discard` silently, with the counter the drop is booked on.

The order of the checks is the order a request is refused in: overload before the
transaction (:func:`admit`), then the IDS's drop, the sanity checks' drop, the IDS's
reply, the sanity checks' reply, unsupported extensions, the URI scheme, the zone's
method policy, and finally the method itself (:func:`dispatch`).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from ..edge.sanity import SanityFailure

#: The methods we answer, in the order Allow lists them: the one place a method voipsec
#: learns is added (RFC 3261 §8.2.1: a 405 lists them in Allow; so does OPTIONS).
METHODS = ("INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER", "UPDATE", "INFO", "REFER")
ALLOW = ", ".join(METHODS)
#: Methods a call's dialogs take, voipsec's own Allow on each leg of a call (issue 16:
#: never the other phone's). REGISTER is the registrar's, not a dialog's.
#: REFER is a blind transfer (core/transfer.py); NOTIFY is not listed: voipsec sends
#: the NOTIFYs of a transfer but subscribes to nothing, so it takes none.
DIALOG_ALLOW = ", ".join(m for m in METHODS if m != "REGISTER")
#: Option tags we support (RFC 3261 §8.2.2.3); a Require with others gets 420.
SUPPORTED: frozenset[str] = frozenset({"path", "outbound"})
#: Option tags voipsec supports inside a call's dialogs (RFC 3261 §20.37), told to each
#: leg in Supported. path and outbound (RFC 3327, RFC 5626) concern registrations; the
#: B2BUA does no 100rel, timer or replaces, so the list is empty and no Supported goes
#: out (its absence means the same, §8.2.2.3) until the B2BUA learns an extension.
DIALOG_SUPPORTED: tuple[str, ...] = ()
#: Methods some RFC defines that we do not serve: 405, not 501 (RFC 3261 §21.5.6).
KNOWN_METHODS: frozenset[str] = frozenset(
    {
        "INVITE",
        "ACK",
        "BYE",
        "CANCEL",
        "INFO",
        "UPDATE",
        "PRACK",
        "SUBSCRIBE",
        "NOTIFY",
        "MESSAGE",
        "REFER",
        "PUBLISH",
    }
)
#: Methods that only make sense inside a dialog: outside one they get 481. REFER is
#: a transfer of a call in progress (core/transfer.py); one outside a call would make
#: voipsec place a call for whoever asks (RFC 3515 §2.4.2 lets us refuse it).
DIALOG_ONLY: frozenset[str] = frozenset({"BYE", "UPDATE", "INFO", "PRACK", "REFER"})
#: Seconds an overloaded server asks a client to wait (RFC 3261 §21.5.4, §20.33).
OVERLOAD_RETRY_AFTER = 5

Headers = tuple[tuple[str, str], ...]


class Handler(Enum):
    """The shell's entry points a request can be routed to."""

    REGISTRAR = "registrar"
    INVITE = "invite"
    IN_DIALOG = "in_dialog"
    CANCEL = "cancel"
    ACK = "ack"


class DiscardReason(Enum):
    """Why a request is dropped unanswered, and so which counter books it."""

    #: The IDS chose to drop it (the IDS's own statistics count its matches).
    IDS = "ids"
    #: A sanity check failed and ``[sanity] action`` is ``drop`` (the ``dropped`` counter).
    SANITY = "sanity"


@dataclass(frozen=True, slots=True, kw_only=True)
class ToHandler:
    """Hand the request to ``handler``; it answers (or not) on its own."""

    handler: Handler


@dataclass(frozen=True, slots=True, kw_only=True)
class Answer:
    """Answer with ``status`` and ``reason`` and these extra headers.

    ``to_tag``: add a fresh To tag (RFC 3261 §8.2.6.2) — every answer of a server
    transaction does; the stateless overload answer has none.
    """

    status: int
    reason: str
    headers: Headers = ()
    to_tag: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class Discard:
    """Answer nothing: the request is dropped and booked as ``reason``."""

    reason: DiscardReason


Decision = ToHandler | Answer | Discard


@dataclass(frozen=True, slots=True, kw_only=True)
class IdsVerdict:
    """What the IDS decided for one request: status 0 drops it, else answer it."""

    rule: str
    status: int


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestFacts:
    """What the shell knows of one request that opened a server transaction.

    ``in_dialog``: the To header carries a tag (RFC 3261 §12.2.2). ``uri_host``: the
    Request-URI's host in lower case, None when the URI is not a SIP/SIPS URI.
    ``requires``: the Require header's option tags as received. ``zone_methods``: the
    methods the source's zone accepts (empty: all). ``ids`` and ``sanity``: the IDS's
    verdict and the first failed sanity check, None when they have nothing to say.
    """

    method: str
    in_dialog: bool
    uri_host: str | None
    requires: tuple[str, ...] = ()
    zone_methods: frozenset[str] = frozenset()
    zone_may_register: bool = True
    ids: IdsVerdict | None = None
    sanity: SanityFailure | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class DispatchPolicy:
    """The configuration dispatch decides by: the domains we serve (the registrar's),
    and whether a failed sanity check drops the request rather than answering it."""

    domains: frozenset[str]
    sanity_drops: bool = False


def admit(method: str, *, table_full: bool) -> Answer | None:
    """Before a server transaction exists: 503 when the transaction table is full.

    RFC 3261 §21.5.4: the client may retry after Retry-After seconds. An ACK opens no
    transaction of its own, so it is never refused for lack of room.
    """
    if method != "ACK" and table_full:
        return Answer(
            status=503,
            reason="Service Unavailable",
            headers=(("Retry-After", str(OVERLOAD_RETRY_AFTER)),),
            to_tag=False,
        )
    return None


def inspects(method: str) -> bool:
    """Whether the IDS and the sanity checks see a request of ``method``.

    An ACK that reaches dispatch acknowledges a 2xx (RFC 3261 §17.1.1.3: the one to a
    failure is absorbed by its INVITE transaction); it belongs to the call's dialog and
    goes to the call layer as it is.
    """
    return method != "ACK"


def dispatch(facts: RequestFacts, policy: DispatchPolicy) -> Decision:
    """The one decision for a request that opened a server transaction (or an ACK)."""
    if facts.method == "ACK":
        return ToHandler(handler=Handler.ACK)
    screened = _screen(facts, policy)
    if screened is not None:
        return screened
    return _route(facts, policy)


def _screen(facts: RequestFacts, policy: DispatchPolicy) -> Decision | None:
    """The IDS's and the sanity checks' say: a drop wins over any answer."""
    ids, sanity = facts.ids, facts.sanity
    if ids is not None and ids.status == 0:
        return Discard(reason=DiscardReason.IDS)
    if sanity is not None and policy.sanity_drops:
        return Discard(reason=DiscardReason.SANITY)
    if ids is not None:
        # The rule's own status; the reason says what it is, not why (no hint to probes).
        return Answer(status=ids.status, reason="Forbidden")
    if sanity is not None:
        return Answer(status=sanity.status, reason=sanity.reason)
    return None


def unsupported_requires(facts: RequestFacts) -> list[str]:
    """Option tags of Require we do not support (RFC 3261 §8.2.2.3).

    A CANCEL or ACK never gets 420 (RFC 3261 §8.2.2.3: the tags of the request they
    refer to were already checked).
    """
    if facts.method in ("ACK", "CANCEL"):
        return []
    return [tag for tag in facts.requires if tag.lower() not in SUPPORTED]


def _route(facts: RequestFacts, policy: DispatchPolicy) -> Decision:
    unsupported = unsupported_requires(facts)
    if unsupported:
        return Answer(
            status=420, reason="Bad Extension", headers=(("Unsupported", ", ".join(unsupported)),)
        )
    if facts.uri_host is None:
        # RFC 3261 §8.2.2.1: a scheme we do not understand.
        return Answer(status=416, reason="Unsupported URI Scheme")
    method = facts.method
    if (facts.zone_methods and method not in facts.zone_methods) or (
        method == "REGISTER" and not facts.zone_may_register
    ):
        return Answer(status=403, reason="Not Allowed From This Zone")
    if method == "REGISTER":
        if facts.uri_host not in policy.domains:
            # RFC 3261 §10.3 step 1: a registrar serves its own domains only.
            return Answer(status=404, reason="Domain Not Served")
        return ToHandler(handler=Handler.REGISTRAR)
    if method == "CANCEL":
        return ToHandler(handler=Handler.CANCEL)
    if facts.in_dialog and method != "OPTIONS":
        # Inside a dialog: routed by Call-ID and our tag, never by the Request-URI.
        return ToHandler(handler=Handler.IN_DIALOG)
    if method == "INVITE":
        return ToHandler(handler=Handler.INVITE)
    return _answer_method(method)


#: Out-of-dialog methods we answer ourselves: the answers are immutable, built once.
#: RFC 3261 §11.2: OPTIONS says what we allow, accept and support.
_OPTIONS = Answer(
    status=200,
    reason="OK",
    headers=(
        ("Allow", ALLOW),
        ("Accept", "application/sdp"),
        ("Supported", ", ".join(sorted(SUPPORTED))),
    ),
)
#: RFC 3261 §15.1.2, §12.2.2: no dialog matches.
_NO_DIALOG = Answer(status=481, reason="Call/Transaction Does Not Exist")
#: RFC 3261 §8.2.1: a method we know but do not serve; Allow says what we do.
_NOT_ALLOWED = Answer(status=405, reason="Method Not Allowed", headers=(("Allow", ALLOW),))
#: RFC 3261 §21.5.2: a method we do not know at all.
_NOT_IMPLEMENTED = Answer(status=501, reason="Not Implemented", headers=(("Allow", ALLOW),))


def _answer_method(method: str) -> Answer:
    """Out-of-dialog methods we answer ourselves."""
    if method == "OPTIONS":
        return _OPTIONS
    if method in DIALOG_ONLY:
        return _NO_DIALOG
    if method in KNOWN_METHODS:
        return _NOT_ALLOWED
    return _NOT_IMPLEMENTED

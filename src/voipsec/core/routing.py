"""Who places a call and where it goes: a :class:`Route` or a :class:`Refusal` (sans-IO).

How this works: the shell (``voipsec.calls``) authenticates the INVITE, then hands
this module plain data: the request, the authenticated user or the trunk its source
belongs to, the caller's class of service, and lookups for what only the shell can
read (the user table, the registrar's bindings, open connections, zones). This module
decides, in the order DESIGN.md gives ("How a request flows"):

1. caller identity: a trunk's call by its source address, never by From; a user's
   From and P-Asserted-Identity must name the authenticated user (RFC 3325 §5, §9.1);
2. an emergency number (core/emergency.py): to its trunk, whatever the caller's class
   of service or device restriction; else the dial plan: a local user, or an E.164
   number with its kind and trunk (core/dialplan.py), refused when the caller's device
   is restricted by the endpoint policy (issue 18 ``restrict``: internal calls only,
   :func:`~voipsec.core.emergency.restricted_allows`) or by its class of service;
3. the forks: one per registered contact still reachable (RFC 3261 §16.6, RFC 5626),
   or the trunk's TLS address.

Every refusal carries its status, reason phrase and Warning text (RFC 3261 §20.43);
the shell writes the call's CDR row and answers it with :func:`refusal_response`.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field

from ..config import ClassOfService, Config, TrunkSection
from ..media.destinations import MediaPeer
from ..netaddr import canonical_ip
from ..records import Binding
from ..sip.dialog import new_tag
from ..sip.errors import SipParseError
from ..sip.headers import split_list
from ..sip.message import Request, Response, response_to
from ..sip.uac import LocalAddress
from ..sip.uri import SipUri, parse_name_addr, parse_uri
from .b2bua import Fork, Target
from .dialplan import EMERGENCY, CallKind, Destination, Dialplan, DialplanError, refusal_reason
from .emergency import EmergencyNumbers, restricted_allows

#: A trunk's source network, as configured.
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
#: RFC 3325 §9.1: at most two P-Asserted-Identity values (one sip/sips, one tel); a
#: request with more is refused whatever they say.
MAX_ASSERTED_IDENTITIES = 2
#: Characters a caller ID from a trunk may keep; anything else makes it "anonymous"
#: (at most 32: longer than any E.164 number, RFC 3966 global numbers included).
_CALLER_ID = re.compile(r"\+?[0-9A-Za-z._-]{1,32}")
#: Longest reason phrase we send (our words, never the peer's).
MAX_PHRASE = 96
#: Longest Warning text we send: a device restriction names the policy's reason (a
#: CVE and the firmware to upgrade to, about 70 characters) within its sentence.
MAX_WARNING_TEXT = 200
#: The Warning of a call refused because the caller's device is restricted.
RESTRICTED_PREFIX = "device restricted by the endpoint policy: "
RESTRICTED_SUFFIX = "; only internal and emergency calls"


@dataclass(frozen=True, slots=True, kw_only=True)
class Caller:
    """Who places a call: an authenticated user, or a trunk identified by source."""

    user: str | None
    trunk: TrunkSection | None
    #: The caller as the callee sees it (``sip:alice@domain``, ``sip:+4420…@domain``).
    uri: str
    #: Why the endpoint policy restricts the device placing the call (issue 18
    #: ``restrict``, the shell's lookup of the device's last REGISTER); None: it does not.
    restricted: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Refusal:
    """A call refused before it reaches the B2BUA (its CDR row is opened and closed)."""

    status: int
    reason: str
    #: The callee as far as it is known (the CDR's ``callee``), "" before the dial plan.
    callee: str = ""
    #: The Warning text; None: the reason itself on a 403, no Warning otherwise.
    warning: str | None = None
    #: The CDR disposition ("no_answer" for a callee with no reachable contact).
    disposition: str = "rejected"
    #: For the log only (it may name the caller's claims), never sent.
    detail: str = ""
    #: The destination's kind when the dial plan got that far (the CDR's ``kind``);
    #: "emergency" for an emergency call that could not be routed.
    kind: CallKind | None = None

    @property
    def warning_text(self) -> str | None:
        """The Warning to send: RFC 3261 §20.43 explains a refusal in words; a 403
        always says why (a class of service, a fraud rule, a forged identity)."""
        if self.warning is None and self.status == 403:
            return self.reason
        return self.warning


@dataclass(frozen=True, slots=True, kw_only=True)
class Route:
    """Where a call goes: the B2BUA forks it to ``forks`` (RFC 3261 §16.6)."""

    #: The callee (a user, or the E.164 number sent to a trunk), for the CDR.
    callee: str
    #: The trunk the call leaves or arrives through, None for a call between users.
    trunk: str | None
    forks: tuple[Fork, ...]
    #: The dial plan's answer for a user's call (the fraud engine checks it); None
    #: for a call from a trunk.
    destination: Destination | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class RoutingPolicy:
    """What routing reads from the configuration."""

    domain: str
    #: Our domain, its aliases and listener addresses, lower case.
    domains: frozenset[str]
    trunks: Mapping[str, TrunkSection]
    trunk_sources: tuple[tuple[IPNetwork, TrunkSection], ...]
    #: Zones whose phones' SDP may name any address of the zone (media_in_zone).
    media_zones: Mapping[str, tuple[str, ...]]
    #: Our address on connections we open to trunks (the first TLS listener).
    tls_local: LocalAddress
    default_class: ClassOfService
    #: Numbers that reach a trunk whatever the caller's class (core/emergency.py).
    emergency: EmergencyNumbers = field(default_factory=EmergencyNumbers)

    @classmethod
    def from_config(cls, config: Config, domains: frozenset[str]) -> RoutingPolicy:
        return cls(
            domain=config.sip.domain,
            domains=domains,
            trunks={t.name: t for t in config.trunks},
            trunk_sources=tuple(
                (ipaddress.ip_network(c, strict=False), t) for t in config.trunks for c in t.sources
            ),
            media_zones={z.name: tuple(z.cidrs) for z in config.zones if z.media_in_zone},
            tls_local=_tls_local(config),
            default_class=config.dialplan.default_class,
            emergency=EmergencyNumbers.from_config(config),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Lookups:
    """What routing asks the shell while it decides (no I/O here: the shell answers
    from its tables; a test from plain dictionaries)."""

    #: Is this name a local user? (The shell may re-read its user table on a miss.)
    is_user: Callable[[str], bool]
    #: The live bindings of a user's address of record (the registrar).
    bindings: Callable[[str], Sequence[Binding]]
    #: Our (host, port) on the open connection to a target; None when there is none.
    local_of: Callable[[Target], tuple[str, int] | None]
    #: The zone name of a source address (edge/zones.py).
    zone_of: Callable[[str], str]
    #: A user's stored class of service, None when there is none. Asked after the
    #: dial plan, so a user table re-read for the callee also holds a changed class.
    stored_class: Callable[[str], str | None]


# -- caller identity ------------------------------------------------------------------


def trunk_for(
    sources: Sequence[tuple[IPNetwork, TrunkSection]], address: str
) -> TrunkSection | None:
    """The first trunk whose source networks hold ``address``; an IPv4-mapped IPv6
    source (``::ffff:192.0.2.7``, a dual-stack listener's view of an IPv4 peer) is
    matched as its IPv4 address (RFC 4291 §2.5.5.2)."""
    if not sources:
        return None
    ip = ipaddress.ip_address(canonical_ip(address))
    for network, trunk in sources:
        if ip in network:
            return trunk
    return None


def trunk_caller(request: Request, trunk: TrunkSection, domain: str) -> Caller:
    """A call from a trunk is identified by its source, never by From (RFC 3325 §4: a
    carrier is not in our trust domain). The caller's number is kept (caller ID); the
    carrier's host is not."""
    return Caller(user=None, trunk=trunk, uri=f"sip:{caller_number(request)}@{domain}")


def user_caller(user: str, domain: str) -> Caller:
    """A call from an authenticated user is placed as that user, whatever From says."""
    return Caller(user=user, trunk=None, uri=f"sip:{user}@{domain}")


def caller_number(request: Request) -> str:
    """The user part of a trunk call's From, if it is a plausible caller ID."""
    uri = request.from_.uri
    user = uri.user if isinstance(uri, SipUri) else None
    if user is None or not _CALLER_ID.fullmatch(user):
        return "anonymous"
    return user


def identity_mismatch(request: Request, user: str, domains: Collection[str]) -> str | None:
    """The first identity ``request`` claims that is not ``user`` at one of ``domains``
    (lower case), ``None`` when every claim names ``user`` (RFC 3325 §5).

    The claims are the From URI and every P-Asserted-Identity value, on one line or
    several (RFC 3325 §9.1); more than :data:`MAX_ASSERTED_IDENTITIES` of them is a
    mismatch in itself. A tel URI never names a user here.
    """
    claimed: list[str] = [str(request.from_.uri)]
    asserted = [
        value for line in request.headers.lines("p-asserted-identity") for value in split_list(line)
    ]
    if len(asserted) > MAX_ASSERTED_IDENTITIES:
        return f"{len(asserted)} P-Asserted-Identity values"
    for pai in asserted:
        try:
            claimed.append(str(parse_name_addr(pai).uri))
        except SipParseError:
            return pai[:128]
    for text in claimed:
        try:
            uri = parse_uri(text)
        except SipParseError:
            return text[:128]
        if not (isinstance(uri, SipUri) and uri.user == user and uri.host.lower() in domains):
            return text[:128]
    return None


def identity_refusal(request: Request, user: str, domains: Collection[str]) -> Refusal | None:
    """403 when the INVITE claims to be from anyone but the authenticated ``user``:
    a user may not place calls as another (RFC 3325 §5; RFC 3261 §22.1 leaves it to
    the proxy to refuse)."""
    claimed = identity_mismatch(request, user, domains)
    if claimed is None:
        return None
    return Refusal(
        status=403,
        reason="Caller Identity Does Not Match",
        detail=f"authenticated as {user!r}, claims {claimed}",
    )


def class_of(stored: str | None, default: ClassOfService) -> ClassOfService:
    """A user's class of service: the one stored for the user, else the dial plan's
    default (a user added while we serve has none in our table yet)."""
    if stored is None:
        return default
    return stored  # type: ignore[return-value]  # the CLI stores only valid classes


# -- routes ---------------------------------------------------------------------------


def route(
    caller: Caller,
    dialled: str,
    *,
    policy: RoutingPolicy,
    dialplan: Dialplan,
    lookups: Lookups,
) -> Route | Refusal:
    """Where the call of ``caller`` to the user part ``dialled`` goes."""
    if caller.trunk is not None:
        return _from_trunk(caller.trunk, dialled, policy, dialplan, lookups)
    return _from_user(caller, dialled, policy, dialplan, lookups)


def _from_user(
    caller: Caller,
    dialled: str,
    policy: RoutingPolicy,
    dialplan: Dialplan,
    lookups: Lookups,
) -> Route | Refusal:
    number = policy.emergency.match(dialled)
    if number is not None:
        # Before the dial plan and any class of service: the dial plan would make 112
        # a national number, and a local user named "112" must not take the call.
        return emergency_route(caller, dialled, number, policy, dialplan)
    try:
        destination = dialplan.classify(dialled, is_user=lookups.is_user)
    except DialplanError as err:
        return Refusal(status=err.status, reason=err.reason, warning=err.detail)
    if caller.restricted is not None and not restricted_allows(destination.kind):
        return restricted_refusal(caller, destination)
    user_class = class_of(lookups.stored_class(caller.user or ""), policy.default_class)
    reason = refusal_reason(user_class, destination)
    if reason is not None:
        return Refusal(
            status=403,
            reason=reason,
            callee=callee_of(destination),
            detail=f"{caller.user} -> {dialled}: {reason}",
            kind=destination.kind,
        )
    if destination.user is not None:
        forks = user_forks(destination.user, policy, lookups)
        if not forks:
            return _unavailable(destination.user)
        return Route(callee=destination.user, trunk=None, forks=forks, destination=destination)
    trunk = policy.trunks.get(destination.trunk or "")
    if trunk is None or destination.e164 is None:
        return Refusal(status=404, reason="No Route", callee=callee_of(destination))
    fork = trunk_fork(trunk, destination.e164, policy)
    return Route(callee=destination.e164, trunk=trunk.name, forks=(fork,), destination=destination)


def restricted_refusal(caller: Caller, destination: Destination) -> Refusal:
    """403 for a restricted device's call to anything but an internal user (the
    emergency numbers are routed before this is asked): the Warning says why the device
    is restricted and what it may still call (RFC 3261 §20.43)."""
    reason = caller.restricted or ""
    room = MAX_WARNING_TEXT - len(RESTRICTED_PREFIX) - len(RESTRICTED_SUFFIX)
    return Refusal(
        status=403,
        reason="Device Restricted",
        callee=callee_of(destination),
        warning=f"{RESTRICTED_PREFIX}{reason[:room]}{RESTRICTED_SUFFIX}",
        detail=f"{caller.user} -> {destination.dialled}: device restricted ({reason})",
        kind=destination.kind,
    )


def emergency_route(
    caller: Caller, dialled: str, number: str, policy: RoutingPolicy, dialplan: Dialplan
) -> Route | Refusal:
    """An emergency call of an authenticated user: to ``calls.emergency_trunk``, else
    the trunk of ``+<country code><number>``; the Request-URI carries the number as
    dialled (``sip:112@trunk``), which is what carriers expect of a short code. With no
    such trunk: 503 (RFC 3261 §21.5.4, the service cannot be had here now), and
    ``kind`` "emergency" tells the shell to log it CRITICAL and alert."""
    name = policy.emergency.trunk or dialplan.national_route(number)
    trunk = policy.trunks.get(name or "")
    destination = Destination(dialled=dialled, e164=None, kind=EMERGENCY, user=None, trunk=name)
    if trunk is None:
        return Refusal(
            status=503,
            reason="Emergency Call Not Routable",
            callee=number,
            disposition="failed",
            detail=f"{caller.user} -> emergency {number}: no trunk routes it",
            kind=EMERGENCY,
        )
    fork = trunk_fork(trunk, number, policy)
    return Route(callee=number, trunk=trunk.name, forks=(fork,), destination=destination)


def _from_trunk(
    trunk: TrunkSection,
    dialled: str,
    policy: RoutingPolicy,
    dialplan: Dialplan,
    lookups: Lookups,
) -> Route | Refusal:
    """A call from a trunk goes to the user its DID belongs to, nowhere else: a
    carrier never reaches another trunk through us (no toll fraud by relay)."""
    try:
        user = dialplan.inbound_user(dialled)
    except DialplanError as err:
        return Refusal(status=err.status, reason=err.reason)
    if user is None:
        return Refusal(status=404, reason="Unknown DID")
    forks = user_forks(user, policy, lookups)
    if not forks:
        return _unavailable(user)
    return Route(callee=user, trunk=trunk.name, forks=forks)


def _unavailable(user: str) -> Refusal:
    # RFC 3261 §21.4.18: the callee exists but cannot be reached now.
    return Refusal(
        status=480, reason="Temporarily Unavailable", callee=user, disposition="no_answer"
    )


def user_forks(user: str, policy: RoutingPolicy, lookups: Lookups) -> tuple[Fork, ...]:
    """One fork per registered contact, reached on its registration connection
    (RFC 3261 §16.6 forking; RFC 5626: a phone behind NAT is reachable only on the
    flow it registered over, so a contact whose connection is gone is skipped)."""
    forks = []
    for binding in lookups.bindings(f"{user}@{policy.domain}"):
        transport, _, rest = binding.source.partition(":")
        host, _, port = rest.rpartition(":")
        target = Target(transport=transport, host=host, port=int(port))
        local = lookups.local_of(target)
        if local is None:
            continue
        forks.append(
            Fork(
                request_uri=binding.contact,  # the registrar stores the bare URI, params and all
                to_uri=f"sip:{user}@{policy.domain}",
                target=target,
                local=LocalAddress(transport=transport, host=local[0], port=local[1]),
                media_peer=media_peer(host, policy, lookups.zone_of(host)),
            )
        )
    return tuple(forks)


def trunk_fork(trunk: TrunkSection, e164: str, policy: RoutingPolicy) -> Fork:
    """The one fork of an outgoing trunk call: TLS to the trunk, its digest credentials
    for the carrier's 401/407 (RFC 3261 §22.2)."""
    address = trunk.listen()
    uri = f"sip:{e164}@{trunk.domain}"
    credentials = (trunk.username, trunk.password) if trunk.username else None
    return Fork(
        request_uri=uri,
        to_uri=uri,
        target=Target(transport="tls", host=address.host, port=address.port, trunk=trunk.name),
        local=policy.tls_local,
        credentials=credentials,
        media_peer=media_peer(address.host, policy, "", trunk),
    )


def media_peer(
    source: str, policy: RoutingPolicy, zone: str, trunk: TrunkSection | None = None
) -> MediaPeer:
    """A leg's signalling source, and the networks its SDP may name besides it:
    a trunk's sources, or the phone's zone when it sets media_in_zone."""
    if trunk is not None:
        return MediaPeer(source=source, networks=tuple(trunk.sources))
    return MediaPeer(source=source, networks=tuple(policy.media_zones.get(zone, ())))


def callee_of(destination: Destination) -> str:
    """The callee a CDR names: the user, else the E.164 number, else what was dialled."""
    return destination.user or destination.e164 or destination.dialled


# -- answering a refusal -----------------------------------------------------------


def phrase(text: str, limit: int = MAX_PHRASE) -> str:
    """A reason phrase or Warning text: our words, kept to printable characters on
    one line (RFC 3261 §25.1 Reason-Phrase), at most ``limit`` of them."""
    return "".join(c for c in text if c.isprintable() and c not in "\r\n")[:limit]


def refusal_response(request: Request, refusal: Refusal, domain: str) -> Response:
    """The final response refusing ``request``, with the Warning when there is one:
    RFC 3261 §20.43 code 399 (miscellaneous), our domain as the agent, the reason in
    words with no address in it."""
    extra: tuple[tuple[str, str], ...] = ()
    warning = refusal.warning_text
    if warning is not None:
        text = phrase(warning, MAX_WARNING_TEXT).replace('"', "'")
        extra = (("Warning", f'399 {domain} "{text}"'),)
    return response_to(
        request, refusal.status, phrase(refusal.reason), to_tag=new_tag(), extra=extra
    )


def _tls_local(config: Config) -> LocalAddress:
    for listen in config.sip.listeners():
        if listen.transport == "tls":
            return LocalAddress(transport="tls", host=listen.host, port=listen.port)
    first = config.sip.listeners()[0]
    return LocalAddress(transport=first.transport, host=first.host, port=first.port)


__all__ = [
    "MAX_ASSERTED_IDENTITIES",
    "MAX_PHRASE",
    "MAX_WARNING_TEXT",
    "Caller",
    "IPNetwork",
    "Lookups",
    "Refusal",
    "Route",
    "RoutingPolicy",
    "caller_number",
    "class_of",
    "emergency_route",
    "identity_mismatch",
    "identity_refusal",
    "media_peer",
    "refusal_response",
    "restricted_refusal",
    "route",
    "trunk_caller",
    "trunk_for",
    "user_caller",
]

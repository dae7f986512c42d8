"""The TURN peer-filter check's decisions: what the probe asks, how answers read, the verdict.

How this works: a TURN server that grants a client a permission for an internal address
(loopback, RFC 1918, CGNAT, link-local, the cloud metadata service 169.254.169.254, an
IPv4-mapped IPv6 form of loopback...) lets anyone with credentials reach that network
through its relay (RFC 8656 §21; coturn CVE-2020-26262). The probe allocates a relay
(RFC 8656 §7) with long-term credentials (RFC 8489 §9.2: the 401 answer carries REALM
and NONCE, the request is sent again with USERNAME, REALM, NONCE and
MESSAGE-INTEGRITY), asks one CreatePermission (RFC 8656 §9) per peer of
:data:`PROBED_PEERS` and reads each answer: a success is a granted peer, 403 a refusal.
It never sends data to a peer (no Send indication, no ChannelBind, no ChannelData) and
ends with a Refresh of lifetime 0 (RFC 8656 §7.3).

IPv6 peers need an IPv6 allocation (REQUESTED-ADDRESS-FAMILY, RFC 8656 §7.1). When the
server has none (440), they are asked on the IPv4 allocation, where a 403 is still the
server's refusal but a 443 (peer address family mismatch) proves nothing: such peers
are reported as not testable, never as refused. The same holds the other way round.

Sans-IO: bytes and values in, bytes and results out; turnprobe.py does the sending.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum

from ..nat import peerfilter
from ..nat.credentials import long_term_key
from ..nat.stun import (
    FAMILY_IPV4,
    FAMILY_IPV6,
    REASONS,
    Attr,
    Message,
    MessageClass,
    encode,
    encode_requested_family,
    encode_requested_transport,
    encode_uint32,
    encode_xor_address,
    verify_integrity,
)
from .model import CheckResult, errored, failed, passed
from .specs import TURN_PEER_FILTER

__all__ = [
    "EMBEDDING_PREFIXES",
    "FAMILY_NAMES",
    "PEER_PORT",
    "PROBED_PEERS",
    "SPEC",
    "LongTerm",
    "PeerAnswer",
    "PeerVerdict",
    "ProbePeer",
    "TurnAnswer",
    "TurnAnswerKind",
    "allocate_attributes",
    "allocation_for",
    "build_request",
    "coturn_fix",
    "internal_reasons",
    "judge",
    "own_fix",
    "peer_family",
    "permission_attributes",
    "permission_verdict",
    "read_answer",
    "refresh_attributes",
    "retry_credentials",
]

#: The check this module decides (one spec per id: audit/specs.py).
SPEC = TURN_PEER_FILTER


@dataclass(frozen=True, slots=True)
class ProbePeer:
    """An internal address the probe asks a permission for, and what it is."""

    address: str
    why: str


#: The peers asked, one CreatePermission each, in this order (IPv4 first).
PROBED_PEERS: tuple[ProbePeer, ...] = (
    ProbePeer("127.0.0.1", "loopback"),
    ProbePeer("10.0.0.1", "private (RFC 1918)"),
    ProbePeer("172.16.0.1", "private (RFC 1918)"),
    ProbePeer("192.168.0.1", "private (RFC 1918)"),
    ProbePeer("169.254.169.254", "cloud metadata (link-local)"),
    ProbePeer("100.64.0.1", "CGNAT (RFC 6598)"),
    ProbePeer("0.0.0.0", "this host (CVE-2020-26262)"),  # noqa: S104 - a peer, not a bind
    ProbePeer("255.255.255.255", "limited broadcast"),
    ProbePeer("::1", "IPv6 loopback"),
    ProbePeer("::ffff:127.0.0.1", "IPv4-mapped loopback"),
    ProbePeer("::ffff:0:7f00:1", "SIIT IPv4-translated loopback (RFC 2765)"),
    ProbePeer("::7f00:1", "IPv4-compatible loopback (RFC 4291)"),
    ProbePeer("64:ff9b::7f00:1", "NAT64 loopback (RFC 6052)"),
    ProbePeer("2002:7f00:1::", "6to4 loopback (RFC 3056)"),
    ProbePeer("fe80::1", "IPv6 link-local"),
    ProbePeer("fc00::1", "IPv6 unique local (RFC 4193)"),
)

#: The port in XOR-PEER-ADDRESS. Permissions are per IP address; the port is ignored
#: (RFC 8656 §9), and nothing is ever sent to it (9 is discard, RFC 863).
PEER_PORT = 9

FAMILY_NAMES = {FAMILY_IPV4: "IPv4", FAMILY_IPV6: "IPv6"}


def peer_family(address: str) -> int:
    """FAMILY_IPV4 or FAMILY_IPV6 of a peer address (IPv4-mapped forms are IPv6)."""
    return FAMILY_IPV4 if ipaddress.ip_address(address).version == 4 else FAMILY_IPV6


def allocation_for(address: str, allocated: Sequence[int]) -> int | None:
    """The allocation family to ask for ``address`` on: its own, else the other one."""
    own = peer_family(address)
    if own in allocated:
        return own
    return allocated[0] if allocated else None


# -- requests -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class LongTerm:
    """Long-term credentials (RFC 8489 §9.2) and the server's REALM and NONCE once known."""

    username: str
    password: str = field(repr=False)
    realm: str = ""
    nonce: str = ""

    @property
    def challenged(self) -> bool:
        """REALM and NONCE known: requests carry the credentials."""
        return bool(self.realm and self.nonce)

    def key(self) -> bytes:
        """MD5(username:realm:password), the default key (RFC 8489 §9.2.2)."""
        return long_term_key(self.username, self.realm, self.password)


def allocate_attributes(family: int) -> tuple[tuple[int, bytes], ...]:
    """Allocate: a UDP relay (RFC 8656 §7.1), of ``family`` when it is IPv6."""
    attributes: list[tuple[int, bytes]] = [(Attr.REQUESTED_TRANSPORT, encode_requested_transport())]
    if family != FAMILY_IPV4:
        attributes.append((Attr.REQUESTED_ADDRESS_FAMILY, encode_requested_family(family)))
    return tuple(attributes)


def permission_attributes(peer: str, transaction_id: bytes) -> tuple[tuple[int, bytes], ...]:
    """CreatePermission for one peer (RFC 8656 §9.1): one XOR-PEER-ADDRESS."""
    return ((Attr.XOR_PEER_ADDRESS, encode_xor_address((peer, PEER_PORT), transaction_id)),)


def refresh_attributes() -> tuple[tuple[int, bytes], ...]:
    """Refresh with LIFETIME 0: the allocation is deleted (RFC 8656 §7.3)."""
    return ((Attr.LIFETIME, encode_uint32(0)),)


def build_request(
    method: int,
    transaction_id: bytes,
    attributes: Sequence[tuple[int, bytes]],
    credentials: LongTerm,
) -> bytes:
    """A request, with USERNAME, REALM, NONCE and MESSAGE-INTEGRITY once challenged
    (RFC 8489 §9.2.3), and a FINGERPRINT."""
    attrs = list(attributes)
    key = None
    if credentials.challenged:
        attrs += [
            (Attr.USERNAME, credentials.username.encode()),
            (Attr.REALM, credentials.realm.encode()),
            (Attr.NONCE, credentials.nonce.encode()),
        ]
        key = credentials.key()
    message = Message(
        method=method,
        cls=MessageClass.REQUEST,
        transaction_id=transaction_id,
        attributes=tuple(attrs),
    )
    return encode(message, key=key, fingerprint=True)


# -- answers ------------------------------------------------------------------------------


class TurnAnswerKind(StrEnum):
    SUCCESS = "success"
    ERROR = "error"
    #: A success response whose MESSAGE-INTEGRITY does not check: not the server's.
    FORGED = "forged"


@dataclass(frozen=True, slots=True, kw_only=True)
class TurnAnswer:
    """What a response says: success, or an error with its code, REALM and NONCE."""

    kind: TurnAnswerKind
    code: int = 0
    realm: str = ""
    nonce: str = ""

    def describe(self) -> str:
        """``403 Forbidden`` (the code's standard name, never the server's own text)."""
        if self.kind is TurnAnswerKind.SUCCESS:
            return "success"
        if self.kind is TurnAnswerKind.FORGED:
            return "a success without valid MESSAGE-INTEGRITY"
        return f"{self.code} {REASONS.get(self.code, 'Error')}".strip()


def read_answer(message: Message, credentials: LongTerm) -> TurnAnswer:
    """Read a response to a request sent with ``credentials``.

    A success must carry a MESSAGE-INTEGRITY that checks with the key (RFC 8489
    §9.2.5); an error's REALM and NONCE are kept for the next attempt. Raises
    StunParseError on a malformed attribute.
    """
    if message.cls == MessageClass.SUCCESS:
        if credentials.challenged and not verify_integrity(message, credentials.key()):
            return TurnAnswer(kind=TurnAnswerKind.FORGED)
        return TurnAnswer(kind=TurnAnswerKind.SUCCESS)
    error = message.error_code()
    return TurnAnswer(
        kind=TurnAnswerKind.ERROR,
        code=error[0] if error is not None else 0,
        realm=message.text(Attr.REALM) or "",
        nonce=message.text(Attr.NONCE) or "",
    )


def retry_credentials(answer: TurnAnswer, credentials: LongTerm) -> LongTerm | None:
    """The credentials to send the request again with, or None when it is answered.

    RFC 8489 §9.2.5: a 401 to a request without credentials brings REALM and NONCE;
    a 438 (stale nonce) a new NONCE. A 401 to a request that had credentials is final
    (they are wrong).
    """
    if answer.kind is not TurnAnswerKind.ERROR or not answer.nonce:
        return None
    if answer.code == 401 and not credentials.challenged and answer.realm:
        return replace(credentials, realm=answer.realm, nonce=answer.nonce)
    if answer.code == 438 and credentials.challenged:
        return replace(credentials, realm=answer.realm or credentials.realm, nonce=answer.nonce)
    return None


class PeerVerdict(StrEnum):
    GRANTED = "granted"
    REFUSED = "refused"
    #: Asked on the allocation of the other family and answered 440/443: says nothing.
    UNTESTED = "not testable"
    #: No answer, a forged success or another error: the filter was not seen at work.
    UNEXPECTED = "unexpected answer"


@dataclass(frozen=True, slots=True, kw_only=True)
class PeerAnswer:
    """One peer's outcome; ``detail`` says why it could not be tested."""

    peer: str
    verdict: PeerVerdict
    detail: str = ""


#: Errors that only say the peer's family is not the allocation's (RFC 8656 §9.2, §7.2):
#: expected when a peer is asked on the allocation of the other family.
_FAMILY_MISMATCH = frozenset({440, 443})


def permission_verdict(peer: str, answer: TurnAnswer | None, *, note: str = "") -> PeerAnswer:
    """A CreatePermission answer read: success granted, 403 refused (RFC 8656 §9.2).

    ``note`` (non-empty) says the peer was asked on the allocation of the other family:
    there a 440/443 family mismatch leaves it not testable. Anything else — no answer,
    a success whose MESSAGE-INTEGRITY does not check, another error (400, 508...) — is
    unexpected: the filter was not seen refusing that peer.
    """
    if answer is None:
        return PeerAnswer(peer=peer, verdict=PeerVerdict.UNEXPECTED, detail="no answer")
    if answer.kind is TurnAnswerKind.SUCCESS:
        return PeerAnswer(peer=peer, verdict=PeerVerdict.GRANTED)
    if answer.kind is TurnAnswerKind.ERROR and answer.code == 403:
        return PeerAnswer(peer=peer, verdict=PeerVerdict.REFUSED)
    detail = f"{note}{answer.describe()}"
    if note and answer.kind is TurnAnswerKind.ERROR and answer.code in _FAMILY_MISMATCH:
        return PeerAnswer(peer=peer, verdict=PeerVerdict.UNTESTED, detail=detail)
    return PeerAnswer(peer=peer, verdict=PeerVerdict.UNEXPECTED, detail=detail)


# -- the verdict --------------------------------------------------------------------------


def _observed(answers: Sequence[PeerAnswer]) -> str:
    granted = [a.peer for a in answers if a.verdict is PeerVerdict.GRANTED]
    refused = [a.peer for a in answers if a.verdict is PeerVerdict.REFUSED]
    parts = []
    if granted:
        parts.append("granted: " + ", ".join(granted))
    if refused:
        parts.append("refused: " + ", ".join(refused))
    details: dict[tuple[PeerVerdict, str], list[str]] = {}
    for a in answers:
        if a.verdict in (PeerVerdict.UNTESTED, PeerVerdict.UNEXPECTED):
            details.setdefault((a.verdict, a.detail), []).append(a.peer)
    for (verdict, detail), peers in details.items():
        parts.append(f"{verdict.value} ({detail}): " + ", ".join(peers))
    return "; ".join(parts)


#: IPv6 prefixes that embed an IPv4 address, as nat/peerfilter.normalise reads them: an
#: allowed_peers entry overlapping one exempts the IPv4 peers it embeds.
EMBEDDING_PREFIXES: tuple[tuple[ipaddress.IPv6Network, str], ...] = tuple(
    (ipaddress.IPv6Network(cidr), why)
    for cidr, why in (
        ("::ffff:0:0/96", "IPv4-mapped (RFC 4291)"),
        ("::ffff:0:0:0/96", "SIIT IPv4-translated (RFC 2765)"),
        ("::/96", "IPv4-compatible (RFC 4291)"),
        ("64:ff9b::/96", "NAT64 (RFC 6052)"),
        ("2002::/16", "6to4 (RFC 3056)"),
    )
)
_DENIED = tuple(
    (ipaddress.ip_network(cidr), why)
    for cidr, why in (*peerfilter.DENIED_IPV4, *peerfilter.DENIED_IPV6)
)


def _v4(address: ipaddress.IPv6Address) -> int:
    """The IPv4 address (as an int) ``address`` stands for after normalisation (:: and
    ::1, which stand for themselves, as 0.0.0.0 and 0.0.0.1: internal either way)."""
    return int(peerfilter.normalise(address)) & 0xFFFFFFFF


def internal_reasons(cidr: str) -> list[str]:
    """Why an allowed_peers entry ``cidr`` lets the relay reach internal peers: each
    denied special-purpose range it overlaps (RFC 6890), and each IPv4-embedding prefix
    through which it covers a denied IPv4 range (the embedded addresses of one prefix
    are contiguous: both ends of the overlap, normalised, bound them). Empty: none."""
    net = ipaddress.ip_network(cidr, strict=False)
    hits = [
        why for denied, why in _DENIED if denied.version == net.version and net.overlaps(denied)
    ]
    if isinstance(net, ipaddress.IPv6Network):
        for prefix, why in EMBEDDING_PREFIXES:
            if not net.overlaps(prefix):
                continue
            first = max(int(net.network_address), int(prefix.network_address))
            last = min(int(net.broadcast_address), int(prefix.broadcast_address))
            lo = _v4(ipaddress.IPv6Address(first))
            hi = _v4(ipaddress.IPv6Address(last))
            if any(
                denied.version == 4
                and lo <= int(denied.broadcast_address)
                and int(denied.network_address) <= hi
                for denied, _ in _DENIED
            ):
                hits.append(why)
    return hits


def own_fix(allowed: Sequence[str]) -> str:
    """The ``voipsec config set`` line that keeps turn.allowed_peers without the
    entries that open internal ranges (RFC 6890 special-purpose addresses)."""
    kept = [cidr for cidr in allowed if not internal_reasons(cidr)]
    if len(kept) == len(allowed):
        # No entry explains it: the running server's configuration is not this file's.
        return "restart voipsec serve: voipsec.toml's turn.allowed_peers opens no internal range"
    return f"voipsec config set turn.allowed_peers '{json.dumps(kept)}'"


def _denied_range(address: str) -> str:
    """The special-purpose range ``address`` is in, as coturn's ``FIRST-LAST``."""
    raw = ipaddress.ip_address(address)
    checked = peerfilter.normalise(raw)
    if isinstance(raw, ipaddress.IPv6Address) and raw.ipv4_mapped is not None:
        return "::ffff:0.0.0.0-::ffff:255.255.255.255"  # coturn's own spelling
    if raw.version == 6 and checked.version == 4:
        for prefix, _ in EMBEDDING_PREFIXES:
            if raw in prefix:
                return f"{prefix.network_address}-{prefix.broadcast_address}"
    for cidr, _ in (*peerfilter.DENIED_IPV4, *peerfilter.DENIED_IPV6):
        net = ipaddress.ip_network(cidr)
        if net.version == checked.version and checked in net:
            if net.num_addresses == 1:
                return str(net.network_address)
            return f"{net.network_address}-{net.broadcast_address}"
    return str(raw)


def coturn_fix(granted: Sequence[str]) -> str:
    """A third-party server's fix: refuse the ranges; coturn's lines as the example."""
    lines: list[str] = []
    for peer in granted:
        line = f"denied-peer-ip={_denied_range(peer)}"
        if line not in lines:
            lines.append(line)
    loopback = any(peerfilter.normalise(ipaddress.ip_address(p)).is_loopback for p in granted)
    advice = "; remove allow-loopback-peers" if loopback else ""
    return (
        "refuse internal peers in the TURN server's relay policy (RFC 8656 §21); "
        f"for coturn: {', '.join(lines)}{advice}"
    )


def judge(
    target: str, answers: Sequence[PeerAnswer], *, allowed: Sequence[str] | None
) -> CheckResult:
    """The check's result from every peer's answer.

    Any granted peer fails; else a refusal (403) of every peer of an allocated family
    passes (peers asked on the other family's allocation and answered 440/443 are
    named, never counted as refused); an unexpected answer (no answer, a forged success,
    another error) or no refusal at all is an error. ``allowed`` is the own
    installation's turn.allowed_peers (a ``voipsec config set`` fix), None for a
    third-party server (coturn's lines).
    """
    observed = _observed(answers)
    granted = [a.peer for a in answers if a.verdict is PeerVerdict.GRANTED]
    if granted:
        fix = own_fix(allowed) if allowed is not None else coturn_fix(granted)
        return failed(SPEC, target, observed, fix)
    if any(a.verdict is PeerVerdict.UNEXPECTED for a in answers):
        return errored(SPEC, target, observed)
    if any(a.verdict is PeerVerdict.REFUSED for a in answers):
        return passed(SPEC, target, observed)
    return errored(SPEC, target, observed or "no peer asked")

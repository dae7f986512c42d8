"""ICE-lite on the relay's media ports: STUN checks answered, never relayed (sans-IO).

How this works: phones that do ICE (linphone, browsers, Jami) send STUN Binding
requests to the addresses in the SDP they received, the relay's RTP and RTCP ports,
as connectivity checks (RFC 8445 §7.2) and, later, as consent checks (RFC 7675). The
relay is a lite agent (RFC 8445 §2.5): it gathers one host candidate per component
(its own port), never sends checks, and only answers.

- :func:`looks_like_stun` tells a STUN message from RTP/RTCP by its first byte and
  the magic cookie (RFC 7983 §7, RFC 8489 §6); the relay asks only for datagrams that
  are not RTP version 2, so RTP pays nothing.
- :func:`answer_check` decides: a Binding request whose USERNAME is
  ``<our ufrag>:<their ufrag>``, whose MESSAGE-INTEGRITY verifies with our password
  (HMAC-SHA1 of the stdlib, through :mod:`voipsec.nat.stun`) and which carries a valid
  FINGERPRINT gets a success response with XOR-MAPPED-ADDRESS, MESSAGE-INTEGRITY and
  FINGERPRINT. Everything else is dropped without an answer: an error response would
  tell a scanner that the port is a relay leg, and a lite agent has nothing to
  negotiate (a role conflict cannot arise: RFC 8445 §6.1.1 makes a lite agent
  controlled, and we do not check ICE-CONTROLLING/-CONTROLLED).
- :class:`IceLite` is one leg's state: our credentials (random, from :mod:`secrets`),
  the phone's (from its SDP) and a token bucket of answers, so the relay is neither a
  reflector nor an amplifier: answers are rate-limited per leg and a response is never
  more than ``MAX_RESPONSE_GROWTH`` bytes larger than its request.
- :func:`remote_credentials` and :func:`sdp_lines` read and write the SDP side
  (RFC 8839 §5.1, §5.3, §5.4).

A STUN message never latches a leg: the latch stays "after SRTP authentication"
(docs/media.md). A check that nominates (USE-CANDIDATE, RFC 8445 §7.3.1.5) records its
source, and only an SRTP packet that then authenticates from that source may move a
leg's latch there: the phone's media moving to the pair ICE selected. Nothing here
reads a socket or the clock; callers pass ``now``.
"""

from __future__ import annotations

import hmac
import re
import secrets
from dataclasses import dataclass, field

from voipsec.nat import stun

# -- limits ------------------------------------------------------------------------

#: Largest STUN request answered. An ICE check carries USERNAME, PRIORITY,
#: ICE-CONTROLLING, USE-CANDIDATE, MESSAGE-INTEGRITY and FINGERPRINT: about 100 bytes.
#: 576 is the IPv4 size every host accepts (RFC 8489 §6.1); larger is not a check.
MAX_STUN_REQUEST = 576

#: Answers per leg: a burst of this many, refilled at ``STUN_ANSWER_RATE`` per
#: second. A phone with four local candidates sends at most a few checks per pair
#: during ICE (RFC 8445 §6.1.4.2, Ta 50 ms) and one consent check every 5 s after it
#: (RFC 7675 §5.1); 20 and 10/s leave room for both and cap what a flood gets back.
STUN_ANSWER_BURST = 20
STUN_ANSWER_RATE = 10.0

#: A response may exceed its request by this many bytes at most (no amplification).
#: Our answer is 64 bytes (76 with an IPv6 XOR-MAPPED-ADDRESS); the smallest check we
#: accept (our 12-character ufrag, a 4-character one of theirs, MESSAGE-INTEGRITY,
#: FINGERPRINT) is 76 already, so this only guards against a change of either.
MAX_RESPONSE_GROWTH = 16

#: RFC 8839 §5.4: ice-ufrag is 4-256 ice-chars, ice-pwd 22-256 ice-chars.
MIN_UFRAG, MAX_UFRAG = 4, 256
MIN_PWD, MAX_PWD = 22, 256

# -- constants of the protocol -----------------------------------------------------

#: RFC 7983 §7: a first byte of 0-3 is STUN (then 16-19 ZRTP, 20-63 DTLS, 128-191 RTP).
STUN_FIRST_BYTE_MAX = 3
#: RFC 8445 §5.1.2.1: host type preference 126, one address (local preference 65535).
_HOST_PRIORITY_BASE = (126 << 24) | (65535 << 8)
#: The one foundation of our candidates (RFC 8445 §5.1.1.3): all are host candidates
#: of one address.
_FOUNDATION = "1"
_ICE_CHARS = re.compile(r"[A-Za-z0-9+/]+")
_COOKIE = stun.MAGIC_COOKIE.to_bytes(4, "big")
#: Comprehension-required attributes an ICE check may carry (RFC 8445 §16.1).
_KNOWN = (stun.Attr.USERNAME, stun.Attr.MESSAGE_INTEGRITY, stun.Attr.PRIORITY,
          stun.Attr.USE_CANDIDATE)  # fmt: skip


@dataclass(frozen=True, slots=True, kw_only=True)
class IceCredentials:
    """A username fragment and password (RFC 8445 §5.3). The password is a secret."""

    ufrag: str
    pwd: str = field(repr=False)


def new_credentials() -> IceCredentials:
    """Fresh credentials for one leg: 48 bits of ufrag and 128 bits of password, more
    than RFC 8445 §5.3 asks (24 and 128), hex so that they are ice-chars."""
    return IceCredentials(ufrag=secrets.token_hex(6), pwd=secrets.token_hex(16))


def _valid(value: str | None, low: int, high: int) -> bool:
    return value is not None and low <= len(value) <= high and bool(_ICE_CHARS.fullmatch(value))


def remote_credentials(
    session: tuple[tuple[str, str | None], ...], media: tuple[tuple[str, str | None], ...]
) -> IceCredentials | None:
    """The phone's ICE credentials from its SDP attributes: media-level ones win over
    session-level ones (RFC 8839 §5.4). None when it does not do ICE or its values
    break the grammar (then the leg is treated as not doing ICE: fails closed)."""
    values = {name: value for name, value in session if name in ("ice-ufrag", "ice-pwd")}
    values |= {name: value for name, value in media if name in ("ice-ufrag", "ice-pwd")}
    ufrag, pwd = values.get("ice-ufrag"), values.get("ice-pwd")
    if ufrag is None or pwd is None:
        return None
    if not (_valid(ufrag, MIN_UFRAG, MAX_UFRAG) and _valid(pwd, MIN_PWD, MAX_PWD)):
        return None
    return IceCredentials(ufrag=ufrag, pwd=pwd)


def candidate_priority(component: int) -> int:
    """RFC 8445 §5.1.2.1: (2^24)*126 + (2^8)*65535 + (256 - component ID)."""
    return _HOST_PRIORITY_BASE + 256 - component


def sdp_lines(
    local: IceCredentials, address: str, rtp_port: int, rtcp_port: int | None
) -> tuple[str, ...]:
    """The media-level a= values (without "a=") that announce us as a lite agent's
    leg: credentials and one host candidate per component (RTCP only when not muxed,
    RFC 8839 §5.1). The session-level ``a=ice-lite`` is the SDP writer's part."""
    lines = [f"ice-ufrag:{local.ufrag}", f"ice-pwd:{local.pwd}"]
    ports = [(1, rtp_port)] if rtcp_port is None else [(1, rtp_port), (2, rtcp_port)]
    for component, port in ports:
        priority = candidate_priority(component)
        lines.append(
            f"candidate:{_FOUNDATION} {component} UDP {priority} {address} {port} typ host"
        )
    return tuple(lines)


#: The peer's credentials while our offer to it (a browser, media/dtlsleg.py) awaits its
#: answer: no check verifies against them, and the answer's replace them.
PENDING_REMOTE = IceCredentials(ufrag="", pwd="")
#: Sources of answered checks an ICE leg remembers (a browser checks from one or two
#: candidates on loopback or a LAN; more are forgotten oldest first).
MAX_CHECKED_SOURCES = 4


@dataclass(slots=True)
class IceLite:
    """One leg's ICE-lite state: both sides' credentials and the answer budget."""

    local: IceCredentials
    remote: IceCredentials
    #: Token bucket of answers (``STUN_ANSWER_BURST``, ``STUN_ANSWER_RATE``).
    tokens: float = float(STUN_ANSWER_BURST)
    refilled: float | None = None
    #: The source of the last answered nominating check, per component (RTP, RTCP).
    nominated_rtp: tuple[str, int] | None = None
    nominated_rtcp: tuple[str, int] | None = None
    #: Sources of recently answered checks (at most MAX_CHECKED_SOURCES): they knew
    #: our password, so a DTLS handshake may come from them (media/dtlsleg.py).
    checked: tuple[tuple[str, int], ...] = ()

    def answered(self, source: tuple[str, int]) -> None:
        """A valid check from ``source`` was answered."""
        if source not in self.checked:
            self.checked = (*self.checked, source)[-MAX_CHECKED_SOURCES:]

    def nominate(self, source: tuple[str, int], rtcp_port: bool) -> None:
        """An answered check with USE-CANDIDATE came from ``source`` (RFC 8445 §8.2.1:
        a lite agent takes the nominated pair as the selected one)."""
        if rtcp_port:
            self.nominated_rtcp = source
        else:
            self.nominated_rtp = source

    def nominated(self, source: tuple[str, int], rtcp_port: bool) -> bool:
        """May an authenticated packet from ``source`` move the latch of that port?"""
        return source == (self.nominated_rtcp if rtcp_port else self.nominated_rtp)

    def available(self, now: float) -> bool:
        """Is there an answer left in the bucket? Asked before a check is verified, so
        that once a flood has spent the budget its checks cost no HMAC."""
        if self.refilled is not None:
            elapsed = max(0.0, now - self.refilled)
            self.tokens = min(float(STUN_ANSWER_BURST), self.tokens + elapsed * STUN_ANSWER_RATE)
        self.refilled = now
        return self.tokens >= 1.0

    def take(self) -> None:
        """Spend one answer (after :meth:`available` said there is one)."""
        self.tokens = max(0.0, self.tokens - 1.0)

    def allow(self, now: float) -> bool:
        """:meth:`available`, then :meth:`take`: one answer, or False when spent."""
        if not self.available(now):
            return False
        self.take()
        return True


@dataclass(frozen=True, slots=True, kw_only=True)
class StunVerdict:
    """What to do with one STUN message: send ``response``, or drop it for ``reason``
    (peer-safe: it never names a credential)."""

    response: bytes | None = None
    reason: str = ""
    #: The check carried USE-CANDIDATE (it nominates its pair).
    nominate: bool = False


def looks_like_stun(data: bytes | bytearray | memoryview, size: int) -> bool:
    """RFC 7983 §7 and RFC 8489 §6: first byte 0-3 and the magic cookie at offset 4."""
    return (
        size >= stun.HEADER_SIZE and data[0] <= STUN_FIRST_BYTE_MAX and bytes(data[4:8]) == _COOKIE
    )


def _drop(reason: str) -> StunVerdict:
    return StunVerdict(reason=reason)


def _check_username(message: stun.Message, ice: IceLite) -> str:
    """Why the USERNAME is not ``<our ufrag>:<their ufrag>`` (RFC 8445 §7.3), or ""."""
    if ice.remote is PENDING_REMOTE:
        return "the peer's ICE credentials are not known yet"
    username = message.text(stun.Attr.USERNAME)
    if username is None:
        return "no USERNAME"
    ours, colon, theirs = username.partition(":")
    expected = f"{ice.local.ufrag}:{ice.remote.ufrag}"
    # Constant time: the ufrag is no secret, but the comparison costs nothing more.
    if not colon or not hmac.compare_digest(f"{ours}:{theirs}".encode(), expected.encode()):
        return "wrong USERNAME"
    return ""


def _check_request(message: stun.Message, ice: IceLite) -> str:
    """Why ``message`` is not an ICE check we answer, or ""."""
    if message.classic or message.method != stun.Method.BINDING:
        return "not a Binding request"
    if message.cls != stun.MessageClass.REQUEST:
        return "not a request"  # indications (RFC 8445 §11 keepalives) and responses
    if not message.has(stun.Attr.FINGERPRINT):
        return "no FINGERPRINT"  # RFC 8445 §7.2.2: checks MUST carry one
    if message.integrity() is not stun.Integrity.SHA1:
        return "no MESSAGE-INTEGRITY"  # RFC 8445 §7.2.2: short-term, HMAC-SHA1
    if message.unknown_required(_KNOWN):
        return "unknown comprehension-required attribute"
    why = _check_username(message, ice)
    if why:
        return why
    if not stun.verify_integrity(message, ice.local.pwd.encode()):
        return "MESSAGE-INTEGRITY does not verify"
    return ""


def answer_check(request: bytes, source: tuple[str, int], ice: IceLite | None) -> StunVerdict:
    """Answer one STUN message that came to a leg from ``source``, or say why not.

    The response is an RFC 8445 §7.3.1 success response: XOR-MAPPED-ADDRESS of the
    source, MESSAGE-INTEGRITY with our password, FINGERPRINT. The caller still applies
    the leg's rate limit (:meth:`IceLite.available`, :meth:`IceLite.take`).
    """
    if ice is None:
        return _drop("the leg does not do ICE")
    if len(request) > MAX_STUN_REQUEST:
        return _drop(f"larger than {MAX_STUN_REQUEST} bytes")
    if f"{ice.local.ufrag}:".encode() not in request:
        # Cheap first: whoever does not know our ufrag (it is only in the SDP sent to
        # the phone) costs no parse and no HMAC. The USERNAME check below is exact.
        return _drop("wrong USERNAME")
    try:
        message = stun.parse_message(request)  # checks a FINGERPRINT it carries
        why = _check_request(message, ice)
    except stun.StunParseError as err:
        return _drop(err.reason)
    if why:
        return _drop(why)
    tid = message.transaction_id
    try:
        mapped = stun.encode_xor_address(source, tid)
    except ValueError:  # not an IP address: the shell passes what recvfrom gave it
        return _drop("source address cannot be encoded")
    answer = stun.Message(
        method=stun.Method.BINDING,
        cls=stun.MessageClass.SUCCESS,
        transaction_id=tid,
        attributes=((stun.Attr.XOR_MAPPED_ADDRESS, mapped),),
    )
    response = stun.encode(answer, key=ice.local.pwd.encode(), fingerprint=True)
    if len(response) > len(request) + MAX_RESPONSE_GROWTH:
        return _drop("the answer would be larger than the request")
    return StunVerdict(response=response, nominate=message.has(stun.Attr.USE_CANDIDATE))


__all__ = [
    "MAX_CHECKED_SOURCES",
    "MAX_RESPONSE_GROWTH",
    "MAX_STUN_REQUEST",
    "PENDING_REMOTE",
    "STUN_ANSWER_BURST",
    "STUN_ANSWER_RATE",
    "IceCredentials",
    "IceLite",
    "StunVerdict",
    "answer_check",
    "candidate_priority",
    "looks_like_stun",
    "new_credentials",
    "remote_credentials",
    "sdp_lines",
]

"""TURN's data (RFC 8656), sans-IO: the limits, the 5-tuple, the actions and events the
TURN server returns, its statistics and the records of its state.

:mod:`.turn` holds the state machine that decides; this module only names what it
decides about, so that the shell (:mod:`.service`) and the tests can read the actions
without the machine, and the machine stays short enough to read. Nothing here does I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

from .stun import Attr, Integrity, Method

# -- limits and timers (each named, each with a test that exceeds it) ---------------------

#: Allocation lifetime when the client asks for none or for less (RFC 8656 §7.2: "the
#: default lifetime of 10 minutes").
DEFAULT_LIFETIME = 600
#: Longest lifetime granted: RFC 8656 §7.2 recommends one hour.
MAX_LIFETIME = 3600
#: Permission lifetime, fixed by RFC 8656 §9 ("300 seconds (5 minutes)").
PERMISSION_LIFETIME = 300
#: Channel binding lifetime, fixed by RFC 8656 §12 ("10 minutes").
CHANNEL_LIFETIME = 600
#: After a binding expires its number and peer stay reserved for 5 minutes so that
#: late packets are not delivered to a new peer (RFC 8656 §12).
CHANNEL_COOLDOWN = 300
#: A RESERVATION-TOKEN is held about 30 seconds (RFC 8656 §7.2).
RESERVATION_LIFETIME = 30
#: A nonce stays valid this long; then 438 and the client retries with a new one.
#: coturn's default ``stale-nonce`` is the same 600 s.
NONCE_LIFETIME = 600
#: Allocations one user may hold. A softphone holds 1-2 per media stream (RTP, RTCP);
#: 20 allows several calls with audio and video per user.
DEFAULT_USER_QUOTA = 20
#: Allocations in total: each holds a UDP socket, so this bounds file descriptors.
DEFAULT_TOTAL_QUOTA = 2000
#: Permissions per allocation: a call needs 1-2 peers, ICE a handful of candidates.
MAX_PERMISSIONS = 64
#: Channels per allocation (the protocol allows 4096); same reasoning as permissions.
MAX_CHANNELS = 64
#: Failed authentications (401 to a request that carried credentials) per source IP
#: and window before the source is ignored for the rest of the window: stops password
#: guessing at 10 per minute.
MAX_AUTH_FAILURES = 10
AUTH_FAILURE_WINDOW = 60.0
#: Sources whose failures are tracked; the oldest is forgotten first (fails open for
#: that source only when an attacker cycles through more addresses than this).
MAX_TRACKED_SOURCES = 10_000
#: Bytes per second each allocation may relay (both directions together). HD video is
#: about 300 kB/s; 1 MB/s leaves room and stops one user from saturating the uplink.
DEFAULT_BANDWIDTH = 1_000_000
#: The bandwidth bucket holds this many seconds' worth, absorbing bursts of packets.
BANDWIDTH_BURST_SECONDS = 1.0


#: Attributes understood in requests (the comprehension-required ones matter, §6.3.1).
AUTH_ATTRIBUTES = frozenset(
    {
        Attr.USERNAME,
        Attr.REALM,
        Attr.NONCE,
        Attr.MESSAGE_INTEGRITY,
        Attr.MESSAGE_INTEGRITY_SHA256,
    }
)
KNOWN_ATTRIBUTES: dict[int, frozenset[int]] = {
    Method.BINDING: AUTH_ATTRIBUTES | {Attr.PRIORITY, Attr.USE_CANDIDATE},
    Method.ALLOCATE: AUTH_ATTRIBUTES
    | {
        Attr.REQUESTED_TRANSPORT,
        Attr.LIFETIME,
        Attr.EVEN_PORT,
        Attr.RESERVATION_TOKEN,
        Attr.REQUESTED_ADDRESS_FAMILY,
        Attr.DONT_FRAGMENT,
    },
    Method.REFRESH: AUTH_ATTRIBUTES | {Attr.LIFETIME, Attr.REQUESTED_ADDRESS_FAMILY},
    Method.CREATE_PERMISSION: AUTH_ATTRIBUTES | {Attr.XOR_PEER_ADDRESS},
    Method.CHANNEL_BIND: AUTH_ATTRIBUTES | {Attr.CHANNEL_NUMBER, Attr.XOR_PEER_ADDRESS},
}
SEND_ATTRIBUTES = frozenset({Attr.XOR_PEER_ADDRESS, Attr.DATA, Attr.DONT_FRAGMENT})
#: Classic RFC 3489 Binding attributes. RESPONSE-ADDRESS is *refused* (never send to a
#: third address: that is a reflection attack), CHANGE-REQUEST only with no change.
CLASSIC_ATTRIBUTES = frozenset({Attr.CHANGE_REQUEST, Attr.USERNAME, Attr.MESSAGE_INTEGRITY})


Address = tuple[str, int]


# FiveTuple, ToClient and ToPeer are NamedTuples rather than frozen dataclasses: they
# are made for every relayed packet, and there a frozen slotted dataclass costs five
# times as much (measured on CPython 3.11: 1.65 µs against 0.3 µs, and a dataclass key
# hashes in Python). They are just as immutable and typed.


class FiveTuple(NamedTuple):
    """The client side of an allocation (RFC 8656 §2): transport, client, server."""

    protocol: str  # "udp" | "tcp" | "tls"
    client: Address
    server: Address


# -- actions --------------------------------------------------------------------------


class ToClient(NamedTuple):
    """Send ``data`` to the client on ``five`` (a datagram, or bytes on its stream)."""

    five: FiveTuple
    data: bytes


class ToPeer(NamedTuple):
    """Send ``data`` from ``allocation``'s relay socket to ``peer``."""

    allocation: int
    peer: Address
    data: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class OpenRelay:
    """Open a UDP relay socket for ``allocation`` and report with relay_opened/failed.

    ``even_port``: the port must be even (EVEN-PORT); ``reserve``: also hold port+1
    under that token (EVEN-PORT R bit); ``use_reservation``: take the socket held
    under that token instead of opening one.
    """

    allocation: int
    family: int
    dont_fragment: bool = False
    even_port: bool = False
    reserve: bytes | None = None
    use_reservation: bytes | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class CloseRelay:
    allocation: int


@dataclass(frozen=True, slots=True, kw_only=True)
class DropReservation:
    """Close the socket held for a RESERVATION-TOKEN that was never used."""

    token: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class AllocationCreated:
    allocation: int
    user: str
    client: Address
    protocol: str
    relayed: Address
    lifetime: int


@dataclass(frozen=True, slots=True, kw_only=True)
class AllocationEnded:
    allocation: int
    user: str
    client: Address
    reason: str  # "refresh", "expired", "connection closed", "relay failed"


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthFailed:
    """A request with credentials was refused (401). Never carries secrets.

    ``verified_source``: the request carried a nonce this server issued to the
    client's IP address and that is still fresh, so the client received our challenge
    at that address: the source is not a spoofed UDP address. Only such failures may
    count towards a ban (issue 13, finding 6: spoofed UDP must not get a victim banned).
    """

    client: Address
    user: str
    reason: str
    verified_source: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthRateLimited:
    """A source passed MAX_AUTH_FAILURES; reported once per window."""

    client: Address
    failures: int


@dataclass(frozen=True, slots=True, kw_only=True)
class QuotaReached:
    client: Address
    user: str
    scope: str  # "user" | "total"


@dataclass(frozen=True, slots=True, kw_only=True)
class PeerRefused:
    client: Address
    user: str
    peer: str
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Malformed:
    client: Address
    reason: str


TurnEvent = (AllocationCreated | AllocationEnded | AuthFailed | AuthRateLimited | QuotaReached) | (
    PeerRefused | Malformed
)
Action = ToClient | ToPeer | OpenRelay | CloseRelay | DropReservation | TurnEvent


@dataclass(frozen=True, slots=True, kw_only=True)
class TurnStatistics:
    allocations: int
    allocations_created: int
    permissions: int
    channels: int
    binding_requests: int
    challenges: int
    auth_failures: int
    auth_rate_limited: int
    quota_refusals: int
    peer_refusals: int
    malformed: int
    packets_to_peers: int
    bytes_to_peers: int
    packets_from_peers: int
    bytes_from_peers: int
    dropped_no_permission: int
    dropped_bandwidth: int


# -- state ----------------------------------------------------------------------------


@dataclass(slots=True)
class Channel:
    """A channel binding (RFC 8656 §12): its peer and when it expires."""

    peer: Address
    expires: float


@dataclass(slots=True)
class Allocation:
    """One allocation (RFC 8656 §2): its 5-tuple, owner, key, permissions, channels,
    and the token bucket that limits its bandwidth."""

    id: int
    five: FiveTuple
    username: str
    user: str  # the quota owner: the username, or USER of a REST "EXPIRY:USER"
    key: bytes
    credential_expiry: float | None
    family: int
    expires: float
    dont_fragment: bool
    allocate_tid: bytes
    integrity: Integrity
    fingerprint: bool
    lifetime: int
    reservation: bytes | None = None
    relayed: Address | None = None
    response: bytes = b""
    permissions: dict[str, float] = field(default_factory=dict)
    channels: dict[int, Channel] = field(default_factory=dict)
    peer_channels: dict[Address, int] = field(default_factory=dict)
    cooldown: dict[int, tuple[Address, float]] = field(default_factory=dict)
    tokens: float = 0.0
    tokens_at: float = 0.0


@dataclass(slots=True)
class Reservation:
    """A relay port held under a RESERVATION-TOKEN (RFC 8656 §7.2, EVEN-PORT R bit)."""

    expires: float
    family: int
    user: str


@dataclass(slots=True)
class TurnAuth:
    """Who a request was authenticated as, with the key and integrity it used."""

    username: str
    user: str
    key: bytes
    expiry: float | None
    integrity: Integrity


class SourceFailures:
    """Failed authentications of one source IP in the current window."""

    __slots__ = ("count", "reported", "start")

    def __init__(self, start: float) -> None:
        self.start = start
        self.count = 0
        self.reported = False

"""TURN server core (RFC 8656) and STUN Binding server (RFC 8489), sans-IO.

How this works: the asyncio shell hands every datagram or framed TCP message from a
client to :meth:`TurnServer.handle` with the 5-tuple it arrived on, and every datagram a
relay socket receives to :meth:`TurnServer.handle_peer`. Both return a list of
*actions*: bytes to send to a client, bytes to send to a peer through an allocation's
relay socket, a relay socket to open or close, and events to log. Opening a relay
socket is asynchronous, so an Allocate is answered only when the shell reports back with
:meth:`relay_opened` or :meth:`relay_failed`. Time comes in as ``now`` (Unix seconds);
lifetimes, permissions and channels are plain deadlines that :meth:`expire` enforces
and :meth:`next_deadline` reports — the shell owns the only timer.

Authentication is the long-term credential mechanism (RFC 8489 §9.2) with stateless
nonces: a nonce is a timestamp and an HMAC over it and the client's IP address, keyed
by a per-process secret, so nothing is stored per challenge. A nonce that no longer
verifies — too old, or from another address — gets 438 Stale Nonce. The key of a user
comes from ``lookup_key`` (voipsec's stored MD5 HA1) or, for ``EXPIRY:USER`` usernames
when a REST secret is configured, from the TURN REST scheme (see credentials.py).
Requests on an existing allocation reuse the key the allocation was created with and
must carry the same username (RFC 8656 §5).

Failure mode: closed. A peer the filter refuses gets 403; a request that cannot be
authenticated gets 401 and, past :data:`MAX_AUTH_FAILURES` per source and window,
no answer at all; over a quota, 486; a broken relay socket, 508.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections import OrderedDict
from collections.abc import Callable

from . import credentials
from .peerfilter import PeerFilter
from .stun import (
    CHANNEL_HEADER,
    CHANNEL_HEADER_SIZE,
    CHANNEL_MAX,
    CHANNEL_MIN,
    FAMILY_IPV4,
    FAMILY_IPV6,
    TRANSPORT_UDP,
    Attr,
    Integrity,
    Message,
    MessageClass,
    Method,
    StunParseError,
    encode,
    encode_address,
    encode_channel_data,
    encode_error_code,
    encode_unknown_attributes,
    encode_xor_address,
    parse_channel_data,
    parse_message,
    verify_integrity,
)
from .turnmodel import (
    AUTH_FAILURE_WINDOW,
    BANDWIDTH_BURST_SECONDS,
    CHANNEL_COOLDOWN,
    CHANNEL_LIFETIME,
    CLASSIC_ATTRIBUTES,
    DEFAULT_BANDWIDTH,
    DEFAULT_LIFETIME,
    DEFAULT_TOTAL_QUOTA,
    DEFAULT_USER_QUOTA,
    KNOWN_ATTRIBUTES,
    MAX_AUTH_FAILURES,
    MAX_CHANNELS,
    MAX_LIFETIME,
    MAX_PERMISSIONS,
    MAX_TRACKED_SOURCES,
    NONCE_LIFETIME,
    PERMISSION_LIFETIME,
    RESERVATION_LIFETIME,
    SEND_ATTRIBUTES,
    Action,
    Address,
    Allocation,
    AllocationCreated,
    AllocationEnded,
    AuthFailed,
    AuthRateLimited,
    Channel,
    CloseRelay,
    DropReservation,
    FiveTuple,
    Malformed,
    OpenRelay,
    PeerRefused,
    QuotaReached,
    Reservation,
    SourceFailures,
    ToClient,
    ToPeer,
    TurnAuth,
    TurnEvent,
    TurnStatistics,
)


class TurnServer:
    """The TURN/STUN state machine for one realm. See the module docstring."""

    def __init__(
        self,
        *,
        realm: str,
        lookup_key: Callable[[str], bytes | None],
        rest_secret: bytes | None = None,
        peer_filter: PeerFilter | None = None,
        relay_family: int = FAMILY_IPV4,
        user_quota: int = DEFAULT_USER_QUOTA,
        total_quota: int = DEFAULT_TOTAL_QUOTA,
        bandwidth: int = DEFAULT_BANDWIDTH,
        max_auth_failures: int = MAX_AUTH_FAILURES,
        nonce_secret: bytes | None = None,
        random_bytes: Callable[[int], bytes] = os.urandom,
    ) -> None:
        self.realm = realm
        self._realm_bytes = realm.encode()
        self._lookup_key = lookup_key
        self._rest_secret = rest_secret
        self._filter = peer_filter if peer_filter is not None else PeerFilter()
        self._family = relay_family
        self._user_quota = user_quota
        self._total_quota = total_quota
        self._bandwidth = float(bandwidth)
        self._burst = float(bandwidth) * BANDWIDTH_BURST_SECONDS
        self._max_failures = max_auth_failures
        self._random = random_bytes
        self._nonce_secret = nonce_secret if nonce_secret is not None else random_bytes(32)
        # A key that no user has: unknown users are checked against it so that they
        # take the same path as known ones.
        self._dummy_key = hashlib.sha256(self._nonce_secret + b"dummy").digest()[:16]
        self._next_id = 1
        self._by_five: dict[FiveTuple, Allocation] = {}
        self._by_id: dict[int, Allocation] = {}
        self._per_user: dict[str, int] = {}
        self._reservations: dict[bytes, Reservation] = {}
        self._failures: OrderedDict[str, SourceFailures] = OrderedDict()
        self._counts: dict[str, int] = dict.fromkeys(
            (
                "allocations_created",
                "binding_requests",
                "challenges",
                "auth_failures",
                "auth_rate_limited",
                "quota_refusals",
                "peer_refusals",
                "malformed",
                "dropped_no_permission",
                "dropped_bandwidth",
            ),
            0,
        )
        # The relay's counters are plain attributes, not _counts entries: they change
        # with every relayed packet, and an attribute costs a third of a dict item.
        self._packets_to_peers = self._bytes_to_peers = 0
        self._packets_from_peers = self._bytes_from_peers = 0

    # -- inputs ------------------------------------------------------------------------

    def handle(self, now: float, five: FiveTuple, data: bytes) -> list[Action]:
        """A datagram (UDP) or one framed message (TCP) from a client."""
        if not data:
            return []
        first = data[0]
        if 0x40 <= first < 0x80:
            return self._channel_data(now, five, data)
        if first >= 0x40:
            self._counts["malformed"] += 1
            return [Malformed(client=five.client, reason="neither STUN nor ChannelData")]
        try:
            message = parse_message(data)
        except StunParseError as err:
            return self._parse_error(five, err)
        if message.cls == MessageClass.REQUEST:
            try:
                return self._request(now, five, message)
            except StunParseError as err:
                return self._parse_error(five, err)
        if message.cls == MessageClass.INDICATION and message.method == Method.SEND:
            try:
                return self._send_indication(now, five, message)
            except StunParseError as err:
                self._counts["malformed"] += 1
                return [Malformed(client=five.client, reason=err.reason)]
        # Binding indications are keepalives; responses to a server are ignored.
        return []

    def handle_peer(self, now: float, allocation: int, peer: Address, data: bytes) -> list[Action]:
        """A datagram received on ``allocation``'s relay socket (RFC 8656 §11.3, §12.6)."""
        alloc = self._by_id.get(allocation)
        if alloc is None:
            return []
        expiry = alloc.permissions.get(peer[0])
        if expiry is None or expiry <= now:
            self._counts["dropped_no_permission"] += 1
            return []
        if not self._spend(alloc, now, len(data)):
            self._counts["dropped_bandwidth"] += 1
            return []
        self._packets_from_peers += 1
        self._bytes_from_peers += len(data)
        number = alloc.peer_channels.get(peer)
        if number is not None:
            channel = alloc.channels.get(number)
            if channel is not None and channel.expires > now:
                pad = alloc.five.protocol != "udp"  # RFC 8656 §12.5: pad on streams
                frame = encode_channel_data(number, data, pad=pad)
                return [ToClient(alloc.five, frame)]
        tid = self._random(12)
        indication = Message(
            method=Method.DATA,
            cls=MessageClass.INDICATION,
            transaction_id=tid,
            attributes=((Attr.XOR_PEER_ADDRESS, encode_xor_address(peer, tid)), (Attr.DATA, data)),
        )
        return [ToClient(five=alloc.five, data=encode(indication))]

    def relay_opened(
        self, now: float, allocation: int, relayed: Address, *, reserved: bool = False
    ) -> list[Action]:
        """The shell opened the relay socket of a pending allocation."""
        alloc = self._by_id.get(allocation)
        if alloc is None:
            return [CloseRelay(allocation=allocation)]
        alloc.relayed = relayed
        attributes: list[tuple[int, bytes]] = [
            (Attr.XOR_RELAYED_ADDRESS, encode_xor_address(relayed, alloc.allocate_tid)),
            (Attr.LIFETIME, alloc.lifetime.to_bytes(4, "big")),
        ]
        actions: list[Action] = []
        if alloc.reservation is not None:
            if reserved:
                attributes.append((Attr.RESERVATION_TOKEN, alloc.reservation))
                self._reservations[alloc.reservation] = Reservation(
                    expires=now + RESERVATION_LIFETIME, family=alloc.family, user=alloc.user
                )
            else:
                actions.append(DropReservation(token=alloc.reservation))
            alloc.reservation = None
        attributes.append(
            (Attr.XOR_MAPPED_ADDRESS, encode_xor_address(alloc.five.client, alloc.allocate_tid))
        )
        response = Message(
            method=Method.ALLOCATE,
            cls=MessageClass.SUCCESS,
            transaction_id=alloc.allocate_tid,
            attributes=tuple(attributes),
        )
        alloc.response = encode(
            response, key=alloc.key, integrity=alloc.integrity, fingerprint=alloc.fingerprint
        )
        self._counts["allocations_created"] += 1
        actions.append(ToClient(five=alloc.five, data=alloc.response))
        actions.append(
            AllocationCreated(
                allocation=alloc.id,
                user=alloc.user,
                client=alloc.five.client,
                protocol=alloc.five.protocol,
                relayed=relayed,
                lifetime=alloc.lifetime,
            )
        )
        return actions

    def relay_failed(self, now: float, allocation: int) -> list[Action]:
        """The shell could not open the relay socket: 508 (RFC 8656 §7.2)."""
        alloc = self._by_id.get(allocation)
        if alloc is None:
            return []
        self._remove(alloc)
        error = Message(
            method=Method.ALLOCATE,
            cls=MessageClass.ERROR,
            transaction_id=alloc.allocate_tid,
            attributes=((Attr.ERROR_CODE, encode_error_code(508)),),
        )
        data = encode(
            error, key=alloc.key, integrity=alloc.integrity, fingerprint=alloc.fingerprint
        )
        actions: list[Action] = [ToClient(five=alloc.five, data=data)]
        if alloc.reservation is not None:
            actions.append(DropReservation(token=alloc.reservation))
        return actions

    def connection_closed(self, now: float, five: FiveTuple) -> list[Action]:
        """A TCP client connection closed: its allocation goes with it (RFC 8656 §3.1)."""
        alloc = self._by_five.get(five)
        if alloc is None:
            return []
        return self._delete(alloc, "connection closed")

    def expire(self, now: float) -> list[Action]:
        """Delete what has expired: allocations, permissions, channels, reservations."""
        actions: list[Action] = []
        for alloc in list(self._by_id.values()):
            if alloc.relayed is None:
                continue  # pending: the shell answers relay_opened/failed soon
            if alloc.expires <= now:
                actions.extend(self._delete(alloc, "expired"))
                continue
            for ip in [ip for ip, t in alloc.permissions.items() if t <= now]:
                del alloc.permissions[ip]
            for number in [n for n, c in alloc.channels.items() if c.expires <= now]:
                channel = alloc.channels.pop(number)
                alloc.peer_channels.pop(channel.peer, None)
                alloc.cooldown[number] = (channel.peer, channel.expires + CHANNEL_COOLDOWN)
            for number in [n for n, (_, t) in alloc.cooldown.items() if t <= now]:
                del alloc.cooldown[number]
        for token in [t for t, r in self._reservations.items() if r.expires <= now]:
            del self._reservations[token]
            actions.append(DropReservation(token=token))
        while self._failures:
            ip, entry = next(iter(self._failures.items()))
            if entry.start + AUTH_FAILURE_WINDOW > now:
                break
            del self._failures[ip]
        return actions

    def next_deadline(self) -> float | None:
        """When :meth:`expire` next has something to do (None: nothing pending)."""
        times: list[float] = []
        for alloc in self._by_id.values():
            if alloc.relayed is None:
                continue
            times.append(alloc.expires)
            times.extend(alloc.permissions.values())
            times.extend(c.expires for c in alloc.channels.values())
            times.extend(t for _, t in alloc.cooldown.values())
        times.extend(r.expires for r in self._reservations.values())
        if self._failures:
            times.append(next(iter(self._failures.values())).start + AUTH_FAILURE_WINDOW)
        return min(times) if times else None

    def has_allocation(self, five: FiveTuple) -> bool:
        """Whether ``five`` holds an allocation (pending or active)."""
        return five in self._by_five

    def statistics(self) -> TurnStatistics:
        return TurnStatistics(
            allocations=len(self._by_id),
            permissions=sum(len(a.permissions) for a in self._by_id.values()),
            channels=sum(len(a.channels) for a in self._by_id.values()),
            packets_to_peers=self._packets_to_peers,
            bytes_to_peers=self._bytes_to_peers,
            packets_from_peers=self._packets_from_peers,
            bytes_from_peers=self._bytes_from_peers,
            **self._counts,
        )

    # -- the relay paths ---------------------------------------------------------------

    def _channel_data(self, now: float, five: FiveTuple, data: bytes) -> list[Action]:
        """ChannelData from a client (RFC 8656 §12.6)."""
        alloc = self._by_five.get(five)
        if alloc is None:
            return []
        # The hot path: parse_channel_data's checks, without building a ChannelData.
        size = len(data)
        number = (data[0] << 8) | data[1] if size >= CHANNEL_HEADER_SIZE else 0
        length = (data[2] << 8) | data[3] if size >= CHANNEL_HEADER_SIZE else 0
        if CHANNEL_HEADER_SIZE + length > size or number > CHANNEL_MAX:
            try:
                parse_channel_data(data)  # raises with the reason
            except StunParseError as err:
                self._counts["malformed"] += 1
                return [Malformed(client=five.client, reason=err.reason)]
        channel = alloc.channels.get(number)
        if channel is None or channel.expires <= now:
            self._counts["dropped_no_permission"] += 1
            return []
        payload = data[CHANNEL_HEADER_SIZE : CHANNEL_HEADER_SIZE + length]
        return self._to_peer(now, alloc, channel.peer, payload)

    def _send_indication(self, now: float, five: FiveTuple, message: Message) -> list[Action]:
        """A Send indication (RFC 8656 §11.2): relayed or silently discarded."""
        alloc = self._by_five.get(five)
        if alloc is None or alloc.relayed is None:
            return []
        if message.unknown_required(SEND_ATTRIBUTES):
            return []
        if message.has(Attr.DONT_FRAGMENT) and not alloc.dont_fragment:
            # Per-packet DF is not supported: the attribute counts as unknown (§11.2).
            return []
        peer = message.xor_address(Attr.XOR_PEER_ADDRESS)
        data = message.get(Attr.DATA)
        if peer is None or data is None or _family(peer[0]) != alloc.family:
            return []
        return self._to_peer(now, alloc, peer, data)

    def _to_peer(self, now: float, alloc: Allocation, peer: Address, data: bytes) -> list[Action]:
        expiry = alloc.permissions.get(peer[0])
        if expiry is None or expiry <= now:
            self._counts["dropped_no_permission"] += 1
            return []
        if not self._spend(alloc, now, len(data)):
            self._counts["dropped_bandwidth"] += 1
            return []
        self._packets_to_peers += 1
        self._bytes_to_peers += len(data)
        return [ToPeer(alloc.id, peer, data)]

    def _spend(self, alloc: Allocation, now: float, size: int) -> bool:
        """Token bucket of :data:`DEFAULT_BANDWIDTH` bytes/s per allocation. Changes
        nothing when ``size`` is over the budget: the fast paths below rely on that to
        leave a refused packet to the general path, which counts it."""
        tokens = alloc.tokens + (now - alloc.tokens_at) * self._bandwidth
        if tokens > self._burst:
            tokens = self._burst
        if tokens < size:
            return False
        alloc.tokens = tokens - size
        alloc.tokens_at = now
        return True

    # -- the media fast paths ----------------------------------------------------------
    #
    # Nearly every datagram a relay carries is media on a channel of a UDP allocation.
    # These two methods relay just that case with the fewest steps: no list of
    # actions, no action objects, lookups by the keys the datagram already carries.
    # Whenever anything but relaying would happen (no allocation, channel or
    # permission, one expired, over the bandwidth, malformed, a stream client) they
    # return None, change nothing and count nothing, and the shell hands the datagram
    # to handle() or handle_peer(), which decide, count and answer as always. So every
    # rule holds on both paths: the fast path only ever relays what the general path
    # would have relayed, with the same counters and the same bandwidth bucket.

    def relay_channel_data(
        self, now: float, client: Address, server: Address, data: bytes
    ) -> tuple[int, Address, bytes] | None:
        """``(allocation, peer, payload)`` for ChannelData a UDP client sent on a bound
        channel (RFC 8656 §12.6); None: call :meth:`handle` instead."""
        # A FiveTuple is a NamedTuple: a plain tuple of its fields is the same key.
        five: FiveTuple = ("udp", client, server)  # type: ignore[assignment]
        alloc = self._by_five.get(five)
        size = len(data)
        if alloc is None or size < CHANNEL_HEADER_SIZE:
            return None
        # Only numbers from CHANNEL_MIN (0x4000) up are ever bound: a STUN message
        # (first byte below 0x40) finds no channel and goes to handle().
        channel = alloc.channels.get((data[0] << 8) | data[1])
        length = (data[2] << 8) | data[3]
        if channel is None or channel.expires <= now or CHANNEL_HEADER_SIZE + length > size:
            return None
        peer = channel.peer
        expiry = alloc.permissions.get(peer[0])
        if expiry is None or expiry <= now or not self._spend(alloc, now, length):
            return None
        self._packets_to_peers += 1
        self._bytes_to_peers += length
        return alloc.id, peer, data[CHANNEL_HEADER_SIZE : CHANNEL_HEADER_SIZE + length]

    def relay_to_channel(
        self, now: float, allocation: int, peer: Address, data: bytes
    ) -> bytes | None:
        """The ChannelData message to send to the UDP client of ``allocation`` for a
        peer's datagram on a bound channel (RFC 8656 §12.6); None: call
        :meth:`handle_peer` instead."""
        alloc = self._by_id.get(allocation)
        if alloc is None or alloc.five.protocol != "udp":
            return None  # a stream client's ChannelData is padded (§12.5): general path
        expiry = alloc.permissions.get(peer[0])
        number = alloc.peer_channels.get(peer)
        if expiry is None or expiry <= now or number is None:
            return None
        channel = alloc.channels.get(number)
        size = len(data)
        if channel is None or channel.expires <= now or not self._spend(alloc, now, size):
            return None
        self._packets_from_peers += 1
        self._bytes_from_peers += size
        return CHANNEL_HEADER.pack(number, size) + data

    def allocation_five(self, allocation: int) -> FiveTuple | None:
        """The 5-tuple an allocation serves: fixed for its whole life (RFC 8656 §2), so
        the shell looks it up once per relay socket, not once per packet."""
        alloc = self._by_id.get(allocation)
        return alloc.five if alloc is not None else None

    # -- requests ----------------------------------------------------------------------

    def _parse_error(self, five: FiveTuple, err: StunParseError) -> list[Action]:
        self._counts["malformed"] += 1
        actions: list[Action] = [Malformed(client=five.client, reason=err.reason)]
        header = err.header
        if header is not None and header.cls == MessageClass.REQUEST and not header.classic:
            attributes: list[tuple[int, bytes]] = [(Attr.ERROR_CODE, encode_error_code(err.code))]
            if err.unknown:
                attributes.append((Attr.UNKNOWN_ATTRIBUTES, encode_unknown_attributes(err.unknown)))
            error = Message(
                method=header.method,
                cls=MessageClass.ERROR,
                transaction_id=header.transaction_id,
                attributes=tuple(attributes),
            )
            actions.append(ToClient(five=five, data=encode(error)))
        return actions

    def _request(self, now: float, five: FiveTuple, message: Message) -> list[Action]:
        method = message.method
        if method == Method.BINDING:
            return self._binding(five, message)
        if method not in KNOWN_ATTRIBUTES:
            return self._error(five, message, 400, reason="Unknown method")
        alloc = self._by_five.get(five)
        auth = self._authenticate(now, five, message, alloc)
        if not isinstance(auth, TurnAuth):
            return auth
        unknown = message.unknown_required(KNOWN_ATTRIBUTES[method])
        if unknown:
            return self._error(five, message, 420, auth, unknown=unknown)
        if method == Method.ALLOCATE:
            return self._allocate(now, five, message, auth, alloc)
        if alloc is None or alloc.relayed is None:
            return self._error(five, message, 437, auth)
        if method == Method.REFRESH:
            return self._refresh(now, five, message, auth, alloc)
        if method == Method.CREATE_PERMISSION:
            return self._create_permission(now, five, message, auth, alloc)
        return self._channel_bind(now, five, message, auth, alloc)

    def _binding(self, five: FiveTuple, message: Message) -> list[Action]:
        """Binding (RFC 8489 §18.2.1); classic RFC 3489 requests get MAPPED-ADDRESS."""
        self._counts["binding_requests"] += 1
        if message.classic:
            # RFC 3489 §8.2. RESPONSE-ADDRESS would make us send elsewhere: refused.
            # A change of address or port cannot be honoured by a single-address
            # server, so such a request goes unanswered, as if the alternate address
            # were unreachable (which is what the client then concludes).
            if message.unknown_required(CLASSIC_ATTRIBUTES) or message.change_request():
                return []
            attributes: tuple[tuple[int, bytes], ...] = (
                (Attr.MAPPED_ADDRESS, encode_address(five.client)),
                (Attr.SOURCE_ADDRESS, encode_address(five.server)),
            )
            fingerprint = False
        else:
            unknown = message.unknown_required(KNOWN_ATTRIBUTES[Method.BINDING])
            if unknown:
                return self._error(five, message, 420, unknown=unknown)
            attributes = (
                (Attr.XOR_MAPPED_ADDRESS, encode_xor_address(five.client, message.transaction_id)),
            )
            fingerprint = message.has(Attr.FINGERPRINT)
        response = Message(
            method=Method.BINDING,
            cls=MessageClass.SUCCESS,
            transaction_id=message.transaction_id,
            cookie=message.cookie,
            attributes=attributes,
        )
        return [ToClient(five=five, data=encode(response, fingerprint=fingerprint))]

    def _allocate(
        self,
        now: float,
        five: FiveTuple,
        message: Message,
        auth: TurnAuth,
        alloc: Allocation | None,
    ) -> list[Action]:
        """Allocate (RFC 8656 §7.2), checks in the RFC's order."""
        if alloc is not None:
            if alloc.allocate_tid == message.transaction_id:
                # A retransmission: the same answer again, or none while pending.
                return [ToClient(five=five, data=alloc.response)] if alloc.response else []
            return self._error(five, message, 437, auth)
        transport = message.requested_transport()
        if transport is None:
            return self._error(five, message, 400, auth, reason="REQUESTED-TRANSPORT missing")
        if transport != TRANSPORT_UDP:
            return self._error(five, message, 442, auth)
        dont_fragment = message.has(Attr.DONT_FRAGMENT)
        token = message.get(Attr.RESERVATION_TOKEN)
        even = message.get(Attr.EVEN_PORT)
        requested_family = message.requested_family()
        if token is not None and (even is not None or requested_family is not None):
            return self._error(
                five, message, 400, auth, reason="RESERVATION-TOKEN with EVEN-PORT or family"
            )
        if even is not None and len(even) != 1:
            return self._error(five, message, 400, auth, reason="EVEN-PORT must be 1 byte")
        family = self._family
        if requested_family is not None and requested_family != family:
            return self._error(five, message, 440, auth)  # also for unknown families
        reservation: Reservation | None = None
        if token is not None:
            reservation = self._reservations.get(token)
            if reservation is None or reservation.expires <= now or reservation.user != auth.user:
                return self._error(five, message, 508, auth, reason="Reservation unknown")
        if self._per_user.get(auth.user, 0) >= self._user_quota:
            self._counts["quota_refusals"] += 1
            return [
                QuotaReached(client=five.client, user=auth.user, scope="user"),
                *self._error(five, message, 486, auth),
            ]
        if len(self._by_id) >= self._total_quota:
            self._counts["quota_refusals"] += 1
            return [
                QuotaReached(client=five.client, user=auth.user, scope="total"),
                *self._error(five, message, 486, auth),
            ]
        requested = message.uint32(Attr.LIFETIME)
        lifetime = _lifetime(requested)
        alloc = Allocation(
            id=self._next_id,
            five=five,
            username=auth.username,
            user=auth.user,
            key=auth.key,
            credential_expiry=auth.expiry,
            family=family,
            expires=now + lifetime,
            dont_fragment=dont_fragment,
            allocate_tid=message.transaction_id,
            integrity=auth.integrity,
            fingerprint=message.has(Attr.FINGERPRINT),
            lifetime=lifetime,
            tokens=self._burst,
            tokens_at=now,
        )
        self._next_id += 1
        self._by_five[five] = alloc
        self._by_id[alloc.id] = alloc
        self._per_user[auth.user] = self._per_user.get(auth.user, 0) + 1
        if token is not None:
            del self._reservations[token]
            return [OpenRelay(allocation=alloc.id, family=family, use_reservation=token)]
        reserve = None
        if even is not None and even[0] & 0x80:
            reserve = alloc.reservation = self._random(8)
        return [
            OpenRelay(
                allocation=alloc.id,
                family=family,
                dont_fragment=dont_fragment,
                even_port=even is not None,
                reserve=reserve,
            )
        ]

    def _refresh(
        self, now: float, five: FiveTuple, message: Message, auth: TurnAuth, alloc: Allocation
    ) -> list[Action]:
        """Refresh (RFC 8656 §7.3): a new lifetime, or deletion with LIFETIME 0."""
        family = message.requested_family()
        if family is not None and family != alloc.family:
            return self._error(five, message, 443, auth)
        requested = message.uint32(Attr.LIFETIME)
        actions: list[Action] = []
        if requested == 0:
            lifetime = 0
            actions = self._delete(alloc, "refresh")
        else:
            lifetime = _lifetime(requested)
            alloc.expires = now + lifetime
        return [
            *self._success(five, message, auth, ((Attr.LIFETIME, lifetime.to_bytes(4, "big")),)),
            *actions,
        ]

    def _check_peers(
        self, five: FiveTuple, message: Message, auth: TurnAuth, alloc: Allocation
    ) -> tuple[list[Address], list[Action]]:
        """Every XOR-PEER-ADDRESS, or the error: 400 none, 403 refused, 443 wrong family."""
        peers = message.xor_addresses(Attr.XOR_PEER_ADDRESS)
        if not peers:
            return [], self._error(five, message, 400, auth, reason="XOR-PEER-ADDRESS missing")
        for host, _ in peers:
            decision = self._filter.check(host)
            if not decision.allowed:
                # RFC 8656 §21: a relay must not become a way into internal networks.
                self._counts["peer_refusals"] += 1
                refused = PeerRefused(
                    client=five.client, user=auth.user, peer=host, reason=decision.reason
                )
                return [], [refused, *self._error(five, message, 403, auth)]
            if _family(host) != alloc.family:
                return [], self._error(five, message, 443, auth)
        return peers, []

    def _create_permission(
        self, now: float, five: FiveTuple, message: Message, auth: TurnAuth, alloc: Allocation
    ) -> list[Action]:
        """CreatePermission (RFC 8656 §10.2): all peers installed, or none."""
        peers, refused = self._check_peers(five, message, auth, alloc)
        if refused:
            return refused
        hosts = {host for host, _ in peers}
        if len(alloc.permissions.keys() | hosts) > MAX_PERMISSIONS:
            return self._error(five, message, 508, auth)
        for host in hosts:
            alloc.permissions[host] = now + PERMISSION_LIFETIME
        return self._success(five, message, auth, ())

    def _channel_bind(
        self, now: float, five: FiveTuple, message: Message, auth: TurnAuth, alloc: Allocation
    ) -> list[Action]:
        """ChannelBind (RFC 8656 §12.2): binds or refreshes, and refreshes the permission."""
        number = message.channel_number()
        if number is None or not CHANNEL_MIN <= number <= CHANNEL_MAX:
            return self._error(five, message, 400, auth, reason="bad CHANNEL-NUMBER")
        peers, refused = self._check_peers(five, message, auth, alloc)
        if refused:
            return refused
        peer = peers[0]
        bound = alloc.channels.get(number)
        if bound is not None and bound.peer != peer:
            return self._error(five, message, 400, auth, reason="channel bound to another peer")
        other = alloc.peer_channels.get(peer)
        if other is not None and other != number:
            return self._error(five, message, 400, auth, reason="peer bound to another channel")
        cooling = alloc.cooldown.get(number)
        if cooling is not None and cooling[0] != peer:
            return self._error(five, message, 400, auth, reason="channel number cooling down")
        if any(p == peer and n != number for n, (p, _) in alloc.cooldown.items()):
            return self._error(five, message, 400, auth, reason="peer cooling down")
        if bound is None and len(alloc.channels) >= MAX_CHANNELS:
            return self._error(five, message, 508, auth)
        if peer[0] not in alloc.permissions and len(alloc.permissions) >= MAX_PERMISSIONS:
            return self._error(five, message, 508, auth)
        alloc.cooldown.pop(number, None)
        alloc.channels[number] = Channel(peer=peer, expires=now + CHANNEL_LIFETIME)
        alloc.peer_channels[peer] = number
        alloc.permissions[peer[0]] = now + PERMISSION_LIFETIME
        return self._success(five, message, auth, ())

    # -- authentication (RFC 8489 §9.2.4) -----------------------------------------------

    def _authenticate(
        self, now: float, five: FiveTuple, message: Message, alloc: Allocation | None
    ) -> TurnAuth | list[Action]:
        ip = five.client[0]
        integrity = message.integrity()
        if integrity is None:
            self._counts["challenges"] += 1
            return self._challenge(now, five, message, 401)
        failures = self._failures.get(ip)
        if (
            failures is not None
            and failures.count >= self._max_failures
            and failures.start + AUTH_FAILURE_WINDOW > now
        ):
            # Over the limit: no answer at all, not even a check of the password.
            self._counts["auth_rate_limited"] += 1
            if not failures.reported:
                failures.reported = True
                return [AuthRateLimited(client=five.client, failures=failures.count)]
            return []
        username = message.text(Attr.USERNAME)
        realm = message.text(Attr.REALM)
        nonce = message.text(Attr.NONCE)
        if username is None or realm is None or nonce is None:
            return self._error(five, message, 400, reason="USERNAME, REALM or NONCE missing")
        found = self._credentials(now, username, alloc)
        key = found.key if found is not None else self._dummy_key
        valid = verify_integrity(message, key)
        if found is None or not valid or realm != self.realm:
            why = "unknown user or expired" if found is None else "wrong credentials"
            verified = self._nonce_valid(nonce, ip, now)
            return self._fail(now, five, message, username, why, verified=verified)
        if not self._nonce_valid(nonce, ip, now):
            return self._challenge(now, five, message, 438)
        if alloc is not None and alloc.username != username:
            # RFC 8656 §5: later requests must use the allocation's username.
            return self._error(five, message, 441)
        found.integrity = integrity
        return found

    def _credentials(self, now: float, username: str, alloc: Allocation | None) -> TurnAuth | None:
        if alloc is not None and alloc.username == username:
            if alloc.credential_expiry is not None and alloc.credential_expiry < now:
                return None
            return TurnAuth(
                username=username,
                user=alloc.user,
                key=alloc.key,
                expiry=alloc.credential_expiry,
                integrity=alloc.integrity,
            )
        rest = credentials.parse_rest_username(username) if self._rest_secret else None
        if rest is not None and self._rest_secret is not None:
            expiry, user = rest
            password = credentials.rest_password(self._rest_secret, username)
            key = credentials.long_term_key(username, self.realm, password)
            if expiry < now:
                return None
            return TurnAuth(
                username=username,
                user=user,
                key=key,
                expiry=float(expiry),
                integrity=Integrity.SHA1,
            )
        key_or_none = self._lookup_key(username)
        if key_or_none is None:
            return None
        return TurnAuth(
            username=username, user=username, key=key_or_none, expiry=None, integrity=Integrity.SHA1
        )

    def _fail(
        self,
        now: float,
        five: FiveTuple,
        message: Message,
        username: str,
        why: str,
        *,
        verified: bool,
    ) -> list[Action]:
        ip = five.client[0]
        self._counts["auth_failures"] += 1
        entry = self._failures.get(ip)
        if entry is None or entry.start + AUTH_FAILURE_WINDOW <= now:
            entry = SourceFailures(now)
            self._failures[ip] = entry
            self._failures.move_to_end(ip)
            while len(self._failures) > MAX_TRACKED_SOURCES:
                self._failures.popitem(last=False)
        entry.count += 1
        shown = username if len(username) <= 64 else username[:64] + "..."
        return [
            AuthFailed(client=five.client, user=shown, reason=why, verified_source=verified),
            *self._challenge(now, five, message, 401),
        ]

    def _nonce(self, ip: str, now: float) -> str:
        stamp = f"{int(now):010x}"
        mac = hmac.new(self._nonce_secret, f"{stamp}|{ip}".encode(), "sha256").hexdigest()
        return stamp + mac[:24]

    def _nonce_valid(self, nonce: str, ip: str, now: float) -> bool:
        stamp = nonce[:10]
        try:
            issued = int(stamp, 16)
        except ValueError:
            return False
        mac = hmac.new(self._nonce_secret, f"{stamp}|{ip}".encode(), "sha256").hexdigest()
        if not hmac.compare_digest(nonce[10:], mac[:24]):
            return False
        return issued <= now + 1 and now - issued < NONCE_LIFETIME

    def _challenge(self, now: float, five: FiveTuple, message: Message, code: int) -> list[Action]:
        """401 or 438 with REALM and a fresh NONCE, never integrity-protected (§9.2.4)."""
        attributes = (
            (Attr.ERROR_CODE, encode_error_code(code)),
            (Attr.REALM, self._realm_bytes),
            (Attr.NONCE, self._nonce(five.client[0], now).encode()),
        )
        error = Message(
            method=message.method,
            cls=MessageClass.ERROR,
            transaction_id=message.transaction_id,
            attributes=attributes,
        )
        return [ToClient(five=five, data=encode(error, fingerprint=message.has(Attr.FINGERPRINT)))]

    # -- responses and bookkeeping --------------------------------------------------------

    def _success(
        self,
        five: FiveTuple,
        message: Message,
        auth: TurnAuth,
        attributes: tuple[tuple[int, bytes], ...],
    ) -> list[Action]:
        response = Message(
            method=message.method,
            cls=MessageClass.SUCCESS,
            transaction_id=message.transaction_id,
            attributes=attributes,
        )
        data = encode(
            response,
            key=auth.key,
            integrity=auth.integrity,
            fingerprint=message.has(Attr.FINGERPRINT),
        )
        return [ToClient(five=five, data=data)]

    def _error(
        self,
        five: FiveTuple,
        message: Message,
        code: int,
        auth: TurnAuth | None = None,
        *,
        reason: str | None = None,
        unknown: tuple[int, ...] = (),
    ) -> list[Action]:
        """An error response; integrity-protected once the request authenticated."""
        attributes: list[tuple[int, bytes]] = [(Attr.ERROR_CODE, encode_error_code(code, reason))]
        if unknown:
            attributes.append((Attr.UNKNOWN_ATTRIBUTES, encode_unknown_attributes(unknown)))
        error = Message(
            method=message.method,
            cls=MessageClass.ERROR,
            transaction_id=message.transaction_id,
            cookie=message.cookie,
            attributes=tuple(attributes),
        )
        data = encode(
            error,
            key=auth.key if auth is not None else None,
            integrity=auth.integrity if auth is not None else Integrity.SHA1,
            fingerprint=message.has(Attr.FINGERPRINT),
        )
        return [ToClient(five=five, data=data)]

    def _remove(self, alloc: Allocation) -> None:
        self._by_id.pop(alloc.id, None)
        if self._by_five.get(alloc.five) is alloc:
            del self._by_five[alloc.five]
        left = self._per_user.get(alloc.user, 1) - 1
        if left > 0:
            self._per_user[alloc.user] = left
        else:
            self._per_user.pop(alloc.user, None)

    def _delete(self, alloc: Allocation, reason: str) -> list[Action]:
        self._remove(alloc)
        return [
            CloseRelay(allocation=alloc.id),
            AllocationEnded(
                allocation=alloc.id, user=alloc.user, client=alloc.five.client, reason=reason
            ),
        ]


def _lifetime(requested: int | None) -> int:
    """RFC 8656 §7.2: min(requested, maximum), but never below the default."""
    if requested is None:
        return DEFAULT_LIFETIME
    return max(DEFAULT_LIFETIME, min(requested, MAX_LIFETIME))


def _family(host: str) -> int:
    return FAMILY_IPV6 if ":" in host else FAMILY_IPV4


__all__ = [
    "AUTH_FAILURE_WINDOW",
    "BANDWIDTH_BURST_SECONDS",
    "CHANNEL_COOLDOWN",
    "CHANNEL_LIFETIME",
    "DEFAULT_BANDWIDTH",
    "DEFAULT_LIFETIME",
    "DEFAULT_TOTAL_QUOTA",
    "DEFAULT_USER_QUOTA",
    "MAX_AUTH_FAILURES",
    "MAX_CHANNELS",
    "MAX_LIFETIME",
    "MAX_PERMISSIONS",
    "MAX_TRACKED_SOURCES",
    "NONCE_LIFETIME",
    "PERMISSION_LIFETIME",
    "RESERVATION_LIFETIME",
    "Action",
    "AllocationCreated",
    "AllocationEnded",
    "AuthFailed",
    "AuthRateLimited",
    "CloseRelay",
    "DropReservation",
    "FiveTuple",
    "Malformed",
    "OpenRelay",
    "PeerRefused",
    "QuotaReached",
    "ToClient",
    "ToPeer",
    "TurnEvent",
    "TurnServer",
    "TurnStatistics",
]

"""The sans-IO TURN core against a fake clock: allocations, permissions, channels,
credentials, nonces, quotas, the 401 rate limit and the peer filter (RFC 8656, RFC 8489).
"""

from __future__ import annotations

import ipaddress
import itertools
from dataclasses import dataclass, field

import pytest

from voipsec.nat import stun, turn
from voipsec.nat.credentials import long_term_key, rest_credentials
from voipsec.nat.peerfilter import PeerFilter
from voipsec.nat.stun import Attr, Integrity, Message, MessageClass, Method, encode
from voipsec.nat.turn import (
    AllocationCreated,
    AllocationEnded,
    AuthFailed,
    AuthRateLimited,
    CloseRelay,
    DropReservation,
    FiveTuple,
    Malformed,
    OpenRelay,
    PeerRefused,
    QuotaReached,
    ToClient,
    ToPeer,
    TurnServer,
)

REALM = "example.test"
PASSWORDS = {"alice": "alice-pw", "bob": "bob-pw", "carol": "carol-pw"}
SECRET = b"rest-secret"
T0 = 1_700_000_000.0
SERVER = ("192.0.2.1", 3478)
RELAY = ("192.0.2.1", 50000)
PEER = ("8.8.8.8", 4000)
PEER2 = ("1.1.1.1", 5000)


def lookup(user: str) -> bytes | None:
    password = PASSWORDS.get(user)
    return None if password is None else long_term_key(user, REALM, password)


def five(port: int = 40000, protocol: str = "udp", host: str = "203.0.113.5") -> FiveTuple:
    return FiveTuple(protocol, (host, port), SERVER)


_tids = itertools.count(1)


def tid() -> bytes:
    return next(_tids).to_bytes(12, "big")


def make_server(**kwargs: object) -> TurnServer:
    options: dict[str, object] = {
        "realm": REALM,
        "lookup_key": lookup,
        "rest_secret": SECRET,
        "nonce_secret": b"n" * 32,
    }
    options.update(kwargs)
    return TurnServer(**options)  # type: ignore[arg-type]


def replies(actions: list[turn.Action]) -> list[Message]:
    return [stun.parse_message(a.data) for a in actions if isinstance(a, ToClient)]


def reply(actions: list[turn.Action]) -> Message:
    found = replies(actions)
    assert len(found) == 1, actions
    return found[0]


def code(message: Message) -> int:
    assert message.cls == MessageClass.ERROR, message
    error = message.error_code()
    assert error is not None
    return error[0]


@dataclass
class Client:
    """A TURN client on one 5-tuple, with long-term credentials."""

    server: TurnServer
    five: FiveTuple
    username: str = "alice"
    password: str = PASSWORDS["alice"]
    nonce: str | None = None
    integrity: Integrity = Integrity.SHA1
    fingerprint: bool = False
    log: list[turn.Action] = field(default_factory=list)

    @property
    def key(self) -> bytes:
        return long_term_key(self.username, REALM, self.password)

    def raw(self, now: float, message: Message, *, sign: bool = True) -> list[turn.Action]:
        if sign and self.nonce is not None:
            message = Message(
                method=message.method,
                cls=message.cls,
                transaction_id=message.transaction_id,
                attributes=(
                    *message.attributes,
                    (Attr.USERNAME, self.username.encode()),
                    (Attr.REALM, REALM.encode()),
                    (Attr.NONCE, self.nonce.encode()),
                ),
            )
            data = encode(
                message, key=self.key, integrity=self.integrity, fingerprint=self.fingerprint
            )
        else:
            data = encode(message, fingerprint=self.fingerprint)
        actions = self.server.handle(now, self.five, data)
        self.log.extend(actions)
        return actions

    def request(self, now: float, method: int, *attributes: tuple[int, bytes]) -> list[turn.Action]:
        """Send a request, answering a 401/438 challenge once, as clients do."""
        message = Message(
            method=method, cls=MessageClass.REQUEST, transaction_id=tid(), attributes=attributes
        )
        actions = self.raw(now, message)
        answers = replies(actions)
        if len(answers) == 1 and answers[0].cls == MessageClass.ERROR:
            error = answers[0].error_code()
            if (
                error is not None
                and error[0] in (401, 438)
                and (self.nonce is None or error[0] == 438)
            ):
                self.nonce = answers[0].text(Attr.NONCE)
                message = Message(
                    method=method,
                    cls=MessageClass.REQUEST,
                    transaction_id=tid(),
                    attributes=attributes,
                )
                actions = self.raw(now, message)
        return actions

    def allocate(
        self, now: float, *attributes: tuple[int, bytes], relay: tuple[str, int] = RELAY
    ) -> Message:
        attrs = attributes or ((Attr.REQUESTED_TRANSPORT, stun.encode_requested_transport()),)
        actions = self.request(now, Method.ALLOCATE, *attrs)
        opens = [a for a in actions if isinstance(a, OpenRelay)]
        if not opens:
            return reply(actions)
        assert not replies(actions)
        opened = self.server.relay_opened(now, opens[0].allocation, relay)
        self.log.extend(opened)
        return reply(opened)

    def permission(self, now: float, *peers: tuple[str, int]) -> Message:
        attrs = [(Attr.XOR_PEER_ADDRESS, b"") for _ in peers]
        return reply(self._with_peers(now, Method.CREATE_PERMISSION, peers, attrs))

    def channel(self, now: float, number: int, peer: tuple[str, int]) -> Message:
        attrs = [(Attr.CHANNEL_NUMBER, stun.encode_channel_number(number))]
        return reply(self._with_peers(now, Method.CHANNEL_BIND, (peer,), attrs))

    def _with_peers(
        self,
        now: float,
        method: int,
        peers: tuple[tuple[str, int], ...],
        extra: list[tuple[int, bytes]],
    ) -> list[turn.Action]:
        # XOR-PEER-ADDRESS depends on the transaction ID: build the request by hand.
        def build() -> Message:
            t = tid()
            attrs = [a for a in extra if a[0] != Attr.XOR_PEER_ADDRESS]
            attrs += [(Attr.XOR_PEER_ADDRESS, stun.encode_xor_address(p, t)) for p in peers]
            return Message(
                method=method, cls=MessageClass.REQUEST, transaction_id=t, attributes=tuple(attrs)
            )

        actions = self.raw(now, build())
        answers = replies(actions)
        if answers and answers[0].cls == MessageClass.ERROR and code(answers[0]) in (401, 438):
            self.nonce = answers[0].text(Attr.NONCE)
            actions = self.raw(now, build())
        return actions

    def refresh(self, now: float, lifetime: int | None = None) -> Message:
        attrs = () if lifetime is None else ((Attr.LIFETIME, lifetime.to_bytes(4, "big")),)
        return reply(self.request(now, Method.REFRESH, *attrs))

    def send(self, now: float, peer: tuple[str, int], data: bytes) -> list[turn.Action]:
        t = tid()
        message = Message(
            method=Method.SEND,
            cls=MessageClass.INDICATION,
            transaction_id=t,
            attributes=(
                (Attr.XOR_PEER_ADDRESS, stun.encode_xor_address(peer, t)),
                (Attr.DATA, data),
            ),
        )
        return self.server.handle(now, self.five, encode(message))

    def channel_data(self, now: float, number: int, data: bytes) -> list[turn.Action]:
        return self.server.handle(now, self.five, stun.encode_channel_data(number, data))


def allocation_id(server: TurnServer, client: Client) -> int:
    created = [a for a in client.log if isinstance(a, OpenRelay)]
    assert created
    return created[-1].allocation


def success(message: Message) -> Message:
    assert message.cls == MessageClass.SUCCESS, message.error_code()
    return message


# -- Binding ---------------------------------------------------------------------------------


def test_turn_binding_returns_xor_mapped_address_of_the_source() -> None:
    server = make_server()
    request = Message(method=Method.BINDING, cls=MessageClass.REQUEST, transaction_id=tid())
    response = reply(server.handle(T0, five(), encode(request, fingerprint=True)))
    assert response.cls == MessageClass.SUCCESS
    assert response.transaction_id == request.transaction_id
    assert response.xor_address() == ("203.0.113.5", 40000)
    assert response.get(Attr.SOFTWARE) is None  # SOFTWARE omitted: no version disclosure
    assert response.has(Attr.FINGERPRINT)
    assert server.statistics().binding_requests == 1


def test_turn_binding_over_ipv6_maps_the_ipv6_source() -> None:
    server = make_server()
    request = Message(method=Method.BINDING, cls=MessageClass.REQUEST, transaction_id=tid())
    source = FiveTuple("tcp", ("2001:db8::5", 1234), ("2001:db8::1", 3478))
    assert reply(server.handle(T0, source, encode(request))).xor_address() == (
        "2001:db8::5",
        1234,
    )


def classic(attributes: bytes = b"", kind: int = 0x0001) -> bytes:
    tid16 = bytes(range(100, 116))
    return kind.to_bytes(2, "big") + len(attributes).to_bytes(2, "big") + tid16 + attributes


def test_turn_classic_rfc3489_binding_gets_mapped_and_source_address() -> None:
    server = make_server()
    change_nothing = b"\x00\x03\x00\x04\x00\x00\x00\x00"
    response = reply(server.handle(T0, five(), classic(change_nothing)))
    assert response.classic
    assert response.raw[4:20] == bytes(range(100, 116))
    assert response.address() == ("203.0.113.5", 40000)
    assert response.address(Attr.SOURCE_ADDRESS) == SERVER
    assert response.get(Attr.XOR_MAPPED_ADDRESS) is None


@pytest.mark.parametrize(
    "attributes",
    [
        b"\x00\x03\x00\x04\x00\x00\x00\x06",  # change IP and port: we have no other address
        b"\x00\x03\x00\x04\x00\x00\x00\x02",  # change port
        b"\x00\x02\x00\x08\x00\x01\x13\x88\xc0\x00\x02\x09",  # RESPONSE-ADDRESS: reflection
    ],
)
def test_turn_classic_binding_asking_for_another_address_goes_unanswered(
    attributes: bytes,
) -> None:
    assert make_server().handle(T0, five(), classic(attributes)) == []


def test_turn_binding_with_unknown_required_attribute_gets_420() -> None:
    server = make_server()
    request = Message(
        method=Method.BINDING,
        cls=MessageClass.REQUEST,
        transaction_id=tid(),
        attributes=((0x0031, b"x"), (Attr.CHANGE_REQUEST, bytes(4)), (0x8031, b"")),
    )
    response = reply(server.handle(T0, five(), encode(request)))
    assert code(response) == 420
    assert response.unknown_attributes() == (0x0031, Attr.CHANGE_REQUEST)


def test_turn_binding_indication_and_responses_are_ignored() -> None:
    server = make_server()
    for cls in (MessageClass.INDICATION, MessageClass.SUCCESS, MessageClass.ERROR):
        message = Message(method=Method.BINDING, cls=cls, transaction_id=tid())
        assert server.handle(T0, five(), encode(message)) == []


def test_turn_malformed_request_with_a_header_gets_400_and_garbage_is_dropped() -> None:
    server = make_server()
    bad = encode(Message(method=Method.BINDING, cls=MessageClass.REQUEST, transaction_id=tid()))
    bad = bad[:2] + b"\x00\x04" + bad[4:]  # length no longer matches
    actions = server.handle(T0, five(), bad)
    assert isinstance(actions[0], Malformed)
    assert code(reply(actions)) == 400
    assert server.handle(T0, five(), b"\xff\xff") == [
        Malformed(client=five().client, reason="neither STUN nor ChannelData")
    ]
    assert server.handle(T0, five(), b"") == []
    assert server.statistics().malformed == 2


def test_turn_unknown_method_gets_400() -> None:
    server = make_server()
    request = Message(method=0x00B, cls=MessageClass.REQUEST, transaction_id=tid())
    response = reply(server.handle(T0, five(), encode(request)))
    assert response.error_code() == (400, "Unknown method")


# -- Allocate ----------------------------------------------------------------------------


def test_turn_allocate_without_credentials_is_challenged_with_realm_and_nonce() -> None:
    server = make_server()
    request = Message(
        method=Method.ALLOCATE,
        cls=MessageClass.REQUEST,
        transaction_id=tid(),
        attributes=((Attr.REQUESTED_TRANSPORT, stun.encode_requested_transport()),),
    )
    response = reply(server.handle(T0, five(), encode(request)))
    assert code(response) == 401
    assert response.text(Attr.REALM) == REALM
    assert response.text(Attr.NONCE)
    assert response.integrity() is None
    assert server.statistics().challenges == 1
    assert server.statistics().auth_failures == 0


def test_turn_allocate_succeeds_with_relayed_mapped_lifetime_and_integrity() -> None:
    server = make_server()
    client = Client(server, five(), fingerprint=True)
    response = success(client.allocate(T0))
    assert response.xor_address(Attr.XOR_RELAYED_ADDRESS) == RELAY
    assert response.xor_address(Attr.XOR_MAPPED_ADDRESS) == ("203.0.113.5", 40000)
    assert response.uint32(Attr.LIFETIME) == turn.DEFAULT_LIFETIME
    assert stun.verify_integrity(response, client.key)
    assert response.has(Attr.FINGERPRINT)
    created = [a for a in server.relay_opened(T0, 99, RELAY) if isinstance(a, CloseRelay)]
    assert created == [CloseRelay(allocation=99)]  # unknown allocation: close its socket
    stats = server.statistics()
    assert (stats.allocations, stats.allocations_created) == (1, 1)


def test_turn_allocate_reports_an_allocation_created_event() -> None:
    server = make_server()
    client = Client(server, five())
    actions = client.request(
        T0, Method.ALLOCATE, (Attr.REQUESTED_TRANSPORT, stun.encode_requested_transport())
    )
    (opened,) = [a for a in actions if isinstance(a, OpenRelay)]
    assert opened == OpenRelay(allocation=opened.allocation, family=stun.FAMILY_IPV4)
    events = [
        a for a in server.relay_opened(T0, opened.allocation, RELAY) if not isinstance(a, ToClient)
    ]
    assert events == [
        AllocationCreated(
            allocation=opened.allocation,
            user="alice",
            client=("203.0.113.5", 40000),
            protocol="udp",
            relayed=RELAY,
            lifetime=600,
        )
    ]


@pytest.mark.parametrize(
    ("requested", "granted"),
    [(None, 600), (0, 600), (10, 600), (777, 777), (3600, 3600), (3601, 3600), (2**32 - 1, 3600)],
)
def test_turn_allocate_lifetime_is_bounded_by_default_and_max_lifetime(
    requested: int | None, granted: int
) -> None:
    client = Client(make_server(), five())
    attrs = [(Attr.REQUESTED_TRANSPORT, stun.encode_requested_transport())]
    if requested is not None:
        attrs.append((Attr.LIFETIME, requested.to_bytes(4, "big")))
    assert success(client.allocate(T0, *attrs)).uint32(Attr.LIFETIME) == granted


def test_turn_allocate_retransmission_gets_the_same_answer_and_a_new_one_437() -> None:
    server = make_server()
    client = Client(server, five())
    client.allocate(T0)
    message = Message(
        method=Method.ALLOCATE,
        cls=MessageClass.REQUEST,
        transaction_id=tid(),
        attributes=((Attr.REQUESTED_TRANSPORT, stun.encode_requested_transport()),),
    )
    assert code(reply(client.raw(T0, message))) == 437
    first = next(a for a in client.log if isinstance(a, ToClient) and a.data[:2] == b"\x01\x03")
    original = stun.parse_message(first.data)
    again = Message(
        method=Method.ALLOCATE,
        cls=MessageClass.REQUEST,
        transaction_id=original.transaction_id,
        attributes=((Attr.REQUESTED_TRANSPORT, stun.encode_requested_transport()),),
    )
    assert [a.data for a in client.raw(T0, again) if isinstance(a, ToClient)] == [first.data]


def test_turn_allocate_retransmission_while_pending_is_absorbed() -> None:
    server = make_server()
    client = Client(server, five())
    client.nonce = (
        reply(client.request(T0, Method.REFRESH)).text(Attr.NONCE) or client.nonce
    )  # learn a nonce (437 after the challenge)
    message = Message(
        method=Method.ALLOCATE,
        cls=MessageClass.REQUEST,
        transaction_id=tid(),
        attributes=((Attr.REQUESTED_TRANSPORT, stun.encode_requested_transport()),),
    )
    assert any(isinstance(a, OpenRelay) for a in client.raw(T0, message))
    assert client.raw(T0, message) == []


@pytest.mark.parametrize(
    ("attributes", "expected"),
    [
        ((), (400, "REQUESTED-TRANSPORT missing")),
        (((Attr.REQUESTED_TRANSPORT, stun.encode_requested_transport(6)),), 442),
        (
            (
                (Attr.REQUESTED_TRANSPORT, stun.encode_requested_transport()),
                (Attr.REQUESTED_ADDRESS_FAMILY, stun.encode_requested_family(stun.FAMILY_IPV6)),
            ),
            440,
        ),
        (
            (
                (Attr.REQUESTED_TRANSPORT, stun.encode_requested_transport()),
                (Attr.REQUESTED_ADDRESS_FAMILY, bytes((7, 0, 0, 0))),
            ),
            440,
        ),
        (
            (
                (Attr.REQUESTED_TRANSPORT, stun.encode_requested_transport()),
                (Attr.EVEN_PORT, b"\x80\x00"),
            ),
            (400, "EVEN-PORT must be 1 byte"),
        ),
        (
            (
                (Attr.REQUESTED_TRANSPORT, stun.encode_requested_transport()),
                (Attr.EVEN_PORT, b"\x00"),
                (Attr.RESERVATION_TOKEN, bytes(8)),
            ),
            (400, "RESERVATION-TOKEN with EVEN-PORT or family"),
        ),
        (
            (
                (Attr.REQUESTED_TRANSPORT, stun.encode_requested_transport()),
                (Attr.RESERVATION_TOKEN, bytes(8)),
            ),
            (508, "Reservation unknown"),
        ),
        (
            (
                (Attr.REQUESTED_TRANSPORT, stun.encode_requested_transport()),
                (0x0010, bytes(4)),  # BANDWIDTH (draft): comprehension-required, unknown
            ),
            420,
        ),
    ],
)
def test_turn_allocate_refusals_are_integrity_protected(
    attributes: tuple[tuple[int, bytes], ...], expected: int | tuple[int, str]
) -> None:
    client = Client(make_server(), five())
    response = (
        client.allocate(T0, *attributes)
        if attributes
        else reply(client.request(T0, Method.ALLOCATE))
    )
    if isinstance(expected, tuple):
        assert response.error_code() == expected
    else:
        assert code(response) == expected
    assert stun.verify_integrity(response, client.key)


def test_turn_allocate_with_sha256_integrity_is_answered_with_sha256() -> None:
    client = Client(make_server(), five(), integrity=Integrity.SHA256)
    response = success(client.allocate(T0))
    assert response.integrity() is Integrity.SHA256
    assert stun.verify_integrity(response, client.key)


def test_turn_even_port_with_reservation_and_reservation_token_reuse_and_expiry() -> None:
    server = make_server(random_bytes=lambda n: b"\x07" * n)
    rtp = Client(server, five(40000))
    actions = rtp.request(
        T0,
        Method.ALLOCATE,
        (Attr.REQUESTED_TRANSPORT, stun.encode_requested_transport()),
        (Attr.EVEN_PORT, b"\x80"),
        (Attr.DONT_FRAGMENT, b""),
    )
    (opened,) = [a for a in actions if isinstance(a, OpenRelay)]
    token = b"\x07" * 8
    assert (opened.even_port, opened.reserve, opened.dont_fragment) == (True, token, True)
    response = success(reply(server.relay_opened(T0, opened.allocation, RELAY, reserved=True)))
    assert response.get(Attr.RESERVATION_TOKEN) == token
    rtcp = Client(server, five(40001))
    actions = rtcp.request(
        T0 + 1,
        Method.ALLOCATE,
        (Attr.REQUESTED_TRANSPORT, stun.encode_requested_transport()),
        (Attr.RESERVATION_TOKEN, token),
    )
    (taken,) = [a for a in actions if isinstance(a, OpenRelay)]
    assert taken.use_reservation == token
    # A second reservation that nobody claims is dropped after RESERVATION_LIFETIME.
    other = Client(server, five(40002))
    actions = other.request(
        T0,
        Method.ALLOCATE,
        (Attr.REQUESTED_TRANSPORT, stun.encode_requested_transport()),
        (Attr.EVEN_PORT, b"\x80"),
    )
    (opened,) = [a for a in actions if isinstance(a, OpenRelay)]
    server.relay_opened(T0, opened.allocation, ("192.0.2.1", 50002), reserved=True)
    assert server.expire(T0 + turn.RESERVATION_LIFETIME - 1) == []
    assert server.expire(T0 + turn.RESERVATION_LIFETIME) == [DropReservation(token=token)]


def test_turn_even_port_without_reserved_socket_drops_the_token() -> None:
    server = make_server(random_bytes=lambda n: b"\x01" * n)
    client = Client(server, five())
    actions = client.request(
        T0,
        Method.ALLOCATE,
        (Attr.REQUESTED_TRANSPORT, stun.encode_requested_transport()),
        (Attr.EVEN_PORT, b"\x80"),
    )
    (opened,) = [a for a in actions if isinstance(a, OpenRelay)]
    actions = server.relay_opened(T0, opened.allocation, RELAY, reserved=False)
    assert DropReservation(token=b"\x01" * 8) in actions
    assert reply(actions).get(Attr.RESERVATION_TOKEN) is None


def test_turn_relay_failure_answers_508_and_frees_the_quota() -> None:
    server = make_server(user_quota=1)
    client = Client(server, five())
    actions = client.request(
        T0, Method.ALLOCATE, (Attr.REQUESTED_TRANSPORT, stun.encode_requested_transport())
    )
    (opened,) = [a for a in actions if isinstance(a, OpenRelay)]
    assert code(reply(server.relay_failed(T0, opened.allocation))) == 508
    assert server.relay_failed(T0, opened.allocation) == []
    assert success(Client(server, five(40001), nonce=client.nonce).allocate(T0))


# -- Refresh and lifetimes ------------------------------------------------------------------


def test_turn_allocation_lifecycle_refresh_then_expiry() -> None:
    server = make_server()
    client = Client(server, five())
    success(client.allocate(T0))
    alloc = allocation_id(server, client)
    assert server.next_deadline() == T0 + 600
    assert server.expire(T0 + 599) == []
    assert success(client.refresh(T0 + 500, 1200)).uint32(Attr.LIFETIME) == 1200
    assert server.next_deadline() == T0 + 1700
    assert server.expire(T0 + 1699) == []
    assert server.expire(T0 + 1700) == [
        CloseRelay(allocation=alloc),
        AllocationEnded(
            allocation=alloc, user="alice", client=client.five.client, reason="expired"
        ),
    ]
    assert server.statistics().allocations == 0
    assert server.next_deadline() is None
    assert code(client.refresh(T0 + 1701)) == 437


def test_turn_refresh_with_lifetime_zero_deletes_the_allocation() -> None:
    server = make_server()
    client = Client(server, five())
    client.allocate(T0)
    actions = client.request(T0 + 1, Method.REFRESH, (Attr.LIFETIME, bytes(4)))
    assert success(reply(actions)).uint32(Attr.LIFETIME) == 0
    assert CloseRelay(allocation=allocation_id(server, client)) in actions
    assert server.statistics().allocations == 0


def test_turn_refresh_with_other_family_gets_443() -> None:
    client = Client(make_server(), five())
    client.allocate(T0)
    response = reply(
        client.request(
            T0,
            Method.REFRESH,
            (Attr.REQUESTED_ADDRESS_FAMILY, stun.encode_requested_family(stun.FAMILY_IPV6)),
        )
    )
    assert code(response) == 443


def test_turn_requests_without_allocation_get_437() -> None:
    client = Client(make_server(), five())
    assert code(client.refresh(T0)) == 437
    assert code(client.permission(T0, PEER)) == 437
    assert code(client.channel(T0, 0x4000, PEER)) == 437


def test_turn_tcp_connection_close_ends_the_allocation() -> None:
    server = make_server()
    client = Client(server, five(protocol="tcp"))
    client.allocate(T0)
    actions = server.connection_closed(T0 + 5, client.five)
    assert (
        AllocationEnded(
            allocation=allocation_id(server, client),
            user="alice",
            client=client.five.client,
            reason="connection closed",
        )
        in actions
    )
    assert server.connection_closed(T0 + 5, client.five) == []


# -- permissions, channels and relaying -------------------------------------------------------


def test_turn_send_indication_needs_a_permission_and_peer_data_becomes_data_indication() -> None:
    server = make_server()
    client = Client(server, five())
    client.allocate(T0)
    alloc = allocation_id(server, client)
    assert client.send(T0, PEER, b"early") == []
    assert server.handle_peer(T0, alloc, PEER, b"unsolicited") == []
    success(client.permission(T0, PEER, PEER2))
    assert client.send(T0 + 1, PEER, b"hello") == [
        ToPeer(allocation=alloc, peer=PEER, data=b"hello")
    ]
    indication = reply(server.handle_peer(T0 + 1, alloc, (PEER[0], 9999), b"back"))
    assert (indication.method, indication.cls) == (Method.DATA, MessageClass.INDICATION)
    assert indication.xor_address(Attr.XOR_PEER_ADDRESS) == (PEER[0], 9999)
    assert indication.get(Attr.DATA) == b"back"
    stats = server.statistics()
    assert (stats.packets_to_peers, stats.packets_from_peers, stats.permissions) == (1, 1, 2)
    assert stats.dropped_no_permission == 2


def test_turn_permission_expires_after_300_seconds_unless_refreshed() -> None:
    server = make_server()
    client = Client(server, five())
    client.allocate(T0)
    alloc = allocation_id(server, client)
    success(client.permission(T0, PEER, PEER2))
    success(client.permission(T0 + 200, PEER))  # refreshes PEER only
    server.expire(T0 + turn.PERMISSION_LIFETIME)
    assert client.send(T0 + 300, PEER2, b"x") == []
    assert client.send(T0 + 300, PEER, b"x") == [ToPeer(allocation=alloc, peer=PEER, data=b"x")]
    assert server.handle_peer(T0 + 499, alloc, PEER, b"y") != []
    assert server.handle_peer(T0 + 500, alloc, PEER, b"y") == []  # expired, not yet swept
    server.expire(T0 + 500)
    assert server.statistics().permissions == 0


def test_turn_channel_bind_relays_channel_data_both_ways() -> None:
    server = make_server()
    client = Client(server, five())
    client.allocate(T0)
    alloc = allocation_id(server, client)
    success(client.channel(T0, 0x4001, PEER))
    assert client.channel_data(T0, 0x4001, b"rtp") == [
        ToPeer(allocation=alloc, peer=PEER, data=b"rtp")
    ]
    assert client.channel_data(T0, 0x4002, b"rtp") == []  # not bound
    assert server.handle_peer(T0, alloc, PEER, b"abcde") == [
        ToClient(five=client.five, data=b"\x40\x01\x00\x05abcde")
    ]
    # Another port of the same peer IP has a permission but no channel.
    assert reply(server.handle_peer(T0, alloc, (PEER[0], 1), b"z")).method == Method.DATA
    assert client.channel_data(T0, 0x4001, b"\x40") != []


def test_turn_channel_data_to_a_tcp_client_is_padded() -> None:
    server = make_server()
    client = Client(server, five(protocol="tcp"))
    client.allocate(T0)
    success(client.channel(T0, 0x4FFF, PEER))
    assert server.handle_peer(T0, allocation_id(server, client), PEER, b"abcde") == [
        ToClient(five=client.five, data=b"\x4f\xff\x00\x05abcde\x00\x00\x00")
    ]


@pytest.mark.parametrize("number", [0x3FFF, 0x7FFF, 0xFFFF, 0x0000])
def test_turn_channel_number_out_of_range_gets_400(number: int) -> None:
    client = Client(make_server(), five())
    client.allocate(T0)
    assert client.channel(T0, number, PEER).error_code() == (400, "bad CHANNEL-NUMBER")


def test_turn_channel_rebinding_rules_and_cooldown() -> None:
    server = make_server()
    client = Client(server, five())
    client.allocate(T0, relay=RELAY)
    client.refresh(T0, 3600)
    success(client.channel(T0, 0x4000, PEER))
    assert client.channel(T0, 0x4000, PEER2).error_code() == (
        400,
        "channel bound to another peer",
    )
    assert client.channel(T0, 0x4001, PEER).error_code() == (400, "peer bound to another channel")
    success(client.channel(T0 + 100, 0x4000, PEER))  # refresh: same channel, same peer
    server.expire(T0 + 100 + turn.CHANNEL_LIFETIME)
    assert client.channel_data(T0 + 700, 0x4000, b"x") == []
    assert server.statistics().channels == 0
    assert client.channel(T0 + 701, 0x4000, PEER2).error_code() == (
        400,
        "channel number cooling down",
    )
    assert client.channel(T0 + 701, 0x4002, PEER).error_code() == (400, "peer cooling down")
    server.expire(T0 + 700 + turn.CHANNEL_COOLDOWN)
    success(client.channel(T0 + 1000, 0x4000, PEER2))


def test_turn_channel_rebind_to_same_peer_during_cooldown_is_allowed() -> None:
    server = make_server()
    client = Client(server, five())
    client.allocate(T0)
    client.refresh(T0, 3600)
    success(client.channel(T0, 0x4000, PEER))
    server.expire(T0 + 600)
    success(client.channel(T0 + 601, 0x4000, PEER))
    assert client.channel_data(T0 + 601, 0x4000, b"x") != []


def test_turn_send_with_dont_fragment_on_an_allocation_without_it_is_discarded() -> None:
    server = make_server()
    client = Client(server, five())
    client.allocate(T0)
    client.permission(T0, PEER)
    t = tid()
    message = Message(
        method=Method.SEND,
        cls=MessageClass.INDICATION,
        transaction_id=t,
        attributes=(
            (Attr.XOR_PEER_ADDRESS, stun.encode_xor_address(PEER, t)),
            (Attr.DATA, b"x"),
            (Attr.DONT_FRAGMENT, b""),
        ),
    )
    assert server.handle(T0, client.five, encode(message)) == []


def test_turn_send_indication_with_malformed_peer_is_counted_and_dropped() -> None:
    server = make_server()
    client = Client(server, five())
    client.allocate(T0)
    message = Message(
        method=Method.SEND,
        cls=MessageClass.INDICATION,
        transaction_id=tid(),
        attributes=((Attr.XOR_PEER_ADDRESS, b"\x00\x01"), (Attr.DATA, b"x")),
    )
    actions = server.handle(T0, client.five, encode(message))
    assert actions == [Malformed(client=client.five.client, reason="bad address family or length")]


def test_turn_channel_data_malformed_is_counted() -> None:
    server = make_server()
    client = Client(server, five())
    client.allocate(T0)
    assert server.handle(T0, client.five, b"\x40\x00\x00\x09abc") == [
        Malformed(client=client.five.client, reason="ChannelData truncated")
    ]


# -- limits ----------------------------------------------------------------------------


def test_turn_limit_max_permissions_gets_508() -> None:
    client = Client(make_server(), five())
    client.allocate(T0)
    peers = [(f"8.8.{i // 256}.{i % 256}", 1) for i in range(turn.MAX_PERMISSIONS)]
    for start in range(0, len(peers), 16):
        success(client.permission(T0, *peers[start : start + 16]))
    assert code(client.permission(T0, ("9.9.9.9", 1))) == 508
    success(client.permission(T0, peers[0]))  # refreshing an existing one is fine
    assert code(client.channel(T0, 0x4000, ("9.9.9.9", 1))) == 508


def test_turn_limit_max_channels_gets_508() -> None:
    client = Client(make_server(), five())
    client.allocate(T0)
    for i in range(turn.MAX_CHANNELS):
        success(client.channel(T0, 0x4000 + i, ("8.8.8.8", 1000 + i)))
    assert code(client.channel(T0, 0x4000 + turn.MAX_CHANNELS, ("8.8.8.8", 999))) == 508


def test_turn_limit_bandwidth_drops_what_exceeds_the_bucket() -> None:
    server = make_server(bandwidth=1000)
    client = Client(server, five())
    client.allocate(T0)
    alloc = allocation_id(server, client)
    client.channel(T0, 0x4000, PEER)
    assert client.channel_data(T0, 0x4000, bytes(600)) != []
    assert server.handle_peer(T0, alloc, PEER, bytes(400)) != []
    assert client.channel_data(T0, 0x4000, bytes(1)) == []
    assert client.channel_data(T0 + 0.5, 0x4000, bytes(500)) != []
    assert server.statistics().dropped_bandwidth == 1
    assert server.handle_peer(T0 + 0.5, alloc, PEER, bytes(1)) == []
    assert server.statistics().dropped_bandwidth == 2


def test_turn_default_bandwidth_is_the_named_constant() -> None:
    server = make_server()
    client = Client(server, five())
    client.allocate(T0)
    client.channel(T0, 0x4000, PEER)
    burst = int(turn.DEFAULT_BANDWIDTH * turn.BANDWIDTH_BURST_SECONDS)
    chunk = 60_000
    sent = 0
    while sent + chunk <= burst:
        assert client.channel_data(T0, 0x4000, bytes(chunk)) != []
        sent += chunk
    assert client.channel_data(T0, 0x4000, bytes(burst - sent + 1)) == []


# -- quotas (486) --------------------------------------------------------------------------


def test_turn_user_quota_gets_486_and_frees_on_delete() -> None:
    server = make_server(user_quota=2)
    first, second, third = (Client(server, five(40000 + i)) for i in range(3))
    success(first.allocate(T0))
    success(second.allocate(T0))
    response = third.allocate(T0)
    assert code(response) == 486
    assert stun.verify_integrity(response, third.key)
    assert QuotaReached(client=third.five.client, user="alice", scope="user") in third.log
    success(Client(server, five(40009), username="bob", password=PASSWORDS["bob"]).allocate(T0))
    first.refresh(T0, 0)
    success(third.allocate(T0))
    assert server.statistics().quota_refusals == 1


def test_turn_total_quota_gets_486() -> None:
    server = make_server(total_quota=2)
    users = ["alice", "bob", "carol"]
    clients = [
        Client(server, five(41000 + i), username=u, password=PASSWORDS[u])
        for i, u in enumerate(users)
    ]
    success(clients[0].allocate(T0))
    success(clients[1].allocate(T0))
    assert code(clients[2].allocate(T0)) == 486
    assert (
        QuotaReached(client=clients[2].five.client, user="carol", scope="total") in clients[2].log
    )


def test_turn_default_user_quota_is_the_named_constant() -> None:
    server = make_server()
    for i in range(turn.DEFAULT_USER_QUOTA):
        success(Client(server, five(42000 + i)).allocate(T0))
    assert code(Client(server, five(43000)).allocate(T0)) == 486


def test_turn_default_total_quota_is_the_named_constant() -> None:
    names = [f"u{i}" for i in range(turn.DEFAULT_TOTAL_QUOTA + 1)]
    server = make_server(lookup_key=lambda user: long_term_key(user, REALM, "pw"))
    nonce: str | None = None
    for i, name in enumerate(names[:-1]):
        client = Client(server, five(10000 + i), username=name, password="pw", nonce=nonce)
        success(client.allocate(T0))
        nonce = client.nonce
    last = Client(server, five(9000), username=names[-1], password="pw", nonce=nonce)
    assert code(last.allocate(T0)) == 486


# -- credentials: 401, 438, 441, REST ----------------------------------------------------


def test_turn_wrong_password_gets_401_with_a_new_challenge_and_an_event() -> None:
    server = make_server()
    client = Client(server, five(), password="wrong")
    response = client.allocate(T0)
    assert code(response) == 401
    assert response.text(Attr.REALM) == REALM
    assert response.integrity() is None
    assert (
        AuthFailed(
            client=client.five.client,
            user="alice",
            reason="wrong credentials",
            verified_source=True,
        )
        in client.log
    )
    assert server.statistics().auth_failures == 1


def test_turn_unknown_user_gets_the_same_401_as_a_wrong_password() -> None:
    server = make_server()
    client = Client(server, five(), username="mallory", password="x")
    assert code(client.allocate(T0)) == 401
    assert (
        AuthFailed(
            client=client.five.client,
            user="mallory",
            reason="unknown user or expired",
            verified_source=True,
        )
        in client.log
    )


@pytest.mark.parametrize(
    ("nonce", "now"),
    [
        ("zzzzzzzzzz" + "0" * 24, T0),  # forged: never issued
        (None, T0 + turn.NONCE_LIFETIME),  # issued, but stale by the time it is used
    ],
)
def test_turn_wrong_password_with_an_unverified_nonce_is_an_unverified_source(
    nonce: str | None, now: float
) -> None:
    """A failure whose nonce this server did not issue to that address (or no longer
    honours) may come from a spoofed UDP source: the event says so, and the answer is
    the same 401 (RFC 8489 §9.2.4 checks the password before the nonce)."""
    server = make_server()
    client = Client(server, five(), password="wrong")
    if nonce is None:
        client.allocate(T0)  # learns a nonce, which goes stale
        client.log.clear()
    else:
        client.nonce = nonce
    message = Message(
        method=Method.ALLOCATE,
        cls=MessageClass.REQUEST,
        transaction_id=tid(),
        attributes=((Attr.REQUESTED_TRANSPORT, stun.encode_requested_transport()),),
    )
    actions = client.raw(now, message)
    assert code(reply(actions)) == 401
    (failed,) = [a for a in actions if isinstance(a, AuthFailed)]
    assert failed == AuthFailed(
        client=client.five.client, user="alice", reason="wrong credentials", verified_source=False
    )


def test_turn_wrong_realm_gets_401() -> None:
    server = make_server()
    client = Client(server, five())
    client.allocate(T0)  # learns the nonce
    message = Message(
        method=Method.REFRESH,
        cls=MessageClass.REQUEST,
        transaction_id=tid(),
        attributes=(
            (Attr.USERNAME, b"alice"),
            (Attr.REALM, b"other.test"),
            (Attr.NONCE, (client.nonce or "").encode()),
        ),
    )
    data = encode(message, key=long_term_key("alice", "other.test", PASSWORDS["alice"]))
    assert code(reply(server.handle(T0, client.five, data))) == 401


def test_turn_integrity_without_username_gets_400() -> None:
    server = make_server()
    message = Message(
        method=Method.ALLOCATE,
        cls=MessageClass.REQUEST,
        transaction_id=tid(),
        attributes=((Attr.REALM, REALM.encode()), (Attr.NONCE, b"n")),
    )
    response = reply(server.handle(T0, five(), encode(message, key=b"k")))
    assert response.error_code() == (400, "USERNAME, REALM or NONCE missing")


def test_turn_stale_nonce_gets_438_with_a_fresh_nonce_and_the_retry_succeeds() -> None:
    server = make_server()
    client = Client(server, five())
    success(client.allocate(T0))
    old = client.nonce
    message = Message(method=Method.REFRESH, cls=MessageClass.REQUEST, transaction_id=tid())
    response = reply(client.raw(T0 + turn.NONCE_LIFETIME, message))
    assert code(response) == 438
    assert response.text(Attr.REALM) == REALM
    assert response.text(Attr.NONCE) != old
    # Just inside the lifetime it was still fine; the client helper retries a 438.
    client.nonce = old
    assert success(client.refresh(T0 + turn.NONCE_LIFETIME - 1))
    assert success(client.refresh(T0 + 2 * turn.NONCE_LIFETIME))
    assert client.nonce != old


@pytest.mark.parametrize("nonce", ["zzzzzzzzzz" + "0" * 24, "0" * 34, "", "x"])
def test_turn_forged_nonce_gets_438(nonce: str) -> None:
    server = make_server()
    client = Client(server, five(), nonce=nonce)
    message = Message(
        method=Method.ALLOCATE,
        cls=MessageClass.REQUEST,
        transaction_id=tid(),
        attributes=((Attr.REQUESTED_TRANSPORT, stun.encode_requested_transport()),),
    )
    assert code(reply(client.raw(T0, message))) == 438


def test_turn_nonce_from_another_address_is_stale() -> None:
    server = make_server()
    first = Client(server, five(host="203.0.113.5"))
    first.allocate(T0)
    thief = Client(server, five(host="203.0.113.6"), nonce=first.nonce)
    message = Message(
        method=Method.ALLOCATE,
        cls=MessageClass.REQUEST,
        transaction_id=tid(),
        attributes=((Attr.REQUESTED_TRANSPORT, stun.encode_requested_transport()),),
    )
    assert code(reply(thief.raw(T0, message))) == 438


def test_turn_other_username_on_an_allocation_gets_441() -> None:
    server = make_server()
    client = Client(server, five())
    client.allocate(T0)
    bob = Client(server, client.five, username="bob", password=PASSWORDS["bob"], nonce=client.nonce)
    assert code(bob.refresh(T0)) == 441


def test_turn_rest_credentials_allocate_and_count_against_the_user_part() -> None:
    server = make_server(user_quota=1)
    username, password = rest_credentials(SECRET, "alice", 3600, T0)
    assert username == f"{int(T0) + 3600}:alice"
    client = Client(server, five(), username=username, password=password)
    success(client.allocate(T0))
    success(client.refresh(T0 + 100))
    other_username, other_password = rest_credentials(SECRET, "alice", 60, T0)
    other = Client(server, five(40001), username=other_username, password=other_password)
    assert code(other.allocate(T0)) == 486


def test_turn_expired_rest_credentials_get_401_even_on_an_allocation() -> None:
    server = make_server()
    username, password = rest_credentials(SECRET, "alice", 60, T0)
    expired = Client(server, five(), username=username, password=password)
    assert code(expired.allocate(T0 + 61)) == 401
    client = Client(server, five(40001), username=username, password=password)
    success(client.allocate(T0))
    assert code(client.refresh(T0 + 61)) == 401


def test_turn_rest_credentials_with_another_secret_get_401() -> None:
    username, password = rest_credentials(b"not the secret", "alice", 3600, T0)
    client = Client(make_server(), five(), username=username, password=password)
    assert code(client.allocate(T0)) == 401


def test_turn_rest_usernames_without_a_rest_secret_are_plain_users() -> None:
    username, password = rest_credentials(SECRET, "alice", 3600, T0)
    client = Client(make_server(rest_secret=None), five(), username=username, password=password)
    assert code(client.allocate(T0)) == 401


def test_turn_limit_max_auth_failures_silences_the_source_for_the_window() -> None:
    server = make_server()
    bad = Client(server, five(), password="wrong")
    for _ in range(turn.MAX_AUTH_FAILURES):
        assert code(bad.allocate(T0)) == 401
    good = Client(server, five(40001), nonce=bad.nonce)
    message = Message(
        method=Method.ALLOCATE,
        cls=MessageClass.REQUEST,
        transaction_id=tid(),
        attributes=((Attr.REQUESTED_TRANSPORT, stun.encode_requested_transport()),),
    )
    assert good.raw(T0 + 1, message) == [
        AuthRateLimited(client=good.five.client, failures=turn.MAX_AUTH_FAILURES)
    ]
    assert good.raw(T0 + 2, message) == []  # reported once per window
    # Challenges (no credentials) are still answered; other sources are unaffected.
    assert code(reply(good.raw(T0 + 2, message, sign=False))) == 401
    assert success(Client(server, five(host="203.0.113.77")).allocate(T0 + 2))
    assert server.statistics().auth_rate_limited == 2
    # The window ends by itself (the sweep in expire() only frees memory).
    good.nonce = None
    assert success(good.allocate(T0 + turn.AUTH_FAILURE_WINDOW))
    server.expire(T0 + turn.AUTH_FAILURE_WINDOW)
    assert server.next_deadline() == T0 + 2 + 600  # the allocation made at T0 + 2


def test_turn_limit_max_tracked_sources_forgets_the_oldest() -> None:
    server = make_server(max_auth_failures=1)
    first = Client(server, five(host="10.1.0.0"), password="wrong")
    assert code(first.allocate(T0)) == 401
    wrong = Client(server, five(), password="wrong", nonce="any")  # fails before the nonce
    message = Message(method=Method.ALLOCATE, cls=MessageClass.REQUEST, transaction_id=tid())
    for i in range(turn.MAX_TRACKED_SOURCES):
        wrong.five = five(host=f"10.2.{i // 256}.{i % 256}")
        assert code(reply(wrong.raw(T0, message))) == 401
    # The first source was forgotten, so it may try again (documented: fails open).
    first.password = PASSWORDS["alice"]
    assert success(first.allocate(T0 + 1))


# -- the peer filter -------------------------------------------------------------------------

REFUSED = [
    "127.0.0.1",
    "::1",
    "10.0.0.1",
    "::ffff:127.0.0.1",
    "0.0.0.0",
    "169.254.169.254",
    "64:ff9b::7f00:1",
    "2002:7f00:1::",
    "::",
    "172.16.0.1",
    "192.168.1.1",
    "100.64.0.1",
    "fe80::1",
    "fd00::1",
    "224.0.0.1",
    "255.255.255.255",
    "::7f00:1",
]


@pytest.mark.parametrize("host", REFUSED)
def test_turn_default_peer_filter_refuses_internal_peers_with_403(host: str) -> None:
    server = make_server()
    client = Client(server, five())
    client.allocate(T0)
    response = client.permission(T0, (host, 9))
    assert code(response) == 403
    assert stun.verify_integrity(response, client.key)
    refused = [a.peer for a in client.log if isinstance(a, PeerRefused)]
    assert [ipaddress.ip_address(p) for p in refused] == [ipaddress.ip_address(host)] * 1
    assert code(client.channel(T0, 0x4000, (host, 9))) == 403
    assert server.statistics().permissions == 0


def test_turn_create_permission_is_all_or_nothing() -> None:
    server = make_server()
    client = Client(server, five())
    client.allocate(T0)
    assert code(client.permission(T0, PEER, ("127.0.0.1", 1))) == 403
    assert server.statistics().permissions == 0


def test_turn_ipv6_peer_on_an_ipv4_relay_gets_443() -> None:
    client = Client(make_server(), five())
    client.allocate(T0)
    assert code(client.permission(T0, ("2606:4700::1111", 53))) == 443


def test_turn_allowed_peers_exempt_a_cidr() -> None:
    server = make_server(peer_filter=PeerFilter(allowed=["127.0.0.1/32"]))
    client = Client(server, five())
    client.allocate(T0)
    success(client.permission(T0, ("127.0.0.1", 3480)))
    # The mapped form passes the filter (it is 127.0.0.1) but is an IPv6 peer address.
    assert code(client.permission(T0, ("::ffff:127.0.0.1", 3480))) == 443
    assert code(client.permission(T0, ("127.0.0.2", 3480))) == 403


def test_turn_create_permission_without_peer_gets_400() -> None:
    client = Client(make_server(), five())
    client.allocate(T0)
    response = reply(client.request(T0, Method.CREATE_PERMISSION))
    assert response.error_code() == (400, "XOR-PEER-ADDRESS missing")


def test_turn_statistics_and_next_deadline_cover_permissions_and_channels() -> None:
    server = make_server()
    client = Client(server, five())
    client.allocate(T0)
    client.refresh(T0, 3600)
    client.channel(T0 + 10, 0x4000, PEER)
    assert server.next_deadline() == T0 + 10 + turn.PERMISSION_LIFETIME
    stats = server.statistics()
    assert (stats.allocations, stats.permissions, stats.channels) == (1, 1, 1)

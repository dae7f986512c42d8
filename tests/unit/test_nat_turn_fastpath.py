"""The TURN media fast paths (issue 15): ``relay_channel_data`` and ``relay_to_channel``
relay exactly what ``handle`` and ``handle_peer`` would, with the same counters and
bandwidth bucket, and decline (None, nothing changed) everything else."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from voipsec.nat import stun
from voipsec.nat.stun import Attr, Message, MessageClass, Method, encode
from voipsec.nat.turn import Malformed, ToClient, ToPeer, TurnServer

from .test_nat_turn import PEER, PEER2, SERVER, T0, Client, allocation_id, five, make_server


def bound(server: TurnServer, protocol: str = "udp") -> tuple[Client, int]:
    """A client of ``server`` with channel 0x4001 bound to PEER."""
    client = Client(server, five(protocol=protocol))
    client.allocate(T0)
    assert client.channel(T0, 0x4001, PEER).cls == MessageClass.SUCCESS
    return client, allocation_id(server, client)


def test_turn_fast_path_relays_channel_data_as_handle_does() -> None:
    fast, general = make_server(), make_server()
    fast_client, fast_alloc = bound(fast)
    general_client, general_alloc = bound(general)
    frame = stun.encode_channel_data(0x4001, b"rtp-payload")
    route = fast.relay_channel_data(T0 + 1, fast_client.five.client, SERVER, frame)
    actions = general.handle(T0 + 1, general_client.five, frame)
    assert route == (fast_alloc, PEER, b"rtp-payload")
    assert actions == [ToPeer(general_alloc, PEER, b"rtp-payload")]
    assert fast.statistics() == general.statistics()
    assert fast.statistics().packets_to_peers == 1
    assert fast.statistics().bytes_to_peers == len(b"rtp-payload")


def test_turn_fast_path_ignores_udp_padding_after_the_payload() -> None:
    server = make_server()
    client, alloc = bound(server)
    frame = stun.encode_channel_data(0x4001, b"abcde", pad=True)
    assert server.relay_channel_data(T0, client.five.client, SERVER, frame) == (
        alloc,
        PEER,
        b"abcde",
    )


def test_turn_fast_path_relays_peer_data_as_handle_peer_does() -> None:
    fast, general = make_server(), make_server()
    _, fast_alloc = bound(fast)
    general_client, general_alloc = bound(general)
    frame = fast.relay_to_channel(T0 + 1, fast_alloc, PEER, b"abcde")
    actions = general.handle_peer(T0 + 1, general_alloc, PEER, b"abcde")
    assert frame == b"\x40\x01\x00\x05abcde"
    assert actions == [ToClient(five=general_client.five, data=frame)]
    assert fast.statistics() == general.statistics()
    assert fast.statistics().packets_from_peers == 1


def send_indication() -> bytes:
    tid = b"\x01" * 12
    return encode(
        Message(
            method=Method.SEND,
            cls=MessageClass.INDICATION,
            transaction_id=tid,
            attributes=((Attr.XOR_PEER_ADDRESS, stun.encode_xor_address(PEER, tid)),),
        )
    )


CLIENT_DECLINED: dict[str, tuple[float, Callable[[Client], tuple[tuple[str, int], bytes]]]] = {
    "unbound channel": (T0, lambda c: (c.five.client, stun.encode_channel_data(0x4002, b"x"))),
    "a STUN message": (T0, lambda c: (c.five.client, send_indication())),
    "truncated": (T0, lambda c: (c.five.client, b"\x40\x01\x00\x09abc")),
    "shorter than a header": (T0, lambda c: (c.five.client, b"\x40\x01")),
    "another client": (T0, lambda c: (("203.0.113.9", 1), stun.encode_channel_data(0x4001, b"x"))),
    # The channel lives 600 s, the permission it installed 300 s (RFC 8656 §9, §12).
    "permission expired": (
        T0 + 300,
        lambda c: (c.five.client, stun.encode_channel_data(0x4001, b"x")),
    ),
    "channel expired": (
        T0 + 600,
        lambda c: (c.five.client, stun.encode_channel_data(0x4001, b"x")),
    ),
    "over the bandwidth": (
        T0,
        lambda c: (c.five.client, stun.encode_channel_data(0x4001, bytes(1001))),
    ),
}


@pytest.mark.parametrize("case", sorted(CLIENT_DECLINED))
def test_turn_fast_path_declines_channel_data_and_changes_nothing(case: str) -> None:
    server = make_server(bandwidth=1000)
    client, _ = bound(server)
    now, build = CLIENT_DECLINED[case]
    source, data = build(client)
    before = server.statistics()
    assert server.relay_channel_data(now, source, SERVER, data) is None
    assert server.statistics() == before
    # handle() then decides as it always did: the datagram is not relayed.
    assert not [
        a
        for a in server.handle(now, client.five._replace(client=source), data)
        if isinstance(a, ToPeer)
    ]


def test_turn_fast_path_declines_a_tcp_allocation() -> None:
    server = make_server()
    client, alloc = bound(server, protocol="tcp")
    frame = stun.encode_channel_data(0x4001, b"x")
    assert server.relay_channel_data(T0, client.five.client, SERVER, frame) is None
    assert server.relay_to_channel(T0, alloc, PEER, b"abcde") is None
    # The general path pads ChannelData on a stream (RFC 8656 §12.5).
    assert server.handle_peer(T0, alloc, PEER, b"abcde") == [
        ToClient(five=client.five, data=b"\x40\x01\x00\x05abcde\x00\x00\x00")
    ]


PEER_DECLINED: dict[str, tuple[float, tuple[str, int], int]] = {
    "no channel to that peer": (T0, (PEER[0], 1), 10),
    "no permission": (T0, PEER2, 10),
    "permission expired": (T0 + 300, PEER, 10),
    "channel expired": (T0 + 600, PEER, 10),
    "over the bandwidth": (T0, PEER, 1001),
}


@pytest.mark.parametrize("case", sorted(PEER_DECLINED))
def test_turn_fast_path_declines_peer_data_and_changes_nothing(case: str) -> None:
    server = make_server(bandwidth=1000)
    _, alloc = bound(server)
    now, peer, size = PEER_DECLINED[case]
    before = server.statistics()
    assert server.relay_to_channel(now, alloc, peer, bytes(size)) is None
    assert server.relay_to_channel(now, alloc + 1, peer, bytes(size)) is None  # unknown
    assert server.statistics() == before


def test_turn_fast_path_leaves_the_data_indication_to_handle_peer() -> None:
    server = make_server()
    _, alloc = bound(server)
    assert server.relay_to_channel(T0, alloc, (PEER[0], 1), b"z") is None
    [action] = server.handle_peer(T0, alloc, (PEER[0], 1), b"z")
    assert isinstance(action, ToClient)
    assert stun.parse_message(action.data).method == Method.DATA


def test_turn_fast_path_spends_the_same_bandwidth_bucket() -> None:
    server = make_server(bandwidth=1000)
    client, alloc = bound(server)
    frame = stun.encode_channel_data(0x4001, bytes(600))
    assert server.relay_channel_data(T0, client.five.client, SERVER, frame) is not None
    assert server.relay_to_channel(T0, alloc, PEER, bytes(400)) is not None
    assert server.relay_to_channel(T0, alloc, PEER, bytes(1)) is None
    assert server.handle_peer(T0, alloc, PEER, bytes(1)) == []
    assert server.statistics().dropped_bandwidth == 1
    assert server.relay_to_channel(T0 + 0.5, alloc, PEER, bytes(500)) is not None


def test_turn_fast_path_malformed_channel_data_is_still_counted_by_handle() -> None:
    server = make_server()
    client, _ = bound(server)
    data = b"\x40\x01\x00\x09abc"
    assert server.relay_channel_data(T0, client.five.client, SERVER, data) is None
    assert server.handle(T0, client.five, data) == [
        Malformed(client=client.five.client, reason="ChannelData truncated")
    ]
    assert server.statistics().malformed == 1


def test_turn_allocation_five_is_the_clients_and_none_once_deleted() -> None:
    server = make_server()
    client, alloc = bound(server)
    assert server.allocation_five(alloc) == client.five
    client.refresh(T0, 0)
    assert server.allocation_five(alloc) is None

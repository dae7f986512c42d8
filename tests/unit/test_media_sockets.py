"""The relay's socket pool on real loopback sockets: pairs bound ahead of the calls,
handed out oldest first, drained before reuse, closed when flooded or beyond the spares."""

from __future__ import annotations

import socket

import pytest

from voipsec.media.errors import MediaRefused
from voipsec.media.sockets import MAX_DRAIN, SPARE_PAIRS, PortPool, SocketPool, bind_udp

HOST = "127.0.0.1"


def _ephemeral(address: str, port: int, dscp: int) -> socket.socket:
    """Binds port 0 whatever port the pool names: the pool's logic on free ports."""
    return bind_udp(address, 0, dscp)


def _pool(pairs: int = 4, spare: int = 2) -> SocketPool:
    return SocketPool(
        PortPool(30000, 30000 + 2 * pairs), address=HOST, dscp=0, spare=spare, bind=_ephemeral
    )


def _send(sock: socket.socket, count: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer:
        for _ in range(count):
            peer.sendto(b"\x80" * 20, sock.getsockname())


def test_sockets_spare_pairs_default() -> None:
    assert SPARE_PAIRS == 16


def test_sockets_fill_binds_the_spare_pairs_and_free_counts_them() -> None:
    pool = _pool(pairs=4, spare=2)
    pool.fill()
    assert (pool.ready, pool.ports.free, pool.free) == (2, 2, 4)
    pool.close()
    assert (pool.ready, pool.ports.free) == (0, 4)


def test_sockets_fill_stops_when_the_range_is_used_up() -> None:
    pool = _pool(pairs=1, spare=3)
    pool.fill()
    assert (pool.ready, pool.free) == (1, 1)
    pool.close()


def test_sockets_take_hands_out_ready_pairs_oldest_first() -> None:
    pool = _pool(pairs=4, spare=2)
    pool.fill()
    first, second = pool.take(), pool.take()
    pool.give_back(first)
    pool.give_back(second)
    assert pool.take() is first
    assert pool.take() is second
    pool.close()


def test_sockets_take_binds_when_none_is_ready() -> None:
    pool = _pool(pairs=2, spare=0)
    port, rtp, rtcp = pool.take()
    assert port in (30000, 30002)
    assert rtp.getsockname()[0] == rtcp.getsockname()[0] == HOST
    assert pool.free == 1
    pool.give_back((port, rtp, rtcp))  # no spare room: closed, the port back in the range
    assert rtp.fileno() == rtcp.fileno() == -1
    assert (pool.ready, pool.ports.free) == (0, 2)


def test_sockets_no_pair_left_is_503() -> None:
    pool = _pool(pairs=1, spare=0)
    pool.take()
    with pytest.raises(MediaRefused) as refused:
        pool.take()
    assert (refused.value.status, str(refused.value)) == (503, "no media ports free")


def test_sockets_a_port_that_does_not_bind_stays_out_of_the_pool() -> None:
    def refuse_first(address: str, port: int, dscp: int) -> socket.socket:
        if port == 30000:
            raise OSError("in use")
        return bind_udp(address, 0, dscp)

    pool = SocketPool(PortPool(30000, 30004), address=HOST, dscp=0, spare=0, bind=refuse_first)
    assert pool.take()[0] == 30002
    with pytest.raises(MediaRefused):
        pool.take()
    assert pool.free == 0


def test_sockets_datagrams_for_the_old_call_are_drained_before_reuse() -> None:
    pool = _pool(pairs=1, spare=1)
    pair = pool.take()
    pool.give_back(pair)
    _send(pair[1], 5)
    _send(pair[2], 3)
    assert pool.take() is pair
    for sock in pair[1:]:
        with pytest.raises(BlockingIOError):
            sock.recv(2048)
    pool.close()


def test_sockets_flooded_idle_pair_is_closed_not_reused() -> None:
    """More than MAX_DRAIN datagrams while idle: the pair is closed, a fresh one bound."""
    pool = _pool(pairs=2, spare=1)
    pair = pool.take()
    pool.give_back(pair)
    _send(pair[1], MAX_DRAIN + 1)
    fresh = pool.take()
    assert fresh is not pair
    assert pair[1].fileno() == -1
    assert pool.ports.free == 1  # the flooded pair's port is back in the range, unbound
    pool.close()


def test_sockets_given_back_beyond_the_spares_are_closed() -> None:
    pool = _pool(pairs=3, spare=1)
    pairs = [pool.take() for _ in range(3)]
    for pair in pairs:
        pool.give_back(pair)
    assert pool.ready == 1
    assert [p[1].fileno() == -1 for p in pairs] == [False, True, True]
    pool.close()

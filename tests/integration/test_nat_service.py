"""TurnService in-process on loopback sockets: lifecycle, statistics and every limit of
the asyncio shell (TCP connections, idle timeout, write buffer, relay port binding).

The raw client runs in a worker thread (``asyncio.to_thread``) so the service's event
loop keeps serving it. Waiting is polling with a deadline, never a bare sleep.
"""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from tests.peers.turn import TurnClient, binding, error_code, free_udp_tcp_port
from voipsec.nat import service as service_module
from voipsec.nat import stun
from voipsec.nat.credentials import long_term_key
from voipsec.nat.keystore import UserKeys, read_or_create_secret
from voipsec.nat.service import TurnService
from voipsec.nat.stun import Attr, MessageClass, Method
from voipsec.pki.ca import CaPaths, ServerPaths, create_ca, create_server_certificate
from voipsec.storage import Store

REALM = "example.test"
USER, PASSWORD = "alice", "alice-secret-1"
DEADLINE = 10.0


def lookup(user: str) -> bytes | None:
    return long_term_key(USER, REALM, PASSWORD) if user == USER else None


async def until(condition: Callable[[], object], what: str, deadline: float = DEADLINE) -> None:
    end = time.monotonic() + deadline
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def make_service(port: int, **kwargs: object) -> TurnService:
    options: dict[str, object] = {
        "listen": [f"udp:127.0.0.1:{port}", f"tcp:127.0.0.1:{port}"],
        "realm": REALM,
        "lookup_key": lookup,
        "rest_secret": b"secret",
        "allowed_peers": ["127.0.0.1/32"],
    }
    options.update(kwargs)
    return TurnService(**options)  # type: ignore[arg-type]


@pytest.fixture
async def turn_service() -> AsyncIterator[tuple[TurnService, int]]:
    port = free_udp_tcp_port()
    service = make_service(port)
    await service.start()
    try:
        yield service, port
    finally:
        await service.stop()


def closed_by_peer(sock: socket.socket) -> bool:
    try:
        return sock.recv(1) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def tcp_connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=2)
    sock.setblocking(False)
    return sock


async def test_nat_service_start_binding_allocate_statistics_and_stop(
    turn_service: tuple[TurnService, int],
) -> None:
    service, port = turn_service
    assert service.addresses == [f"udp:127.0.0.1:{port}", f"tcp:127.0.0.1:{port}"]
    mapped = await asyncio.to_thread(binding, "127.0.0.1", port)
    assert mapped is not None and mapped[0] == "127.0.0.1"
    with TurnClient(("127.0.0.1", port), USER, PASSWORD) as client:
        allocated = await asyncio.to_thread(client.allocate)
        assert allocated.cls == MessageClass.SUCCESS
        stats = service.statistics()
        assert (stats.turn.allocations, stats.relays, stats.turn.binding_requests) == (1, 1, 1)
        assert stats.listeners == (f"udp:127.0.0.1:{port}", f"tcp:127.0.0.1:{port}")
    await service.stop()
    assert service.statistics().relays == 0
    assert service.addresses == []


def channel_round_trip(
    port: int, peer: socket.socket, answer: bytes = b"to-client"
) -> tuple[bytes, object, object, bytes]:
    """Allocate, bind channel 0x4001 to ``peer``, send ChannelData, let the peer answer."""
    with TurnClient(("127.0.0.1", port), USER, PASSWORD) as client:
        relayed = client.allocate().xor_address(Attr.XOR_RELAYED_ADDRESS)
        bound = client.request(
            Method.CHANNEL_BIND,
            lambda tid: [
                (Attr.CHANNEL_NUMBER, stun.encode_channel_number(0x4001)),
                (Attr.XOR_PEER_ADDRESS, stun.encode_xor_address(peer.getsockname(), tid)),
            ],
        )
        assert bound.cls == MessageClass.SUCCESS
        client.sock.sendto(stun.encode_channel_data(0x4001, b"to-peer"), client.server)
        data, source = peer.recvfrom(2048)
        peer.sendto(answer, source)
        frame, _ = client.sock.recvfrom(65535)
        return data, source, relayed, frame


async def test_nat_service_relays_channel_data_both_ways_on_the_media_path(
    turn_service: tuple[TurnService, int],
) -> None:
    service, port = turn_service
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer:
        peer.bind(("127.0.0.1", 0))
        peer.settimeout(DEADLINE)
        data, source, relayed, frame = await asyncio.to_thread(channel_round_trip, port, peer)
    assert (data, source) == (b"to-peer", relayed)
    assert frame == b"\x40\x01\x00\x09to-client"
    stats = service.statistics()
    assert (stats.turn.packets_to_peers, stats.turn.bytes_to_peers) == (1, 7)
    assert (stats.turn.packets_from_peers, stats.turn.bytes_from_peers) == (1, 9)
    assert stats.send_errors == 0


async def test_nat_service_relays_a_peer_datagram_far_larger_than_media_whole(
    turn_service: tuple[TurnService, int],
) -> None:
    # The relay socket reads MAX_PEER_DATAGRAM at once: 60,000 bytes arrive uncut.
    service, port = turn_service
    large = bytes(range(256)) * 234 + bytes(96)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer:
        peer.bind(("127.0.0.1", 0))
        peer.settimeout(DEADLINE)
        *_, frame = await asyncio.to_thread(channel_round_trip, port, peer, large)
    assert frame == stun.encode_channel_data(0x4001, large)
    assert service.statistics().turn.bytes_from_peers == len(large) == 60_000
    assert service_module.MAX_PEER_DATAGRAM >= 65_527  # the largest IPv6 UDP payload


async def test_nat_service_relay_send_error_is_counted_not_raised(
    turn_service: tuple[TurnService, int],
) -> None:
    service, port = turn_service
    with TurnClient(("127.0.0.1", port), USER, PASSWORD) as client:
        assert (await asyncio.to_thread(client.allocate)).cls == MessageClass.SUCCESS
        [relay] = service._relays.values()
        relay.sendto(b"x", ("::1", 9))  # an IPv6 destination on an IPv4 socket: OSError
        assert service.statistics().send_errors == 1


async def test_nat_service_start_fails_cleanly_when_the_port_is_taken() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        service = make_service(
            port, listen=[f"tcp:127.0.0.1:{free_udp_tcp_port()}", f"udp:127.0.0.1:{port}"]
        )
        with pytest.raises(OSError):
            await service.start()
        assert service.addresses == []


def test_nat_service_refuses_tls_without_context_and_bad_port_ranges() -> None:
    with pytest.raises(ValueError, match="TURN over TLS needs an ssl_context"):
        make_service(3478, listen=["tls:127.0.0.1:5349"])
    with pytest.raises(ValueError, match="relay_ports"):
        make_service(3478, relay_ports=(5000, 4000))


async def test_nat_service_limit_tcp_connections_per_ip(
    turn_service: tuple[TurnService, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    service, port = turn_service
    monkeypatch.setattr(service_module, "MAX_TCP_CONNECTIONS_PER_IP", 2)
    kept = [tcp_connect(port) for _ in range(2)]
    await until(lambda: service.statistics().tcp_connections == 2, "two connections")
    refused = tcp_connect(port)
    await until(lambda: closed_by_peer(refused), "the third connection to be closed")
    assert service.statistics().tcp_refused == 1
    assert not any(closed_by_peer(s) for s in kept)
    for sock in [*kept, refused]:
        sock.close()
    await until(lambda: service.statistics().tcp_connections == 0, "connections to close")


async def test_nat_service_limit_tcp_connections_in_total(
    turn_service: tuple[TurnService, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    service, port = turn_service
    monkeypatch.setattr(service_module, "MAX_TCP_CONNECTIONS", 1)
    first = tcp_connect(port)
    await until(lambda: service.statistics().tcp_connections == 1, "one connection")
    second = tcp_connect(port)
    await until(lambda: closed_by_peer(second), "the second connection to be closed")
    assert service.statistics().tcp_refused == 1
    first.close()
    second.close()


async def test_nat_service_limit_tcp_idle_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(service_module, "TCP_IDLE_TIMEOUT", 0.2)
    monkeypatch.setattr(service_module, "TICK", 0.05)
    port = free_udp_tcp_port()
    service = make_service(port)
    await service.start()
    try:
        idle = tcp_connect(port)
        await until(lambda: closed_by_peer(idle), "the idle connection to be closed")
        idle.close()
    finally:
        await service.stop()


async def test_nat_service_limit_write_buffer_drops_instead_of_queueing(
    turn_service: tuple[TurnService, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    service, port = turn_service
    monkeypatch.setattr(service_module, "MAX_WRITE_BUFFER", -1)  # every write is "too much"
    sock = tcp_connect(port)
    request = bytes.fromhex("000100002112a442") + bytes(12)  # a Binding request
    sock.sendall(request)
    await until(lambda: service.statistics().dropped_writes == 1, "the answer to be dropped")
    sock.close()


async def test_nat_service_limit_bind_attempts_gives_508(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        busy = taken.getsockname()[1]
        port = free_udp_tcp_port()
        service = make_service(port, relay_ports=(busy, busy))
        await service.start()
        try:
            with TurnClient(("127.0.0.1", port), USER, PASSWORD) as client:
                response = await asyncio.to_thread(client.allocate)
            assert error_code(response) == 508
            assert service.statistics().turn.allocations == 0
        finally:
            await service.stop()


async def test_nat_service_relay_ports_range_is_used() -> None:
    low = free_udp_tcp_port()
    port = free_udp_tcp_port()
    service = make_service(port, relay_ports=(low, low))
    await service.start()
    try:
        with TurnClient(("127.0.0.1", port), USER, PASSWORD) as client:
            response = await asyncio.to_thread(client.allocate)
        assert response.xor_address(0x0016) == ("127.0.0.1", low)
    finally:
        await service.stop()


async def test_nat_service_limit_tls_handshake_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(service_module, "TLS_HANDSHAKE_TIMEOUT", 0.2)
    ca, server = CaPaths.in_dir(tmp_path), ServerPaths.in_dir(tmp_path)
    create_ca(ca, "test CA")
    create_server_certificate(ca, server, names=("localhost",), addresses=("127.0.0.1",))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(server.cert, server.key)
    port, tls_port = free_udp_tcp_port(), free_udp_tcp_port()
    service = make_service(
        port, listen=[f"udp:127.0.0.1:{port}", f"tls:127.0.0.1:{tls_port}"], ssl_context=context
    )
    await service.start()
    try:
        assert service.addresses[-1] == f"tls:127.0.0.1:{tls_port}"
        silent = tcp_connect(tls_port)  # never starts the handshake
        await until(lambda: closed_by_peer(silent), "the silent TLS connection to be closed")
        silent.close()
    finally:
        await service.stop()


# -- the runner (python -m voipsec.nat) ------------------------------------------------------


def test_nat_runner_creates_the_rest_secret_0600_once(tmp_path: Path) -> None:
    path = tmp_path / "turn-secret"
    secret = read_or_create_secret(path)
    assert len(secret) == 64 and bytes.fromhex(secret.decode())
    assert path.stat().st_mode & 0o777 == 0o600
    assert read_or_create_secret(path) == secret


def test_nat_runner_user_keys_are_the_md5_ha1_of_the_realm(tmp_path: Path) -> None:
    store = Store(tmp_path / "voipsec.db")
    try:
        store.add_user("alice", PASSWORD, REALM)
        store.add_user("bob", "bob-secret-22", "other.realm")
        keys = UserKeys(store, REALM)
        assert keys("alice") == long_term_key("alice", REALM, PASSWORD)
        assert keys("bob") is None
        assert keys("nobody") is None
    finally:
        store.close()


def test_nat_runner_without_configuration_fails_with_one_line(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "voipsec.nat", "--dir", str(tmp_path / "missing")],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1
    assert proc.stderr.startswith("error: ") and "voipsec.toml" in proc.stderr


def test_nat_package_loads_no_module_of_its_own() -> None:
    """A relay worker imports voipsec.nat.peerfilter: the package must not drag the TURN
    server in with it (issue 15: a worker's start time). Checked in a fresh interpreter."""
    code = (
        "import sys, voipsec.nat.peerfilter; "
        "print(sorted(m for m in sys.modules if m.startswith('voipsec.nat')))"
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    )
    assert out.stdout.strip() == "['voipsec.nat', 'voipsec.nat.peerfilter']"

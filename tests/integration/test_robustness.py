"""Garbage, oversized and slow input on the TLS port: no crash, no blocked neighbours."""

from __future__ import annotations

import contextlib
import os
import socket
import ssl
import threading
import time

import pytest

from tests.conftest import ALICE
from tests.peers.sipclient import TlsSipClient
from tests.peers.voipsec import VoipsecServer
from voipsec.sip.limits import MAX_BODY_SIZE, MAX_HEADER_BYTES

pytestmark = pytest.mark.peers


@pytest.fixture(scope="module")
def server(shared_server: VoipsecServer) -> VoipsecServer:
    """One server takes every attack of this module in turn: each test proves it still
    serves a well-behaved client after its own attack (and after the ones before)."""
    return shared_server


def _tls(server: VoipsecServer) -> ssl.SSLSocket:
    ctx = ssl.create_default_context(cafile=str(server.ca))
    raw = socket.create_connection((server.host, server.port), timeout=10)
    return ctx.wrap_socket(raw, server_hostname="localhost")


def _assert_alive(server: VoipsecServer) -> None:
    """A well-behaved client still registers: the server neither crashed nor blocks."""
    assert server.proc is not None and server.proc.poll() is None
    with TlsSipClient(server.host, server.port, server.ca) as client:
        assert client.register(*ALICE).status == 200


def _read_until_closed(sock: ssl.SSLSocket) -> bytes:
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except (ConnectionError, ssl.SSLError):
            break
        if not chunk:
            break
        data += chunk
    return data


def test_garbage_random_bytes_closes_that_connection_only(server: VoipsecServer) -> None:
    sock = _tls(server)
    sock.sendall(os.urandom(4096).replace(b"\r\n\r\n", b"xxxx") + b"\r\n\r\n")
    _read_until_closed(sock)  # no Content-Length on a stream: framing error, closed
    sock.close()
    _assert_alive(server)


def test_garbage_broken_request_gets_400(server: VoipsecServer) -> None:
    with TlsSipClient(server.host, server.port, server.ca) as client:
        client.send(
            b"REGISTER sip:localhost SIP/2.0\r\nVia: SIP/2.0/TLS 127.0.0.1:1;branch=z9hG4bKa\r\n"
            b"From: <sip:a@localhost>;tag=1\r\nTo: <sip:a@localhost>\r\nCall-ID: x\r\n"
            b"CSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
        )
        response = client.receive()
        assert (response.status, response.reason) == (400, "Bad Request")
        # The connection stays usable after an answered error.
        assert client.register(*ALICE).status == 200


def test_oversized_header_section_refused_with_513(server: VoipsecServer) -> None:
    sock = _tls(server)
    head = (
        b"REGISTER sip:localhost SIP/2.0\r\nVia: SIP/2.0/TLS 127.0.0.1:1;branch=z9hG4bKb\r\n"
        b"From: <sip:a@localhost>;tag=1\r\nTo: <sip:a@localhost>\r\nCall-ID: y\r\n"
        b"CSeq: 1 REGISTER\r\n"
    )
    sock.sendall(head + b"X-Pad: " + b"a" * (MAX_HEADER_BYTES + 10))
    reply = _read_until_closed(sock)
    sock.close()
    assert reply.startswith(b"SIP/2.0 513 Message Too Large\r\n")
    _assert_alive(server)


def test_oversized_body_refused_with_413(server: VoipsecServer) -> None:
    sock = _tls(server)
    sock.sendall(
        b"MESSAGE sip:alice@localhost SIP/2.0\r\nVia: SIP/2.0/TLS 127.0.0.1:1;branch=z9hG4bKc\r\n"
        b"From: <sip:a@localhost>;tag=1\r\nTo: <sip:a@localhost>\r\nCall-ID: z\r\n"
        b"CSeq: 1 MESSAGE\r\nContent-Length: " + str(MAX_BODY_SIZE + 1).encode() + b"\r\n\r\n"
    )
    reply = _read_until_closed(sock)
    sock.close()
    assert reply.startswith(b"SIP/2.0 413 Request Entity Too Large\r\n")
    _assert_alive(server)


def test_slow_byte_at_a_time_sender_does_not_block_others(server: VoipsecServer) -> None:
    message = (
        b"OPTIONS sip:localhost SIP/2.0\r\nVia: SIP/2.0/TLS 127.0.0.1:1;branch=z9hG4bKd\r\n"
        b"From: <sip:a@localhost>;tag=1\r\nTo: <sip:localhost>\r\nCall-ID: slow\r\n"
        b"CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )
    slow = _tls(server)
    stop = threading.Event()
    sent = threading.Event()

    def dribble() -> None:
        for byte in message:
            if stop.is_set():
                return
            slow.sendall(bytes([byte]))
            time.sleep(0.01)  # pacing of the attacker, not synchronisation
        sent.set()

    worker = threading.Thread(target=dribble)
    worker.start()
    try:
        # While the slow client is mid-message, others register normally.
        for _ in range(3):
            _assert_alive(server)
        assert not sent.is_set(), "the slow sender finished too early to prove anything"
    finally:
        stop.set()
        worker.join()
    slow.close()


def test_slow_sender_message_still_answered_when_complete(server: VoipsecServer) -> None:
    message = (
        b"OPTIONS sip:localhost SIP/2.0\r\nVia: SIP/2.0/TLS 127.0.0.1:1;branch=z9hG4bKe\r\n"
        b"From: <sip:a@localhost>;tag=1\r\nTo: <sip:localhost>\r\nCall-ID: slow2\r\n"
        b"CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )
    with TlsSipClient(server.host, server.port, server.ca) as client:
        for byte in message:
            client.send(bytes([byte]))
        response = client.receive()
    assert (response.status, response.reason) == (200, "OK")
    assert (
        response.headers.get("allow")
        == "INVITE, ACK, BYE, CANCEL, OPTIONS, REGISTER, UPDATE, INFO, REFER"
    )


def test_garbage_before_tls_handshake_does_not_crash(server: VoipsecServer) -> None:
    raw = socket.create_connection((server.host, server.port), timeout=10)
    raw.sendall(b"REGISTER sip:plaintext SIP/2.0\r\n\r\n" * 10)
    with contextlib.suppress(OSError):
        raw.recv(100)
    raw.close()
    _assert_alive(server)

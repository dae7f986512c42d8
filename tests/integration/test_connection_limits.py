"""Connection limits of the TLS listener, each exceeded against a real server."""

from __future__ import annotations

import socket
import ssl
import time
from pathlib import Path

import pytest

from tests.conftest import ALICE
from tests.peers.proc import wait_for
from tests.peers.sipclient import TlsSipClient
from tests.peers.voipsec import VoipsecServer, prepare, serving

pytestmark = pytest.mark.peers


def _limited(tmp_path: Path, **settings: str) -> VoipsecServer:
    return prepare(
        tmp_path / "data", users=[ALICE], settings=[(f"tls.{k}", v) for k, v in settings.items()]
    )


def _tls(server: VoipsecServer, source: str = "127.0.0.1") -> ssl.SSLSocket:
    ctx = ssl.create_default_context(cafile=str(server.ca))
    raw = socket.create_connection(
        (server.host, server.port), timeout=10, source_address=(source, 0)
    )
    return ctx.wrap_socket(raw, server_hostname="localhost")


def _closed_by_server(sock: socket.socket, deadline: float = 10.0) -> bool:
    sock.settimeout(deadline)
    try:
        return sock.recv(10) == b""
    except (ConnectionError, ssl.SSLError):
        return True


def test_limit_connections_per_ip_refuses_the_extra_one_only(tmp_path: Path) -> None:
    with serving(_limited(tmp_path, max_connections_per_ip="2")) as server:
        first, second = _tls(server), _tls(server)
        for sock in (first, second):
            sock.sendall(b"\r\n\r\n")
            assert sock.recv(2) == b"\r\n"
        # Counted when accepted: the extra one is closed before any TLS handshake.
        third = socket.create_connection((server.host, server.port), timeout=10)
        assert _closed_by_server(third)
        # Another source address has its own allowance.
        other = _tls(server, source="127.0.0.2")
        other.sendall(b"\r\n\r\n")
        assert other.recv(2) == b"\r\n"
        for sock in (first, second, third, other):
            sock.close()
        wait_for(lambda: "refused connection from 127.0.0.1" in server.log_text(), what="log")


def test_limit_handshake_timeout_closes_silent_tcp(tmp_path: Path) -> None:
    with serving(_limited(tmp_path, handshake_timeout="1.0")) as server:
        raw = socket.create_connection((server.host, server.port), timeout=10)
        started = time.monotonic()
        assert _closed_by_server(raw)
        assert time.monotonic() - started < 9  # closed by the 1 s timeout, not ours
        raw.close()


def test_limit_idle_timeout_closes_silent_tls(tmp_path: Path) -> None:
    with serving(_limited(tmp_path, idle_timeout="2.0")) as server:
        with TlsSipClient(server.host, server.port, server.ca) as client:
            assert client.register(*ALICE).status == 200
            assert _closed_by_server(client.sock)
        wait_for(lambda: server.proc is not None and server.proc.poll() is None, what="alive")


def test_limit_message_timeout_cuts_a_slow_sender(tmp_path: Path) -> None:
    with serving(_limited(tmp_path, message_timeout="2.0")) as server:
        slow = _tls(server)
        slow.sendall(b"OPTIONS sip:localhost SIP/2.0\r\nVia: SIP/2.0/TLS 127.0.0.1:1")
        assert _closed_by_server(slow)
        slow.close()
        wait_for(
            lambda: "message incomplete too long" in server.log_text(), what="slow close logged"
        )
        with TlsSipClient(server.host, server.port, server.ca) as client:
            assert client.register(*ALICE).status == 200


def test_limit_write_buffer_peer_that_never_reads_does_not_hurt_others(
    server: VoipsecServer,
) -> None:
    """MAX_WRITE_BUFFER: answers to a peer that does not read pile up to the limit, then
    the server stops reading from it; other clients are served meanwhile."""
    # A long Via parameter is echoed in every answer: 2 KB per response outgrows the
    # kernel's socket buffers long before the loop ends, whatever their autotuning.
    pad = b"x" * 2000
    options = (
        b"OPTIONS sip:localhost SIP/2.0\r\nVia: SIP/2.0/TLS 127.0.0.1:1;branch=z9hG4bKw%d;"
        + pad
        + b"\r\n"
        b"From: <sip:a@localhost>;tag=1\r\nTo: <sip:localhost>\r\nCall-ID: w%d\r\n"
        b"CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )
    hog = _tls(server)
    hog.setblocking(False)
    sent = 0
    stalled_at = None
    hog.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    deadline = time.monotonic() + 30
    for i in range(20_000):  # bounded: 20k requests (40 MB of answers) or 30 s
        if time.monotonic() > deadline:
            break
        try:
            hog.sendall(options % (i, i))
            sent += 1
        except (BlockingIOError, ssl.SSLWantWriteError):
            stalled_at = i  # the server stopped reading: our send buffer filled
            break
    assert stalled_at is not None, f"server read all {sent} requests without being read"
    with TlsSipClient(server.host, server.port, server.ca) as client:
        assert client.register(*ALICE).status == 200
    hog.close()

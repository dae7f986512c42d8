"""Connection limits of the TLS listener, each exceeded against a real server."""

from __future__ import annotations

import select
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ALICE
from tests.peers.proc import wait_for
from tests.peers.sipclient import TlsSipClient
from tests.peers.voipsec import (
    VoipsecServer,
    prepare,
    serving,
    set_zones,
    stored_listing,
)

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


@pytest.fixture(scope="module")
def timeouts_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VoipsecServer]:
    """Idle and message timeouts of 2 s, one server for both tests: a silent complete
    connection meets only the idle one, and a connection mid-message meets the message
    one first (its partial_since is never later than its last activity, and the sweep
    checks it first: transport/connections.py ``sweep``)."""
    prepared = _limited(
        tmp_path_factory.mktemp("timeouts"), idle_timeout="2.0", message_timeout="2.0"
    )
    with serving(prepared) as server:
        yield server


def test_limit_idle_timeout_closes_silent_tls(timeouts_server: VoipsecServer) -> None:
    server = timeouts_server
    with TlsSipClient(server.host, server.port, server.ca) as client:
        assert client.register(*ALICE).status == 200
        assert _closed_by_server(client.sock)
    wait_for(lambda: server.proc is not None and server.proc.poll() is None, what="alive")


def test_limit_message_timeout_cuts_a_slow_sender(timeouts_server: VoipsecServer) -> None:
    server = timeouts_server
    slow = _tls(server)
    slow.sendall(b"OPTIONS sip:localhost SIP/2.0\r\nVia: SIP/2.0/TLS 127.0.0.1:1")
    assert _closed_by_server(slow)
    slow.close()
    wait_for(lambda: "message incomplete too long" in server.log_text(), what="slow close logged")
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


# -- issue 13, finding 8: counted at accept, before the TLS handshake ---------------------


def _closed_count(socks: list[socket.socket], want: int, deadline: float) -> int:
    """How many of ``socks`` the server closed (EOF or reset), waiting until ``want``
    are or ``deadline`` seconds pass."""
    closed: set[int] = set()
    end = time.monotonic() + deadline
    while len(closed) < want and time.monotonic() < end:
        waiting = [s for i, s in enumerate(socks) if i not in closed]
        readable, _, _ = select.select(waiting, [], [], max(0.0, end - time.monotonic()))
        for sock in readable:
            try:
                data = sock.recv(1)
            except ConnectionError:
                data = b""
            assert data == b"", "the server sent bytes before any ClientHello"
            closed.add(socks.index(sock))
    return len(closed)


def _soft_hard_nofile(pid: int) -> tuple[str, str]:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            soft, hard = line.split()[3:5]
            return soft, hard
    raise AssertionError("no open-file limit in /proc")


def test_limit_half_open_connections_per_ip_closed_at_accept(tmp_path: Path) -> None:
    # The handshake timeout is long: what closes the excess is the count at accept.
    prepared = _limited(tmp_path, max_connections_per_ip="5", handshake_timeout="60")
    with serving(prepared) as server:
        assert server.proc is not None
        soft, hard = _soft_hard_nofile(server.proc.pid)
        assert soft == hard, "serve did not raise its open-file limit to the hard limit"
        half_open = [
            socket.create_connection(
                (server.host, server.port), timeout=10, source_address=("127.0.0.6", 0)
            )
            for _ in range(20)
        ]
        try:
            assert _closed_count(half_open, 15, deadline=5.0) == 15
            # Exactly the five allowed ones are still open, waiting for a ClientHello.
            still_open = 0
            for sock in half_open:
                sock.setblocking(False)
                try:
                    sock.recv(1)
                except BlockingIOError:
                    still_open += 1
                except (ConnectionError, OSError):
                    pass
            assert still_open == 5
            with TlsSipClient(server.host, server.port, server.ca) as client:
                assert client.register(*ALICE).status == 200
        finally:
            for sock in half_open:
                sock.close()
        assert "refused connection from 127.0.0.6" in server.log_text()
        assert "open-file limit" in server.log_text()


def test_limit_handshake_flood_from_one_address_is_banned(tmp_path: Path) -> None:
    prepared = _limited(tmp_path)
    # Loopback untrusted, with a slow refill (4 per 10 s) so that the flood outruns it
    # however slow the handshakes are; 127.0.0.1 (the readiness probe) has room.
    set_zones(
        prepared.data_dir,
        '[[zones]]\nname = "lab"\ncidrs = ["127.0.0.1/32"]\nrate_requests = 2000\n\n'
        '[[zones]]\nname = "internet"\ncidrs = ["0.0.0.0/0", "::/0"]\n'
        "rate_requests = 4\nrate_window = 10.0\nrate_ban = 600\n",
    )
    flooder = "127.0.0.7"
    with serving(prepared) as server:
        ctx = ssl.create_default_context(cafile=str(server.ca))
        completed = 0
        for _ in range(200):  # bounded: 200 connections, each closed after its handshake
            try:
                raw = socket.create_connection(
                    (server.host, server.port), timeout=5, source_address=(flooder, 0)
                )
                with ctx.wrap_socket(raw, server_hostname="localhost"):
                    completed += 1
            except (ConnectionError, ssl.SSLError, TimeoutError):
                continue
        # The zone allows 4 new connections per 10 s; the rest were refused.
        assert 4 <= completed <= 6, completed
        listing = stored_listing(
            server.data_dir, "bans", lambda out: f"\n{flooder}  " in f"\n{out}"
        )
        line = next(line for line in listing.splitlines() if line.startswith(f"{flooder}  "))
        assert line.endswith("  connection rate limit of zone internet"), line
        # Another address is fine.
        with TlsSipClient(server.host, server.port, server.ca) as client:
            assert client.register(*ALICE).status == 200

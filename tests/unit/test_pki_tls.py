"""The server TLS context's policy knobs (voipsec.pki.tls)."""

from __future__ import annotations

import socket
import ssl
import threading
from pathlib import Path

import pytest

from voipsec.config import MAX_SESSION_TICKETS
from voipsec.pki.ca import CaPaths, ServerPaths, create_ca, create_server_certificate
from voipsec.pki.tls import server_context


@pytest.fixture(scope="module")
def paths(tmp_path_factory: pytest.TempPathFactory) -> ServerPaths:
    data = tmp_path_factory.mktemp("pki")
    ca, server = CaPaths.in_dir(data), ServerPaths.in_dir(data)
    create_ca(ca, "test CA")
    create_server_certificate(ca, server, names=("localhost",), addresses=("127.0.0.1",))
    return server


def test_pki_tls_server_context_sends_no_tls13_tickets_by_default(paths: ServerPaths) -> None:
    ctx = server_context(cert=paths.cert, key=paths.key, client_ca=None)
    assert ctx.num_tickets == 0


@pytest.mark.parametrize("tickets", [0, 2, MAX_SESSION_TICKETS])
def test_pki_tls_server_context_session_tickets(paths: ServerPaths, tickets: int) -> None:
    ctx = server_context(cert=paths.cert, key=paths.key, client_ca=None, session_tickets=tickets)
    assert ctx.num_tickets == tickets


@pytest.mark.parametrize("tickets", [-1, MAX_SESSION_TICKETS + 1])
def test_pki_tls_server_context_session_tickets_out_of_range(
    paths: ServerPaths, tickets: int
) -> None:
    with pytest.raises(ValueError, match=f"session_tickets must be 0..{MAX_SESSION_TICKETS}, not"):
        server_context(
            cert=Path("unused.crt"), key=Path("unused.key"), client_ca=None, session_tickets=tickets
        )


def _tls12_handshakes(ctx: ssl.SSLContext) -> tuple[bool, bool]:
    """Two TLS 1.2 handshakes over loopback, the second resuming the first's session:
    (whether the first session carried a ticket, whether the second was resumed)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(2)

        def serve() -> None:
            for _ in range(2):
                conn, _ = listener.accept()
                with ctx.wrap_socket(conn, server_side=True) as tls:
                    tls.recv(1)

        server = threading.Thread(target=serve, daemon=True)
        server.start()
        client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        client.check_hostname = False
        client.verify_mode = ssl.CERT_NONE
        client.maximum_version = ssl.TLSVersion.TLSv1_2
        address = listener.getsockname()
        with client.wrap_socket(socket.create_connection(address)) as first:
            first.send(b"x")
            session = first.session
        assert session is not None
        with client.wrap_socket(socket.create_connection(address), session=session) as second:
            second.send(b"x")
            reused = second.session_reused
        server.join(timeout=10)
    return session.has_ticket, reused


def test_pki_tls_default_gives_tls12_no_ticket_and_no_resumption(paths: ServerPaths) -> None:
    """No ticket key outlives a connection by default (forward secrecy); the standard
    ssl module keeps no server-side session-id cache either, so nothing resumes."""
    ctx = server_context(cert=paths.cert, key=paths.key, client_ca=None, client_cert="off")
    assert _tls12_handshakes(ctx) == (False, False)


def test_pki_tls_session_tickets_setting_gives_tls12_tickets(paths: ServerPaths) -> None:
    ctx = server_context(
        cert=paths.cert, key=paths.key, client_ca=None, client_cert="off", session_tickets=2
    )
    assert _tls12_handshakes(ctx) == (True, True)

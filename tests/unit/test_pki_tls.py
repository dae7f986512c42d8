"""The server TLS context's policy knobs (voipsec.pki.tls)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import socket
import ssl
import threading
from pathlib import Path

import pytest

from voipsec.config import MAX_SESSION_TICKETS
from voipsec.pki.ca import (
    CaPaths,
    ServerPaths,
    create_ca,
    create_server_certificate,
    issue_certificate,
)
from voipsec.pki.identity import PeerIdentity, peer_identity
from voipsec.pki.tls import (
    X509_V_FLAG_NO_CHECK_TIME,
    ClientCertificateRefused,
    check_peer_validity,
    server_context,
)


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


# -- client certificates' validity, checked after the handshake (issue 18) ----------

CA_WINDOW = (1_000_000.0, 2_000_000_000.0)


def _peer(not_before: str, not_after: str) -> dict[str, object]:
    """What ``getpeercert()`` gives for a verified certificate (the fields used)."""
    return {
        "serialNumber": "0AB1",
        "subject": ((("commonName", "alice"),),),
        "notBefore": not_before,
        "notAfter": not_after,
    }


def test_pki_tls_check_peer_validity_accepts_a_valid_certificate() -> None:
    cert = _peer("Dec  1 00:00:00 2026 GMT", "Dec  1 00:00:00 2027 GMT")
    now = ssl.cert_time_to_seconds("Dec  6 12:00:00 2026 GMT")
    assert check_peer_validity(cert, now=now, ca_window=CA_WINDOW) is None
    assert check_peer_validity(None, now=now, ca_window=CA_WINDOW) is None


@pytest.mark.parametrize(
    ("not_before", "not_after", "now", "ca_window", "message"),
    [
        (
            "Dec  1 00:00:00 2026 GMT",
            "Dec  5 00:00:00 2026 GMT",
            "Dec  6 12:00:00 2026 GMT",
            CA_WINDOW,
            "client certificate expired (serial ab1, subject commonName=alice)",
        ),
        (
            "Dec  7 00:00:00 2026 GMT",
            "Dec  9 00:00:00 2026 GMT",
            "Dec  6 12:00:00 2026 GMT",
            CA_WINDOW,
            "client certificate not yet valid (serial ab1, subject commonName=alice)",
        ),
        (  # the CA expired first: OpenSSL no longer checks its dates, we do
            "Dec  1 00:00:00 2026 GMT",
            "Dec  1 00:00:00 2027 GMT",
            "Dec  6 12:00:00 2026 GMT",
            (0.0, 1_000_000.0),
            "client certificate expired (serial ab1, subject commonName=alice)",
        ),
        (  # unreadable dates fail closed
            "yesterday",
            "tomorrow",
            "Dec  6 12:00:00 2026 GMT",
            CA_WINDOW,
            "client certificate expired (serial ab1, subject commonName=alice)",
        ),
    ],
)
def test_pki_tls_check_peer_validity_refuses(
    not_before: str, not_after: str, now: str, ca_window: tuple[float, float], message: str
) -> None:
    with pytest.raises(ClientCertificateRefused) as error:
        check_peer_validity(
            _peer(not_before, not_after),
            now=ssl.cert_time_to_seconds(now),
            ca_window=ca_window,
        )
    assert str(error.value) == message
    assert error.value.serial == 0xAB1


@pytest.fixture(scope="module")
def devices(paths: ServerPaths) -> Path:
    """alice: valid; old: expired yesterday (issued with a past ``now``)."""
    ca = CaPaths.in_dir(paths.cert.parent.parent)
    out = paths.cert.parent.parent / "devices"
    out.mkdir()
    past = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=2)
    for name, now in (("alice", None), ("old", past)):
        cert, key = issue_certificate(ca, common_name=name, server=False, days=1, now=now)
        (out / f"{name}.crt").write_bytes(cert)
        (out / f"{name}.key").write_bytes(key)
    return out


def _mtls_context(paths: ServerPaths) -> ssl.SSLContext:
    return server_context(
        cert=paths.cert,
        key=paths.key,
        client_ca=CaPaths.in_dir(paths.cert.parent.parent).cert,
        client_cert="required",
    )


def _client(devices: Path, name: str) -> ssl.SSLContext:
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.check_hostname = False
    client.verify_mode = ssl.CERT_NONE
    client.load_cert_chain(devices / f"{name}.crt", devices / f"{name}.key")
    return client


async def _asyncio_handshake(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext) -> object:
    """One handshake through asyncio's SSL protocol (as the listener runs it): None when
    it succeeded, else the exception ``connect_accepted_socket`` raised."""
    loop = asyncio.get_running_loop()
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.setblocking(False)
        port = listener.getsockname()[1]

        async def client() -> None:
            with contextlib.suppress(OSError):
                _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client_ctx)
                writer.close()

        task = asyncio.ensure_future(client())
        conn, _ = await loop.sock_accept(listener)
        try:
            transport, _ = await loop.connect_accepted_socket(
                asyncio.Protocol, conn, ssl=server_ctx, ssl_handshake_timeout=10
            )
            transport.close()
            outcome: object = None
        except ssl.SSLError as exc:
            outcome = exc
        await task
    return outcome


def test_pki_tls_asyncio_handshake_refuses_expired_client_certificate(
    paths: ServerPaths, devices: Path
) -> None:
    ctx = _mtls_context(paths)
    assert asyncio.run(_asyncio_handshake(ctx, _client(devices, "alice"))) is None
    refused = asyncio.run(_asyncio_handshake(ctx, _client(devices, "old")))
    assert isinstance(refused, ClientCertificateRefused)
    assert str(refused).startswith("client certificate expired (serial ")
    assert str(refused).endswith(", subject commonName=old)")
    assert refused.verify_code == 10


def test_pki_tls_blocking_handshake_refuses_expired_client_certificate(
    paths: ServerPaths, devices: Path
) -> None:
    ctx = _mtls_context(paths)
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = threading.Thread(
            target=_connect_quietly, args=(listener.getsockname(), _client(devices, "old"))
        )
        client.start()
        conn, _ = listener.accept()
        with pytest.raises(ClientCertificateRefused):
            ctx.wrap_socket(conn, server_side=True)
        client.join(timeout=10)


def _connect_quietly(address: tuple[str, int], ctx: ssl.SSLContext) -> None:
    with contextlib.suppress(OSError), ctx.wrap_socket(socket.create_connection(address)) as tls:
        tls.recv(1)


def test_pki_tls_context_without_client_certificates_keeps_openssl_time_checks(
    paths: ServerPaths,
) -> None:
    ctx = server_context(cert=paths.cert, key=paths.key, client_ca=None)
    assert not ctx.verify_flags & X509_V_FLAG_NO_CHECK_TIME
    assert _mtls_context(paths).verify_flags & X509_V_FLAG_NO_CHECK_TIME


def test_pki_tls_peer_identity_reads_not_after() -> None:
    cert = _peer("Dec  1 00:00:00 2026 GMT", "Dec  5 00:00:00 2026 GMT")
    cert["subjectAltName"] = (("URI", "sip:alice@example.test"),)
    identity = peer_identity(cert)
    assert identity == PeerIdentity(
        serial=0xAB1,
        aor="alice@example.test",
        subject="commonName=alice",
        not_after=ssl.cert_time_to_seconds("Dec  5 00:00:00 2026 GMT"),
    )
    for odd in ("Dec  5 00:00:00 2026 CET", "Dez  5 00:00:00 2026 GMT", "5 Dec 2026"):
        cert["notAfter"] = odd
        unknown = peer_identity(cert)
        assert unknown is not None and unknown.not_after is None
    del cert["notAfter"]
    unknown = peer_identity(cert)
    assert unknown is not None and unknown.not_after is None

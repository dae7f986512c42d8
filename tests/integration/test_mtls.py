"""Device identity: voipsec's CA, mutual TLS, revocation, AOR binding, reload.

Real peers: openssl s_client (handshakes, resumption, certificates) and the voipsec
command itself (`ca issue`, `ca revoke`); baresip with a device certificate is in
test_baresip_mtls.py.
"""

from __future__ import annotations

import contextlib
import signal
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509

from tests.conftest import ALICE, BOB
from tests.peers.openssl import s_client
from tests.peers.proc import wait_for
from tests.peers.sipclient import TlsSipClient
from tests.peers.voipsec import VoipsecServer, prepare, serving, voipsec
from voipsec.pki.ca import CaPaths, create_ca, issue_certificate

pytestmark = pytest.mark.peers

OPTIONS = (
    b"OPTIONS sip:localhost SIP/2.0\r\nVia: SIP/2.0/TLS 127.0.0.1:9;branch=z9hG4bKm1\r\n"
    b"From: <sip:x@localhost>;tag=1\r\nTo: <sip:localhost>\r\nCall-ID: mtls\r\n"
    b"CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
)


#: The user whose certificate the revocation test revokes on the shared ``required``.
CAROL = ("carol", "carol-secret-333")


def _mtls_server(
    tmp_path: Path, *, policy: str = "digest", mode: str = "required"
) -> VoipsecServer:
    prepared = prepare(
        tmp_path / "data", users=[ALICE, BOB], settings=[("auth.policy", f'"{policy}"')]
    )
    voipsec(
        "config",
        "set",
        "sip.listen",
        f'["tls:127.0.0.1:{prepared.port};client_cert={mode}"]',
        data_dir=prepared.data_dir,
    )
    for name in ("alice", "bob"):
        voipsec(
            "ca",
            "issue",
            name,
            "--out",
            str(tmp_path / name),
            "--p12-password",
            "p12-secret",
            data_dir=prepared.data_dir,
        )
    return prepared


@dataclass(frozen=True)
class Running:
    """A serving mTLS server and the directory its device certificates were issued to."""

    server: VoipsecServer
    certs: Path
    #: ``voipsec ca list`` once alice's and bob's certificates were issued, before
    #: any test ran (a test may issue and revoke one of its own).
    issued: list[str]


@contextlib.contextmanager
def _running(tmp_path: Path, *, policy: str = "digest") -> Iterator[Running]:
    with serving(_mtls_server(tmp_path, policy=policy)) as server:
        listing = voipsec("ca", "list", data_dir=server.data_dir).stdout.splitlines()
        yield Running(server, tmp_path, listing)


@pytest.fixture(scope="module")
def required(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    """client_cert=required, auth.policy digest: shared by the tests that connect and
    register as alice and bob, and by the revocation test (it revokes a certificate
    of a user of its own, carol)."""
    with _running(tmp_path_factory.mktemp("required")) as running:
        yield running


@pytest.fixture(scope="module")
def cert_or_digest(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    """client_cert=required, auth.policy cert_or_digest, shared like ``required``."""
    with _running(tmp_path_factory.mktemp("cert_or_digest"), policy="cert_or_digest") as running:
        yield running


def _cert(tmp_path: Path, name: str) -> list[str]:
    return [
        "-cert",
        str(tmp_path / name / f"{name}.crt"),
        "-key",
        str(tmp_path / name / f"{name}.key"),
    ]


def _answered(result_output: str) -> bool:
    return "SIP/2.0 200 OK" in result_output


def test_mtls_ca_issue_writes_bundle(required: Running) -> None:
    out = required.certs / "alice"
    assert sorted(p.name for p in out.iterdir()) == [
        "alice.crt",
        "alice.key",
        "alice.p12",
        "ca.crt",
    ]
    assert (out / "alice.key").stat().st_mode & 0o777 == 0o600
    cert = x509.load_pem_x509_certificate((out / "alice.crt").read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == ["sip:alice@localhost"]
    from cryptography.hazmat.primitives.serialization import pkcs12

    bundle = pkcs12.load_pkcs12((out / "alice.p12").read_bytes(), b"p12-secret")
    assert bundle.cert is not None and bundle.cert.certificate == cert
    listing = required.issued
    assert [line.split()[0] for line in listing] == ["alice", "bob"]
    assert all(" ok " in line for line in listing)


def test_mtls_required_without_certificate_never_reaches_sip(required: Running) -> None:
    server = required.server
    result = s_client(server.host, server.port, ca=server.ca, send=OPTIONS)
    assert not _answered(result.output)
    with_cert = s_client(
        server.host, server.port, ca=server.ca, send=OPTIONS, options=_cert(required.certs, "alice")
    )
    assert _answered(with_cert.output)


def test_mtls_certificate_from_another_ca_refused(tmp_path: Path, required: Running) -> None:
    other = CaPaths(cert=tmp_path / "other" / "ca.crt", key=tmp_path / "other" / "ca.key")
    create_ca(other, "someone else's CA")
    cert_pem, key_pem = issue_certificate(
        other, common_name="alice", uris=("sip:alice@localhost",), server=False
    )
    (tmp_path / "other" / "alice.crt").write_bytes(cert_pem)
    (tmp_path / "other" / "alice.key").write_bytes(key_pem)
    server = required.server
    result = s_client(
        server.host,
        server.port,
        ca=server.ca,
        send=OPTIONS,
        options=[
            "-cert",
            str(tmp_path / "other" / "alice.crt"),
            "-key",
            str(tmp_path / "other" / "alice.key"),
        ],
    )
    assert not _answered(result.output)


def test_mtls_revoked_certificate_refused_and_open_connection_closed(
    tmp_path: Path, required: Running
) -> None:
    # On the shared server: carol, a user of this test's own, gets the certificate
    # that is revoked (the other tests connect as alice and bob).
    server = required.server
    voipsec("user", "add", CAROL[0], "--password", CAROL[1], data_dir=server.data_dir)
    voipsec("ca", "issue", "carol", "--out", str(tmp_path / "carol"), data_dir=server.data_dir)
    carol = tmp_path / "carol"
    client = TlsSipClient(
        server.host, server.port, server.ca, cert=carol / "carol.crt", key=carol / "carol.key"
    )
    assert client.ping() == b"\r\n"
    revoked = voipsec("ca", "revoke", "carol", data_dir=server.data_dir)
    assert revoked.stdout.startswith("revoked carol (serial ")
    client.sock.settimeout(10)
    # The server closes the open connection of the revoked device within seconds.
    assert client.sock.recv(10) == b""
    client.close()
    again = s_client(
        server.host, server.port, ca=server.ca, send=OPTIONS, options=_cert(tmp_path, "carol")
    )
    assert not _answered(again.output)
    bob = s_client(
        server.host, server.port, ca=server.ca, send=OPTIONS, options=_cert(required.certs, "bob")
    )
    assert _answered(bob.output)
    wait_for(
        lambda: "certificate" in server.log_text() and "was revoked" in server.log_text(),
        what="revocation logged",
    )


def test_mtls_alice_certificate_cannot_register_bob(required: Running) -> None:
    server = required.server
    alice = required.certs / "alice"
    with TlsSipClient(
        server.host, server.port, server.ca, cert=alice / "alice.crt", key=alice / "alice.key"
    ) as client:
        refused = client.register(*BOB)
        assert (refused.status, refused.reason) == (403, "Certificate Does Not Match AOR")
        assert client.register(*ALICE).status == 200
    server.wait_bindings("alice", 1)
    assert server.bindings("bob") == []


def test_mtls_cert_or_digest_registers_without_password(cert_or_digest: Running) -> None:
    server = cert_or_digest.server
    alice = cert_or_digest.certs / "alice"
    with TlsSipClient(
        server.host, server.port, server.ca, cert=alice / "alice.crt", key=alice / "alice.key"
    ) as client:
        assert client.register("alice", None).status == 200


def test_mtls_cert_or_digest_certificate_does_not_register_another_case(
    cert_or_digest: Running,
) -> None:
    """User parts compare exactly (RFC 3261 §19.1.4): alice's certificate registered a
    separate, password-less user "ALICE" (issue 13, finding 11)."""
    server = cert_or_digest.server
    alice = cert_or_digest.certs / "alice"
    with TlsSipClient(
        server.host, server.port, server.ca, cert=alice / "alice.crt", key=alice / "alice.key"
    ) as client:
        refused = client.register("ALICE", None)
        assert (refused.status, refused.reason) == (403, "Certificate Does Not Match AOR")
        assert client.register("alice", None).status == 200
    users = voipsec("user", "list", "--format", "json", data_dir=server.data_dir).stdout
    assert "ALICE" not in users


def test_mtls_cert_and_digest_demands_both(tmp_path: Path) -> None:
    # A server of its own: client_cert=optional with auth.policy cert_and_digest is a
    # configuration no other test here runs under.
    with serving(_mtls_server(tmp_path, policy="cert_and_digest", mode="optional")) as server:
        with TlsSipClient(server.host, server.port, server.ca) as no_cert:
            refused = no_cert.register(*ALICE)
            assert (refused.status, refused.reason) == (403, "Certificate Required")
        alice = tmp_path / "alice"
        with TlsSipClient(
            server.host, server.port, server.ca, cert=alice / "alice.crt", key=alice / "alice.key"
        ) as client:
            assert client.register("alice", None).status == 401
            assert client.register(*ALICE).status == 200


#: The days of the ``tls_server``'s server certificate: under pki.expiry_warning_days.
EXPIRING_DAYS = 10


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VoipsecServer]:
    """No client certificates; alice; tls.session_tickets = 2 (for the resumption
    test) and a server certificate that expires in EXPIRING_DAYS (for the warning
    test). Shared by the three tests below: none of them depends on what another
    changes (the SIGHUP test's new certificate is from the same CA; the warning is
    logged at the start; the resumption test makes the session it resumes)."""
    prepared = prepare(
        tmp_path_factory.mktemp("tls") / "data",
        users=[ALICE],
        settings=[("tls.session_tickets", "2")],
    )
    ca = CaPaths.in_dir(prepared.data_dir)
    cert_pem, key_pem = issue_certificate(
        ca,
        common_name="localhost",
        dns_names=("localhost",),
        ip_addresses=("127.0.0.1",),
        server=True,
        days=EXPIRING_DAYS,
    )
    (prepared.data_dir / "tls" / "server.crt").write_bytes(cert_pem)
    (prepared.data_dir / "tls" / "server.key").write_bytes(key_pem)
    with serving(prepared) as server:
        yield server


#: Resumption attempts at most (each lands on the ticket's worker with probability
#: 1/sip.workers: with two, 24 misses in a row happen once in 16 million runs).
RESUME_ATTEMPTS = 24


def test_mtls_session_resumption_reported_as_reused(
    tmp_path: Path, tls_server: VoipsecServer
) -> None:
    """With tickets switched on (tls.session_tickets; the default 0 sends none, in TLS
    1.3 or 1.2: test_tls_policy.py and tests/unit/test_pki_tls.py), a session resumes."""
    server = tls_server
    session = tmp_path / "session.pem"
    first = s_client(
        server.host,
        server.port,
        ca=server.ca,
        options=["-tls1_3", "-sess_out", str(session)],
        send=OPTIONS,
    )
    assert _answered(first.output)
    # With several signaling workers (docs/workers.md) a session resumes on the
    # worker that issued its ticket (each worker's TLS context has its own ticket
    # keys: the standard ssl module cannot share them), and the kernel spreads
    # connections over the workers by source port: a bounded number of tries lands
    # on it (1/2 each with two workers; one try with one worker).
    outputs: list[str] = []
    for _ in range(RESUME_ATTEMPTS):
        second = s_client(
            server.host,
            server.port,
            ca=server.ca,
            options=["-tls1_3", "-sess_in", str(session)],
        )
        outputs.append(second.output)
        if "Reused, TLSv1.3" in second.output:
            break
    assert "Reused, TLSv1.3" in outputs[-1], outputs[-1]


def test_mtls_sighup_new_certificate_for_new_connections_old_ones_continue(
    tls_server: VoipsecServer,
) -> None:
    server = tls_server
    established = TlsSipClient(server.host, server.port, server.ca)
    assert established.register(*ALICE).status == 200
    old_serial = established.sock.getpeercert()["serialNumber"]  # type: ignore[index]
    ca = CaPaths.in_dir(server.data_dir)
    cert_pem, key_pem = issue_certificate(
        ca,
        common_name="localhost",
        dns_names=("localhost",),
        ip_addresses=("127.0.0.1",),
        server=True,
    )
    (server.data_dir / "tls" / "server.crt").write_bytes(cert_pem)
    (server.data_dir / "tls" / "server.key").write_bytes(key_pem)
    reloads = server.log_text().count("server certificate reloaded")
    assert server.proc is not None
    server.proc.send_signal(signal.SIGHUP)
    wait_for(
        lambda: server.log_text().count("server certificate reloaded") > reloads, what="reload"
    )
    new_pem = ssl.get_server_certificate((server.host, server.port))
    assert x509.load_pem_x509_certificate(new_pem.encode()) == (
        x509.load_pem_x509_certificate(cert_pem)
    )
    # The connection established before the reload still works.
    assert established.ping() == b"\r\n"
    assert established.register(*ALICE).status == 200
    assert established.sock.getpeercert()["serialNumber"] == old_serial  # type: ignore[index]
    established.close()


def test_mtls_expiring_server_certificate_warns(tls_server: VoipsecServer) -> None:
    server = tls_server
    wait_for(lambda: f"expires in {EXPIRING_DAYS} days" in server.log_text(), what="expiry warning")
    assert "WARNING voipsec.pki: server certificate" in server.log_text()

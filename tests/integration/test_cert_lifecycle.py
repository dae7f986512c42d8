"""Device-certificate lifecycle against a running server (issue 18, item 5).

One server, ``tls.client_cert`` required on its listener (as in test_mtls.py). alice's
certificate is issued for 3 days: it is listed as expiring and alerted, renewed with
``voipsec ca renew`` and the phone registers with the new one. bob's certificate
expired yesterday (issued through the pki API with a past ``now``: no waiting): the
handshake is refused and the log names its serial and subject. Real peers: openssl
s_client, baresip (the phone that registers with the renewed certificate; with
``auth.policy = "cert_or_digest"`` the certificate is its credential) and the voipsec
command.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509

from tests.conftest import ALICE, BOB
from tests.peers.baresip import Baresip, account_line, free_sip_ports
from tests.peers.openssl import s_client
from tests.peers.proc import wait_for
from tests.peers.sipclient import TlsSipClient
from tests.peers.voipsec import VoipsecServer, prepare, serving, voipsec
from voipsec.pki.ca import CaPaths, issue_certificate

pytestmark = pytest.mark.peers

OPTIONS = (
    b"OPTIONS sip:localhost SIP/2.0\r\nVia: SIP/2.0/TLS 127.0.0.1:9;branch=z9hG4bKlc1\r\n"
    b"From: <sip:x@localhost>;tag=1\r\nTo: <sip:localhost>\r\nCall-ID: lifecycle\r\n"
    b"CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VoipsecServer]:
    tmp = tmp_path_factory.mktemp("lifecycle")
    prepared = prepare(
        tmp / "data", users=[ALICE, BOB], settings=[("auth.policy", '"cert_or_digest"')]
    )
    voipsec(
        "config",
        "set",
        "sip.listen",
        f'["tls:127.0.0.1:{prepared.port};client_cert=required"]',
        data_dir=prepared.data_dir,
    )
    voipsec(
        "ca", "issue", "alice", "--days", "3", "--out", str(tmp / "alice"),
        "--p12-password", "p12-secret", data_dir=prepared.data_dir,
    )  # fmt: skip
    _expired_certificate(CaPaths.in_dir(prepared.data_dir), tmp / "bob")
    with serving(prepared) as running:
        yield running


def _expired_certificate(ca: CaPaths, out: Path) -> None:
    """bob's certificate, valid for one day from two days ago."""
    past = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=2)
    _write_certificate(ca, out, "bob", past)


def _write_certificate(ca: CaPaths, out: Path, name: str, now: datetime.datetime) -> None:
    """NAME's one-day certificate issued at ``now`` (a past one: expired or expiring)."""
    cert, key = issue_certificate(
        ca, common_name=name, uris=(f"sip:{name}@localhost",), server=False, days=1, now=now
    )
    out.mkdir()
    (out / f"{name}.crt").write_bytes(cert)
    (out / f"{name}.key").write_bytes(key)


def _files(directory: Path, name: str) -> list[str]:
    return ["-cert", str(directory / f"{name}.crt"), "-key", str(directory / f"{name}.key")]


def _load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def _listing(server: VoipsecServer) -> list[str]:
    return voipsec("ca", "list", data_dir=server.data_dir).stdout.splitlines()


def test_cert_lifecycle_short_certificate_listed_and_alerted(server: VoipsecServer) -> None:
    serial = _load(server.data_dir.parent / "alice" / "alice.crt").serial_number
    [line] = [x for x in _listing(server) if f"serial {serial:x} " in x]
    assert re.fullmatch(
        rf"alice  sip:alice@localhost  serial {serial:x}  expiring in 3 days  until \S+"
        r"(  renewed by [0-9a-f]+)?",
        line,
    )

    def alerted() -> list[str]:
        lines = voipsec("alerts", "list", data_dir=server.data_dir).stdout.splitlines()
        return [x for x in lines if "  cert_expiry  " in x]

    wait_for(lambda: alerted() != [], what="the expiry alert")
    [alert] = alerted()
    assert alert.split("  ", 2)[1:] == [
        "cert_expiry",
        f"sip:alice@localhost  device certificate expiring: sip:alice@localhost: serial "
        f"{serial:x} expires in 3 day(s); renew it with `voipsec ca renew alice`; alerted",
    ]


def test_cert_lifecycle_renewed_certificate_registers(
    server: VoipsecServer, tmp_path: Path
) -> None:
    old_dir = server.data_dir.parent / "alice"
    assert (
        "SIP/2.0 200 OK"
        in s_client(
            server.host, server.port, ca=server.ca, send=OPTIONS, options=_files(old_dir, "alice")
        ).output
    )
    renewed = voipsec(
        "ca", "renew", "alice", "--out", str(tmp_path), "--p12-password", "p12-secret",
        data_dir=server.data_dir,
    )  # fmt: skip
    old, new = _load(old_dir / "alice.crt"), _load(tmp_path / "alice.crt")
    assert renewed.stdout.startswith(
        f"issued certificate for sip:alice@localhost (serial {new.serial_number:x}, "
    )
    assert new.subject == old.subject
    san = x509.SubjectAlternativeName
    assert new.extensions.get_extension_for_class(san) == old.extensions.get_extension_for_class(
        san
    )
    assert new.serial_number != old.serial_number
    assert new.public_key() != old.public_key()
    assert new.not_valid_after_utc - old.not_valid_after_utc > datetime.timedelta(days=800)
    listing = _listing(server)
    assert f"serial {old.serial_number:x}  expiring in 3 days" in listing[0]
    assert listing[0].endswith(f"  renewed by {new.serial_number:x}")
    assert f"serial {new.serial_number:x}  ok  until " in listing[1]
    bundle = tmp_path / "alice-bundle.pem"  # baresip's sip_certificate: certificate + key
    bundle.write_bytes(
        (tmp_path / "alice.crt").read_bytes() + (tmp_path / "alice.key").read_bytes()
    )
    sip_port, ctrl_port = free_sip_ports()
    with Baresip(
        tmp_path / "baresip",
        account_line=account_line(ALICE[0], ALICE[1], server_port=server.port),
        ca_file=server.ca,
        sip_port=sip_port,
        ctrl_port=ctrl_port,
        cert_file=bundle,
    ) as phone:
        event = phone.wait_event("REGISTER_OK", "REGISTER_FAIL", deadline=15.0)
        assert event["type"] == "REGISTER_OK", (event, phone.log_text()[-3000:])
        server.wait_bindings("alice", 1)


def test_cert_lifecycle_expired_certificate_refused_at_handshake(server: VoipsecServer) -> None:
    bob = server.data_dir.parent / "bob"
    serial = _load(bob / "bob.crt").serial_number
    refused = s_client(
        server.host, server.port, ca=server.ca, send=OPTIONS, options=_files(bob, "bob")
    )
    assert "SIP/2.0" not in refused.output
    expected = f"client certificate expired (serial {serial:x}, subject commonName=bob), not after "
    wait_for(lambda: expected in server.log_text(), what="the refusal logged")
    [line] = [x for x in server.log_text().splitlines() if expected in x]
    assert re.search(r"refused TLS connection from 127\.0\.0\.1:\d+: client certificate", line)


def test_cert_lifecycle_open_connection_closed_when_its_certificate_expires(
    server: VoipsecServer, tmp_path: Path
) -> None:
    """A phone keeps its connection for days: the handshake is not the only check."""
    expires_in = 5.0  # seconds: time enough for the handshake on a loaded machine
    now = datetime.datetime.now(datetime.UTC)
    issued = now - datetime.timedelta(days=1) + datetime.timedelta(seconds=expires_in)
    _write_certificate(CaPaths.in_dir(server.data_dir), tmp_path / "carol", "carol", issued)
    serial = _load(tmp_path / "carol" / "carol.crt").serial_number
    with TlsSipClient(
        server.host,
        server.port,
        server.ca,
        cert=tmp_path / "carol" / "carol.crt",
        key=tmp_path / "carol" / "carol.key",
    ) as phone:
        assert phone.ping() == b"\r\n"
        phone.sock.settimeout(expires_in + 10)
        assert phone.sock.recv(10) == b""  # closed by the server once expired
    expected = f"client certificate expired (serial {serial:x}, subject commonName=carol)"
    line = re.compile(
        # Worker 1's lines carry "[sip-1]": the connection may be either worker's.
        rf"INFO (\[sip-\d+\] )?voipsec\.transport: closing 127\.0\.0\.1:\d+: "
        rf"{re.escape(expected)}\n"
    )
    wait_for(lambda: line.search(server.log_text()) is not None, what="the closing logged")


def test_cert_lifecycle_cli_refusals(server: VoipsecServer) -> None:
    data = server.data_dir
    before = _listing(server)
    renew = voipsec("ca", "renew", "nobody", data_dir=data, check=False)
    assert (renew.returncode, renew.stderr) == (
        1,
        "voipsec: error: no certificate for 'nobody' to renew (issue one with `voipsec ca "
        "issue`)\n",
    )
    for days in ("0", "826"):
        issue = voipsec("ca", "issue", "alice", "--days", days, data_dir=data, check=False)
        assert issue.returncode == 2
        assert "Invalid value for '--days'" in issue.stderr
    assert _listing(server) == before  # nothing issued

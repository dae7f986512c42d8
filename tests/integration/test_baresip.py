"""baresip 1.0.0 (Debian baresip-core, libre 1.1.0) against a real ``voipsec serve``.

What baresip 1.0.0 can and cannot do, found by running it (see the SIP trace in each
test's ``baresip.log``):

* Digest: MD5 only. On a challenge with ``algorithm=SHA-256`` libre 1.1.0 gives up with
  ENOSYS ("Function not implemented") and sends nothing more; it stops at the *first*
  WWW-Authenticate it cannot answer, so it cannot register while SHA-256 is offered at
  all, even with MD5 offered second. Only ``auth.algorithms = ["MD5"]`` lets it in.
* TLS: it does not verify the server certificate at all (``sip_cafile`` is loaded but
  unused; verification arrived in baresip 1.1 / re 2.0, baresip issue #1122).
* When the server drops the TLS connection right after the handshake, it notices only
  at SIP Timer F (32 s, "Connection timed out"): tests watch the TCP socket instead.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.peers.baresip import Baresip, Event, account_line, free_sip_ports
from tests.peers.proc import wait_for
from tests.peers.voipsec import VoipsecServer, prepare, serving, voipsec
from voipsec.pki.ca import CaPaths, create_ca, issue_certificate

pytestmark = pytest.mark.peers

ALICE = ("alice", "alice-secret-1")
BOB = ("bob", "bob-secret-22")
#: The user of the untrusted-CA test on the shared ``md5_server`` (baresip 1.0 does
#: register there: its binding must not be alice's).
CAROL = ("carol", "carol-secret-333")
DEADLINE = 15.0
MD5_ONLY = ("auth.algorithms", '["MD5"]')
SHA256_AND_MD5 = ("auth.algorithms", '["SHA-256", "MD5"]')


# -- helpers -----------------------------------------------------------------------------


def start_baresip(
    workdir: Path,
    server: VoipsecServer,
    *,
    user: str = ALICE[0],
    password: str = ALICE[1],
    ca_file: Path | None = None,
    cert_file: Path | None = None,
) -> Baresip:
    sip_port, ctrl_port = free_sip_ports()
    return Baresip(
        workdir,
        account_line=account_line(user, password, server_port=server.port),
        ca_file=ca_file or server.ca,
        sip_port=sip_port,
        ctrl_port=ctrl_port,
        cert_file=cert_file,
    )


def register_result(ua: Baresip) -> Event:
    return ua.wait_event("REGISTER_OK", "REGISTER_FAIL", deadline=DEADLINE)


def server_address(server: VoipsecServer) -> str:
    return f"{server.host}:{server.port}"


def challenges(ua: Baresip) -> list[str]:
    """WWW-Authenticate values of the first 401 baresip received."""
    unauthorized = [r for r in ua.responses() if r.start_line.startswith("SIP/2.0 401")]
    assert unauthorized, ua.log_text()[-3000:]
    return unauthorized[0].headers("WWW-Authenticate")


def make_ca(directory: Path, common_name: str) -> tuple[Path, Path]:
    """A CA unrelated to the server's (its own key): (certificate, key) PEM files."""
    paths = CaPaths(cert=directory / "ca.crt", key=directory / "ca.key")
    create_ca(paths, common_name)
    return paths.cert, paths.key


def client_certificate(ca_cert: Path, ca_key: Path, out: Path, user: str) -> Path:
    """A TLS client certificate for ``user`` signed by the given CA, certificate and key in
    one PEM file (what baresip's ``sip_certificate`` wants)."""
    cert_pem, key_pem = issue_certificate(
        CaPaths(cert=ca_cert, key=ca_key),
        common_name=user,
        uris=(f"sip:{user}@localhost",),
        server=False,
    )
    out.write_bytes(cert_pem + key_pem)
    return out


@pytest.fixture(scope="module")
def md5_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VoipsecServer]:
    """voipsec with MD5 as the only digest algorithm: the one baresip 1.0.0 can answer.
    Shared by the module's tests, each as a user of its own (alice registers, bob's
    password is wrong, carol's phone trusts another CA)."""
    prepared = prepare(
        tmp_path_factory.mktemp("md5") / "data", users=[ALICE, BOB, CAROL], settings=[MD5_ONLY]
    )
    with serving(prepared) as running_server:
        yield running_server


# -- registration ------------------------------------------------------------------------


def test_registers_over_tls_with_md5_legacy_server(
    md5_server: VoipsecServer, tmp_path: Path
) -> None:
    with start_baresip(tmp_path / "baresip", md5_server) as ua:
        event = register_result(ua)
        assert event["type"] == "REGISTER_OK", (event, ua.log_text()[-3000:])
        assert event["param"] == "200 OK"
        assert event["accountaor"] == "sip:alice@localhost"

        (binding,) = md5_server.wait_bindings("alice", 1, deadline=DEADLINE)
        contact = str(binding["contact"])
        assert contact.endswith(";transport=tls"), binding
        assert f"@127.0.0.1:{ua.tls_port};" in contact, binding
        assert str(binding["source"]).startswith("tls:127.0.0.1:"), binding
        assert str(binding["user_agent"]).startswith("baresip v1.0.0"), binding

        registers = ua.requests("REGISTER")
        assert len(registers) == 2, [r.text for r in registers]
        first, second = registers
        # Sent to voipsec's address over TLS, while the AOR and Request-URI stay in the domain.
        assert second.transport == "TLS"
        assert second.dst == server_address(md5_server)
        assert second.start_line == "REGISTER sip:localhost;transport=tls SIP/2.0"
        assert second.headers("To") == ["<sip:alice@localhost>"]
        assert not first.headers("Authorization")
        (authorization,) = second.headers("Authorization")
        # No algorithm parameter means MD5 (RFC 2617 §3.2.2): baresip answered the MD5 challenge.
        assert 'username="alice"' in authorization
        assert "algorithm" not in authorization.lower() or "algorithm=md5" in authorization.lower()
        assert "qop=auth" in authorization


def test_default_sha256_server_refuses_md5_only_baresip(
    server: VoipsecServer, tmp_path: Path
) -> None:
    """The secure default offers SHA-256 only; baresip 1.0.0 cannot answer it and no
    binding appears."""
    with start_baresip(tmp_path / "baresip", server) as ua:
        event = register_result(ua)
        assert event["type"] == "REGISTER_FAIL", (event, ua.log_text()[-3000:])
        # libre 1.1.0 rejects the challenge locally: ENOSYS, and no second REGISTER.
        assert event["param"] == "Function not implemented"
        (challenge,) = challenges(ua)
        assert "algorithm=SHA-256" in challenge
        assert len(ua.requests("REGISTER")) == 1
        assert server.bindings("alice") == []


def test_md5_offered_after_sha256_is_not_enough_for_baresip_1_0(tmp_path: Path) -> None:
    """With ``["SHA-256", "MD5"]`` voipsec challenges with both, SHA-256 first (RFC 8760
    §2.4); libre 1.1.0 stops at the first algorithm it does not know instead of using the
    MD5 one, so this legacy setting does not admit baresip 1.0.0 (only ``["MD5"]`` does)."""
    prepared = prepare(tmp_path / "data", users=[ALICE], settings=[SHA256_AND_MD5])
    with serving(prepared) as server, start_baresip(tmp_path / "baresip", server) as ua:
        event = register_result(ua)
        assert event["type"] == "REGISTER_FAIL", (event, ua.log_text()[-3000:])
        assert event["param"] == "Function not implemented"
        offered = challenges(ua)
        assert len(offered) == 2, offered
        assert "algorithm=SHA-256" in offered[0]
        assert "algorithm=MD5" in offered[1]
        assert len(ua.requests("REGISTER")) == 1
        assert server.bindings("alice") == []


def test_wrong_password_is_refused(md5_server: VoipsecServer, tmp_path: Path) -> None:
    with start_baresip(
        tmp_path / "baresip", md5_server, user=BOB[0], password="not-bobs-secret"
    ) as ua:
        event = register_result(ua)
        assert event["type"] == "REGISTER_FAIL", (event, ua.log_text()[-3000:])
        assert event["param"] == "403 Forbidden"
        registers = ua.requests("REGISTER")
        assert len(registers) == 2, [r.text for r in registers]
        assert registers[1].headers("Authorization")
        assert md5_server.bindings(BOB[0]) == []


# -- TLS trust ----------------------------------------------------------------------------


class ServerCertificateNotVerified(AssertionError):
    """baresip completed TLS with a server whose certificate its CA file does not vouch
    for."""


@pytest.mark.xfail(
    strict=True,
    raises=ServerCertificateNotVerified,
    reason="baresip 1.0.0 / libre 1.1.0 never verifies the SIP/TLS server certificate "
    "(baresip#1122; sip_verify_server came in 1.1.0)",
)
def test_untrusted_server_ca_fails_the_handshake(md5_server: VoipsecServer, tmp_path: Path) -> None:
    other_ca, _ = make_ca(tmp_path / "other-ca", "Some Other CA")
    address = server_address(md5_server)
    with start_baresip(
        tmp_path / "baresip", md5_server, user=CAROL[0], password=CAROL[1], ca_file=other_ca
    ) as ua:

        def settled() -> bool:
            events = {e["type"] for e in ua.events()}
            return bool(events & {"REGISTER_OK", "REGISTER_FAIL"}) or ua.dropped_by(address)

        wait_for(settled, deadline=DEADLINE, what="registration to succeed or fail")
        if any(e["type"] == "REGISTER_OK" for e in ua.events()) or ua.responses():
            raise ServerCertificateNotVerified(
                f"baresip spoke SIP to a server signed by a CA it does not trust: "
                f"{[r.start_line for r in ua.responses()]}, bindings "
                f"{md5_server.bindings(CAROL[0])}"
            )
        assert md5_server.bindings(CAROL[0]) == []


@pytest.fixture(scope="module")
def cert_required_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VoipsecServer]:
    """``tls.client_cert = "required"`` for both untrusted clients below: neither gets a
    binding, so one server serves both."""
    prepared = prepare(
        tmp_path_factory.mktemp("cert_required") / "data",
        users=[ALICE],
        settings=[MD5_ONLY, ("tls.client_cert", '"required"')],
    )
    with serving(prepared) as running_server:
        yield running_server


@pytest.mark.parametrize("certificate", ["none", "foreign-ca"])
def test_server_requiring_client_certs_drops_untrusted_client(
    cert_required_server: VoipsecServer, tmp_path: Path, certificate: str
) -> None:
    """``tls.client_cert = "required"``: without a certificate from voipsec's CA the TLS
    handshake fails; the connection is closed before any SIP is answered."""
    server = cert_required_server
    cert_file = None
    if certificate == "foreign-ca":
        other_cert, other_key = make_ca(tmp_path / "other-ca", "Some Other CA")
        cert_file = client_certificate(other_cert, other_key, tmp_path / "alice.pem", "alice")
    address = server_address(server)
    with start_baresip(tmp_path / "baresip", server, cert_file=cert_file) as ua:
        wait_for(
            lambda: ua.dropped_by(address),
            deadline=DEADLINE,
            what="voipsec to close baresip's TLS connection",
        )
        assert ua.requests("REGISTER"), ua.log_text()[-3000:]
        assert ua.responses() == [], [r.start_line for r in ua.responses()]
        assert not any(e["type"] == "REGISTER_OK" for e in ua.events())
        assert server.bindings("alice") == []
        assert server.proc is not None and server.proc.poll() is None


def test_device_certificate_from_voipsec_ca_registers_with_client_cert_required(
    tmp_path: Path,
) -> None:
    """A device certificate from `voipsec ca issue` lets baresip in where
    ``tls.client_cert = "required"``; after `voipsec ca revoke` the same baresip is cut off."""
    prepared = prepare(
        tmp_path / "data",
        users=[ALICE],
        settings=[MD5_ONLY, ("tls.client_cert", '"required"')],
    )
    out = tmp_path / "device"
    voipsec(
        "ca",
        "issue",
        "alice",
        "--out",
        str(out),
        "--p12-password",
        "p12-secret-1",
        data_dir=prepared.data_dir,
    )
    bundle = tmp_path / "alice-bundle.pem"  # baresip's sip_certificate: certificate + key
    bundle.write_bytes((out / "alice.crt").read_bytes() + (out / "alice.key").read_bytes())
    with (
        serving(prepared) as server,
        start_baresip(tmp_path / "baresip", server, cert_file=bundle) as ua,
    ):
        event = register_result(ua)
        assert event["type"] == "REGISTER_OK", (event, ua.log_text()[-3000:])
        (binding,) = server.wait_bindings("alice", 1, deadline=DEADLINE)
        assert str(binding["contact"]).endswith(";transport=tls")
        voipsec("ca", "revoke", "alice", data_dir=server.data_dir)
        wait_for(
            lambda: ua.dropped_by(server_address(server)),
            deadline=DEADLINE,
            what="voipsec to close the revoked device's connection",
        )

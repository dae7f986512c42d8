"""TLS policy of the SIP listener, checked with openssl s_client (a real TLS peer)."""

from __future__ import annotations

import socket

import pytest

from tests.peers.openssl import s_client
from tests.peers.proc import port_open
from tests.peers.voipsec import VoipsecServer, prepare, serving

pytestmark = pytest.mark.peers

# OpenSSL 3 refuses TLS 1.1 and weak suites on its own at the default security level;
# SECLEVEL=0 lets the client offer them so that the refusal is the server's.
WEAK_OK = "DEFAULT@SECLEVEL=0"


def test_tls_tls11_refused(shared_server: VoipsecServer) -> None:
    result = s_client(
        shared_server.host, shared_server.port, options=["-tls1_1", "-cipher", WEAK_OK]
    )
    assert not result.established
    assert result.returncode != 0


def test_tls_tls12_accepted_with_ecdhe_aead(shared_server: VoipsecServer) -> None:
    result = s_client(
        shared_server.host, shared_server.port, options=["-tls1_2"], ca=shared_server.ca
    )
    assert result.protocol == "TLSv1.2"
    assert result.cipher == "ECDHE-ECDSA-AES256-GCM-SHA384"
    assert result.verified


def test_tls_tls13_accepted(shared_server: VoipsecServer) -> None:
    result = s_client(
        shared_server.host, shared_server.port, options=["-tls1_3"], ca=shared_server.ca
    )
    assert result.protocol == "TLSv1.3"
    assert result.cipher == "TLS_AES_256_GCM_SHA384"
    assert result.verified


def test_tls_prefers_tls13_when_client_offers_both(shared_server: VoipsecServer) -> None:
    result = s_client(shared_server.host, shared_server.port, ca=shared_server.ca)
    assert result.protocol == "TLSv1.3"


@pytest.mark.parametrize(
    "cipher",
    [
        "ECDHE-ECDSA-AES128-SHA256",  # CBC
        "ECDHE-ECDSA-AES256-SHA",  # CBC, SHA-1
        "AES128-GCM-SHA256",  # RSA key exchange, no forward secrecy
    ],
)
def test_tls_weak_tls12_cipher_refused(shared_server: VoipsecServer, cipher: str) -> None:
    result = s_client(
        shared_server.host,
        shared_server.port,
        options=["-tls1_2", "-cipher", f"{cipher}:@SECLEVEL=0"],
    )
    assert not result.established
    assert result.returncode != 0


def test_tls_server_certificate_verifies_for_localhost(shared_server: VoipsecServer) -> None:
    result = s_client(
        shared_server.host,
        shared_server.port,
        options=["-verify_hostname", "localhost"],
        ca=shared_server.ca,
    )
    assert result.verified


def test_defaults_listen_on_5061_only_no_plaintext(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A fresh `voipsec serve` with the embedded defaults: TLS on 5061, nothing on 5060."""
    from tests.peers.voipsec import voipsec

    data = tmp_path / "fresh"
    voipsec("init", data_dir=data)
    assert voipsec("config", "get", "sip.listen", data_dir=data).stdout.strip() == (
        '["tls:127.0.0.1:5061"]'
    )
    if port_open("127.0.0.1", 5061):
        pytest.fail("port 5061 is already in use on this machine; cannot test the defaults")
    server = VoipsecServer(data_dir=data, host="127.0.0.1", port=5061, log=data / "serve.log")
    with serving(server):
        assert s_client("127.0.0.1", 5061, ca=server.ca).verified
        assert not port_open("127.0.0.1", 5060)
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.settimeout(1.0)
        udp.connect(("127.0.0.1", 5060))
        udp.send(b"OPTIONS sip:x SIP/2.0\r\n\r\n")
        with pytest.raises(OSError):  # ICMP port unreachable: nothing listens on UDP 5060
            udp.recv(100)
        udp.close()


def test_plaintext_listener_only_when_configured(tmp_path) -> None:  # type: ignore[no-untyped-def]
    prepared = prepare(tmp_path / "d")
    from tests.peers.proc import free_port
    from tests.peers.voipsec import voipsec

    tcp = free_port()
    voipsec(
        "config",
        "set",
        "sip.listen",
        f'["tls:127.0.0.1:{prepared.port}", "tcp:127.0.0.1:{tcp}"]',
        data_dir=prepared.data_dir,
    )
    with serving(prepared):
        assert port_open("127.0.0.1", tcp)


# -- TLS 1.3 session tickets (issue 16 item 2) ------------------------------------------

#: Any SIP request: the answer comes after whatever the server sent once the handshake
#: finished, so reading up to it sees every post-handshake ticket.
OPTIONS = (
    b"OPTIONS sip:localhost SIP/2.0\r\n"
    b"Via: SIP/2.0/TLS 127.0.0.1:5999;branch=z9hG4bKtickets\r\n"
    b"From: <sip:probe@localhost>;tag=t\r\nTo: <sip:localhost>\r\n"
    b"Call-ID: tickets@127.0.0.1\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n"
    b"Content-Length: 0\r\n\r\n"
)


def _tickets(server: VoipsecServer) -> int:
    result = s_client(
        server.host, server.port, options=["-tls1_3", "-msg"], ca=server.ca, send=OPTIONS
    )
    assert result.protocol == "TLSv1.3"
    assert "\nSIP/2.0 " in result.output or result.output.startswith("SIP/2.0 ")
    return result.output.count("NewSessionTicket")


def test_tls13_default_sends_no_session_ticket(shared_server: VoipsecServer) -> None:
    # PJSIP/GnuTLS (Jami) loses the message after post-handshake tickets.
    assert _tickets(shared_server) == 0


def test_tls13_session_tickets_setting_sends_them(tmp_path) -> None:  # type: ignore[no-untyped-def]
    prepared = prepare(tmp_path / "d", settings=[("tls.session_tickets", "2")])
    with serving(prepared) as server:
        assert _tickets(server) == 2

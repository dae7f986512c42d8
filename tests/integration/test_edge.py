"""Edge protection against a real flood (SIPp) and its bans, on UDP and TLS.

voipsec listens on UDP and TLS on loopback with loopback *untrusted* (the "internet"
zone) for these tests; the probe that checks whether a source is dropped is a plain
UDP socket bound to that source address.
"""

from __future__ import annotations

import socket
import ssl
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ALICE
from tests.peers.proc import free_port, wait_for
from tests.peers.sipclient import TlsSipClient
from tests.peers.sipp import run_sipp
from tests.peers.voipsec import (
    VoipsecServer,
    prepare,
    serving,
    set_zones,
    stored_listing,
    voipsec,
)

pytestmark = pytest.mark.peers

BENCH = Path(__file__).resolve().parents[2] / "bench" / "sipp"
FLOODER = "127.0.0.2"


def _edge_server(tmp_path: Path, *, ban: int = 300, rate: str = "") -> tuple[VoipsecServer, int]:
    prepared = prepare(tmp_path / "data", users=[ALICE])
    udp = free_port(kind=socket.SOCK_DGRAM)
    voipsec(
        "config",
        "set",
        "sip.listen",
        f'["tls:127.0.0.1:{prepared.port}", "udp:127.0.0.1:{udp}"]',
        data_dir=prepared.data_dir,
    )
    set_zones(
        prepared.data_dir,
        '[[zones]]\nname = "lab"\ncidrs = ["127.0.0.3/32"]\nrate_requests = 2000\n\n'
        f'[[zones]]\nname = "internet"\ncidrs = ["0.0.0.0/0", "::/0"]\nrate_ban = {ban}\n{rate}',
    )
    return prepared, udp


def _options(source: str, port: int, tag: str) -> bytes | None:
    """One OPTIONS from ``source`` over UDP; the response, or None after 1 s of silence."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((source, 0))
        sock.settimeout(1.0)
        local = sock.getsockname()
        sock.sendto(
            (
                f"OPTIONS sip:localhost SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP {local[0]}:{local[1]};branch=z9hG4bK{tag};rport\r\n"
                f"From: <sip:probe@localhost>;tag={tag}\r\nTo: <sip:localhost>\r\n"
                f"Call-ID: {tag}\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n"
                "Content-Length: 0\r\n\r\n"
            ).encode(),
            ("127.0.0.1", port),
        )
        try:
            return sock.recv(65535)
        except TimeoutError:
            return None


def _flood(tmp_path: Path, udp: int) -> None:
    run_sipp(
        BENCH / "invite_flood.xml",
        f"127.0.0.1:{udp}",
        workdir=tmp_path / "flood",
        rate=300,
        calls=300,
        transport="u1",
        extra=["-i", FLOODER],
        timeout=20,
    )


def test_edge_invite_flood_banned_dropped_until_expiry(tmp_path: Path) -> None:
    # Long enough that the flood run and the checks below end well inside the ban.
    # 5 requests per 5 s: the rate limit bans the flooder by its 6th INVITE even when
    # a busy machine slows SIPp to a few a second; at the default 16 per 2 s a starved
    # SIPp never empties the bucket and the 11th 404 bans it for extension enumeration.
    prepared, udp = _edge_server(tmp_path, ban=10, rate="rate_requests = 5\nrate_window = 5.0\n")
    with serving(prepared) as server:
        assert _options(FLOODER, udp, "before1").startswith(b"SIP/2.0 200 OK")  # type: ignore[union-attr]
        _flood(tmp_path, udp)
        listing = stored_listing(server.data_dir, "bans", lambda out: f"{FLOODER}  " in out)
        assert f"{FLOODER}  " in listing
        assert "rate limit of zone internet" in listing
        assert _options(FLOODER, udp, "during1") is None  # dropped silently
        # Others are still served while the flooder is banned.
        assert _options("127.0.0.3", udp, "other1").startswith(b"SIP/2.0 200 OK")  # type: ignore[union-attr]
        banned_at = time.monotonic()
        wait_for(
            lambda: _options(FLOODER, udp, f"after{int(time.monotonic() * 1000)}") is not None,
            deadline=20,
            what="the ban to expire",
        )
        assert time.monotonic() - banned_at > 1.5
        expected = (
            f"ban  {FLOODER}  source banned: {FLOODER}: rate limit of zone internet; "
            "banned for 10 s"
        )
        alerts = stored_listing(server.data_dir, "alerts", lambda out: expected in out)
        assert expected in alerts, alerts


def test_edge_bans_survive_restart_and_remove_lifts_at_once(tmp_path: Path) -> None:
    prepared, udp = _edge_server(tmp_path)
    with serving(prepared):
        _flood(tmp_path, udp)
        assert _options(FLOODER, udp, "x1") is None
    with serving(prepared) as server:
        assert _options(FLOODER, udp, "x2") is None  # still banned after the restart
        assert voipsec("bans", "remove", FLOODER, data_dir=server.data_dir).stdout == (
            f"unbanned {FLOODER}\n"
        )
        wait_for(
            lambda: _options(FLOODER, udp, f"x3{time.monotonic()}") is not None,
            deadline=5,
            what="the ban to be lifted",
        )


def test_edge_manual_ban_drops_tls_connections_of_that_source(
    edge_server: tuple[VoipsecServer, int],
) -> None:
    server, udp = edge_server
    assert (
        voipsec("bans", "add", "127.0.0.3", "--seconds", "60", data_dir=server.data_dir).stdout
        == "banned 127.0.0.3 for 60 s\n"
    )
    wait_for(
        lambda: _options("127.0.0.3", udp, f"m{time.monotonic()}") is None,
        deadline=5,
        what="the manual ban to apply",
    )
    with TlsSipClient(server.host, server.port, server.ca) as client:  # 127.0.0.1: fine
        assert client.register(*ALICE).status == 200
    bad = voipsec("bans", "add", "not-an-ip", data_dir=server.data_dir, check=False)
    assert (bad.returncode, bad.stderr) == (
        1,
        "voipsec: error: 'not-an-ip' is not an IP address\n",
    )


def test_edge_responses_hide_topology_and_version(edge_server: tuple[VoipsecServer, int]) -> None:
    # 127.0.0.4: a source no test of the shared server bans (127.0.0.3 is banned above).
    _, udp = edge_server
    answer = _options("127.0.0.4", udp, "topo1")
    assert answer is not None and answer.startswith(b"SIP/2.0 200 OK")
    lowered = answer.lower()
    assert b"\r\nserver:" not in lowered
    assert b"voipsec" not in lowered
    assert b"user-agent" not in lowered


# -- issue 13 finding 6: spoofed UDP must not get a TLS flow cut -------------------------

SCANNER_UA = "friendly-scanner"


def _options_tls(client: TlsSipClient, tag: str) -> int:
    """OPTIONS over the client's TLS connection; the status of the answer."""
    host, port = client.local[0], client.local[1]
    client.send(
        (
            f"OPTIONS sip:localhost SIP/2.0\r\n"
            f"Via: SIP/2.0/TLS {host}:{port};branch=z9hG4bK{tag};rport\r\n"
            f"From: <sip:alice@localhost>;tag={tag}\r\nTo: <sip:localhost>\r\n"
            f"Call-ID: {tag}\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n"
            "Content-Length: 0\r\n\r\n"
        ).encode()
    )
    return client.receive().status


def _spoof_udp(victim: str, port: int, attack: str) -> None:
    """What an attacker sends with the victim's source address: bound to it on loopback,
    which is exactly what a forged source address looks like to the server.

    "flood": 40 STUN Binding requests (RFC 5389 §6; more than the internet zone's 16
    per 2 s, and nothing the IDS counts), so the guard's rate limit bans. "scanner":
    one OPTIONS with sipvicious' User-Agent, so the IDS bans.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((victim, 0))
        if attack == "flood":
            for i in range(40):
                binding = struct.pack("!HHI", 0x0001, 0, 0x2112A442) + i.to_bytes(12, "big")
                sock.sendto(binding, ("127.0.0.1", port))
            return
        sock.sendto(
            (
                "OPTIONS sip:100@localhost SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP {victim}:5060;branch=z9hG4bKspoof;rport\r\n"
                "From: <sip:100@localhost>;tag=sp1\r\nTo: <sip:100@localhost>\r\n"
                "Call-ID: spoof-1\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n"
                f"User-Agent: {SCANNER_UA}\r\nContent-Length: 0\r\n\r\n"
            ).encode(),
            ("127.0.0.1", port),
        )


@pytest.fixture(scope="module")
def edge_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[VoipsecServer, int]]:
    """One UDP+TLS server with loopback untrusted, for tests that ban distinct sources
    (127.0.0.3, .5, .15, .25) or none; the flood, restart and dual-stack tests need a
    server of their own (a ban that expires, a restart, another listener)."""
    prepared, udp = _edge_server(tmp_path_factory.mktemp("edge"), ban=3600)
    with serving(prepared) as server:
        yield server, udp


@pytest.mark.parametrize(
    ("attack", "victim", "reason"),
    [
        ("flood", "127.0.0.5", "rate limit of zone internet"),
        ("scanner", "127.0.0.15", "ids: scanner-user-agent"),
    ],
)
def test_edge_spoofed_udp_ban_keeps_victims_tls_flow(
    edge_server: tuple[VoipsecServer, int], attack: str, victim: str, reason: str
) -> None:
    server, udp = edge_server
    with TlsSipClient(server.host, server.port, server.ca, source=victim) as phone:
        assert phone.register(*ALICE).status == 200
        _spoof_udp(victim, udp, attack)

        def banned() -> str:
            listing = voipsec("bans", "list", data_dir=server.data_dir).stdout
            return next((line for line in listing.splitlines() if line.startswith(victim)), "")

        line = str(wait_for(banned, deadline=10, what=f"the ban of {victim}"))
        # The phone's TLS flow is untouched: answered, and its registration refreshes.
        assert _options_tls(phone, f"after{attack}") == 200
        assert phone.register(*ALICE).status == 200
        assert line.startswith(f"{victim}  ") and line.endswith(f"  {reason}  (UDP only)"), line
        # UDP from the banned source is dropped.
        assert _options(victim, udp, f"udp{attack}") is None
    # A new TLS connection from it is accepted too (a TCP source answered our SYN-ACK).
    with TlsSipClient(server.host, server.port, server.ca, source=victim) as again:
        assert _options_tls(again, f"new{attack}") == 200
    assert f"banned {victim} for 3600 s (UDP only): {reason}" in server.log_text()


def test_edge_ban_from_tls_evidence_cuts_the_connection(
    edge_server: tuple[VoipsecServer, int],
) -> None:
    """The other side of the trade-off: a scanner over TLS is banned everywhere."""
    server, udp = edge_server
    attacker = "127.0.0.25"
    with TlsSipClient(server.host, server.port, server.ca, source=attacker) as scanner:
        scanner.send(
            (
                "OPTIONS sip:100@localhost SIP/2.0\r\n"
                f"Via: SIP/2.0/TLS {attacker}:5061;branch=z9hG4bKtls1;rport\r\n"
                "From: <sip:100@localhost>;tag=t1\r\nTo: <sip:100@localhost>\r\n"
                "Call-ID: tls-scan-1\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n"
                f"User-Agent: {SCANNER_UA}\r\nContent-Length: 0\r\n\r\n"
            ).encode()
        )
        with pytest.raises((ConnectionError, ssl.SSLError, TimeoutError)):
            scanner.receive()  # dropped, and the connection cut
    listing = stored_listing(server.data_dir, "bans", lambda out: f"{attacker}  " in out)
    assert f"{attacker}  " in listing and "ids: scanner-user-agent\n" in listing
    assert _options(attacker, udp, "tlsban") is None


# -- issue 13, finding 15: a dual-stack listener must not bypass IPv4 bans ---------------


def test_edge_ipv4_ban_holds_on_a_dual_stack_listener(tmp_path: Path) -> None:
    """An IPv6 UDP socket bound to ::ffff:127.0.0.1 takes IPv4 datagrams, whose sources
    it reports as ::ffff:127.0.0.x (RFC 4291 §2.5.5.2); a ban of 127.0.0.x holds."""
    prepared = prepare(tmp_path / "data", users=[ALICE])
    udp = free_port(kind=socket.SOCK_DGRAM)
    voipsec(
        "config",
        "set",
        "sip.listen",
        f'["tls:127.0.0.1:{prepared.port}", "udp:[::ffff:127.0.0.1]:{udp}"]',
        data_dir=prepared.data_dir,
    )
    with serving(prepared) as server:
        wait_for(
            lambda: _options("127.0.0.2", udp, f"d{time.monotonic()}") is not None,
            deadline=10,
            what="the dual-stack UDP listener",
        )
        assert voipsec("bans", "add", "127.0.0.2", data_dir=server.data_dir).stdout == (
            "banned 127.0.0.2 for 3600 s\n"
        )
        wait_for(
            lambda: _options("127.0.0.2", udp, f"b{time.monotonic()}") is None,
            deadline=5,
            what="the ban to hold for ::ffff:127.0.0.2",
        )
        assert _options("127.0.0.3", udp, "dual3") is not None  # others still answered

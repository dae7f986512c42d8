"""SIP NAT handling on the UDP listener: STUN keep-alives (RFC 5626 §4.4.2) answered on
the SIP port, checked with coturn's turnutils_stunclient; rport/received (RFC 3581)."""

from __future__ import annotations

import re
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.peers.proc import free_port, require
from tests.peers.voipsec import prepare, serving, voipsec

pytestmark = pytest.mark.peers


def _udp_server(tmp_path: Path) -> tuple[object, int]:
    prepared = prepare(tmp_path / "data")
    udp = free_port(kind=socket.SOCK_DGRAM)
    voipsec(
        "config",
        "set",
        "sip.listen",
        f'["tls:127.0.0.1:{prepared.port}", "udp:127.0.0.1:{udp}"]',
        data_dir=prepared.data_dir,
    )
    return prepared, udp


@pytest.fixture(scope="module")
def udp_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """One TLS+UDP server for both tests (a STUN binding and an OPTIONS, neither of
    which leaves state behind); its UDP port."""
    prepared, udp = _udp_server(tmp_path_factory.mktemp("nat"))
    with serving(prepared):  # type: ignore[arg-type]
        yield udp


def test_stun_binding_answered_on_the_sip_udp_port(udp_port: int) -> None:
    out = subprocess.run(
        [require("turnutils_stunclient"), "-p", str(udp_port), "127.0.0.1"],
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    text = out.stdout + out.stderr
    assert re.search(r"UDP reflexive addr: 127\.0\.0\.1:\d+", text), text


def test_rport_and_received_filled_in_udp_response(udp_port: int) -> None:
    udp = udp_port
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(5)
        port = sock.getsockname()[1]
        # The client claims an address it does not send from (a phone behind NAT).
        sock.sendto(
            b"OPTIONS sip:localhost SIP/2.0\r\n"
            b"Via: SIP/2.0/UDP 192.168.1.20:5060;branch=z9hG4bKnat1;rport\r\n"
            b"From: <sip:phone@localhost>;tag=n1\r\nTo: <sip:localhost>\r\nCall-ID: nat1\r\n"
            b"CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
            ("127.0.0.1", udp),
        )
        answer = sock.recv(65535).decode()
    assert answer.startswith("SIP/2.0 200 OK\r\n")
    assert (
        f"Via: SIP/2.0/UDP 192.168.1.20:5060;branch=z9hG4bKnat1;rport={port};received=127.0.0.1"
        in answer
    )

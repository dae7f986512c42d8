"""voipsec's STUN/TURN (``python -m voipsec.nat``) against real clients, on loopback.

coturn 4.6.1's ``turnutils_stunclient`` and ``turnutils_uclient`` (with
``turnutils_peer`` as the echo peer), Debian's classic RFC 3489 ``stun`` client, and
aioice's TURN client over UDP, TCP and TLS. Loopback peers are allowed only in the tests
that relay to them (``--allow-peer 127.0.0.1/32``); the default filter is shown refusing
them. Every test starts its own runner (the 401 rate limit is per source address, and
all of these come from 127.0.0.1) and is bounded by subprocess timeouts.
"""

from __future__ import annotations

import asyncio
import re
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from aioice.turn import create_turn_endpoint

from tests.peers.proc import free_port, require, running, wait_for
from tests.peers.turn import TurnClient, TurnRunner, error_code, turn_running
from tests.peers.voipsec import prepare
from voipsec.nat.credentials import rest_credentials
from voipsec.nat.stun import Attr, MessageClass

pytestmark = pytest.mark.peers

ALICE = ("alice", "alice-secret-1")
LOOPBACK_PEERS = ["127.0.0.1/32"]
#: Upper bound for one peer program run; each test stays under 30 s.
PEER_TIMEOUT = 25
UCLIENT_LOAD = ["-n", "100", "-m", "4", "-l", "170"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An initialised voipsec directory (realm "localhost") with alice."""
    return prepare(tmp_path_factory.mktemp("turn") / "data", users=[ALICE]).data_dir


def run(argv: list[str], *, timeout: float = PEER_TIMEOUT) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    return proc.stdout + proc.stderr


def udp_echoes(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(0.2)
        try:
            sock.sendto(b"ping", ("127.0.0.1", port))
            return sock.recvfrom(64)[0] == b"ping"
        except OSError:
            return False


@pytest.fixture
def echo_peer(tmp_path: Path) -> Iterator[int]:
    """coturn's turnutils_peer echoing UDP on a free port of 127.0.0.1."""
    port = free_port("127.0.0.1", socket.SOCK_DGRAM)
    argv = [require("turnutils_peer"), "-L", "127.0.0.1", "-p", str(port)]
    with running(argv, log=tmp_path / "peer.log"):
        wait_for(lambda: udp_echoes(port), deadline=10, what="turnutils_peer to echo")
        yield port


def uclient(runner: TurnRunner, peer_port: int, *credentials: str, tcp: bool = False) -> str:
    argv = [require("turnutils_uclient"), *UCLIENT_LOAD, "-e", "127.0.0.1", "-r", str(peer_port)]
    argv += ["-X", "-g", *credentials, "-p", str(runner.port)]
    if tcp:
        argv.append("-t")
    return run([*argv, "127.0.0.1"])


# -- STUN -------------------------------------------------------------------------------


def test_turn_stunclient_gets_its_reflexive_address(data_dir: Path) -> None:
    with turn_running(data_dir) as runner:
        out = run([require("turnutils_stunclient"), "-p", str(runner.port), "127.0.0.1"])
    found = re.findall(r"UDP reflexive addr: (127\.0\.0\.1):(\d+)", out)
    assert found, out
    assert 1024 <= int(found[0][1]) <= 65535


def test_turn_classic_rfc3489_stun_client_gets_its_mapped_address(data_dir: Path) -> None:
    # Its own source port from this worker's slice: left to itself, the client picks a
    # random one, which another test's server may hold (one flaky run in 1,000).
    source = free_port("127.0.0.1", socket.SOCK_DGRAM)
    with turn_running(data_dir) as runner:
        out = run([require("stun"), f"127.0.0.1:{runner.port}", "1", "-v", "-p", str(source)])
    opened = re.search(r"Opened port (\d+) with fd", out)
    mapped = re.search(r"MappedAddress = ([\d.]+):(\d+)", out)
    assert opened and mapped, out
    assert (mapped.group(1), mapped.group(2)) == ("127.0.0.1", opened.group(1))
    assert "SourceAddress = 127.0.0.1:" + str(runner.port) in out


# -- relaying with coturn's client ----------------------------------------------------------


def assert_no_loss(out: str) -> None:
    assert "Total lost packets 0 (0.000000%)" in out, out[-3000:]
    assert "tot_send_msgs=400, tot_recv_msgs=400" in out, out[-3000:]


def test_turn_uclient_long_term_credentials_relay_without_loss(
    data_dir: Path, echo_peer: int
) -> None:
    with turn_running(data_dir, allow_peers=LOOPBACK_PEERS) as runner:
        out = uclient(runner, echo_peer, "-u", ALICE[0], "-w", ALICE[1])
        log = runner.log_text()
    assert_no_loss(out)
    # uclient asks for an even port with the next one reserved (EVEN-PORT R, for RTP)
    # and takes the reserved one with RESERVATION-TOKEN (for RTCP).
    ports = {int(p) for p in re.findall(r"for alice from udp \S+ relayed at [\d.]+:(\d+)", log)}
    assert any(p % 2 == 0 and p + 1 in ports for p in ports), log


def test_turn_uclient_rest_credentials_relay_without_loss(data_dir: Path, echo_peer: int) -> None:
    with turn_running(data_dir, allow_peers=LOOPBACK_PEERS) as runner:
        out = uclient(runner, echo_peer, "-u", ALICE[0], "-W", runner.secret)
    assert_no_loss(out)


def test_turn_uclient_over_tcp_relays_without_loss(data_dir: Path, echo_peer: int) -> None:
    with turn_running(data_dir, allow_peers=LOOPBACK_PEERS) as runner:
        out = uclient(runner, echo_peer, "-u", ALICE[0], "-w", ALICE[1], tcp=True)
    assert_no_loss(out)


# -- aioice's TURN client ---------------------------------------------------------------------


class _Echo(asyncio.DatagramProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.transport.sendto(data, addr)  # type: ignore[attr-defined]


class _Inbox(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[bytes, tuple[str, int]]] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.queue.put_nowait((data, addr))


async def aioice_relay(runner: TurnRunner, transport: str) -> list[bytes]:
    loop = asyncio.get_running_loop()
    echo, _ = await loop.create_datagram_endpoint(_Echo, local_addr=("127.0.0.1", 0))
    peer = echo.get_extra_info("sockname")
    context = None
    port = runner.port
    if transport == "tls":
        context = ssl.create_default_context(cafile=str(runner.data_dir / "ca" / "ca.crt"))
        assert runner.tls_port is not None
        port = runner.tls_port
    turn, inbox = await create_turn_endpoint(
        _Inbox,
        server_addr=("127.0.0.1", port),
        username=ALICE[0],
        password=ALICE[1],
        transport="udp" if transport == "udp" else "tcp",
        ssl=context,
    )
    received: list[bytes] = []
    try:
        for i in range(20):
            payload = f"rtp {i} ".encode() * (i + 1)
            turn.sendto(payload, peer)
            data, addr = await asyncio.wait_for(inbox.queue.get(), 5)
            assert addr == peer
            received.append(data)
    finally:
        turn.close()
        echo.close()
    return received


@pytest.mark.parametrize("transport", ["udp", "tcp", "tls"])
async def test_turn_aioice_client_allocates_and_relays(data_dir: Path, transport: str) -> None:
    with turn_running(data_dir, allow_peers=LOOPBACK_PEERS, tls=True) as runner:
        received = await asyncio.wait_for(aioice_relay(runner, transport), 20)
        log = runner.log_text()
    assert received == [f"rtp {i} ".encode() * (i + 1) for i in range(20)]
    assert re.search(rf"TURN allocation \d+ for alice from {transport} ", log), log


# -- what must be refused ----------------------------------------------------------------

DEFAULT_REFUSED = [
    "127.0.0.1",
    "::1",
    "10.0.0.1",
    "::ffff:127.0.0.1",
    "0.0.0.0",
    "169.254.169.254",
    "64:ff9b::7f00:1",
    "2002:7f00:1::",
]


def test_turn_default_peer_filter_refuses_internal_peers_with_403(data_dir: Path) -> None:
    with (
        turn_running(data_dir) as runner,
        TurnClient((runner.host, runner.port), *ALICE) as client,
    ):
        allocated = client.allocate()
        assert allocated.cls == MessageClass.SUCCESS, allocated.error_code()
        codes = {
            host: error_code(client.create_permission((host, 3480))) for host in DEFAULT_REFUSED
        }
        public = error_code(client.create_permission(("8.8.8.8", 3480)))
        log = runner.log_text()
    assert codes == dict.fromkeys(DEFAULT_REFUSED, 403)
    assert public is None  # a global address is allowed (no packet is sent to it)
    assert log.count("TURN peer ") == len(DEFAULT_REFUSED), log


def test_turn_wrong_and_expired_credentials_get_401(data_dir: Path) -> None:
    with turn_running(data_dir) as runner:
        server = (runner.host, runner.port)
        with TurnClient(server, ALICE[0], "wrong password") as client:
            wrong = client.allocate()
        secret = runner.secret.encode()
        username, password = rest_credentials(secret, "alice", 60, time.time() - 120)
        with TurnClient(server, username, password) as client:
            expired = client.allocate()
        username, password = rest_credentials(secret, "alice", 600, time.time())
        with TurnClient(server, username, password) as client:
            valid = client.allocate()
        log = runner.log_text()
    assert (error_code(wrong), error_code(expired), error_code(valid)) == (401, 401, None)
    assert wrong.text(Attr.REALM) == expired.text(Attr.REALM) == "localhost"
    assert "TURN authentication failed for 'alice'" in log
    assert ALICE[1] not in log and "wrong password" not in log and runner.secret not in log


def test_turn_over_quota_gets_486(data_dir: Path) -> None:
    with (
        turn_running(data_dir, extra=["--user-quota", "1"]) as runner,
        TurnClient((runner.host, runner.port), *ALICE) as first,
        TurnClient((runner.host, runner.port), *ALICE) as second,
    ):
        assert error_code(first.allocate()) is None
        over = second.allocate()
        log = runner.log_text()
    assert error_code(over) == 486
    assert "TURN allocation quota (user) reached for alice" in log

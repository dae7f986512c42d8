"""TURN attacks against a running ``voipsec serve`` (issue 13, findings 7 and 15).

One server for the module: TURN on the UDP wildcard 0.0.0.0 (so the own-address check
must list every local interface), ``allowed_peers`` opening loopback as an operator
might open a LAN, /metrics on, and the trusted zone narrowed to 127.0.0.1 so that the
other loopback addresses get the internet zone's IDS and bans. coturn's
turnutils_uclient guesses a password as a tool would; the other requests are built with
voipsec's own STUN codec (tests/peers/turn.py), where the exact error code of each
answer or a forged nonce matters.
"""

from __future__ import annotations

import http.client
import os
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.peers.proc import free_port, require, running, wait_for
from tests.peers.turn import TurnClient, error_code, free_udp_tcp_port
from tests.peers.voipsec import (
    VoipsecServer,
    prepare,
    serving,
    set_zones,
    stored_listing,
    voipsec,
)
from voipsec.nat import stun
from voipsec.nat.stun import Message, MessageClass, Method

pytestmark = pytest.mark.peers

ALICE = ("alice", "alice-secret-1")
#: The password guesser, and another untrusted source that must not suffer for it.
GUESSER = "127.0.0.4"
BYSTANDER = "127.0.0.5"
#: coturn's client as the guesser (it retries a refused password at once, as a tool would).
UCLIENT_GUESSER = "127.0.0.7"
#: turn-password-guessing-source fires on the 6th failure within 60 s.
GUESSES = 6
#: How long a banned source is watched for an answer that must not come; the bystander's
#: answer to the same request, just before, shows the server answers well within it.
SILENCE = 1.0
#: Loopback opened as an operator opens a LAN; 127.0.0.9 named on its own.
ALLOWED_PEERS = '["127.0.0.0/8", "127.0.0.9/32"]'
ZONES = """
[[zones]]
name = "loopback"
cidrs = ["127.0.0.1/32", "::1/128"]
trust = "trusted"

[[zones]]
name = "internet"
cidrs = ["0.0.0.0/0", "::/0"]
trust = "untrusted"
"""


@pytest.fixture(scope="module")
def turn_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[VoipsecServer, int]]:
    """``voipsec serve`` with TURN on udp:0.0.0.0 and metrics; (server, TURN port)."""
    turn_port = free_udp_tcp_port("0.0.0.0")
    metrics_port = free_port()
    prepared = prepare(
        tmp_path_factory.mktemp("turnsec") / "data",
        users=[ALICE],
        settings=[
            ("turn.listen", f'["udp:0.0.0.0:{turn_port}", "tcp:0.0.0.0:{turn_port}"]'),
            ("turn.allowed_peers", ALLOWED_PEERS),
            ("metrics.listen", f'"127.0.0.1:{metrics_port}"'),
        ],
    )
    set_zones(prepared.data_dir, ZONES)
    with serving(prepared) as server:
        wait_for(lambda: "STUN/TURN listening on" in server.log_text(), what="TURN up")
        yield server, turn_port


def _binding_answered(bind: str, port: int, timeout: float) -> bool:
    """Whether a STUN Binding request from ``bind`` gets any answer within ``timeout``."""
    request = Message(
        method=Method.BINDING, cls=MessageClass.REQUEST, transaction_id=os.urandom(12)
    )
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((bind, 0))
        sock.settimeout(timeout)
        sock.sendto(stun.encode(request), ("127.0.0.1", port))
        try:
            sock.recvfrom(2048)
        except TimeoutError:
            return False
    return True


def _tcp_binding_answered(bind: str, port: int) -> bool:
    """Whether a STUN Binding request over a TCP connection from ``bind`` is answered
    (False when the server closes or resets the connection)."""
    request = Message(
        method=Method.BINDING, cls=MessageClass.REQUEST, transaction_id=os.urandom(12)
    )
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((bind, 0))
        sock.settimeout(10)
        sock.connect(("127.0.0.1", port))
        try:
            sock.sendall(stun.encode(request))
            return len(sock.recv(2048)) > 0
        except (ConnectionResetError, BrokenPipeError):
            return False


def _turn_failures(server: VoipsecServer) -> float:
    """voipsec_auth_failures_total{service="turn"} from /metrics (HTTPS, voipsec's CA)."""
    listen = voipsec("config", "get", "metrics.listen", data_dir=server.data_dir).stdout
    port = int(listen.strip().strip('"').rsplit(":", 1)[1])
    context = ssl.create_default_context(cafile=str(server.ca))
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=10)
    try:
        conn.request("GET", "/metrics")
        body = conn.getresponse().read().decode()
    finally:
        conn.close()
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            if sample.name == "voipsec_auth_failures_total" and sample.labels == {
                "service": "turn"
            }:
                return float(sample.value)
    raise AssertionError("no voipsec_auth_failures_total{service=turn} in /metrics")


# -- finding 15: the peer filter of a wildcard listener -------------------------------------


def test_turn_wildcard_listener_refuses_own_and_special_purpose_peers(
    turn_server: tuple[VoipsecServer, int],
) -> None:
    """TURN on 0.0.0.0 with loopback allowed: 127.0.0.1 and 127.0.0.5 are this host
    (interface lo, 127.0.0.0/8), refused 403 although 127.0.0.0/8 is allowed; only
    127.0.0.9, named on its own, is allowed. 3fff::1 (RFC 9637 documentation) and
    5f00::1 (RFC 9602 SRv6) are refused 403 before their family is looked at."""
    server, port = turn_server
    peers = ["127.0.0.1", "127.0.0.5", "127.0.0.9", "3fff::1", "5f00::1"]
    with TurnClient(("127.0.0.1", port), *ALICE) as client:
        allocated = client.allocate()
        assert allocated.cls == MessageClass.SUCCESS, allocated.error_code()
        codes = {peer: error_code(client.create_permission((peer, 3480))) for peer in peers}
    assert codes == {
        "127.0.0.1": 403,
        "127.0.0.5": 403,
        "127.0.0.9": None,
        "3fff::1": 403,
        "5f00::1": 403,
    }
    log = server.log_text()
    assert "TURN peer 127.0.0.1 refused for alice from 127.0.0.1:" in log
    assert "refused for alice" in log and ": voipsec's own address" in log
    assert "TURN peer 3fff::1 refused for alice" in log
    assert "3fff::/20 documentation (RFC 9637)" in log
    assert "5f00::/16 SRv6 SIDs (RFC 9602)" in log


# -- finding 7: TURN password guessing is banned, alerted and counted -----------------------


def test_turn_password_guessing_is_banned_alerted_and_counted(
    turn_server: tuple[VoipsecServer, int],
) -> None:
    server, port = turn_server
    target = ("127.0.0.1", port)
    before = _turn_failures(server)
    with TurnClient(target, ALICE[0], "guess-123", bind=GUESSER) as guesser:
        answers = [error_code(guesser.allocate()) for _ in range(GUESSES)]
    assert answers == [401] * GUESSES

    bans = stored_listing(server.data_dir, "bans", lambda out: GUESSER in out).splitlines()
    assert [line.split()[0] for line in bans] == [GUESSER], bans
    assert bans[0].endswith("ids: turn-password-guessing-source"), bans

    def rules_of(out: str) -> list[tuple[str, str]]:
        return [(line.split()[1], line.split()[2]) for line in out.splitlines()]

    alerts = stored_listing(
        server.data_dir,
        "alerts",
        lambda out: (
            {("turn-password-guessing-source", GUESSER), ("ban", GUESSER)} <= set(rules_of(out))
        ),
    ).splitlines()
    rules = rules_of("\n".join(alerts))
    assert ("turn-password-guessing-source", GUESSER) in rules, alerts
    assert ("ban", GUESSER) in rules, alerts
    assert _turn_failures(server) - before == GUESSES

    # The guesser gets no answer at all now; an untrusted bystander and 127.0.0.1 do,
    # and both get their allocation with the right password.
    assert _binding_answered(BYSTANDER, port, SILENCE)
    assert not _binding_answered(GUESSER, port, SILENCE)
    # Over TCP the banned source's connection is closed at once (no timeout needed).
    assert _tcp_binding_answered(BYSTANDER, port)
    assert not _tcp_binding_answered(GUESSER, port)
    for source in (BYSTANDER, "127.0.0.1"):
        with TurnClient(target, *ALICE, bind=source) as client:
            allocated = client.allocate()
        assert allocated.cls == MessageClass.SUCCESS, (source, allocated.error_code())
    assert "TURN authentication failed for 'alice' from 127.0.0.4:" in server.log_text()
    assert "guess-123" not in server.log_text()


def _banned(server: VoipsecServer) -> list[str]:
    """``voipsec bans list``: one line per ban (address, seconds left, reason)."""
    return voipsec("bans", "list", data_dir=server.data_dir).stdout.splitlines()


def test_turn_coturn_uclient_guessing_a_password_is_banned_after_6_failures(
    turn_server: tuple[VoipsecServer, int], tmp_path: Path
) -> None:
    """coturn's turnutils_uclient with a wrong password retries the Allocate at once,
    again and again: the 6th failure bans it, and from then on nothing it sends is
    handled, so exactly 6 failures are counted however long it goes on."""
    server, port = turn_server
    before = _turn_failures(server)
    argv = [
        require("turnutils_uclient"), "-L", UCLIENT_GUESSER, "-n", "1", "-m", "1",
        "-e", "127.0.0.9", "-r", "3480", "-X", "-u", ALICE[0], "-w", "guess-789",
        "-p", str(port), "127.0.0.1",
    ]  # fmt: skip
    with running(argv, log=tmp_path / "uclient.log"):
        wait_for(
            lambda: any(line.startswith(f"{UCLIENT_GUESSER} ") for line in _banned(server)),
            what=f"a ban of {UCLIENT_GUESSER}",
        )
    (ban,) = [line for line in _banned(server) if line.startswith(f"{UCLIENT_GUESSER} ")]
    assert ban.endswith("ids: turn-password-guessing-source"), ban
    assert _turn_failures(server) - before == GUESSES
    failures = f"TURN authentication failed for 'alice' from {UCLIENT_GUESSER}:"
    assert server.log_text().count(failures) == GUESSES
    assert not _binding_answered(UCLIENT_GUESSER, port, SILENCE)


def test_turn_password_guessing_from_a_trusted_source_is_never_banned(
    turn_server: tuple[VoipsecServer, int],
) -> None:
    """127.0.0.1 is the trusted zone: its failures are counted, never banned."""
    server, port = turn_server
    before = _turn_failures(server)
    with TurnClient(("127.0.0.1", port), ALICE[0], "typo", bind="127.0.0.1") as client:
        answers = [error_code(client.allocate()) for _ in range(GUESSES)]
    assert answers == [401] * GUESSES
    assert _turn_failures(server) - before == GUESSES
    bans = voipsec("bans", "list", data_dir=server.data_dir).stdout
    assert "127.0.0.1 " not in bans
    assert _binding_answered("127.0.0.1", port, SILENCE)


def test_turn_failures_with_a_forged_nonce_are_counted_but_never_ban(
    turn_server: tuple[VoipsecServer, int],
) -> None:
    """A wrong password with a nonce voipsec never issued to that address is what a
    spoofed UDP source can send (it never sees our challenge): 401 and counted, but no
    ban, so forged packets cannot get a victim's address banned (finding 6's lesson)."""
    server, port = turn_server
    spoofed = "127.0.0.6"
    before = _turn_failures(server)
    with TurnClient(("127.0.0.1", port), ALICE[0], "guess-456", bind=spoofed) as client:
        client.realm, client.nonce = "localhost", "0" * 34
        answers = [error_code(client.allocate()) for _ in range(GUESSES)]
    assert answers == [401] * GUESSES
    assert _turn_failures(server) - before == GUESSES
    bans = voipsec("bans", "list", data_dir=server.data_dir).stdout
    assert spoofed not in bans
    assert _binding_answered(spoofed, port, SILENCE)

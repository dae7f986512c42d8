"""``voipsec audit``'s TURN probe (issue 19) against coturn 4.6.1 and ``voipsec serve``.

coturn runs with its default peer policy (no configuration file: ``-n``; long-term
credentials with one static user) in a network namespace of the test's own with
loopback only, and tshark captures that loopback while the audit runs: the capture
shows the probe sent Allocate, CreatePermission and Refresh requests to the TURN port
and nothing else — no Send indication, no ChannelBind, no ChannelData, no packet to any
other address or port. What coturn 4.6.1 answers, found by running it: 403 for
127.0.0.1 and 0.0.0.0 (loopback is refused unless ``allow-loopback-peers``), success for
RFC 1918, CGNAT, the metadata address and the limited broadcast; 440 to an IPv6
allocation when it listens on 127.0.0.1 only, and 443 to IPv6 peers on the IPv4 one.

One ``voipsec serve`` for the module (TURN on a UDP port of 127.0.0.1), audited with
``voipsec audit --dir D``: every internal peer refused; then, restarted once with
turn.allowed_peers opened, the granted peer and the exact fix line. The SARIF output of
both kinds of target validates against the SARIF 2.1.0 schema.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from ipaddress import ip_address
from pathlib import Path

import pytest

from tests.peers import netns
from tests.peers.proc import require, running, wait_for
from tests.peers.turn import binding, free_udp_tcp_port
from tests.peers.voipsec import VOIPSEC, VoipsecServer, prepare, serving, voipsec
from tests.sarifcheck import validated
from voipsec.audit.options import ProbeOptions
from voipsec.audit.targets import TurnTarget
from voipsec.audit.turnpeers import PROBED_PEERS, SPEC
from voipsec.audit.turnprobe import turn_results
from voipsec.nat import stun
from voipsec.nat.stun import Attr, Message, MessageClass, Method

pytestmark = pytest.mark.peers

PEERS = [peer.address for peer in PROBED_PEERS]
IPV6_PEERS = (
    "::1, ::ffff:127.0.0.1, ::ffff:0:7f00:1, ::7f00:1, 64:ff9b::7f00:1, 2002:7f00:1::,"
    " fe80::1, fc00::1"
)
COTURN_USER = ("probe", "secret")
COTURN_OBSERVED = (
    "granted: 10.0.0.1, 172.16.0.1, 192.168.0.1, 169.254.169.254, 100.64.0.1,"
    " 255.255.255.255; refused: 127.0.0.1, 0.0.0.0; not testable (no IPv6 allocation:"
    " 440 Address Family not Supported; on the IPv4 allocation: 443 Peer Address Family"
    f" Mismatch): {IPV6_PEERS}"
)
COTURN_FIX = (
    "refuse internal peers in the TURN server's relay policy (RFC 8656 §21); for coturn:"
    " denied-peer-ip=10.0.0.0-10.255.255.255, denied-peer-ip=172.16.0.0-172.31.255.255,"
    " denied-peer-ip=192.168.0.0-192.168.255.255, denied-peer-ip=169.254.0.0-169.254.255.255,"
    " denied-peer-ip=100.64.0.0-100.127.255.255, denied-peer-ip=240.0.0.0-255.255.255.255"
)
#: What the probe may send to the TURN port (the test's readiness probe is the Binding).
ALLOWED_REQUESTS = {Method.BINDING, Method.ALLOCATE, Method.CREATE_PERMISSION, Method.REFRESH}
#: turn.allowed_peers as an operator might open it: a LAN, loopback and a public range.
OPENED = '["10.0.0.0/8", "127.0.0.0/8", "192.0.3.0/24"]'


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}


def _only(results: list[dict[str, object]], target: str | None = None) -> dict[str, object]:
    """The one O-turn-peer-filter result of a JSON report (the probe's: not the local
    check's of the same id, unless ``target`` is "local")."""
    mine = [
        r
        for r in results
        if r["id"] == SPEC.id and (r["target"] == target if target else r["target"] != "local")
    ]
    assert len(mine) == 1, results
    return mine[0]


# -- coturn in a namespace ----------------------------------------------------------------


def _answered_from(port: int) -> int | None:
    """Send a Binding request to ``port`` from a fresh socket; its port once answered."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(0.1)
        request = Message(
            method=Method.BINDING, cls=MessageClass.REQUEST, transaction_id=os.urandom(12)
        )
        try:
            sock.sendto(stun.encode(request), ("127.0.0.1", port))
            sock.recvfrom(2048)
        except OSError:
            return None
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def _capturing(pcap: Path, port: int) -> Iterator[None]:
    """tshark on the namespace's lo, written to ``pcap`` until the block ends. The block
    starts once a Binding request to ``port`` shows in tshark's live output (its
    "Capturing on" line can come before packets are captured), and ends once the answer
    to a last one does (so that every packet before it was taken)."""
    live = pcap.with_suffix(".txt")
    argv = [
        require("tshark"), "-i", "lo", "-f", "udp or icmp", "-w", str(pcap),
        "-a", "duration:120", "-P", "-l", "-T", "fields", "-e", "udp.dstport",
    ]  # fmt: skip

    def shown(marker: int) -> bool:
        return str(marker) in live.read_text(errors="replace").split()

    with running(argv, log=live):
        wait_for(
            lambda: shown(port) if binding("127.0.0.1", port, timeout=0.1) else False,
            deadline=30,
            what="tshark to capture on lo",
        )
        yield
        marker = wait_for(lambda: _answered_from(port), what="a last Binding answer")
        assert isinstance(marker, int)
        wait_for(lambda: shown(marker), what="tshark to show the last packet")


def _captured(pcap: Path) -> list[tuple[str, int, str, int, bytes]]:
    """(source, source port, destination, destination port, payload) of each packet."""
    argv = [
        require("tshark"), "-r", str(pcap), "-T", "fields",
        "-e", "ip.src", "-e", "udp.srcport", "-e", "ip.dst", "-e", "udp.dstport",
        "-e", "udp.payload", "-d", "udp.port==1-65535,data",
    ]  # fmt: skip
    out = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    rows = []
    for line in out.splitlines():
        src, sport, dst, dport, payload = line.split("\t")
        data = bytes.fromhex(payload.replace(":", ""))
        rows.append((src, int(sport or 0), dst, int(dport or 0), data))
    return rows


def test_audit_coturn_default_policy_grants_internal_peers(tmp_path: Path) -> None:
    with netns.entered("audturn") as name:
        port = free_udp_tcp_port()
        coturn = [
            require("turnserver"), "-n", "--listening-ip", "127.0.0.1", "-p", str(port),
            "--lt-cred-mech", "--user", ":".join(COTURN_USER), "--realm", "audit.test",
            "--no-tls", "--no-dtls", "--no-cli", "--log-file", "stdout",
            "--pidfile", str(tmp_path / "turnserver.pid"),
        ]  # fmt: skip
        pcap = tmp_path / "lo.pcapng"
        with running(coturn, log=tmp_path / "coturn.log") as proc:
            wait_for(
                lambda: proc.poll() is not None or binding("127.0.0.1", port) is not None,
                what="coturn to answer STUN",
            )
            assert proc.poll() is None, (tmp_path / "coturn.log").read_text()
            with _capturing(pcap, port):
                audit = [
                    "ip", "netns", "exec", name, *VOIPSEC, "audit", "--dir", "/nonexistent",
                    "--turn", f"127.0.0.1:{port}", "--turn-user", COTURN_USER[0],
                    "--turn-password", COTURN_USER[1],
                ]  # fmt: skip
                out = subprocess.run(
                    [*audit, "--format", "json"],
                    capture_output=True, text=True, timeout=60, env=_env(), check=False,
                )  # fmt: skip
                sarif = subprocess.run(
                    [*audit, "--format", "sarif", "--fail-under", "100"],
                    capture_output=True, text=True, timeout=60, env=_env(), check=False,
                )  # fmt: skip
                # MAX_REQUESTS: the IPv4 allocation's 401 dance takes two, the IPv6
                # Allocate the third, and its answer to the challenge would be the fourth.
                bounded = turn_results(
                    TurnTarget("127.0.0.1", port),
                    ProbeOptions(turn_user=COTURN_USER[0], turn_password=COTURN_USER[1]),
                    max_requests=3,
                )
    assert (out.returncode, out.stderr) == (0, ""), out.stderr
    report = json.loads(out.stdout)
    assert report["score"] == 0.0
    assert _only(report["results"]) == {
        "id": "O-turn-peer-filter",
        "control": "O",
        "severity": "critical",
        "title": "TURN refuses internal peers",
        "target": f"turn:127.0.0.1:{port}",
        "outcome": "failed",
        "observed": COTURN_OBSERVED,
        "fix": COTURN_FIX,
    }
    assert sarif.returncode == 3, sarif.stderr
    log = validated(sarif.stdout)
    [result] = log["runs"][0]["results"]
    assert (result["ruleId"], result["kind"], result["level"]) == (SPEC.id, "fail", "error")
    assert result["message"]["text"] == f"{COTURN_OBSERVED} Fix: {COTURN_FIX}"
    assert [(r.outcome.value, r.observed) for r in bounded] == [
        ("error", "stopped after 3 requests (MAX_REQUESTS)")
    ]

    # The wire: only requests to the TURN port and coturn's answers from it.
    rows = _captured(pcap)
    assert rows
    strays = [
        r[:4] for r in rows if (r[0], r[1]) != ("127.0.0.1", port) and r[2:4] != ("127.0.0.1", port)
    ]
    assert strays == []
    sent = [stun.parse_message(r[4]) for r in rows if r[3] == port]
    assert not any(stun.is_channel_data(r[4]) for r in rows)
    assert {(m.method, m.cls) for m in sent} == {
        (method, MessageClass.REQUEST) for method in ALLOWED_REQUESTS
    }
    # One transaction per peer and audit run (two CLI runs; the bounded run asked none);
    # a retransmission has the same transaction ID.
    asked = {
        m.transaction_id: m.xor_addresses(Attr.XOR_PEER_ADDRESS)[0][0]
        for m in sent
        if m.method == Method.CREATE_PERMISSION
    }
    assert sorted(map(ip_address, asked.values()), key=str) == sorted(
        map(ip_address, PEERS * 2), key=str
    )


# -- voipsec serve --------------------------------------------------------------------------


@dataclass
class OwnTurn:
    """The module's ``voipsec serve`` with TURN; restarted when turn.allowed_peers changes."""

    server: VoipsecServer
    port: int
    allowed: str | None = None
    stack: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)

    def serve(self, allowed: str) -> VoipsecServer:
        if allowed != self.allowed:
            self.stack.close()
            voipsec("config", "set", "turn.allowed_peers", allowed, data_dir=self.server.data_dir)
            self.stack.enter_context(serving(self.server))
            self.allowed = allowed
        return self.server

    def audit(self, *args: str) -> subprocess.CompletedProcess[str]:
        return voipsec("audit", *args, data_dir=self.server.data_dir, check=False)


@pytest.fixture(scope="module")
def own_turn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OwnTurn]:
    port = free_udp_tcp_port()
    prepared = prepare(
        tmp_path_factory.mktemp("auditturn") / "data",
        settings=[("turn.listen", f'["udp:127.0.0.1:{port}"]')],
    )
    own = OwnTurn(server=prepared, port=port)
    with own.stack:
        yield own


def test_audit_own_turn_refuses_every_internal_peer(own_turn: OwnTurn) -> None:
    server = own_turn.serve("[]")
    result = own_turn.audit("--format", "json")
    assert (result.returncode, result.stderr) == (0, "")
    report = json.loads(result.stdout)
    expected = {
        "id": "O-turn-peer-filter",
        "control": "O",
        "severity": "critical",
        "title": "TURN refuses internal peers",
        "target": f"turn:127.0.0.1:{own_turn.port}",
        "outcome": "passed",
        # IPv6 peers on the IPv4 allocation (voipsec relays the listener's family): the
        # peer filter answers 403 before any family check.
        "observed": "refused: " + ", ".join(PEERS),
        "fix": "",
    }
    assert _only(report["results"]) == expected
    assert _only(report["results"], "local")["outcome"] == "passed"
    latest = json.loads((server.data_dir / "audit" / "latest.json").read_text())
    assert _only(latest["results"]) == expected
    assert oct((server.data_dir / "audit" / "latest.json").stat().st_mode & 0o777) == "0o600"
    # The probe's REST user shows in the server's log, its password nowhere.
    assert " for voipsec-audit from " in server.log_text()


def test_audit_own_turn_opened_names_granted_peer_and_fix(own_turn: OwnTurn) -> None:
    own_turn.serve(OPENED)
    result = own_turn.audit("--format", "json")
    assert (result.returncode, result.stderr) == (0, "")
    refused = [p for p in PEERS if p != "10.0.0.1"]
    d = own_turn.server.data_dir
    fix = f"""voipsec config set --dir {d} turn.allowed_peers '["192.0.3.0/24"]'"""
    report = json.loads(result.stdout)
    # The local check reads the same setting and gives the same fix.
    local = _only(report["results"], "local")
    assert (local["outcome"], local["fix"]) == ("failed", fix)
    assert _only(report["results"]) == {
        "id": "O-turn-peer-filter",
        "control": "O",
        "severity": "critical",
        "title": "TURN refuses internal peers",
        "target": f"turn:127.0.0.1:{own_turn.port}",
        "outcome": "failed",
        # 127.0.0.1 stays refused: it is voipsec's own address, which only a /32 entry
        # naming it opens (nat/peerfilter.py).
        "observed": "granted: 10.0.0.1; refused: " + ", ".join(refused),
        "fix": fix,
    }
    sarif = own_turn.audit("--format", "sarif", "--fail-under", "100")
    assert sarif.returncode == 3
    uri = f"turn%3A127.0.0.1%3A{own_turn.port}"
    [sarif_result] = [
        r
        for r in validated(sarif.stdout)["runs"][0]["results"]
        if r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] == uri
    ]
    assert sarif_result["ruleId"] == SPEC.id
    assert sarif_result["message"]["text"].endswith(f"Fix: {fix}")

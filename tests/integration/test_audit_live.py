"""``voipsec audit`` live probes against a default ``voipsec serve`` (issue 19 item 3).

One fresh ``voipsec init`` (the demo user in demo-user.txt, nothing else added) serving
on a free TLS port, one audit run shared by the tests. Both run inside a network
namespace the module creates (tests/peers/netns.py): the plaintext probe asks
127.0.0.1:5060 over UDP and TCP, and on the shared loopback another test's server (or
a peer such as svmap's target) may hold that port — in a namespace of its own only
this server's listeners exist, so "no SIP answer on 5060" proves something.
"""

from __future__ import annotations

import json
import re
import select
import socket
import subprocess
import threading
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.peers import netns
from tests.peers.proc import free_port, port_open, require, stop, wait_for
from tests.peers.voipsec import VoipsecServer, prepare, serving, voipsec, voipsec_cli
from voipsec.audit.cli import EXIT_UNDER
from voipsec.audit.live import SPECS, live_results
from voipsec.audit.liverequests import Party
from voipsec.audit.mediaprobe import ProbeLeg, media_checks
from voipsec.audit.options import ProbeOptions
from voipsec.audit.sipprobe import MAX_MESSAGES, ProbeRun, renegotiation, udp_exchange
from voipsec.audit.targets import SipTarget

pytestmark = pytest.mark.peers


@dataclass(frozen=True)
class Audited:
    server: VoipsecServer
    status: int
    report: dict[str, Any]

    @property
    def target(self) -> str:
        return f"sips:{self.server.host}:{self.server.port}"

    def live(self) -> dict[str, dict[str, Any]]:
        return {r["id"]: r for r in self.report["results"] if r["target"] == self.target}


@pytest.fixture(scope="module")
def audited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Audited]:
    base = tmp_path_factory.mktemp("audit-live")
    with ExitStack() as stack:
        stack.enter_context(netns.entered("vsaudit"))
        server = stack.enter_context(serving(prepare(base / "data")))
        proc = voipsec_cli(
            "audit",
            "--format",
            "json",
            "--fail-under",
            "100",
            data_dir=server.data_dir,
            check=False,
        )
        assert proc.stdout, proc.stderr
        yield Audited(server=server, status=proc.returncode, report=json.loads(proc.stdout))


#: Weakenings only a running server shows on the wire, each of which must fail exactly
#: its own live check (issue 19's bar), applied together to save a server start.
WEAKENINGS = (
    ("sip.listen", None),  # the TLS listener plus udp:127.0.0.1:5060, set below
    ("auth.algorithms", '["MD5"]'),
    ("media.srtp", '"optional"'),
)


@pytest.fixture(scope="module")
def weakened(audited: Audited) -> Iterator[Audited]:
    """The same installation restarted with WEAKENINGS, audited again."""
    server = audited.server
    assert server.proc is not None
    stop(server.proc)
    for key, value in WEAKENINGS:
        if value is None:
            value = f'["tls:{server.host}:{server.port}", "udp:127.0.0.1:5060"]'
        voipsec("config", "set", key, value, data_dir=server.data_dir)
    with serving(server):
        proc = voipsec_cli(
            "audit",
            "--format",
            "json",
            "--fail-under",
            "100",
            data_dir=server.data_dir,
            check=False,
        )
        assert proc.stdout, proc.stderr
        yield Audited(server=server, status=proc.returncode, report=json.loads(proc.stdout))


def test_audit_live_default_install_scores_100(audited: Audited) -> None:
    bad = [r for r in audited.report["results"] if r["outcome"] in ("failed", "error")]
    assert bad == []
    assert audited.report["score"] == 100.0
    assert audited.status == 0


def test_audit_live_every_check_runs_with_the_demo_user(audited: Audited) -> None:
    live = audited.live()
    assert sorted(live) == sorted(s.id for s in SPECS)
    outcomes = {k: v["outcome"] for k, v in live.items()}
    # The loopback zone is trusted (never rate limited), so the burst proves nothing.
    assert outcomes.pop("F-rate-limit") == "skipped"
    assert set(outcomes.values()) == {"passed"}
    assert re.fullmatch(
        r"the probe's source 127\.0\.0\.\d+ is in the trusted zone 'loopback', "
        r"which is never rate limited",
        live["F-rate-limit"]["observed"],
    )


def test_audit_live_observations(audited: Audited) -> None:
    seen = {k: v["observed"] for k, v in audited.live().items()}
    assert seen["S-tls-version"] == "accepted: TLS 1.2, TLS 1.3"
    assert seen["S-tls-ciphers"] == "refused a TLS 1.2 handshake offering only weak suites"
    assert seen["S-tls-renegotiation"] == (
        "client-initiated renegotiation refused (compression not probed)"
    )
    assert re.fullmatch(
        r"CN=localhost: \d+ days left, chain and name verified", seen["S-certificate-expiry"]
    )
    assert seen["S-plaintext-sip"] == "no SIP answer on udp:127.0.0.1:5060, tcp:127.0.0.1:5060"
    assert seen["A-digest-md5"] == "challenged with SHA-256"
    assert seen["A-digest-qop"] == "2 challenge(s), all with qop=auth"
    assert seen["A-unauthenticated-call"] == "INVITE without credentials refused (407)"
    assert seen["A-user-enumeration"].startswith("same answers; median ")
    assert seen["A-nonce-reuse"] == "accepted once (200), refused on replay (403)"
    assert seen["M-srtp-required"] == "an RTP/AVP offer was refused (488)"
    assert re.fullmatch(
        r"50 SRTP packets from 127\.0\.0\.\d+: 0 relayed to the callee, "
        r"0 of the callee's sent to 127\.0\.0\.\d+",
        seen["M-rtp-bleed"],
    )
    assert seen["M-srtp-junk"] == "10 packets with a bad SRTP tag from the caller: 0 forwarded"
    assert re.fullmatch(r"\d+ answer\(s\) read, nothing disclosed", seen["F-info-leak"])
    assert seen["F-amplification"] == "no UDP SIP listener answered"


def test_audit_live_silent_target_is_an_error_per_check() -> None:
    """Nothing listens (in a namespace of its own): every probe that needs the target
    is an ERROR (F-info-leak too: no answer to read), none raises; no UDP listener is a
    pass of F-amplification."""
    with netns.entered("vsaudnil"):
        port = free_port()
        options = ProbeOptions(user="alice", password="not-used", timeout=1.0)
        results = live_results(SipTarget("127.0.0.1", port), options)
    outcomes = {r.spec.id: r.outcome.value for r in results}
    assert outcomes == {
        **{s.id: "error" for s in SPECS},
        "S-plaintext-sip": "passed",
        "F-amplification": "passed",
    }
    tls = next(r for r in results if r.spec.id == "S-tls-version")
    assert tls.observed == f"could not probe: no TLS handshake succeeded with sips:127.0.0.1:{port}"


def test_audit_live_each_weakening_fails_its_own_check(weakened: Audited) -> None:
    live = weakened.live()
    failed = {k: (v["observed"], v["fix"]) for k, v in live.items() if v["outcome"] != "passed"}
    port, d = weakened.server.port, weakened.server.data_dir
    assert failed == {
        "S-plaintext-sip": (
            "udp:127.0.0.1:5060 answered 200 OK",
            f"voipsec config set --dir {d} sip.listen '[\"tls:127.0.0.1:{port}\"]'",
        ),
        "A-digest-md5": (
            "challenged with MD5",
            f"voipsec config set --dir {d} auth.algorithms '[\"SHA-256\"]'",
        ),
        "M-srtp-required": (
            "an RTP/AVP offer was forwarded to the callee",
            f"voipsec config set --dir {d} media.srtp '\"required\"'",
        ),
        "F-rate-limit": (live["F-rate-limit"]["observed"], ""),  # skipped: trusted loopback
    }
    assert live["F-rate-limit"]["outcome"] == "skipped"
    assert re.fullmatch(
        r"udp:127\.0\.0\.1:5060: \d+ bytes answered to \d+ \(1\.\d\dx\)",
        live["F-amplification"]["observed"],
    )
    assert weakened.status == EXIT_UNDER


def test_audit_live_udp_answers_read_at_most_max_messages() -> None:
    """A server that keeps sending provisionals: the probe reads MAX_MESSAGES, no more."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as server:
        server.bind(("127.0.0.1", 0))
        port = server.getsockname()[1]
        done = threading.Event()

        def flood() -> None:
            _, peer = server.recvfrom(4096)
            for _ in range(MAX_MESSAGES + 4):
                server.sendto(b"SIP/2.0 183 Session Progress\r\n\r\n", peer)
            done.set()

        thread = threading.Thread(target=flood)
        thread.start()
        got = udp_exchange("127.0.0.1", port, b"OPTIONS", 2.0)
        thread.join(timeout=5)
    assert done.is_set()
    assert len(got) == MAX_MESSAGES


@pytest.mark.parametrize(("flags", "accepted"), [([], False), (["-client_renegotiation"], True)])
def test_audit_live_renegotiation_probe_against_openssl(
    tmp_path: Path, flags: list[str], accepted: bool
) -> None:
    """OpenSSL 3's s_server refuses client-initiated renegotiation unless told to allow
    it: the probe must tell the two apart (TLS 1.2, RFC 9325 §3.5)."""
    openssl = require("openssl")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    req = [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"]
    subprocess.run(
        [*req, "-nodes", "-days", "1", "-subj", "/CN=s", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
        timeout=30,
    )
    port = free_port()
    argv = [openssl, "s_server", "-accept", f"127.0.0.1:{port}", "-cert", str(cert)]
    argv += ["-key", str(key), "-quiet", *flags]
    # s_server ends a connection when its stdin ends: keep a pipe open.
    server = subprocess.Popen(
        argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_for(lambda: port_open("127.0.0.1", port), what="openssl s_server to listen")
        assert renegotiation("127.0.0.1", port, 3.0) is accepted
    finally:
        stop(server)


def test_audit_live_media_checks_catch_a_latching_pass_through_relay() -> None:
    """A relay that forwards SRTP untouched and latches onto the latest source (RTP
    Bleed): the stranger's packets reach the callee, the callee's reach the stranger,
    and junk goes through — both media checks fail."""
    run = ProbeRun(
        target=SipTarget("127.0.0.1", 5061),
        options=ProbeOptions(timeout=2.0),
        party=Party(domain="127.0.0.1"),
        user=None,
        password=None,
    )
    stranger_host = run.fresh_source()
    assert stranger_host is not None
    with ExitStack() as stack:
        socks = [
            stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM)) for _ in range(5)
        ]
        for sock in socks[:4]:
            sock.bind(("127.0.0.1", 0))
        socks[4].bind((stranger_host, 0))
        a_side, b_side, caller_sock, callee_sock, stranger = socks
        caller, callee = ProbeLeg(caller_sock), ProbeLeg(callee_sock)
        caller.relay = a_side.getsockname()
        callee.relay = b_side.getsockname()
        callee.peer_master = caller.master  # pass-through: the caller's key end to end
        done = threading.Event()

        def relay() -> None:
            latched: tuple[str, int] | None = None
            while not done.is_set():
                ready, _, _ = select.select([a_side, b_side], [], [], 0.05)
                for sock in ready:
                    data, source = sock.recvfrom(2048)
                    if sock is a_side:
                        latched = source  # the latest source wins: the bleed
                        b_side.sendto(data, ("127.0.0.1", callee.port))
                    elif latched is not None:
                        a_side.sendto(data, latched)

        thread = threading.Thread(target=relay)
        thread.start()
        try:
            results = media_checks(run, caller, callee, stranger)
        finally:
            done.set()
            thread.join(timeout=5)
    assert [(r.spec.id, r.outcome.value, r.observed) for r in results] == [
        (
            "M-rtp-bleed",
            "failed",
            f"50 SRTP packets from {stranger_host}: 50 relayed to the callee, "
            f"50 of the callee's sent to {stranger_host}",
        ),
        (
            "M-srtp-junk",
            "failed",
            "10 packets with a bad SRTP tag from the caller: 10 forwarded",
        ),
    ]

"""The live SIP probes against hostile or broken targets (issue 19, review of the probes).

No real program misbehaves like this on purpose, so one small fake SIP-over-TLS server
(:class:`FakeSip`, threads, the voipsec SIP parser) plays each misbehaviour in turn:
its ``mode`` says how it answers. It runs inside a network namespace of the module's
own, so the probe's fixed places (5060, other 127.0.0.x addresses) meet nothing else;
no voipsec server is started. Each test runs one probe (or a bounded run) with a short
timeout and asserts its exact result; a test that checks that nothing arrives reads
with a deadline.
"""

from __future__ import annotations

import base64
import contextlib
import os
import re
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.peers import netns
from tests.peers.proc import wait_for
from voipsec.audit import live, mediaprobe
from voipsec.audit.live import live_results
from voipsec.audit.liverequests import Party
from voipsec.audit.mediaprobe import (
    MAX_ROUND_MESSAGES,
    STRANGER_PACKETS,
    ProbeLeg,
    media_checks,
    media_results,
)
from voipsec.audit.options import ProbeOptions
from voipsec.audit.sipprobe import MAX_MESSAGES, ProbeRun, certificate_trust, peer_certificate
from voipsec.audit.targets import SipTarget
from voipsec.pki.ca import CaPaths, create_ca, issue_certificate
from voipsec.sip import Request, Response, StreamFramer, parse_message, response_to
from voipsec.sip.dialog import new_tag
from voipsec.sip.errors import SipParseError
from voipsec.sip.framing import FramedMessage

#: Seconds a probe waits for one answer here (the fakes answer at once or never).
TIMEOUT = 0.5
#: Seconds a victim socket listens for packets that must not come.
VICTIM_WINDOW = 1.0
USER, PASSWORD = "alice", "not-a-secret"
CHALLENGE = 'Digest realm="fake", nonce="{}", algorithm=SHA-256, qop="auth"'


def _sdp(address: str, port: int) -> bytes:
    key = base64.b64encode(os.urandom(30)).decode()
    lines = [
        "v=0",
        f"o=- 1 1 IN IP4 {address}",
        "s=-",
        f"c=IN IP4 {address}",
        "t=0 0",
        f"m=audio {port} RTP/SAVP 0",
        "a=rtpmap:0 PCMU/8000",
        f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{key}",
    ]
    return ("\r\n".join(lines) + "\r\n").encode()


@dataclass
class FakeSip:
    """A SIP-over-TLS server on 127.0.0.1 that answers as ``mode`` says."""

    context: ssl.SSLContext
    mode: str = "silent"
    #: ssrf: where the forked INVITE's and the 200's SDP put the relay.
    fork_relay: tuple[str, int] = ("127.0.0.1", 9)
    ok_relay: tuple[str, int] = ("127.0.0.1", 9)
    sni: list[str | None] = field(default_factory=list)
    requests: list[Request] = field(default_factory=list)
    responses: list[Response] = field(default_factory=list)
    sock: socket.socket = field(default_factory=socket.socket)
    stop: threading.Event = field(default_factory=threading.Event)

    @property
    def port(self) -> int:
        return int(self.sock.getsockname()[1])

    def serve(self) -> None:
        while not self.stop.is_set():
            ready, _, _ = select.select([self.sock], [], [], 0.1)
            if ready:
                conn, _ = self.sock.accept()
                threading.Thread(target=self._connection, args=(conn,), daemon=True).start()

    def _connection(self, raw: socket.socket) -> None:
        raw.settimeout(10)
        with contextlib.suppress(OSError), self.context.wrap_socket(raw, server_side=True) as conn:
            framer, state = StreamFramer(), {}  # type: ignore[var-annotated]
            while not self.stop.is_set():
                data = conn.recv(65536)
                if not data:
                    return
                for item in framer.feed(data):
                    if isinstance(item, FramedMessage):
                        msg = parse_message(item.data, datagram=False)
                        if isinstance(msg, Request):
                            self.requests.append(msg)
                            self._on_request(conn, msg, state)
                        else:
                            self.responses.append(msg)
                            self._on_response(conn, msg, state)

    def _on_response(self, conn: ssl.SSLSocket, msg: Response, state: dict[str, Request]) -> None:
        orig = state.pop("orig", None)
        if self.mode == "ssrf" and msg.cseq.method == "INVITE" and orig is not None:
            ok = response_to(orig, 200, "OK", to_tag=new_tag(), body=_sdp(*self.ok_relay))
            conn.sendall(ok.to_bytes())

    def _on_request(self, conn: ssl.SSLSocket, req: Request, state: dict[str, Request]) -> None:
        send: Callable[[Response], None] = lambda r: conn.sendall(r.to_bytes())  # noqa: E731
        m, mode = req.method, self.mode
        authed = bool(req.headers.get("authorization") or req.headers.get("proxy-authorization"))
        challenge = ("WWW-Authenticate", CHALLENGE.format(new_tag()))
        proxy = ("Proxy-Authenticate", CHALLENGE.format(new_tag()))
        if mode == "silent" or m == "ACK":
            return
        if m in ("BYE", "CANCEL"):
            send(response_to(req, 200, "OK", to_tag=new_tag()))
            if m == "CANCEL" and "invite" in state:
                send(response_to(state.pop("invite"), 487, "Request Terminated", to_tag=new_tag()))
            return
        if mode == "junk" and m == "OPTIONS":
            # A message that does not parse before each answer: the answer still counts.
            conn.sendall(b"SIP/2.0 200 OK\r\nCSeq: nonsense\r\nContent-Length: 0\r\n\r\n")
            send(response_to(req, 200, "OK", to_tag=new_tag()))
        elif mode == "drip" and m == "OPTIONS":
            for _ in range(MAX_MESSAGES + 4):
                send(response_to(req, 100, "Trying"))
        elif mode == "nonceslow" and m == "REGISTER" and authed:
            if req.cseq.seq != 3:  # the replay (CSeq 3) is never answered in time
                send(response_to(req, 200, "OK", to_tag=new_tag()))
        elif mode == "late" and m == "INVITE":
            send(response_to(req, 100, "Trying"))  # ... and nothing more until CANCEL
            state["invite"] = req
        elif mode == "srtp488" and m == "INVITE":
            if b"RTP/AVP" in req.body:
                send(response_to(req, 488, "Not Acceptable Here", to_tag=new_tag()))
            else:  # routed without authentication, answered without a To tag
                send(response_to(req, 200, "OK"))
        elif mode in ("enum", "enumdrop") and m == "INVITE":
            if mode == "enum" and req.uri.user not in (USER, "+442079460000"):
                send(response_to(req, 404, "Not Found", to_tag=new_tag()))
            else:
                send(response_to(req, 407, "Proxy Auth Required", to_tag=new_tag(), extra=(proxy,)))
        elif mode == "enumdrop" and m == "REGISTER" and req.from_.uri.user != USER:
            return  # unknown users: silence
        elif m == "OPTIONS" or (mode in ("ssrf", "reqflood", "openreg") and m == "REGISTER"):
            send(response_to(req, 200, "OK", to_tag=new_tag()))
        elif mode == "reqflood" and m == "INVITE":
            for i in range(3 * MAX_ROUND_MESSAGES):
                flood = (
                    f"OPTIONS sip:{USER}@127.0.0.1 SIP/2.0\r\n"
                    f"Via: SIP/2.0/TLS 127.0.0.1:{self.port};branch=z9hG4bKf{i}\r\n"
                    f"From: <sip:f@fake>;tag=t{i}\r\nTo: <sip:{USER}@fake>\r\n"
                    f"Call-ID: flood{i}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
                )
                conn.sendall(flood.encode())
            send(response_to(req, 488, "Not Acceptable Here", to_tag=new_tag()))
        elif mode == "ssrf" and m == "INVITE":
            if b"RTP/SAVP" not in req.body:
                send(response_to(req, 488, "Not Acceptable Here", to_tag=new_tag()))
                return
            send(response_to(req, 100, "Trying"))
            state["orig"] = req
            body = _sdp(*self.fork_relay)
            fork = (
                f"INVITE sip:{USER}@127.0.0.1 SIP/2.0\r\n"
                f"Via: SIP/2.0/TLS 127.0.0.1:{self.port};branch=z9hG4bK{new_tag()}\r\n"
                f"From: <sip:{USER}@fake>;tag={new_tag()}\r\nTo: <sip:{USER}@fake>\r\n"
                f"Call-ID: fork{new_tag()}\r\nCSeq: 1 INVITE\r\n"
                f"Contact: <sip:b2b@127.0.0.1:{self.port};transport=tls>\r\n"
                f"Content-Type: application/sdp\r\nContent-Length: {len(body)}\r\n\r\n"
            )
            conn.sendall(fork.encode() + body)
        elif m == "INVITE":
            send(response_to(req, 407, "Proxy Auth Required", to_tag=new_tag(), extra=(proxy,)))
        else:
            send(response_to(req, 401, "Unauthorized", to_tag=new_tag(), extra=(challenge,)))


@dataclass(frozen=True)
class Fixture:
    fake: FakeSip
    ca: Path

    def run(self, mode: str, *, host: str = "127.0.0.1", user: str | None = USER) -> ProbeRun:
        self.fake.mode = mode
        self.fake.requests.clear()
        self.fake.responses.clear()
        return ProbeRun(
            target=SipTarget(host, self.fake.port),
            options=ProbeOptions(user=user, password=PASSWORD, timeout=TIMEOUT),
            party=Party(domain=host),
            user=user,
            password=PASSWORD if user else None,
        )


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fixture]:
    base = tmp_path_factory.mktemp("audit-hostile")
    ca = CaPaths(cert=base / "ca.crt", key=base / "ca.key")
    create_ca(ca, "audit test CA")
    # The certificate names localhost only: the name check must fail for 127.0.0.1.
    cert, key = issue_certificate(ca, common_name="fake", dns_names=("localhost",), server=True)
    (base / "cert.pem").write_bytes(cert)
    (base / "key.pem").write_bytes(key)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(base / "cert.pem", base / "key.pem")
    with netns.entered("vsaudhos"):
        fake = FakeSip(context=context)
        context.sni_callback = lambda _sock, name, _ctx: fake.sni.append(name)  # type: ignore[func-returns-value]
        fake.sock.bind(("127.0.0.1", 0))
        fake.sock.listen(16)
        thread = threading.Thread(target=fake.serve)
        thread.start()
        try:
            yield Fixture(fake=fake, ca=ca.cert)
        finally:
            fake.stop.set()
            thread.join(timeout=5)
            fake.sock.close()


def _outcomes(results: list) -> dict[str, tuple[str, str]]:  # type: ignore[type-arg]
    return {r.spec.id: (r.outcome.value, r.observed) for r in results}


# -- 1: the media probe sends nowhere but the target ----------------------------------


def _victims(*hosts: str) -> list[socket.socket]:
    socks = []
    for host in hosts:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((host, 0))
        socks.append(sock)
    return socks


def _received(socks: list[socket.socket]) -> int:
    """Datagrams that reach ``socks`` within VICTIM_WINDOW (read with a deadline)."""
    count, deadline = 0, time.monotonic() + VICTIM_WINDOW
    while (left := deadline - time.monotonic()) > 0:
        ready, _, _ = select.select(socks, [], [], left)
        for sock in ready:
            sock.recv(4096)
            count += 1
    return count


@pytest.mark.parametrize(
    ("fork_host", "ok_host", "named"),
    [("127.0.0.77", "127.0.0.66", "127.0.0.77"), ("127.0.0.1", "127.0.0.66", "127.0.0.66")],
)
def test_audit_hostile_media_never_sent_to_a_third_address(
    hostile: Fixture, fork_host: str, ok_host: str, named: str
) -> None:
    """The target's SDP names another host as its relay (in the fork, or in the 200):
    the probe sends it nothing and skips the media checks."""
    victims = _victims("127.0.0.77", "127.0.0.66")
    try:
        hostile.fake.fork_relay = (fork_host, victims[0].getsockname()[1])
        hostile.fake.ok_relay = (ok_host, victims[1].getsockname()[1])
        results = media_results(hostile.run("ssrf"))
        assert _received(victims) == 0
    finally:
        for sock in victims:
            sock.close()
    why = f"relay address {named} not the target's"
    assert _outcomes(results) == {
        "M-srtp-required": ("passed", "an RTP/AVP offer was refused (488)"),
        "M-rtp-bleed": ("skipped", why),
        "M-srtp-junk": ("skipped", why),
    }


# -- 3: silence is not security --------------------------------------------------------


def test_audit_hostile_junk_between_answers_is_read_past(hostile: Fixture) -> None:
    """A message that does not parse before each 200: all 60 are still answered."""
    result = live._rate_limit(hostile.run("junk"))
    assert (result.outcome.value, result.observed) == ("failed", "all 60 OPTIONS in 1 s answered")


def test_audit_hostile_silent_burst_is_an_error(hostile: Fixture) -> None:
    result = live._rate_limit(hostile.run("silent"))
    assert (result.outcome.value, result.observed) == (
        "error",
        "60 OPTIONS in 1 s: 0 answered, no 429/503 and no close after answers — no limit shown",
    )


def test_audit_hostile_unanswered_replay_is_not_a_refusal(hostile: Fixture) -> None:
    result = live._nonce_reuse(hostile.run("nonceslow"))
    assert (result.outcome.value, result.observed) == (
        "error",
        "accepted once (200), replay got no answer: not a refusal",
    )


def test_audit_hostile_silent_target_within_budget(hostile: Fixture) -> None:
    """A target that completes TLS and answers nothing: every SIP check is an ERROR
    (none passes, none is skipped), and the run ends within its time budget."""
    budget = 4.0
    run = hostile.run("silent")
    started = time.monotonic()
    results = live_results(run.target, run.options, budget=budget)
    took = time.monotonic() - started
    assert took < budget + 2 * TIMEOUT + 1.0
    sip = {
        k: v[0] for k, v in _outcomes(results).items() if k[0] in "AMF" and k != "F-amplification"
    }
    assert set(sip.values()) == {"error"}, sip
    assert len(sip) == 11


# -- 2 and 7: unauthenticated calls -----------------------------------------------------


def test_audit_hostile_call_cancelled_after_trying_is_routed(hostile: Fixture) -> None:
    """100 Trying and no final answer: the probe CANCELs; the 487 shows the call was
    going somewhere (a gateway that answers 183 seconds later)."""
    results = _outcomes(live._challenges(hostile.run("late")))
    assert results["A-unauthenticated-call"] == (
        "failed",
        "INVITE to +442079460000 without credentials got 100, 487 (CANCELled)",
    )
    assert results["A-digest-md5"] == ("passed", "challenged with SHA-256")
    wait_for(lambda: len(hostile.fake.requests) >= 4, what="the ACK of the 487")
    assert [r.method for r in hostile.fake.requests] == ["REGISTER", "INVITE", "CANCEL", "ACK"]


def test_audit_hostile_call_routed_behind_an_srtp_policy(hostile: Fixture) -> None:
    """RTP/AVP refused 488 but SRTP routed without authentication — and answered 200
    without a To tag: judged failed (not an error), and no exception on hang-up."""
    results = _outcomes(live._challenges(hostile.run("srtp488")))
    assert results == {
        "A-digest-md5": ("passed", "challenged with SHA-256"),
        "A-digest-qop": ("passed", "1 challenge(s), all with qop=auth"),
        "A-unauthenticated-call": (
            "failed",
            "INVITE to +442079460000 without credentials got 200",
        ),
        "A-unauthenticated-register": ("passed", "REGISTER without credentials refused (401)"),
    }
    (invite,) = [r for r in hostile.fake.requests if r.method == "INVITE"]
    assert b"m=audio 9 RTP/SAVP 0" in invite.body
    # Review 3 #9: the untagged 200 is still ACKed and BYEd, with the To as received.
    wait_for(lambda: "BYE" in [r.method for r in hostile.fake.requests], what="the BYE")
    ack, bye = [r for r in hostile.fake.requests if r.method in ("ACK", "BYE")]
    assert (ack.method, ack.cseq.seq, ack.call_id) == ("ACK", invite.cseq.seq, invite.call_id)
    assert (bye.method, bye.cseq.seq, bye.call_id) == ("BYE", invite.cseq.seq + 1, invite.call_id)
    assert ack.to.tag is None and bye.to.tag is None
    assert bye.from_.tag == invite.from_.tag


def test_audit_hostile_register_accepted_without_credentials(hostile: Fixture) -> None:
    """Review 3 #3: a registrar that binds anyone (REGISTER 200 without credentials)
    while INVITEs are challenged: A-unauthenticated-register fails — nothing else would
    (the digest checks read the INVITE's challenge, the replay probe skips)."""
    results = live._challenges(hostile.run("openreg"))
    assert _outcomes(results) == {
        "A-digest-md5": ("passed", "challenged with SHA-256"),
        "A-digest-qop": ("passed", "1 challenge(s), all with qop=auth"),
        "A-unauthenticated-call": ("passed", "INVITE without credentials refused (407)"),
        "A-unauthenticated-register": (
            "failed",
            "REGISTER accepted without credentials (200)",
        ),
    }
    assert results[-1].fix == "challenge every REGISTER (401) and bind only authenticated users"
    replay = live._nonce_reuse(hostile.run("openreg"))
    assert (replay.outcome.value, replay.observed) == (
        "skipped",
        "REGISTER was not challenged (200 OK)",
    )


# -- 4: user enumeration ---------------------------------------------------------------


def test_audit_hostile_enumeration_by_callee(hostile: Fixture) -> None:
    """svwar's INVITE mode: an existing callee is challenged, an unknown one 404."""
    result = live._enumeration(hostile.run("enum"), True)
    assert (result.outcome.value, result.observed) == (
        "failed",
        "INVITE: existing user 407 Proxy Auth Required, unknown user 404 Not Found",
    )
    invites = [r for r in hostile.fake.requests if r.method == "INVITE"]
    assert invites[0].uri.user == invites[0].to.uri.user == USER
    assert "OPTIONS" in {r.method for r in hostile.fake.requests}


def test_audit_hostile_enumeration_by_silence(hostile: Fixture) -> None:
    result = live._enumeration(hostile.run("enumdrop"), True)
    assert (result.outcome.value, result.observed) == (
        "failed",
        "REGISTER: existing user 401 Unauthorized, unknown user no answer "
        "(the existing user's next request was answered)",
    )


# -- 5: plaintext answered to the Via port -------------------------------------------------


def test_audit_hostile_plaintext_answered_to_the_via_port(hostile: Fixture) -> None:
    """A UDP server without rport (RFC 3581) answers to source address : Via port
    (RFC 3261 §18.2.2): the Via must name the probe's real port to hear it."""
    host = "127.0.0.251"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as server:
        server.bind((host, 5060))
        done = threading.Event()

        def answer() -> None:
            ready, _, _ = select.select([server], [], [], 5)
            if ready:
                data, (source, _) = server.recvfrom(4096)
                req = parse_message(data, datagram=True)
                assert isinstance(req, Request)
                via = req.vias[0]
                ok = response_to(req, 200, "OK", to_tag=new_tag())
                server.sendto(ok.to_bytes(), (source, via.port or 5060))
            done.set()

        thread = threading.Thread(target=answer)
        thread.start()
        udp: dict[str, tuple[int, int]] = {}
        result = live._plaintext(hostile.run("silent", host=host), udp)
        thread.join(timeout=5)
    assert done.is_set()
    assert (result.outcome.value, result.observed) == (
        "failed",
        f"udp:{host}:5060 answered 200 OK",
    )
    assert list(udp) == [f"udp:{host}:5060"]


def test_audit_hostile_plaintext_on_an_ipv6_target(hostile: Fixture) -> None:
    """Review 3 #7: target [::1]: the OPTIONS names sip:[::1]:5060 (RFC 3261 §25.1,
    brackets), so a server that parses it answers — and the answer is reported."""
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as server:
        server.bind(("::1", 5060))
        uris: list[str] = []
        done = threading.Event()

        def answer() -> None:
            ready, _, _ = select.select([server], [], [], 5)
            if ready:
                data, (source, port, *_) = server.recvfrom(4096)
                with contextlib.suppress(SipParseError):
                    req = parse_message(data, datagram=True)
                    assert isinstance(req, Request)
                    uris.append(str(req.uri))
                    ok = response_to(req, 200, "OK", to_tag=new_tag())
                    server.sendto(ok.to_bytes(), (source, port))
            done.set()

        thread = threading.Thread(target=answer)
        thread.start()
        udp: dict[str, tuple[int, int]] = {}
        result = live._plaintext(hostile.run("silent", host="::1"), udp)
        thread.join(timeout=5)
    assert done.is_set()
    assert uris == ["sip:[::1]:5060"]
    assert (result.outcome.value, result.observed) == ("failed", "udp:[::1]:5060 answered 200 OK")
    assert list(udp) == ["udp:[::1]:5060"]


# -- 6: TLS name, chain, SNI ----------------------------------------------------------------


def test_audit_hostile_certificate_chain_and_name(hostile: Fixture) -> None:
    fake, port = hostile.fake, hostile.fake.port
    fake.sni.clear()
    assert certificate_trust("localhost", port, TIMEOUT, cafile=str(hostile.ca)) is None
    assert certificate_trust("127.0.0.1", port, TIMEOUT, cafile=str(hostile.ca)) == (
        "IP address mismatch, certificate is not valid for '127.0.0.1'."
    )
    assert certificate_trust("localhost", port, TIMEOUT, cafile=None) == (
        "unable to get local issuer certificate"
    )
    peer_certificate("localhost", port, TIMEOUT)
    peer_certificate("127.0.0.1", port, TIMEOUT)
    # SNI for a name (RFC 6066 §3), none for an address.
    assert fake.sni == ["localhost", None, "localhost", "localhost", None]
    (result,) = live._certificate(hostile.run("silent"))
    assert result.outcome.value == "failed"
    assert re.fullmatch(
        r"CN=fake: \d+ days left; not trusted: unable to get local issuer certificate",
        result.observed,
    )


# -- 10: RTP bleed past a re-latching threshold ------------------------------------------


def test_audit_hostile_relay_relatching_after_eleven_packets(hostile: Fixture) -> None:
    """A relay that moves to a new source after 11 packets in a row from it: the
    stranger's STRANGER_PACKETS are enough to be relayed."""
    run = hostile.run("silent", user=None)
    stranger_host = run.fresh_source()
    assert stranger_host is not None
    with contextlib.ExitStack() as stack:
        socks = [
            stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM)) for _ in range(5)
        ]
        for sock in socks[:4]:
            sock.bind(("127.0.0.1", 0))
        socks[4].bind((stranger_host, 0))
        a_side, b_side, caller_sock, callee_sock, stranger = socks
        caller, callee = ProbeLeg(caller_sock), ProbeLeg(callee_sock)
        caller.relay, callee.relay = a_side.getsockname(), b_side.getsockname()
        callee.peer_master = caller.master
        done = threading.Event()

        def relay() -> None:
            latched: tuple[str, int] | None = None
            candidate: tuple[str, int] | None = None
            streak = 0
            while not done.is_set():
                ready, _, _ = select.select([a_side, b_side], [], [], 0.05)
                for sock in ready:
                    data, source = sock.recvfrom(2048)
                    if sock is b_side:
                        continue
                    if latched is None:
                        latched = source
                    if source != latched:
                        streak = streak + 1 if candidate == source else 1
                        candidate = source
                        if streak < 11:
                            continue
                        latched = source
                    b_side.sendto(data, ("127.0.0.1", callee.port))

        thread = threading.Thread(target=relay)
        thread.start()
        try:
            bleed, _ = media_checks(run, caller, callee, stranger)
        finally:
            done.set()
            thread.join(timeout=5)
    assert bleed.outcome.value == "failed"
    assert bleed.observed == (
        f"{STRANGER_PACKETS} SRTP packets from {stranger_host}: "
        f"{STRANGER_PACKETS - 10} relayed to the callee, 0 of the callee's sent to {stranger_host}"
    )


# -- 11: bounds on the TLS path --------------------------------------------------------------


def test_audit_hostile_requests_in_one_invite_round_are_bounded(hostile: Fixture) -> None:
    """The target pushes 3 x MAX_ROUND_MESSAGES requests into each INVITE round: the
    probe reads at most MAX_ROUND_MESSAGES per round (two rounds: the RTP/AVP offer
    and the SRTP call), so answers at most that many."""
    media_results(hostile.run("reqflood"))
    answered = [r for r in hostile.fake.responses if r.cseq.method == "OPTIONS"]
    assert MAX_ROUND_MESSAGES <= len(answered) <= 2 * MAX_ROUND_MESSAGES


def test_audit_hostile_provisionals_read_at_most_max_messages(hostile: Fixture) -> None:
    run = hostile.run("drip")
    with run.stream() as stream:
        got = run.ask(stream, live.request("OPTIONS", run.party, stream.local))
    assert len(got) == MAX_MESSAGES
    assert {r.status for r in got} == {100}


def test_audit_hostile_sdp_without_connection_names_no_relay() -> None:
    """No c= line: no relay at all — never "" (which sendto takes for this host)."""
    body = _sdp("127.0.0.1", 4000).replace(b"c=IN IP4 127.0.0.1\r\n", b"")
    assert b"c=" not in body
    assert mediaprobe._relay_of(body) is None
    found = mediaprobe._relay_of(_sdp("127.0.0.1", 4000))
    assert found is not None and found[0] == ("127.0.0.1", 4000)

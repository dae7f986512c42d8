"""The media probes: one call from the test user to itself, both legs ending here.

How this works: the probe registers as the test user on one TLS connection and calls
the user's own AOR from it, so the server forks the INVITE back to the probe: the probe
is caller and callee, and sees both sides of the relay. First an RTP/AVP offer
(M-srtp-required: refused 488, or forwarded/answered). Then an SDES-SRTP call (RFC 4568)
with real SRTP (pylibsrtp): the caller's leg sends, the callee's leg receives, which
teaches the relay the caller's address; then a stranger (another source address) sends
valid SRTP to the same relay port (M-rtp-bleed: must not reach the callee, and the
callee's answer must not reach the stranger), and the caller sends SRTP-shaped junk
(M-srtp-junk: must not reach the callee). Every packet count is a named constant; the
call is ended with BYE and the registration removed.
"""

from __future__ import annotations

import contextlib
import secrets
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import pylibsrtp

from ..media.sdes import SUITES, crypto_line, inbound_policy, master_of, new_master, outbound_policy
from ..media.sdp import SdpError, parse_sdp
from ..sip import Request, Response, response_to
from ..sip.dialog import new_tag, uac_dialog
from ..sip.digest import answer_challenge
from ..sip.errors import SipParseError
from ..sip.uac import ack_for_failure, cancel_for, in_dialog
from . import livechecks as lc
from .liverequests import Party, audio_offer, request
from .model import CheckResult, errored, skipped
from .sipprobe import ProbeBudgetExceeded, ProbeRun, SipStream

__all__ = [
    "JUNK_PACKETS",
    "LEARN_PACKETS",
    "MAX_ROUND_MESSAGES",
    "QUIET_WINDOW",
    "STRANGER_PACKETS",
    "ProbeLeg",
    "media_checks",
    "media_results",
]

#: What the probe answers a forked INVITE with: an SDP body, or None for 488.
Answerer = Callable[[Request], "bytes | None"]

#: Valid SRTP packets the caller sends for the relay to learn its address.
LEARN_PACKETS = 10
#: Valid SRTP packets the stranger sends from an unlearned source: one second of voice,
#: more than a relay that re-latches after a run of packets from a new source waits.
STRANGER_PACKETS = 50
#: SRTP-shaped packets with a bad tag the caller sends.
JUNK_PACKETS = 10
#: Seconds between two media packets (20 ms, one voice frame).
PACKET_INTERVAL = 0.02
#: Registration lifetime of the probe (removed at the end anyway).
REGISTER_EXPIRES = 60
#: Seconds the probe listens for media that must not come (bleed, junk).
QUIET_WINDOW = 0.6
#: Messages read in one INVITE round (responses, forks, in-between requests answered).
MAX_ROUND_MESSAGES = 16
_SUITE = SUITES["AES_CM_128_HMAC_SHA1_80"]
#: RTP payload type 0 (PCMU, RFC 3551 §6) with the version bits of RFC 3550 §5.1.
_RTP_V2 = 0x80
_PAYLOAD = 160


def media_results(run: ProbeRun) -> list[CheckResult]:
    """M-srtp-required, M-rtp-bleed, M-srtp-junk (skipped without credentials)."""
    specs = [lc.SPEC_BY_ID[i] for i in ("M-srtp-required", "M-rtp-bleed", "M-srtp-junk")]
    if not run.user or not run.password:
        why = "needs a test user (--user/--password)"
        return [skipped(spec, run.name, why) for spec in specs]
    with run.stream(source=run.auth_source()) as stream:
        party = Party(domain=run.party.domain, from_user=run.user, to_user=run.user)
        contact = stream.local.contact(run.user)
        reg = _authed(
            run,
            stream,
            "REGISTER",
            party,
            [("Contact", contact), ("Expires", str(REGISTER_EXPIRES))],
        )
        if not reg:
            why = "no answer to the test user's REGISTER"
            return [errored(spec, run.name, why) for spec in specs]
        if reg[-1].status >= 300:
            why = f"the test user could not register ({_last(reg)})"
            return [skipped(spec, run.name, why) for spec in specs]
        try:
            status, forwarded = _plain_offer(run, stream, party)
            results = [lc.judge_srtp_required(run.name, status, forwarded, own=run.own)]
            results += _srtp_call(run, stream, party)
        finally:
            with contextlib.suppress(OSError):
                _authed(run, stream, "REGISTER", party, [("Contact", contact), ("Expires", "0")])
    return results


def _last(got: list[Response]) -> str:
    return f"{got[-1].status} {got[-1].reason}" if got else "no answer"


def _authed(
    run: ProbeRun,
    stream: SipStream,
    method: str,
    party: Party,
    extra: list[tuple[str, str]],
    body: bytes = b"",
) -> list[Response]:
    """A request, answered once with the test user's credentials when challenged."""
    call_id = secrets.token_hex(12)
    req = request(method, party, stream.local, call_id=call_id, extra=extra, body=body)
    got = run.ask(stream, req)
    if not got or got[-1].status not in (401, 407):
        return got
    assert run.user is not None and run.password is not None
    auth = answer_challenge(
        got[-1], username=run.user, password=run.password, method=method, uri=req.raw_uri
    )
    if auth is None:
        return got
    req = request(
        method, party, stream.local, call_id=call_id, cseq=2, extra=[*extra, auth], body=body
    )
    return run.ask(stream, req)


def _plain_offer(run: ProbeRun, stream: SipStream, party: Party) -> tuple[int | None, bool]:
    """INVITE the user's own AOR with RTP/AVP: the final status, and whether the
    INVITE was forwarded to the probe's registration (answered 488 by the probe)."""
    body = audio_offer(stream.local.host, _free_even_port(stream.local.host), crypto=None)
    contact = stream.local.contact(run.user or "audit")
    _, got, forked = _invite(run, stream, party, contact, body, answer=None)
    return (got[-1].status if got else None), forked is not None


def _invite(
    run: ProbeRun,
    stream: SipStream,
    party: Party,
    contact: str,
    body: bytes,
    *,
    answer: Answerer | None,
) -> tuple[Request, list[Response], Request | None]:
    """INVITE with credentials; a fork to us is answered ``answer`` (200 with that SDP)
    or 488. Returns the INVITE sent, its responses and the forked INVITE if any."""
    extra = [("Contact", contact)]
    call_id = secrets.token_hex(12)
    req = request("INVITE", party, stream.local, call_id=call_id, extra=extra, body=body)
    got = _invite_round(run, stream, req, answer)
    if got[0] and got[0][-1].status in (401, 407):
        assert run.user is not None and run.password is not None
        auth = answer_challenge(
            got[0][-1], username=run.user, password=run.password, method="INVITE", uri=req.raw_uri
        )
        if auth is not None:
            req = request(
                "INVITE",
                party,
                stream.local,
                call_id=call_id,
                cseq=2,
                extra=[*extra, auth],
                body=body,
            )
            got = _invite_round(run, stream, req, answer)
    return req, got[0], got[1]


def _invite_round(
    run: ProbeRun, stream: SipStream, req: Request, answer: Answerer | None
) -> tuple[list[Response], Request | None]:
    run.pace()
    stream.send(req)
    got: list[Response] = []
    forked: Request | None = None
    deadline = time.monotonic() + run.wait(run.options.timeout * 2)
    for _ in range(MAX_ROUND_MESSAGES):
        msg = stream.next_message(max(deadline - time.monotonic(), 0.01))
        if msg is None:
            break
        if isinstance(msg, Request):
            if msg.method == "INVITE" and forked is not None:
                continue  # one fork is the call; more are not answered
            _serve(stream, msg, answer)
            if msg.method == "INVITE":
                forked = msg
            continue
        if msg.call_id != req.call_id or msg.cseq.method != req.method:
            continue
        run.seen.append(msg)
        got.append(msg)
        if msg.status >= 200:
            break
    run.answered(got)
    if req.method != "INVITE":
        return got, forked
    if not got or got[-1].status < 200:
        # No final answer in time: CANCEL (§9.1), a request like any other (paced).
        run.pace()
        stream.send(cancel_for(req))
        more = stream.responses_to(req)
        got += more
    if got and got[-1].status >= 300:
        stream.send(ack_for_failure(req, got[-1]))
    return got, forked


def _serve(stream: SipStream, msg: Request, answerer: Answerer | None) -> None:
    """Answer what the server sends the probe's registration."""
    if msg.method == "INVITE":
        answer = answerer(msg) if answerer is not None else None
        if answer is None:
            stream.send(response_to(msg, 488, "Not Acceptable Here", to_tag=new_tag()))
        else:
            contact = stream.local.contact("callee")
            stream.send(
                response_to(
                    msg,
                    200,
                    "OK",
                    to_tag=new_tag(),
                    extra=(("Contact", contact), ("Content-Type", "application/sdp")),
                    body=answer,
                )
            )
    elif msg.method not in ("ACK",):
        stream.send(response_to(msg, 200, "OK"))


def _free_even_port(host: str) -> int:
    """An even UDP port (RTP, RFC 3550 §11) nobody uses right now (for an offer that
    is refused: nothing listens)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1]) & ~1


@dataclass(slots=True)
class ProbeLeg:
    """One side of the probe's call: its RTP socket, keys, and the relay's port."""

    sock: socket.socket
    master: bytes = field(default_factory=lambda: new_master(_SUITE), repr=False)
    relay: tuple[str, int] | None = None
    peer_master: bytes | None = field(default=None, repr=False)
    seq: int = 1
    ssrc: int = field(default_factory=lambda: secrets.randbits(32))

    @property
    def port(self) -> int:
        return int(self.sock.getsockname()[1])

    def crypto(self, tag: int = 1) -> str:
        return str(crypto_line(tag, _SUITE, self.master))


def _rtp(leg: ProbeLeg, payload: bytes) -> bytes:
    header = struct.pack("!BBHII", _RTP_V2, 0, leg.seq & 0xFFFF, leg.seq * 160, leg.ssrc)
    leg.seq += 1
    return header + payload


def _relay_of(body: bytes) -> tuple[tuple[str, int], bytes | None, int] | None:
    """The relay's address and port in an SDP, its AES_CM_128_HMAC_SHA1_80 key and tag."""
    try:
        sdp = parse_sdp(body)
        media = sdp.media[0]
        address = media.connection or sdp.connection
        if not address:
            return None  # no c= (RFC 4566 §5.7): nowhere to send, never "" (this host)
        for crypto in media.crypto:
            if crypto.suite == _SUITE.name:
                return (address, media.port), master_of(crypto), crypto.tag
    except (SdpError, IndexError, ValueError):
        return None
    return (address, media.port), None, 0


def _udp(host: str) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((host, 0))
    return sock


def _receive(
    sock: socket.socket,
    window: float,
    session: pylibsrtp.Session | None,
    until: Callable[[bytes], bool] | None = None,
) -> list[bytes]:
    """What arrives on ``sock`` within ``window`` seconds, or until a packet satisfies
    ``until`` (decrypted when a session is given; packets that fail to decrypt are kept
    as b"")."""
    got: list[bytes] = []
    deadline = time.monotonic() + window
    while len(got) < 4 * (LEARN_PACKETS + STRANGER_PACKETS + JUNK_PACKETS):
        left = deadline - time.monotonic()
        if left <= 0:
            break
        sock.settimeout(left)
        try:
            data = sock.recv(2048)
        except (TimeoutError, OSError):
            break
        if session is None:
            got.append(data)
            continue
        try:
            got.append(session.unprotect(data))
        except pylibsrtp.Error:
            got.append(b"")
        if until is not None and until(got[-1]):
            break
    return got


def _marked(mark: bytes) -> Callable[[bytes], bool]:
    """Whether a decrypted RTP packet carries the payload ``mark`` (after the 12-byte
    header of RFC 3550 §5.1: no CSRC, no extension in what the probe sends)."""
    return lambda packet: packet[12:13] == mark


def _send(sock: socket.socket, to: tuple[str, int], packets: list[bytes]) -> None:
    for packet in packets:
        sock.sendto(packet, to)
        time.sleep(PACKET_INTERVAL)  # one voice frame apart: a paced stream, not a flood


def _srtp_call(run: ProbeRun, stream: SipStream, party: Party) -> list[CheckResult]:
    """M-rtp-bleed and M-srtp-junk on an SDES-SRTP call to the test user itself.

    Media goes only to a relay address that is the target's own (or the installation's
    media.address): an SDP naming any other host would make the probe send packets to
    a third party (reflection), so such a call is not probed."""
    bleed, junk = lc.SPEC_BY_ID["M-rtp-bleed"], lc.SPEC_BY_ID["M-srtp-junk"]
    host = stream.local.host
    allowed = run.media_hosts()
    foreign: list[str] = []

    def not_ours(why: str) -> list[CheckResult]:
        return [skipped(bleed, run.name, why), skipped(junk, run.name, why)]

    with _udp(host) as a, _udp(host) as b, _udp(run.fresh_source() or host) as s:
        caller, callee = ProbeLeg(a), ProbeLeg(b)

        def answer(forked: Request) -> bytes | None:
            found = _relay_of(forked.body)
            if found is None or found[1] is None:
                return None
            if not lc.relay_allowed(found[0][0], allowed):
                foreign.append(found[0][0])
                return None
            callee.relay, callee.peer_master, tag = found
            return audio_offer(host, callee.port, crypto=callee.crypto(tag))

        body = audio_offer(host, caller.port, crypto=caller.crypto())
        contact = stream.local.contact(run.user or "audit")
        invite, got, forked = _invite(run, stream, party, contact, body, answer=answer)
        ok = got[-1] if got and 200 <= got[-1].status < 300 else None
        found = _relay_of(ok.body) if ok is not None else None
        if found is not None and not lc.relay_allowed(found[0][0], allowed):
            foreign.append(found[0][0])
        try:
            if foreign:
                return not_ours(f"relay address {foreign[0]} not the target's")
            if not got:
                why = "no answer to the test user's SRTP call"
                return [errored(bleed, run.name, why), errored(junk, run.name, why)]
            if ok is None or forked is None or callee.relay is None:
                # Not applicable: the server routes no call from the test user to itself.
                return not_ours(f"no SRTP call to the test user itself ({_last(got)})")
            if found is None:
                why = "the 200 OK had no usable SDP"
                return [errored(bleed, run.name, why), errored(junk, run.name, why)]
            caller.relay = found[0]
            return media_checks(run, caller, callee, s)
        finally:
            if ok is not None:
                _hang_up(run, stream, invite, ok)


def _hang_up(run: ProbeRun, stream: SipStream, invite: Request, ok: Response) -> None:
    """ACK and BYE the probe's call (§13.2.2.4, §15.1.1); best effort."""
    try:
        dialog = uac_dialog(invite, ok)
        ack, dialog = in_dialog(dialog, "ACK", stream.local, seq=invite.cseq.seq)
        stream.send(ack)
        bye, _ = in_dialog(dialog, "BYE", stream.local)
        _invite_round(run, stream, bye, None)
    except (OSError, SipParseError, ValueError, ProbeBudgetExceeded):
        return


def media_checks(
    run: ProbeRun, caller: ProbeLeg, callee: ProbeLeg, stranger_sock: socket.socket
) -> list[CheckResult]:
    """M-rtp-bleed and M-srtp-junk on a call whose legs know their relay ports and the
    key the relay sends the callee with (``callee.peer_master``)."""
    assert caller.relay is not None and callee.relay is not None
    assert callee.peer_master is not None
    bleed, junk = lc.SPEC_BY_ID["M-rtp-bleed"], lc.SPEC_BY_ID["M-srtp-junk"]
    caller_out = pylibsrtp.Session(outbound_policy(_SUITE, caller.master))
    callee_in = pylibsrtp.Session(inbound_policy(_SUITE, callee.peer_master))
    callee_out = pylibsrtp.Session(outbound_policy(_SUITE, callee.master))
    learn = [caller_out.protect(_rtp(caller, b"L" * _PAYLOAD)) for _ in range(LEARN_PACKETS)]
    _send(caller.sock, caller.relay, learn)
    heard = _receive(callee.sock, run.options.timeout, callee_in, _marked(b"L"))
    if not any(_marked(b"L")(p) for p in heard):
        why = "no SRTP came through the relay from the caller's leg"
        return [errored(bleed, run.name, why), errored(junk, run.name, why)]
    # The stranger: valid SRTP with the caller's key, from an unlearned address.
    strange = [caller_out.protect(_rtp(caller, b"S" * _PAYLOAD)) for _ in range(STRANGER_PACKETS)]
    _send(stranger_sock, caller.relay, strange)
    heard = _receive(callee.sock, QUIET_WINDOW, callee_in)
    relayed = sum(1 for p in heard if _marked(b"S")(p))
    # ... and the callee's media must not go to the stranger.
    back = [callee_out.protect(_rtp(callee, b"B" * _PAYLOAD)) for _ in range(STRANGER_PACKETS)]
    _send(callee.sock, callee.relay, back)
    leaked = len(_receive(stranger_sock, QUIET_WINDOW, None))
    where = stranger_sock.getsockname()[0]
    detail = (
        f"{STRANGER_PACKETS} SRTP packets from {where}: {relayed} relayed to the callee, "
        f"{leaked} of the callee's sent to {where}"
    )
    results = [lc.judge_rtp_bleed(run.name, bool(relayed or leaked), detail)]
    # Junk: SRTP-shaped packets (valid RTP header, random payload and tag) from the caller.
    _receive(callee.sock, 0.05, None)
    junk_packets = [_rtp(caller, secrets.token_bytes(_PAYLOAD + 10)) for _ in range(JUNK_PACKETS)]
    _send(caller.sock, caller.relay, junk_packets)
    forwarded = len(_receive(callee.sock, QUIET_WINDOW, None))
    detail = f"{JUNK_PACKETS} packets with a bad SRTP tag from the caller: {forwarded} forwarded"
    results.append(lc.judge_srtp_junk(run.name, forwarded > 0, detail))
    return results

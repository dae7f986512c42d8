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
import time

from ..media.sdes import SUITES
from ..sip import Request, Response, response_to
from ..sip.dialog import new_tag
from ..sip.digest import answer_challenge
from ..sip.uac import ack_for_failure, cancel_for
from . import livechecks as lc
from .liverequests import Party, audio_offer, request
from .model import CheckResult, skipped
from .sipprobe import ProbeRun, SipStream

__all__ = ["JUNK_PACKETS", "LEARN_PACKETS", "STRANGER_PACKETS", "media_results"]

#: Valid SRTP packets the caller sends for the relay to learn its address.
LEARN_PACKETS = 10
#: Valid SRTP packets the stranger sends from an unlearned source.
STRANGER_PACKETS = 10
#: SRTP-shaped packets with a bad tag the caller sends.
JUNK_PACKETS = 10
#: Seconds between two media packets (20 ms, one voice frame).
PACKET_INTERVAL = 0.02
#: Registration lifetime of the probe (removed at the end anyway).
REGISTER_EXPIRES = 60
_SUITE = SUITES["AES_CM_128_HMAC_SHA1_80"]
_PAYLOAD = 160


def media_results(run: ProbeRun) -> list[CheckResult]:
    """M-srtp-required, M-rtp-bleed, M-srtp-junk (skipped without credentials)."""
    specs = [lc.SPEC_BY_ID[i] for i in ("M-srtp-required", "M-rtp-bleed", "M-srtp-junk")]
    if not run.user or not run.password:
        why = "needs a test user (--user/--password)"
        return [skipped(spec, run.name, why) for spec in specs]
    with run.stream() as stream:
        party = Party(domain=run.party.domain, from_user=run.user, to_user=run.user)
        contact = stream.local.contact(run.user)
        reg = _authed(
            run,
            stream,
            "REGISTER",
            party,
            [("Contact", contact), ("Expires", str(REGISTER_EXPIRES))],
        )
        if not reg or reg[-1].status >= 300:
            why = f"the test user could not register ({_last(reg)})"
            return [skipped(spec, run.name, why) for spec in specs]
        try:
            status, forwarded = _plain_offer(run, stream, party)
            results = [lc.judge_srtp_required(run.name, status, forwarded, own=run.own)]
            results += [
                skipped(specs[1], run.name, "not probed"),
                skipped(specs[2], run.name, "not probed"),
            ]
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
    answer: bytes | None,
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
    run: ProbeRun, stream: SipStream, req: Request, answer: bytes | None
) -> tuple[list[Response], Request | None]:
    run.pace()
    stream.send(req)
    got: list[Response] = []
    forked: Request | None = None
    deadline = time.monotonic() + run.options.timeout * 2
    while time.monotonic() < deadline:
        msg = stream.next_message(max(deadline - time.monotonic(), 0.01))
        if msg is None:
            break
        if isinstance(msg, Request):
            _serve(stream, msg, answer)
            if msg.method == "INVITE":
                forked = msg
            continue
        if msg.call_id != req.call_id or msg.cseq.method != "INVITE":
            continue
        run.seen.append(msg)
        got.append(msg)
        if msg.status >= 200:
            break
    if not got or got[-1].status < 200:
        # No final answer in time: CANCEL (§9.1).
        stream.send(cancel_for(req))
        more = stream.responses_to(req)
        got += more
    if got and got[-1].status >= 300:
        stream.send(ack_for_failure(req, got[-1]))
    return got, forked


def _serve(stream: SipStream, msg: Request, answer: bytes | None) -> None:
    """Answer what the server sends the probe's registration."""
    if msg.method == "INVITE":
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

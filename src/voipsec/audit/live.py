"""Live SIP probes of a target (issue 19 item 3): what a scanner on the network sees.

How this works: :func:`live_results` probes one ``sips:HOST:PORT`` in a fixed order —
TLS (versions, weak suites, renegotiation and compression, the certificate), plaintext
SIP on HOST:5060 (and the installation's own UDP/TCP listeners), digest challenges,
an unauthenticated call, user enumeration, nonce replay and the media probes with the
test user's credentials, what the answers disclose, UDP amplification, and last the
rate-limit burst (from a source address of its own, so a ban hits only the burst).
Requests other than the burst are paced at :data:`PROBE_RATE` per second and counted
against :data:`MAX_REQUESTS`. Judgements are in :mod:`.livechecks`; a probe that could
not run is an ERROR result, never an exception out of here.
"""

from __future__ import annotations

import ipaddress
import random
import secrets
import sqlite3
import ssl
import time
from collections.abc import Callable
from pathlib import Path

import pylibsrtp
from cryptography import x509
from OpenSSL import SSL

from ..config import DEMO_FILE, Config
from ..media.sdes import SUITES, crypto_line, new_master
from ..records import StoreError
from ..sip import Request, Response, parse_message
from ..sip.dialog import new_branch, uac_dialog
from ..sip.digest import answer_challenge
from ..sip.errors import SipParseError
from ..sip.uac import LocalAddress, ack_for_failure, cancel_for, in_dialog, make_request
from ..storage.store import DB_NAME, Store
from . import livechecks as lc
from .liverequests import PROBE_USER, USER_AGENT, Party, audio_offer, bracket, request
from .mediaprobe import media_results
from .model import CheckResult, CheckSpec, errored, skipped, with_data_dir
from .options import ProbeOptions
from .sipprobe import (
    MAX_TARGET_SECONDS,
    ProbeBudgetExceeded,
    ProbeRun,
    SipStream,
    certificate_trust,
    peer_certificate,
    renegotiation,
    stream_exchange,
    tls_version_accepted,
    udp_exchange,
    weak_suite_accepted,
)
from .targets import PLAIN_SIP_PORT, SipTarget

__all__ = [
    "BURST_NETWORK",
    "SPECS",
    "burst_source",
    "live_results",
    "own_bans",
    "own_credentials",
]

SPECS: tuple[CheckSpec, ...] = lc.SPECS

#: Where the burst comes from on a loopback target: a random address in 127.0.0.128/25,
#: never the admin's 127.0.0.1.
BURST_NETWORK = ipaddress.ip_network("127.0.0.128/25")
#: What a probe that cannot run raises: the network, TLS, a malformed answer, the budget.
_PROBE_ERRORS = (
    OSError,
    ssl.SSLError,
    SSL.Error,
    SipParseError,
    ProbeBudgetExceeded,
    ValueError,
    pylibsrtp.Error,
)
_TLS_IDS = ("S-tls-version", "S-tls-ciphers", "S-tls-renegotiation")
_CHALLENGE_IDS = (
    "A-digest-md5",
    "A-digest-qop",
    "A-unauthenticated-call",
    "A-unauthenticated-register",
)
_MEDIA_IDS = ("M-srtp-required", "M-rtp-bleed", "M-srtp-junk")


def own_credentials(data_dir: Path | None) -> tuple[str, str] | None:
    """The demo user's credentials from DIR/demo-user.txt (``user=``/``password=``)."""
    if data_dir is None:
        return None
    path = data_dir / DEMO_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return None
    values = dict(line.partition("=")[::2] for line in text.splitlines() if "=" in line)
    user, password = values.get("user"), values.get("password")
    return (user, password) if user and password else None


def own_bans(data_dir: Path | None) -> frozenset[str]:
    """The sources the own installation bans now (its store): the probes take others.
    Nothing when the store cannot be read (the probes then meet the ban, an error)."""
    if data_dir is None or not (data_dir / DB_NAME).exists():
        return frozenset()
    try:
        store = Store(data_dir / DB_NAME)
    except (OSError, StoreError, sqlite3.Error):
        return frozenset()
    try:
        return frozenset(b.source for b in store.bans(time.time()))
    except (StoreError, sqlite3.Error):
        return frozenset()
    finally:
        store.close()


def _guarded(
    spec_ids: str | tuple[str, ...], run: ProbeRun, probe: Callable[[], list[CheckResult]]
) -> list[CheckResult]:
    """A probe's results, or one ERROR result per check it owns when it could not run."""
    try:
        return probe()
    except _PROBE_ERRORS as err:
        text = str(err) or type(err).__name__
        ids = (spec_ids,) if isinstance(spec_ids, str) else spec_ids
        return [errored(lc.SPEC_BY_ID[i], run.name, f"could not probe: {text}") for i in ids]


def live_results(
    target: SipTarget, options: ProbeOptions, *, budget: float = MAX_TARGET_SECONDS
) -> list[CheckResult]:
    """Every live SIP check's result at ``target`` (module docstring for the order),
    within ``budget`` seconds (MAX_TARGET_SECONDS; past it, what is left is an ERROR)."""
    own = options.own
    creds = (
        (options.user, options.password)
        if options.user and options.password
        else (own_credentials(options.data_dir) if own is not None else None)
    )
    user, password = creds if creds else (None, None)
    domain = own.sip.domain if own is not None else target.host
    run = ProbeRun(
        target=target,
        options=options,
        party=Party(domain=domain),
        user=user,
        password=password,
        deadline=time.monotonic() + budget,
        banned=own_bans(options.data_dir) if own is not None else frozenset(),
    )
    results: list[CheckResult] = []
    results += _guarded(_TLS_IDS, run, lambda: _tls(run))
    results += _guarded("S-certificate-expiry", run, lambda: _certificate(run))
    udp: dict[str, tuple[int, int]] = {}
    results += _guarded("S-plaintext-sip", run, lambda: [_plaintext(run, udp)])
    results += _guarded(_CHALLENGE_IDS, run, lambda: _challenges(run))
    refused = any(
        r.spec.id == "A-unauthenticated-call" and r.outcome.value == "passed" for r in results
    )
    results += _guarded("A-user-enumeration", run, lambda: [_enumeration(run, refused)])
    results += _guarded("A-nonce-reuse", run, lambda: [_nonce_reuse(run)])
    results += _guarded(_MEDIA_IDS, run, lambda: media_results(run))
    allowed = frozenset({target.host, *_own_hosts(own)})
    results.append(
        lc.judge_info_leak(
            run.name, run.seen, allowed=allowed | _local_hosts() | run.sources, own=own is not None
        )
    )
    results.append(
        lc.judge_amplification(
            run.name, udp, own=own is not None, tls_listeners=_tls_listeners(own)
        )
    )
    results += _guarded("F-rate-limit", run, lambda: [_rate_limit(run)])
    if own is not None and options.data_dir is not None:
        return with_data_dir(results, str(options.data_dir))
    return results


# -- TLS ---------------------------------------------------------------------------------


def _tls(run: ProbeRun) -> list[CheckResult]:
    host, port, timeout = run.target.host, run.target.port, run.options.timeout
    src = run.fresh_source()
    accepted = {
        v: tls_version_accepted(host, port, v, timeout, source=src) for v in lc.TLS_VERSIONS
    }
    if not any(accepted.values()):
        raise OSError(f"no TLS handshake succeeded with {run.name}")
    results = [lc.judge_tls_versions(run.name, accepted, own=run.own)]
    results += _guarded(
        "S-tls-ciphers",
        run,
        lambda: [
            lc.judge_ciphers(
                run.name, weak_suite_accepted(host, port, timeout, source=src), own=run.own
            )
        ],
    )
    if not accepted["TLS 1.2"] and not accepted["TLS 1.1"] and not accepted["TLS 1.0"]:
        # TLS 1.3 only: no renegotiation exists (RFC 8446 §4.6 has none).
        results.append(lc.judge_renegotiation(run.name, False, own=run.own))
        return results

    def reneg() -> list[CheckResult]:
        renegotiated = renegotiation(host, port, timeout, source=src)
        return [lc.judge_renegotiation(run.name, renegotiated, own=run.own)]

    results += _guarded("S-tls-renegotiation", run, reneg)
    return results


def _certificate(run: ProbeRun) -> list[CheckResult]:
    """The leaf's expiry, and its chain and name: against the own CA (DIR/ca/ca.crt)
    for the own installation, the system's CAs for any other target."""
    source = run.fresh_source()
    host, port, timeout = run.target.host, run.target.port, run.options.timeout
    der, _ = peer_certificate(host, port, timeout, source=source)
    if der is None:
        raise OSError("no certificate presented")
    cert = x509.load_der_x509_certificate(der)
    names = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    subject = f"CN={names[0].value!s}" if names else cert.subject.rfc4514_string() or "leaf"
    own = run.options.own
    days = own.pki.expiry_warning_days if own is not None else lc.EXPIRY_DAYS
    fix, cafile = None, None
    if own is not None and run.options.data_dir is not None:
        fix = lc.certificate_fix(str(run.options.data_dir))
        cafile = str(run.options.data_dir / "ca" / "ca.crt")
    untrusted = certificate_trust(host, port, timeout, cafile=cafile, source=source)
    return [
        lc.judge_certificate_expiry(
            run.name,
            cert.not_valid_after_utc.timestamp(),
            time.time(),
            subject=subject,
            warning_days=days,
            fix_own=fix,
            untrusted=untrusted,
        )
    ]


# -- plaintext ----------------------------------------------------------------------------


def _tls_listeners(own: Config | None) -> list[str]:
    if own is None:
        return []
    return [x for x in own.sip.listen if x.partition(":")[0] == "tls"] or ["tls:127.0.0.1:5061"]


def _own_hosts(own: Config | None) -> list[str]:
    if own is None:
        return []
    return [x.host for x in own.sip.listeners()] + [own.media.address]


def _local_hosts() -> frozenset[str]:
    return frozenset({"127.0.0.1", "::1"})


def _plain_listeners(run: ProbeRun) -> list[tuple[str, str, int]]:
    host = run.target.host
    found = [("udp", host, PLAIN_SIP_PORT), ("tcp", host, PLAIN_SIP_PORT)]
    own = run.options.own
    if own is not None:
        for x in own.sip.listeners():
            item = (x.transport, x.host, x.port)
            if x.transport in ("udp", "tcp") and item not in found:
                found.append(item)
    return found


def _plaintext(run: ProbeRun, udp: dict[str, tuple[int, int]]) -> CheckResult:
    """OPTIONS over UDP and TCP (RFC 3261 §11) to each plaintext place; ``udp`` gets
    the bytes sent and answered per UDP listener (for F-amplification)."""
    answers: dict[str, str | None] = {}
    source = run.fresh_source()
    for transport, host, port in _plain_listeners(run):
        where = f"{transport}:{bracket(host)}:{port}"
        sent: list[bytes] = []

        def build(
            local: LocalAddress, host: str = host, port: int = port, sent: list[bytes] = sent
        ) -> bytes:
            # The Via names the socket's real address and port (RFC 3261 §18.1.1): a
            # server without rport (RFC 3581) answers there (§18.2.2), not to 5060.
            party = Party(domain=run.party.domain)
            # An IPv6 host in brackets (RFC 3261 §25.1), as in every URI and Via.
            uri = f"sip:{bracket(host)}:{port}"
            data = request("OPTIONS", party, local, uri=uri).to_bytes()
            sent.append(data)
            return data

        run.pace()
        timeout = run.wait(run.options.timeout)
        if transport == "udp":
            got = udp_exchange(host, port, build, timeout, source=source)
            if got and sent:
                udp[where] = (len(sent[0]), sum(len(g) for g in got))
            raw = got[-1] if got else b""
        else:
            raw = stream_exchange(host, port, build, timeout, source=source)
        answers[where] = _status_line(raw, run)
    return lc.judge_plaintext(
        run.name, answers, own=run.own, tls_listeners=_tls_listeners(run.options.own)
    )


def _status_line(raw: bytes, run: ProbeRun) -> str | None:
    if not raw:
        return None
    try:
        msg = parse_message(raw, datagram=True)
    except SipParseError:
        return raw[:40].decode("ascii", "replace") if raw.startswith(b"SIP/2.0") else None
    if isinstance(msg, Response):
        run.seen.append(msg)
        return f"{msg.status} {msg.reason}"
    return None


# -- digest, calls, enumeration --------------------------------------------------------------


def _register(run: ProbeRun, stream: SipStream, user: str, **kw: object) -> list[Response]:
    party = Party(domain=run.party.domain, from_user=user)
    req = request("REGISTER", party, stream.local, **kw)  # type: ignore[arg-type]
    return run.ask(stream, req)


def _srtp_offer(host: str) -> bytes:
    """An SDES-SRTP offer (RFC 4568) with a throwaway key: a server that routes without
    authentication but requires SRTP must not get to refuse it 488 and pass."""
    suite = SUITES["AES_CM_128_HMAC_SHA1_80"]
    return audio_offer(host, 9, crypto=str(crypto_line(1, suite, new_master(suite))))


def _invite_unauthenticated(
    run: ProbeRun, stream: SipStream, from_user: str, to_user: str = lc.FICTION_NUMBER
) -> tuple[list[Response], bool]:
    """INVITE without credentials; CANCEL/BYE what got through. The responses, and
    whether the probe had to CANCEL (no final answer in time)."""
    party = Party(domain=run.party.domain, from_user=from_user, to_user=to_user)
    contact = stream.local.contact(from_user)
    body = _srtp_offer(stream.local.host)
    req = request("INVITE", party, stream.local, extra=[("Contact", contact)], body=body)
    got = run.ask(stream, req)
    final = got[-1] if got and got[-1].status >= 200 else None
    cancelled = False
    if final is None and got:
        # Ringing and no final answer: CANCEL (§9.1), read its 200 and the 487.
        run.pace()
        cancelled = True
        stream.send(cancel_for(req))
        more = stream.responses_to(req)
        run.seen += more
        if more and more[-1].status >= 300:
            stream.send(ack_for_failure(req, more[-1]))
        got += more
    elif final is not None and final.status < 300:
        _hang_up(run, stream, req, final)
    return got, cancelled


def _hang_up(run: ProbeRun, stream: SipStream, req: Request, ok: Response) -> None:
    """ACK and BYE a call that should not have been answered (§13.2.2.4, §15.1.1);
    best effort: a 200 without a To tag (malformed, §8.2.6.2) cannot make a dialog, so
    its ACK and BYE carry the To as received (:func:`_untagged_hang_up`). The
    judgement is made from the status already."""
    try:
        if ok.to.tag is None:
            _untagged_hang_up(run, stream, req, ok)
            return
        dialog = uac_dialog(req, ok)
        ack, dialog = in_dialog(dialog, "ACK", stream.local, seq=req.cseq.seq)
        stream.send(ack)
        bye, _ = in_dialog(dialog, "BYE", stream.local)
        run.ask(stream, bye)
    except (*_PROBE_ERRORS,):
        return


def _untagged_hang_up(run: ProbeRun, stream: SipStream, req: Request, ok: Response) -> None:
    """ACK (the INVITE's CSeq) and BYE (the next) to the 200's Contact, else the
    INVITE's request-URI, with the INVITE's From and Call-ID and the To as received."""
    target = str(ok.contacts[0].uri) if ok.contacts else str(req.uri)

    def build(method: str, seq: int) -> Request:
        headers = [
            ("Via", stream.local.via(new_branch())),
            ("Max-Forwards", "70"),
            ("From", req.headers.get("from") or ""),
            ("To", ok.headers.get("to") or ""),
            ("Call-ID", req.call_id),
            ("CSeq", f"{seq} {method}"),
            ("User-Agent", USER_AGENT),
        ]
        return make_request(method, target, headers)

    stream.send(build("ACK", req.cseq.seq))
    run.ask(stream, build("BYE", req.cseq.seq + 1))


def _challenges(run: ProbeRun) -> list[CheckResult]:
    """REGISTER and INVITE without credentials: the challenges, whether the call was
    routed (A-unauthenticated-call) and whether the REGISTER was accepted
    (A-unauthenticated-register: then nothing is challenged, and the digest checks
    would otherwise only skip)."""
    with run.stream() as stream:
        reg = _register(run, stream, PROBE_USER)
        inv, cancelled = _invite_unauthenticated(run, stream, PROBE_USER)
    challenged = [r for r in reg + inv if r.status in (401, 407)]
    return [
        lc.judge_digest_md5(run.name, challenged or reg + inv, own=run.own),
        lc.judge_digest_qop(run.name, challenged or reg + inv),
        lc.judge_unauthenticated_call(run.name, [r.status for r in inv], cancelled=cancelled),
        lc.judge_unauthenticated_register(run.name, [r.status for r in reg]),
    ]


def _existing_user(run: ProbeRun) -> str | None:
    if run.user:
        return run.user
    own, data_dir = run.options.own, run.options.data_dir
    if own is None or data_dir is None:
        return None
    store = Store(data_dir / DB_NAME)
    try:
        users = store.users()
    finally:
        store.close()
    return users[0] if users else None


def _enumeration(run: ProbeRun, refused: bool) -> CheckResult:
    """REGISTER, INVITE and OPTIONS (svwar's three modes) for the existing and an unknown
    user, alternating, each with the user in From, To and the request-URI. The INVITE
    goes to the user only when unauthenticated calls are refused (a routed one would
    ring a real phone); else to the fiction number."""
    spec = lc.SPEC_BY_ID["A-user-enumeration"]
    existing = _existing_user(run)
    if existing is None:
        return skipped(spec, run.name, "no existing user known (give --user/--password)")
    unknown = f"u{secrets.token_hex(6)}"
    samples: dict[str, list[lc.Exchange]] = {existing: [], unknown: []}
    with run.stream() as stream:
        for _ in range(lc.ENUM_SAMPLES):
            for method in lc.ENUM_METHODS:
                for user in (existing, unknown):
                    if method == "REGISTER":
                        got = _register(run, stream, user)
                    elif method == "INVITE":
                        to = user if refused else lc.FICTION_NUMBER
                        got, _ = _invite_unauthenticated(run, stream, user, to)
                    else:
                        party = Party(domain=run.party.domain, from_user=user, to_user=user)
                        got = run.ask(stream, request("OPTIONS", party, stream.local))
                    took = run.last_seconds
                    final = got[-1] if got else None
                    samples[user].append(lc.Exchange(method=method, response=final, seconds=took))
    return lc.judge_user_enumeration(run.name, samples[existing], samples[unknown])


def _nonce_reuse(run: ProbeRun) -> CheckResult:
    """REGISTER (a binding query: no Contact, §10.2.3) answered with the test user's
    credentials, then the same Authorization again on a new transaction."""
    spec = lc.SPEC_BY_ID["A-nonce-reuse"]
    if not run.user or not run.password:
        return skipped(spec, run.name, "needs a test user (--user/--password)")
    uri = f"sip:{bracket(run.party.domain)}"  # the REGISTER's request-URI
    call_id = secrets.token_hex(12)
    with run.stream(source=run.auth_source()) as stream:
        first = _register(run, stream, run.user, call_id=call_id, cseq=1)
        if not first:
            return errored(spec, run.name, "no answer to REGISTER")
        if first[-1].status not in (401, 407):
            return skipped(spec, run.name, f"REGISTER was not challenged ({_last(first)})")
        auth = answer_challenge(
            first[-1], username=run.user, password=run.password, method="REGISTER", uri=uri
        )
        if auth is None:
            return skipped(spec, run.name, "the challenge could not be answered")
        ok = _register(run, stream, run.user, call_id=call_id, cseq=2, extra=[auth])
        again = _register(run, stream, run.user, call_id=call_id, cseq=3, extra=[auth])
    return lc.judge_nonce_reuse(run.name, _final(ok), _final(again))


def _final(got: list[Response]) -> int | None:
    return got[-1].status if got and got[-1].status >= 200 else None


def _last(got: list[Response]) -> str:
    return f"{got[-1].status} {got[-1].reason}" if got else "no answer"


# -- rate limit ------------------------------------------------------------------------------


def burst_source(host: str, banned: frozenset[str] = frozenset()) -> str | None:
    """The burst's source on an IPv4 loopback target: a random address of
    BURST_NETWORK other than its first, not ``banned`` unless all are (never 127.0.0.1);
    None (the system's choice) elsewhere."""
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        return None
    if addr.version == 4 and addr.is_loopback:
        first = int(BURST_NETWORK.network_address)
        every = [
            str(ipaddress.ip_address(first + i)) for i in range(1, BURST_NETWORK.num_addresses)
        ]
        return random.choice([a for a in every if a not in banned] or every)
    return None


def _rate_limit(run: ProbeRun) -> CheckResult:
    """RATE_BURST OPTIONS within RATE_WINDOW on one TLS connection of their own."""
    spec = lc.SPEC_BY_ID["F-rate-limit"]
    source = burst_source(run.target.host, run.banned)
    own = run.options.own
    if own is not None:
        zones = [(z.name, z.cidrs, z.trust == "trusted") for z in own.zones]
        zone = lc.trusted_zone_of(source or run.target.host, zones)
        if zone is not None:
            return skipped(
                spec,
                run.name,
                f"the probe's source {source or run.target.host} is in the trusted zone "
                f"{zone!r}, which is never rate limited",
            )
    run.check_time()
    with run.stream(source=source) as stream:
        sent: list[Request] = []
        started = time.monotonic()
        for i in range(lc.RATE_BURST):
            req = request("OPTIONS", run.party, stream.local)
            try:
                stream.send(req)
            except OSError:
                break
            sent.append(req)
            wait = started + (i + 1) * lc.RATE_WINDOW / lc.RATE_BURST - time.monotonic()
            if wait > 0:
                time.sleep(wait)
        ids = {r.call_id for r in sent}
        answered: set[str] = set()
        limited: list[int] = []
        deadline = time.monotonic() + run.wait(run.options.timeout)
        while len(answered) < len(ids) and time.monotonic() < deadline:
            msg = stream.next_message(max(deadline - time.monotonic(), 0.01))
            if msg is None:
                break
            if isinstance(msg, Response) and msg.call_id in ids and msg.status >= 200:
                answered.add(msg.call_id)
                if msg.status in (429, 503):
                    limited.append(msg.status)
        closed = stream.closed or len(sent) < lc.RATE_BURST
    return lc.judge_rate_limit(run.name, lc.RATE_BURST, len(answered), limited, closed)

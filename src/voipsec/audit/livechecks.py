"""Judgements of the live SIP probes: what was seen on the wire in, check results out.

How this works: :mod:`.live` runs the probes (:mod:`.sipprobe` for TLS and SIP,
:mod:`.mediaprobe` for RTP) and hands what it saw here as plain values — the TLS
versions a handshake succeeded with, the challenges of a 401, the responses to one
request for an existing and an unknown user. Each ``judge_*`` function turns one
observation into one :class:`CheckResult` with the exact fix: a ``voipsec config set``
line for the own installation (``own`` true), a short instruction for a third-party
server. Every bound of the probes is a named constant here. Sans-IO.
"""

from __future__ import annotations

import ipaddress
import re
import shlex
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ..sip import Response
from ..sip.digest import parse_challenge
from ..sip.errors import SipParseError
from .model import CheckResult, CheckSpec, errored, failed, passed, skipped
from .specs import spec_by_id

__all__ = [
    "AMPLIFICATION_LIMIT",
    "ENUM_METHODS",
    "ENUM_SAMPLES",
    "ENUM_TIME_FACTOR",
    "ENUM_TIME_MARGIN",
    "EXPIRY_DAYS",
    "FICTION_NUMBER",
    "RATE_BURST",
    "RATE_LIMITED_SHARE",
    "RATE_WINDOW",
    "REFUSALS",
    "SPECS",
    "SPEC_BY_ID",
    "TLS_VERSIONS",
    "Exchange",
    "answer_signature",
    "certificate_fix",
    "judge_amplification",
    "judge_certificate_expiry",
    "judge_ciphers",
    "judge_digest_md5",
    "judge_digest_qop",
    "judge_info_leak",
    "judge_nonce_reuse",
    "judge_plaintext",
    "judge_rate_limit",
    "judge_renegotiation",
    "judge_rtp_bleed",
    "judge_srtp_junk",
    "judge_srtp_required",
    "judge_tls_versions",
    "judge_unauthenticated_call",
    "judge_unauthenticated_register",
    "judge_user_enumeration",
    "leaks_in",
    "relay_allowed",
    "trusted_zone_of",
    "weak_suites",
]

# -- bounds --------------------------------------------------------------------------

#: TLS versions tried, one handshake each (RFC 8996 deprecates 1.0 and 1.1).
TLS_VERSIONS = ("TLS 1.0", "TLS 1.1", "TLS 1.2", "TLS 1.3")
#: A certificate expiring within this many days fails (pki.expiry_warning_days when own).
EXPIRY_DAYS = 30
#: Requests per user in the enumeration probe (each side: the median is compared).
ENUM_SAMPLES = 3
#: The requests each sample asks for both users (SIPVicious svwar's REGISTER, INVITE
#: and OPTIONS modes).
ENUM_METHODS = ("REGISTER", "INVITE", "OPTIONS")
#: Timing differences fail only beyond both: this many seconds of median difference...
ENUM_TIME_MARGIN = 0.050
#: ... and this ratio of the slower median to the faster (a loaded machine jitters).
ENUM_TIME_FACTOR = 3.0
#: OPTIONS in the rate-limit burst, sent within RATE_WINDOW seconds (Kamailio pike's
#: default limit is 16 per 2 s; voipsec's untrusted zones the same).
RATE_BURST = 60
RATE_WINDOW = 1.0
#: The share of the burst a limit must hold back (answered 429/503, or left unanswered
#: after a close) for F-rate-limit to pass: one 503 among 59 answers is no limit. And
#: at least one request must be answered normally first (all 503: overloaded or
#: broken, not a limit shown).
RATE_LIMITED_SHARE = 0.25
#: Bytes answered per byte asked over UDP above which a listener amplifies (the
#: QUIC anti-amplification limit of RFC 9000 §8 is the same 3x).
AMPLIFICATION_LIMIT = 3.0
#: The unauthenticated call goes to a UK drama-range number: Ofcom keeps
#: 020 7946 0xxx for fiction, so a routed call rings no one.
FICTION_NUMBER = "+442079460000"

#: The checks the live probes decide, in the order they run (specs: audit/specs.py).
SPECS: tuple[CheckSpec, ...] = tuple(
    spec_by_id(i)
    for i in (
        "S-plaintext-sip",
        "S-tls-version",
        "S-tls-ciphers",
        "S-tls-renegotiation",
        "S-certificate-expiry",
        "A-digest-md5",
        "A-digest-qop",
        "A-nonce-reuse",
        "A-user-enumeration",
        "A-unauthenticated-call",
        "A-unauthenticated-register",
        "M-srtp-required",
        "M-rtp-bleed",
        "M-srtp-junk",
        "F-rate-limit",
        "F-info-leak",
        "F-amplification",
    )
)
SPEC_BY_ID = {spec.id: spec for spec in SPECS}
_SPEC = SPEC_BY_ID


def _fix(own: bool, config_line: str, advice: str) -> str:
    return config_line if own else advice


# -- TLS -----------------------------------------------------------------------------


def judge_tls_versions(target: str, accepted: Mapping[str, bool], *, own: bool) -> CheckResult:
    """RFC 8996: TLS 1.0 and 1.1 MUST NOT be negotiated; RFC 9325 §3.1: 1.2+."""
    spec = _SPEC["S-tls-version"]
    names = [v for v in TLS_VERSIONS if accepted.get(v)]
    old = [v for v in names if v in ("TLS 1.0", "TLS 1.1")]
    observed = f"accepted: {', '.join(names) or 'none'}"
    if old:
        fix = _fix(
            own,
            "voipsec config set tls.min_version '\"1.2\"'",
            "allow TLS 1.2 and 1.3 only (e.g. Kamailio tls.cfg method = TLSv1.2+)",
        )
        return failed(spec, target, observed, fix)
    return passed(spec, target, observed)


def weak_suites(ciphers: Sequence[Mapping[str, object]]) -> list[str]:
    """The TLS 1.2 suites (OpenSSL names) that are not forward-secret AEAD (RFC 9325 §4.2).

    ``ciphers`` is what ``ssl.SSLContext.get_ciphers()`` lists. Pre-shared-key and SRP
    suites are left out: a client without a key cannot offer them.
    """
    weak = []
    for c in ciphers:
        kea = str(c.get("kea", ""))
        if c.get("protocol") == "TLSv1.3" or "psk" in kea or "srp" in kea:
            continue
        if not (c.get("aead") and kea in ("kx-ecdhe", "kx-dhe")):
            weak.append(str(c.get("name")))
    return weak


def judge_ciphers(target: str, chosen: str | None, *, own: bool) -> CheckResult:
    """A TLS 1.2 handshake that offered only weak suites: ``chosen`` is what the server took."""
    spec = _SPEC["S-tls-ciphers"]
    if chosen is None:
        return passed(spec, target, "refused a TLS 1.2 handshake offering only weak suites")
    fix = _fix(
        own,
        "voipsec config set tls.min_version '\"1.3\"'",
        "offer only ECDHE/DHE suites with AES-GCM or ChaCha20-Poly1305 in TLS 1.2",
    )
    return failed(spec, target, f"accepted the weak suite {chosen}", fix)


def judge_renegotiation(target: str, renegotiated: bool, *, own: bool) -> CheckResult:
    """RFC 9325 §3.5 (renegotiation only with RFC 5746; client-initiated renegotiation
    is a denial-of-service lever, CVE-2011-1473). TLS compression (§3.3) is not
    probed: the client's OpenSSL cannot offer it, so no server could be seen using it."""
    spec = _SPEC["S-tls-renegotiation"]
    if not renegotiated:
        return passed(
            spec, target, "client-initiated renegotiation refused (compression not probed)"
        )
    fix = _fix(
        own,
        "voipsec config set tls.min_version '\"1.3\"'",
        "refuse client-initiated renegotiation (or require TLS 1.3)",
    )
    return failed(spec, target, "client-initiated renegotiation accepted", fix)


def certificate_fix(data_dir: str) -> str:
    """The own installation's server certificate renewed: ``voipsec init`` makes a new
    one from the CA when the file is gone (cli.initialise), and ``voipsec serve`` loads
    it on SIGHUP (docs/audit.md). The same command as the local check's: a fix line is
    a command the admin can paste."""
    cert = shlex.quote(f"{data_dir}/tls/server.crt")
    return f"rm {cert} && voipsec init --dir {shlex.quote(data_dir)}"


def judge_certificate_expiry(
    target: str,
    not_after: float,
    now: float,
    *,
    subject: str,
    warning_days: int = EXPIRY_DAYS,
    fix_own: str | None = None,
    untrusted: str | None = None,
) -> CheckResult:
    """The leaf certificate the server presented (RFC 5280 §4.1.2.5 validity), and
    ``untrusted``: why its chain or name did not verify (RFC 5280 §6, RFC 6125 §6,
    RFC 5922 for SIP), None when it did."""
    spec = _SPEC["S-certificate-expiry"]
    days = (not_after - now) / 86400
    if days > warning_days and untrusted is None:
        return passed(spec, target, f"{subject}: {int(days)} days left, chain and name verified")
    if days > warning_days:
        state = f"{int(days)} days left"
    else:
        expiry = "expired" if days <= 0 else f"expires in {max(int(days), 0)} day(s)"
        state = f"{expiry} (warning at {warning_days} days)"
    observed = f"{subject}: {state}"
    advice = "renew the server certificate"
    if untrusted is not None:
        observed += f"; not trusted: {untrusted}"
        advice = "use a certificate from a CA the clients trust, naming the server, valid for long"
    return failed(spec, target, observed, fix_own or advice)


# -- plaintext and amplification --------------------------------------------------------


def judge_plaintext(
    target: str, answers: Mapping[str, str | None], *, own: bool, tls_listeners: Sequence[str]
) -> CheckResult:
    """``answers``: listener ("udp:h:p") -> status line answered, None when silent."""
    spec = _SPEC["S-plaintext-sip"]
    answered = [f"{where} answered {line}" for where, line in answers.items() if line]
    if not answered:
        return passed(spec, target, f"no SIP answer on {', '.join(answers) or 'no listener'}")
    listen = ", ".join(f'"{x}"' for x in tls_listeners)
    fix = _fix(
        own,
        f"voipsec config set sip.listen '[{listen}]'",
        "close plaintext SIP (UDP/TCP 5060); offer SIP over TLS only",
    )
    return failed(spec, target, "; ".join(answered), fix)


def judge_amplification(
    target: str, measured: Mapping[str, tuple[int, int]], *, own: bool, tls_listeners: Sequence[str]
) -> CheckResult:
    """``measured``: UDP listener -> (bytes sent, bytes answered); none: no UDP listener."""
    spec = _SPEC["F-amplification"]
    if not measured:
        return passed(spec, target, "no UDP SIP listener answered")
    worst = max(measured.items(), key=lambda kv: kv[1][1] / kv[1][0])
    where, (sent, got) = worst
    factor = got / sent
    observed = f"{where}: {got} bytes answered to {sent} ({factor:.2f}x)"
    if factor <= AMPLIFICATION_LIMIT:
        return passed(spec, target, observed)
    listen = ", ".join(f'"{x}"' for x in tls_listeners)
    fix = _fix(
        own,
        f"voipsec config set sip.listen '[{listen}]'",
        "answer UDP requests with small responses only, or close UDP SIP",
    )
    return failed(spec, target, observed, fix)


# -- digest ------------------------------------------------------------------------------


def _challenges(responses: Sequence[Response]) -> list[dict[str, str]]:
    found = []
    for r in responses:
        for name in ("www-authenticate", "proxy-authenticate"):
            for value in r.headers.lines(name):
                try:
                    found.append(parse_challenge(value))
                except SipParseError:
                    continue
    return found


def judge_digest_md5(target: str, responses: Sequence[Response], *, own: bool) -> CheckResult:
    """RFC 8760: SHA-256 challenges; a challenge with no algorithm means MD5
    (RFC 3261 §22.4, RFC 7616 §3.3)."""
    spec = _SPEC["A-digest-md5"]
    found = _challenges(responses)
    if not any(r.status >= 200 for r in responses):
        return errored(spec, target, "no final answer to REGISTER or INVITE")
    if not found:
        statuses = ", ".join(str(r.status) for r in responses)
        return skipped(spec, target, f"no digest challenge to read ({statuses})")
    algorithms = sorted({c.get("algorithm", "MD5 (no algorithm)") for c in found})
    observed = f"challenged with {', '.join(algorithms)}"
    if any(a.upper().startswith("MD5") for a in algorithms):
        fix = _fix(
            own,
            "voipsec config set auth.algorithms '[\"SHA-256\"]'",
            "challenge with algorithm=SHA-256 only (RFC 8760)",
        )
        return failed(spec, target, observed, fix)
    return passed(spec, target, observed)


def judge_digest_qop(target: str, responses: Sequence[Response]) -> CheckResult:
    """RFC 7616 §3.3: qop=auth binds the response to a client nonce and a count."""
    spec = _SPEC["A-digest-qop"]
    found = _challenges(responses)
    if not any(r.status >= 200 for r in responses):
        return errored(spec, target, "no final answer to REGISTER or INVITE")
    if not found:
        return skipped(spec, target, "no digest challenge to read")
    without = [c for c in found if "auth" not in c.get("qop", "").replace(" ", "").split(",")]
    if without:
        fix = 'send qop="auth" in every digest challenge (RFC 7616 §3.3)'
        return failed(
            spec, target, f"{len(without)} of {len(found)} challenge(s) without qop=auth", fix
        )
    return passed(spec, target, f"{len(found)} challenge(s), all with qop=auth")


def judge_nonce_reuse(target: str, first: int | None, replay: int | None) -> CheckResult:
    """RFC 7616 §3.3 (nc), §5.5: a replayed Authorization must not be accepted; only an
    explicit refusal (401, 403, 407) passes — silence proves nothing."""
    spec = _SPEC["A-nonce-reuse"]
    if first is None:
        return errored(spec, target, "no answer to the test user's authorized REGISTER")
    if not 200 <= first < 300:
        return skipped(spec, target, f"the test user's request was not accepted ({first})")
    if replay is not None and 200 <= replay < 300:
        return failed(
            spec,
            target,
            f"the same Authorization (nonce, nc) was accepted again ({replay})",
            "track nonce counts: refuse a repeated nc (RFC 7616 §3.3), e.g. Kamailio "
            "auth nonce_count=1 or one_time_nonce=1",
        )
    if replay not in (401, 403, 407):
        got = "no answer" if replay is None else str(replay)
        return errored(spec, target, f"accepted once ({first}), replay got {got}: not a refusal")
    return passed(spec, target, f"accepted once ({first}), refused on replay ({replay})")


# -- enumeration ---------------------------------------------------------------------------

#: Headers whose values are per transaction or per user (compared by name only).
_ECHOES = frozenset({"via", "from", "to", "call-id", "cseq", "content-length", "contact"})
#: Digest parameters that differ per challenge anyway.
_PER_CHALLENGE = frozenset({"nonce", "opaque"})


def answer_signature(response: Response | None) -> tuple[object, ...]:
    """What an answer reveals, without what differs per transaction (tags, branches,
    nonces, Call-ID, CSeq echoes)."""
    if response is None:
        return ("no answer",)
    parts: list[object] = [response.status, response.reason]
    for _name, key, value in response.headers.fields:
        if key in _ECHOES:
            parts.append(key)
        elif key in ("www-authenticate", "proxy-authenticate"):
            try:
                params = parse_challenge(value)
            except SipParseError:
                parts.append((key, value))
                continue
            parts.append(
                (key, tuple(sorted((k, v) for k, v in params.items() if k not in _PER_CHALLENGE)))
            )
        else:
            parts.append((key, value))
    return tuple(parts)


@dataclass(frozen=True, slots=True, kw_only=True)
class Exchange:
    """One request of the enumeration probe: its answer and how long it took."""

    method: str
    response: Response | None
    seconds: float


def judge_user_enumeration(
    target: str, existing: Sequence[Exchange], unknown: Sequence[Exchange]
) -> CheckResult:
    """Answers for an existing and an unknown user must not differ (SIPVicious svwar
    tells them apart by status, by headers, or by time).

    ``existing[i]``, ``unknown[i]`` and ``existing[i + 1]`` were asked in this order.
    Pairs where both requests were answered are compared. A server that stops
    answering (an IDS ban after so many requests) does so for whoever asks next, which
    says nothing about the user — but an unknown user's request left unanswered while
    the existing user's next one is answered is the tell (svwar reads silence too).
    No answered pair at all: an error (nothing was compared).
    """
    spec = _SPEC["A-user-enumeration"]
    advice = (
        "answer unknown users exactly like existing ones: the same challenge, "
        "status and headers, in the same time"
    )
    pairs = [
        (a, b)
        for a, b in zip(existing, unknown, strict=False)
        if a.response is not None and b.response is not None
    ]
    for i, (a, b) in enumerate(zip(existing, unknown, strict=False)):
        after = existing[i + 1].response if i + 1 < len(existing) else None
        if a.response is not None and b.response is None and after is not None:
            return failed(
                spec,
                target,
                f"{a.method}: existing user {_status(a.response)}, unknown user no answer "
                "(the existing user's next request was answered)",
                advice,
            )
    if not pairs:
        return errored(spec, target, "no answered pair of requests to compare")
    for a, b in pairs:
        sa, sb = answer_signature(a.response), answer_signature(b.response)
        if sa != sb:
            return failed(
                spec,
                target,
                f"{a.method}: existing user {_status(a.response)}, unknown user "
                f"{_status(b.response)}" + ("" if sa[:2] != sb[:2] else " (headers differ)"),
                advice,
            )
    fast = statistics.median(a.seconds for a, _ in pairs)
    slow = statistics.median(b.seconds for _, b in pairs)
    low, high = sorted((fast, slow))
    observed = f"same answers; median {fast * 1000:.0f} ms existing, {slow * 1000:.0f} ms unknown"
    unanswered = min(len(existing), len(unknown)) - len(pairs)
    if unanswered:
        observed += f" ({unanswered} pair(s) unanswered)"
    if high - low > ENUM_TIME_MARGIN and high > ENUM_TIME_FACTOR * max(low, 1e-6):
        return failed(spec, target, observed, advice)
    return passed(spec, target, observed)


def _status(response: Response | None) -> str:
    return "no answer" if response is None else f"{response.status} {response.reason}"


# -- calls ---------------------------------------------------------------------------------


#: Final answers that refuse an unauthenticated INVITE (RFC 3261 §22.3, §21.4.4).
REFUSALS = (401, 403, 407)


def judge_unauthenticated_call(
    target: str, statuses: Sequence[int], *, cancelled: bool = False
) -> CheckResult:
    """RFC 3261 §22.3: a proxy challenges (407) before it routes. Passes only on a
    final 401/403/407 with no provisional above 100; a ringing (18x), answered (2xx)
    or redirected (3xx) call, or one the probe had to CANCEL that ended 487 (it was
    going somewhere), is toll fraud; anything else proves nothing (an error).
    ``cancelled``: the probe sent CANCEL after waiting for a final answer."""
    spec = _SPEC["A-unauthenticated-call"]
    seen = ", ".join(map(str, statuses)) or "no answer"
    final = statuses[-1] if statuses and statuses[-1] >= 200 else None
    routed = [s for s in statuses if 100 < s < 400]
    if routed or (cancelled and final == 487):
        how = " (CANCELled)" if cancelled else ""
        return failed(
            spec,
            target,
            f"INVITE to {FICTION_NUMBER} without credentials got {seen}{how}",
            "challenge every INVITE (407) before routing it; route only authenticated callers",
        )
    if final in REFUSALS:
        return passed(spec, target, f"INVITE without credentials refused ({seen})")
    if final is None:
        return errored(spec, target, f"no final answer to the INVITE ({seen})")
    return errored(
        spec, target, f"INVITE without credentials got {seen}: neither a challenge nor routed"
    )


def judge_unauthenticated_register(target: str, statuses: Sequence[int]) -> CheckResult:
    """RFC 3261 §10.3: a registrar authenticates the UAC before it binds an address of
    record. A 2xx to a REGISTER without credentials lets anyone take over a user's
    calls (and makes the digest checks moot: nothing was challenged); any other final
    answer refuses it; no final answer proves nothing (an error)."""
    spec = _SPEC["A-unauthenticated-register"]
    seen = ", ".join(map(str, statuses)) or "no answer"
    final = statuses[-1] if statuses and statuses[-1] >= 200 else None
    if final is None:
        return errored(spec, target, f"no final answer to the REGISTER ({seen})")
    if final < 300:
        return failed(
            spec,
            target,
            f"REGISTER accepted without credentials ({final})",
            "challenge every REGISTER (401) and bind only authenticated users",
        )
    return passed(spec, target, f"REGISTER without credentials refused ({final})")


def relay_allowed(address: str, allowed: frozenset[str]) -> bool:
    """Whether the probe may send media to ``address`` (an SDP c= of the target): only
    when it is one of ``allowed`` (the target's own addresses, the installation's
    media.address). Anything else — a third host, an unspecified or empty address —
    would make the probe a reflector (an SDP c= may name any address, RFC 4566 §5.7)."""
    try:
        addr = ipaddress.ip_address(address.strip("[]"))
    except ValueError:
        return False
    if addr.is_unspecified:
        return False
    return any(_same_address(addr, a) for a in allowed)


def _same_address(addr: ipaddress.IPv4Address | ipaddress.IPv6Address, other: str) -> bool:
    try:
        return addr == ipaddress.ip_address(other.strip("[]"))
    except ValueError:
        return False


def judge_srtp_required(
    target: str, status: int | None, forwarded: bool, *, own: bool
) -> CheckResult:
    """An RTP/AVP offer from the test user: refused (488, RFC 3261 §21.4.26) or not."""
    spec = _SPEC["M-srtp-required"]
    fix = _fix(
        own,
        "voipsec config set media.srtp '\"required\"'",
        "refuse RTP/AVP offers (488) and relay SRTP only",
    )
    if forwarded:
        return failed(spec, target, "an RTP/AVP offer was forwarded to the callee", fix)
    if status is not None and 200 <= status < 300:
        return failed(spec, target, f"an RTP/AVP offer was answered {status}", fix)
    if status == 488:
        return passed(spec, target, "an RTP/AVP offer was refused (488)")
    if status is None:
        return errored(spec, target, "no answer to an RTP/AVP offer")
    return skipped(spec, target, f"an RTP/AVP offer got {status}: no call to judge")


def judge_rtp_bleed(target: str, relayed: bool | None, detail: str) -> CheckResult:
    """RTP bleed (rtpengine and Asterisk advisories, CVE-2017-14099): a relay that
    latches onto any source sends a stranger the call's media, or the stranger's to the
    callee."""
    spec = _SPEC["M-rtp-bleed"]
    if relayed is None:
        return skipped(spec, target, detail)
    if relayed:
        return failed(
            spec, target, detail, "relay media only from the address learned from signaling"
        )
    return passed(spec, target, detail)


def judge_srtp_junk(target: str, forwarded: bool | None, detail: str) -> CheckResult:
    """RFC 3711 §3.3: a relay that terminates SRTP drops packets whose tag fails."""
    spec = _SPEC["M-srtp-junk"]
    if forwarded is None:
        return skipped(spec, target, detail)
    if forwarded:
        return failed(spec, target, detail, "authenticate SRTP before relaying it")
    return passed(spec, target, detail)


# -- rate limit ------------------------------------------------------------------------------


def judge_rate_limit(
    target: str, sent: int, answered: int, limited: Sequence[int], closed: bool
) -> CheckResult:
    """A burst of ``sent`` OPTIONS: 503/429 answers (RFC 3261 §21.5.4, RFC 6585 §4),
    or a connection closed after some were answered, show a limit (Kamailio pike,
    voipsec's zone buckets) when some were answered normally first and the limit held
    back at least RATE_LIMITED_SHARE of the burst. Silence alone shows nothing: a
    server that answers nobody is broken or not SIP, not rate limited — an error."""
    spec = _SPEC["F-rate-limit"]
    fix = "limit requests per source (e.g. Kamailio pike, fail2ban) and ban floods"
    if limited or (closed and answered):
        how = []
        if limited:
            how.append(f"{len(limited)} answered {sorted(set(limited))[0]}")
        if answered < sent:
            how.append(f"{sent - answered} unanswered")
        if closed:
            how.append("connection closed")
        observed = f"{sent} OPTIONS in {RATE_WINDOW:g} s: {', '.join(how)}"
        normal = answered - len(limited)
        held = len(limited) + sent - answered
        if normal < 1:
            return errored(
                spec, target, f"{observed}; none answered normally first — no limit shown"
            )
        if held < RATE_LIMITED_SHARE * sent:
            return failed(
                spec,
                target,
                f"{observed}; {normal} answered normally: under "
                f"{RATE_LIMITED_SHARE:.0%} held back — no limit",
                fix,
            )
        return passed(spec, target, observed)
    if answered < sent:
        shut = "connection closed, " if closed else ""
        return errored(
            spec,
            target,
            f"{sent} OPTIONS in {RATE_WINDOW:g} s: {shut}{answered} answered, no 429/503 "
            "and no close after answers — no limit shown",
        )
    return failed(spec, target, f"all {sent} OPTIONS in {RATE_WINDOW:g} s answered", fix)


# -- information leaks -------------------------------------------------------------------------

_VERSION = re.compile(r"\d+\.\d+")
_SDP_ADDR = re.compile(r"^(?:c=IN IP[46] |o=\S+ \S+ \S+ IN IP[46] )(\S+)", re.M)
_URI_HOST = re.compile(r"sips?:(?:[^@;>\s]*@)?(\[[0-9a-fA-F:.]+\]|[0-9.]+)")
#: A Warning value (RFC 3261 §20.43): warn-code SP warn-agent SP quoted warn-text.
_WARNING = re.compile(r'(\d{3})\s+(\S+)\s+"((?:[^"\\]|\\.)*)"')
_IPV4 = re.compile(r"(?<![\d.])\d{1,3}(?:\.\d{1,3}){3}(?![\d.])")
#: Warning text that tells about the server's insides (Kamailio's "Noisy feedback
#: tells: pid=..." of sip_warning=1, versions).
_TELLTALE = re.compile(r"pid=|noisy feedback|version", re.I)


def _warning_agent_host(agent: str) -> str:
    """The host of a warn-agent (hostport or pseudonym, §20.43)."""
    if agent.startswith("["):
        return agent[1:].partition("]")[0]
    return agent.rpartition(":")[0] if agent.count(":") == 1 else agent


def _internal(text: str) -> bool:
    try:
        addr = ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return False
    return addr.is_private or addr.is_loopback or addr.is_link_local or addr.is_reserved


def leaks_in(response: Response, *, allowed: frozenset[str]) -> list[str]:
    """What one answer discloses: product versions, internal addresses other than
    ``allowed`` (the target's own and the probe's) — in Via, Contact, Record-Route,
    Warning agents and texts, SDP —, debugging Warning texts, ``a=tool`` in SDP."""
    found = []
    for name in ("server", "user-agent"):
        value = response.headers.get(name)
        if value and _VERSION.search(value):
            found.append(f"{name.title()}: {value}")
    # The top Via is the probe's own, and its received= (RFC 3261 §18.2.1) is where the
    # probe's request came from: neither discloses the server. Further Vias do (hops
    # inside the server's network, left in a response).
    addresses: list[str] = [via.host for via in response.vias[1:]]
    for name in ("contact", "record-route"):
        for value in response.headers.values(name):
            addresses += _URI_HOST.findall(value)
    for value in response.headers.lines("warning"):
        for code, agent, text in _WARNING.findall(value):
            addresses.append(_warning_agent_host(agent))
            addresses += _IPV4.findall(text)
            if _TELLTALE.search(text):
                found.append(f'Warning: {code} {agent} "{text[:60]}"')
    body = response.body.decode("utf-8", "replace")
    addresses += _SDP_ADDR.findall(body)
    for addr in addresses:
        if _internal(addr) and addr.strip("[]") not in allowed:
            found.append(f"internal address {addr.strip('[]')}")
    for line in body.splitlines():
        if line.startswith("a=tool:"):
            found.append(line.strip())
    return found


def judge_info_leak(
    target: str, responses: Sequence[Response], *, allowed: frozenset[str], own: bool
) -> CheckResult:
    """RFC 3261 §20.35/§20.41: a software version in Server or User-Agent makes a
    target of known holes; scanners (SIPVicious svmap, sippts) fingerprint by it."""
    spec = _SPEC["F-info-leak"]
    if not responses:
        return errored(spec, target, "no answer to read")
    found: list[str] = []
    for r in responses:
        for item in leaks_in(r, allowed=allowed):
            if item not in found:
                found.append(item)
    if not found:
        return passed(spec, target, f"{len(responses)} answer(s) read, nothing disclosed")
    fix = _fix(
        own,
        "voipsec config set ids.server_header '\"\"'",
        "remove versions from Server/User-Agent and internal addresses from answers",
    )
    return failed(spec, target, "; ".join(found[:5]), fix)


def trusted_zone_of(source: str, zones: Sequence[tuple[str, Sequence[str], bool]]) -> str | None:
    """The name of the zone ``source`` falls in when that zone is trusted (the most
    specific CIDR wins, as in edge/zones.py); None when untrusted or in none."""
    try:
        addr = ipaddress.ip_address(source)
    except ValueError:
        return None
    best: tuple[int, str, bool] | None = None
    for name, cidrs, trusted in zones:
        for cidr in cidrs:
            net = ipaddress.ip_network(cidr, strict=False)
            inside = addr.version == net.version and addr in net
            if inside and (best is None or net.prefixlen > best[0]):
                best = (net.prefixlen, name, trusted)
    return best[1] if best and best[2] else None

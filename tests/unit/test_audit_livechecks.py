"""The live probes' judgements (audit/livechecks.py) and request builders, as units."""

from __future__ import annotations

import ipaddress
import time
from pathlib import Path

import pytest

import voipsec
from voipsec.audit import livechecks as lc
from voipsec.audit.live import BURST_NETWORK, burst_source
from voipsec.audit.liverequests import USER_AGENT, Party, audio_offer, request
from voipsec.audit.model import Outcome
from voipsec.audit.options import ProbeOptions
from voipsec.audit.sipprobe import (
    AUTH_SOURCE,
    MAX_REQUESTS,
    MAX_SILENT,
    MAX_TARGET_SECONDS,
    PROBE_RATE,
    ProbeBudgetExceeded,
    ProbeRun,
)
from voipsec.audit.targets import SipTarget
from voipsec.sip import Response, parse_message
from voipsec.sip.uac import LocalAddress

T = "sips:192.0.2.10:5061"
TLS = ["tls:127.0.0.1:5061"]


def _response(status: str, *headers: str, body: str = "") -> Response:
    lines = [
        f"SIP/2.0 {status}",
        "Via: SIP/2.0/TLS 10.0.0.9:5061;branch=z9hG4bKabc;rport=5061;received=203.0.113.5",
        "From: <sip:audit@example.com>;tag=aa",
        "To: <sip:audit@example.com>;tag=bb",
        "Call-ID: c1",
        "CSeq: 1 REGISTER",
        *headers,
        f"Content-Length: {len(body)}",
        "",
        body,
    ]
    msg = parse_message("\r\n".join(lines).encode())
    assert isinstance(msg, Response)
    return msg


SHA = 'WWW-Authenticate: Digest realm="example.com", nonce="n1", algorithm=SHA-256, qop="auth"'
MD5_BARE = 'WWW-Authenticate: Digest realm="example.com", nonce="n1"'


def test_audit_livechecks_specs_are_the_shared_table() -> None:
    ids = [s.id for s in lc.SPECS]
    assert ids == [
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
    ]
    crit = {s.id for s in lc.SPECS if s.severity.value == "critical"}
    assert crit == {"A-unauthenticated-call", "A-unauthenticated-register"}
    assert lc.SPEC_BY_ID["F-info-leak"].title == (
        "No software versions or internal addresses disclosed"
    )


def test_audit_livechecks_tls_versions_below_12_fail_with_the_own_fix() -> None:
    r = lc.judge_tls_versions(T, {"TLS 1.0": True, "TLS 1.2": True, "TLS 1.3": False}, own=True)
    assert (r.outcome, r.observed, r.fix) == (
        Outcome.FAILED,
        "accepted: TLS 1.0, TLS 1.2",
        "voipsec config set tls.min_version '\"1.2\"'",
    )
    ok = lc.judge_tls_versions(T, {"TLS 1.2": True, "TLS 1.3": True}, own=False)
    assert (ok.outcome, ok.observed, ok.fix) == (Outcome.PASSED, "accepted: TLS 1.2, TLS 1.3", "")


def test_audit_livechecks_weak_suites_are_all_but_forward_secret_aead() -> None:
    ciphers = [
        {
            "name": "ECDHE-RSA-AES128-GCM-SHA256",
            "protocol": "TLSv1.2",
            "kea": "kx-ecdhe",
            "aead": True,
        },
        {"name": "DHE-RSA-CHACHA20-POLY1305", "protocol": "TLSv1.2", "kea": "kx-dhe", "aead": True},
        {"name": "AES128-GCM-SHA256", "protocol": "TLSv1.2", "kea": "kx-rsa", "aead": True},
        {"name": "ECDHE-RSA-AES128-SHA", "protocol": "TLSv1", "kea": "kx-ecdhe", "aead": False},
        {"name": "PSK-AES128-GCM-SHA256", "protocol": "TLSv1.2", "kea": "kx-psk", "aead": True},
        {"name": "TLS_AES_128_GCM_SHA256", "protocol": "TLSv1.3", "kea": "kx-any", "aead": True},
    ]
    assert lc.weak_suites(ciphers) == ["AES128-GCM-SHA256", "ECDHE-RSA-AES128-SHA"]


def test_audit_livechecks_ciphers_and_renegotiation() -> None:
    r = lc.judge_ciphers(T, "AES256-SHA", own=False)
    assert (r.outcome, r.observed) == (Outcome.FAILED, "accepted the weak suite AES256-SHA")
    assert lc.judge_ciphers(T, None, own=True).outcome is Outcome.PASSED
    r = lc.judge_renegotiation(T, True, own=True)
    assert (r.outcome, r.observed, r.fix) == (
        Outcome.FAILED,
        "client-initiated renegotiation accepted",
        "voipsec config set tls.min_version '\"1.3\"'",
    )
    ok = lc.judge_renegotiation(T, False, own=True)
    assert (ok.outcome, ok.observed) == (
        Outcome.PASSED,
        "client-initiated renegotiation refused (compression not probed)",
    )


def test_audit_livechecks_certificate_expiry_days() -> None:
    now = 1_000_000_000.0
    r = lc.judge_certificate_expiry(T, now + 5 * 86400 - 10, now, subject="CN=x")
    assert (r.outcome, r.observed, r.fix) == (
        Outcome.FAILED,
        "CN=x: expires in 4 day(s) (warning at 30 days)",
        "renew the server certificate",
    )
    gone = lc.judge_certificate_expiry(
        T, now - 1, now, subject="CN=x", warning_days=7, fix_own=lc.certificate_fix("/srv/v")
    )
    assert (gone.observed, gone.fix) == (
        "CN=x: expired (warning at 7 days)",
        "rm /srv/v/tls/server.crt && voipsec init --dir /srv/v",
    )
    ok = lc.judge_certificate_expiry(T, now + 31 * 86400, now, subject="CN=x")
    assert (ok.outcome, ok.observed) == (
        Outcome.PASSED,
        "CN=x: 31 days left, chain and name verified",
    )
    self_signed = lc.judge_certificate_expiry(
        T, now + 300 * 86400, now, subject="CN=x", untrusted="self-signed certificate"
    )
    assert (self_signed.outcome, self_signed.observed, self_signed.fix) == (
        Outcome.FAILED,
        "CN=x: 300 days left; not trusted: self-signed certificate",
        "use a certificate from a CA the clients trust, naming the server, valid for long",
    )
    both = lc.judge_certificate_expiry(
        T, now + 4 * 86400, now, subject="CN=x", untrusted="Hostname mismatch"
    )
    assert both.observed == (
        "CN=x: expires in 4 day(s) (warning at 30 days); not trusted: Hostname mismatch"
    )


def test_audit_livechecks_plaintext_and_amplification() -> None:
    r = lc.judge_plaintext(
        T, {"udp:h:5060": "200 OK", "tcp:h:5060": None}, own=True, tls_listeners=TLS
    )
    assert (r.outcome, r.observed, r.fix) == (
        Outcome.FAILED,
        "udp:h:5060 answered 200 OK",
        "voipsec config set sip.listen '[\"tls:127.0.0.1:5061\"]'",
    )
    ok = lc.judge_plaintext(T, {"udp:h:5060": None}, own=False, tls_listeners=[])
    assert (ok.outcome, ok.observed) == (Outcome.PASSED, "no SIP answer on udp:h:5060")
    big = lc.judge_amplification(T, {"udp:h:5060": (100, 301)}, own=False, tls_listeners=[])
    assert (big.outcome, big.observed) == (
        Outcome.FAILED,
        "udp:h:5060: 301 bytes answered to 100 (3.01x)",
    )
    at = lc.judge_amplification(T, {"udp:h:5060": (100, 300)}, own=False, tls_listeners=[])
    assert at.outcome is Outcome.PASSED
    none = lc.judge_amplification(T, {}, own=False, tls_listeners=[])
    assert (none.outcome, none.observed) == (Outcome.PASSED, "no UDP SIP listener answered")


def test_audit_livechecks_digest_md5_when_named_or_implied() -> None:
    bare = lc.judge_digest_md5(T, [_response("401 Unauthorized", MD5_BARE)], own=True)
    assert (bare.outcome, bare.observed, bare.fix) == (
        Outcome.FAILED,
        "challenged with MD5 (no algorithm)",
        "voipsec config set auth.algorithms '[\"SHA-256\"]'",
    )
    both = _response("401 Unauthorized", SHA, MD5_BARE.replace('"n1"', '"n2", algorithm=MD5'))
    assert lc.judge_digest_md5(T, [both], own=False).observed == "challenged with MD5, SHA-256"
    ok = lc.judge_digest_md5(T, [_response("401 Unauthorized", SHA)], own=False)
    assert (ok.outcome, ok.observed) == (Outcome.PASSED, "challenged with SHA-256")
    none = lc.judge_digest_md5(T, [_response("403 Forbidden")], own=False)
    assert (none.outcome, none.observed) == (
        Outcome.SKIPPED,
        "no digest challenge to read (403)",
    )


def test_audit_livechecks_digest_qop() -> None:
    r = lc.judge_digest_qop(T, [_response("401 Unauthorized", MD5_BARE, SHA)])
    assert (r.outcome, r.observed, r.fix) == (
        Outcome.FAILED,
        "1 of 2 challenge(s) without qop=auth",
        'send qop="auth" in every digest challenge (RFC 7616 §3.3)',
    )
    ok = lc.judge_digest_qop(T, [_response("401 Unauthorized", SHA)])
    assert (ok.outcome, ok.observed) == (Outcome.PASSED, "1 challenge(s), all with qop=auth")


def test_audit_livechecks_nonce_reuse() -> None:
    r = lc.judge_nonce_reuse(T, 200, 200)
    assert (r.outcome, r.observed) == (
        Outcome.FAILED,
        "the same Authorization (nonce, nc) was accepted again (200)",
    )
    ok = lc.judge_nonce_reuse(T, 200, 401)
    assert (ok.outcome, ok.observed) == (
        Outcome.PASSED,
        "accepted once (200), refused on replay (401)",
    )
    assert lc.judge_nonce_reuse(T, 403, None).outcome is Outcome.SKIPPED
    # Silence, or an answer that is not a refusal, proves nothing (a slow 200 may follow).
    slow = lc.judge_nonce_reuse(T, 200, None)
    assert (slow.outcome, slow.observed) == (
        Outcome.ERROR,
        "accepted once (200), replay got no answer: not a refusal",
    )
    odd = lc.judge_nonce_reuse(T, 200, 500)
    assert (odd.outcome, odd.observed) == (
        Outcome.ERROR,
        "accepted once (200), replay got 500: not a refusal",
    )
    none = lc.judge_nonce_reuse(T, None, None)
    assert (none.outcome, none.observed) == (
        Outcome.ERROR,
        "no answer to the test user's authorized REGISTER",
    )


def _ex(method: str, response: Response | None, seconds: float) -> lc.Exchange:
    return lc.Exchange(method=method, response=response, seconds=seconds)


def test_audit_livechecks_enumeration_ignores_per_transaction_values() -> None:
    a = _response("401 Unauthorized", SHA)
    b = _response("401 Unauthorized", SHA.replace('"n1"', '"other-nonce"'))
    r = lc.judge_user_enumeration(T, [_ex("REGISTER", a, 0.010)], [_ex("REGISTER", b, 0.012)])
    assert (r.outcome, r.observed) == (
        Outcome.PASSED,
        "same answers; median 10 ms existing, 12 ms unknown",
    )


def test_audit_livechecks_enumeration_fails_on_status_headers_or_time() -> None:
    a = _response("401 Unauthorized", SHA)
    r = lc.judge_user_enumeration(
        T,
        [_ex("REGISTER", a, 0.01), _ex("INVITE", a, 0.01)],
        [_ex("REGISTER", _response("404 Not Found"), 0.01), _ex("INVITE", None, 3.0)],
    )
    assert (r.outcome, r.observed) == (
        Outcome.FAILED,
        "REGISTER: existing user 401 Unauthorized, unknown user 404 Not Found",
    )
    c = _response("401 Unauthorized", SHA, 'Warning: 399 x "unknown user"')
    r = lc.judge_user_enumeration(T, [_ex("REGISTER", a, 0.01)], [_ex("REGISTER", c, 0.01)])
    assert r.observed.endswith("(headers differ)")
    # Timing: beyond both the margin and the factor only.
    slow = [_ex("REGISTER", a, 0.200)] * 3
    fast = [_ex("REGISTER", a, 0.020)] * 3
    assert lc.judge_user_enumeration(T, slow, fast).outcome is Outcome.FAILED
    jitter = [_ex("REGISTER", a, 0.045)] * 3
    quick = [_ex("REGISTER", a, 0.001)] * 3
    assert lc.judge_user_enumeration(T, jitter, quick).outcome is Outcome.PASSED
    twice = [_ex("REGISTER", a, 0.200)] * 3
    assert lc.judge_user_enumeration(T, twice, [_ex("REGISTER", a, 0.100)] * 3).outcome is (
        Outcome.PASSED
    )


def test_audit_livechecks_unauthenticated_call() -> None:
    r = lc.judge_unauthenticated_call(T, [100, 183, 200])
    assert (r.outcome, r.observed) == (
        Outcome.FAILED,
        "INVITE to +442079460000 without credentials got 100, 183, 200",
    )
    for status in (401, 407, 403):
        assert lc.judge_unauthenticated_call(T, [100, status]).outcome is Outcome.PASSED
    # A 488 may be an SRTP policy behind routing, a 404 a routed call's: no proof either way.
    for status in (404, 480, 488, 500):
        r = lc.judge_unauthenticated_call(T, [100, status])
        assert (r.outcome, r.observed) == (
            Outcome.ERROR,
            f"INVITE without credentials got 100, {status}: neither a challenge nor routed",
        )
    assert lc.judge_unauthenticated_call(T, [302]).outcome is Outcome.FAILED
    # Ringing before a challenge is routing too.
    assert lc.judge_unauthenticated_call(T, [183, 407]).outcome is Outcome.FAILED
    # 100, then nothing: the probe CANCELs; a 487 shows the call was going somewhere.
    r = lc.judge_unauthenticated_call(T, [100, 487], cancelled=True)
    assert (r.outcome, r.observed) == (
        Outcome.FAILED,
        "INVITE to +442079460000 without credentials got 100, 487 (CANCELled)",
    )
    r = lc.judge_unauthenticated_call(T, [])
    assert (r.outcome, r.observed) == (Outcome.ERROR, "no final answer to the INVITE (no answer)")
    r = lc.judge_unauthenticated_call(T, [100], cancelled=True)
    assert (r.outcome, r.observed) == (Outcome.ERROR, "no final answer to the INVITE (100)")


def test_audit_livechecks_media_judgements() -> None:
    r = lc.judge_srtp_required(T, 200, False, own=True)
    assert (r.outcome, r.fix) == (Outcome.FAILED, "voipsec config set media.srtp '\"required\"'")
    assert lc.judge_srtp_required(T, 486, True, own=False).observed == (
        "an RTP/AVP offer was forwarded to the callee"
    )
    assert lc.judge_srtp_required(T, 488, False, own=False).outcome is Outcome.PASSED
    assert lc.judge_srtp_required(T, 404, False, own=False).outcome is Outcome.SKIPPED
    assert lc.judge_rtp_bleed(T, True, "x").outcome is Outcome.FAILED
    assert lc.judge_rtp_bleed(T, False, "x").outcome is Outcome.PASSED
    assert lc.judge_srtp_junk(T, True, "x").outcome is Outcome.FAILED
    assert lc.judge_srtp_junk(T, None, "no call").outcome is Outcome.SKIPPED


def test_audit_livechecks_rate_limit() -> None:
    r = lc.judge_rate_limit(T, 60, 60, [], False)
    assert (r.outcome, r.observed) == (Outcome.FAILED, "all 60 OPTIONS in 1 s answered")
    ok = lc.judge_rate_limit(T, 60, 60, [503] * 44, False)
    assert (ok.outcome, ok.observed) == (Outcome.PASSED, "60 OPTIONS in 1 s: 44 answered 503")
    cut = lc.judge_rate_limit(T, 60, 16, [], True)
    assert (cut.outcome, cut.observed) == (
        Outcome.PASSED,
        "60 OPTIONS in 1 s: 44 unanswered, connection closed",
    )
    # Silence is not a limit: nothing answered, or answers that just stop.
    silent = lc.judge_rate_limit(T, 60, 0, [], False)
    assert (silent.outcome, silent.observed) == (
        Outcome.ERROR,
        "60 OPTIONS in 1 s: 0 answered, no 429/503 and no close after answers — no limit shown",
    )
    dropped = lc.judge_rate_limit(T, 60, 30, [], False)
    assert dropped.outcome is Outcome.ERROR
    shut = lc.judge_rate_limit(T, 60, 0, [], True)
    assert (shut.outcome, shut.observed) == (
        Outcome.ERROR,
        "60 OPTIONS in 1 s: connection closed, 0 answered, no 429/503 and no close after "
        "answers — no limit shown",
    )
    assert lc.judge_rate_limit(T, 60, 20, [429], False).outcome is Outcome.PASSED
    # Review 3 #4: a 503 for everything, or one 503 among 59 answers, is no limit.
    all503 = lc.judge_rate_limit(T, 60, 60, [503] * 60, False)
    assert (all503.outcome, all503.observed) == (
        Outcome.ERROR,
        "60 OPTIONS in 1 s: 60 answered 503; none answered normally first — no limit shown",
    )
    one = lc.judge_rate_limit(T, 60, 60, [503], False)
    assert (one.outcome, one.observed, one.fix) == (
        Outcome.FAILED,
        "60 OPTIONS in 1 s: 1 answered 503; 59 answered normally: under 25% held back — no limit",
        "limit requests per source (e.g. Kamailio pike, fail2ban) and ban floods",
    )
    assert lc.RATE_LIMITED_SHARE == 0.25
    edge = lc.judge_rate_limit(T, 60, 60, [503] * 15, False)
    assert edge.outcome is Outcome.PASSED
    assert lc.judge_rate_limit(T, 60, 60, [503] * 14, False).outcome is Outcome.FAILED
    late_close = lc.judge_rate_limit(T, 60, 55, [], True)
    assert (late_close.outcome, late_close.observed) == (
        Outcome.FAILED,
        "60 OPTIONS in 1 s: 5 unanswered, connection closed; 55 answered normally: "
        "under 25% held back — no limit",
    )


def test_audit_livechecks_relay_address_must_be_the_targets() -> None:
    allowed = frozenset({"192.0.2.10", "2001:db8::1"})
    assert lc.relay_allowed("192.0.2.10", allowed)
    assert lc.relay_allowed("[2001:db8:0::1]", allowed)
    for address in ("127.0.0.66", "", "0.0.0.0", "::", "pbx.example.com", "192.0.2.11"):
        assert not lc.relay_allowed(address, allowed), address


def test_audit_livechecks_digest_no_answer_is_an_error() -> None:
    for judge in (
        lambda: lc.judge_digest_md5(T, [], own=False),
        lambda: lc.judge_digest_qop(T, []),
    ):
        r = judge()
        assert (r.outcome, r.observed) == (Outcome.ERROR, "no final answer to REGISTER or INVITE")
    # A target dripping 100 Trying has not answered either.
    r = lc.judge_digest_md5(T, [_response("100 Trying")] * 3, own=False)
    assert (r.outcome, r.observed) == (Outcome.ERROR, "no final answer to REGISTER or INVITE")
    r = lc.judge_digest_md5(T, [_response("200 OK")], own=False)
    assert (r.outcome, r.observed) == (Outcome.SKIPPED, "no digest challenge to read (200)")
    r = lc.judge_srtp_required(T, None, False, own=False)
    assert (r.outcome, r.observed) == (Outcome.ERROR, "no answer to an RTP/AVP offer")


def test_audit_livechecks_enumeration_by_silence() -> None:
    """svwar reads silence too: the unknown user unanswered while the existing user's
    next request is answered is a tell; both silent (a ban) is not."""
    a = _response("401 Unauthorized", SHA)
    ex = [_ex("REGISTER", a, 0.01), _ex("REGISTER", a, 0.01)]
    r = lc.judge_user_enumeration(T, ex, [_ex("REGISTER", None, 3.0)] * 2)
    assert (r.outcome, r.observed) == (
        Outcome.FAILED,
        "REGISTER: existing user 401 Unauthorized, unknown user no answer "
        "(the existing user's next request was answered)",
    )
    banned = [_ex("REGISTER", a, 0.01), _ex("REGISTER", None, 3.0)]
    r = lc.judge_user_enumeration(T, banned, [_ex("REGISTER", a, 0.01), _ex("REGISTER", None, 3.0)])
    assert r.outcome is Outcome.PASSED


def test_audit_livechecks_warning_headers_leak() -> None:
    """Kamailio's sip_warning=1: the agent's internal address and a debugging text."""
    r = _response(
        "401 Unauthorized",
        'Warning: 392 10.20.30.40:5060 "Noisy feedback tells: pid=4242 req_src_ip=1.2.3.4 '
        'in_uri=sip:x via_cnt==1"',
    )
    assert lc.leaks_in(r, allowed=frozenset()) == [
        'Warning: 392 10.20.30.40:5060 "Noisy feedback tells: pid=4242 '
        'req_src_ip=1.2.3.4 in_uri=sip"',
        "internal address 10.20.30.40",
    ]
    inside = _response("488 Not Acceptable Here", 'Warning: 305 pbx "see 192.168.7.7"')
    assert lc.leaks_in(inside, allowed=frozenset()) == ["internal address 192.168.7.7"]
    plain = _response("488 Not Acceptable Here", 'Warning: 305 sip.example.com "Incompatible"')
    assert lc.leaks_in(plain, allowed=frozenset()) == []


def test_audit_livechecks_info_leaks() -> None:
    sdp = "v=0\r\no=- 1 1 IN IP4 10.1.2.3\r\nc=IN IP4 192.0.2.10\r\na=tool:pbx 1.0\r\n"
    r = _response(
        "200 OK",
        "Server: Asterisk PBX 18.2.0",
        "Contact: <sip:pbx@172.16.0.5:5060>",
        "Content-Type: application/sdp",
        body=sdp,
    )
    assert lc.leaks_in(r, allowed=frozenset({"192.0.2.10"})) == [
        "Server: Asterisk PBX 18.2.0",
        "internal address 172.16.0.5",
        "internal address 10.1.2.3",
        "a=tool:pbx 1.0",
    ]
    quiet = _response("200 OK", "Server: voipsec")
    assert lc.leaks_in(quiet, allowed=frozenset()) == []  # the probe's own Via aside
    hop = _response("200 OK", "Via: SIP/2.0/UDP 192.168.7.7:5060;branch=z9hG4bKinner")
    assert lc.leaks_in(hop, allowed=frozenset()) == ["internal address 192.168.7.7"]
    result = lc.judge_info_leak(T, [r, quiet], allowed=frozenset(), own=True)
    assert (result.outcome, result.fix) == (
        Outcome.FAILED,
        "voipsec config set ids.server_header '\"\"'",
    )
    ok = lc.judge_info_leak(T, [quiet], allowed=frozenset(), own=True)
    assert (ok.outcome, ok.observed) == (Outcome.PASSED, "1 answer(s) read, nothing disclosed")
    none = lc.judge_info_leak(T, [], allowed=frozenset(), own=False)
    assert (none.outcome, none.observed) == (Outcome.ERROR, "no answer to read")


def test_audit_livechecks_trusted_zone_most_specific_wins() -> None:
    zones = [
        ("loopback", ["127.0.0.0/8"], True),
        ("probe", ["127.0.0.128/25"], False),
        ("internet", ["0.0.0.0/0"], False),
    ]
    assert lc.trusted_zone_of("127.0.0.1", zones) == "loopback"
    assert lc.trusted_zone_of("127.0.0.200", zones) is None
    assert lc.trusted_zone_of("198.51.100.1", zones) is None
    assert lc.trusted_zone_of("not-an-address", zones) is None


def test_audit_liverequests_register_and_offer() -> None:
    local = LocalAddress(transport="tls", host="127.0.0.1", port=40000)
    req = request("REGISTER", Party(domain="example.com", from_user="alice"), local, cseq=2)
    assert (req.raw_uri, req.cseq.seq, req.to.uri.user, req.from_.uri.user) == (
        "sip:example.com",
        2,
        "alice",
        "alice",
    )
    assert req.from_.tag
    invite = request(
        "INVITE",
        Party(domain="example.com", to_user=lc.FICTION_NUMBER),
        local,
        body=audio_offer("127.0.0.1", 4000, crypto=None),
    )
    assert invite.raw_uri == "sip:+442079460000@example.com"
    assert invite.headers.get("content-type") == "application/sdp"
    assert b"m=audio 4000 RTP/AVP 0\r\n" in invite.body
    assert b"RTP/SAVP" in audio_offer("::1", 4000, crypto="1 AES_CM_128_HMAC_SHA1_80 inline:x")


def test_audit_sipprobe_request_budget_exceeded() -> None:
    run = ProbeRun(
        target=SipTarget("127.0.0.1", 5061),
        options=ProbeOptions(),
        party=Party(domain="127.0.0.1"),
        user=None,
        password=None,
    )
    run.sent = MAX_REQUESTS - 1
    run.pace()
    with pytest.raises(ProbeBudgetExceeded, match=f"more than {MAX_REQUESTS} requests"):
        run.pace()


def _run(host: str) -> ProbeRun:
    return ProbeRun(
        target=SipTarget(host, 5061),
        options=ProbeOptions(),
        party=Party(domain=host),
        user=None,
        password=None,
    )


def test_audit_sipprobe_fresh_sources_never_the_admins_loopback() -> None:
    run = _run("127.0.0.1")
    sources = [run.fresh_source() for _ in range(40)]
    assert len(set(sources)) == 40
    for source in sources:
        assert source is not None
        last = int(source.rsplit(".", 1)[1])
        assert source.startswith("127.0.0.") and 2 <= last <= 127
    assert run.sources == frozenset(sources)
    assert _run("192.0.2.10").fresh_source() is None
    assert _run("::1").fresh_source() is None
    assert _run("pbx.example.com").fresh_source() is None


def test_audit_liveburst_source_in_its_own_range() -> None:
    for _ in range(20):
        source = burst_source("127.0.0.1")
        assert source is not None
        assert ipaddress.ip_address(source) in BURST_NETWORK
        assert source != "127.0.0.128"
    assert burst_source("192.0.2.10") is None


def test_audit_livechecks_enumeration_leaves_out_unanswered_pairs() -> None:
    """An IDS ban silences whoever asks next: unanswered pairs are not compared."""
    a = _response("401 Unauthorized", SHA)
    existing = [_ex("REGISTER", a, 0.010), _ex("INVITE", None, 3.0)]
    unknown = [_ex("REGISTER", a, 0.011), _ex("INVITE", a, 0.010)]
    r = lc.judge_user_enumeration(T, existing, unknown)
    assert (r.outcome, r.observed) == (
        Outcome.PASSED,
        "same answers; median 10 ms existing, 11 ms unknown (1 pair(s) unanswered)",
    )
    silent = lc.judge_user_enumeration(T, [_ex("REGISTER", None, 3.0)], [_ex("REGISTER", a, 0.01)])
    assert (silent.outcome, silent.observed) == (
        Outcome.ERROR,
        "no answered pair of requests to compare",
    )


def test_audit_sipprobe_sources_run_out_and_repeat_per_run() -> None:
    """125 loopback sources (127.0.0.3-127), the same order each run; the 126th raises
    instead of looping for ever; the authenticated probes share 127.0.0.2, every run."""
    run = _run("127.0.0.1")
    sources = [run.fresh_source() for _ in range(125)]
    assert sources == [f"127.0.0.{i}" for i in range(3, 128)]
    with pytest.raises(ProbeBudgetExceeded, match="all 125 loopback sources used"):
        run.fresh_source()
    again = _run("127.0.0.1")
    assert again.fresh_source() == "127.0.0.3"
    assert again.auth_source() == again.auth_source() == AUTH_SOURCE == "127.0.0.2"
    assert again.fresh_source() == "127.0.0.4"
    assert again.sources == frozenset({"127.0.0.2", "127.0.0.3", "127.0.0.4"})
    assert _run("192.0.2.10").auth_source() is None


def test_audit_sipprobe_time_budget_exceeded() -> None:
    run = _run("127.0.0.1")
    run.deadline = time.monotonic() + 5.0
    assert 0 < run.wait(10.0) <= 5.0
    run.pace()
    run.deadline = time.monotonic()  # spent
    assert run.wait(10.0) == 0.0
    with pytest.raises(
        ProbeBudgetExceeded,
        match=f"the probes of one target may take {MAX_TARGET_SECONDS:g} s, all spent",
    ):
        run.pace()


def test_audit_sipprobe_pace_keeps_probe_rate() -> None:
    run = _run("127.0.0.1")
    started = time.monotonic()
    for _ in range(4):
        run.pace()
    assert time.monotonic() - started >= 3 / PROBE_RATE - 0.01
    assert run.sent == 4


def test_audit_liverequests_user_agent_is_the_audits() -> None:
    local = LocalAddress(transport="tls", host="127.0.0.1", port=40000)
    req = request("OPTIONS", Party(domain="example.com"), local)
    assert req.headers.get("user-agent") == USER_AGENT == f"voipsec-audit/{voipsec.__version__}"


def test_audit_sipprobe_silent_target_ends_the_run() -> None:
    run = _run("127.0.0.1")
    for _ in range(MAX_SILENT - 2):
        run.answered([])
    run.check_time()
    run.answered([_response("100 Trying")])  # a provisional is no answer
    assert run.unanswered == MAX_SILENT - 1
    run.answered([_response("100 Trying"), _response("200 OK")])  # a final one resets
    assert run.unanswered == 0
    for _ in range(MAX_SILENT):
        run.answered([])
    with pytest.raises(
        ProbeBudgetExceeded, match=f"no final answer to {MAX_SILENT} requests in a row"
    ):
        run.pace()


def test_audit_sipprobe_fresh_sources_skip_banned_ones(tmp_path: Path) -> None:
    """Review 3 #2: a source the own installation bans now (a ban the last run earned)
    is not used again; the burst avoids banned ones too, unless all are banned."""
    from voipsec.audit.live import own_bans
    from voipsec.storage.store import DB_NAME, Store

    store = Store(tmp_path / DB_NAME)
    try:
        store.add_ban("127.0.0.3", time.time() + 3600, "ids: extension-enumeration")
        store.add_ban("127.0.0.5", time.time() + 3600, "ids: extension-enumeration")
        store.add_ban("127.0.0.4", time.time() - 1, "expired")
    finally:
        store.close()
    banned = own_bans(tmp_path)
    assert banned == frozenset({"127.0.0.3", "127.0.0.5"})
    assert own_bans(tmp_path / "missing") == frozenset()
    run = _run("127.0.0.1")
    run.banned = banned
    assert [run.fresh_source() for _ in range(3)] == ["127.0.0.4", "127.0.0.6", "127.0.0.7"]
    assert [_run("127.0.0.1").fresh_source() for _ in range(1)] == ["127.0.0.3"]
    all_but_one = frozenset(str(a) for a in BURST_NETWORK) - {"127.0.0.200"}
    assert {burst_source("127.0.0.1", all_but_one) for _ in range(5)} == {"127.0.0.200"}
    everything = frozenset(str(a) for a in BURST_NETWORK)
    source = burst_source("127.0.0.1", everything)
    assert source is not None and ipaddress.ip_address(source) in BURST_NETWORK

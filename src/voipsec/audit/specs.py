"""Every check of the audit, once: id, SAME-FLOW control, severity, title, references.

A local check and a live probe of the same property share one spec (one weakening
fails one id). docs/audit.md lists them in this order; a test keeps the two in step.
Sans-IO: constants only.
"""

from __future__ import annotations

from .model import CheckSpec, Control, Severity

__all__ = ["ALL_SPECS", "spec_by_id"]

_C, _H, _M, _L = Severity.CRITICAL, Severity.HIGH, Severity.MEDIUM, Severity.LOW
NIST = "NIST SP 800-58"


def _spec(id_: str, control: Control, severity: Severity, title: str, *refs: str) -> CheckSpec:
    return CheckSpec(id=id_, control=control, severity=severity, title=title, references=refs)


PLAINTEXT_SIP = _spec(
    "S-plaintext-sip",
    Control.S,
    _H,
    "No plaintext SIP listener (UDP/TCP)",
    "RFC 5630",
    NIST,
    "RFC 3261 §26.2.1",
)
TLS_VERSION = _spec(
    "S-tls-version",
    Control.S,
    _H,
    "TLS 1.2 or newer only",
    "RFC 8996",
    NIST,
    "RFC 9325 §3.1",
)
TLS_CIPHERS = _spec(
    "S-tls-ciphers",
    Control.S,
    _M,
    "Forward-secret AEAD cipher suites only",
    "RFC 7465",
    "RFC 9325 §4.2",
    "RFC 7457 §2",
)
TLS_RENEGOTIATION = _spec(
    "S-tls-renegotiation",
    Control.S,
    _M,
    "No client-initiated renegotiation, no TLS compression",
    "RFC 5746",
    "RFC 9325 §3.3",
    "CVE-2011-1473",
    "CVE-2012-4929",
    "RFC 9325 §3.5",
)
CERTIFICATE_EXPIRY = _spec(
    "S-certificate-expiry",
    Control.S,
    _H,
    "Certificates valid and not near expiry",
    "RFC 5280 §4.1.2.5",
    NIST,
    "RFC 5922",
)
FILE_PERMISSIONS = _spec(
    "S-file-permissions",
    Control.S,
    _H,
    "Private keys and databases readable by the owner only",
    "CWE-732",
    NIST,
)
CLIENT_CERTIFICATES = _spec(
    "A-client-certificates",
    Control.A,
    _L,
    "Client certificates checked against the CA",
    "RFC 5630",
    NIST,
    "RFC 5922",
    "RFC 5246 §7.4.6",
    "RFC 8446 §4.4.2.4",
)
DIGEST_MD5 = _spec(
    "A-digest-md5",
    Control.A,
    _H,
    "Digest with SHA-256, not MD5",
    "RFC 6151",
    "RFC 8760",
    NIST,
    "RFC 7616 §3.3",
    "RFC 3261 §22.4",
)
DIGEST_QOP = _spec(
    "A-digest-qop",
    Control.A,
    _M,
    "Digest challenges with qop=auth",
    "RFC 8760",
    "RFC 7616 §3.3",
)
NONCE_REUSE = _spec(
    "A-nonce-reuse",
    Control.A,
    _H,
    "A used nonce is not accepted again",
    "RFC 7616 §5.5",
    "RFC 8760",
    "RFC 7616 §3.3",
    "RFC 3261 §22.4",
)
WEAK_PASSWORD = _spec(
    "A-weak-password",
    Control.A,
    _C,
    "No user with a common or guessable password",
    "NIST SP 800-63B §5.1.1.2",
    NIST,
    "RFC 7616 §5",
)
USER_ENUMERATION = _spec(
    "A-user-enumeration",
    Control.A,
    _M,
    "Existing and unknown users answered alike",
    "CWE-203",
    "CWE-204",
    "CWE-208",
    "SIPVicious svwar",
    NIST,
)
UNAUTHENTICATED_CALL = _spec(
    "A-unauthenticated-call",
    Control.A,
    _C,
    "No call routed without authentication",
    NIST,
    "RFC 3261 §22.3",
    "CWE-306",
)
UNAUTHENTICATED_REGISTER = _spec(
    "A-unauthenticated-register",
    Control.A,
    _C,
    "No registration accepted without authentication",
    NIST,
    "RFC 3261 §10.3",
    "CWE-306",
)
SRTP_REQUIRED = _spec(
    "M-srtp-required",
    Control.M,
    _H,
    "SRTP required (RTP/AVP offers refused)",
    "RFC 3711",
    "RFC 4568",
    NIST,
)
RTP_BLEED = _spec(
    "M-rtp-bleed",
    Control.M,
    _H,
    "Media from an unlearned source not relayed",
    "CVE-2017-14099",
    "AST-2017-005",
    "AST-2017-008",
    "Enable Security RTP Bleed",
)
SRTP_JUNK = _spec(
    "M-srtp-junk",
    Control.M,
    _M,
    "Unauthenticated SRTP not forwarded",
    "RFC 3711 §3.3",
    "CVE-2017-14099",
)
ENDPOINT_POLICY = _spec(
    "E-endpoint-policy",
    Control.E,
    _H,
    "No device under a known advisory or in quarantine",
    NIST,
    "CISA KEV catalog",
)
IDS = _spec(
    "F-ids",
    Control.F,
    _H,
    "IDS and bans on",
    NIST,
    "RFC 3261 §26.1.5",
    "RFC 5390",
)
RATE_LIMIT = _spec(
    "F-rate-limit",
    Control.F,
    _M,
    "A burst of requests is limited",
    "RFC 5390",
    "RFC 3261 §26.3.2.4",
    "Kamailio pike",
    NIST,
)
INFO_LEAK = _spec(
    "F-info-leak",
    Control.F,
    _L,
    "No software versions or internal addresses disclosed",
    "RFC 3261 §20.35",
    "RFC 3323",
    "RFC 3261 §20.41",
    "SIPVicious svmap",
    "sippts",
)
AMPLIFICATION = _spec(
    "F-amplification",
    Control.F,
    _M,
    "UDP answers not larger than 3x the request",
    "RFC 3261 §18.1.1",
    "RFC 3261 §26.1.5",
    "RFC 9000 §8",
    "US-CERT TA14-017A",
)
FRAUD = _spec(
    "L-fraud",
    Control.L,
    _H,
    "Fraud detection on",
    NIST,
    "ITU-T E.409",
)
ALERTS = _spec(
    "L-alerts",
    Control.L,
    _L,
    "Alerts reach an administrator",
    NIST,
    "RFC 5424",
    "RFC 5425",
    "RFC 5426",
    "RFC 9110 §4.2.2",
)
METRICS_EXPOSURE = _spec(
    "L-metrics-exposure",
    Control.L,
    _H,
    "Metrics not exposed without a token or client certificate",
    "CWE-200",
    "RFC 6750",
    NIST,
)
TURN_PEER_FILTER = _spec(
    "O-turn-peer-filter",
    Control.O,
    _C,
    "TURN refuses internal peers",
    "CVE-2020-26262",
    "RFC 8656 §9",
    "RFC 8656 §21",
    "RFC 6890",
    NIST,
)
TRUSTED_ZONE = _spec(
    "W-trusted-zone",
    Control.W,
    _C,
    "No trusted zone covers public addresses",
    NIST,
    "RFC 6890",
    "RFC 6177",
)
DSCP = _spec(
    "W-dscp",
    Control.W,
    _L,
    "SIP and media marked with DSCP",
    "RFC 4594",
    "RFC 5865",
    "RFC 3246",
    "RFC 2474",
    NIST,
)

ALL_SPECS: tuple[CheckSpec, ...] = (
    PLAINTEXT_SIP,
    TLS_VERSION,
    TLS_CIPHERS,
    TLS_RENEGOTIATION,
    CERTIFICATE_EXPIRY,
    FILE_PERMISSIONS,
    CLIENT_CERTIFICATES,
    DIGEST_MD5,
    DIGEST_QOP,
    NONCE_REUSE,
    WEAK_PASSWORD,
    USER_ENUMERATION,
    UNAUTHENTICATED_CALL,
    UNAUTHENTICATED_REGISTER,
    SRTP_REQUIRED,
    RTP_BLEED,
    SRTP_JUNK,
    ENDPOINT_POLICY,
    IDS,
    RATE_LIMIT,
    INFO_LEAK,
    AMPLIFICATION,
    FRAUD,
    ALERTS,
    METRICS_EXPOSURE,
    TURN_PEER_FILTER,
    TRUSTED_ZONE,
    DSCP,
)

_BY_ID = {spec.id: spec for spec in ALL_SPECS}


def spec_by_id(check_id: str) -> CheckSpec:
    """The spec named ``check_id`` (KeyError for an unknown id)."""
    return _BY_ID[check_id]

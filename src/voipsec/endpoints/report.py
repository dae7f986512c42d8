"""The compliance report: every device of the inventory with its posture and what to do.

How this works: :func:`compliance_report` takes the inventory's rows
(:class:`~voipsec.records.DeviceRecord`), the advisories in use, the CA's certificate
records, the minimum firmware settings and ``now``, and returns one
:class:`DevicePosture` per device: firmware status (up to date, below the minimum,
affected by advisories with their CVE, CVSS, KEV mark and fixed version, or unknown),
client certificate (none, ok, expiring in N days, expired, revoked — one rule with the
CA's alerts: ``pki.lifecycle.validity_state``), TLS version, digest algorithm, the SRTP
its last INVITE offered, the policy's status and reasons, and the :class:`Finding`
list, each with what to do.

A device's severity is its gravest finding (issue 18 item 6):

* ``critical``: firmware under a KEV-listed advisory; an expired or revoked client
  certificate;
* ``high``: an advisory with CVSS >= 7.0 (or no CVSS published);
* ``medium``: an advisory with CVSS < 7.0; MD5 digest; certificate expiring within
  ``pki.expiry_warning_days``; firmware below ``endpoints.minimum_firmware`` (or
  unreadable where a minimum applies); an INVITE offer with a stream without SRTP
  (``srtp_suites`` holds ``none``);
* ``low``: unknown User-Agent; firmware version not named; TLS 1.2;
* ``ok``: none of these.

The firmware is judged again here against the advisories in use now (after an
``import-kev`` the report shows the new KEV mark at once, whereas the stored status is
what the policy decided at the device's last REGISTER). The ``voipsec devices report``
command formats this; the dashboard and the audit are to read the same function.

Sans-IO: rows, advisories, settings and time come in as arguments.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from ..pki.lifecycle import CertState, days_left, validity_state
from ..records import CertificateRecord, DeviceRecord
from .advisories import Advisory, matching
from .offer import NO_SUITE
from .policy import minimum_for
from .useragent import Device
from .versions import compare_versions, try_parse_version

__all__ = [
    "HIGH_CVSS",
    "SEVERITIES",
    "AdvisoryFinding",
    "DevicePosture",
    "Finding",
    "Severity",
    "compliance_report",
    "device_posture",
]

Severity = Literal["critical", "high", "medium", "low", "ok"]

#: From the gravest to none: the report's sections in this order.
SEVERITIES: tuple[Severity, ...] = ("critical", "high", "medium", "low", "ok")

#: CVSS from which an advisory is ``high``: the "High" band of CVSS v3.1 and v4.0
#: (FIRST's qualitative severity rating scale: 7.0-8.9 high, 9.0-10.0 critical).
HIGH_CVSS = 7.0


@dataclass(frozen=True, slots=True, kw_only=True)
class AdvisoryFinding:
    """One advisory a device's firmware falls under, as the report shows it."""

    id: str
    cves: tuple[str, ...]
    cvss: float | None
    kev: bool
    fixed: str | None
    last_affected: str | None
    summary: str
    source: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Finding:
    """One thing wrong with a device: its severity, which check, what and what to do."""

    severity: Severity
    check: str
    text: str
    action: str


@dataclass(frozen=True, slots=True, kw_only=True)
class DevicePosture:
    """One device of the report."""

    id: int
    user: str
    aor: str
    vendor: str
    model: str
    version: str
    user_agent: str
    #: ``up to date``, ``affected by advisories``, ``below minimum X``, ``version
    #: unknown`` or ``unknown device``.
    firmware: str
    advisories: tuple[AdvisoryFinding, ...]
    #: ``none``, ``ok``, ``expiring in N days``, ``expired`` or ``revoked``.
    certificate: str
    cert_serial: str
    cert_expiry: float | None
    transport: str
    tls_version: str
    digest_algorithm: str
    #: The SRTP its last INVITE offered (records.DeviceRecord.srtp_suites): suite
    #: names, ``dtls``, ``none``; "" before its first offer.
    srtp_suites: str
    #: The policy's status at the last REGISTER (``ok``, ``warn``, ``restricted``,
    #: ``refused``) and its reasons.
    status: str
    reasons: tuple[str, ...]
    last_seen: float
    findings: tuple[Finding, ...]

    @property
    def severity(self) -> Severity:
        """The gravest finding's severity, ``ok`` without findings."""
        return min((f.severity for f in self.findings), key=SEVERITIES.index, default="ok")

    @property
    def actions(self) -> tuple[str, ...]:
        """What to do, gravest first, each once."""
        ordered = sorted(self.findings, key=lambda f: SEVERITIES.index(f.severity))
        return tuple(dict.fromkeys(f.action for f in ordered))


def compliance_report(
    records: Sequence[DeviceRecord],
    *,
    advisories: Sequence[Advisory],
    now: float,
    warning_days: int,
    minimum_firmware: Mapping[str, str] | None = None,
    certificates: Sequence[CertificateRecord] = (),
) -> list[DevicePosture]:
    """Every device's posture, gravest severity first, then by user and id."""
    by_serial = {f"{c.serial:x}": c for c in certificates}
    postures = [
        device_posture(
            r,
            advisories=advisories,
            now=now,
            warning_days=warning_days,
            minimum_firmware=minimum_firmware or {},
            certificates=by_serial,
        )
        for r in records
    ]
    return sorted(postures, key=lambda p: (SEVERITIES.index(p.severity), p.user, p.id))


def device_posture(
    record: DeviceRecord,
    *,
    advisories: Sequence[Advisory],
    now: float,
    warning_days: int,
    minimum_firmware: Mapping[str, str],
    certificates: Mapping[str, CertificateRecord],
) -> DevicePosture:
    """One device's posture (``certificates``: the CA's records by serial, lower-case
    hex as the inventory keeps it)."""
    s = record.seen
    device = (
        Device(
            vendor=s.vendor,
            family="",
            model=s.model,
            version=s.version or None,
            kind="",
            fingerprint="",
        )
        if s.vendor
        else None
    )
    firmware, found, firmware_findings = _firmware(
        device, s.user_agent, advisories, minimum_firmware
    )
    certificate, cert_findings = _certificate(record, now, warning_days, certificates)
    return DevicePosture(
        id=record.id,
        user=s.user,
        aor=s.aor,
        vendor=s.vendor,
        model=s.model,
        version=s.version,
        user_agent=s.user_agent,
        firmware=firmware,
        advisories=tuple(_advisory_finding(a) for a in found),
        certificate=certificate,
        cert_serial=s.cert_serial,
        cert_expiry=s.cert_expiry,
        transport=s.transport,
        tls_version=s.tls_version,
        digest_algorithm=s.digest_algorithm,
        srtp_suites=record.srtp_suites,
        status=s.status,
        reasons=s.reasons,
        last_seen=s.time,
        findings=(
            *firmware_findings,
            *cert_findings,
            *_transport(s.tls_version, s.digest_algorithm),
            *_srtp(record.srtp_suites),
        ),
    )


def _advisory_finding(a: Advisory) -> AdvisoryFinding:
    return AdvisoryFinding(
        id=a.id,
        cves=a.cves,
        cvss=a.cvss,
        kev=a.kev,
        fixed=a.fixed,
        last_affected=a.last_affected,
        summary=a.summary,
        source=a.source,
    )


def _fix(a: Advisory) -> str:
    if a.fixed:
        return f"upgrade to {a.fixed}"
    if a.last_affected:
        return f"upgrade past {a.last_affected}"
    return "no fixed firmware published: replace or isolate the device"


def _advisory_severity(a: Advisory) -> Severity:
    if a.kev:
        return "critical"
    # No CVSS published counts as high: unknown is not reassuring.
    if a.cvss is None or a.cvss >= HIGH_CVSS:
        return "high"
    return "medium"


def _firmware(
    device: Device | None,
    user_agent: str,
    advisories: Sequence[Advisory],
    minimums: Mapping[str, str],
) -> tuple[str, list[Advisory], list[Finding]]:
    if device is None:
        shown = user_agent or "(none)"
        return (
            "unknown device",
            [],
            [
                Finding(
                    severity="low",
                    check="unknown_user_agent",
                    text=f"unknown User-Agent {shown}",
                    action="add a fingerprint to DIR/endpoints/fingerprints.yaml",
                )
            ],
        )
    findings: list[Finding] = []
    label = f"{device.vendor} {device.model}"
    if try_parse_version(device.version) is None:
        maybe = matching(device, advisories, unknown_version=True)
        ids = ", ".join(a.id for a in maybe)
        findings.append(
            Finding(
                severity="low",
                check="unknown_version",
                text=f"{label} names no readable firmware version"
                + (f"; may be affected by {ids}" if ids else ""),
                action="check the firmware version on the device",
            )
        )
        minimum = minimum_for(device, minimums)
        if minimum is not None:
            findings.append(
                Finding(
                    severity="medium",
                    check="below_minimum",
                    text=f"{label}: firmware unknown, minimum is {minimum}",
                    action=f"upgrade to at least {minimum}",
                )
            )
        return "version unknown", [], findings
    found = matching(device, advisories)
    for a in found:
        cves = ", ".join(a.cves) or a.id
        cvss = f"CVSS {a.cvss:g}" if a.cvss is not None else "no CVSS"
        kev = ", KEV" if a.kev else ""
        findings.append(
            Finding(
                severity=_advisory_severity(a),
                check="kev_advisory" if a.kev else "advisory",
                text=f"firmware {device.version} affected by {cves} ({cvss}{kev})",
                action=_fix(a),
            )
        )
    minimum = minimum_for(device, minimums)
    below = (
        minimum is not None
        and device.version is not None
        and compare_versions(device.version, minimum) < 0
    )
    if below:
        findings.append(
            Finding(
                severity="medium",
                check="below_minimum",
                text=f"firmware {device.version} below the minimum {minimum} for {label}",
                action=f"upgrade to at least {minimum}",
            )
        )
    if found:
        status = "affected by advisories"
    elif below:
        status = f"below minimum {minimum}"
    else:
        status = "up to date"
    return status, found, findings


def _certificate(
    record: DeviceRecord,
    now: float,
    warning_days: int,
    certificates: Mapping[str, CertificateRecord],
) -> tuple[str, list[Finding]]:
    s = record.seen
    if s.cert_expiry is None:
        return "none", []
    issued = certificates.get(s.cert_serial.lower())
    name = issued.name if issued is not None else s.user
    renew = f"renew the certificate: voipsec ca renew {name}"
    state = validity_state(
        not_after=s.cert_expiry,
        now=now,
        warning_days=warning_days,
        revoked=issued is not None and issued.revoked is not None,
    )
    if state is CertState.REVOKED:
        text = f"client certificate {s.cert_serial} revoked"
        return "revoked", [
            Finding(
                severity="critical",
                check="revoked_certificate",
                text=text,
                action=f"issue a new certificate: voipsec ca issue {name}",
            )
        ]
    if state is CertState.EXPIRED:
        text = f"client certificate {s.cert_serial} expired"
        return "expired", [
            Finding(severity="critical", check="expired_certificate", text=text, action=renew)
        ]
    if state is CertState.EXPIRING:
        days = days_left(s.cert_expiry, now)
        label = f"expiring in {days} {'day' if days == 1 else 'days'}"
        text = f"client certificate {s.cert_serial} {label}"
        return label, [
            Finding(severity="medium", check="expiring_certificate", text=text, action=renew)
        ]
    return "ok", []


def _srtp(suites: str) -> list[Finding]:
    """An offer with a media stream in the clear (``none``, endpoints/offer.py): its
    calls' audio is readable on every network it crosses (RFC 3711 §1)."""
    if NO_SUITE not in suites.split():
        return []
    text = "offered no SRTP" if suites == NO_SUITE else f"offered media without SRTP ({suites})"
    return [
        Finding(
            severity="medium",
            check="no_srtp_offer",
            text=text,
            action="enable SRTP (SDES a=crypto or DTLS-SRTP) on the device",
        )
    ]


def _transport(tls_version: str, digest_algorithm: str) -> list[Finding]:
    found: list[Finding] = []
    if digest_algorithm.upper().startswith("MD5"):
        # RFC 8760: SHA-256 digests for SIP; MD5 only for legacy (DESIGN.md).
        found.append(
            Finding(
                severity="medium",
                check="md5_digest",
                text=f"{digest_algorithm} digest",
                action="switch the phone to SHA-256 digest (RFC 8760)",
            )
        )
    if tls_version == "TLSv1.2":
        found.append(
            Finding(
                severity="low",
                check="tls12",
                text="TLS 1.2",
                action="enable TLS 1.3 on the phone (firmware or settings)",
            )
        )
    return found

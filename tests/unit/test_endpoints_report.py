"""The compliance report (voipsec.endpoints.report): each severity rule, what to do,
certificate states through pki.lifecycle, the ordering, and the Markdown/CSV/JSON
formats (voipsec.endpoints.report_format) with hostile inventory text."""

from __future__ import annotations

import csv
import io
import json

from voipsec.endpoints.advisories import Advisory
from voipsec.endpoints.report import (
    HIGH_CVSS,
    SEVERITIES,
    DevicePosture,
    Finding,
    compliance_report,
)
from voipsec.endpoints.report_format import CSV_FIELDS, report_csv, report_json, report_md
from voipsec.records import CertificateRecord, DeviceRecord, DeviceSighting

DAY = 86_400.0
NOW = 1_800_000_000.0

GXP = Advisory(
    id="CVE-2026-2329",
    vendor="Grandstream",
    models=("GXP16??",),
    cves=("CVE-2026-2329",),
    fixed="1.0.7.81",
    cvss=9.3,
    source="https://nvd.nist.gov/vuln/detail/CVE-2026-2329",
)
OLD_GXP = Advisory(
    id="CVE-2020-5738",
    vendor="Grandstream",
    models=("GXP16??",),
    cves=("CVE-2020-5738",),
    last_affected="1.0.4.152",
    cvss=6.5,
)
VVX = Advisory(
    id="CVE-2026-0826#vvx", vendor="Poly", models=("VVX*",), cves=("CVE-2026-0826",), cvss=None
)
ADVISORIES = (GXP, OLD_GXP, VVX)


def _record(id: int, user: str, srtp_suites: str = "", **more: object) -> DeviceRecord:
    base: dict[str, object] = {
        "user": user,
        "key": f"k{id}",
        "aor": f"{user}@example.org",
        "contact": f"sip:{user}@192.0.2.{id}:5061;transport=tls",
        "source": f"tls:192.0.2.{id}:5061",
        "zone": "internet",
        "transport": "tls",
        "tls_version": "TLSv1.3",
        "tls_cipher": "TLS_AES_256_GCM_SHA384",
        "digest_algorithm": "SHA-256",
        "user_agent": "baresip v3.10.0 (x86_64/linux)",
        "vendor": "baresip",
        "model": "baresip",
        "version": "3.10.0",
        "time": NOW - 60,
    }
    seen = DeviceSighting(**{**base, **more})  # type: ignore[arg-type]
    return DeviceRecord(
        id=id, seen=seen, first_seen=NOW - DAY, registrations=3, srtp_suites=srtp_suites
    )


def _gxp(id: int, user: str, version: str, **more: object) -> DeviceRecord:
    return _record(
        id,
        user,
        user_agent=f"Grandstream GXP1625 {version}",
        vendor="Grandstream",
        model="GXP1625",
        version=version,
        **more,
    )


def _one(record: DeviceRecord, **more: object) -> DevicePosture:
    args: dict[str, object] = {"advisories": ADVISORIES, "now": NOW, "warning_days": 30}
    (posture,) = compliance_report([record], **{**args, **more})  # type: ignore[arg-type]
    return posture


def test_report_up_to_date_device_is_ok() -> None:
    p = _one(_record(1, "alice"))
    assert (p.severity, p.firmware, p.certificate, p.findings, p.actions) == (
        "ok",
        "up to date",
        "none",
        (),
        (),
    )


def test_report_advisory_high_with_cve_cvss_and_fix() -> None:
    p = _one(_gxp(1, "bob", "1.0.7.40"))
    assert p.severity == "high"
    assert p.firmware == "affected by advisories"
    assert [(a.id, a.cvss, a.kev, a.fixed) for a in p.advisories] == [
        ("CVE-2026-2329", 9.3, False, "1.0.7.81")
    ]
    assert [(f.severity, f.check, f.text, f.action) for f in p.findings] == [
        (
            "high",
            "advisory",
            "firmware 1.0.7.40 affected by CVE-2026-2329 (CVSS 9.3)",
            "upgrade to 1.0.7.81",
        ),
    ]


def test_report_kev_advisory_is_critical() -> None:
    kev = Advisory(**{**{f: getattr(GXP, f) for f in GXP.__slots__}, "kev": True})  # type: ignore[arg-type]
    p = _one(_gxp(1, "bob", "1.0.7.40"), advisories=(kev,))
    assert p.severity == "critical"
    assert p.findings[0].text == "firmware 1.0.7.40 affected by CVE-2026-2329 (CVSS 9.3, KEV)"
    assert p.findings[0].check == "kev_advisory"


def test_report_advisory_below_high_cvss_is_medium_and_both_listed() -> None:
    p = _one(_gxp(1, "carol", "1.0.4.100"))
    assert [(f.severity, f.action) for f in p.findings] == [
        ("high", "upgrade to 1.0.7.81"),
        ("medium", "upgrade past 1.0.4.152"),
    ]
    assert p.severity == "high"
    assert OLD_GXP.cvss is not None and OLD_GXP.cvss < HIGH_CVSS


def test_report_advisory_without_cvss_or_fix_is_high() -> None:
    p = _one(
        _record(
            1,
            "dan",
            user_agent="PolycomVVX-VVX_450-UA/6.4.6.2546",
            vendor="Poly",
            model="VVX_450",
            version="6.4.6.2546",
        )
    )
    assert [(f.severity, f.text, f.action) for f in p.findings] == [
        (
            "high",
            "firmware 6.4.6.2546 affected by CVE-2026-0826 (no CVSS)",
            "no fixed firmware published: replace or isolate the device",
        ),
    ]


def test_report_fixed_version_is_up_to_date() -> None:
    assert _one(_gxp(1, "bob", "1.0.7.81")).firmware == "up to date"


def test_report_below_minimum_is_medium() -> None:
    p = _one(_gxp(1, "bob", "1.0.7.81"), minimum_firmware={"Grandstream/GXP16??": "1.0.7.90"})
    assert (p.severity, p.firmware) == ("medium", "below minimum 1.0.7.90")
    assert p.actions == ("upgrade to at least 1.0.7.90",)


def test_report_unknown_version_low_names_possible_advisories() -> None:
    p = _one(_gxp(1, "bob", ""))
    assert (p.severity, p.firmware) == ("low", "version unknown")
    assert p.findings[0].text == (
        "Grandstream GXP1625 names no readable firmware version; "
        "may be affected by CVE-2026-2329, CVE-2020-5738"
    )


def test_report_unknown_version_under_a_minimum_is_medium() -> None:
    p = _one(_gxp(1, "bob", ""), minimum_firmware={"Grandstream": "1.0"})
    assert p.severity == "medium"
    assert p.actions == ("upgrade to at least 1.0", "check the firmware version on the device")


def test_report_unknown_user_agent_is_low() -> None:
    p = _one(_record(1, "eve", user_agent="FooPhone 1", vendor="", model="", version=""))
    assert (p.severity, p.firmware) == ("low", "unknown device")
    assert [(f.text, f.action) for f in p.findings] == [
        ("unknown User-Agent FooPhone 1", "add a fingerprint to DIR/endpoints/fingerprints.yaml")
    ]


def test_report_md5_medium_and_tls12_low() -> None:
    p = _one(_record(1, "al", digest_algorithm="MD5", tls_version="TLSv1.2"))
    assert [(f.severity, f.check, f.action) for f in p.findings] == [
        ("medium", "md5_digest", "switch the phone to SHA-256 digest (RFC 8760)"),
        ("low", "tls12", "enable TLS 1.3 on the phone (firmware or settings)"),
    ]
    assert p.severity == "medium"


def _cert(
    serial: int, name: str, not_after: float, revoked: float | None = None
) -> CertificateRecord:
    return CertificateRecord(
        serial=serial,
        name=name,
        aor=f"{name}@example.org",
        not_after=not_after,
        revoked=revoked,
        issued=NOW - 100 * DAY,
    )


def test_report_certificate_ok_expiring_expired_with_ca_name() -> None:
    certs = [_cert(0xAB, "desk-phone", NOW + 5 * DAY)]
    ok = _one(_record(1, "al", cert_serial="ab", cert_expiry=NOW + 31 * DAY))
    soon = _one(_record(1, "al", cert_serial="ab", cert_expiry=NOW + 5 * DAY), certificates=certs)
    day = _one(_record(1, "al", cert_serial="cd", cert_expiry=NOW + DAY - 1))
    gone = _one(_record(1, "al", cert_serial="cd", cert_expiry=NOW - 1))
    assert (ok.severity, ok.certificate) == ("ok", "ok")
    assert (soon.severity, soon.certificate) == ("medium", "expiring in 5 days")
    assert soon.actions == ("renew the certificate: voipsec ca renew desk-phone",)
    assert day.certificate == "expiring in 1 day"
    assert (gone.severity, gone.certificate) == ("critical", "expired")
    # Not in the CA's records: the user names it.
    assert gone.actions == ("renew the certificate: voipsec ca renew al",)


def test_report_warning_days_bound() -> None:
    record = _record(1, "al", cert_serial="ab", cert_expiry=NOW + 30 * DAY)
    assert _one(record).certificate == "expiring in 30 days"
    assert _one(record, warning_days=29).certificate == "ok"


def test_report_revoked_certificate_is_critical() -> None:
    certs = [_cert(0xAB, "desk", NOW + 300 * DAY, revoked=NOW - DAY)]
    p = _one(_record(1, "al", cert_serial="ab", cert_expiry=NOW + 300 * DAY), certificates=certs)
    assert (p.severity, p.certificate) == ("critical", "revoked")
    assert p.actions == ("issue a new certificate: voipsec ca issue desk",)


def test_report_status_and_reasons_kept() -> None:
    reasons = ("firmware 1.0.7.40 affected by CVE-2026-2329; upgrade to 1.0.7.81",)
    p = _one(_gxp(1, "bob", "1.0.7.40", status="refused", reasons=reasons))
    assert (p.status, p.reasons) == ("refused", reasons)


def _mixed() -> list[DevicePosture]:
    return compliance_report(
        [
            _record(1, "zed"),
            _record(2, "amy", digest_algorithm="MD5"),
            _gxp(3, "bob", "1.0.7.40"),
            _record(4, "cy", cert_serial="1", cert_expiry=NOW - 1),
            _record(5, "al", tls_version="TLSv1.2"),
            _record(6, "ab", srtp_suites="AES_256_CM_HMAC_SHA1_80 AES_CM_128_HMAC_SHA1_80"),
        ],
        advisories=ADVISORIES,
        now=NOW,
        warning_days=30,
    )


def test_report_ordered_by_severity_then_user() -> None:
    assert [(p.severity, p.user) for p in _mixed()] == [
        ("critical", "cy"),
        ("high", "bob"),
        ("medium", "amy"),
        ("low", "al"),
        ("ok", "ab"),
        ("ok", "zed"),
    ]
    assert SEVERITIES == ("critical", "high", "medium", "low", "ok")


def test_report_no_srtp_offer_is_a_medium_finding() -> None:
    plain = _one(_record(1, "alice", srtp_suites="none"))
    assert (plain.severity, plain.srtp_suites, plain.findings) == (
        "medium",
        "none",
        (
            Finding(
                severity="medium",
                check="no_srtp_offer",
                text="offered no SRTP",
                action="enable SRTP (SDES a=crypto or DTLS-SRTP) on the device",
            ),
        ),
    )
    # An offer with one stream in the clear (video over RTP/AVP beside SRTP audio).
    mixed = _one(_record(2, "bob", srtp_suites="AES_CM_128_HMAC_SHA1_80 none"))
    assert [f.text for f in mixed.findings] == [
        "offered media without SRTP (AES_CM_128_HMAC_SHA1_80 none)"
    ]
    # SDES, DTLS-SRTP, or no INVITE seen yet: nothing to report.
    for suites in ("AES_CM_128_HMAC_SHA1_80", "dtls", ""):
        assert _one(_record(3, "carol", srtp_suites=suites)).findings == ()


def test_report_md_grouped_by_severity() -> None:
    text = report_md(_mixed(), now=NOW)
    lines = text.splitlines()
    assert lines[:3] == [
        "# Device compliance report",
        "",
        "2027-01-15 08:00 UTC: 6 devices — 1 critical, 1 high, 1 medium, 1 low, 2 ok",
    ]
    assert [line for line in lines if line.startswith("## ")] == [
        "## critical (1)",
        "## high (1)",
        "## medium (1)",
        "## low (1)",
        "## ok (2)",
    ]
    assert (
        "| 3 | bob | Grandstream GXP1625 1.0.7.40 | affected by advisories: CVE-2026-2329 "
        "(CVSS 9.3, fixed in 1.0.7.81) | none | TLSv1.3 | SHA-256 | not seen | ok "
        "| upgrade to 1.0.7.81 |"
    ) in lines
    assert (
        "| 6 | ab | baresip baresip 3.10.0 | up to date | none | TLSv1.3 | SHA-256 | "
        "AES\\_256\\_CM\\_HMAC\\_SHA1\\_80 AES\\_CM\\_128\\_HMAC\\_SHA1\\_80 | ok | nothing |"
        in lines
    )


def test_report_md_escapes_hostile_user_agent() -> None:
    postures = compliance_report(
        [
            _record(
                1,
                "eve",
                user_agent="x | y\n<b>`z`",
                vendor="",
                model="",
                version="",
                transport="udp",
                tls_version="",
                digest_algorithm="MD5",
            )
        ],
        advisories=(),
        now=NOW,
        warning_days=30,
    )
    row = report_md(postures, now=NOW).splitlines()[-1]
    assert row == (
        "| 1 | eve | x \\| y \\<b>\\`z\\` | unknown device | none | none (udp) | MD5 | not seen "
        "| ok | "
        "switch the phone to SHA-256 digest (RFC 8760); "
        "add a fingerprint to DIR/endpoints/fingerprints.yaml |"
    )


def test_report_json_round_trips_fields() -> None:
    data = json.loads(report_json(_mixed()))
    bob = data[1]
    assert (bob["severity"], bob["user"], bob["firmware"]) == (
        "high",
        "bob",
        "affected by advisories",
    )
    assert bob["advisories"] == [
        {
            "id": "CVE-2026-2329",
            "cves": ["CVE-2026-2329"],
            "cvss": 9.3,
            "kev": False,
            "fixed": "1.0.7.81",
            "last_affected": None,
            "summary": "",
            "source": "https://nvd.nist.gov/vuln/detail/CVE-2026-2329",
        }
    ]
    assert bob["actions"] == ["upgrade to 1.0.7.81"]


def test_report_csv_columns_and_formula_defused() -> None:
    postures = (
        compliance_report(
            [_record(1, "=cmd", vendor="", model="", version="", user_agent="@SUM(1)")],
            advisories=(),
            now=NOW,
            warning_days=30,
        )
        + _mixed()[1:2]
    )
    rows = list(csv.reader(io.StringIO(report_csv(postures))))
    assert tuple(rows[0]) == CSV_FIELDS
    first = dict(zip(CSV_FIELDS, rows[1], strict=True))
    assert (first["user"], first["user_agent"]) == ("'=cmd", "'@SUM(1)")
    bob = dict(zip(CSV_FIELDS, rows[2], strict=True))
    assert (bob["severity"], bob["cves"], bob["actions"]) == (
        "high",
        "CVE-2026-2329",
        "upgrade to 1.0.7.81",
    )
    assert bob["findings"] == "high: firmware 1.0.7.40 affected by CVE-2026-2329 (CVSS 9.3)"

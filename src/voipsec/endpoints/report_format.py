"""The compliance report as text: Markdown grouped by severity, JSON, CSV.

Pure functions of :func:`.report.compliance_report`'s postures (``voipsec devices
report`` prints them). Inventory text comes from the network (User-Agent), so the
Markdown escapes what would break a table (``|``, newlines, backquotes, ``<``) and
the CSV defuses spreadsheet formulas (a cell starting with ``= + - @`` gets a leading
``'``, OWASP "CSV injection").
"""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Sequence
from typing import Any

from .report import SEVERITIES, DevicePosture

__all__ = [
    "CSV_FIELDS",
    "FORMULA_STARTS",
    "REPORT_FORMATS",
    "csv_cell",
    "posture_fields",
    "report_csv",
    "report_json",
    "report_md",
]

REPORT_FORMATS = ("md", "json", "csv")

#: The CSV columns, in order (lists joined with " | ").
CSV_FIELDS = (
    "severity",
    "id",
    "user",
    "aor",
    "vendor",
    "model",
    "version",
    "user_agent",
    "firmware",
    "cves",
    "certificate",
    "cert_serial",
    "transport",
    "tls_version",
    "digest_algorithm",
    "srtp_suites",
    "status",
    "findings",
    "actions",
    "last_seen",
)


def posture_fields(p: DevicePosture) -> dict[str, Any]:
    """One device as JSON: every field, its severity, findings and actions."""
    return {
        "severity": p.severity,
        "id": p.id,
        "user": p.user,
        "aor": p.aor,
        "vendor": p.vendor,
        "model": p.model,
        "version": p.version,
        "user_agent": p.user_agent,
        "firmware": p.firmware,
        "advisories": [
            {
                "id": a.id,
                "cves": list(a.cves),
                "cvss": a.cvss,
                "kev": a.kev,
                "fixed": a.fixed,
                "last_affected": a.last_affected,
                "summary": a.summary,
                "source": a.source,
            }
            for a in p.advisories
        ],
        "certificate": p.certificate,
        "cert_serial": p.cert_serial,
        "cert_expiry": p.cert_expiry,
        "transport": p.transport,
        "tls_version": p.tls_version,
        "digest_algorithm": p.digest_algorithm,
        "srtp_suites": p.srtp_suites,
        "status": p.status,
        "reasons": list(p.reasons),
        "findings": [
            {"severity": f.severity, "check": f.check, "text": f.text, "action": f.action}
            for f in p.findings
        ],
        "actions": list(p.actions),
        "last_seen": p.last_seen,
    }


def report_json(postures: Sequence[DevicePosture]) -> str:
    return json.dumps([posture_fields(p) for p in postures], indent=2)


#: First characters a spreadsheet reads as the start of a formula (CSV injection).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: object) -> str:
    """A CSV cell that a spreadsheet shows as text: a device's User-Agent or contact
    starting like a formula (``=HYPERLINK(...)``) gets a leading apostrophe."""
    text = "" if value is None else str(value)
    if text[:1] in FORMULA_STARTS:
        return "'" + text
    return text


def report_csv(postures: Sequence[DevicePosture]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_FIELDS)
    for p in postures:
        row = posture_fields(p)
        row["cves"] = " | ".join(c for a in p.advisories for c in a.cves)
        row["findings"] = " | ".join(f"{f.severity}: {f.text}" for f in p.findings)
        row["actions"] = " | ".join(p.actions)
        writer.writerow([csv_cell(row[f]) for f in CSV_FIELDS])
    return out.getvalue()


def _md(text: str) -> str:
    cleaned = " ".join(text.split())
    for char in ("\\", "|", "`", "<", "*", "_", "[", "]"):
        cleaned = cleaned.replace(char, "\\" + char)
    return cleaned


def _device(p: DevicePosture) -> str:
    named = f"{p.vendor} {p.model} {p.version}".strip()
    return named or p.user_agent or "(no User-Agent)"


def _firmware(p: DevicePosture) -> str:
    if not p.advisories:
        return p.firmware
    parts = []
    for a in p.advisories:
        cvss = f"CVSS {a.cvss:g}" if a.cvss is not None else "no CVSS"
        kev = ", KEV" if a.kev else ""
        fixed = f", fixed in {a.fixed}" if a.fixed else ", no fix"
        parts.append(f"{', '.join(a.cves) or a.id} ({cvss}{kev}{fixed})")
    return f"{p.firmware}: " + "; ".join(parts)


def report_md(postures: Sequence[DevicePosture], *, now: float) -> str:
    """A Markdown report: a summary line, then one table per severity present."""
    counts = {s: sum(1 for p in postures if p.severity == s) for s in SEVERITIES}
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(now))
    lines = [
        "# Device compliance report",
        "",
        f"{when}: {len(postures)} devices — " + ", ".join(f"{counts[s]} {s}" for s in SEVERITIES),
    ]
    for severity in SEVERITIES:
        group = [p for p in postures if p.severity == severity]
        if not group:
            continue
        lines += [
            "",
            f"## {severity} ({len(group)})",
            "",
            "| id | user | device | firmware | certificate | TLS | digest | SRTP | status "
            "| what to do |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for p in group:
            cells = (
                str(p.id),
                p.user,
                _device(p),
                _firmware(p),
                p.certificate,
                p.tls_version or f"none ({p.transport})",
                p.digest_algorithm or "certificate",
                p.srtp_suites or "not seen",
                p.status,
                "; ".join(p.actions) or "nothing",
            )
            lines.append("| " + " | ".join(_md(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"

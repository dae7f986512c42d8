"""An audit report as text, JSON, Markdown or SARIF 2.1.0 (issue 19 item 1).

SARIF (OASIS SARIF 2.1.0, §3.27 result, §3.49 reportingDescriptor): one rule per check
that ran, one result per *problem*: a failed check (``kind`` ``fail``, ``level``
``error`` for critical and high, ``warning`` for medium, ``note`` for low) or one that
could not run (``kind`` ``open``: not proven either way, §3.27.9, with level ``none``,
§3.27.10). Passed and skipped checks are left out of the results, because GitHub code
scanning turns every result into an alert whatever its ``kind``; their count is in the
run's properties with the score. ``properties.security-severity`` carries a CVSS-like
number code scanning ranks by. Every result has one location with a relative URI, as
code scanning requires (an absolute one of another scheme than the checkout's is
refused): ``voipsec.toml`` for the local checks, the target percent-encoded into one
path segment (``sips%3A127.0.0.1%3A5061``) for live ones, which a logical location
names as written. Sans-IO: a report in, text out.
"""

from __future__ import annotations

import datetime
import json
from typing import Any
from urllib.parse import quote

from .model import CONTROL_TITLES, AuditReport, CheckResult, CheckSpec, Outcome, Severity

__all__ = ["FORMATS", "SARIF_SCHEMA", "render", "to_json", "to_markdown", "to_sarif", "to_text"]

FORMATS = ("text", "json", "md", "sarif")
SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
INFORMATION_URI = "https://github.com/voipsec/voipsec/blob/main/docs/audit.md"

_LEVELS = {
    Severity.CRITICAL: "error",
    Severity.HIGH: "error",
    Severity.MEDIUM: "warning",
    Severity.LOW: "note",
}
#: GitHub code scanning's ``security-severity`` (CVSS bands: 9+ critical, 7+ high...).
_SECURITY_SEVERITY = {
    Severity.CRITICAL: "9.5",
    Severity.HIGH: "8.0",
    Severity.MEDIUM: "5.5",
    Severity.LOW: "2.0",
}
_KINDS = {
    Outcome.PASSED: "pass",
    Outcome.FAILED: "fail",
    Outcome.SKIPPED: "notApplicable",
    Outcome.ERROR: "open",
}
_MARKS = {
    Outcome.PASSED: "ok",
    Outcome.FAILED: "FAIL",
    Outcome.SKIPPED: "skip",
    Outcome.ERROR: "ERROR",
}


def _when(started: float) -> str:
    return datetime.datetime.fromtimestamp(started, datetime.UTC).isoformat(timespec="seconds")


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{value:g} %"


def _one_line(text: str) -> str:
    """Control characters and newlines out (a target's header must not forge lines)."""
    return "".join(ch if ch.isprintable() else "?" for ch in text)


def to_text(report: AuditReport) -> str:
    """A terminal report: scores, then what failed with its fix, then the rest."""
    lines = [f"voipsec audit — overall score {_percent(report.overall)} ({_when(report.started)})"]
    for item in report.controls:
        if item.percent is None and not item.skipped:
            continue
        lines.append(
            f"  {item.control.value}  {CONTROL_TITLES[item.control]:<34}"
            f" {_percent(item.percent):>8}"
            f"  {item.passed} passed, {item.failed} failed, {item.skipped} skipped"
        )
    ordered = sorted(
        report.results, key=lambda r: (r.outcome is Outcome.PASSED, r.outcome is Outcome.SKIPPED)
    )
    for result in ordered:
        lines.append(
            f"{_MARKS[result.outcome]:<5} {result.spec.id} [{result.spec.severity.value}]"
            f" {result.target}: {_one_line(result.observed)}"
        )
        if result.fix:
            lines.append(f"      fix: {_one_line(result.fix)}")
    return "\n".join(lines) + "\n"


def _result_dict(result: CheckResult) -> dict[str, Any]:
    return {
        "id": result.spec.id,
        "control": result.spec.control.value,
        "severity": result.spec.severity.value,
        "title": result.spec.title,
        "target": result.target,
        "outcome": result.outcome.value,
        "observed": result.observed,
        "fix": result.fix,
    }


def report_dict(report: AuditReport) -> dict[str, Any]:
    """The report as plain data (the JSON format, and what the dashboard reads)."""
    return {
        "started": _when(report.started),
        "score": report.overall,
        "targets": list(report.targets),
        "controls": {
            c.control.value: {
                "title": CONTROL_TITLES[c.control],
                "score": c.percent,
                "passed": c.passed,
                "failed": c.failed,
                "skipped": c.skipped,
            }
            for c in report.controls
        },
        "results": [_result_dict(r) for r in report.results],
    }


def to_json(report: AuditReport) -> str:
    """JSON (sorted keys kept in insertion order: ids, then results)."""
    return json.dumps(report_dict(report), indent=2) + "\n"


#: Characters a Markdown renderer would read as HTML, code, a cell's end or an escape
#: in a table cell; the text comes from targets (a Server header, a certificate name)
#: and must stay text, and a fix line must render as the command it is (its ``\"``
#: would render as ``"`` unless the backslash is escaped: CommonMark §2.4).
_MD_ESCAPES = str.maketrans(
    {"&": "&amp;", "<": "&lt;", ">": "&gt;", "`": "&#96;", "|": "\\|", "\\": "\\\\"}
)


def _cell(text: str) -> str:
    """``text`` as one Markdown table cell: one line, HTML, code spans, pipes and
    backslashes escaped."""
    return _one_line(text).translate(_MD_ESCAPES)


def to_markdown(report: AuditReport) -> str:
    """Markdown: a score table per control, then every result."""
    out = [
        "# voipsec audit",
        "",
        f"Overall score: **{_percent(report.overall)}** ({_when(report.started)})",
        "",
        "| control | title | score | passed | failed | skipped |",
        "|---|---|---|---|---|---|",
    ]
    for c in report.controls:
        out.append(
            f"| {c.control.value} | {CONTROL_TITLES[c.control]} | {_percent(c.percent)} |"
            f" {c.passed} | {c.failed} | {c.skipped} |"
        )
    out += [
        "",
        "| result | check | severity | target | observed | fix |",
        "|---|---|---|---|---|---|",
    ]
    for r in report.results:
        out.append(
            f"| {_MARKS[r.outcome]} | {r.spec.id} | {r.spec.severity.value} | {_cell(r.target)} |"
            f" {_cell(r.observed)} | {_cell(r.fix)} |"
        )
    return "\n".join(out) + "\n"


def _rule(spec: CheckSpec) -> dict[str, Any]:
    return {
        "id": spec.id,
        "name": spec.id.replace("-", " ").title().replace(" ", ""),
        "shortDescription": {"text": spec.title},
        "helpUri": f"{INFORMATION_URI}#{spec.id.lower()}",
        "defaultConfiguration": {"level": _LEVELS[spec.severity]},
        "properties": {
            "control": spec.control.value,
            "severity": spec.severity.value,
            "security-severity": _SECURITY_SEVERITY[spec.severity],
            "references": list(spec.references),
            "tags": ["security", f"SAME-FLOW-{spec.control.value}"],
        },
    }


def _location(target: str) -> dict[str, Any]:
    """One location with a relative URI (module docstring)."""
    if target == "local":
        return {"physicalLocation": {"artifactLocation": {"uri": "voipsec.toml"}}}
    return {
        "physicalLocation": {"artifactLocation": {"uri": quote(target, safe="")}},
        "logicalLocations": [{"fullyQualifiedName": target, "kind": "resource"}],
    }


def to_sarif(report: AuditReport, version: str) -> str:
    """A SARIF 2.1.0 log with one run (module docstring)."""
    specs: dict[str, CheckSpec] = {}
    for r in report.results:
        specs.setdefault(r.spec.id, r.spec)
    index = {spec_id: i for i, spec_id in enumerate(specs)}
    results = []
    for r in report.results:
        if r.outcome not in (Outcome.FAILED, Outcome.ERROR):
            continue
        text = r.observed if not r.fix else f"{r.observed} Fix: {r.fix}"
        results.append(
            {
                "ruleId": r.spec.id,
                "ruleIndex": index[r.spec.id],
                "kind": _KINDS[r.outcome],
                "level": _LEVELS[r.spec.severity] if r.outcome is Outcome.FAILED else "none",
                "message": {"text": _one_line(text) or r.spec.title},
                "locations": [_location(r.target)],
                "properties": {"target": r.target, "control": r.spec.control.value},
            }
        )
    counts = {
        outcome.value: sum(r.outcome is outcome for r in report.results) for outcome in Outcome
    }
    log = {
        "$schema": SARIF_SCHEMA,
        "version": "2.1.0",
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": "voipsec-audit",
                        "version": version,
                        "informationUri": INFORMATION_URI,
                        "rules": [_rule(spec) for spec in specs.values()],
                    }
                },
                "invocations": [
                    {
                        "executionSuccessful": True,
                        "startTimeUtc": _when(report.started).replace("+00:00", "Z"),
                    }
                ],
                "results": results,
                "properties": {
                    "score": report.overall,
                    "targets": list(report.targets),
                    "outcomes": counts,
                },
            }
        ],
    }
    return json.dumps(log, indent=2) + "\n"


def render(report: AuditReport, fmt: str, version: str) -> str:
    """``report`` in ``fmt`` (one of :data:`FORMATS`)."""
    if fmt == "json":
        return to_json(report)
    if fmt == "md":
        return to_markdown(report)
    if fmt == "sarif":
        return to_sarif(report, version)
    return to_text(report)

"""The audit report's formats (audit/report.py): exact text and Markdown, JSON as data, and
SARIF validated against the SARIF 2.1.0 schema and code scanning's URI rules."""

from __future__ import annotations

import json

import pytest

from tests.sarifcheck import validated
from voipsec.audit.model import (
    AuditReport,
    CheckSpec,
    Control,
    Severity,
    errored,
    failed,
    passed,
    score,
    skipped,
)
from voipsec.audit.report import FORMATS, render, to_markdown, to_sarif, to_text

TLS = CheckSpec(
    id="S-tls-version",
    control=Control.S,
    severity=Severity.HIGH,
    title="TLS 1.2 or newer only",
    references=("RFC 8996",),
)
TURN = CheckSpec(
    id="O-turn-peer-filter",
    control=Control.O,
    severity=Severity.CRITICAL,
    title="TURN refuses internal peers",
)
LEAK = CheckSpec(
    id="F-info-leak", control=Control.F, severity=Severity.LOW, title="No versions disclosed"
)
JUNK = CheckSpec(
    id="M-srtp-junk", control=Control.M, severity=Severity.MEDIUM, title="No SRTP junk relayed"
)
FIX = "voipsec config set turn.allowed_peers '[]'"


def _report() -> AuditReport:
    results = [
        passed(TLS, "local", "tls.min_version = 1.2"),
        failed(TURN, "turn:[::1]:3478", "granted: 10.0.0.1 | 127.0.0.1", FIX),
        skipped(JUNK, "sips:127.0.0.1:5061", "no test user"),
        errored(LEAK, "sips:127.0.0.1:5061", "no answer\nServer: forged"),
    ]
    return score(results, started=0.0, targets=["local", "sips:127.0.0.1:5061", "turn:[::1]:3478"])


def test_report_text_exact() -> None:
    assert to_text(_report()) == (
        "voipsec audit — overall score 31.2 % (1970-01-01T00:00:00+00:00)\n"
        "  S  SIPS signaling                        100 %  1 passed, 0 failed, 0 skipped\n"
        "  M  media encryption                        n/a  0 passed, 0 failed, 1 skipped\n"
        "  F  firewall and SBC                        0 %  0 passed, 1 failed, 0 skipped\n"
        "  O  overlays and NAT                        0 %  0 passed, 1 failed, 0 skipped\n"
        "FAIL  O-turn-peer-filter [critical] turn:[::1]:3478: granted: 10.0.0.1 | 127.0.0.1\n"
        f"      fix: {FIX}\n"
        "ERROR F-info-leak [low] sips:127.0.0.1:5061: no answer?Server: forged\n"
        "skip  M-srtp-junk [medium] sips:127.0.0.1:5061: no test user\n"
        "ok    S-tls-version [high] local: tls.min_version = 1.2\n"
    )


def test_report_markdown_exact() -> None:
    assert to_markdown(_report()) == (
        "# voipsec audit\n"
        "\n"
        "Overall score: **31.2 %** (1970-01-01T00:00:00+00:00)\n"
        "\n"
        "| control | title | score | passed | failed | skipped |\n"
        "|---|---|---|---|---|---|\n"
        "| S | SIPS signaling | 100 % | 1 | 0 | 0 |\n"
        "| A | authentication and authorization | n/a | 0 | 0 | 0 |\n"
        "| M | media encryption | n/a | 0 | 0 | 1 |\n"
        "| E | endpoint security | n/a | 0 | 0 | 0 |\n"
        "| F | firewall and SBC | 0 % | 0 | 1 | 0 |\n"
        "| L | logging and monitoring | n/a | 0 | 0 | 0 |\n"
        "| O | overlays and NAT | 0 % | 0 | 1 | 0 |\n"
        "| W | segmented network and QoS | n/a | 0 | 0 | 0 |\n"
        "\n"
        "| result | check | severity | target | observed | fix |\n"
        "|---|---|---|---|---|---|\n"
        "| ok | S-tls-version | high | local | tls.min_version = 1.2 |  |\n"
        "| FAIL | O-turn-peer-filter | critical | turn:[::1]:3478 |"
        f" granted: 10.0.0.1 \\| 127.0.0.1 | {FIX} |\n"
        "| skip | M-srtp-junk | medium | sips:127.0.0.1:5061 | no test user |  |\n"
        "| ERROR | F-info-leak | low | sips:127.0.0.1:5061 | no answer?Server: forged |  |\n"
    )


def test_report_json_is_the_data() -> None:
    data = json.loads(render(_report(), "json", "0.1.0"))
    assert (data["started"], data["score"]) == ("1970-01-01T00:00:00+00:00", 31.2)
    assert data["targets"] == ["local", "sips:127.0.0.1:5061", "turn:[::1]:3478"]
    assert data["controls"]["S"] == {
        "title": "SIPS signaling",
        "score": 100.0,
        "passed": 1,
        "failed": 0,
        "skipped": 0,
    }
    assert data["controls"]["A"]["score"] is None
    assert data["results"][1] == {
        "id": "O-turn-peer-filter",
        "control": "O",
        "severity": "critical",
        "title": "TURN refuses internal peers",
        "target": "turn:[::1]:3478",
        "outcome": "failed",
        "observed": "granted: 10.0.0.1 | 127.0.0.1",
        "fix": FIX,
    }
    assert [r["outcome"] for r in data["results"]] == ["passed", "failed", "skipped", "error"]


def test_report_sarif_validates_with_problems_only() -> None:
    log = validated(to_sarif(_report(), "0.1.0"))
    [run] = log["runs"]
    assert [rule["id"] for rule in run["tool"]["driver"]["rules"]] == [
        "S-tls-version",
        "O-turn-peer-filter",
        "M-srtp-junk",
        "F-info-leak",
    ]
    assert run["tool"]["driver"]["rules"][1]["properties"]["security-severity"] == "9.5"
    assert [(r["ruleId"], r["ruleIndex"], r["kind"], r["level"]) for r in run["results"]] == [
        ("O-turn-peer-filter", 1, "fail", "error"),
        ("F-info-leak", 3, "open", "none"),
    ]
    failed_result, error_result = run["results"]
    assert failed_result["message"]["text"] == f"granted: 10.0.0.1 | 127.0.0.1 Fix: {FIX}"
    assert failed_result["locations"] == [
        {
            "physicalLocation": {"artifactLocation": {"uri": "turn%3A%5B%3A%3A1%5D%3A3478"}},
            "logicalLocations": [{"fullyQualifiedName": "turn:[::1]:3478", "kind": "resource"}],
        }
    ]
    assert error_result["message"]["text"] == "no answer?Server: forged"
    assert run["properties"] == {
        "score": 31.2,
        "targets": ["local", "sips:127.0.0.1:5061", "turn:[::1]:3478"],
        "outcomes": {"passed": 1, "failed": 1, "skipped": 1, "error": 1},
    }
    assert run["invocations"][0]["startTimeUtc"] == "1970-01-01T00:00:00Z"


def test_report_sarif_local_failure_points_at_voipsec_toml() -> None:
    report = score([failed(TLS, "local", "tls.min_version = 1.0", "fix")], started=0.0)
    [result] = validated(to_sarif(report, "0.1.0"))["runs"][0]["results"]
    assert result["locations"] == [
        {"physicalLocation": {"artifactLocation": {"uri": "voipsec.toml"}}}
    ]


def test_report_sarif_of_nothing_validates() -> None:
    log = validated(to_sarif(score([], started=0.0), "0.1.0"))
    assert (log["runs"][0]["results"], log["runs"][0]["tool"]["driver"]["rules"]) == ([], [])


def test_report_sarif_checker_catches_schema_and_uri_faults() -> None:
    log = json.loads(to_sarif(_report(), "0.1.0"))
    log["runs"][0]["results"][0]["level"] = "fatal"
    log["runs"][0]["results"][1]["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] = (
        "turn:[::1]:3478"
    )
    with pytest.raises(AssertionError) as caught:
        validated(json.dumps(log))
    message = str(caught.value)
    assert "runs/0/results/0/level: 'fatal' is not one of" in message
    assert "F-info-leak: 'turn:[::1]:3478' is not a relative URI" in message


def test_report_render_every_format() -> None:
    assert FORMATS == ("text", "json", "md", "sarif")
    report = _report()
    assert render(report, "text", "x") == to_text(report)
    assert render(report, "md", "x") == to_markdown(report)
    assert render(report, "sarif", "x") == to_sarif(report, "x")


def test_report_markdown_cells_escape_html_code_and_pipes() -> None:
    hostile = failed(
        TLS, "sips:h:5061", "Server: <img src=x onerror=alert(1)> & `rm` | x", "a && b"
    )
    report = score([hostile], started=0.0, targets=["sips:h:5061"])
    row = [line for line in to_markdown(report).splitlines() if "onerror" in line]
    assert row == [
        "| FAIL | S-tls-version | high | sips:h:5061 | Server: &lt;img src=x onerror=alert(1)&gt;"
        " &amp; &#96;rm&#96; \\| x | a &amp;&amp; b |"
    ]


def test_report_markdown_cells_escape_backslashes() -> None:
    """Review 3 #6: a fix line's backslashes survive rendering (escaped, doubled)."""
    fix = 'voipsec config set metrics.token "\\"$(openssl rand -hex 32)\\""'
    report = score([failed(TLS, "local", "a\\|b", fix)], started=0.0, targets=["local"])
    row = [line for line in to_markdown(report).splitlines() if "openssl" in line]
    assert row == [
        "| FAIL | S-tls-version | high | local | a\\\\\\|b |"
        ' voipsec config set metrics.token "\\\\"$(openssl rand -hex 32)\\\\"" |'
    ]

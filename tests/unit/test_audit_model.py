"""The audit's model: results per check and place, and the weighted scores (audit/model.py)."""

from __future__ import annotations

from voipsec.audit.model import (
    WEIGHTS,
    CheckSpec,
    Control,
    ControlScore,
    Outcome,
    Severity,
    errored,
    failed,
    passed,
    score,
    skipped,
)

TLS = CheckSpec(id="S-tls-version", control=Control.S, severity=Severity.HIGH, title="TLS")
PLAIN = CheckSpec(id="S-plaintext-sip", control=Control.S, severity=Severity.HIGH, title="plain")
TURN = CheckSpec(id="O-turn-peer-filter", control=Control.O, severity=Severity.CRITICAL, title="t")
LEAK = CheckSpec(id="F-info-leak", control=Control.F, severity=Severity.LOW, title="leak")
JUNK = CheckSpec(id="M-srtp-junk", control=Control.M, severity=Severity.MEDIUM, title="junk")


def test_model_weights_critical_counts_ten_low() -> None:
    assert [WEIGHTS[s] for s in Severity] == [10, 5, 3, 1]


def test_model_score_of_nothing_is_full() -> None:
    report = score([], started=1.0)
    assert (report.overall, report.results, report.targets) == (100.0, (), ())
    assert all(c.percent is None for c in report.controls)
    assert [c.control for c in report.controls] == list(Control)


def test_model_score_weighs_severities_and_counts_errors_against() -> None:
    results = [
        passed(TLS, "local", "1.2"),
        failed(PLAIN, "local", "udp:127.0.0.1:5060", "voipsec config set sip.listen '[]'"),
        failed(TURN, "turn:127.0.0.1:3478", "granted: 10.0.0.1", "fix"),
        errored(LEAK, "sips:127.0.0.1:5061", "no answer"),
        skipped(JUNK, "sips:127.0.0.1:5061", "no test user"),
    ]
    report = score(results, started=5.0, targets=["local", "sips:127.0.0.1:5061"])
    # 5 won of 5 + 5 + 10 + 1 (the skipped medium check is left out).
    assert report.overall == 23.8
    by = {c.control: c for c in report.controls}
    assert by[Control.S] == ControlScore(
        control=Control.S, passed=1, failed=1, skipped=0, percent=50.0
    )
    assert by[Control.O] == ControlScore(
        control=Control.O, passed=0, failed=1, skipped=0, percent=0.0
    )
    assert by[Control.F].failed == 1 and by[Control.F].percent == 0.0
    assert by[Control.M] == ControlScore(
        control=Control.M, passed=0, failed=0, skipped=1, percent=None
    )
    assert by[Control.A].percent is None
    assert [r.spec.id for r in report.failures()] == [
        "S-plaintext-sip",
        "O-turn-peer-filter",
        "F-info-leak",
    ]
    assert report.targets == ("local", "sips:127.0.0.1:5061")


def test_model_only_skipped_scores_full() -> None:
    report = score([skipped(JUNK, "local", "n/a")], started=0.0)
    assert report.overall == 100.0


def test_model_helpers_set_outcome_and_fix() -> None:
    assert passed(TLS, "local", "ok").fix == ""
    assert failed(TLS, "local", "1.0", "fix it").outcome is Outcome.FAILED
    assert skipped(TLS, "local", "why").outcome is Outcome.SKIPPED
    assert errored(TLS, "local", "why").outcome is Outcome.ERROR


def test_audit_model_fixes_name_the_data_directory() -> None:
    """Review 3 #8: every voipsec command of an own installation's fix gets --dir DIR
    (shell-quoted); voipsec init (which names it already), prose and others do not."""
    from voipsec.audit.model import with_data_dir

    fixes = [
        "voipsec config set media.dscp 46",
        "voipsec user remove bob && voipsec user add bob --class national",
        'voipsec config set alerts.webhook "\\"$(voipsec config get alerts.webhook | sed x)\\""',
        "device 1: voipsec devices show 1; voipsec devices report",
        "rm /d/tls/server.crt && voipsec init --dir /d",
        "voipsec config set --dir /d sip.dscp 24",
        "chmod 600 /d/voipsec.db",
        "the CA cannot be renewed in place: voipsec init a new data directory",
    ]
    results = [failed(PLAIN, "local", "x", f) for f in fixes] + [passed(PLAIN, "local", "ok")]
    assert [r.fix for r in with_data_dir(results, "/my data")] == [
        "voipsec config set --dir '/my data' media.dscp 46",
        "voipsec user remove --dir '/my data' bob && "
        "voipsec user add --dir '/my data' bob --class national",
        "voipsec config set --dir '/my data' alerts.webhook "
        '"\\"$(voipsec config get --dir \'/my data\' alerts.webhook | sed x)\\""',
        "device 1: voipsec devices show --dir '/my data' 1; "
        "voipsec devices report --dir '/my data'",
        "rm /d/tls/server.crt && voipsec init --dir /d",
        "voipsec config set --dir /d sip.dscp 24",
        "chmod 600 /d/voipsec.db",
        "the CA cannot be renewed in place: voipsec init a new data directory",
        "",
    ]

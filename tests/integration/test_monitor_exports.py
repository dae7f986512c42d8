"""Monitoring exports: HEP to sngrep and tshark, /metrics, CDRs and fraud counters
after kill -9, and the SIP log (split from test_monitor.py so the two halves run in
parallel; the helpers live there)."""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.test_monitor import (
    ALICE,
    BENCH,
    DOMAIN,
    HEP_KEY,
    NATIONAL,
    SIPP_TIMEOUT,
    _alerts,
    _assert_clean,
    _b_leg_call_ids,
    _call,
    _calling,
    _cdrs,
    _listening,
    _outcomes,
    _prepare,
    _sngrep_collector,
    _trunk,
    _tshark_sip,
    _udp_unread,
    _wait_cdrs,
)
from tests.peers.metrics import Samples, get_metrics, scrape
from tests.peers.proc import free_port, wait_for
from tests.peers.sipp import SippResult, run_sipp, write_csv
from tests.peers.stunnel import stunnel_client
from tests.peers.voipsec import VoipsecServer, serving

pytestmark = pytest.mark.peers


@dataclass(frozen=True, slots=True, kw_only=True)
class ExportedCall:
    """One call through a server exporting HEP to sngrep and writing DATA/sip.log."""

    caller: SippResult
    trunk: SippResult
    #: (Call-ID, method or status) of each SIP message tshark found in sngrep's pcap.
    hep_rows: list[tuple[str, str]]
    #: DATA/sip.log once voipsec has stopped, and its file mode.
    sip_log: str
    sip_log_mode: int
    #: The caller's workdir (SIPp's own message trace is under sipp-caller/).
    workdir: Path


@pytest.fixture(scope="module")
def exported_call(tmp_path_factory: pytest.TempPathFactory) -> ExportedCall:
    """One call with hep.target and siplog.enabled both set.

    Module scope: the HEP test and the SIP log test read different exports of the same
    call (neither export changes the other), so one server, trunk and caller serve both.
    """
    tmp_path = tmp_path_factory.mktemp("exported_call")
    dialled, _ = NATIONAL
    tls_port = free_port()
    with _sngrep_collector(tmp_path / "sngrep", HEP_KEY) as (hep_port, pcap):
        settings = [
            ("hep.target", f'"udp:127.0.0.1:{hep_port}"'),
            ("hep.auth_key", json.dumps(HEP_KEY)),
            ("siplog.enabled", "true"),
        ]
        prepared = _prepare(tmp_path, trunk_port=tls_port, settings=settings)
        with (
            serving(prepared) as server,
            _trunk(server, tmp_path, tls_port, calls=1) as trunk_run,
        ):
            caller = _call(server, tmp_path / "call", dialled)
            trunk = trunk_run.wait(SIPP_TIMEOUT)
            _assert_clean(caller, 1, "caller", server)
            _assert_clean(trunk, 1, "trunk", server)
            _wait_cdrs(server, 1)
        # voipsec has stopped (its last packets are sent); sngrep has read them all.
        wait_for(lambda: _udp_unread(hep_port) == 0, what="sngrep to read its socket")
    # voipsec has stopped: everything it logged is in the file.
    path = server.data_dir / "sip.log"
    return ExportedCall(
        caller=caller,
        trunk=trunk,
        hep_rows=_tshark_sip(pcap),
        sip_log=path.read_text(encoding="utf-8"),
        sip_log_mode=path.stat().st_mode & 0o777,
        workdir=tmp_path / "call",
    )


def test_hep_export_to_sngrep_tshark_reads_both_legs(exported_call: ExportedCall) -> None:
    """One call with hep.target set: sngrep (checking the auth key) unwraps voipsec's
    HEP packets, and tshark finds the SIP of both legs by their Call-IDs."""
    (a_leg,) = _outcomes(exported_call.caller)
    (b_leg,) = _b_leg_call_ids(exported_call.trunk)
    rows = exported_call.hep_rows
    by_call: dict[str, set[str]] = {}
    for call_id, what in rows:
        by_call.setdefault(call_id, set()).add(what)
    assert set(by_call) == {a_leg, b_leg}, rows
    # The A-leg: the challenge and the call (INVITE 407 ACK, INVITE 200, BYE 200).
    assert {"INVITE", "407", "ACK", "200", "BYE"} <= by_call[a_leg], rows
    assert {"INVITE", "200", "ACK", "BYE"} <= by_call[b_leg], rows


# -- /metrics -------------------------------------------------------------------------

METRICS_TOKEN = "metrics-token-7f3a9c"


def _scrape(server: VoipsecServer, port: int) -> Samples:
    """Every sample of /metrics (with the token), parsed by prometheus_client."""
    return scrape(port, server.ca, METRICS_TOKEN)


def _value(samples: Samples, name: str, **labels: str) -> float:
    """A sample's value; 0.0 for a labelled series not yet created."""
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def _metrics_server(tmp_path: Path, trunk_port: int) -> tuple[VoipsecServer, int]:
    port = free_port()
    settings = [
        ("metrics.listen", f'"127.0.0.1:{port}"'),
        ("metrics.token", json.dumps(METRICS_TOKEN)),
    ]
    return _prepare(tmp_path, trunk_port=trunk_port, settings=settings), port


def _register_wrong_password(server: VoipsecServer, workdir: Path) -> SippResult:
    """alice REGISTERs with a wrong password once (the scenario expects the refusal)."""
    hop = free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    inf = write_csv(workdir / "register.csv", [(ALICE[0], ALICE[1], DOMAIN)])
    with stunnel_client(hop, server.host, server.port, server.ca, workdir / "stunnel"):
        return run_sipp(
            BENCH / "register_wrong_password.xml",
            f"127.0.0.1:{hop}",
            workdir=workdir / "sipp",
            inf_csv=inf,
            calls=1,
            extra=["-auth_uri", DOMAIN],
            timeout=SIPP_TIMEOUT,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class MetricsRun:
    """/metrics of one server: without a token and with a wrong one (statuses), then
    scraped before CALLS calls, after them and after one wrong-password REGISTER."""

    unauthorized: tuple[int, int]
    before: Samples
    after_calls: Samples
    after_register: Samples


#: The calls of the metrics run.
CALLS = 3


@pytest.fixture(scope="module")
def metrics_run(tmp_path_factory: pytest.TempPathFactory) -> MetricsRun:
    """Module scope: the tests below read different series of the same run (the calls
    move the call counters, the REGISTER after them moves the issue-7 ones), so one
    server, trunk and caller serve all of them."""
    tmp_path = tmp_path_factory.mktemp("metrics_run")
    dialled, _ = NATIONAL
    tls_port = free_port()
    prepared, port = _metrics_server(tmp_path, tls_port)
    with (
        serving(prepared) as server,
        _trunk(server, tmp_path, tls_port, calls=CALLS) as trunk_run,
    ):
        wait_for(lambda: _listening(port), deadline=10, what="the metrics port")
        unauthorized = (
            get_metrics(port, server.ca, None)[0],
            get_metrics(port, server.ca, "not-the-token")[0],
        )
        before = _scrape(server, port)
        caller = _call(server, tmp_path / "calls", dialled, calls=CALLS)
        _assert_clean(caller, CALLS, "caller", server)
        _assert_clean(trunk_run.wait(SIPP_TIMEOUT), CALLS, "trunk", server)
        _wait_cdrs(server, CALLS)
        after_calls = _scrape(server, port)
        refused = _register_wrong_password(server, tmp_path / "register")
        assert (refused.successful, refused.failed) == (1, 0), refused.error_tail()
        after_register = _scrape(server, port)
    return MetricsRun(
        unauthorized=unauthorized,
        before=before,
        after_calls=after_calls,
        after_register=after_register,
    )


def test_metrics_parse_and_counters_move_with_the_calls(metrics_run: MetricsRun) -> None:
    """/metrics over TLS with the bearer token parses with prometheus_client; N calls
    move the call counters by exactly N; a wrong password moves the auth failures;
    no token or a wrong one gets 401."""
    calls = CALLS
    assert metrics_run.unauthorized == (401, 401)
    before, after_calls = metrics_run.before, metrics_run.after_calls
    after_register = metrics_run.after_register

    def moved(name: str, old: Samples, new: Samples, **labels: str) -> float:
        return _value(new, name, **labels) - _value(old, name, **labels)

    assert moved("voipsec_calls_started_total", before, after_calls) == calls
    assert moved("voipsec_calls_answered_total", before, after_calls) == calls
    assert moved("voipsec_calls_total", before, after_calls, disposition="answered") == calls
    for disposition in ("no_answer", "busy", "failed", "rejected"):
        assert moved("voipsec_calls_total", before, after_calls, disposition=disposition) == 0
    # Digest challenges (407) are not failures; the wrong password is one.
    assert moved("voipsec_auth_failures_total", before, after_calls, service="sip") == 0
    assert moved("voipsec_auth_failures_total", after_calls, after_register, service="sip") == 1
    assert moved("voipsec_calls_started_total", after_calls, after_register) == 0


UNWIRED_METRICS = {
    # (sample, labels) that a wrong-password REGISTER over TLS must move.
    "registrations": ("voipsec_registrations_total", {"result": "rejected"}),
    "tls_handshakes": ("voipsec_tls_handshakes_total", {"result": "ok"}),
    "request_latency": ("voipsec_request_duration_seconds_count", {"method": "REGISTER"}),
}


@pytest.mark.parametrize("name", list(UNWIRED_METRICS))
def test_metrics_count_registrations_handshakes_and_request_latency(
    metrics_run: MetricsRun, name: str
) -> None:
    """issue 7: metrics of registrations, TLS handshakes and request-handling latency
    (moved by the run's one wrong-password REGISTER, the server's only auth failure)."""
    sample, labels = UNWIRED_METRICS[name]
    before, after = metrics_run.after_calls, metrics_run.after_register
    assert _value(after, "voipsec_auth_failures_total", service="sip") == 1
    assert _value(after, sample, **labels) - _value(before, sample, **labels) >= 1


# -- kill -9 during a call --------------------------------------------------------------

PER_DAY_RULES = """\
rules:
  - id: test-calls-per-day
    description: More than 1 outside call a day
    check: calls_per_day
    kinds: [national, international, premium-rate]
    critical: {threshold: 1, action: block}
"""


def _fraud_state_calls(server: VoipsecServer) -> dict[str, object]:
    """The active calls in DATA/fraud-state.json ({} while there is none)."""
    path = server.data_dir / "fraud-state.json"
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    calls = state.get("calls", {}) if isinstance(state, dict) else {}
    return calls if isinstance(calls, dict) else {}


@contextlib.contextmanager
def _killed_during_a_call(
    prepared: VoipsecServer, tmp_path: Path, dialled: str, tls_port: int
) -> Iterator[dict[str, object]]:
    """voipsec with alice's call answered and its fraud state saved, then kill -9;
    yields the call's open CDR row as it was before the kill."""
    with serving(prepared) as server:
        with (
            _trunk(server, tmp_path, tls_port, calls=1),
            _calling(server, tmp_path / "killed", dialled, scenario="call_uac_wait_bye.xml"),
        ):
            rows: list[dict[str, object]] = []

            def answered() -> bool:
                rows[:] = _cdrs(server)
                return len(rows) == 1 and rows[0]["answer"] is not None

            wait_for(answered, deadline=20, what="the call to be answered")
            call_id = str(rows[0]["call_id"])
            # The housekeeping loop saves the counters once a second.
            wait_for(
                lambda: call_id in _fraud_state_calls(server),
                deadline=10,
                what="the fraud state to hold the call",
            )
            assert rows[0]["disposition"] == "", rows
            assert server.proc is not None
            server.proc.kill()
            assert server.proc.wait(timeout=10) == -9
        yield rows[0]


def test_kill_9_during_a_call_cdr_incomplete_and_fraud_counters_kept(tmp_path: Path) -> None:
    """kill -9 with a call up: after the restart its CDR is closed as incomplete with
    its start time, and the calls_per_day count it made is still there (the next call
    is over the threshold and blocked)."""
    dialled, e164 = NATIONAL
    tls_port = free_port()
    prepared = _prepare(tmp_path, trunk_port=tls_port, rules=PER_DAY_RULES)
    with _killed_during_a_call(prepared, tmp_path, dialled, tls_port) as before:
        pass
    with serving(prepared) as server:
        (row,) = _cdrs(server)
        after = _call(server, tmp_path / "after", dialled)
        _assert_clean(after, 1, "caller after the restart", server)
        rows = _wait_cdrs(server, 2)
        alerts = _alerts(server)
    expected = {
        "call_id": before["call_id"],
        "callee": e164,
        "start": before["start"],
        "answer": before["answer"],
        "disposition": "incomplete",
        "reason": "server restarted",
        "hangup_by": "system",
    }
    assert {key: row[key] for key in expected} == expected, row
    assert float(str(row["end"])) >= float(str(before["answer"])), row
    (outcome,) = _outcomes(after).items()
    assert outcome[1] == ["FORBIDDEN"], outcome
    blocked = rows[outcome[0]]
    assert (blocked["disposition"], blocked["status"]) == ("rejected", 403), blocked
    assert "test-calls-per-day" in str(blocked["reason"]), blocked
    assert [line for line in alerts if " test-calls-per-day " in line], alerts


CONCURRENT_ONE_RULES = """\
rules:
  - id: test-one-at-a-time
    description: More than 1 call at once
    check: concurrent_calls
    critical: {threshold: 1, action: block}
"""


def test_call_killed_with_voipsec_no_longer_counts_as_concurrent(tmp_path: Path) -> None:
    """The call cut by kill -9 is over (its CDR says incomplete): after the restart
    it must not keep a place in the concurrent-call count, or a user limited to one
    call at a time could never call again."""
    dialled, _ = NATIONAL
    tls_port = free_port()
    prepared = _prepare(tmp_path, trunk_port=tls_port, rules=CONCURRENT_ONE_RULES)
    with _killed_during_a_call(prepared, tmp_path, dialled, tls_port):
        pass
    with (
        serving(prepared) as server,
        _trunk(server, tmp_path / "again", tls_port, calls=1) as trunk_run,
    ):
        after = _call(server, tmp_path / "after", dialled)
        _assert_clean(after, 1, "caller after the restart", server)
        outcomes = _outcomes(after)
        rows = _wait_cdrs(server, 2)
        trunk_run.kill()
    assert list(outcomes.values()) == [["ANSWERED", "HANGUP"]], (outcomes, rows)


# -- SIP message log ------------------------------------------------------------------

_DIGEST_RESPONSE = re.compile(r'\bresponse="([0-9a-f]{32})"')
#: The SDES keys the SIPp scenarios offer and answer with (bench/sipp/call_*.xml).
SIPP_KEYS = ("AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0e", "HyAhIiMkJSYnKCkqKywtLi8wMTIzNDU2Nzg5Ojs8")


def test_sip_log_has_both_directions_with_secrets_redacted(exported_call: ExportedCall) -> None:
    """siplog.enabled: after one authenticated call DATA/sip.log (0600) has the A-leg's
    and the B-leg's messages in and out, the digest responses and every SDP key
    redacted."""
    caller, trunk = exported_call.caller, exported_call.trunk
    assert exported_call.sip_log_mode == 0o600
    text = exported_call.sip_log
    records = [json.loads(line) for line in text.splitlines()]
    (a_leg,) = _outcomes(caller)
    (b_leg,) = _b_leg_call_ids(trunk)
    for call_id in (a_leg, b_leg):
        mine = [r for r in records if r["call_id"] == call_id]
        assert {r["direction"] for r in mine} == {"in", "out"}, call_id
        assert {r["transport"] for r in mine} == {"tls"}, mine[0]
    a_messages = [str(r["message"]) for r in records if r["call_id"] == a_leg]
    # The challenged INVITE came in with credentials; their response is redacted.
    credentials = [m for m in a_messages if "\nProxy-Authorization:" in m.replace("\r", "")]
    assert credentials, a_messages[:3]
    for message in credentials:
        assert 'response="<redacted>"' in message, message
        assert 'nonce="<redacted>"' in message, message
    # The real responses (SIPp's own message trace) appear nowhere in the log.
    trace = "".join(
        p.read_text(errors="replace")
        for p in (exported_call.workdir / "sipp-caller").glob("*_messages.log")
    )
    responses = set(_DIGEST_RESPONSE.findall(trace))
    assert responses, "no digest response in SIPp's message trace"
    for secret in (*responses, *SIPP_KEYS):
        assert secret not in text, secret
    # Every SDES key, SIPp's and the relay's own, is redacted (a=crypto ... inline:KEY).
    inline = re.findall(r"inline:([^|\\\s]*)", text)
    assert inline and set(inline) == {"<redacted>"}, inline[:5]

"""Monitoring against real peers: fraud rules, alerts, webhook, HEP, /metrics, SIP log.

Every call is a SIPp UAC (plain TCP to a stunnel client hop, TLS to voipsec, MD5
digest), as in test_calls_sipp.py. Calls to numbers go to a trunk: a SIPp UAS behind a
stunnel server hop that presents voipsec's own certificate, configured for prefix
"+". The fraud engine is never called directly: rules are written to DATA/fraud/*.yaml
(a rule with a shipped id replaces it, ``enabled: false`` removes it) and what voipsec
did is read from SIPp's own logs (403 or answered, BYE received), the CDRs,
``voipsec alerts list``, a webhook receiver, a sngrep HEP collector (tshark reads the
SIP it writes), ``/metrics`` and DATA/sip.log.
"""

from __future__ import annotations

import contextlib
import http.client
import http.server
import json
import re
import socket
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.peers.proc import free_port, require, running, wait_for
from tests.peers.sipp import SippProcess, SippResult, start_sipp, write_csv
from tests.peers.stunnel import stunnel_client, stunnel_server
from tests.peers.voipsec import VoipsecServer, prepare, serving, voipsec
from voipsec.storage import Store

pytestmark = pytest.mark.peers

BENCH = Path(__file__).resolve().parents[2] / "bench" / "sipp"
DOMAIN = "localhost"
ALICE = ("alice", "alice-secret-1")
MD5_ONLY = ("auth.algorithms", '["MD5"]')
TRUNK = "carrier"
TRUNK_DOMAIN = "trunk.test"
#: Dialled as national numbers (country code 44, the config default), E.164 after.
NATIONAL = ("02071234567", "+442071234567")
#: UK 09 is premium rate (voipsec/core/data/premium-rate.txt).
PREMIUM = ("09012345678", "+449012345678")
GERMANY = ("00493012345678", "+493012345678")
FRANCE = ("0033142345678", "+33142345678")

#: The caller: answered -> hang up after the call length; 403 -> ACK. Logs which.
ANSWER_OR_403 = "monitor_uac_answer_or_403.xml"
#: How long an answered call lasts before the caller hangs up (SIPp ``-d``), ms.
CALL_MS = 300
#: Each SIPp's own -timeout (seconds); the test fails rather than waits beyond it.
SIPP_TIMEOUT = 30.0

_LOG_LINE = re.compile(r"^(?P<what>[A-Z]+) call_id=(?P<call_id>\S+)")
_B_LEG = re.compile(r"^INVITE call_id=(?P<call_id>\S+) ")


# -- voipsec --------------------------------------------------------------------------


def _prepare(
    tmp_path: Path,
    *,
    alice_class: str = "national",
    trunk_port: int | None = None,
    rules: str | None = None,
    settings: Sequence[tuple[str, str]] = (),
    users: Sequence[tuple[tuple[str, str], str]] = (),
) -> VoipsecServer:
    """A data directory with alice (of ``alice_class``), the trunk for "+" when
    ``trunk_port`` is given, and ``rules`` as the site's fraud rule file; ``users``:
    more users, each as ((name, password), class)."""
    prepared = prepare(tmp_path / "data", settings=[MD5_ONLY, *settings])
    data_dir = prepared.data_dir
    if rules is not None:
        (data_dir / "fraud").mkdir(exist_ok=True)
        (data_dir / "fraud" / "test.yaml").write_text(rules, encoding="utf-8")
    if trunk_port is not None:
        with (data_dir / "voipsec.toml").open("a", encoding="utf-8") as handle:
            handle.write(
                f'\n[[trunks]]\nname = "{TRUNK}"\naddress = "tls:127.0.0.1:{trunk_port}"\n'
                f'domain = "{TRUNK_DOMAIN}"\nprefixes = ["+"]\n'
            )
        voipsec("config", "get", "sip.domain", data_dir=data_dir)  # validates the file
    store = Store(data_dir / "voipsec.db")
    try:
        for (name, password), user_class in [(ALICE, alice_class), *users]:
            store.add_user(name, password, DOMAIN)
            if user_class != "national":
                store.set_user_class(name, user_class)
    finally:
        store.close()
    return prepared


def _cdrs(server: VoipsecServer, user: str | None = None) -> list[dict[str, object]]:
    """The CDR rows; with ``user``, only the rows of that user's calls."""
    out = voipsec("cdr", "list", "--format", "json", data_dir=server.data_dir).stdout
    rows = json.loads(out)
    assert isinstance(rows, list)
    return [row for row in rows if user is None or row["user"] == user]


def _wait_cdrs(
    server: VoipsecServer, count: int, deadline: float = 15.0, *, user: str | None = None
) -> dict[str, dict[str, object]]:
    """The CDR rows by Call-ID once ``count`` of them exist and every one is closed
    (with ``user``: the rows of that user's calls, the only ones its test makes on a
    server shared by the module, see ``fraud_server``)."""
    rows: list[dict[str, object]] = []

    def closed() -> bool:
        rows[:] = _cdrs(server, user)
        return len(rows) >= count and all(row["disposition"] for row in rows)

    try:
        wait_for(closed, deadline=deadline, what=f"{count} closed CDRs")
    except AssertionError as exc:
        raise AssertionError(f"{exc}: {json.dumps(rows, indent=1)}") from None
    assert len(rows) == count, rows
    return {str(row["call_id"]): row for row in rows}


def _alerts(server: VoipsecServer, user: str | None = None) -> list[str]:
    """``voipsec alerts list``: one line per alert (time, rule, source, detail); with
    ``user``, only the lines whose detail ("WHAT: WHO: WHY; ACTION") names that user."""
    lines = voipsec("alerts", "list", data_dir=server.data_dir).stdout.splitlines()
    return [line for line in lines if user is None or f": {user}: " in line]


def _alert_rules(server: VoipsecServer, user: str | None = None) -> list[str]:
    return [line.split()[1] for line in _alerts(server, user) if len(line.split()) > 1]


# -- SIPp peers -----------------------------------------------------------------------


def _listening(port: int) -> bool:
    """True when something listens on TCP 127.0.0.1:port (from /proc: no probe
    connection reaches the listener)."""
    wanted = f"0100007F:{port:04X}"
    with open("/proc/net/tcp", encoding="ascii") as handle:
        for line in handle.readlines()[1:]:
            parts = line.split()
            if parts[1] == wanted and parts[3] == "0A":  # 0A: LISTEN
                return True
    return False


@contextlib.contextmanager
def _trunk(
    server: VoipsecServer,
    workdir: Path,
    tls_port: int,
    *,
    calls: int,
    scenario: str = "call_uas_answer.xml",
) -> Iterator[SippProcess]:
    """A SIPp server running ``scenario`` for ``calls`` calls behind a stunnel server
    hop on ``tls_port`` (voipsec's certificate and key), as the trunk."""
    port = free_port()
    tls = server.data_dir / "tls"
    with start_sipp(
        BENCH / scenario,
        "",
        workdir=workdir / "sipp-trunk",
        calls=calls,
        local_port=port,
        keys={"uas_contact": f"sip:{TRUNK}@127.0.0.1:{tls_port};transport=tls"},
        call_length_ms=CALL_MS,
        timeout=SIPP_TIMEOUT,
        trace_logs=True,
    ) as callee:
        wait_for(
            lambda: not callee.running() or _listening(port),
            deadline=10,
            what=f"SIPp trunk to listen on {port}",
        )
        assert callee.running(), callee.wait(0).error_tail()
        with stunnel_server(
            tls_port, port, tls / "server.crt", tls / "server.key", workdir / "stunnel-trunk"
        ):
            yield callee


@contextlib.contextmanager
def _calling(
    server: VoipsecServer,
    workdir: Path,
    dialled: str,
    *,
    scenario: str = ANSWER_OR_403,
    calls: int = 1,
    rate: float = 5.0,
    call_length_ms: int = CALL_MS,
    extra: Sequence[str] = (),
    caller: tuple[str, str] = ALICE,
) -> Iterator[SippProcess]:
    """``caller`` (alice) calls ``dialled`` ``calls`` times over TLS, SIPp in the
    background."""
    hop = free_port()
    user, password = caller
    workdir.mkdir(parents=True, exist_ok=True)
    inf = write_csv(workdir / "caller.csv", [(user, password, DOMAIN, dialled)])
    with (
        stunnel_client(hop, server.host, server.port, server.ca, workdir / "stunnel-caller"),
        start_sipp(
            BENCH / scenario,
            f"127.0.0.1:{hop}",
            workdir=workdir / "sipp-caller",
            inf_csv=inf,
            rate=rate,
            calls=calls,
            # The digest uri must be the Request-URI (SIPp puts "sip:" + -auth_uri).
            extra=["-auth_uri", f"{dialled}@{DOMAIN}", "-trace_msg", *extra],
            call_length_ms=call_length_ms,
            timeout=SIPP_TIMEOUT,
            trace_logs=True,
        ) as sipp,
    ):
        yield sipp


def _call(
    server: VoipsecServer,
    workdir: Path,
    dialled: str,
    *,
    scenario: str = ANSWER_OR_403,
    calls: int = 1,
    rate: float = 5.0,
    call_length_ms: int = CALL_MS,
    extra: Sequence[str] = (),
    caller: tuple[str, str] = ALICE,
) -> SippResult:
    """``caller`` (alice) calls ``dialled`` ``calls`` times over TLS; SIPp's result
    once it ends."""
    with _calling(
        server,
        workdir,
        dialled,
        scenario=scenario,
        calls=calls,
        rate=rate,
        call_length_ms=call_length_ms,
        extra=extra,
        caller=caller,
    ) as sipp:
        return sipp.wait(SIPP_TIMEOUT + 15)


def _assert_clean(result: SippResult, calls: int, who: str, server: VoipsecServer) -> None:
    """Every SIPp call went as its scenario says: no failure, nothing unexpected."""
    detail = f"{who}:\n{result.error_tail()}\n--- voipsec\n{server.log_text()[-3000:]}"
    assert (result.successful, result.failed, result.returncode) == (calls, 0, 0), detail
    assert result.unexpected() == dict.fromkeys(result.unexpected(), 0), detail
    assert result.error_events() == [], detail


def _outcomes(result: SippResult) -> dict[str, list[str]]:
    """Per Call-ID, the caller's <log> words in order (ANSWERED, HANGUP, FORBIDDEN)."""
    found: dict[str, list[str]] = {}
    for line in result.log_lines():
        match = _LOG_LINE.match(line)
        if match is not None:
            found.setdefault(match["call_id"], []).append(match["what"])
    return found


def _call_number(call_id: str) -> int:
    """SIPp's call number, the N of its Call-ID "N-PID@IP"."""
    return int(call_id.split("-", 1)[0])


def _b_leg_call_ids(callee: SippResult) -> list[str]:
    return [m["call_id"] for line in callee.log_lines("INVITE ") if (m := _B_LEG.match(line))]


# -- fraud scenarios ------------------------------------------------------------------

PREMIUM_BURST_RULES = """\
rules:
  # The shipped rule blocks every premium-rate call: off, so that the burst rule decides.
  - id: premium-rate
    check: destination
    critical: {action: block}
    enabled: false
  - id: test-premium-burst
    description: More than 2 calls a minute to UK premium rate
    check: calls_per_minute
    prefixes: ["+449"]
    critical: {threshold: 2, action: block}
"""

#: The callers of the module's shared server (``fraud_server``), one per test, each as
#: ((name, password), class): the fraud engine keeps its state per (rule, user), so
#: one test's calls never count towards another's rules.
BURSTER = ("burster", "burster-secret-1")
STEPPER = ("stepper", "stepper-secret-1")
TRAVELLER = ("traveller", "traveller-secret-1")
JUGGLER = ("juggler", "juggler-secret-1")
HOOKED = ("hooked", "hooked-secret-1")
FRAUD_USERS = (
    (BURSTER, "premium-rate"),
    (STEPPER, "national"),
    (TRAVELLER, "international"),
    (JUGGLER, "national"),
    (HOOKED, "international"),
)


@dataclass(frozen=True, slots=True)
class FraudServer:
    """The module's shared server, the port its trunk ("+") is reached on (each test
    runs its own SIPp trunk there, one after the other) and what its webhook got."""

    server: VoipsecServer
    trunk_port: int
    webhook: list[tuple[str, str, bytes]]


@pytest.fixture(scope="module")
def fraud_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FraudServer]:
    """One server for the fraud scenarios below but the duration limit (it would cut
    the concurrent test's 3 s calls): the burst and concurrent-call rules together
    (each is hit only by the calls of its own test: the other tests call one at a
    time and no premium-rate number), the webhook set, and a user per test
    (FRAUD_USERS): each test reads only its user's CDR rows and alerts, which only
    its own calls make."""
    tmp_path = tmp_path_factory.mktemp("fraud")
    tls_port = free_port()
    rules = PREMIUM_BURST_RULES + CONCURRENT_RULES.removeprefix("rules:\n")
    with _webhook_receiver() as (url, received):
        prepared = _prepare(
            tmp_path,
            trunk_port=tls_port,
            rules=rules,
            settings=[("alerts.webhook", json.dumps(url))],
            users=FRAUD_USERS,
        )
        with serving(prepared) as server:
            yield FraudServer(server, tls_port, received)


def test_premium_rate_burst_blocked_from_the_third_call(
    fraud_server: FraudServer, tmp_path: Path
) -> None:
    """Four calls in a row to a premium-rate number: two are routed and answered, the
    third and fourth get 403 naming the rule, and the alert names it too."""
    dialled, e164 = PREMIUM
    server, user = fraud_server.server, BURSTER[0]
    with _trunk(server, tmp_path, fraud_server.trunk_port, calls=2) as trunk_run:
        # -l 1: one call at a time, so "the third" is the third attempt voipsec sees.
        caller = _call(
            server,
            tmp_path / "burst",
            dialled,
            calls=4,
            rate=5,
            extra=["-l", "1"],
            caller=BURSTER,
        )
        trunk = trunk_run.wait(SIPP_TIMEOUT)
        _assert_clean(caller, 4, "caller", server)
        _assert_clean(trunk, 2, "trunk", server)
        outcomes = _outcomes(caller)
        rows = _wait_cdrs(server, 4, user=user)
        alerts = _alerts(server, user)
    by_number = {_call_number(call_id): words for call_id, words in outcomes.items()}
    assert by_number == {
        1: ["ANSWERED", "HANGUP"],
        2: ["ANSWERED", "HANGUP"],
        3: ["FORBIDDEN"],
        4: ["FORBIDDEN"],
    }, outcomes
    assert set(rows) == set(outcomes)
    for call_id, row in rows.items():
        assert row["callee"] == e164, row
        if _call_number(call_id) <= 2:
            assert (row["disposition"], row["status"], row["trunk"]) == ("answered", 200, TRUNK)
        else:
            assert (row["disposition"], row["status"], row["trunk"]) == ("rejected", 403, "")
            assert "test-premium-burst" in str(row["reason"]), row
    burst = [line for line in alerts if " test-premium-burst " in line]
    # One alert per violating attempt (the third and the fourth), each saying blocked.
    assert len(burst) == 2, alerts
    assert all("blocked" in line and user in line for line in burst), burst


DURATION_RULES = """\
rules:
  - id: test-duration
    description: Calls are cut at 3 s
    check: duration
    critical: {threshold: 3, action: block}
"""
#: The fraud rule's duration limit (s), and slack for the BYE's trip and timers.
DURATION_LIMIT = 3.0
DURATION_SLACK = 1.5


@pytest.fixture(scope="module")
def long_call(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, object], list[str]]:
    """One call nobody hangs up, under DURATION_RULES: its CDR row and the alerts.

    Module scope: the two tests below read different parts of the same call's outcome,
    one server, trunk and caller serve both.
    """
    tmp_path = tmp_path_factory.mktemp("long_call")
    dialled, e164 = NATIONAL
    tls_port = free_port()
    prepared = _prepare(tmp_path, trunk_port=tls_port, rules=DURATION_RULES)
    with serving(prepared) as server, _trunk(server, tmp_path, tls_port, calls=1) as trunk_run:
        caller = _call(server, tmp_path / "long", dialled, scenario="call_uac_wait_bye.xml")
        trunk = trunk_run.wait(SIPP_TIMEOUT)
        # Both scenarios end only after a BYE came in and was answered 200.
        _assert_clean(caller, 1, "caller", server)
        _assert_clean(trunk, 1, "trunk", server)
        assert len(trunk.log_lines("DONE answered ")) == 1, trunk.error_tail()
        outcomes = _outcomes(caller)
        rows = _wait_cdrs(server, 1)
        alerts = _alerts(server)
    assert list(outcomes.values()) == [["ANSWERED", "HANGUP"]], outcomes
    assert set(rows) == set(outcomes)
    (row,) = rows.values()
    assert (row["callee"], row["trunk"]) == (e164, TRUNK), row
    return row, alerts


def test_long_call_cut_at_the_duration_limit_both_sides_get_bye(
    long_call: tuple[dict[str, object], list[str]],
) -> None:
    """A call that nobody hangs up: at the rule's limit voipsec sends BYE on both legs
    (each SIPp waits for it and answers 200), and the CDR says why."""
    row, _ = long_call
    expected = {
        "disposition": "answered",
        "status": 200,
        "reason": "duration limit of a fraud rule",
        "hangup_by": "system",
    }
    assert {key: row[key] for key in expected} == expected, row
    billable = float(str(row["billable"]))
    # The limit is kept to within a few ms (the BYE is sent by a timer at the limit).
    assert DURATION_LIMIT - 0.01 <= billable <= DURATION_LIMIT + DURATION_SLACK, row


def test_call_cut_by_a_duration_rule_raises_its_alert(
    long_call: tuple[dict[str, object], list[str]],
) -> None:
    """Every violation is an alert (fraud.yaml): the rule that cut the call says so."""
    row, alerts = long_call
    assert row["reason"] == "duration limit of a fraud rule", row
    assert any(" test-duration " in line for line in alerts), (row["billable"], alerts)


def test_incrementing_numbers_flagged(fraud_server: FraudServer, tmp_path: Path) -> None:
    """Calls to ...001, ...002, ...003 (the shipped incrementing-numbers rule: more
    than 2 in a row): all are routed (the rule alerts), the third raises the alert."""
    numbers = ["02071234001", "02071234002", "02071234003"]
    server, user = fraud_server.server, STEPPER[0]
    with _trunk(server, tmp_path, fraud_server.trunk_port, calls=3) as trunk_run:
        counts = []
        for index, dialled in enumerate(numbers):
            # One SIPp per number: the digest uri (-auth_uri) must be its Request-URI.
            caller = _call(server, tmp_path / f"call-{index}", dialled, caller=STEPPER)
            _assert_clean(caller, 1, f"caller of {dialled}", server)
            assert [w for ws in _outcomes(caller).values() for w in ws] == ["ANSWERED", "HANGUP"]
            _wait_cdrs(server, index + 1, user=user)
            counts.append(_alert_rules(server, user).count("incrementing-numbers"))
        trunk = trunk_run.wait(SIPP_TIMEOUT)
        _assert_clean(trunk, 3, "trunk", server)
        alerts = _alerts(server, user)
    assert counts == [0, 0, 1], alerts
    (line,) = [line for line in alerts if " incrementing-numbers " in line]
    assert user in line and "alerted" in line, line


def test_first_call_to_a_new_country_alerts(fraud_server: FraudServer, tmp_path: Path) -> None:
    """The shipped new-country rule: a user's first call to Germany alerts, the second
    does not; the first call to France alerts again."""
    server, user = fraud_server.server, TRAVELLER[0]
    with _trunk(server, tmp_path, fraud_server.trunk_port, calls=3) as trunk_run:
        germany = _call(
            server, tmp_path / "germany", GERMANY[0], calls=2, extra=["-l", "1"], caller=TRAVELLER
        )
        _assert_clean(germany, 2, "caller (Germany)", server)
        _wait_cdrs(server, 2, user=user)
        after_germany = [line for line in _alerts(server, user) if " new-country " in line]
        france = _call(server, tmp_path / "france", FRANCE[0], caller=TRAVELLER)
        _assert_clean(france, 1, "caller (France)", server)
        rows = _wait_cdrs(server, 3, user=user)
        trunk = trunk_run.wait(SIPP_TIMEOUT)
        _assert_clean(trunk, 3, "trunk", server)
        after_france = [line for line in _alerts(server, user) if " new-country " in line]
    assert all(row["disposition"] == "answered" for row in rows.values()), rows
    assert len(after_germany) == 1, after_germany
    assert "first call to country code +49" in after_germany[0], after_germany
    assert len(after_france) == 2, after_france
    assert "first call to country code +33" in after_france[1], after_france


CONCURRENT_RULES = """\
rules:
  - id: test-concurrent
    description: More than 2 calls at once
    check: concurrent_calls
    critical: {threshold: 2, action: block}
"""
#: How long the concurrent calls are held (ms): all three overlap.
HOLD_MS = 3000


def test_concurrent_call_limit_holds(fraud_server: FraudServer, tmp_path: Path) -> None:
    """Three calls placed 0.2 s apart and held 3 s: two are answered, the third (two
    already open) gets 403 naming the rule."""
    dialled, _ = NATIONAL
    server, user = fraud_server.server, JUGGLER[0]
    with _trunk(server, tmp_path, fraud_server.trunk_port, calls=2) as trunk_run:
        caller = _call(
            server, tmp_path / "held", dialled, calls=3, call_length_ms=HOLD_MS, caller=JUGGLER
        )
        trunk = trunk_run.wait(SIPP_TIMEOUT)
        _assert_clean(caller, 3, "caller", server)
        _assert_clean(trunk, 2, "trunk", server)
        outcomes = _outcomes(caller)
        rows = _wait_cdrs(server, 3, user=user)
        alerts = _alerts(server, user)
    by_number = {_call_number(call_id): words for call_id, words in outcomes.items()}
    assert by_number == {
        1: ["ANSWERED", "HANGUP"],
        2: ["ANSWERED", "HANGUP"],
        3: ["FORBIDDEN"],
    }, outcomes
    # The answered calls overlapped the refused one (it was refused, not just late).
    third = next(row for cid, row in rows.items() if _call_number(cid) == 3)
    for call_id, row in rows.items():
        if _call_number(call_id) != 3:
            assert float(str(row["start"])) < float(str(third["start"])), rows
            assert float(str(row["end"])) > float(str(third["start"])), rows
    assert (third["disposition"], third["status"]) == ("rejected", 403), third
    assert "test-concurrent" in str(third["reason"]), third
    assert [line for line in alerts if " test-concurrent " in line], alerts


# -- alerts by webhook ----------------------------------------------------------------


@contextlib.contextmanager
def _webhook_receiver() -> Iterator[tuple[str, list[tuple[str, str, bytes]]]]:
    """An HTTP server on 127.0.0.1 in a thread; yields its URL and the POSTs it got
    as (path, content type, body), answering each 204."""
    received: list[tuple[str, str, bytes]] = []

    class Hook(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            received.append((self.path, self.headers.get("Content-Type") or "", body))
            self.send_response(204)
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook", received
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def test_webhook_receives_the_alert_json(fraud_server: FraudServer, tmp_path: Path) -> None:
    """A user's first call to Germany: the new-country alert is POSTed as JSON."""
    server, user, received = fraud_server.server, HOOKED[0], fraud_server.webhook
    with _trunk(server, tmp_path, fraud_server.trunk_port, calls=1) as trunk_run:
        before = time.time()
        caller = _call(server, tmp_path / "germany", GERMANY[0], caller=HOOKED)
        _assert_clean(caller, 1, "caller", server)
        _assert_clean(trunk_run.wait(SIPP_TIMEOUT), 1, "trunk", server)
        _wait_cdrs(server, 1, user=user)

        def new_country() -> list[dict[str, object]]:
            # The webhook gets the alerts of every test's user: this one's only.
            alerts = [json.loads(body) for _, _, body in received]
            return [a for a in alerts if a.get("rule") == "new-country" and a.get("who") == user]

        wait_for(new_country, deadline=15, what="the new-country alert at the webhook")
    (alert,) = new_country()
    # Every POST (this test's alert among them) went to the URL's path, as JSON.
    for path, content_type, _ in list(received):
        assert path == "/hook"
        assert content_type.startswith("application/json"), content_type
    assert {"rule", "what", "who", "why", "action", "source", "time"} <= set(alert), alert
    assert (alert["who"], alert["action"], alert["source"]) == (user, "alerted", "127.0.0.1")
    assert "first call to country code +49" in str(alert["why"]), alert
    assert "new_country" in str(alert["what"]), alert
    assert before - 1 <= float(str(alert["time"])) <= time.time(), alert


# -- HEP to a sngrep collector --------------------------------------------------------

HEP_KEY = "homer-pw"


def _udp_port_bound(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return True
        return False


def _udp_unread(port: int) -> int:
    """Bytes waiting in the receive queue of the UDP socket bound to 127.0.0.1:port."""
    local = f"0100007F:{port:04X}"
    for line in Path("/proc/net/udp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1] == local:
            return int(fields[4].split(":")[1], 16)
    return 0


@contextlib.contextmanager
def _sngrep_collector(workdir: Path, password: str) -> Iterator[tuple[int, Path]]:
    """sngrep as a HEP collector (it checks the auth key) on a free UDP port, writing
    the SIP it unwraps to a pcap (flushed when it is stopped with SIGTERM)."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port(kind=socket.SOCK_DGRAM)
    (workdir / "sngreprc").write_text(f"set eep.listen.pass {password}\n")
    out = workdir / "collected.pcap"
    argv = [require("sngrep"), "-F", "-f", str(workdir / "sngreprc"), "-N", "-q"]
    argv += ["-L", f"udp:127.0.0.1:{port}", "-O", str(out)]
    with running(argv, log=workdir / "sngrep.log") as proc:
        wait_for(lambda: _udp_port_bound(port) or proc.poll() is not None, what="sngrep")
        assert proc.poll() is None, (workdir / "sngrep.log").read_text()
        yield port, out


def _tshark_sip(pcap: Path) -> list[tuple[str, str]]:
    """(Call-ID, method or status) of each SIP message tshark finds in ``pcap``."""
    argv = [require("tshark"), "-r", str(pcap), "-Y", "sip", "-T", "fields"]
    argv += ["-e", "sip.Call-ID", "-e", "sip.Method", "-e", "sip.Status-Code"]
    out = subprocess.run(argv, capture_output=True, check=True, timeout=60).stdout.decode()
    rows = []
    for line in out.splitlines():
        call_id, method, status = [*line.split("\t"), "", "", ""][:3]
        rows.append((call_id, method or status))
    return rows

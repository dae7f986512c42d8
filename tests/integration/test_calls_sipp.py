"""Calls through voipsec between real SIPp peers over TLS, and the CDRs they leave.

Caller: a SIPp UAC (``bench/sipp/call_uac*.xml``) speaking plain TCP to a stunnel
client hop, which carries it over TLS to voipsec. Each call is challenged (407, ACKed),
then placed with MD5 credentials (SIPp 3.6.1 computes MD5 only, so voipsec runs with
``auth.algorithms = ["MD5"]``, as in test_sipp_register.py).

Callee, one of:

* a registered user: a SIPp client (``call_uas_register.xml``, ``-t t1``, ``-m 1``)
  that REGISTERs bob over its own stunnel client hop and keeps the connection; voipsec
  sends the B-leg INVITE down that connection (connection reuse), and since its Call-ID
  is new to SIPp, SIPp runs the out-of-call scenario (``-oocsf call_uas_*.xml``) on the
  same socket. The UAS scenarios count finished calls in a SIPp global variable; the
  register scenario waits for the expected count, unregisters and ends, so SIPp's exit
  code says whether every call went exactly as scripted.
* a trunk: a SIPp server (the same ``call_uas_*.xml`` as its main scenario) behind a
  stunnel server hop that presents voipsec's own server certificate (voipsec checks a
  trunk's certificate against its own CA by default); the trunk is configured as
  ``tls:127.0.0.1:PORT`` with prefix "+" and domain "trunk.test".

Each flow checks: SIPp's counts (all calls successful, 0 failed, 0 unexpected,
out-of-call or dead-call messages, no error events), what the B-leg INVITE looked like
(its own Call-ID and From tag, voipsec's Via only, the callee's contact or the trunk's
domain in the Request-URI), and one CDR per call with the disposition, status and
hangup side SIPp produced, and a billable time that matches SIPp's call length.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.peers.proc import free_port, wait_for
from tests.peers.sipp import SippProcess, SippResult, run_sipp, start_sipp, write_csv
from tests.peers.stunnel import stunnel_client, stunnel_server
from tests.peers.voipsec import VoipsecServer, prepare, serving, voipsec
from voipsec.storage import Store

pytestmark = pytest.mark.peers

BENCH = Path(__file__).resolve().parents[2] / "bench" / "sipp"
DOMAIN = "localhost"
ALICE = ("alice", "alice-secret-1")
BOB = ("bob", "bob-secret-22")
MD5_ONLY = ("auth.algorithms", '["MD5"]')
TRUNK = "carrier"
TRUNK_DOMAIN = "trunk.test"
INTERNATIONAL = ("00493012345678", "+493012345678")
NATIONAL = ("02071234567", "+442071234567")  # country code 44 is the config default

CALLS = 5
RATE = 5.0
#: How long an answered call lasts before one side hangs up (SIPp ``-d``).
CALL_MS = 600
#: Each SIPp's own -timeout (seconds); the test fails rather than waits beyond it.
SIPP_TIMEOUT = 45.0
#: Slack on the billable time: set-up, the BYE's trip, the pause's granularity.
BILLABLE_SLACK = 1.5

_CALL_ID = re.compile(r"call_id=(\S+)")
_INVITE_LOG = re.compile(
    r"^INVITE call_id=(?P<call_id>\S+) ruri=(?P<ruri>\S+) from=\s*(?P<from>.*?) "
    r"to=\s*(?P<to>.*?) via=\s*(?P<via>.*)$"
)


@dataclass(frozen=True)
class Flow:
    """One call flow: the two scenarios and what voipsec must record."""

    uac: str
    uas: str
    #: First word of the caller's final <log> line and of the callee's DONE line.
    caller_log: str
    callee_done: str
    disposition: str
    status: int
    hangup_by: str

    @property
    def answered(self) -> bool:
        return self.disposition == "answered"


FLOWS = {
    "caller_hangs_up": Flow(
        "call_uac.xml", "call_uas_answer.xml", "HANGUP", "answered", "answered", 200, "caller"
    ),
    "callee_hangs_up": Flow(
        "call_uac_wait_bye.xml",
        "call_uas_answer_bye.xml",
        "HANGUP",
        "hungup",
        "answered",
        200,
        "callee",
    ),
    "caller_cancels": Flow(
        "call_uac_cancel.xml",
        "call_uas_ring.xml",
        "CANCELLED",
        "cancelled",
        "no_answer",
        487,
        "caller",  # docs/cdr.md: the caller hung up or cancelled
    ),
    "callee_busy": Flow("call_uac_busy.xml", "call_uas_busy.xml", "BUSY", "busy", "busy", 486, ""),
}


# -- voipsec --------------------------------------------------------------------------


def _server(
    tmp_path: Path,
    *,
    alice_class: str = "national",
    trunk_port: int | None = None,
    users: Sequence[tuple[tuple[str, str], str]] = (),
) -> VoipsecServer:
    """alice (of ``alice_class``), bob, the trunk for "+" when ``trunk_port`` is given
    and ``users``: more users, each as ((name, password), class)."""
    prepared = prepare(tmp_path / "data", settings=[MD5_ONLY])
    if trunk_port is not None:
        _add_trunk(prepared.data_dir, trunk_port)
    store = Store(prepared.data_dir / "voipsec.db")
    try:
        for (name, password), user_class in [(ALICE, alice_class), (BOB, "national"), *users]:
            store.add_user(name, password, DOMAIN)
            if user_class != "national":
                store.set_user_class(name, user_class)
    finally:
        store.close()
    return prepared


def _add_trunk(data_dir: Path, port: int) -> None:
    """Append the test trunk as a ``[[trunks]]`` table (``config set`` edits keys, not
    arrays of tables), then have voipsec validate the file."""
    path = data_dir / "voipsec.toml"
    with path.open("a", encoding="utf-8") as handle:
        handle.write(
            f'\n[[trunks]]\nname = "{TRUNK}"\naddress = "tls:127.0.0.1:{port}"\n'
            f'domain = "{TRUNK_DOMAIN}"\nprefixes = ["+"]\n'
        )
    voipsec("config", "get", "sip.domain", data_dir=data_dir)


def _cdrs(server: VoipsecServer) -> list[dict[str, object]]:
    out = voipsec("cdr", "list", "--format", "json", data_dir=server.data_dir).stdout
    rows = json.loads(out)
    assert isinstance(rows, list)
    return rows


def _wait_cdrs(
    server: VoipsecServer,
    count: int,
    deadline: float = 15.0,
    *,
    call_ids: set[str] | None = None,
) -> list[dict[str, object]]:
    """The CDR rows once ``count`` of them exist and every one is closed; with
    ``call_ids``, only those calls' rows (a server shared with another test)."""
    rows: list[dict[str, object]] = []

    def closed() -> bool:
        rows[:] = [r for r in _cdrs(server) if call_ids is None or r["call_id"] in call_ids]
        return len(rows) >= count and all(row["disposition"] for row in rows)

    try:
        wait_for(closed, deadline=deadline, what=f"{count} closed CDRs")
    except AssertionError as exc:
        raise AssertionError(f"{exc}: {json.dumps(rows, indent=1)}") from None
    return rows


# -- SIPp peers -----------------------------------------------------------------------


def _listening(port: int) -> bool:
    """True when something listens on TCP 127.0.0.1:port (read from /proc, so that no
    probe connection reaches the listener)."""
    wanted = f"0100007F:{port:04X}"
    for table in ("/proc/net/tcp",):
        with open(table, encoding="ascii") as handle:
            for line in handle.readlines()[1:]:
                parts = line.split()
                if parts[1] == wanted and parts[3] == "0A":  # 0A: LISTEN
                    return True
    return False


@contextlib.contextmanager
def _registered_callee(
    server: VoipsecServer,
    tmp_path: Path,
    flow: Flow,
    calls: int,
    callee: tuple[str, str] = BOB,
) -> Iterator[tuple[SippProcess, str]]:
    """``callee`` (bob) as a registered SIPp over TLS, running ``flow.uas`` for each
    call; yields the running SIPp and the callee's contact as voipsec stored it."""
    hop, port = free_port(), free_port()
    user, password = callee
    contact = f"sip:{user}@127.0.0.1:{port};transport=tls"
    inf = write_csv(tmp_path / "callee.csv", [(user, password, DOMAIN, str(calls))])
    with (
        stunnel_client(hop, server.host, server.port, server.ca, tmp_path / "stunnel-callee"),
        start_sipp(
            BENCH / "call_uas_register.xml",
            f"127.0.0.1:{hop}",
            workdir=tmp_path / "sipp-callee",
            inf_csv=inf,
            calls=1,
            local_port=port,
            ooc_scenario=BENCH / flow.uas,
            keys={"uas_contact": contact},
            extra=["-auth_uri", DOMAIN],
            call_length_ms=CALL_MS,
            timeout=SIPP_TIMEOUT,
            trace_logs=True,
        ) as sipp,
    ):
        bindings = server.wait_bindings(user, 1)
        yield sipp, str(bindings[0]["contact"])


@contextlib.contextmanager
def _trunk_callee(
    server: VoipsecServer, tmp_path: Path, flow: Flow, calls: int, tls_port: int
) -> Iterator[SippProcess]:
    """A SIPp server running ``flow.uas`` for ``calls`` calls behind a stunnel server
    hop on ``tls_port`` (voipsec's certificate and key)."""
    port = free_port()
    tls = server.data_dir / "tls"
    with start_sipp(
        BENCH / flow.uas,
        "",
        workdir=tmp_path / "sipp-trunk",
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
            tls_port, port, tls / "server.crt", tls / "server.key", tmp_path / "stunnel-trunk"
        ):
            yield callee


def _place_calls(
    server: VoipsecServer,
    tmp_path: Path,
    flow: Flow,
    dialled: str,
    calls: int,
    name: str = "caller",
    caller: tuple[str, str] = ALICE,
) -> SippResult:
    """``caller`` (alice) calls ``dialled`` ``calls`` times with ``flow.uac`` over TLS
    (``name``: of the SIPp and stunnel directories, for a second caller against the
    same server)."""
    hop = free_port()
    user, password = caller
    inf = write_csv(tmp_path / f"{name}.csv", [(user, password, DOMAIN, dialled)])
    with stunnel_client(hop, server.host, server.port, server.ca, tmp_path / f"stunnel-{name}"):
        return run_sipp(
            BENCH / flow.uac,
            f"127.0.0.1:{hop}",
            workdir=tmp_path / f"sipp-{name}",
            inf_csv=inf,
            rate=RATE,
            calls=calls,
            # The digest uri must be the Request-URI (SIPp puts "sip:" + -auth_uri).
            extra=["-auth_uri", f"{dialled}@{DOMAIN}"],
            call_length_ms=CALL_MS,
            timeout=SIPP_TIMEOUT,
            trace_logs=True,
        )


# -- checks ---------------------------------------------------------------------------


def _assert_sipp_clean(
    result: SippResult, successful: int, who: str, server: VoipsecServer
) -> None:
    detail = f"{who}:\n{result.error_tail()}\n--- voipsec\n{server.log_text()[-3000:]}"
    assert (result.successful, result.failed, result.returncode) == (successful, 0, 0), detail
    assert result.unexpected() == dict.fromkeys(result.unexpected(), 0), detail
    assert result.error_events() == [], detail


def _caller_call_ids(caller: SippResult, flow: Flow, calls: int) -> set[str]:
    lines = caller.log_lines(flow.caller_log + " ")
    ids = {m.group(1) for line in lines if (m := _CALL_ID.search(line))}
    assert len(ids) == calls, caller.error_tail()
    if flow.caller_log == "HANGUP":
        assert all(line.endswith(f"by={flow.hangup_by}") for line in lines), lines
    return ids


def _b_leg_invites(callee: SippResult, flow: Flow, calls: int) -> list[dict[str, str]]:
    """The B-leg INVITEs the callee logged, once each call finished as scripted."""
    done = callee.log_lines(f"DONE {flow.callee_done} ")
    assert len(done) == calls, callee.error_tail()
    invites = []
    for line in callee.log_lines("INVITE "):
        match = _INVITE_LOG.match(line)
        assert match is not None, line
        invites.append(match.groupdict())
    assert len(invites) == calls, callee.log_lines()
    return invites


def _assert_b_leg(
    invite: dict[str, str], a_leg_ids: set[str], ruri: str, to: str, caller: str = ALICE[0]
) -> None:
    assert invite["call_id"] not in a_leg_ids, invite
    assert invite["ruri"] == ruri, invite
    assert invite["from"].startswith(f"<sip:{caller}@{DOMAIN}>;tag="), invite
    assert "SIPpTag00" not in invite["from"], invite  # not the caller's From tag
    assert invite["to"].startswith(to), invite
    assert invite["via"].count("SIP/2.0/") == 1, invite  # voipsec's Via only


def _assert_cdrs(
    rows: list[dict[str, object]],
    flow: Flow,
    a_leg_ids: set[str],
    *,
    dialled: str,
    callee: str,
    trunk: str,
    user: str = ALICE[0],
) -> None:
    assert len(rows) == len(a_leg_ids), rows
    assert {row["call_id"] for row in rows} == a_leg_ids, rows
    for row in rows:
        expected = {
            "callee_dialled": dialled,
            "callee": callee,
            "user": user,
            "transport": "tls",
            "trunk": trunk,
            "disposition": flow.disposition,
            "status": flow.status,
            "hangup_by": flow.hangup_by,
        }
        assert {key: row[key] for key in expected} == expected, row
        assert user in str(row["caller"]), row
        start, end = float(str(row["start"])), float(str(row["end"]))
        assert end >= start, row
        billable = float(str(row["billable"]))
        if flow.answered:
            answer = float(str(row["answer"]))
            assert start <= answer <= end, row
            assert CALL_MS / 1000 - 0.1 <= billable <= CALL_MS / 1000 + BILLABLE_SLACK, row
        else:
            assert row["answer"] is None, row
            assert billable == 0.0, row


# -- tests ----------------------------------------------------------------------------

#: The international callers of ``calls_server``, one per flow: the shipped fraud rule
#: international-burst blocks a user's sixth international call in a minute, and each
#: flow makes CALLS of them (fraud state is per rule and user).
INTERNATIONAL_CALLERS = {name: (f"intl-{name.replace('_', '-')}", f"{name}-pw-1") for name in FLOWS}
#: The registered callees of ``calls_server``, one per flow: a binding the previous
#: flow's SIPp has not yet removed must not take this flow's calls.
CALLEES = {name: (f"bob-{name.replace('_', '-')}", f"{name}-pw-2") for name in FLOWS}
#: The emergency test's caller, of the most restricted class.
IVY = ("ivy", "ivy-secret-333")


@dataclass(frozen=True)
class CallsServer:
    """The module's shared server and the port its trunk is reached on (each test runs
    its own SIPp trunk there, one after the other)."""

    server: VoipsecServer
    trunk_port: int


@pytest.fixture(scope="module")
def calls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CallsServer]:
    """One server for the flows, the national call and the emergency call: the same
    configuration (MD5, the trunk for "+"), a caller per test where the fraud rules
    count per user (INTERNATIONAL_CALLERS, IVY) and a callee per registered flow
    (CALLEES), each test reading only its own calls' CDR rows."""
    tls_port = free_port()
    users = [(caller, "international") for caller in INTERNATIONAL_CALLERS.values()]
    users += [(callee, "national") for callee in CALLEES.values()]
    prepared = _server(
        tmp_path_factory.mktemp("calls"),
        trunk_port=tls_port,
        users=[*users, (IVY, "internal")],
    )
    with serving(prepared) as server:
        yield CallsServer(server, tls_port)


@pytest.mark.parametrize("name", list(FLOWS))
def test_registered_users_call_over_tls(
    calls_server: CallsServer, tmp_path: Path, name: str
) -> None:
    """alice (SIPp UAC) calls a user (registered SIPp UAS, like bob), both over TLS,
    CALLS times."""
    flow = FLOWS[name]
    server = calls_server.server
    user = CALLEES[name][0]
    with _registered_callee(server, tmp_path, flow, CALLS, CALLEES[name]) as (
        callee_run,
        contact,
    ):
        caller = _place_calls(server, tmp_path, flow, user, CALLS)
        callee = callee_run.wait(SIPP_TIMEOUT)
        _assert_sipp_clean(caller, CALLS, "caller", server)
        _assert_sipp_clean(callee, 1, "callee", server)  # its one call: the registration
        a_leg_ids = _caller_call_ids(caller, flow, CALLS)
        for invite in _b_leg_invites(callee, flow, CALLS):
            _assert_b_leg(invite, a_leg_ids, contact, f"<sip:{user}@{DOMAIN}>")
        rows = _wait_cdrs(server, CALLS, call_ids=a_leg_ids)
    _assert_cdrs(rows, flow, a_leg_ids, dialled=user, callee=user, trunk="")


@pytest.mark.parametrize("name", list(FLOWS))
def test_user_calls_trunk_over_tls(calls_server: CallsServer, tmp_path: Path, name: str) -> None:
    """A user of class international dials an international number: the call goes to
    the trunk over TLS, to a SIPp UAS behind stunnel."""
    flow = FLOWS[name]
    dialled, e164 = INTERNATIONAL
    server, tls_port = calls_server.server, calls_server.trunk_port
    user = INTERNATIONAL_CALLERS[name]
    with _trunk_callee(server, tmp_path, flow, CALLS, tls_port) as callee_run:
        caller = _place_calls(server, tmp_path, flow, dialled, CALLS, caller=user)
        callee = callee_run.wait(SIPP_TIMEOUT)
        _assert_sipp_clean(caller, CALLS, "caller", server)
        _assert_sipp_clean(callee, CALLS, "trunk", server)
        a_leg_ids = _caller_call_ids(caller, flow, CALLS)
        for invite in _b_leg_invites(callee, flow, CALLS):
            ruri = f"sip:{e164}@{TRUNK_DOMAIN}"
            _assert_b_leg(invite, a_leg_ids, ruri, f"<sip:{e164}@{TRUNK_DOMAIN}>", user[0])
        rows = _wait_cdrs(server, CALLS, call_ids=a_leg_ids)
    _assert_cdrs(rows, flow, a_leg_ids, dialled=dialled, callee=e164, trunk=TRUNK, user=user[0])


def test_national_number_to_trunk_with_default_class(
    calls_server: CallsServer, tmp_path: Path
) -> None:
    """A national number needs no more than the default class ("national")."""
    flow = FLOWS["caller_hangs_up"]
    dialled, e164 = NATIONAL
    server, tls_port = calls_server.server, calls_server.trunk_port
    calls = 3
    with _trunk_callee(server, tmp_path, flow, calls, tls_port) as callee_run:
        caller = _place_calls(server, tmp_path, flow, dialled, calls)
        callee = callee_run.wait(SIPP_TIMEOUT)
        _assert_sipp_clean(caller, calls, "caller", server)
        _assert_sipp_clean(callee, calls, "trunk", server)
        a_leg_ids = _caller_call_ids(caller, flow, calls)
        for invite in _b_leg_invites(callee, flow, calls):
            ruri = f"sip:{e164}@{TRUNK_DOMAIN}"
            _assert_b_leg(invite, a_leg_ids, ruri, f"<sip:{e164}@{TRUNK_DOMAIN}>")
        rows = _wait_cdrs(server, calls, call_ids=a_leg_ids)
    _assert_cdrs(rows, flow, a_leg_ids, dialled=dialled, callee=e164, trunk=TRUNK)


REFUSALS = {
    # alice keeps the default class "national" and dials an international number.
    "class_of_service": (
        Flow("call_uac_forbidden.xml", "", "FORBIDDEN", "", "rejected", 403, ""),
        INTERNATIONAL,
    ),
    # bob exists but has no registered contact.
    "unregistered_callee": (
        Flow("call_uac_unavailable.xml", "", "UNAVAILABLE", "", "no_answer", 480, ""),
        (BOB[0], BOB[0]),
    ),
}


@pytest.fixture(scope="module")
def refusing_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VoipsecServer]:
    """One server for both refusals: alice keeps the class national and bob never
    registers in either, and each reads only its own calls' CDR rows."""
    prepared = _server(tmp_path_factory.mktemp("refusals"), trunk_port=free_port())
    with serving(prepared) as server:
        yield server


@pytest.mark.parametrize("name", list(REFUSALS))
def test_calls_voipsec_refuses_itself(
    refusing_server: VoipsecServer, tmp_path: Path, name: str
) -> None:
    """Calls voipsec answers itself: nothing is sent on (the trunk's port has no
    listener, so a call wrongly routed there would fail differently), one CDR each."""
    server = refusing_server
    flow, (dialled, callee) = REFUSALS[name]
    calls = 3
    caller = _place_calls(server, tmp_path, flow, dialled, calls)
    _assert_sipp_clean(caller, calls, "caller", server)
    a_leg_ids = _caller_call_ids(caller, flow, calls)
    rows = _wait_cdrs(server, calls, call_ids=a_leg_ids)
    _assert_cdrs(rows, flow, a_leg_ids, dialled=dialled, callee=callee, trunk="")


def test_emergency_call_of_an_internal_user_reaches_the_trunk_and_is_alerted(
    calls_server: CallsServer, tmp_path: Path
) -> None:
    """Issue 18 item 4, a safety requirement: a user of the most restricted class
    ("internal"), dials 112; the call reaches the trunk (a SIPp UAS as the PSAP) as
    ``sip:112@trunk`` (not +44112), is answered, alerted (``emergency_call``) and
    marked "emergency" in its CDR. The same user dialling a national number gets 403."""
    flow = FLOWS["caller_hangs_up"]
    server, tls_port = calls_server.server, calls_server.trunk_port
    user = IVY[0]
    with _trunk_callee(server, tmp_path, flow, 1, tls_port) as callee_run:
        caller = _place_calls(server, tmp_path, flow, "112", 1, caller=IVY)
        callee = callee_run.wait(SIPP_TIMEOUT)
        _assert_sipp_clean(caller, 1, "caller", server)
        _assert_sipp_clean(callee, 1, "trunk", server)
        a_leg_ids = _caller_call_ids(caller, flow, 1)
        (invite,) = _b_leg_invites(callee, flow, 1)
        _assert_b_leg(
            invite, a_leg_ids, f"sip:112@{TRUNK_DOMAIN}", f"<sip:112@{TRUNK_DOMAIN}>", user
        )
        forbidden = Flow("call_uac_forbidden.xml", "", "FORBIDDEN", "", "rejected", 403, "")
        refused = _place_calls(
            server, tmp_path, forbidden, NATIONAL[0], 1, name="national", caller=IVY
        )
        _assert_sipp_clean(refused, 1, "national caller", server)
        refused_ids = _caller_call_ids(refused, forbidden, 1)
        # Only this test's calls (the module's other tests share the server).
        rows = _wait_cdrs(server, 2, call_ids=a_leg_ids | refused_ids)
        alerts: list[str] = []

        def alerted() -> bool:
            out = voipsec("alerts", "list", data_dir=server.data_dir).stdout
            alerts[:] = [line for line in out.splitlines() if "  emergency_call  " in line]
            return bool(alerts)

        wait_for(alerted, deadline=10, what="the emergency_call alert")
        log = server.log_text()
    assert f"emergency call from {user} (127.0.0.1:" in log, log[-3000:]
    (line,) = alerts
    assert line.split("  ", 1)[1].startswith(
        f"emergency_call  127.0.0.1  emergency call: {user}: dialled 112 from 127.0.0.1:"
    ), line
    assert line.endswith("; routed to trunk carrier"), line
    emergency = [r for r in rows if r["call_id"] in a_leg_ids]
    national = [r for r in rows if r["call_id"] in refused_ids]
    _assert_cdrs(emergency, flow, a_leg_ids, dialled="112", callee="112", trunk=TRUNK, user=user)
    _assert_cdrs(
        national,
        forbidden,
        refused_ids,
        dialled=NATIONAL[0],
        callee=NATIONAL[1],
        trunk="",
        user=user,
    )
    assert [(r["kind"], r["reason"]) for r in emergency + national] == [
        ("emergency", "normal clearing"),
        ("national", "national calls not allowed for class internal"),
    ]

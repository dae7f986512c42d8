"""CDRs in a real PostgreSQL server: `voipsec serve` with ``cdr.url`` set, a call from a
scripted TLS phone, and `voipsec cdr list` reading the row back; a call cut by kill -9
is closed as incomplete in PostgreSQL at the restart; bad URLs and an unreachable server
are one error line and exit 1, never showing the password."""

from __future__ import annotations

import json
import secrets
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.integration.test_monitor import NATIONAL, _prepare
from tests.integration.test_monitor_exports import _killed_during_a_call
from tests.peers import postgres
from tests.peers.phone import SDP, ScriptedPhone
from tests.peers.postgres import PASSWORD
from tests.peers.proc import free_port, wait_for
from tests.peers.voipsec import VOIPSEC, VoipsecServer, prepare, serving, voipsec
from voipsec.sip.message import Response

pytestmark = pytest.mark.peers


ALICE = ("alice", "alice-password")
BOB = ("bob", "bob-password")


@pytest.fixture
def server(tmp_path: Path, postgres_url: str) -> Iterator[VoipsecServer]:
    prepared = prepare(
        tmp_path / "data",
        users=[ALICE, BOB],
        settings=[("cdr.url", json.dumps(postgres_url))],
    )
    with serving(prepared) as running:
        yield running


def _cdrs(data_dir: Path) -> list[dict[str, object]]:
    rows = json.loads(voipsec("cdr", "list", "--format", "json", data_dir=data_dir).stdout)
    assert isinstance(rows, list)
    return rows


def _final(phone: ScriptedPhone, method: str) -> Response:
    """The next response to ``method`` (2xx retransmissions of the INVITE skipped)."""
    while True:
        response = phone.response()
        if response.headers.get("cseq", "").endswith(method):
            return response


def _sqlite_cdr_count(data_dir: Path) -> int:
    """Rows in the cdrs table of voipsec.db (0 when CDRs go to PostgreSQL)."""
    return _sqlite_count(data_dir, "cdrs")


def _sqlite_count(data_dir: Path, table: str) -> int:
    """Rows in ``table`` of voipsec.db (cdrs, devices: 0 when they go to PostgreSQL)."""
    local = sqlite3.connect(data_dir / "voipsec.db")
    try:
        (count,) = local.execute(f"SELECT COUNT(*) FROM {table}").fetchone()  # noqa: S608
    finally:
        local.close()
    return int(count)


def _one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 1, proc
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr and PASSWORD not in proc.stderr + proc.stdout
    return lines[0]


def test_cdr_postgres_a_call_is_listed_from_postgres(
    server: VoipsecServer, postgres_url: str
) -> None:
    bob = ScriptedPhone(server, *BOB)
    bob.register()
    alice = ScriptedPhone(server, *ALICE)
    alice.register()  # a device of the inventory: its INVITE's SRTP offer is recorded
    assert alice.invite("bob", "pg-call-1").status == 100
    b_invite = bob.request()
    bob.answer(b_invite, 200, "OK", SDP)
    ok = _final(alice, "INVITE")
    assert ok.status == 200
    assert bob.request().method == "ACK"
    dialog = (
        f"From: <sip:alice@localhost>;tag=caller-tag\r\nTo: <sip:bob@localhost>;tag={ok.to.tag}"
        f"\r\nCall-ID: {ok.call_id}\r\n"
    )
    via = f"Via: SIP/2.0/TLS {alice.host}:{alice.port};branch=z9hG4bK"
    alice.send_raw(
        f"ACK sip:bob@localhost SIP/2.0\r\n{via}{secrets.token_hex(6)}\r\nMax-Forwards: 70\r\n"
        f"{dialog}CSeq: 2 ACK\r\nContent-Length: 0\r\n\r\n"
    )
    alice.send_raw(
        f"BYE sip:bob@localhost SIP/2.0\r\n{via}{secrets.token_hex(6)}\r\nMax-Forwards: 70\r\n"
        f"{dialog}CSeq: 3 BYE\r\nContent-Length: 0\r\n\r\n"
    )
    assert _final(alice, "BYE").status == 200
    bye = bob.request()
    assert bye.method == "BYE"
    bob.answer(bye, 200, "OK")
    alice.close()
    bob.close()

    found: list[dict[str, object]] = []

    def closed() -> bool:
        found[:] = _cdrs(server.data_dir)
        return len(found) == 1 and bool(found[0]["disposition"])

    wait_for(closed, deadline=15.0, what="the CDR of the call, closed")
    (row,) = found
    assert (row["call_id"], row["caller"], row["callee"], row["user"]) == (
        "pg-call-1",
        "sip:alice@localhost",
        "bob",
        "alice",
    )
    assert (row["disposition"], row["status"], row["hangup_by"]) == ("answered", 200, "caller")
    assert row["transport"] == "tls"
    # The row is in PostgreSQL, and not in voipsec.db.
    with psycopg.connect(postgres_url) as conn:
        in_pg = conn.execute('SELECT id, call_id, disposition, "user" FROM cdrs').fetchall()
    assert in_pg == [(row["id"], "pg-call-1", "answered", "alice")]
    assert _sqlite_cdr_count(server.data_dir) == 0

    # The device inventory went there too (storage/devices_db.py): the REGISTERs are
    # listed by `voipsec devices list`, read from PostgreSQL, with the SRTP suites of
    # alice's offer (tests/peers/phone.py SDP); voipsec.db has no row.
    devices: list[dict[str, object]] = []

    def listed() -> bool:
        out = voipsec("devices", "list", "--format", "json", data_dir=server.data_dir).stdout
        devices[:] = json.loads(out)
        by_user = {d["user"]: d for d in devices}
        return len(devices) == 2 and bool(by_user.get("alice", {}).get("srtp_suites"))

    wait_for(listed, deadline=15.0, what="the two devices, alice's with its SRTP offer")
    # Which REGISTER reached the writer first decides ids and listing order: by user.
    by_user = {d["user"]: d for d in devices}
    a_device, device = by_user["alice"], by_user["bob"]
    assert (device["user"], device["transport"], device["registrations"]) == ("bob", "tls", 1)
    assert (a_device["user"], a_device["srtp_suites"]) == ("alice", "AES_CM_128_HMAC_SHA1_80")
    with psycopg.connect(postgres_url) as conn:
        in_pg = conn.execute(
            'SELECT id, "user", status, registrations, srtp_suites FROM devices ORDER BY "user"'
        ).fetchall()
    assert in_pg == [
        (a_device["id"], "alice", a_device["status"], 1, "AES_CM_128_HMAC_SHA1_80"),
        (device["id"], "bob", device["status"], 1, ""),
    ]
    assert _sqlite_count(server.data_dir, "devices") == 0


def test_cdr_postgres_kill_9_during_a_call_cdr_incomplete(
    tmp_path: Path, postgres_url: str
) -> None:
    """kill -9 with an answered call up (a SIPp caller and trunk, as in test_monitor):
    the restarted server closes its open row in PostgreSQL as incomplete, keeping its
    start and answer times; voipsec.db never holds a CDR."""
    dialled, e164 = NATIONAL
    tls_port = free_port()
    prepared = _prepare(
        tmp_path, trunk_port=tls_port, settings=[("cdr.url", json.dumps(postgres_url))]
    )
    with _killed_during_a_call(prepared, tmp_path, dialled, tls_port) as before:
        pass
    with psycopg.connect(postgres_url) as conn:
        left_open = conn.execute('SELECT id, disposition, "end" FROM cdrs').fetchall()
    assert left_open == [(before["id"], "", None)]
    with serving(prepared) as server:
        (row,) = _cdrs(server.data_dir)
    expected = {
        "id": before["id"],
        "call_id": before["call_id"],
        "callee": e164,
        "start": before["start"],
        "answer": before["answer"],
        "disposition": "incomplete",
        "status": None,
        "reason": "server restarted",
        "hangup_by": "system",
    }
    assert {key: row[key] for key in expected} == expected, row
    assert float(str(row["end"])) >= float(str(before["answer"])), row
    # What the CLI listed is the row in PostgreSQL, and not in voipsec.db.
    with psycopg.connect(postgres_url) as conn:
        in_pg = conn.execute(
            'SELECT id, call_id, "start", answer, "end", disposition, reason, hangup_by FROM cdrs'
        ).fetchall()
    assert in_pg == [
        (
            before["id"],
            before["call_id"],
            before["start"],
            before["answer"],
            row["end"],
            "incomplete",
            "server restarted",
            "system",
        )
    ]
    assert _sqlite_cdr_count(prepared.data_dir) == 0


def test_cdr_postgres_bad_scheme_is_refused_without_the_password(tmp_path: Path) -> None:
    data = tmp_path / "data"
    voipsec("init", data_dir=data)
    bad = voipsec(
        "config",
        "set",
        "cdr.url",
        f'"mysql://voipsec:{PASSWORD}@db/cdrs"',
        data_dir=data,
        check=False,
    )
    line = _one_error_line(bad)
    assert line == (
        f'voipsec: config error: {data / "voipsec.toml"}: cdr.url: expected "" (SQLite in '
        "the data directory) or postgresql://USER@HOST:PORT/DATABASE"
    )
    assert voipsec("config", "get", "cdr.url", data_dir=data).stdout.strip() == ""


def test_cdr_postgres_unreachable_server_stops_serve_with_one_line(tmp_path: Path) -> None:
    port = free_port()
    url = f"postgresql://voipsec:{PASSWORD}@127.0.0.1:{port}/cdrs"
    prepared = prepare(tmp_path / "data", settings=[("cdr.url", json.dumps(url))])
    proc = subprocess.run(
        [*VOIPSEC, "serve", "--dir", str(prepared.data_dir)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    line = _one_error_line(proc)
    assert line.startswith(
        "voipsec: error: cannot connect to the CDR database "
        f"postgresql://voipsec:***@127.0.0.1:{port}/cdrs: "
    )
    assert "Connection refused" in line
    listed = voipsec("cdr", "list", data_dir=prepared.data_dir, check=False)
    assert _one_error_line(listed).startswith(
        "voipsec: error: cannot connect to the CDR database postgresql://voipsec:***@"
    )


def test_cdr_postgres_wrong_password_stops_serve_with_one_line(
    tmp_path: Path, postgres_server: postgres.PostgresServer, postgres_url: str
) -> None:
    dbname = postgres_url.rsplit("/", 1)[1]
    url = postgres_server.url(dbname, password="Not-The-Pa55word")
    prepared = prepare(tmp_path / "data", settings=[("cdr.url", json.dumps(url))])
    proc = subprocess.run(
        [*VOIPSEC, "serve", "--dir", str(prepared.data_dir)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    line = _one_error_line(proc)
    assert line.startswith("voipsec: error: cannot connect to the CDR database postgresql://")
    assert 'password authentication failed for user "voipsec"' in line
    assert "Not-The-Pa55word" not in proc.stderr

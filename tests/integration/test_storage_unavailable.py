"""The CDR database goes away under load (docs/storage.md): calls keep being answered.

A SIPp caller (alice, over stunnel) calls a national number routed to a SIPp trunk, as
in test_monitor. (a) PostgreSQL is stopped after the first call: three more calls are
answered with no failure, and their rows are in PostgreSQL once it is back. (b) voipsec.db
is held by another connection's BEGIN EXCLUSIVE: the same, no row is written while the
lock is held. (c) With ``[cdr] max_pending = 2`` and PostgreSQL stopped, the writes past
the limit are dropped and alerted once (`voipsec alerts list`, with the count), while
the calls still go through; the writes queued before the limit arrive once it is back.
(d) The store writer (bans, bindings, alerts): with voipsec.db locked, a phone's REGISTER
is answered 200 and a flooder is banned and stays banned (the once-a-second re-read of
the stored bans keeps the queued one); once the lock is released the binding, the ban
and its alert are in voipsec.db.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ALICE
from tests.integration.test_edge import FLOODER, _edge_server, _flood, _options
from tests.integration.test_monitor import (
    NATIONAL,
    _alerts,
    _assert_clean,
    _call,
    _cdrs,
    _prepare,
    _trunk,
    _wait_cdrs,
)
from tests.peers.postgres import PostgresServer, running_postgres
from tests.peers.proc import free_port, wait_for
from tests.peers.sipclient import TlsSipClient
from tests.peers.voipsec import VoipsecServer, serving, voipsec

pytestmark = pytest.mark.peers

#: Calls made while the database is unavailable.
DOWN_CALLS = 3
#: What voipsec logs for a call it routed before the call's CDR row was committed.
ROUTED_EARLY = "routed before its CDR row was written"


@pytest.fixture
def own_postgres() -> Iterator[PostgresServer]:
    """A cluster of this test's own: the session's one must not be stopped."""
    with running_postgres() as server:
        yield server


def _first_call(server: VoipsecServer, workdir: Path, dialled: str) -> None:
    _assert_clean(_call(server, workdir / "up", dialled), 1, "caller, database up", server)
    _wait_cdrs(server, 1)


def _answered_rows(server: VoipsecServer, count: int) -> list[dict[str, object]]:
    rows = _wait_cdrs(server, count, deadline=30.0)
    assert {str(row["disposition"]) for row in rows.values()} == {"answered"}, rows
    assert {int(str(row["status"])) for row in rows.values()} == {200}, rows
    return list(rows.values())


def test_storage_postgres_stopped_calls_answered_rows_written_when_back(
    tmp_path: Path, own_postgres: PostgresServer
) -> None:
    dialled, e164 = NATIONAL
    tls_port = free_port()
    url = own_postgres.create_database()
    prepared = _prepare(tmp_path, trunk_port=tls_port, settings=[("cdr.url", json.dumps(url))])
    with serving(prepared) as server, _trunk(server, tmp_path, tls_port, calls=1 + DOWN_CALLS):
        _first_call(server, tmp_path, dialled)
        # A busy machine can make even the first call's insert outlast the wait: count
        # only what the calls made while PostgreSQL is stopped log.
        routed_early = server.log_text().count(ROUTED_EARLY)
        own_postgres.stop()
        down = _call(server, tmp_path / "down", dialled, calls=DOWN_CALLS)
        _assert_clean(down, DOWN_CALLS, "caller, PostgreSQL stopped", server)
        wait_for(
            lambda: "CDR database unavailable" in server.log_text(),
            what="the writer to log the outage",
        )
        assert server.log_text().count(ROUTED_EARLY) - routed_early == DOWN_CALLS
        own_postgres.start()
        rows = _answered_rows(server, 1 + DOWN_CALLS)
        assert {row["callee"] for row in rows} == {e164}
        wait_for(
            lambda: "CDR database available again" in server.log_text(),
            what="the writer to log the recovery",
        )


def test_storage_sqlite_locked_calls_answered_rows_written_when_released(
    tmp_path: Path,
) -> None:
    dialled, _ = NATIONAL
    tls_port = free_port()
    prepared = _prepare(tmp_path, trunk_port=tls_port)
    with serving(prepared) as server, _trunk(server, tmp_path, tls_port, calls=1 + DOWN_CALLS):
        _first_call(server, tmp_path, dialled)
        routed_early = server.log_text().count(ROUTED_EARLY)  # as in the PostgreSQL test
        locker = sqlite3.connect(server.data_dir / "voipsec.db", isolation_level=None)
        try:
            locker.execute("BEGIN EXCLUSIVE")
            down = _call(server, tmp_path / "down", dialled, calls=DOWN_CALLS)
            _assert_clean(down, DOWN_CALLS, "caller, voipsec.db locked", server)
            # Nothing was written past the lock: the rows wait in the writer's queue.
            assert locker.execute("SELECT COUNT(*) FROM cdrs").fetchone() == (1,)
            locker.execute("COMMIT")
        finally:
            locker.close()
        _answered_rows(server, 1 + DOWN_CALLS)
        # Each call waited CDR_OPEN_WAIT for its row, then was routed anyway.
        assert server.log_text().count(ROUTED_EARLY) - routed_early == DOWN_CALLS


def test_storage_overflow_past_max_pending_is_counted_and_alerted(
    tmp_path: Path, own_postgres: PostgresServer
) -> None:
    dialled, _ = NATIONAL
    tls_port = free_port()
    url = own_postgres.create_database()
    settings = [("cdr.url", json.dumps(url)), ("cdr.max_pending", "2")]
    prepared = _prepare(tmp_path, trunk_port=tls_port, settings=settings)
    with serving(prepared) as server, _trunk(server, tmp_path, tls_port, calls=1 + DOWN_CALLS):
        _first_call(server, tmp_path, dialled)
        own_postgres.stop()
        # One call at a time (one every 2 s; a call lasts under 1 s): the first fills
        # the queue with its open row and its answer, everything after is dropped.
        down = _call(server, tmp_path / "down", dialled, calls=DOWN_CALLS, rate=0.5)
        _assert_clean(down, DOWN_CALLS, "caller, PostgreSQL stopped, queue full", server)
        # The alert is written by the store writer: poll for it.
        overflow: list[str] = []

        def alerted() -> bool:
            overflow[:] = [line for line in _alerts(server) if "  cdr_overflow  " in line]
            return bool(overflow)

        wait_for(alerted, what="the cdr_overflow alert")
        assert len(overflow) == 1, _alerts(server)
        assert overflow[0].split("  ", 3)[2:] == [
            "cdr",
            "CDR writes dropped: cdr: 1 CDR write(s) dropped so far: the CDR database is "
            "unavailable and 2 writes are queued ([cdr] max_pending); dropped",
        ]
        own_postgres.start()
        # The two queued writes (the first down call's open row and its answer) arrive;
        # its end was dropped, so the row stays open until the next start closes it.
        rows: list[dict[str, object]] = []

        def written() -> bool:
            rows[:] = _cdrs(server)
            return len(rows) == 2 and rows[1]["answer"] is not None

        try:
            wait_for(written, deadline=30.0, what="the queued writes")
        except AssertionError as exc:
            raise AssertionError(f"{exc}: {rows}\n{server.log_text()[-3000:]}") from None
        assert [row["disposition"] for row in rows] == ["answered", ""]


#: Rows the server writes through the store writer, counted by the locking connection.
_COUNTS = (
    "SELECT COUNT(*) FROM bindings",
    "SELECT COUNT(*) FROM bans",
    "SELECT COUNT(*) FROM alerts",
)


def test_storage_sqlite_locked_register_answered_ban_held_rows_written_when_released(
    tmp_path: Path,
) -> None:
    prepared, udp = _edge_server(tmp_path, ban=3600)
    with serving(prepared) as server:
        locker = sqlite3.connect(server.data_dir / "voipsec.db", isolation_level=None)
        try:
            locker.execute("BEGIN EXCLUSIVE")
            with TlsSipClient(server.host, server.port, server.ca) as client:
                assert client.register(*ALICE, expires=600).status == 200
            _flood(tmp_path, udp)
            wait_for(
                lambda: "store database unavailable" in server.log_text(),
                deadline=15,
                what="the store writer to log the outage",
            )
            # Several re-reads of the stored bans later, the queued ban still holds.
            assert _options(FLOODER, udp, "locked") is None
            # Nothing was written past the lock: the writes wait in the writer's queue.
            assert [locker.execute(q).fetchone()[0] for q in _COUNTS] == [0, 0, 0]
            locker.execute("COMMIT")
        finally:
            locker.close()
        [binding] = server.wait_bindings("alice", 1)
        assert str(binding["contact"]).startswith("sip:alice@127.0.0.1:"), binding
        assert str(binding["source"]).startswith("tls:127.0.0.1:"), binding

        def listed() -> str:
            return voipsec("bans", "list", data_dir=server.data_dir).stdout

        listing = str(wait_for(lambda: FLOODER in listed() and listed(), what="the ban"))
        # The rate limit or an IDS rule, whichever the flood tripped first: as logged.
        logged = re.search(rf"banned {FLOODER} for 3600 s \(UDP only\): (.+)", server.log_text())
        assert logged is not None, server.log_text()[-3000:]
        assert f"  {logged.group(1)}  (UDP only)" in listing, listing
        alerts = [line for line in _alerts(server) if f"  ban  {FLOODER}  " in line]
        assert len(alerts) == 1, _alerts(server)
        wait_for(
            lambda: "store database available again" in server.log_text(),
            what="the store writer to log the recovery",
        )
        assert _options(FLOODER, udp, "released") is None

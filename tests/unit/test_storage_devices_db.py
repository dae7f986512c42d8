"""The inventory over the CDR connection adapters (voipsec.storage.devices_db): the same
statements in both dialects, bounds kept, the table created on open; the DeviceWriter
queues without blocking, counts what is past MAX_PENDING_DEVICE_WRITES, keeps its
batch through an outage and writes it when the database is back. PostgreSQL itself is
tests/integration/test_cdr_postgres.py's."""

from __future__ import annotations

import json
import logging
import socket
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.unit.test_storage_devices import T0, _seen
from voipsec.cli import app
from voipsec.records import DeviceSrtpOffer, StoreUnavailable
from voipsec.storage.cdr import POSTGRESQL, SQLITE, _SqliteConnection
from voipsec.storage.devices import DEVICES_STATEMENTS, UPDATE_SRTP_SUITES, UPSERT_DEVICE
from voipsec.storage.devices_db import MAX_PENDING_DEVICE_WRITES, DevicesDatabase, DeviceWriter


@pytest.fixture
def database(tmp_path: Path) -> Iterator[DevicesDatabase]:
    db = sqlite3.connect(tmp_path / "pg-like.db", isolation_level=None, check_same_thread=False)
    devices = DevicesDatabase(_SqliteConnection(db, owned=True), SQLITE)
    yield devices
    devices.close()


def test_devices_db_postgresql_spelling() -> None:
    table = POSTGRESQL.sql(DEVICES_STATEMENTS[0])
    assert "id BIGSERIAL PRIMARY KEY," in table
    assert "first_seen DOUBLE PRECISION NOT NULL" in table
    assert "cert_expiry DOUBLE PRECISION," in table
    upsert = POSTGRESQL.sql(UPSERT_DEVICE)
    assert "?" not in upsert and upsert.count("%s") == 21
    assert "registrations = devices.registrations + 1" in upsert
    assert "srtp_suites TEXT NOT NULL DEFAULT ''," in table
    assert POSTGRESQL.sql(UPDATE_SRTP_SUITES) == (
        'UPDATE devices SET srtp_suites = %s WHERE "user" = %s AND device_key = %s'
    )


def test_devices_db_round_trip_and_upsert(database: DevicesDatabase) -> None:
    database.write([_seen("alice", "k1"), _seen("bob", "k1")])
    database.write([_seen("alice", "k1", time=T0 + 60, status="ok", reasons=())])
    alice, bob = database.devices()
    assert (alice.id, alice.seen.user, alice.seen.status, alice.seen.reasons) == (
        1,
        "alice",
        "ok",
        (),
    )
    assert (alice.first_seen, alice.seen.time, alice.registrations) == (T0, T0 + 60, 2)
    assert bob.seen.reasons == ("firmware 1.0.2.25 affected by CVE-2026-2329; upgrade to 1.0.7.81",)
    assert [r.seen.user for r in database.devices("bob")] == ["bob"]
    assert database.device(2) == bob
    assert database.device(9) is None


def test_devices_db_bounds_drop_the_least_recently_seen(database: DevicesDatabase) -> None:
    database.write(
        [_seen("alice", f"k{i}", time=T0 + i) for i in range(3)],
        max_per_user=2,
    )
    assert [r.seen.key for r in database.devices("alice")] == ["k1", "k2"]
    database.write([_seen("bob", "k0", time=T0 + 10)], max_per_user=2, max_total=2)
    assert [(r.seen.user, r.seen.key) for r in database.devices()] == [
        ("alice", "k2"),
        ("bob", "k0"),
    ]


def test_devices_db_srtp_offer_and_the_column_added_to_an_older_table(tmp_path: Path) -> None:
    path = tmp_path / "pg-like.db"
    db = sqlite3.connect(path, isolation_level=None)
    # The table as the inventory made it before the SRTP offers were recorded.
    old = DEVICES_STATEMENTS[0].replace("    srtp_suites TEXT NOT NULL DEFAULT '',\n", "")
    db.execute(SQLITE.sql(old))
    db.close()
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    database = DevicesDatabase(_SqliteConnection(conn, owned=True), SQLITE)
    try:
        database.write(
            [_seen("alice", "k1"), DeviceSrtpOffer(user="alice", key="k1", suites="dtls")]
        )
        database.write([_seen("alice", "k1", time=T0 + 60)])
        [row] = database.devices()
        assert (row.registrations, row.srtp_suites) == (2, "dtls")
    finally:
        database.close()


class _Flaky(DeviceWriter):
    """A DeviceWriter on SQLite whose first connect fails like an unreachable server."""

    def __init__(
        self, path: Path, *, max_pending: int = MAX_PENDING_DEVICE_WRITES, retry: float = 0.5
    ) -> None:
        super().__init__("postgresql://unused", max_pending=max_pending, retry_interval=retry)
        self.path = path
        self.attempts = 0

    def _connect(self) -> DevicesDatabase:
        self.attempts += 1
        if self.attempts == 1:
            raise StoreUnavailable("cannot connect to the CDR database (test)")
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        return DevicesDatabase(_SqliteConnection(db, owned=True), SQLITE)


def test_device_writer_outage_keeps_the_batch_and_writes_it_later(tmp_path: Path) -> None:
    writer = _Flaky(tmp_path / "inventory.db", retry=0.0)
    writer.save_devices([_seen("alice", "k1"), _seen("bob", "k1")])
    writer.start()
    assert writer.stop() == 0
    stats = writer.statistics()
    assert (writer.attempts, stats.retries, stats.written, stats.overflowed) == (2, 1, 2, 0)
    db = sqlite3.connect(tmp_path / "inventory.db")
    reopened = DevicesDatabase(_SqliteConnection(db, owned=True), SQLITE)
    assert [r.seen.user for r in reopened.devices()] == ["alice", "bob"]
    reopened.close()


def test_device_writer_drops_past_its_queue_and_logs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    assert MAX_PENDING_DEVICE_WRITES == 10_000
    writer = _Flaky(tmp_path / "inventory.db", max_pending=2)  # not started: nothing drains
    with caplog.at_level(logging.ERROR, logger="voipsec.storage.devices_db"):
        writer.save_devices([_seen("alice", f"k{i}") for i in range(3)])
    stats = writer.statistics()
    assert (stats.pending, stats.overflowed) == (2, 1)
    assert [r.getMessage() for r in caplog.records] == [
        "device inventory queue full (2 operations): 1 dropped so far"
    ]
    with pytest.raises(ValueError, match="max_pending must be at least 1"):
        DeviceWriter("postgresql://unused", max_pending=0)


def test_devices_cli_unreachable_postgres_is_one_error(tmp_path: Path) -> None:
    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"postgresql://voipsec:sekrit@127.0.0.1:{port}/voipsec"
    result = CliRunner().invoke(app, ["init", "--dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(
        app, ["config", "set", "cdr.url", json.dumps(url), "--dir", str(tmp_path)]
    )
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(app, ["devices", "list", "--dir", str(tmp_path)])
    assert result.exit_code == 1
    [line] = result.stderr.splitlines()
    assert line.startswith("voipsec: error: cannot connect to the CDR database postgresql://")
    assert "sekrit" not in result.stderr

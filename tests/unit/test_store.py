"""The store (voipsec.storage: store, cdr): CDRs, classes of service, migration, file mode.

Every CDR test runs twice: with CDRs in voipsec.db (SQLite) and in a real PostgreSQL
server (tests/peers/postgres.py), through the same Store methods.
"""

from __future__ import annotations

import contextlib
import dataclasses
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.peers.postgres import PASSWORD, PostgresServer
from voipsec.config import CLASSES_OF_SERVICE
from voipsec.storage import (
    CDR_FIELDS,
    DB_NAME,
    DEFAULT_CLASS,
    MAX_CDR_ENCRYPTION,
    MAX_CDR_FIELD,
    MAX_CDR_MEDIA,
    CdrRecord,
    CdrStart,
    Store,
    StoreError,
    check_url,
    redact_url,
)
from voipsec.storage import cdr as cdrdb

T0 = 1_800_000_000.0
REALM = "example.test"

# The users table as created by voipsec before classes of service.
OLD_USERS_SCHEMA = """
CREATE TABLE users (
    name TEXT PRIMARY KEY,
    ha1_sha256 TEXT NOT NULL,
    ha1_md5 TEXT NOT NULL,
    realm TEXT NOT NULL,
    created REAL NOT NULL
);
INSERT INTO users VALUES ('olduser', 'x', 'y', 'example.test', 1.0);
"""


@pytest.fixture(params=["sqlite", "postgresql"])
def cdr_url(request: pytest.FixtureRequest) -> str:
    """'' (CDRs in voipsec.db) or the URL of a new PostgreSQL database."""
    if request.param == "sqlite":
        return ""
    url = request.getfixturevalue("postgres_url")
    assert isinstance(url, str)
    return url


@pytest.fixture
def store(tmp_path: Path, cdr_url: str) -> Iterator[Store]:
    opened = Store(tmp_path / DB_NAME, cdr_url=cdr_url)
    yield opened
    opened.close()


@pytest.fixture
def local_store(tmp_path: Path) -> Iterator[Store]:
    """A store with everything in voipsec.db (for the tests that are not about CDRs)."""
    opened = Store(tmp_path / DB_NAME)
    yield opened
    opened.close()


def _read_cdrs(tmp_path: Path, cdr_url: str, query: str) -> list[tuple[object, ...]]:
    """``query`` run on a connection of its own (another process's view)."""
    if not cdr_url:
        other = sqlite3.connect(tmp_path / DB_NAME)
        try:
            return other.execute(query).fetchall()
        finally:
            other.close()
    with psycopg.connect(cdr_url) as conn:
        return conn.execute(query).fetchall()


def _start(start: float = T0, **changes: str) -> CdrStart:
    fields: dict[str, str] = {
        "call_id": "a84b4c76e66710@pc33.example.test",
        "caller": "alice",
        "callee_dialled": "02071234567",
        "callee": "+442071234567",
        "user": "alice",
        "source": "192.0.2.1:40000",
        "transport": "tls",
        "tls_identity": "sip:alice@example.test",
        "trunk": "carrier",
        "user_agent": "baresip v3.10.1",
    }
    fields.update(changes)
    return CdrStart(start=start, **fields)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# -- file ---------------------------------------------------------------------------


def test_store_file_created_0600_and_kept_0600(tmp_path: Path) -> None:
    path = tmp_path / DB_NAME
    store = Store(path)
    store.cdr_start(_start())
    assert _mode(path) == 0o600
    store.close()
    path.chmod(0o644)
    reopened = Store(path)
    try:
        assert _mode(path) == 0o600
        for suffix in ("-wal", "-shm"):
            side = Path(f"{path}{suffix}")
            if side.exists():
                assert _mode(side) == 0o600
    finally:
        reopened.close()


# -- CDRs ---------------------------------------------------------------------------


def test_store_cdr_table_columns_are_the_record_fields(store: Store) -> None:
    assert tuple(store.cdr_db.columns()) == CDR_FIELDS
    assert tuple(f.name for f in dataclasses.fields(CdrRecord)) == CDR_FIELDS


def test_store_cdr_answered_call_round_trip(store: Store) -> None:
    cdr_id = store.cdr_start(_start())
    store.cdr_answer(cdr_id, T0 + 4.0)
    store.cdr_end(
        cdr_id,
        end=T0 + 64.5,
        disposition="answered",
        status=200,
        reason="OK",
        hangup_by="caller",
    )
    assert store.cdrs() == [
        CdrRecord(
            id=cdr_id,
            call_id="a84b4c76e66710@pc33.example.test",
            caller="alice",
            callee_dialled="02071234567",
            callee="+442071234567",
            user="alice",
            source="192.0.2.1:40000",
            transport="tls",
            tls_identity="sip:alice@example.test",
            trunk="carrier",
            user_agent="baresip v3.10.1",
            start=T0,
            answer=T0 + 4.0,
            end=T0 + 64.5,
            duration=64.5,
            billable=60.5,
            disposition="answered",
            status=200,
            reason="OK",
            hangup_by="caller",
        )
    ]
    assert store.cdr(cdr_id) == store.cdrs()[0]


def test_store_cdr_in_progress_row_has_empty_disposition(store: Store) -> None:
    cdr_id = store.cdr_start(_start(user_agent="", tls_identity=""))
    record = store.cdr(cdr_id)
    assert (record.answer, record.end, record.duration, record.billable) == (
        None,
        None,
        None,
        None,
    )
    assert (record.disposition, record.status, record.reason, record.hangup_by) == (
        "",
        None,
        "",
        "",
    )
    assert (record.user_agent, record.tls_identity) == ("", "")


def test_store_cdr_unanswered_call_bills_nothing(store: Store) -> None:
    cdr_id = store.cdr_start(_start())
    store.cdr_end(
        cdr_id, end=T0 + 30.0, disposition="no_answer", status=408, reason="", hangup_by=""
    )
    record = store.cdr(cdr_id)
    assert (record.duration, record.billable, record.status) == (30.0, 0.0, 408)
    assert (record.disposition, record.hangup_by) == ("no_answer", "")


def test_store_cdr_start_is_committed_at_once(store: Store, tmp_path: Path, cdr_url: str) -> None:
    cdr_id = store.cdr_start(_start())
    assert _read_cdrs(tmp_path, cdr_url, "SELECT id, disposition FROM cdrs") == [(cdr_id, "")]


def test_store_cdr_first_answer_and_first_end_win(store: Store) -> None:
    cdr_id = store.cdr_start(_start())
    store.cdr_answer(cdr_id, T0 + 1.0)
    store.cdr_answer(cdr_id, T0 + 2.0)
    store.cdr_end(
        cdr_id, end=T0 + 10.0, disposition="answered", status=200, reason="", hangup_by="callee"
    )
    store.cdr_end(
        cdr_id, end=T0 + 20.0, disposition="failed", status=500, reason="", hangup_by="system"
    )
    store.cdr_answer(cdr_id, T0 + 3.0)
    record = store.cdr(cdr_id)
    assert (record.answer, record.end, record.billable) == (T0 + 1.0, T0 + 10.0, 9.0)
    assert (record.disposition, record.hangup_by) == ("answered", "callee")


def test_store_cdr_clock_stepping_back_gives_zero_not_negative(store: Store) -> None:
    cdr_id = store.cdr_start(_start())
    store.cdr_answer(cdr_id, T0 + 5.0)
    store.cdr_end(
        cdr_id, end=T0 - 1.0, disposition="answered", status=200, reason="", hangup_by="caller"
    )
    record = store.cdr(cdr_id)
    assert (record.duration, record.billable) == (0.0, 0.0)


def test_store_cdr_unknown_id(store: Store) -> None:
    with pytest.raises(StoreError, match=r"^no CDR 99$"):
        store.cdr_answer(99, T0)
    with pytest.raises(StoreError, match=r"^no CDR 99$"):
        store.cdr_end(99, end=T0, disposition="failed", status=500, reason="", hangup_by="")
    with pytest.raises(StoreError, match=r"^no CDR 99$"):
        store.cdr(99)


def test_store_cdr_end_refuses_unknown_disposition_and_hangup_by(store: Store) -> None:
    cdr_id = store.cdr_start(_start())
    with pytest.raises(StoreError, match=r"^invalid CDR disposition ''$"):
        store.cdr_end(cdr_id, end=T0, disposition="", status=500, reason="", hangup_by="")
    with pytest.raises(StoreError, match=r"^invalid CDR hangup_by 'nobody'$"):
        store.cdr_end(
            cdr_id, end=T0, disposition="failed", status=500, reason="", hangup_by="nobody"
        )
    assert store.cdr(cdr_id).disposition == ""


def test_store_cdr_text_over_limit_is_truncated(store: Store) -> None:
    at_limit = "a" * MAX_CDR_FIELD
    hostile = "Friendly-Scanner/" + "x" * (MAX_CDR_FIELD * 40)
    cdr_id = store.cdr_start(_start(user_agent=hostile, caller=at_limit, callee="b" * 10_000))
    store.cdr_end(
        cdr_id, end=T0, disposition="rejected", status=403, reason="r" * 5_000, hangup_by=""
    )
    record = store.cdr(cdr_id)
    assert record.user_agent == hostile[:MAX_CDR_FIELD]
    assert record.caller == at_limit
    assert record.callee == "b" * MAX_CDR_FIELD
    assert record.reason == "r" * MAX_CDR_FIELD


def test_store_cdr_control_format_and_surrogate_characters_replaced(store: Store) -> None:
    cdr_id = store.cdr_start(
        _start(user_agent="evil\x1b[2J\u202ephone\udcff", caller="al\x00ice", callee="bö")
    )
    record = store.cdr(cdr_id)
    assert record.user_agent == "evil?[2J?phone?"
    assert record.caller == "al?ice"
    assert record.callee == "bö"


def test_store_cdrs_since_and_limit(store: Store) -> None:
    ids = [store.cdr_start(_start(start=T0 + offset)) for offset in (30.0, 10.0, 20.0, 20.0)]
    assert [r.id for r in store.cdrs()] == [ids[1], ids[2], ids[3], ids[0]]
    assert [r.id for r in store.cdrs(since=T0 + 20.0)] == [ids[2], ids[3], ids[0]]
    assert [r.id for r in store.cdrs(limit=2)] == [ids[3], ids[0]]
    assert [r.id for r in store.cdrs(since=T0 + 25.0, limit=10)] == [ids[0]]
    assert store.cdrs(limit=0) == []
    with pytest.raises(StoreError, match=r"^limit must not be negative$"):
        store.cdrs(limit=-1)


def test_store_close_open_cdrs_after_a_crash(tmp_path: Path, cdr_url: str) -> None:
    crashed = Store(tmp_path / DB_NAME, cdr_url=cdr_url)
    ringing = crashed.cdr_start(_start(start=T0))
    talking = crashed.cdr_start(_start(start=T0 + 1.0))
    crashed.cdr_answer(talking, T0 + 3.0)
    done = crashed.cdr_start(_start(start=T0 + 2.0))
    crashed.cdr_end(
        done, end=T0 + 9.0, disposition="busy", status=486, reason="Busy Here", hangup_by=""
    )
    crashed.close()  # the process died: nothing ended the first two calls

    restarted = Store(tmp_path / DB_NAME, cdr_url=cdr_url)
    try:
        assert restarted.close_open_cdrs(T0 + 100.0) == 2
        assert restarted.close_open_cdrs(T0 + 200.0) == 0
        by_id = {r.id: r for r in restarted.cdrs()}
    finally:
        restarted.close()
    for cdr_id in (ringing, talking):
        record = by_id[cdr_id]
        assert (record.disposition, record.reason, record.hangup_by) == (
            "incomplete",
            "server restarted",
            "system",
        )
        assert (record.end, record.status) == (T0 + 100.0, None)
    assert (by_id[ringing].duration, by_id[ringing].billable) == (100.0, 0.0)
    assert (by_id[talking].duration, by_id[talking].billable) == (99.0, 97.0)
    assert (by_id[done].disposition, by_id[done].end, by_id[done].reason) == (
        "busy",
        T0 + 9.0,
        "Busy Here",
    )


def test_store_cdr_media_report_round_trip_and_limit(store: Store) -> None:
    cdr_id = store.cdr_start(_start())
    report = '[{"leg":"a","suite":"AES_CM_128_HMAC_SHA1_80","packets":1500}]'
    store.cdr_media(cdr_id, report)
    assert store.cdr(cdr_id).media == report
    with pytest.raises(StoreError, match=r"^media report of 4097 characters is too long$"):
        store.cdr_media(cdr_id, "x" * (MAX_CDR_MEDIA + 1))
    with pytest.raises(StoreError, match=r"^no CDR 99$"):
        store.cdr_media(99, report)
    assert store.cdr(cdr_id).media == report


def test_store_cdr_media_encryption_round_trip_and_limit(store: Store) -> None:
    cdr_id = store.cdr_start(_start())
    assert store.cdr(cdr_id).media_encryption == ""
    store.cdr_media(cdr_id, "[]", "a:srtp b:rtp")
    assert (store.cdr(cdr_id).media, store.cdr(cdr_id).media_encryption) == ("[]", "a:srtp b:rtp")
    too_long = "a:srtp " * 10
    assert len(too_long) > MAX_CDR_ENCRYPTION
    with pytest.raises(StoreError, match=r"^media_encryption of 70 characters is too long$"):
        store.cdr_media(cdr_id, "[]", too_long)
    assert store.cdr(cdr_id).media_encryption == "a:srtp b:rtp"


def test_store_cdr_times_keep_microseconds(store: Store) -> None:
    # Epoch seconds need 8-byte floats: PostgreSQL's REAL (4 bytes) would round them
    # to 128 s.
    start = T0 + 0.123456
    cdr_id = store.cdr_start(_start(start=start))
    store.cdr_answer(cdr_id, start + 1.000001)
    store.cdr_end(
        cdr_id, end=start + 2.5, disposition="answered", status=200, reason="", hangup_by="callee"
    )
    record = store.cdr(cdr_id)
    assert (record.start, record.answer, record.end) == (start, start + 1.000001, start + 2.5)
    assert record.duration == pytest.approx(2.5, abs=1e-6)


def test_store_cdr_ids_increase_across_reopen(tmp_path: Path, cdr_url: str) -> None:
    first = Store(tmp_path / DB_NAME, cdr_url=cdr_url)
    ids = [first.cdr_start(_start()) for _ in range(3)]
    first.close()
    again = Store(tmp_path / DB_NAME, cdr_url=cdr_url)
    try:
        ids.append(again.cdr_start(_start()))
        assert [r.id for r in again.cdrs()] == ids
    finally:
        again.close()
    assert ids == sorted(set(ids))


@pytest.mark.parametrize(
    "dropped",
    [("kind", "media_encryption"), ("kind",)],
    ids=["before-issue-16", "before-issue-18"],
)
def test_store_migrates_cdr_table_without_media_encryption(
    tmp_path: Path, cdr_url: str, dropped: tuple[str, ...]
) -> None:
    """A cdrs table of the version before issue 16 (media, no media_encryption nor
    kind) or before issue 18 (no kind) is upgraded in SQLite and PostgreSQL alike; its
    rows keep their values."""
    first = Store(tmp_path / DB_NAME, cdr_url=cdr_url)
    cdr_id = first.cdr_start(_start())
    first.cdr_media(cdr_id, "[]")
    first.close()
    if cdr_url:
        with psycopg.connect(cdr_url) as conn:
            for column in dropped:
                conn.execute(f"ALTER TABLE cdrs DROP COLUMN {column}")
    else:
        with contextlib.closing(sqlite3.connect(tmp_path / DB_NAME)) as db:
            for column in dropped:
                db.execute(f"ALTER TABLE cdrs DROP COLUMN {column}")
            db.commit()
    store = Store(tmp_path / DB_NAME, cdr_url=cdr_url)
    try:
        assert tuple(store.cdr_db.columns()) == CDR_FIELDS
        (record,) = store.cdrs()
        assert (record.id, record.media, record.media_encryption, record.kind) == (
            cdr_id,
            "[]",
            "",
            "",
        )
    finally:
        store.close()


def test_store_cdr_kind_round_trip_and_unknown_kind_refused(store: Store) -> None:
    """The call's kind (issue 18: "emergency" marks an emergency call) is stored as
    given; a kind the dial plan never makes is refused, not stored."""
    cdr_id = store.cdr_start(dataclasses.replace(_start(), kind="emergency"))
    assert store.cdr(cdr_id).kind == "emergency"
    assert store.cdr(store.cdr_start(_start())).kind == ""
    with pytest.raises(StoreError, match=r"^invalid CDR kind 'urgent'$"):
        store.cdr_start(dataclasses.replace(_start(), kind="urgent"))


def test_store_migrates_cdr_table_without_media(tmp_path: Path) -> None:
    path = tmp_path / DB_NAME
    old = sqlite3.connect(path)
    old.execute(
        "CREATE TABLE cdrs (id INTEGER PRIMARY KEY AUTOINCREMENT, call_id TEXT NOT NULL, "
        "caller TEXT NOT NULL, callee_dialled TEXT NOT NULL, callee TEXT NOT NULL, "
        '"user" TEXT NOT NULL, source TEXT NOT NULL, transport TEXT NOT NULL, '
        "tls_identity TEXT NOT NULL, trunk TEXT NOT NULL, user_agent TEXT NOT NULL, "
        '"start" REAL NOT NULL, answer REAL, "end" REAL, duration REAL, billable REAL, '
        "disposition TEXT NOT NULL DEFAULT '', status INTEGER, "
        "reason TEXT NOT NULL DEFAULT '', hangup_by TEXT NOT NULL DEFAULT '')"
    )
    old.execute(
        'INSERT INTO cdrs (call_id, caller, callee_dialled, callee, "user", source, '
        'transport, tls_identity, trunk, user_agent, "start") '
        "VALUES ('old', 'a', 'b', 'b', 'a', 's', 'tls', '', '', '', 1.0)"
    )
    old.commit()
    old.close()
    store = Store(path)
    try:
        assert tuple(store.cdr_db.columns()) == CDR_FIELDS
        (record,) = store.cdrs()
        assert (record.call_id, record.media) == ("old", "")
    finally:
        store.close()


# -- CDR database URLs --------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "",
        "postgresql://voipsec@db.example.test:5432/voipsec",
        "postgres://voipsec:secret@127.0.0.1/cdrs?sslmode=verify-full",
        "postgresql:///voipsec",
        "postgresql://h1:5432,h2:5433/voipsec",
    ],
)
def test_store_cdr_url_accepted(url: str) -> None:
    check_url(url)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        (
            "mysql://root:hunter2@db/cdrs",
            'expected "" (SQLite in the data directory) or postgresql://USER@HOST:PORT/DATABASE',
        ),
        (
            "sqlite:///var/lib/voipsec/cdr.db",
            'expected "" (SQLite in the data directory) or postgresql://USER@HOST:PORT/DATABASE',
        ),
        (
            "postgresql://u:hunter2@db:70000/cdrs",
            "the port of the CDR URL must be a number 1-65535",
        ),
        (
            "postgresql://u:hunter2@db/cdrs x",
            "the URL must not contain spaces or control characters",
        ),
    ],
)
def test_store_cdr_url_refused_without_repeating_it(url: str, message: str) -> None:
    with pytest.raises(ValueError) as info:
        check_url(url)
    assert str(info.value) == message
    with pytest.raises(StoreError) as opened:
        cdrdb.open_cdr_database(url, sqlite3.connect(":memory:"))
    assert str(opened.value) == f"CDR URL: {message}"
    assert "hunter2" not in str(opened.value)


def test_store_redact_url_masks_passwords() -> None:
    assert redact_url("postgresql://cdr:s3cr%40t@db:5432/voipsec") == (
        "postgresql://cdr:***@db:5432/voipsec"
    )
    assert redact_url("postgresql://db/voipsec?user=cdr&password=s3cret&sslmode=require") == (
        "postgresql://db/voipsec?user=cdr&password=***&sslmode=require"
    )
    assert redact_url("postgresql://cdr@db/voipsec") == "postgresql://cdr@db/voipsec"


# -- PostgreSQL failures ------------------------------------------------------------


def test_store_postgres_wrong_password_is_one_line_without_it(
    tmp_path: Path, postgres_server: PostgresServer
) -> None:
    url = postgres_server.url("postgres", password="Wrong-Pa55word")
    with pytest.raises(StoreError) as info:
        Store(tmp_path / DB_NAME, cdr_url=url)
    text = str(info.value)
    assert text.startswith(
        f"cannot connect to the CDR database postgresql://voipsec:***@127.0.0.1:"
        f"{postgres_server.port}/postgres: "
    )
    assert 'password authentication failed for user "voipsec"' in text
    assert "\n" not in text and "Wrong-Pa55word" not in text


def test_store_postgres_unreachable_is_one_line_without_password(tmp_path: Path) -> None:
    from tests.peers.proc import free_port

    port = free_port()
    with pytest.raises(StoreError) as info:
        Store(tmp_path / DB_NAME, cdr_url=f"postgresql://voipsec:{PASSWORD}@127.0.0.1:{port}/x")
    text = str(info.value)
    assert text.startswith(
        f"cannot connect to the CDR database postgresql://voipsec:***@127.0.0.1:{port}/x: "
    )
    assert "Connection refused" in text
    assert "\n" not in text and PASSWORD not in text


def test_store_postgres_broken_connection_fails_one_write_then_reconnects(
    tmp_path: Path,
    postgres_server: PostgresServer,
    postgres_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store = Store(tmp_path / DB_NAME, cdr_url=postgres_url)
    try:
        first = store.cdr_start(_start())
        dbname = postgres_url.rsplit("/", 1)[1]
        with postgres_server.admin() as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                (dbname,),
            )
        with pytest.raises(StoreError) as info:
            store.cdr_answer(first, T0 + 1.0)
        assert str(info.value).startswith("CDR database postgresql://voipsec:***@")
        assert PASSWORD not in str(info.value)
        # Within RECONNECT_INTERVAL of the last attempt, writes fail at once ...
        with pytest.raises(StoreError, match=r"is unavailable \(retrying\)$"):
            store.cdr_start(_start())
        # ... after it, the next write opens the connection again.
        monkeypatch.setattr(cdrdb, "RECONNECT_INTERVAL", 0.0)
        store.cdr_db._conn._next_attempt = 0.0  # type: ignore[attr-defined]
        second = store.cdr_start(_start())
        assert [r.id for r in store.cdrs()] == [first, second]
    finally:
        store.close()


# -- users and classes of service ---------------------------------------------------


def test_store_add_user_default_and_explicit_class(local_store: Store) -> None:
    local_store.add_user("alice", "alice-secret-1", REALM)
    local_store.add_user("bob", "bob-secret-22", REALM, "premium-rate")
    local_store.add_user("carol", "carol-secret-3", REALM, cos="internal")
    assert local_store.user_classes() == {
        "alice": DEFAULT_CLASS,
        "bob": "premium-rate",
        "carol": "internal",
    }
    assert DEFAULT_CLASS in CLASSES_OF_SERVICE


def test_store_add_user_bad_class_is_refused(local_store: Store) -> None:
    with pytest.raises(StoreError) as info:
        local_store.add_user("alice", "alice-secret-1", REALM, "gold")
    assert str(info.value) == (
        "invalid class of service 'gold': use one of "
        "internal, national, international, premium-rate"
    )
    assert local_store.users() == []


def test_store_set_user_class(local_store: Store) -> None:
    local_store.add_user("alice", "alice-secret-1", REALM)
    local_store.set_user_class("alice", "international")
    assert local_store.user_classes() == {"alice": "international"}
    with pytest.raises(StoreError, match=r"^invalid class of service 'world'"):
        local_store.set_user_class("alice", "world")
    with pytest.raises(StoreError, match=r"^no user 'zed'$"):
        local_store.set_user_class("zed", "national")
    assert local_store.user_classes() == {"alice": "international"}


def test_store_version_moves_on_every_commit_and_not_on_reads(local_store: Store) -> None:
    # The call service re-reads the users only when this changed (not once per call).
    before = local_store.version()
    local_store.user_classes()
    assert local_store.version() == before
    local_store.add_user("ann", "pw", REALM)  # this connection's own write
    mine = local_store.version()
    assert mine != before
    other = sqlite3.connect(local_store.path, isolation_level=None)
    other.execute("UPDATE users SET \"class\" = 'international' WHERE name = 'ann'")
    other.close()  # `voipsec user class` in another process
    assert local_store.version() not in (before, mine)


def test_store_migrates_users_table_without_class(tmp_path: Path) -> None:
    path = tmp_path / DB_NAME
    old = sqlite3.connect(path)
    old.executescript(OLD_USERS_SCHEMA)
    old.close()
    path.chmod(0o644)

    store = Store(path)
    try:
        assert store.user_classes() == {"olduser": "national"}
        store.add_user("alice", "alice-secret-1", REALM, "internal")
        assert store.users() == ["alice", "olduser"]
        assert store.cdrs() == []
    finally:
        store.close()
    assert _mode(path) == 0o600

    again = Store(path)  # a second open finds nothing to migrate
    try:
        assert again.user_classes() == {"alice": "internal", "olduser": "national"}
        columns = [row[1] for row in again.db.execute("PRAGMA table_info(users)")]
    finally:
        again.close()
    assert columns.count("class") == 1


# The bans table as created by voipsec before ban scopes (issue 13, finding 6).
OLD_BANS_SCHEMA = """
CREATE TABLE bans (
    source TEXT PRIMARY KEY,
    until REAL NOT NULL,
    reason TEXT NOT NULL,
    created REAL NOT NULL
);
INSERT INTO bans VALUES ('192.0.2.1', 1900000000.0, 'manual', 1800000000.0);
"""


def test_store_migrates_bans_table_without_scope(tmp_path: Path) -> None:
    path = tmp_path / DB_NAME
    old = sqlite3.connect(path)
    old.executescript(OLD_BANS_SCHEMA)
    old.close()

    store = Store(path)
    try:
        # A ban stored before scopes existed keeps blocking everything.
        assert [(b.source, b.scope) for b in store.bans(T0)] == [("192.0.2.1", "all")]
        store.add_ban("192.0.2.2", T0 + 60, "rate limit of zone internet", "udp")
        assert [(b.source, b.scope) for b in store.bans(T0)] == [
            ("192.0.2.1", "all"),
            ("192.0.2.2", "udp"),
        ]
    finally:
        store.close()
    again = Store(path)  # a second open finds nothing to migrate
    try:
        columns = [row[1] for row in again.db.execute("PRAGMA table_info(bans)")]
    finally:
        again.close()
    assert columns.count("scope") == 1


def test_store_ban_scope_defaults_to_all_and_unknown_is_refused(local_store: Store) -> None:
    local_store.add_ban("192.0.2.3", T0 + 60, "manual")
    assert [(b.source, b.reason, b.scope) for b in local_store.bans(T0)] == [
        ("192.0.2.3", "manual", "all")
    ]
    with pytest.raises(StoreError, match=r"^invalid ban scope 'tcp': use one of all, udp$"):
        local_store.add_ban("192.0.2.4", T0 + 60, "x", "tcp")
    assert [b.source for b in local_store.bans(T0)] == ["192.0.2.3"]

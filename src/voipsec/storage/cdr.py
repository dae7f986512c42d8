"""Call detail records in SQLite (the default) or PostgreSQL, chosen by one URL.

How this works: every CDR statement is written once, in the SQL both databases speak,
with ``?`` placeholders and the reserved words "user", "start" and "end" quoted. A
:class:`Dialect` holds the few differences and turns a statement into its database's
spelling once, when the database is opened: placeholders (``?`` or ``%s``), the id
column (``INTEGER PRIMARY KEY AUTOINCREMENT`` or ``BIGSERIAL``), the float type (SQLite's
REAL is 8 bytes, PostgreSQL's is 4: epoch seconds need DOUBLE PRECISION) and the
two-argument maximum (``MAX`` or ``GREATEST``). New ids come back with ``RETURNING id``
in both (SQLite 3.35 and later; ``lastrowid`` before that). Two small connection
adapters run a statement and turn the driver's errors into :class:`StoreError`.

The SQLite backend shares the ``voipsec.db`` connection of :class:`voipsec.storage.store.Store`;
the PostgreSQL one has its own connection (psycopg 3, autocommit: each write is its own
commit, as in SQLite).

Failure mode: open for calls. A failed write raises StoreError, which the call path logs
before going on without that row. A PostgreSQL connection that breaks is opened again
by the next write, at most once per RECONNECT_INTERVAL (a server that is down must not
stall the event loop on every call); until then writes fail at once. Opening the
database at ``serve`` start is the exception: it fails closed, with one error line.

Secrets: a password in the URL (user:password@ or ?password=) never appears in an
error message or a log line: :func:`redact_url` masks it and driver messages are
scrubbed of it.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import unquote, urlsplit, urlunsplit

from ..config.checks import check_url
from ..records import (
    CDR_FIELDS,
    CDR_KINDS,
    DISPOSITIONS,
    HANGUP_BY,
    RESTART_DISPOSITION,
    RESTART_HANGUP_BY,
    RESTART_REASON,
    CdrRecord,
    CdrStart,
    StoreError,
    StoreUnavailable,
    cdr_text,
    check_media,
)

if TYPE_CHECKING:
    import psycopg

__all__ = [
    "POSTGRESQL",
    "SQLITE",
    "CdrConnection",
    "CdrDatabase",
    "Dialect",
    "check_url",
    "open_cdr_database",
    "open_postgres_connection",
    "open_writer_database",
    "redact_url",
]

#: Error texts cut to this many characters (dispositions echoed back).
_ECHO = 64


def _kind(kind: str) -> str:
    """A CDR kind as stored: one of CDR_KINDS (the call path's own words, never a peer's)."""
    if kind not in CDR_KINDS:
        raise StoreError(f"invalid CDR kind {kind[:_ECHO]!r}")
    return kind


def _cdr_record(row: Sequence[Any]) -> CdrRecord:
    # _SELECT lists the columns in CdrRecord's field order (a unit test checks).
    return CdrRecord(**dict(zip(CDR_FIELDS, row, strict=True)))


# -- URLs ---------------------------------------------------------------------------


def redact_url(url: str) -> str:
    """``url`` with its password (``user:PASSWORD@`` or ``password=``) shown as ***."""
    parts = urlsplit(url)
    userinfo, at, hostinfo = parts.netloc.rpartition("@")
    netloc = parts.netloc
    if at and ":" in userinfo:
        netloc = f"{userinfo.partition(':')[0]}:***@{hostinfo}"
    query = "&".join(
        "password=***" if item.partition("=")[0].lower() == "password" else item
        for item in parts.query.split("&")
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query if parts.query else "", ""))


def _url_secrets(url: str) -> list[str]:
    """The password of ``url`` as written and decoded, longest first."""
    parts = urlsplit(url)
    found = [parts.password or ""]
    found += [
        value
        for key, _, value in (item.partition("=") for item in parts.query.split("&"))
        if key.lower() == "password"
    ]
    out = {s for raw in found if raw for s in (raw, unquote(raw))}
    return sorted(out, key=len, reverse=True)


def _one_line(text: str, secrets: Sequence[str]) -> str:
    """A driver's message as one line, with every secret replaced by ***."""
    for secret in secrets:
        text = text.replace(secret, "***")
    return "; ".join(line.strip() for line in text.splitlines() if line.strip())


# -- dialects -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Dialect:
    """What differs between the SQL of two databases, for the statements below."""

    name: str
    placeholder: str
    id_column: str
    float_type: str
    greatest: str
    #: INSERT ... RETURNING id works (else the driver's lastrowid).
    returning: bool

    def sql(self, template: str) -> str:
        """``template`` (``?`` placeholders, ``{id}``, ``{float}``, ``{greatest}``) in
        this dialect. The templates hold no ``?``, ``%`` or braces of their own."""
        text = template.format(id=self.id_column, float=self.float_type, greatest=self.greatest)
        return text.replace("?", self.placeholder)


SQLITE = Dialect(
    name="sqlite",
    placeholder="?",
    id_column="INTEGER PRIMARY KEY AUTOINCREMENT",
    float_type="REAL",
    greatest="MAX",
    # RETURNING arrived in SQLite 3.35.0 (2021-03).
    returning=sqlite3.sqlite_version_info >= (3, 35, 0),
)
POSTGRESQL = Dialect(
    name="postgresql",
    placeholder="%s",
    id_column="BIGSERIAL PRIMARY KEY",
    float_type="DOUBLE PRECISION",
    greatest="GREATEST",
    returning=True,
)

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS cdrs (
    id {id},
    call_id TEXT NOT NULL,
    caller TEXT NOT NULL,
    callee_dialled TEXT NOT NULL,
    callee TEXT NOT NULL,
    "user" TEXT NOT NULL,
    source TEXT NOT NULL,
    transport TEXT NOT NULL,
    tls_identity TEXT NOT NULL,
    trunk TEXT NOT NULL,
    user_agent TEXT NOT NULL,
    "start" {float} NOT NULL,
    answer {float},
    "end" {float},
    duration {float},
    billable {float},
    disposition TEXT NOT NULL DEFAULT '',
    status INTEGER,
    reason TEXT NOT NULL DEFAULT '',
    hangup_by TEXT NOT NULL DEFAULT '',
    media TEXT NOT NULL DEFAULT '',
    media_encryption TEXT NOT NULL DEFAULT '',
    kind TEXT NOT NULL DEFAULT ''
)""",
    'CREATE INDEX IF NOT EXISTS cdrs_start ON cdrs ("start")',
    # Only calls in progress (or left open by a crash): keeps close_open_cdrs cheap.
    "CREATE INDEX IF NOT EXISTS cdrs_open ON cdrs (id) WHERE disposition = ''",
)

#: Added to a cdrs table made by a version before media reports.
_ADD_MEDIA = "ALTER TABLE cdrs ADD COLUMN media TEXT NOT NULL DEFAULT ''"
#: Added to a cdrs table made by a version before media_encryption (issue 16).
_ADD_ENCRYPTION = "ALTER TABLE cdrs ADD COLUMN media_encryption TEXT NOT NULL DEFAULT ''"
#: Added to a cdrs table made by a version before the call kind (issue 18).
_ADD_KIND = "ALTER TABLE cdrs ADD COLUMN kind TEXT NOT NULL DEFAULT ''"

_INSERT = (
    'INSERT INTO cdrs (call_id, caller, callee_dialled, callee, "user", source, '
    'transport, tls_identity, trunk, user_agent, "start", kind) '
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_RETURNING = " RETURNING id"

_ANSWER = "UPDATE cdrs SET answer = ? WHERE id = ? AND answer IS NULL AND disposition = ''"

# Parameters: end, end (for duration), end (for billable), disposition, status, reason,
# hangup_by; then the WHERE clause's.
_CLOSE = (
    'UPDATE cdrs SET "end" = ?, duration = {greatest}(? - "start", 0.0), '
    "billable = CASE WHEN answer IS NULL THEN 0.0 ELSE {greatest}(? - answer, 0.0) END, "
    "disposition = ?, status = ?, reason = ?, hangup_by = ? "
)
_END = _CLOSE + "WHERE id = ? AND disposition = ''"
_CLOSE_OPEN = _CLOSE + "WHERE disposition = ''"

_MEDIA = "UPDATE cdrs SET media = ?, media_encryption = ? WHERE id = ?"

_SELECT = (
    'SELECT id, call_id, caller, callee_dialled, callee, "user", source, transport, '
    'tls_identity, trunk, user_agent, "start", answer, "end", duration, billable, '
    "disposition, status, reason, hangup_by, media, media_encryption, kind FROM cdrs "
)
_BY_ID = _SELECT + "WHERE id = ?"
_SINCE = _SELECT + 'WHERE "start" >= ? ORDER BY "start", id'
_LATEST = _SELECT + 'WHERE "start" >= ? ORDER BY "start" DESC, id DESC LIMIT ?'
_EXISTS = "SELECT 1 FROM cdrs WHERE id = ?"


# -- connections --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Result:
    rowcount: int
    rows: list[tuple[Any, ...]]
    lastrowid: int | None


class _Connection(Protocol):
    def run(self, sql: str, params: Sequence[object] = ()) -> _Result: ...

    def columns(self, table: str = "cdrs") -> list[str]:
        """Column names of ``table`` (cdrs, devices: a constant, never data) in order;
        [] when it does not exist."""
        ...

    def schema_lock(self) -> contextlib.AbstractContextManager[None]:
        """A transaction that one opener at a time holds while it changes the schema."""
        ...

    def transaction(self) -> contextlib.AbstractContextManager[None]:
        """One transaction around several statements (the writer's batch)."""
        ...

    def close(self) -> None: ...


def _sqlite_error(err: sqlite3.Error) -> StoreError:
    # OperationalError: locked, busy, disk I/O: the same statement may work later.
    kind = StoreUnavailable if isinstance(err, sqlite3.OperationalError) else StoreError
    return kind(f"CDR database: {err}")


#: The connection adapters' interface, for the inventory in PostgreSQL (devices_db.py).
CdrConnection = _Connection


class _SqliteConnection:
    """A sqlite3 connection in autocommit mode (WAL): the Store's own, which the Store
    closes, or one the writer thread opened for itself (``owned``), closed here."""

    def __init__(self, db: sqlite3.Connection, *, owned: bool = False) -> None:
        self.db = db
        self._owned = owned

    def run(self, sql: str, params: Sequence[object] = ()) -> _Result:
        try:
            cur = self.db.execute(sql, tuple(params))
            rows = cur.fetchall()
        except sqlite3.Error as err:
            raise _sqlite_error(err) from None
        return _Result(cur.rowcount, rows, cur.lastrowid)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        self.run("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                self.db.execute("ROLLBACK")
            raise
        self.run("COMMIT")

    def columns(self, table: str = "cdrs") -> list[str]:
        return [row[1] for row in self.run(f"PRAGMA table_info({table})").rows]

    @contextlib.contextmanager
    def schema_lock(self) -> Iterator[None]:
        # BEGIN IMMEDIATE: a `serve` and a CLI command opening the same old file at once
        # do not both add a column.
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            yield

    def close(self) -> None:
        if self._owned:
            self.db.close()


#: Seconds to wait for a PostgreSQL server to accept a connection (libpq's minimum is 2).
CONNECT_TIMEOUT = 5
#: Milliseconds one CDR statement may run on the server: a locked table must not hold
#: the call path (the event loop) for long.
STATEMENT_TIMEOUT_MS = 5000
#: Seconds between attempts to open a broken PostgreSQL connection again.
RECONNECT_INTERVAL = 5.0
#: pg_advisory_xact_lock key taken while the schema is created or changed ("voipsec").
_SCHEMA_LOCK_KEY = 0x766F6970736563


class _PostgresConnection:
    """One autocommit psycopg connection, opened again when it breaks."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._shown = redact_url(url)
        self._secrets = _url_secrets(url)
        self._next_attempt = 0.0
        self._conn = self._connect()

    def _fail(self, what: str, err: Exception) -> StoreError:
        import psycopg

        # A lost or refused connection, or a statement cancelled by statement_timeout:
        # the same statement may work later.
        transient = isinstance(err, psycopg.OperationalError | psycopg.InterfaceError)
        kind = StoreUnavailable if transient else StoreError
        return kind(f"{what} {self._shown}: {_one_line(str(err), self._secrets)}")

    def _connect(self) -> psycopg.Connection[tuple[Any, ...]]:
        try:
            import psycopg
        except ImportError:
            raise StoreError(
                "PostgreSQL CDR storage needs psycopg: pip install 'psycopg[binary]'"
            ) from None
        self._next_attempt = time.monotonic() + RECONNECT_INTERVAL
        try:
            conn = psycopg.connect(self._url, autocommit=True, connect_timeout=CONNECT_TIMEOUT)
        except psycopg.Error as err:
            fail = self._fail("cannot connect to the CDR database", err)
            raise StoreUnavailable(str(fail)) from None
        except ValueError as err:  # a malformed URL (psycopg's own check)
            raise self._fail("bad CDR database URL", err) from None
        try:
            conn.execute(f"SET statement_timeout = {STATEMENT_TIMEOUT_MS}")
        except psycopg.Error as err:
            conn.close()
            raise self._fail("cannot use the CDR database", err) from None
        return conn

    def _connection(self) -> psycopg.Connection[tuple[Any, ...]]:
        if self._conn.closed or self._conn.broken:
            if time.monotonic() < self._next_attempt:
                raise StoreUnavailable(f"CDR database {self._shown} is unavailable (retrying)")
            self._conn = self._connect()
        return self._conn

    def run(self, sql: str, params: Sequence[object] = ()) -> _Result:
        import psycopg

        conn = self._connection()
        try:
            cur = conn.execute(sql, tuple(params))
            rows = cur.fetchall() if cur.description is not None else []
        except psycopg.Error as err:
            raise self._fail("CDR database", err) from None
        return _Result(cur.rowcount, rows, None)

    def columns(self, table: str = "cdrs") -> list[str]:
        rows = self.run(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_schema = current_schema() AND table_name = %s "
            "ORDER BY ordinal_position",
            (table,),
        ).rows
        return [str(row[0]) for row in rows]

    @contextlib.contextmanager
    def schema_lock(self) -> Iterator[None]:
        import psycopg

        conn = self._connection()
        try:
            with conn.transaction():
                # CREATE TABLE IF NOT EXISTS is not safe against a concurrent one in
                # PostgreSQL (a unique violation on pg_type): serialise the openers.
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK_KEY,))
                yield
        except psycopg.Error as err:
            raise self._fail("cannot create the CDR table in", err) from None

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        import psycopg

        conn = self._connection()
        try:
            with conn.transaction():
                yield
        except psycopg.Error as err:  # COMMIT itself failed
            raise self._fail("CDR database", err) from None

    def close(self) -> None:
        self._conn.close()


# -- the CDR database ---------------------------------------------------------------


class CdrDatabase:
    """The ``cdrs`` table: one code path, whichever database holds it.

    Every method is one statement, committed when it returns.
    """

    def __init__(self, conn: _Connection, dialect: Dialect) -> None:
        self._conn = conn
        self.dialect = dialect
        sql = dialect.sql
        self._insert = sql(_INSERT + (_RETURNING if dialect.returning else ""))
        self._answer = sql(_ANSWER)
        self._end = sql(_END)
        self._close_open = sql(_CLOSE_OPEN)
        self._media = sql(_MEDIA)
        self._by_id = sql(_BY_ID)
        self._since = sql(_SINCE)
        self._latest = sql(_LATEST)
        self._exists = sql(_EXISTS)
        self._migrate([sql(s) for s in _SCHEMA])

    def _migrate(self, schema: list[str]) -> None:
        """Create the table, or bring one made by an older version up to _SCHEMA.

        An up-to-date database takes no lock; otherwise the check runs again under the
        schema lock so that two openers do not both change it.
        """
        if tuple(self.columns()) == CDR_FIELDS:
            return
        with self._conn.schema_lock():
            for statement in schema:
                self._conn.run(statement)
            if "media" not in self.columns():
                self._conn.run(_ADD_MEDIA)
            if "media_encryption" not in self.columns():
                self._conn.run(_ADD_ENCRYPTION)
            if "kind" not in self.columns():
                self._conn.run(_ADD_KIND)

    def columns(self) -> list[str]:
        """Column names of the cdrs table, in order."""
        return self._conn.columns()

    def close(self) -> None:
        self._conn.close()

    @property
    def connection(self) -> CdrConnection:
        """The connection (the Store reads the PostgreSQL inventory over it)."""
        return self._conn

    def transaction(self) -> contextlib.AbstractContextManager[None]:
        """One commit for several statements (the writer's batches); all or none."""
        return self._conn.transaction()

    def start(self, start: CdrStart) -> int:
        """Open a row for a call that starts now; returns its id (committed)."""
        result = self._conn.run(
            self._insert,
            (
                cdr_text(start.call_id),
                cdr_text(start.caller),
                cdr_text(start.callee_dialled),
                cdr_text(start.callee),
                cdr_text(start.user),
                cdr_text(start.source),
                cdr_text(start.transport),
                cdr_text(start.tls_identity),
                cdr_text(start.trunk),
                cdr_text(start.user_agent),
                start.start,
                _kind(start.kind),
            ),
        )
        row_id = result.rows[0][0] if result.rows else result.lastrowid
        if row_id is None:  # pragma: no cover - both drivers give the id of an INSERT
            raise StoreError("CDR insert returned no id")
        return int(row_id)

    def answer(self, cdr_id: int, when: float) -> None:
        """Record when the call was answered; the first answer of an open call counts."""
        if self._conn.run(self._answer, (when, cdr_id)).rowcount == 0:
            self._check_exists(cdr_id)

    def end(
        self,
        cdr_id: int,
        *,
        end: float,
        disposition: str,
        status: int,
        reason: str,
        hangup_by: str,
    ) -> None:
        """Complete an open row; a row already ended is left as it is."""
        if disposition not in DISPOSITIONS:
            raise StoreError(f"invalid CDR disposition {disposition[:_ECHO]!r}")
        if hangup_by not in HANGUP_BY:
            raise StoreError(f"invalid CDR hangup_by {hangup_by[:_ECHO]!r}")
        params = (end, end, end, disposition, status, cdr_text(reason), hangup_by, cdr_id)
        if self._conn.run(self._end, params).rowcount == 0:
            self._check_exists(cdr_id)

    def media(self, cdr_id: int, report: str, encryption: str = "") -> None:
        """Attach the media quality report (JSON text, at most MAX_CDR_MEDIA characters)
        and which legs were encrypted (at most MAX_CDR_ENCRYPTION characters)."""
        check_media(report, encryption)
        if self._conn.run(self._media, (report, encryption, cdr_id)).rowcount == 0:
            self._check_exists(cdr_id)

    def close_open(self, now: float) -> int:
        """Close the rows a crash left open; returns how many."""
        params = (now, now, now, RESTART_DISPOSITION, None, RESTART_REASON, RESTART_HANGUP_BY)
        return self._conn.run(self._close_open, params).rowcount

    def close_lost(self, cdr_ids: Sequence[int], now: float, reason: str) -> int:
        """Close the rows of calls a lost process held (a signaling worker killed):
        incomplete, hung up by the system, with ``reason``; rows already ended stay."""
        params = (now, now, now, RESTART_DISPOSITION, None, cdr_text(reason), RESTART_HANGUP_BY)
        return sum(self._conn.run(self._end, (*params, cdr_id)).rowcount for cdr_id in cdr_ids)

    def get(self, cdr_id: int) -> CdrRecord:
        """One row by id."""
        rows = self._conn.run(self._by_id, (cdr_id,)).rows
        if not rows:
            raise StoreError(f"no CDR {cdr_id}")
        return _cdr_record(rows[0])

    def since(self, since: float = 0.0, limit: int | None = None) -> list[CdrRecord]:
        """Rows of calls started at or after ``since``, by start then id; with ``limit``
        the most recent ``limit`` of them (still oldest first)."""
        if limit is None:
            return [_cdr_record(r) for r in self._conn.run(self._since, (since,)).rows]
        if limit < 0:
            raise StoreError("limit must not be negative")
        rows = self._conn.run(self._latest, (since, limit)).rows
        return [_cdr_record(r) for r in reversed(rows)]

    def _check_exists(self, cdr_id: int) -> None:
        if not self._conn.run(self._exists, (cdr_id,)).rows:
            raise StoreError(f"no CDR {cdr_id}")


def open_cdr_database(url: str, sqlite: sqlite3.Connection) -> CdrDatabase:
    """The CDR database of ``url``: '' is the ``sqlite`` connection (voipsec.db),
    postgresql://... a PostgreSQL server. StoreError when it cannot be used."""
    try:
        check_url(url)
    except ValueError as err:
        raise StoreError(f"CDR URL: {err}") from None
    if not url:
        return CdrDatabase(_SqliteConnection(sqlite), SQLITE)
    return _open_postgres(url)


def open_postgres_connection(url: str) -> CdrConnection:
    """A connection of its own to the PostgreSQL server of ``url`` (the inventory's
    writer thread); StoreUnavailable when unreachable."""
    return _PostgresConnection(url)


def _open_postgres(url: str) -> CdrDatabase:
    conn = _PostgresConnection(url)
    try:
        return CdrDatabase(conn, POSTGRESQL)
    except BaseException:
        conn.close()
        raise


#: Milliseconds the writer's own SQLite connection waits for a lock: in its thread, a
#: wait stalls no call; 5 s also bounds how long a stop can wait on one statement.
WRITER_BUSY_TIMEOUT_MS = 5000


def open_fast_database(sqlite_path: Path) -> CdrDatabase:
    """The SQLite CDR database on a connection for the event loop's one durable write,
    a routed call's open row: it never waits for a lock (busy_timeout 0: a locked file
    fails at once and the row goes to the writer thread instead) and never checkpoints
    the WAL (the writer's and the Store's connections do), so the write costs the loop
    one INSERT into the WAL and nothing more."""
    try:
        db = sqlite3.connect(sqlite_path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA busy_timeout=0")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA wal_autocheckpoint=0")
    except sqlite3.Error as err:
        raise _sqlite_error(err) from None
    try:
        return CdrDatabase(_SqliteConnection(db, owned=True), SQLITE)
    except BaseException:
        db.close()
        raise


def open_writer_database(
    url: str, sqlite_path: Path, *, busy_timeout_ms: int = WRITER_BUSY_TIMEOUT_MS
) -> CdrDatabase:
    """A CDR database on a connection of its own, for the writer thread: a second
    sqlite3 connection to ``sqlite_path`` (voipsec.db) or a second PostgreSQL one."""
    if url:
        return _open_postgres(url)  # the URL was checked when the Store opened it
    try:
        db = sqlite3.connect(sqlite_path, isolation_level=None, check_same_thread=False)
        db.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        db.execute("PRAGMA synchronous=NORMAL")
    except sqlite3.Error as err:
        raise _sqlite_error(err) from None
    try:
        return CdrDatabase(_SqliteConnection(db, owned=True), SQLITE)
    except BaseException:
        db.close()
        raise

"""A throw-away PostgreSQL server from Debian's packages, for the CDR tests.

``postgres_server`` (session scope) runs ``initdb`` into a fresh directory and starts
the server on a free 127.0.0.1 port, its unix socket in that directory, password
(SCRAM) authentication over TCP. PostgreSQL refuses to run as root: as root, the
programs run as the ``postgres`` user the Debian package creates. A cluster Debian
may have created and started itself is never touched. ``postgres_url`` gives each test
a database of its own. tests/conftest.py imports both, so one cluster serves the
whole run: a test only names the fixture.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from .proc import free_port, wait_for

#: The role voipsec connects as, and its password (tests check it is never shown).
USER = "voipsec"
PASSWORD = "pg-Secret-" + "7f3a9c"
#: Seconds initdb, start and stop may take.
DEADLINE = 60.0


def bin_dir() -> Path:
    """Newest /usr/lib/postgresql/N/bin with initdb; fails (not skips) when missing."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(Path(p).parent.parent.name),
    )
    if not found:
        raise AssertionError("PostgreSQL is not installed: run `make peers`")
    return Path(found[-1]).parent


def _as_owner() -> list[str]:
    """Command prefix that runs a PostgreSQL program as a user it accepts."""
    if os.geteuid() != 0:
        return []
    return ["runuser", "-u", "postgres", "--"]


@dataclass
class PostgresServer:
    """A running test cluster: TCP on host:port, superuser over the unix socket."""

    root: Path
    host: str
    port: int

    @property
    def socket_dir(self) -> Path:
        return self.root / "run"

    def admin(self, dbname: str = "postgres") -> psycopg.Connection[tuple[object, ...]]:
        """A superuser connection over the unix socket (trust)."""
        return psycopg.connect(
            host=str(self.socket_dir),
            port=self.port,
            user="postgres",
            dbname=dbname,
            autocommit=True,
        )

    def url(self, dbname: str, *, password: str = PASSWORD) -> str:
        return f"postgresql://{USER}:{password}@{self.host}:{self.port}/{dbname}"

    def stop(self) -> None:
        """Stop the server (fast: open connections are cut), keeping its data."""
        _pg_ctl(self, "-m", "fast", "stop")

    def start(self) -> None:
        """Start the stopped server again on the same port and data directory."""
        _pg_ctl(
            self,
            "-l",
            str(self.root / "postgres.log"),
            "-o",
            _options(self),
            "-w",
            "-t",
            str(int(DEADLINE)),
            "start",
        )
        wait_for(lambda: _accepting(self), deadline=DEADLINE, what="PostgreSQL to accept")

    def create_database(self) -> str:
        """A new empty database owned by USER; returns its URL."""
        name = f"cdr_{secrets.token_hex(6)}"
        with self.admin() as conn:
            conn.execute(f'CREATE DATABASE "{name}" OWNER {USER}')
        return self.url(name)


def _options(server: PostgresServer) -> str:
    return (
        f"-c listen_addresses={server.host} -p {server.port} -k {server.socket_dir} "
        "-c fsync=off -c full_page_writes=off -c synchronous_commit=off"
    )


def _pg_ctl(server: PostgresServer, *args: str) -> None:
    pg_ctl = str(bin_dir() / "pg_ctl")
    _run([*_as_owner(), pg_ctl, "-D", str(server.root / "data"), *args], f"pg_ctl {args[-1]}")


def _run(argv: list[str], what: str) -> None:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=DEADLINE, check=False)
    if proc.returncode != 0:
        raise AssertionError(f"{what} failed ({proc.returncode}): {proc.stderr[-2000:]}")


@contextlib.contextmanager
def running_postgres() -> Iterator[PostgresServer]:
    """initdb, start, yield the server, stop and remove it."""
    pg = bin_dir()
    root = Path(tempfile.mkdtemp(prefix="voipsec-pg-"))
    data, run = root / "data", root / "run"
    run.mkdir()
    if os.geteuid() == 0:
        owner = pwd.getpwnam("postgres")
        for path in (root, run):
            os.chown(path, owner.pw_uid, owner.pw_gid)
    port = free_port()
    server = PostgresServer(root=root, host="127.0.0.1", port=port)
    started = False
    try:
        _run(
            [
                *_as_owner(),
                str(pg / "initdb"),
                "-D",
                str(data),
                "-U",
                "postgres",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ],
            "initdb",
        )
        options = _options(server)
        started = True
        _run(
            [
                *_as_owner(),
                str(pg / "pg_ctl"),
                "-D",
                str(data),
                "-l",
                str(root / "postgres.log"),
                "-o",
                options,
                "-w",
                "-t",
                str(int(DEADLINE)),
                "start",
            ],
            "pg_ctl start",
        )
        wait_for(lambda: _accepting(server), deadline=DEADLINE, what="PostgreSQL to accept")
        with server.admin() as conn:
            conn.execute(f"CREATE ROLE {USER} LOGIN PASSWORD '{PASSWORD}'")
        yield server
    finally:
        if started:
            subprocess.run(
                [*_as_owner(), str(pg / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                capture_output=True,
                timeout=DEADLINE,
                check=False,
            )
        shutil.rmtree(root, ignore_errors=True)


def _accepting(server: PostgresServer) -> bool:
    try:
        with server.admin():
            return True
    except psycopg.OperationalError:
        return False


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One PostgreSQL server for the whole test session."""
    with running_postgres() as server:
        yield server


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> str:
    """postgresql://voipsec:PASSWORD@127.0.0.1:PORT/DB of a new, empty database."""
    return postgres_server.create_database()

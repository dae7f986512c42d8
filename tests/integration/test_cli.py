"""The voipsec command: init, user, config and cdr subcommands, and its error contract.

Every command whose output or exit status a test asserts runs as a real process
(``voipsec_cli``). A test's setup (``voipsec init`` before the command under test, the
CDR directories' config) runs in this process (``voipsec``, tests/peers/voipsec.py):
the same entry point, without a fresh interpreter's ~0.5 s of CPU per command.
"""

from __future__ import annotations

import csv
import datetime
import io
import json
import signal
import sqlite3
import stat
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from tests.peers.proc import running, wait_for
from tests.peers.voipsec import VOIPSEC, prepare, serving, voipsec, voipsec_cli
from voipsec.storage import CDR_FIELDS, DB_NAME, CdrStart, Store


def test_cli_init_creates_private_files(tmp_path: Path) -> None:
    data = tmp_path / "d"
    assert voipsec_cli("init", "--domain", "example.test", data_dir=data).stdout == (
        f"initialised: {data}\n"
    )
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    assert stat.S_IMODE((data / "ca" / "ca.key").stat().st_mode) == 0o600
    # The config can come to hold trunk and SMTP passwords: 0600 from the start, even
    # under a permissive umask (issue 13, finding 15: init wrote it 0644).
    assert stat.S_IMODE((data / "voipsec.toml").stat().st_mode) == 0o600
    assert voipsec_cli("config", "get", "sip.domain", data_dir=data).stdout == "example.test\n"
    again = voipsec_cli("init", data_dir=data)
    assert again.stdout == f"already initialised: {data}\n"


def test_cli_user_add_list_remove(tmp_path: Path) -> None:
    data = tmp_path / "d"
    voipsec("init", data_dir=data)
    added = voipsec_cli("user", "add", "carol", "--password", "carol-pass-1", data_dir=data)
    assert added.stdout == "added carol@localhost\n"
    rows = json.loads(voipsec_cli("user", "list", "--format", "json", data_dir=data).stdout)
    assert [r["user"] for r in rows] == ["carol", "demo"]
    assert rows[0] == {
        "user": "carol",
        "aor": "carol@localhost",
        "class": "national",
        "bindings": [],
    }
    assert voipsec_cli("user", "remove", "carol", data_dir=data).stdout == "removed carol\n"
    missing = voipsec_cli("user", "remove", "carol", data_dir=data, check=False)
    assert (missing.returncode, missing.stderr) == (1, "voipsec: error: no user 'carol'\n")


def test_cli_user_add_duplicate_and_bad_names(tmp_path: Path) -> None:
    data = tmp_path / "d"
    voipsec("init", data_dir=data)
    voipsec("user", "add", "dave", "--password", "dave-pass-1", data_dir=data)
    dup = voipsec_cli(
        "user", "add", "dave", "--password", "dave-pass-1", data_dir=data, check=False
    )
    assert (dup.returncode, dup.stderr) == (1, "voipsec: error: user 'dave' already exists\n")
    bad = voipsec_cli(
        "user", "add", "d@ve", "--password", "dave-pass-1", data_dir=data, check=False
    )
    assert bad.returncode == 1
    assert bad.stderr.startswith("voipsec: error: invalid user name 'd@ve'")
    short = voipsec_cli("user", "add", "erin", "--password", "short", data_dir=data, check=False)
    assert short.stderr == "voipsec: error: password must be at least 8 characters\n"


def test_cli_password_never_stored_in_clear(tmp_path: Path) -> None:
    data = tmp_path / "d"
    voipsec("init", data_dir=data)
    voipsec_cli("user", "add", "frank", "--password", "very-distinct-password", data_dir=data)
    assert b"very-distinct-password" not in (data / "voipsec.db").read_bytes()


def test_cli_config_set_validates_and_keeps_comments(tmp_path: Path) -> None:
    data = tmp_path / "d"
    voipsec("init", data_dir=data)
    ok = voipsec_cli("config", "set", "auth.algorithms", '["SHA-256", "MD5"]', data_dir=data)
    assert ok.returncode == 0
    assert voipsec_cli("config", "get", "auth.algorithms", data_dir=data).stdout == (
        '["SHA-256", "MD5"]\n'
    )
    text = (data / "voipsec.toml").read_text()
    assert "# Digest algorithms offered, strongest first." in text
    bad = voipsec_cli("config", "set", "tls.client_cert", '"sometimes"', data_dir=data, check=False)
    assert bad.returncode == 1
    assert bad.stderr == (
        f"voipsec: config error: {data / 'voipsec.toml'}: tls.client_cert: "
        "Input should be 'required', 'optional' or 'off'\n"
    )
    assert voipsec_cli("config", "get", "tls.client_cert", data_dir=data).stdout == "optional\n"


def test_cli_bad_config_line_one_clear_error_nonzero_exit(tmp_path: Path) -> None:
    data = tmp_path / "d"
    voipsec("init", data_dir=data)
    path = data / "voipsec.toml"
    path.write_text(
        path.read_text().replace(
            'listen = ["tls:127.0.0.1:5061"]', 'listen = ["tls:localhost:99999"]'
        )
    )
    result = voipsec_cli("serve", data_dir=data, check=False)
    assert result.returncode == 1
    assert result.stderr == (
        f"voipsec: config error: {path}: sip.listen: "
        "'tls:localhost:99999': host must be an IP address\n"
    )
    assert "Traceback" not in result.stdout + result.stderr


def test_cli_unknown_key_and_bad_toml(tmp_path: Path) -> None:
    data = tmp_path / "d"
    voipsec("init", data_dir=data)
    path = data / "voipsec.toml"
    path.write_text(path.read_text() + "\n[sip2]\nx = 1\n")
    unknown = voipsec_cli("serve", data_dir=data, check=False)
    assert unknown.stderr == f"voipsec: config error: {path}: sip2: unknown key\n"
    path.write_text("[sip\n")
    broken = voipsec_cli("user", "list", data_dir=data, check=False)
    assert broken.returncode == 1
    assert broken.stderr.startswith(f"voipsec: config error: {path}: not valid TOML: ")


def test_cli_serve_on_empty_directory_initialises_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    data = tmp_path / "new"
    prepared = prepare(data, cli=True)  # init + a free port, so the test does not need 5061
    (data / "voipsec.db").unlink()
    with serving(prepared) as server:
        assert (data / "voipsec.db").exists()
        assert server.proc is not None
        server.proc.send_signal(signal.SIGINT)
        wait_for(
            lambda: server.proc is not None and server.proc.poll() is not None,
            what="serve to stop on SIGINT",
        )
        assert server.proc.returncode == 0
    log = (data / "serve.log").read_text()
    assert "Traceback" not in log
    assert "voipsec is running." in log


def test_cli_help_for_every_subcommand() -> None:
    import subprocess

    for args in (
        ["--help"],
        ["init", "--help"],
        ["serve", "--help"],
        ["user", "--help"],
        ["user", "add", "--help"],
        ["config", "set", "--help"],
    ):
        proc = subprocess.run([*VOIPSEC, *args], capture_output=True, text=True, check=False)
        assert proc.returncode == 0, args
        assert "Usage:" in proc.stdout


def test_cli_serve_prints_what_a_softphone_needs(tmp_path: Path) -> None:
    serve_dir = "x"
    prepared = prepare(tmp_path / serve_dir, cli=True)
    with serving(prepared) as server:
        wait_for(lambda: "Stop with Ctrl-C." in server.log_text(), what="banner")
        log = server.log_text()
    assert f"SIP TLS  127.0.0.1:{prepared.port}" in log
    assert "domain / realm  localhost" in log
    assert f"CA certificate  {(tmp_path / serve_dir / 'ca' / 'ca.crt').resolve()}" in log
    demo = dict(
        line.split("=", 1) for line in (tmp_path / serve_dir / "demo-user.txt").read_text().split()
    )
    # serve's output goes to a file here, not a terminal: the password stays out of it.
    assert demo["password"] not in log
    demo_file = (tmp_path / serve_dir / "demo-user.txt").resolve()
    assert f"demo user       demo  password in {demo_file}" in log


def test_cli_serve_port_in_use_is_one_line(tmp_path: Path) -> None:
    import socket

    prepared = prepare(tmp_path / "d")
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", prepared.port))
    blocker.listen()
    try:
        with running(
            [*VOIPSEC, "serve", "--dir", str(prepared.data_dir)], log=tmp_path / "log"
        ) as proc:
            wait_for(lambda: proc.poll() is not None, what="serve to fail")
        assert proc.returncode == 1
        text = (tmp_path / "log").read_text()
        assert "voipsec: error: cannot listen: " in text
        assert "Traceback" not in text
    finally:
        blocker.close()


# -- classes of service -------------------------------------------------------------


def test_cli_user_add_with_class_list_and_change(tmp_path: Path) -> None:
    data = tmp_path / "d"
    voipsec("init", data_dir=data)
    voipsec_cli(
        "user", "add", "gina", "--password", "gina-pass-1", "--class", "internal", data_dir=data
    )
    voipsec_cli("user", "add", "hank", "--password", "hank-pass-1", data_dir=data)
    voipsec_cli("config", "set", "dialplan.default_class", '"international"', data_dir=data)
    voipsec_cli("user", "add", "ivy", "--password", "ivy-pass-12", data_dir=data)
    rows = json.loads(voipsec_cli("user", "list", "--format", "json", data_dir=data).stdout)
    assert {r["user"]: r["class"] for r in rows} == {
        "demo": "national",
        "gina": "internal",
        "hank": "national",
        "ivy": "international",
    }
    changed = voipsec_cli("user", "class", "hank", "premium-rate", data_dir=data)
    assert changed.stdout == "hank: class premium-rate\n"
    table = voipsec_cli("user", "list", data_dir=data).stdout
    assert "hank@localhost  class premium-rate  0 binding(s)\n" in table
    assert "gina@localhost  class internal  0 binding(s)\n" in table


def test_cli_user_bad_class_one_line_error(tmp_path: Path) -> None:
    data = tmp_path / "d"
    voipsec("init", data_dir=data)
    expected = (
        "voipsec: error: invalid class of service 'gold': use one of "
        "internal, national, international, premium-rate\n"
    )
    bad = voipsec_cli(
        "user",
        "add",
        "jack",
        "--password",
        "jack-pass-1",
        "--class",
        "gold",
        data_dir=data,
        check=False,
    )
    assert (bad.returncode, bad.stdout, bad.stderr) == (1, "", expected)
    assert "jack" not in voipsec_cli("user", "list", data_dir=data).stdout
    bad_change = voipsec_cli("user", "class", "demo", "gold", data_dir=data, check=False)
    assert (bad_change.returncode, bad_change.stderr) == (1, expected)
    nobody = voipsec_cli("user", "class", "kim", "national", data_dir=data, check=False)
    assert (nobody.returncode, nobody.stderr) == (1, "voipsec: error: no user 'kim'\n")


# -- cdr list -----------------------------------------------------------------------
# Every test runs twice: CDRs in voipsec.db (SQLite) and in a real PostgreSQL server
# named by ``[cdr] url`` (tests/peers/postgres.py), listed by the same CLI command.


CDR_T0 = datetime.datetime(2025, 3, 14, 9, 26, 53, tzinfo=datetime.UTC).timestamp()


@dataclass(frozen=True, slots=True, kw_only=True)
class CdrDir:
    """An initialised data directory and its ``[cdr] url`` ('' keeps CDRs in voipsec.db)."""

    path: Path
    url: str

    def store(self) -> Store:
        """The store as `voipsec serve` would open it (CDRs where the config says)."""
        return Store(self.path / DB_NAME, cdr_url=self.url)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.peers)])
def cdr_dir(tmp_path: Path, request: pytest.FixtureRequest) -> CdrDir:
    """``voipsec init``; for postgresql, ``cdr.url`` set to a new PostgreSQL database."""
    data = tmp_path / "d"
    voipsec("init", data_dir=data)
    if request.param == "sqlite":
        return CdrDir(path=data, url="")
    url = request.getfixturevalue("postgres_url")
    assert isinstance(url, str)
    voipsec("config", "set", "cdr.url", json.dumps(url), data_dir=data)
    # The URL holds the password: the CLI refuses a config file others may read.
    assert stat.S_IMODE((data / "voipsec.toml").stat().st_mode) == 0o600
    assert voipsec("config", "get", "cdr.url", data_dir=data).stdout == f"{url}\n"
    return CdrDir(path=data, url=url)


def _assert_stored_in(cdr_dir: CdrDir, ids: list[int]) -> None:
    """The rows ``ids`` are in the configured database only: with PostgreSQL the cdrs
    table of voipsec.db stays empty, so a CLI that lists them read PostgreSQL."""
    local = sqlite3.connect(cdr_dir.path / DB_NAME)
    try:
        in_sqlite = [row[0] for row in local.execute("SELECT id FROM cdrs ORDER BY id")]
    finally:
        local.close()
    if not cdr_dir.url:
        assert in_sqlite == ids
        return
    with psycopg.connect(cdr_dir.url) as conn:
        in_postgres = [row[0] for row in conn.execute("SELECT id FROM cdrs ORDER BY id")]
    assert (in_sqlite, in_postgres) == ([], ids)


def _cdr(
    start: float, call_id: str, caller: str = "alice", callee: str = "+442071234567"
) -> CdrStart:
    return CdrStart(
        call_id=call_id,
        caller=caller,
        callee_dialled="02071234567",
        callee=callee,
        user=caller,
        source="127.0.0.1:40000",
        transport="tls",
        tls_identity="",
        trunk="carrier",
        user_agent='baresip "v3", test',
        start=start,
    )


def _with_cdrs(cdr_dir: CdrDir) -> list[int]:
    """An answered call, a busy one and one still ringing, a minute apart from CDR_T0."""
    store = cdr_dir.store()
    try:
        answered = store.cdr_start(_cdr(CDR_T0, "call-1"))
        store.cdr_answer(answered, CDR_T0 + 2.0)
        store.cdr_end(
            answered,
            end=CDR_T0 + 62.5,
            disposition="answered",
            status=200,
            reason="OK",
            hangup_by="callee",
        )
        busy = store.cdr_start(_cdr(CDR_T0 + 60.0, "call-2", caller="bob", callee="alice"))
        store.cdr_end(
            busy,
            end=CDR_T0 + 61.0,
            disposition="busy",
            status=486,
            reason="Busy Here",
            hangup_by="",
        )
        ringing = store.cdr_start(_cdr(CDR_T0 + 120.0, "call-3", caller="[bold]mallory"))
    finally:
        store.close()
    _assert_stored_in(cdr_dir, [answered, busy, ringing])
    return [answered, busy, ringing]


def test_cli_cdr_list_json_keys_are_the_record_fields(cdr_dir: CdrDir) -> None:
    data = cdr_dir.path
    answered, busy, ringing = _with_cdrs(cdr_dir)
    rows = json.loads(voipsec_cli("cdr", "list", "--format", "json", data_dir=data).stdout)
    assert [list(r) for r in rows] == [list(CDR_FIELDS)] * 3
    assert [r["id"] for r in rows] == [answered, busy, ringing]
    assert rows[0] == {
        "id": answered,
        "call_id": "call-1",
        "caller": "alice",
        "callee_dialled": "02071234567",
        "callee": "+442071234567",
        "user": "alice",
        "source": "127.0.0.1:40000",
        "transport": "tls",
        "tls_identity": "",
        "trunk": "carrier",
        "user_agent": 'baresip "v3", test',
        "start": CDR_T0,
        "answer": CDR_T0 + 2.0,
        "end": CDR_T0 + 62.5,
        "duration": 62.5,
        "billable": 60.5,
        "disposition": "answered",
        "status": 200,
        "reason": "OK",
        "hangup_by": "callee",
        "media": None,
        "media_encryption": "",
        "kind": "",
    }
    assert (rows[2]["disposition"], rows[2]["end"], rows[2]["status"]) == ("", None, None)
    limited = json.loads(
        voipsec_cli("cdr", "list", "--format", "json", "--limit", "2", data_dir=data).stdout
    )
    assert [r["id"] for r in limited] == [busy, ringing]


def test_cli_cdr_list_csv_has_a_header_of_field_names(cdr_dir: CdrDir) -> None:
    data = cdr_dir.path
    answered, busy, ringing = _with_cdrs(cdr_dir)
    text = voipsec_cli("cdr", "list", "--format", "csv", data_dir=data).stdout
    assert text.splitlines()[0] == ",".join(CDR_FIELDS)
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [r["id"] for r in rows] == [str(answered), str(busy), str(ringing)]
    assert rows[0]["user_agent"] == 'baresip "v3", test'
    assert (rows[0]["start"], rows[0]["billable"], rows[0]["status"]) == (
        repr(CDR_T0),
        "60.5",
        "200",
    )
    assert (rows[1]["disposition"], rows[1]["reason"], rows[1]["billable"]) == (
        "busy",
        "Busy Here",
        "0.0",
    )
    assert (rows[2]["end"], rows[2]["status"], rows[2]["disposition"]) == ("", "", "")


def test_cli_cdr_list_table(cdr_dir: CdrDir) -> None:
    data = cdr_dir.path
    _with_cdrs(cdr_dir)
    lines = voipsec_cli("cdr", "list", data_dir=data).stdout.splitlines()
    assert [line.rstrip() for line in lines] == [
        "start (UTC)         caller        callee        disposition secs SIP hangup",
        "─" * 75,
        "2025-03-14 09:26:53 alice         +442071234567 answered    62.5 200 callee",
        "2025-03-14 09:27:53 bob           alice         busy         1.0 486",
        "2025-03-14 09:28:53 [bold]mallory +442071234567 ringing",
    ]


def test_cli_cdr_list_since_iso_date_and_time(cdr_dir: CdrDir) -> None:
    data = cdr_dir.path
    answered, busy, ringing = _with_cdrs(cdr_dir)

    def ids(since: str) -> list[int]:
        out = voipsec_cli("cdr", "list", "--format", "json", "--since", since, data_dir=data).stdout
        return [r["id"] for r in json.loads(out)]

    assert ids("2025-03-14") == [answered, busy, ringing]
    assert ids("2025-03-15") == []
    assert ids("2025-03-14T09:27:53") == [busy, ringing]  # no offset: UTC
    assert ids("2025-03-14T09:27:54Z") == [ringing]
    assert ids("2025-03-14T10:27:53+01:00") == [busy, ringing]


def test_cli_cdr_list_since_relative_duration(cdr_dir: CdrDir) -> None:
    data = cdr_dir.path
    now = time.time()
    store = cdr_dir.store()
    try:
        two_days = store.cdr_start(_cdr(now - 2 * 86_400, "old"))
        three_hours = store.cdr_start(_cdr(now - 3 * 3_600, "earlier"))
        ten_minutes = store.cdr_start(_cdr(now - 600, "recent"))
    finally:
        store.close()
    _assert_stored_in(cdr_dir, [two_days, three_hours, ten_minutes])

    def ids(since: str) -> list[int]:
        out = voipsec_cli("cdr", "list", "--format", "json", "--since", since, data_dir=data).stdout
        return [r["id"] for r in json.loads(out)]

    assert ids("15m") == [ten_minutes]
    assert ids("4h") == [three_hours, ten_minutes]
    assert ids("1d") == [three_hours, ten_minutes]
    assert ids("3d") == [two_days, three_hours, ten_minutes]


def test_cli_cdr_list_bad_arguments_one_line_error(cdr_dir: CdrDir) -> None:
    data = cdr_dir.path
    _with_cdrs(cdr_dir)
    for since in ("yesterday", "15x", "-2h", "2026-13-01", "9" * 20 + "d"):
        bad = voipsec_cli("cdr", "list", "--since", since, data_dir=data, check=False)
        assert (bad.returncode, bad.stdout) == (1, ""), since
        assert bad.stderr == (
            f"voipsec: error: --since {since!r}: expected an ISO-8601 date/time such as "
            "2026-11-27 or 2026-11-27T10:00:00, or a duration such as 15m, 2h, 1d\n"
        )
    fmt = voipsec_cli("cdr", "list", "--format", "xml", data_dir=data, check=False)
    assert (fmt.returncode, fmt.stderr) == (
        1,
        "voipsec: error: --format must be table, csv or json\n",
    )
    limit = voipsec_cli("cdr", "list", "--limit", "0", data_dir=data, check=False)
    assert (limit.returncode, limit.stderr) == (1, "voipsec: error: --limit must be at least 1\n")


def test_cli_help_for_cdr_and_class_commands() -> None:
    import subprocess

    for args in (["cdr", "--help"], ["cdr", "list", "--help"], ["user", "class", "--help"]):
        proc = subprocess.run([*VOIPSEC, *args], capture_output=True, text=True, check=False)
        assert proc.returncode == 0, args
        assert "Usage:" in proc.stdout


def test_cli_bans_list_marks_udp_only_and_remove_takes_an_ipv6_64(tmp_path: Path) -> None:
    """Issue 13 (6, 15): UDP-only bans are marked, other lines are as they were; the rate
    ban of an IPv6 source is its /64, and `bans remove` lifts it."""
    data = tmp_path / "data"
    voipsec("init", data_dir=data)
    until = time.time() + 600
    store = Store(data / DB_NAME)
    try:
        store.add_ban("192.0.2.5", until, "rate limit of zone internet", "udp")
        store.add_ban("2001:db8:1:2::/64", until, "rate limit of zone internet")
    finally:
        store.close()
    lines = voipsec_cli("bans", "list", data_dir=data).stdout.splitlines()
    assert [(line.split("  ")[0], line.split("  ")[2:]) for line in lines] == [
        ("192.0.2.5", ["rate limit of zone internet", "(UDP only)"]),
        ("2001:db8:1:2::/64", ["rate limit of zone internet"]),
    ]
    removed = voipsec_cli("bans", "remove", "2001:db8:1:2::/64", data_dir=data)
    assert removed.stdout == "unbanned 2001:db8:1:2::/64\n"
    wrong = voipsec_cli("bans", "remove", "2001:db8::/48", data_dir=data, check=False)
    assert (wrong.returncode, wrong.stderr) == (
        1,
        "voipsec: error: '2001:db8::/48' is not an IP address or an IPv6 /64\n",
    )
    assert [
        line.split("  ")[0]
        for line in voipsec_cli("bans", "list", data_dir=data).stdout.splitlines()
    ] == ["192.0.2.5"]


def test_cli_config_set_does_not_echo_secrets(tmp_path: Path) -> None:
    """A token, password or webhook URL set on the command line is not printed back
    (scrollback and CI logs keep what is printed); other values are echoed as before."""
    data = tmp_path / "d"
    voipsec("init", data_dir=data)
    token = "f" * 40
    webhook = "https://hooks.example.test/T000/B000/s3cr3tpath"
    for key, literal in (
        ("metrics.token", f'"{token}"'),
        ("alerts.webhook", f'"{webhook}"'),
        ("hep.auth_key", '"hep-key-123"'),
        ("cdr.url", '"postgresql://voipsec:pw-456@127.0.0.1/voipsec"'),
    ):
        out = voipsec_cli("config", "set", key, literal, data_dir=data)
        assert (out.returncode, out.stdout, out.stderr) == (
            0,
            f"{key} set (a secret: not shown)\n",
            "",
        )
    plain = voipsec_cli("config", "set", "media.timeout", "20.0", data_dir=data)
    assert plain.stdout == "media.timeout = 20.0\n"
    # Written all the same (config get is the admin asking for it).
    assert voipsec_cli("config", "get", "metrics.token", data_dir=data).stdout == token + "\n"
    assert voipsec_cli("config", "get", "alerts.webhook", data_dir=data).stdout == webhook + "\n"

"""The voipsec command: init, user and config subcommands, and its error contract."""

from __future__ import annotations

import json
import signal
import stat
from pathlib import Path

from tests.peers.proc import running, wait_for
from tests.peers.voipsec import VOIPSEC, prepare, serving, voipsec


def test_cli_init_creates_private_files(tmp_path: Path) -> None:
    data = tmp_path / "d"
    assert voipsec("init", "--domain", "example.test", data_dir=data).stdout == (
        f"initialised: {data}\n"
    )
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    assert stat.S_IMODE((data / "ca" / "ca.key").stat().st_mode) == 0o600
    assert voipsec("config", "get", "sip.domain", data_dir=data).stdout == "example.test\n"
    again = voipsec("init", data_dir=data)
    assert again.stdout == f"already initialised: {data}\n"


def test_cli_user_add_list_remove(tmp_path: Path) -> None:
    data = tmp_path / "d"
    voipsec("init", data_dir=data)
    added = voipsec("user", "add", "carol", "--password", "carol-pass-1", data_dir=data)
    assert added.stdout == "added carol@localhost\n"
    rows = json.loads(voipsec("user", "list", "--format", "json", data_dir=data).stdout)
    assert [r["user"] for r in rows] == ["carol", "demo"]
    assert rows[0] == {"user": "carol", "aor": "carol@localhost", "bindings": []}
    assert voipsec("user", "remove", "carol", data_dir=data).stdout == "removed carol\n"
    missing = voipsec("user", "remove", "carol", data_dir=data, check=False)
    assert (missing.returncode, missing.stderr) == (1, "voipsec: error: no user 'carol'\n")


def test_cli_user_add_duplicate_and_bad_names(tmp_path: Path) -> None:
    data = tmp_path / "d"
    voipsec("init", data_dir=data)
    voipsec("user", "add", "dave", "--password", "dave-pass-1", data_dir=data)
    dup = voipsec("user", "add", "dave", "--password", "dave-pass-1", data_dir=data, check=False)
    assert (dup.returncode, dup.stderr) == (1, "voipsec: error: user 'dave' already exists\n")
    bad = voipsec("user", "add", "d@ve", "--password", "dave-pass-1", data_dir=data, check=False)
    assert bad.returncode == 1
    assert bad.stderr.startswith("voipsec: error: invalid user name 'd@ve'")
    short = voipsec("user", "add", "erin", "--password", "short", data_dir=data, check=False)
    assert short.stderr == "voipsec: error: password must be at least 8 characters\n"


def test_cli_password_never_stored_in_clear(tmp_path: Path) -> None:
    data = tmp_path / "d"
    voipsec("init", data_dir=data)
    voipsec("user", "add", "frank", "--password", "very-distinct-password", data_dir=data)
    assert b"very-distinct-password" not in (data / "voipsec.db").read_bytes()


def test_cli_config_set_validates_and_keeps_comments(tmp_path: Path) -> None:
    data = tmp_path / "d"
    voipsec("init", data_dir=data)
    ok = voipsec("config", "set", "auth.algorithms", '["SHA-256", "MD5"]', data_dir=data)
    assert ok.returncode == 0
    assert voipsec("config", "get", "auth.algorithms", data_dir=data).stdout == (
        '["SHA-256", "MD5"]\n'
    )
    text = (data / "voipsec.toml").read_text()
    assert "# Digest algorithms offered, strongest first." in text
    bad = voipsec("config", "set", "tls.client_cert", '"sometimes"', data_dir=data, check=False)
    assert bad.returncode == 1
    assert bad.stderr == (
        f"voipsec: config error: {data / 'voipsec.toml'}: tls.client_cert: "
        "Input should be 'required', 'optional' or 'off'\n"
    )
    assert voipsec("config", "get", "tls.client_cert", data_dir=data).stdout == "optional\n"


def test_cli_bad_config_line_one_clear_error_nonzero_exit(tmp_path: Path) -> None:
    data = tmp_path / "d"
    voipsec("init", data_dir=data)
    path = data / "voipsec.toml"
    path.write_text(
        path.read_text().replace(
            'listen = ["tls:127.0.0.1:5061"]', 'listen = ["tls:localhost:99999"]'
        )
    )
    result = voipsec("serve", data_dir=data, check=False)
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
    unknown = voipsec("serve", data_dir=data, check=False)
    assert unknown.stderr == f"voipsec: config error: {path}: sip2: unknown key\n"
    path.write_text("[sip\n")
    broken = voipsec("user", "list", data_dir=data, check=False)
    assert broken.returncode == 1
    assert broken.stderr.startswith(f"voipsec: config error: {path}: not valid TOML: ")


def test_cli_serve_on_empty_directory_initialises_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    data = tmp_path / "new"
    prepared = prepare(data)  # init + a free port, so the test does not need 5061
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
    prepared = prepare(tmp_path / serve_dir)
    with serving(prepared) as server:
        wait_for(lambda: "Stop with Ctrl-C." in server.log_text(), what="banner")
        log = server.log_text()
    assert f"SIP TLS  127.0.0.1:{prepared.port}" in log
    assert "domain / realm  localhost" in log
    assert f"CA certificate  {(tmp_path / serve_dir / 'ca' / 'ca.crt').resolve()}" in log
    demo = dict(
        line.split("=", 1) for line in (tmp_path / serve_dir / "demo-user.txt").read_text().split()
    )
    assert f"demo user       demo  password {demo['password']}" in log


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

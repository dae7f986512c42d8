"""STUN/TURN as `voipsec serve` runs it (wired into the server, not the standalone runner),
with a credential pair from `voipsec turn credentials`, against coturn's clients."""

from __future__ import annotations

import re
import socket
import subprocess
from pathlib import Path

import pytest

from tests.peers.proc import free_port, require, running, wait_for
from tests.peers.turn import free_udp_tcp_port
from tests.peers.voipsec import prepare, serving, voipsec

pytestmark = pytest.mark.peers

ALICE = ("alice", "alice-secret-1")


def _echoes(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(0.2)
        try:
            sock.sendto(b"ping", ("127.0.0.1", port))
            return sock.recvfrom(64)[0] == b"ping"
        except OSError:
            return False


def _run(argv: list[str]) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=25, check=False)
    return proc.stdout + proc.stderr


def test_serve_runs_stun_and_turn_with_cli_credentials(tmp_path: Path) -> None:
    prepared = prepare(tmp_path / "data", users=[ALICE])
    turn = free_udp_tcp_port()
    voipsec(
        "config",
        "set",
        "turn.listen",
        f'["udp:127.0.0.1:{turn}", "tcp:127.0.0.1:{turn}"]',
        data_dir=prepared.data_dir,
    )
    voipsec("config", "set", "turn.allowed_peers", '["127.0.0.1/32"]', data_dir=prepared.data_dir)
    peer = free_port("127.0.0.1", socket.SOCK_DGRAM)
    with (
        serving(prepared) as server,
        running(
            [require("turnutils_peer"), "-L", "127.0.0.1", "-p", str(peer)],
            log=tmp_path / "peer.log",
        ),
    ):
        wait_for(lambda: "STUN/TURN listening on" in server.log_text(), what="TURN up")
        wait_for(lambda: _echoes(peer), deadline=10, what="turnutils_peer")
        stun = _run([require("turnutils_stunclient"), "-p", str(turn), "127.0.0.1"])
        assert re.search(r"UDP reflexive addr: 127\.0\.0\.1:\d+", stun), stun
        pair = voipsec(
            "turn", "credentials", "alice", "--ttl", "600", data_dir=server.data_dir
        ).stdout.split()
        assert pair[0] == "username:" and pair[1].endswith(":alice") and pair[2] == "password:"
        out = _run([
            require("turnutils_uclient"), "-n", "100", "-m", "4", "-l", "170",
            "-e", "127.0.0.1", "-r", str(peer), "-X", "-g", "-u", pair[1], "-w", pair[3],
            "-p", str(turn), "127.0.0.1",
        ])  # fmt: skip
        assert "Total lost packets 0 (0.000000%)" in out, out[-3000:]
    assert oct((server.data_dir / "turn-secret").stat().st_mode & 0o777) == "0o600"


def test_cli_turn_credentials_unknown_user_is_one_line(tmp_path: Path) -> None:
    prepared = prepare(tmp_path / "data")
    result = voipsec("turn", "credentials", "nobody", data_dir=prepared.data_dir, check=False)
    assert (result.returncode, result.stderr) == (1, "voipsec: error: no user 'nobody'\n")

"""The media relay in worker processes (docs/media.md "Relay workers"), on loopback.

* A relay worker killed with SIGKILL in the middle of a call: both phones get a BYE,
  the call's CDR is closed with the reason "media worker lost" (hangup_by "system"),
  the supervisor starts the worker again (a new pid), the signaling side reconnects to
  it, and a new call goes through with media relayed both ways.
* ``serve`` stopped: no relay worker is left running.
* The control channel's run directory is 0700 and each socket 0600; a run directory
  that group or others may enter stops ``serve`` before it listens.

Runs in both process modes of the suite (VOIPSEC_TEST_WORKERS unset: one relay
worker per core; =1: one relay worker).
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.conftest import ALICE, BOB
from tests.integration.test_media import (
    DEADLINE,
    RELAY_PORTS,
    Phone,
    ended_cdrs,
    media_legs,
    scripted_call,
    talk_then_hang_up,
)
from tests.peers.proc import wait_for
from tests.peers.voipsec import VOIPSEC, VoipsecServer, prepare, serving
from voipsec.media.worker import pid_path, port_slices, socket_path

pytestmark = pytest.mark.peers

#: Packets each phone receives before the worker is killed (the call is really up).
PACKETS = 10


def worker_pids(server: VoipsecServer) -> dict[int, int]:
    """Relay worker index → pid, from the pid files the workers write."""
    pids: dict[int, int] = {}
    for path in sorted((server.data_dir / "run").glob("media-*.pid")):
        index = int(path.stem.removeprefix("media-"))
        text = path.read_text().strip()
        if text.isdigit():
            pids[index] = int(text)
    return pids


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def worker_of(port: int, workers: int) -> int:
    """The index of the worker whose slice of the relay ports holds ``port``."""
    for index, (low, high) in enumerate(port_slices(RELAY_PORTS, workers)):
        if low <= port <= high:
            return index
    raise AssertionError(f"port {port} is in no worker's slice")


def wait_byes(phones: list[Phone]) -> list[str]:
    """Each phone's next request must be a BYE (answered 200); who got one."""
    got: list[str] = []

    def take(phone: Phone) -> None:
        phone.wait_bye()
        got.append(phone.user)

    threads = [threading.Thread(target=take, args=(p,), daemon=True) for p in phones]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=DEADLINE)
    return sorted(got)


def test_media_worker_killed_mid_call_ends_it_and_is_restarted(tmp_path: Path) -> None:
    prepared = prepare(tmp_path / "data", users=[ALICE, BOB])
    with serving(prepared) as server:
        before = worker_pids(server)
        assert before and all(alive(pid) for pid in before.values())
        with scripted_call(server) as (alice, bob):
            for phone in (alice, bob):
                phone.media.start()
            bob.media.wait_received(PACKETS)
            alice.media.wait_received(PACKETS)
            assert alice.media.target is not None
            victim = worker_of(alice.media.target[1], len(before))
            # Every signaling process logs its connection to each relay worker.
            reconnected = f"connected to media worker {victim}"
            connections = server.log_text().count(reconnected)
            assert connections >= 1
            os.kill(before[victim], 9)
            assert wait_byes([alice, bob]) == ["alice", "bob"]
            alice.media.stop_sending()
            bob.media.stop_sending()
        (row,) = ended_cdrs(server)
        assert (row["disposition"], row["reason"], row["hangup_by"]) == (
            "answered",
            "media worker lost",
            "system",
        ), row

        def restarted() -> bool:
            pid = worker_pids(server).get(victim)
            return pid is not None and pid != before[victim] and alive(pid)

        wait_for(restarted, deadline=DEADLINE, what=f"media worker {victim} to restart")
        wait_for(
            lambda: server.log_text().count(reconnected) >= 2 * connections,
            deadline=DEADLINE,
            what="the signaling side to reconnect to the restarted worker",
        )
        assert f"media worker {victim} lost: ending its 1 call(s)" in server.log_text()
        with scripted_call(server) as (alice, bob):
            bye = talk_then_hang_up(alice, bob, PACKETS)
            assert bye.method == "BYE"
        rows = ended_cdrs(server, 2)
        second = next(r for r in rows if r["reason"] != "media worker lost")
        assert second["disposition"] == "answered", second
        assert all(leg["packets"] >= PACKETS for leg in media_legs(second).values()), second
        pids = worker_pids(server)
    assert pids and not any(alive(pid) for pid in pids.values()), pids


def test_media_workers_run_dir_and_sockets_are_private(tmp_path: Path) -> None:
    prepared = prepare(tmp_path / "data", users=[ALICE, BOB])
    with serving(prepared) as server:
        run = server.data_dir / "run"
        assert stat.S_IMODE(run.stat().st_mode) == 0o700
        indexes = sorted(worker_pids(server))
        assert indexes
        for index in indexes:
            sock = socket_path(server.data_dir, index)
            assert stat.S_ISSOCK(sock.stat().st_mode)
            assert stat.S_IMODE(sock.stat().st_mode) == 0o600
            assert stat.S_IMODE(pid_path(server.data_dir, index).stat().st_mode) == 0o600
        pids = worker_pids(server)
    # serve stopped: no worker left, and they cleaned up after themselves.
    assert not any(alive(pid) for pid in pids.values()), pids
    assert not list((prepared.data_dir / "run").glob("media-*.sock"))


def test_media_workers_refuse_a_run_dir_others_may_enter(tmp_path: Path) -> None:
    prepared = prepare(tmp_path / "data", users=[ALICE, BOB])
    run = prepared.data_dir / "run"
    run.mkdir(mode=0o700)
    run.chmod(0o755)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    done = subprocess.run(
        [*VOIPSEC, "serve", "--dir", str(prepared.data_dir)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert done.returncode != 0
    assert f"{run} is accessible to group or others (mode 755)" in done.stderr
    assert "Traceback" not in done.stderr


def test_media_workers_exit_when_serve_is_killed(tmp_path: Path) -> None:
    # SIGKILL gives serve no chance to stop them: each worker sees its stdin (a pipe
    # only serve held) end, and exits on its own. No orphan keeps the relay ports.
    prepared = prepare(tmp_path / "data", users=[ALICE, BOB])
    with serving(prepared) as server:
        pids = worker_pids(server)
        assert pids and all(alive(pid) for pid in pids.values())
        assert server.proc is not None
        server.proc.kill()
        server.proc.wait(timeout=DEADLINE)
        wait_for(
            lambda: not any(alive(pid) for pid in pids.values()),
            deadline=DEADLINE,
            what=f"relay workers {sorted(pids.values())} to exit",
        )

"""app/worker_main.py: the argument line, and a real relay worker's life: it listens on
its socket (0600), writes its pid file, and exits cleanly when its stdin ends (the
parent's lifeline), removing both."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.peers.proc import free_udp_ports
from voipsec.app.supervisor import EXIT_PARENT_GONE, WorkerArgs
from voipsec.app.worker_main import parse_args
from voipsec.config import CONFIG_NAME
from voipsec.media.worker import pid_path, socket_path

from .test_media_pool import PORTS


def test_worker_main_parse_args_keeps_role_options() -> None:
    assert parse_args(["media", "--dir", "/d", "--index", "1", "--workers", "2"]) == WorkerArgs(
        role="media", data_dir=Path("/d"), index=1, extra=("--workers", "2")
    )


def test_worker_main_unknown_role_is_refused() -> None:
    with pytest.raises(SystemExit):
        parse_args(["nope", "--dir", "/d", "--index", "0"])


def _wait(condition: Callable[[], object], deadline: float = 20.0) -> None:
    end = time.monotonic() + deadline
    while not condition():
        assert time.monotonic() < end, "condition not met before the deadline"
        time.sleep(0.02)


def _start_media_worker(tmp_path: Path) -> subprocess.Popen[bytes]:
    low = free_udp_ports(PORTS)
    (tmp_path / CONFIG_NAME).write_text(f'[media]\nports = "{low}-{low + PORTS - 1}"\n')
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    argv = [sys.executable, "-m", "voipsec.app.worker_main", "media", "--dir", str(tmp_path)]
    proc = subprocess.Popen(
        [*argv, "--index", "0", "--workers", "1"],
        stdin=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    _wait(lambda: pid_path(tmp_path, 0).exists() or proc.poll() is not None)
    assert proc.poll() is None
    assert pid_path(tmp_path, 0).read_text() == f"{proc.pid}\n"
    assert socket_path(tmp_path, 0).stat().st_mode & 0o777 == 0o600
    return proc


def _log_of(proc: subprocess.Popen[bytes]) -> str:
    assert proc.stderr is not None
    log = proc.stderr.read().decode()
    assert "[media-0] voipsec.media.worker: relay on 127.0.0.1" in log
    assert "Traceback" not in log
    return log


def test_worker_main_media_worker_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    proc = _start_media_worker(tmp_path)
    try:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert not socket_path(tmp_path, 0).exists()
    assert not pid_path(tmp_path, 0).exists()
    assert "stopped" in _log_of(proc)


def test_worker_main_media_worker_leaves_at_once_when_stdin_ends(tmp_path: Path) -> None:
    """Its stdin ended with no SIGTERM first: the parent is gone (killed), so the worker
    ends at once, as if killed with it; the next start replaces its stale socket."""
    proc = _start_media_worker(tmp_path)
    try:
        assert proc.stdin is not None
        proc.stdin.close()
        assert proc.wait(timeout=20) == EXIT_PARENT_GONE
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    log = _log_of(proc)
    assert "media-0: parent process gone: exiting at once" in log
    assert "stopped" not in log

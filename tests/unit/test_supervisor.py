"""app/supervisor.py: children started, restarted after a crash (at most MAX_RESTARTS
within the window), stopped with SIGTERM then SIGKILL, every one reaped.

The children are tiny Python programs; conditions are awaited with a deadline, never
slept for."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from voipsec.app import supervisor as supervisor_module
from voipsec.app.supervisor import ChildSpec, Supervisor, worker_spec

#: Waits on the parent's stdin (it ends when the supervisor stops it).
WAIT_STDIN = "import sys; sys.stdin.read()"
#: Ignores SIGTERM and stdin: only SIGKILL ends it.
STUBBORN = (
    "import signal, time, sys; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    "print('ready', flush=True, file=sys.stderr); time.sleep(60)"
)


def _spec(name: str, code: str) -> ChildSpec:
    return ChildSpec(name, [sys.executable, "-c", code])


async def _until(condition: Callable[[], object], deadline: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline
    while not condition():
        assert loop.time() < end, "condition not met before the deadline"
        await asyncio.sleep(0.01)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_supervisor_start_and_stop_reaps_every_child() -> None:
    supervisor = Supervisor()
    await supervisor.start(_spec("one", WAIT_STDIN))
    await supervisor.start(_spec("two", WAIT_STDIN))
    pids = [supervisor.pid("one"), supervisor.pid("two")]
    assert all(isinstance(p, int) for p in pids)
    assert supervisor.statistics().running == 2
    await supervisor.stop()
    assert supervisor.pid("one") is None
    assert not any(_alive(p) for p in pids if p is not None)


async def test_supervisor_start_twice_the_same_name_is_refused() -> None:
    supervisor = Supervisor()
    await supervisor.start(_spec("one", WAIT_STDIN))
    with pytest.raises(ValueError, match="already supervised"):
        await supervisor.start(_spec("one", WAIT_STDIN))
    await supervisor.stop()


async def test_supervisor_restarts_a_crashed_child(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(supervisor_module, "RESTART_BACKOFF", 0.0)
    exits: list[tuple[str, int]] = []
    supervisor = Supervisor(on_exit=lambda name, status: exits.append((name, status)))
    await supervisor.start(_spec("crashy", WAIT_STDIN))
    first = supervisor.pid("crashy")
    assert first is not None
    os.kill(first, 9)
    await _until(lambda: supervisor.pid("crashy") not in (None, first))
    assert exits == [("crashy", -9)]
    assert supervisor.statistics().restarts == 1
    await supervisor.stop()


async def test_supervisor_leaves_a_crash_looping_child_failed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(supervisor_module, "RESTART_BACKOFF", 0.0)
    monkeypatch.setattr(supervisor_module, "MAX_RESTARTS", 2)
    exits: list[int] = []
    supervisor = Supervisor(on_exit=lambda name, status: exits.append(status))
    await supervisor.start(_spec("loop", "raise SystemExit(3)"))
    await _until(lambda: supervisor.statistics().failed == ("loop",))
    assert exits == [3, 3, 3]  # the first life and MAX_RESTARTS restarts
    assert supervisor.statistics().restarts == 2
    assert supervisor.pid("loop") is None
    await supervisor.stop()


async def test_supervisor_stop_kills_a_child_that_ignores_sigterm(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(supervisor_module, "STOP_GRACE", 0.2)
    supervisor = Supervisor()
    await supervisor.start(_spec("stubborn", STUBBORN))
    pid = supervisor.pid("stubborn")
    assert pid is not None
    await supervisor.stop()
    assert not _alive(pid)


async def test_supervisor_start_of_a_missing_program_raises() -> None:
    supervisor = Supervisor()
    with pytest.raises(OSError):
        await supervisor.start(ChildSpec("missing", ["/nonexistent/voipsec-child"]))
    assert supervisor.statistics().children == 0


def test_supervisor_worker_spec_names_role_dir_and_index(tmp_path: Path) -> None:
    spec = worker_spec("media", tmp_path, 1, ("--x",))
    assert spec.name == "media-1"
    assert spec.argv == [
        sys.executable,
        "-m",
        "voipsec.app.worker_main",
        "media",
        "--dir",
        str(tmp_path),
        "--index",
        "1",
        "--x",
    ]

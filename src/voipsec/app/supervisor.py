"""Child processes of ``voipsec serve``: started, watched, restarted, stopped (shell).

How this works: ``serve`` (the parent) runs its media relay workers, and signaling
workers, as children it starts with :meth:`Supervisor.start`. Each child gets a pipe
on its stdin that only the parent holds: a child exits when its stdin reaches end of
file, so a parent that dies, even by SIGKILL, never leaves orphans behind. Children
run in their own session (a Ctrl-C on the terminal reaches the parent only; the
parent stops them in order) and log to the parent's stderr.

A child that exits while the supervisor is not stopping is logged with its exit
status, reported to ``on_exit`` and started again after :data:`RESTART_BACKOFF`; one
that keeps crashing (more than :data:`MAX_RESTARTS` exits within
:data:`RESTART_WINDOW`) is logged as failed and left stopped, rather than burning a
core in a crash loop. :meth:`Supervisor.stop` sends SIGTERM (and closes stdin), waits
at most :data:`STOP_GRACE`, then SIGKILLs what is left; every child is reaped.

Failure mode: a child that cannot be started raises from :meth:`Supervisor.start`
(``serve`` does not start half-built); a child that fails later is restarted, and its
users (the media pool, the signaling hub) see its channel close and act on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import stat
import sys
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

log = logging.getLogger("voipsec.supervisor")

#: Seconds between a child's unexpected exit and its restart: long enough not to spin
#: on a child that fails at once, short enough that calls move back quickly.
RESTART_BACKOFF = 0.5
#: Restarts of one child allowed within RESTART_WINDOW before it is left failed.
MAX_RESTARTS = 5
#: Seconds over which MAX_RESTARTS is counted.
RESTART_WINDOW = 60.0
#: Seconds stop() waits for children to exit after SIGTERM before SIGKILL.
STOP_GRACE = 3.0
#: The child entry point (voipsec/app/worker_main.py).
WORKER_MODULE = "voipsec.app.worker_main"


@dataclass(frozen=True, slots=True)
class ChildSpec:
    """One child process: a unique name (in logs and ``pid``) and its full command."""

    name: str
    argv: list[str]


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerArgs:
    """What the supervisor told a worker: its role, data directory, index and options."""

    role: str
    data_dir: Path
    index: int
    extra: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return f"{self.role}-{self.index}"


class RunDirError(Exception):
    """The run directory (the local channels' sockets) is not ours alone."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SupervisorStatistics:
    children: int
    running: int
    restarts: int
    #: Children that crashed too often and are left stopped.
    failed: tuple[str, ...]


@dataclass(slots=True)
class _Child:
    spec: ChildSpec
    process: asyncio.subprocess.Process | None = None
    watcher: asyncio.Task[None] | None = None
    exits: deque[float] = field(default_factory=deque)
    failed: bool = False


def worker_spec(role: str, data_dir: Path, index: int, extra: Sequence[str] = ()) -> ChildSpec:
    """The spec of worker ``index`` of ``role`` (``python -m voipsec.app.worker_main``)."""
    argv = [sys.executable, "-m", WORKER_MODULE, role, "--dir", str(data_dir)]
    argv += ["--index", str(index), *extra]
    return ChildSpec(name=f"{role}-{index}", argv=argv)


def secure_run_dir(data_dir: Path) -> Path:
    """``DIR/run``, where the local channels' sockets live: created 0700; RunDirError
    when it exists but another user owns it or group/others may enter it (anyone who
    can reach a socket there could drive the media relay or a signaling worker)."""
    run = data_dir / "run"
    with contextlib.suppress(FileExistsError):
        run.mkdir(mode=0o700)
    info = run.lstat()
    if not stat.S_ISDIR(info.st_mode):
        raise RunDirError(f"{run} is not a directory")
    if info.st_uid != os.getuid():
        raise RunDirError(f"{run} is owned by uid {info.st_uid}, not by us")
    if info.st_mode & 0o077:
        raise RunDirError(f"{run} is accessible to group or others (mode {info.st_mode & 0o777:o})")
    return run


class Supervisor:
    """The children of one ``serve``: each restarted when it dies, all stopped at exit."""

    def __init__(self, on_exit: Callable[[str, int], None] | None = None) -> None:
        self._on_exit = on_exit
        self._children: dict[str, _Child] = {}
        self._stopping = False
        self._restarts = 0

    async def start(self, spec: ChildSpec) -> None:
        """Start ``spec`` (OSError when it cannot be executed); it is watched from now on."""
        if spec.name in self._children:
            raise ValueError(f"child {spec.name!r} is already supervised")
        child = _Child(spec=spec)
        self._children[spec.name] = child
        try:
            await self._spawn(child)
        except BaseException:
            del self._children[spec.name]
            raise

    async def _spawn(self, child: _Child) -> None:
        process = await asyncio.create_subprocess_exec(
            *child.spec.argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=sys.stderr.fileno(),
            start_new_session=True,
        )
        child.process = process
        child.watcher = asyncio.get_running_loop().create_task(
            self._watch(child, process), name=f"watch {child.spec.name}"
        )
        log.info("started %s (pid %d)", child.spec.name, process.pid)

    async def _watch(self, child: _Child, process: asyncio.subprocess.Process) -> None:
        status = await process.wait()
        if process.stdin is not None:
            process.stdin.close()
        if self._stopping:
            return
        name = child.spec.name
        log.warning("%s (pid %d) exited with status %d", name, process.pid, status)
        child.process = None
        if self._on_exit is not None:
            try:
                self._on_exit(name, status)
            except Exception:
                log.exception("exit handler of %s failed", name)
        if self._too_many_exits(child):
            child.failed = True
            log.error(
                "%s exited %d times within %.0f s: not restarted (failed)",
                name,
                len(child.exits),
                RESTART_WINDOW,
            )
            return
        await asyncio.sleep(RESTART_BACKOFF)
        if self._stopping:
            return
        self._restarts += 1
        try:
            await self._spawn(child)
        except OSError as err:
            child.failed = True
            log.error("could not restart %s: %s (failed)", name, err)
            return
        log.info("restarted %s", name)

    def _too_many_exits(self, child: _Child) -> bool:
        now = asyncio.get_running_loop().time()
        child.exits.append(now)
        while child.exits and now - child.exits[0] > RESTART_WINDOW:
            child.exits.popleft()
        return len(child.exits) > MAX_RESTARTS

    def pid(self, name: str) -> int | None:
        """The running process id of child ``name`` (None: unknown, or between lives)."""
        child = self._children.get(name)
        if child is None or child.process is None or child.process.returncode is not None:
            return None
        return child.process.pid

    async def stop(self) -> None:
        """SIGTERM every child, SIGKILL after STOP_GRACE; reap all (stdin ends with each)."""
        self._stopping = True
        children = list(self._children.values())
        for child in children:
            if child.watcher is not None and child.process is None:
                child.watcher.cancel()  # waiting to restart: nothing to stop
        running = [c.process for c in children if c.process is not None]
        for process in running:
            _terminate(process)
        waits = [asyncio.ensure_future(p.wait()) for p in running]
        if waits:
            _, late = await asyncio.wait(waits, timeout=STOP_GRACE)
            for process in running:
                if process.returncode is None:
                    log.warning("pid %d did not stop in %.0f s: killed", process.pid, STOP_GRACE)
                    with contextlib.suppress(ProcessLookupError):
                        process.kill()
            if late:
                await asyncio.wait(late)
        for child in children:
            if child.watcher is not None:
                child.watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await child.watcher
            if child.process is not None:
                log.info("stopped %s (status %s)", child.spec.name, child.process.returncode)
        self._children.clear()

    def statistics(self) -> SupervisorStatistics:
        children = self._children.values()
        return SupervisorStatistics(
            children=len(self._children),
            running=sum(1 for c in children if self.pid(c.spec.name) is not None),
            restarts=self._restarts,
            failed=tuple(sorted(c.spec.name for c in children if c.failed)),
        )


def _terminate(process: asyncio.subprocess.Process) -> None:
    """SIGTERM only: the child's stdin stays open until it has exited (``_watch``), so a
    child told the end of its stdin knows its parent is gone (:func:`leave_at_once`)."""
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)


#: A child's exit status when its parent vanished (its stdin or its hub link ended
#: without a SIGTERM first).
EXIT_PARENT_GONE = 3


def leave_at_once(name: str) -> NoReturn:
    """A child whose parent is gone (killed, SIGKILL included) ends at once, as if it
    had been killed with it: no hang-up, no CDR closed. ``serve`` is one service; after
    ``kill -9`` of it every call's CDR row stays open and the next start closes it as
    incomplete (docs/storage.md), whichever process held the call."""
    log.error("%s: parent process gone: exiting at once", name)
    for handler in logging.getLogger().handlers:
        with contextlib.suppress(Exception):
            handler.flush()
    os._exit(EXIT_PARENT_GONE)


__all__ = [
    "EXIT_PARENT_GONE",
    "ChildSpec",
    "RunDirError",
    "Supervisor",
    "SupervisorStatistics",
    "WorkerArgs",
    "leave_at_once",
    "secure_run_dir",
    "worker_spec",
]

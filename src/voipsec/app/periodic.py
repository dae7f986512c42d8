"""The one owner of the server's periodic jobs (binding flushes, sweeps, file watches).

Jobs register an interval and a plain function; :class:`Periodic` runs them from one
task that ``Server`` starts and stops, in the order they were added, each when its
interval has passed (the first time on the first tick). A job's exception is logged
and the job runs again at its next turn: no failure stops the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger("voipsec.sip")


@dataclass(slots=True, kw_only=True)
class _Job:
    name: str
    interval: float
    run: Callable[[], None]
    #: Monotonic time it last ran; None: not yet.
    last: float | None = None


class Periodic:
    """Runs registered jobs every ``tick`` seconds, each on the tick nearest its interval
    (half a tick early counts: a sleep may wake a little before its time)."""

    def __init__(self, *, tick: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.tick = tick
        self._clock = clock
        self._jobs: list[_Job] = []
        self._task: asyncio.Task[None] | None = None

    def every(self, interval: float, name: str, run: Callable[[], None]) -> None:
        """Run ``run`` every ``interval`` seconds (rounded up to ticks)."""
        self._jobs.append(_Job(name=name, interval=interval, run=run))

    def start(self) -> None:
        """Start the one task (on the running loop)."""
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name="voipsec-periodic")

    async def stop(self) -> None:
        """Cancel the task and wait for it; jobs are not run once more."""
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    def run_due(self) -> None:
        """One tick: every job whose interval has passed, in the order added."""
        now = self._clock()
        for job in self._jobs:
            if job.last is not None and now - job.last < job.interval - self.tick / 2:
                continue
            job.last = now
            try:
                job.run()
            except Exception:
                log.exception("periodic job %s failed; it runs again next time", job.name)

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.tick)
            self.run_due()

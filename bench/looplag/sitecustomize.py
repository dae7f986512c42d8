"""Event-loop lag probe for a benchmarked ``voipsec serve``, loaded without touching src/.

``bench/call_bench.py --loop-lag`` puts this directory first on the server process's
PYTHONPATH, so Python imports this module at start-up (``site`` imports any
``sitecustomize`` it finds), and names an output file in ``VOIPSEC_LOOP_LAG_FILE``.
Without that variable nothing is installed. The probe wraps ``asyncio.run`` -- voipsec's
``serve`` enters its loop through it, with uvloop's policy when uvloop is installed;
uvloop's loop is a compiled type whose ``run_forever`` cannot be patched, ``asyncio.run``
can, for either loop and for every revision of ``cli.py`` that calls it -- so that the
first coroutine run starts a callback every ``INTERVAL`` seconds on the running loop.

Each tick records how late it ran: the time since it was due (its scheduling time plus
``INTERVAL``), which is how long a ready callback waited for whatever the loop was busy
with (a CDR commit on the loop shows here). uvloop's timers have millisecond resolution
and may fire up to a millisecond early, so lags under ~1 ms are noise and early ticks
count as 0. Each tick also records the CPU time the loop's own thread used between
scheduling it and running it (``time.thread_time``): work the loop did without yielding
shows there, time the process waited for a core while other processes ran does not, so
on a busy shared machine it separates a stall the server causes (a CDR commit) from one
it suffers. (A thread of the server holding the GIL, or a wait for the disk, shows in
the lag only.)

A daemon thread appends the samples to the file every ``FLUSH_SECONDS`` as JSON lines
``{"t": [monotonic seconds...], "lag_us": [...], "cpu_us": [...]}`` (``time.monotonic`` is the same
clock in every process on Linux, so the bench can cut out a step's window), and at exit
a ``{"summary": {"count", "max_us", "p99_us", "p999_us", "cpu_max_us"}}`` line over the
whole run. A killed server leaves everything up to its last flush.
"""

from __future__ import annotations

import asyncio
import atexit
import json
import os
import threading
import time
from collections.abc import Coroutine
from typing import Any, TypeVar

ENV = "VOIPSEC_LOOP_LAG_FILE"
#: Seconds between ticks: a 1-ms-resolution timer still resolves a few-ms stall, and
#: 200 ticks a second cost the loop well under 1 % of a core.
INTERVAL = 0.005
FLUSH_SECONDS = 0.5

T = TypeVar("T")


def percentile(values: list[int], share: float) -> int:
    """The nearest-rank percentile of ``values`` (0 when empty)."""
    if not values:
        return 0
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, int(share * len(ordered) + 0.999999) - 1))
    return ordered[rank]


class Probe:
    """The ticking callback, its pending samples and the thread that writes them."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._times: list[float] = []
        self._lags: list[int] = []
        self._cpus: list[int] = []
        self._all_cpu: list[int] = []
        self._all: list[int] = []
        self._lock = threading.Lock()
        self._due = 0.0
        self._cpu_at = 0.0
        self._done = threading.Event()

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._schedule(loop, time.monotonic())
        threading.Thread(target=self._flusher, name="loop-lag", daemon=True).start()
        atexit.register(self.close)

    def _schedule(self, loop: asyncio.AbstractEventLoop, now: float) -> None:
        self._due = now + INTERVAL
        self._cpu_at = time.thread_time()
        loop.call_later(INTERVAL, self._tick, loop)

    def _tick(self, loop: asyncio.AbstractEventLoop) -> None:
        now = time.monotonic()
        lag = max(0, round(1e6 * (now - self._due)))
        cpu = round(1e6 * (time.thread_time() - self._cpu_at))
        with self._lock:
            self._times.append(round(now, 4))
            self._lags.append(lag)
            self._cpus.append(cpu)
        self._schedule(loop, now)

    def _flusher(self) -> None:
        while not self._done.wait(FLUSH_SECONDS):
            self.flush()

    def flush(self) -> None:
        with self._lock:
            times, lags, cpus = self._times, self._lags, self._cpus
            self._times, self._lags, self._cpus = [], [], []
        if not times:
            return
        self._all.extend(lags)
        self._all_cpu.extend(cpus)
        self._append({"t": times, "lag_us": lags, "cpu_us": cpus})

    def close(self) -> None:
        self._done.set()
        self.flush()
        lags = self._all
        summary = {
            "count": len(lags),
            "max_us": max(lags, default=0),
            "p99_us": percentile(lags, 0.99),
            "p999_us": percentile(lags, 0.999),
            "cpu_max_us": max(self._all_cpu, default=0),
        }
        self._append({"summary": summary})

    def _append(self, record: dict[str, object]) -> None:
        with open(self.path, "a", encoding="ascii") as handle:
            handle.write(json.dumps(record) + "\n")


def install(path: str) -> None:
    """Wrap ``asyncio.run``: its first coroutine starts the probe on the running loop."""
    original = asyncio.run
    probe = Probe(path)

    def run(main: Coroutine[Any, Any, T], **kwargs: Any) -> T:
        async def probed() -> T:
            probe.start(asyncio.get_running_loop())
            return await main

        asyncio.run = original  # one loop per process is probed
        return original(probed(), **kwargs)

    asyncio.run = run


if os.environ.get(ENV):
    install(os.environ[ENV])

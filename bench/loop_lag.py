"""The bench side of the event-loop lag probe (``bench/looplag/sitecustomize.py``).

``call_bench.py --loop-lag`` starts ``voipsec serve`` with :func:`server_env`; after each
step :func:`step_lag` waits for the probe to have flushed the step's end and summarises
the ticks that ran between the step's start and end (monotonic clock, shared by every
process on the machine).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from looplag.sitecustomize import ENV, FLUSH_SECONDS, percentile

PROBE_DIR = Path(__file__).resolve().parent / "looplag"


@dataclass(frozen=True)
class LoopLag:
    """How late the probe's ticks ran over one step (µs)."""

    count: int
    max_us: int
    p99_us: int
    p999_us: int
    #: The most CPU the loop's thread used between scheduling a tick and running it,
    #: and its 99th percentile: the loop's own work, whatever else ran on the machine.
    cpu_max_us: int = 0
    cpu_p99_us: int = 0


def main_thread_cpu(pid: int) -> float:
    """CPU seconds of ``pid``'s first thread -- voipsec's event loop (``asyncio.run`` in
    the main thread); the rest of the process is its other threads (the CDR writer)."""
    try:
        text = Path(f"/proc/{pid}/task/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def python_path(*first: str) -> str:
    """``first`` ahead of the current PYTHONPATH."""
    rest = os.environ.get("PYTHONPATH", "")
    return os.pathsep.join([*first, *([rest] if rest else [])])


def server_env(lag_file: Path) -> dict[str, str]:
    """The server's environment additions: the probe first on its path, the output file."""
    return {"PYTHONPATH": python_path(str(PROBE_DIR)), ENV: str(lag_file)}


def _samples(path: Path) -> list[tuple[float, int, int]]:
    """(time, lag µs, loop CPU µs) per tick written so far."""
    if not path.exists():
        return []
    found: list[tuple[float, int, int]] = []
    for line in path.read_text(encoding="ascii", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:  # a line cut short by a kill
            continue
        if "t" in record:
            found.extend(zip(record["t"], record["lag_us"], record["cpu_us"], strict=True))
    return found


def step_lag(path: Path, start: float, end: float) -> LoopLag:
    """The ticks in [start, end], once the probe flushed one past ``end`` (or gave up)."""
    deadline = time.monotonic() + 4 * FLUSH_SECONDS + 2
    samples = _samples(path)
    while not any(s[0] >= end for s in samples) and time.monotonic() < deadline:
        time.sleep(FLUSH_SECONDS / 2)
        samples = _samples(path)
    inside = [s for s in samples if start <= s[0] <= end]
    lags = [s[1] for s in inside]
    cpus = [s[2] for s in inside]
    return LoopLag(
        len(lags), max(lags, default=0), percentile(lags, 0.99), percentile(lags, 0.999),
        max(cpus, default=0), percentile(cpus, 0.99),
    )  # fmt: skip

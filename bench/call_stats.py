"""Server memory and SIPp statistics for ``bench/call_bench.py``: the PSS of a process
tree sampled while a step runs, and the concurrent-call peak and mean call length from
the caller SIPps' statistics files."""

from __future__ import annotations

import csv
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import register_bench as rb
from tests.peers.sipp import STATS_FILE, SippResult

#: Seconds between memory samples.
SAMPLE_INTERVAL = 0.2


def _proc_kib(path: str, key: str) -> int:
    """A ``key: N kB`` value from a /proc file, 0 when gone."""
    try:
        with open(path, encoding="ascii") as handle:
            for line in handle:
                if line.startswith(key):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def tree_pss_kib(root: int) -> int:
    """Proportional set size of ``root``'s process tree (Kamailio's workers share their
    shared memory; for one process PSS grows exactly as its RSS when it allocates)."""
    return sum(_proc_kib(f"/proc/{pid}/smaps_rollup", "Pss:") for pid in rb.process_tree(root))


class MemorySampler:
    """The peak PSS of a process tree, sampled in a thread while a step runs."""

    def __init__(self, root: int) -> None:
        self.root = root
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, tree_pss_kib(self.root))
            self._stop.wait(SAMPLE_INTERVAL)

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.peak = max(self.peak, tree_pss_kib(self.root))


def stats_rows(workdir: Path | None) -> list[dict[str, str]]:
    """Every row of a SIPp statistics CSV (one per ``-fd`` second, then the final one)."""
    path = (workdir or Path("/nonexistent")) / STATS_FILE
    if not path.exists():
        return []
    with path.open(newline="", encoding="ascii", errors="replace") as handle:
        rows = [row for row in csv.reader(handle, delimiter=";") if row]
    if len(rows) < 2:
        return []
    header = rows[0]
    return [dict(zip(header, row, strict=False)) for row in rows[1:]]


def concurrent_peak(results: Sequence[SippResult]) -> int:
    """Peak of the callers' ``CurrentCall`` summed row by row (they start together)."""
    columns = [[_int(r.get("CurrentCall")) for r in stats_rows(res.workdir)] for res in results]
    width = max((len(c) for c in columns), default=0)
    return max(
        (sum(c[i] for c in columns if i < len(c)) for i in range(width)),
        default=0,
    )


def mean_call_length_ms(results: Sequence[SippResult]) -> float:
    """SIPp's cumulative mean call length (``CallLength(C)``), weighted by calls."""
    total = weight = 0.0
    for res in results:
        text = res.stats.get("CallLength(C)", "")
        seconds = _hms(text)
        if seconds is not None and res.successful:
            total += seconds * res.successful
            weight += res.successful
    return 1000 * total / weight if weight else 0.0


def _hms(text: str) -> float | None:
    """SIPp's ``HH:MM:SS:ffffff`` (or ``HH:MM:SS``) as seconds."""
    parts = text.strip().split(":")
    if len(parts) < 3:
        return None
    try:
        h, m, s = (int(p) for p in parts[:3])
        frac = int(parts[3]) / 10 ** len(parts[3]) if len(parts) > 3 and parts[3] else 0.0
    except ValueError:
        return None
    return h * 3600 + m * 60 + s + frac


def _int(text: str | None) -> int:
    try:
        return int(text or 0)
    except ValueError:
        return 0

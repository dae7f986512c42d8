"""What a call's CDR writes cost the event loop, before and after the writer thread.

    .venv/bin/python bench/cdr_bench.py [--calls 500] [--dir DIR]

1. Before: the store's synchronous calls a call made on the loop (open, answer, end,
   and the row read back at the end), each its own commit.
2. After: what the loop does with every write queued (three queue appends), and how
   long a routed call is held for its open row to be committed by the writer thread
   (the loop runs other calls meanwhile): the path with PostgreSQL or a busy SQLite.
3. Fast: what the loop does now with SQLite: the open row's INSERT on its own
   connection (no lock wait, no checkpoint), then two queue appends; the call is held
   for nothing more.

SQLite in a temporary directory (or ``--dir``, to measure a given disk).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from pathlib import Path

from voipsec.storage import CdrStart, Store
from voipsec.storage.writer import CdrWriter


def _start(n: int) -> CdrStart:
    return CdrStart(
        call_id=f"bench-{n}",
        caller="sip:alice@example.test",
        callee_dialled="bob",
        callee="bob",
        user="alice",
        source="127.0.0.1:5061",
        transport="tls",
        tls_identity="",
        trunk="",
        user_agent="cdr_bench",
        start=time.time(),
    )


def _summary(samples: list[float]) -> str:
    ordered = sorted(samples)
    p99 = ordered[int(len(ordered) * 0.99)]
    median = statistics.median(ordered)
    return f"median {median * 1e6:.0f} us, p99 {p99 * 1e6:.0f} us, max {ordered[-1] * 1e6:.0f} us"


def _before(store: Store, calls: int) -> list[float]:
    out = []
    for n in range(calls):
        began = time.perf_counter()
        row = store.cdr_start(_start(n))
        store.cdr_answer(row, time.time())
        store.cdr_end(
            row, end=time.time(), disposition="answered", status=200, reason="", hangup_by="caller"
        )
        store.cdr(row)
        out.append(time.perf_counter() - began)
    return out


def _after(store: Store, calls: int) -> tuple[list[float], list[float]]:
    writer = CdrWriter(store.open_writer_database)
    writer.start()
    loop, held = [], []
    for n in range(calls):
        done = threading.Event()
        began = time.perf_counter()
        ticket = writer.open(_start(n), lambda _row, done=done: done.set())
        queued = time.perf_counter()
        done.wait()
        confirmed = time.perf_counter()
        writer.answer(ticket, time.time())
        end = time.time()
        writer.end(
            ticket, end=end, disposition="answered", status=200, reason="", hangup_by="caller"
        )
        loop.append((queued - began) + (time.perf_counter() - confirmed))
        held.append(confirmed - queued)
    writer.stop()
    return loop, held


def _fast(store: Store, calls: int) -> list[float]:
    writer = CdrWriter(store.open_writer_database, fast=store.open_fast_cdr_database)
    writer.start()
    loop = []
    for n in range(calls):
        began = time.perf_counter()
        ticket = writer.open(_start(n), lambda _row: None)
        writer.answer(ticket, time.time())
        end = time.time()
        writer.end(
            ticket, end=end, disposition="answered", status=200, reason="", hangup_by="caller"
        )
        loop.append(time.perf_counter() - began)
    writer.stop()
    if writer.fast_deferred:
        print(f"fast:   {writer.fast_deferred} open row(s) went to the thread (busy)")
    return loop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=500)
    parser.add_argument("--dir", type=Path, default=None)
    args = parser.parse_args()
    directory = args.dir or Path(tempfile.mkdtemp(prefix="cdr-bench-"))
    store = Store(directory / "voipsec.db")
    try:
        before = _before(store, args.calls)
        loop, held = _after(store, args.calls)
        fast = _fast(store, args.calls)
    finally:
        store.close()
    print(f"before: loop blocked per call (4 statements, 3 commits): {_summary(before)}")
    print(f"after:  loop busy per call (3 queue appends):            {_summary(loop)}")
    print(f"after:  call held for its open row (loop free):          {_summary(held)}")
    print(f"fast:   loop busy per call (1 INSERT, 2 queue appends):   {_summary(fast)}")


if __name__ == "__main__":
    main()

"""What keeping state global across signaling workers costs, per mechanism.

    PYTHONPATH=src .venv/bin/python bench/shared_state_bench.py [--events 20000] [--runs 5]
    PYTHONPATH=src valgrind --tool=callgrind .venv/bin/python \
        bench/shared_state_bench.py --guard-only {plain,shared} --events {0,20000}

The candidates (issue 15, "choose the mechanism by measurement"), each timed in CPU
seconds (``time.process_time``: both ends run in this process, so the figure is what
the machine spends, sender and receiver together), median of ``--runs``:

1. **channel, one event per frame**: a BanImposed through ``encode_event`` +
   ``encode_frame``, a Unix socketpair, ``FrameDecoder.feed`` + ``decode_event`` (what
   app/cluster.py does for a replicated event; the hub's relay adds one more hop).
2. **channel, one fraud report per frame**: a call's check report as app/shared/fraud.py
   sends it (a JSON payload, no dataclass conversion); a call sends three (check,
   answer, end).
3. **channel, batched**: rate-bucket consumption, 2,000 buckets a frame
   (app/shared/counters.py), per bucket.
4. **SQLite WAL, one upsert per event**: ``INSERT ... ON CONFLICT DO UPDATE`` in its own
   transaction (synchronous=NORMAL) on a file two connections share, as processes would.
5. **SQLite WAL, one read per check**: what a worker pays on its hot path to see another
   worker's writes without a replica (a SELECT by primary key per message).
6. **the guard's check**, in memory, alone and with consumption noted for sharing (the
   hot-path price of the batched buckets).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from voipsec.edge.guard import Guard  # noqa: E402
from voipsec.edge.zones import Zone, ZoneMap  # noqa: E402
from voipsec.events import BanImposed  # noqa: E402
from voipsec.ipc import FrameDecoder, decode_event, encode_event, encode_frame  # noqa: E402

BATCH = 2_000


def cpu(run: Callable[[int], None], n: int, runs: int) -> float:
    """Median CPU microseconds per item of ``run(n)``."""
    samples = []
    for _ in range(runs):
        start = time.process_time()
        run(n)
        samples.append((time.process_time() - start) / n * 1e6)
    return statistics.median(samples)


def channel_events(n: int) -> None:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    decoder = FrameDecoder()
    received = 0
    try:
        for i in range(n):
            event = BanImposed(
                source=f"192.0.2.{i % 250}", until=1e9, seconds=300.0,
                reason="rate limit of zone internet", scope="all", time=1.0,
            )  # fmt: skip
            a.sendall(encode_frame("event", {"event": encode_event(event), "_to": "*"}))
            if i % 64 == 63 or i == n - 1:
                while received <= i:
                    for frame in decoder.feed(b.recv(1 << 20)):
                        decode_event(frame.header["event"])
                        received += 1
    finally:
        a.close()
        b.close()


def channel_fraud_reports(n: int) -> None:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    decoder = FrameDecoder()
    received = 0
    try:
        for i in range(n):
            report = {
                "op": "check", "call_id": f"call-{i}@10.0.0.1", "user": "alice",
                "dialled": "+33123456789", "e164": "+33123456789", "kind": "international",
                "time": 1e9 + i, "allowed": True, "suspended": None,
            }  # fmt: skip
            payload = json.dumps(report, separators=(",", ":")).encode()
            a.sendall(encode_frame("state.fraud", {"_to": "*"}, payload))
            if i % 64 == 63 or i == n - 1:
                while received <= i:
                    for frame in decoder.feed(b.recv(1 << 20)):
                        json.loads(frame.payload)
                        received += 1
    finally:
        a.close()
        b.close()


def channel_batched(n: int) -> None:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    a.setblocking(True)
    decoder = FrameDecoder()
    try:
        for start in range(0, n, BATCH):
            entries = [
                [f"all|10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}", 3]
                for i in range(start, min(n, start + BATCH))
            ]
            data = encode_frame(
                "state.buckets", {"_to": "*"}, json.dumps(entries, separators=(",", ":")).encode()
            )
            a.sendall(data)
            got: list[object] = []
            while not got:
                for frame in decoder.feed(b.recv(1 << 20)):
                    got = json.loads(frame.payload)
    finally:
        a.close()
        b.close()


def sqlite_pair(path: Path) -> tuple[sqlite3.Connection, sqlite3.Connection]:
    conns = []
    for _ in range(2):
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conns.append(conn)
    conns[0].execute(
        "CREATE TABLE IF NOT EXISTS bans (source TEXT PRIMARY KEY, until REAL, reason TEXT)"
    )
    return conns[0], conns[1]


def sqlite_upserts(path: Path) -> Callable[[int], None]:
    writer, _ = sqlite_pair(path)

    def run(n: int) -> None:
        for i in range(n):
            writer.execute(
                "INSERT INTO bans VALUES (?, ?, ?) ON CONFLICT(source) DO UPDATE SET "
                "until = excluded.until, reason = excluded.reason",
                (f"192.0.2.{i % 250}", 1e9 + i, "rate limit"),
            )

    return run


def sqlite_reads(path: Path) -> Callable[[int], None]:
    _, reader = sqlite_pair(path)

    def run(n: int) -> None:
        for i in range(n):
            reader.execute(
                "SELECT until FROM bans WHERE source = ?", (f"198.51.100.{i % 250}",)
            ).fetchone()

    return run


def guard_checks(shared: bool) -> Callable[[int], None]:
    zone = Zone(name="internet", networks=(), rate_requests=10**9, rate_window=1.0)
    guard = Guard(ZoneMap([], zone))
    if shared:
        guard.share_consumption()

    def run(n: int) -> None:
        check = guard.check
        for i in range(n):
            check(f"192.0.2.{i & 127}", 1000.0)
        guard.take_consumption(BATCH)

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument(
        "--guard-only",
        choices=["plain", "shared"],
        help="only --events guard checks, once (for callgrind: run 0 and N, subtract)",
    )
    args = parser.parse_args()
    n, runs = args.events, args.runs
    if args.guard_only is not None:
        guard_checks(args.guard_only == "shared")(n)
        return
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "shared.db"
        rows = [
            ("channel: one event per frame (µs/event)", cpu(channel_events, n, runs)),
            (
                "channel: one fraud report per frame (µs/report)",
                cpu(channel_fraud_reports, n, runs),
            ),
            ("channel: batched buckets (µs/bucket)", cpu(channel_batched, n * 5, runs)),
            ("SQLite WAL: one upsert per event (µs/event)", cpu(sqlite_upserts(path), n, runs)),
            ("SQLite WAL: one read per check (µs/check)", cpu(sqlite_reads(path), n * 5, runs)),
            ("guard check, not shared (µs/check)", cpu(guard_checks(False), n * 5, runs)),
            ("guard check, consumption noted (µs/check)", cpu(guard_checks(True), n * 5, runs)),
        ]
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, median of {runs} runs")
    for name, value in rows:
        print(f"{name:48s} {value:8.2f}")


if __name__ == "__main__":
    main()

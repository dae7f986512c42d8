"""Rate buckets and IDS windows counted over every signaling worker.

How this works: a source that spreads its traffic over the workers (several TLS
connections, each accepted by another worker; UDP spread by SO_REUSEPORT) must meet the
same limits as one that does not. Each worker keeps its own guard buckets and IDS
windows and decides alone, on the hot path, with no round trip; every
:data:`SHARE_INTERVAL` it sends the others what it counted since the last batch:

* the tokens each guard bucket gave (``Guard.take_consumption``), which the others take
  from the same bucket (``Guard.apply_consumption``): a bucket refills at the zone's
  rate once, whatever the number of workers;
* the IDS matches it counted (rule, key, time, transport; ``IdsEngine.take_matches``),
  which the others add to the same window (``IdsEngine.merge_match``): a rule's
  threshold counts the matches of every worker, and the next match seen anywhere acts
  on the total. Worker 0 also asks the IDS about each window a batch touched
  (``IntrusionShell.merged``): a source that stays under a threshold on each worker but
  reaches it over all of them is alerted on and banned at once, by worker 0 only (one
  ban, one alert; the ban is replicated). Such a ban covers every transport only when
  every merged match came over TCP/TLS: spoofed datagrams never widen a ban.

Staleness: at most one interval (0.2 s) plus a channel hop. In that time a source can
get at most one interval's worth of its rate through each worker above the limit; the
IDS acts one match later than one worker would. Both are bounded: a batch carries at
most :data:`MAX_BUCKETS_PER_BATCH` buckets (the busiest; the rest are forgotten, their
sources being the slowest) and :data:`MAX_MATCHES_PER_BATCH` matches. Failure mode:
fails open to per-worker counting: a lost or refused batch only means a worker counted
less than the whole (each worker's own limits hold).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol

from ...edge.guard import Guard
from ...edge.ids import MAX_KEY_LENGTH
from ...ipc import Frame
from .port import (
    BUCKETS,
    IDS_MATCHES,
    BadPayload,
    ClusterPort,
    SharedCounters,
    dump,
    load_list,
    number,
    text,
)

log = logging.getLogger("voipsec.shared")

#: Seconds between two batches: the registrar's flush tick (server.FLUSH_INTERVAL).
SHARE_INTERVAL = 0.2
#: Buckets one batch carries (about 40 bytes each in JSON: 80 kB, a third of
#: ipc.MAX_FRAME). A flood of more sources than this in 0.2 s is a spoofed UDP flood,
#: which each worker's own buckets already limit.
MAX_BUCKETS_PER_BATCH = 2_000
#: IDS matches one batch carries: a key is at most MAX_KEY_LENGTH characters, so 1,000
#: matches stay under ipc.MAX_FRAME (256 KiB) with room to spare.
MAX_MATCHES_PER_BATCH = 1_000
#: Longest rule name accepted from another worker (rule ids are short words).
MAX_RULE_NAME = 128
#: Longest bucket name: a kind, "|", an IPv6 address or /64.
MAX_BUCKET_NAME = 64


class SharedIds(Protocol):
    """The IDS engine's sharing side (edge/ids.py ``IdsEngine``)."""

    def share_matches(self) -> None: ...

    def take_matches(self) -> list[tuple[str, str, float, str]]: ...

    def merge_match(self, rule: str, key: str, time: float) -> bool: ...


class CounterSync:
    """Sends this worker's guard and IDS counts every tick; applies the others'."""

    def __init__(
        self,
        *,
        cluster: ClusterPort,
        guard: Guard,
        ids: Callable[[], SharedIds | None],
        counters: SharedCounters,
        clock: Callable[[], float],
        merged: Callable[[str, str, str], None] | None = None,
    ) -> None:
        """``ids`` returns the IDS engine of the moment (rules reloaded, or none);
        ``merged(rule, key, transport)`` acts on a window a batch touched (worker 0)."""
        self._cluster = cluster
        self._guard = guard
        self._ids = ids
        self._merged = merged
        self._counters = counters
        self._clock = clock
        guard.share_consumption()
        engine = ids()
        if engine is not None:
            engine.share_matches()
        cluster.on(BUCKETS, self.on_buckets)
        cluster.on(IDS_MATCHES, self.on_matches)

    def tick(self) -> None:
        """Send what this worker counted since the last tick (nothing when it is idle)."""
        spent = self._guard.take_consumption(MAX_BUCKETS_PER_BATCH + 1)
        if len(spent) > MAX_BUCKETS_PER_BATCH:
            self._counters.dropped += 1
            spent = spent[:MAX_BUCKETS_PER_BATCH]
        if spent:
            self._send(BUCKETS, [[bucket, tokens] for bucket, tokens in spent])
        engine = self._ids()
        if engine is None:
            return
        engine.share_matches()  # a new engine (rules enabled while serving)
        matches = engine.take_matches()
        if len(matches) > MAX_MATCHES_PER_BATCH:
            self._counters.dropped += len(matches) - MAX_MATCHES_PER_BATCH
            matches = matches[-MAX_MATCHES_PER_BATCH:]  # the latest count the longest
        if matches:
            self._send(IDS_MATCHES, [list(match) for match in matches])

    def _send(self, kind: str, entries: list[list[object]]) -> None:
        self._cluster.broadcast(kind, {}, dump(entries))
        self._counters.frames_sent += 1

    def on_buckets(self, origin: int, frame: Frame) -> None:
        """Another worker's bucket consumption: taken from the same buckets here."""
        self._counters.frames_received += 1
        try:
            entries = _entries(frame, MAX_BUCKETS_PER_BATCH, 2)
            now = self._clock()
            for bucket, tokens in entries:
                count = number(tokens)
                if not self._guard.apply_consumption(
                    text(bucket, MAX_BUCKET_NAME), int(count), now
                ):
                    self._counters.rejected += 1
        except BadPayload as err:
            self._reject(origin, err)

    def on_matches(self, origin: int, frame: Frame) -> None:
        """Another worker's IDS matches: counted in the same windows here."""
        self._counters.frames_received += 1
        engine = self._ids()
        try:
            entries = _entries(frame, MAX_MATCHES_PER_BATCH, 4)
            if engine is None:
                return
            touched: dict[tuple[str, str], bool] = {}  # (rule, key) -> all over TCP/TLS
            for rule, key, time, transport in entries:
                name, value = text(rule, MAX_RULE_NAME), text(key, MAX_KEY_LENGTH)
                if not engine.merge_match(name, value, number(time)):
                    self._counters.rejected += 1
                    continue
                stream = text(transport, MAX_RULE_NAME) not in ("", "udp")
                touched[(name, value)] = touched.get((name, value), True) and stream
        except BadPayload as err:
            self._reject(origin, err)
            return
        if self._merged is not None:
            for (name, value), stream in touched.items():
                self._merged(name, value, "tls" if stream else "udp")

    def _reject(self, origin: int, err: BadPayload) -> None:
        self._counters.rejected += 1
        log.debug("state frame from worker %d ignored: %s", origin, err)


def _entries(frame: Frame, limit: int, width: int) -> list[list[object]]:
    """A batch's entries: a list of at most ``limit`` lists of ``width`` items."""
    entries = load_list(frame)
    if len(entries) > limit:
        raise BadPayload(f"{frame.kind}: {len(entries)} entries exceed {limit}")
    for entry in entries:
        if not isinstance(entry, list) or len(entry) != width:
            raise BadPayload(f"{frame.kind}: an entry is not a list of {width}")
    return entries

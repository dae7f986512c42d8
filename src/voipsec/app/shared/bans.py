"""Bans on every signaling worker at once: a ban imposed on one is adopted by all.

How this works: every worker replicates its :class:`~voipsec.events.BanImposed` events
(the guard's rate limits, the IDS, connection floods); on each other worker the ban
arrives as a :class:`~voipsec.events.RemoteEvent`, its guard adopts it
(app/bans.py ``BanKeeper.adopt``: not stored, logged or alerted a second time) and, for a
ban of every transport, the worker cuts the source's connections it owns. Bans made
with ``voipsec bans add`` reach every worker through the database, which each re-reads
every second (``BanKeeper.reload``), as with one worker.

Staleness: one hop on the local channel (a Unix socket), tens of microseconds; a
request the source sends on another worker in that time is the only one that passes.
Failure mode: fails closed where the ban was made (it holds there whatever the channel
does); a worker that misses the event still adopts the ban from the database within a
second of the origin's store writer committing it.
"""

from __future__ import annotations

import logging
from typing import Protocol

from ...edge.guard import BanScope
from ...events import BanImposed, Event, EventBus, RemoteEvent
from .port import ClusterPort, SharedCounters

log = logging.getLogger("voipsec.shared")


class BanAdopter(Protocol):
    """The ban keeper (app/bans.py)."""

    def adopt(self, imposed: BanImposed) -> bool: ...


class ConnectionCutter(Protocol):
    """The worker's connection table (transport/connections.py)."""

    def abort_source(self, ip: str) -> object: ...


class BanReplica:
    """Adopts the bans other workers impose and cuts the banned sources' connections."""

    def __init__(
        self,
        *,
        cluster: ClusterPort,
        keeper: BanAdopter,
        connections: ConnectionCutter,
        events: EventBus,
        counters: SharedCounters,
    ) -> None:
        self._keeper = keeper
        self._connections = connections
        self._counters = counters
        cluster.replicate(BanImposed)
        events.subscribe(self.on_remote, RemoteEvent)

    def on_remote(self, event: Event) -> None:
        """A ban from another worker: adopted, and its connections here cut."""
        if not isinstance(event, RemoteEvent) or not isinstance(event.event, BanImposed):
            return
        imposed = event.event
        self._counters.frames_received += 1
        if not self._keeper.adopt(imposed):
            return
        log.info("ban of %s adopted from worker %d", imposed.source, event.origin)
        if imposed.scope == BanScope.ALL.value:
            self._connections.abort_source(imposed.source)

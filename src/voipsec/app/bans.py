"""The ban keeper: the guard's bans, stored, published and re-read from storage.

The guard (edge/guard.py) decides who is banned; this shell stores a new ban, logs it,
publishes :class:`~voipsec.events.BanImposed` and an alert, and adopts the bans the CLI
adds or lifts in the database (:meth:`BanKeeper.reload`). With several signaling
workers, a ban another worker imposed is adopted here (:meth:`BanKeeper.adopt`) without
being stored, logged as new or alerted again; it holds through reloads until the
database has it (the other worker's writer stores it a moment later) or it runs out.

Failure mode: a ban that cannot be stored still holds in memory (fails closed for the
running server); a stored ban of an unknown scope blocks every transport.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable, Sequence
from typing import Protocol

from ..edge.guard import Ban, BanAdded, BanScope, Guard, GuardVerdict
from ..events import AlertRaised, BanImposed, BanLifted, EventBus
from ..records import BanRecord
from ..storage import StoreError

log = logging.getLogger("voipsec.sip")


class BanStore(Protocol):
    """Where bans are kept between runs (storage/store.py)."""

    def bans(self, now: float) -> Sequence[BanRecord]: ...


class BanWrites(Protocol):
    """Where a new ban is written: the server's StoreWriter (off the event loop), or
    the Store itself (tests, tools); bans it holds queued still count."""

    def add_ban(self, source: str, until: float, reason: str, scope: str = ...) -> None: ...

    def queued_bans(self) -> Sequence[BanRecord]: ...


class BanKeeper:
    """Records the guard's new bans and adopts the stored ones."""

    def __init__(
        self,
        *,
        guard: Guard,
        store: BanStore,
        writes: BanWrites,
        events: EventBus,
        clock: Callable[[], float],
    ) -> None:
        self.guard = guard
        self.store = store
        self.writes = writes
        self.events = events
        self.clock = clock
        #: Bans other workers imposed, held until the stored list has them.
        self._remote: dict[str, Ban] = {}

    def adopt(self, imposed: BanImposed) -> bool:
        """A ban another worker imposed takes effect here; True when it is new or wider
        here (its connections are then cut), False when a ban as long and wide holds."""
        now = self.clock()
        if imposed.until <= now:
            return False
        added = self.guard.ban(
            imposed.source,
            imposed.until - now,
            imposed.reason,
            now,
            scope=ban_scope(imposed.scope),
        )
        if added is None:
            return False
        self._remote[added.ban.source] = added.ban
        return True

    def record_ban(self, added: BanAdded) -> None:
        """Store, log and alert on a new ban; :class:`BanImposed` drops the source's
        connections (the server subscribes).

        A ban from UDP evidence only (BanScope.UDP) leaves the source's TCP/TLS
        connections alone: a datagram's source address proves nothing (guard.py).
        """
        ban = added.ban
        udp_only = ban.scope is BanScope.UDP
        log.warning(
            "banned %s for %d s%s: %s",
            ban.source,
            added.seconds,
            " (UDP only)" if udp_only else "",
            ban.reason,
        )
        try:
            self.writes.add_ban(ban.source, ban.until, ban.reason, ban.scope.value)
        except (sqlite3.Error, StoreError):
            log.exception("could not store the ban of %s (it holds in memory)", ban.source)
        now = self.clock()
        # The server cuts the source's connections on a ban of every transport.
        self.events.publish(
            BanImposed(
                source=ban.source,
                until=ban.until,
                seconds=added.seconds,
                reason=ban.reason,
                scope=ban.scope.value,
                time=now,
            )
        )
        self.events.publish(
            AlertRaised(
                what="source banned",
                who=ban.source,
                why=ban.reason,
                action=f"banned for {int(added.seconds)} s{' (UDP only)' if udp_only else ''}",
                rule="ban",
                time=now,
                source=ban.source,
            )
        )

    def is_banned(self, ip: str) -> bool:
        """True when a ban of ``ip`` refuses its TCP/TLS connections."""
        return self.guard.is_banned(ip, self.clock())

    def admit_connection(self, ip: str) -> bool:
        """A new TCP connection from ``ip``, before its handshake: banned or too fast?"""
        verdict, added = self.guard.connect(ip, self.clock())
        if added is not None:
            self.record_ban(added)
        return verdict is GuardVerdict.ALLOW

    def reload(self) -> None:
        """Adopt the stored bans (the CLI adds and removes them in the database).

        A ban lifted by hand publishes :class:`BanLifted`: the IDS shell forgets the
        source's history then, so the IDS may ban it again at once.
        """
        now = self.clock()
        before = {b.source for b in self.guard.bans() if b.until > now}
        queued = self.writes.queued_bans()  # before the read: none is missed
        stored = [
            Ban(source=b.source, until=b.until, reason=b.reason, scope=ban_scope(b.scope))
            for b in [*self.store.bans(now), *queued]
            if b.until > now
        ]
        self.guard.replace_bans([*stored, *self._pending_remote(stored, now)])
        # The guard's list, not the stored one: the guard holds canonical addresses.
        for source in sorted(before - {b.source for b in self.guard.bans()}):
            self.events.publish(BanLifted(source=source, time=now))

    def _pending_remote(self, stored: list[Ban], now: float) -> list[Ban]:
        """Other workers' bans the stored list does not have yet (and still running)."""
        if not self._remote:
            return []
        have = {b.source for b in stored}
        for source in [s for s, b in self._remote.items() if s in have or b.until <= now]:
            del self._remote[source]
        return list(self._remote.values())


def ban_scope(stored: str) -> BanScope:
    """The scope of a stored ban; an unknown value blocks everything (fails closed)."""
    return BanScope.UDP if stored == BanScope.UDP.value else BanScope.ALL

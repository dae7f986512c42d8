"""The guard in front of the parser: banned sources and per-source rate limits.

How this works: every datagram or stream read is checked before any parsing. The
common path — an allowed source under its limit — costs a dictionary look-up for
bans, one for the zone and a token-bucket update. A source over its zone's limit is
banned for the zone's ban time; trusted zones are never limited or banned. Sans-IO:
the caller passes ``now``; bans that must be stored come back as :class:`BanAdded`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from .zones import ZoneMap

#: Sources with a live token bucket; past this the oldest half is forgotten (a flood of
#: spoofed sources resets buckets rather than exhausting memory).
MAX_BUCKETS = 100_000


class Verdict(Enum):
    ALLOW = "allow"
    BANNED = "banned"
    RATE = "rate"


@dataclass(frozen=True, slots=True, kw_only=True)
class Ban:
    source: str
    until: float
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class BanAdded:
    """A new ban the shell must store, log and alert on."""

    ban: Ban
    seconds: float


@dataclass(frozen=True, slots=True, kw_only=True)
class GuardStatistics:
    passed: int
    dropped_banned: int
    dropped_rate: int
    bans_active: int
    bans_added: int
    buckets: int


class Guard:
    def __init__(self, zones: ZoneMap, *, max_buckets: int = MAX_BUCKETS) -> None:
        self.zones = zones
        self._bans: dict[str, Ban] = {}
        self._buckets: dict[str, tuple[float, float]] = {}  # source -> (tokens, last)
        self._max_buckets = max_buckets
        self._passed = 0
        self._dropped_banned = 0
        self._dropped_rate = 0
        self._bans_added = 0

    # -- the hot path -----------------------------------------------------------------

    def check(self, source: str, now: float) -> tuple[Verdict, BanAdded | None]:
        """Decide for one message (or connection) from ``source``."""
        ban = self._bans.get(source)
        if ban is not None:
            if ban.until > now:
                self._dropped_banned += 1
                return Verdict.BANNED, None
            del self._bans[source]
        zone = self.zones.zone_for(source)
        if zone.trusted:
            self._passed += 1
            return Verdict.ALLOW, None
        tokens, last = self._buckets.get(source, (float(zone.rate_requests), now))
        refill = zone.rate_requests / zone.rate_window
        tokens = min(float(zone.rate_requests), tokens + (now - last) * refill)
        if tokens < 1.0:
            self._dropped_rate += 1
            self._buckets.pop(source, None)
            added = self.ban(source, zone.rate_ban, f"rate limit of zone {zone.name}", now)
            return Verdict.RATE, added
        if source not in self._buckets and len(self._buckets) >= self._max_buckets:
            self._forget_oldest_buckets()
        self._buckets[source] = (tokens - 1.0, now)
        self._passed += 1
        return Verdict.ALLOW, None

    def is_banned(self, source: str, now: float) -> bool:
        ban = self._bans.get(source)
        return ban is not None and ban.until > now

    # -- bans -------------------------------------------------------------------------

    def ban(self, source: str, seconds: float, reason: str, now: float) -> BanAdded | None:
        """Ban ``source``; None when its zone is trusted (trusted zones are never banned)."""
        if self.zones.zone_for(source).trusted:
            return None
        until = now + seconds
        current = self._bans.get(source)
        if current is not None and current.until >= until:
            return None
        ban = Ban(source=source, until=until, reason=reason)
        self._bans[source] = ban
        self._bans_added += 1
        return BanAdded(ban=ban, seconds=seconds)

    def replace_bans(self, bans: list[Ban]) -> None:
        """Adopt the stored ban list (the database is the source of truth)."""
        self._bans = {b.source: b for b in bans}

    def bans(self) -> list[Ban]:
        return sorted(self._bans.values(), key=lambda b: b.source)

    def _forget_oldest_buckets(self) -> None:
        ordered = sorted(self._buckets.items(), key=lambda item: item[1][1])
        for source, _ in ordered[: len(ordered) // 2]:
            del self._buckets[source]

    def statistics(self) -> GuardStatistics:
        return GuardStatistics(
            passed=self._passed,
            dropped_banned=self._dropped_banned,
            dropped_rate=self._dropped_rate,
            bans_active=len(self._bans),
            bans_added=self._bans_added,
            buckets=len(self._buckets),
        )

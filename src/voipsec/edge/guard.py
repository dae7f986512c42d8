"""The guard in front of the parser: banned sources and per-source rate limits.

How this works: every datagram or stream read is checked before any parsing, and every
TCP connection when it is accepted (before its TLS handshake). The common path — an
allowed source under its limit — costs a dictionary look-up for bans, one for the zone
and a token-bucket update. A source over its zone's limit is banned for the zone's ban
time; trusted zones are never limited or banned. Sans-IO: the caller passes ``now``;
bans that must be stored come back as :class:`BanAdded`.

Addresses are canonical (``::ffff:a.b.c.d`` is ``a.b.c.d``), and rate limits count an
IPv6 source by its /64 (:func:`voipsec.netaddr.rate_key`); a rate ban of an IPv6 source
bans that /64.

Bans have a scope, from where their evidence came. A UDP datagram's source address is
whatever the sender wrote (RFC 3261 §26.1.5 on spoofed requests; no handshake proves
it), while a TCP connection's source has answered our SYN-ACK. A ban whose evidence
came only over UDP (:attr:`BanScope.UDP`) therefore drops UDP from that source but
neither refuses its TCP/TLS connections nor cuts the ones it holds: otherwise anyone
could get a phone's TLS flow cut by sending a few datagrams with its address. Bans from
TCP/TLS evidence and bans made by hand have :attr:`BanScope.ALL` and block everything.
Request buckets are kept per scope too, so spoofed UDP cannot drain a TLS flow's bucket.

With several signaling workers (sip.workers > 1) each worker's guard keeps its own
buckets, and the workers share what they took: :meth:`Guard.share_consumption` makes
the guard note the tokens each bucket gave since the last :meth:`Guard.take_consumption`,
and :meth:`Guard.apply_consumption` takes the tokens another worker reported from the
same bucket here, so a source spread over workers is limited by its total rate
(app/shared/counters.py carries the batches; docs/workers.md "Global state").
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from enum import Enum

from ..netaddr import canonical_ip, rate_key
from .zones import ZoneMap

#: Sources with a live token bucket; past this the oldest half is forgotten (a flood of
#: spoofed sources resets buckets rather than exhausting memory).
MAX_BUCKETS = 100_000
#: The bucket kinds: per ban scope for requests, and new TCP connections.
BUCKET_KINDS = frozenset({"udp", "all", "conn"})


class GuardVerdict(Enum):
    ALLOW = "allow"
    BANNED = "banned"
    RATE = "rate"


class BanScope(Enum):
    """What a ban blocks, from where its evidence came."""

    #: Evidence over TCP/TLS, or a ban by hand: every transport, open connections cut.
    ALL = "all"
    #: Evidence only over UDP (a forgeable source address): UDP only.
    UDP = "udp"


def scope_of(transport: str) -> BanScope:
    """The scope of a ban whose evidence arrived over ``transport``."""
    return BanScope.UDP if transport == "udp" else BanScope.ALL


@dataclass(frozen=True, slots=True, kw_only=True)
class Ban:
    source: str
    until: float
    reason: str
    scope: BanScope = BanScope.ALL

    def blocks(self, transport: str) -> bool:
        """True when this ban applies to traffic over ``transport``."""
        return self.scope is BanScope.ALL or transport == "udp"


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
    #: New TCP connections refused because their source opened too many too fast.
    refused_connection_rate: int = 0


class Guard:
    def __init__(self, zones: ZoneMap, *, max_buckets: int = MAX_BUCKETS) -> None:
        self.zones = zones
        self._bans: dict[str, Ban] = {}
        # "<bucket kind>|<rate key>" -> (tokens, last)
        self._buckets: dict[str, tuple[float, float]] = {}
        self._max_buckets = max_buckets
        self._passed = 0
        self._dropped_banned = 0
        self._dropped_rate = 0
        self._bans_added = 0
        self._refused_connection_rate = 0
        #: Tokens each bucket gave since the last take_consumption (None: not shared).
        self._spent: dict[str, int] | None = None

    # -- the hot path -----------------------------------------------------------------

    def check(
        self, source: str, now: float, transport: str = "tls"
    ) -> tuple[GuardVerdict, BanAdded | None]:
        """Decide for one message from ``source`` that arrived over ``transport``."""
        source = canonical_ip(source) if ":" in source else source
        if self._banned(source, now, transport):
            self._dropped_banned += 1
            return GuardVerdict.BANNED, None
        scope = scope_of(transport)
        verdict, added = self._charge(source, now, scope.value, scope, "rate limit")
        if verdict is GuardVerdict.RATE:
            self._dropped_rate += 1
        return verdict, added

    def connect(self, source: str, now: float) -> tuple[GuardVerdict, BanAdded | None]:
        """Decide for one new TCP connection from ``source``, before its handshake.

        New connections have a bucket of their own, of the zone's request rate
        (``rate_requests`` per ``rate_window``): a phone opens one and keeps it (RFC
        5626 flows), a handshake flood empties it and gets the source banned for the
        zone's ``rate_ban``. The source answered our SYN-ACK, so the ban blocks all.
        """
        source = canonical_ip(source) if ":" in source else source
        if self._banned(source, now, "tcp"):
            self._dropped_banned += 1
            return GuardVerdict.BANNED, None
        verdict, added = self._charge(source, now, "conn", BanScope.ALL, "connection rate limit")
        if verdict is GuardVerdict.RATE:
            self._refused_connection_rate += 1
        return verdict, added

    def is_banned(self, source: str, now: float, transport: str = "tls") -> bool:
        """True when a ban of ``source`` applies to ``transport`` at ``now``."""
        return self._banned(canonical_ip(source) if ":" in source else source, now, transport)

    def _banned(self, source: str, now: float, transport: str) -> bool:
        ban = self._bans.get(source)
        if ban is None and ":" in source:
            ban = self._bans.get(rate_key(source))  # a rate ban of its /64
        if ban is None:
            return False
        if ban.until <= now:
            del self._bans[ban.source]
            return False
        return ban.blocks(transport)

    def _charge(
        self, source: str, now: float, kind: str, scope: BanScope, what: str
    ) -> tuple[GuardVerdict, BanAdded | None]:
        """Take one token from ``source``'s bucket of ``kind``; ban when it is empty."""
        zone = self.zones.zone_for(source)
        if zone.trusted:
            self._passed += 1
            return GuardVerdict.ALLOW, None
        key = rate_key(source) if ":" in source else source
        bucket = f"{kind}|{key}"
        tokens, last = self._buckets.get(bucket, (float(zone.rate_requests), now))
        refill = zone.rate_requests / zone.rate_window
        tokens = min(float(zone.rate_requests), tokens + (now - last) * refill)
        if tokens < 1.0:
            # Kept empty rather than forgotten: the next address of the same IPv6 /64
            # finds it empty too.
            self._buckets[bucket] = (tokens, now)
            added = self.ban(key, zone.rate_ban, f"{what} of zone {zone.name}", now, scope=scope)
            return GuardVerdict.RATE, added
        if bucket not in self._buckets and len(self._buckets) >= self._max_buckets:
            self._forget_oldest_buckets()
        self._buckets[bucket] = (tokens - 1.0, now)
        self._passed += 1
        spent = self._spent
        if spent is not None and (bucket in spent or len(spent) < self._max_buckets):
            spent[bucket] = spent.get(bucket, 0) + 1
        return GuardVerdict.ALLOW, None

    # -- buckets shared between workers ----------------------------------------------------

    def share_consumption(self) -> None:
        """Note the tokens each bucket gives from now on, for :meth:`take_consumption`."""
        if self._spent is None:
            self._spent = {}

    def take_consumption(self, limit: int) -> list[tuple[str, int]]:
        """The tokens taken per bucket since the last call, most first, at most ``limit``
        buckets (the rest are forgotten: their sources are the slowest)."""
        spent = self._spent
        if not spent:
            return []
        self._spent = {}
        if len(spent) <= limit:
            return list(spent.items())
        return sorted(spent.items(), key=lambda item: item[1], reverse=True)[:limit]

    def apply_consumption(self, bucket: str, tokens: int, now: float) -> bool:
        """Take ``tokens`` another worker took from ``bucket`` (``"<kind>|<rate key>"``).

        The bucket is refilled to ``now`` first and never drops below zero: the next
        request of the source here finds it empty and bans as usual. False (nothing
        done) for a bucket this guard would not keep: unknown kind, trusted zone.
        """
        kind, _, key = bucket.partition("|")
        if kind not in BUCKET_KINDS or tokens <= 0 or not _is_address(key):
            return False
        zone = self.zones.zone_for(key.partition("/")[0])
        if zone.trusted:
            return False
        current = self._buckets.get(bucket)
        if current is None and len(self._buckets) >= self._max_buckets:
            self._forget_oldest_buckets()
        have, last = current if current is not None else (float(zone.rate_requests), now)
        refill = zone.rate_requests / zone.rate_window
        have = min(float(zone.rate_requests), have + max(0.0, now - last) * refill)
        self._buckets[bucket] = (max(0.0, have - tokens), max(now, last))
        return True

    # -- bans -------------------------------------------------------------------------

    def ban(
        self,
        source: str,
        seconds: float,
        reason: str,
        now: float,
        *,
        scope: BanScope = BanScope.ALL,
    ) -> BanAdded | None:
        """Ban ``source`` (an address, or an IPv6 /64 from :func:`rate_key`).

        None when its zone is trusted (trusted zones are never banned) or a ban at least
        as long and as wide is in force. A ban of both scopes merges into the wider
        scope and the later end: UDP-only evidence never narrows a ban from TLS.
        """
        source = canonical_ip(source) if ":" in source and "/" not in source else source
        if self.zones.zone_for(source.partition("/")[0]).trusted:
            return None
        until = now + seconds
        current = self._bans.get(source)
        if current is not None and current.until > now:
            wider = current.scope is BanScope.UDP and scope is BanScope.ALL
            if current.until >= until and not wider:
                return None
            until = max(until, current.until)
            if current.scope is BanScope.ALL:
                scope = BanScope.ALL
        ban = Ban(source=source, until=until, reason=reason, scope=scope)
        self._bans[source] = ban
        self._bans_added += 1
        return BanAdded(ban=ban, seconds=until - now)

    def replace_bans(self, bans: list[Ban]) -> None:
        """Adopt the stored ban list (the database is the source of truth)."""
        self._bans = {}
        for ban in bans:
            source = ban.source
            if ":" in source and "/" not in source:
                source = canonical_ip(source)
            self._bans[source] = Ban(
                source=source, until=ban.until, reason=ban.reason, scope=ban.scope
            )

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
            refused_connection_rate=self._refused_connection_rate,
        )


def _is_address(key: str) -> bool:
    """An address or an IPv6 /64 (what :func:`rate_key` makes), nothing else."""
    try:
        ipaddress.ip_network(key, strict=False)
    except ValueError:
        return False
    return True

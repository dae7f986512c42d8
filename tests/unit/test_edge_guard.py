"""The guard before the parser: bans, token buckets, zones (fake clock)."""

from __future__ import annotations

import ipaddress

import pytest

from voipsec.edge import guard as guard_module
from voipsec.edge import zones as zones_module
from voipsec.edge.guard import Ban, BanScope, Guard, GuardVerdict, scope_of
from voipsec.edge.zones import Zone, ZoneMap


def _net(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    return ipaddress.ip_network(text)


INTERNET = Zone(name="internet", networks=(_net("0.0.0.0/0"),), rate_requests=16, rate_window=2.0)
OFFICE = Zone(name="office", networks=(_net("10.0.0.0/8"),), rate_requests=100)
VOICE = Zone(name="voice", networks=(_net("10.1.0.0/16"),), trusted=True)
LOOP6 = Zone(name="loop6", networks=(_net("::1/128"),), trusted=True)


def _guard() -> Guard:
    return Guard(ZoneMap([INTERNET, OFFICE, VOICE, LOOP6], INTERNET))


def test_zone_most_specific_wins() -> None:
    zones = ZoneMap([INTERNET, OFFICE, VOICE], INTERNET)
    assert zones.zone_for("10.1.2.3").name == "voice"
    assert zones.zone_for("10.2.0.1").name == "office"
    assert zones.zone_for("192.0.2.1").name == "internet"


def test_zone_ipv4_mapped_ipv6_is_its_ipv4_zone() -> None:
    zones = ZoneMap([INTERNET, VOICE], INTERNET)
    assert zones.zone_for("::ffff:10.1.0.9").name == "voice"


def test_zone_unknown_and_garbage_get_default() -> None:
    zones = ZoneMap([VOICE], INTERNET)
    assert zones.zone_for("2001:db8::1").name == "internet"
    assert zones.zone_for("not-an-ip").name == "internet"


def test_zone_cache_limit_exceeded_clears(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(zones_module, "MAX_ZONE_CACHE", 3)
    zones = ZoneMap([INTERNET], INTERNET)
    for i in range(10):
        assert zones.zone_for(f"192.0.2.{i}").name == "internet"
    assert len(zones._cache) <= 3


def test_guard_rate_under_limit_passes() -> None:
    guard = _guard()
    assert all(guard.check("192.0.2.1", 0.0)[0] is GuardVerdict.ALLOW for _ in range(16))


def test_guard_rate_exceeded_bans_with_zone_ban_time() -> None:
    guard = _guard()
    for _ in range(16):
        guard.check("192.0.2.1", 0.0)
    verdict, added = guard.check("192.0.2.1", 0.0)
    assert verdict is GuardVerdict.RATE
    assert added is not None
    assert added.ban == Ban(source="192.0.2.1", until=300.0, reason="rate limit of zone internet")
    assert guard.check("192.0.2.1", 299.0) == (GuardVerdict.BANNED, None)
    assert guard.check("192.0.2.2", 0.0) == (GuardVerdict.ALLOW, None)  # others unaffected


def test_guard_ban_expires_then_accepted() -> None:
    guard = _guard()
    guard.ban("192.0.2.9", 10, "test", now=0.0)
    assert guard.check("192.0.2.9", 9.9)[0] is GuardVerdict.BANNED
    assert guard.check("192.0.2.9", 10.0)[0] is GuardVerdict.ALLOW
    assert guard.bans() == []


def test_guard_tokens_refill_over_time() -> None:
    guard = _guard()
    for _ in range(16):
        guard.check("192.0.2.1", 0.0)
    # 16 per 2 s: after 1 s, 8 more are allowed.
    assert [guard.check("192.0.2.1", 1.0)[0] for _ in range(8)] == [GuardVerdict.ALLOW] * 8
    assert guard.check("192.0.2.1", 1.0)[0] is GuardVerdict.RATE


def test_guard_trusted_zone_never_limited_or_banned() -> None:
    guard = _guard()
    assert all(guard.check("10.1.0.5", 0.0)[0] is GuardVerdict.ALLOW for _ in range(1000))
    assert guard.ban("10.1.0.5", 60, "ids", now=0.0) is None
    assert guard.ban("::1", 60, "ids", now=0.0) is None
    assert guard.check("10.1.0.5", 0.0)[0] is GuardVerdict.ALLOW


def test_guard_longer_ban_replaces_shorter_only() -> None:
    guard = _guard()
    assert guard.ban("192.0.2.3", 100, "first", now=0.0) is not None
    assert guard.ban("192.0.2.3", 10, "shorter", now=0.0) is None
    added = guard.ban("192.0.2.3", 1000, "longer", now=0.0)
    assert added is not None and added.ban.until == 1000.0


def test_guard_replace_bans_adopts_stored_list() -> None:
    guard = _guard()
    guard.ban("192.0.2.3", 100, "x", now=0.0)
    guard.replace_bans([Ban(source="192.0.2.4", until=50.0, reason="manual")])
    assert guard.check("192.0.2.3", 1.0)[0] is GuardVerdict.ALLOW
    assert guard.check("192.0.2.4", 1.0)[0] is GuardVerdict.BANNED


def test_guard_bucket_limit_exceeded_forgets_oldest(monkeypatch: pytest.MonkeyPatch) -> None:
    guard = Guard(ZoneMap([INTERNET], INTERNET), max_buckets=4)
    for i in range(10):
        guard.check(f"192.0.2.{i}", float(i))
    assert guard.statistics().buckets <= 4
    assert guard_module.MAX_BUCKETS == 100_000


def test_guard_statistics_count_each_outcome() -> None:
    guard = _guard()
    for _ in range(17):
        guard.check("192.0.2.1", 0.0)
    guard.check("192.0.2.1", 0.0)
    stats = guard.statistics()
    assert (stats.passed, stats.dropped_rate, stats.dropped_banned, stats.bans_added) == (
        16,
        1,
        1,
        1,
    )


# -- ban scopes: evidence over UDP bans UDP only (issue 13, finding 6) -------------------


def test_guard_udp_ban_blocks_udp_only() -> None:
    guard = _guard()
    added = guard.ban("192.0.2.5", 3600, "ids: scanner-user-agent", now=0.0, scope=BanScope.UDP)
    assert added is not None and added.ban.scope is BanScope.UDP
    assert guard.check("192.0.2.5", 1.0, "udp") == (GuardVerdict.BANNED, None)
    assert guard.check("192.0.2.5", 1.0, "tls") == (GuardVerdict.ALLOW, None)
    assert guard.check("192.0.2.5", 1.0, "tcp") == (GuardVerdict.ALLOW, None)
    assert guard.connect("192.0.2.5", 1.0) == (GuardVerdict.ALLOW, None)
    assert guard.is_banned("192.0.2.5", 1.0, "udp") is True
    assert guard.is_banned("192.0.2.5", 1.0) is False


def test_guard_udp_flood_bans_udp_only_and_leaves_the_tls_bucket_full() -> None:
    guard = _guard()
    for _ in range(16):
        assert guard.check("192.0.2.5", 0.0, "udp")[0] is GuardVerdict.ALLOW
    verdict, added = guard.check("192.0.2.5", 0.0, "udp")
    assert verdict is GuardVerdict.RATE
    assert added is not None
    assert added.ban == Ban(
        source="192.0.2.5", until=300.0, reason="rate limit of zone internet", scope=BanScope.UDP
    )
    # The phone's own TLS requests have a bucket of their own, still full.
    assert [guard.check("192.0.2.5", 0.0, "tls")[0] for _ in range(16)] == [GuardVerdict.ALLOW] * 16


def test_guard_tls_flood_bans_everything() -> None:
    guard = _guard()
    for _ in range(16):
        guard.check("192.0.2.6", 0.0, "tls")
    verdict, added = guard.check("192.0.2.6", 0.0, "tls")
    assert verdict is GuardVerdict.RATE and added is not None
    assert added.ban.scope is BanScope.ALL
    assert guard.check("192.0.2.6", 1.0, "udp")[0] is GuardVerdict.BANNED
    assert guard.check("192.0.2.6", 1.0, "tls")[0] is GuardVerdict.BANNED


def test_guard_tls_evidence_widens_a_udp_ban_and_keeps_the_later_end() -> None:
    guard = _guard()
    guard.ban("192.0.2.7", 1000, "udp flood", now=0.0, scope=BanScope.UDP)
    added = guard.ban("192.0.2.7", 100, "ids over tls", now=0.0)
    assert added is not None
    assert added.ban == Ban(source="192.0.2.7", until=1000.0, reason="ids over tls")
    assert added.seconds == 1000.0
    assert guard.check("192.0.2.7", 500.0, "tls")[0] is GuardVerdict.BANNED


def test_guard_udp_evidence_never_narrows_a_ban() -> None:
    guard = _guard()
    guard.ban("192.0.2.8", 100, "ids over tls", now=0.0)
    assert guard.ban("192.0.2.8", 50, "udp", now=0.0, scope=BanScope.UDP) is None
    added = guard.ban("192.0.2.8", 1000, "udp", now=0.0, scope=BanScope.UDP)
    assert added is not None and added.ban.scope is BanScope.ALL
    assert added.ban.until == 1000.0


def test_guard_scope_of_transport() -> None:
    assert [scope_of(t) for t in ("udp", "tcp", "tls")] == [
        BanScope.UDP,
        BanScope.ALL,
        BanScope.ALL,
    ]


# -- connections at accept time (issue 13, finding 8) ------------------------------------


def test_guard_connection_rate_exceeded_bans_everywhere() -> None:
    guard = _guard()
    assert [guard.connect("192.0.2.9", 0.0)[0] for _ in range(16)] == [GuardVerdict.ALLOW] * 16
    verdict, added = guard.connect("192.0.2.9", 0.0)
    assert verdict is GuardVerdict.RATE
    assert added is not None
    assert added.ban == Ban(
        source="192.0.2.9", until=300.0, reason="connection rate limit of zone internet"
    )
    assert guard.connect("192.0.2.9", 1.0) == (GuardVerdict.BANNED, None)
    assert guard.check("192.0.2.9", 1.0, "udp")[0] is GuardVerdict.BANNED
    assert guard.connect("192.0.2.10", 0.0) == (GuardVerdict.ALLOW, None)
    stats = guard.statistics()
    assert (stats.refused_connection_rate, stats.dropped_banned) == (1, 2)


def test_guard_connection_rate_not_charged_by_requests() -> None:
    guard = _guard()
    for _ in range(16):
        guard.check("192.0.2.11", 0.0, "tls")
    assert guard.connect("192.0.2.11", 0.0)[0] is GuardVerdict.ALLOW


def test_guard_connection_rate_trusted_zone_unlimited() -> None:
    guard = _guard()
    assert all(guard.connect("10.1.0.5", 0.0)[0] is GuardVerdict.ALLOW for _ in range(1000))


# -- address forms (issue 13, finding 15) -------------------------------------------------


def test_guard_ipv4_ban_applies_to_the_mapped_ipv6_form() -> None:
    guard = _guard()
    guard.ban("192.0.2.12", 60, "manual", now=0.0)
    assert guard.check("::ffff:192.0.2.12", 1.0)[0] is GuardVerdict.BANNED
    assert guard.connect("::ffff:192.0.2.12", 1.0)[0] is GuardVerdict.BANNED


def test_guard_stored_mapped_ban_applies_to_the_ipv4_form() -> None:
    guard = _guard()
    guard.replace_bans([Ban(source="::ffff:c000:20d", until=50.0, reason="manual")])
    assert guard.check("192.0.2.13", 1.0)[0] is GuardVerdict.BANNED
    assert [b.source for b in guard.bans()] == ["192.0.2.13"]


def test_guard_mapped_source_shares_the_ipv4_bucket() -> None:
    guard = _guard()
    for i in range(16):
        source = "192.0.2.14" if i % 2 else "::ffff:192.0.2.14"
        assert guard.check(source, 0.0)[0] is GuardVerdict.ALLOW
    verdict, added = guard.check("::ffff:192.0.2.14", 0.0)
    assert verdict is GuardVerdict.RATE
    assert added is not None and added.ban.source == "192.0.2.14"


def test_guard_ipv6_rate_limit_counts_the_64_and_bans_it() -> None:
    guard = _guard()
    for i in range(16):
        assert guard.check(f"2001:db8:1:2::{i + 1:x}", 0.0)[0] is GuardVerdict.ALLOW
    verdict, added = guard.check("2001:db8:1:2::ffff", 0.0)
    assert verdict is GuardVerdict.RATE
    assert added is not None
    assert added.ban.source == "2001:db8:1:2::/64"
    # Another address of the same /64 is banned; the next /64 is not.
    assert guard.check("2001:db8:1:2:abcd::1", 1.0) == (GuardVerdict.BANNED, None)
    assert guard.is_banned("2001:db8:1:2::77", 1.0) is True
    assert guard.check("2001:db8:1:3::1", 1.0) == (GuardVerdict.ALLOW, None)


def test_guard_ipv6_ban_of_a_single_address_stays_single() -> None:
    guard = _guard()
    guard.ban("2001:db8::5", 60, "ids", now=0.0)
    assert guard.check("2001:db8::5", 1.0)[0] is GuardVerdict.BANNED
    assert guard.check("2001:db8::6", 1.0)[0] is GuardVerdict.ALLOW

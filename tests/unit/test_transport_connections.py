"""The connection table: slots claimed at accept, before any handshake (issue 13, 8)."""

from __future__ import annotations

import asyncio
import resource
from dataclasses import dataclass, field

import pytest

from voipsec.events import ConnectionAdmitted, Event, EventBus
from voipsec.pki.identity import PeerIdentity
from voipsec.transport.connections import (
    ConnectionLimits,
    ConnectionTable,
    raise_open_file_limit,
)


@dataclass
class FakeFlow:
    peer: tuple[str, int]
    transport: str = "tls"
    local: tuple[str, int] = ("127.0.0.1", 5061)
    identity: PeerIdentity | None = None
    last_activity: float = 0.0
    partial_since: float | None = None
    aborted: list[bool] = field(default_factory=list)

    def send(self, data: bytes) -> None: ...

    def close(self) -> None: ...

    def abort(self) -> None:
        self.aborted.append(True)


def _table(per_ip: int = 2, total: int = 100) -> ConnectionTable:
    return ConnectionTable(ConnectionLimits(max_per_ip=per_ip, max_total=total, idle_timeout=60))


def test_connections_per_ip_limit_exceeded_at_claim() -> None:
    table = _table(per_ip=2)
    first, second = table.claim("192.0.2.1"), table.claim("192.0.2.1")
    assert first is not None and second is not None
    assert table.claim("192.0.2.1") is None  # no handshake, no admit: counted already
    assert table.claim("192.0.2.2") is not None  # another source has its own allowance
    assert table.statistics().refused_per_ip == 1
    first.release()
    first.release()  # a second release gives back nothing more
    assert table.claim("192.0.2.1") is not None
    assert table.claim("192.0.2.1") is None


def test_connections_total_limit_exceeded_counts_handshaking_ones() -> None:
    table = _table(per_ip=10, total=3)
    slots = [table.claim(f"192.0.2.{i}") for i in range(3)]
    assert all(s is not None for s in slots)
    assert table.claim("192.0.2.9") is None
    assert table.statistics().refused_total == 1


def test_connections_mapped_ipv4_counts_as_ipv4() -> None:
    table = _table(per_ip=1)
    assert table.claim("192.0.2.1") is not None
    assert table.claim("::ffff:192.0.2.1") is None


def test_connections_screen_refuses_at_claim() -> None:
    table = ConnectionTable(
        ConnectionLimits(max_per_ip=2, max_total=100, idle_timeout=60),
        screen=lambda ip: ip != "192.0.2.66",
    )
    assert table.claim("192.0.2.66") is None
    assert table.claim("192.0.2.1") is not None
    assert table.statistics().refused_banned == 1


def test_connections_admit_then_release_frees_the_slot() -> None:
    table = _table(per_ip=1)
    slot = table.claim("192.0.2.1")
    assert slot is not None
    flow = FakeFlow(peer=("192.0.2.1", 40000))
    assert table.admit(flow) is True
    assert table.statistics().open == 1
    table.forget(flow)
    slot.release()
    assert table.statistics().open == 0
    assert table.claim("192.0.2.1") is not None


def test_connections_abort_source_matches_mapped_form_and_ipv6_prefix() -> None:
    table = _table()
    mapped = FakeFlow(peer=("::ffff:192.0.2.1", 1))
    six = FakeFlow(peer=("2001:db8:1:2::9", 2))
    other = FakeFlow(peer=("2001:db8:1:3::9", 3))
    for flow in (mapped, six, other):
        table.admit(flow)
    assert table.abort_source("192.0.2.1") == 1
    assert table.abort_source("2001:db8:1:2::/64") == 1
    assert (mapped.aborted, six.aborted, other.aborted) == ([True], [True], [])


def test_open_file_limit_raised_to_hard(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[int, tuple[int, int]]] = []
    monkeypatch.setattr(resource, "getrlimit", lambda what: (1024, 524288))
    monkeypatch.setattr(resource, "setrlimit", lambda what, limits: calls.append((what, limits)))
    assert raise_open_file_limit() == (1024, 524288)
    assert calls == [(resource.RLIMIT_NOFILE, (524288, 524288))]


def test_open_file_limit_unlimited_hard_or_refused_left_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(resource, "getrlimit", lambda what: (1024, resource.RLIM_INFINITY))
    assert raise_open_file_limit() == (1024, 1024)

    def refuse(what: int, limits: tuple[int, int]) -> None:
        raise ValueError("not allowed")

    monkeypatch.setattr(resource, "getrlimit", lambda what: (1024, 4096))
    monkeypatch.setattr(resource, "setrlimit", refuse)
    assert raise_open_file_limit() == (1024, 1024)


def test_connections_admitted_ones_are_published_refused_ones_not() -> None:
    # The metrics count TLS handshakes from these events (no hook on the table).
    events = EventBus()
    seen: list[Event] = []
    events.subscribe(seen.append, ConnectionAdmitted)
    table = ConnectionTable(
        ConnectionLimits(max_per_ip=2, max_total=100, idle_timeout=60),
        events=events,
        banned=lambda ip: ip == "192.0.2.9",
    )
    assert table.admit(FakeFlow(peer=("192.0.2.1", 40000)))  # type: ignore[arg-type]
    assert table.admit(FakeFlow(peer=("192.0.2.2", 40001), transport="tcp"))  # type: ignore[arg-type]
    assert not table.admit(FakeFlow(peer=("192.0.2.9", 40002)))  # type: ignore[arg-type]
    assert seen == [
        ConnectionAdmitted(transport="tls", peer=("192.0.2.1", 40000)),
        ConnectionAdmitted(transport="tcp", peer=("192.0.2.2", 40001)),
    ]


# -- sip.workers > 1: the limits hold across workers; the directory of their connections --


def test_connections_worker0_counts_other_workers_places_per_ip() -> None:
    table = _table(per_ip=2, total=100)
    assert table.claim("192.0.2.1") is not None  # worker 0's own connection
    assert table.claim_for(1, "192.0.2.1") is True  # worker 1's
    assert table.claim_for(2, "192.0.2.1") is False  # over max_per_ip for the server
    assert table.claim("192.0.2.1") is None
    assert table.statistics().refused_per_ip == 2
    table.release_for(1, "192.0.2.1")
    table.release_for(1, "192.0.2.1")  # nothing more to give back
    assert table.claim_for(2, "192.0.2.1") is True


def test_connections_worker0_total_limit_and_lost_worker() -> None:
    table = _table(per_ip=10, total=3)
    assert all(table.claim_for(1, f"192.0.2.{i}") for i in range(3))
    assert table.claim("192.0.2.9") is None
    table.drop_claims(1)  # worker 1 is gone, and its connections with it
    assert table.claim("192.0.2.9") is not None


def test_connections_worker0_screens_other_workers_accepts() -> None:
    table = ConnectionTable(
        ConnectionLimits(max_per_ip=5, max_total=10, idle_timeout=60),
        screen=lambda ip: ip != "192.0.2.66",
    )
    assert table.claim_for(1, "192.0.2.66") is False
    assert table.statistics().refused_banned == 1


def test_connections_claim_shared_refused_releases_the_slot() -> None:
    table = _table(per_ip=1)
    released: list[str] = []

    async def refuse(ip: str) -> bool:
        return False

    async def allow(ip: str) -> bool:
        return True

    table.global_release = released.append
    slot = table.claim("192.0.2.1")
    assert slot is not None
    table.global_claim = refuse
    assert asyncio.run(table.claim_shared(slot)) is False
    assert released == []  # never counted at worker 0: nothing to give back there
    table.global_claim = allow
    again = table.claim("192.0.2.1")
    assert again is not None and asyncio.run(table.claim_shared(again)) is True
    again.release()
    assert released == ["192.0.2.1"]


def test_connections_directory_finds_other_workers_connections() -> None:
    events = EventBus()
    seen: list[Event] = []
    events.subscribe(seen.append)
    table = ConnectionTable(
        ConnectionLimits(max_per_ip=5, max_total=10, idle_timeout=60), events=events
    )
    made: list[tuple[int, str, tuple[str, int]]] = []

    def remote(owner: int, transport: str, peer: tuple[str, int]) -> FakeFlow:
        made.append((owner, transport, peer))
        return FakeFlow(peer=peer)

    table.remote_flow = remote
    table.adopt_remote(1, "tls", ("192.0.2.5", 5000))
    assert table.find("tls", "192.0.2.5", 5000) is not None
    assert table.find_local("tls", "192.0.2.5", 5000) is None
    assert made == [(1, "tls", ("192.0.2.5", 5000))]
    table.forget_remote(2, "tls", ("192.0.2.5", 5000))  # not worker 2's: kept
    assert table.find("tls", "192.0.2.5", 5000) is not None
    assert table.drop_owner(1) == [("tls", "192.0.2.5", 5000)]
    assert table.find("tls", "192.0.2.5", 5000) is None
    flow = FakeFlow(peer=("192.0.2.7", 6000))
    assert table.admit(flow)
    table.forget(flow)
    assert [type(e).__name__ for e in seen] == ["ConnectionAdmitted", "ConnectionClosed"]


def test_connections_close_expired_closes_only_expired_certificates() -> None:
    table = _table(per_ip=10)

    def admitted(port: int, not_after: float | None) -> FakeFlow:
        identity = PeerIdentity(serial=port, aor=None, subject="CN=x", not_after=not_after)
        flow = FakeFlow(peer=("192.0.2.1", port), identity=identity)
        assert table.claim("192.0.2.1") is not None
        assert table.admit(flow)
        return flow

    expired, valid, unknown = admitted(1, 1000.0), admitted(2, 2000.0), admitted(3, None)
    plain = FakeFlow(peer=("192.0.2.1", 4))
    assert table.claim("192.0.2.1") is not None and table.admit(plain)
    assert table.close_expired(1000.0) == 0  # notAfter itself is still valid
    assert table.close_expired(1000.5) == 1
    assert (expired.aborted, valid.aborted, unknown.aborted, plain.aborted) == ([True], [], [], [])
    assert table.statistics().closed_expired == 1

"""The server's expiry job (app/certexpiry.py): each day's alerts once, on a fake clock."""

from __future__ import annotations

from collections.abc import Sequence

from voipsec.app.certexpiry import CertificateExpiry
from voipsec.events import AlertRaised, Event, EventBus
from voipsec.pki.lifecycle import DAY
from voipsec.records import AlertRecord, CertificateRecord

NOW = 1796558400.0  # 2026-12-06 12:00 UTC


class FakeStore:
    def __init__(self, certs: list[CertificateRecord], alerts: list[AlertRecord]) -> None:
        self.certs = certs
        self.stored = alerts

    def certificates(self) -> Sequence[CertificateRecord]:
        return self.certs

    def alerts(self, since: float = 0.0) -> list[AlertRecord]:
        return [a for a in self.stored if a.time >= since]


def _cert(serial: int, name: str, expires_in: float) -> CertificateRecord:
    return CertificateRecord(
        serial=serial,
        name=name,
        aor=f"{name}@example.test",
        not_after=NOW + expires_in,
        revoked=None,
        issued=NOW - 100 * DAY,
    )


def _job(store: FakeStore, clock: list[float]) -> tuple[CertificateExpiry, list[AlertRaised]]:
    bus = EventBus()
    seen: list[AlertRaised] = []

    def keep(event: Event) -> None:
        assert isinstance(event, AlertRaised)
        seen.append(event)

    bus.subscribe(keep, AlertRaised)
    job = CertificateExpiry(store=store, events=bus, warning_days=30, clock=lambda: clock[0])
    return job, seen


def test_app_certexpiry_alerts_once_per_certificate_per_day() -> None:
    store = FakeStore([_cert(0xA1, "alice", 10 * DAY), _cert(0xB2, "bob", 400 * DAY)], [])
    clock = [NOW]
    job, seen = _job(store, clock)
    job.check()
    clock[0] += 3600
    job.check()
    assert [a.who for a in seen] == ["sip:alice@example.test"]
    clock[0] = NOW + DAY
    job.check()
    assert [a.why.split(";")[0] for a in seen] == [
        "serial a1 expires in 10 day(s)",
        "serial a1 expires in 9 day(s)",
    ]


def test_app_certexpiry_restart_does_not_repeat_todays_alert() -> None:
    stored = AlertRecord(
        time=NOW - 3600,
        rule="cert_expiry",
        source="sip:alice@example.test",
        detail="device certificate expiring: sip:alice@example.test: serial a1 expires in "
        "10 day(s); renew it with `voipsec ca renew alice`; alerted",
    )
    yesterday = AlertRecord(
        time=NOW - DAY, rule="cert_expiry", source="x", detail="x: y: serial b2 expires in 1"
    )
    store = FakeStore(
        [_cert(0xA1, "alice", 10 * DAY), _cert(0xB2, "bob", 20 * DAY)], [stored, yesterday]
    )
    job, seen = _job(store, [NOW])
    job.check()
    assert [a.who for a in seen] == ["sip:bob@example.test"]

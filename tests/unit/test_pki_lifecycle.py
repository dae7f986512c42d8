"""Device-certificate lifecycle decisions (voipsec.pki.lifecycle), on a fake clock."""

from __future__ import annotations

from pathlib import Path

import pytest

from voipsec.events import AlertRaised
from voipsec.pki.ca import CaPaths, create_ca, issue_certificate, write_private
from voipsec.pki.lifecycle import (
    DAY,
    EXPIRED_ALERT_DAYS,
    MAX_VALIDITY_DAYS,
    MIN_VALIDITY_DAYS,
    CertState,
    certificate_statuses,
    check_validity_days,
    day_of,
    days_left,
    due_expiry_alerts,
    latest_certificate,
    validity_state,
)
from voipsec.records import CertificateRecord

#: A fixed "now": 2026-12-06 12:00 UTC (noon, so a day boundary is half a day away).
NOW = 1796558400.0


def cert(
    serial: int,
    *,
    expires_in: float,
    name: str = "alice",
    issued: float = NOW - 100 * DAY,
    revoked: float | None = None,
) -> CertificateRecord:
    return CertificateRecord(
        serial=serial,
        name=name,
        aor=f"{name}@example.test",
        not_after=NOW + expires_in,
        revoked=revoked,
        issued=issued,
    )


@pytest.mark.parametrize("days", [MIN_VALIDITY_DAYS - 1, MAX_VALIDITY_DAYS + 1])
def test_pki_lifecycle_validity_days_out_of_range(days: int) -> None:
    with pytest.raises(ValueError) as error:
        check_validity_days(days)
    assert str(error.value) == f"validity must be 1..825 days, not {days}"


def test_pki_lifecycle_validity_days_bounds_accepted() -> None:
    assert [check_validity_days(d) for d in (1, 825)] == [1, 825]


def test_pki_lifecycle_issue_certificate_refuses_over_the_limit(tmp_path: Path) -> None:
    ca = CaPaths.in_dir(tmp_path)
    create_ca(ca, "test CA")
    with pytest.raises(ValueError, match=r"^validity must be 1\.\.825 days, not 826$"):
        issue_certificate(ca, common_name="alice", server=False, days=MAX_VALIDITY_DAYS + 1)


def test_pki_lifecycle_validity_state_boundaries() -> None:
    def state(expires_in: float, revoked: bool = False) -> CertState:
        return validity_state(not_after=NOW + expires_in, now=NOW, warning_days=30, revoked=revoked)

    assert state(30 * DAY + 1) is CertState.OK
    assert state(30 * DAY) is CertState.EXPIRING
    assert state(0) is CertState.EXPIRING  # RFC 5280: not_after is the last valid second
    assert state(-1) is CertState.EXPIRED
    assert state(400 * DAY, revoked=True) is CertState.REVOKED


def test_pki_lifecycle_days_left_rounds_up() -> None:
    assert [days_left(NOW + x, NOW) for x in (3 * DAY, 3 * DAY - 60, 1, 0, -1, -DAY - 1)] == [
        3,
        3,
        1,
        0,
        0,
        -1,
    ]


def test_pki_lifecycle_statuses_labels_and_renewal() -> None:
    old = cert(1, expires_in=2 * DAY + 60)
    new = cert(2, expires_in=800 * DAY, issued=NOW - 60)
    gone = cert(3, name="bob", expires_in=-3 * DAY)
    lost = cert(4, name="carol", expires_in=100 * DAY, revoked=NOW - DAY)
    statuses = certificate_statuses([old, new, gone, lost], now=NOW, warning_days=30)
    assert [(s.serial, s.label, s.renewed_by) for s in statuses] == [
        (1, "expiring in 3 days", 2),
        (2, "ok", None),
        (3, "expired", None),
        (4, "revoked", None),
    ]
    one = certificate_statuses([cert(5, expires_in=DAY)], now=NOW, warning_days=30)
    assert one[0].label == "expiring in 1 day"


def test_pki_lifecycle_revoked_renewal_is_not_a_renewal() -> None:
    old = cert(1, expires_in=2 * DAY)
    revoked_new = cert(2, expires_in=800 * DAY, issued=NOW - 60, revoked=NOW - 30)
    statuses = certificate_statuses([old, revoked_new], now=NOW, warning_days=30)
    assert statuses[0].renewed_by is None


def test_pki_lifecycle_latest_certificate_is_last_issued() -> None:
    certs = [
        cert(1, expires_in=DAY),
        cert(2, expires_in=DAY, issued=NOW),
        cert(3, name="bob", expires_in=DAY),
    ]
    latest = latest_certificate(certs, "alice")
    assert latest is not None and latest.serial == 2
    assert latest_certificate(certs, "dave") is None


def _alerts(
    certs: list[CertificateRecord], now: float, alerted: frozenset[tuple[int, int]]
) -> list[tuple[int, AlertRaised]]:
    statuses = certificate_statuses(certs, now=now, warning_days=30)
    return due_expiry_alerts(statuses, now=now, alerted=alerted)


def test_pki_lifecycle_expiring_alert_once_per_day() -> None:
    certs = [cert(0xAB, expires_in=5 * DAY), cert(0xCD, name="bob", expires_in=300 * DAY)]
    first = _alerts(certs, NOW, frozenset())
    assert first == [
        (
            0xAB,
            AlertRaised(
                what="device certificate expiring",
                who="sip:alice@example.test",
                why="serial ab expires in 5 day(s); renew it with `voipsec ca renew alice`",
                action="alerted",
                rule="cert_expiry",
                time=NOW,
                source="",
            ),
        )
    ]
    today = frozenset({(0xAB, day_of(NOW))})
    # The same UTC day (an hour later): nothing new; the next day: again.
    assert _alerts(certs, NOW + 3600, today) == []
    tomorrow = _alerts(certs, NOW + DAY, today)
    assert [(s, a.why) for s, a in tomorrow] == [
        (0xAB, "serial ab expires in 4 day(s); renew it with `voipsec ca renew alice`")
    ]


def test_pki_lifecycle_expired_alerts_for_a_week_then_stop() -> None:
    certs = [cert(0xAB, expires_in=-DAY / 2)]
    alerts = _alerts(certs, NOW, frozenset())
    assert [(a.what, a.why) for _, a in alerts] == [
        (
            "device certificate expired",
            "serial ab expired today; renew it with `voipsec ca renew alice`",
        )
    ]
    two_days = _alerts(certs, NOW + 2 * DAY, frozenset())
    assert two_days[0][1].why.startswith("serial ab expired 2 day(s) ago; ")
    later = [
        _alerts(certs, NOW + d * DAY, frozenset()) != [] for d in range(EXPIRED_ALERT_DAYS + 2)
    ]
    assert later == [True] * EXPIRED_ALERT_DAYS + [False, False]


def test_pki_lifecycle_no_alert_for_renewed_or_revoked() -> None:
    certs = [
        cert(1, expires_in=5 * DAY),
        cert(2, expires_in=800 * DAY, issued=NOW - 60),
        cert(3, name="bob", expires_in=5 * DAY, revoked=NOW - 60),
    ]
    assert _alerts(certs, NOW, frozenset()) == []


def test_pki_write_private_never_follows_a_planted_symlink(tmp_path: Path) -> None:
    """A key written into a shared --out directory replaces a symlink planted at its
    name instead of writing through it, and ends up 0600 and ours."""
    target = tmp_path / "elsewhere.txt"
    target.write_text("untouched")
    planted = tmp_path / "alice.key"
    planted.symlink_to(target)
    write_private(planted, b"secret")
    assert target.read_text() == "untouched"
    assert not planted.is_symlink()
    assert planted.read_bytes() == b"secret"
    assert planted.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []

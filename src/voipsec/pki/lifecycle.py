"""Device-certificate lifecycle decisions: validity bounds, status, expiry alerts.

How this works: everything here is a pure function of what the CA issued (storage's
``CertificateRecord``, or anything shaped like :class:`Issued`) and ``now`` (seconds
since the epoch, passed in: this module never reads the clock, a file or the
database). ``voipsec ca list`` prints :func:`certificate_statuses`; the server's
daily check (app/certexpiry.py) turns the same statuses into alerts with
:func:`due_expiry_alerts`; the TLS listener asks :func:`validity_state` about a
certificate presented at the handshake. A later policy engine (issue 18: "an expiring
or missing client certificate") asks :func:`validity_state` about the certificate of
a connection (``PeerIdentity.not_after``), so one rule decides "expiring" everywhere.

A certificate renewed (``voipsec ca renew``) stays valid until it expires or is
revoked, so a phone keeps working until the new one is installed; it is then marked
``renewed_by`` the newer serial and raises no more alerts: its owner has acted.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from ..config import EXPIRY_WARNING_DAYS, MAX_EXPIRY_WARNING_DAYS
from ..events import AlertRaised

__all__ = [
    "DAY",
    "EXPIRED_ALERT_DAYS",
    "EXPIRY_ALERT_RULE",
    "EXPIRY_WARNING_DAYS",
    "MAX_EXPIRY_WARNING_DAYS",
    "MAX_VALIDITY_DAYS",
    "MIN_VALIDITY_DAYS",
    "CertState",
    "CertStatus",
    "Issued",
    "certificate_statuses",
    "check_validity_days",
    "day_of",
    "days_left",
    "due_expiry_alerts",
    "latest_certificate",
    "validity_state",
]

DAY = 86_400.0
#: Shortest device-certificate validity (``--days``): one day, the shortest a test or
#: a trial device needs; shorter would expire between two daily checks.
MIN_VALIDITY_DAYS = 1
#: Longest: 825 days, the CA/Browser Forum's old maximum for leaf certificates
#: (Baseline Requirements 1.x §6.3.2), kept for phones that cannot renew often.
MAX_VALIDITY_DAYS = 825
#: An expired (not renewed, not revoked) certificate alerts daily for this many days,
#: then only ``ca list`` shows it: a device gone for good must not alert forever.
EXPIRED_ALERT_DAYS = 7
#: The alert rule id (``voipsec alerts list``, metrics' alerts by rule).
EXPIRY_ALERT_RULE = "cert_expiry"


class Issued(Protocol):
    """What the CA recorded of one certificate (storage.CertificateRecord)."""

    @property
    def serial(self) -> int: ...
    @property
    def name(self) -> str: ...
    @property
    def aor(self) -> str: ...
    @property
    def not_after(self) -> float: ...
    @property
    def issued(self) -> float: ...
    @property
    def revoked(self) -> float | None: ...


class CertState(StrEnum):
    OK = "ok"
    EXPIRING = "expiring"
    EXPIRED = "expired"
    REVOKED = "revoked"


@dataclass(frozen=True, slots=True, kw_only=True)
class CertStatus:
    """One issued certificate's state at ``now``."""

    serial: int
    name: str
    aor: str
    not_after: float
    state: CertState
    #: Whole days to expiry, rounded up (a certificate valid 3 days from now says 3);
    #: 0 or less once expired.
    days_left: int
    #: Serial of a newer, unrevoked certificate of the same device (``ca renew``).
    renewed_by: int | None

    @property
    def label(self) -> str:
        """The status column of ``voipsec ca list``."""
        if self.state is CertState.EXPIRING:
            unit = "day" if self.days_left == 1 else "days"
            return f"expiring in {self.days_left} {unit}"
        return self.state.value


def check_validity_days(days: int) -> int:
    """``days`` when it is a device-certificate validity we issue, else ValueError."""
    if not MIN_VALIDITY_DAYS <= days <= MAX_VALIDITY_DAYS:
        raise ValueError(
            f"validity must be {MIN_VALIDITY_DAYS}..{MAX_VALIDITY_DAYS} days, not {days}"
        )
    return days


def days_left(not_after: float, now: float) -> int:
    """Whole days until ``not_after``, rounded up; 0 or less once it has passed."""
    return math.ceil((not_after - now) / DAY)


def day_of(now: float) -> int:
    """The UTC day number of ``now`` (alerts go out once per certificate per day)."""
    return int(now // DAY)


def validity_state(
    *, not_after: float, now: float, warning_days: int, revoked: bool = False
) -> CertState:
    """Revoked, expired (``not_after`` passed: RFC 5280 §4.1.2.5 makes it the last
    valid second), expiring (within ``warning_days``) or ok."""
    if revoked:
        return CertState.REVOKED
    if now > not_after:
        return CertState.EXPIRED
    if not_after - now <= warning_days * DAY:
        return CertState.EXPIRING
    return CertState.OK


def latest_certificate(certs: Iterable[Issued], name: str) -> Issued | None:
    """The last certificate issued to ``name`` (what ``ca renew`` renews), or None."""
    mine = [c for c in certs if c.name == name]
    return max(mine, key=lambda c: (c.issued, c.not_after)) if mine else None


def certificate_statuses(
    certs: Sequence[Issued], *, now: float, warning_days: int
) -> list[CertStatus]:
    """The state of every certificate, in the order given."""
    return [_status(c, certs, now, warning_days) for c in certs]


def _status(cert: Issued, certs: Sequence[Issued], now: float, warning_days: int) -> CertStatus:
    return CertStatus(
        serial=cert.serial,
        name=cert.name,
        aor=cert.aor,
        not_after=cert.not_after,
        state=validity_state(
            not_after=cert.not_after,
            now=now,
            warning_days=warning_days,
            revoked=cert.revoked is not None,
        ),
        days_left=days_left(cert.not_after, now),
        renewed_by=_newer(cert, certs),
    )


def _newer(cert: Issued, certs: Sequence[Issued]) -> int | None:
    """The latest unrevoked certificate of the same device issued after ``cert``."""
    newer = [
        c
        for c in certs
        if c.name == cert.name
        and c.serial != cert.serial
        and c.revoked is None
        and (c.issued, c.not_after) > (cert.issued, cert.not_after)
    ]
    return max(newer, key=lambda c: (c.issued, c.not_after)).serial if newer else None


def due_expiry_alerts(
    statuses: Iterable[CertStatus], *, now: float, alerted: frozenset[tuple[int, int]]
) -> list[tuple[int, AlertRaised]]:
    """(serial, alert) to raise now: one per certificate per UTC day while it is
    expiring, and for :data:`EXPIRED_ALERT_DAYS` days once it has expired; none for a
    revoked or a renewed certificate. ``alerted`` holds the (serial, day) pairs already
    raised; the caller adds ``(serial, day_of(now))`` for each alert returned."""
    today = day_of(now)
    return [
        (s.serial, _alert(s, now))
        for s in statuses
        if (s.serial, today) not in alerted and s.renewed_by is None and _alerts(s)
    ]


def _alerts(status: CertStatus) -> bool:
    if status.state is CertState.EXPIRING:
        return True
    return status.state is CertState.EXPIRED and -status.days_left < EXPIRED_ALERT_DAYS


def _alert(status: CertStatus, now: float) -> AlertRaised:
    if status.state is CertState.EXPIRED:
        what = "device certificate expired"
        ago = -status.days_left
        when = "today" if ago == 0 else f"{ago} day(s) ago"
        why = f"serial {status.serial:x} expired {when}"
    else:
        what = "device certificate expiring"
        why = f"serial {status.serial:x} expires in {status.days_left} day(s)"
    return AlertRaised(
        what=what,
        who=f"sip:{status.aor}",
        why=f"{why}; renew it with `voipsec ca renew {status.name}`",
        action="alerted",
        rule=EXPIRY_ALERT_RULE,
        time=now,
        source="",
    )

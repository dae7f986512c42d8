"""The running server's check of device-certificate expiry (issue 18, item 5).

A periodic job (app/periodic.py, hourly, worker 0 only: alerts are delivered once per
server) reads the CA's record of issued certificates and publishes the alerts that
:func:`voipsec.pki.lifecycle.due_expiry_alerts` says are due, on the event bus like
every other alert (the monitor stores and delivers them). It remembers which
certificate it alerted on which UTC day, seeded at start from the day's stored alerts,
so a restart does not repeat them.

Failure mode: fails open (alerts are advice). A database that cannot be read is
logged by the periodic owner and the check runs again at its next turn.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from ..events import EventBus
from ..pki.lifecycle import (
    DAY,
    EXPIRY_ALERT_RULE,
    Issued,
    certificate_statuses,
    day_of,
    due_expiry_alerts,
)
from ..records import AlertRecord

#: How often the job looks (seconds): a day's alert goes out within an hour of
#: midnight UTC, or of a certificate entering its warning period.
CERT_EXPIRY_INTERVAL = 3600.0

_SERIAL = re.compile(r"\bserial ([0-9a-f]+) ")


class IssuedCertificates(Protocol):
    """Where the CA's record of issued certificates and the stored alerts live (Store)."""

    def certificates(self) -> Sequence[Issued]: ...

    def alerts(self, since: float = 0.0) -> list[AlertRecord]: ...


class CertificateExpiry:
    """Publishes each day's expiry alerts once."""

    def __init__(
        self,
        *,
        store: IssuedCertificates,
        events: EventBus,
        warning_days: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._events = events
        self._warning_days = warning_days
        self._clock = clock
        self._alerted: set[tuple[int, int]] = set()
        self._seeded = False

    def check(self) -> None:
        """Publish the alerts due now."""
        now = self._clock()
        today = day_of(now)
        if not self._seeded:
            self._alerted = self._stored_today(today)
            self._seeded = True
        self._alerted = {pair for pair in self._alerted if pair[1] == today}
        statuses = certificate_statuses(
            self._store.certificates(), now=now, warning_days=self._warning_days
        )
        due = due_expiry_alerts(statuses, now=now, alerted=frozenset(self._alerted))
        for serial, alert in due:
            self._alerted.add((serial, today))
            self._events.publish(alert)

    def _stored_today(self, today: int) -> set[tuple[int, int]]:
        """(serial, today) of the expiry alerts stored since midnight UTC."""
        pairs = set()
        for record in self._store.alerts(since=today * DAY):
            match = _SERIAL.search(record.detail)
            if record.rule == EXPIRY_ALERT_RULE and match is not None:
                pairs.add((int(match.group(1), 16), today))
        return pairs

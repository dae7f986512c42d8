"""What a client certificate says about its holder, from ``SSLObject.getpeercert()``."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

#: Month names as OpenSSL prints them (ASN1_TIME_print), whatever the locale.
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


@dataclass(frozen=True, slots=True, kw_only=True)
class PeerIdentity:
    """A verified client certificate: its serial and the SIP AOR in its SAN."""

    serial: int
    aor: str | None
    subject: str
    #: Its notAfter (seconds since the epoch): an open connection is closed when it
    #: passes (ConnectionTable.close_expired); None when unknown.
    not_after: float | None = None


def peer_identity(cert: dict[str, Any] | None) -> PeerIdentity | None:
    """The identity in a verified peer certificate, or None when none was presented."""
    if not cert:
        return None
    serial_text = cert.get("serialNumber")
    if not isinstance(serial_text, str):
        return None
    aor: str | None = None
    for kind, value in cert.get("subjectAltName", ()):
        if kind == "URI" and isinstance(value, str) and value.lower().startswith("sip:"):
            aor = value[4:]
            break
    subject = ",".join(f"{k}={v}" for rdn in cert.get("subject", ()) for k, v in rdn)
    return PeerIdentity(
        serial=int(serial_text, 16), aor=aor, subject=subject, not_after=_not_after(cert)
    )


def _not_after(cert: dict[str, Any]) -> float | None:
    """``notAfter`` as getpeercert() gives it ("Dec  5 19:34:31 2026 GMT"), parsed here
    rather than with ``ssl.cert_time_to_seconds``: core/auth.py imports this module, and
    the sans-IO cores import no ssl. None when absent or in another form."""
    try:
        month, day, clock, year, zone = str(cert.get("notAfter")).split()
        hour, minute, second = clock.split(":")
        when = datetime(
            int(year), _MONTHS.index(month) + 1, int(day), int(hour), int(minute), int(second),
            tzinfo=UTC,
        )  # fmt: skip
    except ValueError:
        return None
    return when.timestamp() if zone == "GMT" else None

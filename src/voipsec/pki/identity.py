"""What a client certificate says about its holder, from ``SSLObject.getpeercert()``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True, kw_only=True)
class PeerIdentity:
    """A verified client certificate: its serial and the SIP AOR in its SAN."""

    serial: int
    aor: str | None
    subject: str


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
    return PeerIdentity(serial=int(serial_text, 16), aor=aor, subject=subject)

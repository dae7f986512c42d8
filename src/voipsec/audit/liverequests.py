"""The SIP requests and SDP the live probes send, built with voipsec's own SIP package.

Every request is a fresh transaction (RFC 3261 §8.1.1: new branch, From tag, Call-ID
unless a probe continues a registration's). The probe names itself ``audit`` and says
what it is in :data:`USER_AGENT` — an admin reading devices, CDRs or alerts sees the
audit, and it imitates no phone's fingerprint. Sans-IO.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass

from .. import __version__
from ..sip import Request
from ..sip.dialog import new_branch, new_tag
from ..sip.uac import LocalAddress, make_request

__all__ = ["PROBE_USER", "USER_AGENT", "Party", "audio_offer", "bracket", "request"]

#: The user part of the probe's From when it has no test user.
PROBE_USER = "audit"
#: The User-Agent of every probe request (RFC 3261 §20.41): the same each run.
USER_AGENT = f"voipsec-audit/{__version__}"


def bracket(host: str) -> str:
    """An IPv6 address in brackets, as URIs and Via want it (RFC 3261 §25.1)."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


@dataclass(frozen=True, slots=True, kw_only=True)
class Party:
    """Who a request is from and to: user parts at the target's domain."""

    domain: str
    from_user: str = PROBE_USER
    to_user: str | None = None
    scheme: str = "sip"


def request(
    method: str,
    party: Party,
    local: LocalAddress,
    *,
    call_id: str | None = None,
    cseq: int = 1,
    uri: str | None = None,
    extra: Sequence[tuple[str, str]] = (),
    body: bytes = b"",
) -> Request:
    """A new request from ``party.from_user``; REGISTER's To is the From (§10.2)."""
    domain = bracket(party.domain)
    to_user = party.from_user if method == "REGISTER" else party.to_user
    to_uri = f"{party.scheme}:{to_user}@{domain}" if to_user else f"{party.scheme}:{domain}"
    if uri is None:
        uri = f"{party.scheme}:{domain}" if method == "REGISTER" else to_uri
    headers: list[tuple[str, str]] = [
        ("Via", local.via(new_branch())),
        ("Max-Forwards", "70"),
        ("From", f"<{party.scheme}:{party.from_user}@{domain}>;tag={new_tag()}"),
        ("To", f"<{to_uri}>"),
        ("Call-ID", call_id or secrets.token_hex(12)),
        ("CSeq", f"{cseq} {method}"),
        ("User-Agent", USER_AGENT),
    ]
    headers += list(extra)
    if body:
        headers.append(("Content-Type", "application/sdp"))
    return make_request(method, uri, headers, body)


def audio_offer(address: str, port: int, *, crypto: str | None) -> bytes:
    """An audio offer: RTP/AVP without ``crypto``, else RTP/SAVP with that a=crypto
    value (RFC 4568 §9.1)."""
    family = "IP6" if ":" in address else "IP4"
    session = secrets.randbelow(2**31)
    lines = [
        "v=0",
        f"o=- {session} 1 IN {family} {address}",
        "s=-",
        f"c=IN {family} {address}",
        "t=0 0",
        f"m=audio {port} {'RTP/SAVP' if crypto else 'RTP/AVP'} 0",
        "a=rtpmap:0 PCMU/8000",
        "a=sendrecv",
    ]
    if crypto:
        lines.append(f"a=crypto:{crypto}")
    return ("\r\n".join(lines) + "\r\n").encode()

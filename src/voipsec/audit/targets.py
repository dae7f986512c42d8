"""Where a live audit looks: ``--target sips:HOST:PORT`` and ``--turn HOST:PORT``.

A target names a SIP-over-TLS listener (RFC 3261 §19.1 ``sips:`` with host and port;
an IPv6 host in brackets). Only numeric addresses and names are taken as written: the
probes connect to what the admin named, nothing else (the plaintext probe asks the same
host's port 5060, RFC 3261 §19.1.2's default for ``sip:``). Sans-IO.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

__all__ = [
    "MAX_TARGETS",
    "PLAIN_SIP_PORT",
    "SipTarget",
    "TargetError",
    "TurnTarget",
    "parse_host_port",
    "parse_target",
    "parse_turn",
]

#: At most this many ``--target``s per run: each is probed in turn, bounded in rate.
MAX_TARGETS = 16
#: The port plaintext SIP is looked for on a target's host (RFC 3261 §19.1.2).
PLAIN_SIP_PORT = 5060
#: The TURN port when ``--turn`` names none (RFC 8656 §3.1 default).
DEFAULT_TURN_PORT = 3478

_NAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$")


class TargetError(ValueError):
    """A target the audit cannot use; the message says why."""


@dataclass(frozen=True, slots=True)
class SipTarget:
    """A SIP-over-TLS listener to probe."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"sips:{_bracket(self.host)}:{self.port}"


@dataclass(frozen=True, slots=True)
class TurnTarget:
    """A STUN/TURN listener (UDP) to probe."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"turn:{_bracket(self.host)}:{self.port}"


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def parse_host_port(text: str, default_port: int | None = None) -> tuple[str, int]:
    """``HOST:PORT`` or ``[V6]:PORT`` (PORT optional when ``default_port`` is given)."""
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep:
            raise TargetError(f"{text!r}: unclosed '['")
        port_text = rest[1:] if rest.startswith(":") else ("" if not rest else None)
        if port_text is None:
            raise TargetError(f"{text!r}: expected ':PORT' after ']'")
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise TargetError(f"{text!r}: not an IPv6 address in brackets") from None
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep:
            host, port_text = text, ""
        if ":" in host:
            raise TargetError(f"{text!r}: put an IPv6 address in brackets")
        if not _NAME.match(host):
            raise TargetError(f"{text!r}: not a host name or address")
    if not port_text:
        if default_port is None:
            raise TargetError(f"{text!r}: a port is needed (HOST:PORT)")
        return host, default_port
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise TargetError(f"{text!r}: port must be 1-65535")
    return host, int(port_text)


def parse_target(text: str) -> SipTarget:
    """``sips:HOST:PORT`` (the port defaults to 5061, RFC 3261 §19.1.2)."""
    scheme, sep, rest = text.partition(":")
    if not sep or scheme.lower() != "sips":
        raise TargetError(f"{text!r}: a target is sips:HOST:PORT (TLS only)")
    host, port = parse_host_port(rest, 5061)
    return SipTarget(host, port)


def parse_turn(text: str) -> TurnTarget:
    """``HOST:PORT`` or ``turn:HOST:PORT`` of a TURN server (UDP)."""
    rest = text[5:] if text.lower().startswith("turn:") else text
    host, port = parse_host_port(rest, DEFAULT_TURN_PORT)
    return TurnTarget(host, port)

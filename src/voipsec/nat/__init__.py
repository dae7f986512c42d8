"""STUN and TURN server (RFC 8489, RFC 8656) for phones and softphones behind NAT.

Two layers: :mod:`.stun` (message codec), :mod:`.turn` (the TURN state machine) and
:mod:`.turnmodel` (its limits, actions, events and state records) are sans-IO;
:mod:`.service` is the asyncio shell with the UDP/TCP listeners and relay sockets.
:mod:`.peerfilter` keeps the relay out of internal networks and :mod:`.credentials`
makes and checks TURN REST credentials.
"""

from __future__ import annotations

from .credentials import long_term_key, parse_rest_username, rest_credentials, rest_password
from .peerfilter import PeerDecision, PeerFilter, normalise
from .service import TurnService, TurnServiceStatistics, interface_addresses, own_addresses
from .stun import (
    Attr,
    Integrity,
    Message,
    MessageClass,
    Method,
    StunFramingError,
    StunParseError,
    StunStreamFramer,
    encode,
    parse_channel_data,
    parse_message,
    verify_integrity,
)
from .turn import FiveTuple, TurnServer, TurnStatistics

__all__ = [
    "Attr",
    "FiveTuple",
    "Integrity",
    "Message",
    "MessageClass",
    "Method",
    "PeerDecision",
    "PeerFilter",
    "StunFramingError",
    "StunParseError",
    "StunStreamFramer",
    "TurnServer",
    "TurnService",
    "TurnServiceStatistics",
    "TurnStatistics",
    "encode",
    "interface_addresses",
    "long_term_key",
    "normalise",
    "own_addresses",
    "parse_channel_data",
    "parse_message",
    "parse_rest_username",
    "rest_credentials",
    "rest_password",
    "verify_integrity",
]

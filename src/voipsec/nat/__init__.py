"""STUN and TURN server (RFC 8489, RFC 8656): sans-IO codec and core, asyncio shell."""

from __future__ import annotations

from .stun import Message, StunParseError, parse_message

__all__ = ["Message", "StunParseError", "parse_message"]

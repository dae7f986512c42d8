"""STUN keep-alives on a SIP UDP port (RFC 5626 §4.4.2), sans-IO.

A phone behind NAT multiplexes STUN Binding requests with SIP on the port it registered
from, to keep its NAT binding open and learn its public address. SIP starts with a
letter, STUN with two zero bits (RFC 7983), so one byte tells them apart.
"""

from __future__ import annotations

from .stun import (
    Attr,
    Message,
    MessageClass,
    Method,
    StunParseError,
    encode,
    encode_xor_address,
    parse_message,
)


def looks_like_stun(data: bytes) -> bool:
    """True for a datagram that is STUN rather than SIP (first byte below 0x40)."""
    return bool(data) and data[0] < 0x40


def answer_binding(data: bytes, client: tuple[str, int]) -> bytes | None:
    """The Binding success response for a STUN Binding request, else None (ignore it)."""
    try:
        message = parse_message(data)
    except StunParseError:
        return None
    if (
        message.method != Method.BINDING
        or message.cls != MessageClass.REQUEST
        or message.classic
        or message.unknown_required(())
    ):
        return None
    response = Message(
        method=Method.BINDING,
        cls=MessageClass.SUCCESS,
        transaction_id=message.transaction_id,
        cookie=message.cookie,
        attributes=((Attr.XOR_MAPPED_ADDRESS, encode_xor_address(client, message.transaction_id)),),
    )
    return encode(response, fingerprint=message.has(Attr.FINGERPRINT))

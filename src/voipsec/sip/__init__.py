"""Sans-IO SIP: message model, parser, serializer, URIs, digest auth, transactions."""

from .errors import FramingError, SipParseError
from .framing import FramedMessage, KeepAlivePing, StreamFramer
from .headers import Header, Headers
from .message import (
    CSeq,
    Message,
    Request,
    Response,
    Via,
    parse_message,
    response_to,
)
from .uri import AbsoluteUri, NameAddr, SipUri, parse_name_addr, parse_uri

__all__ = [
    "AbsoluteUri",
    "CSeq",
    "FramedMessage",
    "FramingError",
    "Header",
    "Headers",
    "KeepAlivePing",
    "Message",
    "NameAddr",
    "Request",
    "Response",
    "SipParseError",
    "SipUri",
    "StreamFramer",
    "Via",
    "parse_message",
    "parse_name_addr",
    "parse_uri",
    "response_to",
]

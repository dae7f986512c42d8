"""Every named input limit: a test just at it that passes and one past it that fails.

sip/limits.py, digest.MAX_AUTH_HEADER, layer.MAX_SERVER_TRANSACTIONS and the
registrar's max_contacts_per_aor. STYLE.md §7.
"""

from __future__ import annotations

import inspect

import pytest

from voipsec.core.registrar import Registrar, RegistrarPolicy
from voipsec.sip import limits
from voipsec.sip.digest import MAX_AUTH_HEADER, parse_authorization
from voipsec.sip.errors import FramingError, SipParseError
from voipsec.sip.framing import FramedMessage, StreamFramer
from voipsec.sip.layer import MAX_SERVER_TRANSACTIONS, TransactionLayer
from voipsec.sip.message import Request, parse_message

START = "REGISTER sip:example.com SIP/2.0"
VIA = "Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKlimit"
BASE_HEADERS = [
    "To: <sip:alice@example.com>",
    "From: <sip:alice@example.com>;tag=1",
    "Call-ID: limits@192.0.2.1",
    "CSeq: 1 REGISTER",
    "Max-Forwards: 70",
]


def _message(
    *,
    start: str = START,
    vias: list[str] | None = None,
    extra: list[str] | None = None,
    body: bytes = b"",
    content_length: str | None = None,
) -> bytes:
    """A REGISTER; Content-Length comes last so padding can go before it."""
    lines = [start, *(vias if vias is not None else [VIA]), *BASE_HEADERS, *(extra or [])]
    length = str(len(body)) if content_length is None else content_length
    lines.append(f"Content-Length: {length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def _head_len(data: bytes) -> int:
    return data.index(b"\r\n\r\n")


def _padded_to_head_size(size: int) -> bytes:
    """A message whose header section (before CRLFCRLF) is exactly ``size`` bytes."""
    base = _head_len(_message())
    extra: list[str] = []
    room = size - base
    while room > 0:
        # Each extra header costs len(line) + 2 for its CRLF.
        line_len = min(room - 2, 4000)
        if room - (line_len + 2) in (1, 2):  # never leave a gap too small for a header
            line_len -= 8
        extra.append("X-Pad: " + "p" * (line_len - len("X-Pad: ")))
        room -= line_len + 2
    data = _message(extra=extra)
    assert _head_len(data) == size
    return data


def _error(data: bytes, *, datagram: bool = True) -> tuple[int, str]:
    with pytest.raises(SipParseError) as info:
        parse_message(data, datagram=datagram)
    return info.value.status, info.value.reason


def _request(data: bytes) -> Request:
    message = parse_message(data)
    assert isinstance(message, Request)
    return message


def _frame_bytewise(data: bytes) -> list[bytes]:
    framer = StreamFramer()
    out: list[bytes] = []
    for i in range(len(data)):
        out.extend(f.data for f in framer.feed(data[i : i + 1]) if isinstance(f, FramedMessage))
    return out


# -- MAX_MESSAGE_SIZE ---------------------------------------------------------------


def test_limits_message_size_at_limit_passes() -> None:
    # Datagram octets past Content-Length are ignored (RFC 3261 §18.3), so a message
    # of exactly MAX_MESSAGE_SIZE can be built from noise after the headers.
    data = _message(content_length="0")
    data += b"n" * (limits.MAX_MESSAGE_SIZE - len(data))
    assert len(data) == limits.MAX_MESSAGE_SIZE
    assert _request(data).body == b""


def test_limits_message_size_exceeded_is_513() -> None:
    data = _message(content_length="0")
    data += b"n" * (limits.MAX_MESSAGE_SIZE + 1 - len(data))
    assert _error(data) == (513, "message too large")


# -- MAX_HEADER_BYTES ---------------------------------------------------------------


def test_limits_header_section_at_limit_passes() -> None:
    data = _padded_to_head_size(limits.MAX_HEADER_BYTES)
    assert _request(data).headers.get("call-id") == "limits@192.0.2.1"
    assert parse_message(data, datagram=False).to_bytes() == data


def test_limits_header_section_exceeded_is_513() -> None:
    data = _padded_to_head_size(limits.MAX_HEADER_BYTES + 1)
    assert _error(data) == (513, "header section too large")


def test_limits_framer_header_section_at_limit_passes_whole_and_bytewise() -> None:
    data = _padded_to_head_size(limits.MAX_HEADER_BYTES)
    assert StreamFramer().feed(data) == [FramedMessage(data)]
    assert _frame_bytewise(data) == [data]


def test_limits_framer_header_section_exceeded_is_513() -> None:
    data = _padded_to_head_size(limits.MAX_HEADER_BYTES + 1)
    with pytest.raises(FramingError) as info:
        StreamFramer().feed(data)
    assert (info.value.status, info.value.reason) == (513, "header section too large")


def test_limits_framer_unterminated_header_section_exceeded_is_513() -> None:
    framer = StreamFramer()
    # MAX_HEADER_BYTES + 3 bytes may still be completed by a final LF.
    assert framer.feed(b"x" * (limits.MAX_HEADER_BYTES + 3)) == []
    with pytest.raises(FramingError) as info:
        framer.feed(b"x")
    assert (info.value.status, info.value.reason) == (513, "header section too large")


# -- MAX_HEADERS --------------------------------------------------------------------


def _with_header_count(count: int) -> bytes:
    fixed = 1 + len(BASE_HEADERS) + 1  # Via, base headers, Content-Length
    return _message(extra=[f"X-H{i}: {i}" for i in range(count - fixed)])


def test_limits_header_count_at_limit_passes() -> None:
    assert len(_request(_with_header_count(limits.MAX_HEADERS)).headers) == limits.MAX_HEADERS


def test_limits_header_count_exceeded_is_400() -> None:
    assert _error(_with_header_count(limits.MAX_HEADERS + 1)) == (400, "too many headers")


# -- MAX_HEADER_LENGTH --------------------------------------------------------------


def test_limits_header_length_at_limit_passes() -> None:
    line = "Subject: " + "s" * (limits.MAX_HEADER_LENGTH - len("Subject: "))
    assert len(line) == limits.MAX_HEADER_LENGTH
    assert _request(_message(extra=[line])).headers.get("subject") == line[len("Subject: ") :]


def test_limits_header_length_exceeded_is_400() -> None:
    line = "Subject: " + "s" * (limits.MAX_HEADER_LENGTH + 1 - len("Subject: "))
    assert _error(_message(extra=[line])) == (400, "header too long")


def test_limits_header_length_counts_after_unfolding() -> None:
    half = "s" * (limits.MAX_HEADER_LENGTH // 2)
    assert _error(_message(extra=[f"Subject: {half}\r\n {half}"])) == (400, "header too long")


# -- MAX_VIA ------------------------------------------------------------------------


def _vias(count: int) -> list[str]:
    return [f"Via: SIP/2.0/UDP h{i}.example.com;branch=z9hG4bK{i}" for i in range(count)]


def test_limits_via_count_at_limit_passes() -> None:
    assert len(_request(_message(vias=_vias(limits.MAX_VIA))).vias) == limits.MAX_VIA


def test_limits_via_count_exceeded_is_483() -> None:
    assert _error(_message(vias=_vias(limits.MAX_VIA + 1))) == (483, "too many Via headers")


def test_limits_via_count_in_one_line_exceeded_is_483() -> None:
    values = ", ".join(v.removeprefix("Via: ") for v in _vias(limits.MAX_VIA + 1))
    assert _error(_message(vias=[f"Via: {values}"])) == (483, "too many Via headers")


def test_limits_via_count_in_one_line_at_limit_passes() -> None:
    values = ", ".join(v.removeprefix("Via: ") for v in _vias(limits.MAX_VIA))
    assert len(_request(_message(vias=[f"Via: {values}"])).vias) == limits.MAX_VIA


# -- MAX_URI_LENGTH -----------------------------------------------------------------


def _uri_of_length(length: int) -> str:
    prefix = "sip:"
    suffix = "@example.com"
    return prefix + "u" * (length - len(prefix) - len(suffix)) + suffix


def test_limits_request_uri_at_limit_passes() -> None:
    uri = _uri_of_length(limits.MAX_URI_LENGTH)
    assert _request(_message(start=f"REGISTER {uri} SIP/2.0")).raw_uri == uri


def test_limits_request_uri_exceeded_is_414() -> None:
    uri = _uri_of_length(limits.MAX_URI_LENGTH + 1)
    assert _error(_message(start=f"REGISTER {uri} SIP/2.0")) == (414, "URI too long")


def test_limits_header_uri_exceeded_is_414() -> None:
    uri = _uri_of_length(limits.MAX_URI_LENGTH + 1)
    data = _message().replace(b"To: <sip:alice@example.com>", f"To: <{uri}>".encode())
    assert _error(data) == (414, "URI too long")


# -- MAX_BODY_SIZE ------------------------------------------------------------------


def test_limits_body_at_limit_passes() -> None:
    body = b"b" * limits.MAX_BODY_SIZE
    assert _request(_message(body=body)).body == body
    data = _message(body=body)
    assert StreamFramer().feed(data) == [FramedMessage(data)]


def test_limits_body_exceeded_is_413() -> None:
    assert _error(_message(body=b"b" * (limits.MAX_BODY_SIZE + 1))) == (413, "body too large")


def test_limits_body_without_content_length_exceeded_is_413() -> None:
    head = _message().replace(b"Content-Length: 0\r\n", b"")
    assert _request(head + b"b" * limits.MAX_BODY_SIZE).body == b"b" * limits.MAX_BODY_SIZE
    assert _error(head + b"b" * (limits.MAX_BODY_SIZE + 1)) == (413, "body too large")


def test_limits_framer_body_exceeded_is_413_before_body_arrives() -> None:
    head = _message(content_length=str(limits.MAX_BODY_SIZE + 1))
    with pytest.raises(FramingError) as info:
        StreamFramer().feed(head)
    assert (info.value.status, info.value.reason) == (413, "body too large")


# -- MAX_CSEQ -----------------------------------------------------------------------


def test_limits_cseq_at_limit_passes() -> None:
    data = _message().replace(b"CSeq: 1 ", f"CSeq: {limits.MAX_CSEQ} ".encode())
    assert _request(data).cseq.seq == 2**31 - 1


def test_limits_cseq_exceeded_is_400() -> None:
    data = _message().replace(b"CSeq: 1 ", f"CSeq: {limits.MAX_CSEQ + 1} ".encode())
    assert _error(data) == (400, "CSeq number too large")


# -- MAX_DELTA_SECONDS --------------------------------------------------------------


def test_limits_expires_at_limit_passes() -> None:
    data = _message(extra=[f"Expires: {limits.MAX_DELTA_SECONDS}"])
    assert _request(data).int_header("expires") == 2**32 - 1


def test_limits_expires_exceeded_is_400() -> None:
    data = _message(extra=[f"Expires: {limits.MAX_DELTA_SECONDS + 1}"])
    assert _error(data) == (400, "expires out of range")


def test_limits_content_length_exceeded_is_400() -> None:
    data = _message(content_length=str(limits.MAX_DELTA_SECONDS + 1))
    assert _error(data) == (400, "Content-Length out of range")
    with pytest.raises(FramingError) as info:
        StreamFramer().feed(data)
    assert (info.value.status, info.value.reason) == (400, "malformed Content-Length")


# -- digest MAX_AUTH_HEADER ---------------------------------------------------------


_AUTH_HEAD = 'Digest username="alice", realm="example.com", uri="sip:x", nonce="'
_AUTH_TAIL = f'", response="{"0" * 64}"'


def _authorization_of_length(length: int) -> str:
    """An Authorization of exactly ``length`` characters, padded in its nonce (the
    response must stay a 64-digit request-digest)."""
    return _AUTH_HEAD + "n" * (length - len(_AUTH_HEAD) - len(_AUTH_TAIL)) + _AUTH_TAIL


def test_limits_authorization_at_limit_passes() -> None:
    value = _authorization_of_length(MAX_AUTH_HEADER)
    assert len(value) == MAX_AUTH_HEADER
    pad = MAX_AUTH_HEADER - len(_AUTH_HEAD) - len(_AUTH_TAIL)
    assert parse_authorization(value).nonce == "n" * pad


def test_limits_authorization_exceeded_is_400() -> None:
    with pytest.raises(SipParseError) as info:
        parse_authorization(_authorization_of_length(MAX_AUTH_HEADER + 1))
    assert (info.value.status, info.value.reason) == (400, "Authorization header too long")


# -- layer MAX_SERVER_TRANSACTIONS --------------------------------------------------


def _options(i: int) -> Request:
    data = (
        f"OPTIONS sip:example.com SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKtx{i}\r\n"
        f"To: <sip:example.com>\r\nFrom: <sip:a@example.com>;tag=1\r\n"
        f"Call-ID: tx{i}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    ).encode()
    return _request(data)


def test_limits_server_transactions_default_is_the_named_constant() -> None:
    default = inspect.signature(TransactionLayer).parameters["max_server_transactions"].default
    assert default == MAX_SERVER_TRANSACTIONS == 200_000


def test_limits_server_transactions_at_limit_then_exceeded() -> None:
    layer = TransactionLayer(max_server_transactions=3)
    for i in range(3):
        assert layer.full is False
        key, actions = layer.receive_request(_options(i), 0.0, reliable=False)
        assert key is not None
        assert actions == []
    assert layer.full is True
    assert layer.receive_request(_options(3), 0.0, reliable=False) == (None, [])
    stats = layer.statistics()
    assert (stats.server_transactions, stats.overloaded) == (3, 1)


# -- registrar max_contacts_per_aor -------------------------------------------------


def _register_with_contacts(count: int) -> Request:
    contacts = ", ".join(f"<sip:alice@192.0.2.{i + 1}>" for i in range(count))
    return _request(_message(extra=[f"Contact: {contacts}", "Expires: 600"]))


def test_limits_contacts_per_aor_at_limit_passes() -> None:
    policy = RegistrarPolicy(domain="example.com", domains=frozenset({"example.com"}))
    registrar = Registrar(policy)
    outcome = registrar.register(
        _register_with_contacts(policy.max_contacts_per_aor), user="alice", now=0.0, source="s"
    )
    assert (outcome.status, len(outcome.upserts)) == (200, 10)


def test_limits_contacts_per_aor_exceeded_is_403() -> None:
    policy = RegistrarPolicy(domain="example.com", domains=frozenset({"example.com"}))
    registrar = Registrar(policy)
    outcome = registrar.register(
        _register_with_contacts(policy.max_contacts_per_aor + 1), user="alice", now=0.0, source="s"
    )
    assert (outcome.status, outcome.reason, outcome.upserts) == (403, "Too Many Contacts", ())
    assert registrar.lookup("alice@example.com", 0.0) == []

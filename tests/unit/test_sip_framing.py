"""Content-Length framing of SIP over streams (voipsec.sip.framing)."""

from __future__ import annotations

import pytest

from voipsec.sip.errors import FramingError, SipParseError
from voipsec.sip.framing import FramedMessage, KeepAlivePing, StreamFramer
from voipsec.sip.message import parse_message

OPTIONS = (
    b"OPTIONS sip:example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/TLS 192.0.2.1:5061;branch=z9hG4bKopt1\r\n"
    b"To: <sip:example.com>\r\n"
    b"From: <sip:alice@example.com>;tag=1\r\n"
    b"Call-ID: opt1@192.0.2.1\r\n"
    b"CSeq: 1 OPTIONS\r\n"
    b"Content-Length: 0\r\n"
    b"\r\n"
)

MESSAGE = (
    b"MESSAGE sip:bob@example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/TLS 192.0.2.1:5061;branch=z9hG4bKmsg1\r\n"
    b"To: <sip:bob@example.com>\r\n"
    b"From: <sip:alice@example.com>;tag=2\r\n"
    b"Call-ID: msg1@192.0.2.1\r\n"
    b"CSeq: 2 MESSAGE\r\n"
    b"l: 12\r\n"
    b"\r\n"
    b"hello\r\n\r\nbob"
)


def _messages(out: list[FramedMessage | KeepAlivePing]) -> list[bytes]:
    return [f.data for f in out if isinstance(f, FramedMessage)]


def _framing_error(*chunks: bytes) -> tuple[int, str]:
    framer = StreamFramer()
    with pytest.raises(FramingError) as info:
        for chunk in chunks:
            framer.feed(chunk)
    assert isinstance(info.value, SipParseError)
    return info.value.status, info.value.reason


def test_framing_two_messages_in_one_chunk() -> None:
    framer = StreamFramer()
    assert framer.feed(OPTIONS + MESSAGE) == [FramedMessage(OPTIONS), FramedMessage(MESSAGE)]
    assert framer.buffered == 0


def test_framing_body_with_crlfcrlf_is_cut_by_content_length() -> None:
    framer = StreamFramer()
    assert _messages(framer.feed(MESSAGE + OPTIONS)) == [MESSAGE, OPTIONS]
    assert parse_message(MESSAGE, datagram=False).body == b"hello\r\n\r\nbob"


def test_framing_one_byte_at_a_time() -> None:
    framer = StreamFramer()
    out: list[bytes] = []
    stream = OPTIONS + MESSAGE + OPTIONS
    for i in range(len(stream)):
        out.extend(_messages(framer.feed(stream[i : i + 1])))
    assert out == [OPTIONS, MESSAGE, OPTIONS]


def test_framing_partial_message_waits() -> None:
    framer = StreamFramer()
    assert framer.feed(MESSAGE[:-3]) == []
    assert framer.buffered == len(MESSAGE) - 3
    assert framer.pending() == MESSAGE[:-3]
    assert framer.feed(MESSAGE[-3:]) == [FramedMessage(MESSAGE)]
    assert framer.buffered == 0


def test_framing_double_crlf_is_keepalive_ping() -> None:
    framer = StreamFramer()
    assert framer.feed(b"\r\n\r\n") == [KeepAlivePing()]
    assert framer.feed(b"\r\n") == []
    assert framer.feed(b"\r\n") == [KeepAlivePing()]
    assert framer.buffered == 0


def test_framing_single_crlf_between_messages_is_skipped() -> None:
    framer = StreamFramer()
    assert framer.feed(OPTIONS + b"\r\n" + OPTIONS) == [
        FramedMessage(OPTIONS),
        FramedMessage(OPTIONS),
    ]


def test_framing_ping_between_messages() -> None:
    framer = StreamFramer()
    assert framer.feed(OPTIONS + b"\r\n\r\n" + OPTIONS) == [
        FramedMessage(OPTIONS),
        KeepAlivePing(),
        FramedMessage(OPTIONS),
    ]


def test_framing_bare_lf_header_end() -> None:
    message = OPTIONS.replace(b"\r\n", b"\n")
    assert StreamFramer().feed(message + message) == [
        FramedMessage(message),
        FramedMessage(message),
    ]


def test_framing_earliest_header_end_wins_however_chunked() -> None:
    # A bare LF LF before the CRLF CRLF ends the header section, fed whole or bytewise.
    data = b"I\n\n" + OPTIONS
    assert _framing_error(data) == (400, "missing Content-Length on stream transport")
    assert _framing_error(*(data[i : i + 1] for i in range(len(data)))) == (
        400,
        "missing Content-Length on stream transport",
    )


def test_framing_missing_content_length_is_error() -> None:
    data = OPTIONS.replace(b"Content-Length: 0\r\n", b"")
    assert _framing_error(data) == (400, "missing Content-Length on stream transport")


def test_framing_multiple_content_length_is_error() -> None:
    data = OPTIONS.replace(b"Content-Length: 0\r\n", b"Content-Length: 0\r\nl: 0\r\n")
    assert _framing_error(data) == (400, "multiple Content-Length headers")


@pytest.mark.parametrize("value", [b"-1", b"x", b"", b"1 2", b"\xff", b"4294967296"])
def test_framing_malformed_content_length_is_error(value: bytes) -> None:
    data = OPTIONS.replace(b"Content-Length: 0", b"Content-Length: " + value)
    assert _framing_error(data) == (400, "malformed Content-Length")


def test_framing_folded_lines_are_not_content_length() -> None:
    data = OPTIONS.replace(
        b"Content-Length: 0\r\n", b"Subject: x\r\n l: 99\r\nContent-Length: 0\r\n"
    )
    assert StreamFramer().feed(data) == [FramedMessage(data)]


def test_framing_error_is_sticky_about_pending_bytes() -> None:
    framer = StreamFramer()
    data = OPTIONS.replace(b"Content-Length: 0", b"Content-Length: x")
    with pytest.raises(FramingError):
        framer.feed(data)
    # The broken request can still be answered from what was buffered.
    assert framer.pending() == data


@pytest.mark.parametrize(
    "name", [b"CONTENT-LENGTH", b"content-length", b"L", b"l", b"Content-Length "]
)
def test_framing_content_length_found_under_any_spelling(name: bytes) -> None:
    data = MESSAGE.replace(b"l: 12", name + b": 12").replace(b"CSeq:", b"X-Long-Header: 7\r\nCSeq:")
    assert StreamFramer().feed(data + OPTIONS) == [FramedMessage(data), FramedMessage(OPTIONS)]

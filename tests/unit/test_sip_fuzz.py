"""Property tests: untrusted bytes either parse or raise SipParseError, nothing else.

The parser (datagram and stream mode), the lazily parsed header bodies and the stream
framer are fed random bytes and mutated valid messages (byte flips, truncations,
insertions of CR, LF, NUL, quote and colon), whole and one byte at a time. STYLE.md §6.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from voipsec.sip.digest import parse_authorization
from voipsec.sip.errors import SipParseError
from voipsec.sip.framing import FramedMessage, StreamFramer
from voipsec.sip.message import Message, Request, parse_message, top_via_with_received
from voipsec.sip.uri import parse_name_addr

RFC4475 = Path(__file__).parent.parent / "data" / "rfc4475"

INVITE = (
    b"INVITE sip:bob@example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/TLS 192.0.2.10:5061;branch=z9hG4bK776asdhds;rport\r\n"
    b"Via: SIP/2.0/UDP proxy.example.com;branch=z9hG4bK88\r\n"
    b"Max-Forwards: 70\r\n"
    b'To: "Bob" <sip:bob@example.com>\r\n'
    b"From: Alice <sip:alice@example.com>;tag=1928301774\r\n"
    b"Call-ID: a84b4c76e66710@pc33.example.com\r\n"
    b"CSeq: 314159 INVITE\r\n"
    b"Contact: <sips:alice@192.0.2.10:5061;transport=tls>;expires=60, *\r\n"
    b'Authorization: Digest username="alice", realm="example.com", nonce="abc", '
    b'uri="sip:bob@example.com", response="0123", qop=auth, nc=00000001, cnonce="x"\r\n'
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: 14\r\n"
    b"\r\n"
    b"v=0\r\no=- 1 1\r\n"
)

REGISTER = (
    b"REGISTER sip:example.com SIP/2.0\r\n"
    b"v: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKnashds7\r\n"
    b"Max-Forwards: 70\r\n"
    b"t: <sip:alice@example.com>\r\n"
    b"f: <sip:alice@example.com>;tag=456248\r\n"
    b"i: 843817637684230@998sdasdh09\r\n"
    b"CSeq: 1826 REGISTER\r\n"
    b"m: <sip:alice@192.0.2.1>\r\n"
    b"Expires: 7200\r\n"
    b"l: 0\r\n"
    b"\r\n"
)

RESPONSE = (
    b"SIP/2.0 200 OK\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKnashds7;received=192.0.2.1\r\n"
    b"To: <sip:alice@example.com>;tag=2493k59kd\r\n"
    b"From: <sip:alice@example.com>;tag=456248\r\n"
    b"Call-ID: 843817637684230@998sdasdh09\r\n"
    b"CSeq: 1826 REGISTER\r\n"
    b"Contact: <sip:alice@192.0.2.1>;expires=7200\r\n"
    b"Content-Length: 0\r\n"
    b"\r\n"
)

#: Torture messages that carry a Content-Length and a terminated header section, so
#: they can be framed on a stream too.
STREAMABLE = [INVITE, REGISTER, RESPONSE]


def _register_with(header: bytes) -> bytes:
    return REGISTER.replace(b"Expires: 7200\r\n", b"Expires: 7200\r\n" + header)


#: The inputs of the external review (issue 13) that made the server leak a transaction
#: or raise something other than SipParseError: Basic auth, a non-ASCII digest response,
#: an empty first Via, an unparsable Contact, control characters in identity headers.
REVIEW_SEEDS = [
    _register_with(b"Authorization: Basic YWxpY2U6c2VjcmV0\r\n"),
    _register_with(
        'Authorization: Digest username="alice", realm="example.com", nonce="n", '
        'uri="sip:example.com", response="\u00e9\u00e9\u00e9\u00e9"\r\n'.encode()
    ),
    REGISTER.replace(b"v: SIP/2.0", b"v: \r\nv: SIP/2.0", 1),
    REGISTER.replace(b"m: <sip:alice@192.0.2.1>", b"m: <sip:", 1),
    INVITE.replace(
        b"Max-Forwards: 70\r\n",
        b"Max-Forwards: 70\r\nP-Asserted-Identity: <sip:\x1b[2K\rx@y\r\n",
        1,
    ),
    INVITE.replace(b"To: ", b'To: "\x1b]0;pwned\x07\r" ', 1),
]

SEEDS = [
    INVITE,
    REGISTER,
    RESPONSE,
    *REVIEW_SEEDS,
    *(p.read_bytes() for p in sorted(RFC4475.glob("*.dat"))),
]

FUZZ = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _touch(message: Message) -> None:
    """Force every lazily parsed header body; only SipParseError may come out."""
    for access in (
        lambda: message.vias,
        lambda: message.cseq,
        lambda: message.from_,
        lambda: message.to,
        lambda: message.contacts,
        lambda: message.wildcard_contact,
        lambda: message.call_id,
        lambda: message.int_header("expires"),
        lambda: message.to_bytes(),
    ):
        with contextlib.suppress(SipParseError):
            access()
    if isinstance(message, Request):
        str(message.uri)
        for access in (
            lambda: top_via_with_received(message, "192.0.2.99", 5060),
            *(lambda v=v: parse_authorization(v) for v in message.headers.lines("authorization")),
            *(
                lambda v=v: parse_name_addr(v)
                for v in message.headers.values("p-asserted-identity")
            ),
        ):
            with contextlib.suppress(SipParseError):
                access()


def _parse_everything(data: bytes) -> None:
    for datagram in (True, False):
        try:
            message = parse_message(data, datagram=datagram)
        except SipParseError:
            continue
        _touch(message)


def _frame(chunks: list[bytes]) -> list[bytes] | None:
    """Framed message bytes, or None when framing failed with SipParseError."""
    framer = StreamFramer()
    out: list[bytes] = []
    try:
        for chunk in chunks:
            out.extend(f.data for f in framer.feed(chunk) if isinstance(f, FramedMessage))
    except SipParseError:
        return None
    return out


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A valid message with a few byte flips, truncations and hostile insertions."""
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(min_value=1, max_value=6))):
        if not data:
            break
        pos = draw(st.integers(min_value=0, max_value=len(data) - 1))
        op = draw(st.sampled_from(["flip", "truncate", "insert", "delete", "set"]))
        if op == "flip":
            data[pos] ^= 1 << draw(st.integers(min_value=0, max_value=7))
        elif op == "truncate":
            del data[pos:]
        elif op == "insert":
            data[pos:pos] = draw(
                st.sampled_from([b"\r", b"\n", b"\r\n", b"\x00", b'"', b":", b"\r\n\r\n", b" "])
            )
        elif op == "delete":
            del data[pos]
        else:
            data[pos] = draw(st.integers(min_value=0, max_value=255))
    return bytes(data)


@FUZZ
@given(st.binary(max_size=2048))
def test_fuzz_parse_message_random_bytes_raise_only_sip_parse_error(data: bytes) -> None:
    _parse_everything(data)


@FUZZ
@given(mutated())
def test_fuzz_parse_message_mutated_messages_raise_only_sip_parse_error(data: bytes) -> None:
    _parse_everything(data)


@FUZZ
@given(st.binary(max_size=1024))
def test_fuzz_framer_random_bytes_whole_and_bytewise_raise_only_sip_parse_error(
    data: bytes,
) -> None:
    _frame([data])
    _frame([data[i : i + 1] for i in range(len(data))])


@FUZZ
@given(mutated())
def test_fuzz_framer_mutated_messages_agree_whole_and_bytewise(data: bytes) -> None:
    whole = _frame([data])
    bytewise = _frame([data[i : i + 1] for i in range(len(data))])
    # Framing does not depend on how the bytes were chunked.
    assert whole == bytewise
    for message in whole or []:
        _parse_everything(message)


@FUZZ
@given(st.lists(st.sampled_from(STREAMABLE), min_size=1, max_size=4), st.data())
def test_fuzz_framer_valid_messages_in_any_chunking_come_out_identical(
    messages: list[bytes], data: st.DataObject
) -> None:
    stream = b"\r\n".join(messages)  # a CRLF between messages is allowed and skipped
    cuts = sorted(
        data.draw(st.sets(st.integers(min_value=1, max_value=len(stream) - 1), max_size=20))
    )
    chunks = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
    assert _frame(chunks) == messages
    for message in messages:
        assert parse_message(message, datagram=False).to_bytes() == message


def test_fuzz_framer_every_valid_message_fed_one_byte_at_a_time_is_identical() -> None:
    for message in STREAMABLE:
        assert _frame([message[i : i + 1] for i in range(len(message))]) == [message]

"""The STUN codec: RFC 5769 / RFC 8489 B.1 vectors, round trips, every limit, fuzzing.

Untrusted bytes either parse or raise StunParseError, nothing else (STYLE.md §6).
"""

from __future__ import annotations

import contextlib
import hashlib
import struct
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from voipsec.nat import stun
from voipsec.nat.stun import (
    MAGIC_COOKIE,
    MAX_ATTRIBUTES,
    MAX_MESSAGE_SIZE,
    MAX_TEXT_BYTES,
    MAX_TEXT_CHARS,
    MAX_USERNAME_BYTES,
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

VECTORS = Path(__file__).parent.parent / "data" / "rfc5769"
SHORT_TERM_PASSWORD = b"VOkJxbRl1RmTxUk/WvJxBt"
LONG_TERM_KEY = hashlib.md5(
    "マトリックス:example.org:TheMatrIX".encode(), usedforsecurity=False
).digest()
TID = bytes(range(12))


def vector(name: str) -> bytes:
    return (VECTORS / f"{name}.bin").read_bytes()


def zero_padding(data: bytes) -> bytes:
    """``data`` with every attribute's padding bytes set to zero."""
    out = bytearray(data)
    pos = stun.HEADER_SIZE
    while pos < len(out):
        _, length = struct.unpack_from("!HH", out, pos)
        end = pos + 4 + length
        pad = -length % 4
        out[end : end + pad] = bytes(pad)
        pos = end + pad
    return bytes(out)


def request(*attributes: tuple[int, bytes], method: int = Method.BINDING) -> Message:
    return Message(
        method=method, cls=MessageClass.REQUEST, transaction_id=TID, attributes=attributes
    )


def raw_message(body: bytes, *, kind: int = 0x0001, length: int | None = None) -> bytes:
    size = len(body) if length is None else length
    return struct.pack("!HHI12s", kind, size, MAGIC_COOKIE, TID) + body


def tlv(attr: int, value: bytes) -> bytes:
    return struct.pack("!HH", attr, len(value)) + value + bytes(-len(value) % 4)


def error_of(data: bytes) -> StunParseError:
    with pytest.raises(StunParseError) as info:
        parse_message(data)
    return info.value


# -- RFC 5769 and RFC 8489 B.1 ------------------------------------------------------------


def test_stun_rfc5769_sample_request_parses_and_verifies() -> None:
    message = parse_message(vector("sample_request"))
    assert (message.method, message.cls) == (Method.BINDING, MessageClass.REQUEST)
    assert message.transaction_id == bytes.fromhex("b7e7a701bc34d686fa87dfae")
    assert message.text(Attr.SOFTWARE) == "STUN test client"
    assert message.text(Attr.USERNAME) == "evtj:h6vY"
    assert message.uint32(Attr.PRIORITY) == 0x6E0001FF
    assert message.get(Attr.ICE_CONTROLLED) == bytes.fromhex("932ff9b151263b36")
    assert message.integrity() is Integrity.SHA1
    assert verify_integrity(message, SHORT_TERM_PASSWORD)
    assert not verify_integrity(message, b"VOkJxbRl1RmTxUk/WvJxBT")
    assert [kind for kind, _ in message.attributes][-1] == Attr.FINGERPRINT


def test_stun_rfc5769_ipv4_response_has_the_mapped_address() -> None:
    message = parse_message(vector("ipv4_response"))
    assert message.cls == MessageClass.SUCCESS
    assert message.xor_address() == ("192.0.2.1", 32853)
    assert message.text(Attr.SOFTWARE) == "test vector"
    assert verify_integrity(message, SHORT_TERM_PASSWORD)


def test_stun_rfc5769_ipv6_response_has_the_mapped_address() -> None:
    message = parse_message(vector("ipv6_response"))
    assert message.xor_address() == ("2001:db8:1234:5678:11:2233:4455:6677", 32853)
    assert verify_integrity(message, SHORT_TERM_PASSWORD)


def test_stun_rfc5769_long_term_request_verifies_with_the_md5_key() -> None:
    message = parse_message(vector("long_term_request"))
    assert message.text(Attr.USERNAME) == "マトリックス"
    assert message.text(Attr.REALM) == "example.org"
    assert message.text(Attr.NONCE) == "f//499k954d6OL34oL9FSTvy64sA"
    assert verify_integrity(message, LONG_TERM_KEY)
    assert not verify_integrity(message, LONG_TERM_KEY[::-1])


def test_stun_rfc8489_b1_sha256_integrity_verifies() -> None:
    message = parse_message(vector("rfc8489_b1_request"))
    assert message.integrity() is Integrity.SHA256
    assert (
        message.get(Attr.USERHASH) == hashlib.sha256("マトリックス:example.org".encode()).digest()
    )
    assert verify_integrity(message, LONG_TERM_KEY)
    assert not verify_integrity(message, SHORT_TERM_PASSWORD)


@pytest.mark.parametrize(
    "name", ["sample_request", "ipv4_response", "ipv6_response", "long_term_request"]
)
def test_stun_vectors_reencode_identically_up_to_padding(name: str) -> None:
    data = vector(name)
    assert encode(parse_message(data)) == zero_padding(data)


def test_stun_long_term_vector_integrity_is_reproduced_by_encode() -> None:
    parsed = parse_message(vector("long_term_request"))
    unsigned = Message(
        method=parsed.method,
        cls=parsed.cls,
        transaction_id=parsed.transaction_id,
        attributes=parsed.attributes[:-1],
    )
    assert encode(unsigned, key=LONG_TERM_KEY) == vector("long_term_request")


# -- round trips -----------------------------------------------------------------------------


def test_stun_every_attribute_round_trips_with_integrity_and_fingerprint() -> None:
    message = Message(
        method=Method.ALLOCATE,
        cls=MessageClass.SUCCESS,
        transaction_id=TID,
        attributes=(
            (Attr.XOR_RELAYED_ADDRESS, stun.encode_xor_address(("192.0.2.7", 50000), TID)),
            (Attr.XOR_MAPPED_ADDRESS, stun.encode_xor_address(("2001:db8::1", 1), TID)),
            (Attr.MAPPED_ADDRESS, stun.encode_address(("198.51.100.2", 65535))),
            (Attr.XOR_PEER_ADDRESS, stun.encode_xor_address(("203.0.113.9", 9), TID)),
            (Attr.LIFETIME, stun.encode_uint32(600)),
            (Attr.CHANNEL_NUMBER, stun.encode_channel_number(0x4001)),
            (Attr.REQUESTED_TRANSPORT, stun.encode_requested_transport()),
            (Attr.REQUESTED_ADDRESS_FAMILY, stun.encode_requested_family(stun.FAMILY_IPV4)),
            (Attr.DATA, b"\x00\x01\x02"),
            (Attr.USERNAME, b"alice"),
            (Attr.REALM, b"example.test"),
            (Attr.NONCE, b"n0nce"),
            (Attr.ERROR_CODE, stun.encode_error_code(438)),
            (Attr.UNKNOWN_ATTRIBUTES, stun.encode_unknown_attributes([0x0031, 0x0032])),
        ),
    )
    for integrity in Integrity:
        data = encode(message, key=b"k", integrity=integrity, fingerprint=True)
        parsed = parse_message(data)
        assert encode(parsed) == data
        assert parsed.integrity() is integrity
        assert verify_integrity(parsed, b"k")
        assert not verify_integrity(parsed, b"K")
        assert parsed.xor_address(Attr.XOR_RELAYED_ADDRESS) == ("192.0.2.7", 50000)
        assert parsed.xor_address() == ("2001:db8::1", 1)
        assert parsed.address() == ("198.51.100.2", 65535)
        assert parsed.xor_addresses() == [("203.0.113.9", 9)]
        assert parsed.uint32(Attr.LIFETIME) == 600
        assert parsed.channel_number() == 0x4001
        assert parsed.requested_transport() == stun.TRANSPORT_UDP
        assert parsed.requested_family() == stun.FAMILY_IPV4
        assert parsed.get(Attr.DATA) == b"\x00\x01\x02"
        assert parsed.text(Attr.USERNAME) == "alice"
        assert parsed.error_code() == (438, "Stale Nonce")
        assert parsed.unknown_attributes() == (0x0031, 0x0032)


def test_stun_message_type_bits_match_rfc8489_and_rfc8656() -> None:
    assert stun.message_type(Method.BINDING, MessageClass.REQUEST) == 0x0001
    assert stun.message_type(Method.BINDING, MessageClass.SUCCESS) == 0x0101
    assert stun.message_type(Method.BINDING, MessageClass.ERROR) == 0x0111
    assert stun.message_type(Method.ALLOCATE, MessageClass.REQUEST) == 0x0003
    assert stun.message_type(Method.SEND, MessageClass.INDICATION) == 0x0016
    assert stun.message_type(Method.DATA, MessageClass.INDICATION) == 0x0017
    for method in range(0x1000):
        for cls in MessageClass:
            assert stun.split_type(stun.message_type(method, cls)) == (method, cls)


def test_stun_sha256_integrity_may_be_truncated_to_16_bytes() -> None:
    full = encode(request(), key=b"k", integrity=Integrity.SHA256)
    # Rebuild with a 16-byte MAC computed over the shorter adjusted length.
    prefix = bytearray(full[:20])
    struct.pack_into("!H", prefix, 2, 20)
    import hmac

    mac = hmac.new(b"k", bytes(prefix), "sha256").digest()[:16]
    data = bytes(prefix) + struct.pack("!HH", Attr.MESSAGE_INTEGRITY_SHA256, 16) + mac
    parsed = parse_message(data)
    assert verify_integrity(parsed, b"k")
    assert not verify_integrity(parsed, b"j")


def test_stun_message_without_integrity_never_verifies() -> None:
    assert not verify_integrity(parse_message(encode(request())), b"")


def test_stun_classic_rfc3489_binding_request_keeps_its_128_bit_transaction_id() -> None:
    data = struct.pack("!HH16s", 0x0001, 8, bytes(range(16, 32))) + tlv(
        Attr.CHANGE_REQUEST, b"\x00\x00\x00\x06"
    )
    message = parse_message(data)
    assert message.classic
    assert message.cookie == int.from_bytes(bytes(range(16, 20)), "big")
    assert message.transaction_id == bytes(range(20, 32))
    assert message.change_request() == 6
    response = Message(
        method=Method.BINDING,
        cls=MessageClass.SUCCESS,
        transaction_id=message.transaction_id,
        cookie=message.cookie,
    )
    assert encode(response)[4:20] == bytes(range(16, 32))


def test_stun_classic_message_other_than_binding_is_refused_without_header() -> None:
    data = struct.pack("!HH16s", 0x0003, 0, bytes(16))
    error = error_of(data)
    assert (error.code, error.reason, error.header) == (400, "no magic cookie", None)


def test_stun_attributes_after_message_integrity_are_ignored() -> None:
    signed = encode(request((Attr.USERNAME, b"u")), key=b"k")
    body = signed[20:] + tlv(Attr.REALM, b"late")
    data = raw_message(body)
    parsed = parse_message(data)
    assert parsed.get(Attr.REALM) is None
    assert parsed.text(Attr.USERNAME) == "u"


def test_stun_unknown_required_lists_comprehension_required_types_once() -> None:
    message = request((0x0031, b""), (0x8031, b""), (0x0031, b""), (Attr.USERNAME, b"u"))
    assert message.unknown_required({Attr.USERNAME}) == (0x0031,)


def test_stun_get_returns_the_first_of_duplicate_attributes() -> None:
    message = request((Attr.LIFETIME, b"\x00\x00\x00\x01"), (Attr.LIFETIME, b"\x00\x00\x00\x02"))
    assert message.uint32(Attr.LIFETIME) == 1
    assert len(message.get_all(Attr.LIFETIME)) == 2
    assert message.text(Attr.REALM) is None


# -- malformed input: StunParseError with the code to answer ------------------------------


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\x00\x01\x00", "shorter than a STUN header"),
        (b"\x80" + raw_message(b"")[1:], "not a STUN message (first two bits)"),
        (raw_message(b"\x00\x00", length=2), "length not a multiple of 4"),
        (raw_message(b"", length=4), "length does not match the message size"),
        (raw_message(b"\x00\x06\x00\x08abcd"), "USERNAME overruns the message"),
        (raw_message(tlv(0x8028, b"\x00\x00\x00\x00") + tlv(6, b"u")), "FINGERPRINT is not last"),
        (raw_message(tlv(0x8028, b"\x00\x00\x00\x00")), "FINGERPRINT mismatch"),
        (raw_message(tlv(8, bytes(16))), "MESSAGE-INTEGRITY must be 20 bytes"),
        (raw_message(tlv(0x1C, bytes(12))), "MESSAGE-INTEGRITY-SHA256 must be 16-32 bytes"),
        (raw_message(tlv(0x1C, bytes(36))), "MESSAGE-INTEGRITY-SHA256 must be 16-32 bytes"),
        (raw_message(tlv(6, b"u") + b"\x00\x14\x00\x08abcd"), "REALM overruns the message"),
    ],
)
def test_stun_parse_malformed_message_raises_400(data: bytes, reason: str) -> None:
    error = error_of(data)
    assert (error.code, error.reason) == (400, reason)


def test_stun_parse_error_carries_the_header_to_answer() -> None:
    error = error_of(raw_message(b"", length=4))
    assert error.header is not None
    assert error.header.transaction_id == TID
    assert (error.header.method, error.header.cls) == (Method.BINDING, MessageClass.REQUEST)


@pytest.mark.parametrize(
    ("attributes", "access", "reason"),
    [
        (
            ((Attr.LIFETIME, b"\x00"),),
            lambda m: m.uint32(Attr.LIFETIME),
            "LIFETIME must be 4 bytes",
        ),
        (((Attr.USERNAME, b"\xff"),), lambda m: m.text(Attr.USERNAME), "USERNAME is not UTF-8"),
        (
            ((Attr.MAPPED_ADDRESS, b"\x00\x03\x00\x01abcd"),),
            lambda m: m.address(),
            "bad address family or length",
        ),
        (
            ((Attr.MAPPED_ADDRESS, b"\x00\x01"),),
            lambda m: m.address(),
            "address attribute too short",
        ),
        (
            ((Attr.XOR_PEER_ADDRESS, b"\x00\x01\x00\x01abcdef"),),
            lambda m: m.xor_address(Attr.XOR_PEER_ADDRESS),
            "bad address family or length",
        ),
        (
            ((Attr.XOR_PEER_ADDRESS, b"\x00\x02\x00\x01abcd"),),
            lambda m: m.xor_addresses(),
            "bad address family or length",
        ),
        (((Attr.ERROR_CODE, b"\x00"),), lambda m: m.error_code(), "ERROR-CODE too short"),
        (
            ((Attr.ERROR_CODE, b"\x00\x00\x07\x00"),),
            lambda m: m.error_code(),
            "ERROR-CODE out of range",
        ),
        (
            ((Attr.UNKNOWN_ATTRIBUTES, b"\x00"),),
            lambda m: m.unknown_attributes(),
            "UNKNOWN-ATTRIBUTES has an odd length",
        ),
        (
            ((Attr.CHANNEL_NUMBER, b"\x40"),),
            lambda m: m.channel_number(),
            "CHANNEL-NUMBER must be 4 bytes",
        ),
        (
            ((Attr.REQUESTED_TRANSPORT, b""),),
            lambda m: m.requested_transport(),
            "REQUESTED-TRANSPORT must be 4 bytes",
        ),
        (
            ((Attr.REQUESTED_ADDRESS_FAMILY, b""),),
            lambda m: m.requested_family(),
            "REQUESTED-ADDRESS-FAMILY must be 4 bytes",
        ),
    ],
)
def test_stun_typed_access_to_malformed_value_raises_400(
    attributes: tuple[tuple[int, bytes], ...], access: object, reason: str
) -> None:
    message = parse_message(encode(request(*attributes)))
    with pytest.raises(StunParseError) as info:
        access(message)  # type: ignore[operator]
    assert (info.value.code, info.value.reason) == (400, reason)
    assert info.value.header == message.header


# -- every limit exceeded -------------------------------------------------------------------


def test_stun_limit_max_message_size() -> None:
    # The largest message under the limit: 20 + 65512 bytes (lengths are multiples of 4).
    largest = raw_message(tlv(Attr.DATA, bytes(MAX_MESSAGE_SIZE - 20 - 4 - 3)))
    assert len(largest) == MAX_MESSAGE_SIZE - 3
    assert parse_message(largest).get(Attr.DATA) == bytes(MAX_MESSAGE_SIZE - 27)
    too_large = raw_message(tlv(Attr.DATA, bytes(MAX_MESSAGE_SIZE - 20 - 4 + 1)))
    assert len(too_large) == MAX_MESSAGE_SIZE + 1
    assert error_of(too_large).reason == f"larger than {MAX_MESSAGE_SIZE} bytes"
    with pytest.raises(ValueError, match="exceeds"):
        encode(request((Attr.DATA, bytes(MAX_MESSAGE_SIZE))))


def test_stun_limit_max_attributes() -> None:
    parse_message(raw_message(tlv(Attr.PRIORITY, bytes(4)) * MAX_ATTRIBUTES))
    error = error_of(raw_message(tlv(Attr.PRIORITY, bytes(4)) * (MAX_ATTRIBUTES + 1)))
    assert (error.code, error.reason) == (400, f"more than {MAX_ATTRIBUTES} attributes")


def test_stun_limit_max_username_bytes() -> None:
    ok = parse_message(encode(request((Attr.USERNAME, b"u" * MAX_USERNAME_BYTES))))
    assert ok.text(Attr.USERNAME) == "u" * MAX_USERNAME_BYTES
    long = parse_message(encode(request((Attr.USERNAME, b"u" * (MAX_USERNAME_BYTES + 1)))))
    with pytest.raises(StunParseError, match=f"USERNAME longer than {MAX_USERNAME_BYTES} bytes"):
        long.text(Attr.USERNAME)


@pytest.mark.parametrize("attr", [Attr.REALM, Attr.NONCE, Attr.SOFTWARE])
def test_stun_limit_max_text_chars_and_bytes(attr: Attr) -> None:
    name = attr.name.replace("_", "-")
    ok = parse_message(encode(request((attr, "é".encode() * MAX_TEXT_CHARS))))
    assert ok.text(attr) == "é" * MAX_TEXT_CHARS
    chars = parse_message(encode(request((attr, b"n" * (MAX_TEXT_CHARS + 1)))))
    with pytest.raises(StunParseError, match=f"{name} longer than {MAX_TEXT_CHARS} characters"):
        chars.text(attr)
    size = parse_message(encode(request((attr, "€".encode() * 255))))  # 765 bytes
    with pytest.raises(StunParseError, match=f"{name} longer than {MAX_TEXT_BYTES} bytes"):
        size.text(attr)


def test_stun_limit_error_reason_chars() -> None:
    value = stun.encode_error_code(400, "r" * (MAX_TEXT_CHARS + 1))
    message = parse_message(encode(request((Attr.ERROR_CODE, value))))
    with pytest.raises(StunParseError, match="ERROR-CODE longer than"):
        message.error_code()


def test_stun_limit_stream_frame_size() -> None:
    framer = StunStreamFramer()
    framer.feed(struct.pack("!HHI12s", 1, MAX_MESSAGE_SIZE - 20 - 3, MAGIC_COOKIE, TID))
    with pytest.raises(StunFramingError, match=f"frame larger than {MAX_MESSAGE_SIZE} bytes"):
        StunStreamFramer().feed(struct.pack("!HHI12s", 1, 0xFFFC, MAGIC_COOKIE, TID))
    assert framer.buffered == 20


# -- ChannelData and stream framing --------------------------------------------------------


def test_stun_channel_data_round_trip_and_udp_padding() -> None:
    data = stun.encode_channel_data(0x4001, b"abcde", pad=True)
    assert data == b"\x40\x01\x00\x05abcde\x00\x00\x00"
    assert parse_channel_data(data) == stun.ChannelData(channel=0x4001, data=b"abcde")
    assert stun.encode_channel_data(0x4FFF, b"ab") == b"\x4f\xff\x00\x02ab"
    assert parse_channel_data(b"\x7f\xfe\x00\x00").channel == 0x7FFE  # RFC 5766 range


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\x40\x00\x00", "shorter than a ChannelData header"),
        (b"\x7f\xff\x00\x00", "channel number out of range"),
        (b"\x3f\xff\x00\x00", "channel number out of range"),
        (b"\x40\x00\x00\x05abcd", "ChannelData truncated"),
    ],
)
def test_stun_channel_data_malformed_raises_400(data: bytes, reason: str) -> None:
    with pytest.raises(StunParseError) as info:
        parse_channel_data(data)
    assert (info.value.code, info.value.reason) == (400, reason)


def test_stun_stream_framer_splits_stun_and_padded_channel_data_bytewise() -> None:
    first = encode(request((Attr.USERNAME, b"abc")))
    second = stun.encode_channel_data(0x4000, b"xyz", pad=True)
    third = encode(request(method=Method.REFRESH))
    stream = first + second + third
    framer = StunStreamFramer()
    frames: list[bytes] = []
    for i in range(len(stream)):
        frames.extend(framer.feed(stream[i : i + 1]))
    assert frames == [first, b"\x40\x00\x00\x03xyz", third]
    assert framer.buffered == 0
    assert StunStreamFramer().feed(stream) == frames


def test_stun_stream_framer_refuses_bytes_that_are_neither_stun_nor_channel_data() -> None:
    with pytest.raises(StunFramingError, match="neither STUN nor ChannelData"):
        StunStreamFramer().feed(b"\x80\x00\x00\x00")


# -- fuzzing ------------------------------------------------------------------------------

FUZZ = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

SEEDS = [
    vector("sample_request"),
    vector("ipv4_response"),
    vector("ipv6_response"),
    vector("long_term_request"),
    vector("rfc8489_b1_request"),
    encode(request((Attr.XOR_PEER_ADDRESS, stun.encode_xor_address(("::1", 3), TID)))),
    stun.encode_channel_data(0x4000, b"payload", pad=True),
]


def _touch(message: Message) -> None:
    """Every typed accessor; only StunParseError may come out."""
    for access in (
        lambda: message.text(Attr.USERNAME),
        lambda: message.text(Attr.REALM),
        lambda: message.text(Attr.NONCE),
        lambda: message.text(Attr.SOFTWARE),
        lambda: message.uint32(Attr.LIFETIME),
        lambda: message.address(),
        lambda: message.xor_address(),
        lambda: message.xor_addresses(),
        lambda: message.xor_address(Attr.XOR_RELAYED_ADDRESS),
        lambda: message.error_code(),
        lambda: message.unknown_attributes(),
        lambda: message.channel_number(),
        lambda: message.requested_transport(),
        lambda: message.requested_family(),
        lambda: message.change_request(),
        lambda: verify_integrity(message, b"key"),
        lambda: message.unknown_required(()),
        lambda: encode(message),
    ):
        with contextlib.suppress(StunParseError):
            access()


def _parse_everything(data: bytes) -> None:
    with contextlib.suppress(StunParseError):
        _touch(parse_message(data))
    with contextlib.suppress(StunParseError):
        parse_channel_data(data)


def _frame(chunks: list[bytes]) -> list[bytes] | None:
    framer = StunStreamFramer()
    out: list[bytes] = []
    try:
        for chunk in chunks:
            out.extend(framer.feed(chunk))
    except StunParseError:
        return None
    return out


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A valid message with a few byte flips, truncations and insertions."""
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
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete":
            del data[pos]
        else:
            data[pos] = draw(st.integers(min_value=0, max_value=255))
    return bytes(data)


@st.composite
def wellformed(draw: st.DrawFn) -> bytes:
    """A syntactically valid message with random attribute types and values."""
    attributes = draw(
        st.lists(
            st.tuples(st.integers(min_value=0, max_value=0xFFFF), st.binary(max_size=40)),
            max_size=12,
        )
    )
    body = b"".join(tlv(attr, value) for attr, value in attributes)
    kind = draw(st.integers(min_value=0, max_value=0x3FFF))
    return raw_message(body, kind=kind)


@FUZZ
@given(st.binary(max_size=2048))
def test_stun_fuzz_random_bytes_raise_only_stun_parse_error(data: bytes) -> None:
    _parse_everything(data)


@FUZZ
@given(mutated())
def test_stun_fuzz_mutated_messages_raise_only_stun_parse_error(data: bytes) -> None:
    _parse_everything(data)


@FUZZ
@given(wellformed())
def test_stun_fuzz_random_attributes_raise_only_stun_parse_error(data: bytes) -> None:
    _parse_everything(data)


@FUZZ
@given(st.one_of(mutated(), st.binary(max_size=1024)))
def test_stun_fuzz_framer_whole_and_bytewise_agree(data: bytes) -> None:
    whole = _frame([data])
    bytewise = _frame([data[i : i + 1] for i in range(len(data))])
    assert whole == bytewise
    for frame in whole or []:
        _parse_everything(frame)

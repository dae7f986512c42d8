"""STUN message codec (RFC 8489), with the TURN attributes of RFC 8656 (sans-IO).

How this works: :func:`parse_message` checks the 20-byte header (RFC 8489 §6: two zero
bits, a length that is a multiple of four and matches the datagram, the magic cookie)
and walks the attributes as type-length-value records padded to four bytes (§14). The
values stay raw bytes, in order, and are decoded on first use by the typed accessors
of :class:`Message` — a Binding request never pays for parsing a NONCE. The raw bytes
and each attribute's offset are kept so that MESSAGE-INTEGRITY and
MESSAGE-INTEGRITY-SHA256 can be checked over exactly what was received (§14.5, §14.6);
a FINGERPRINT is checked while parsing (§14.7).

A header without the magic cookie is a classic RFC 3489 message: only a Binding
request or response is accepted in that form, and the cookie field is kept as the first 32 bits of
its 128-bit transaction ID so the answer echoes it (RFC 8489 §12).

Untrusted bytes either parse or raise :class:`StunParseError`, which carries the error
code to answer (400, 420, ...) and, once the header parsed, the header to answer with.
ChannelData messages (RFC 8656 §12.4) and TCP framing (RFC 8656 §12.5) live here too.
"""

from __future__ import annotations

import hmac
import ipaddress
import struct
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import Enum, IntEnum

# -- limits ------------------------------------------------------------------------

#: Whole message. The length field is 16 bits (RFC 8489 §5), so a message is at most
#: 20 + 65532 bytes; a UDP datagram carries at most 65535 bytes of payload, and TURN
#: Send indications never need more than one UDP payload plus their attributes.
MAX_MESSAGE_SIZE = 65_535

#: Attributes in one message. Real requests carry 3-10 (USERNAME, REALM, NONCE,
#: MESSAGE-INTEGRITY, FINGERPRINT, a few TURN attributes); 64 bounds the per-message
#: work and the size of an UNKNOWN-ATTRIBUTES answer.
MAX_ATTRIBUTES = 64

#: USERNAME: "MUST contain a UTF-8-encoded sequence of fewer than 509 bytes" in
#: RFC 8489 §14.3 — the OpaqueString form may be up to 513 bytes, which we accept.
MAX_USERNAME_BYTES = 513

#: REALM, NONCE, SOFTWARE and the ERROR-CODE reason: "fewer than 128 characters
#: (which can be as long as 763 bytes)" (RFC 8489 §14.8, §14.9, §14.10, §14.14).
MAX_TEXT_CHARS = 127
MAX_TEXT_BYTES = 763

# -- constants of the protocol -----------------------------------------------------

MAGIC_COOKIE = 0x2112A442
HEADER_SIZE = 20
TRANSACTION_ID_SIZE = 12
_COOKIE_BYTES = MAGIC_COOKIE.to_bytes(4, "big")
#: FINGERPRINT is the CRC-32 of the message XOR 0x5354554e (RFC 8489 §14.7).
FINGERPRINT_XOR = 0x5354554E
#: ChannelData numbers. RFC 8656 §12 narrowed them to 0x4000-0x4FFF, but RFC 5766 §11
#: allowed 0x4000-0x7FFE and clients still use that range (coturn's turnutils_uclient
#: binds e.g. 0x6a3c). The first byte of such a frame (0x40-0x7F) still cannot be
#: STUN (0x00-0x03), DTLS (20-63) or RTP/RTCP (128-191) (RFC 7983), so we accept it.
CHANNEL_MIN = 0x4000
CHANNEL_MAX = 0x7FFE
CHANNEL_HEADER_SIZE = 4
#: The ChannelData header itself: channel number, then data length (RFC 8656 §12.4).
CHANNEL_HEADER = struct.Struct("!HH")
#: REQUESTED-TRANSPORT protocol number for UDP (RFC 8656 §18.7, IANA protocol 17).
TRANSPORT_UDP = 17
#: Address families of the address attributes (RFC 8489 §14.1).
FAMILY_IPV4 = 0x01
FAMILY_IPV6 = 0x02


class MessageClass(IntEnum):
    """The two class bits C1 C0 of the message type (RFC 8489 §5)."""

    REQUEST = 0b00
    INDICATION = 0b01
    SUCCESS = 0b10
    ERROR = 0b11


class Method(IntEnum):
    """Methods we implement: Binding (RFC 8489 §18.2) and TURN (RFC 8656 §17)."""

    BINDING = 0x001
    ALLOCATE = 0x003
    REFRESH = 0x004
    SEND = 0x006
    DATA = 0x007
    CREATE_PERMISSION = 0x008
    CHANNEL_BIND = 0x009


class Attr(IntEnum):
    """Attribute types (RFC 8489 §18.3, RFC 8656 §18, RFC 3489 §11.2, RFC 5780 §7)."""

    MAPPED_ADDRESS = 0x0001
    RESPONSE_ADDRESS = 0x0002  # RFC 3489, deprecated
    CHANGE_REQUEST = 0x0003  # RFC 3489 / RFC 5780
    SOURCE_ADDRESS = 0x0004  # RFC 3489, deprecated
    CHANGED_ADDRESS = 0x0005  # RFC 3489, deprecated
    USERNAME = 0x0006
    MESSAGE_INTEGRITY = 0x0008
    ERROR_CODE = 0x0009
    UNKNOWN_ATTRIBUTES = 0x000A
    CHANNEL_NUMBER = 0x000C
    LIFETIME = 0x000D
    XOR_PEER_ADDRESS = 0x0012
    DATA = 0x0013
    REALM = 0x0014
    NONCE = 0x0015
    XOR_RELAYED_ADDRESS = 0x0016
    REQUESTED_ADDRESS_FAMILY = 0x0017
    EVEN_PORT = 0x0018
    REQUESTED_TRANSPORT = 0x0019
    DONT_FRAGMENT = 0x001A
    MESSAGE_INTEGRITY_SHA256 = 0x001C
    PASSWORD_ALGORITHM = 0x001D
    USERHASH = 0x001E
    XOR_MAPPED_ADDRESS = 0x0020
    RESERVATION_TOKEN = 0x0022
    PRIORITY = 0x0024
    USE_CANDIDATE = 0x0025
    PASSWORD_ALGORITHMS = 0x8002
    ALTERNATE_DOMAIN = 0x8003
    SOFTWARE = 0x8022
    ALTERNATE_SERVER = 0x8023
    FINGERPRINT = 0x8028
    ICE_CONTROLLED = 0x8029
    ICE_CONTROLLING = 0x802A
    RESPONSE_ORIGIN = 0x802B
    OTHER_ADDRESS = 0x802C


#: Types 0x0000-0x7FFF are comprehension-required (RFC 8489 §14): a request carrying
#: one the server does not know gets 420 with UNKNOWN-ATTRIBUTES.
COMPREHENSION_OPTIONAL = 0x8000

REASONS: dict[int, str] = {
    300: "Try Alternate",
    400: "Bad Request",
    401: "Unauthenticated",
    403: "Forbidden",
    420: "Unknown Attribute",
    437: "Allocation Mismatch",
    438: "Stale Nonce",
    440: "Address Family not Supported",
    441: "Wrong Credentials",
    442: "Unsupported Transport Protocol",
    443: "Peer Address Family Mismatch",
    486: "Allocation Quota Reached",
    500: "Server Error",
    508: "Insufficient Capacity",
}


class Integrity(Enum):
    """Which MESSAGE-INTEGRITY attribute protects a message."""

    SHA1 = Attr.MESSAGE_INTEGRITY
    SHA256 = Attr.MESSAGE_INTEGRITY_SHA256


_MAC_SIZE = {Integrity.SHA1: 20, Integrity.SHA256: 32}
_MAC_DIGEST = {Integrity.SHA1: "sha1", Integrity.SHA256: "sha256"}
#: MESSAGE-INTEGRITY-SHA256 may be truncated to 16 bytes, in steps of four (§14.6).
_MIN_SHA256_MAC = 16


@dataclass(frozen=True, slots=True, kw_only=True)
class StunHeader:
    """Enough of a message to answer it: method, class, cookie and transaction ID."""

    method: int
    cls: int
    transaction_id: bytes
    cookie: int = MAGIC_COOKIE

    @property
    def classic(self) -> bool:
        """An RFC 3489 message (no magic cookie)."""
        return self.cookie != MAGIC_COOKIE


class StunParseError(Exception):
    """Untrusted bytes did not form an acceptable STUN or ChannelData message.

    ``code`` is the STUN error code to answer a request with (RFC 8489 §14.8);
    ``header`` is set once the 20-byte header parsed, so a server can answer;
    ``unknown`` lists the comprehension-required attributes behind a 420. ``reason``
    is peer-safe: it names the offending element, never a secret.
    """

    def __init__(
        self,
        code: int,
        reason: str,
        *,
        header: StunHeader | None = None,
        unknown: tuple[int, ...] = (),
    ) -> None:
        super().__init__(f"{code} {reason}")
        self.code = code
        self.reason = reason
        self.header = header
        self.unknown = unknown


# -- the message ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Message:
    """One STUN message: attributes in order, values as raw bytes.

    ``raw`` and ``offsets`` (where each attribute starts in ``raw``) are set by
    :func:`parse_message` and used to check message integrity over the received bytes;
    they do not take part in equality.
    """

    method: int
    cls: int
    transaction_id: bytes
    attributes: tuple[tuple[int, bytes], ...] = ()
    cookie: int = MAGIC_COOKIE
    raw: bytes = field(default=b"", compare=False, repr=False)
    offsets: tuple[int, ...] = field(default=(), compare=False, repr=False)

    @property
    def classic(self) -> bool:
        """An RFC 3489 message (no magic cookie)."""
        return self.cookie != MAGIC_COOKIE

    @property
    def header(self) -> StunHeader:
        return StunHeader(
            method=self.method,
            cls=self.cls,
            transaction_id=self.transaction_id,
            cookie=self.cookie,
        )

    # -- raw access ------------------------------------------------------------------

    def get(self, attr: int) -> bytes | None:
        """The value of the first ``attr`` (RFC 8489 §14: later duplicates are ignored)."""
        for kind, value in self.attributes:
            if kind == attr:
                return value
        return None

    def get_all(self, attr: int) -> list[bytes]:
        """Every value of ``attr`` in order (CreatePermission may carry several peers)."""
        return [value for kind, value in self.attributes if kind == attr]

    def has(self, attr: int) -> bool:
        return any(kind == attr for kind, _ in self.attributes)

    def _error(self, reason: str) -> StunParseError:
        return StunParseError(400, reason, header=self.header)

    def _require(self, attr: int) -> bytes:
        value = self.get(attr)
        if value is None:
            raise self._error(f"missing {_name(attr)}")
        return value

    # -- typed access: each raises StunParseError(400) on a malformed value ---------------

    def text(self, attr: int) -> str | None:
        """A UTF-8 attribute (USERNAME, REALM, NONCE, SOFTWARE) within its limit."""
        value = self.get(attr)
        if value is None:
            return None
        return _decode_text(value, attr, self.header)

    def uint32(self, attr: int) -> int | None:
        """A 32-bit unsigned value (LIFETIME, PRIORITY)."""
        value = self.get(attr)
        if value is None:
            return None
        if len(value) != 4:
            raise self._error(f"{_name(attr)} must be 4 bytes")
        return int.from_bytes(value, "big")

    def address(self, attr: int = Attr.MAPPED_ADDRESS) -> tuple[str, int] | None:
        """A plain address attribute (MAPPED-ADDRESS, RFC 8489 §14.1)."""
        value = self.get(attr)
        if value is None:
            return None
        return decode_address(value, header=self.header)

    def xor_address(self, attr: int = Attr.XOR_MAPPED_ADDRESS) -> tuple[str, int] | None:
        """An XOR address attribute (XOR-MAPPED/-PEER/-RELAYED-ADDRESS, RFC 8489 §14.2)."""
        value = self.get(attr)
        if value is None:
            return None
        return decode_xor_address(value, self.transaction_id, header=self.header)

    def xor_addresses(self, attr: int = Attr.XOR_PEER_ADDRESS) -> list[tuple[str, int]]:
        return [
            decode_xor_address(v, self.transaction_id, header=self.header)
            for v in self.get_all(attr)
        ]

    def error_code(self) -> tuple[int, str] | None:
        """ERROR-CODE as (code, reason) (RFC 8489 §14.8)."""
        value = self.get(Attr.ERROR_CODE)
        if value is None:
            return None
        if len(value) < 4:
            raise self._error("ERROR-CODE too short")
        code_class, number = value[2] & 0x07, value[3]
        if not 3 <= code_class <= 6 or number > 99:
            raise self._error("ERROR-CODE out of range")
        reason = _decode_text(value[4:], Attr.ERROR_CODE, self.header)
        return code_class * 100 + number, reason

    def unknown_attributes(self) -> tuple[int, ...] | None:
        value = self.get(Attr.UNKNOWN_ATTRIBUTES)
        if value is None:
            return None
        if len(value) % 2:
            raise self._error("UNKNOWN-ATTRIBUTES has an odd length")
        return tuple(struct.unpack(f"!{len(value) // 2}H", value))

    def channel_number(self) -> int | None:
        """CHANNEL-NUMBER (RFC 8656 §18.1): 16 bits of number, 16 bits RFFU."""
        value = self.get(Attr.CHANNEL_NUMBER)
        if value is None:
            return None
        if len(value) != 4:
            raise self._error("CHANNEL-NUMBER must be 4 bytes")
        return int.from_bytes(value[:2], "big")

    def requested_transport(self) -> int | None:
        """REQUESTED-TRANSPORT protocol number (RFC 8656 §18.7)."""
        value = self.get(Attr.REQUESTED_TRANSPORT)
        if value is None:
            return None
        if len(value) != 4:
            raise self._error("REQUESTED-TRANSPORT must be 4 bytes")
        return value[0]

    def requested_family(self) -> int | None:
        """REQUESTED-ADDRESS-FAMILY (RFC 8656 §18.8): 0x01 IPv4, 0x02 IPv6."""
        value = self.get(Attr.REQUESTED_ADDRESS_FAMILY)
        if value is None:
            return None
        if len(value) != 4:
            raise self._error("REQUESTED-ADDRESS-FAMILY must be 4 bytes")
        return value[0]

    def change_request(self) -> int | None:
        """CHANGE-REQUEST flags (RFC 5780 §7.2): 0x4 change IP, 0x2 change port."""
        value = self.uint32(Attr.CHANGE_REQUEST)
        return None if value is None else value & 0x6

    def integrity(self) -> Integrity | None:
        """The strongest integrity attribute present (RFC 8489 §9.2.4 prefers SHA-256)."""
        kinds = {kind for kind, _ in self.attributes}
        if Attr.MESSAGE_INTEGRITY_SHA256 in kinds:
            return Integrity.SHA256
        if Attr.MESSAGE_INTEGRITY in kinds:
            return Integrity.SHA1
        return None

    def unknown_required(self, known: Iterable[int]) -> tuple[int, ...]:
        """Comprehension-required attribute types not in ``known`` (RFC 8489 §6.3.1)."""
        allowed = set(known)
        out: list[int] = []
        for kind, _ in self.attributes:
            if kind < COMPREHENSION_OPTIONAL and kind not in allowed and kind not in out:
                out.append(kind)
        return tuple(out)


def _name(attr: int) -> str:
    try:
        return Attr(attr).name.replace("_", "-")
    except ValueError:
        return f"attribute 0x{attr:04x}"


def _decode_text(value: bytes, attr: int, header: StunHeader) -> str:
    limit = MAX_USERNAME_BYTES if attr == Attr.USERNAME else MAX_TEXT_BYTES
    if len(value) > limit:
        raise StunParseError(400, f"{_name(attr)} longer than {limit} bytes", header=header)
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        raise StunParseError(400, f"{_name(attr)} is not UTF-8", header=header) from None
    if attr != Attr.USERNAME and len(text) > MAX_TEXT_CHARS:
        raise StunParseError(
            400, f"{_name(attr)} longer than {MAX_TEXT_CHARS} characters", header=header
        )
    return text


# -- parsing -------------------------------------------------------------------------

_HEADER = struct.Struct("!HHI12s")
_TLV = struct.Struct("!HH")


def message_type(method: int, cls: int) -> int:
    """The 14-bit type: method bits M11..M0 interleaved with class bits C1 C0 (§5)."""
    return (
        (method & 0x000F)
        | ((method & 0x0070) << 1)
        | ((method & 0x0F80) << 2)
        | ((cls & 0b01) << 4)
        | ((cls & 0b10) << 7)
    )


def split_type(kind: int) -> tuple[int, int]:
    """(method, class) of a message type."""
    method = (kind & 0x000F) | ((kind & 0x00E0) >> 1) | ((kind & 0x3E00) >> 2)
    cls = ((kind >> 4) & 0b01) | ((kind >> 7) & 0b10)
    return method, cls


def is_stun(data: bytes) -> bool:
    """First two bits zero: a STUN message rather than ChannelData (RFC 8656 §12)."""
    return len(data) > 0 and data[0] < 0x40


def is_channel_data(data: bytes) -> bool:
    """First two bits 0b01: ChannelData (RFC 8656 §12, RFC 7983 demultiplexing)."""
    return len(data) > 0 and 0x40 <= data[0] < 0x80


def parse_message(data: bytes) -> Message:
    """Parse one STUN message (one UDP datagram or one framed TCP message)."""
    size = len(data)
    if size < HEADER_SIZE:
        raise StunParseError(400, "shorter than a STUN header")
    if size > MAX_MESSAGE_SIZE:
        raise StunParseError(400, f"larger than {MAX_MESSAGE_SIZE} bytes")
    kind, length, cookie, tid = _HEADER.unpack_from(data)
    if kind & 0xC000:
        raise StunParseError(400, "not a STUN message (first two bits)")
    method, cls = split_type(kind)
    header = StunHeader(method=method, cls=cls, transaction_id=tid, cookie=cookie)
    if cookie != MAGIC_COOKIE and (method != Method.BINDING or cls == MessageClass.INDICATION):
        # RFC 8489 §12: only classic Binding requests (and their answers) exist.
        raise StunParseError(400, "no magic cookie")
    if length % 4:
        raise StunParseError(400, "length not a multiple of 4", header=header)
    if HEADER_SIZE + length != size:
        raise StunParseError(400, "length does not match the message size", header=header)
    attributes: list[tuple[int, bytes]] = []
    offsets: list[int] = []
    pos = HEADER_SIZE
    count = 0
    seen_integrity = seen_sha256 = False
    while pos < size:
        # pos and size are multiples of 4, so a whole attribute header is there.
        attr, alen = _TLV.unpack_from(data, pos)
        end = pos + 4 + alen
        if end > size:
            raise StunParseError(400, f"{_name(attr)} overruns the message", header=header)
        count += 1
        if count > MAX_ATTRIBUTES:
            raise StunParseError(400, f"more than {MAX_ATTRIBUTES} attributes", header=header)
        value = data[pos + 4 : end]
        if attr == Attr.FINGERPRINT:
            padded_end = end + (-alen % 4)
            if padded_end != size:
                raise StunParseError(400, "FINGERPRINT is not last", header=header)
            if alen != 4 or int.from_bytes(value, "big") != _crc(data, pos):
                raise StunParseError(400, "FINGERPRINT mismatch", header=header)
            attributes.append((attr, value))
            offsets.append(pos)
        elif seen_sha256 or (seen_integrity and attr != Attr.MESSAGE_INTEGRITY_SHA256):
            # RFC 8489 §14.5/§14.6: attributes after the integrity attributes, except
            # FINGERPRINT (and MESSAGE-INTEGRITY-SHA256 after MESSAGE-INTEGRITY), are
            # ignored.
            pass
        else:
            if attr == Attr.MESSAGE_INTEGRITY:
                if alen != _MAC_SIZE[Integrity.SHA1]:
                    raise StunParseError(400, "MESSAGE-INTEGRITY must be 20 bytes", header=header)
                seen_integrity = True
            elif attr == Attr.MESSAGE_INTEGRITY_SHA256:
                if alen % 4 or not _MIN_SHA256_MAC <= alen <= _MAC_SIZE[Integrity.SHA256]:
                    raise StunParseError(
                        400, "MESSAGE-INTEGRITY-SHA256 must be 16-32 bytes", header=header
                    )
                seen_sha256 = True
            attributes.append((attr, value))
            offsets.append(pos)
        pos = end + (-alen % 4)  # end <= size and size % 4 == 0: the padding fits
    return Message(
        method=method,
        cls=cls,
        transaction_id=tid,
        attributes=tuple(attributes),
        cookie=cookie,
        raw=bytes(data),
        offsets=tuple(offsets),
    )


def _crc(data: bytes, fingerprint_at: int) -> int:
    check = data[:2] + struct.pack("!H", fingerprint_at + 8 - HEADER_SIZE) + data[4:fingerprint_at]
    return zlib.crc32(check) ^ FINGERPRINT_XOR


def _mac(data: bytes, at: int, key: bytes, kind: Integrity) -> bytes:
    """HMAC over the message up to the integrity attribute at ``at`` (§14.5, §14.6)."""
    check = data[:2] + struct.pack("!H", at + 4 + _MAC_SIZE[kind] - HEADER_SIZE) + data[4:at]
    return hmac.new(key, check, _MAC_DIGEST[kind]).digest()


def verify_integrity(message: Message, key: bytes) -> bool:
    """Check the strongest integrity attribute of a parsed message with ``key``.

    Constant-time comparison (STYLE.md §8). A message without integrity is not valid.
    """
    kind = message.integrity()
    if kind is None or not message.raw:
        return False
    for (attr, value), at in zip(message.attributes, message.offsets, strict=True):
        if attr == kind.value:
            # A truncated SHA-256 MAC is still computed with the full-length adjusted
            # length of the attribute as it appears (RFC 8489 §14.6).
            check = (
                message.raw[:2]
                + struct.pack("!H", at + 4 + len(value) - HEADER_SIZE)
                + message.raw[4:at]
            )
            mac = hmac.new(key, check, _MAC_DIGEST[kind]).digest()[: len(value)]
            return hmac.compare_digest(mac, value)
    return False  # pragma: no cover - integrity() found the attribute


# -- building -----------------------------------------------------------------------


def encode(
    message: Message,
    *,
    key: bytes | None = None,
    integrity: Integrity = Integrity.SHA1,
    fingerprint: bool = False,
) -> bytes:
    """Serialize ``message``; with ``key``, append the integrity attribute, and with
    ``fingerprint`` a FINGERPRINT (RFC 8489 §14.5-§14.7: in that order, last)."""
    out = bytearray(_HEADER.pack(0, 0, message.cookie, message.transaction_id))
    out[0:2] = message_type(message.method, message.cls).to_bytes(2, "big")
    for attr, value in message.attributes:
        out += _TLV.pack(attr, len(value))
        out += value
        pad = -len(value) % 4
        if pad:
            out += bytes(pad)
    if key is not None:
        at = len(out)
        mac = _mac(bytes(out), at, key, integrity)
        out += _TLV.pack(integrity.value, len(mac))
        out += mac
    if fingerprint:
        at = len(out)
        out += _TLV.pack(Attr.FINGERPRINT, 4)
        out += _crc(bytes(out), at).to_bytes(4, "big")
    length = len(out) - HEADER_SIZE
    if length > 0xFFFF or len(out) > MAX_MESSAGE_SIZE:
        raise ValueError(f"message of {len(out)} bytes exceeds {MAX_MESSAGE_SIZE}")
    out[2:4] = length.to_bytes(2, "big")
    return bytes(out)


def encode_address(addr: tuple[str, int]) -> bytes:
    """MAPPED-ADDRESS value (RFC 8489 §14.1)."""
    ip = ipaddress.ip_address(addr[0])
    family = FAMILY_IPV4 if ip.version == 4 else FAMILY_IPV6
    return struct.pack("!BBH", 0, family, addr[1]) + ip.packed


def encode_xor_address(
    addr: tuple[str, int], transaction_id: bytes, cookie: int = MAGIC_COOKIE
) -> bytes:
    """XOR-MAPPED-ADDRESS value (RFC 8489 §14.2): port XOR the cookie's top 16 bits,
    address XOR the cookie (IPv4) or the cookie and transaction ID (IPv6)."""
    ip = ipaddress.ip_address(addr[0])
    family = FAMILY_IPV4 if ip.version == 4 else FAMILY_IPV6
    pad = cookie.to_bytes(4, "big") + transaction_id
    packed = ip.packed
    xored = bytes(b ^ p for b, p in zip(packed, pad, strict=False))
    return struct.pack("!BBH", 0, family, addr[1] ^ (cookie >> 16)) + xored


def _address_from(family: int, packed: bytes, header: StunHeader | None) -> str:
    if family == FAMILY_IPV4 and len(packed) == 4:
        return str(ipaddress.IPv4Address(packed))
    if family == FAMILY_IPV6 and len(packed) == 16:
        return str(ipaddress.IPv6Address(packed))
    raise StunParseError(400, "bad address family or length", header=header)


def decode_address(value: bytes, *, header: StunHeader | None = None) -> tuple[str, int]:
    if len(value) < 4:
        raise StunParseError(400, "address attribute too short", header=header)
    family, port = value[1], int.from_bytes(value[2:4], "big")
    return _address_from(family, value[4:], header), port


def decode_xor_address(
    value: bytes,
    transaction_id: bytes,
    cookie: int = MAGIC_COOKIE,
    *,
    header: StunHeader | None = None,
) -> tuple[str, int]:
    if len(value) not in (8, 20):
        raise StunParseError(400, "bad address family or length", header=header)
    family, port = value[1], int.from_bytes(value[2:4], "big") ^ (cookie >> 16)
    pad = cookie.to_bytes(4, "big") + transaction_id
    packed = bytes(b ^ p for b, p in zip(value[4:], pad, strict=False))
    return _address_from(family, packed, header), port


def encode_error_code(code: int, reason: str | None = None) -> bytes:
    """ERROR-CODE value (RFC 8489 §14.8): class in the hundreds, number below 100."""
    text = (REASONS.get(code, "Error") if reason is None else reason).encode()
    return struct.pack("!HBB", 0, code // 100, code % 100) + text


def encode_uint32(value: int) -> bytes:
    return value.to_bytes(4, "big")


def encode_unknown_attributes(types: Iterable[int]) -> bytes:
    return b"".join(t.to_bytes(2, "big") for t in types)


def encode_channel_number(channel: int) -> bytes:
    return channel.to_bytes(2, "big") + b"\x00\x00"


def encode_requested_transport(protocol: int = TRANSPORT_UDP) -> bytes:
    return bytes((protocol, 0, 0, 0))


def encode_requested_family(family: int) -> bytes:
    return bytes((family, 0, 0, 0))


# -- ChannelData (RFC 8656 §12.4) ---------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ChannelData:
    channel: int
    data: bytes


def parse_channel_data(data: bytes) -> ChannelData:
    """One ChannelData message. Over UDP trailing padding is allowed (RFC 8656 §12.5)."""
    if len(data) < CHANNEL_HEADER_SIZE:
        raise StunParseError(400, "shorter than a ChannelData header")
    channel, length = _TLV.unpack_from(data)
    if not CHANNEL_MIN <= channel <= CHANNEL_MAX:
        raise StunParseError(400, "channel number out of range")
    if CHANNEL_HEADER_SIZE + length > len(data):
        raise StunParseError(400, "ChannelData truncated")
    return ChannelData(
        channel=channel, data=data[CHANNEL_HEADER_SIZE : CHANNEL_HEADER_SIZE + length]
    )


def encode_channel_data(channel: int, data: bytes, *, pad: bool = False) -> bytes:
    """ChannelData; ``pad`` to four bytes for TCP (RFC 8656 §12.5)."""
    out = _TLV.pack(channel, len(data)) + data
    if pad and len(data) % 4:
        out += bytes(-len(data) % 4)
    return out


# -- TCP framing (RFC 8656 §12.5, RFC 8489 §6.2.2) --------------------------------------


class StunFramingError(StunParseError):
    """The stream can no longer be framed: the connection must be closed."""


class StunStreamFramer:
    """Splits a TCP byte stream into STUN messages and (padded) ChannelData frames.

    The buffer never holds more than one frame of at most :data:`MAX_MESSAGE_SIZE`
    bytes plus what arrived with it, so a slow sender cannot grow it without bound.
    """

    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = bytearray()

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def feed(self, data: bytes) -> list[bytes]:
        """Append ``data``; return every complete frame (ChannelData without padding)."""
        buf = self._buffer
        buf += data
        frames: list[bytes] = []
        start = 0
        end = len(buf)
        while end - start >= CHANNEL_HEADER_SIZE:
            first = buf[start]
            length = (buf[start + 2] << 8) | buf[start + 3]
            if first < 0x40:
                size = HEADER_SIZE + length
                keep = size
            elif first < 0x80:
                keep = CHANNEL_HEADER_SIZE + length
                size = keep + (-length % 4)
            else:
                del buf[:]
                raise StunFramingError(400, "neither STUN nor ChannelData on the stream")
            if size > MAX_MESSAGE_SIZE + 3:
                del buf[:]
                raise StunFramingError(400, f"frame larger than {MAX_MESSAGE_SIZE} bytes")
            if end - start < size:
                break
            frames.append(bytes(buf[start : start + keep]))
            start += size
        if start:
            del buf[:start]
        return frames

"""SDP session descriptions (RFC 8866) as the B2BUA's media relay needs them.

How this works: :func:`parse_sdp` checks the size limits on the raw bytes, splits the
body into ``<type>=<value>`` lines (CRLF or bare LF), and groups them into the session
part and one :class:`Media` per ``m=`` line. Every line is kept in order, so
:func:`rewrite` can re-serialize a description changing only what the relay must
change: the origin and every connection address (topology hiding), each ``m=`` port
and protocol, the ``a=crypto`` keys (RFC 4568) and ``a=rtcp-mux`` (RFC 5761). What
else crosses is an allow-list (issue 16: nothing of one phone identifies it to the
other unless a list says so): the attributes the media path needs
(:data:`SDP_ATTRIBUTES_CROSSING`, plus the names an admin adds in
``media.sdp_allow_attributes``) and the bandwidth lines (:data:`BANDWIDTH_TYPES`).
The session name becomes ``-``, timing ``0 0``; ``i=``, ``u=``, ``e=``, ``p=``,
``r=``, ``z=``, ``k=``, ``a=tool`` and every other attribute stay behind.
:func:`rewrite_for` keeps voipsec's own o= session id and version per leg.

Untrusted bytes either parse or raise :class:`SdpError`; its ``reason`` names the
offending element and never echoes a value (a=crypto lines carry master keys).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from ..config.checks import never_crossing

#: Whole body. Real offers are 0.5-3 KiB (audio+video with a dozen codecs and a few
#: crypto lines); 8 KiB is generous and half the SIP body limit (MAX_BODY_SIZE).
MAX_SDP_BYTES = 8_192

#: Lines in one description. A video offer with ICE candidates has ~80 lines.
MAX_SDP_LINES = 256

#: m= sections. A call uses audio, maybe video and a BFCP/T.140 stream; 8 bounds the
#: relay ports one offer can make us allocate.
MAX_MEDIA_SECTIONS = 8

#: One line without its line ending. The longest real lines are a=fingerprint
#: (~110 chars for SHA-512), a=candidate and long a=fmtp lines (H.264, ~200 chars).
MAX_LINE_LENGTH = 1_024

#: RFC 8866 §5: the field types we understand. "A session description that contains a
#: type letter it does not understand" MUST be ignored or rejected; we reject.
_KNOWN_TYPES = frozenset("vosiuepcbtrzkam")

#: RFC 8866 §9 token (attribute names, crypto suites, media types, protocols).
_TOKEN_RE = re.compile(r"[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]+")
_PROTO_RE = re.compile(r"[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]+(?:/[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]+)*")
_DIGITS_RE = re.compile(r"[0-9]{1,20}")
_PORT_RE = re.compile(r"([0-9]{1,5})(?:/([0-9]{1,5}))?")
#: RFC 4568 §9.1: tag = 1*9DIGIT; the rest are whitespace-free fields.
_CRYPTO_RE = re.compile(r"([0-9]{1,9}) ([^ ]+) ([^ ]+)(?: (.*))?")

#: Attributes passed from one leg's SDP to the other's: what the media path needs and
#: nothing that names a product, a person or an address. Codecs (RFC 8866 §6.6 rtpmap,
#: §6.15 fmtp), packetisation (§6.4 ptime, §6.5 maxptime), direction (§6.7), RTCP
#: feedback (RFC 4585 rtcp-fb), the media stream's label (RFC 5888 mid) and video frame
#: rate (§6.3 framerate). a=crypto and a=rtcp-mux are the relay's own (rewritten, not
#: passed); a=tool (§6.3: names the software), a=ssrc (RFC 5576: its cname is often
#: user@host), a=extmap, a=group, a=rtcp, ICE and every unknown attribute stay behind
#: unless an admin names them in ``media.sdp_allow_attributes`` (never the addresses,
#: ICE or keys: voipsec.config.checks.SDP_NEVER_CROSSING).
SDP_ATTRIBUTES_CROSSING = frozenset(
    {
        "rtpmap",
        "fmtp",
        "ptime",
        "maxptime",
        "sendrecv",
        "sendonly",
        "recvonly",
        "inactive",
        "rtcp-fb",
        "mid",
        "framerate",
    }
)
#: Bandwidth types kept on b= lines: bandwidth is media-relevant (a codec's rate, RTCP's
#: share). CT and AS (RFC 8866 §5.8), TIAS (RFC 3890), RS and RR (RFC 3556).
BANDWIDTH_TYPES = frozenset({"CT", "AS", "TIAS", "RS", "RR"})

_DIRECTIONS = frozenset({"sendrecv", "sendonly", "recvonly", "inactive"})

Attributes = tuple[tuple[str, str | None], ...]
Lines = tuple[tuple[str, str], ...]


class SdpError(Exception):
    """Untrusted bytes did not form an acceptable session description.

    ``reason`` is safe to log and to send to the peer: it names the offending
    element, never its value (a=crypto carries master keys).
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True, kw_only=True)
class Crypto:
    """One RFC 4568 §9.1 ``a=crypto:<tag> <crypto-suite> <key-params> [<session-params>]``."""

    tag: int
    suite: str
    #: The secret: "inline:<base64 key||salt>[|lifetime][|MKI:len]". Not in repr.
    key_params: str = field(repr=False)
    session_params: str = ""

    def __str__(self) -> str:
        """The attribute value (after "crypto:"); contains the key, never log it."""
        tail = f" {self.session_params}" if self.session_params else ""
        return f"{self.tag} {self.suite} {self.key_params}{tail}"


def parse_crypto(value: str) -> Crypto:
    """Parse the value of an a=crypto attribute (RFC 4568 §9.1 grammar, loosely)."""
    m = _CRYPTO_RE.fullmatch(value)
    if m is None:
        raise SdpError("malformed a=crypto")
    tag, suite, key_params, session_params = m.groups()
    if _TOKEN_RE.fullmatch(suite) is None:
        raise SdpError("malformed crypto-suite in a=crypto")
    return Crypto(
        tag=int(tag), suite=suite, key_params=key_params, session_params=session_params or ""
    )


def _find(attributes: Attributes, name: str) -> bool:
    return any(k == name for k, _ in attributes)


@dataclass(frozen=True, slots=True, kw_only=True)
class Media:
    """One ``m=`` section."""

    kind: str
    port: int
    proto: str
    formats: tuple[str, ...]
    #: The address of this section's c= line, None without one.
    connection: str | None = None
    #: (name, value) of every a= line in order; value None for a flag attribute.
    #: Includes a=crypto, so it is kept out of repr.
    attributes: Attributes = field(default=(), repr=False)
    #: Every line after the m= line, in order, as (type, value): what rewrite re-emits.
    lines: Lines = field(default=(), repr=False)

    @property
    def crypto(self) -> tuple[Crypto, ...]:
        """The a=crypto attributes in offer order (RFC 4568 §5.1: preferred first)."""
        return tuple(parse_crypto(v or "") for k, v in self.attributes if k == "crypto")

    @property
    def rtcp_mux(self) -> bool:
        """RFC 5761 §5.1.1: RTP and RTCP share the port."""
        return _find(self.attributes, "rtcp-mux")

    @property
    def direction(self) -> str:
        """RFC 8866 §6.7: media-level direction; sendrecv when absent."""
        for k, _ in self.attributes:
            if k in _DIRECTIONS:
                return k
        return "sendrecv"

    @property
    def secure(self) -> bool:
        """An SRTP profile (RTP/SAVP, RTP/SAVPF, UDP/TLS/RTP/SAVP...)."""
        return "SAVP" in self.proto.upper()


@dataclass(frozen=True, slots=True, kw_only=True)
class Sdp:
    """A parsed session description."""

    #: The o= value as received.
    origin: str
    session_name: str
    #: The address of the session-level c= line, None without one.
    connection: str | None = None
    session_attributes: Attributes = ()
    media: tuple[Media, ...] = ()
    #: Every session-level line in order (v=, o=, s=, c=, b=, t=, a=...), as
    #: (type, value): what rewrite re-emits.
    lines: Lines = field(default=(), repr=False)

    @property
    def session_id(self) -> str:
        """o= sess-id (RFC 8866 §5.2), a numeric string."""
        return self.origin.split(" ")[1]

    @property
    def version(self) -> int:
        """o= sess-version: changes whenever the description changes (RFC 3264 §8)."""
        return int(self.origin.split(" ")[2])

    @property
    def direction(self) -> str:
        """Session-level direction (RFC 8866 §6.7); sendrecv when absent."""
        for k, _ in self.session_attributes:
            if k in _DIRECTIONS:
                return k
        return "sendrecv"

    def address(self, media: Media) -> str | None:
        """Where ``media`` is to be sent: its c= address, else the session's.

        Only IP literals (c=IN IP4 / IN IP6) count: the relay never resolves names a
        peer gives it. None when there is no usable address.
        """
        line = _connection_line(media.lines) or _connection_line(self.lines)
        if line is None:
            return None
        parts = line.split(" ")
        if len(parts) != 3 or parts[0] != "IN":
            return None
        _, addrtype, addr = parts
        if addrtype not in ("IP4", "IP6"):
            return None
        addr = addr.split("/")[0]  # RFC 8866 §5.7: multicast "/ttl/count"
        if "%" in addr:
            return None  # a zone id names an interface of the sender's, not an address
        try:
            ip = ipaddress.ip_address(addr)
        except ValueError:
            return None
        if (addrtype == "IP4") != (ip.version == 4):
            return None
        return addr


def _connection_line(lines: Lines) -> str | None:
    for t, v in lines:
        if t == "c":
            return v
    return None


def _split_lines(body: bytes) -> list[str]:
    if len(body) > MAX_SDP_BYTES:
        raise SdpError("SDP body too large")
    raw = body.split(b"\n")
    if raw and raw[-1] == b"":
        raw.pop()  # the final line ending
    if len(raw) > MAX_SDP_LINES:
        raise SdpError("too many SDP lines")
    out: list[str] = []
    for item in raw:
        line = item[:-1] if item.endswith(b"\r") else item
        if len(line) > MAX_LINE_LENGTH:
            raise SdpError("SDP line too long")
        if b"\r" in line or b"\x00" in line:
            raise SdpError("control character in SDP line")  # RFC 8866 §9: no NUL/CR/LF
        try:
            out.append(line.decode("utf-8"))
        except UnicodeDecodeError:
            raise SdpError("SDP line is not UTF-8") from None
    return out


def _parse_attribute(value: str) -> tuple[str, str | None]:
    name, colon, rest = value.partition(":")
    if _TOKEN_RE.fullmatch(name) is None:
        raise SdpError("malformed attribute name")
    return name, rest if colon else None


def _parse_connection(value: str) -> str:
    # RFC 8866 §5.7: c=<nettype> <addrtype> <connection-address>
    parts = value.split(" ")
    if len(parts) != 3 or not all(parts):
        raise SdpError("malformed c= line")
    return parts[2].split("/")[0]


def _parse_origin(value: str) -> None:
    # RFC 8866 §5.2: o=<username> <sess-id> <sess-version> <nettype> <addrtype> <addr>
    parts = value.split(" ")
    if len(parts) != 6 or not all(parts):
        raise SdpError("malformed o= line")
    if _DIGITS_RE.fullmatch(parts[1]) is None or _DIGITS_RE.fullmatch(parts[2]) is None:
        raise SdpError("malformed o= session id or version")


def _parse_media_line(value: str) -> tuple[str, int, str, tuple[str, ...]]:
    # RFC 8866 §5.14: m=<media> <port>[/<number of ports>] <proto> <fmt> ...
    parts = value.split(" ")
    if len(parts) < 4 or not all(parts):
        raise SdpError("malformed m= line")
    kind, port_text, proto, *formats = parts
    if _TOKEN_RE.fullmatch(kind) is None:
        raise SdpError("malformed media type in m= line")
    pm = _PORT_RE.fullmatch(port_text)
    if pm is None:
        raise SdpError("malformed port in m= line")
    port = int(pm.group(1))
    if port > 65535:
        raise SdpError("port out of range in m= line")
    if _PROTO_RE.fullmatch(proto) is None:
        raise SdpError("malformed proto in m= line")
    if any(_TOKEN_RE.fullmatch(f) is None for f in formats):
        raise SdpError("malformed format in m= line")
    return kind, port, proto, tuple(formats)


def _build_media(
    head: tuple[str, int, str, tuple[str, ...]], lines: list[tuple[str, str]]
) -> Media:
    kind, port, proto, formats = head
    connection: str | None = None
    attributes: list[tuple[str, str | None]] = []
    tags: set[int] = set()
    for t, v in lines:
        if t == "c":
            if connection is not None:
                # RFC 8866 §5.7 allows several for layered multicast; a unicast call never
                # needs two, and two would make "the" address ambiguous.
                raise SdpError("more than one c= line in a media section")
            connection = _parse_connection(v)
        elif t == "a":
            name, value = _parse_attribute(v)
            if name == "crypto":
                crypto = parse_crypto(value or "")
                if crypto.tag in tags:
                    raise SdpError("duplicate a=crypto tag")  # RFC 4568 §9.1: unique per m=
                tags.add(crypto.tag)
            attributes.append((name, value))
        elif t in "vosueptrz":
            raise SdpError(f"{t}= line in a media section")
    return Media(
        kind=kind,
        port=port,
        proto=proto,
        formats=formats,
        connection=connection,
        attributes=tuple(attributes),
        lines=tuple(lines),
    )


def parse_sdp(body: bytes) -> Sdp:
    """Parse an SDP body (CRLF or LF line endings); raise :class:`SdpError` otherwise."""
    lines = _split_lines(body)
    parsed: list[tuple[str, str]] = []
    for line in lines:
        if len(line) < 2 or line[1] != "=":
            raise SdpError("malformed SDP line")
        t = line[0]
        if t not in _KNOWN_TYPES:
            raise SdpError("unknown SDP line type")
        parsed.append((t, line[2:]))
    # RFC 8866 §5: v= first, then o= and s=, in that order.
    if not parsed or parsed[0] != ("v", "0"):
        raise SdpError("SDP must start with v=0")
    if len(parsed) < 3 or parsed[1][0] != "o":
        raise SdpError("missing o= line")
    if parsed[2][0] != "s":
        raise SdpError("missing s= line")
    origin = parsed[1][1]
    _parse_origin(origin)
    session_name = parsed[2][1]

    first_m = next((i for i, (t, _) in enumerate(parsed) if t == "m"), len(parsed))
    session_lines = parsed[:first_m]
    connection: str | None = None
    session_attributes: list[tuple[str, str | None]] = []
    for t, v in session_lines[3:]:
        if t in "vos":
            raise SdpError(f"duplicate {t}= line")
        if t == "c":
            if connection is not None:
                raise SdpError("more than one session-level c= line")
            connection = _parse_connection(v)
        elif t == "a":
            session_attributes.append(_parse_attribute(v))

    sections: list[tuple[tuple[str, int, str, tuple[str, ...]], list[tuple[str, str]]]] = []
    for t, v in parsed[first_m:]:
        if t == "m":
            if len(sections) == MAX_MEDIA_SECTIONS:
                raise SdpError("too many media sections")
            sections.append((_parse_media_line(v), []))
        else:
            sections[-1][1].append((t, v))
    media = tuple(_build_media(head, body_lines) for head, body_lines in sections)
    return Sdp(
        origin=origin,
        session_name=session_name,
        connection=connection,
        session_attributes=tuple(session_attributes),
        media=media,
        lines=tuple(session_lines),
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class MediaAnswer:
    """How one m= section must look after rewriting."""

    port: int
    proto: str
    #: Replaces every a=crypto line of the section; () removes them all.
    crypto: tuple[Crypto, ...] = ()
    #: Whether a=rtcp-mux is present (RFC 5761 §5.1.1).
    rtcp_mux: bool = False
    #: The relay's own ICE-lite attributes for this section (values without "a=",
    #: from :func:`voipsec.media.icelite.sdp_lines`), appended at its end; with any,
    #: the session gets ``a=ice-lite`` (RFC 8839 §5.3). () for a leg without ICE.
    ice: tuple[str, ...] = ()
    #: The relay's a=fingerprint and a=setup towards a DTLS-SRTP leg (values without
    #: "a=", media/dtlsleg.py), appended like ``ice``; () for an SDES or plain leg.
    dtls: tuple[str, ...] = ()
    #: The a=mid this section gets instead of any that crossed (RFC 5888): a browser
    #: must find its own mid in the answer to it; None leaves a=mid as it crossed.
    mid: str | None = None


def _crosses(name: str, allow: frozenset[str]) -> bool:
    """Whether attribute ``name`` passes to the other leg: on the allow-list (built-in
    or the admin's ``allow``), and never an address, ICE or key attribute."""
    return (name in SDP_ATTRIBUTES_CROSSING or name in allow) and not never_crossing(name)


def _bandwidth_crosses(value: str) -> bool:
    """b=<bwtype>:<bandwidth> (RFC 8866 §5.8) of a known type with a numeric value."""
    bwtype, colon, amount = value.partition(":")
    return bool(colon) and bwtype in BANDWIDTH_TYPES and _DIGITS_RE.fullmatch(amount) is not None


def _addr_line(address: str) -> str:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        raise ValueError("rewrite address must be an IP literal") from None
    return f"IN IP{ip.version} {ip}"


def rewrite(
    sdp: Sdp,
    *,
    address: str,
    session_id: int,
    version: int,
    media: Sequence[MediaAnswer | None],
    allow: frozenset[str] = frozenset(),
) -> bytes:
    """Re-serialize ``sdp`` so all media flows through the relay at ``address``.

    - o= becomes ``- <session_id> <version> IN IP4|IP6 <address>``: the endpoint's
      origin would leak its address and user name (topology hiding).
    - s= becomes ``-`` and t= one ``t=0 0`` (RFC 3264 §5); i=, u=, e=, p=, r=, z=
      (title, URI, e-mail, phone, repeat times, time zones: about the endpoint or its
      user, nothing a call's media needs) are dropped; b= is kept for
      :data:`BANDWIDTH_TYPES` only.
    - Every c= (session and media) becomes ``address``; a session-level c= is always
      written, so every section has an address (RFC 8866 §5.7).
    - Each m= gets the port and proto of its :class:`MediaAnswer`; None refuses the
      stream with port 0 (RFC 3264 §6) and strips its keys.
    - a=crypto lines are replaced by the answer's (at the first one's position, else at
      the end of the section); a=rtcp-mux is kept, added or removed.
    - Only attributes on the allow-list cross (:data:`SDP_ATTRIBUTES_CROSSING` and the
      admin's ``allow``); a=rtcp (RFC 3605), ICE (RFC 8839), a=tool and unknown
      attributes, session-level a=crypto and k= (RFC 8866 §5.12, keys in clear) do not.

    Raises ValueError (a programming error, not peer input) when ``media`` does not
    have one entry per m= section or ``address`` is not an IP literal.
    """
    if len(media) != len(sdp.media):
        raise ValueError("one MediaAnswer (or None) per m= section is required")
    if session_id < 0 or version < 0:
        raise ValueError("session_id and version must be non-negative")
    conn = _addr_line(address)
    out = _rewrite_session(sdp, f"o=- {session_id} {version} {conn}", conn, allow)
    out.extend(_ice_session_lines(media))
    for section, answer in zip(sdp.media, media, strict=True):
        out.extend(_rewrite_media(section, answer, conn, allow))
    return ("\r\n".join(out) + "\r\n").encode("utf-8")


def _ice_session_lines(media: Sequence[MediaAnswer | None]) -> list[str]:
    """``a=ice-lite`` when the relay speaks ICE on any section: it is session-level
    only (RFC 8839 §5.3); the phone's own ICE attributes were dropped as hidden."""
    return ["a=ice-lite"] if any(answer is not None and answer.ice for answer in media) else []


def _rewrite_session(sdp: Sdp, origin: str, conn: str, allow: frozenset[str]) -> list[str]:
    """The session part: RFC 8866 §5 order (v o s c b t a), only what may cross."""
    out = ["v=0", origin, "s=-", f"c={conn}"]
    out += [f"b={v}" for t, v in sdp.lines if t == "b" and _bandwidth_crosses(v)]
    out.append("t=0 0")
    for t, v in sdp.lines:
        if t == "a" and _crosses(v.partition(":")[0], allow):
            out.append(f"a={v}")
    return out


def _rewrite_media(
    section: Media, answer: MediaAnswer | None, conn: str, allow: frozenset[str]
) -> list[str]:
    cryptos: tuple[Crypto, ...]
    if answer is None:
        port, proto, cryptos, mux = 0, section.proto, (), False
    else:
        port, proto, cryptos, mux = answer.port, answer.proto, answer.crypto, answer.rtcp_mux
    if not 0 <= port <= 65535:
        raise ValueError("port out of range")
    out = [f"m={section.kind} {port} {proto} {' '.join(section.formats)}"]
    crypto_done = False
    mux_done = False
    for t, v in section.lines:
        if t == "c":
            out.append(f"c={conn}")
        elif t == "b":
            if _bandwidth_crosses(v):
                out.append(f"b={v}")
        elif t == "a":
            name = v.partition(":")[0]
            if name == "crypto":
                if not crypto_done:
                    out.extend(f"a=crypto:{c}" for c in cryptos)
                    crypto_done = True
            elif name in ("rtcp-mux", "rtcp-mux-only"):
                # RFC 8858 rtcp-mux-only demands what rtcp_mux=False refuses.
                if mux and not mux_done and name == "rtcp-mux":
                    out.append("a=rtcp-mux")
                    mux_done = True
                elif mux and name == "rtcp-mux-only":
                    out.append(f"a={v}")
            elif name == "mid" and answer is not None and answer.mid is not None:
                continue  # ours is written below
            elif _crosses(name, allow):
                out.append(f"a={v}")
        # i= and k= (a stream's title, keys in clear) stay behind.
    if not crypto_done:
        out.extend(f"a=crypto:{c}" for c in cryptos)
    if mux and not mux_done:
        out.append("a=rtcp-mux")
    if answer is not None:
        if answer.mid is not None:
            out.append(f"a=mid:{answer.mid}")
        out.extend(f"a={value}" for value in (*answer.dtls, *answer.ice))
    return out


@dataclass(frozen=True, slots=True, kw_only=True)
class SentSdp:
    """voipsec's o= towards one leg (RFC 3264 §5, §8) and the last description sent.

    Each leg has a session id of its own (nothing ties the two phones' sessions
    together), and its version counts the changes that leg was sent.
    """

    session_id: int
    #: The version of ``body`` (the next description's when nothing was sent yet).
    version: int
    #: The last description sent on the leg; empty before the first.
    body: bytes = field(default=b"", repr=False)


def rewrite_for(
    sent: SentSdp,
    sdp: Sdp,
    *,
    address: str,
    media: Sequence[MediaAnswer | None],
    allow: frozenset[str] = frozenset(),
) -> SentSdp:
    """:func:`rewrite` for the leg whose last description is ``sent``: the new one in
    ``.body``. RFC 3264 §8: the same o= but for the version, which is one more than
    the last when the description changed, and the same when it did not (a phone may
    then skip it: a session refresh)."""
    body = rewrite(
        sdp,
        address=address,
        session_id=sent.session_id,
        version=sent.version,
        media=media,
        allow=allow,
    )
    if not sent.body:
        return SentSdp(session_id=sent.session_id, version=sent.version, body=body)
    if body == sent.body:
        return sent
    version = sent.version + 1
    body = rewrite(
        sdp, address=address, session_id=sent.session_id, version=version, media=media, allow=allow
    )
    return SentSdp(session_id=sent.session_id, version=version, body=body)

"""SIP requests and responses over bytes (RFC 3261 §7), parsed and serialized.

How this works: :func:`parse_message` splits the start line and the header fields,
checks the named limits and the few headers every request must carry, and keeps
every header value as text. Header *bodies* (Via, CSeq, From/To, Contact) are parsed
on first use and remembered on the message (:class:`_Parsed`), so a message whose
decision needs only the Call-ID and CSeq never parses its Contact, and none is parsed
twice. A message built from another (a response, a request with a stamped Via)
inherits the bodies it shares with it instead of parsing them again. Every failure
raises :class:`~voipsec.sip.errors.SipParseError` with the status to answer.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field

from . import limits
from .errors import SipParseError
from .headers import Header, Headers, _canonical_memo, canonical_name, is_token, split_list
from .uri import NameAddr, SipUri, Uri, parse_name_addr, parse_uri

SIP_VERSION = "SIP/2.0"
#: RFC 3261 §20.42: the magic cookie that marks an RFC 3261 branch.
BRANCH_COOKIE = "z9hG4bK"

_REQUIRED_HEADERS = ("call-id", "cseq", "from", "to", "via")
#: Headers a message carries at most once (RFC 3261 §20: not lists).
_SINGLE_HEADERS = ("call-id", "cseq", "from", "to", "max-forwards")


@dataclass(frozen=True, slots=True, kw_only=True)
class Via:
    """One Via value (RFC 3261 §20.42)."""

    transport: str
    host: str
    port: int | None
    params: tuple[tuple[str, str | None], ...]

    def param(self, name: str) -> str | None:
        for k, v in self.params:
            if k.lower() == name:
                return "" if v is None else v
        return None

    @property
    def branch(self) -> str | None:
        return self.param("branch")


@dataclass(frozen=True, slots=True, kw_only=True)
class CSeq:
    """RFC 3261 §20.16."""

    seq: int
    method: str


class _Parsed:
    """The header bodies of one message parsed so far (None: not yet).

    Plain attributes rather than :func:`functools.cached_property`: Python 3.11's
    takes an RLock on every first access (50 per call), and a class compiled with
    mypyc has no instance ``__dict__`` to cache in. A message is used by one thread.
    """

    __slots__ = ("contacts", "cseq", "from_", "to", "vias")

    def __init__(self) -> None:
        self.cseq: CSeq | None = None
        self.vias: tuple[Via, ...] | None = None
        self.from_: NameAddr | None = None
        self.to: NameAddr | None = None
        self.contacts: tuple[NameAddr, ...] | None = None


class _Message:
    """Shared behaviour of requests and responses: lazy header bodies and bytes."""

    headers: Headers
    body: bytes
    _parsed: _Parsed

    @property
    def call_id(self) -> str:
        value = self.headers.get("call-id")
        if value is None:
            raise SipParseError(400, "missing Call-ID")
        return value

    @property
    def cseq(self) -> CSeq:
        parsed = self._parsed
        if parsed.cseq is None:
            parsed.cseq = parse_cseq(self._required("cseq"))
        return parsed.cseq

    @property
    def vias(self) -> tuple[Via, ...]:
        parsed = self._parsed
        if parsed.vias is None:
            parsed.vias = _parse_vias(self.headers.lines("via"))
        return parsed.vias

    @property
    def top_via(self) -> Via:
        vias = self.vias
        if not vias:
            raise SipParseError(400, "missing Via")
        return vias[0]

    @property
    def from_(self) -> NameAddr:
        parsed = self._parsed
        if parsed.from_ is None:
            parsed.from_ = parse_name_addr(self._required("from"))
        return parsed.from_

    @property
    def to(self) -> NameAddr:
        parsed = self._parsed
        if parsed.to is None:
            parsed.to = parse_name_addr(self._required("to"))
        return parsed.to

    @property
    def contacts(self) -> tuple[NameAddr, ...]:
        """Contact values; a wildcard ``*`` contact is reported by :attr:`wildcard_contact`."""
        parsed = self._parsed
        if parsed.contacts is None:
            values = self.headers.values("contact")
            parsed.contacts = tuple(parse_name_addr(v) for v in values if v != "*")
        return parsed.contacts

    def known_bodies(self, *, vias: tuple[Via, ...], cseq: CSeq) -> None:
        """Record the bodies of a message this element built itself, so they are not
        parsed back from the text it just wrote. The caller vouches that they equal
        what its Via and CSeq headers parse to (tests check each builder)."""
        self._parsed.vias = vias
        self._parsed.cseq = cseq

    @property
    def wildcard_contact(self) -> bool:
        return "*" in self.headers.values("contact")

    def int_header(self, name: str) -> int | None:
        """A delta-seconds style header (Expires, Max-Forwards, Min-Expires) as int."""
        value = self.headers.get(name)
        if value is None:
            return None
        return parse_delta(value, name)

    def _required(self, key: str) -> str:
        value = self.headers.get(key)
        if value is None:
            raise SipParseError(400, f"missing {key} header")
        return value

    def _start_line(self) -> str:
        raise NotImplementedError

    def to_bytes(self) -> bytes:
        """Serialize with headers in their stored order and names."""
        lines = [f"{name}: {value}" for name, _, value in self.headers.fields]
        head = "\r\n".join([self._start_line(), *lines, "", ""])
        return head.encode() + self.body if self.body else head.encode()


@dataclass(frozen=True, kw_only=True, eq=True)
class Request(_Message):
    """A SIP request. ``uri`` is parsed; ``raw_uri`` is the text as received."""

    method: str
    raw_uri: str
    uri: Uri
    headers: Headers
    body: bytes = b""
    version: str = SIP_VERSION
    _parsed: _Parsed = field(default_factory=_Parsed, init=False, repr=False, compare=False)

    def _start_line(self) -> str:
        return f"{self.method} {self.raw_uri} {self.version}"

    def with_headers(self, headers: Headers) -> Request:
        return Request(
            method=self.method,
            raw_uri=self.raw_uri,
            uri=self.uri,
            headers=headers,
            body=self.body,
            version=self.version,
        )


@dataclass(frozen=True, kw_only=True, eq=True)
class Response(_Message):
    """A SIP response."""

    status: int
    reason: str
    headers: Headers
    body: bytes = b""
    version: str = SIP_VERSION
    _parsed: _Parsed = field(default_factory=_Parsed, init=False, repr=False, compare=False)

    def _start_line(self) -> str:
        return f"{self.version} {self.status} {self.reason}"


Message = Request | Response


def _parse_vias(lines: list[str]) -> tuple[Via, ...]:
    """Every Via value of a message's Via lines, top first (RFC 3261 §20.42)."""
    values: list[str] = []
    for line in lines:
        single = line.strip()
        if not single:
            # RFC 3261 §20.42: Via = 1#via-parm, so an empty Via header is malformed.
            raise SipParseError(400, "empty Via header")
        if "," in single or '"' in single:
            values.extend(split_list(single))
        else:
            values.append(single)
    if len(values) > limits.MAX_VIA:
        raise SipParseError(483, "too many Via headers")
    return tuple(map(parse_via, values))


def parse_cseq(value: str) -> CSeq:
    parts = value.split()
    if len(parts) != 2 or not parts[0].isdigit() or not parts[0].isascii():
        raise SipParseError(400, "malformed CSeq")
    seq = int(parts[0])
    if seq > limits.MAX_CSEQ:
        raise SipParseError(400, "CSeq number too large")
    if not is_token(parts[1]):
        raise SipParseError(400, "malformed CSeq method")
    return CSeq(seq=seq, method=parts[1])


def parse_delta(value: str, name: str = "header") -> int:
    text = value.strip()
    if not text.isdigit() or not text.isascii():
        raise SipParseError(400, f"malformed {name}")
    number = int(text)
    if number > limits.MAX_DELTA_SECONDS:
        raise SipParseError(400, f"{name} out of range")
    return number


#: Parsed Via values remembered: within a call the same Via text arrives in the
#: request, its retransmissions, and every response and ACK of the transaction. Via
#: is immutable, so sharing is safe; a peer sending ever-new values only makes
#: entries fall out (least recently used).
VIA_CACHE_SIZE = 4096


@functools.lru_cache(maxsize=VIA_CACHE_SIZE)
def parse_via(value: str) -> Via:
    """RFC 3261 §20.42: ``SIP / 2.0 / transport sent-by *(; via-params)``."""
    proto, _, rest = value.strip().partition(" ")
    # Linear white space may surround the slashes (RFC 4475 §3.1.1.1 "wsinv").
    if rest and proto.count("/") < 2:
        proto, rest = _join_spaced_protocol(value.strip())
    pieces = [p.strip() for p in proto.split("/")]
    if len(pieces) != 3 or pieces[0].upper() != "SIP" or pieces[1] != "2.0" or not pieces[2]:
        raise SipParseError(400, "malformed Via protocol")
    sent_by, _, params_text = rest.strip().partition(";")
    sent_by = sent_by.strip()
    if not sent_by:
        raise SipParseError(400, "malformed Via sent-by")
    host, port = _via_hostport(sent_by)
    params: list[tuple[str, str | None]] = []
    if params_text:
        for part in params_text.split(";"):
            name, eq, val = part.partition("=")
            name = name.strip()
            if not name:
                raise SipParseError(400, "empty Via parameter")
            params.append((name.lower(), val.strip() if eq else None))
    return Via(transport=pieces[2].upper(), host=host, port=port, params=tuple(params))


def _join_spaced_protocol(text: str) -> tuple[str, str]:
    tokens = text.split()
    proto = ""
    i = 0
    while i < len(tokens) and (proto.count("/") < 2 or proto.endswith("/")):
        proto += tokens[i]
        i += 1
    return proto, " ".join(tokens[i:])


#: Characters a Via host never holds (RFC 3261 §25.1 ``host``); seen, they mean the
#: sent-by swallowed a neighbouring element.
_BAD_VIA_HOST = re.compile(r'[ \t,<>"]')


def _via_hostport(text: str) -> tuple[str, int | None]:
    host, colon, port = text.rpartition(":") if not text.endswith("]") else (text, "", "")
    if not colon:
        host, port = text, ""
    host, port = host.strip(), port.strip()
    if not host or _BAD_VIA_HOST.search(host) is not None:
        raise SipParseError(400, "malformed Via host")
    if not port:
        return host, None
    if not port.isdigit() or not port.isascii() or int(port) > 65535:
        raise SipParseError(400, "malformed Via port")
    return host, int(port)


def _decode(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise SipParseError(400, "header section is not UTF-8") from None


def find_head_end(
    data: bytes | bytearray, start: int = 0, stop: int | None = None
) -> tuple[int, int] | None:
    """Where the header section ends: (offset of the empty line, its length), or None.

    CRLF CRLF or, tolerated, LF LF — whichever comes first, so that the stream framer
    cuts a message at the same place however its bytes were chunked, and the parser
    splits what the framer cut at that same place. ``start`` skips bytes already
    searched (less three, which may begin a terminator); nothing at or past ``stop``
    is searched, so a buffer holding many pipelined messages is not scanned to its end
    for each of them.
    """
    end = len(data) if stop is None else min(stop, len(data))
    crlf = data.find(b"\r\n\r\n", start, end)
    # An LF LF terminator counts only if it comes before the first CRLF CRLF.
    lf = data.find(b"\n\n", start, end if crlf < 0 else crlf + 2)
    if lf >= 0 and (crlf < 0 or lf < crlf):
        return lf, 2
    if crlf >= 0:
        return crlf, 4
    return None


def split_head(data: bytes) -> tuple[bytes, bytes]:
    """Split a complete message into header section and everything after it."""
    found = find_head_end(data)
    if found is None:
        return data, b""
    end, sep = found
    return data[:end], data[end + sep :]


def parse_message(data: bytes, *, datagram: bool = True) -> Message:
    """Parse one complete SIP message.

    ``datagram`` selects RFC 3261 §18.3 body handling: in a datagram, bytes past
    Content-Length are discarded and a missing Content-Length means "to the end";
    from a stream framer the body is exactly what the framer cut.
    """
    if len(data) > limits.MAX_MESSAGE_SIZE:
        raise SipParseError(513, "message too large")
    data = data.lstrip(b"\r\n")
    head, body = split_head(data)
    if len(head) > limits.MAX_HEADER_BYTES:
        raise SipParseError(513, "header section too large")
    if len(head) == len(data):
        # RFC 3261 §7: the empty line MUST be present even when there is no body
        # (RFC 4475 §3.1.2.15: the archived "baddn" ends without it).
        raise SipParseError(400, "header section not terminated by an empty line")
    text = _decode(head).replace("\r\n", "\n")
    lines = text.split("\n")
    start = lines[0]
    # RFC 3261 §7.3.1: a line starting with blanks continues the previous field.
    headers = _parse_fields(lines[1:], folded="\n " in text or "\n\t" in text)
    body = _frame_body(headers, body, datagram)
    if start.startswith("SIP/"):
        return _parse_response(start, headers, body)
    return _parse_request(start, headers, body)


#: ``name: value`` with a token name (RFC 3261 §7.3.1); surrounding blanks dropped.
_FIELD = re.compile(r"([A-Za-z0-9\-.!%*_+`'~]+)[ \t]*:[ \t]*(.*)")


#: Builds a Header without the generated keyword __new__ (hot loop).
_new_header = tuple.__new__


def _parse_fields(lines: list[str], *, folded: bool) -> Headers:
    """The header fields in wire order, indexed by canonical name in the same pass."""
    if folded:
        lines = _unfold(lines)
    if len(lines) > limits.MAX_HEADERS:
        raise SipParseError(400, "too many headers")
    fields: list[Header] = []
    append = fields.append
    index: dict[str, list[int]] = {}
    via_count = 0
    match = _FIELD.fullmatch
    memo = _canonical_memo
    max_length = limits.MAX_HEADER_LENGTH
    for position, line in enumerate(lines):
        if len(line) > max_length:
            raise SipParseError(400, "header too long")
        found = match(line)
        if found is None:
            if not line:
                raise SipParseError(400, "empty line inside headers")
            raise SipParseError(400, "malformed header line")
        name, value = found.groups()
        value = value.rstrip(" \t")
        key = memo.get(name) or canonical_name(name)
        if key == "via":
            if "," in value or '"' in value:
                via_count += len(split_list(value))
            elif value:
                via_count += 1
            if via_count > limits.MAX_VIA:
                raise SipParseError(483, "too many Via headers")
        append(_new_header(Header, (name, key, value)))
        positions = index.get(key)
        if positions is None:
            index[key] = [position]
        else:
            positions.append(position)
    return Headers.indexed(tuple(fields), index)


def _unfold(lines: list[str]) -> list[str]:
    """RFC 3261 §7.3.1: a continuation line folds into the previous field."""
    unfolded: list[str] = []
    for line in lines:
        if line[:1] in (" ", "\t"):
            if not unfolded:
                raise SipParseError(400, "continuation line before first header")
            unfolded[-1] = unfolded[-1].rstrip() + " " + line.strip()
            if len(unfolded[-1]) > limits.MAX_HEADER_LENGTH:
                raise SipParseError(400, "header too long")
        else:
            unfolded.append(line)
        if len(unfolded) > limits.MAX_HEADERS:
            raise SipParseError(400, "too many headers")
    return unfolded


def _frame_body(headers: Headers, rest: bytes, datagram: bool) -> bytes:
    cl_lines = headers.lines("content-length")
    if len(cl_lines) > 1:
        raise SipParseError(400, "multiple Content-Length headers")
    if not cl_lines:
        if len(rest) > limits.MAX_BODY_SIZE:
            raise SipParseError(413, "body too large")
        return rest if datagram else b""
    length = parse_delta(cl_lines[0], "Content-Length")
    if length > limits.MAX_BODY_SIZE:
        raise SipParseError(413, "body too large")
    if length > len(rest):
        raise SipParseError(400, "Content-Length larger than body")
    return rest[:length]


def _parse_request(start: str, headers: Headers, body: bytes) -> Request:
    parts = start.split(" ")
    # RFC 3261 §7.1: exactly one SP between the three elements (RFC 4475 §3.1.2.8-9).
    if len(parts) != 3 or not all(parts):
        raise SipParseError(400, "malformed Request-Line")
    method, raw_uri, version = parts
    if not is_token(method):
        raise SipParseError(400, "malformed method")
    if version.upper() != SIP_VERSION:
        if version.upper().startswith("SIP/"):
            raise SipParseError(505, "SIP version not supported")
        raise SipParseError(400, "malformed Request-Line")
    uri = parse_uri(raw_uri)
    missing = headers.first_missing(_REQUIRED_HEADERS)
    if missing is not None:
        raise SipParseError(400, f"missing {missing} header")
    request = Request(method=method, raw_uri=raw_uri, uri=uri, headers=headers, body=body)
    _check_request_headers(request)
    return request


def _check_common_headers(message: Request | Response) -> None:
    """Checks of the headers every request and response carries (RFC 3261 §8.1.1)."""
    count = message.headers.count_key
    for key in _SINGLE_HEADERS:
        if count(key) > 1:
            raise SipParseError(400, f"multiple {key} headers")
    if not message.call_id:
        raise SipParseError(400, "empty Call-ID")
    message.cseq  # noqa: B018 - parses and validates the CSeq now
    message.top_via  # noqa: B018 - parses and validates the top Via now
    message.from_  # noqa: B018
    message.to  # noqa: B018


def _check_request_headers(request: Request) -> None:
    """The few header checks every request gets before any decision is made."""
    _check_common_headers(request)
    # RFC 3261 §8.1.1.5: the CSeq method MUST match the request (RFC 4475 mismatch01).
    if request.cseq.method != request.method:
        raise SipParseError(400, "CSeq method does not match Request-Line")
    mf = request.int_header("max-forwards")
    if mf is not None and mf > 255:
        raise SipParseError(400, "Max-Forwards out of range")
    if "expires" in request.headers:
        request.int_header("expires")


def _parse_response(start: str, headers: Headers, body: bytes) -> Response:
    version, _, rest = start.partition(" ")
    code, _, reason = rest.partition(" ")
    if version.upper() != SIP_VERSION:
        raise SipParseError(505, "SIP version not supported")
    if len(code) != 3 or not code.isdigit() or not code.isascii() or not 100 <= int(code) <= 699:
        raise SipParseError(400, "malformed status code")
    missing = headers.first_missing(_REQUIRED_HEADERS)
    if missing is not None:
        raise SipParseError(400, f"missing {missing} header")
    response = Response(status=int(code), reason=reason, headers=headers, body=body)
    # A response whose Via or CSeq cannot be read cannot be matched to a transaction;
    # refusing it here means it is dropped (RFC 4475 §3.1.2.5 "scalarlg").
    _check_common_headers(response)
    return response


def is_rfc3261_branch(branch: str | None) -> bool:
    """True for a branch that is an RFC 3261 transaction id (§17.2.3).

    The magic cookie alone identifies nothing (RFC 4475 §3.2.1 "badbranch"): such a
    request falls back to RFC 2543 matching.
    """
    return (
        branch is not None and branch.startswith(BRANCH_COOKIE) and len(branch) > len(BRANCH_COOKIE)
    )


def sip_uri(uri: Uri) -> SipUri:
    """The URI as a SipUri, or 416 when it is of another scheme."""
    if not isinstance(uri, SipUri):
        raise SipParseError(416, "unsupported URI scheme")
    return uri


def response_to(
    request: Request,
    status: int,
    reason: str,
    *,
    to_tag: str | None = None,
    extra: tuple[tuple[str, str], ...] = (),
    body: bytes = b"",
) -> Response:
    """Build a response that copies Via, From, To, Call-ID and CSeq (RFC 3261 §8.2.6.2)."""
    fields: list[Header] = []
    append = fields.append
    index: dict[str, list[int]] = {}
    tagged = False
    for f in request.headers:
        key = f.key
        if key in _ECHOED:
            if key == "to" and to_tag is not None and status > 100 and request.to.tag is None:
                f = _new_header(Header, (f.name, key, f"{f.value};tag={to_tag}"))
                tagged = True
            _index_add(index, key, len(fields))
            append(f)
    for n, v in extra:
        key = canonical_name(n)
        _index_add(index, key, len(fields))
        append(_new_header(Header, (n, key, v)))
    _index_add(index, "content-length", len(fields))
    append(_new_header(Header, ("Content-Length", "content-length", str(len(body)))))
    headers = Headers.indexed(tuple(fields), index)
    response = Response(status=status, reason=reason, headers=headers, body=body)
    _inherit(response._parsed, request._parsed, to=not tagged)
    return response


#: The headers a response copies from its request (RFC 3261 §8.2.6.2).
_ECHOED = frozenset({"via", "from", "to", "call-id", "cseq"})


def _index_add(index: dict[str, list[int]], key: str, position: int) -> None:
    positions = index.get(key)
    if positions is None:
        index[key] = [position]
    else:
        positions.append(position)


def _inherit(target: _Parsed, source: _Parsed, *, to: bool, contacts: bool = False) -> None:
    """Give a message built from another the bodies of the headers it copied unchanged.

    Via, CSeq and From always are (§8.2.6.2); To unless a tag was added; Contact only
    when the whole header section but the top Via was kept.
    """
    target.vias = source.vias
    target.cseq = source.cseq
    target.from_ = source.from_
    if to:
        target.to = source.to
    if contacts:
        target.contacts = source.contacts


def top_via_with_received(request: Request, host: str, port: int) -> Request:
    """RFC 3261 §18.2.1 and RFC 3581 §4: add received (and fill rport) to the top Via."""
    top = request.top_via  # parses and validates every Via first (no empty header line)
    new_top = ""
    fields: list[Header] = []
    for f in request.headers:
        if f.key == "via" and not new_top:
            values = split_list(f.value)
            values[0] = new_top = _stamp_via(values[0], top, host, port)
            fields.append(Header(name=f.name, key=f.key, value=", ".join(values)))
        else:
            fields.append(f)
    stamped = request.with_headers(Headers(tuple(fields)))
    # Only the top Via changed: every other parsed body stays valid.
    _inherit(stamped._parsed, request._parsed, to=True, contacts=True)
    stamped._parsed.vias = (_stamped(top, host, port), *request.vias[1:])
    return stamped


def _stamped(via: Via, host: str, port: int) -> Via:
    """What :func:`_stamp_via`'s text parses to, built from the parsed Via instead."""
    params: list[tuple[str, str | None]] = []
    for name, value in via.params:
        if name == "rport" and value is None:
            params.append((name, str(port)))
        elif name != "received":
            params.append((name, value))
    if via.host != host or via.param("rport") is not None:
        params.append(("received", host))
    return Via(transport=via.transport, host=via.host, port=via.port, params=tuple(params))


def _stamp_via(value: str, via: Via, host: str, port: int) -> str:
    parts = [p for p in value.split(";")]
    out = [parts[0]]
    for p in parts[1:]:
        name = p.split("=", 1)[0].strip().lower()
        if name == "rport" and "=" not in p:
            out.append(f"rport={port}")
        elif name == "received":
            continue
        else:
            out.append(p)
    # RFC 3581 §4: with rport, received is added even when it equals the sent-by.
    if via.host != host or via.param("rport") is not None:
        out.append(f"received={host}")
    return ";".join(out)


__all__ = [
    "BRANCH_COOKIE",
    "SIP_VERSION",
    "CSeq",
    "Message",
    "NameAddr",
    "Request",
    "Response",
    "SipUri",
    "Via",
    "parse_message",
    "response_to",
]


_ECHO_HEADERS = frozenset({"via", "from", "to", "call-id", "cseq"})


def error_response_bytes(data: bytes, status: int, phrase: str) -> bytes | None:
    """Best-effort answer to a request that failed to parse (RFC 3261 §8.2: 400 etc.).

    Scans the raw bytes tolerantly for the start line and the five headers a
    response must echo. Returns None when the bytes are a response, or too broken to
    answer (then the caller drops and counts them).
    """
    head, _ = split_head(data[: limits.MAX_HEADER_BYTES + 4])
    text = head.decode("utf-8", errors="replace").replace("\r\n", "\n")
    lines = text.split("\n")
    start = lines[0].split(" ")
    if len(start) < 3 or lines[0].startswith("SIP/") or not is_token(start[0]):
        return None
    echoed: list[str] = []
    seen: set[str] = set()
    for line in lines[1 : limits.MAX_HEADERS + 1]:
        name, colon, value = line.partition(":")
        if not colon or not is_token(name.strip()):
            continue
        key = canonical_name(name.strip())
        if key in _ECHO_HEADERS and len(line) <= limits.MAX_HEADER_LENGTH:
            if any(c in value for c in "\r\x00"):
                continue
            echoed.append(f"{name.strip()}: {value.strip()}")
            seen.add(key)
    if seen != _ECHO_HEADERS:
        return None
    lines_out = [f"{SIP_VERSION} {status} {phrase}", *echoed, "Content-Length: 0", "", ""]
    return "\r\n".join(lines_out).encode()

"""SIP and SIPS URIs (RFC 3261 §19.1) and name-addr values (§20.10, §25.1).

URIs of other schemes (tel:, http:, ...) parse as :class:`AbsoluteUri` so a server can
answer 416 instead of 400 when it cannot route them.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from dataclasses import dataclass, field
from urllib.parse import unquote

from .errors import SipParseError
from .headers import TOKEN_CHARS
from .limits import MAX_URI_LENGTH

_SCHEME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+-.")
_HOST_RE = re.compile(r"[A-Za-z0-9\-.]+")
_FORBIDDEN_RE = re.compile(r'[ \t\r\n<>"]')


def find_param(params: tuple[tuple[str, str | None], ...], name: str) -> str | None:
    """A parameter's value by case-insensitive name; '' for a flag, None when absent."""
    lname = name.lower()
    for k, v in params:
        if k.lower() == lname:
            return "" if v is None else v
    return None


@dataclass(frozen=True, slots=True, kw_only=True)
class SipUri:
    """A parsed sip: or sips: URI."""

    scheme: str
    user: str | None
    password: str | None = field(default=None, repr=False)
    host: str
    port: int | None
    params: tuple[tuple[str, str | None], ...] = ()
    headers: str | None = None

    @property
    def secure(self) -> bool:
        return self.scheme == "sips"

    def param(self, name: str) -> str | None:
        """Value of a URI parameter (case-insensitive name); '' for a flag param."""
        return find_param(self.params, name)

    @property
    def transport(self) -> str | None:
        t = self.param("transport")
        return t.lower() if t else None

    @property
    def aor(self) -> str:
        """Address of record: scheme, unescaped user and lower-cased host, no params."""
        user = f"{unquote(self.user)}@" if self.user is not None else ""
        return f"sip:{user}{self.host.lower()}"

    def __str__(self) -> str:
        out = [self.scheme, ":"]
        if self.user is not None:
            out.append(self.user)
            if self.password is not None:
                out.append(":" + self.password)
            out.append("@")
        out.append(self.host)
        if self.port is not None:
            out.append(f":{self.port}")
        for k, v in self.params:
            out.append(f";{k}" if v is None else f";{k}={v}")
        if self.headers is not None:
            out.append("?" + self.headers)
        return "".join(out)


@dataclass(frozen=True, slots=True, kw_only=True)
class AbsoluteUri:
    """A URI of a scheme other than sip/sips, kept opaque."""

    scheme: str
    rest: str

    @property
    def secure(self) -> bool:
        return False

    def __str__(self) -> str:
        return f"{self.scheme}:{self.rest}"


Uri = SipUri | AbsoluteUri


#: Parsed URIs and name-addrs remembered: phones repeat the same To, Contact and
#: Request-URI in every request. Results are immutable, so sharing them is safe; a
#: peer sending ever-new URIs only makes entries fall out (least recently used).
PARSE_CACHE_SIZE = 4096


@functools.lru_cache(maxsize=PARSE_CACHE_SIZE)
def parse_uri(text: str) -> Uri:
    """Parse a Request-URI or the URI inside a name-addr."""
    if len(text) > MAX_URI_LENGTH:
        raise SipParseError(414, "URI too long")
    if not text or _FORBIDDEN_RE.search(text) is not None:
        raise SipParseError(400, "malformed URI")
    scheme, sep, rest = text.partition(":")
    if not sep or not scheme or not scheme[0].isalpha() or not set(scheme) <= _SCHEME_CHARS:
        raise SipParseError(400, "malformed URI scheme")
    lscheme = scheme.lower()
    if lscheme not in ("sip", "sips"):
        if not rest:
            raise SipParseError(400, "malformed URI")
        return AbsoluteUri(scheme=lscheme, rest=rest)
    return _parse_sip_uri(lscheme, rest)


def _parse_sip_uri(scheme: str, rest: str) -> SipUri:
    user: str | None = None
    password: str | None = None
    # RFC 3261 §25.1: "?", ";" and "," are user-unreserved, so the userinfo is cut at
    # its "@" before headers and parameters are looked for (RFC 4475 §3.1.1.2
    # "intmeth"). "@" is not allowed in user or password, so it is the first one; a
    # raw "@" in a header value (Replaces=id@host, seen in the wild) stays there.
    at = rest.find("@")
    if at >= 0:
        userinfo, rest = rest[:at], rest[at + 1 :]
        if not userinfo:
            raise SipParseError(400, "empty user in URI")
        user, colon, pw = userinfo.partition(":")
        password = pw if colon else None
        if not user:
            raise SipParseError(400, "empty user in URI")
        _check_escapes(user)
    rest, qmark, headers = rest.partition("?")
    hostport, _, paramtext = rest.partition(";")
    host, port = _parse_hostport(hostport)
    params = _parse_params(paramtext) if paramtext else ()
    return SipUri(
        scheme=scheme,
        user=user,
        password=password,
        host=host,
        port=port,
        params=params,
        headers=headers if qmark else None,
    )


def _check_escapes(text: str) -> None:
    i = text.find("%")
    while i >= 0:
        pair = text[i + 1 : i + 3]
        if len(pair) != 2 or any(c not in "0123456789abcdefABCDEF" for c in pair):
            raise SipParseError(400, "bad escape in URI")
        i = text.find("%", i + 3)


def _parse_hostport(text: str) -> tuple[str, int | None]:
    """RFC 3261 §25.1 hostport: hostname, IPv4address or [IPv6reference]."""
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise SipParseError(400, "malformed IPv6 reference")
        host, tail = text[: end + 1], text[end + 1 :]
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise SipParseError(400, "malformed IPv6 reference") from None
    else:
        host, colon, port_text = text.partition(":")
        tail = colon + port_text
        if _HOST_RE.fullmatch(host) is None or host.startswith((".", "-")):
            raise SipParseError(400, "malformed host in URI")
    if not tail:
        return host, None
    if not tail.startswith(":") or not tail[1:].isdigit() or not tail[1:].isascii():
        raise SipParseError(400, "malformed port in URI")
    port = int(tail[1:])
    if port > 65535:
        raise SipParseError(400, "port out of range in URI")
    return host, port


def _parse_params(text: str) -> tuple[tuple[str, str | None], ...]:
    out: list[tuple[str, str | None]] = []
    for part in text.split(";"):
        if not part:
            raise SipParseError(400, "empty URI parameter")
        name, eq, value = part.partition("=")
        if not name:
            raise SipParseError(400, "empty URI parameter name")
        _check_escapes(name)
        if eq:
            _check_escapes(value)
        out.append((name, value if eq else None))
    return tuple(out)


@dataclass(frozen=True, slots=True, kw_only=True)
class NameAddr:
    """A From/To/Contact/Route value: optional display name, URI and header params."""

    display: str | None
    uri: Uri
    params: tuple[tuple[str, str | None], ...] = ()

    def param(self, name: str) -> str | None:
        """Value of a header parameter (case-insensitive name); '' for a flag param."""
        return find_param(self.params, name)

    @property
    def tag(self) -> str | None:
        return self.param("tag")

    def __str__(self) -> str:
        disp = f"{self.display} " if self.display else ""
        params = "".join(f";{k}" if v is None else f";{k}={v}" for k, v in self.params)
        return f"{disp}<{self.uri}>{params}"


@functools.lru_cache(maxsize=PARSE_CACHE_SIZE)
def parse_name_addr(value: str) -> NameAddr:
    """Parse ``name-addr`` or ``addr-spec`` with header parameters (RFC 3261 §20.10).

    In the addr-spec form, parameters after the URI belong to the header, not the URI.
    """
    text = value.strip()
    display: str | None = None
    if text.startswith('"'):
        end = _closing_quote(text)
        display = text[: end + 1]
        text = text[end + 1 :].lstrip()
        if not text.startswith("<"):
            raise SipParseError(400, "display name without <URI>")
    lt = text.find("<")
    if lt >= 0:
        if display is None and lt > 0:
            display = text[:lt].strip() or None
            if display is not None and not all(_display_word(w) for w in display.split()):
                # RFC 3261 §25.1: an unquoted display-name is *(token LWS); a comma
                # would make To/From ambiguous (RFC 4475 §3.1.2.15 "baddn").
                raise SipParseError(400, "malformed display name")
        gt = text.find(">", lt)
        if gt < 0:
            raise SipParseError(400, "unterminated <URI>")
        uri_text, tail = text[lt + 1 : gt], text[gt + 1 :].strip()
    else:
        uri_text, semi, tail = text.partition(";")
        uri_text = uri_text.strip()
        tail = semi + tail
        if "," in uri_text or "?" in uri_text:
            raise SipParseError(400, "addr-spec with reserved characters must use <URI>")
    uri = parse_uri(uri_text)
    return NameAddr(display=display, uri=uri, params=_parse_header_params(tail))


def _display_word(word: str) -> bool:
    """A token, liberally also allowing non-ASCII letters (unquoted UTF-8 names)."""
    return all(c in TOKEN_CHARS or ord(c) > 127 for c in word)


def _closing_quote(text: str) -> int:
    i = 1
    while i < len(text):
        if text[i] == "\\":
            i += 2
            continue
        if text[i] == '"':
            return i
        i += 1
    raise SipParseError(400, "unbalanced quotes in display name")


def _parse_header_params(text: str) -> tuple[tuple[str, str | None], ...]:
    text = text.strip()
    if not text:
        return ()
    if not text.startswith(";"):
        raise SipParseError(400, "junk after URI")
    out: list[tuple[str, str | None]] = []
    for part in text[1:].split(";"):
        name, eq, val = part.partition("=")
        name = name.strip()
        if not name:
            raise SipParseError(400, "empty header parameter")
        out.append((name, val.strip() if eq else None))
    return tuple(out)


def same_aor(a: str, b: str) -> bool:
    """Whether two ``user@host`` AORs name the same user: voipsec's one identity rule.

    RFC 3261 §19.1.4: the user part compares case-sensitively, the host part
    case-insensitively. "alice" and "ALICE" are two users; a certificate for one is
    never accepted for the other.
    """
    user_a, at_a, host_a = a.rpartition("@")
    user_b, at_b, host_b = b.rpartition("@")
    return bool(at_a and at_b) and user_a == user_b and host_a.lower() == host_b.lower()

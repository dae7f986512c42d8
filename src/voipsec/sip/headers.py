"""Header names, compact forms and the ordered header list of a SIP message.

Headers are kept in wire order with their raw names (so a message serializes back
as it arrived) and a canonical lower-case full name used for look-ups; compact forms
(RFC 3261 §7.3.3) are mapped by one table.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import NamedTuple

from .errors import SipParseError

#: RFC 3261 §7.3.3 plus the IANA registry of compact forms.
COMPACT_FORMS: dict[str, str] = {
    "a": "accept-contact",
    "b": "referred-by",
    "c": "content-type",
    "d": "request-disposition",
    "e": "content-encoding",
    "f": "from",
    "i": "call-id",
    "j": "reject-contact",
    "k": "supported",
    "l": "content-length",
    "m": "contact",
    "n": "identity-info",
    "o": "event",
    "r": "refer-to",
    "s": "subject",
    "t": "to",
    "u": "allow-events",
    "v": "via",
    "x": "session-expires",
    "y": "identity",
}

#: Headers whose grammar is a comma-separated list (RFC 3261 §7.3.1), so several
#: values may share one line. Authorization and WWW-Authenticate are not lists.
LIST_HEADERS = frozenset(
    {
        "via",
        "contact",
        "route",
        "record-route",
        "allow",
        "supported",
        "require",
        "proxy-require",
        "unsupported",
        "accept",
        "accept-encoding",
        "accept-language",
        "allow-events",
        "content-encoding",
        "content-language",
        "in-reply-to",
        "path",
        "service-route",
    }
)

TOKEN_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~")


_TOKEN_RE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")


def is_token(text: str) -> bool:
    """RFC 3261 §25.1 ``token``."""
    return _TOKEN_RE.fullmatch(text) is not None


#: Canonical names already computed. Header names come from peers, so the memo is
#: bounded: past this many distinct names new ones are computed, not stored.
_CANONICAL_MEMO_SIZE = 512
_canonical_memo: dict[str, str] = {}


def canonical_name(name: str) -> str:
    """Lower-case full header name: ``"V"`` and ``"via"`` both become ``"via"``."""
    found = _canonical_memo.get(name)
    if found is not None:
        return found
    lower = name.lower()
    key = COMPACT_FORMS.get(lower, lower)
    if len(_canonical_memo) < _CANONICAL_MEMO_SIZE:
        _canonical_memo[name] = key
    return key


class Header(NamedTuple):
    """One header field as it stood on the wire (unfolded).

    A named tuple rather than a frozen dataclass: a message builds a dozen of these
    and tuple construction is several times cheaper (profiled on the REGISTER path).
    """

    name: str
    key: str
    value: str


def header(name: str, value: str) -> Header:
    """Build a header from a name in any form."""
    return Header(name=name, key=canonical_name(name), value=value)


def split_list(value: str) -> list[str]:
    """Split a list header on commas outside quotes and angle brackets."""
    if "," not in value and '"' not in value:
        single = value.strip()
        return [single] if single else []
    parts: list[str] = []
    depth = 0
    quoted = False
    escaped = False
    start = 0
    for i, ch in enumerate(value):
        if escaped:
            escaped = False
        elif quoted:
            if ch == "\\":
                escaped = True
            elif ch == '"':
                quoted = False
        elif ch == '"':
            quoted = True
        elif ch == "<":
            depth += 1
        elif ch == ">":
            depth = max(0, depth - 1)
        elif ch == "," and depth == 0:
            parts.append(value[start:i].strip())
            start = i + 1
    if quoted:
        raise SipParseError(400, "unbalanced quotes in header")
    parts.append(value[start:].strip())
    return [p for p in parts if p]


class Headers:
    """Ordered, immutable header fields with case-insensitive, compact-aware look-up."""

    __slots__ = ("_fields", "_index")

    def __init__(
        self, fields: tuple[Header, ...], index: dict[str, list[int]] | None = None
    ) -> None:
        self._fields = fields
        if index is None:
            index = {}
            for i, f in enumerate(fields):
                found = index.get(f.key)
                if found is None:
                    index[f.key] = [i]
                else:
                    found.append(i)
        self._index = index

    @classmethod
    def indexed(cls, fields: tuple[Header, ...], index: dict[str, list[int]]) -> Headers:
        """Headers whose index the parser built while reading the fields (no second pass).

        ``index`` maps each key to the positions of its fields, in order; the caller
        hands it over and does not change it afterwards.
        """
        return cls(fields, index)

    def first_missing(self, keys: tuple[str, ...]) -> str | None:
        """The first of ``keys`` (canonical names) with no header line, or None."""
        index = self._index
        for key in keys:
            if key not in index:
                return key
        return None

    def count_key(self, key: str) -> int:
        """:meth:`count` for a name already in canonical form (no name mapping)."""
        found = self._index.get(key)
        return len(found) if found else 0

    def __iter__(self) -> Iterator[Header]:
        return iter(self._fields)

    def __len__(self) -> int:
        return len(self._fields)

    def __contains__(self, name: object) -> bool:
        return (
            isinstance(name, str)
            and (_canonical_memo.get(name) or canonical_name(name)) in self._index
        )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Headers) and self._fields == other._fields

    def __hash__(self) -> int:
        return hash(self._fields)

    def __repr__(self) -> str:
        return f"Headers({list(self._fields)!r})"

    @property
    def fields(self) -> tuple[Header, ...]:
        return self._fields

    def count(self, name: str) -> int:
        """How many header lines carry ``name``."""
        return len(self._index.get(_canonical_memo.get(name) or canonical_name(name), ()))

    def get(self, name: str, default: str | None = None) -> str | None:
        """The first value of ``name``, or ``default``."""
        idx = self._index.get(_canonical_memo.get(name) or canonical_name(name))
        return self._fields[idx[0]].value if idx else default

    def lines(self, name: str) -> list[str]:
        """Every line's value for ``name``, unsplit."""
        return [
            self._fields[i].value
            for i in self._index.get(_canonical_memo.get(name) or canonical_name(name), ())
        ]

    def values(self, name: str) -> list[str]:
        """All values of ``name``; list headers are split on their commas."""
        key = _canonical_memo.get(name) or canonical_name(name)
        raw = [self._fields[i].value for i in self._index.get(key, ())]
        if key not in LIST_HEADERS:
            return raw
        out: list[str] = []
        for line in raw:
            out.extend(split_list(line))
        return out

    def replace(self, name: str, value: str | None) -> Headers:
        """A copy with every ``name`` line removed, and ``value`` set where the first was."""
        key = canonical_name(name)
        out: list[Header] = []
        placed = False
        for f in self._fields:
            if f.key == key:
                if not placed and value is not None:
                    out.append(Header(name=f.name, key=key, value=value))
                    placed = True
                continue
            out.append(f)
        if not placed and value is not None:
            out.append(header(name, value))
        return Headers(tuple(out))

    def append(self, name: str, value: str) -> Headers:
        """A copy with one more header line at the end."""
        return Headers((*self._fields, header(name, value)))

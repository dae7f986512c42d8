"""Firmware and software versions compared as versions, never as strings.

How this works: a version string is turned into a :class:`VersionKey`, a tuple that
sorts the way the vendor means it, and keys are compared. A string is read as

* dotted numbers, ``66.86.0.15`` (Yealink), ``1.0.7.81`` (Grandstream), ``14.2.1``
  (Cisco), ``6.4.3.5156`` (Poly): compared number by number, trailing zeros ignored
  (``14.2`` == ``14.2.0``), exactly as :class:`packaging.version.Version` orders
  release segments (PEP 440 "Version scheme: release"; the unit tests check that the
  two agree on dotted numbers);
* dotted numbers followed by a suffix. PEP 440 would read ``7.4.8a`` as a
  *pre-release* of 7.4.8, but firmware vendors use letters for a *later* build of the
  same numbers: Cisco MPP ``11.3.7SR1`` (service release 1), Cisco SPA ``7.4.8a``.
  So a suffix sorts after the bare numbers, compared token by token (letters as
  case-folded text, digits as numbers: ``SR2`` < ``SR10``) — except the words
  ``dev``, ``alpha``, ``beta``, ``pre`` and ``rc``, which sort before the bare
  numbers in that order, and ``release``, ``stable`` and ``final``, which mean the
  bare numbers (FreeSWITCH ``1.10.12-release``). Build metadata after ``+``
  (Gigaset ``2.43.0+build.5f0a106``) is ignored, as in SemVer 2.0.0 §10. A
  parenthesised suffix (Cisco's ``14.2(1)``) reads as one more number: ``14.2.1``.

Anything that does not start with a number is not a version: :func:`parse_version`
raises :class:`VersionError` (one line) and :func:`try_parse_version` returns None.
Sans-IO: no I/O, no clock; pure functions over strings.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

__all__ = [
    "MAX_VERSION_LENGTH",
    "VersionError",
    "VersionKey",
    "compare_versions",
    "parse_version",
    "try_parse_version",
]

#: The longest version string read (real ones are under 40 characters: Avaya's
#: ``H1xx_SIP-R1_0_2_3_3050`` is the longest seen; a longer one is not a version).
MAX_VERSION_LENGTH = 64
#: Numbers in a version (Gigaset and Poly use 4, nobody more than 6).
MAX_VERSION_PARTS = 12

_HEAD = re.compile(r"([0-9]{1,18}(?:\.[0-9]{1,18}){0,11})")
_PAREN = re.compile(r"\(([0-9]{1,18})\)")
_TOKEN = re.compile(r"[0-9]{1,18}|[A-Za-z]+")
#: Pre-release words, in their order (PEP 440 "Pre-releases"; ``pre`` and ``rc`` tie).
_PRE = {"dev": 0, "alpha": 1, "beta": 2, "pre": 3, "rc": 3}
_RELEASE_WORDS = frozenset({"release", "stable", "final"})

#: Suffix ranks: a pre-release sorts before the bare numbers, a post-build after.
_PRE_RANK, _BARE_RANK, _POST_RANK = -1, 0, 1


class VersionError(ValueError):
    """A string that is not a version; the message is one line."""


@dataclass(frozen=True, slots=True, kw_only=True, order=True)
class VersionKey:
    """A version as a sortable key: the release numbers (trailing zeros dropped),
    then the suffix's rank and tokens (see the module docstring)."""

    release: tuple[int, ...]
    rank: int = _BARE_RANK
    suffix: tuple[tuple[int, int | str], ...] = ()
    #: The string as given (shown to people; not compared).
    text: str = field(default="", compare=False)


def parse_version(text: str) -> VersionKey:
    """The :class:`VersionKey` of ``text``; raises :class:`VersionError`."""
    raw = text.strip()
    if not raw or len(raw) > MAX_VERSION_LENGTH:
        raise VersionError(f"not a version: {text[:MAX_VERSION_LENGTH]!r}")
    raw = raw.partition("+")[0]
    head = _HEAD.match(raw)
    if head is None:
        raise VersionError(f"not a version: {text!r} (must start with a number)")
    numbers = [int(n) for n in head.group(1).split(".")]
    rest = raw[head.end() :]
    paren = _PAREN.match(rest)
    if paren is not None:
        numbers.append(int(paren.group(1)))
        rest = rest[paren.end() :]
    if len(numbers) > MAX_VERSION_PARTS:
        raise VersionError(f"not a version: {text!r} (more than {MAX_VERSION_PARTS} numbers)")
    while len(numbers) > 1 and numbers[-1] == 0:
        numbers.pop()
    rank, suffix = _suffix(rest)
    return VersionKey(release=tuple(numbers), rank=rank, suffix=suffix, text=text.strip())


def try_parse_version(text: str | None) -> VersionKey | None:
    """:func:`parse_version`, or None for None or a string that is not a version."""
    if text is None:
        return None
    try:
        return parse_version(text)
    except VersionError:
        return None


def compare_versions(a: str, b: str) -> int:
    """-1, 0 or 1 as ``a`` is older than, the same as or newer than ``b``.
    Raises :class:`VersionError` when either is not a version."""
    ka, kb = parse_version(a), parse_version(b)
    return (ka > kb) - (ka < kb)


def _suffix(rest: str) -> tuple[int, tuple[tuple[int, int | str], ...]]:
    """The rank and tokens of what follows the numbers."""
    tokens = _TOKEN.findall(rest)
    words = [t.casefold() for t in tokens]
    if not tokens or all(w in _RELEASE_WORDS for w in words):
        return _BARE_RANK, ()
    if words[0] in _PRE:
        return _PRE_RANK, tuple(_token(t) for t in [str(_PRE[words[0]]), *tokens[1:]])
    return _POST_RANK, tuple(_token(t) for t in tokens)


def _token(token: str) -> tuple[int, int | str]:
    """Digits compare as numbers, letters as text; numbers sort after letters."""
    return (1, int(token)) if token.isdigit() else (0, token.casefold())

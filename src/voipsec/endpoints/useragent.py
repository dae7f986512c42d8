"""Which device sent a request: vendor, model and firmware version from its User-Agent.

How this works: a :class:`DeviceFingerprint` is an anchored regular expression over the
User-Agent header's value (RFC 3261 §20.41: ``product [/ version]`` and comments),
with the named groups ``model`` and ``version`` (and optionally ``family``), written
from the vendor's real User-Agent format (the data file names a source for each).
:func:`identify` tries the fingerprints in order and returns the first match as a
:class:`Device`. The header value is cut to :data:`MAX_USER_AGENT` characters first,
and the expressions are checked when loaded (:func:`check_pattern`): anchored with
``^``, no quantified group that itself holds a quantifier (the shape of catastrophic
backtracking), bounded length — so a hostile User-Agent costs linear time.

Sans-IO: the fingerprints come in as data (``endpoints/loader.py`` reads the files).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = [
    "MAX_MODEL_LENGTH",
    "MAX_PATTERN_LENGTH",
    "MAX_USER_AGENT",
    "Device",
    "DeviceFingerprint",
    "FingerprintError",
    "check_pattern",
    "identify",
]

#: A User-Agent is cut to this many characters before matching. Real ones are under
#: 120 (Gigaset's ``Gigaset N870 IP PRO/83.V2.43.0+build.5f0a106;7C2F80XXXXXX;
#: Handset=250`` is 70); the SIP parser already bounds the header
#: (``sip/limits.py``), this bounds the matching work on top.
MAX_USER_AGENT = 256
#: The longest fingerprint expression accepted from a data file.
MAX_PATTERN_LENGTH = 300
#: The longest model or family name kept from a match.
MAX_MODEL_LENGTH = 64

#: A group holding a quantifier and followed by one, where one of the two is
#: unbounded: ``(a+)+``, ``(\w*\.)*``, ``(x+){2,}``, ``(a{1,3})+`` — the shape of
#: exponential backtracking (OWASP "Regular expression Denial of Service"), refused
#: in fingerprints. Bounded in bounded, such as ``(?:\.[0-9]{1,4}){2,4}``, stays
#: allowed: on a User-Agent cut to MAX_USER_AGENT characters its work is bounded by
#: the product of the bounds.
#: Group openers whose ``?`` is not a quantifier, read as a plain ``(`` first.
_GROUP_PREFIX = re.compile(r"\(\?(?:P<\w+>|[:=!]|<[=!])")
_BODY = r"\((?:[^()\\]|\\.)*"
_END = r"(?:[^()\\]|\\.)*\)"
_ANY_Q = r"(?:[+*?]|\{[0-9,]+\})"
_REPEAT_Q = r"(?:[+*]|\{[0-9,]+\})"
_UNBOUNDED_Q = r"(?:[+*]|\{[0-9]*,\})"
_NESTED_QUANTIFIER = re.compile(
    f"{_BODY}{_UNBOUNDED_Q}{_END}{_REPEAT_Q}|{_BODY}{_ANY_Q}{_END}{_UNBOUNDED_Q}"
)
_REQUIRED_GROUPS = frozenset({"model", "version"})
_OPTIONAL_GROUPS = frozenset({"family"})


class FingerprintError(ValueError):
    """A fingerprint expression that cannot be used; one line saying why."""


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceFingerprint:
    """One vendor's User-Agent format. ``family`` is used when the pattern has no
    ``family`` group; ``model`` likewise when it has no ``model`` group (a product
    with one model, such as a softphone)."""

    name: str
    vendor: str
    pattern: re.Pattern[str]
    family: str = ""
    model: str = ""
    kind: str = "phone"
    source: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Device:
    """What a User-Agent says about its device. ``version`` is the firmware or
    software version as written (compare it with :mod:`.versions`); ``None`` when
    the User-Agent names no version. ``fingerprint`` is the matching entry's name."""

    vendor: str
    family: str
    model: str
    version: str | None
    kind: str
    fingerprint: str


def check_pattern(pattern: str, *, fixed_model: bool = False) -> re.Pattern[str]:
    """``pattern`` compiled, or :class:`FingerprintError` unless it is a usable
    fingerprint: anchored at the start, bounded, no nested quantifier, compiles, and
    has the named group ``version`` (and ``model`` unless ``fixed_model``), no others
    than those and ``family``."""
    if len(pattern) > MAX_PATTERN_LENGTH:
        raise FingerprintError(f"longer than {MAX_PATTERN_LENGTH} characters")
    if not pattern.startswith("^"):
        raise FingerprintError("must be anchored with '^'")
    if _NESTED_QUANTIFIER.search(_GROUP_PREFIX.sub("(", pattern)) is not None:
        raise FingerprintError("a quantified group holds a quantifier (catastrophic backtracking)")
    try:
        compiled = re.compile(pattern)
    except re.error as exc:
        raise FingerprintError(f"not a regular expression: {exc}") from None
    groups = set(compiled.groupindex)
    required = _REQUIRED_GROUPS - ({"model"} if fixed_model else set())
    if not required <= groups:
        missing = ", ".join(sorted(required - groups))
        raise FingerprintError(f"needs the named group(s) {missing}")
    extra = groups - _REQUIRED_GROUPS - _OPTIONAL_GROUPS
    if extra:
        raise FingerprintError(f"unknown named group(s) {', '.join(sorted(extra))}")
    return compiled


def identify(user_agent: str, fingerprints: Iterable[DeviceFingerprint]) -> Device | None:
    """The device ``user_agent`` names, from the first fingerprint that matches, or
    None. The value is cut to :data:`MAX_USER_AGENT` characters and stripped first."""
    text = user_agent[:MAX_USER_AGENT].strip()
    if not text:
        return None
    for fp in fingerprints:
        found = fp.pattern.match(text)
        if found is not None:
            return _device(fp, found)
    return None


def _device(fp: DeviceFingerprint, found: re.Match[str]) -> Device:
    groups = found.groupdict()
    version = groups.get("version") or None
    return Device(
        vendor=fp.vendor,
        family=(groups.get("family") or fp.family)[:MAX_MODEL_LENGTH],
        model=(groups.get("model") or fp.model)[:MAX_MODEL_LENGTH],
        version=version,
        kind=fp.kind,
        fingerprint=fp.name,
    )

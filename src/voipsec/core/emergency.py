"""Emergency calls always go through (issue 18 item 4), sans-IO.

How this works: routing (core/routing.py) asks :meth:`EmergencyNumbers.match` about a
user's dialled string before the dial plan sees it. The string is decoded
(``%20``, RFC 3261 §19.1.2) and stripped of the E.123 visual separators the dial plan
also drops, and must then *equal* a configured number: ``"1 1 2"`` is 112, but
``"+112"``, ``"0112"``, ``"+44 112"`` and ``"1120"`` are not, and go through the dial
plan and the class of service like any number. No prefix is added: the dial plan
would turn 112 into ``+44112`` (a national number) or refuse 000 outright.

An emergency call is of kind :data:`EMERGENCY`, which :func:`voipsec.core.dialplan.allows`
grants to every class of service, including ``internal`` and a class it does not
know. It still needs an authenticated caller (digest or device certificate): RFC 7852
and NENA i3 allow unauthenticated emergency calls in some regimes, but an open path to
a PSAP through us is a swatting and denial-of-service vector for anyone on the
internet, and a phone that registers here can already authenticate. Calls from a
trunk never reach it (a carrier cannot use us to reach another trunk).

The device quarantine of issue 18 (``restrict``: internal calls and emergency numbers
only) decides with :func:`restricted_allows`; any other later limit on a caller asks
:func:`exempt` first.

Failure mode: fails OPEN towards the call. An emergency number is routed whatever the
caller's class, fraud counters, suspension or the server's call limit; only a missing
route fails it (503, logged CRITICAL and alerted by the shell, never silently).
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass

from ..config import Config
from ..config.checks import (
    DEFAULT_EMERGENCY_NUMBERS,
    MAX_EMERGENCY_DIGITS,
    MAX_EMERGENCY_NUMBERS,
    MIN_EMERGENCY_DIGITS,
    check_emergency_numbers,
)
from .dialplan import EMERGENCY, CallKind

__all__ = [
    "DEFAULT_EMERGENCY_NUMBERS",
    "EMERGENCY",
    "MAX_EMERGENCY_DIALLED",
    "MAX_EMERGENCY_DIGITS",
    "MAX_EMERGENCY_NUMBERS",
    "MIN_EMERGENCY_DIGITS",
    "EmergencyNumbers",
    "exempt",
    "restricted_allows",
]

#: ITU-T E.123 visual separators, as the dial plan drops them (core/dialplan.py rule 3).
_SEPARATORS = str.maketrans("", "", " -.()")
_ASCII_DIGITS = frozenset("0123456789")
#: Longest dialled string looked at: the longest number with a separator between
#: every digit, escaped (``%20``, 3 characters); anything longer is no emergency number.
MAX_EMERGENCY_DIALLED = MAX_EMERGENCY_DIGITS * 4


@dataclass(frozen=True, slots=True, kw_only=True)
class EmergencyNumbers:
    """The site's emergency numbers and the trunk they go to."""

    numbers: frozenset[str] = frozenset()
    #: The trunk name; "" for the dial plan's route of ``+<country code><number>``.
    trunk: str = ""

    @classmethod
    def of(cls, numbers: Iterable[str], trunk: str = "") -> EmergencyNumbers:
        """Checked like ``calls.emergency_numbers`` (ValueError, one line)."""
        return cls(numbers=frozenset(check_emergency_numbers(list(numbers))), trunk=trunk)

    @classmethod
    def from_config(cls, config: Config) -> EmergencyNumbers:
        """``calls.emergency_numbers`` and ``calls.emergency_trunk`` (validated at load)."""
        calls = config.calls
        return cls(numbers=frozenset(calls.emergency_numbers), trunk=calls.emergency_trunk)

    def match(self, dialled: str) -> str | None:
        """The emergency number ``dialled`` is (its digits), ``None`` when it is not one:
        only separators may surround or split the digits, no prefix is allowed."""
        if not self.numbers or len(dialled) > MAX_EMERGENCY_DIALLED:
            return None
        digits = urllib.parse.unquote(dialled).translate(_SEPARATORS)
        if not digits or not set(digits) <= _ASCII_DIGITS:
            return None
        return digits if digits in self.numbers else None

    def is_emergency(self, dialled: str) -> bool:
        """Whether ``dialled`` is one of the emergency numbers."""
        return self.match(dialled) is not None


def exempt(kind: CallKind) -> bool:
    """Whether a call of ``kind`` is exempt from the caller's own limits: class of
    service, fraud refusals and duration limits, concurrency and budget, device
    restriction. Only emergency calls are."""
    return kind == EMERGENCY


def restricted_allows(kind: CallKind) -> bool:
    """What a restricted (quarantined) device may still call: internal users and
    emergency numbers, nothing that leaves through a trunk at a cost."""
    return kind in ("internal", EMERGENCY)

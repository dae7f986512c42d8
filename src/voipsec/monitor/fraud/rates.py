"""Prices per minute by E.164 prefix and the country code of a number: what the spend
and new-country checks look up on every call."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from .model import MAX_RATES

__all__ = ["Rate", "RateTable", "country_code"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Rate:
    prefix: str
    #: Price of a minute, in the site's currency units.
    per_minute: float
    description: str = ""


class RateTable:
    """Price per minute by E.164 prefix, longest prefix first; "+" is the default."""

    __slots__ = ("_lengths", "_rates")

    def __init__(self, rates: Iterable[Rate] = ()) -> None:
        self._rates: dict[str, Rate] = {}
        for rate in rates:
            if len(self._rates) >= MAX_RATES:
                raise ValueError(f"more than {MAX_RATES} rates")
            self._rates[rate.prefix] = rate
        self._lengths = tuple(sorted({len(p) for p in self._rates}, reverse=True))

    def __len__(self) -> int:
        return len(self._rates)

    def lookup(self, e164: str) -> Rate | None:
        """The rate of the longest prefix of ``e164``; None when none matches."""
        rates = self._rates
        for n in self._lengths:
            if n <= len(e164):
                rate = rates.get(e164[:n])
                if rate is not None:
                    return rate
        return None


# ITU-T E.164 country codes (ITU Operational Bulletin list of assigned codes): 1 (NANP)
# and 7 have one digit, these have two, every other code has three. E.164 codes are a
# prefix code, so a number that starts with none of these starts with a 3-digit code
# (assigned or spare: either way a "country" of its own for the new-country check).
_TWO_DIGIT_CODES = frozenset(
    "20 27 30 31 32 33 34 36 39 40 41 43 44 45 46 47 48 49 51 52 53 54 55 56 57 58 "  # noqa: SIM905
    "60 61 62 63 64 65 66 81 82 84 86 90 91 92 93 94 95 98".split()
)


def country_code(e164: str) -> str | None:
    """The E.164 country code of ``+digits`` ("+442071234567" -> "44"); None when the
    number is too short to hold one."""
    if len(e164) < 2 or e164[0] != "+":
        return None
    first = e164[1]
    if first in "17":
        return first
    if e164[1:3] in _TWO_DIGIT_CODES:
        return e164[1:3]
    return e164[1:4] if len(e164) >= 4 else None

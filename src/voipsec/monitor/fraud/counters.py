"""Per-(rule, user) counters of the fraud engine and the checks of their snapshots.

How this works: each check that counts keeps one small object per (rule, user) — a
sliding window of times, the numbers dialled in a window, an incrementing run, active
calls, the day's spend, an hour-of-week baseline. Each can ``dump`` itself to
JSON-able data and ``load`` it back, validating every field: a snapshot that cannot
be used raises :class:`FraudStateError` naming where in the state it broke.
"""

from __future__ import annotations

import math
import re
from array import array
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from .model import (
    MAX_BASELINE_CATCH_UP_HOURS,
    MAX_DESTINATIONS_PER_HOUR,
    MAX_WINDOW_TIMESTAMPS,
    FraudStateError,
)

STATE_VERSION = 1
_DIGITS = re.compile(r"[0-9]{1,15}")


def _dict(value: object, where: str) -> dict[str, Any]:
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise FraudStateError(f"state: {where}: must be a mapping")
    return value


def _list(value: object, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise FraudStateError(f"state: {where}: must be a list")
    return value


def _str(value: object, where: str) -> str:
    if not isinstance(value, str):
        raise FraudStateError(f"state: {where}: must be a string")
    return value


def _digits(value: object, where: str) -> str:
    text = _str(value, where)
    if text and _DIGITS.fullmatch(text) is None:
        raise FraudStateError(f"state: {where}: must be digits")
    return text


def _float(value: object, where: str) -> float:
    if type(value) not in (int, float) or not math.isfinite(cast(float, value)):
        raise FraudStateError(f"state: {where}: must be a number")
    return float(cast(float, value))


def _floats(value: object, where: str) -> list[float]:
    return [_float(x, where) for x in _list(value, where)]


class _Times:
    """Times of the attempts in a sliding window (oldest first)."""

    __slots__ = ("times",)

    def __init__(self) -> None:
        self.times: deque[float] = deque()

    def add(self, now: float, window: float) -> int:
        times = self.times
        cut = now - window
        while times and times[0] <= cut:
            times.popleft()
        times.append(now)
        if len(times) > MAX_WINDOW_TIMESTAMPS:
            times.popleft()
        return len(times)

    def dump(self) -> object:
        return list(self.times)

    def load(self, data: object, where: str) -> None:
        self.times = deque(_floats(data, where)[-MAX_WINDOW_TIMESTAMPS:])


class _Repeat:
    """(time, number) of the attempts in a window, with a count per number."""

    __slots__ = ("counts", "entries")

    def __init__(self) -> None:
        self.entries: deque[tuple[float, str]] = deque()
        self.counts: dict[str, int] = {}

    def add(self, now: float, number: str, window: float) -> int:
        entries = self.entries
        counts = self.counts
        cut = now - window
        while entries and (entries[0][0] <= cut or len(entries) >= MAX_WINDOW_TIMESTAMPS):
            self._drop()
        entries.append((now, number))
        n = counts.get(number, 0) + 1
        counts[number] = n
        return n

    def _drop(self) -> None:
        _, old = self.entries.popleft()
        left = self.counts[old] - 1
        if left:
            self.counts[old] = left
        else:
            del self.counts[old]

    def dump(self) -> object:
        return [[t, n] for t, n in self.entries]

    def load(self, data: object, where: str) -> None:
        for item in _list(data, where)[-MAX_WINDOW_TIMESTAMPS:]:
            pair = _list(item, where)
            if len(pair) != 2:
                raise FraudStateError(f"state: {where}: entries must be [time, number]")
            number = _str(pair[1], where)
            self.entries.append((_float(pair[0], where), number))
            self.counts[number] = self.counts.get(number, 0) + 1


class _Run:
    """The user's last number and the times of the incrementing run ending in it."""

    __slots__ = ("first", "last", "times")

    def __init__(self) -> None:
        self.last = ""
        self.first = ""
        self.times: deque[float] = deque()

    def add(self, now: float, digits: str, window: float) -> int:
        last = self.last
        times = self.times
        if digits == last:
            pass  # a retry of the same number neither extends nor breaks a run
        elif times and len(digits) == len(last) and int(digits) == int(last) + 1:
            times.append(now)
        else:
            times.clear()
            times.append(now)
            self.first = digits
        self.last = digits
        cut = now - window
        # Steps older than the window (or past the limit) leave the run from its start.
        while len(times) > 1 and (times[0] <= cut or len(times) > MAX_WINDOW_TIMESTAMPS):
            times.popleft()
            self.first = str(int(self.first) + 1).zfill(len(digits))
        return len(times)

    def dump(self) -> object:
        return {"last": self.last, "first": self.first, "times": list(self.times)}

    def load(self, data: object, where: str) -> None:
        d = _dict(data, where)
        self.last = _digits(d.get("last", ""), where)
        self.first = _digits(d.get("first", ""), where)
        self.times = deque(_floats(d.get("times", []), where)[-MAX_WINDOW_TIMESTAMPS:])


class _Active:
    """Calls of the user in the rule's scope that were allowed and have not ended."""

    __slots__ = ("count",)

    def __init__(self) -> None:
        self.count = 0

    def dump(self) -> object:
        return self.count

    def load(self, data: object, where: str) -> None:
        if type(data) is not int or data < 0:
            raise FraudStateError(f"state: {where}: must be a count")
        self.count = data


class _Spend:
    """What the user spent on the local calendar day ``day`` (a date ordinal)."""

    __slots__ = ("amount", "day")

    def __init__(self) -> None:
        self.day = 0
        self.amount = 0.0

    def today(self, day: int) -> float:
        if day != self.day:
            self.day, self.amount = day, 0.0
        return self.amount

    def dump(self) -> object:
        return {"day": self.day, "amount": self.amount}

    def load(self, data: object, where: str) -> None:
        d = _dict(data, where)
        day = d.get("day")
        if type(day) is not int:
            raise FraudStateError(f"state: {where}: day must be an integer")
        self.day = day
        self.amount = _float(d.get("amount"), where)


class _Baseline:
    """EWMA of one metric per hour-of-week slot, and the hour being counted now."""

    __slots__ = ("current", "destinations", "ewma", "hour", "seen")

    def __init__(self) -> None:
        self.ewma = array("d", bytes(8 * 168))
        self.seen = array("I", bytes(4 * 168))
        #: Local hour key (date ordinal * 24 + hour) being counted; -1: none yet.
        self.hour = -1
        self.current = 0.0
        self.destinations: set[str] = set()

    def roll(self, key: int, alpha: float) -> None:
        """Move to hour ``key``, folding the finished hour and the silent ones since."""
        hour = self.hour
        if key <= hour:
            return  # same hour (or a clock step back: count it in the current one)
        if hour >= 0:
            self._fold(hour, self.current, alpha)
            for k in range(hour + 1, min(key, hour + 1 + MAX_BASELINE_CATCH_UP_HOURS)):
                self._fold(k, 0.0, alpha)
        self.hour = key
        self.current = 0.0
        self.destinations = set()

    def _fold(self, key: int, value: float, alpha: float) -> None:
        slot = _slot(key)
        seen = self.seen[slot]
        self.ewma[slot] = value if seen == 0 else alpha * value + (1 - alpha) * self.ewma[slot]
        if seen < 0xFFFFFFFF:
            self.seen[slot] = seen + 1

    def dump(self) -> object:
        return {
            "ewma": list(self.ewma),
            "seen": list(self.seen),
            "hour": self.hour,
            "current": self.current,
            "destinations": sorted(self.destinations),
        }

    def load(self, data: object, where: str) -> None:
        d = _dict(data, where)
        ewma = _floats(d.get("ewma"), where)
        seen = _list(d.get("seen"), where)
        if len(ewma) != 168 or len(seen) != 168:
            raise FraudStateError(f"state: {where}: ewma and seen must have 168 slots")
        if not all(type(s) is int and 0 <= s <= 0xFFFFFFFF for s in seen):
            raise FraudStateError(f"state: {where}: seen must be counts")
        hour = d.get("hour")
        if type(hour) is not int:
            raise FraudStateError(f"state: {where}: hour must be an integer")
        self.ewma = array("d", ewma)
        self.seen = array("I", cast(list[int], seen))
        self.hour = hour
        self.current = _float(d.get("current", 0.0), where)
        dests = _list(d.get("destinations", []), where)[:MAX_DESTINATIONS_PER_HOUR]
        self.destinations = {_str(x, where) for x in dests}


def _slot(key: int) -> int:
    """Hour-of-week slot (0 = Monday 00:00) of a local hour key; ordinal 1 is a Monday."""
    return ((key // 24 - 1) % 7) * 24 + key % 24


_State = _Times | _Repeat | _Run | _Active | _Spend | _Baseline
_STATE_OF: dict[str, Callable[[], _State]] = {
    "calls_per_minute": _Times,
    "calls_per_hour": _Times,
    "calls_per_day": _Times,
    "concurrent_calls": _Active,
    "repeated_number": _Repeat,
    "incrementing_numbers": _Run,
    "spend": _Spend,
    "unusual_pattern": _Baseline,
}


class _User:
    __slots__ = ("countries", "states", "throttled")

    def __init__(self) -> None:
        self.states: dict[str, _State] = {}
        #: Country codes of calls this user was allowed to make.
        self.countries: set[str] = set()
        #: Rule id -> time of the last call a throttle of that rule let through.
        self.throttled: dict[str, float] = {}


@dataclass(frozen=True, slots=True, kw_only=True)
class _Suspension:
    rule: str
    time: float
    detail: str

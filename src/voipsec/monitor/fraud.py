"""Toll-fraud and anomaly detection for outgoing calls, sans-IO.

How this works: the B2BUA asks :meth:`FraudEngine.check` about every outgoing call
before routing it (an :class:`Attempt`: who, what was dialled, its E.164 number and
kind, the time) and gets a :class:`Decision`: allowed or refused (403 and a reason
naming the rule), every rule the attempt violates (:class:`Violation`: rule id, check,
value, threshold, level, action and one human line), and how long the call may last.
It then reports what became of the call (:meth:`~FraudEngine.answered`,
:meth:`~FraudEngine.ended`; the latter books the spend and returns the violations
only known after a call: its duration, the day's spend) and the calls that come in
from trunks (:meth:`~FraudEngine.inbound`, :meth:`~FraudEngine.inbound_ended`: the
Wangiri "one ring and hang up" calls whose call-backs cost money). The engine owns no
socket and reads no clock: every time is an argument (Unix seconds, since days, hours
and time zones matter), so tests drive a fake clock.

A :class:`FraudRule` applies to some users (``users``, ``groups``, default all), some
destinations (E.164 ``prefixes`` minus ``except_prefixes``, call ``kinds``) and a time
window (``days``, ``hours`` in an IANA ``timezone``), and runs one check with a
warning and/or a critical :class:`Level`: a threshold and an action. A value above the
threshold violates the level (a duration *reaching* it); the critical level wins
when both are passed. Actions are graded: ``alert`` reports, ``throttle`` lets one call
through every ``interval`` seconds, ``block`` refuses the call, ``suspend`` refuses it
and every later call of the user until :meth:`FraudEngine.lift`.

State is kept per (rule, user): a rule only counts the attempts it applies to, so
"more than 5 international calls a minute" counts international calls. Attempts are
counted when checked, refused or not (a blocked burst is still a burst); an attempt
becomes an active call (concurrency, duration, spend) only when it is allowed. Windows
are exact sliding windows over the times of the attempts (no reset at a minute or at
midnight); the daily budget is per calendar day in the rule's time zone.

The checks (``FraudRule.check``), each with the value its thresholds apply to:

* ``calls_per_minute`` / ``calls_per_hour`` / ``calls_per_day``: attempts in the last
  60 s / 3600 s / 86400 s, this one included;
* ``concurrent_calls``: allowed calls not yet ended, this one included;
* ``duration``: answered seconds, judged at ended(); the least threshold whose action
  is block or suspend is the call's ``max_duration``;
* ``repeated_number``: attempts to this same number within ``window`` seconds;
* ``incrementing_numbers``: numbers dialled in a row, each the previous plus one
  (...001, ...002, ...003), within ``window`` seconds;
* ``spend``: today's spend plus ``projected_minutes`` of this call at its rate; at
  ended() the day's spend (reported by the call that crosses a level); a blocking
  budget also cuts the call where the budget runs out (``max_duration``);
* ``high_risk`` (destination on the high-risk list), ``new_country`` (a country code
  this user was never allowed to call), ``destination`` (any call in the rule's
  scope): 1, with threshold 0;
* ``wangiri_callback``: short (< ``ring_seconds``) unanswered inbound calls from this
  number within ``window`` seconds; "international" is the rule's ``kinds`` of the
  call-back, which is the same number;
* ``unusual_pattern``: this hour's calls, distinct destinations or minutes (``metric``)
  against an EWMA per hour-of-week slot (168 slots, weight ``alpha``); thresholds are
  factors over ``max(baseline, floor)``, and a slot alerts only after ``warmup``
  observations (weeks).

Rules are indexed when the engine is built: one index for the rules of everyone and
one per user for the rules that name the user or a group of theirs, each by call kind
and by destination prefix (a look-up per distinct prefix length, at most 15), so a
check touches only the rules that apply to its user and number, each once.

Failure mode: fails open on memory pressure and closed on suspension. At most
:data:`MAX_TRACKED_USERS` users' counters are kept (the least recently seen are
forgotten, and their counts restart), at most :data:`MAX_ACTIVE_CALLS` calls and
:data:`MAX_WINDOW_TIMESTAMPS` times per window; nothing grows without bound. A
suspension is never forgotten: only :meth:`FraudEngine.lift` ends it. Rule, rate and
prefix files with any error stop the load (:class:`FraudRuleError`, one line naming
the file, rule and field) instead of running with part of a ruleset; a snapshot that
cannot be read raises :class:`FraudStateError` and leaves the engine empty.
"""

from __future__ import annotations

import csv
import io
import math
import re
from array import array
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from importlib.resources import files
from pathlib import Path
from typing import Any, Literal, TypeGuard, cast, get_args
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml

__all__ = [
    "ACTIONS",
    "CHECKS",
    "HIGH_RISK_FILE",
    "MAX_ACTIVE_CALLS",
    "MAX_BASELINE_CATCH_UP_HOURS",
    "MAX_COUNTRIES_PER_USER",
    "MAX_DESTINATIONS_PER_HOUR",
    "MAX_PREFIXES",
    "MAX_PREFIXES_PER_RULE",
    "MAX_RATES",
    "MAX_RULES",
    "MAX_RULE_FILE_BYTES",
    "MAX_RULE_ID_LENGTH",
    "MAX_TRACKED_USERS",
    "MAX_USERS_PER_RULE",
    "MAX_WANGIRI_CALLS_PER_NUMBER",
    "MAX_WANGIRI_NUMBERS",
    "MAX_WINDOW_TIMESTAMPS",
    "RATES_FILE",
    "RULES_FILE",
    "Attempt",
    "Decision",
    "FraudEngine",
    "FraudRule",
    "FraudRuleError",
    "FraudStateError",
    "FraudStatistics",
    "Level",
    "Rate",
    "RateTable",
    "Violation",
    "country_code",
    "default_data_dir",
    "load_prefixes",
    "load_rates",
    "load_rules",
]

# -- limits ----------------------------------------------------------------------------

#: Rules in one engine (all files together). The benchmark's 1,000 with room for a
#: per-user rule for every user of a mid-size site; index memory grows with it.
MAX_RULES = 10_000
#: A rule file larger than this is refused before parsing (YAML of 10,000 rules is
#: about 2 MB; this keeps a wrong file from being read into memory whole).
MAX_RULE_FILE_BYTES = 4 * 1024 * 1024
#: Rule ids are names in alerts, logs and 403 reasons: short.
MAX_RULE_ID_LENGTH = 64
#: Users whose counters are kept; the least recently seen are forgotten past this
#: (their windows restart empty). Ten times the benchmark's 10,000 users.
MAX_TRACKED_USERS = 100_000
#: Times kept in one sliding window (and largest count threshold + 1): a window holds
#: one float per attempt it saw, so this bounds the memory of one (rule, user) key. A
#: user making more than 10,000 calls a day is past any sane threshold already.
MAX_WINDOW_TIMESTAMPS = 10_000
#: Calls between check() and ended() tracked at once (the B2BUA's own ``max_calls``
#: default is 10,000); past this the oldest is ended unbilled.
MAX_ACTIVE_CALLS = 100_000
#: ``users`` names in one rule; more is a group's job.
MAX_USERS_PER_RULE = 10_000
#: E.164 prefixes in one rule's ``prefixes`` or ``except_prefixes``.
MAX_PREFIXES_PER_RULE = 10_000
#: Lines of a high-risk prefix file (commercial IRSF lists of number ranges reach
#: tens of thousands; more belongs in a database, not in memory per process).
MAX_PREFIXES = 100_000
#: Rows of a rate table (a carrier's full A-Z deck is some 20,000-60,000 rows).
MAX_RATES = 100_000
#: Caller numbers remembered for Wangiri call-back checks (least recent forgotten).
MAX_WANGIRI_NUMBERS = 100_000
#: Short unanswered calls remembered per caller number (more says nothing new).
MAX_WANGIRI_CALLS_PER_NUMBER = 32
#: Country codes remembered per user: ITU-T E.164 has about 250 in use (spare 3-digit
#: codes make more possible); past this new countries are not learned (they alert again).
MAX_COUNTRIES_PER_USER = 300
#: Distinct destinations counted in one hour for the ``destinations`` baseline; past
#: this the count stops growing (it is far above any baseline already).
MAX_DESTINATIONS_PER_HOUR = 1_000
#: Hours of silence folded into a baseline as zeros when a user comes back (4 weeks:
#: each hour-of-week slot gets at most 4 zero observations for one gap).
MAX_BASELINE_CATCH_UP_HOURS = 4 * 168

#: File names in :func:`default_data_dir` (and in a site's override directory).
RULES_FILE = "fraud.yaml"
RATES_FILE = "rates.csv"
HIGH_RISK_FILE = "high-risk.txt"

# -- vocabulary ------------------------------------------------------------------------

Check = Literal[
    "calls_per_minute",
    "calls_per_hour",
    "calls_per_day",
    "concurrent_calls",
    "duration",
    "repeated_number",
    "incrementing_numbers",
    "spend",
    "high_risk",
    "new_country",
    "destination",
    "wangiri_callback",
    "unusual_pattern",
]
Action = Literal["alert", "throttle", "block", "suspend"]
Metric = Literal["calls", "minutes", "destinations"]
CallKind = Literal["internal", "national", "international", "premium-rate"]

CHECKS: tuple[Check, ...] = get_args(Check)
ACTIONS: tuple[Action, ...] = get_args(Action)
METRICS: tuple[Metric, ...] = get_args(Metric)
CALL_KINDS: tuple[CallKind, ...] = get_args(CallKind)
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")

#: Sliding windows of the fixed-window counting checks, in seconds.
_RATE_WINDOWS: dict[str, float] = {
    "calls_per_minute": 60.0,
    "calls_per_hour": 3600.0,
    "calls_per_day": 86400.0,
}
_WINDOW_TEXT = {60.0: "60 s", 3600.0: "1 h", 86400.0: "24 h"}
#: Checks whose value is 1 when the attempt qualifies: their thresholds are 0.
_FLAG_CHECKS = frozenset({"high_risk", "new_country", "destination"})
#: Checks whose value is a count of attempts or calls (integer thresholds).
_COUNT_CHECKS = frozenset(
    {
        *_RATE_WINDOWS,
        "concurrent_calls",
        "repeated_number",
        "incrementing_numbers",
        "wangiri_callback",
    }
)
_SEVERITY: dict[str, int] = {"alert": 0, "throttle": 1, "block": 2, "suspend": 3}


class FraudRuleError(ValueError):
    """A rule, rate or prefix file that cannot be used; one line: file, rule, field, why."""


class FraudStateError(ValueError):
    """A snapshot that cannot be loaded; one line: where in the state and why."""


# -- calls in, decisions out -----------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Attempt:
    """An outgoing call about to be routed."""

    call_id: str
    #: The authenticated user placing the call.
    user: str
    #: The user part as dialled.
    dialled: str
    #: The E.164 number; None for an internal call to a user.
    e164: str | None
    #: "internal" | "national" | "international" | "premium-rate" (the dial plan's).
    kind: str
    #: Unix time in seconds (wall clock: days, hours and time zones apply to it).
    time: float


@dataclass(frozen=True, slots=True, kw_only=True)
class Violation:
    """One rule an attempt or a call passed."""

    rule: str
    check: str
    value: float
    threshold: float
    #: "warning" | "critical"
    level: str
    #: "alert" | "throttle" | "block" | "suspend"
    action: str
    #: One human line: what, who, why ("alice: 6 international calls in 60 s > 5").
    detail: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Decision:
    allowed: bool
    #: 403 when refused, None when allowed.
    status: int | None
    #: Names the rule that refused the call ("blocked by fraud rule intl-burst"); "".
    reason: str
    #: Every rule the attempt violates, in rule order.
    violations: tuple[Violation, ...]
    #: Seconds this call may last (duration and budget rules); None: no fraud limit.
    max_duration: float | None


@dataclass(frozen=True, slots=True, kw_only=True)
class FraudStatistics:
    checks: int
    allowed: int
    #: Attempts refused, whatever the reason (a rule, a throttle or a suspension).
    blocked: int
    #: Of those, refused by a throttle.
    throttled: int
    #: Violations reported (by check() and ended()); each is an alert to deliver.
    alerts: int
    warnings: int
    criticals: int
    #: Times a user was suspended, and users suspended now.
    suspensions: int
    suspended_users: int
    tracked_users: int
    evicted_users: int
    active_calls: int
    #: Calls forgotten unbilled because MAX_ACTIVE_CALLS were open.
    evicted_calls: int
    wangiri_numbers: int
    #: Per rule id: violations reported.
    rule_violations: Mapping[str, int]


# -- rules -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Level:
    """A threshold and what to do above it."""

    #: Violated when the value is above it (duration: when the call reaches it).
    threshold: float = 0.0
    action: Action = "alert"
    #: For ``throttle``: seconds between the calls let through.
    interval: float = 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class FraudRule:
    id: str
    check: Check
    warning: Level | None = None
    critical: Level | None = None
    description: str = ""
    #: Users the rule applies to; with ``groups``, the union. Both None: everyone.
    users: frozenset[str] | None = None
    groups: frozenset[str] | None = None
    #: E.164 prefixes ("+44", "+449"); None: any destination (internal calls too).
    prefixes: tuple[str, ...] | None = None
    except_prefixes: tuple[str, ...] = ()
    #: Call kinds; None: all.
    kinds: frozenset[str] | None = None
    #: Days (0 Monday .. 6 Sunday) and [start, end) minutes of the day, in ``timezone``;
    #: an end before its start wraps past midnight. None: always.
    days: frozenset[int] | None = None
    hours: tuple[tuple[int, int], ...] | None = None
    #: IANA zone for days, hours, the budget's day and the hour-of-week baseline.
    timezone: str = "UTC"
    #: repeated_number, incrementing_numbers: seconds; wangiri_callback: seconds a
    #: short inbound call keeps its number suspect.
    window: float = 0.0
    #: wangiri_callback: inbound calls unanswered for less than this are Wangiri.
    ring_seconds: float = 0.0
    #: spend: minutes of the new call counted in its projected cost.
    projected_minutes: float = 1.0
    #: unusual_pattern: what is compared, the EWMA weight of a new hour, observations of
    #: an hour-of-week slot before it alerts, and the least baseline (a quiet slot's 0).
    metric: Metric = "calls"
    alpha: float = 0.2
    warmup: int = 3
    floor: float = 1.0
    #: The file the rule was read from.
    origin: str = ""


# -- rates, prefixes, countries --------------------------------------------------------


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


# -- per-(rule, user) state ------------------------------------------------------------


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


class _Call:
    """An allowed call until ended(): what to update when it ends."""

    __slots__ = ("answered", "kind", "number", "rules", "time", "user")

    def __init__(self, user: str, number: str, kind: str, time: float) -> None:
        self.user = user
        self.number = number
        self.kind = kind
        self.time = time
        self.answered: float | None = None
        #: (rule, its state for this user, rate per minute for spend rules)
        self.rules: list[tuple[_Compiled, _State | None, float]] = []


@dataclass(frozen=True, slots=True, kw_only=True)
class _Suspension:
    rule: str
    time: float
    detail: str


# -- compiled rules and the index ------------------------------------------------------


class _Compiled:
    """A rule prepared for the hot path."""

    __slots__ = (
        "check",
        "clock",
        "critical",
        "evaluate",
        "except_lengths",
        "excepts",
        "gated",
        "id",
        "kinds",
        "lowest",
        "order",
        "rule",
        "scope",
        "stop_at",
        "timed",
        "warning",
        "window",
    )

    def __init__(self, rule: FraudRule, order: int) -> None:
        self.rule = rule
        self.id = rule.id
        self.check = rule.check
        self.order = order
        self.warning = rule.warning
        self.critical = rule.critical
        self.kinds = rule.kinds
        self.excepts = frozenset(rule.except_prefixes)
        self.except_lengths = tuple(sorted({len(p) for p in self.excepts}))
        self.timed = rule.days is not None or rule.hours is not None
        #: Whether anything but the index decides if the rule applies to an attempt.
        self.gated = self.timed or bool(self.excepts)
        self.clock = _Clock(_zone(rule.timezone))  # replaced by the engine's shared one
        #: The check's evaluator, bound by the engine.
        self.evaluate: _Evaluator = _unbound
        self.window = _RATE_WINDOWS.get(rule.check, rule.window)
        self.scope = _scope_text(rule)
        levels = [lv for lv in (rule.warning, rule.critical) if lv is not None]
        #: A value at or below this violates nothing (the hot path's first test).
        self.lowest = min(lv.threshold for lv in levels)
        #: The least threshold whose action stops a call: for duration, the seconds at
        #: which it is cut; for spend, the budget it may use up.
        stops = [lv.threshold for lv in levels if _stops(lv)]
        self.stop_at: float | None = min(stops) if stops else None

    def grade(self, value: float) -> tuple[str, Level] | None:
        critical = self.critical
        if critical is not None and value > critical.threshold:
            return "critical", critical
        warning = self.warning
        if warning is not None and value > warning.threshold:
            return "warning", warning
        return None

    def excluded(self, e164: str) -> bool:
        excepts = self.excepts
        return any(e164[:n] in excepts for n in self.except_lengths)

    def in_window(self, t: float) -> bool:
        rule = self.rule
        clock = self.clock.sync(t)
        if rule.days is not None and clock.weekday not in rule.days:
            return False
        if rule.hours is None:
            return True
        minute = clock.minute(t)
        for start, end in rule.hours:
            if (start <= minute < end) if start < end else (minute >= start or minute < end):
                return True
        return False


def _unbound(c: _Compiled, a: Attempt, number: str, user: _User, attach: _Attached) -> _Hit | None:
    raise RuntimeError(f"fraud rule {c.id} was compiled outside an engine")


def _stops(level: Level | None) -> TypeGuard[Level]:
    return level is not None and _SEVERITY[level.action] >= _SEVERITY["block"]


def _zone(name: str) -> tzinfo:
    if name == "UTC":
        return UTC
    if _ZONE_NAME.fullmatch(name) is None:
        raise ValueError(f"{name!r} is not an IANA time zone name")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(f"unknown time zone {name!r}") from None


def _scope_text(rule: FraudRule) -> tuple[str, str]:
    """(adjective, "to ..." phrase) describing the calls a rule counts, for details."""
    adjective = ""
    if rule.kinds is not None:
        adjective = "/".join(k for k in CALL_KINDS if k in rule.kinds) + " "
    target = ""
    if rule.prefixes is not None:
        shown = ", ".join(p + "..." for p in rule.prefixes[:3])
        more = len(rule.prefixes) - 3
        target = f" to {shown}" + (f" and {more} more prefixes" if more > 0 else "")
    return adjective, target


class _Index:
    """Rules of one user scope (everyone, a user, a group) by destination."""

    __slots__ = ("by_kind", "by_prefix", "lengths")

    def __init__(self) -> None:
        #: Rules without a prefix list, per call kind they accept (all kinds: each).
        self.by_kind: dict[str, list[_Compiled]] = {}
        self.by_prefix: dict[str, list[_Compiled]] = {}
        self.lengths: tuple[int, ...] = ()

    def add(self, c: _Compiled) -> None:
        prefixes = c.rule.prefixes
        if prefixes is None:
            for kind in CALL_KINDS if c.kinds is None else c.kinds:
                self.by_kind.setdefault(kind, []).append(c)
        else:
            for prefix in _outermost(prefixes):
                self.by_prefix.setdefault(prefix, []).append(c)
            self.lengths = tuple(sorted({len(p) for p in self.by_prefix}))

    def lookup(self, e164: str | None, kind: str, out: list[_Compiled]) -> None:
        """Append the rules for this destination to ``out``, each once (a rule's
        prefixes are outermost only, so one number matches at most one of them)."""
        bucket = self.by_kind.get(kind)
        if bucket:
            out.extend(bucket)
        if e164 is not None and self.lengths:
            by_prefix = self.by_prefix
            for n in self.lengths:
                if n > len(e164):
                    break
                bucket = by_prefix.get(e164[:n])
                if bucket:
                    out.extend(c for c in bucket if c.kinds is None or kind in c.kinds)


def _outermost(prefixes: Iterable[str]) -> list[str]:
    """The prefixes no other one of them starts: {"+44", "+449"} -> ["+44"]."""
    kept: dict[str, None] = {}
    for prefix in sorted(set(prefixes), key=len):
        if not any(prefix[:n] in kept for n in range(2, len(prefix))):
            kept[prefix] = None
    return list(kept)


class _Clock:
    """Local time in one zone, remembered for the current local hour: most checks fall
    in the hour of the previous one and need no time zone arithmetic. (Time zone
    transitions happen on local hour boundaries, where the remembered hour ends.)"""

    __slots__ = ("end", "hour", "hour_key", "ordinal", "start", "tz", "weekday")

    def __init__(self, tz: tzinfo) -> None:
        self.tz = tz
        self.start = self.end = math.nan  # no hour yet: every comparison fails
        self.ordinal = self.weekday = self.hour = self.hour_key = 0

    def sync(self, t: float) -> _Clock:
        """Make the fields describe the local hour holding ``t``; returns self."""
        if not self.start <= t < self.end:
            dt = datetime.fromtimestamp(t, self.tz)
            self.start = t - (dt.minute * 60 + dt.second + dt.microsecond / 1e6)
            self.end = self.start + 3600.0
            self.ordinal = dt.toordinal()
            self.weekday = dt.weekday()
            self.hour = dt.hour
            self.hour_key = self.ordinal * 24 + dt.hour
        return self

    def minute(self, t: float) -> int:
        """Minute of the local day of ``t`` (after :meth:`sync`)."""
        return self.hour * 60 + min(59, int((t - self.start) // 60))


_Hit = tuple[Violation, Level]
_Attached = list[tuple["_Compiled", _State | None, float]]
_Evaluator = Callable[["_Compiled", Attempt, str, _User, _Attached], "_Hit | None"]
_ALLOWED = Decision(allowed=True, status=None, reason="", violations=(), max_duration=None)


# -- the engine ------------------------------------------------------------------------


class FraudEngine:
    """Evaluates fraud rules over outgoing calls; see the module docstring."""

    def __init__(
        self,
        rules: Sequence[FraudRule],
        *,
        rates: RateTable,
        high_risk: Sequence[str],
        groups: Mapping[str, Iterable[str]] | None = None,
    ) -> None:
        """``groups`` maps a group name to its member users (for rules' ``groups``).
        Raises ValueError for too many rules or prefixes, a duplicate rule id or an
        unknown time zone."""
        if len(rules) > MAX_RULES:
            raise ValueError(f"more than {MAX_RULES} fraud rules")
        if len(high_risk) > MAX_PREFIXES:
            raise ValueError(f"more than {MAX_PREFIXES} high-risk prefixes")
        ids = [r.id for r in rules]
        if len(set(ids)) != len(ids):
            raise ValueError("fraud rule ids must be unique")
        self._rules = tuple(rules)
        self._rates = rates
        self._high_risk = frozenset(high_risk)
        # Longest first: a violation names the most specific listed range.
        self._high_risk_lengths = tuple(sorted({len(p) for p in self._high_risk}, reverse=True))
        self._compiled = tuple(_Compiled(r, i) for i, r in enumerate(rules))
        self._by_id = {c.id: c for c in self._compiled}
        group_members = {g: tuple(members) for g, members in (groups or {}).items()}
        # One index for the rules of everyone, one per user for the rules naming the user
        # or a group of theirs: disjoint, so a check collects each rule at most once.
        self._everyone = _Index()
        scoped: dict[str, dict[int, _Compiled]] = {}
        clocks: dict[str, _Clock] = {}
        evaluators: dict[str, _Evaluator] = {
            "calls_per_minute": self._rate,
            "calls_per_hour": self._rate,
            "calls_per_day": self._rate,
            "concurrent_calls": self._concurrent,
            "duration": self._duration,
            "repeated_number": self._repeated,
            "incrementing_numbers": self._incrementing,
            "spend": self._spend,
            "high_risk": self._high_risk_check,
            "new_country": self._new_country,
            "destination": self._destination,
            "wangiri_callback": self._wangiri_check,
            "unusual_pattern": self._unusual,
        }
        for c in self._compiled:
            r = c.rule
            c.evaluate = evaluators[r.check]
            c.clock = clocks.setdefault(r.timezone, c.clock)  # one clock per zone
            if r.users is None and r.groups is None:
                self._everyone.add(c)
                continue
            members = set(r.users or ())
            for group in r.groups or ():
                members.update(group_members.get(group, ()))
            for user in members:
                scoped.setdefault(user, {})[c.order] = c
        self._scoped: dict[str, _Index] = {}
        for user, of_user in scoped.items():
            index = self._scoped[user] = _Index()
            for order in sorted(of_user):
                index.add(of_user[order])
        self._learn_countries = any(r.check == "new_country" for r in rules)
        wangiri = [r.ring_seconds for r in rules if r.check == "wangiri_callback"]
        #: Inbound calls shorter than this are remembered (the longest rule's limit).
        self._wangiri_ring = max(wangiri, default=0.0)
        #: The least max_duration the rules of the current check asked for.
        self._limit: float | None = None
        self._reset()

    def _reset(self) -> None:
        self._users: OrderedDict[str, _User] = OrderedDict()
        self._calls: OrderedDict[str, _Call] = OrderedDict()
        self._inbound: OrderedDict[str, tuple[str, float, str]] = OrderedDict()
        #: Caller number -> (time, ring seconds, user called) of its short unanswered calls.
        self._wangiri: OrderedDict[str, deque[tuple[float, float, str]]] = OrderedDict()
        self._suspended: dict[str, _Suspension] = {}
        self._checks = 0
        self._allowed = 0
        self._blocked = 0
        self._throttled = 0
        self._alerts = 0
        self._warnings = 0
        self._criticals = 0
        self._suspensions = 0
        self._evicted_users = 0
        self._evicted_calls = 0
        self._rule_violations: dict[str, int] = {}

    @property
    def rules(self) -> tuple[FraudRule, ...]:
        return self._rules

    @classmethod
    def restore(
        cls,
        state: Mapping[str, object],
        rules: Sequence[FraudRule],
        *,
        rates: RateTable,
        high_risk: Sequence[str],
        groups: Mapping[str, Iterable[str]] | None = None,
    ) -> FraudEngine:
        """A new engine with ``rules`` and the counters of ``state`` (:meth:`snapshot`)."""
        engine = cls(rules, rates=rates, high_risk=high_risk, groups=groups)
        engine.load_state(state)
        return engine

    # -- the hot path -------------------------------------------------------------------

    def check(self, attempt: Attempt) -> Decision:
        """Decide about an outgoing call before it is routed; see the module docstring."""
        self._checks += 1
        if self._calls:
            old = self._calls.pop(attempt.call_id, None)
            if old is not None:
                self._close(old)  # the same Call-ID checked again: the first try is over
        user = attempt.user
        e164 = attempt.e164
        kind = attempt.kind
        candidates: list[_Compiled] = []
        self._everyone.lookup(e164, kind, candidates)
        index = self._scoped.get(user)
        if index is not None:
            index.lookup(e164, kind, candidates)
        state = self._user(user)
        number = e164 if e164 is not None else attempt.dialled
        now = attempt.time
        self._limit = None
        attach: _Attached = []
        hit_list: list[_Hit] | None = None
        for c in candidates:
            if c.gated:
                if c.excepts and e164 is not None and c.excluded(e164):
                    continue
                if c.timed and not c.in_window(now):
                    continue
            hit = c.evaluate(c, attempt, number, state, attach)
            if hit is not None:
                if hit_list is None:
                    hit_list = []
                hit_list.append(hit)
        suspension = self._suspended.get(user)
        if hit_list is None and suspension is None:
            self._allow(attempt, number, attach, state)
            limit = self._limit
            if limit is None:
                return _ALLOWED
            return Decision(allowed=True, status=None, reason="", violations=(), max_duration=limit)
        return self._decide(attempt, number, state, attach, hit_list or [], suspension)

    def _decide(
        self,
        attempt: Attempt,
        number: str,
        state: _User,
        attach: list[tuple[_Compiled, _State | None, float]],
        hits: list[_Hit],
        suspension: _Suspension | None,
    ) -> Decision:
        now = attempt.time
        if len(hits) > 1:
            hits.sort(key=self._hit_order)
        violations = tuple(v for v, _ in hits)
        self._count(violations)
        refusal: tuple[int, str] | None = None  # (severity, reason)
        throttled = False
        for violation, level in hits:
            action = level.action
            if action == "alert":
                continue
            if action == "throttle":
                last = state.throttled.get(violation.rule)
                if last is None or now - last >= level.interval:
                    continue
                throttled = True
                reason = f"throttled by fraud rule {violation.rule}"
            else:
                verb = "suspended" if action == "suspend" else "blocked"
                reason = f"{verb} by fraud rule {violation.rule}"
            severity = _SEVERITY[action]
            if refusal is None or severity > refusal[0]:
                refusal = (severity, reason)
            if action == "suspend" and attempt.user not in self._suspended:
                self._suspend(attempt.user, violation, now)
        if suspension is not None:
            refusal = (4, f"user suspended by fraud rule {suspension.rule}")
        if refusal is not None:
            for _, st, _ in attach:
                if isinstance(st, _Active):
                    st.count -= 1  # a refused attempt never becomes a call
            self._blocked += 1
            if throttled and refusal[0] == _SEVERITY["throttle"]:
                self._throttled += 1
            return Decision(
                allowed=False,
                status=403,
                reason=refusal[1],
                violations=violations,
                max_duration=None,
            )
        for violation, level in hits:
            if level.action == "throttle":
                state.throttled[violation.rule] = now
        self._allow(attempt, number, attach, state)
        return Decision(
            allowed=True,
            status=None,
            reason="",
            violations=violations,
            max_duration=self._limit,
        )

    def _allow(self, attempt: Attempt, number: str, attach: _Attached, state: _User) -> None:
        """Count an allowed attempt and track it as a call until ended()."""
        self._allowed += 1
        if self._learn_countries and attempt.e164 is not None:
            cc = country_code(attempt.e164)
            if cc is not None and len(state.countries) < MAX_COUNTRIES_PER_USER:
                state.countries.add(cc)
        calls = self._calls
        call = _Call(attempt.user, number, attempt.kind, attempt.time)
        call.rules = attach
        calls[attempt.call_id] = call
        if len(calls) > MAX_ACTIVE_CALLS:
            _, oldest = calls.popitem(last=False)
            self._close(oldest)
            self._evicted_calls += 1

    def _stop_at(self, seconds: float) -> None:
        """A rule wants the call cut after ``seconds``; the least such limit wins."""
        limit = self._limit
        if limit is None or seconds < limit:
            self._limit = seconds

    def _hit_order(self, hit: _Hit) -> int:
        return self._by_id[hit[0].rule].order

    def _user(self, name: str) -> _User:
        users = self._users
        state = users.get(name)
        if state is None:
            state = users[name] = _User()
            if len(users) > MAX_TRACKED_USERS:
                users.popitem(last=False)
                self._evicted_users += 1
        else:
            users.move_to_end(name)
        return state

    @staticmethod
    def _new_state(c: _Compiled, user: _User) -> _State:
        st = user.states[c.id] = _STATE_OF[c.check]()
        return st

    def _violation(
        self, c: _Compiled, graded: tuple[str, Level], value: float, threshold: float, detail: str
    ) -> _Hit:
        name, level = graded
        return (
            Violation(
                rule=c.id,
                check=c.check,
                value=float(value),
                threshold=float(threshold),
                level=name,
                action=level.action,
                detail=detail,
            ),
            level,
        )

    # -- checks (one evaluator each; they count, then grade) -----------------------------

    def _rate(
        self,
        c: _Compiled,
        a: Attempt,
        number: str,
        user: _User,
        attach: _Attached,
    ) -> _Hit | None:
        st = cast(_Times, user.states.get(c.id) or self._new_state(c, user))
        value = st.add(a.time, c.window)
        if value <= c.lowest:
            return None
        graded = c.grade(value)
        if graded is None:
            return None
        adjective, target = c.scope
        threshold = graded[1].threshold
        detail = (
            f"{a.user}: {value} {adjective}calls{target} in {_WINDOW_TEXT[c.window]} "
            f"> {threshold:g}"
        )
        return self._violation(c, graded, value, threshold, detail)

    def _concurrent(
        self,
        c: _Compiled,
        a: Attempt,
        number: str,
        user: _User,
        attach: _Attached,
    ) -> _Hit | None:
        st = cast(_Active, user.states.get(c.id) or self._new_state(c, user))
        attach.append((c, st, 0.0))
        st.count += 1  # this call; taken back if the attempt is refused
        value = st.count
        if value <= c.lowest:
            return None
        graded = c.grade(value)
        if graded is None:
            return None
        adjective, target = c.scope
        threshold = graded[1].threshold
        detail = f"{a.user}: {value} concurrent {adjective}calls{target} > {threshold:g}"
        return self._violation(c, graded, value, threshold, detail)

    def _duration(
        self,
        c: _Compiled,
        a: Attempt,
        number: str,
        user: _User,
        attach: _Attached,
    ) -> _Hit | None:
        attach.append((c, None, 0.0))
        if c.stop_at is not None:
            self._stop_at(c.stop_at)
        return None  # judged when the call ends

    def _repeated(
        self,
        c: _Compiled,
        a: Attempt,
        number: str,
        user: _User,
        attach: _Attached,
    ) -> _Hit | None:
        st = cast(_Repeat, user.states.get(c.id) or self._new_state(c, user))
        value = st.add(a.time, number, c.window)
        if value <= c.lowest:
            return None
        graded = c.grade(value)
        if graded is None:
            return None
        threshold = graded[1].threshold
        detail = f"{a.user}: {value} calls to {number} in {c.window:g} s > {threshold:g}"
        return self._violation(c, graded, value, threshold, detail)

    def _incrementing(
        self,
        c: _Compiled,
        a: Attempt,
        number: str,
        user: _User,
        attach: _Attached,
    ) -> _Hit | None:
        digits = number[1:] if number.startswith("+") else number
        # Not str.isdigit alone: it also accepts "²" and "٣"; 15 digits is E.164's most.
        if not (digits.isascii() and digits.isdigit()) or len(digits) > 15:
            return None  # a user name: no number to step through
        st = cast(_Run, user.states.get(c.id) or self._new_state(c, user))
        value = st.add(a.time, digits, c.window)
        if value <= c.lowest:
            return None
        graded = c.grade(value)
        if graded is None:
            return None
        threshold = graded[1].threshold
        plus = "+" if number.startswith("+") else ""
        detail = (
            f"{a.user}: {value} incrementing numbers in a row ({plus}{st.first} .. "
            f"{plus}{st.last}) within {c.window:g} s > {threshold:g}"
        )
        return self._violation(c, graded, value, threshold, detail)

    def _spend(
        self,
        c: _Compiled,
        a: Attempt,
        number: str,
        user: _User,
        attach: _Attached,
    ) -> _Hit | None:
        if a.e164 is None:
            return None
        rate = self._rates.lookup(a.e164)
        if rate is None or rate.per_minute <= 0:
            return None
        st = cast(_Spend, user.states.get(c.id) or self._new_state(c, user))
        spent = st.today(c.clock.sync(a.time).ordinal)
        attach.append((c, st, rate.per_minute))
        if c.stop_at is not None:
            # The call may use what is left of the budget, then it is cut.
            self._stop_at(max(0.0, (c.stop_at - spent) / rate.per_minute * 60.0))
        value = spent + rate.per_minute * c.rule.projected_minutes
        if value <= c.lowest:
            return None
        graded = c.grade(value)
        if graded is None:
            return None
        threshold = graded[1].threshold
        detail = (
            f"{a.user}: spend today {spent:.2f} + {c.rule.projected_minutes:g} min to "
            f"{a.e164} at {rate.per_minute:g}/min = {value:.2f} > {threshold:g}"
        )
        return self._violation(c, graded, value, threshold, detail)

    def _high_risk_check(
        self,
        c: _Compiled,
        a: Attempt,
        number: str,
        user: _User,
        attach: _Attached,
    ) -> _Hit | None:
        e164 = a.e164
        if e164 is None:
            return None
        listed = self._high_risk
        prefix = next(
            (e164[:n] for n in self._high_risk_lengths if n <= len(e164) and e164[:n] in listed),
            None,
        )
        if prefix is None:
            return None
        graded = c.grade(1.0)
        if graded is None:
            return None
        detail = f"{a.user}: call to {e164} is on the high-risk list ({prefix})"
        return self._violation(c, graded, 1.0, graded[1].threshold, detail)

    def _new_country(
        self,
        c: _Compiled,
        a: Attempt,
        number: str,
        user: _User,
        attach: _Attached,
    ) -> _Hit | None:
        if a.e164 is None:
            return None
        cc = country_code(a.e164)
        if cc is None or cc in user.countries:
            return None
        graded = c.grade(1.0)
        if graded is None:
            return None
        detail = f"{a.user}: first call to country code +{cc} ({a.e164})"
        return self._violation(c, graded, 1.0, graded[1].threshold, detail)

    def _destination(
        self,
        c: _Compiled,
        a: Attempt,
        number: str,
        user: _User,
        attach: _Attached,
    ) -> _Hit | None:
        graded = c.grade(1.0)
        if graded is None:
            return None
        adjective, target = c.scope
        when = " at this time" if c.timed else ""
        detail = f"{a.user}: {adjective}call{target or ' to ' + number}{when}"
        return self._violation(c, graded, 1.0, graded[1].threshold, detail)

    def _wangiri_check(
        self,
        c: _Compiled,
        a: Attempt,
        number: str,
        user: _User,
        attach: _Attached,
    ) -> _Hit | None:
        if a.e164 is None:
            return None
        calls = self._wangiri.get(a.e164)
        if calls is None:
            return None
        cut = a.time - c.window
        ring = c.rule.ring_seconds
        short = [(t, d, u) for t, d, u in calls if t > cut and d < ring]
        if not short:
            return None
        value = len(short)
        graded = c.grade(value)
        if graded is None:
            return None
        threshold = graded[1].threshold
        _, last_ring, last_user = short[-1]
        detail = (
            f"{a.user}: call-back to {a.e164}, which rang {value} time(s) unanswered for "
            f"< {ring:g} s in {c.window:g} s (last: {last_user}, {last_ring:g} s) "
            f"> {threshold:g}"
        )
        return self._violation(c, graded, value, threshold, detail)

    def _unusual(
        self,
        c: _Compiled,
        a: Attempt,
        number: str,
        user: _User,
        attach: _Attached,
    ) -> _Hit | None:
        st = cast(_Baseline, user.states.get(c.id) or self._new_state(c, user))
        rule = c.rule
        key = c.clock.sync(a.time).hour_key
        if key > st.hour:
            st.roll(key, rule.alpha)
        if rule.metric == "calls":
            st.current += 1
        elif rule.metric == "destinations":
            if len(st.destinations) < MAX_DESTINATIONS_PER_HOUR:
                st.destinations.add(number)
            st.current = float(len(st.destinations))
        else:
            attach.append((c, st, 0.0))
            return None  # minutes are known when calls end
        if st.seen[((key // 24 - 1) % 7) * 24 + key % 24] < rule.warmup:
            return None  # still learning this hour of the week (the slot as in _slot)
        return self._baseline_hit(c, a.user, st, key)

    def _baseline_hit(self, c: _Compiled, user: str, st: _Baseline, key: int) -> _Hit | None:
        rule = c.rule
        slot = _slot(key)
        if st.seen[slot] < rule.warmup:
            return None
        base = max(st.ewma[slot], rule.floor)
        value = st.current
        graded: tuple[str, Level] | None = None
        for name, level in (("critical", c.critical), ("warning", c.warning)):
            if level is not None and value > base * level.threshold:
                graded = (name, level)
                break
        if graded is None:
            return None
        threshold = base * graded[1].threshold
        metric = rule.metric if rule.metric != "destinations" else "distinct destinations"
        day = DAYS[slot // 24]
        detail = (
            f"{user}: {value:g} {metric} this hour ({day} {slot % 24:02d}h), baseline "
            f"{base:.2f} x {graded[1].threshold:g} = {threshold:.2f}"
        )
        return self._violation(c, graded, value, threshold, detail)

    # -- after the call -----------------------------------------------------------------

    def answered(self, call_id: str, now: float) -> None:
        """The call ``call_id`` was answered at ``now``."""
        call = self._calls.get(call_id)
        if call is not None and call.answered is None:
            call.answered = now

    def ended(self, call_id: str, now: float, billable: float) -> list[Violation]:
        """The call is over after ``billable`` answered seconds: frees its place in the
        concurrency counts, books its cost, and returns what it violated (duration,
        the day's spend, the minutes baseline). A call never allowed is ignored."""
        call = self._calls.pop(call_id, None)
        if call is None:
            return []
        self._close(call)
        billable = max(0.0, billable)
        hits: list[_Hit] = []
        for c, st, rate in call.rules:
            hit: _Hit | None = None
            if c.check == "duration":
                hit = self._duration_hit(c, call, billable)
            elif isinstance(st, _Spend):
                spent = st.today(c.clock.sync(now).ordinal)
                cost = rate * billable / 60.0
                st.amount = spent + cost
                graded = c.grade(st.amount)
                # Report the call that crosses a level, not every call after it.
                if graded is not None and graded != c.grade(spent):
                    detail = (
                        f"{call.user}: spend today {st.amount:.2f} after {billable:g} s to "
                        f"{call.number} ({cost:.2f}) > {graded[1].threshold:g}"
                    )
                    hit = self._violation(c, graded, st.amount, graded[1].threshold, detail)
            elif isinstance(st, _Baseline):
                key = c.clock.sync(now).hour_key
                st.roll(key, c.rule.alpha)
                st.current += billable / 60.0
                hit = self._baseline_hit(c, call.user, st, key)
            if hit is not None:
                hits.append(hit)
        if not hits:
            return []
        hits.sort(key=self._hit_order)
        violations = [v for v, _ in hits]
        self._count(violations)
        for violation, level in hits:
            if level.action == "suspend" and call.user not in self._suspended:
                self._suspend(call.user, violation, now)
        return violations

    def _duration_hit(self, c: _Compiled, call: _Call, billable: float) -> _Hit | None:
        graded: tuple[str, Level] | None = None
        for name, level in (("critical", c.critical), ("warning", c.warning)):
            if level is not None and billable >= level.threshold:
                graded = (name, level)
                break
        if graded is None:
            return None
        adjective, _ = c.scope
        threshold = graded[1].threshold
        cut = " (cut at the limit)" if _stops(graded[1]) else ""
        detail = (
            f"{call.user}: {adjective}call to {call.number} lasted {billable:g} s "
            f">= {threshold:g}{cut}"
        )
        return self._violation(c, graded, billable, threshold, detail)

    def _close(self, call: _Call) -> None:
        for _, st, _ in call.rules:
            if isinstance(st, _Active) and st.count > 0:
                st.count -= 1

    def discard(self, call_id: str) -> None:
        """A call allowed by :meth:`check` (or announced by :meth:`inbound`) that never
        started: frees its place in the concurrency counts and books nothing."""
        call = self._calls.pop(call_id, None)
        if call is not None:
            self._close(call)
        self._inbound.pop(call_id, None)

    def pending_calls(self) -> tuple[str, ...]:
        """Call-IDs allowed and not yet ended (after a restart: the calls the snapshot
        held, for the shell to end from their CDRs so their cost is booked)."""
        return tuple(self._calls)

    # -- inbound calls (Wangiri) --------------------------------------------------------

    def inbound(self, *, call_id: str, caller_e164: str | None, user: str, time: float) -> None:
        """A call from a trunk for ``user`` started ringing."""
        if caller_e164 is None or self._wangiri_ring <= 0:
            return
        inbound = self._inbound
        inbound[call_id] = (caller_e164, time, user)
        if len(inbound) > MAX_ACTIVE_CALLS:
            inbound.popitem(last=False)

    def inbound_ended(self, call_id: str, now: float, answered: bool, duration: float) -> None:
        """The inbound call is over; ``duration`` is how long it rang (or lasted)."""
        entry = self._inbound.pop(call_id, None)
        if entry is None or answered or duration >= self._wangiri_ring:
            return
        caller, _, user = entry
        table = self._wangiri
        calls = table.get(caller)
        if calls is None:
            calls = table[caller] = deque(maxlen=MAX_WANGIRI_CALLS_PER_NUMBER)
            if len(table) > MAX_WANGIRI_NUMBERS:
                table.popitem(last=False)
        else:
            table.move_to_end(caller)
        calls.append((now, duration, user))

    # -- suspensions ---------------------------------------------------------------------

    def _suspend(self, user: str, violation: Violation, now: float) -> None:
        self._suspended[user] = _Suspension(rule=violation.rule, time=now, detail=violation.detail)
        self._suspensions += 1

    def suspended(self, user: str) -> bool:
        """Whether ``user`` is suspended (every call refused until :meth:`lift`)."""
        return user in self._suspended

    def suspensions(self) -> dict[str, tuple[str, float, str]]:
        """Suspended users: (rule id, time, the violation's detail) each."""
        return {u: (s.rule, s.time, s.detail) for u, s in self._suspended.items()}

    def lift(self, user: str) -> None:
        """End the suspension of ``user`` (an administrator's decision). Its counters
        are kept, so a rule still over its threshold blocks the next call."""
        self._suspended.pop(user, None)

    def _count(self, violations: Iterable[Violation]) -> None:
        per_rule = self._rule_violations
        for v in violations:
            self._alerts += 1
            if v.level == "critical":
                self._criticals += 1
            else:
                self._warnings += 1
            per_rule[v.rule] = per_rule.get(v.rule, 0) + 1

    def statistics(self) -> FraudStatistics:
        return FraudStatistics(
            checks=self._checks,
            allowed=self._allowed,
            blocked=self._blocked,
            throttled=self._throttled,
            alerts=self._alerts,
            warnings=self._warnings,
            criticals=self._criticals,
            suspensions=self._suspensions,
            suspended_users=len(self._suspended),
            tracked_users=len(self._users),
            evicted_users=self._evicted_users,
            active_calls=len(self._calls),
            evicted_calls=self._evicted_calls,
            wangiri_numbers=len(self._wangiri),
            rule_violations=dict(self._rule_violations),
        )

    # -- persistence ---------------------------------------------------------------------

    def snapshot(self) -> dict[str, object]:
        """Every counter as JSON-able data, for :meth:`load_state` after a restart."""
        users: dict[str, object] = {}
        for name, u in self._users.items():
            users[name] = {
                "countries": sorted(u.countries),
                "throttled": dict(u.throttled),
                "rules": {
                    rid: {"check": self._by_id[rid].check, "state": st.dump()}
                    for rid, st in u.states.items()
                    if rid in self._by_id
                },
            }
        calls = {
            call_id: {
                "user": call.user,
                "number": call.number,
                "kind": call.kind,
                "time": call.time,
                "answered": call.answered,
                "rules": [c.id for c, _, _ in call.rules],
            }
            for call_id, call in self._calls.items()
        }
        return {
            "version": _STATE_VERSION,
            "users": users,
            "suspended": {
                u: {"rule": s.rule, "time": s.time, "detail": s.detail}
                for u, s in self._suspended.items()
            },
            "calls": calls,
            "inbound": {k: list(v) for k, v in self._inbound.items()},
            "wangiri": {k: [list(x) for x in v] for k, v in self._wangiri.items()},
            "counters": {
                "checks": self._checks,
                "allowed": self._allowed,
                "blocked": self._blocked,
                "throttled": self._throttled,
                "alerts": self._alerts,
                "warnings": self._warnings,
                "criticals": self._criticals,
                "suspensions": self._suspensions,
                "evicted_users": self._evicted_users,
                "evicted_calls": self._evicted_calls,
                "rule_violations": dict(self._rule_violations),
            },
        }

    def load_state(self, state: Mapping[str, object]) -> None:
        """Replace all counters with those of a :meth:`snapshot`. State of rules that no
        longer exist, or whose check changed, is dropped. Raises
        :class:`FraudStateError` (and leaves the engine empty) for a broken snapshot."""
        self._reset()
        try:
            self._load(state)
        except FraudStateError:
            self._reset()
            raise

    def _load(self, state: Mapping[str, object]) -> None:
        if not isinstance(state, Mapping) or state.get("version") != _STATE_VERSION:
            raise FraudStateError(f"state: version: must be {_STATE_VERSION}")
        users = _dict(state.get("users", {}), "users")
        if len(users) > MAX_TRACKED_USERS:
            raise FraudStateError(f"state: users: more than {MAX_TRACKED_USERS}")
        for name, data in users.items():
            where = f"users.{name}"
            d = _dict(data, where)
            u = _User()
            countries = _list(d.get("countries", []), where + ".countries")
            u.countries = {_str(x, where) for x in countries[:MAX_COUNTRIES_PER_USER]}
            for rid, t in _dict(d.get("throttled", {}), where + ".throttled").items():
                if rid in self._by_id:
                    u.throttled[rid] = _float(t, where + ".throttled")
            for rid, entry in _dict(d.get("rules", {}), where + ".rules").items():
                rwhere = f"{where}.rules.{rid}"
                e = _dict(entry, rwhere)
                c = self._by_id.get(rid)
                if c is None or e.get("check") != c.check or c.check not in _STATE_OF:
                    continue  # the rule is gone or now checks something else
                st = _STATE_OF[c.check]()
                st.load(e.get("state"), rwhere)
                u.states[rid] = st
            self._users[name] = u
        for name, data in _dict(state.get("suspended", {}), "suspended").items():
            d = _dict(data, f"suspended.{name}")
            self._suspended[name] = _Suspension(
                rule=_str(d.get("rule"), f"suspended.{name}.rule"),
                time=_float(d.get("time"), f"suspended.{name}.time"),
                detail=_str(d.get("detail", ""), f"suspended.{name}.detail"),
            )
        self._load_calls(_dict(state.get("calls", {}), "calls"))
        for call_id, entry in _dict(state.get("inbound", {}), "inbound").items():
            items = _list(entry, f"inbound.{call_id}")
            if len(items) != 3:
                raise FraudStateError(f"state: inbound.{call_id}: must be [caller, time, user]")
            self._inbound[call_id] = (
                _str(items[0], "inbound"),
                _float(items[1], "inbound"),
                _str(items[2], "inbound"),
            )
        for number, entries in _dict(state.get("wangiri", {}), "wangiri").items():
            calls: deque[tuple[float, float, str]] = deque(maxlen=MAX_WANGIRI_CALLS_PER_NUMBER)
            for item in _list(entries, f"wangiri.{number}"):
                x = _list(item, f"wangiri.{number}")
                if len(x) != 3:
                    raise FraudStateError(f"state: wangiri.{number}: must be [time, ring, user]")
                calls.append(
                    (_float(x[0], "wangiri"), _float(x[1], "wangiri"), _str(x[2], "wangiri"))
                )
            self._wangiri[number] = calls
        counters = _dict(state.get("counters", {}), "counters")
        for key in (
            "checks",
            "allowed",
            "blocked",
            "throttled",
            "alerts",
            "warnings",
            "criticals",
            "suspensions",
            "evicted_users",
            "evicted_calls",
        ):
            value = counters.get(key, 0)
            if type(value) is not int or value < 0:
                raise FraudStateError(f"state: counters.{key}: must be a count")
            setattr(self, "_" + key, value)
        for rid, n in _dict(counters.get("rule_violations", {}), "counters").items():
            if type(n) is not int or n < 0:
                raise FraudStateError(f"state: counters.rule_violations.{rid}: must be a count")
            self._rule_violations[rid] = n

    def _load_calls(self, calls: dict[str, Any]) -> None:
        for call_id, data in calls.items():
            where = f"calls.{call_id}"
            d = _dict(data, where)
            call = _Call(
                _str(d.get("user"), where + ".user"),
                _str(d.get("number"), where + ".number"),
                _str(d.get("kind"), where + ".kind"),
                _float(d.get("time"), where + ".time"),
            )
            answered = d.get("answered")
            call.answered = None if answered is None else _float(answered, where)
            user = self._user(call.user)
            for rid in _list(d.get("rules", []), where + ".rules"):
                c = self._by_id.get(_str(rid, where + ".rules"))
                if c is None:
                    continue
                if c.check in ("concurrent_calls", "spend", "unusual_pattern"):
                    st: _State | None = user.states.get(c.id) or self._new_state(c, user)
                else:
                    st = None
                rate = 0.0
                if isinstance(st, _Spend) and call.number.startswith("+"):
                    found = self._rates.lookup(call.number)
                    rate = found.per_minute if found is not None else 0.0
                call.rules.append((c, st, rate))
            self._calls[call_id] = call


_STATE_VERSION = 1
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


# -- loading ---------------------------------------------------------------------------

_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]*")
_PREFIX = re.compile(r"\+[1-9][0-9]{0,14}")
_RATE_PREFIX = re.compile(r"\+(?:[1-9][0-9]{0,14})?")
_ZONE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_+\-]*(?:/[A-Za-z0-9_+\-]+)*")
_HOURS = re.compile(r"([01][0-9]|2[0-3]):([0-5][0-9])-([01][0-9]|2[0-3]|24):([0-5][0-9])")
_USER = re.compile(r"[^\s]{1,128}")
_COMMON_KEYS = frozenset(
    {
        "id",
        "description",
        "enabled",
        "check",
        "users",
        "groups",
        "prefixes",
        "except_prefixes",
        "kinds",
        "days",
        "hours",
        "timezone",
        "warning",
        "critical",
    }
)
_PARAMS: dict[str, frozenset[str]] = {
    "repeated_number": frozenset({"window"}),
    "incrementing_numbers": frozenset({"window"}),
    "wangiri_callback": frozenset({"window", "ring_seconds"}),
    "spend": frozenset({"projected_minutes"}),
    "unusual_pattern": frozenset({"metric", "alpha", "warmup", "floor"}),
}
_ALL_PARAMS = frozenset().union(*_PARAMS.values())
_LEVEL_KEYS = frozenset({"threshold", "action", "interval"})
#: libyaml's safe loader when PyYAML was built with it (ten times faster on big files).
_YAML_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_DAY_NAMES = {
    **{d: i for i, d in enumerate(DAYS)},
    **{
        d: i
        for i, d in enumerate(
            ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
        )
    },
}
#: Longest window or Wangiri memory: a week (the baseline's period).
_MAX_WINDOW = 7 * 86400.0


def default_data_dir() -> Path:
    """The shipped data: ``voipsec/monitor/data`` (fraud.yaml, rates.csv, high-risk.txt)."""
    resource = files("voipsec").joinpath("monitor").joinpath("data")
    return resource if isinstance(resource, Path) else Path(str(resource))


def load_rules(paths: Sequence[Path]) -> list[FraudRule]:
    """Read rule files in order. A rule with the id of an earlier one replaces it (in
    the earlier one's place), so a site file can retune a shipped rule or switch it off
    with ``enabled: false``. Raises :class:`FraudRuleError` for the first problem."""
    merged: dict[str, FraudRule | None] = {}
    for path in paths:
        for rule_id, rule in _load_file(Path(path)):
            merged[rule_id] = rule
            if len(merged) > MAX_RULES:
                raise FraudRuleError(f"{path}: more than {MAX_RULES} rules")
    return [r for r in merged.values() if r is not None]


def _read(path: Path, limit: int) -> str:
    try:
        with path.open("rb") as f:
            data = f.read(limit + 1)
    except OSError as exc:
        raise FraudRuleError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if len(data) > limit:
        raise FraudRuleError(f"{path}: larger than {limit} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FraudRuleError(f"{path}: not UTF-8: {exc.reason} at byte {exc.start}") from None


def _load_file(path: Path) -> list[tuple[str, FraudRule | None]]:
    text = _read(path, MAX_RULE_FILE_BYTES)
    try:
        document = yaml.load(text, Loader=_YAML_LOADER)  # noqa: S506 (a safe loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"line {mark.line + 1}: " if mark is not None else ""
        raise FraudRuleError(f"{path}: {where}invalid YAML: {exc.problem}") from None
    except yaml.YAMLError as exc:
        raise FraudRuleError(f"{path}: invalid YAML: {exc}") from None
    if not isinstance(document, dict) or set(document) != {"rules"}:
        raise FraudRuleError(f"{path}: the file must be a mapping with one key, 'rules'")
    items = document["rules"]
    if not isinstance(items, list):
        raise FraudRuleError(f"{path}: rules: must be a list")
    if len(items) > MAX_RULES:
        raise FraudRuleError(f"{path}: more than {MAX_RULES} rules")
    out: list[tuple[str, FraudRule | None]] = []
    seen: set[str] = set()
    for index, item in enumerate(items, start=1):
        rule_id, rule = _RuleReader(path, index, item).read()
        if rule_id in seen:
            raise FraudRuleError(f"{path}: rule {rule_id!r}: id: defined twice in this file")
        seen.add(rule_id)
        out.append((rule_id, rule))
    return out


class _RuleReader:
    """Validates one rule mapping; every error names file, rule and field."""

    def __init__(self, path: Path, index: int, item: object) -> None:
        self.path = path
        self.label = f"rule #{index}"
        self.item = item

    def fail(self, key: str, why: str) -> FraudRuleError:
        return FraudRuleError(f"{self.path}: {self.label}: {key}: {why}")

    def read(self) -> tuple[str, FraudRule | None]:
        item = self.item
        if not isinstance(item, dict):
            raise FraudRuleError(f"{self.path}: {self.label}: must be a mapping")
        rule_id = item.get("id")
        if (
            not isinstance(rule_id, str)
            or len(rule_id) > MAX_RULE_ID_LENGTH
            or _ID.fullmatch(rule_id) is None
        ):
            raise self.fail(
                "id", f"must be 1 to {MAX_RULE_ID_LENGTH} letters, digits, '.', '_' or '-'"
            )
        self.label = f"rule {rule_id!r}"
        if item.get("enabled") is False and set(item) <= {"id", "enabled", "description"}:
            return rule_id, None  # "- {id: premium-rate, enabled: false}" switches one off
        check = item.get("check")
        if check not in CHECKS:
            raise self.fail("check", f"must be one of {', '.join(CHECKS)}")
        params = _PARAMS.get(check, frozenset())
        for key in item:
            if key in _COMMON_KEYS or key in params:
                continue
            if key in _ALL_PARAMS:
                raise self.fail(key, f"does not apply to check {check}")
            known = ", ".join(sorted(_COMMON_KEYS | params))
            raise self.fail(str(key), f"unknown field (known: {known})")
        description = item.get("description", "")
        if not isinstance(description, str):
            raise self.fail("description", "must be a string")
        enabled = item.get("enabled", True)
        if not isinstance(enabled, bool):
            raise self.fail("enabled", "must be true or false")
        warning = self._level("warning", item.get("warning"), check)
        critical = self._level("critical", item.get("critical"), check)
        if warning is None and critical is None:
            raise self.fail("critical", "a rule needs a warning or a critical level")
        if warning is not None and critical is not None:
            if warning.threshold >= critical.threshold:
                raise self.fail(
                    "warning.threshold",
                    f"must be below the critical threshold ({critical.threshold:g})",
                )
            if _SEVERITY[warning.action] > _SEVERITY[critical.action]:
                raise self.fail("warning.action", "must not be harsher than the critical action")
        timezone = item.get("timezone", "UTC")
        if not isinstance(timezone, str):
            raise self.fail("timezone", "must be an IANA time zone name")
        try:
            _zone(timezone)
        except ValueError as exc:
            raise self.fail("timezone", str(exc)) from None
        rule = FraudRule(
            id=rule_id,
            check=check,
            warning=warning,
            critical=critical,
            description=description,
            users=self._names("users", item.get("users"), MAX_USERS_PER_RULE),
            groups=self._names("groups", item.get("groups"), MAX_USERS_PER_RULE),
            prefixes=self._prefixes("prefixes", item.get("prefixes")),
            except_prefixes=self._prefixes("except_prefixes", item.get("except_prefixes")) or (),
            kinds=self._kinds(item.get("kinds")),
            days=self._days(item.get("days")),
            hours=self._hours(item.get("hours")),
            timezone=timezone,
            origin=str(self.path),
            **self._params(check, item),
        )
        return rule_id, rule if enabled else None

    def _level(self, name: str, value: object, check: str) -> Level | None:
        if value is None:
            return None
        if not isinstance(value, dict):
            raise self.fail(name, "must be a mapping with threshold and action")
        for key in value:
            if key not in _LEVEL_KEYS:
                raise self.fail(
                    f"{name}.{key}", f"unknown field (known: {', '.join(sorted(_LEVEL_KEYS))})"
                )
        action = value.get("action")
        if action not in ACTIONS:
            raise self.fail(f"{name}.action", f"must be one of {', '.join(ACTIONS)}")
        threshold = self._threshold(f"{name}.threshold", value.get("threshold"), check)
        interval = value.get("interval")
        if action == "throttle":
            if check == "duration":
                raise self.fail(f"{name}.action", "a call in progress cannot be throttled")
            if not _number(interval) or not 0 < interval <= _MAX_WINDOW:
                raise self.fail(f"{name}.interval", "throttle needs seconds between calls (> 0)")
        elif interval is not None:
            raise self.fail(f"{name}.interval", "only for action throttle")
        return Level(threshold=float(threshold), action=action, interval=float(interval or 0))

    def _threshold(self, key: str, value: object, check: str) -> float:
        if check in _FLAG_CHECKS:
            if value is not None and (type(value) is not int or value != 0):
                raise self.fail(key, f"must be 0 (or left out) for check {check}")
            return 0.0
        if value is None:
            if check == "wangiri_callback":
                return 0.0  # one short call from the number is enough
            raise self.fail(key, "is required")
        if check in _COUNT_CHECKS:
            if type(value) is not int or not 0 <= value < MAX_WINDOW_TIMESTAMPS:
                raise self.fail(
                    key, f"must be a whole number from 0 to {MAX_WINDOW_TIMESTAMPS - 1}"
                )
            return float(value)
        if not _number(value):
            raise self.fail(key, "must be a number")
        if check == "duration" and not value > 0:
            raise self.fail(key, "must be seconds > 0")
        if check == "spend" and value < 0:
            raise self.fail(key, "must be an amount >= 0")
        if check == "unusual_pattern" and value < 1:
            raise self.fail(key, "must be a factor >= 1 over the baseline")
        return float(value)

    def _names(self, key: str, value: object, limit: int) -> frozenset[str] | None:
        if value is None:
            return None
        if (
            not isinstance(value, list)
            or not value
            or not all(isinstance(n, str) and _USER.fullmatch(n) for n in value)
        ):
            raise self.fail(key, "must be a non-empty list of names")
        if len(value) > limit:
            raise self.fail(key, f"more than {limit} names")
        return frozenset(value)

    def _prefixes(self, key: str, value: object) -> tuple[str, ...] | None:
        if value is None:
            return None
        if not isinstance(value, list) or not value:
            raise self.fail(key, "must be a non-empty list of E.164 prefixes")
        if len(value) > MAX_PREFIXES_PER_RULE:
            raise self.fail(key, f"more than {MAX_PREFIXES_PER_RULE} prefixes")
        for p in value:
            if not isinstance(p, str) or _PREFIX.fullmatch(p) is None:
                raise self.fail(key, f"{p!r} is not an E.164 prefix ('+' and 1 to 15 digits)")
        return tuple(dict.fromkeys(value))

    def _kinds(self, value: object) -> frozenset[str] | None:
        if value is None:
            return None
        if not isinstance(value, list) or not value or not all(k in CALL_KINDS for k in value):
            raise self.fail("kinds", f"must be a non-empty list of: {', '.join(CALL_KINDS)}")
        return frozenset(value)

    def _days(self, value: object) -> frozenset[int] | None:
        if value is None:
            return None
        if not isinstance(value, list) or not value:
            raise self.fail("days", f"must be a non-empty list of: {', '.join(DAYS)}")
        days: set[int] = set()
        for d in value:
            index = _DAY_NAMES.get(d.lower()) if isinstance(d, str) else None
            if index is None:
                raise self.fail("days", f"{d!r} is not a day ({', '.join(DAYS)})")
            days.add(index)
        return frozenset(days)

    def _hours(self, value: object) -> tuple[tuple[int, int], ...] | None:
        if value is None:
            return None
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not value:
            raise self.fail("hours", "must be 'HH:MM-HH:MM' or a list of them")
        ranges: list[tuple[int, int]] = []
        for text in value:
            m = _HOURS.fullmatch(text) if isinstance(text, str) else None
            if m is None:
                raise self.fail("hours", f"{text!r} is not HH:MM-HH:MM (24 h clock)")
            start = int(m[1]) * 60 + int(m[2])
            end = int(m[3]) * 60 + int(m[4])
            if end > 1440 or start == end:
                raise self.fail("hours", f"{text!r} is an empty or impossible range")
            ranges.append((start, end))
        return tuple(ranges)

    def _params(self, check: str, item: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if check in ("repeated_number", "incrementing_numbers", "wangiri_callback"):
            default = 7 * 86400 if check == "wangiri_callback" else None
            window = item.get("window", default)
            if window is None:
                raise self.fail("window", f"is required (seconds) for check {check}")
            if not _number(window) or not 0 < window <= _MAX_WINDOW:
                raise self.fail("window", f"must be seconds from 1 to {_MAX_WINDOW:g}")
            out["window"] = float(window)
        if check == "wangiri_callback":
            ring = item.get("ring_seconds")
            if not _number(ring) or not 0 < ring <= 600:
                raise self.fail("ring_seconds", "is required: seconds from 1 to 600")
            out["ring_seconds"] = float(ring)
        if check == "spend":
            minutes = item.get("projected_minutes", 1)
            if not _number(minutes) or not 0 <= minutes <= 1440:
                raise self.fail("projected_minutes", "must be minutes from 0 to 1440")
            out["projected_minutes"] = float(minutes)
        if check == "unusual_pattern":
            metric = item.get("metric", "calls")
            if metric not in METRICS:
                raise self.fail("metric", f"must be one of {', '.join(METRICS)}")
            alpha = item.get("alpha", 0.2)
            if not _number(alpha) or not 0 < alpha <= 1:
                raise self.fail("alpha", "must be a weight above 0 and at most 1")
            warmup = item.get("warmup", 3)
            if type(warmup) is not int or not 1 <= warmup <= 1000:
                raise self.fail("warmup", "must be whole observations from 1 to 1000")
            floor = item.get("floor", 1.0)
            if not _number(floor) or not floor > 0:
                raise self.fail("floor", "must be a number > 0")
            out.update(metric=metric, alpha=float(alpha), warmup=warmup, floor=float(floor))
        return out


def _number(value: object) -> TypeGuard[float]:
    return type(value) in (int, float) and math.isfinite(cast(float, value))


def load_rates(path: Path) -> RateTable:
    """A rate table from CSV: a header ``prefix,per_minute[,description]`` then one row
    per prefix ("+" and digits; "+" alone is the default for every number); ``#``
    lines are comments. Raises :class:`FraudRuleError` naming ``file:line``."""
    text = _read(path, MAX_RULE_FILE_BYTES * 4)
    lines = [line if not line.lstrip().startswith("#") else "" for line in text.splitlines()]
    reader = csv.reader(io.StringIO("\n".join(lines)))
    rates: dict[str, Rate] = {}
    header: list[str] | None = None
    for row in reader:
        number = reader.line_num
        if not row or all(not cell.strip() for cell in row):
            continue
        cells = [cell.strip() for cell in row]
        if header is None:
            if cells[:2] != ["prefix", "per_minute"] or cells[2:] not in ([], ["description"]):
                raise FraudRuleError(
                    f"{path}:{number}: the header must be prefix,per_minute[,description]"
                )
            header = cells
            continue
        if len(cells) != len(header):
            raise FraudRuleError(f"{path}:{number}: expected {len(header)} columns")
        prefix = cells[0]
        if _RATE_PREFIX.fullmatch(prefix) is None:
            raise FraudRuleError(f"{path}:{number}: {prefix!r} is not an E.164 prefix")
        try:
            price = float(cells[1])
        except ValueError:
            price = -1.0
        if not math.isfinite(price) or price < 0:
            raise FraudRuleError(f"{path}:{number}: {cells[1]!r} is not a price >= 0")
        if prefix in rates:
            raise FraudRuleError(f"{path}:{number}: {prefix} is listed twice")
        if len(rates) >= MAX_RATES:
            raise FraudRuleError(f"{path}:{number}: more than {MAX_RATES} rates")
        description = cells[2] if len(cells) > 2 else ""
        rates[prefix] = Rate(prefix=prefix, per_minute=price, description=description)
    if header is None:
        raise FraudRuleError(f"{path}: no header line (prefix,per_minute[,description])")
    return RateTable(rates.values())


def load_prefixes(path: Path) -> list[str]:
    """The E.164 prefixes in ``path`` in file order, duplicates dropped: one prefix
    ("+" and 1 to 15 digits) per line, ``#`` starts a comment. Raises
    :class:`FraudRuleError` naming ``file:line``."""
    text = _read(path, MAX_RULE_FILE_BYTES)
    prefixes: dict[str, None] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        item = line.partition("#")[0].strip()
        if not item:
            continue
        if _PREFIX.fullmatch(item) is None:
            raise FraudRuleError(
                f"{path}:{number}: {item!r} is not an E.164 prefix ('+' and 1 to 15 digits)"
            )
        prefixes[item] = None
        if len(prefixes) > MAX_PREFIXES:
            raise FraudRuleError(f"{path}:{number}: more than {MAX_PREFIXES} prefixes")
    return list(prefixes)

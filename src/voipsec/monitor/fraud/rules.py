"""Fraud rules prepared for the hot path: compiled rules, their index by user scope,
call kind and destination prefix, and the per-zone clock they share.

How this works: a :class:`~voipsec.monitor.fraud.FraudRule` becomes a ``_CompiledRule``
rule once, when the engine is built: its thresholds, window and scope text computed,
its check's evaluator bound. An ``_Index`` keeps the rules of one user scope by call
kind and by outermost prefix, so a check finds the rules of its number with one dict
look-up per distinct prefix length.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, tzinfo
from typing import TypeGuard
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .counters import _STATE_OF, _State, _User
from .model import _RATE_WINDOWS, _SEVERITY, CALL_KINDS, Attempt, FraudRule, Level, Violation

_ZONE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_+\-]*(?:/[A-Za-z0-9_+\-]+)*")


class _CompiledRule:
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
        """The gravest level ``value`` exceeds, or None (at or below ``lowest`` first:
        the hot path's common case)."""
        if value <= self.lowest:
            return None
        critical = self.critical
        if critical is not None and value > critical.threshold:
            return "critical", critical
        warning = self.warning
        if warning is not None and value > warning.threshold:
            return "warning", warning
        return None

    def first_level(self, passes: Callable[[Level], bool]) -> tuple[str, Level] | None:
        """The gravest level (critical first) that ``passes``: for the checks whose test
        is not "value above the threshold" (a duration reaching it, a baseline factor)."""
        for name, level in (("critical", self.critical), ("warning", self.warning)):
            if level is not None and passes(level):
                return name, level
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


def _unbound(
    c: _CompiledRule, a: Attempt, number: str, user: _User, attach: _Attached
) -> _Hit | None:
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
        self.by_kind: dict[str, list[_CompiledRule]] = {}
        self.by_prefix: dict[str, list[_CompiledRule]] = {}
        self.lengths: tuple[int, ...] = ()

    def add(self, c: _CompiledRule) -> None:
        prefixes = c.rule.prefixes
        if prefixes is None:
            for kind in CALL_KINDS if c.kinds is None else c.kinds:
                self.by_kind.setdefault(kind, []).append(c)
        else:
            for prefix in _outermost(prefixes):
                self.by_prefix.setdefault(prefix, []).append(c)
            self.lengths = tuple(sorted({len(p) for p in self.by_prefix}))

    def lookup(self, e164: str | None, kind: str, out: list[_CompiledRule]) -> None:
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
_Attached = list[tuple["_CompiledRule", _State | None, float]]
_Evaluator = Callable[["_CompiledRule", Attempt, str, _User, "_Attached"], "_Hit | None"]


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
        self.rules: list[tuple[_CompiledRule, _State | None, float]] = []


def _new_state(c: _CompiledRule, user: _User) -> _State:
    """A new counter of the user for rule ``c`` (callers look it up inline first: the
    hot path makes no call when it exists)."""
    st = user.states[c.id] = _STATE_OF[c.check]()
    return st


def _violation(
    c: _CompiledRule, graded: tuple[str, Level], value: float, threshold: float, detail: str
) -> _Hit:
    """A hit of rule ``c``: its violation (value, threshold, level, action, detail) and
    the level whose action applies."""
    name, level = graded
    violation = Violation(
        rule=c.id,
        check=c.check,
        value=float(value),
        threshold=float(threshold),
        level=name,
        action=level.action,
        detail=detail,
    )
    return violation, level

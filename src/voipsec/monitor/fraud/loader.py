"""Reading fraud rule, rate and prefix files: the loaders the shell calls before it
builds a :class:`~voipsec.monitor.fraud.FraudEngine`, which itself reads no file.

Every error is the one :class:`~voipsec.rulefile.RuleFileError` (``FraudRuleError``),
one line naming the file, the rule and the field, so a site sees exactly what to fix;
a file with any problem stops the load instead of running with part of a ruleset.
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Sequence
from importlib.resources import files
from pathlib import Path
from typing import Any, TypeGuard, cast

from ...rulefile import (
    FAST_YAML_LOADER,
    MAX_PREFIXES,
    MAX_RULE_FILE_BYTES,
    RuleReader,
    load_prefix_file,
    load_rule_files,
    read_text,
)
from .model import (
    _COUNT_CHECKS,
    _FLAG_CHECKS,
    _SEVERITY,
    ACTIONS,
    CALL_KINDS,
    CHECKS,
    DAYS,
    MAX_PREFIXES_PER_RULE,
    MAX_RATES,
    MAX_RULE_ID_LENGTH,
    MAX_RULES,
    MAX_USERS_PER_RULE,
    MAX_WINDOW_TIMESTAMPS,
    METRICS,
    FraudRule,
    FraudRuleError,
    Level,
)
from .rates import Rate, RateTable
from .rules import _zone

__all__ = ["default_data_dir", "load_prefixes", "load_rates", "load_rules"]

_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]*")
_PREFIX = re.compile(r"\+[1-9][0-9]{0,14}")
_RATE_PREFIX = re.compile(r"\+(?:[1-9][0-9]{0,14})?")
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
    return load_rule_files(
        paths, _FraudRuleReader, name_key="id", loader=FAST_YAML_LOADER, max_rules=MAX_RULES
    )


class _FraudRuleReader(RuleReader[FraudRule]):
    """Validates one rule mapping; every error names file, rule and field."""

    def read(self) -> tuple[str, FraudRule | None]:
        item = self.mapping()
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
    text = read_text(path, MAX_RULE_FILE_BYTES * 4)
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
    return load_prefix_file(path, MAX_PREFIXES)

"""The fraud engine's vocabulary: limits, checks and actions, the rule type, and the
attempts, decisions and violations that cross its boundary (frozen dataclasses)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, get_args

from ...rulefile import RuleFileError

# -- limits ----------------------------------------------------------------------------

#: Rules in one engine (all files together). The benchmark's 1,000 with room for a
#: per-user rule for every user of a mid-size site; index memory grows with it.
MAX_RULES = 10_000
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


#: The one rule-file error (:class:`voipsec.rulefile.RuleFileError`) under the name the
#: fraud engine has always used: rule, rate and prefix files raise it.
FraudRuleError = RuleFileError


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

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

The package: ``model`` (limits, vocabulary, the rule and the types crossing the
boundary), ``rates`` (prices and country codes), ``counters`` (per-(rule, user) state),
``rules`` (compiled rules, their index and clock), ``engine`` (the decisions),
``state`` (snapshots) and ``loader`` (reading rule, rate and prefix files: the shell's
part; the engine reads no file).
"""

from ...rulefile import MAX_PREFIXES, MAX_RULE_FILE_BYTES
from .engine import FraudEngine
from .loader import default_data_dir, load_prefixes, load_rates, load_rules
from .model import (
    ACTIONS,
    CHECKS,
    HIGH_RISK_FILE,
    MAX_ACTIVE_CALLS,
    MAX_BASELINE_CATCH_UP_HOURS,
    MAX_COUNTRIES_PER_USER,
    MAX_DESTINATIONS_PER_HOUR,
    MAX_PREFIXES_PER_RULE,
    MAX_RATES,
    MAX_RULE_ID_LENGTH,
    MAX_RULES,
    MAX_TRACKED_USERS,
    MAX_USERS_PER_RULE,
    MAX_WANGIRI_CALLS_PER_NUMBER,
    MAX_WANGIRI_NUMBERS,
    MAX_WINDOW_TIMESTAMPS,
    RATES_FILE,
    RULES_FILE,
    Attempt,
    Decision,
    FraudRule,
    FraudRuleError,
    FraudStateError,
    FraudStatistics,
    Level,
    Violation,
)
from .rates import Rate, RateTable, country_code

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

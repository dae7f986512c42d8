"""The VoIP IDS rule engine: YAML rules over events the server reports, sans-IO.

How this works: the server reports each request it accepted for processing, each
final response it sent and each message it could not parse as an :class:`Observation`;
:meth:`IdsEngine.observe` returns what to do about it (:class:`AlertAction`, :class:`Drop`,
:class:`Reply`, :class:`BanAction`). The engine owns no socket and no clock: ``now`` is an
argument, so tests drive a fake clock.

A rule says what it matches (kind, methods, response status, target known or not, a
user-agent regex, header regexes, named fingerprints — all must hold), a threshold
(``count`` matches within ``window`` seconds per key: source address, authenticated
user, target user, or source and target together) and its actions. Rules are indexed
by (kind, method) when the engine is built, and each rule checks its cheapest
conditions first, so a benign REGISTER touches the few rules that look at every
request (user agent, fingerprints) and the REGISTER flood counter.

Windows are exact: per (rule, key) the engine keeps the times of the last ``count``
matches, so a rule fires on the ``count``-th match within ``window`` seconds and keeps
firing (Drop, Reply) while the key stays at or over its threshold; its AlertAction is sent at
most once per ``window`` per key. Memory is bounded: at most :data:`MAX_TRACKED_KEYS`
windows (least recently used evicted), at most ``count`` times each
(:data:`MAX_THRESHOLD_COUNT`), keys cut to :data:`MAX_KEY_LENGTH`.

Bans are deduplicated per source (the engine remembers until when it banned whom: a
source it has banned gets no new BanAction until that ban has run out), and every ban is
recorded for escalation: a rule's ``escalation`` (fail2ban's *recidive*) turns its ban into
``ban_seconds`` when the source has been banned ``count`` times within ``window``.

Failure mode: fails open. When more keys are tracked than :data:`MAX_TRACKED_KEYS`
(a flood of spoofed sources) the least recently seen windows are forgotten, so their
counts restart; nothing grows without bound and ``observe`` never raises on peer data.

With several signaling workers the windows are shared: :meth:`IdsEngine.share_matches`
makes the engine note every counted match (rule, key, time), :meth:`IdsEngine.take_matches`
hands them over in batches and :meth:`IdsEngine.merge_match` counts another worker's
match in the same window here. A merged match never fires by itself: the next match
observed here sees the global count and acts on it (app/shared/counters.py); and one
worker (worker 0) asks :meth:`IdsEngine.check_merged` after each batch, so a source that
stays under the threshold on every worker but reaches it over all of them is alerted on
and banned without waiting for its next attempt.

Rules come in parsed: :mod:`voipsec.edge.ids_loader` reads the rule files.
"""

from __future__ import annotations

import binascii
import re
from bisect import bisect_right, insort
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, get_args

__all__ = [
    "MAX_KEY_LENGTH",
    "MAX_THRESHOLD_COUNT",
    "MAX_TRACKED_KEYS",
    "MAX_USER_AGENT_MEMO",
    "AlertAction",
    "BanAction",
    "Drop",
    "Escalation",
    "IdsAction",
    "IdsEngine",
    "IdsStatistics",
    "Match",
    "Observation",
    "Reply",
    "Rule",
    "Threshold",
    "is_numeric_call_id",
    "is_sipvicious_branch",
    "is_sipvicious_from_tag",
]

#: (rule, key) windows and per-source ban records kept, each table on its own; past
#: this the least recently used is forgotten. Like the guard's MAX_BUCKETS: a flood of
#: spoofed UDP sources costs bounded memory (about 350 bytes a key for small counts).
MAX_TRACKED_KEYS = 100_000
#: Largest threshold ``count`` (and escalation ``count``) a rule may set: a window
#: keeps up to ``count`` times, so this bounds the memory of one key. The default
#: ruleset's largest is the REGISTER flood's 601.
MAX_THRESHOLD_COUNT = 10_000
#: Keys are cut to this many characters: user names come from peers and a header line
#: may be 8 kB; longer names sharing a prefix share a window (counted together).
MAX_KEY_LENGTH = 128
#: Verdicts of a user-agent rule remembered per distinct User-Agent string; peers
#: choose the text, so past this the memo is cleared (a fleet has a handful).
MAX_USER_AGENT_MEMO = 1024
#: User-agent text quoted in an AlertAction's detail is cut to this many characters.
MAX_DETAIL_TEXT = 80

Kind = Literal["request", "response_sent", "malformed"]
KeyKind = Literal["source", "user", "target_user", "source_and_target"]
Fingerprint = Literal[
    "sipvicious_from_tag", "numeric_call_id", "sipvicious_branch", "compact_no_user_agent"
]

KINDS: tuple[Kind, ...] = get_args(Kind)
KEY_KINDS: tuple[KeyKind, ...] = get_args(KeyKind)
FINGERPRINTS: tuple[Fingerprint, ...] = get_args(Fingerprint)


# -- events in and actions out ---------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Observation:
    """One event the server reports to the IDS."""

    source: str
    zone: str
    kind: Kind
    #: The request method (for ``response_sent``: the method answered).
    method: str | None = None
    #: For ``response_sent``: the status we answered with.
    status: int | None = None
    user_agent: str | None = None
    from_tag: str | None = None
    call_id: str | None = None
    branch: str | None = None
    #: User part of the To URI (or the Request-URI).
    to_user: str | None = None
    #: For ``response_sent``: did ``to_user`` exist?
    target_known: bool | None = None
    #: For ``response_sent``: was the answer a failed credential check (a wrong
    #: password), as opposed to another refusal with the same status (a 403 "Too Many
    #: Contacts" or "Not Allowed From This Zone" is no evidence of guessing)?
    auth_failed: bool | None = None
    #: User name of an Authorization header.
    auth_user: str | None = None
    #: Lower-case header name -> first value, for header rules.
    headers: Mapping[str, str] = field(default_factory=dict)
    #: The message used compact header names (``v``, ``f``, ``i``...).
    compact: bool = False
    #: The transport it came over ("udp", "tls"...), for the scope of a ban decided
    #: from matches other workers counted ("" when unknown: treated as UDP).
    transport: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class AlertAction:
    rule: str
    #: The threshold key that fired (source address, user name...).
    key: str
    source: str
    detail: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Drop:
    """Do not process or answer the request (or malformed message)."""

    rule: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Reply:
    """Answer the request with ``status`` instead of processing it."""

    rule: str
    status: int = 403


@dataclass(frozen=True, slots=True, kw_only=True)
class BanAction:
    rule: str
    source: str
    seconds: int


IdsAction = AlertAction | Drop | Reply | BanAction


@dataclass(frozen=True, slots=True, kw_only=True)
class IdsStatistics:
    observations: int
    alerts: int
    #: Alerts not sent because the same rule and key alerted less than a window ago.
    alerts_suppressed: int
    bans: int
    #: Bans lengthened by a rule's escalation (recidive).
    escalations: int
    drops: int
    replies: int
    #: (rule, key) windows held now, and sources with a ban record.
    tracked_keys: int
    tracked_sources: int
    #: Windows and ban records forgotten because their table was full.
    evicted_keys: int
    #: Per rule name: observations that matched, and times the threshold was reached.
    rule_matches: Mapping[str, int]
    rule_fires: Mapping[str, int]


# -- rules -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Match:
    """What a rule matches; every condition given must hold."""

    kind: Kind = "request"
    #: SIP methods (case-sensitive, RFC 3261 §7.1); None: any.
    methods: frozenset[str] | None = None
    #: Statuses answered (``response_sent`` only); None: any final status.
    status: frozenset[int] | None = None
    target_known: bool | None = None
    #: The answer was a failed credential check (``response_sent`` only).
    auth_failed: bool | None = None
    #: Searched in the User-Agent, case-insensitively; no User-Agent never matches.
    user_agent: re.Pattern[str] | None = None
    #: (lower-case header name, pattern) searched in that header's first value.
    headers: tuple[tuple[str, re.Pattern[str]], ...] = ()
    fingerprints: tuple[Fingerprint, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Threshold:
    """Fire on the ``count``-th match within ``window`` seconds for one key."""

    count: int = 1
    window: float = 0.0
    key: KeyKind = "source"


@dataclass(frozen=True, slots=True, kw_only=True)
class Escalation:
    """fail2ban's recidive: the ``count``-th ban within ``window`` lasts ``ban_seconds``."""

    count: int
    window: float
    ban_seconds: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Rule:
    name: str
    description: str = ""
    match: Match = field(default_factory=Match)
    threshold: Threshold = field(default_factory=Threshold)
    alert: bool = False
    drop: bool = False
    reply_403: bool = False
    ban_seconds: int | None = None
    escalation: Escalation | None = None
    #: Zone names the rule applies in; None: every zone.
    zones: frozenset[str] | None = None
    #: The file the rule was read from (for messages).
    origin: str = ""


# -- fingerprints ----------------------------------------------------------------------

#: svcrack (0.3.3, svcrack.py ``Register``) sends its first, unauthenticated REGISTER of
#: each guess with this fixed From tag ("Embedding value so as to not run into errors").
SVCRACK_FIXED_TAG = "3206210844"
_HEX_TAG = re.compile(r"(?:[0-9a-fA-F]{2})+")
#: ``str(random.getrandbits(32))`` in a tag, when it has at least 6 digits.
_RANDBITS_32 = re.compile(rb"[1-9][0-9]{5,9}")
#: sipvicious makeRequest: ``branch=z9hG4bK-%s`` with ``random.getrandbits(32)``.
_SIPVICIOUS_BRANCH = re.compile(r"z9hG4bK-[0-9]{1,10}")


def is_sipvicious_from_tag(tag: str) -> bool:
    """A From tag made by sipvicious ``createTag``: ``hex(text + b"\\x01" + digits)``.

    svhelper.createTag(data) is ``b2a_hex(str(data).encode() + b'\\x01' +
    str(getrandbits(32)).encode())``: svmap hides the target address and port in
    ``text``, svwar the extension, svcrack ``user:password``. The whole shape is checked
    (printable UTF-8 text, one 0x01, then the decimal form of a 32-bit number of 6 to
    10 digits), not just "hex with a 0x01 byte": about 3% of random 16-hex-digit tags
    (baresip's kind) hold a 0x01 byte, and even "0x01 then digits" matches one random
    8-hex-digit tag in 40,000. A 32-bit random number has fewer than 6 digits once in
    40,000 draws; those tags are left to the Call-ID and branch fingerprints.
    """
    if tag == SVCRACK_FIXED_TAG:
        return True
    if "01" not in tag or _HEX_TAG.fullmatch(tag) is None:
        return False
    text, sep, digits = binascii.unhexlify(tag).partition(b"\x01")
    if not sep or not text or _RANDBITS_32.fullmatch(digits) is None or int(digits) >> 32:
        return False
    try:
        decoded = text.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return decoded.isprintable()


def is_numeric_call_id(call_id: str) -> bool:
    """A Call-ID of decimal digits only (sipvicious: ``random.getrandbits(32 or 80)``)."""
    return call_id.isdigit() and call_id.isascii()


def is_sipvicious_branch(branch: str) -> bool:
    """``z9hG4bK-`` and 1 to 10 decimal digits, nothing else (SIPp's ``z9hG4bK-pid-n-i``
    and the usual ``z9hG4bK`` + hex do not match)."""
    return _SIPVICIOUS_BRANCH.fullmatch(branch) is not None


def _fp_from_tag(obs: Observation) -> bool:
    return obs.from_tag is not None and is_sipvicious_from_tag(obs.from_tag)


def _fp_call_id(obs: Observation) -> bool:
    return obs.call_id is not None and is_numeric_call_id(obs.call_id)


def _fp_branch(obs: Observation) -> bool:
    return obs.branch is not None and is_sipvicious_branch(obs.branch)


def _fp_compact(obs: Observation) -> bool:
    return obs.compact and obs.user_agent is None


_FINGERPRINT_CHECKS: dict[Fingerprint, Callable[[Observation], bool]] = {
    "sipvicious_from_tag": _fp_from_tag,
    "numeric_call_id": _fp_call_id,
    "sipvicious_branch": _fp_branch,
    "compact_no_user_agent": _fp_compact,
}


# -- the engine ------------------------------------------------------------------------


def _predicates(rule: Rule) -> list[Callable[[Observation], bool]]:
    m = rule.match
    tests: list[Callable[[Observation], bool]] = []
    if rule.zones is not None:
        zones = rule.zones
        tests.append(lambda obs: obs.zone in zones)
    if m.status is not None:
        status = m.status
        tests.append(lambda obs: obs.status in status)
    if m.target_known is not None:
        known = m.target_known
        tests.append(lambda obs: obs.target_known is known)
    if m.auth_failed is not None:
        failed = m.auth_failed
        tests.append(lambda obs: obs.auth_failed is failed)
    tests.extend(_FINGERPRINT_CHECKS[f] for f in m.fingerprints)
    if m.user_agent is not None:
        tests.append(_user_agent_test(m.user_agent))
    for name, pattern in m.headers:
        tests.append(_header_test(name, pattern))
    return tests


def _user_agent_test(pattern: re.Pattern[str]) -> Callable[[Observation], bool]:
    # A fleet of phones sends a handful of User-Agent strings: remember the verdicts
    # (a case-insensitive alternation costs microseconds per search).
    memo: dict[str, bool] = {}

    def test(obs: Observation) -> bool:
        ua = obs.user_agent
        if ua is None:
            return False
        hit = memo.get(ua)
        if hit is None:
            hit = pattern.search(ua) is not None
            if len(memo) >= MAX_USER_AGENT_MEMO:
                memo.clear()
            memo[ua] = hit
        return hit

    return test


def _header_test(name: str, pattern: re.Pattern[str]) -> Callable[[Observation], bool]:
    def test(obs: Observation) -> bool:
        value = obs.headers.get(name)
        return value is not None and pattern.search(value) is not None

    return test


def _all_of(tests: tuple[Callable[[Observation], bool], ...]) -> Callable[[Observation], bool]:
    def test(obs: Observation) -> bool:
        # A plain loop: all() over a generator costs more than these few calls.
        for t in tests:  # noqa: SIM110
            if not t(obs):
                return False
        return True

    return test


class _Compiled:
    """A rule flattened for the hot path: its conditions become a few predicates,
    cheapest first, and ``test`` is None when the index alone decides (a flood rule)."""

    __slots__ = (
        "count",
        "escalation",
        "fired",
        "key",
        "matched",
        "name",
        "rule",
        "stateless",
        "test",
        "window",
    )

    def __init__(self, rule: Rule) -> None:
        self.rule = rule
        self.name = rule.name
        self.count = rule.threshold.count
        self.window = rule.threshold.window
        self.key = rule.threshold.key
        self.escalation = rule.escalation
        # A rule firing on every match with no window to suppress alerts needs no state.
        self.stateless = self.count == 1 and self.window == 0
        self.matched = 0
        self.fired = 0
        tests = _predicates(rule)
        self.test: Callable[[Observation], bool] | None
        if not tests:
            self.test = None
        elif len(tests) == 1:
            self.test = tests[0]
        else:
            self.test = _all_of(tuple(tests))

    def key_of(self, obs: Observation) -> str | None:
        if self.key == "source":
            return obs.source
        if self.key == "user":
            value = obs.auth_user
        elif self.key == "target_user":
            value = obs.to_user
        else:
            value = None if obs.to_user is None else f"{obs.source}/{obs.to_user}"
        if not value:
            return None
        return value[:MAX_KEY_LENGTH]


class _Window:
    """Times of the last ``count`` matches of one rule for one key."""

    __slots__ = ("alert_after", "times")

    def __init__(self) -> None:
        self.times: list[float] = []
        self.alert_after = float("-inf")


class _SourceRecord:
    """What the engine remembers of the bans it gave one source."""

    __slots__ = ("banned_until", "times")

    def __init__(self) -> None:
        self.times: list[float] = []
        self.banned_until = float("-inf")


class IdsEngine:
    """Evaluates rules over observations; see the module docstring."""

    def __init__(self, rules: Sequence[Rule]) -> None:
        self._windows: OrderedDict[tuple[str, str], _Window] = OrderedDict()
        self._sources: OrderedDict[str, _SourceRecord] = OrderedDict()
        self._observations = 0
        self._alerts = 0
        self._alerts_suppressed = 0
        self._bans = 0
        self._escalations = 0
        self._drops = 0
        self._replies = 0
        self._evicted = 0
        self._compiled: tuple[_Compiled, ...] = ()
        self._by_name: dict[str, _Compiled] = {}
        #: Counted matches not yet taken by take_matches (None: not shared).
        self._shared: list[tuple[str, str, float, str]] | None = None
        self._install(rules)

    @property
    def rules(self) -> tuple[Rule, ...]:
        return self._rules

    def _install(self, rules: Sequence[Rule]) -> None:
        names = [r.name for r in rules]
        if len(set(names)) != len(names):
            raise ValueError("rule names must be unique")
        self._rules = tuple(rules)
        previous = {c.name: c for c in self._compiled}
        compiled = [_Compiled(r) for r in rules]
        for c in compiled:  # statistics survive a reload
            old = previous.get(c.name)
            if old is not None:
                c.matched, c.fired = old.matched, old.fired
        self._compiled = tuple(compiled)
        self._by_name = {c.name: c for c in compiled}
        # Index: (kind, method) -> rules in file order. A method no rule names falls back
        # to the rules without a method list, so peers cannot grow this table.
        self._any_method: dict[str, tuple[_Compiled, ...]] = {}
        self._by_method: dict[tuple[str, str], tuple[_Compiled, ...]] = {}
        for kind in KINDS:
            of_kind = [c for c in compiled if c.rule.match.kind == kind]
            self._any_method[kind] = tuple(c for c in of_kind if c.rule.match.methods is None)
            named = {m for c in of_kind for m in (c.rule.match.methods or ())}
            for method in named:
                self._by_method[(kind, method)] = tuple(
                    c
                    for c in of_kind
                    if c.rule.match.methods is None or method in c.rule.match.methods
                )
        self._history_length = max(
            (r.escalation.count for r in rules if r.escalation is not None), default=0
        )
        self._history_window = max(
            (r.escalation.window for r in rules if r.escalation is not None), default=0.0
        )

    def replace_rules(self, rules: Sequence[Rule]) -> None:
        """Adopt a reloaded ruleset. Windows of rules whose threshold is unchanged and
        the ban records (for escalation) are kept; the others start empty."""
        kept = {r.name: r.threshold for r in self._rules}
        self._install(rules)
        same = {r.name for r in rules if kept.get(r.name) == r.threshold}
        for wkey in [k for k in self._windows if k[0] not in same]:
            del self._windows[wkey]

    def lift(self, source: str) -> None:
        """Forget the bans of ``source`` (an operator removed its ban by hand)."""
        self._sources.pop(source, None)

    # -- windows shared between workers -------------------------------------------------

    def share_matches(self) -> None:
        """Note every counted match from now on, for :meth:`take_matches`."""
        if self._shared is None:
            self._shared = []

    def take_matches(self) -> list[tuple[str, str, float, str]]:
        """The (rule, key, time, transport) of the matches counted since the last call."""
        shared = self._shared
        if not shared:
            return []
        self._shared = []
        return shared

    def merge_match(self, rule: str, key: str, time: float) -> bool:
        """Count another worker's match of ``rule`` for ``key`` at ``time`` in the window
        here (it fires nothing by itself); False for a rule this engine has not or that
        keeps no window."""
        compiled = self._by_name.get(rule)
        if compiled is None or compiled.stateless:
            return False
        self._count(self._window(rule, key[:MAX_KEY_LENGTH]), compiled, time)
        return True

    def check_merged(self, rule: str, key: str, now: float) -> list[IdsAction]:
        """After merging other workers' matches: the alert and ban of a source-keyed
        ``rule`` whose window for ``key`` holds its threshold at ``now``. No request is
        at hand, so no Drop or Reply; a source already banned gets no second ban, and
        the alert keeps its once-per-window limit."""
        compiled = self._by_name.get(rule)
        window = self._windows.get((rule, key))
        if compiled is None or window is None or compiled.key != "source":
            return []
        times = window.times
        if len(times) - bisect_right(times, now - compiled.window) < compiled.count:
            return []
        compiled.fired += 1
        r = compiled.rule
        actions: list[IdsAction] = []
        if r.alert and now >= window.alert_after:
            window.alert_after = now + compiled.window
            detail = (
                f"{r.description or r.name}; {compiled.count} within {compiled.window:g} s "
                "per source, counted over every signaling worker"
            )
            actions.append(AlertAction(rule=r.name, key=key, source=key, detail=detail))
            self._alerts += 1
        if r.ban_seconds is not None:
            obs = Observation(source=key, zone="", kind=r.match.kind)
            ban = self._ban(obs, [(compiled, key, True)], compiled, r.ban_seconds, now, actions)
            if ban is not None:
                actions.append(ban)
        return actions

    # -- the hot path -------------------------------------------------------------------

    def observe(self, obs: Observation, now: float) -> list[IdsAction]:
        """Evaluate one observation at time ``now`` (seconds, monotonic)."""
        self._observations += 1
        kind = obs.kind
        if kind == "response_sent" and (obs.status is None or obs.status < 200):
            return []  # provisional responses say nothing about the peer
        method = obs.method
        candidates = self._any_method[kind]
        if method is not None:
            candidates = self._by_method.get((kind, method), candidates)
        fired: list[tuple[_Compiled, str, bool]] = []  # (rule, key, send alert)
        for rule in candidates:
            test = rule.test
            if test is not None and not test(obs):
                continue
            rule.matched += 1
            key = obs.source if rule.key == "source" else rule.key_of(obs)
            if key is None:
                continue
            if rule.stateless:
                fired.append((rule, key, True))
                rule.fired += 1
                continue
            window = self._window(rule.name, key)
            shared = self._shared
            if shared is not None and len(shared) < MAX_TRACKED_KEYS:
                shared.append((rule.name, key, now, obs.transport))
            if self._count(window, rule, now):
                rule.fired += 1
                send = now >= window.alert_after
                if send:
                    window.alert_after = now + rule.window
                else:
                    self._alerts_suppressed += int(rule.rule.alert)
                fired.append((rule, key, send))
        if not fired:
            return []
        return self._act(obs, fired, now)

    def _window(self, name: str, key: str) -> _Window:
        wkey = (name, key)
        windows = self._windows
        window = windows.get(wkey)
        if window is None:
            window = windows[wkey] = _Window()
            if len(windows) > MAX_TRACKED_KEYS:
                windows.popitem(last=False)
                self._evicted += 1
        else:
            windows.move_to_end(wkey)
        return window

    @staticmethod
    def _count(window: _Window, rule: _Compiled, now: float) -> bool:
        """Record a match at ``now``; True when ``count`` matches lie in (now - window, now]."""
        times = window.times
        if times and now < times[-1]:
            insort(times, now)  # a clock going backwards must not break the order
        else:
            times.append(now)
        cut = now - rule.window
        if times[0] <= cut:
            del times[: bisect_right(times, cut)]
        excess = len(times) - rule.count
        if excess > 0:
            del times[:excess]
        return len(times) >= rule.count

    def _act(
        self, obs: Observation, fired: list[tuple[_Compiled, str, bool]], now: float
    ) -> list[IdsAction]:
        actions: list[IdsAction] = []
        drop: Drop | None = None
        reply: Reply | None = None
        ban_rule: _Compiled | None = None
        ban_seconds = 0
        for rule, key, send in fired:
            r = rule.rule
            if r.alert and send:
                actions.append(
                    AlertAction(rule=r.name, key=key, source=obs.source, detail=_detail(r, obs))
                )
            if r.drop and drop is None:
                drop = Drop(rule=r.name)
            if r.reply_403 and reply is None:
                reply = Reply(rule=r.name)
            if r.ban_seconds is not None and r.ban_seconds > ban_seconds:
                ban_rule, ban_seconds = rule, r.ban_seconds
        if ban_rule is not None:
            ban = self._ban(obs, fired, ban_rule, ban_seconds, now, actions)
            if ban is not None:
                actions.append(ban)
        # Responses are already sent: only alerts and bans apply. A malformed message can
        # be dropped but not answered with a 403 (it may have no Via to answer to).
        if drop is not None and obs.kind != "response_sent":
            actions.append(drop)
            self._drops += 1
        elif reply is not None and obs.kind == "request":
            actions.append(reply)
            self._replies += 1
        self._alerts += sum(1 for a in actions if isinstance(a, AlertAction))
        return actions

    def _ban(
        self,
        obs: Observation,
        fired: list[tuple[_Compiled, str, bool]],
        rule: _Compiled,
        seconds: int,
        now: float,
        actions: list[IdsAction],
    ) -> BanAction | None:
        source = obs.source
        record = self._sources.get(source)
        if record is None:
            record = self._sources[source] = _SourceRecord()
            if len(self._sources) > MAX_TRACKED_KEYS:
                self._sources.popitem(last=False)
                self._evicted += 1
        else:
            self._sources.move_to_end(source)
        if record.banned_until > now:
            return None  # already banned: the guard holds it (this came in before it knew)
        times = record.times
        times.append(now)
        cut = now - self._history_window
        del times[: bisect_right(times, cut)]
        if len(times) > self._history_length:
            del times[: len(times) - self._history_length]
        escalated: tuple[_Compiled, Escalation, int] | None = None
        for candidate, _, _ in fired:
            esc = candidate.escalation
            if esc is None or candidate.rule.ban_seconds is None or esc.ban_seconds <= seconds:
                continue
            recent = len(times) - bisect_right(times, now - esc.window)
            if recent >= esc.count and (escalated is None or esc.ban_seconds > escalated[2]):
                escalated = (candidate, esc, recent)
        name = rule.name
        if escalated is not None:
            candidate, esc, recent = escalated
            name, seconds = candidate.name, esc.ban_seconds
            self._escalations += 1
            actions.append(
                AlertAction(
                    rule=name,
                    key=source,
                    source=source,
                    detail=(f"recidive: {recent} bans within {esc.window:g} s, banned {seconds} s"),
                )
            )
        record.banned_until = now + seconds
        self._bans += 1
        return BanAction(rule=name, source=source, seconds=seconds)

    def statistics(self) -> IdsStatistics:
        return IdsStatistics(
            observations=self._observations,
            alerts=self._alerts,
            alerts_suppressed=self._alerts_suppressed,
            bans=self._bans,
            escalations=self._escalations,
            drops=self._drops,
            replies=self._replies,
            tracked_keys=len(self._windows),
            tracked_sources=len(self._sources),
            evicted_keys=self._evicted,
            rule_matches={c.name: c.matched for c in self._compiled},
            rule_fires={c.name: c.fired for c in self._compiled},
        )


def _detail(rule: Rule, obs: Observation) -> str:
    """A short, log-safe description of why ``rule`` fired (peer text quoted with repr)."""
    parts: list[str] = []
    m = rule.match
    if m.user_agent is not None and obs.user_agent is not None:
        parts.append(f"user agent {obs.user_agent[:MAX_DETAIL_TEXT]!r}")
    if m.fingerprints:
        parts.append("fingerprint " + "+".join(m.fingerprints))
    if m.target_known is False and obs.to_user is not None:
        parts.append(f"unknown target {obs.to_user[:MAX_DETAIL_TEXT]!r}")
    if m.status is not None:
        parts.append(f"answered {obs.status} to {obs.method}")
    elif m.methods is not None and obs.method is not None:
        parts.append(obs.method)
    if m.kind == "malformed":
        parts.append("malformed message")
    t = rule.threshold
    if t.count > 1:
        parts.append(f"{t.count} within {t.window:g} s per {t.key.replace('_', ' ')}")
    return "; ".join(parts) if parts else rule.description or rule.name

"""The fraud engine: checks outgoing calls against the compiled rules, books what
became of them, and remembers suspensions. How it works is the package docstring's
subject (:mod:`voipsec.monitor.fraud`); this module holds the decisions and the
evaluator of each check. Sans-IO: every time is an argument, nothing is read.

With several signaling workers every worker's engine sees every call: the worker that
decided a call reports it, and the others replay it with :meth:`FraudEngine.mirror`
(the same counters move, the origin's decision is taken as is, nothing is alerted) and
the usual answered/ended/discard calls (app/shared/fraud.py).
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Iterable, Mapping, Sequence

from ...rulefile import MAX_PREFIXES
from .checks import _FraudChecks
from .counters import (
    _Active,
    _Baseline,
    _Spend,
    _State,
    _Suspension,
    _User,
)
from .model import (
    _SEVERITY,
    MAX_ACTIVE_CALLS,
    MAX_COUNTRIES_PER_USER,
    MAX_RULES,
    MAX_TRACKED_USERS,
    MAX_WANGIRI_CALLS_PER_NUMBER,
    MAX_WANGIRI_NUMBERS,
    Attempt,
    Decision,
    FraudRule,
    FraudStatistics,
    Violation,
)
from .rates import RateTable, country_code
from .rules import (
    _Attached,
    _Call,
    _Clock,
    _CompiledRule,
    _Hit,
    _Index,
    _violation,
)
from .state import _Persistence

__all__ = ["FraudEngine"]

_ALLOWED = Decision(allowed=True, status=None, reason="", violations=(), max_duration=None)


class FraudEngine(_FraudChecks, _Persistence):
    """Evaluates fraud rules over outgoing calls; see the package docstring."""

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
        self._compiled = tuple(_CompiledRule(r, i) for i, r in enumerate(rules))
        self._by_id = {c.id: c for c in self._compiled}
        group_members = {g: tuple(members) for g, members in (groups or {}).items()}
        # One index for the rules of everyone, one per user for the rules naming the user
        # or a group of theirs: disjoint, so a check collects each rule at most once.
        self._everyone = _Index()
        scoped: dict[str, dict[int, _CompiledRule]] = {}
        clocks: dict[str, _Clock] = {}
        evaluators = self._evaluators()
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
        candidates: list[_CompiledRule] = []
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
        attach: list[tuple[_CompiledRule, _State | None, float]],
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

    def mirror(self, attempt: Attempt, *, allowed: bool) -> None:
        """Another worker decided ``attempt`` (``allowed`` or not): count it here as that
        worker did, so this engine's windows, concurrency and spend hold every worker's
        calls. Its violations were alerted there; none is counted or returned here."""
        if self._calls:
            old = self._calls.pop(attempt.call_id, None)
            if old is not None:
                self._close(old)
        candidates: list[_CompiledRule] = []
        self._everyone.lookup(attempt.e164, attempt.kind, candidates)
        index = self._scoped.get(attempt.user)
        if index is not None:
            index.lookup(attempt.e164, attempt.kind, candidates)
        state = self._user(attempt.user)
        number = attempt.e164 if attempt.e164 is not None else attempt.dialled
        now = attempt.time
        attach: _Attached = []
        for c in candidates:
            if c.gated and (
                (c.excepts and attempt.e164 is not None and c.excluded(attempt.e164))
                or (c.timed and not c.in_window(now))
            ):
                continue
            hit = c.evaluate(c, attempt, number, state, attach)
            if allowed and hit is not None and hit[1].action == "throttle":
                state.throttled[hit[0].rule] = now
        self._limit = None
        if allowed:
            self._allow(attempt, number, attach, state, counted=False)
            return
        for _, st, _ in attach:
            if isinstance(st, _Active):
                st.count -= 1

    def mirror_suspension(self, user: str, rule: str, time: float, detail: str) -> None:
        """Another worker suspended ``user``: every worker refuses the user's calls."""
        if user not in self._suspended:
            self._suspended[user] = _Suspension(rule=rule, time=time, detail=detail)

    def _allow(
        self,
        attempt: Attempt,
        number: str,
        attach: _Attached,
        state: _User,
        *,
        counted: bool = True,
    ) -> None:
        """Track an allowed attempt as a call until ended(); ``counted``: in statistics."""
        self._allowed += int(counted)
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
                    hit = _violation(c, graded, st.amount, graded[1].threshold, detail)
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

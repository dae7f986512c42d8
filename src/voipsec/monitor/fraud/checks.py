"""The fraud checks: one evaluator per ``FraudRule.check``, each counting the attempt
in its (rule, user) counter and grading the value against the rule's levels.

How this works: :class:`_FraudChecks` is a base class of the engine; the engine binds each
compiled rule's ``evaluate`` to the evaluator of its check when it is built, and calls
it with the rule, the attempt, its number (E.164, else as dialled), the user's counters
and the list of (rule, counter, rate) the call takes along until it ends.
An evaluator returns a hit (the violation and its level) or None; the value each check
compares is described in the package docstring.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from typing import cast

from .counters import _Active, _Baseline, _Repeat, _Run, _slot, _Spend, _Times, _User
from .model import _WINDOW_TEXT, DAYS, MAX_DESTINATIONS_PER_HOUR, Attempt
from .rates import RateTable, country_code
from .rules import _Attached, _Call, _CompiledRule, _Evaluator, _Hit, _new_state, _stops, _violation

__all__: list[str] = []


class _FraudChecks:
    """The evaluators, and the tables they read."""

    _rates: RateTable
    _high_risk: frozenset[str]
    _high_risk_lengths: tuple[int, ...]
    _wangiri: OrderedDict[str, deque[tuple[float, float, str]]]
    #: The least max_duration the rules of the current check asked for.
    _limit: float | None

    def _evaluators(self) -> dict[str, _Evaluator]:
        """The evaluator of each check, bound to this engine (one per compiled rule)."""
        return {
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

    def _rate(
        self,
        c: _CompiledRule,
        a: Attempt,
        number: str,
        user: _User,
        attach: _Attached,
    ) -> _Hit | None:
        st = cast(_Times, user.states.get(c.id) or _new_state(c, user))
        value = st.add(a.time, c.window)
        graded = c.grade(value)
        if graded is None:
            return None
        adjective, target = c.scope
        threshold = graded[1].threshold
        detail = (
            f"{a.user}: {value} {adjective}calls{target} in {_WINDOW_TEXT[c.window]} "
            f"> {threshold:g}"
        )
        return _violation(c, graded, value, threshold, detail)

    def _concurrent(
        self,
        c: _CompiledRule,
        a: Attempt,
        number: str,
        user: _User,
        attach: _Attached,
    ) -> _Hit | None:
        st = cast(_Active, user.states.get(c.id) or _new_state(c, user))
        attach.append((c, st, 0.0))
        st.count += 1  # this call; taken back if the attempt is refused
        value = st.count
        graded = c.grade(value)
        if graded is None:
            return None
        adjective, target = c.scope
        threshold = graded[1].threshold
        detail = f"{a.user}: {value} concurrent {adjective}calls{target} > {threshold:g}"
        return _violation(c, graded, value, threshold, detail)

    def _duration(
        self,
        c: _CompiledRule,
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
        c: _CompiledRule,
        a: Attempt,
        number: str,
        user: _User,
        attach: _Attached,
    ) -> _Hit | None:
        st = cast(_Repeat, user.states.get(c.id) or _new_state(c, user))
        value = st.add(a.time, number, c.window)
        graded = c.grade(value)
        if graded is None:
            return None
        threshold = graded[1].threshold
        detail = f"{a.user}: {value} calls to {number} in {c.window:g} s > {threshold:g}"
        return _violation(c, graded, value, threshold, detail)

    def _incrementing(
        self,
        c: _CompiledRule,
        a: Attempt,
        number: str,
        user: _User,
        attach: _Attached,
    ) -> _Hit | None:
        digits = number[1:] if number.startswith("+") else number
        # Not str.isdigit alone: it also accepts "²" and "٣"; 15 digits is E.164's most.
        if not (digits.isascii() and digits.isdigit()) or len(digits) > 15:
            return None  # a user name: no number to step through
        st = cast(_Run, user.states.get(c.id) or _new_state(c, user))
        value = st.add(a.time, digits, c.window)
        graded = c.grade(value)
        if graded is None:
            return None
        threshold = graded[1].threshold
        plus = "+" if number.startswith("+") else ""
        detail = (
            f"{a.user}: {value} incrementing numbers in a row ({plus}{st.first} .. "
            f"{plus}{st.last}) within {c.window:g} s > {threshold:g}"
        )
        return _violation(c, graded, value, threshold, detail)

    def _spend(
        self,
        c: _CompiledRule,
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
        st = cast(_Spend, user.states.get(c.id) or _new_state(c, user))
        spent = st.today(c.clock.sync(a.time).ordinal)
        attach.append((c, st, rate.per_minute))
        if c.stop_at is not None:
            # The call may use what is left of the budget, then it is cut.
            self._stop_at(max(0.0, (c.stop_at - spent) / rate.per_minute * 60.0))
        value = spent + rate.per_minute * c.rule.projected_minutes
        graded = c.grade(value)
        if graded is None:
            return None
        threshold = graded[1].threshold
        detail = (
            f"{a.user}: spend today {spent:.2f} + {c.rule.projected_minutes:g} min to "
            f"{a.e164} at {rate.per_minute:g}/min = {value:.2f} > {threshold:g}"
        )
        return _violation(c, graded, value, threshold, detail)

    def _high_risk_check(
        self,
        c: _CompiledRule,
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
        return _violation(c, graded, 1.0, graded[1].threshold, detail)

    def _new_country(
        self,
        c: _CompiledRule,
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
        return _violation(c, graded, 1.0, graded[1].threshold, detail)

    def _destination(
        self,
        c: _CompiledRule,
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
        return _violation(c, graded, 1.0, graded[1].threshold, detail)

    def _wangiri_check(
        self,
        c: _CompiledRule,
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
            f"{a.user}: call-back to {a.e164}, which rang {value} time(s) "
            f"unanswered for < {ring:g} s in {c.window:g} s (last: {last_user}, {last_ring:g} s) "
            f"> {threshold:g}"
        )
        return _violation(c, graded, value, threshold, detail)

    def _unusual(
        self,
        c: _CompiledRule,
        a: Attempt,
        number: str,
        user: _User,
        attach: _Attached,
    ) -> _Hit | None:
        st = cast(_Baseline, user.states.get(c.id) or _new_state(c, user))
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

    def _baseline_hit(self, c: _CompiledRule, user: str, st: _Baseline, key: int) -> _Hit | None:
        rule = c.rule
        slot = _slot(key)
        if st.seen[slot] < rule.warmup:
            return None
        base = max(st.ewma[slot], rule.floor)
        value = st.current
        graded = c.first_level(lambda level: value > base * level.threshold)
        if graded is None:
            return None
        threshold = base * graded[1].threshold
        metric = rule.metric if rule.metric != "destinations" else "distinct destinations"
        day = DAYS[slot // 24]
        detail = (
            f"{user}: {value:g} {metric} this hour ({day} {slot % 24:02d}h), baseline "
            f"{base:.2f} x {graded[1].threshold:g} = {threshold:.2f}"
        )
        return _violation(c, graded, value, threshold, detail)

    def _duration_hit(self, c: _CompiledRule, call: _Call, billable: float) -> _Hit | None:
        graded = c.first_level(lambda level: billable >= level.threshold)
        if graded is None:
            return None
        adjective, _ = c.scope
        threshold = graded[1].threshold
        cut = " (cut at the limit)" if _stops(graded[1]) else ""
        detail = (
            f"{call.user}: {adjective}call to {call.number} lasted {billable:g} s "
            f">= {threshold:g}{cut}"
        )
        return _violation(c, graded, billable, threshold, detail)

    def _stop_at(self, seconds: float) -> None:
        """A rule wants the call cut after ``seconds``; the least such limit wins."""
        limit = self._limit
        if limit is None or seconds < limit:
            self._limit = seconds

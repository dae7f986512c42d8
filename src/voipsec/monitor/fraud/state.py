"""Snapshots of the fraud engine: every counter as JSON-able data, and back.

How this works: :class:`_Persistence` is the engine's base class; it declares the
tables the engine keeps and turns them into a versioned mapping (:meth:`snapshot`) and
back (:meth:`load_state`), validating every field so a broken snapshot raises
:class:`FraudStateError` and leaves the engine empty (fails closed on its own state,
never half loaded).
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Mapping
from typing import Any

from .counters import (
    _STATE_OF,
    STATE_VERSION,
    _dict,
    _float,
    _list,
    _Spend,
    _State,
    _str,
    _Suspension,
    _User,
)
from .model import (
    MAX_COUNTRIES_PER_USER,
    MAX_TRACKED_USERS,
    MAX_WANGIRI_CALLS_PER_NUMBER,
    FraudStateError,
)
from .rates import RateTable
from .rules import _Call, _CompiledRule, _new_state

__all__ = ["COUNTERS"]

#: The engine's counters kept in a snapshot (attributes ``_<name>``).
COUNTERS = (
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
)


class _Persistence:
    """What the engine keeps between calls, and its snapshot."""

    _users: OrderedDict[str, _User]
    _calls: OrderedDict[str, _Call]
    _inbound: OrderedDict[str, tuple[str, float, str]]
    _wangiri: OrderedDict[str, deque[tuple[float, float, str]]]
    _suspended: dict[str, _Suspension]
    _rule_violations: dict[str, int]
    _by_id: dict[str, _CompiledRule]
    _rates: RateTable

    def _reset(self) -> None:
        raise NotImplementedError

    def _user(self, name: str) -> _User:
        raise NotImplementedError

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
            "version": STATE_VERSION,
            "users": users,
            "suspended": {
                u: {"rule": s.rule, "time": s.time, "detail": s.detail}
                for u, s in self._suspended.items()
            },
            "calls": calls,
            "inbound": {k: list(v) for k, v in self._inbound.items()},
            "wangiri": {k: [list(x) for x in v] for k, v in self._wangiri.items()},
            "counters": {
                **{key: getattr(self, "_" + key) for key in COUNTERS},
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
        if not isinstance(state, Mapping) or state.get("version") != STATE_VERSION:
            raise FraudStateError(f"state: version: must be {STATE_VERSION}")
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
        for key in COUNTERS:
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
                    st: _State | None = user.states.get(c.id) or _new_state(c, user)
                else:
                    st = None
                rate = 0.0
                if isinstance(st, _Spend) and call.number.startswith("+"):
                    found = self._rates.lookup(call.number)
                    rate = found.per_minute if found is not None else 0.0
                call.rules.append((c, st, rate))
            self._calls[call_id] = call

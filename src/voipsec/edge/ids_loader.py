"""Reading IDS rule files: the loader the shell calls before it builds an
:class:`~voipsec.edge.ids.IdsEngine`, which itself reads no file.

A rule file is YAML with one key, ``rules`` (read by :mod:`voipsec.rulefile`, like the
fraud rules); each rule is validated here field by field, and every problem raises the
one :class:`~voipsec.rulefile.RuleFileError` (``RuleError`` here), one line naming the
file, the rule and the key. Fails closed: a file with any problem stops the load.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from importlib.resources import files
from pathlib import Path
from typing import Any

from ..rulefile import SAFE_YAML_LOADER, RuleFileError, RuleReader, load_rule_files
from .ids import (
    FINGERPRINTS,
    KEY_KINDS,
    KINDS,
    MAX_THRESHOLD_COUNT,
    Escalation,
    Kind,
    Match,
    Rule,
    Threshold,
)

__all__ = ["RuleError", "default_rules_path", "load_rules"]

#: The one rule-file error under the name the IDS has always used.
RuleError = RuleFileError

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]*")
_TOKEN = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")
_RULE_KEYS = frozenset(
    {"name", "description", "enabled", "zones", "match", "threshold", "actions", "escalation"}
)
_MATCH_KEYS = frozenset(
    {
        "kind",
        "methods",
        "status",
        "target_known",
        "auth_failed",
        "user_agent",
        "headers",
        "fingerprints",
    }
)
_THRESHOLD_KEYS = frozenset({"count", "window", "key"})
_ESCALATION_KEYS = frozenset({"count", "window", "ban_seconds"})


def default_rules_path() -> Path:
    """The shipped ruleset, ``voipsec/edge/rules/default.yaml``."""
    resource = files("voipsec.edge").joinpath("rules").joinpath("default.yaml")
    return resource if isinstance(resource, Path) else Path(str(resource))


def load_rules(paths: Sequence[Path]) -> list[Rule]:
    """Read rule files in order. A rule named like an earlier one replaces it (so a user
    file can retune or, with ``enabled: false``, switch off a default rule); disabled
    rules are left out. Raises :class:`RuleError` for the first problem found."""
    # The pure-Python YAML loader: its messages say what it expected, for small files.
    return load_rule_files(paths, _IdsRuleReader, name_key="name", loader=SAFE_YAML_LOADER)


class _IdsRuleReader(RuleReader[Rule]):
    """Validates one rule mapping; every error names file, rule and key."""

    def read(self) -> tuple[str, Rule | None]:
        item = self.mapping()
        name = item.get("name")
        if not isinstance(name, str) or _NAME.fullmatch(name) is None:
            raise self.fail("name", "must be letters, digits, '.', '_' or '-'")
        self.label = f"rule {name!r}"
        self._keys(item, _RULE_KEYS, "")
        description = item.get("description", "")
        if not isinstance(description, str):
            raise self.fail("description", "must be a string")
        enabled = item.get("enabled", True)
        if not isinstance(enabled, bool):
            raise self.fail("enabled", "must be true or false")
        zones = self._zones(item.get("zones"))
        if "match" not in item:
            raise self.fail("match", "is required")
        match = self._match(item["match"])
        threshold = self._threshold(item.get("threshold", {}))
        alert, drop, reply, ban = self._actions(item.get("actions"), match.kind)
        escalation = self._escalation(item.get("escalation"), ban)
        rule = Rule(
            name=name,
            description=description,
            match=match,
            threshold=threshold,
            alert=alert,
            drop=drop,
            reply_403=reply,
            ban_seconds=ban,
            escalation=escalation,
            zones=zones,
            origin=str(self.path),
        )
        return name, rule if enabled else None

    def _keys(self, mapping: dict[Any, Any], allowed: frozenset[str], prefix: str) -> None:
        for key in mapping:
            if key not in allowed:
                raise self.fail(
                    f"{prefix}{key}", f"unknown key (known: {', '.join(sorted(allowed))})"
                )

    def _zones(self, value: object) -> frozenset[str] | None:
        if value is None:
            return None
        if (
            not isinstance(value, list)
            or not value
            or not all(isinstance(z, str) and z for z in value)
        ):
            raise self.fail("zones", "must be a non-empty list of zone names")
        return frozenset(value)

    def _match(self, value: object) -> Match:
        if not isinstance(value, dict):
            raise self.fail("match", "must be a mapping")
        self._keys(value, _MATCH_KEYS, "match.")
        kind = value.get("kind", "request")
        if kind not in KINDS:
            raise self.fail("match.kind", f"must be one of {', '.join(KINDS)}")
        methods = value.get("methods")
        if methods is not None:
            if (
                not isinstance(methods, list)
                or not methods
                or not all(isinstance(m, str) and _TOKEN.fullmatch(m) for m in methods)
            ):
                raise self.fail("match.methods", "must be a non-empty list of SIP methods")
            if kind == "malformed":
                raise self.fail("match.methods", "a malformed message has no method")
            methods = frozenset(methods)
        status = value.get("status")
        if status is not None:
            if kind != "response_sent":
                raise self.fail("match.status", "only for kind response_sent")
            if (
                not isinstance(status, list)
                or not status
                or not all(type(s) is int and 200 <= s <= 699 for s in status)
            ):
                raise self.fail(
                    "match.status", "must be a non-empty list of final statuses (200-699)"
                )
            status = frozenset(status)
        target_known = value.get("target_known")
        if target_known is not None:
            if kind != "response_sent":
                raise self.fail("match.target_known", "only for kind response_sent")
            if not isinstance(target_known, bool):
                raise self.fail("match.target_known", "must be true or false")
        auth_failed = value.get("auth_failed")
        if auth_failed is not None:
            if kind != "response_sent":
                raise self.fail("match.auth_failed", "only for kind response_sent")
            if not isinstance(auth_failed, bool):
                raise self.fail("match.auth_failed", "must be true or false")
        user_agent = value.get("user_agent")
        ua_pattern = None
        if user_agent is not None:
            ua_pattern = self._regex("match.user_agent", user_agent, re.IGNORECASE)
        headers_value = value.get("headers", {})
        if not isinstance(headers_value, dict):
            raise self.fail("match.headers", "must be a mapping of header name to regex")
        headers: list[tuple[str, re.Pattern[str]]] = []
        for hname, regex in headers_value.items():
            if not isinstance(hname, str) or _TOKEN.fullmatch(hname) is None:
                raise self.fail("match.headers", f"{hname!r} is not a header name")
            headers.append((hname.lower(), self._regex(f"match.headers.{hname}", regex, 0)))
        prints = value.get("fingerprints", [])
        if not isinstance(prints, list) or not all(p in FINGERPRINTS for p in prints):
            raise self.fail("match.fingerprints", f"must be a list of: {', '.join(FINGERPRINTS)}")
        return Match(
            kind=kind,
            methods=methods,
            status=status,
            target_known=target_known,
            auth_failed=auth_failed,
            user_agent=ua_pattern,
            headers=tuple(headers),
            fingerprints=tuple(prints),
        )

    def _regex(self, key: str, value: object, flags: int) -> re.Pattern[str]:
        if not isinstance(value, str) or not value:
            raise self.fail(key, "must be a non-empty regular expression")
        try:
            return re.compile(value, flags)
        except re.error as exc:
            raise self.fail(key, f"invalid regular expression: {exc}") from None

    def _threshold(self, value: object) -> Threshold:
        if not isinstance(value, dict):
            raise self.fail("threshold", "must be a mapping")
        self._keys(value, _THRESHOLD_KEYS, "threshold.")
        count = value.get("count", 1)
        if type(count) is not int or not 1 <= count <= MAX_THRESHOLD_COUNT:
            raise self.fail(
                "threshold.count", f"must be an integer from 1 to {MAX_THRESHOLD_COUNT}"
            )
        window = value.get("window", 0)
        if type(window) not in (int, float) or window < 0:
            raise self.fail("threshold.window", "must be a number of seconds")
        if count > 1 and window <= 0:
            raise self.fail("threshold.window", "is required (seconds > 0) when count > 1")
        key = value.get("key", "source")
        if key not in KEY_KINDS:
            raise self.fail("threshold.key", f"must be one of {', '.join(KEY_KINDS)}")
        return Threshold(count=count, window=float(window), key=key)

    def _actions(self, value: object, kind: Kind) -> tuple[bool, bool, bool, int | None]:
        if not isinstance(value, list) or not value:
            raise self.fail("actions", "must be a non-empty list")
        alert = drop = reply = False
        ban: int | None = None
        for action in value:
            if action == "alert":
                alert = True
            elif action == "drop":
                drop = True
            elif action == "reply_403":
                if kind != "request":
                    raise self.fail("actions", "reply_403 only for kind request")
                reply = True
            elif isinstance(action, dict) and set(action) == {"ban"}:
                seconds = action["ban"]
                if type(seconds) is not int or seconds <= 0:
                    raise self.fail("actions.ban", "must be a whole number of seconds > 0")
                ban = seconds
            else:
                raise self.fail(
                    "actions", f"unknown action {action!r} (alert, drop, reply_403, ban: SECONDS)"
                )
        if drop and kind == "response_sent":
            raise self.fail("actions", "drop does not apply to kind response_sent")
        return alert, drop, reply, ban

    def _escalation(self, value: object, ban: int | None) -> Escalation | None:
        if value is None:
            return None
        if not isinstance(value, dict):
            raise self.fail("escalation", "must be a mapping")
        self._keys(value, _ESCALATION_KEYS, "escalation.")
        if ban is None:
            raise self.fail("escalation", "needs a ban action")
        for key in ("count", "window", "ban_seconds"):
            if key not in value:
                raise self.fail(f"escalation.{key}", "is required")
        count, window, seconds = value["count"], value["window"], value["ban_seconds"]
        if type(count) is not int or not 2 <= count <= MAX_THRESHOLD_COUNT:
            raise self.fail(
                "escalation.count", f"must be an integer from 2 to {MAX_THRESHOLD_COUNT}"
            )
        if type(window) not in (int, float) or window <= 0:
            raise self.fail("escalation.window", "must be a number of seconds > 0")
        if type(seconds) is not int or seconds <= ban:
            raise self.fail("escalation.ban_seconds", f"must be whole seconds > the ban ({ban})")
        return Escalation(count=count, window=float(window), ban_seconds=seconds)

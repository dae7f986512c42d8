"""Validate a SARIF log against the SARIF 2.1.0 JSON schema and GitHub code scanning's rules.

The schema is tests/data/sarif/sarif-schema-2.1.0.json (its README says where it comes
from). ``jsonschema`` checks the formats it has checkers for; the URI rules code
scanning enforces on upload (``uri-reference``, and a relative URI, since an absolute one
of another scheme than the checkout's is refused) are checked here directly.
"""

from __future__ import annotations

import datetime
import json
import re
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema

SCHEMA = Path(__file__).parent / "data" / "sarif" / "sarif-schema-2.1.0.json"
#: RFC 3986 §2: the characters a URI reference may hold (others percent-encoded).
_URI_CHARS = re.compile(r"^(?:[A-Za-z0-9\-._~!$&'()*+,;=:@/?#]|%[0-9A-Fa-f]{2})*$")


@cache
def _validator() -> Any:
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def _relative_uri(uri: str) -> bool:
    """A relative-path reference (RFC 3986 §4.2): no scheme, no ':' in the first segment."""
    first = uri.split("/", 1)[0]
    return bool(_URI_CHARS.match(uri)) and ":" not in first and not uri.startswith("//")


def validated(text: str) -> dict[str, Any]:
    """The SARIF log in ``text``; AssertionError with every violation if it is not valid."""
    log: dict[str, Any] = json.loads(text)
    errors = sorted(_validator().iter_errors(log), key=lambda e: list(e.absolute_path))
    problems = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors]
    for run in log.get("runs", []):
        for invocation in run.get("invocations", []):
            stamp = invocation.get("startTimeUtc", "")
            try:
                datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
            except ValueError:
                problems.append(f"startTimeUtc {stamp!r} is not a date-time")
        for result in run.get("results", []):
            locations = result.get("locations", [])
            if not locations:
                problems.append(f"{result.get('ruleId')}: no location (code scanning needs one)")
            for location in locations:
                uri = location["physicalLocation"]["artifactLocation"]["uri"]
                if not _relative_uri(uri):
                    problems.append(f"{result.get('ruleId')}: {uri!r} is not a relative URI")
    assert not problems, "\n".join(problems)
    return log

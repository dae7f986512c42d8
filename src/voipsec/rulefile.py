"""Reading the rule and prefix files that the IDS, the fraud engine and the dial plan load.

How this works: every such file is read the same way, so it lives here once. A file is
read whole up to a size limit (a wrong file is refused before it fills memory), decoded
as UTF-8, and either parsed as a YAML document with one key, ``rules``, holding a list
(:func:`load_rule_items`) or read as a list of E.164 prefixes, one a line
(:func:`load_prefix_file`). Every problem raises the one :class:`RuleFileError`, whose
message is one line that names the file first: ``file: why``, ``file:line: why`` or
``file: rule 'x': key: why`` (:func:`rule_error`), so the CLI and the server print it
as it is.

This module is a loader for the shell: it reads files and imports no feature module,
so ``edge``, ``monitor`` and ``core`` callers may all use it. The engines themselves
take the parsed rules, never a path.

Failure mode: fails closed. A file with any problem stops the load; nothing runs with
part of a ruleset.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Generic, TypeVar

import yaml

__all__ = [
    "FAST_YAML_LOADER",
    "MAX_PREFIXES",
    "MAX_RULE_FILE_BYTES",
    "SAFE_YAML_LOADER",
    "RuleFileError",
    "RuleReader",
    "load_prefix_file",
    "load_rule_files",
    "load_rule_items",
    "read_text",
    "rule_error",
]

#: A rule file larger than this is refused before parsing (YAML of 10,000 fraud rules
#: is about 2 MB; this keeps a wrong file from being read into memory whole).
MAX_RULE_FILE_BYTES = 4 * 1024 * 1024
#: Lines of a prefix file (commercial IRSF lists of number ranges reach tens of
#: thousands; more belongs in a database, not in memory per process).
MAX_PREFIXES = 100_000

#: The pure-Python safe loader: its messages name what it expected ("expected the
#: node content, but found '<stream end>'"); the IDS's small files use it.
SAFE_YAML_LOADER: type[yaml.SafeLoader] = yaml.SafeLoader
#: libyaml's safe loader when PyYAML was built with it (ten times faster on big files,
#: such as a fraud ruleset of thousands of rules).
FAST_YAML_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

#: A rule as its engine takes it (an IDS ``Rule``, a ``FraudRule``).
R = TypeVar("R")

#: An E.164 prefix: "+" and 1 to 15 digits, no leading zero.
_PREFIX = re.compile(r"\+[1-9][0-9]{0,14}")


class RuleFileError(ValueError):
    """A rule, rate or prefix file that cannot be used; one line: file, rule, key, why."""


def rule_error(path: Path | str, label: str, key: str, why: str) -> RuleFileError:
    """The error for one field of one rule: ``file: rule 'x': key: why``."""
    return RuleFileError(f"{path}: {label}: {key}: {why}")


def read_text(path: Path, limit: int = MAX_RULE_FILE_BYTES) -> str:
    """The UTF-8 text of ``path``; raises :class:`RuleFileError` when it cannot be read,
    is larger than ``limit`` bytes or is not UTF-8 (reading stops at ``limit + 1``)."""
    try:
        with path.open("rb") as f:
            data = f.read(limit + 1)
    except OSError as exc:
        raise RuleFileError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if len(data) > limit:
        raise RuleFileError(f"{path}: larger than {limit} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RuleFileError(f"{path}: not UTF-8: {exc.reason} at byte {exc.start}") from None


def load_rule_items(
    path: Path,
    *,
    loader: type[yaml.SafeLoader] = FAST_YAML_LOADER,
    max_rules: int | None = None,
    key: str = "rules",
) -> list[Any]:
    """The items of the ``rules`` list (or ``key``'s) of the YAML file ``path``, not
    yet validated. Raises :class:`RuleFileError` for a file that cannot be read,
    invalid YAML, any other shape than ``{rules: [...]}`` or more than ``max_rules``
    items."""
    text = read_text(path)
    try:
        document = yaml.load(text, Loader=loader)  # noqa: S506 (only safe loaders)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"line {mark.line + 1}: " if mark is not None else ""
        raise RuleFileError(f"{path}: {where}invalid YAML: {exc.problem}") from None
    except yaml.YAMLError as exc:
        raise RuleFileError(f"{path}: invalid YAML: {exc}") from None
    if not isinstance(document, dict) or set(document) != {key}:
        raise RuleFileError(f"{path}: the file must be a mapping with one key, {key!r}")
    items = document[key]
    if not isinstance(items, list):
        raise RuleFileError(f"{path}: {key}: must be a list")
    if max_rules is not None and len(items) > max_rules:
        raise RuleFileError(f"{path}: more than {max_rules} rules")
    return items


class RuleReader(Generic[R]):
    """Validates one item of a rule file; subclasses read the fields of their engine's
    rules. Every error names the file and the rule: ``rule #3`` until the rule's name
    is known, ``rule 'x'`` after (subclasses set :attr:`label`)."""

    def __init__(self, path: Path, index: int, item: object) -> None:
        self.path = path
        self.label = f"rule #{index}"
        self.item = item

    def fail(self, key: str, why: str) -> RuleFileError:
        return rule_error(self.path, self.label, key, why)

    def mapping(self) -> dict[Any, Any]:
        """The item, which must be a mapping."""
        if not isinstance(self.item, dict):
            raise RuleFileError(f"{self.path}: {self.label}: must be a mapping")
        return self.item

    def read(self) -> tuple[str, R | None]:
        """(the rule's name, the rule or None when it is switched off)."""
        raise NotImplementedError


def load_rule_files(
    paths: Sequence[Path],
    reader: type[RuleReader[R]],
    *,
    name_key: str,
    loader: type[yaml.SafeLoader] = FAST_YAML_LOADER,
    max_rules: int | None = None,
    key: str = "rules",
) -> list[R]:
    """The rules of ``paths`` read in order, each item validated by ``reader``. A rule
    named like an earlier one replaces it in the earlier one's place, so a site file
    can retune a shipped rule or switch it off (``enabled: false``); switched-off rules
    are left out. Raises :class:`RuleFileError` for the first problem: a name twice in
    one file (``name_key`` says which field names a rule), more than ``max_rules``.
    ``key`` is the file's one top-level key (``rules`` unless a data file says what
    it holds, such as ``advisories``)."""
    merged: dict[str, R | None] = {}
    for path in map(Path, paths):
        for name, rule in _read_rules(path, reader, name_key, loader, max_rules, key):
            merged[name] = rule
            if max_rules is not None and len(merged) > max_rules:
                raise RuleFileError(f"{path}: more than {max_rules} rules")
    return [r for r in merged.values() if r is not None]


def _read_rules(
    path: Path,
    reader: type[RuleReader[R]],
    name_key: str,
    loader: type[yaml.SafeLoader],
    max_rules: int | None,
    key: str = "rules",
) -> list[tuple[str, R | None]]:
    """Every rule of one file, validated whole before any is merged."""
    out: list[tuple[str, R | None]] = []
    seen: set[str] = set()
    items = load_rule_items(path, loader=loader, max_rules=max_rules, key=key)
    for index, item in enumerate(items, start=1):
        name, rule = reader(path, index, item).read()
        if name in seen:
            raise RuleFileError(f"{path}: rule {name!r}: {name_key}: defined twice in this file")
        seen.add(name)
        out.append((name, rule))
    return out


def load_prefix_file(path: Path, limit: int = MAX_PREFIXES) -> list[str]:
    """The E.164 prefixes in ``path`` in file order, duplicates dropped: one prefix
    ("+" and 1 to 15 digits, e.g. ``+4490``) per line, ``#`` starts a comment, blank
    lines are skipped. Raises :class:`RuleFileError` naming ``file:line``; more than
    ``limit`` prefixes is an error too."""
    text = read_text(path)
    prefixes: dict[str, None] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        item = line.partition("#")[0].strip()
        if not item:
            continue
        if _PREFIX.fullmatch(item) is None:
            raise RuleFileError(
                f"{path}:{number}: {item!r} is not an E.164 prefix ('+' and 1 to 15 digits)"
            )
        prefixes[item] = None
        if len(prefixes) > limit:
            raise RuleFileError(f"{path}:{number}: more than {limit} prefixes")
    return list(prefixes)

"""The one reader of rule and prefix files (voipsec.rulefile), shared by the IDS, the
fraud engine and the dial plan: limits, errors and the merge of several files."""

from __future__ import annotations

from pathlib import Path

import pytest

from voipsec.edge.ids_loader import RuleError
from voipsec.monitor.fraud import FraudRuleError
from voipsec.rulefile import (
    MAX_PREFIXES,
    MAX_RULE_FILE_BYTES,
    SAFE_YAML_LOADER,
    RuleFileError,
    RuleReader,
    load_prefix_file,
    load_rule_files,
    load_rule_items,
    read_text,
)


class _Named(RuleReader[str]):
    """A rule is its ``name``; ``skip: true`` switches it off."""

    def read(self) -> tuple[str, str | None]:
        item = self.mapping()
        name = item.get("name")
        if not isinstance(name, str):
            raise self.fail("name", "must be a string")
        self.label = f"rule {name!r}"
        return name, None if item.get("skip") else f"{name}@{self.path.name}"


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_rulefile_one_error_class() -> None:
    assert RuleError is RuleFileError
    assert FraudRuleError is RuleFileError
    assert issubclass(RuleFileError, ValueError)


def test_rulefile_read_text_limit(tmp_path: Path) -> None:
    path = _write(tmp_path, "big.yaml", "#" * 11)
    assert read_text(path, 11) == "#" * 11
    with pytest.raises(RuleFileError) as info:
        read_text(path, 10)
    assert str(info.value) == f"{path}: larger than 10 bytes"


def test_rulefile_read_text_default_limit(tmp_path: Path) -> None:
    path = _write(tmp_path, "big.yaml", "#" * (MAX_RULE_FILE_BYTES + 1))
    with pytest.raises(RuleFileError) as info:
        load_rule_items(path)
    assert str(info.value) == f"{path}: larger than {MAX_RULE_FILE_BYTES} bytes"


def test_rulefile_read_text_missing_and_not_utf8(tmp_path: Path) -> None:
    missing = tmp_path / "missing.yaml"
    with pytest.raises(RuleFileError) as info:
        read_text(missing)
    assert str(info.value) == f"{missing}: cannot read: No such file or directory"
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"rules:\xff")
    with pytest.raises(RuleFileError) as info:
        read_text(binary)
    assert str(info.value) == f"{binary}: not UTF-8: invalid start byte at byte 6"


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("rules: [", "line 1: invalid YAML: expected the node content, but found '<stream end>'"),
        ("- name: r\n", "the file must be a mapping with one key, 'rules'"),
        ("rules: []\nmore: 1\n", "the file must be a mapping with one key, 'rules'"),
        ("rules: {}\n", "rules: must be a list"),
        ("rules: [1, 2, 3]\n", "more than 2 rules"),
    ],
)
def test_rulefile_load_rule_items_shape(tmp_path: Path, text: str, why: str) -> None:
    path = _write(tmp_path, "r.yaml", text)
    with pytest.raises(RuleFileError) as info:
        load_rule_items(path, loader=SAFE_YAML_LOADER, max_rules=2)
    assert str(info.value) == f"{path}: {why}"


def test_rulefile_load_rule_files_merge_in_place(tmp_path: Path) -> None:
    shipped = _write(tmp_path, "a.yaml", "rules: [{name: x}, {name: y}, {name: z}]\n")
    site = _write(tmp_path, "b.yaml", "rules: [{name: y, skip: true}, {name: x}, {name: w}]\n")
    rules = load_rule_files([shipped, site], _Named, name_key="name")
    assert rules == ["x@b.yaml", "z@a.yaml", "w@b.yaml"]


def test_rulefile_load_rule_files_errors(tmp_path: Path) -> None:
    twice = _write(tmp_path, "twice.yaml", "rules: [{name: x}, {name: x}]\n")
    with pytest.raises(RuleFileError) as info:
        load_rule_files([twice], _Named, name_key="id")
    assert str(info.value) == f"{twice}: rule 'x': id: defined twice in this file"
    bad = _write(tmp_path, "bad.yaml", "rules: [{name: x}, [1], {name: 3}]\n")
    with pytest.raises(RuleFileError) as info:
        load_rule_files([bad], _Named, name_key="name")
    assert str(info.value) == f"{bad}: rule #2: must be a mapping"
    three = _write(tmp_path, "three.yaml", "rules: [{name: a}, {name: b}]\n")
    with pytest.raises(RuleFileError) as info:
        load_rule_files([three, _write(tmp_path, "c.yaml", "rules: [{name: c}]\n")], _Named,
                        name_key="name", max_rules=2)  # fmt: skip
    assert str(info.value) == f"{tmp_path / 'c.yaml'}: more than 2 rules"


def test_rulefile_load_prefix_file(tmp_path: Path) -> None:
    path = _write(tmp_path, "p.txt", "# list\n+44 # uk\n\n+1900\n+44\n")
    assert load_prefix_file(path) == ["+44", "+1900"]
    with pytest.raises(RuleFileError) as info:
        load_prefix_file(_write(tmp_path, "bad.txt", "+44\n0800\n"))
    assert str(info.value) == (
        f"{tmp_path / 'bad.txt'}:2: '0800' is not an E.164 prefix ('+' and 1 to 15 digits)"
    )


def test_rulefile_load_prefix_file_limit(tmp_path: Path) -> None:
    path = _write(tmp_path, "p.txt", "+1\n+2\n+3\n")
    assert load_prefix_file(path, 3) == ["+1", "+2", "+3"]
    with pytest.raises(RuleFileError) as info:
        load_prefix_file(path, 2)
    assert str(info.value) == f"{path}:3: more than 2 prefixes"
    assert MAX_PREFIXES == 100_000

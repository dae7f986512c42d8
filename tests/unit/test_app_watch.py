"""app/watch.py: rule files and the CRL are re-read only when they changed."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from voipsec.app.watch import Revocations, RuleFiles

RULE = """\
rules:
  - name: test-user-agent
    description: a test rule
    match:
      kind: request
      user_agent: '^evil-scanner'
    actions: [drop]
"""


def _touch_later(path: Path, text: str) -> None:
    """Write ``text`` and move the modification time on, as a later edit would."""
    path.write_text(text, encoding="utf-8")
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10_000_000_000))


def test_app_watch_rule_files_unchanged_are_not_read_again(tmp_path: Path) -> None:
    files = RuleFiles(data_dir=tmp_path, rules_dir="rules", enabled=True)
    shipped = files.load()
    assert shipped
    assert files.changed() is None


def test_app_watch_rule_files_a_new_file_is_read(tmp_path: Path) -> None:
    files = RuleFiles(data_dir=tmp_path, rules_dir="rules", enabled=True)
    shipped = files.load()
    assert shipped is not None
    (tmp_path / "rules").mkdir()
    _touch_later(tmp_path / "rules" / "local.yaml", RULE)
    rules = files.changed()
    assert rules is not None
    assert [r.name for r in rules if r.name not in {s.name for s in shipped}] == ["test-user-agent"]
    assert files.changed() is None


def test_app_watch_rule_files_a_bad_file_keeps_the_old_rules(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    files = RuleFiles(data_dir=tmp_path, rules_dir="rules", enabled=True)
    (tmp_path / "rules").mkdir()
    _touch_later(tmp_path / "rules" / "bad.yaml", "rules: [")
    with caplog.at_level(logging.ERROR, logger="voipsec.sip"):
        assert files.changed() is None
    assert caplog.records[0].getMessage().startswith("IDS rules not reloaded: ")


def test_app_watch_rule_files_ids_off_loads_nothing(tmp_path: Path) -> None:
    files = RuleFiles(data_dir=tmp_path, rules_dir="rules", enabled=False)
    assert files.load() is None


class FakeConnections:
    def __init__(self) -> None:
        self.revoked: list[frozenset[int]] = []

    def set_revoked(self, serials: frozenset[int]) -> int:
        self.revoked.append(serials)
        return 0


def test_app_watch_revocations_without_a_crl_leave_connections_alone(tmp_path: Path) -> None:
    connections = FakeConnections()
    revocations = Revocations(data_dir=tmp_path, connections=connections)
    revocations.check()
    assert connections.revoked == []


def test_app_watch_revocations_a_bad_crl_is_ignored_and_not_read_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    connections = FakeConnections()
    revocations = Revocations(data_dir=tmp_path, connections=connections)
    (tmp_path / "ca").mkdir()
    (tmp_path / "ca" / "crl.pem").write_text("not a CRL", encoding="utf-8")
    with caplog.at_level(logging.ERROR, logger="voipsec.sip"):
        revocations.check()
        revocations.check()
    assert connections.revoked == []
    assert [r.getMessage().startswith("ignoring CRL: ") for r in caplog.records] == [True]

"""One spec per check id, every check documented (docs/audit.md), every spec used."""

from __future__ import annotations

import re
from pathlib import Path

from voipsec.audit import live, local, turnprobe
from voipsec.audit.model import CheckSpec
from voipsec.audit.specs import ALL_SPECS, spec_by_id

DOC = Path(__file__).resolve().parents[2] / "docs" / "audit.md"


def test_audit_specs_ids_are_unique_and_shaped() -> None:
    ids = [s.id for s in ALL_SPECS]
    assert len(ids) == len(set(ids)) == 28
    assert all(re.fullmatch(r"[SAMEFLOW]-[a-z0-9]+(-[a-z0-9]+)*", i) for i in ids)
    assert all(s.id[0] == s.control.value for s in ALL_SPECS)
    assert all(s.references for s in ALL_SPECS)


def test_audit_specs_every_check_module_uses_the_shared_objects() -> None:
    used: list[CheckSpec] = [*local.SPECS, *live.SPECS, *turnprobe.SPECS]
    assert all(spec is spec_by_id(spec.id) for spec in used)
    assert {s.id for s in used} == {s.id for s in ALL_SPECS}
    shared = {s.id for s in local.SPECS} & {s.id for s in (*live.SPECS, *turnprobe.SPECS)}
    assert shared == {
        "S-plaintext-sip",
        "S-tls-version",
        "S-certificate-expiry",
        "A-digest-md5",
        "M-srtp-required",
        "O-turn-peer-filter",
    }


def test_audit_specs_docs_table_lists_every_check() -> None:
    rows = {}
    for line in DOC.read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) == 6 and re.fullmatch(r"[SAMEFLOW]-[a-z0-9-]+", cells[0]):
            rows[cells[0]] = cells
    local_ids = {s.id for s in local.SPECS}
    live_ids = {s.id for s in (*live.SPECS, *turnprobe.SPECS)}
    assert {
        spec.id: [
            spec.id,
            spec.control.value,
            spec.severity.value,
            "yes" if spec.id in local_ids else "",
            "yes" if spec.id in live_ids else "",
            spec.title,
        ]
        for spec in ALL_SPECS
    } == rows

"""The fingerprint and advisory files (voipsec.endpoints.loader): the shipped files,
the admin's DIR/endpoints files that extend them, one error per bad entry naming file,
entry and key, every limit, and the atomic 0644 write."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
import yaml

from voipsec.endpoints.advisories import Advisory
from voipsec.endpoints.loader import (
    MAX_ADVISORIES,
    MAX_CVES,
    MAX_EXAMPLES,
    MAX_FINGERPRINTS,
    MAX_MODELS,
    MAX_NAME,
    MAX_TEXT,
    RuleFileError,
    admin_path,
    advisory_to_dict,
    load_admin_advisories,
    load_advisories,
    load_fingerprints,
    shipped_path,
    write_advisories,
)
from voipsec.endpoints.useragent import identify

FP = {
    "name": "acme",
    "vendor": "Acme",
    "pattern": r"^Acme (?P<model>A[0-9]{1,3})/(?P<version>[0-9]{1,3}(?:\.[0-9]{1,3}){1,3})",
    "examples": [{"ua": "Acme A1/1.2", "model": "A1", "version": "1.2"}],
    "source": "test data: a made-up vendor",
}
ADV = {
    "id": "CVE-2024-41710",
    "vendor": "Mitel",
    "models": ["68*"],
    "cves": ["CVE-2024-41710"],
    "last_affected": "6.4.0.136",
    "source": "https://nvd.nist.gov/vuln/detail/CVE-2024-41710",
}


def _admin(tmp_path: Path, name: str, key: str, items: object) -> Path:
    path = admin_path(tmp_path, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({key: items}), encoding="utf-8")
    return path


def _fp_error(tmp_path: Path, **fields: object) -> str:
    _admin(tmp_path, "fingerprints.yaml", "fingerprints", [{**FP, **fields}])
    with pytest.raises(RuleFileError) as err:
        load_fingerprints(tmp_path)
    return str(err.value)


def _adv_error(tmp_path: Path, **fields: object) -> str:
    _admin(tmp_path, "advisories.yaml", "advisories", [{**ADV, **fields}])
    with pytest.raises(RuleFileError) as err:
        load_advisories(tmp_path)
    return str(err.value)


def test_loader_shipped_files(tmp_path: Path) -> None:
    assert shipped_path("fingerprints.yaml").is_file()
    assert len(load_fingerprints()) == len(load_fingerprints(tmp_path)) == 22
    assert len(load_advisories()) == len(load_advisories(tmp_path)) == 7
    assert load_admin_advisories(tmp_path) == []


def test_loader_admin_fingerprints_extend_and_come_first(tmp_path: Path) -> None:
    yealink = {
        **FP,
        "name": "site-yealink",
        "vendor": "Yealink (site)",
        "pattern": r"^Yealink (?P<model>W60B) (?P<version>[0-9.]{1,20})",
        "examples": [{"ua": "Yealink W60B 77.83.0.85", "model": "W60B", "version": "77.83.0.85"}],
    }
    _admin(
        tmp_path,
        "fingerprints.yaml",
        "fingerprints",
        [FP, yealink, {"name": "zoiper", "enabled": False}],
    )
    fps = load_fingerprints(tmp_path)
    assert [fp.name for fp in fps[:2]] == ["acme", "site-yealink"]
    assert "zoiper" not in {fp.name for fp in fps}
    assert identify("Yealink W60B 77.83.0.85", fps).vendor == "Yealink (site)"  # type: ignore[union-attr]
    assert identify("Acme A7/2.0", fps).model == "A7"  # type: ignore[union-attr]
    assert identify("Zoiper rev.5415", fps) is None


def test_loader_admin_fingerprint_replaces_shipped_one(tmp_path: Path) -> None:
    _admin(
        tmp_path, "fingerprints.yaml", "fingerprints", [{**FP, "name": "baresip", "vendor": "Acme"}]
    )
    fps = load_fingerprints(tmp_path)
    assert len(fps) == 22
    assert identify("baresip v1.0.0", fps) is None
    assert identify("Acme A1/1.2", fps).fingerprint == "baresip"  # type: ignore[union-attr]


def test_loader_admin_advisories_extend_replace_and_switch_off(tmp_path: Path) -> None:
    grand = {
        **ADV,
        "id": "CVE-2026-2329",
        "vendor": "Grandstream",
        "models": ["GXP16??"],
        "cves": ["CVE-2026-2329"],
        "fixed": "1.0.7.81",
        "kev": True,
    }
    del grand["last_affected"]
    _admin(
        tmp_path,
        "advisories.yaml",
        "advisories",
        [ADV, grand, {"id": "CVE-2020-5738", "enabled": False}],
    )
    by_id = {a.id: a for a in load_advisories(tmp_path)}
    assert len(by_id) == 7
    assert by_id["CVE-2026-2329"].kev is True
    assert "CVE-2020-5738" not in by_id
    assert by_id["CVE-2024-41710"] == Advisory(
        id="CVE-2024-41710",
        vendor="Mitel",
        models=("68*",),
        cves=("CVE-2024-41710",),
        last_affected="6.4.0.136",
        source="https://nvd.nist.gov/vuln/detail/CVE-2024-41710",
    )
    assert [a.id for a in load_admin_advisories(tmp_path)] == ["CVE-2024-41710", "CVE-2026-2329"]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (
            {"name": "a b"},
            "fingerprint #1: name: must be letters, digits, '.', '_', '#' or '-' (up to 100)",
        ),
        (
            {"colour": "red"},
            "fingerprint 'acme': colour: unknown key "
            "(allowed: enabled, examples, family, kind, model, name, pattern, source, vendor)",
        ),
        ({"enabled": "no"}, "fingerprint 'acme': enabled: must be true or false"),
        ({"pattern": "Acme"}, "fingerprint 'acme': pattern: must be anchored with '^'"),
        (
            {"pattern": r"^(Acme +)+(?P<model>A)(?P<version>1)"},
            "fingerprint 'acme': pattern: "
            "a quantified group holds a quantifier (catastrophic backtracking)",
        ),
        ({"vendor": ""}, "fingerprint 'acme': vendor: must be a non-empty string"),
        ({"source": None}, "fingerprint 'acme': source: must be a non-empty string"),
        (
            {"kind": "fax"},
            "fingerprint 'acme': kind: must be one of gateway, pbx, phone, softphone",
        ),
        (
            {"examples": []},
            "fingerprint 'acme': examples: must be a non-empty list of {ua, model, version}",
        ),
        (
            {"examples": ["Acme A1/1.2"]},
            "fingerprint 'acme': examples: #1: must be a mapping with 'ua'",
        ),
        (
            {"examples": [{"ua": "Acme A1/1.2", "model": "A1", "version": "1.3"}]},
            "fingerprint 'acme': examples: #1: "
            "'Acme A1/1.2' gives ('A1', '1.2'), expected ('A1', '1.3')",
        ),
        (
            {"examples": [{"ua": "Acme B1/1.2", "model": "B1", "version": "1.2"}]},
            "fingerprint 'acme': examples: #1: 'Acme B1/1.2' gives None, expected ('B1', '1.2')",
        ),
        (
            {"examples": [FP["examples"][0]] * (MAX_EXAMPLES + 1)},
            f"fingerprint 'acme': examples: more than {MAX_EXAMPLES} entries",
        ),  # type: ignore[index]
        (
            {"vendor": "V" * (MAX_NAME + 1)},
            f"fingerprint 'acme': vendor: longer than {MAX_NAME} characters",
        ),
        (
            {"source": "s" * (MAX_TEXT + 1)},
            f"fingerprint 'acme': source: longer than {MAX_TEXT} characters",
        ),
    ],
)
def test_loader_fingerprint_errors(tmp_path: Path, fields: dict[str, object], message: str) -> None:
    assert (
        _fp_error(tmp_path, **fields) == f"{admin_path(tmp_path, 'fingerprints.yaml')}: {message}"
    )


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"fixed": 1.1}, "fixed: 1.1 is not a version (dotted numbers, e.g. 1.0.7.81)"),
        ({"fixed": "soon"}, "fixed: 'soon' is not a version (dotted numbers, e.g. 1.0.7.81)"),
        ({"fixed": "7.0"}, "fixed: give either fixed or last_affected, not both"),
        ({"cves": ["CVE-24-1"]}, "cves: 'CVE-24-1' is not valid"),
        ({"cves": []}, "cves: must be a non-empty list"),
        ({"models": ["68 xx"]}, "models: '68 xx' is not valid"),
        ({"cvss": 10.5}, "cvss: must be a number from 0 to 10"),
        ({"cvss": True}, "cvss: must be a number from 0 to 10"),
        ({"kev": "yes"}, "kev: must be true or false"),
        ({"source": ""}, "source: must be a non-empty string"),
        ({"models": ["6*"] * (MAX_MODELS + 1)}, f"models: more than {MAX_MODELS} entries"),
        ({"cves": ["CVE-2024-41710"] * (MAX_CVES + 1)}, f"cves: more than {MAX_CVES} entries"),
        ({"notes": "n" * (MAX_TEXT + 1)}, f"notes: longer than {MAX_TEXT} characters"),
    ],
)
def test_loader_advisory_errors(tmp_path: Path, fields: dict[str, object], message: str) -> None:
    path = admin_path(tmp_path, "advisories.yaml")
    assert _adv_error(tmp_path, **fields) == f"{path}: advisory 'CVE-2024-41710': {message}"


def test_loader_same_id_twice_in_one_file(tmp_path: Path) -> None:
    path = _admin(tmp_path, "advisories.yaml", "advisories", [ADV, ADV])
    with pytest.raises(RuleFileError) as err:
        load_advisories(tmp_path)
    assert str(err.value) == f"{path}: rule 'CVE-2024-41710': id: defined twice in this file"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("rules: []\n", "the file must be a mapping with one key, 'advisories'"),
        ("advisories: {}\n", "advisories: must be a list"),
        (
            "advisories: [\n",
            "line 2: invalid YAML: did not find expected node content",
        ),
        ("advisories:\n  - 3\n", "advisory #1: must be a mapping"),
    ],
)
def test_loader_file_errors(tmp_path: Path, text: str, message: str) -> None:
    path = admin_path(tmp_path, "advisories.yaml")
    path.parent.mkdir()
    path.write_text(text, encoding="utf-8")
    with pytest.raises(RuleFileError) as err:
        load_advisories(tmp_path)
    assert str(err.value) == f"{path}: {message}"


def test_loader_directory_in_the_way_is_an_error(tmp_path: Path) -> None:
    admin_path(tmp_path, "fingerprints.yaml").mkdir(parents=True)
    with pytest.raises(RuleFileError, match="cannot read"):
        load_fingerprints(tmp_path)


def test_loader_fingerprint_count_limit(tmp_path: Path) -> None:
    _admin(tmp_path, "fingerprints.yaml", "fingerprints", [{}] * (MAX_FINGERPRINTS + 1))
    with pytest.raises(RuleFileError, match=f"more than {MAX_FINGERPRINTS} rules$"):
        load_fingerprints(tmp_path)


def test_loader_advisory_count_limit(tmp_path: Path) -> None:
    _admin(tmp_path, "advisories.yaml", "advisories", [{}] * (MAX_ADVISORIES + 1))
    with pytest.raises(RuleFileError, match=f"more than {MAX_ADVISORIES} rules$"):
        load_advisories(tmp_path)


def test_loader_write_advisories_round_trip_0644(tmp_path: Path) -> None:
    shipped = load_advisories()
    path = admin_path(tmp_path, "advisories.yaml")
    write_advisories(path, [advisory_to_dict(a) for a in shipped], "line one\nline two")
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert path.read_text(encoding="utf-8").startswith("# line one\n# line two\nadvisories:\n")
    assert load_admin_advisories(tmp_path) == shipped
    assert [p.name for p in path.parent.iterdir()] == ["advisories.yaml"]


def test_loader_write_refuses_a_bad_result_and_keeps_the_old_file(tmp_path: Path) -> None:
    path = admin_path(tmp_path, "advisories.yaml")
    write_advisories(path, [ADV], "first")
    before = path.read_bytes()
    with pytest.raises(
        RuleFileError, match="advisory 'CVE-2024-41710': cvss: must be a number from 0 to 10"
    ):
        write_advisories(path, [{**ADV, "cvss": 99}], "second")
    assert path.read_bytes() == before
    assert [p.name for p in path.parent.iterdir()] == ["advisories.yaml"]

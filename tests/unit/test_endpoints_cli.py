"""``voipsec endpoints import-kev|import-nvd`` (voipsec.endpoints.cli): the real-format
excerpts of tests/data/endpoints imported into DIR/endpoints/advisories.yaml, what is
printed, the admin's entries kept, and bad input as one line with exit status 1."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from tests.peers.voipsec import voipsec, voipsec_cli
from voipsec.cli import app
from voipsec.endpoints.advisories import matching
from voipsec.endpoints.cli import ImportFailed, read_feed
from voipsec.endpoints.feeds import MAX_FEED_BYTES
from voipsec.endpoints.loader import (
    admin_path,
    load_admin_advisories,
    load_advisories,
    load_fingerprints,
)
from voipsec.endpoints.useragent import identify

DATA = Path(__file__).parent.parent / "data" / "endpoints"
KEV = DATA / "kev-excerpt.json"
NVD = DATA / "nvd-cve-2020-5739.json"

#: Test data: an advisory for the KEV-listed Mitel CVE, with a made-up bound (the
#: shipped file has none: Mitel's fixed versions were not verified).
MITEL = {
    "id": "CVE-2024-41710",
    "vendor": "Mitel",
    "models": ["68??i", "69??"],
    "cves": ["CVE-2024-41710"],
    "last_affected": "6.4.0.136",
    "kev": False,
    "source": "https://nvd.nist.gov/vuln/detail/CVE-2024-41710",
}


def _admin(data_dir: Path, items: list[dict[str, object]]) -> Path:
    path = admin_path(data_dir, "advisories.yaml")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({"advisories": items}), encoding="utf-8")
    return path


def test_endpoints_cli_import_kev_marks_an_advisory(tmp_path: Path) -> None:
    path = _admin(tmp_path, [MITEL])
    out = voipsec("endpoints", "import-kev", str(KEV), data_dir=tmp_path)
    assert out.stdout.splitlines() == [
        "KEV catalog 2025.02.25: 2 entries",
        "marked known exploited: CVE-2024-41710",
    ]
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert path.read_text(encoding="utf-8").splitlines()[0] == (
        "# Written by `voipsec endpoints import-kev (KEV catalog 2025.02.25)`. "
        "Extends voipsec's shipped advisories:"
    )
    (mitel,) = load_admin_advisories(tmp_path)
    assert (mitel.id, mitel.kev, mitel.last_affected) == ("CVE-2024-41710", True, "6.4.0.136")
    device = identify("Mitel 6930/6.4.0.132", load_fingerprints(tmp_path))
    assert device is not None
    assert [(a.id, a.kev) for a in matching(device, load_advisories(tmp_path))] == [
        ("CVE-2024-41710", True)
    ]
    # Nothing left to mark: the file is not rewritten.
    before = path.read_bytes()
    again = voipsec("endpoints", "import-kev", str(KEV), data_dir=tmp_path)
    assert again.stdout.splitlines()[1] == "marked known exploited: none"
    assert path.read_bytes() == before


def test_endpoints_cli_import_kev_names_phone_cves_without_advisory(tmp_path: Path) -> None:
    out = voipsec("endpoints", "import-kev", str(KEV), data_dir=tmp_path)
    assert out.stdout.splitlines() == [
        "KEV catalog 2025.02.25: 2 entries",
        "marked known exploited: none",
        "KEV-listed, no advisory: CVE-2024-41710 (Mitel SIP Phones)",
    ]
    assert not admin_path(tmp_path, "advisories.yaml").exists()


def test_endpoints_cli_import_nvd_adds_an_advisory(tmp_path: Path) -> None:
    _admin(tmp_path, [{"id": "CVE-2020-5738", "enabled": False}])
    out = voipsec("endpoints", "import-nvd", str(NVD), data_dir=tmp_path)
    assert out.stdout.splitlines() == [
        "NVD: 1 CVE records, 1 phone advisories",
        "added or updated: CVE-2020-5739",
    ]
    items = yaml.safe_load(admin_path(tmp_path, "advisories.yaml").read_text(encoding="utf-8"))
    assert [i["id"] for i in items["advisories"]] == ["CVE-2020-5738", "CVE-2020-5739"]
    assert items["advisories"][0] == {"id": "CVE-2020-5738", "enabled": False}
    device = identify("Grandstream GXP1625 1.0.2.25", load_fingerprints(tmp_path))
    assert device is not None
    assert [a.id for a in matching(device, load_advisories(tmp_path))] == [
        "CVE-2026-2329",
        "CVE-2020-5739",
    ]
    # Importing the same file again changes nothing.
    before = admin_path(tmp_path, "advisories.yaml").read_text(encoding="utf-8")
    voipsec("endpoints", "import-nvd", str(NVD), data_dir=tmp_path)
    assert admin_path(tmp_path, "advisories.yaml").read_text(encoding="utf-8") == before


def test_endpoints_cli_import_nvd_keeps_kev_and_leaves_shipped_cves(tmp_path: Path) -> None:
    _admin(
        tmp_path,
        [
            {
                **MITEL,
                "id": "CVE-2020-5739",
                "cves": ["CVE-2020-5739"],
                "kev": True,
                "notes": "Imported from the NVD CVE API 2.0",
            }
        ],
    )
    cpe = "cpe:2.3:o:grandstream:gxp1625_firmware:*:*:*:*:*:*:*:*"
    shipped = {
        "cve": {
            "id": "CVE-2026-2329",
            "configurations": [
                {
                    "nodes": [
                        {
                            "cpeMatch": [
                                {
                                    "vulnerable": True,
                                    "criteria": cpe,
                                    "versionEndExcluding": "1.0.7.81",
                                }
                            ]
                        }
                    ]
                }
            ],
        }
    }
    nvd = json.loads(NVD.read_text(encoding="utf-8"))
    nvd["vulnerabilities"].append(shipped)
    feed = tmp_path / "nvd.json"
    feed.write_text(json.dumps(nvd), encoding="utf-8")
    out = voipsec("endpoints", "import-nvd", str(feed), data_dir=tmp_path)
    assert out.stdout.splitlines() == [
        "NVD: 2 CVE records, 2 phone advisories",
        "added or updated: CVE-2020-5739",
        "left to existing advisories: CVE-2026-2329",
    ]
    (imported,) = load_admin_advisories(tmp_path)
    assert (imported.vendor, imported.models, imported.kev) == (
        "Grandstream",
        ("gxp1610", "gxp1615", "gxp1620", "gxp1625", "gxp1628", "gxp1630"),
        True,
    )


def test_endpoints_cli_bad_feed_is_one_line_and_exit_1(tmp_path: Path) -> None:
    feed = tmp_path / "kev.json"
    feed.write_text(
        '{"catalogVersion": "1", "vulnerabilities": [{"cveID": "CVE-1"}]}', encoding="utf-8"
    )
    proc = voipsec_cli("endpoints", "import-kev", str(feed), data_dir=tmp_path, check=False)
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert proc.stderr.splitlines() == [
        f"voipsec: error: {feed}: vulnerabilities[0].cveID: 'CVE-1' is not a CVE id"
    ]
    assert not admin_path(tmp_path, "advisories.yaml").exists()


def test_endpoints_cli_missing_feed(tmp_path: Path) -> None:
    out = voipsec(
        "endpoints", "import-nvd", str(tmp_path / "none.json"), data_dir=tmp_path, check=False
    )
    assert (out.returncode, out.stdout) == (1, "")
    assert out.stderr.splitlines() == [
        f"voipsec: error: {tmp_path / 'none.json'}: cannot read: No such file or directory"
    ]


def test_endpoints_cli_bad_admin_file_is_one_line(tmp_path: Path) -> None:
    path = _admin(tmp_path, [{**MITEL, "fixed": 7.1}])
    before = path.read_bytes()
    out = voipsec("endpoints", "import-kev", str(KEV), data_dir=tmp_path, check=False)
    assert (out.returncode, out.stdout) == (1, "")
    assert out.stderr.splitlines() == [
        f"voipsec: error: {path}: advisory 'CVE-2024-41710': "
        "fixed: 7.1 is not a version (dotted numbers, e.g. 1.0.7.81)"
    ]
    assert path.read_bytes() == before


def test_endpoints_cli_feed_size_limit(tmp_path: Path) -> None:
    feed = tmp_path / "big.json"
    with feed.open("wb") as f:
        f.truncate(MAX_FEED_BYTES + 1)
    with pytest.raises(ImportFailed) as err:
        read_feed(feed)
    assert str(err.value) == f"{feed}: larger than {MAX_FEED_BYTES} bytes"


def test_endpoints_cli_help() -> None:
    runner = CliRunner()
    for args in (["endpoints"], ["endpoints", "import-kev"], ["endpoints", "import-nvd"]):
        result = runner.invoke(app, [*args, "--help"])
        assert result.exit_code == 0, args
        assert "Usage:" in result.output and args[-1] in result.output
    assert "import-nvd" in runner.invoke(app, ["endpoints", "--help"]).output


def test_endpoints_cli_needs_an_existing_data_directory(tmp_path: Path) -> None:
    missing = tmp_path / "none"
    out = voipsec("endpoints", "import-nvd", str(NVD), data_dir=missing, check=False)
    assert (out.returncode, out.stdout) == (1, "")
    assert out.stderr.splitlines() == [
        f"voipsec: error: {missing}: no such data directory (run `voipsec init` first)"
    ]
    assert not missing.exists()

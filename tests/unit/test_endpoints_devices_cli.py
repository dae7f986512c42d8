"""``voipsec devices list|show`` (voipsec.endpoints.devices_cli): the inventory as
table, JSON and CSV, one user's devices, one device; one error line for a missing
database, an unknown id or a bad format."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from typer.testing import CliRunner

from voipsec.cli import app
from voipsec.records import DeviceSighting, DeviceSrtpOffer
from voipsec.storage import Store

T0 = 1_800_000_000.0
RUNNER = CliRunner()


def _seen(user: str, **more: object) -> DeviceSighting:
    base: dict[str, object] = {
        "user": user,
        "key": f"k-{user}",
        "aor": f"{user}@localhost",
        "contact": f"sip:{user}@127.0.0.1:5070;transport=tls",
        "source": "tls:127.0.0.1:5070",
        "zone": "internet",
        "transport": "tls",
        "tls_version": "TLSv1.3",
        "tls_cipher": "TLS_AES_256_GCM_SHA384",
        "digest_algorithm": "SHA-256",
        "user_agent": "baresip v1.0.0 (x86_64/linux)",
        "vendor": "baresip",
        "model": "baresip",
        "version": "1.0.0",
        "time": T0,
    }
    return DeviceSighting(**{**base, **more})  # type: ignore[arg-type]


BOB_SUITES = "AES_256_CM_HMAC_SHA1_80 AES_CM_128_HMAC_SHA1_80"


def _data(tmp_path: Path) -> Path:
    store = Store(tmp_path / "voipsec.db")
    try:
        store.save_devices(
            [
                _seen("alice"),
                _seen(
                    "bob",
                    status="refused",
                    reasons=("firmware 1.0.2.25 affected by CVE-2026-2329; upgrade to 1.0.7.81",),
                ),
                # The SRTP bob's phone offered in an INVITE (app/devices.py).
                DeviceSrtpOffer(user="bob", key="k-bob", suites=BOB_SUITES),
            ]
        )
    finally:
        store.close()
    return tmp_path


def test_devices_cli_list_json(tmp_path: Path) -> None:
    result = RUNNER.invoke(
        app, ["devices", "list", "--format", "json", "--dir", str(_data(tmp_path))]
    )
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [(r["id"], r["user"], r["status"], r["vendor"], r["tls_version"]) for r in rows] == [
        (1, "alice", "ok", "baresip", "TLSv1.3"),
        (2, "bob", "refused", "baresip", "TLSv1.3"),
    ]
    assert rows[1]["reasons"] == [
        "firmware 1.0.2.25 affected by CVE-2026-2329; upgrade to 1.0.7.81"
    ]
    assert (rows[0]["first_seen"], rows[0]["last_seen"], rows[0]["registrations"]) == (T0, T0, 1)
    assert [r["srtp_suites"] for r in rows] == ["", BOB_SUITES]


def test_devices_cli_list_one_user_csv(tmp_path: Path) -> None:
    data = _data(tmp_path)
    result = RUNNER.invoke(
        app, ["devices", "list", "--user", "bob", "--format", "csv", "--dir", str(data)]
    )
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [(r["user"], r["status"], r["cert_expiry"], r["srtp_suites"]) for r in rows] == [
        ("bob", "refused", "", BOB_SUITES)
    ]
    assert rows[0]["reasons"] == (
        "firmware 1.0.2.25 affected by CVE-2026-2329; upgrade to 1.0.7.81"
    )


def test_devices_cli_list_table(tmp_path: Path) -> None:
    result = RUNNER.invoke(app, ["devices", "list", "--dir", str(_data(tmp_path))])
    assert result.exit_code == 0, result.output
    assert "baresip baresip 1.0.0" in result.stdout
    assert "refused" in result.stdout
    assert "srtp" in result.stdout.splitlines()[0]
    assert "AES_256_CM_HMAC_SHA1_80" in result.stdout


def test_devices_cli_show(tmp_path: Path) -> None:
    result = RUNNER.invoke(app, ["devices", "show", "2", "--dir", str(_data(tmp_path))])
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    assert (shown["user"], shown["srtp_suites"]) == ("bob", BOB_SUITES)


def test_devices_cli_unknown_id_is_one_error(tmp_path: Path) -> None:
    result = RUNNER.invoke(app, ["devices", "show", "9", "--dir", str(_data(tmp_path))])
    assert (result.exit_code, result.stderr) == (1, "voipsec: error: no device 9\n")


def test_devices_cli_missing_database_is_one_error(tmp_path: Path) -> None:
    result = RUNNER.invoke(app, ["devices", "list", "--dir", str(tmp_path)])
    assert (result.exit_code, result.stderr) == (
        1,
        f"voipsec: error: {tmp_path}/voipsec.db: no database "
        f"(run `voipsec init --dir {tmp_path}`)\n",
    )


def test_devices_cli_bad_format_is_one_error(tmp_path: Path) -> None:
    result = RUNNER.invoke(app, ["devices", "list", "--format", "xml", "--dir", str(tmp_path)])
    assert (result.exit_code, result.stderr) == (
        1,
        "voipsec: error: --format must be table, json or csv\n",
    )


def _report_data(tmp_path: Path) -> Path:
    """An inventory with a vulnerable Grandstream (shipped advisories), a baresip below
    the configured minimum and one with an expired certificate."""
    (tmp_path / "voipsec.toml").write_text(
        '[pki]\nexpiry_warning_days = 10\n[endpoints]\nminimum_firmware = { "baresip" = "2.0" }\n',
        encoding="utf-8",
    )
    store = Store(tmp_path / "voipsec.db")
    try:
        store.save_devices(
            [
                _seen(
                    "gxp",
                    user_agent="Grandstream GXP1625 1.0.2.25",
                    vendor="Grandstream",
                    model="GXP1625",
                    version="1.0.2.25",
                ),
                _seen("old"),
                _seen("cert", version="3.0.0", cert_serial="ab", cert_expiry=1_000_000_000.0),
                _seen("fine", version="3.0.0", cert_serial="cd", cert_expiry=4_000_000_000.0),
            ]
        )
    finally:
        store.close()
    return tmp_path


def test_devices_cli_report_json(tmp_path: Path) -> None:
    result = RUNNER.invoke(
        app, ["devices", "report", "--format", "json", "--dir", str(_report_data(tmp_path))]
    )
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [(r["user"], r["severity"], r["firmware"], r["certificate"]) for r in rows] == [
        ("cert", "critical", "up to date", "expired"),
        ("gxp", "high", "affected by advisories", "none"),
        ("old", "medium", "below minimum 2.0", "none"),
        ("fine", "ok", "up to date", "ok"),
    ]
    assert [(a["id"], a["cvss"], a["kev"], a["fixed"]) for a in rows[1]["advisories"]] == [
        ("CVE-2026-2329", 9.3, False, "1.0.7.81"),
        ("CVE-2020-5738", 8.8, False, None),
    ]
    assert rows[0]["actions"] == ["renew the certificate: voipsec ca renew cert"]


def test_devices_cli_report_md_and_csv(tmp_path: Path) -> None:
    data = str(_report_data(tmp_path))
    md = RUNNER.invoke(app, ["devices", "report", "--dir", data])
    assert md.exit_code == 0, md.output
    assert [line for line in md.stdout.splitlines() if line.startswith("## ")] == [
        "## critical (1)",
        "## high (1)",
        "## medium (1)",
        "## ok (1)",
    ]
    out = RUNNER.invoke(app, ["devices", "report", "--format", "csv", "--dir", data])
    assert out.exit_code == 0, out.output
    rows = list(csv.DictReader(io.StringIO(out.stdout)))
    assert [(r["user"], r["severity"]) for r in rows] == [
        ("cert", "critical"),
        ("gxp", "high"),
        ("old", "medium"),
        ("fine", "ok"),
    ]


def test_devices_cli_report_errors_are_one_line(tmp_path: Path) -> None:
    bad = RUNNER.invoke(app, ["devices", "report", "--format", "xml", "--dir", str(tmp_path)])
    assert (bad.exit_code, bad.stderr) == (1, "voipsec: error: --format must be md, json or csv\n")
    missing = RUNNER.invoke(app, ["devices", "report", "--dir", str(tmp_path)])
    assert (missing.exit_code, missing.stderr) == (
        1,
        f"voipsec: error: {tmp_path}/voipsec.toml: file not found (run `voipsec init`)\n",
    )


def test_devices_cli_report_bad_advisory_file_is_one_line(tmp_path: Path) -> None:
    data = _report_data(tmp_path)
    (data / "endpoints").mkdir()
    (data / "endpoints" / "advisories.yaml").write_text(
        "advisories:\n  - id: X\n    vendor: Acme\n    models: [A]\n    cves: [CVE-2000-1]\n"
        "    fixed: 1.10\n",
        encoding="utf-8",
    )
    result = RUNNER.invoke(app, ["devices", "report", "--dir", str(data)])
    assert result.exit_code == 1
    assert result.stderr.startswith(
        f"voipsec: error: endpoint data: {data}/endpoints/advisories.yaml"
    )
    assert result.stderr.count("\n") == 1


def _hostile(tmp_path: Path) -> Path:
    """A device whose User-Agent is rich markup and whose contact is a formula."""
    store = Store(tmp_path / "voipsec.db")
    try:
        store.save_devices(
            [
                _seen(
                    "mallory",
                    user_agent="[link=https://evil.example]Yealink fixed[/link] [/x]",
                    vendor="",
                    model="",
                    version="",
                    contact='=HYPERLINK("https://evil.example","phone")',
                )
            ]
        )
    finally:
        store.close()
    return tmp_path


def test_devices_cli_table_shows_a_hostile_user_agent_as_text(tmp_path: Path) -> None:
    result = RUNNER.invoke(app, ["devices", "list", "--dir", str(_hostile(tmp_path))])
    assert result.exit_code == 0, result.output
    assert "[link=https://evil.example]Yealink" in result.stdout  # shown, not obeyed


def test_devices_cli_csv_defuses_a_formula(tmp_path: Path) -> None:
    result = RUNNER.invoke(
        app, ["devices", "list", "--format", "csv", "--dir", str(_hostile(tmp_path))]
    )
    assert result.exit_code == 0, result.output
    (row,) = list(csv.DictReader(io.StringIO(result.stdout)))
    assert row["contact"] == '\'=HYPERLINK("https://evil.example","phone")'

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
from voipsec.records import DeviceSighting
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


def test_devices_cli_list_one_user_csv(tmp_path: Path) -> None:
    data = _data(tmp_path)
    result = RUNNER.invoke(
        app, ["devices", "list", "--user", "bob", "--format", "csv", "--dir", str(data)]
    )
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [(r["user"], r["status"], r["cert_expiry"]) for r in rows] == [("bob", "refused", "")]
    assert rows[0]["reasons"] == (
        "firmware 1.0.2.25 affected by CVE-2026-2329; upgrade to 1.0.7.81"
    )


def test_devices_cli_list_table(tmp_path: Path) -> None:
    result = RUNNER.invoke(app, ["devices", "list", "--dir", str(_data(tmp_path))])
    assert result.exit_code == 0, result.output
    assert "baresip baresip 1.0.0" in result.stdout
    assert "refused" in result.stdout


def test_devices_cli_show(tmp_path: Path) -> None:
    result = RUNNER.invoke(app, ["devices", "show", "2", "--dir", str(_data(tmp_path))])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["user"] == "bob"


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

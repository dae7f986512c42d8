"""``voipsec audit --no-live`` on real data directories: a fresh ``voipsec init`` passes
every local check; each weakening of issue 19, alone, fails exactly its own check with
its fix line.

The data directory is initialised once per module and copied per weakening (no server
starts here). Audits of the weakenings run through the CLI's entry point in this
process (tests/peers/voipsec.py ``voipsec``: the same argv, output and exit status);
the fresh directory's audit, the ``--fail-under`` exit statuses and SARIF run as real
processes (``voipsec_cli``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.peers.voipsec import voipsec, voipsec_cli
from voipsec.audit.cli import EXIT_UNDER
from voipsec.audit.localchecks import SPECS
from voipsec.pki.ca import CaPaths, ServerPaths, issue_certificate, write_private
from voipsec.records import DeviceSighting
from voipsec.storage import DB_NAME, Store

AUDIT = ("audit", "--no-live", "--format", "json")
LOCAL_IDS = {s.id for s in SPECS}


@pytest.fixture(scope="module")
def fresh(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = tmp_path_factory.mktemp("audit") / "fresh"
    voipsec("init", data_dir=data)
    return data


@pytest.fixture
def copy(fresh: Path, tmp_path: Path) -> Path:
    target = tmp_path / "d"
    shutil.copytree(fresh, target, symlinks=True)
    return target


def _report(data: Path) -> dict[str, Any]:
    out = voipsec(*AUDIT, data_dir=data)
    report: dict[str, Any] = json.loads(out.stdout)
    return report


def _not_passed(report: dict[str, Any]) -> dict[str, tuple[str, str, str]]:
    return {
        r["id"]: (r["outcome"], r["observed"], r["fix"])
        for r in report["results"]
        if r["outcome"] != "passed"
    }


def test_audit_local_fresh_init_scores_100(fresh: Path) -> None:
    out = voipsec_cli(*AUDIT, "--fail-under", "100", data_dir=fresh)
    report = json.loads(out.stdout)
    assert report["score"] == 100.0
    assert {r["id"] for r in report["results"]} == LOCAL_IDS
    assert _not_passed(report) == {}
    saved = json.loads((fresh / "audit" / "latest.json").read_text())
    assert saved["results"] == report["results"]


def _config(key: str, literal: str) -> Callable[[Path], None]:
    def apply(data: Path) -> None:
        voipsec("config", "set", key, literal, data_dir=data)

    return apply


def _store_user(name: str, password: str) -> Callable[[Path], None]:
    """``user add`` refuses passwords under 8 characters: the store takes any (as a
    user added by an older version, or imported, may have)."""

    def apply(data: Path) -> None:
        store = Store(data / DB_NAME)
        try:
            store.add_user(name, password, "localhost")
        finally:
            store.close()

    return apply


def _cli_user(name: str, password: str) -> Callable[[Path], None]:
    def apply(data: Path) -> None:
        voipsec("user", "add", name, "--password", password, data_dir=data)

    return apply


def _chmod(name: str, mode: int) -> Callable[[Path], None]:
    def apply(data: Path) -> None:
        (data / name).chmod(mode)

    return apply


def _then(*steps: Callable[[Path], None]) -> Callable[[Path], None]:
    def apply(data: Path) -> None:
        for step in steps:
            step(data)

    return apply


def _server_certificate(days: int) -> Callable[[Path], None]:
    """A server certificate from the directory's CA that expires in ``days`` days."""

    def apply(data: Path) -> None:
        server = ServerPaths.in_dir(data)
        cert, key = issue_certificate(
            CaPaths.in_dir(data),
            common_name="localhost",
            dns_names=("localhost",),
            ip_addresses=("127.0.0.1",),
            server=True,
            days=days,
        )
        write_private(server.key, key)
        server.cert.write_bytes(cert)

    return apply


def _device_under_advisory(data: Path) -> None:
    """A Grandstream GXP1625 on firmware 1.0.4.1: under the shipped CVE-2026-2329 (fixed
    in 1.0.7.81) and CVE-2020-5738 (last affected 1.0.4.152)."""
    store = Store(data / DB_NAME)
    try:
        store.save_devices(
            [
                DeviceSighting(
                    user="demo",
                    key="demo-phone",
                    aor="demo@localhost",
                    contact="sip:demo@127.0.0.1:5070;transport=tls",
                    source="127.0.0.1:5070",
                    zone="loopback",
                    transport="tls",
                    tls_version="TLSv1.3",
                    digest_algorithm="SHA-256",
                    user_agent="Grandstream GXP1625 1.0.4.1",
                    vendor="Grandstream",
                    model="GXP1625",
                    version="1.0.4.1",
                    time=time.time(),
                )
            ]
        )
    finally:
        store.close()


_TRUSTED_INTERNET = (
    '[{name = "loopback", cidrs = ["127.0.0.0/8", "::1/128"], trust = "trusted"}, '
    '{name = "internet", cidrs = ["0.0.0.0/0", "::/0"], trust = "trusted"}]'
)

#: (name, weakening, its check, the fix line with {d} for the data directory)
WEAKENINGS: list[tuple[str, Callable[[Path], None], str, str]] = [
    (
        "udp-listener",
        _config("sip.listen", '["tls:127.0.0.1:5061", "udp:127.0.0.1:5060"]'),
        "S-plaintext-sip",
        "voipsec config set --dir {d} sip.listen '[\"tls:127.0.0.1:5061\"]'",
    ),
    (
        "md5",
        _config("auth.algorithms", '["MD5"]'),
        "A-digest-md5",
        "voipsec config set --dir {d} auth.algorithms '[\"SHA-256\"]'",
    ),
    (
        "srtp-optional",
        _config("media.srtp", '"optional"'),
        "M-srtp-required",
        "voipsec config set --dir {d} media.srtp '\"required\"'",
    ),
    (
        "user-123456",
        _store_user("alice", "123456"),
        "A-weak-password",
        "voipsec user remove --dir {d} alice && voipsec user add --dir {d} alice --class national",
    ),
    (
        "user-name-password",
        _cli_user("carol", "carol123"),
        "A-weak-password",
        "voipsec user remove --dir {d} carol && voipsec user add --dir {d} carol --class national",
    ),
    (
        "key-0644",
        _chmod("tls/server.key", 0o644),
        "S-file-permissions",
        "chmod 600 {d}/tls/server.key",
    ),
    (
        "db-0644",
        _chmod(DB_NAME, 0o644),
        "S-file-permissions",
        "chmod 600 {d}/voipsec.db",
    ),
    (
        "config-0644",
        _chmod("voipsec.toml", 0o644),
        "S-file-permissions",
        "chmod 600 {d}/voipsec.toml",
    ),
    (
        # serve refuses this file (it holds a secret others may read); the audit reports it
        "config-with-secret-0644",
        _then(_config("metrics.token", '"' + "ab" * 16 + '"'), _chmod("voipsec.toml", 0o644)),
        "S-file-permissions",
        "chmod 600 {d}/voipsec.toml",
    ),
    (
        "trusted-internet",
        _config("zones", _TRUSTED_INTERNET),
        "W-trusted-zone",
        'voipsec config set --dir {d} zones \'[{name = "loopback", cidrs = ["127.0.0.0/8", '
        '"::1/128"], trust = "trusted"}, {name = "internet", cidrs = ["0.0.0.0/0", '
        '"::/0"]}]\'',
    ),
    (
        "turn-peers-open",
        _config("turn.allowed_peers", '["10.0.0.0/8", "169.254.169.254/32"]'),
        "O-turn-peer-filter",
        "voipsec config set --dir {d} turn.allowed_peers '[]'",
    ),
    (
        "server-cert-5-days",
        _server_certificate(5),
        "S-certificate-expiry",
        "rm {d}/tls/server.crt && voipsec init --dir {d}",
    ),
    (
        "client-cert-off",
        _config("tls.client_cert", '"off"'),
        "A-client-certificates",
        "voipsec config set --dir {d} tls.client_cert '\"optional\"'",
    ),
    (
        "ids-off",
        _config("ids.enabled", "false"),
        "F-ids",
        "voipsec config set --dir {d} ids.enabled true",
    ),
    (
        "fraud-off",
        _config("fraud.enabled", "false"),
        "L-fraud",
        "voipsec config set --dir {d} fraud.enabled true",
    ),
    (
        "metrics-no-token",
        _config("metrics.allow_no_token", "true"),
        "L-metrics-exposure",
        "voipsec config set --dir {d} metrics.allow_no_token false",
    ),
    ("dscp-0", _config("media.dscp", "0"), "W-dscp", "voipsec config set --dir {d} media.dscp 46"),
    (
        "webhook-http",
        _config("alerts.webhook", '"http://hooks.example.com/T0/not-shown"'),
        "L-alerts",
        "voipsec config set --dir {d} alerts.webhook "
        '"\\"$(voipsec config get --dir {d} alerts.webhook | sed s,^http:,https:,)\\""',
    ),
    (
        "device-advisory",
        _device_under_advisory,
        "E-endpoint-policy",
        "device 1: upgrade to 1.0.7.81, upgrade past 1.0.4.152; voipsec devices report --dir {d}",
    ),
]


@pytest.mark.parametrize(
    ("apply", "check", "fix"),
    [pytest.param(a, c, f, id=n) for n, a, c, f in WEAKENINGS],
)
def test_audit_local_weakening_fails_its_own_check(
    copy: Path, apply: Callable[[Path], None], check: str, fix: str
) -> None:
    apply(copy)
    report = _report(copy)
    found = _not_passed(report)
    assert {k: v[0] for k, v in found.items()} == {check: "failed"}
    assert found[check][2] == fix.replace("{d}", str(copy))
    assert "not-shown" not in json.dumps(report)
    assert report["score"] < 100


def test_audit_local_device_certificate_expiring(copy: Path) -> None:
    voipsec("ca", "issue", "demo", "--days", "5", data_dir=copy)
    found = _not_passed(_report(copy))
    assert list(found) == ["S-certificate-expiry"]
    outcome, observed, fix = found["S-certificate-expiry"]
    assert (outcome, fix) == ("failed", f"voipsec ca renew --dir {copy} demo")
    assert observed.startswith("device certificate demo (serial ")
    assert observed.endswith(") expiring in 5 days")


def test_audit_local_server_certificate_fix_renews_it(copy: Path) -> None:
    _server_certificate(5)(copy)
    assert list(_not_passed(_report(copy))) == ["S-certificate-expiry"]
    # The fix: remove the certificate and let init make a new one from the CA.
    ServerPaths.in_dir(copy).cert.unlink()
    voipsec("init", data_dir=copy)
    assert _not_passed(_report(copy)) == {}


def test_audit_local_fail_under_and_sarif_on_a_weakened_dir(copy: Path) -> None:
    _config("auth.algorithms", '["SHA-256", "MD5"]')(copy)
    under = voipsec_cli(
        "audit", "--no-live", "--format", "sarif", "--fail-under", "100", data_dir=copy, check=False
    )
    assert under.returncode == EXIT_UNDER
    sarif = json.loads(under.stdout)
    (run,) = sarif["runs"]
    failing = [r["ruleId"] for r in run["results"] if r["kind"] == "fail"]
    assert failing == ["A-digest-md5"]
    passing = voipsec(*AUDIT, "--fail-under", "90", data_dir=copy)
    assert json.loads(passing.stdout)["score"] >= 90


_WEAK_ZONES = (
    '[{name = "loopback", cidrs = ["127.0.0.0/8", "::1/128"], trust = "trusted"}, '
    '{name = "office", cidrs = ["192.168.0.0/16"], rate_ban = 1}, '
    '{name = "internet", cidrs = ["10.0.0.0/8"], trust = "trusted", rate_ban = 1}]'
)


def _loose_files(data: Path) -> None:
    """A world-writable CA directory, a TURN secret others may read, a hard link to the
    CA key outside DIR and tls/ a symbolic link to a directory outside it."""
    (data / "ca").chmod(0o777)
    (data / "turn-secret").write_bytes(b"ab" * 16)
    (data / "turn-secret").chmod(0o644)
    (data.parent / "leaked.key").hardlink_to(data / "ca" / "ca.key")
    real = data.parent / "tls-real"
    (data / "tls").rename(real)
    (data / "tls").symlink_to(real)


def test_audit_local_every_printed_fix_runs_and_repairs(fresh: Path, tmp_path: Path) -> None:
    """Every weakening at once, then every printed fix run as printed by a shell in a
    directory of its own (each voipsec command of a fix names --dir DIR; DIR is not the
    default ./voipsec-data, so a fix without it would fail): all checks pass."""
    data = tmp_path / "d"
    shutil.copytree(fresh, data, symlinks=True)
    skip = {"device-advisory", "trusted-internet", "config-with-secret-0644"}
    for name, apply, _, _ in WEAKENINGS:
        if name not in skip:
            apply(data)
    _config("zones", _WEAK_ZONES)(data)
    _config("turn.allowed_peers", '["::ffff:0:0:0/96"]')(data)
    _config("metrics.token", '"a"')(data)
    _loose_files(data)
    found = _not_passed(_report(data))
    expected = {c for n, _, c, _ in WEAKENINGS if n not in skip} | {"W-trusted-zone"}
    assert {k: v[0] for k, v in found.items()} == dict.fromkeys(sorted(expected), "failed")
    assert found["W-trusted-zone"][2] == found["F-ids"][2].split("; ")[-1]
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shim = bin_dir / "voipsec"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m voipsec "$@"\n')
    shim.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    for _, _, fix in found.values():
        done = subprocess.run(
            ["/bin/bash", "-e", "-o", "pipefail", "-c", fix],
            cwd=bin_dir,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        assert (done.returncode, done.stderr) == (0, ""), fix
    assert _not_passed(_report(data)) == {}


def test_audit_local_unsavable_latest_prints_the_report_then_one_line(copy: Path) -> None:
    # The fresh directory's own audit may have saved one already (test order).
    (copy / "audit").mkdir(exist_ok=True)
    (copy / "audit" / "latest.json").unlink(missing_ok=True)
    (copy / "audit" / "latest.json").mkdir()
    out = voipsec(*AUDIT, data_dir=copy, check=False)
    assert out.returncode == 1
    assert json.loads(out.stdout)["score"] == 100.0
    assert out.stderr == (
        f"voipsec: error: cannot save {copy / 'audit' / 'latest.json'}: Is a directory\n"
    )
    (copy / "audit" / "latest.json").rmdir()
    (copy / "audit" / "latest.tmp").symlink_to(copy / "elsewhere")
    out = voipsec(*AUDIT, data_dir=copy, check=False)
    assert (out.returncode, out.stderr) == (
        1,
        f"voipsec: error: cannot save {copy / 'audit' / 'latest.json'}: "
        "Too many levels of symbolic links\n",
    )
    assert not (copy / "elsewhere").exists()

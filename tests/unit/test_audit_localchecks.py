"""The local checks' decisions: each check passing, failing with its exact fix, and edges."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from voipsec.audit import localchecks as lc
from voipsec.audit.localchecks import (
    LOCAL,
    MAX_LISTED,
    SPECS,
    CertFact,
    FileFact,
    LocalFacts,
    config_fix,
    local_checks,
    toml_literal,
)
from voipsec.audit.localpasswords import StoredUser
from voipsec.audit.model import CheckResult, Outcome
from voipsec.config import Config, validate, zone_cidrs
from voipsec.endpoints.report import AdvisoryFinding, DevicePosture, Finding
from voipsec.nat.peerfilter import PeerFilter
from voipsec.pki.lifecycle import DAY
from voipsec.records import CertificateRecord
from voipsec.sip.digest import ha1

NOW = 1_800_000_000.0
DIR = "/srv/voip data"


def _config(data: dict[str, Any] | None = None) -> Config:
    return validate(data or {}, Path("voipsec.toml"))


def _facts(**kw: Any) -> LocalFacts:
    base: dict[str, Any] = {
        "data_dir": DIR,
        "files": (
            FileFact(name="", path=DIR, mode=0o700, directory=True),
            FileFact(name="tls/server.key", path=f"{DIR}/tls/server.key", mode=0o600),
        ),
        "certificates": (
            CertFact(kind="server", path=f"{DIR}/tls/server.crt", not_after=NOW + 800 * DAY),
            CertFact(kind="ca", path=f"{DIR}/ca/ca.crt", not_after=NOW + 3000 * DAY),
        ),
        "common_passwords": ("123456", "password"),
    }
    base.update(kw)
    return LocalFacts(**base)


def _one(results: list[CheckResult], id: str) -> CheckResult:
    (found,) = [r for r in results if r.spec.id == id]
    return found


def _run(data: dict[str, Any] | None = None, **facts: Any) -> list[CheckResult]:
    return local_checks(_config(data), _facts(**facts), NOW)


def _failed(results: list[CheckResult]) -> dict[str, tuple[str, str]]:
    return {r.spec.id: (r.observed, r.fix) for r in results if r.outcome is not Outcome.PASSED}


def test_localchecks_defaults_pass_every_check() -> None:
    results = _run()
    assert [r.spec for r in results] == list(SPECS)
    assert _failed(results) == {}
    assert {r.target for r in results} == {LOCAL}
    assert all(r.fix == "" for r in results)


def test_localchecks_specs_as_the_shared_table() -> None:
    table = {s.id: (s.control.value, s.severity.value, s.title) for s in SPECS}
    assert table == {
        "S-plaintext-sip": ("S", "high", "No plaintext SIP listener (UDP/TCP)"),
        "S-tls-version": ("S", "high", "TLS 1.2 or newer only"),
        "S-certificate-expiry": ("S", "high", "Certificates valid and not near expiry"),
        "S-file-permissions": (
            "S",
            "high",
            "Private keys and databases readable by the owner only",
        ),
        "A-client-certificates": ("A", "low", "Client certificates checked against the CA"),
        "A-digest-md5": ("A", "high", "Digest with SHA-256, not MD5"),
        "A-weak-password": ("A", "critical", "No user with a common or guessable password"),
        "M-srtp-required": ("M", "high", "SRTP required (RTP/AVP offers refused)"),
        "E-endpoint-policy": ("E", "high", "No device under a known advisory or in quarantine"),
        "F-ids": ("F", "high", "IDS and bans on"),
        "L-fraud": ("L", "high", "Fraud detection on"),
        "L-alerts": ("L", "low", "Alerts reach an administrator"),
        "L-metrics-exposure": (
            "L",
            "high",
            "Metrics not exposed without a token or client certificate",
        ),
        "O-turn-peer-filter": ("O", "critical", "TURN refuses internal peers"),
        "W-trusted-zone": ("W", "critical", "No trusted zone covers public addresses"),
        "W-dscp": ("W", "low", "SIP and media marked with DSCP"),
    }
    assert all(s.references for s in SPECS)


def test_localchecks_toml_literal_and_fix_quoting() -> None:
    assert toml_literal(["SHA-256"]) == '["SHA-256"]'
    assert toml_literal({"name": "a b", "x y": 1.5, "on": True}) == (
        '{name = "a b", "x y" = 1.5, on = true}'
    )
    assert config_fix("media.srtp", "required") == "voipsec config set media.srtp '\"required\"'"
    assert config_fix("sip.dscp", 24) == "voipsec config set sip.dscp 24"
    assert config_fix("a.b", "it's") == "voipsec config set a.b '\"it'\"'\"'s\"'"
    with pytest.raises(TypeError):
        toml_literal(object())


# -- S ---------------------------------------------------------------------------------


def test_localchecks_plaintext_listener_fails_with_the_tls_only_line() -> None:
    results = _run({"sip": {"listen": ["tls:127.0.0.1:5061", "udp:127.0.0.1:5060"]}})
    assert _failed(results) == {
        "S-plaintext-sip": (
            "plaintext SIP on udp:127.0.0.1:5060, accepted from zone internet",
            "voipsec config set sip.listen '[\"tls:127.0.0.1:5061\"]'",
        )
    }


def test_localchecks_plaintext_only_listener_is_replaced_by_tls() -> None:
    result = lc.check_plaintext_sip(_config({"sip": {"listen": ["tcp:[::1]:5060"]}}))
    assert result.fix == "voipsec config set sip.listen '[\"tls:[::1]:5061\"]'"


def test_localchecks_plaintext_confined_to_trusted_zones_passes() -> None:
    zones = [
        {"name": "lan", "cidrs": ["10.0.0.0/8"], "trust": "trusted"},
        {"name": "internet", "cidrs": ["0.0.0.0/0", "::/0"], "transports": ["tls"]},
    ]
    config = _config({"sip": {"listen": ["udp:10.0.0.1:5060"]}, "zones": zones})
    result = lc.check_plaintext_sip(config)
    assert (result.outcome, result.observed) == (
        Outcome.PASSED,
        "udp:10.0.0.1:5060 accepted from trusted zones only (lan)",
    )


def test_localchecks_plaintext_without_an_internet_zone_counts_the_implicit_one() -> None:
    zones = [{"name": "lan", "cidrs": ["10.0.0.0/8"], "trust": "trusted"}]
    config = _config({"sip": {"listen": ["udp:10.0.0.1:5060"]}, "zones": zones})
    assert lc.check_plaintext_sip(config).outcome is Outcome.FAILED


def test_localchecks_tls_version_passes_with_the_value() -> None:
    result = lc.check_tls_version(_config({"tls": {"min_version": "1.3"}}))
    assert (result.outcome, result.observed) == (
        Outcome.PASSED,
        "tls.min_version 1.3 (TLS 1.3 and newer)",
    )


def test_localchecks_server_certificate_expiring_fails_with_init_line() -> None:
    certs = (
        CertFact(kind="server", path=f"{DIR}/tls/server.crt", not_after=NOW + 5 * DAY - 60),
        CertFact(kind="ca", path=f"{DIR}/ca/ca.crt", not_after=NOW + 3000 * DAY),
    )
    assert _failed(_run(certificates=certs)) == {
        "S-certificate-expiry": (
            "server certificate expires in 5 days",
            "rm '/srv/voip data/tls/server.crt' && voipsec init --dir '/srv/voip data'",
        )
    }


def test_localchecks_ca_expired_and_warning_days_edge() -> None:
    certs = (
        CertFact(kind="server", path="s", not_after=NOW + 31 * DAY),
        CertFact(kind="ca", path="c", not_after=NOW - 1),
    )
    result = lc.check_certificate_expiry(_config(), _facts(certificates=certs), NOW)
    assert result.observed == "CA certificate expired"
    assert result.fix.startswith("the CA cannot be renewed in place")
    # 30 days left is within pki.expiry_warning_days (30); 31 is not.
    edge = (CertFact(kind="server", path="s", not_after=NOW + 30 * DAY),)
    assert lc.check_certificate_expiry(_config(), _facts(certificates=edge), NOW).observed == (
        "server certificate expires in 30 days"
    )


def test_localchecks_device_certificates_expiring_renewed_and_revoked() -> None:
    def cert(serial: int, name: str, days: float, issued: float, revoked: bool = False) -> Any:
        return CertificateRecord(
            serial=serial,
            name=name,
            aor=f"{name}@x",
            not_after=NOW + days * DAY,
            revoked=NOW if revoked else None,
            issued=issued,
        )

    issued = (
        cert(0x1A, "alice", 5, 1.0),  # expiring
        cert(0x2B, "bob", -2, 1.0),  # expired, renewed by 0x2C: its owner has acted
        cert(0x2C, "bob", 800, 2.0),
        cert(0x3D, "carol", -1, 1.0, revoked=True),  # revoked: not an expiry finding
    )
    result = lc.check_certificate_expiry(_config(), _facts(issued=issued), NOW)
    assert (result.observed, result.fix) == (
        "device certificate alice (serial 1a) expiring in 5 days",
        "voipsec ca renew alice",
    )
    fine = lc.check_certificate_expiry(_config(), _facts(issued=issued[1:]), NOW)
    assert fine.observed == (
        "server certificate valid 800 days, CA certificate valid 3000 days, "
        "1 device certificate valid"
    )


def test_localchecks_unreadable_certificate_is_an_error() -> None:
    certs = (CertFact(kind="server", path="s", not_after=None, error="s not found"),)
    result = lc.check_certificate_expiry(_config(), _facts(certificates=certs), NOW)
    assert (result.outcome, result.observed) == (Outcome.ERROR, "server certificate: s not found")


def test_localchecks_file_permissions_exact_fixes() -> None:
    files = (
        FileFact(name="", path=DIR, mode=0o755, directory=True),
        FileFact(name="tls/server.key", path=f"{DIR}/tls/server.key", mode=0o644),
        FileFact(name="voipsec.db", path=f"{DIR}/voipsec.db", mode=0o640),
        FileFact(name="ca/ca.key", path=f"{DIR}/ca/ca.key", mode=0o777, symlink=True),
        FileFact(name="demo-user.txt", path=f"{DIR}/demo-user.txt", mode=None),
    )
    result = lc.check_file_permissions(_facts(files=files))
    assert (result.observed, result.fix) == (
        "the data directory is 0755, tls/server.key is 0644, voipsec.db is 0640, "
        "ca/ca.key is a symbolic link",
        "t=\"$(readlink -f '/srv/voip data/ca/ca.key')\" && rm '/srv/voip data/ca/ca.key'"
        " && cp -a \"$t\" '/srv/voip data/ca/ca.key' && chmod 600 '/srv/voip data/ca/ca.key'; "
        "chmod 700 '/srv/voip data'; chmod 600 '/srv/voip data/tls/server.key' "
        "'/srv/voip data/voipsec.db'",
    )


def test_localchecks_file_permissions_one_key_and_missing_files() -> None:
    files = (
        FileFact(name="tls/server.key", path="/d/tls/server.key", mode=0o604),
        FileFact(name="demo-user.txt", path="/d/demo-user.txt", mode=None),
    )
    result = lc.check_file_permissions(_facts(files=files))
    assert (result.observed, result.fix) == (
        "tls/server.key is 0604",
        "chmod 600 /d/tls/server.key",
    )
    ok = lc.check_file_permissions(_facts(files=files[1:]))
    assert (ok.outcome, ok.observed) == (
        Outcome.PASSED,
        "0 files owner-only (data directory included)",
    )


# -- A ---------------------------------------------------------------------------------


def test_localchecks_client_certificates_off_fails() -> None:
    assert _failed(_run({"tls": {"client_cert": "off"}})) == {
        "A-client-certificates": (
            'tls.client_cert "off"',
            "voipsec config set tls.client_cert '\"optional\"'",
        )
    }
    listen = ["tls:127.0.0.1:5061", "tls:127.0.0.1:5062;client_cert=off"]
    result = lc.check_client_certificates(_config({"sip": {"listen": listen}}))
    assert (result.observed, result.fix) == (
        "tls:127.0.0.1:5062;client_cert=off asks no certificate",
        'voipsec config set sip.listen \'["tls:127.0.0.1:5061", "tls:127.0.0.1:5062"]\'',
    )


@pytest.mark.parametrize("algorithms", [["MD5"], ["SHA-256", "MD5"]])
def test_localchecks_md5_fails_with_the_sha256_line(algorithms: list[str]) -> None:
    assert _failed(_run({"auth": {"algorithms": algorithms}})) == {
        "A-digest-md5": (
            f"auth.algorithms {toml_literal(algorithms)}",
            "voipsec config set auth.algorithms '[\"SHA-256\"]'",
        )
    }


def _stored(name: str, password: str, realm: str = "localhost") -> StoredUser:
    return StoredUser(
        name=name,
        sha256=ha1("SHA-256", name, realm, password),
        md5=ha1("MD5", name, realm, password),
        cos="international",
    )


def test_localchecks_weak_password_names_the_user_never_the_password() -> None:
    users = (_stored("alice", "123456"), _stored("bob", "bob123"), _stored("eve", "k7#Lq-9zZ"))
    result = _one(_run(users=users), "A-weak-password")
    assert (result.outcome, result.observed, result.fix) == (
        Outcome.FAILED,
        "common or guessable password: user alice, bob",
        "voipsec user remove alice && voipsec user add alice --class international; "
        "voipsec user remove bob && voipsec user add bob --class international",
    )
    assert "123456" not in result.observed + result.fix
    fine = _one(_run(users=users[2:]), "A-weak-password")
    assert fine.observed == "1 user checked against 2 common passwords and name guesses"


def test_localchecks_store_error_is_an_error_for_its_checks() -> None:
    results = _run(store_error="database is locked")
    assert {k: v[0] for k, v in _failed(results).items()} == {
        "S-certificate-expiry": "device certificates: database is locked",
        "A-weak-password": "users: database is locked",
        "E-endpoint-policy": "inventory: database is locked",
    }
    assert all(r.outcome is Outcome.ERROR for r in results if r.outcome is not Outcome.PASSED)


# -- M, E ------------------------------------------------------------------------------


@pytest.mark.parametrize("srtp", ["optional", "off"])
def test_localchecks_srtp_not_required_fails(srtp: str) -> None:
    assert _failed(_run({"media": {"srtp": srtp}})) == {
        "M-srtp-required": (
            f'media.srtp "{srtp}"',
            "voipsec config set media.srtp '\"required\"'",
        )
    }


def _posture(id: int, *, advisory: bool = False, status: str = "ok") -> DevicePosture:
    advisories = (
        AdvisoryFinding(
            id="CVE-2026-2329",
            cves=("CVE-2026-2329",),
            cvss=9.3,
            kev=False,
            fixed="1.0.7.81",
            last_affected=None,
            summary="",
            source="",
        ),
    )
    findings = (
        (Finding(severity="high", check="advisory", text="", action="upgrade to 1.0.7.81"),)
        if advisory
        else ()
    )
    return DevicePosture(
        id=id,
        user="alice",
        aor="alice@x",
        vendor="Grandstream",
        model="GXP1625",
        version="1.0.4.1",
        user_agent="",
        firmware="",
        advisories=advisories if advisory else (),
        certificate="none",
        cert_serial="",
        cert_expiry=None,
        transport="tls",
        tls_version="TLSv1.3",
        digest_algorithm="SHA-256",
        srtp_suites="",
        status=status,
        reasons=(),
        last_seen=NOW,
        findings=findings,
    )


def test_localchecks_endpoint_policy() -> None:
    empty = lc.check_endpoint_policy(_config(), _facts())
    assert (empty.outcome, empty.observed) == (Outcome.PASSED, "no device in the inventory")
    fine = lc.check_endpoint_policy(
        _config(), _facts(devices=(_posture(1), _posture(2, status="warn")))
    )
    assert fine.observed == "2 devices, none under an advisory"
    bad = lc.check_endpoint_policy(
        _config(), _facts(devices=(_posture(1, advisory=True), _posture(2, status="restricted")))
    )
    assert (bad.outcome, bad.observed, bad.fix) == (
        Outcome.FAILED,
        "device 1 (alice, Grandstream GXP1625 1.0.4.1): CVE-2026-2329, "
        "device 2 (alice, Grandstream GXP1625 1.0.4.1): status restricted",
        "device 1: upgrade to 1.0.7.81; device 2: voipsec devices show 2; voipsec devices report",
    )
    error = lc.check_endpoint_policy(_config(), _facts(devices_error="advisories.yaml: bad"))
    assert (error.outcome, error.observed) == (Outcome.ERROR, "inventory: advisories.yaml: bad")


def test_localchecks_endpoint_policy_off_fails() -> None:
    assert _failed(_run({"endpoints": {"enabled": False}})) == {
        "E-endpoint-policy": (
            "endpoints.enabled false: no device is judged at REGISTER",
            "voipsec config set endpoints.enabled true",
        )
    }


def test_localchecks_endpoint_policy_lists_at_most_max_listed() -> None:
    devices = tuple(_posture(i, status="refused") for i in range(MAX_LISTED + 2))
    result = lc.check_endpoint_policy(_config(), _facts(devices=devices))
    assert result.observed.endswith(": status refused and 2 more")
    assert result.fix.count("voipsec devices show") == MAX_LISTED


# -- F, L ------------------------------------------------------------------------------


def test_localchecks_ids_sanity_and_bans() -> None:
    assert _failed(_run({"ids": {"enabled": False}})) == {
        "F-ids": ("ids.enabled false", "voipsec config set ids.enabled true")
    }
    sanity = lc.check_ids(_config({"sanity": {"checks": ["max_forwards", "lengths"]}}))
    assert (sanity.observed, sanity.fix) == (
        "sanity checks off: from_tag, via_branch, uri_scheme",
        "voipsec config set sanity.checks "
        '\'["max_forwards", "from_tag", "via_branch", "uri_scheme", "lengths"]\'',
    )
    zones = [
        {"name": "lan", "cidrs": ["10.0.0.0/8"], "trust": "trusted", "rate_ban": 1},
        {"name": "internet", "cidrs": ["0.0.0.0/0"], "rate_ban": 59, "rate_requests": 1000},
    ]
    bans = lc.check_ids(_config({"zones": zones}))
    assert (bans.observed, bans.fix) == (
        "zone internet bans for 59 s only; zone internet allows 500 requests/s per source",
        'voipsec config set zones \'[{name = "lan", cidrs = ["10.0.0.0/8"], '
        'trust = "trusted", rate_ban = 1}, {name = "internet", cidrs = ["0.0.0.0/0"]}]\'',
    )
    edge = [{"name": "internet", "cidrs": ["0.0.0.0/0"], "rate_ban": 60, "rate_requests": 200}]
    assert lc.check_ids(_config({"zones": edge})).outcome is Outcome.PASSED


def test_localchecks_fraud_off_fails() -> None:
    assert _failed(_run({"fraud": {"enabled": False}})) == {
        "L-fraud": ("fraud.enabled false", "voipsec config set fraud.enabled true")
    }


def test_localchecks_alerts_channels() -> None:
    fresh = lc.check_alerts(_config(), _facts())
    assert fresh.observed == "alerts stored (voipsec alerts list)"
    webhook = {"alerts": {"webhook": "http://hooks.example.com/T0/secret-token"}}
    result = lc.check_alerts(_config(webhook), _facts())
    assert (result.observed, result.fix) == (
        "alerts.webhook is plain http to hooks.example.com",
        'voipsec config set alerts.webhook "\\"$(voipsec config get alerts.webhook'
        ' | sed s,^http:,https:,)\\""',
    )
    assert "secret" not in result.observed + result.fix
    local = lc.check_alerts(_config({"alerts": {"webhook": "http://127.0.0.1:9000/a"}}), _facts())
    assert local.outcome is Outcome.PASSED
    syslog = lc.check_alerts(_config({"alerts": {"syslog": "udp:192.0.2.7:514"}}), _facts())
    assert (syslog.observed, syslog.fix) == (
        "alerts.syslog sends in clear over UDP to 192.0.2.7",
        "voipsec config set alerts.syslog '\"unix:/dev/log\"'",
    )
    mail = {
        "alerts": {
            "email_from": "voip@example.com",
            "smtp": "mail.example.com",
            "smtp_ca": "mail-ca.pem",
            "email_to": ["admin@example.com"],
        }
    }
    missing = lc.check_alerts(_config(mail), _facts(smtp_ca_present=False))
    assert (missing.observed, missing.fix) == (
        "alerts.smtp_ca mail-ca.pem not found: no e-mail can be sent",
        "voipsec config set alerts.smtp_ca '\"\"'",
    )
    ok = lc.check_alerts(_config(mail), _facts(smtp_ca_present=True))
    assert ok.observed == "alerts stored (voipsec alerts list), e-mail to 1 recipient"


def test_localchecks_metrics_exposure() -> None:
    open_ = {"metrics": {"listen": "0.0.0.0:8443", "allow_no_token": True}}
    assert _failed(_run(open_)) == {
        "L-metrics-exposure": (
            "metrics on 0.0.0.0:8443 without a token; metrics.allow_no_token true",
            'voipsec config set metrics.token "\\"$(openssl rand -hex 32)\\""; '
            "voipsec config set metrics.allow_no_token false",
        )
    }
    loop = lc.check_metrics_exposure(_config({"metrics": {"allow_no_token": True}}))
    assert (loop.observed, loop.fix) == (
        "metrics.allow_no_token true",
        "voipsec config set metrics.allow_no_token false",
    )
    token = _config({"metrics": {"listen": "0.0.0.0:8443", "token": "t" * 32}})
    assert lc.check_metrics_exposure(token).observed == "metrics on 0.0.0.0:8443 with a token"
    assert lc.check_metrics_exposure(_config({"metrics": {"listen": ""}})).observed == (
        "metrics off"
    )


# -- O, W ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cidr", "why"),
    [
        ("10.1.0.0/16", "private (RFC 1918)"),
        ("127.0.0.1/32", "loopback (RFC 1122)"),
        ("169.254.169.254/32", "link-local (RFC 3927), cloud metadata services"),
        ("100.64.0.0/10", "shared address space / CGNAT (RFC 6598)"),
        ("fd00::/8", "unique local (RFC 4193)"),
        ("::ffff:0:0/96", "IPv4-mapped (RFC 4291)"),
    ],
)
def test_localchecks_turn_peer_filter_opened(cidr: str, why: str) -> None:
    peers = [cidr, "192.0.3.0/24"]
    assert _failed(_run({"turn": {"allowed_peers": peers}})) == {
        "O-turn-peer-filter": (
            f"turn.allowed_peers exempts {cidr} ({why})",
            "voipsec config set turn.allowed_peers '[\"192.0.3.0/24\"]'",
        )
    }


def test_localchecks_turn_everything_allowed_and_turn_off() -> None:
    result = lc.check_turn_peer_filter(_config({"turn": {"allowed_peers": ["0.0.0.0/0"]}}))
    assert result.observed == (
        "turn.allowed_peers exempts 0.0.0.0/0 (15 internal ranges: this network (RFC 791);"
        " 0.0.0.0 reaches the host itself...)"
    )
    assert result.fix == "voipsec config set turn.allowed_peers '[]'"
    off = _config({"turn": {"listen": [], "allowed_peers": ["10.0.0.0/8"]}})
    assert lc.check_turn_peer_filter(off).observed == "no TURN listener"


def test_localchecks_trusted_zone_covering_the_internet_fails() -> None:
    zones = [
        {"name": "loopback", "cidrs": ["127.0.0.0/8", "::1/128"], "trust": "trusted"},
        {"name": "internet", "cidrs": ["0.0.0.0/0", "::/0"], "trust": "trusted"},
    ]
    assert _failed(_run({"zones": zones})) == {
        "W-trusted-zone": (
            "trusted zone internet covers 0.0.0.0/0, ::/0",
            'voipsec config set zones \'[{name = "loopback", cidrs = ["127.0.0.0/8", '
            '"::1/128"], trust = "trusted"}, {name = "internet", cidrs = ["0.0.0.0/0", '
            '"::/0"]}]\'',
        )
    }


def test_localchecks_trusted_zone_keeps_private_cidrs_and_small_blocks() -> None:
    zones = [
        {"name": "office", "cidrs": ["10.0.0.0/8", "8.0.0.0/8"], "trust": "trusted"},
        {"name": "carrier", "cidrs": ["8.8.4.0/24", "2001:db9:1::/48"], "trust": "trusted"},
    ]
    result = lc.check_trusted_zone(_config({"zones": zones}))
    assert (result.observed, result.fix) == (
        "trusted zone office covers 8.0.0.0/8",
        'voipsec config set zones \'[{name = "office", cidrs = ["10.0.0.0/8"], '
        'trust = "trusted"}, {name = "carrier", cidrs = ["8.8.4.0/24", "2001:db9:1::/48"], '
        'trust = "trusted"}]\'',
    )
    small = lc.check_trusted_zone(_config({"zones": zones[1:]}))
    assert (small.outcome, small.observed) == (
        Outcome.PASSED,
        "trusted zones hold small public blocks only: carrier 8.8.4.0/24, carrier 2001:db9:1::/48",
    )
    lan = [{"name": "lan", "cidrs": ["192.168.0.0/16", "fd00::/8"], "trust": "trusted"}]
    assert lc.check_trusted_zone(_config({"zones": lan})).observed == (
        "trusted zones lan: no public range"
    )
    v6 = [{"name": "wide", "cidrs": ["2001:db9::/32"], "trust": "trusted"}]
    assert lc.check_trusted_zone(_config({"zones": v6})).outcome is Outcome.FAILED


def test_localchecks_dscp_zero_fails() -> None:
    assert _failed(_run({"sip": {"dscp": 0}, "media": {"dscp": 0}})) == {
        "W-dscp": (
            "sip.dscp 0, media.dscp 0 (unmarked)",
            "voipsec config set sip.dscp 24; voipsec config set media.dscp 46",
        )
    }
    assert lc.check_dscp(_config({"media": {"dscp": 34}})).observed == (
        "sip.dscp 24, media.dscp 34"
    )


def test_localchecks_trusted_zone_named_internet_covers_every_address() -> None:
    # server.build_zone_map gives every unlisted address the zone named "internet",
    # whatever CIDRs it lists: trusted, it trusts the internet.
    zones = [
        {"name": "loopback", "cidrs": ["127.0.0.0/8", "::1/128"], "trust": "trusted"},
        {"name": "internet", "cidrs": ["10.0.0.0/8"], "trust": "trusted"},
    ]
    listen = ["tls:0.0.0.0:5061", "udp:0.0.0.0:5060"]
    assert _failed(_run({"zones": zones, "sip": {"listen": listen}})) == {
        "S-plaintext-sip": (
            "plaintext SIP on udp:0.0.0.0:5060, accepted from zone internet",
            "voipsec config set sip.listen '[\"tls:0.0.0.0:5061\"]'",
        ),
        "W-trusted-zone": (
            "trusted zone internet covers every address no other zone lists (0.0.0.0/0, ::/0)",
            'voipsec config set zones \'[{name = "loopback", cidrs = ["127.0.0.0/8", '
            '"::1/128"], trust = "trusted"}, {name = "internet", cidrs = ["10.0.0.0/8"]}]\'',
        ),
    }
    assert zone_cidrs(_config({"zones": zones}).zones[1]) == ("10.0.0.0/8", "0.0.0.0/0", "::/0")
    assert zone_cidrs(_config({"zones": zones}).zones[0]) == ("127.0.0.0/8", "::1/128")


@pytest.mark.parametrize(
    ("cidrs", "outcome"),
    [
        (["8.8.8.0/24"], Outcome.PASSED),
        (["8.8.8.0/23"], Outcome.FAILED),
        (["2a00:1::/48"], Outcome.PASSED),
        (["2a00:1::/47"], Outcome.FAILED),
        (["8.8.8.0/24", "8.8.8.128/25"], Outcome.PASSED),  # overlaps counted once
        (["8.8.8.0/24", "10.0.0.0/8", "192.0.2.0/24"], Outcome.PASSED),  # special ones free
    ],
)
def test_localchecks_trusted_zone_prefix_thresholds(cidrs: list[str], outcome: Outcome) -> None:
    zones = [{"name": "t", "cidrs": cidrs, "trust": "trusted"}]
    assert lc.check_trusted_zone(_config({"zones": zones})).outcome is outcome
    assert (lc.MAX_TRUSTED_PUBLIC_V4, lc.MAX_TRUSTED_PUBLIC_V6) == (256, 2**80)


def test_localchecks_trusted_zone_small_blocks_add_up() -> None:
    many = [f"{a}.{b}.0.0/24" for a in (11, 12) for b in range(50)]
    zones = [
        {"name": "a", "cidrs": ["8.8.8.0/24"], "trust": "trusted"},
        {"name": "b", "cidrs": many, "trust": "trusted"},
    ]
    result = lc.check_trusted_zone(_config({"zones": zones}))
    assert result.outcome is Outcome.FAILED
    assert result.observed == f"trusted zone b covers {', '.join(many)}"
    assert result.fix == (
        'voipsec config set zones \'[{name = "a", cidrs = ["8.8.8.0/24"], trust = "trusted"}, '
        f'{{name = "b", cidrs = {toml_literal(many)}}}]\''
    )
    two = [{"name": "t", "cidrs": ["8.8.8.0/24", "9.9.9.0/24"], "trust": "trusted"}]
    result = lc.check_trusted_zone(_config({"zones": two}))
    assert (result.observed, result.fix) == (
        "trusted zone t covers 9.9.9.0/24",
        'voipsec config set zones \'[{name = "t", cidrs = ["8.8.8.0/24"], trust = "trusted"}]\'',
    )


def test_localchecks_file_permissions_owner_links_public_and_parents() -> None:
    files = (
        FileFact(name="", path="/d", mode=0o700, directory=True, uid=1000),
        FileFact(name="ca", path="/d/ca", mode=0o755, directory=True, public=True, uid=1000),
        FileFact(name="tls", path="/d/tls", mode=0o775, directory=True, public=True, uid=1000),
        FileFact(name="ca/ca.crt", path="/d/ca/ca.crt", mode=0o644, public=True, uid=1000),
        FileFact(name="ca/ca.key", path="/d/ca/ca.key", mode=0o600, uid=65534),
        FileFact(name="tls/server.key", path="/d/tls/server.key", mode=0o600, nlink=2),
        FileFact(name="/tmp", path="/tmp", mode=0o1777, parent=True),
        FileFact(name="/srv", path="/srv", mode=0o757, parent=True),
        FileFact(name="/", path="/", mode=0o775, parent=True),
    )
    result = lc.check_file_permissions(_facts(files=files, data_dir="/d", owner=1000))
    assert (result.outcome, result.observed, result.fix) == (
        Outcome.FAILED,
        "tls is 0775, ca/ca.key is owned by uid 65534, not the data directory's owner, "
        "tls/server.key has 2 hard links (another keeps a copy: make a new key), "
        "parent directory /srv is 0757",
        "cp -p /d/tls/server.key /d/tls/server.key.new && mv /d/tls/server.key.new "
        "/d/tls/server.key; chown --reference=/d /d/ca/ca.key; chmod go-w /d/tls; "
        "chmod o-w /srv",
    )


@pytest.mark.parametrize(
    ("cidr", "why", "inside"),
    [
        ("::ffff:0:0:0/96", "SIIT IPv4-translated (RFC 2765)", "::ffff:0:a00:1"),
        ("::ffff:8.0.0.0/102", "IPv4-mapped (RFC 4291)", "::ffff:10.0.0.1"),
        ("64:ff9b::a00:0/104", "NAT64 (RFC 6052)", "64:ff9b::a00:1"),
        ("2002:a9fe:a9fe::/48", "6to4 (RFC 3056)", "2002:a9fe:a9fe::1"),
        ("::a00:0/104", "IPv4-compatible (RFC 4291)", "::a00:1"),
    ],
)
def test_localchecks_turn_peer_filter_embedded_ipv4_forms(cidr: str, why: str, inside: str) -> None:
    # What the peer filter itself lets through with this entry: an internal IPv4 peer.
    assert PeerFilter(allowed=[cidr]).allows(inside)
    assert not PeerFilter().allows(inside)
    result = lc.check_turn_peer_filter(_config({"turn": {"allowed_peers": [cidr]}}))
    assert (result.outcome, result.observed, result.fix) == (
        Outcome.FAILED,
        f"turn.allowed_peers exempts {cidr} ({why})",
        "voipsec config set turn.allowed_peers '[]'",
    )


@pytest.mark.parametrize(
    "cidr",
    ["::ffff:8.8.8.0/120", "64:ff9b::808:808/128", "2002:808:808::/48", "::ffff:0:808:0/112"],
)
def test_localchecks_turn_peer_filter_embedded_public_forms_pass(cidr: str) -> None:
    result = lc.check_turn_peer_filter(_config({"turn": {"allowed_peers": [cidr]}}))
    assert result.outcome is Outcome.PASSED


def test_localchecks_server_certificate_foreign_or_not_yet_valid_fails() -> None:
    fix = "rm '/srv/voip data/tls/server.crt' && voipsec init --dir '/srv/voip data'"
    ca = CertFact(kind="ca", path=f"{DIR}/ca/ca.crt", not_after=NOW + 3000 * DAY)
    for foreign in ("does not match tls/server.key", "is not signed by ca/ca.crt"):
        server = CertFact(
            kind="server",
            path=f"{DIR}/tls/server.crt",
            not_after=NOW + 800 * DAY,
            foreign=foreign,
        )
        assert _failed(_run(certificates=(server, ca))) == {
            "S-certificate-expiry": (f"server certificate {foreign}", fix)
        }
    early = CertFact(
        kind="server",
        path=f"{DIR}/tls/server.crt",
        not_after=NOW + 800 * DAY,
        not_before=NOW + 3 * DAY,
    )
    assert _failed(_run(certificates=(early, ca))) == {
        "S-certificate-expiry": ("server certificate not valid for 3 days yet", fix)
    }


def test_localchecks_metrics_token_shorter_than_the_minimum_fails() -> None:
    short = "t" * (lc.MIN_METRICS_TOKEN_LENGTH - 1)
    for listen in ("127.0.0.1:9100", "0.0.0.0:8443"):
        result = lc.check_metrics_exposure(_config({"metrics": {"listen": listen, "token": short}}))
        assert (result.outcome, result.observed, result.fix) == (
            Outcome.FAILED,
            "metrics.token is 31 characters, fewer than 32: guessable",
            'voipsec config set metrics.token "\\"$(openssl rand -hex 32)\\""',
        )
    one = lc.check_metrics_exposure(_config({"metrics": {"listen": "0.0.0.0:8443", "token": "a"}}))
    assert one.observed == "metrics.token is 1 character, fewer than 32: guessable"


def test_localchecks_cite_nist_sp_800_58_by_name_only() -> None:
    # Its section numbers could not be verified: the document is cited by name.
    source = Path(lc.__file__).read_text(encoding="utf-8")
    assert "800-58 §" not in source
    assert "800-58 section" not in source.lower()

"""``voipsec audit --target`` against Kamailio 5.6 with a typical weak setup (issue 19).

Kamailio (Debian ``kamailio`` + ``kamailio-tls-modules``) as many installations run
it: TLS "TLSv1+" with ``@SECLEVEL=0`` ciphers, plain UDP on 5060, digest with the auth
module's defaults (MD5, no nonce counting) against one static password, no database,
and a self-signed certificate this test makes, valid 5 days. It runs inside a network
namespace the module creates (tests/peers/netns.py), so port 5060 is free and nothing
else answers there. One audit run with the test user's credentials is shared by the
tests; Kamailio and the namespace go when the module ends.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.peers import netns
from tests.peers.proc import port_open, require, running, wait_for
from tests.peers.voipsec import voipsec_cli
from voipsec.audit.cli import EXIT_UNDER

pytestmark = pytest.mark.peers

TARGET = "sips:127.0.0.1:5061"
PASSWORD = "kamailio-secret"

TLS_CFG = """\
[server:default]
method = TLSv1+
verify_certificate = no
require_certificate = no
certificate = {dir}/cert.pem
private_key = {dir}/key.pem
cipher_list = DEFAULT:@SECLEVEL=0
"""

KAMAILIO_CFG = """\
#!KAMAILIO
debug=2
log_stderror=yes
children=2
auto_aliases=no
dns=no
rev_dns=no
enable_tls=yes
listen=udp:127.0.0.1:5060
listen=tls:127.0.0.1:5061

loadmodule "kex.so"
loadmodule "corex.so"
loadmodule "tls.so"
loadmodule "sl.so"
loadmodule "pv.so"
loadmodule "maxfwd.so"
loadmodule "siputils.so"
loadmodule "textops.so"
loadmodule "auth.so"
modparam("tls", "config", "{dir}/tls.cfg")

request_route {{
	if (!mf_process_maxfwd_header("10")) {{ sl_send_reply("483", "Too Many Hops"); exit; }}
	if (is_method("OPTIONS")) {{ sl_send_reply("200", "OK"); exit; }}
	if (is_method("ACK")) {{ exit; }}
	# Any user, one static password (flags 0: plain text), MD5 by the module's default.
	if (!pv_auth_check("$fd", "{password}", "0", "0")) {{
		auth_challenge("$fd", "1");
		exit;
	}}
	consume_credentials();
	if (is_method("REGISTER")) {{ sl_send_reply("200", "OK"); exit; }}
	sl_send_reply("404", "Not Found");
}}
"""


@dataclass(frozen=True)
class Audited:
    status: int
    report: dict[str, Any]

    def result(self, check: str) -> dict[str, Any]:
        (found,) = [r for r in self.report["results"] if r["id"] == check]
        return found


@pytest.fixture(scope="module")
def audited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Audited]:
    base: Path = tmp_path_factory.mktemp("audit-kamailio")
    openssl = [require("openssl"), "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "5"]
    subprocess.run(
        [
            *openssl,
            "-subj",
            "/CN=kamailio",
            "-keyout",
            f"{base}/key.pem",
            "-out",
            f"{base}/cert.pem",
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )
    (base / "tls.cfg").write_text(TLS_CFG.format(dir=base))
    (base / "kamailio.cfg").write_text(KAMAILIO_CFG.format(dir=base, password=PASSWORD))
    argv = [require("kamailio"), "-DD", "-E", "-f", str(base / "kamailio.cfg")]
    argv += ["-Y", str(base), "-P", str(base / "kamailio.pid"), "-w", str(base)]
    with ExitStack() as stack:
        stack.enter_context(netns.entered("vsaudkam"))
        kamailio = stack.enter_context(running(argv, log=base / "kamailio.log"))
        wait_for(
            lambda: kamailio.poll() is not None or port_open("127.0.0.1", 5061),
            what="kamailio to listen",
        )
        assert kamailio.poll() is None, (base / "kamailio.log").read_text()[-2000:]
        proc = voipsec_cli(
            "audit",
            "--target",
            TARGET,
            "--user",
            "alice",
            "--password",
            PASSWORD,
            "--format",
            "json",
            "--fail-under",
            "100",
            data_dir=Path("/nonexistent"),
            check=False,
        )
        assert proc.stdout, proc.stderr
        yield Audited(status=proc.returncode, report=json.loads(proc.stdout))


def test_audit_kamailio_tls10_is_found(audited: Audited) -> None:
    r = audited.result("S-tls-version")
    assert (r["outcome"], r["observed"], r["fix"]) == (
        "failed",
        "accepted: TLS 1.0, TLS 1.1, TLS 1.2, TLS 1.3",
        "allow TLS 1.2 and 1.3 only (e.g. Kamailio tls.cfg method = TLSv1.2+)",
    )
    weak = audited.result("S-tls-ciphers")
    assert (weak["outcome"], weak["observed"]) == (
        "failed",
        "accepted the weak suite ECDHE-RSA-AES256-SHA384",
    )
    cert = audited.result("S-certificate-expiry")
    assert (cert["outcome"], cert["observed"]) == (
        "failed",
        "CN=kamailio: expires in 4 day(s) (warning at 30 days); "
        "not trusted: self-signed certificate",
    )
    assert audited.result("S-tls-renegotiation")["outcome"] == "passed"


def test_audit_kamailio_udp_5060_is_found(audited: Audited) -> None:
    r = audited.result("S-plaintext-sip")
    assert (r["outcome"], r["observed"], r["fix"]) == (
        "failed",
        "udp:127.0.0.1:5060 answered 200 OK",
        "close plaintext SIP (UDP/TCP 5060); offer SIP over TLS only",
    )
    amp = audited.result("F-amplification")
    assert amp["outcome"] == "passed"
    assert amp["observed"].startswith("udp:127.0.0.1:5060: ")


def test_audit_kamailio_md5_digest_and_replay_are_found(audited: Audited) -> None:
    r = audited.result("A-digest-md5")
    assert (r["outcome"], r["observed"], r["fix"]) == (
        "failed",
        "challenged with MD5 (no algorithm)",
        "challenge with algorithm=SHA-256 only (RFC 8760)",
    )
    replay = audited.result("A-nonce-reuse")
    assert (replay["outcome"], replay["observed"]) == (
        "failed",
        "the same Authorization (nonce, nc) was accepted again (200)",
    )
    assert audited.result("A-digest-qop")["outcome"] == "passed"
    call = audited.result("A-unauthenticated-call")
    assert (call["outcome"], call["observed"]) == (
        "passed",
        "INVITE without credentials refused (407)",
    )
    assert audited.result("A-user-enumeration")["outcome"] == "passed"


def test_audit_kamailio_version_flood_and_media(audited: Audited) -> None:
    leak = audited.result("F-info-leak")
    assert leak["outcome"] == "failed"
    assert leak["observed"].startswith("Server: kamailio (5.6.")
    flood = audited.result("F-rate-limit")
    assert (flood["outcome"], flood["observed"]) == ("failed", "all 60 OPTIONS in 1 s answered")
    # No media relay and no call routing here: the media checks do not apply.
    assert audited.result("M-srtp-required")["observed"] == (
        "an RTP/AVP offer got 404: no call to judge"
    )
    assert {audited.result(c)["outcome"] for c in ("M-rtp-bleed", "M-srtp-junk")} == {"skipped"}


def test_audit_kamailio_fail_under_exits_3(audited: Audited) -> None:
    assert audited.status == EXIT_UNDER == 3
    assert audited.report["score"] < 100
    assert not [r for r in audited.report["results"] if r["outcome"] == "error"]

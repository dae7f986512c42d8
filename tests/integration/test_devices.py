"""The endpoint policy and the device inventory against real peers (issue 18).

One server (module scope, auth.algorithms = ["MD5"]: SIPp 3.6.1 and baresip 1.0.0 answer
MD5 only, bench/sipp/register_digest.xml) with ``endpoints.advisory = "refuse"`` (the
shipped advisories of the Grandstream GXP16xx are not KEV-listed; the default refuses
KEV only). SIPp, through a stunnel TLS hop, registers with the User-Agent of a
vulnerable firmware (``Grandstream GXP1625 1.0.2.25``, the format Greenbone quotes,
docs/endpoints.md) and gets 403 whose Warning names CVE-2026-2329 and 1.0.7.81 (the
scenario checks it), then with the fixed firmware and gets 200; baresip registers
over TLS with a device certificate from ``voipsec ca issue`` and calls carol (not
registered yet: 480) with an SRTP offer. ``voipsec devices list --format json`` then
shows the three devices as the policy saw them, baresip's with the SRTP suite its
INVITE offered, and ``voipsec devices report --format json`` grades them (advisories
with CVSS, certificate, digest, SRTP).

The same server restricts a User-Agent no fingerprint matches
(``endpoints.unknown_user_agent = "restrict"``: the SIPp call scenarios' own
``voipsec-test-uac``, which none of the devices above sends) and has a trunk (prefix
"+", a SIPp UAS behind a stunnel server hop, as in test_calls_sipp.py): carol's SIPp
phone registers (200, ``restricted``), then calls bob (a registered SIPp UAS: answered),
112 (the trunk: answered, alerted) and a national number (403 whose Warning SIPp
checks), each with its CDR row; carol's row has the SRTP suite of SIPp's offers.

Per class of service (issue 18 item 3): ``[endpoints.classes.premium-rate] md5_digest =
"refuse"`` and dave in that class. gxp's MD5 REGISTER only warns (global policy); dave's
gets 403 whose Warning names MD5 and the fix (the class read through the running call
shell's class table), and no binding.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.peers.baresip import Baresip, account_line, free_sip_ports
from tests.peers.proc import free_port, wait_for
from tests.peers.sipp import SippProcess, SippResult, run_sipp, start_sipp, write_csv
from tests.peers.stunnel import stunnel_client, stunnel_server
from tests.peers.voipsec import VoipsecServer, prepare, serving, voipsec

pytestmark = pytest.mark.peers

SIPP = Path(__file__).resolve().parents[1] / "data" / "sipp"
BENCH = Path(__file__).resolve().parents[2] / "bench" / "sipp"
GXP = ("gxp", "gxp-secret-1")
ALICE = ("alice", "alice-secret-1")
CAROL = ("carol", "carol-secret-1")
BOB = ("bob", "bob-secret-22")
DAVE = ("dave", "dave-secret-1")
#: What bench/sipp/call_uac*.xml send: no fingerprint matches it, so the policy
#: restricts it (unknown_user_agent = "restrict").
UNKNOWN = "voipsec-test-uac"
NATIONAL = ("02071234567", "+442071234567")  # country code 44 is the config default
TRUNK_DOMAIN = "trunk.test"
CALL_MS = 300
SIPP_TIMEOUT = 30.0
VULNERABLE = "Grandstream GXP1625 1.0.2.25"
FIXED = "Grandstream GXP1625 1.0.7.81"
DEADLINE = 20.0


@pytest.fixture(scope="module")
def trunk_port() -> int:
    """The trunk's TLS port: a stunnel server hop listens there only while the test of
    restricted calls runs (nothing else routes to the trunk)."""
    return free_port()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, trunk_port: int) -> Iterator[VoipsecServer]:
    prepared = prepare(
        tmp_path_factory.mktemp("devices") / "data",
        users=[GXP, ALICE, CAROL, BOB, DAVE],
        settings=[
            ("auth.algorithms", '["MD5"]'),
            ("endpoints.advisory", '"refuse"'),
            ("endpoints.unknown_user_agent", '"restrict"'),
        ],
    )
    # `config set` edits keys, not arrays of tables: the trunk is appended, then checked.
    with (prepared.data_dir / "voipsec.toml").open("a", encoding="utf-8") as handle:
        handle.write(
            f'\n[[trunks]]\nname = "carrier"\naddress = "tls:127.0.0.1:{trunk_port}"\n'
            f'domain = "{TRUNK_DOMAIN}"\nprefixes = ["+"]\n'
            '\n[endpoints.classes.premium-rate]\nmd5_digest = "refuse"\n'
        )
    voipsec("user", "class", DAVE[0], "premium-rate", data_dir=prepared.data_dir)
    voipsec("config", "get", "sip.domain", data_dir=prepared.data_dir)
    with serving(prepared) as running:
        yield running


def _sipp_register(
    server: VoipsecServer,
    workdir: Path,
    scenario: str,
    user_agent: str,
    account: tuple[str, str] = GXP,
) -> int:
    workdir.mkdir(parents=True, exist_ok=True)
    csv = write_csv(workdir / "users.csv", [(*account, "localhost", user_agent)])
    hop = free_port()
    with stunnel_client(hop, server.host, server.port, server.ca, workdir):
        result = run_sipp(
            SIPP / scenario,
            f"127.0.0.1:{hop}",
            workdir=workdir / "sipp",
            inf_csv=csv,
            calls=1,
            transport="t1",
            extra=["-auth_uri", "localhost"],
        )
    assert (result.successful, result.failed) == (1, 0), result.error_tail()
    return result.returncode


def _devices(server: VoipsecServer) -> list[dict[str, Any]]:
    out = voipsec("devices", "list", "--format", "json", data_dir=server.data_dir).stdout
    return list(json.loads(out))


@pytest.fixture(scope="module")
def registered(
    server: VoipsecServer, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, dict[str, Any]]:
    """Each peer registered once; the inventory's rows by User-Agent start."""
    work = tmp_path_factory.mktemp("peers")
    _sipp_register(server, work / "refused", "register_device_refused.xml", VULNERABLE)
    _sipp_register(server, work / "fixed", "register_device_ok.xml", FIXED)
    certs = work / "certs"
    voipsec("ca", "issue", ALICE[0], "--out", str(certs), data_dir=server.data_dir)
    pem = certs / "alice.pem"
    pem.write_bytes((certs / "alice.crt").read_bytes() + (certs / "alice.key").read_bytes())
    sip_port, ctrl_port = free_sip_ports()
    with Baresip(
        work / "baresip",
        account_line=account_line(*ALICE, server_port=server.port, extra="mediaenc=srtp-mand"),
        ca_file=server.ca,
        sip_port=sip_port,
        ctrl_port=ctrl_port,
        cert_file=pem,
    ) as ua:
        event = ua.wait_event("REGISTER_OK", "REGISTER_FAIL", deadline=DEADLINE)
        assert event["type"] == "REGISTER_OK", (event, ua.log_text()[-3000:])
        # A call to carol, not registered yet (480): its INVITE's SRTP offer is what
        # the inventory records for alice's phone.
        ua.send("dial", f"sip:{CAROL[0]}@localhost")
        closed = ua.wait_event("CALL_CLOSED", deadline=DEADLINE)
        assert "480" in str(closed["param"]), (closed, ua.log_text()[-3000:])
        found: list[dict[str, Any]] = []

        def three() -> bool:
            found[:] = _devices(server)
            return len(found) == 3 and any(r["srtp_suites"] for r in found)

        wait_for(three, deadline=DEADLINE, what="three devices, alice's with its SRTP offer")
    return {row["user_agent"].split(" (")[0]: row for row in found}


def test_devices_vulnerable_firmware_refused_and_listed(
    server: VoipsecServer, registered: dict[str, dict[str, Any]]
) -> None:
    row = registered[VULNERABLE]
    assert (row["user"], row["aor"], row["status"]) == ("gxp", "gxp@localhost", "refused")
    assert (row["vendor"], row["model"], row["version"]) == ("Grandstream", "GXP1625", "1.0.2.25")
    assert row["reasons"][:2] == [
        "firmware 1.0.2.25 affected by CVE-2026-2329; upgrade to 1.0.7.81",
        "firmware 1.0.2.25 affected by CVE-2020-5738; upgrade past 1.0.4.152",
    ]
    assert (row["transport"], row["tls_version"], row["digest_algorithm"]) == (
        "tls",
        "TLSv1.3",
        "MD5",
    )
    assert (row["cert_subject"], row["cert_expiry"]) == ("", None)
    # No binding from the refused REGISTER; the fixed firmware's one only.
    assert len(server.bindings("gxp")) == 1


def test_devices_fixed_firmware_registered_and_listed(
    registered: dict[str, dict[str, Any]],
) -> None:
    row = registered[FIXED]
    assert (row["user"], row["vendor"], row["model"], row["version"]) == (
        "gxp",
        "Grandstream",
        "GXP1625",
        "1.0.7.81",
    )
    assert (row["status"], row["reasons"]) == ("warn", ["MD5 digest; configure SHA-256 (RFC 8760)"])
    assert (row["tls_version"], row["digest_algorithm"], row["registrations"]) == (
        "TLSv1.3",
        "MD5",
        1,
    )


def test_devices_baresip_with_certificate_listed(
    server: VoipsecServer, registered: dict[str, dict[str, Any]]
) -> None:
    row = registered["baresip v1.0.0"]
    assert (row["user"], row["vendor"], row["model"], row["version"]) == (
        "alice",
        "baresip",
        "baresip",
        "1.0.0",
    )
    assert (row["transport"], row["tls_version"], row["digest_algorithm"]) == (
        "tls",
        "TLSv1.3",
        "MD5",
    )
    assert row["tls_cipher"].startswith("TLS_")
    assert "CN=alice" in row["cert_subject"] or "commonName=alice" in row["cert_subject"]
    assert row["cert_serial"] != ""
    assert isinstance(row["cert_expiry"], float)
    assert row["status"] == "warn"
    # The suite of its INVITE's offer (mediaenc=srtp-mand: RTP/SAVP with a=crypto).
    assert row["srtp_suites"] == "AES_CM_128_HMAC_SHA1_80"
    shown = json.loads(voipsec("devices", "show", str(row["id"]), data_dir=server.data_dir).stdout)
    # baresip's de-REGISTER when it stops (after the fixture's snapshot) may land before
    # this read: it updates last_seen and the count, nothing else.
    moving = ("last_seen", "registrations")
    assert {k: v for k, v in shown.items() if k not in moving} == {
        k: v for k, v in row.items() if k not in moving
    }


def test_devices_policy_alerts_stored_and_refusal_logged(
    server: VoipsecServer, registered: dict[str, dict[str, Any]]
) -> None:
    found: list[str] = []

    def three_alerts() -> bool:
        out = voipsec("alerts", "list", data_dir=server.data_dir).stdout
        # The registered devices' alerts (the restricted phones' are another test's).
        found[:] = [
            line
            for line in out.splitlines()
            if "  endpoint_policy  " in line and (": gxp: " in line or ": alice: " in line)
        ]
        return len(found) == 3

    wait_for(three_alerts, deadline=DEADLINE, what="three endpoint_policy alerts")
    refused = [line for line in found if "device policy: refused" in line]
    assert len(refused) == 1
    assert refused[0].endswith(
        "  endpoint_policy  127.0.0.1  device policy: refused: gxp: Grandstream GXP1625 "
        "1.0.2.25: firmware 1.0.2.25 affected by CVE-2026-2329; upgrade to 1.0.7.81; "
        "firmware 1.0.2.25 affected by CVE-2020-5738; upgrade past 1.0.4.152; MD5 digest; "
        "configure SHA-256 (RFC 8760); refused"
    )
    assert "REGISTER of gxp from tls:127.0.0.1:" in server.log_text()


def test_devices_report_grades_real_registrations(
    server: VoipsecServer, registered: dict[str, dict[str, Any]]
) -> None:
    out = voipsec("devices", "report", "--format", "json", data_dir=server.data_dir).stdout
    # The registered devices of this part (the restricted phones are another test's).
    rows = [r for r in json.loads(out) if r["user"] in ("gxp", "alice")]
    assert [(r["severity"], r["user"], r["version"], r["certificate"]) for r in rows] == [
        ("high", "gxp", "1.0.2.25", "none"),
        ("medium", "alice", "1.0.0", "ok"),
        ("medium", "gxp", "1.0.7.81", "none"),
    ]
    vulnerable, alice, fixed = rows
    assert [(a["id"], a["cvss"], a["kev"], a["fixed"]) for a in vulnerable["advisories"]] == [
        ("CVE-2026-2329", 9.3, False, "1.0.7.81"),
        ("CVE-2020-5738", 8.8, False, None),
    ]
    assert vulnerable["status"] == "refused"
    assert vulnerable["actions"] == [
        "upgrade to 1.0.7.81",
        "upgrade past 1.0.4.152",
        "switch the phone to SHA-256 digest (RFC 8760)",
    ]
    assert alice["cert_serial"] == registered["baresip v1.0.0"]["cert_serial"]
    # SRTP offered (alice's call) or not seen (the SIPp phones only registered): no finding.
    assert [r["srtp_suites"] for r in rows] == ["", "AES_CM_128_HMAC_SHA1_80", ""]
    assert (alice["tls_version"], fixed["firmware"]) == ("TLSv1.3", "up to date")
    assert alice["actions"] == fixed["actions"] == ["switch the phone to SHA-256 digest (RFC 8760)"]


# -- a restricted device's calls (issue 18 `restrict`) ----------------------------------


def _listening(port: int) -> bool:
    """True when something listens on TCP 127.0.0.1:port (read from /proc, so that no
    probe connection reaches the listener)."""
    wanted = f"0100007F:{port:04X}"
    with open("/proc/net/tcp", encoding="ascii") as handle:
        for line in handle.readlines()[1:]:
            parts = line.split()
            if parts[1] == wanted and parts[3] == "0A":  # 0A: LISTEN
                return True
    return False


@contextlib.contextmanager
def _callees(server: VoipsecServer, work: Path, trunk_port: int) -> Iterator[list[SippProcess]]:
    """bob registered from a SIPp UAS over TLS, and a SIPp UAS as the trunk behind a
    stunnel server hop: each answers one call (bench/sipp/call_uas_answer.xml)."""
    hop, bob_port, trunk_sipp = free_port(), free_port(), free_port()
    inf = write_csv(work / "bob.csv", [(*BOB, "localhost", "1")])
    tls = server.data_dir / "tls"
    with (
        stunnel_client(hop, server.host, server.port, server.ca, work / "stunnel-bob"),
        start_sipp(
            BENCH / "call_uas_register.xml",
            f"127.0.0.1:{hop}",
            workdir=work / "sipp-bob",
            inf_csv=inf,
            local_port=bob_port,
            ooc_scenario=BENCH / "call_uas_answer.xml",
            keys={"uas_contact": f"sip:bob@127.0.0.1:{bob_port};transport=tls"},
            extra=["-auth_uri", "localhost"],
            call_length_ms=CALL_MS,
            timeout=SIPP_TIMEOUT,
        ) as bob,
        start_sipp(
            BENCH / "call_uas_answer.xml",
            "",
            workdir=work / "sipp-trunk",
            local_port=trunk_sipp,
            keys={"uas_contact": f"sip:carrier@127.0.0.1:{trunk_port};transport=tls"},
            call_length_ms=CALL_MS,
            timeout=SIPP_TIMEOUT,
        ) as trunk,
    ):
        wait_for(
            lambda: not trunk.running() or _listening(trunk_sipp),
            deadline=DEADLINE,
            what="the SIPp trunk listening",
        )
        assert trunk.running(), trunk.wait(0).error_tail()
        with stunnel_server(
            trunk_port, trunk_sipp, tls / "server.crt", tls / "server.key", work / "stunnel-trunk"
        ):
            server.wait_bindings(BOB[0], 1)
            yield [bob, trunk]


def _carol_calls(
    server: VoipsecServer, work: Path, scenario: Path, dialled: str, name: str
) -> SippResult:
    """carol's SIPp phone (User-Agent voipsec-test-uac) calls ``dialled`` once over TLS."""
    hop = free_port()
    inf = write_csv(work / f"{name}.csv", [(*CAROL, "localhost", dialled)])
    with stunnel_client(hop, server.host, server.port, server.ca, work / f"stunnel-{name}"):
        result = run_sipp(
            scenario,
            f"127.0.0.1:{hop}",
            workdir=work / f"sipp-{name}",
            inf_csv=inf,
            calls=1,
            extra=["-auth_uri", f"{dialled}@localhost"],
            call_length_ms=CALL_MS,
            timeout=SIPP_TIMEOUT,
        )
    assert (result.successful, result.failed) == (1, 0), (
        f"{name}: {result.error_tail()}\n--- voipsec\n{server.log_text()[-3000:]}"
    )
    return result


def test_devices_restricted_phone_calls_internal_users_and_112_only(
    server: VoipsecServer, trunk_port: int, tmp_path: Path
) -> None:
    _sipp_register(server, tmp_path / "carol", "register_device_ok.xml", UNKNOWN, CAROL)
    carol: list[dict[str, Any]] = []

    def listed() -> bool:
        carol[:] = [r for r in _devices(server) if r["user"] == "carol"]
        return bool(carol)

    wait_for(listed, deadline=DEADLINE, what="carol's phone in the inventory")
    assert [(r["status"], r["user_agent"]) for r in carol] == [("restricted", UNKNOWN)]
    with _callees(server, tmp_path, trunk_port) as (bob, trunk):
        _carol_calls(server, tmp_path, BENCH / "call_uac.xml", BOB[0], "internal")
        _carol_calls(server, tmp_path, BENCH / "call_uac.xml", "112", "emergency")
        # The Warning naming the reason and what the device may call: SIPp checks it.
        _carol_calls(server, tmp_path, SIPP / "call_device_restricted.xml", NATIONAL[0], "national")
        for who, callee in (("bob", bob), ("trunk", trunk)):
            done = callee.wait(SIPP_TIMEOUT)
            assert (done.successful, done.failed) == (1, 0), f"{who}: {done.error_tail()}"
    rows: list[dict[str, Any]] = []

    def three_rows() -> bool:
        out = voipsec("cdr", "list", "--format", "json", data_dir=server.data_dir).stdout
        rows[:] = [r for r in json.loads(out) if r["user"] == "carol" and r["disposition"]]
        return len(rows) == 3

    wait_for(three_rows, deadline=DEADLINE, what="carol's three CDR rows")
    found = sorted(
        (r["kind"], r["callee"], r["trunk"], r["disposition"], r["status"], r["reason"])
        for r in rows
    )
    assert found == [
        ("emergency", "112", "carrier", "answered", 200, "normal clearing"),
        ("internal", "bob", "", "answered", 200, "normal clearing"),
        ("national", NATIONAL[1], "", "rejected", 403, "Device Restricted"),
    ]
    alerts: list[str] = []

    def alerted() -> bool:
        out = voipsec("alerts", "list", data_dir=server.data_dir).stdout
        alerts[:] = [line for line in out.splitlines() if "  emergency_call  " in line]
        return bool(alerts)

    wait_for(alerted, deadline=DEADLINE, what="the emergency_call alert")
    # The SRTP suite SIPp's offers name (bench/sipp/call_uac.xml), on carol's row.
    assert [r["srtp_suites"] for r in _devices(server) if r["user"] == "carol"] == [
        "AES_CM_128_HMAC_SHA1_80"
    ]
    (line,) = alerts
    assert "emergency call: carol: dialled 112 from 127.0.0.1:" in line, line
    assert line.endswith("; routed to trunk carrier"), line
    assert (
        "carol -> 02071234567: device restricted (unknown User-Agent voipsec-test-uac; "
        "add a fingerprint to endpoints/fingerprints.yaml)" in server.log_text()
    )


def test_devices_class_override_refuses_md5_for_its_users(
    server: VoipsecServer, registered: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    # gxp's class is the default: its MD5 REGISTER only warned (the fixed-firmware test).
    assert registered[FIXED]["status"] == "warn"
    _sipp_register(server, tmp_path / "dave", "register_device_md5_refused.xml", FIXED, DAVE)
    assert server.bindings("dave") == []

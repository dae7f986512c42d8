"""SIP trunks with real SIPp peers over TLS: inbound calls by DID, registration to a trunk.

Outbound calls to a trunk are in test_calls_sipp.py. Here the trunk is the other way
round: (1) a SIPp "carrier" whose TLS connection comes from the trunk's source address
delivers calls to a DID, which voipsec maps to a registered user without asking the
carrier for credentials (a trunk is known by its source, never by From); the same
INVITE from any other address is challenged. (2) voipsec registers to a trunk whose
registrar (SIPp behind a stunnel server hop) challenges it and checks the digest with
SIPp's own verifyauth.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.peers.proc import free_port, wait_for
from tests.peers.sipp import SippProcess, SippResult, run_sipp, start_sipp, write_csv
from tests.peers.stunnel import stunnel_client, stunnel_server
from tests.peers.voipsec import VoipsecServer, prepare, serving, voipsec
from voipsec.storage import Store

pytestmark = pytest.mark.peers

BENCH = Path(__file__).resolve().parents[2] / "bench" / "sipp"
BOB = ("bob", "bob-secret-22")
DID = "+442071234567"
CARRIER = "127.0.0.7"
CALLS = 3


def _trunk_toml(port: int, *, registration: bool = False) -> str:
    lines = [
        "\n[[trunks]]",
        'name = "carrier"',
        f'address = "tls:127.0.0.1:{port}"',
        'domain = "trunk.test"',
        'prefixes = ["+"]',
        f'sources = ["{CARRIER}/32"]',
        f'dids = {{ "{DID}" = "bob" }}',
    ]
    if registration:
        lines += ['username = "acct"', 'password = "trunk-secret-1"', "registration = true"]
    return "\n".join(lines) + "\n"


def _server(tmp_path: Path, trunk_port: int, *, registration: bool = False) -> VoipsecServer:
    prepared = prepare(tmp_path / "data", settings=[("auth.algorithms", '["MD5"]')])
    config = prepared.data_dir / "voipsec.toml"
    with config.open("a", encoding="utf-8") as handle:
        handle.write(_trunk_toml(trunk_port, registration=registration))
    config.chmod(0o600)  # it holds a trunk password: serve refuses it otherwise
    voipsec("config", "get", "sip.domain", data_dir=prepared.data_dir)  # validates
    store = Store(prepared.data_dir / "voipsec.db")
    try:
        store.add_user(*BOB, "localhost")
    finally:
        store.close()
    return prepared


@contextlib.contextmanager
def _registered_bob(server: VoipsecServer, tmp_path: Path) -> Iterator[SippProcess]:
    hop, port = free_port(), free_port()
    contact = f"sip:bob@127.0.0.1:{port};transport=tls"
    inf = write_csv(tmp_path / "callee.csv", [(*BOB, "localhost", str(CALLS))])
    with (
        stunnel_client(hop, server.host, server.port, server.ca, tmp_path / "stunnel-bob"),
        start_sipp(
            BENCH / "call_uas_register.xml",
            f"127.0.0.1:{hop}",
            workdir=tmp_path / "sipp-bob",
            inf_csv=inf,
            calls=1,
            local_port=port,
            ooc_scenario=BENCH / "call_uas_answer.xml",
            keys={"uas_contact": contact},
            extra=["-auth_uri", "localhost"],
            timeout=45,
            trace_logs=True,
        ) as bob,
    ):
        server.wait_bindings("bob", 1)
        yield bob


def _carrier_calls(server: VoipsecServer, tmp_path: Path, source: str, name: str) -> SippResult:
    hop = free_port()
    inf = write_csv(tmp_path / f"{name}.csv", [(DID, "localhost")])
    with stunnel_client(
        hop, server.host, server.port, server.ca, tmp_path / f"stunnel-{name}", local=source
    ):
        return run_sipp(
            BENCH / "trunk_inbound_uac.xml",
            f"127.0.0.1:{hop}",
            workdir=tmp_path / f"sipp-{name}",
            inf_csv=inf,
            rate=5,
            calls=CALLS,
            call_length_ms=300,
            timeout=45,
        )


@pytest.fixture(scope="module")
def did_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VoipsecServer]:
    """The carrier trunk (sources 127.0.0.7) and its DID, for the two inbound tests: the
    rogue of the second comes from 127.0.0.8 and looks for rows of its own address."""
    prepared = _server(tmp_path_factory.mktemp("did"), free_port())
    with serving(prepared) as server:
        yield server


def test_inbound_calls_from_the_trunk_reach_the_did_user(
    did_server: VoipsecServer, tmp_path: Path
) -> None:
    server = did_server
    with _registered_bob(server, tmp_path) as bob:
        result = _carrier_calls(server, tmp_path, CARRIER, "carrier")
        assert (result.successful, result.failed) == (CALLS, 0), result.error_tail()
        answered = bob.wait(45)
        assert (answered.successful, answered.failed) == (1, 0), answered.error_tail()
        invites = answered.log_lines("INVITE ")
        assert len(invites) == CALLS
        # bob sees voipsec's leg: his own URI and the caller's number (caller ID), never
        # the carrier's host or address.
        assert all("ruri=sip:bob@127.0.0.1:" in line for line in invites), invites
        assert all("from= <sip:+15551230000@localhost>;tag=" in line for line in invites)
        assert not any("carrier.example" in line or CARRIER in line for line in invites)
        rows = json.loads(
            voipsec("cdr", "list", "--format", "json", data_dir=server.data_dir).stdout
        )
    assert [
        (r["trunk"], r["user"], r["callee_dialled"], r["callee"], r["disposition"], r["hangup_by"])
        for r in rows
    ] == [("carrier", "", DID, "bob", "answered", "caller")] * CALLS
    assert all(str(r["source"]).startswith(f"{CARRIER}:") for r in rows)


def test_the_same_invite_from_another_address_is_challenged(
    did_server: VoipsecServer, tmp_path: Path
) -> None:
    server = did_server
    hop = free_port()
    inf = write_csv(tmp_path / "rogue.csv", [(DID, "localhost")])
    with stunnel_client(
        hop, server.host, server.port, server.ca, tmp_path / "stunnel-rogue", local="127.0.0.8"
    ):
        result = run_sipp(
            BENCH / "trunk_inbound_uac.xml",
            f"127.0.0.1:{hop}",
            workdir=tmp_path / "sipp-rogue",
            rate=5,
            calls=1,
            inf_csv=inf,
            timeout=10,
            trace_logs=True,
        )
    # The scenario expects a 200 and gets the 407 challenge: an unexpected message.
    assert (result.successful, result.failed) == (0, 1)
    assert "407" in result.error_tail()
    rows = json.loads(voipsec("cdr", "list", "--format", "json", data_dir=server.data_dir).stdout)
    assert [r for r in rows if str(r["source"]).startswith("127.0.0.8:")] == []


def test_voipsec_registers_to_the_trunk_with_its_credentials(tmp_path: Path) -> None:
    tls_port, sipp_port = free_port(), free_port()
    server = _server(tmp_path, tls_port, registration=True)
    tls = server.data_dir / "tls"
    with (
        start_sipp(
            BENCH / "trunk_registrar.xml",
            "",
            workdir=tmp_path / "sipp-registrar",
            calls=1,
            local_port=sipp_port,
            keys={"account": "acct", "secret": "trunk-secret-1"},
            timeout=30,
            trace_logs=True,
        ) as registrar,
        stunnel_server(
            tls_port, sipp_port, tls / "server.crt", tls / "server.key", tmp_path / "stunnel-reg"
        ),
        serving(server),
    ):
        wait_for(
            lambda: "registered to trunk carrier" in server.log_text(),
            deadline=20,
            what="voipsec's registration to the trunk",
        )
        result = registrar.wait(20)
    assert result.log_lines("REGISTER ") == ["REGISTER auth_valid=true"]
    assert (result.successful, result.failed) == (1, 0), result.error_tail()
    assert "trunk-secret-1" not in server.log_text()

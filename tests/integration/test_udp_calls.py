"""Calls over UDP when the network loses a 2xx or an ACK (issue 16, items 7 and 9).

Real SIPp peers over UDP, with a lossy hop (tests/peers/udpdrop.py) between one of
them and voipsec's UDP listener:

* the caller's hop loses voipsec's first 200 OK to the INVITE: voipsec retransmits it
  (RFC 3261 §13.3.1.4, T1 doubling) until SIPp's ACK arrives, and the call completes;
* the callee's hop loses the callee's first 200 OK and voipsec's first ACK: the callee
  (SIPp, ``retrans="500"``) retransmits its 200 and voipsec ACKs every copy it gets
  (§13.2.2.4), so the call completes;
* a caller that never ACKs voipsec's 2xx (a lost path, or a caller holding a call
  half open) has its call ended by voipsec after 64*T1 with a BYE to both sides, CDR
  reason "no ACK";
* /metrics exports the UDP listener's kernel drop counter, the buffer sizes the
  kernel granted (``sip.udp_buffer``) and the count of 2xx never ACKed.

One voipsec server for the module; each test has a callee user of its own.
"""

from __future__ import annotations

import contextlib
import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.peers.metrics import scrape
from tests.peers.proc import free_port, wait_for
from tests.peers.sipp import SippProcess, SippResult, run_sipp, start_sipp, write_csv
from tests.peers.udpdrop import Drop, forwarding
from tests.peers.voipsec import VoipsecServer, prepare, serving, voipsec
from voipsec.config import DEFAULT_UDP_BUFFER
from voipsec.storage import Store
from voipsec.transport.udp import size_buffers

pytestmark = pytest.mark.peers

BENCH = Path(__file__).resolve().parents[2] / "bench" / "sipp"
DOMAIN = "localhost"
ALICE = ("alice", "alice-secret-1")
CALLEES = {"bob": "bob-secret-22", "carol": "carol-secret-3", "dave": "dave-secret-44"}
METRICS_TOKEN = "metrics-token-udp-16"
#: How long an answered call lasts before the caller hangs up (SIPp ``-d``).
CALL_MS = 300
SIPP_TIMEOUT = 30.0
#: The callee's third 200 comes 1.5 s after its first (SIPp: 500 ms doubling); the
#: caller hangs up later, or its BYE would overtake the ACK the callee waits for.
CALL_MS_ACK_LOST = 3000
#: The no-ACK call lasts 64*T1 = 32 s before voipsec gives up: its peers wait longer.
NO_ACK_TIMEOUT = 50.0
UNACKED = "voipsec_sip_2xx_unacknowledged"


@pytest.fixture(scope="module")
def udp_server(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[VoipsecServer, int, int]]:
    """voipsec with a TLS and a UDP listener and /metrics: (server, UDP port, metrics port)."""
    tmp = tmp_path_factory.mktemp("udp-calls")
    tls, udp, metrics = free_port(), free_port(kind=socket.SOCK_DGRAM), free_port()
    prepared = prepare(
        tmp / "data",
        port=tls,
        settings=[
            ("auth.algorithms", '["MD5"]'),  # SIPp 3.6.1 computes MD5 only
            ("sip.listen", f'["tls:127.0.0.1:{tls}", "udp:127.0.0.1:{udp}"]'),
            ("metrics.listen", f'"127.0.0.1:{metrics}"'),
            ("metrics.token", json.dumps(METRICS_TOKEN)),
            # SIPp sends no RTP: the media timeout must not end the no-ACK call first.
            ("media.timeout", "120.0"),
        ],
    )
    store = Store(prepared.data_dir / "voipsec.db")
    try:
        store.add_user(*ALICE, DOMAIN)
        for user, password in CALLEES.items():
            store.add_user(user, password, DOMAIN)
    finally:
        store.close()
    with serving(prepared) as server:
        yield server, udp, metrics


# -- peers ------------------------------------------------------------------------------


@contextlib.contextmanager
def _callee(
    server: VoipsecServer,
    tmp: Path,
    user: str,
    *,
    target: str,
    contact_port: int,
    port: int,
    timeout: float = SIPP_TIMEOUT,
) -> Iterator[SippProcess]:
    """``user`` as a SIPp registered over UDP at ``target``, answering one call with
    call_uas_answer_udp.xml; its Contact names ``contact_port``."""
    inf = write_csv(tmp / f"{user}.csv", [(user, CALLEES[user], DOMAIN, "1")])
    with start_sipp(
        BENCH / "call_uas_register.xml",
        target,
        workdir=tmp / f"sipp-{user}",
        inf_csv=inf,
        calls=1,
        transport="u1",
        local_port=port,
        ooc_scenario=BENCH / "call_uas_answer_udp.xml",
        keys={"uas_contact": f"sip:{user}@127.0.0.1:{contact_port}"},
        extra=["-auth_uri", DOMAIN],
        call_length_ms=CALL_MS,
        timeout=timeout,
        trace_logs=True,
    ) as callee:
        server.wait_bindings(user, 1)
        yield callee


def _call(
    tmp: Path,
    target: str,
    callee: str,
    *,
    scenario: str = "call_uac.xml",
    timeout: float = SIPP_TIMEOUT,
    call_ms: int = CALL_MS,
) -> SippResult:
    """alice calls ``callee`` once over UDP through ``target``."""
    inf = write_csv(tmp / "alice.csv", [(*ALICE, DOMAIN, callee)])
    return run_sipp(
        BENCH / scenario,
        target,
        workdir=tmp / "sipp-alice",
        inf_csv=inf,
        calls=1,
        transport="u1",
        extra=["-auth_uri", f"{callee}@{DOMAIN}"],
        call_length_ms=call_ms,
        timeout=timeout,
        trace_logs=True,
    )


def _assert_clean(result: SippResult, who: str, server: VoipsecServer) -> None:
    detail = f"{who}:\n{result.error_tail()}\n--- voipsec\n{server.log_text()[-3000:]}"
    assert (result.successful, result.failed, result.returncode) == (1, 0, 0), detail
    assert result.error_events() == [], detail


def _cdr(server: VoipsecServer, call_id: str) -> dict[str, object]:
    """The closed CDR of the A-leg ``call_id``."""
    found: list[dict[str, object]] = []

    def closed() -> bool:
        rows = json.loads(
            voipsec("cdr", "list", "--format", "json", data_dir=server.data_dir).stdout
        )
        found[:] = [row for row in rows if row["call_id"] == call_id and row["disposition"]]
        return bool(found)

    wait_for(closed, deadline=15, what=f"the CDR of {call_id}")
    return found[0]


def _call_id(result: SippResult) -> str:
    (line,) = result.log_lines("ANSWERED ")
    return line.split()[1].removeprefix("call_id=")


def _summary(row: dict[str, object]) -> dict[str, object]:
    keys = ("callee", "transport", "disposition", "status", "reason", "hangup_by")
    return {key: row[key] for key in keys}


# -- tests ------------------------------------------------------------------------------


def test_udp_call_completes_when_voipsecs_first_200_is_lost(
    udp_server: tuple[VoipsecServer, int, int], tmp_path: Path
) -> None:
    """§13.3.1.4: voipsec's 200 to the caller is lost once; its retransmission (T1
    later) reaches SIPp, whose ACK stops the retransmissions."""
    server, udp, _ = udp_server
    lost_200 = Drop("to_peer", b"SIP/2.0 200", b"INVITE")
    port = free_port(kind=socket.SOCK_DGRAM)
    with (
        _callee(server, tmp_path, "bob", target=f"127.0.0.1:{udp}", contact_port=port, port=port),
        forwarding(("127.0.0.1", udp), lost_200) as hop,
    ):
        caller = _call(tmp_path, f"127.0.0.1:{hop.near_port}", "bob")
    _assert_clean(caller, "caller", server)
    assert lost_200.dropped == 1
    assert lost_200.seen >= 2  # the lost one, then voipsec's retransmission
    assert _summary(_cdr(server, _call_id(caller))) == {
        "callee": "bob",
        "transport": "udp",
        "disposition": "answered",
        "status": 200,
        "reason": "normal clearing",
        "hangup_by": "caller",
    }


def test_udp_call_completes_when_the_callees_200_and_voipsecs_ack_are_lost(
    udp_server: tuple[VoipsecServer, int, int], tmp_path: Path
) -> None:
    """§13.2.2.4: the callee's first 200 and voipsec's first ACK are lost; the callee
    retransmits its 200, and voipsec ACKs each copy it receives, so a second ACK
    reaches the callee."""
    server, udp, _ = udp_server
    lost_200 = Drop("to_voipsec", b"SIP/2.0 200", b"INVITE")
    lost_ack = Drop("to_peer", b"ACK ", b"ACK")
    port = free_port(kind=socket.SOCK_DGRAM)
    with (
        forwarding(("127.0.0.1", udp), lost_200, lost_ack) as hop,
        _callee(
            server,
            tmp_path,
            "carol",
            target=f"127.0.0.1:{hop.near_port}",
            contact_port=hop.far_port,
            port=port,
        ) as callee_run,
    ):
        caller = _call(tmp_path, f"127.0.0.1:{udp}", "carol", call_ms=CALL_MS_ACK_LOST)
        callee = callee_run.wait(SIPP_TIMEOUT)
    _assert_clean(caller, "caller", server)
    _assert_clean(callee, "callee", server)
    assert callee.log_lines("DONE answered ") != [], callee.error_tail()
    assert (lost_200.dropped, lost_ack.dropped) == (1, 1)
    assert lost_200.seen >= 3  # lost, answered by the lost ACK, answered again
    assert lost_ack.seen >= 2  # one ACK per 200 voipsec received
    row = _cdr(server, _call_id(caller))
    assert (row["disposition"], row["status"], row["hangup_by"]) == ("answered", 200, "caller")


def test_udp_2xx_never_acked_ends_the_call_with_bye_after_64_t1(
    udp_server: tuple[VoipsecServer, int, int], tmp_path: Path
) -> None:
    """Attack: a caller that never ACKs the 200 does not hold the call (and its relay
    ports and fraud budget) open: after 64*T1 of retransmissions voipsec sends BYE to
    both legs and closes the CDR with reason "no ACK"."""
    server, udp, metrics = udp_server
    port = free_port(kind=socket.SOCK_DGRAM)
    before = _gauge(server, metrics, UNACKED)
    with _callee(
        server,
        tmp_path,
        "dave",
        target=f"127.0.0.1:{udp}",
        contact_port=port,
        port=port,
        timeout=NO_ACK_TIMEOUT,
    ) as callee_run:
        caller = _call(
            tmp_path,
            f"127.0.0.1:{udp}",
            "dave",
            scenario="call_uac_no_ack.xml",
            timeout=NO_ACK_TIMEOUT,
        )
        callee = callee_run.wait(NO_ACK_TIMEOUT)
    _assert_clean(caller, "caller", server)
    _assert_clean(callee, "callee", server)
    (bye,) = caller.log_lines("BYE ")
    assert bye == f"BYE call_id={_call_id(caller)}"
    assert _summary(_cdr(server, _call_id(caller))) == {
        "callee": "dave",
        "transport": "udp",
        "disposition": "answered",
        "status": 200,
        "reason": "no ACK",
        "hangup_by": "system",
    }
    # The gauges are refreshed once a second.
    wait_for(
        lambda: _gauge(server, metrics, UNACKED) == before + 1,
        deadline=10,
        what="the unacknowledged 2xx in /metrics",
    )


def test_udp_metrics_export_kernel_drops_and_granted_buffers(
    udp_server: tuple[VoipsecServer, int, int],
) -> None:
    """/metrics shows the UDP listener's drop counter (none on a quiet loopback) and
    the buffers the kernel granted for sip.udp_buffer (what it grants any socket
    asking as much: twice the bytes on Linux, or twice net.core.rmem_max)."""
    server, _, metrics = udp_server
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        granted = size_buffers(probe, DEFAULT_UDP_BUFFER)
    wait_for(
        lambda: _gauge(server, metrics, "voipsec_sip_udp_receive_buffer_bytes") > 0,
        deadline=10,
        what="the UDP buffer gauges",
    )
    samples = scrape(metrics, server.ca, METRICS_TOKEN)
    assert samples[("voipsec_sip_udp_receive_buffer_bytes", ())] == granted.receive
    assert samples[("voipsec_sip_udp_send_buffer_bytes", ())] == granted.send
    assert samples[("voipsec_sip_udp_receive_drops", ())] == 0.0
    assert "UDP buffers granted receive" in server.log_text()


def _gauge(server: VoipsecServer, metrics: int, name: str) -> float:
    return scrape(metrics, server.ca, METRICS_TOKEN).get((name, ()), 0.0)

"""Signaling on every core (sip.workers = 2, set explicitly: these run the same way in
both of the suite's process modes): calls and nonces across processes, a worker killed
with SIGKILL mid-call, and no child left behind by ``serve`` (docs/workers.md).

Which worker accepted a connection is read from the log line each worker writes
("signaling worker K holds tls:IP:PORT"); a phone that lands on the wrong worker is
closed and another opened, a bounded number of times (the kernel spreads connections
over the SO_REUSEPORT sockets by a hash of their addresses).
"""

from __future__ import annotations

import json
import os
import re
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import TypeVar

import pytest

from tests.conftest import ALICE, BOB
from tests.integration.test_media import ALICE_PAYLOAD, BOB_PAYLOAD, DEADLINE, Phone
from tests.peers.proc import running, wait_for
from tests.peers.sipclient import TlsSipClient
from tests.peers.voipsec import VOIPSEC, VoipsecServer, prepare, serving, voipsec, worker_holding
from voipsec.sip.digest import client_response, parse_challenge

pytestmark = pytest.mark.peers

#: Connections opened at most to land one on a given worker (each lands on worker k
#: with probability 1/2: 24 misses in a row happen once in 16 million runs).
MAX_ATTEMPTS = 24
LOST_REASON = "signaling worker lost"

T = TypeVar("T")


def _workers_server(data_dir: Path) -> Iterator[VoipsecServer]:
    prepared = prepare(data_dir, users=[ALICE, BOB], settings=[("sip.workers", "2")])
    with serving(prepared) as running:
        yield running


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VoipsecServer]:
    """One server for the calls and the nonce replay: each call test reads only its own
    call's CDR row."""
    yield from _workers_server(tmp_path_factory.mktemp("workers") / "data")


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[VoipsecServer]:
    """A server of the test's own: SIGKILL restarts its worker 1 and it counts every CDR."""
    yield from _workers_server(tmp_path / "data")


def on_worker(
    server: VoipsecServer, worker: int, open_one: Callable[[], T], port: Callable[[T], int]
) -> T:
    """A connection (made by ``open_one``) that worker ``worker`` accepted."""
    for _ in range(MAX_ATTEMPTS):
        candidate = open_one()
        if worker_holding(server, port(candidate)) == worker:
            return candidate
        candidate.close()  # type: ignore[attr-defined]
    raise AssertionError(f"no connection landed on worker {worker} in {MAX_ATTEMPTS} tries")


def phone_on(server: VoipsecServer, worker: int, user: tuple[str, str], payload: bytes) -> Phone:
    return on_worker(
        server, worker, lambda: Phone(server, *user, payload=payload), lambda p: p.port
    )


def child_pid(server: VoipsecServer, *, nth: int = 1) -> int:
    """The pid of signaling worker 1 in its ``nth`` life (the supervisor logs it)."""
    pids: list[int] = []

    def started() -> bool:
        pids[:] = [int(p) for p in re.findall(r"started sip-1 \(pid (\d+)\)", server.log_text())]
        return len(pids) >= nth

    wait_for(started, what=f"sip-1 started {nth} time(s)")
    return pids[nth - 1]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def cdrs(server: VoipsecServer) -> list[dict[str, object]]:
    rows = json.loads(voipsec("cdr", "list", "--format", "json", data_dir=server.data_dir).stdout)
    assert isinstance(rows, list)
    return rows


def call(alice: Phone, bob: Phone) -> str:
    """alice calls bob, who answers; media flows both ways through the relay, alice
    hangs up. Returns the call's (A-leg) Call-ID."""
    answered: list[object] = []
    callee = threading.Thread(target=lambda: answered.append(bob.answer_call()), daemon=True)
    callee.start()
    ok = alice.call("bob")
    callee.join(timeout=DEADLINE)
    assert ok.status == 200, ok
    assert answered, "bob did not get the call"
    for phone in (alice, bob):
        phone.media.start()
    bob.media.wait_received(5)
    alice.media.wait_received(5)
    alice.media.stop_sending()
    bob.media.stop_sending()
    assert set(bob.media.payloads()) == {ALICE_PAYLOAD}
    assert set(alice.media.payloads()) == {BOB_PAYLOAD}
    assert alice.hang_up().status == 200
    assert bob.wait_bye().method == "BYE"
    return ok.call_id


# -- 1: a call between users whose connections live in different processes -------------


@pytest.mark.parametrize("caller_worker", [0, 1])
def test_workers_call_between_connections_of_two_processes(
    server: VoipsecServer, caller_worker: int
) -> None:
    with ExitStack() as stack:
        bob = phone_on(server, 1 - caller_worker, BOB, BOB_PAYLOAD)
        stack.callback(bob.close)
        bob.register()
        alice = phone_on(server, caller_worker, ALICE, ALICE_PAYLOAD)
        stack.callback(alice.close)
        call_id = call(alice, bob)

    def mine() -> list[dict[str, object]]:
        return [r for r in cdrs(server) if r["call_id"] == call_id]

    wait_for(lambda: [r["disposition"] for r in mine()] == ["answered"], what="the CDR")
    (row,) = mine()
    assert (row["caller"], row["user"], row["hangup_by"]) == (
        "sip:alice@localhost",
        "alice",
        "caller",
    )


# -- 2: a nonce issued by one worker, replayed on the other's connection ------------------


def _register_text(client: TlsSipClient, auth: str | None, cseq: int, call_id: str) -> bytes:
    host, port = client.local[0], client.local[1]
    lines = [
        "REGISTER sip:localhost SIP/2.0",
        f"Via: SIP/2.0/TLS {host}:{port};branch=z9hG4bKreplay{cseq}{port};rport",
        "Max-Forwards: 70",
        "From: <sip:alice@localhost>;tag=replay",
        "To: <sip:alice@localhost>",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} REGISTER",
        f"Contact: <sip:alice@{host}:{port};transport=tls>",
        "Expires: 600",
    ]
    if auth is not None:
        lines.append(f"Authorization: {auth}")
    return ("\r\n".join([*lines, "Content-Length: 0", "", ""])).encode()


def _client(server: VoipsecServer) -> TlsSipClient:
    return TlsSipClient(server.host, server.port, server.ca)


def test_workers_nonce_replayed_on_the_other_workers_connection_is_refused(
    server: VoipsecServer,
) -> None:
    with ExitStack() as stack:
        first = on_worker(server, 0, lambda: _client(server), lambda c: c.local[1])
        stack.callback(first.close)
        second = on_worker(server, 1, lambda: _client(server), lambda c: c.local[1])
        stack.callback(second.close)
        first.send(_register_text(first, None, 1, "replay-call"))
        challenge = first.receive()
        assert challenge.status == 401
        params = parse_challenge(challenge.headers.get("www-authenticate") or "")
        auth = client_response(
            username=ALICE[0],
            password=ALICE[1],
            realm=params["realm"],
            nonce=params["nonce"],
            method="REGISTER",
            uri="sip:localhost",
            opaque=params.get("opaque"),
        )
        first.send(_register_text(first, auth, 2, "replay-call"))
        assert first.receive().status == 200
        # The same credentials (same nonce, same nonce-count) from worker 1's connection:
        # handed to worker 0, which issued the nonce and has seen that count.
        second.send(_register_text(second, auth, 3, "replay-call"))
        refused = second.receive()
    assert refused.status == 403, refused
    assert "nonce count replayed" not in refused.to_bytes().decode()  # no detail leaks


# -- 3: a signaling worker killed mid-call ------------------------------------------------


def test_workers_sigkill_mid_call_closes_its_cdr_and_it_comes_back(
    own_server: VoipsecServer,
) -> None:
    server = own_server
    first_pid = child_pid(server)
    with ExitStack() as stack:
        bob = phone_on(server, 0, BOB, BOB_PAYLOAD)
        stack.callback(bob.close)
        bob.register()
        alice = phone_on(server, 1, ALICE, ALICE_PAYLOAD)  # the call lives on worker 1
        stack.callback(alice.close)
        answered: list[object] = []
        callee = threading.Thread(target=lambda: answered.append(bob.answer_call()), daemon=True)
        callee.start()
        assert alice.call("bob").status == 200
        callee.join(timeout=DEADLINE)
        assert answered
        wait_for(lambda: len(cdrs(server)) == 1, what="the open CDR")
        os.kill(first_pid, signal.SIGKILL)
        wait_for(
            lambda: [r["reason"] for r in cdrs(server)] == [LOST_REASON],
            what="the CDR closed with the lost worker's reason",
        )
    (row,) = cdrs(server)
    assert (row["disposition"], row["hangup_by"]) == ("incomplete", "system")
    # Worker 1 is back: a new process that binds and takes calls again.
    second_pid = child_pid(server, nth=2)
    assert second_pid != first_pid and alive(second_pid)
    wait_for(
        lambda: server.log_text().count("signaling worker 1 joined") == 2,
        what="worker 1 to join again",
    )
    with ExitStack() as stack:
        bob = phone_on(server, 1, BOB, BOB_PAYLOAD)
        stack.callback(bob.close)
        bob.register()
        alice = phone_on(server, 0, ALICE, ALICE_PAYLOAD)
        stack.callback(alice.close)
        call(alice, bob)


# -- 4: serve stopped, no child left --------------------------------------------------------


def test_workers_serve_stopped_leaves_no_child(tmp_path: Path) -> None:
    prepared = prepare(tmp_path / "data", settings=[("sip.workers", "2")])
    with serving(prepared) as running:
        pid = child_pid(running)
        assert alive(pid)
        assert running.proc is not None
        proc = running.proc
    assert proc.returncode == 0
    wait_for(lambda: not alive(pid), what="signaling worker 1 to be gone")
    assert not (prepared.data_dir / "run" / "sip.sock").exists()


def test_workers_second_serve_on_the_same_port_fails_loudly(tmp_path: Path) -> None:
    """SO_REUSEPORT is shared only within one serve: another one on the port still fails."""
    first = prepare(tmp_path / "first", settings=[("sip.workers", "2")])
    second = prepare(tmp_path / "second", settings=[("sip.workers", "2")], port=first.port)
    with serving(first):
        with running(
            [*VOIPSEC, "serve", "--dir", str(second.data_dir)], log=tmp_path / "log"
        ) as proc:
            wait_for(lambda: proc.poll() is not None, what="the second serve to fail")
        assert proc.returncode == 1
        text = (tmp_path / "log").read_text()
        assert "voipsec: error: cannot listen: " in text and "Traceback" not in text

"""Global state across signaling workers (sip.workers = 2, set explicitly: these run the
same way in both of the suite's process modes): a ban, a fraud limit, /metrics and an
IDS threshold hold for the server, whichever worker holds the connections
(docs/global-state.md).

Which worker accepted a connection is read from the log line each worker writes
("signaling worker K holds tls:IP:PORT"); a client that lands on the wrong worker is
closed and another opened, a bounded number of times (tests/integration/test_workers.py).
"""

from __future__ import annotations

import contextlib
import json
import ssl
import threading
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from tests.conftest import ALICE, BOB
from tests.integration.test_media import ALICE_PAYLOAD, BOB_PAYLOAD, DEADLINE, Phone
from tests.integration.test_workers import MAX_ATTEMPTS, cdrs
from tests.peers.metrics import scrape
from tests.peers.proc import free_port, wait_for
from tests.peers.sipclient import TlsSipClient
from tests.peers.voipsec import (
    VoipsecServer,
    prepare,
    serving,
    set_zones,
    stored_listing,
    voipsec,
    worker_holding,
)

pytestmark = pytest.mark.peers

#: 127.0.0.1 (the readiness probe, the phones) trusted; every other loopback address is
#: "internet", with a rate limit high enough for a few clients and low enough to flood.
ZONES = (
    '[[zones]]\nname = "lab"\ncidrs = ["127.0.0.1/32"]\ntrust = "trusted"\n\n'
    '[[zones]]\nname = "internet"\ncidrs = ["0.0.0.0/0", "::/0"]\n'
    "rate_requests = 40\nrate_window = 60.0\nrate_ban = 600\n"
)
METRICS_TOKEN = "workers-state-metrics-token-7c2f"
CONCURRENT_RULES = """\
rules:
  - id: test-concurrent
    description: More than 1 call at once
    check: concurrent_calls
    critical: {threshold: 1, action: block}
"""


def _prepare(tmp_path: Path, settings: list[tuple[str, str]] | None = None) -> VoipsecServer:
    prepared = prepare(
        tmp_path / "data", users=[ALICE, BOB], settings=[("sip.workers", "2"), *(settings or [])]
    )
    set_zones(prepared.data_dir, ZONES)
    return prepared


def _client_on(server: VoipsecServer, worker: int, source: str) -> TlsSipClient:
    """A TLS connection from ``source`` that worker ``worker`` accepted."""
    for _ in range(MAX_ATTEMPTS):
        client = TlsSipClient(server.host, server.port, server.ca, source=source)
        if worker_holding(server, client.local[1], source) == worker:
            return client
        client.close()
    raise AssertionError(f"no connection landed on worker {worker} in {MAX_ATTEMPTS} tries")


def _phone_on(server: VoipsecServer, worker: int, user: tuple[str, str], payload: bytes) -> Phone:
    for _ in range(MAX_ATTEMPTS):
        phone = Phone(server, *user, payload=payload)
        if worker_holding(server, phone.port) == worker:
            return phone
        phone.close()
    raise AssertionError(f"no phone landed on worker {worker} in {MAX_ATTEMPTS} tries")


def _cut(client: TlsSipClient) -> bool:
    """True once the server closed or reset ``client``'s connection (a poll, no wait)."""
    sock = client.sock
    sock.setblocking(False)
    try:
        return sock.recv(1) == b""
    except ssl.SSLWantReadError:
        return False
    except OSError:
        return True


def _refused(server: VoipsecServer, source: str) -> bool:
    """A new connection from ``source`` is refused (closed before or in its handshake)."""
    try:
        client = TlsSipClient(server.host, server.port, server.ca, source=source, timeout=5)
    except OSError:
        return True
    with client:
        try:
            client.send(b"OPTIONS sip:localhost SIP/2.0\r\n\r\n")
            return client.sock.recv(1) == b""
        except OSError:
            return True


def _options(local: tuple[str, int], n: int) -> bytes:
    host, port = local
    return (
        f"OPTIONS sip:localhost SIP/2.0\r\n"
        f"Via: SIP/2.0/TLS {host}:{port};branch=z9hG4bKflood{n}\r\nMax-Forwards: 70\r\n"
        f"From: <sip:flood@localhost>;tag=f{n}\r\nTo: <sip:localhost>\r\n"
        f"Call-ID: flood-{n}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    ).encode()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VoipsecServer]:
    """One server for the ban and password-guessing tests: each comes from a source of
    its own (127.0.0.20, .21, .30) and reads only that source's bans and alerts."""
    with serving(_prepare(tmp_path_factory.mktemp("state"))) as running:
        yield running


# -- 1: a ban made through one worker's connection holds on the other --------------------


@pytest.mark.parametrize("flooded", [0, 1])
def test_workers_state_a_ban_on_one_worker_refuses_and_cuts_on_both(
    server: VoipsecServer, flooded: int
) -> None:
    source = f"127.0.0.{20 + flooded}"
    with ExitStack() as stack:
        other = _client_on(server, 1 - flooded, source)
        stack.callback(other.close)
        flood = _client_on(server, flooded, source)
        stack.callback(flood.close)
        # More requests than the zone's bucket holds, on the flooded worker's connection.
        with contextlib.suppress(OSError):  # cut while sending: the ban already hit
            flood.send(b"".join(_options(flood.local, n) for n in range(60)))
        wait_for(lambda: _cut(flood), what="the flooding connection cut")
        wait_for(lambda: _cut(other), what="the same source's connection on the other worker cut")
    adopted = f"ban of {source} adopted from worker {flooded}"
    wait_for(lambda: adopted in server.log_text(), what="the other worker's adoption")
    listing = stored_listing(server.data_dir, "bans", lambda out: f"\n{source}  " in f"\n{out}")
    lines = [line for line in listing.splitlines() if line.startswith(f"{source}  ")]
    # One ban (the IDS's flood rules or the zone's rate limit, whichever fired first).
    assert len(lines) == 1, listing
    # New connections are refused whichever worker the kernel hands them to.
    for _ in range(6):
        assert _refused(server, source)
    # Stored and alerted once, by the worker that imposed it.
    alerts = stored_listing(server.data_dir, "alerts", lambda out: "source banned" in out)
    banned = [line for line in alerts.splitlines() if f"source banned: {source}:" in line]
    assert len(banned) == 1, alerts


# -- 2: a user's concurrent-call limit over connections of two workers -------------------


def test_workers_state_concurrent_call_limit_holds_across_workers(tmp_path: Path) -> None:
    prepared = _prepare(tmp_path)
    (prepared.data_dir / "fraud").mkdir(exist_ok=True)
    (prepared.data_dir / "fraud" / "test.yaml").write_text(CONCURRENT_RULES, encoding="utf-8")
    with serving(prepared) as server, ExitStack() as stack:
        bob = Phone(server, *BOB, payload=BOB_PAYLOAD)
        stack.callback(bob.close)
        bob.register()
        first = _phone_on(server, 0, ALICE, ALICE_PAYLOAD)
        stack.callback(first.close)
        second = _phone_on(server, 1, ALICE, ALICE_PAYLOAD)
        stack.callback(second.close)
        answered: list[object] = []
        callee = threading.Thread(target=lambda: answered.append(bob.answer_call()), daemon=True)
        callee.start()
        assert first.call("bob").status == 200
        callee.join(timeout=DEADLINE)
        assert answered
        # alice's second call, on worker 1's connection: one call is up on worker 0.
        refused = second.call("bob")
        assert refused.status == 403, refused
        assert first.hang_up().status == 200
        assert bob.wait_bye().method == "BYE"
        # Worker 0's call ended: worker 1 lets the next one through.
        callee = threading.Thread(target=lambda: answered.append(bob.answer_call()), daemon=True)
        callee.start()
        assert second.call("bob").status == 200
        callee.join(timeout=DEADLINE)
        assert second.hang_up().status == 200
        assert bob.wait_bye().method == "BYE"
        wait_for(lambda: len(cdrs(server)) == 3, what="three CDRs")
        rows = cdrs(server)
    reasons = sorted(str(row["reason"]) for row in rows)
    assert [r for r in reasons if "test-concurrent" in r] == [
        "blocked by fraud rule test-concurrent"
    ], rows


# -- 3: /metrics counts what both workers handled -----------------------------------------


def test_workers_state_metrics_count_registers_of_both_workers(tmp_path: Path) -> None:
    port = free_port()
    prepared = _prepare(
        tmp_path,
        [("metrics.listen", f'"127.0.0.1:{port}"'), ("metrics.token", json.dumps(METRICS_TOKEN))],
    )
    with serving(prepared) as server, ExitStack() as stack:
        for worker, user in ((0, ALICE), (1, BOB)):
            client = _client_on(server, worker, "127.0.0.1")
            stack.callback(client.close)
            assert client.register(*user).status == 200
        # A scrape pulls every worker's counters first: both REGISTERs, at once.
        samples = scrape(port, server.ca, METRICS_TOKEN)
        assert samples[("voipsec_registrations_total", (("result", "accepted"),))] == 2.0
        assert samples[("voipsec_registrations_total", (("result", "rejected"),))] == 0.0
        # The gauges are refreshed once a second; bindings are replicated: never added up.
        contacts = ("voipsec_registered_contacts", ())
        wait_for(
            lambda: scrape(port, server.ca, METRICS_TOKEN).get(contacts) == 2.0,
            what="the registered contacts gauge",
        )


# -- 4: an IDS threshold reached over both workers ----------------------------------------


def test_workers_state_password_guessing_spread_over_workers_is_banned(
    server: VoipsecServer,
) -> None:
    """Six wrong passwords ban a source (the shipped rule); three on each worker's
    connection, fewer than six on either, ban it too."""
    source = "127.0.0.30"
    with ExitStack() as stack:
        clients = [_client_on(server, worker, source) for worker in (0, 1)]
        for client in clients:
            stack.callback(client.close)
        for i, client in enumerate(clients):
            for n in range(3):
                try:
                    assert client.register("bob", "not-bobs-password").status == 403
                except ConnectionError:
                    # The sixth failure may ban at once: the other worker's three had
                    # reached this one's window (a batch every 0.2 s) before it.
                    assert (i, n) == (1, 2)
        wait_for(
            lambda: source in voipsec("bans", "list", data_dir=server.data_dir).stdout,
            what=f"a ban of {source}",
        )
        for client in clients:
            wait_for(lambda c=client: _cut(c), what="the guesser's connections cut")  # type: ignore[misc]
    listing = voipsec("bans", "list", data_dir=server.data_dir).stdout
    (line,) = [line for line in listing.splitlines() if line.startswith(f"{source}  ")]
    assert line.endswith("ids: password-guessing-source"), line
    assert _refused(server, source)

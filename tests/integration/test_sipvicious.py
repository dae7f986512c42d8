"""Real attacks with sipvicious (svmap, svwar, svcrack) against voipsec's UDP listener.

Loopback is the untrusted "internet" zone here; a "lab" zone (127.0.0.3) with a
higher rate limit carries legitimate SIPp registrations while the attacks run.
svwar and svcrack send from 127.0.0.1:5061 whatever -b says (PEERS.md).
"""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.peers.proc import free_port, require, wait_for
from tests.peers.sipp import (
    SippProcess,
    SippResult,
    run_sipp,
    start_sipp,
    write_csv,
    write_users_csv,
)
from tests.peers.voipsec import (
    VoipsecServer,
    prepare,
    serving,
    set_zones,
    stored_listing,
    voipsec,
)
from voipsec.storage import Store

pytestmark = pytest.mark.peers

BENCH = Path(__file__).resolve().parents[2] / "bench" / "sipp"
USERS = [(f"user{i:03d}", f"pw{i:03d}-legit") for i in range(100)]
LEGIT = "127.0.0.3"
CALLER = ("caller", "caller-secret")
CALLEE = ("bob", "bob-secret-22")
#: Legitimate operations a second (half registrations, half calls) and how many of each.
LEGIT_RATE = 100.0
LEGIT_CALLS = 300


def _attack_server(tmp_path: Path) -> tuple[VoipsecServer, int]:
    prepared = prepare(
        tmp_path / "data",
        users=[("alice", "alice-secret-1"), CALLER, CALLEE],
        settings=[("auth.algorithms", '["MD5"]')],  # SIPp 3.6.1, the legitimate load
    )
    udp = free_port(kind=socket.SOCK_DGRAM)
    voipsec(
        "config",
        "set",
        "sip.listen",
        f'["tls:127.0.0.1:{prepared.port}", "udp:127.0.0.1:{udp}"]',
        data_dir=prepared.data_dir,
    )
    set_zones(
        prepared.data_dir,
        f'[[zones]]\nname = "lab"\ncidrs = ["{LEGIT}/32"]\nrate_requests = 2000\n',
    )
    store = Store(prepared.data_dir / "voipsec.db")
    try:
        for name, password in USERS:
            store.add_user(name, password, "localhost")
    finally:
        store.close()
    return prepared, udp


def _sv(tool: str, *args: str, timeout: float = 60) -> tuple[float, str]:
    """Run a sipvicious tool; returns (start time, its output)."""
    started = time.time()
    proc = subprocess.run(
        [require(tool), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    return started, proc.stdout + proc.stderr


def _ban_of(server: VoipsecServer, source: str) -> tuple[float, str] | None:
    store = Store(server.data_dir / "voipsec.db")
    try:
        for ban in store.bans(time.time()):
            if ban.source == source:
                return ban.created, ban.reason
    finally:
        store.close()
    return None


def _banned_within(server: VoipsecServer, source: str, started: float, seconds: float) -> str:
    found = _ban_of(server, source)
    assert found is not None, f"{source} was not banned: {server.log_text()[-2000:]}"
    created, reason = found
    assert created - started <= seconds, (created - started, reason)
    return reason


@pytest.fixture(scope="module")
def attacked(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[VoipsecServer, int]]:
    """One server for the scans that each come from a source no other one uses (svmap
    from 127.0.0.2, svmap -c from 127.0.0.4, then svwar from 127.0.0.1). svcrack comes
    from 127.0.0.1 too, so it gets a server of its own: on this one that source would
    already be banned and its ban time would prove nothing."""
    prepared, udp = _attack_server(tmp_path_factory.mktemp("attacked"))
    with serving(prepared) as server:
        yield server, udp


def test_svmap_detected_and_banned_within_2s(attacked: tuple[VoipsecServer, int]) -> None:
    server, udp = attacked
    started, _ = _sv("svmap", "-p", str(udp), "127.0.0.1", "-b", "127.0.0.2")
    assert _banned_within(server, "127.0.0.2", started, 2.0) == "ids: scanner-user-agent"
    expected = (
        "scanner-user-agent  127.0.0.2  IDS rule matched: 127.0.0.2: "
        "user agent 'friendly-scanner'; alerted"
    )
    alerts = stored_listing(server.data_dir, "alerts", lambda out: expected in out)
    assert expected in alerts, alerts


def test_svmap_compact_without_user_agent_caught_by_fingerprint(
    attacked: tuple[VoipsecServer, int],
) -> None:
    server, udp = attacked
    started, _ = _sv("svmap", "-c", "-p", str(udp), "127.0.0.1", "-b", "127.0.0.4")
    reason = _banned_within(server, "127.0.0.4", started, 2.0)
    assert reason == "ids: sipvicious-from-tag"
    alerts = voipsec("alerts", "list", data_dir=server.data_dir).stdout
    # The alerts naming this scan's source (the shared server holds the svmap test's too).
    ours = "\n".join(line for line in alerts.splitlines() if "127.0.0.4" in line)
    assert "user agent" not in ours  # no User-Agent was sent: the fingerprint caught it


def test_svwar_banned_and_finds_no_extension(attacked: tuple[VoipsecServer, int]) -> None:
    server, udp = attacked
    started, out = _sv("svwar", "-e100-300", "-p", str(udp), "127.0.0.1")
    _banned_within(server, "127.0.0.1", started, 2.0)
    assert "found nothing" in out
    assert "alice" not in out and "user0" not in out


def test_svcrack_banned_and_finds_no_password(tmp_path: Path) -> None:
    prepared, udp = _attack_server(tmp_path)
    with serving(prepared) as server:
        started, out = _sv("svcrack", "-u", "alice", "-r", "1-3000", "-p", str(udp), "127.0.0.1")
        _banned_within(server, "127.0.0.1", started, 2.0)
        assert "found nothing" in out
        assert "alice-secret-1" not in out
        assert server.bindings("alice") == []


@pytest.mark.alone
def test_legitimate_load_unharmed_while_attacks_run(tmp_path: Path) -> None:
    """REGISTER and calls, 100 a second between them, from the lab zone during attacks.

    The lab zone fronts a PBX's worth of phones, so its admin retunes the INVITE-flood
    rule for it in a user rule file (the shipped 30 INVITE per 2 s suits one phone, not
    50 calls a second); the internet zone keeps the shipped rule.
    """
    prepared, udp = _attack_server(tmp_path)
    _retune_invite_flood_for_lab(prepared.data_dir)
    _retune_concurrent_calls_for_lab(prepared.data_dir)
    csv = write_users_csv(tmp_path / "users.csv", USERS, "localhost")
    registrations: list[SippResult] = []
    calls: list[SippResult] = []
    with serving(prepared) as server, _lab_callee(server, tmp_path, udp) as callee:

        def register_load() -> None:
            registrations.append(
                run_sipp(
                    BENCH / "register_digest.xml",
                    f"127.0.0.1:{udp}",
                    workdir=tmp_path / "legit",
                    inf_csv=csv,
                    rate=LEGIT_RATE / 2,
                    calls=LEGIT_CALLS,
                    transport="u1",
                    extra=["-i", LEGIT, "-auth_uri", "localhost"],
                    timeout=60,
                )
            )

        def call_load() -> None:
            calls.append(
                run_sipp(
                    BENCH / "call_uac.xml",
                    f"127.0.0.1:{udp}",
                    workdir=tmp_path / "legit-calls",
                    inf_csv=write_csv(tmp_path / "caller.csv", [(*CALLER, "localhost", "bob")]),
                    rate=LEGIT_RATE / 2,
                    calls=LEGIT_CALLS,
                    transport="u1",
                    extra=["-i", LEGIT, "-auth_uri", "bob@localhost"],
                    call_length_ms=100,
                    timeout=60,
                )
            )

        loads = [threading.Thread(target=register_load), threading.Thread(target=call_load)]
        for load in loads:
            load.start()
        try:
            # The attacks, one after the other, while the 6 s of legitimate load run.
            _sv("svmap", "-p", str(udp), "127.0.0.1", "-b", "127.0.0.2")
            _sv("svwar", "-e100-200", "-p", str(udp), "127.0.0.1")
            _sv("svmap", "-c", "-p", str(udp), "127.0.0.1", "-b", "127.0.0.4")
        finally:
            for load in loads:
                load.join(timeout=90)
        assert registrations and calls, "SIPp did not finish"
        reg, placed = registrations[0], calls[0]
        assert (reg.successful, reg.failed) == (LEGIT_CALLS, 0), reg.error_tail()
        assert (placed.successful, placed.failed) == (LEGIT_CALLS, 0), placed.error_tail()
        answered = callee.wait(60)
        assert (answered.successful, answered.failed) == (1, 0), answered.error_tail()
        wait_for(lambda: _ban_of(server, "127.0.0.2") is not None, what="the scanner's ban")
        assert _ban_of(server, LEGIT) is None
        assert _ban_of(server, "127.0.0.1") is not None
        assert _ban_of(server, "127.0.0.4") is not None
        rows = json.loads(
            voipsec("cdr", "list", "--format", "json", data_dir=server.data_dir).stdout
        )
        assert [r["disposition"] for r in rows] == ["answered"] * LEGIT_CALLS


def _retune_invite_flood_for_lab(data_dir: Path) -> None:
    rules = data_dir / "rules"
    rules.mkdir(exist_ok=True)
    (rules / "lab.yaml").write_text(
        "rules:\n"
        "  - name: invite-flood\n"
        "    description: More than 30 INVITE from one source in 2 s (not the lab PBX)\n"
        "    zones: [internet]\n"
        "    match: {kind: request, methods: [INVITE]}\n"
        "    threshold: {count: 31, window: 2, key: source}\n"
        "    actions: [alert, drop, {ban: 60}]\n"
        "  - name: invite-flood-lab\n"
        "    description: More than 400 INVITE from the lab PBX in 2 s\n"
        "    zones: [lab]\n"
        "    match: {kind: request, methods: [INVITE]}\n"
        "    threshold: {count: 401, window: 2, key: source}\n"
        "    actions: [alert, drop, {ban: 60}]\n",
        encoding="utf-8",
    )


def _retune_concurrent_calls_for_lab(data_dir: Path) -> None:
    """The lab's load generator is one user placing 50 calls/s: when the machine is
    busy, more than the shipped 10 of its calls overlap. An admin would raise the limit
    for such a user; the shipped rule is replaced by id (fraud.rules_dir)."""
    fraud = data_dir / "fraud"
    fraud.mkdir(exist_ok=True)
    (fraud / "lab.yaml").write_text(
        "rules:\n"
        "  - id: concurrent-calls\n"
        "    description: More than 300 calls at once per user (the lab load generator)\n"
        "    check: concurrent_calls\n"
        "    critical: {threshold: 300, action: block}\n",
        encoding="utf-8",
    )


@contextlib.contextmanager
def _lab_callee(server: VoipsecServer, tmp_path: Path, udp: int) -> Iterator[SippProcess]:
    """bob, registered over UDP from the lab address, answers every call."""
    port = free_port(LEGIT, kind=socket.SOCK_DGRAM)
    inf = write_csv(tmp_path / "callee.csv", [(*CALLEE, "localhost", str(LEGIT_CALLS))])
    with start_sipp(
        BENCH / "call_uas_register.xml",
        f"127.0.0.1:{udp}",
        workdir=tmp_path / "legit-callee",
        inf_csv=inf,
        calls=1,
        transport="u1",
        local_port=port,
        ooc_scenario=BENCH / "call_uas_answer.xml",
        keys={"uas_contact": f"sip:{CALLEE[0]}@{LEGIT}:{port}"},
        extra=["-i", LEGIT, "-auth_uri", "localhost"],
        timeout=90,
    ) as callee:
        server.wait_bindings(CALLEE[0], 1)
        yield callee

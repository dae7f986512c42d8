"""Where a call's memory goes, in the signaling process (no sockets, no TLS).

The call of ``bench/call_profile.py`` (alice → bob, digest, 407, 100/180/200, ACK) is
fed straight into ``SipService`` N times and every call is *held* (no BYE); then all N
are hung up. tracemalloc snapshots are taken when the calls are up and after they ended,
and the growth is shown per call, grouped by the voipsec module that allocated it.

The media relay is off (``media.srtp = "off"`` still relays; ``--relay`` keeps it in
process): with ``media.workers`` the relay's state lives in the relay processes, so
what is counted here is the signaling process's share of a call.

``--rss`` measures the process's resident memory instead (no tracemalloc, so C
allocations such as libsrtp's count too): run it with and without ``--relay`` to see
the relay's share.

Usage: .venv/bin/python bench/call_memory.py [N] [--relay] [--rss] [--lines] [--top K]
"""

from __future__ import annotations

import asyncio
import gc
import os
import sys
import tempfile
import time
import tracemalloc
from collections import defaultdict
from pathlib import Path

from call_profile import Flow, answer, in_dialog, invite

from voipsec.config import Config, validate
from voipsec.server import SipService, build_sip_service
from voipsec.sip.digest import client_response, parse_challenge
from voipsec.sip.message import Request, Response
from voipsec.storage import Binding, Store


def held_call(service: SipService, alice: Flow, bob: Flow, i: int) -> str:
    """One call up to the caller's ACK of the 200; returns the caller's To tag."""
    service.on_stream_message(alice, invite(i, 1, None))  # type: ignore[arg-type]
    challenge = alice.take()
    assert isinstance(challenge, Response) and challenge.status == 407, challenge
    params = parse_challenge(challenge.headers.get("proxy-authenticate") or "")
    ack = in_dialog("ACK", i, challenge.to.tag or "", 1).replace(b"z9hG4bK-ACK-", b"z9hG4bK-")
    service.on_stream_message(alice, ack.replace(f"-{i};".encode(), f"-{i}-1;".encode()))  # type: ignore[arg-type]
    auth = client_response(
        username="alice",
        password="alice-password",
        realm=params["realm"],
        nonce=params["nonce"],
        method="INVITE",
        uri="sip:bob@localhost",
        algorithm=params.get("algorithm", "SHA-256"),
        opaque=params.get("opaque"),
    )
    service.on_stream_message(alice, invite(i, 2, auth))  # type: ignore[arg-type]
    trying = alice.take()
    assert isinstance(trying, Response) and trying.status == 100, trying
    b_invite = bob.take()
    assert isinstance(b_invite, Request) and b_invite.method == "INVITE", b_invite
    service.on_stream_message(bob, answer(b_invite, 180, "Ringing"))  # type: ignore[arg-type]
    service.on_stream_message(bob, answer(b_invite, 200, "OK", body=b_invite.body))  # type: ignore[arg-type]
    ringing, ok = alice.take(), alice.take()
    assert isinstance(ok, Response) and ok.status == 200, (ringing, ok)
    b_ack = bob.take()
    assert isinstance(b_ack, Request) and b_ack.method == "ACK"
    a_tag = ok.to.tag or ""
    service.on_stream_message(alice, in_dialog("ACK", i, a_tag, 2))  # type: ignore[arg-type]
    return a_tag


def hang_up(service: SipService, alice: Flow, bob: Flow, i: int, a_tag: str) -> None:
    """The caller's BYE and the callee's 200 to the B-leg BYE."""
    service.on_stream_message(alice, in_dialog("BYE", i, a_tag, 3))  # type: ignore[arg-type]
    bye_ok = alice.take()
    assert isinstance(bye_ok, Response) and bye_ok.status == 200, bye_ok
    b_bye = bob.take()
    assert isinstance(b_bye, Request) and b_bye.method == "BYE"
    service.on_stream_message(bob, answer(b_bye, 200, "OK"))  # type: ignore[arg-type]


def expire_transactions(service: SipService) -> int:
    """Fire every pending transaction timer now, as if 64*T1 had passed.

    What a call holds while it lasts is then what stays after RFC 3261 §17's timers
    (Timer L and M: 32 s after a 2xx) ended its transactions; the call timers (ring,
    duration, probe) are left alone. Returns how many timers fired."""
    driver = service.transactions
    fired = 0
    for _ in range(10):  # a timer may start another one (a few rounds at most)
        pending = list(driver._timers.items())
        if not pending:
            break
        for (key, name), handle in pending:
            handle.cancel()
            driver._fire_timer(key, name)
            fired += 1
    return fired


async def _settle() -> None:
    """Let the loop run what the calls queued with call_soon (CDR rows written...)."""
    for _ in range(20):
        await asyncio.sleep(0)


def _module(trace: tracemalloc.Trace, lines: bool) -> str:
    """The innermost voipsec frame of an allocation (else its innermost frame)."""
    for frame in reversed(trace.traceback):  # oldest first: the innermost is last
        if "/voipsec/" in frame.filename:
            name = frame.filename.split("/voipsec/", 1)[1]
            return f"{name}:{frame.lineno}" if lines else name
    frame = trace.traceback[-1]
    return f"{frame.filename}:{frame.lineno}" if lines else frame.filename


def _by_module(
    before: tracemalloc.Snapshot, after: tracemalloc.Snapshot, lines: bool
) -> dict[str, int]:
    grown: dict[str, int] = defaultdict(int)
    for trace in after.traces:
        grown[_module(trace, lines)] += trace.size
    for trace in before.traces:
        grown[_module(trace, lines)] -= trace.size
    return grown


def report(title: str, grown: dict[str, int], n: int, top: int) -> None:
    total = sum(grown.values())
    print(f"\n{title}: {total / n / 1024:.1f} KiB per call ({total / 1024:,.0f} KiB for {n})")
    for name, size in sorted(grown.items(), key=lambda kv: -kv[1])[:top]:
        print(f"  {size / n:8,.0f} B  {name}")


#: The shipped ``concurrent-calls`` rule blocks above 10 calls per user; one caller
#: holds every call here (as in bench/call_bench.py, the rule is still evaluated).
FRAUD_RULES = """\
rules:
  - id: concurrent-calls
    description: retuned above the benchmark load
    check: concurrent_calls
    critical: {threshold: 9999, action: block}
"""


def _service(tmp: Path, relay: bool) -> tuple[SipService, Store]:
    (tmp / "fraud").mkdir()
    (tmp / "fraud" / "bench.yaml").write_text(FRAUD_RULES, encoding="utf-8")
    store = Store(tmp / "db")
    store.add_user("alice", "alice-password", "localhost")
    store.add_user("bob", "bob-password", "localhost")
    settings: dict[str, object] = {"calls": {"probe_interval": 0}}
    if relay:
        settings["media"] = {"ports": "20000-32767"}
    config: Config = validate(settings, tmp / "voipsec.toml")
    service, calls = build_sip_service(config=config, store=store, ids_rules=[], data_dir=tmp)
    if not relay:
        calls.b2bua.relay_media = False
    return service, store


def rss_kib() -> int:
    """Resident memory of this process (Linux /proc), KiB."""
    fields = Path("/proc/self/statm").read_text().split()
    return int(fields[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


async def run(n: int, relay: bool, lines: bool, top: int, rss: bool) -> None:
    tmp = Path(tempfile.mkdtemp())
    service, store = _service(tmp, relay)
    alice, bob = Flow(40000), Flow(40001)
    service.connections._by_peer[("tls", *bob.peer)] = bob  # type: ignore[assignment]
    binding = Binding(
        aor="bob@localhost",
        contact="sip:bob@127.0.0.1:40001;transport=tls",
        expires_at=time.time() + 3600,
        call_id="reg",
        cseq=1,
        source="tls:127.0.0.1:40001",
        user_agent="bench",
    )
    service.registrar.load([binding])
    for i in range(50):  # warm-up: caches, interned strings, first-use imports
        hang_up(service, alice, bob, -i - 1, held_call(service, alice, bob, -i - 1))
    await _settle()
    expire_transactions(service)
    gc.collect()
    if rss:
        before = rss_kib()
        tags = [held_call(service, alice, bob, i) for i in range(n)]
        await _settle()
        expire_transactions(service)
        gc.collect()
        grown = rss_kib() - before
        print(f"{n} calls held past 64*T1: RSS +{grown:,} KiB, {grown / n:.1f} KiB per call")
        store.close()
        return
    tracemalloc.start(25)
    idle = tracemalloc.take_snapshot()
    tags = [held_call(service, alice, bob, i) for i in range(n)]
    await _settle()
    gc.collect()
    up = tracemalloc.take_snapshot()
    expire_transactions(service)
    gc.collect()
    held = tracemalloc.take_snapshot()
    for i, tag in enumerate(tags):
        hang_up(service, alice, bob, i, tag)
    await _settle()
    gc.collect()
    ended = tracemalloc.take_snapshot()
    expire_transactions(service)
    gc.collect()
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    report(f"{n} calls up, just answered", _by_module(idle, up, lines), n, top)
    report(f"{n} calls up, held past 64*T1", _by_module(idle, held, lines), n, top)
    report(f"{n} calls ended, just now", _by_module(idle, ended, lines), n, top)
    report(f"{n} calls ended, 64*T1 later", _by_module(idle, after, lines), n, top)
    store.close()


def main() -> None:
    args = sys.argv[1:]
    n = int(args[0]) if args and args[0].isdigit() else 1000
    top = int(args[args.index("--top") + 1]) if "--top" in args else 25
    asyncio.run(run(n, "--relay" in args, "--lines" in args, top, "--rss" in args))


if __name__ == "__main__":
    main()

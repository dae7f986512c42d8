"""How fast the guard drops a banned source, in-process and through a real UDP socket.

    .venv/bin/python bench/guard_bench.py [--count 1000000] [--udp 200000]

1. ``Guard.check`` alone for a banned source.
2. ``SipService.on_datagram`` for a banned source (what a UDP flood costs per datagram
   once it reaches Python).
3. A running ``voipsec serve`` with a UDP listener: a banned loopback address sends
   ``--udp`` OPTIONS as fast as one Python sender can; the server's CPU time per dropped
   datagram gives drops per CPU-second (the sender, not the server, sets the pace).
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.peers.proc import free_port, wait_for  # noqa: E402
from tests.peers.voipsec import prepare, serving, set_zones, voipsec  # noqa: E402

from voipsec.config import Config  # noqa: E402
from voipsec.server import build_sip_service  # noqa: E402
from voipsec.storage import Store  # noqa: E402

OPTIONS = (
    b"OPTIONS sip:localhost SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.5:9;branch=z9hG4bKf1\r\n"
    b"From: <sip:x@localhost>;tag=1\r\nTo: <sip:localhost>\r\nCall-ID: flood\r\n"
    b"CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
)


class Flow:
    transport = "udp"
    peer = ("192.0.2.66", 5060)
    local = ("127.0.0.1", 5060)
    identity = None

    def send(self, data: bytes) -> None:
        raise AssertionError("a banned source must get no answer")

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def in_process(count: int) -> None:
    store = Store(Path(tempfile.mkdtemp()) / "db")
    service, _ = build_sip_service(config=Config(), store=store)
    service.guard.ban("192.0.2.66", 3600, "bench", time.time())
    now = time.time()
    start = time.perf_counter()
    for _ in range(count):
        service.guard.check("192.0.2.66", now)
    took = time.perf_counter() - start
    print(f"Guard.check, banned source: {count / took:,.0f}/s on one core")
    flow = Flow()
    start = time.perf_counter()
    for _ in range(count):
        service.on_datagram(flow, OPTIONS)  # type: ignore[arg-type]
    took = time.perf_counter() - start
    print(f"SipService.on_datagram, banned source: {count / took:,.0f}/s on one core")


def over_udp(count: int) -> None:
    prepared = prepare(Path(tempfile.mkdtemp()) / "data")
    udp = free_port(kind=socket.SOCK_DGRAM)
    voipsec(
        "config",
        "set",
        "sip.listen",
        f'["tls:127.0.0.1:{prepared.port}", "udp:127.0.0.1:{udp}"]',
        data_dir=prepared.data_dir,
    )
    set_zones(prepared.data_dir, '[[zones]]\nname = "internet"\ncidrs = ["0.0.0.0/0"]\n')
    voipsec("bans", "add", "127.0.0.5", "--seconds", "3600", data_dir=prepared.data_dir)
    with serving(prepared) as server:
        assert server.proc is not None
        pid = server.proc.pid
        sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sender.bind(("127.0.0.5", 0))
        wait_for(lambda: cpu_seconds(pid) > 0, what="server CPU readable")
        time.sleep(1.0)  # let start-up work finish before the measurement window
        before = cpu_seconds(pid)
        start = time.perf_counter()
        for _ in range(count):
            sender.sendto(OPTIONS, ("127.0.0.1", udp))
        took = time.perf_counter() - start
        time.sleep(1.0)  # the server drains its socket buffer
        used = cpu_seconds(pid) - before
        print(
            f"UDP flood from a banned address: {count} datagrams sent in {took:.2f}s "
            f"({count / took:,.0f}/s); server CPU {used:.2f}s -> "
            f"{count / max(used, 0.01):,.0f} drops per CPU-second (upper bound: "
            "datagrams lost in the socket buffer cost nothing)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=1_000_000)
    parser.add_argument("--udp", type=int, default=200_000)
    args = parser.parse_args()
    in_process(args.count)
    over_udp(args.udp)


if __name__ == "__main__":
    main()

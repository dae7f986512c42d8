"""In-process profile of the REGISTER path (no sockets, no TLS).

Feeds challenge + authenticated REGISTER pairs straight into SipService to find
where the Python time goes. Usage: .venv/bin/python bench/service_profile.py [N] [--profile]

With ``--callgrind`` each SipService call runs inside ``functools.reduce``, so that
``valgrind --tool=callgrind --collect-atstart=no --toggle-collect=functools_reduce``
counts voipsec's instructions alone ("Collected" / N per REGISTER pair).
"""

from __future__ import annotations

import cProfile
import functools
import pstats
import sys
import tempfile
import time
from pathlib import Path

from voipsec.config import Config
from voipsec.server import build_sip_service
from voipsec.sip import parse_message
from voipsec.sip.digest import client_response, parse_challenge
from voipsec.storage import Store


class Flow:
    transport = "tls"
    peer = ("127.0.0.1", 40000)
    local = ("127.0.0.1", 5061)
    identity = None

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def send(self, data: bytes) -> None:
        self.sent.append(data)

    def close(self) -> None:
        pass


def register(i: int, cseq: int, auth: str | None) -> bytes:
    lines = [
        "REGISTER sip:localhost SIP/2.0",
        f"Via: SIP/2.0/TCP 127.0.0.1:40000;branch=z9hG4bK-{i}-{cseq}",
        "Max-Forwards: 70",
        f"From: <sip:user{i % 100:04d}@localhost>;tag={i}",
        f"To: <sip:user{i % 100:04d}@localhost>",
        f"Call-ID: {i}@bench",
        f"CSeq: {cseq} REGISTER",
        f"Contact: <sip:user{i % 100:04d}@127.0.0.1:40000;transport=tls>",
        "Expires: 3600",
        "User-Agent: bench",
    ]
    if auth:
        lines.append(f"Authorization: {auth}")
    return ("\r\n".join([*lines, "Content-Length: 0", "", ""])).encode()


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 and sys.argv[1].isdigit() else 5000
    tmp = Path(tempfile.mkdtemp())
    store = Store(tmp / "db")
    for u in range(100):
        store.add_user(f"user{u:04d}", f"pw{u:04d}xxxx", "localhost")
    service, _ = build_sip_service(config=Config(), store=store)
    flow = Flow()

    server_time = [0.0]
    clock = time.perf_counter
    callgrind = "--callgrind" in sys.argv

    def feed(data: bytes) -> None:
        if callgrind:
            # callgrind --toggle-collect=functools_reduce collects inside this only.
            functools.reduce(lambda _a, _b: service._on_bytes(flow, data, datagram=False), (0, 1))
        else:
            service._on_bytes(flow, data, datagram=False)

    def run() -> None:
        for i in range(n):
            first = register(i, 1, None)
            t0 = clock()
            feed(first)
            server_time[0] += clock() - t0
            ch = parse_challenge(parse_message(flow.sent[-1]).headers.get("www-authenticate") or "")
            auth = client_response(
                username=f"user{i % 100:04d}",
                password=f"pw{i % 100:04d}xxxx",
                realm="localhost",
                nonce=ch["nonce"],
                method="REGISTER",
                uri="sip:localhost",
                opaque=ch["opaque"],
                cnonce=str(i),
            )
            second = register(i, 2, auth)
            t0 = clock()
            feed(second)
            server_time[0] += clock() - t0
            if not flow.sent[-1].startswith(b"SIP/2.0 200"):
                raise SystemExit(flow.sent[-1].decode())

    start = time.perf_counter()
    if "--profile" in sys.argv:
        cProfile.runctx("run()", globals(), locals(), str(tmp / "prof"))
        pstats.Stats(str(tmp / "prof")).sort_stats("cumulative").print_stats(25)
    else:
        run()
    took = time.perf_counter() - start
    print(
        f"{n} REGISTER pairs: server side {server_time[0]:.2f}s, "
        f"{server_time[0] / n * 1e6:.0f} us per pair (401 + 200), "
        f"{n / server_time[0]:.0f} pairs/s on one core; whole script {took:.2f}s"
    )


if __name__ == "__main__":
    main()

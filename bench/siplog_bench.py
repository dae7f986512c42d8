"""Per-message cost of the SIP message log and of HEP encoding, one core, in-process.

What ``full`` monitoring adds to each SIP message (see "Cost of monitoring on calls" in
docs/performance.md): ``SipLog.write`` (redaction, JSON, the write to a file) and
``encode_hep3``. Three messages as a call carries them: an INVITE with digest
credentials and an SDES offer (everything redaction touches), a 200 OK with an SDES
answer, and a BYE response with no body (nothing to redact). Each is written
``--count`` times; the mean per message is printed, best of ``--repeat`` runs.
``hook`` is all of ``MonitorService.message`` with both on, as ``serve`` runs it: the
SIP log line and the HEP packet queued and sent over UDP by the exporter's task.

    .venv/bin/python bench/siplog_bench.py [--count 20000] [--repeat 5] [--json FILE]

On a shared machine the times move by a third from run to run. For figures that do
not, count instructions: ``--only OP --message N`` runs one operation on one message,
and under ``valgrind --tool=callgrind`` the difference between ``--count 1000`` and
``--count 0``, divided by 1,000, is the instructions per message (see
docs/performance.md).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from voipsec.config import Config  # noqa: E402
from voipsec.events import EventBus, MessageSeen  # noqa: E402
from voipsec.monitor.hep import encode_hep3  # noqa: E402
from voipsec.monitor.service import MonitorService  # noqa: E402
from voipsec.monitor.siplog import SipLog, redact  # noqa: E402
from voipsec.storage import Store  # noqa: E402

_SDP = (
    b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    b"m=audio 6000 RTP/SAVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
    b"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0e\r\n"
)
_VIA_TO_CSEQ = (
    b"Via: SIP/2.0/TLS 127.0.0.1:5061;branch=z9hG4bK-1-2-3\r\n"
    b"From: <sip:alice@localhost>;tag=8a7f3c\r\nTo: <sip:02071234567@localhost>{to_tag}\r\n"
    b"Call-ID: 1-25952@127.0.0.1\r\nCSeq: {cseq}\r\n"
)
MESSAGES = {
    "INVITE (credentials, SDES offer)": (
        b"INVITE sip:02071234567@localhost SIP/2.0\r\n"
        + _VIA_TO_CSEQ.replace(b"{to_tag}", b"").replace(b"{cseq}", b"2 INVITE")
        + b'Proxy-Authorization: Digest username="alice",realm="localhost",'
        b'nonce="a1b2c3d4e5f60718293a4b5c6d7e8f90",uri="sip:02071234567@localhost",'
        b'response="0123456789abcdef0123456789abcdef",algorithm=MD5\r\n'
        b"Contact: <sip:alice@127.0.0.1:5061;transport=tls>\r\nMax-Forwards: 70\r\n"
        b"Content-Type: application/sdp\r\nContent-Length: %d\r\n\r\n" % len(_SDP) + _SDP
    ),
    "200 OK (SDES answer)": (
        b"SIP/2.0 200 OK\r\n"
        + _VIA_TO_CSEQ.replace(b"{to_tag}", b";tag=77ab").replace(b"{cseq}", b"2 INVITE")
        + b"Contact: <sip:bob@127.0.0.1:5061;transport=tls>\r\n"
        b"Content-Type: application/sdp\r\nContent-Length: %d\r\n\r\n" % len(_SDP) + _SDP
    ),
    "200 OK to BYE (no body)": (
        b"SIP/2.0 200 OK\r\n"
        + _VIA_TO_CSEQ.replace(b"{to_tag}", b";tag=77ab").replace(b"{cseq}", b"3 BYE")
        + b"Content-Length: 0\r\n\r\n"
    ),
}


def _mean_us(action: object, count: int, repeat: int) -> float:
    assert callable(action)
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(count):
            action()
        best = min(best, time.perf_counter() - start)
    return best / count * 1e6


class _Flow:
    transport = "tls"
    peer = ("127.0.0.1", 40000)
    local = ("127.0.0.1", 5061)
    identity = None


#: The UDP sink: reads and drops datagrams on the socket whose fd it is given.
_DRAIN = "import socket, sys\ns = socket.socket(fileno=int(sys.argv[1]))\nwhile True: s.recv(70000)"

#: Messages handed to the hook between two turns of the event loop (which sends the
#: queued HEP packets): a busy server's loop handles several messages per turn.
_BATCH = 50


def _hook_us(message: bytes, count: int, repeat: int, tmp: Path) -> float:
    """The whole ``MonitorService.message`` hook with the SIP log and HEP export on (to
    a UDP sink a thread drains), including the HEP writer task's ``sendto``."""
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    port = sink.getsockname()[1]
    # The sink drains in a process of its own, so that it takes no time from this one.
    drainer = subprocess.Popen(
        [sys.executable, "-c", _DRAIN, str(sink.fileno())], pass_fds=[sink.fileno()]
    )
    sink.close()
    config = Config.model_validate(
        {
            "siplog": {"enabled": True},
            "hep": {"target": f"udp:127.0.0.1:{port}"},
            "metrics": {"listen": ""},
        }
    )

    async def run() -> float:
        events = EventBus()
        monitor = MonitorService(
            config=config, data_dir=tmp, store=Store(tmp / "voipsec.db"), events=events
        )
        await monitor.start()
        flow = _Flow()
        best = float("inf")
        try:
            for _ in range(repeat):
                start = time.perf_counter()
                for done in range(count):
                    # What the SIP service does per message: build the event, publish it.
                    events.publish(
                        MessageSeen(
                            direction="in",
                            transport=flow.transport,
                            local=flow.local,
                            peer=flow.peer,
                            tls_identity=None,
                            data=message,
                        )
                    )
                    if done % _BATCH == _BATCH - 1:
                        await asyncio.sleep(0)
                await asyncio.sleep(0)
                best = min(best, time.perf_counter() - start)
            assert monitor.hep is not None
            assert monitor.hep.statistics().dropped_queue_full == 0
        finally:
            await monitor.stop()
        return best / count * 1e6

    try:
        return asyncio.run(run())
    finally:
        drainer.kill()
        drainer.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--only", choices=("redact", "siplog", "hep", "hook"))
    parser.add_argument("--message", type=int, choices=range(len(MESSAGES)))
    args = parser.parse_args()
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        log = SipLog(Path(tmp) / "sip.log", max_bytes=1 << 30, backups=1)
        try:
            for index, (name, message) in enumerate(MESSAGES.items()):
                if args.message is not None and index != args.message:
                    continue

                def write(message: bytes = message) -> None:
                    log.write(
                        direction="in",
                        local=("127.0.0.1", 5061),
                        remote=("127.0.0.1", 40000),
                        transport="tls",
                        tls_identity="alice@localhost",
                        call_id="1-25952@127.0.0.1",
                        message=message,
                        time=1_700_000_000.0,
                    )

                def hep(message: bytes = message) -> None:
                    encode_hep3(
                        src=("127.0.0.1", 40000),
                        dst=("127.0.0.1", 5061),
                        proto=6,
                        timestamp=1_700_000_000.0,
                        payload=message,
                        capture_id=2001,
                        correlation_id="1-25952@127.0.0.1",
                    )

                ops = {"redact": lambda m=message: redact(m), "siplog": write, "hep": hep}
                row: dict[str, float] = {"bytes": len(message)}
                for op, action in ops.items():
                    if args.only in (None, op):
                        row[f"{op}_us"] = _mean_us(action, args.count, args.repeat)
                if args.only in (None, "hook"):
                    hook_dir = Path(tmp) / f"hook{index}"
                    hook_dir.mkdir()
                    row["hook_us"] = _hook_us(message, args.count, args.repeat, hook_dir)
                results[name] = row
        finally:
            log.close()
    print(f"{'message':34} {'bytes':>6} {'redact':>9} {'SIP log':>9} {'HEP':>9} {'hook':>9}")
    for name, row in results.items():
        cells = " ".join(
            f"{row[key]:>7.1f}µs" if key in row else f"{'-':>9}"
            for key in ("redact_us", "siplog_us", "hep_us", "hook_us")
        )
        print(f"{name:34} {row['bytes']:>6.0f} {cells}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()

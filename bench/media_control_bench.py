"""The cost of driving the media relay in a worker process instead of in-process.

For ``--calls`` calls in sequence (one at a time: latency, not throughput), the
signaling side asks for what a call needs from the relay -- the caller's offer
(ports opened, SDP rewritten to SRTP), the callee's answer, the release with its
per-leg report -- first through :class:`voipsec.media.performer.LocalMedia` (the
relay in this process, as before the worker split), then through
:class:`voipsec.media.pool.MediaPool` to one relay worker process started by the
supervisor (``python -m voipsec.app.worker_main media``), over its Unix socket.

Printed per mode: the round-trip latency of offer+answer (median and p99, wall
clock), and CPU per call of this process and of the worker process (from
/proc/PID/stat), so the control channel's overhead is CPU per call (both sides)
minus the in-process CPU per call.

    PYTHONPATH=src .venv/bin/python bench/media_control_bench.py --calls 2000
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from voipsec.app.supervisor import Supervisor, secure_run_dir, worker_spec
from voipsec.config import CONFIG_NAME, Config, load
from voipsec.core.callmodel import AllocateMedia, AnswerMedia, ReleaseMedia, Side
from voipsec.media.destinations import MediaPeer
from voipsec.media.errors import MediaRefused
from voipsec.media.performer import LocalMedia, MediaDriver
from voipsec.media.pool import MediaPool
from voipsec.media.relay import LegReport
from voipsec.media.sdes import SUITES, crypto_line, new_master
from voipsec.media.worker import build_relay, socket_path

SUITE = SUITES["AES_CM_128_HMAC_SHA1_80"]
PEER = MediaPeer(source="127.0.0.1")
TICKS = os.sysconf("SC_CLK_TCK")


def sdp(port: int) -> bytes:
    crypto = crypto_line(1, SUITE, new_master(SUITE))
    return (
        "v=0\r\no=- 7 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        f"m=audio {port} RTP/SAVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
        f"a=crypto:{crypto.tag} {crypto.suite} {crypto.key_params}\r\n"
    ).encode()


def cpu_of(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


async def one_call(media: MediaDriver, call: str) -> float:
    loop = asyncio.get_running_loop()

    async def ask(action: AllocateMedia | AnswerMedia) -> None:
        done: asyncio.Future[bytes | MediaRefused] = loop.create_future()
        media.perform(action, done.set_result)
        result = await done
        if isinstance(result, MediaRefused):
            raise SystemExit(f"refused: {result.status} {result.warning}")

    start = time.perf_counter()
    await ask(AllocateMedia(key=1, call=call, side=Side.A, sdp=sdp(4000), peer=PEER))
    await ask(AnswerMedia(key=2, call=call, side=Side.B, sdp=sdp(4002), peer=PEER))
    latency = time.perf_counter() - start
    media.perform(ReleaseMedia(call), lambda result: None)
    report: asyncio.Future[list[LegReport]] = loop.create_future()
    media.report(call, lambda legs: report.set_result(list(legs)))
    if len(await report) != 2:
        raise SystemExit("no release report")
    return latency


async def measure(
    name: str, media: MediaDriver, calls: int, worker_cpu: Callable[[], float]
) -> None:
    for n in range(50):  # warm-up
        await one_call(media, f"warm-{n}")
    cpu, child = time.process_time(), worker_cpu()
    latencies = [await one_call(media, f"call-{n}") for n in range(calls)]
    cpu, child = time.process_time() - cpu, worker_cpu() - child
    latencies.sort()
    p99 = latencies[int(len(latencies) * 0.99) - 1]
    print(
        f"{name:<10} {statistics.median(latencies) * 1e6:>9.0f} {p99 * 1e6:>9.0f} "
        f"{cpu / calls * 1e6:>14.0f} {child / calls * 1e6:>14.0f} "
        f"{(cpu + child) / calls * 1e6:>11.0f}"
    )


async def main(calls: int, ports: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp)
        (data_dir / CONFIG_NAME).write_text(f'[media]\nports = "{ports}"\nworkers = 1\n')
        config: Config = load(data_dir / CONFIG_NAME)
        print(f"{calls} calls, one at a time; µs")
        print(
            f"{'mode':<10} {'rtt p50':>9} {'rtt p99':>9} {'signaling cpu':>14} "
            f"{'worker cpu':>14} {'total cpu':>11}"
        )
        local = LocalMedia(build_relay(config))
        await measure("in-process", local, calls, lambda: 0.0)
        local.close()
        secure_run_dir(data_dir)
        supervisor = Supervisor()
        await supervisor.start(worker_spec("media", data_dir, 0, ["--workers", "1"]))
        pool = MediaPool(paths=[socket_path(data_dir, 0)], timeout=config.media.timeout)
        await pool.start()
        pid = supervisor.pid("media-0")
        assert pid is not None
        await measure("worker", pool, calls, lambda: cpu_of(pid))
        pool.close()
        await supervisor.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--ports", default="40000-40099")
    args = parser.parse_args()
    try:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:
        pass
    asyncio.run(main(args.calls, args.ports))
    sys.exit(0)

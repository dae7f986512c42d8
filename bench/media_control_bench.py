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

``--profile`` instead counts Python function calls per call (cProfile: deterministic,
unlike CPU time on a shared machine): the relay in process, against the pool and a
:class:`voipsec.media.worker.RelayWorker` on a Unix socket in this same process (both
ends of the channel counted; the kernel's side of the socket is not).

    PYTHONPATH=src .venv/bin/python bench/media_control_bench.py --calls 2000
    PYTHONPATH=src .venv/bin/python bench/media_control_bench.py --calls 500 --profile
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
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
from voipsec.media.worker import RelayWorker, build_relay, port_slices, socket_path

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


async def function_calls(media: MediaDriver, calls: int) -> float:
    """Python function calls per call (cProfile), after a warm-up."""
    for n in range(50):
        await one_call(media, f"warm-{n}")
    profile = cProfile.Profile()
    profile.enable()
    for n in range(calls):
        await one_call(media, f"call-{n}")
    profile.disable()
    return float(pstats.Stats(profile).total_calls) / calls  # type: ignore[attr-defined]


async def profile_main(calls: int, ports: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp)
        (data_dir / CONFIG_NAME).write_text(f'[media]\nports = "{ports}"\nworkers = 1\n')
        config = load(data_dir / CONFIG_NAME)
        local = LocalMedia(build_relay(config))
        in_process = await function_calls(local, calls)
        local.close()
        (ports_slice,) = port_slices(config.media.port_range(), 1)
        worker = RelayWorker(build_relay(config, ports_slice))
        path = data_dir / "media-0.sock"
        server = await asyncio.start_unix_server(worker.serve_channel, path=str(path))
        pool = MediaPool(paths=[path], timeout=config.media.timeout)
        await pool.start()
        channel = await function_calls(pool, calls)
        pool.close()
        server.close()
        worker.close()
    print(f"{calls} calls: Python function calls per call (offer, answer, release+report)")
    print(f"  relay in process          {in_process:>8.0f}")
    print(f"  pool + worker, one loop   {channel:>8.0f}  (+{channel - in_process:.0f})")


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
    parser.add_argument("--profile", action="store_true", help="count function calls")
    args = parser.parse_args()
    try:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:
        pass
    asyncio.run((profile_main if args.profile else main)(args.calls, args.ports))
    sys.exit(0)

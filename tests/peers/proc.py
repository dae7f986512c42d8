"""Process and socket helpers for real-peer tests: start, wait with a deadline, stop."""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

DEFAULT_DEADLINE = 20.0


class DeadlineExceeded(AssertionError):
    """A condition did not become true before its deadline."""


def wait_for(
    condition: Callable[[], object], *, deadline: float = DEFAULT_DEADLINE, what: str = ""
) -> object:
    """Poll ``condition`` until it returns a truthy value or ``deadline`` seconds pass."""
    end = time.monotonic() + deadline
    delay = 0.01
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= end:
            raise DeadlineExceeded(f"timed out after {deadline}s waiting for {what or condition}")
        time.sleep(delay)
        delay = min(delay * 2, 0.2)


def port_open(host: str, port: int) -> bool:
    """True when a TCP connect to host:port succeeds."""
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_port(host: str, port: int, *, deadline: float = DEFAULT_DEADLINE) -> None:
    wait_for(lambda: port_open(host, port), deadline=deadline, what=f"{host}:{port} to accept")


#: Test ports come from below the kernel's ephemeral range (32768-60999 here), so no
#: outgoing connection of another process can take one between free_port() and the
#: bind of the program it is for; and above voipsec's default media ports
#: (20000-20999). Each xdist worker has its own slice, so workers never meet.
TEST_PORTS_FIRST = 21000
TEST_PORTS_PER_WORKER = 1500
TEST_PORTS_WORKERS = 7
_handed_out: set[tuple[int, int]] = set()
#: Media relay ports of the servers a worker starts: 300 per xdist worker above the test
#: ports (31500-32699 for gw0-gw3), so a phone of one worker's test that still sends
#: to a relay port after its call never reaches another worker's relay (a stray packet
#: on an unlatched leg counts as an authentication failure there).
RELAY_PORTS_FIRST = TEST_PORTS_FIRST + TEST_PORTS_WORKERS * TEST_PORTS_PER_WORKER
RELAY_PORTS_PER_WORKER = 300
RELAY_PORTS_WORKERS = 4
#: voipsec's own default (media.ports), outside xdist.
DEFAULT_RELAY_PORTS = (20000, 20999)


def relay_ports() -> tuple[int, int]:
    """The media.ports range (low, high) of this xdist worker's servers."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if not worker.startswith("gw") or not worker[2:].isdigit():
        return DEFAULT_RELAY_PORTS
    index = int(worker[2:])
    if index >= RELAY_PORTS_WORKERS:
        return DEFAULT_RELAY_PORTS
    first = RELAY_PORTS_FIRST + index * RELAY_PORTS_PER_WORKER
    return (first, first + RELAY_PORTS_PER_WORKER - 1)


def _worker_slice() -> range | None:
    """This xdist worker's ports (gw0 → the first slice), None outside xdist."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if not worker.startswith("gw") or not worker[2:].isdigit():
        return None
    index = int(worker[2:])
    if index >= TEST_PORTS_WORKERS:
        return None
    first = TEST_PORTS_FIRST + index * TEST_PORTS_PER_WORKER
    return range(first, first + TEST_PORTS_PER_WORKER)


def free_port(host: str = "127.0.0.1", kind: int = socket.SOCK_STREAM) -> int:
    """A port that is free right now on host (TCP by default), never handed out twice
    by this process while its slice lasts."""
    ports = _worker_slice()
    if ports is not None:
        for _ in range(200):
            port = random.choice(ports)
            if (kind, port) in _handed_out:
                continue
            with socket.socket(socket.AF_INET, kind) as s:
                try:
                    s.bind((host, port))
                except OSError:
                    continue
            _handed_out.add((kind, port))
            return port
        _handed_out.clear()  # the slice is used up: start over
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def free_udp_ports(count: int, host: str = "127.0.0.1") -> int:
    """The first of ``count`` consecutive UDP ports (the first even, as RTP/RTCP pairs
    want) that are all free right now, from this xdist worker's slice of test ports
    (below the ephemeral range, so no outgoing socket takes one meanwhile), never
    handed out twice by this process while the slice lasts."""
    ports = _worker_slice() or range(
        TEST_PORTS_FIRST, TEST_PORTS_FIRST + TEST_PORTS_WORKERS * TEST_PORTS_PER_WORKER
    )
    step = count + count % 2
    for first in range(ports.start + ports.start % 2, ports.stop - count + 1, step):
        block = range(first, first + count)
        if any((socket.SOCK_DGRAM, port) in _handed_out for port in block):
            continue
        if _all_bind(host, block):
            _handed_out.update((socket.SOCK_DGRAM, port) for port in block)
            return first
    raise AssertionError(f"no {count} free UDP ports in a row in {ports}")


def _all_bind(host: str, block: range) -> bool:
    sockets: list[socket.socket] = []
    try:
        for port in block:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sockets.append(s)
            s.bind((host, port))
    except OSError:
        return False
    finally:
        for s in sockets:
            s.close()
    return True


def require(program: str) -> str:
    """Path of a peer program; fails (not skips) when it is missing."""
    path = shutil.which(program)
    if path is None:
        raise AssertionError(f"{program} is not installed: run `make peers`")
    return path


def stop(proc: subprocess.Popen[bytes], *, deadline: float = 10.0) -> int:
    """SIGTERM, then SIGKILL after ``deadline``; returns the exit code."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=deadline)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=deadline)
    return int(proc.returncode)


@contextlib.contextmanager
def running(
    argv: Sequence[str],
    *,
    cwd: Path | None = None,
    log: Path | None = None,
    env: dict[str, str] | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    """Run argv for the duration of a with-block, output to ``log`` (or discarded)."""
    out = open(log, "ab") if log is not None else subprocess.DEVNULL  # noqa: SIM115
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    proc = subprocess.Popen(list(argv), cwd=cwd, stdout=out, stderr=subprocess.STDOUT, env=full_env)
    try:
        yield proc
    finally:
        stop(proc)
        if log is not None:
            out.close()  # type: ignore[union-attr]

"""A network namespace of a test's own, with loopback only, that the test thread enters.

Why enter it rather than prefix every command with ``ip netns exec``: the suite's
helpers (``serving`` waiting for the TLS port, ``free_port``, baresip's ctrl_tcp
socket) open sockets from the test process itself. ``setns(2)`` with CLONE_NEWNET moves
only the calling thread; every process it starts afterwards, and every socket it opens,
lives in the namespace, so the helpers work unchanged on the namespace's 127.0.0.1.
Sockets opened before (pytest-xdist's channel, other modules' servers) stay where they
were. On leaving, the thread goes back to the namespace it came from and the namespace
is deleted — also when the test failed.

Python 3.11 has no ``os.setns``; libc's is called through ctypes.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import subprocess
import uuid
from collections.abc import Iterator

from .proc import require

#: setns(2) flag for a network namespace (linux/sched.h).
CLONE_NEWNET = 0x40000000
NETNS_DIR = "/var/run/netns"


def _setns(fd: int) -> None:
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"setns: {os.strerror(errno)}")


def _ip(*args: str) -> None:
    subprocess.run([require("ip"), *args], check=True, capture_output=True, timeout=10)


@contextlib.contextmanager
def entered(prefix: str) -> Iterator[str]:
    """Create ``PREFIX-<random>`` with ``lo`` up, enter it, yield its name.

    The name is unique per run so parallel workers and leftovers of a killed run never
    meet. Processes started inside must be stopped before the block ends (a namespace
    outlives its name while a process is in it).
    """
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    _ip("netns", "add", name)
    try:
        _ip("-n", name, "link", "set", "lo", "up")
        home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        try:
            target = os.open(f"{NETNS_DIR}/{name}", os.O_RDONLY)
            try:
                _setns(target)
            finally:
                os.close(target)
            try:
                yield name
            finally:
                _setns(home)
        finally:
            os.close(home)
    finally:
        _ip("netns", "del", name)

"""UDP socket buffers and their drop counter (voipsec.transport.udp, issue 16 item 9).

The drop counter is read from a real socket made to overflow: a tiny receive buffer,
datagrams sent to it over loopback and never read.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from voipsec.config import DEFAULT_UDP_BUFFER
from voipsec.transport.udp import (
    LINUX_DOUBLES,
    SK_MEMINFO_VARS,
    BufferSizes,
    parse_meminfo,
    receive_drops,
    size_buffers,
)


@pytest.fixture
def udp() -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    yield sock
    sock.close()


class CappedSocket:
    """A socket whose kernel caps buffers at ``cap`` and refuses the FORCE options."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.values: dict[int, int] = {}
        self.forced: list[int] = []

    def setsockopt(self, level: int, option: int, value: int, /) -> None:
        if option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
            self.values[option] = LINUX_DOUBLES * min(value, self.cap)
            return
        self.forced.append(option)
        raise PermissionError(1, "Operation not permitted")

    def getsockopt(self, level: int, option: int, buflen: int = 0, /) -> int | bytes:
        return self.values[option]


def test_udp_size_buffers_default_granted_or_capped_by_the_kernel(udp: socket.socket) -> None:
    # Granted in full where net.core.rmem_max allows 4 MiB (or as root, through
    # SO_RCVBUFFORCE); otherwise capped at twice rmem_max and reported short.
    sizes = size_buffers(udp, DEFAULT_UDP_BUFFER)
    assert udp.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) == sizes.receive
    assert udp.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) == sizes.send
    if sizes.receive < LINUX_DOUBLES * DEFAULT_UDP_BUFFER:
        rmem_max = int(Path("/proc/sys/net/core/rmem_max").read_text())
        assert sizes.receive == LINUX_DOUBLES * rmem_max
        assert sizes.short


def test_udp_size_buffers_capped_tries_force_then_reports_short() -> None:
    sock = CappedSocket(cap=212_992)
    sizes = size_buffers(sock, DEFAULT_UDP_BUFFER)
    assert sizes == BufferSizes(requested=DEFAULT_UDP_BUFFER, receive=425_984, send=425_984)
    assert sizes.short
    assert sock.forced == [33, 32]  # SO_RCVBUFFORCE, SO_SNDBUFFORCE


def test_udp_size_buffers_within_the_cap_does_not_force() -> None:
    sock = CappedSocket(cap=DEFAULT_UDP_BUFFER)
    assert not size_buffers(sock, DEFAULT_UDP_BUFFER).short
    assert sock.forced == []


def test_udp_receive_drops_counts_what_an_overflowing_buffer_lost(udp: socket.socket) -> None:
    assert receive_drops(udp) == 0
    udp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # the kernel's minimum
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for _ in range(200):
            sender.sendto(b"x" * 1000, udp.getsockname())
    finally:
        sender.close()
    queued = 0
    udp.setblocking(False)
    while True:
        try:
            udp.recv(2048)
        except BlockingIOError:
            break
        queued += 1
    drops = receive_drops(udp)
    assert drops is not None
    assert queued + drops == 200
    assert drops > 0


def test_udp_parse_meminfo_reads_the_drops_slot() -> None:
    raw = struct.pack(f"={SK_MEMINFO_VARS}I", 0, 8_388_608, 0, 212_992, 0, 0, 0, 0, 31)
    assert parse_meminfo(raw) == 31


def test_udp_parse_meminfo_too_short_is_none() -> None:
    # An older kernel answers with fewer values (SK_MEMINFO_DROPS came in Linux 4.6).
    assert parse_meminfo(struct.pack("=8I", *range(8))) is None


def test_udp_receive_drops_unavailable_is_none() -> None:
    class NoMeminfo:
        def setsockopt(self, level: int, option: int, value: int, /) -> None: ...

        def getsockopt(self, level: int, option: int, buflen: int = 0, /) -> int | bytes:
            raise OSError(92, "Protocol not available")

    assert receive_drops(NoMeminfo()) is None

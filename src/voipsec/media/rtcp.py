"""RTCP reception report blocks (RFC 3550 §6.4): the far end's view of a stream.

Each phone reports, in its SR or RR, how it received the stream the relay sends it:
the fraction lost since its last report, the cumulative number lost and the
interarrival jitter (RFC 3550 §6.4.1). The relay reads them from the SRTCP it has
already authenticated and decrypted, and keeps the latest per leg beside its own
receive statistics (:mod:`.quality`): the CDR then shows both directions' quality as
each receiver saw it, not only what arrived at the relay.

Only reading: the RTCP itself is relayed unchanged (re-encrypted), as before. A
malformed packet ends the walk through a compound packet and yields what was read so
far; nothing here raises on peer input. Pure: bytes in, blocks out.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

#: Packet types carrying report blocks (RFC 3550 §6.4.1, §6.4.2).
RTCP_SR = 200
RTCP_RR = 201
#: Packets of one compound RTCP packet looked at; the rest is not read.
MAX_RTCP_PACKETS = 16
#: Bytes of the sender info an SR has before its report blocks (RFC 3550 §6.4.1).
_SENDER_INFO = 20
_BLOCK = struct.Struct("!IB3sIIII")
_HEADER = struct.Struct("!BBH")


@dataclass(frozen=True, slots=True)
class ReportBlock:
    """One reception report block: about the stream of ``ssrc``."""

    ssrc: int
    #: Fraction of packets lost since the previous report, 0.0-1.0 (fixed point /256).
    fraction_lost: float
    #: Packets lost since the start of reception (24-bit signed: duplicates can make
    #: it negative).
    cumulative_lost: int
    #: Interarrival jitter in timestamp units.
    jitter: int


def report_blocks(data: bytes | bytearray | memoryview, size: int) -> list[ReportBlock]:
    """The report blocks of the SR/RR packets in the compound RTCP packet
    ``data[:size]`` (already decrypted: no SRTCP trailer is counted in ``size``)."""
    blocks: list[ReportBlock] = []
    offset = 0
    for _ in range(MAX_RTCP_PACKETS):
        if offset + _HEADER.size > size:
            break
        first, packet_type, words = _HEADER.unpack_from(data, offset)
        length = (words + 1) * 4
        if first >> 6 != 2 or offset + length > size:
            break  # RFC 3550 §6.4.1: version 2; the length must fit
        if packet_type in (RTCP_SR, RTCP_RR):
            blocks.extend(_blocks(data, offset, length, packet_type, first & 0x1F))
        offset += length
    return blocks


def _blocks(
    data: bytes | bytearray | memoryview, offset: int, length: int, packet_type: int, count: int
) -> list[ReportBlock]:
    start = offset + 8 + (_SENDER_INFO if packet_type == RTCP_SR else 0)
    if start + count * _BLOCK.size > offset + length:
        return []  # the count claims more blocks than the packet holds
    out = []
    for index in range(count):
        ssrc, fraction, lost, _, jitter, _, _ = _BLOCK.unpack_from(data, start + index * 24)
        out.append(
            ReportBlock(
                ssrc=ssrc,
                fraction_lost=fraction / 256.0,
                cumulative_lost=int.from_bytes(lost, "big", signed=True),
                jitter=jitter,
            )
        )
    return out


__all__ = ["MAX_RTCP_PACKETS", "RTCP_RR", "RTCP_SR", "ReportBlock", "report_blocks"]

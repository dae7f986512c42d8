"""In-place libsrtp sessions: interoperable with pylibsrtp's own Session both ways, with
the replay window and authentication of RFC 3711 kept, statuses returned, not raised."""

from __future__ import annotations

import pylibsrtp
import pytest

from voipsec.media.sdes import SUITES, Suite, inbound_policy, new_master, outbound_policy
from voipsec.media.srtpsession import (
    TRAILER_ROOM,
    PacketBuffer,
    SrtpSession,
    is_replay,
    status_text,
)

HEADER = bytes.fromhex("80000001000000a0deadbeef")
RTP = HEADER + b"\xd5" * 160
RTCP = bytes.fromhex("80c80006deadbeef") + bytes(20)  # a sender report (RFC 3550 §6.4.1)
ALL = pytest.mark.parametrize("suite", list(SUITES.values()), ids=list(SUITES))


def _load(buffer: PacketBuffer, packet: bytes) -> int:
    buffer.view[: len(packet)] = packet
    return len(packet)


def _out(buffer: PacketBuffer, size: int) -> bytes:
    assert size >= 0, status_text(-size)
    return bytes(buffer.view[:size])


def test_srtpsession_buffer_has_room_for_the_trailer() -> None:
    buffer = PacketBuffer(2048)
    assert len(buffer.data) == 2048 + TRAILER_ROOM
    assert buffer.capacity == 2048


def test_srtpsession_buffer_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError, match="capacity must be positive, got 0"):
        PacketBuffer(0)


@ALL
def test_srtpsession_unprotects_what_pylibsrtp_protected(suite: Suite) -> None:
    master = new_master(suite)
    buffer = PacketBuffer(2048)
    receiver = SrtpSession(inbound_policy(suite, master), buffer)
    protected = pylibsrtp.Session(outbound_policy(suite, master)).protect(RTP)
    assert _out(buffer, receiver.unprotect(_load(buffer, protected))) == RTP


@ALL
def test_srtpsession_protects_what_pylibsrtp_unprotects(suite: Suite) -> None:
    master = new_master(suite)
    buffer = PacketBuffer(2048)
    sender = SrtpSession(outbound_policy(suite, master), buffer)
    protected = _out(buffer, sender.protect(_load(buffer, RTP)))
    assert protected[:12] == HEADER
    assert pylibsrtp.Session(inbound_policy(suite, master)).unprotect(protected) == RTP


@ALL
def test_srtpsession_rtcp_round_trip(suite: Suite) -> None:
    master = new_master(suite)
    buffer = PacketBuffer(2048)
    sender = SrtpSession(outbound_policy(suite, master), buffer)
    receiver = SrtpSession(inbound_policy(suite, master), buffer)
    protected = sender.protect_rtcp(_load(buffer, RTCP))
    assert _out(buffer, receiver.unprotect_rtcp(protected)) == RTCP


@ALL
def test_srtpsession_replay_is_refused_as_a_replay(suite: Suite) -> None:
    """RFC 3711 §3.3.2: the same packet twice is refused, and said to be a replay."""
    master = new_master(suite)
    buffer = PacketBuffer(2048)
    receiver = SrtpSession(inbound_policy(suite, master), buffer)
    protected = pylibsrtp.Session(outbound_policy(suite, master)).protect(RTP)
    assert receiver.unprotect(_load(buffer, protected)) == len(RTP)
    result = receiver.unprotect(_load(buffer, protected))
    assert result < 0
    assert is_replay(result)
    assert status_text(-result) == "replay check failed (bad index)"


@ALL
def test_srtpsession_wrong_key_is_an_authentication_failure(suite: Suite) -> None:
    buffer = PacketBuffer(2048)
    receiver = SrtpSession(inbound_policy(suite, new_master(suite)), buffer)
    protected = pylibsrtp.Session(outbound_policy(suite, new_master(suite))).protect(RTP)
    result = receiver.unprotect(_load(buffer, protected))
    assert result < 0
    assert not is_replay(result)
    assert status_text(-result) == "authentication failure"


def test_srtpsession_tampered_packet_fails_authentication() -> None:
    suite = SUITES["AES_CM_128_HMAC_SHA1_80"]
    master = new_master(suite)
    buffer = PacketBuffer(2048)
    receiver = SrtpSession(inbound_policy(suite, master), buffer)
    protected = bytearray(pylibsrtp.Session(outbound_policy(suite, master)).protect(RTP))
    protected[20] ^= 1
    result = receiver.unprotect(_load(buffer, bytes(protected)))
    assert status_text(-result) == "authentication failure"


def test_srtpsession_status_text_of_an_unknown_status() -> None:
    assert status_text(999) == "libsrtp status 999"

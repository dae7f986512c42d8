"""media/control.py: every message round-trips through a frame; malformed frames and
every limit raise ChannelError (the channel is closed), never another exception."""

from __future__ import annotations

import contextlib
import dataclasses
import json
from typing import Any

import pytest

from voipsec.ipc import ChannelError, Frame, FrameDecoder, encode_frame
from voipsec.media import control
from voipsec.media.control import (
    MAX_CALL_KEY,
    MAX_LEGS,
    MAX_PEER_NETWORKS,
    MAX_REQUEST_ID,
    MAX_TIMEOUT_CALLS,
    MAX_WARNING,
    AnsweredNotice,
    AnswerRequest,
    Message,
    OfferRequest,
    RefusalReply,
    ReleaseReply,
    ReleaseRequest,
    SdpReply,
    StatsNotice,
    TimeoutNotice,
    decode,
    encode,
)
from voipsec.media.destinations import MediaPeer
from voipsec.media.quality import StreamReport
from voipsec.media.relay import LegReport, MediaStatistics

SDP = b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
PEER = MediaPeer(source="192.0.2.10", networks=("198.51.100.0/24",))
REPORT = StreamReport(
    packets=10,
    bytes=1700,
    lost=1,
    expected=11,
    out_of_order=0,
    duplicates=0,
    jitter_ms=1.25,
    auth_failures=2,
    replays=3,
    malformed=4,
    wrong_source=5,
    loss_percent=9.09,
    mos=4.1,
)
LEG = LegReport(
    leg="a",
    suite="AES_CM_128_HMAC_SHA1_80",
    rtcp_packets=2,
    received=REPORT,
    local=("127.0.0.1", 20000),
    remote=("192.0.2.10", 4000),
)
STATS = MediaStatistics(
    active_calls=3,
    free_port_pairs=497,
    relayed_packets=12345,
    refused_offers=1,
    timeouts=2,
    refused_destinations=4,
)

MESSAGES: list[Message] = [
    OfferRequest(id=1, call="c1", side="a", sdp=SDP, peer=PEER),
    OfferRequest(id=5, call="c1", side="b", sdp=SDP, peer=PEER, rekey=True),
    AnswerRequest(id=2, call="c1", side="b", sdp=SDP, peer=MediaPeer(source="")),
    AnsweredNotice(call="c1"),
    ReleaseRequest(id=MAX_REQUEST_ID, call="c1"),
    SdpReply(id=1, sdp=SDP),
    RefusalReply(id=2, status=488, warning="SRTP required"),
    ReleaseReply(id=3, legs=(LEG, dataclasses.replace(LEG, leg="b", remote=None))),
    ReleaseReply(id=4, legs=()),
    TimeoutNotice(calls=("c1", "c2")),
    StatsNotice(stats=STATS),
]


def _round_trip(message: Message) -> Message:
    (frame,) = FrameDecoder().feed(encode(message))
    return decode(frame)


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: type(m).__name__)
def test_media_control_message_round_trips(message: Message) -> None:
    assert _round_trip(message) == message


def test_media_control_round_trips_one_byte_at_a_time() -> None:
    data = b"".join(encode(m) for m in MESSAGES)
    decoder = FrameDecoder()
    frames = [f for i in range(len(data)) for f in decoder.feed(data[i : i + 1])]
    assert [decode(f) for f in frames] == MESSAGES


def _bad(kind: str, header: dict[str, Any], payload: bytes = b"") -> str:
    (frame,) = FrameDecoder().feed(encode_frame(kind, header, payload))
    with pytest.raises(ChannelError) as caught:
        decode(frame)
    return str(caught.value)


OFFER = {"id": 1, "call": "c1", "side": "a", "peer": {"source": "192.0.2.1", "networks": []}}


def test_media_control_unknown_kind_is_refused() -> None:
    assert _bad("hello", {}) == "unknown control message 'hello'"


@pytest.mark.parametrize(
    ("header", "error"),
    [
        ({**OFFER, "id": None}, f"id must be an integer in 0..{MAX_REQUEST_ID}"),
        ({**OFFER, "id": True}, f"id must be an integer in 0..{MAX_REQUEST_ID}"),
        ({**OFFER, "id": -1}, f"id must be an integer in 0..{MAX_REQUEST_ID}"),
        ({**OFFER, "id": MAX_REQUEST_ID + 1}, f"id must be an integer in 0..{MAX_REQUEST_ID}"),
        ({**OFFER, "call": ""}, "call must not be empty"),
        ({**OFFER, "call": 7}, f"call must be a string of at most {MAX_CALL_KEY} characters"),
        (
            {**OFFER, "call": "c" * (MAX_CALL_KEY + 1)},
            f"call must be a string of at most {MAX_CALL_KEY} characters",
        ),
        ({**OFFER, "side": "c"}, "side must be 'a' or 'b'"),
        ({**OFFER, "rekey": 1}, "rekey must be true or false"),
        ({**OFFER, "rekey": "true"}, "rekey must be true or false"),
        ({**OFFER, "peer": "192.0.2.1"}, "peer must be an object"),
        (
            {**OFFER, "peer": {"source": "192.0.2.1", "networks": "10.0.0.0/8"}},
            f"peer networks must be at most {MAX_PEER_NETWORKS} strings",
        ),
        (
            {
                **OFFER,
                "peer": {
                    "source": "192.0.2.1",
                    "networks": ["10.0.0.0/8"] * (MAX_PEER_NETWORKS + 1),
                },
            },
            f"peer networks must be at most {MAX_PEER_NETWORKS} strings",
        ),
    ],
)
def test_media_control_bad_offer_field_is_refused(header: dict[str, Any], error: str) -> None:
    assert _bad("offer", header, SDP) == error


def test_media_control_peer_networks_at_the_limit_pass() -> None:
    peer = MediaPeer(source="192.0.2.1", networks=("10.0.0.0/8",) * MAX_PEER_NETWORKS)
    offer = OfferRequest(id=1, call="c", side="a", sdp=SDP, peer=peer)
    assert _round_trip(offer) == offer


def test_media_control_offer_without_rekey_is_a_plain_offer_both_ways() -> None:
    """The flag is sent only when set: a plain offer's frame is what it was before
    (a worker of the previous release reads it), and one without it decodes false."""
    (frame,) = FrameDecoder().feed(encode(MESSAGES[0]))
    assert "rekey" not in frame.header
    (flagged,) = FrameDecoder().feed(encode(MESSAGES[1]))
    assert flagged.header["rekey"] is True
    assert decode(frame) == OfferRequest(id=1, call="c1", side="a", sdp=SDP, peer=PEER)


def test_media_control_refusal_limits() -> None:
    warning = f"warning must be a string of at most {MAX_WARNING} characters"
    assert _bad("refused", {"id": 1, "status": 488, "warning": "w" * (MAX_WARNING + 1)}) == warning
    assert _bad("refused", {"id": 1, "status": 99, "warning": ""}) == (
        "status must be an integer in 100..699"
    )
    long = RefusalReply(id=1, status=503, warning="w" * MAX_WARNING)
    assert _round_trip(long) == long


def _bad_legs(legs: object) -> str:
    """A release reply whose legs (in the payload, issue 17) are ``legs``."""
    return _bad("released", {"id": 1}, json.dumps(legs).encode())


def test_media_control_release_report_limits() -> None:
    leg = control._leg_fields(LEG)
    assert _bad_legs([leg] * (MAX_LEGS + 1)) == f"legs must be a list of at most {MAX_LEGS}"
    assert _bad_legs([{**leg, "leg": "x"}]) == "side must be 'a' or 'b'"
    assert _bad_legs([{**leg, "local": ["127.0.0.1"]}]) == "an address must be [host, port]"
    received = {**leg["received"], "packets": "10"}
    assert _bad_legs([{**leg, "received": received}]) == (
        "received must hold exactly a stream report's numbers"
    )
    extra = {**leg["received"], "secret": 1}
    assert _bad_legs([{**leg, "received": extra}]) == (
        "received must hold exactly a stream report's numbers"
    )
    assert _bad_legs(["a"]) == "a leg report must be an object"
    assert (
        _bad_legs([{**leg, "kind": "x" * 33}]) == "kind must be a string of at most 32 characters"
    )
    assert _bad("released", {"id": 1}, b"{not json") == "a release reply's legs must be JSON"


def test_media_control_a_release_reply_at_max_legs_fits_a_frame() -> None:
    """The worst case: MAX_LEGS reports with IPv6 addresses, long-kind free (kinds are
    audio/video/text), every counter at its largest: one frame carries them."""
    big = dataclasses.replace(
        LEG,
        local=("2001:db8:ffff:ffff:ffff:ffff:ffff:ffff", 65535),
        remote=("2001:db8:ffff:ffff:ffff:ffff:ffff:fffe", 65535),
        rtcp_packets=2**62,
        stream=7,
        kind="video",
    )
    reply = ReleaseReply(id=MAX_REQUEST_ID, legs=(big,) * MAX_LEGS)
    assert _round_trip(reply) == reply


def test_media_control_timeout_notice_limit() -> None:
    calls = [f"c{n}" for n in range(MAX_TIMEOUT_CALLS + 1)]
    assert _bad("timeout", {"calls": calls}) == (
        f"calls must be a list of at most {MAX_TIMEOUT_CALLS}"
    )
    at_limit = TimeoutNotice(calls=tuple(calls[:MAX_TIMEOUT_CALLS]))
    assert _round_trip(at_limit) == at_limit


def test_media_control_stats_must_be_the_relays_counters() -> None:
    fields = dataclasses.asdict(STATS)
    error = "stats must hold exactly the relay's integer counters"
    assert _bad("stats", {"stats": {**fields, "active_calls": 1.5}}) == error
    assert _bad("stats", {"stats": {**fields, "active_calls": True}}) == error
    assert _bad("stats", {"stats": {k: v for k, v in fields.items() if k != "timeouts"}}) == error
    assert _bad("stats", {"stats": [1, 2]}) == "stats must be an object"


def test_media_control_decode_raises_only_channel_error_on_any_header() -> None:
    # Every kind with junk headers: the decoder's one exception family (STYLE.md 6).
    junk: list[Any] = [None, 1, "x", [], {}, {"a": 1}, [1, 2, 3]]
    for kind in ("offer", "answer", "answered", "release", "sdp", "refused", "released"):
        for value in junk:
            for name in ("id", "call", "side", "peer", "legs", "status", "warning"):
                frame = Frame(kind=kind, header={**OFFER, name: value}, payload=b"")
                with contextlib.suppress(ChannelError):
                    decode(frame)

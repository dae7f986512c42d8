"""The control protocol between signaling and the media relay workers (sans-IO).

How this works: a signaling process drives each relay worker over a Unix socket with
the frames of :mod:`voipsec.ipc` (JSON header, raw payload). A request carries an id
the signaling side chose; the worker answers it once, with the same id:

==================  =======================  ===========================================
kind                direction                meaning
==================  =======================  ===========================================
``offer``           signaling → worker       an SDP offer of a call leg (payload: SDP;
                                             ``"rekey": true`` for a transfer's offer)
``answer``          signaling → worker       an SDP answer of a call leg (payload: SDP)
``answered``        signaling → worker       the call was answered (no reply)
``release``         signaling → worker       the call is over: free its ports
``sdp``             worker → signaling       the rewritten SDP of an offer or answer
``refused``         worker → signaling       the relay refused: status and Warning text
``released``        worker → signaling       the call's per-leg reports (for the CDR)
``timeout``         worker → signaling       answered calls whose media stopped
``stats``           worker → signaling       the worker's relay statistics
==================  =======================  ===========================================

A leg's :class:`~voipsec.media.destinations.MediaPeer` (where its SIP came from, the
networks its media may use) crosses intact, so the relay's SSRF checks see what the
signaling side saw. SRTP keys never cross this channel in a header: they exist only
inside the rewritten SDP (the payload), as they do on the wire to the phones.

Nothing here touches a socket or a clock: :func:`encode` makes bytes, :func:`decode`
turns a :class:`~voipsec.ipc.Frame` into a message. It reuses the relay's report types
(:class:`~voipsec.media.relay.LegReport`, ``MediaStatistics``) so that a report from a
worker is exactly what the in-process relay returns.

Failure mode: fails closed. Anything that is not a well-formed message within the
limits below raises :class:`~voipsec.ipc.ChannelError`; the shell closes the channel.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

from ..ipc import ChannelError, Frame, encode_frame
from .destinations import MediaPeer
from .legs import MAX_RETIRED_LEGS, LegReport, MediaStatistics
from .quality import StreamReport
from .streams import MAX_STREAMS

#: Longest call key (the B2BUA's call id: 32 hex characters today; headroom).
MAX_CALL_KEY = 128
#: Longest Warning text of a refusal (the relay's own, short, sentences).
MAX_WARNING = 512
#: Networks of one MediaPeer (a zone's or trunk's CIDRs; config lists are short).
MAX_PEER_NETWORKS = 64
#: Leg reports of one call: two per stream, and the closed streams' kept ones.
MAX_LEGS = 2 * MAX_STREAMS + MAX_RETIRED_LEGS
#: Longest media kind named in a leg report (an m= line's media token).
MAX_KIND = 32
#: Calls named by one timeout notice (the worker splits longer lists).
MAX_TIMEOUT_CALLS = 1024
#: Largest request id: JSON numbers are exact up to 2**53.
MAX_REQUEST_ID = 2**53
#: The sides of a call a leg can be.
SIDES = ("a", "b")


@dataclass(frozen=True, slots=True, kw_only=True)
class OfferRequest:
    id: int
    call: str
    side: str
    sdp: bytes
    peer: MediaPeer
    #: A blind transfer's offer: fresh keys for the other leg (MediaRelay.offer). Sent
    #: only when true, so an offer reads the same as before to a worker without it.
    rekey: bool = False
    #: The other side is a browser: offer it DTLS-SRTP (MediaRelay.offer). Sent only
    #: when true, like ``rekey``.
    webrtc: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class AnswerRequest:
    id: int
    call: str
    side: str
    sdp: bytes
    peer: MediaPeer


@dataclass(frozen=True, slots=True, kw_only=True)
class AnsweredNotice:
    call: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ReleaseRequest:
    id: int
    call: str


@dataclass(frozen=True, slots=True, kw_only=True)
class SdpReply:
    id: int
    sdp: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class RefusalReply:
    id: int
    status: int
    warning: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ReleaseReply:
    id: int
    legs: tuple[LegReport, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class TimeoutNotice:
    calls: tuple[str, ...]
    #: Why their media ended, the CDR reason: empty for the media timeout, else e.g.
    #: "DTLS fingerprint mismatch" (MediaRelay.failures). Sent only when not empty.
    reason: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class StatsNotice:
    stats: MediaStatistics


#: Field names of the report types, computed once (dataclasses.asdict deep-copies and
#: dataclasses.fields() rebuilds a tuple on every call: both cost per message).
_REPORT_FIELDS = tuple(f.name for f in dataclasses.fields(StreamReport))
_STATS_FIELDS = tuple(f.name for f in dataclasses.fields(MediaStatistics))

#: What the signaling side sends.
Request = OfferRequest | AnswerRequest | AnsweredNotice | ReleaseRequest
#: What a worker sends: replies (with the request's id) and notices.
Reply = SdpReply | RefusalReply | ReleaseReply
Notice = TimeoutNotice | StatsNotice
Message = Request | Reply | Notice


# -- encoding ---------------------------------------------------------------------------


def encode(message: Message) -> bytes:
    """The frame of ``message`` (ChannelError beyond the ipc frame limits)."""
    if isinstance(message, OfferRequest | AnswerRequest):
        kind = "offer" if isinstance(message, OfferRequest) else "answer"
        header = {"id": message.id, "call": message.call, "side": message.side}
        header["peer"] = {"source": message.peer.source, "networks": list(message.peer.networks)}
        if isinstance(message, OfferRequest) and message.rekey:
            header["rekey"] = True
        if isinstance(message, OfferRequest) and message.webrtc:
            header["webrtc"] = True
        return encode_frame(kind, header, message.sdp)
    if isinstance(message, AnsweredNotice):
        return encode_frame("answered", {"call": message.call})
    if isinstance(message, ReleaseRequest):
        return encode_frame("release", {"id": message.id, "call": message.call})
    if isinstance(message, SdpReply):
        return encode_frame("sdp", {"id": message.id}, message.sdp)
    if isinstance(message, RefusalReply):
        fields = {"id": message.id, "status": message.status, "warning": message.warning}
        return encode_frame("refused", fields)
    if isinstance(message, ReleaseReply):
        legs = [_leg_fields(leg) for leg in message.legs]
        # In the payload, not the header: a call's reports (up to MAX_LEGS of them)
        # outgrow the 16 KiB header limit; the frame's 256 KiB holds them (issue 17).
        body = json.dumps(legs, separators=(",", ":")).encode()
        return encode_frame("released", {"id": message.id}, body)
    if isinstance(message, TimeoutNotice):
        notice: dict[str, Any] = {"calls": list(message.calls)}
        if message.reason:
            notice["reason"] = message.reason
        return encode_frame("timeout", notice)
    stats = message.stats
    return encode_frame("stats", {"stats": {n: getattr(stats, n) for n in _STATS_FIELDS}})


def _leg_fields(leg: LegReport) -> dict[str, Any]:
    return {
        "leg": leg.leg,
        "suite": leg.suite,
        "rtcp_packets": leg.rtcp_packets,
        "received": {name: getattr(leg.received, name) for name in _REPORT_FIELDS},
        "local": list(leg.local),
        "remote": None if leg.remote is None else list(leg.remote),
        "stream": leg.stream,
        "kind": leg.kind,
    }


# -- decoding ---------------------------------------------------------------------------


def decode(frame: Frame) -> Message:
    """The message of ``frame``; ChannelError for an unknown kind or a bad field."""
    decoder = _DECODERS.get(frame.kind)
    if decoder is None:
        raise ChannelError(f"unknown control message {frame.kind[:32]!r}")
    try:
        return decoder(frame)
    except (TypeError, ValueError, KeyError) as err:
        raise ChannelError(f"bad {frame.kind} message: {err}") from None


def _rewrite(frame: Frame) -> OfferRequest | AnswerRequest:
    h = frame.header
    request_id, call, side, peer = _request_id(h), _call(h), _side(h), _peer(h.get("peer"))
    if frame.kind == "answer":
        return AnswerRequest(id=request_id, call=call, side=side, sdp=frame.payload, peer=peer)
    return OfferRequest(
        id=request_id,
        call=call,
        side=side,
        sdp=frame.payload,
        peer=peer,
        rekey=_flag(h, "rekey"),
        webrtc=_flag(h, "webrtc"),
    )


def _flag(header: dict[str, Any], name: str) -> bool:
    """An offer's flag (``rekey``, ``webrtc``): absent is false; anything but a JSON
    boolean fails."""
    value = header.get(name, False)
    if not isinstance(value, bool):
        raise ChannelError(f"{name} must be true or false")
    return value


def _answered(frame: Frame) -> AnsweredNotice:
    return AnsweredNotice(call=_call(frame.header))


def _release(frame: Frame) -> ReleaseRequest:
    return ReleaseRequest(id=_request_id(frame.header), call=_call(frame.header))


def _sdp(frame: Frame) -> SdpReply:
    return SdpReply(id=_request_id(frame.header), sdp=frame.payload)


def _refused(frame: Frame) -> RefusalReply:
    h = frame.header
    status = _int(h, "status", 100, 699)
    return RefusalReply(id=_request_id(h), status=status, warning=_text(h, "warning", MAX_WARNING))


def _released(frame: Frame) -> ReleaseReply:
    try:
        legs = json.loads(frame.payload or b"[]")
    except ValueError:
        raise ChannelError("a release reply's legs must be JSON") from None
    if not isinstance(legs, list) or len(legs) > MAX_LEGS:
        raise ChannelError(f"legs must be a list of at most {MAX_LEGS}")
    return ReleaseReply(id=_request_id(frame.header), legs=tuple(_leg(x) for x in legs))


def _timeout(frame: Frame) -> TimeoutNotice:
    calls = frame.header.get("calls")
    if not isinstance(calls, list) or len(calls) > MAX_TIMEOUT_CALLS:
        raise ChannelError(f"calls must be a list of at most {MAX_TIMEOUT_CALLS}")
    reason = _text(frame.header, "reason", MAX_WARNING) if "reason" in frame.header else ""
    return TimeoutNotice(calls=tuple(_call({"call": c}) for c in calls), reason=reason)


def _stats(frame: Frame) -> StatsNotice:
    fields = frame.header.get("stats")
    if not isinstance(fields, dict):
        raise ChannelError("stats must be an object")
    if fields.keys() != set(_STATS_FIELDS) or not all(_is_int(v) for v in fields.values()):
        raise ChannelError("stats must hold exactly the relay's integer counters")
    return StatsNotice(stats=MediaStatistics(**fields))


_DECODERS = {
    "offer": _rewrite,
    "answer": _rewrite,
    "answered": _answered,
    "release": _release,
    "sdp": _sdp,
    "refused": _refused,
    "released": _released,
    "timeout": _timeout,
    "stats": _stats,
}


# -- fields -----------------------------------------------------------------------------


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _int(header: dict[str, Any], name: str, low: int, high: int) -> int:
    value = header.get(name)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ChannelError(f"{name} must be an integer in {low}..{high}")
    return value


def _text(header: dict[str, Any], name: str, limit: int) -> str:
    value = header.get(name)
    if not isinstance(value, str) or len(value) > limit:
        raise ChannelError(f"{name} must be a string of at most {limit} characters")
    return value


def _request_id(header: dict[str, Any]) -> int:
    return _int(header, "id", 0, MAX_REQUEST_ID)


def _call(header: dict[str, Any]) -> str:
    call = _text(header, "call", MAX_CALL_KEY)
    if not call:
        raise ChannelError("call must not be empty")
    return call


def _side(header: dict[str, Any]) -> str:
    side = header.get("side")
    if side not in SIDES:
        raise ChannelError("side must be 'a' or 'b'")
    return str(side)


def _peer(value: object) -> MediaPeer:
    if not isinstance(value, dict):
        raise ChannelError("peer must be an object")
    source = _text(value, "source", 64)
    networks = value.get("networks")
    if (
        not isinstance(networks, list)
        or len(networks) > MAX_PEER_NETWORKS
        or not all(isinstance(n, str) and len(n) <= 64 for n in networks)
    ):
        raise ChannelError(f"peer networks must be at most {MAX_PEER_NETWORKS} strings")
    return MediaPeer(source=source, networks=tuple(networks))


def _address(value: object) -> tuple[str, int]:
    if (
        not isinstance(value, list)
        or len(value) != 2
        or not isinstance(value[0], str)
        or not _is_int(value[1])
    ):
        raise ChannelError("an address must be [host, port]")
    return value[0], value[1]


def _stream_report(fields: dict[str, Any]) -> StreamReport:
    numbers = all(isinstance(v, int | float) and not isinstance(v, bool) for v in fields.values())
    if fields.keys() != set(_REPORT_FIELDS) or not numbers:
        raise ChannelError("received must hold exactly a stream report's numbers")
    return StreamReport(**fields)


def _leg(value: object) -> LegReport:
    if not isinstance(value, dict):
        raise ChannelError("a leg report must be an object")
    received = value.get("received")
    if not isinstance(received, dict):
        raise ChannelError("a leg report's received must be an object")
    remote = value.get("remote")
    return LegReport(
        leg=_side({"side": value.get("leg")}),
        suite=_text(value, "suite", 64),
        rtcp_packets=_int(value, "rtcp_packets", 0, 2**63),
        received=_stream_report(received),
        local=_address(value.get("local")),
        remote=None if remote is None else _address(remote),
        stream=_int(value, "stream", 0, MAX_STREAMS - 1),
        kind=_text(value, "kind", MAX_KIND),
    )


__all__ = [
    "MAX_CALL_KEY",
    "MAX_LEGS",
    "MAX_PEER_NETWORKS",
    "MAX_REQUEST_ID",
    "MAX_TIMEOUT_CALLS",
    "MAX_WARNING",
    "AnswerRequest",
    "AnsweredNotice",
    "Message",
    "Notice",
    "OfferRequest",
    "RefusalReply",
    "ReleaseReply",
    "ReleaseRequest",
    "Reply",
    "Request",
    "SdpReply",
    "StatsNotice",
    "TimeoutNotice",
    "decode",
    "encode",
]

"""The shell's side of the media actions (voipsec.media.performer) on a fake relay."""

from __future__ import annotations

from voipsec.core.callmodel import (
    AllocateMedia,
    AnswerMedia,
    MediaAnswered,
    ReleaseMedia,
    Side,
)
from voipsec.media.destinations import MediaPeer
from voipsec.media.errors import MediaRefused
from voipsec.media.performer import perform

PEER = MediaPeer(source="192.0.2.7")


class _Relay:
    """Records every call; refuses SDP that says so."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, ...]] = []

    def _rewrite(self, kind: str, call: str, side: str, body: bytes, peer: MediaPeer) -> bytes:
        self.calls.append((kind, call, side, peer.source))
        if body == b"refuse":
            raise MediaRefused(488, "SRTP required")
        return body.upper()

    def offer(
        self,
        call: str,
        side: str,
        body: bytes,
        peer: MediaPeer,
        *,
        rekey: bool = False,
        webrtc: bool = False,
    ) -> bytes:
        kind = "rekey" if rekey else "webrtc" if webrtc else "offer"
        return self._rewrite(kind, call, side, body, peer)

    def answer(self, call: str, side: str, body: bytes, peer: MediaPeer) -> bytes:
        return self._rewrite("answer", call, side, body, peer)

    def answered(self, call: str) -> None:
        self.calls.append(("answered", call))

    def release(self, call: str) -> None:
        self.calls.append(("release", call))


def test_media_performer_requests_return_the_rewritten_sdp() -> None:
    relay = _Relay()
    assert perform(relay, AllocateMedia(1, "c1", Side.A, b"offer", PEER)) == b"OFFER"
    assert perform(relay, AnswerMedia(2, "c1", Side.B, b"answer", PEER)) == b"ANSWER"
    assert perform(relay, AllocateMedia(3, "c1", Side.B, b"again", PEER, rekey=True)) == b"AGAIN"
    assert relay.calls == [
        ("offer", "c1", "a", "192.0.2.7"),
        ("answer", "c1", "b", "192.0.2.7"),
        ("rekey", "c1", "b", "192.0.2.7"),
    ]


def test_media_performer_refusal_is_a_result_not_an_exception() -> None:
    result = perform(_Relay(), AllocateMedia(1, "c1", Side.A, b"refuse", PEER))
    assert isinstance(result, MediaRefused)
    assert (result.status, result.warning) == (488, "SRTP required")


def test_media_performer_notices_have_no_result() -> None:
    relay = _Relay()
    assert perform(relay, MediaAnswered("c1")) is None
    assert perform(relay, ReleaseMedia("c1")) is None
    assert relay.calls == [("answered", "c1"), ("release", "c1")]

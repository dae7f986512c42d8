"""Carrying out the B2BUA's media actions on a relay in this process (shell side).

The B2BUA (:mod:`voipsec.core.b2bua`) never calls the relay: a call step that needs a
rewritten SDP returns :class:`~voipsec.core.callmodel.AllocateMedia` (an offer) or
:class:`~voipsec.core.callmodel.AnswerMedia` (an answer) and waits; the call shell
hands the action to a :class:`MediaDriver` and feeds the result, when it comes, to
``B2bua.on_media(key, result, now)``. ``voipsec serve`` drives relay worker processes
over Unix sockets (:class:`voipsec.media.pool.MediaPool`: the result arrives later);
:class:`LocalMedia` runs the relay in this process and answers at once (what
``build_sip_service`` gives unit tests). Nothing in the core tells them apart.

Failure mode: a refusal of the relay (an SDP it cannot carry, no free port pair) is a
result, not an exception: the B2BUA answers it with the status and Warning it carries.
Any other exception is a bug of the relay and propagates to the shell.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from ..core.callmodel import (
    AllocateMedia,
    AnswerMedia,
    MediaAnswered,
    MediaResult,
    ReleaseMedia,
)
from .destinations import MediaPeer
from .errors import MediaRefused
from .relay import LegReport, MediaRelay, MediaStatistics

#: The media actions of the B2BUA, each carried out by :func:`perform`.
MediaAction = AllocateMedia | AnswerMedia | MediaAnswered | ReleaseMedia
#: Gets the result of an offer or answer: the rewritten SDP or the refusal.
ResultCallback = Callable[[MediaResult], None]
#: Gets a released call's per-leg reports (empty when there are none).
ReportCallback = Callable[[Sequence[LegReport]], None]


class MediaHandler(Protocol):
    """The media relay, as the call shell drives it: SDP in, rewritten SDP out.

    ``side`` is "a" or "b": the leg the SDP came from; ``peer`` is where that leg's SIP
    comes from, the only address its SDP may name (SSRF, issue 13). ``offer``/``answer``
    raise :class:`MediaRefused` for an SDP that cannot be carried (488 with a Warning).
    """

    def offer(
        self,
        call: str,
        side: str,
        body: bytes,
        peer: MediaPeer,
        *,
        rekey: bool = False,
        webrtc: bool = False,
    ) -> bytes: ...

    def answer(self, call: str, side: str, body: bytes, peer: MediaPeer) -> bytes: ...

    def answered(self, call: str) -> None: ...

    def release(self, call: str) -> None: ...


def perform(media: MediaHandler, action: MediaAction) -> MediaResult | None:
    """Carry out ``action`` on ``media``: the result of a request (the rewritten SDP or
    the refusal), None for the fire-and-forget actions."""
    if isinstance(action, MediaAnswered):
        media.answered(action.call)
        return None
    if isinstance(action, ReleaseMedia):
        media.release(action.call)
        return None
    try:
        if isinstance(action, AllocateMedia):
            side = action.side.value
            return media.offer(
                action.call, side, action.sdp, action.peer, rekey=action.rekey, webrtc=action.webrtc
            )
        return media.answer(action.call, action.side.value, action.sdp, action.peer)
    except MediaRefused as err:
        return err


class MediaDriver(Protocol):
    """How the call shell has media actions carried out, wherever the relay runs."""

    #: Seconds without media before an answered call is ended (for log lines).
    timeout: float

    def perform(self, action: MediaAction, done: ResultCallback) -> None:
        """Carry out ``action``; ``done`` gets an offer's or answer's result (maybe
        later: the B2BUA waits under the action's key)."""
        ...

    def report(self, call: str, done: ReportCallback) -> None:
        """``done`` gets the call's final leg reports once its release is carried out."""
        ...

    def sweep(self) -> list[tuple[str, str]]:
        """Calls the relay says must end, each with its CDR reason."""
        ...

    def statistics(self) -> MediaStatistics: ...

    def close(self) -> None: ...


class LocalMedia:
    """The relay in this process as a :class:`MediaDriver`: every result at once."""

    def __init__(self, relay: MediaRelay) -> None:
        self.relay = relay
        self.timeout = relay.timeout

    def perform(self, action: MediaAction, done: ResultCallback) -> None:
        result = perform(self.relay, action)
        if result is not None:
            done(result)

    def report(self, call: str, done: ReportCallback) -> None:
        done(self.relay.report(call))

    def sweep(self) -> list[tuple[str, str]]:
        timed_out = [(call, "media timeout") for call in self.relay.sweep()]
        return timed_out + self.relay.failures()

    def statistics(self) -> MediaStatistics:
        return self.relay.statistics()

    def close(self) -> None:
        self.relay.close()

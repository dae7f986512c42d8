"""Carrying out the B2BUA's media actions on a relay in this process (shell side).

The B2BUA (:mod:`voipsec.core.b2bua`) never calls the relay: a call step that needs a
rewritten SDP returns :class:`~voipsec.core.callmodel.AllocateMedia` (an offer) or
:class:`~voipsec.core.callmodel.AnswerMedia` (an answer) and waits; the call shell
hands the action to :func:`perform` and feeds what comes back to
``B2bua.on_media(key, result, now)``. Today the relay runs in this process and answers
at once; the performance issue moves it to worker processes behind a Unix socket,
where the same request is sent and its result arrives later, with nothing in the core
to change.

Failure mode: a refusal of the relay (an SDP it cannot carry, no free port pair) is a
result, not an exception: the B2BUA answers it with the status and Warning it carries.
Any other exception is a bug of the relay and propagates to the shell.
"""

from __future__ import annotations

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

#: The media actions of the B2BUA, each carried out by :func:`perform`.
MediaAction = AllocateMedia | AnswerMedia | MediaAnswered | ReleaseMedia


class MediaHandler(Protocol):
    """The media relay, as the call shell drives it: SDP in, rewritten SDP out.

    ``side`` is "a" or "b": the leg the SDP came from; ``peer`` is where that leg's SIP
    comes from, the only address its SDP may name (SSRF, issue 13). ``offer``/``answer``
    raise :class:`MediaRefused` for an SDP that cannot be carried (488 with a Warning).
    """

    def offer(self, call: str, side: str, body: bytes, peer: MediaPeer) -> bytes: ...

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
    rewrite = media.offer if isinstance(action, AllocateMedia) else media.answer
    try:
        return rewrite(action.call, action.side.value, action.sdp, action.peer)
    except MediaRefused as err:
        return err

"""Which phone of a call must be sending RTP, and when its silence ends the call.

Hold is not silence (issue 17 item 2). The relay's media timeout ends a call whose
media stopped, but a stream on hold legitimately carries nothing: a phone that holds
marks the stream ``sendonly`` (or ``inactive`` when it is itself held), the other
answers ``recvonly`` (or ``inactive``), and from then on the holder may send music on
hold or nothing, and the held phone must send nothing (RFC 3264 §8.4). linphone even
stops RTCP on an ``inactive`` stream (docs/interop.md), so no packet at all arrives.

How it works: each leg remembers the direction its phone last declared (its latest
offer or answer, :func:`declared`). A phone is *expected to send* only when it said
``sendrecv`` and the other phone's latest word lets it (``sendrecv`` or ``recvonly``,
RFC 3264 §6.1): :func:`expected`. A ``sendonly`` phone is on hold by its own word
and is not required to send (music on hold is optional), so only a two-way or a
one-way ``sendrecv``→``recvonly`` sender is counted. The latest SDP from each side
counts at once, before the exchange completes: a phone that sends a hold offer stops
sending with it, and waiting for the answer would cut it.

A leg's silence counts from the latest of: the call's answer, the moment the leg became
expected to send (a resume restarts the count), and its last valid packet
(:func:`silent`). A call is ended when any leg that should be sending is silent for
longer than ``[media] timeout``, so a phone that vanishes without a BYE during a
two-way call is still cut, even while the other phone keeps talking; a held call whose
far end vanished is ended by the in-dialog OPTIONS probe (core/b2bua.py, ``PROBE``).

Pure: no clock, no sockets; the relay passes ``now`` in.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from .sdp import Media, Sdp

#: The direction attributes of RFC 8866 §6.7; a stream without one is sendrecv.
DIRECTIONS = frozenset({"sendrecv", "sendonly", "recvonly", "inactive"})
#: Declared directions under which a phone accepts media from the other (RFC 3264 §6.1).
RECEIVING = frozenset({"sendrecv", "recvonly"})
#: What a phone that wants nothing sent to it still does, by its declared direction.
_WITHOUT_RECEIVING = {
    "sendrecv": "sendonly",
    "recvonly": "inactive",
    "sendonly": "sendonly",
    "inactive": "inactive",
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Expectation:
    """Whether a leg's phone must be sending, and since when (its silence counts from
    there at the earliest)."""

    sending: bool
    since: float


#: A leg before any SDP: RFC 3264's default is sendrecv.
INITIAL = Expectation(sending=True, since=0.0)


def declared(sdp: Sdp, media: Media) -> str:
    """The direction a phone declared for ``media`` in its SDP ``sdp``.

    The media-level attribute wins over the session-level one, and sendrecv is the
    default (RFC 8866 §6.7). A connection address of 0.0.0.0 (RFC 2543 hold, RFC 3264
    §8.4) means the phone receives nothing, whatever the attribute says.
    """
    direction = _attribute(media) or _session_attribute(sdp) or "sendrecv"
    if _unspecified(sdp.address(media)):
        return _WITHOUT_RECEIVING[direction]
    return direction


def expected(own: str, other: str) -> bool:
    """Must the phone that declared ``own`` be sending, the other having declared
    ``other``? Only a ``sendrecv`` phone whose peer receives (RFC 3264 §6.1)."""
    return own == "sendrecv" and other in RECEIVING


def update(previous: Expectation, sending: bool, now: float) -> Expectation:
    """The leg's expectation after an SDP: a leg that starts being expected to send
    (a resume from hold) is given a whole timeout from ``now``."""
    if sending == previous.sending:
        return previous
    return Expectation(sending=sending, since=now)


def silent(
    expectation: Expectation,
    *,
    heard: float,
    answered_at: float | None,
    now: float,
    timeout: float,
) -> bool:
    """Has a leg that should be sending sent nothing valid for longer than ``timeout``?

    ``heard`` is when its last valid packet (RTP or RTCP) passed; nothing counts
    before the call is answered (``answered_at`` None: ringing).
    """
    if answered_at is None or not expectation.sending:
        return False
    return now - max(answered_at, expectation.since, heard) > timeout


def _unspecified(address: str | None) -> bool:
    """RFC 2543 hold: a connection address of all zeros means "send me nothing" (RFC
    3264 §8.4 says an answerer must still understand it)."""
    return address is not None and ipaddress.ip_address(address).is_unspecified


def _attribute(media: Media) -> str | None:
    for name, _ in media.attributes:
        if name in DIRECTIONS:
            return name
    return None


def _session_attribute(sdp: Sdp) -> str | None:
    for name, _ in sdp.session_attributes:
        if name in DIRECTIONS:
            return name
    return None


__all__ = ["DIRECTIONS", "INITIAL", "Expectation", "declared", "expected", "silent", "update"]

"""Plain RTP/AVP fallback of a B-leg INVITE when ``media.srtp = "optional"``.

How this works: voipsec offers the callee SRTP (RTP/SAVP with SDES ``a=crypto``,
RFC 4568) whatever the caller offered. A phone that can only do RTP/AVP answers such
an offer 488 Not Acceptable Here (RFC 3261 §21.4.26; RFC 3264 §6 lets it refuse the
whole offer), some 415 or 606 Not Acceptable (§21.6.4). In optional mode the B2BUA
then sends that fork's INVITE once more, with a new branch and CSeq (the retry of
RFC 3261 §8.1.3.5 after a 4xx that names a fixable cause), offering the same streams
as RTP/AVP without any ``a=crypto`` line: :func:`plain_retry_offer` decides whether
and builds that offer. A fork already retried, a late offer (the caller's INVITE had
no SDP) or an offer that was not SRTP is never retried, so a second refusal ends the
fork as usual (the caller gets the mapped failure). The relay accepts the callee's
RTP/AVP answer only in optional mode (:mod:`voipsec.media.relay`); in ``required``
mode nothing here runs.

Why not "best-effort SRTP" (RTP/AVP carrying ``a=crypto``)? RFC 4568 §3 defines the
crypto attribute for the SRTP transports only, and the best-effort drafts that put it
in RTP/AVP expired (RFC 5939 capability negotiation replaced them); phones that do not
know the practice ignore the keys and answer plain RTP, those that do may answer with
keys but without the SAVP profile. One plain retry reaches both kinds with one
round-trip more, and the call stays SRTP with every phone that can do it
(docs/media.md, "Optional SRTP").
"""

from __future__ import annotations

from ..media.sdp import MediaAnswer, SdpError, parse_sdp, rewrite
from .callmodel import CallPolicy, Fork

__all__ = ["REFUSED_OFFER_STATUSES", "plain_profile", "plain_retry_offer"]

#: Final responses that refuse the offer itself: 488 Not Acceptable Here (RFC 3261
#: §21.4.26), 606 Not Acceptable (§21.6.4), and 415 Unsupported Media Type (§21.4.13),
#: which some phones send for an SDP profile they do not know.
REFUSED_OFFER_STATUSES = frozenset({415, 488, 606})


def plain_profile(proto: str) -> str:
    """The RTP/AVP profile matching an SRTP one: RTP/SAVP → RTP/AVP, RTP/SAVPF →
    RTP/AVPF (RFC 3711 §12, RFC 5124 §6)."""
    return proto.replace("SAVP", "AVP")


def plain_retry_offer(policy: CallPolicy, fork: Fork, status: int, offer: bytes) -> bytes | None:
    """The RTP/AVP offer to retry ``fork`` with after its final ``status``, or None.

    None (no retry) unless the policy allows the fallback (optional mode), the status
    refuses the offer, the fork was not already a plain retry, and ``offer`` (the
    call's B-leg offer) has an SRTP stream to downgrade.
    """
    if not policy.srtp_fallback or fork.offer is not None:
        return None
    if status not in REFUSED_OFFER_STATUSES or not offer:
        return None
    try:
        sdp = parse_sdp(offer)
    except SdpError:
        return None
    if not any((m.secure or m.crypto) and m.port for m in sdp.media):
        return None
    media = [
        MediaAnswer(
            port=m.port,
            # Best-effort offers (RTP/AVP with a=crypto) lose their keys too.
            proto=plain_profile(m.proto),
            crypto=(),
            rtcp_mux=m.rtcp_mux,
        )
        if m.port
        else None
        for m in sdp.media
    ]
    if sdp.connection is None:
        return None  # the relay's offers always carry a session-level c=
    try:
        return rewrite(
            sdp,
            address=sdp.connection,
            session_id=int(sdp.session_id),
            # RFC 3264 §8: a changed description gets a higher version.
            version=sdp.version + 1,
            media=media,
        )
    except ValueError:
        return None  # not an offer the relay wrote (no IP literal): not ours to retry

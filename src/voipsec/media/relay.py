"""The SRTP media relay: every call's media passes through voipsec, re-keyed per leg.

Every m= line the relay carries (audio, video, any RTP stream: :mod:`.streams`, issue
17) gets a leg per side (:mod:`.legs`), and each leg a UDP port pair from ``[media]
ports`` (RTP on the even port, RTCP on the odd one; RTCP may also arrive on the RTP port
with rtcp-mux, RFC 5761 §4). SRTCP is decrypted and re-encrypted like SRTP, on the
same leg's keys (RFC 3711 §3.4).
voipsec rewrites each SDP so that both endpoints send to it, and gives each leg and
each direction its own fresh SDES master key (RFC 4568). A packet from the caller is
authenticated and decrypted with the caller's key, encrypted with voipsec's key for
the callee, and sent from the callee leg's own port. Nothing of one leg's keys or
addresses reaches the other.

Hardening (lessons of rtpengine CVE-2025-53399 and FreeSWITCH CVE-2021-41105):

- Before a leg latches, its media goes only where :mod:`.destinations` allows: the
  address the leg's SIP came from (or a network the operator named for it), never
  "this host", multicast, broadcast or the relay's own ports. Elsewhere (an SDP
  naming a third party: SSRF), nothing is sent until the phone's packets latch.
- A leg latches the far end's address only after a packet from it authenticates;
  a plain RTP leg (``srtp = "optional"``/``"off"``) only on a packet from an address
  the destination rule allows, and again only after a new SDP from its phone.
  From then on, packets from any other source are dropped (strict source).
- Unauthenticated, replayed and malformed packets are dropped and counted, never
  relayed, and never end a call. Their log lines are rate-limited.
- STUN on a leg's ports (ICE connectivity and consent checks) is told apart from
  RTP before any SRTP processing (RFC 7983) and handled by :mod:`.icelite`: a valid
  check of a leg whose phone offered ICE is answered (rate-limited), the rest is
  dropped; both are counted apart from malformed packets, and STUN never latches.
- An answered call with no valid packet for ``[media] timeout`` seconds is reported
  by :meth:`MediaRelay.sweep`; the call layer then ends it.

Crypto is libsrtp's, through pylibsrtp; nothing here touches AES or HMAC.

The packet path is kept cheap (issue 15): each datagram is read with ``recvfrom_into``
into the relay's one :class:`~.srtpsession.PacketBuffer`, unprotected and protected in
place there (:mod:`.srtpsession`), and sent from a view of the same memory, so no bytes
object is made per packet. A readiness callback reads at most ``READ_BATCH`` datagrams
and reads the clock once.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import secrets
import socket
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import replace

from .destinations import MediaPeer, MediaPolicy
from .direction import declared, expected, silent, update
from .dtls import DTLS_HANDSHAKE_TIMEOUT, is_dtls
from .dtlsleg import (
    LegDtls,
    fingerprints,
    is_dtls_section,
    sdp_lines,
    setup_after_answer,
)
from .dtlsrelay import DtlsRelay
from .errors import MediaRefused
from .icelite import (
    answer_check,
    looks_like_stun,
)
from .icelite import sdp_lines as ice_sdp_lines
from .legs import (
    MAX_RETIRED_LEGS,
    UNKNOWN_PEER,
    CallMedia,
    Leg,
    LegReport,
    MediaStatistics,
    Stream,
    far_end,
    other,
    suite_name,
    take_ice,
)
from .quality import StreamStats
from .sdes import (
    SUITES,
    Suite,
    choose,
    crypto_line,
    inbound_policy,
    master_of,
    new_master,
    outbound_policy,
)
from .sdp import Crypto, Media, MediaAnswer, Sdp, SdpError, SentSdp, parse_sdp, rewrite_for
from .sockets import SPARE_PAIRS, PortPool, SocketPool
from .srtpsession import PacketBuffer, SrtpSession, is_replay
from .streams import (
    DEFAULT_MAX_STREAMS,
    Verdict,
    carried,
    clock_rate,
    decide,
    offer_refusal,
)

log = logging.getLogger("voipsec.media")

#: Largest datagram read; RTP over UDP stays well under the Ethernet MTU.
MAX_PACKET = 2048
#: Datagrams read per readiness callback before yielding to the event loop. The loop's
#: readers are level-triggered, so a socket with more waiting is called again at once;
#: reading on until EAGAIN costs a failed ``recvfrom`` per event at ordinary rates
#: (docs/performance.md, "Cheap relay (issue 15)").
READ_BATCH = 1
#: The RTP clock of video payloads (RFC 3551 §5: 90 kHz for every video encoding).
VIDEO_CLOCK_RATE = 90_000
#: Smallest valid RTP packet: the fixed header (RFC 3550 §5.1).
RTP_HEADER = 12
#: Packets kept per leg while its peer's key is not known yet (early media).
MAX_EARLY_PACKETS = 32
#: Final reports of released calls kept for the call layer to collect.
MAX_FINAL_REPORTS = 10_000
#: The RTP sequence number and timestamp, after the first two octets (RFC 3550 §5.1).
_SEQ_TIMESTAMP = struct.Struct("!HI")


class MediaRelay(DtlsRelay):
    """The relay of every call: SDP rewriting on the signalling path, packets on the loop."""

    def __init__(
        self,
        *,
        address: str,
        ports: tuple[int, int],
        srtp: str,
        suites: Sequence[str],
        srtp_offer: str = "savp",
        timeout: float,
        dscp: int = 46,
        clock: Callable[[], float] = time.monotonic,
        own_addresses: Sequence[str] = (),
        own_ports: Sequence[int] = (),
        allowed_peers: Sequence[str] = (),
        spare_pairs: int = SPARE_PAIRS,
        sdp_allow_attributes: Sequence[str] = (),
        max_streams: int = DEFAULT_MAX_STREAMS,
        dtls_timeout: float = DTLS_HANDSHAKE_TIMEOUT,
    ) -> None:
        self.address = address
        #: Port pairs, ``spare_pairs`` of them bound ahead of the calls (issue 15).
        self.pool = SocketPool(PortPool(*ports), address=address, dscp=dscp, spare=spare_pairs)
        self.srtp = srtp
        #: "savp" or "avp-crypto": the profile our SRTP offers carry (RFC 4568 §3 vs.
        #: best effort, docs/media.md "Optional SRTP").
        self.offer_proto = "RTP/AVP" if srtp_offer == "avp-crypto" else "RTP/SAVP"
        self.preference = tuple(suites)
        self.timeout = timeout
        self.dscp = dscp
        self.clock = clock
        #: Attribute names let through besides sdp.SDP_ATTRIBUTES_CROSSING (issue 16).
        self.sdp_allow = frozenset(sdp_allow_attributes)
        #: Streams one call may have open (``media.max_streams``, .streams).
        self.max_streams = max_streams
        self.dtls_timeout = dtls_timeout
        #: Where media may go before latching (SSRF, issue 13): never our own ports.
        self.policy = MediaPolicy(
            own_addresses=(address, *own_addresses),
            own_ports=own_ports,
            own_port_ranges=(ports,),
            allowed_peers=allowed_peers,
        )
        self._refused_destinations = 0
        self._calls: dict[str, CallMedia] = {}
        self._relayed = 0
        self._refused = 0
        self._timeouts = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        #: Where every datagram is read, decrypted, encrypted and sent from.
        self._buffer = PacketBuffer(MAX_PACKET)
        #: Reports of released calls, until the call layer collects them.
        self._final: dict[str, list[LegReport]] = {}
        DtlsRelay.__init__(self)

    # -- signalling: offers and answers -------------------------------------------

    def offer(
        self,
        call: str,
        side: str,
        body: bytes,
        peer: MediaPeer = UNKNOWN_PEER,
        *,
        rekey: bool = False,
        webrtc: bool = False,
    ) -> bytes:
        """An SDP offer from ``side`` ("a" or "b"): returns the offer for the other side.

        ``peer`` is where the offer's SIP came from: the SDP may name only its address
        (see :mod:`.destinations`); the default allows nothing before latching.

        With ``rekey``, the other side's leg is being handed to a new phone (a blind
        transfer, core/transfer.py): see :meth:`_rekeyed_offer`.

        Raises :class:`MediaRefused` (488) when the offer cannot be carried under the
        SRTP policy, or when no port pair is free (503).
        """
        if rekey:
            return self._rekeyed_offer(call, side, body)
        sdp = self._parse(body)
        media = self._call(call)
        refusals = self._refusals(media, sdp)
        if webrtc:
            media.browsers.add(other(side))  # a browser: DTLS-SRTP, never SDES (dtlsleg)
        answers: list[MediaAnswer | None] = []
        for index, section in enumerate(sdp.media):
            stream = None if refusals[index] else self._stream_for_offer(media, index, section)
            if stream is None:
                if refusals[index] is not None:
                    self._close_stream(media, index)
                answers.append(None)
                continue
            here, there = stream.legs[side], stream.legs[other(side)]
            if is_dtls_section(section):
                media.browsers.add(side)
            if other(side) in media.browsers and there.dtls is None:
                there.dtls = LegDtls()
            self._take_offer(here, sdp, section)
            self._set_remote(media, here, sdp, section, peer)
            self._declared(here, declared(sdp, section))
            offer = self._offer_to(there, section, first=here.suite)
            answers.append(replace(offer, ice=self._ice_lines(there)))
        self._retire(media, len(sdp.media))
        if not media.open_streams:
            self._refused += 1
            first = next((r for r in refusals if r is not None), None)
            raise first or MediaRefused(488, "no media stream the relay can carry in the SDP")
        media.offers[side] = sdp
        media.rekeyed.pop(other(side), None)  # this offer to the other side replaces it
        return self._write(media, other(side), sdp, answers)

    def answer(self, call: str, side: str, body: bytes, peer: MediaPeer = UNKNOWN_PEER) -> bytes:
        """The SDP answer from ``side`` to our offer: returns the answer for the offerer.

        RFC 3264 §6: the answer has the offer's m= lines, in order; a stream it
        refuses (port 0) is closed and refused towards the offerer too.
        """
        media = self._calls.get(call)
        if media is None:
            raise MediaRefused(488, "no offer for this answer")
        sdp = self._parse(body)
        if len(sdp.media) != len(media.streams):
            self._refused += 1
            raise MediaRefused(
                488, f"the answer has {len(sdp.media)} m= lines, the offer {len(media.streams)}"
            )
        replies: list[MediaAnswer | None] = []
        for index, section in enumerate(sdp.media):
            stream = media.streams[index]
            if stream is not None and section.port == 0:
                log.info("media %s: answer refused stream %d (%s)", call[:8], index, stream.kind)
                self._close_stream(media, index)
                stream = None
            if stream is None:
                replies.append(None)
                continue
            replies.append(self._answered_stream(stream, side, sdp, section, peer))
        if not media.open_streams:
            self._refused += 1
            raise MediaRefused(488, "the callee refused every media stream")
        rekeyed = media.rekeyed.pop(side, None)
        if rekeyed is not None:
            media.sent[side] = rekeyed  # the new phone's session from now on
        # After a rekeyed offer the transferee gets nothing (its leg did not change):
        # the reply is not its new description.
        return self._write(media, other(side), sdp, replies, rekeyed is None)

    def _answered_stream(
        self, stream: Stream, side: str, sdp: Sdp, section: Media, peer: MediaPeer
    ) -> MediaAnswer:
        """Take ``side``'s answer for one stream; the m= section for the offerer."""
        here, there = stream.legs[side], stream.legs[other(side)]
        media = here.media
        assert media is not None
        self._take_answer(here, sdp, section)
        self._set_remote(media, here, sdp, section, peer)
        rate = clock_rate(section)  # both directions' codec (RFC 3264 §6.1): for jitter
        if rate is not None:
            here.stats.clock_rate = there.stats.clock_rate = rate
        self._declared(here, declared(sdp, section))
        if here.early:
            # After the answer has gone on to the offerer, who then knows our key too.
            self._event_loop().call_soon(self._replay_early, here)
        if there.dtls is not None:
            self._dtls_answered(there, there.dtls)
            return MediaAnswer(
                port=there.port,
                proto=there.proto,
                rtcp_mux=there.rtcp_mux,
                ice=self._ice_lines(there),
                dtls=sdp_lines(self.identity, there.dtls.setup),
                mid=there.dtls.mid,
            )
        return MediaAnswer(
            port=there.port,
            proto=there.proto,
            crypto=()
            if there.plain or there.suite is None
            else (crypto_line(there.tag, there.suite, there.tx_master),),
            rtcp_mux=there.rtcp_mux,
            ice=self._ice_lines(there),
        )

    def _refusals(self, media: CallMedia, sdp: Sdp) -> list[MediaRefused | None]:
        """Each carried m= line's refusal under the policy (.streams.offer_refusal),
        before anything is applied: one that would degrade an open stream of the same
        kind refuses the whole offer, and the session stays as it was."""
        refusals: list[MediaRefused | None] = []
        for index, section in enumerate(sdp.media):
            refusal = None
            if not carried(section):
                refusal = offer_refusal(sdp, section, self.srtp, self.preference)
            open_here = media.streams[index] if index < len(media.streams) else None
            if refusal is not None and open_here is not None and open_here.kind == section.kind:
                self._refused += 1
                raise refusal
            refusals.append(refusal)
        return refusals

    def _stream_for_offer(self, media: CallMedia, index: int, section: Media) -> Stream | None:
        """The stream at ``index`` for the offer's m= line ``section`` (.streams):
        kept, opened or refused (None). The call's first stream takes its ports or
        the offer fails (503); a further one is refused when none are free."""
        while len(media.streams) <= index:
            media.streams.append(None)
        current = media.streams[index]
        decision = decide(
            section,
            None if current is None else current.kind,
            len(media.open_streams),
            self.max_streams,
        )
        if decision.verdict is Verdict.KEEP:
            return current
        if current is not None:
            self._close_stream(media, index)
        if decision.verdict is Verdict.REFUSE:
            if section.port != 0:
                log.info("media %s: stream %d refused: %s", media.call[:8], index, decision.reason)
            return None
        try:
            stream = self._open_stream(media, index, section.kind)
        except MediaRefused:
            if not media.open_streams:
                raise
            log.warning("media %s: stream %d refused: no free port pair", media.call[:8], index)
            return None
        media.streams[index] = stream
        return stream

    def _open_stream(self, media: CallMedia, index: int, kind: str) -> Stream:
        legs: dict[str, Leg] = {}
        try:
            for side in ("a", "b"):
                legs[side] = self._open_leg(media.call, side, index, kind)
        except MediaRefused:
            for leg in legs.values():
                self._close(leg)
            raise
        legs["a"].partner, legs["b"].partner = legs["b"], legs["a"]
        legs["a"].media = legs["b"].media = media
        if self.pool.ready < self.pool.spare:
            # Bind the next calls' sockets after this offer, not on its path.
            self._event_loop().call_soon(self.pool.fill)
        return Stream(index=index, kind=kind, legs=legs)

    def _close_stream(self, media: CallMedia, index: int) -> None:
        """The stream at ``index`` is removed: its report is kept, its ports freed."""
        stream = media.streams[index] if index < len(media.streams) else None
        if stream is None:
            return
        media.streams[index] = None
        media.retired.extend(self._stream_reports(stream))
        del media.retired[:-MAX_RETIRED_LEGS]
        for leg in stream.legs.values():
            self._close(leg)

    def _retire(self, media: CallMedia, lines: int) -> None:
        """An offer with fewer m= lines than the session had (RFC 3264 §8 forbids it,
        phones do it): the streams past its end are closed, and forgotten."""
        for index in range(lines, len(media.streams)):
            self._close_stream(media, index)
        del media.streams[lines:]
        media.streams.extend([None] * (lines - len(media.streams)))  # refused lines too

    def _rekeyed_offer(self, call: str, side: str, body: bytes) -> bytes:
        """The offer for a new phone taking over the legs opposite ``side`` (a blind
        transfer: the transferor's legs), built on ``body``, the last SDP of ``side``
        (the transferee's), for its codecs and attributes.

        The taken-over legs are offered fresh keys, never the ones the transferor
        knows (each leg and direction its own key, as for any call). Until the new
        phone's answer (:meth:`answer`, :meth:`_take_answer`), the legs keep the
        transferor's sessions, latch and addresses (a failed transfer leaves the call
        as it was). ``side``'s own legs are not touched: its
        SDP is not taken again, so its keys, latch and addresses stay as they are. The
        offer carries no ICE (the transferor's credentials are not the new phone's)
        and a new o= session (RFC 3264 §5), the leg's once the answer comes.
        """
        media = self._calls.get(call)
        if media is None:
            raise MediaRefused(488, "no call to transfer")
        sdp = self._parse(body)
        offers: list[MediaAnswer | None] = []
        for index in range(len(sdp.media)):
            stream = media.streams[index] if index < len(media.streams) else None
            if stream is None:
                offers.append(None)
                continue
            here, there = stream.legs[side], stream.legs[other(side)]
            offers.append(self._fresh_offer(there, first=here.suite))
        fresh = SentSdp(session_id=secrets.randbelow(2**62), version=1)
        sent = rewrite_for(fresh, sdp, address=self.address, media=offers, allow=self.sdp_allow)
        media.rekeyed[other(side)] = sent
        return sent.body

    def _fresh_offer(self, leg: Leg, first: Suite | None) -> MediaAnswer:
        """A rekeyed offer's m= section for ``leg``: new keys in ``leg.offered``, and
        nothing else of the leg changed (its rtcp-mux, sessions and latch are the
        transferor's until the answer; :meth:`_take_answer` narrows rtcp-mux to what
        the new phone accepts). A plain leg is offered plain RTP again."""
        if self.srtp == "off" or leg.plain:
            return MediaAnswer(port=leg.port, proto="RTP/AVP", rtcp_mux=leg.rtcp_mux)
        leg.proto = self.offer_proto  # what the answer answers (best effort, avp-crypto)
        leg.offered = self._new_keys(first)
        crypto = _offered_crypto(leg)
        return MediaAnswer(
            port=leg.port, proto=self.offer_proto, crypto=crypto, rtcp_mux=leg.rtcp_mux
        )

    def _new_keys(self, first: Suite | None) -> dict[int, tuple[Suite, bytes]]:
        """A fresh master key per suite we accept, by crypto tag; ``first`` (the other
        leg's suite) gets tag 1, so both legs use the same strength when they can."""
        names = list(self.preference)
        if first is not None and first.name in names:
            names.remove(first.name)
            names.insert(0, first.name)
        return {
            tag: (SUITES[name], new_master(SUITES[name])) for tag, name in enumerate(names, start=1)
        }

    def _write(
        self,
        media: CallMedia,
        side: str,
        sdp: Sdp,
        answers: list[MediaAnswer | None],
        keep: bool = True,
    ) -> bytes:
        """``sdp`` as ``side`` gets it: through the relay, with that leg's own o=
        (remembered as its last description unless ``keep`` is false)."""
        sent = rewrite_for(
            media.sent[side], sdp, address=self.address, media=answers, allow=self.sdp_allow
        )
        if keep:
            media.sent[side] = sent
        return sent.body

    def _declared(self, leg: Leg, direction: str) -> None:
        """``leg``'s phone declared ``direction`` for its stream (RFC 3264 §6.1): who
        must send on that stream now."""
        leg.said = direction
        now = self.clock()
        partner = leg.partner
        if partner is None:
            return
        for one, two in ((leg, partner), (partner, leg)):
            one.expect = update(one.expect, expected(one.said, two.said), now)

    def answered(self, call: str) -> None:
        """The call was answered: the media timeout starts counting."""
        media = self._calls.get(call)
        if media is not None:
            media.answered_at = self.clock()

    def release(self, call: str) -> None:
        """The call is over: close its sockets, return its ports to the pool."""
        media = self._calls.pop(call, None)
        if media is None:
            return
        if len(self._final) >= MAX_FINAL_REPORTS:
            self._final.pop(next(iter(self._final)))
        self._final[call] = self._reports(media)
        for stream in media.open_streams:
            for leg in stream.legs.values():
                self._close(leg)

    def _parse(self, body: bytes) -> Sdp:
        try:
            return parse_sdp(body)
        except SdpError as err:
            self._refused += 1
            raise MediaRefused(488, f"unusable SDP: {err.reason}") from None

    def _call(self, call: str) -> CallMedia:
        media = self._calls.get(call)
        if media is not None:
            return media
        # RFC 3264 §5: a session id and version below 2**62, a session per leg.
        sent = {s: SentSdp(session_id=secrets.randbelow(2**62), version=1) for s in ("a", "b")}
        media = CallMedia(call=call, sent=sent)
        self._calls[call] = media
        return media

    def _take_offer(self, leg: Leg, sdp: Sdp, audio: Media) -> None:
        """The peer's offer: where it receives, and the key it sends with. The policy
        (address, SRTP required or off, an acceptable suite) was checked for the whole
        offer first (:meth:`_refusals`, .streams.offer_refusal): here it is taken."""
        leg.proto = audio.proto
        leg.rtcp_mux = audio.rtcp_mux  # our answer accepts the offered rtcp-mux
        if is_dtls_section(audio):
            self._take_dtls_offer(leg, sdp, audio)
            return
        if leg.dtls is not None:
            # From DTLS-SRTP to SDES: the handshake's keys must never go into an
            # a=crypto line (they would reveal what was recorded before): new ones.
            leg.dtls = None
            leg.suite, leg.tx, leg.rx = None, None, None
            leg.tx_master = leg.rx_master = b""
        if not audio.secure:
            self._go_plain(leg)
            return
        chosen = choose(audio.crypto, self.preference)
        assert chosen is not None  # offer_refusal refused the offer otherwise
        suite = SUITES[chosen.suite]
        master = master_of(chosen)
        leg.plain = False
        leg.tag = chosen.tag
        if leg.suite is not suite or leg.rx_master != master:
            leg.rx = SrtpSession(inbound_policy(suite, master), self._buffer)
            leg.rx_master = master
        if leg.suite is not suite or leg.tx is None:
            leg.suite = suite
            leg.tx_master = new_master(suite)
            leg.tx = SrtpSession(outbound_policy(suite, leg.tx_master), self._buffer)

    def _go_plain(self, leg: Leg) -> None:
        """``leg`` carries plain RTP from now on (``srtp = "optional"``/``"off"``).

        Optional mode warns once per leg: the call is not encrypted end to end
        (docs/media.md, "Optional SRTP"); "off" is the operator's explicit choice.
        """
        if self.srtp == "optional" and not leg.plain:
            log.warning("media %s: plain RTP, not encrypted (srtp = optional)", leg.name)
        leg.plain = True
        leg.suite = None
        leg.tx = leg.rx = None

    def _offer_to(self, leg: Leg, audio: Media, first: Suite | None) -> MediaAnswer:
        """Our offer to the other leg: SRTP with fresh keys per suite, unless "off".

        The suite the offerer's leg uses comes first (tag 1), so that both legs use
        the same strength when the far end can; the others follow in preference order.
        """
        if leg.dtls is not None:
            return self._dtls_offer(leg, audio)
        leg.rtcp_mux = audio.rtcp_mux
        if self.srtp == "off" or leg.plain:
            # A leg that went plain in optional mode stays plain on re-offers: its
            # phone refused SRTP once (core/srtpfallback.py) or offered none.
            leg.plain = True
            leg.proto = "RTP/AVP"
            return MediaAnswer(port=leg.port, proto="RTP/AVP", crypto=(), rtcp_mux=audio.rtcp_mux)
        leg.proto = self.offer_proto
        if leg.suite is not None and leg.tx is not None:
            # A re-offer keeps the suite and key the leg already uses.
            leg.offered = {leg.tag: (leg.suite, leg.tx_master)}
        else:
            leg.offered = self._new_keys(first)
        crypto = _offered_crypto(leg)
        return MediaAnswer(
            port=leg.port, proto=self.offer_proto, crypto=crypto, rtcp_mux=audio.rtcp_mux
        )

    def _take_answer(self, leg: Leg, sdp: Sdp, audio: Media) -> None:
        _check_remote(sdp, audio)
        leg.rtcp_mux = leg.rtcp_mux and audio.rtcp_mux
        if leg.dtls is not None:
            if not is_dtls_section(audio):
                self._refused += 1
                raise MediaRefused(488, "the browser answered without DTLS-SRTP")
            remote, setup = fingerprints(sdp, audio), setup_after_answer(sdp, audio)
            self._dtls_start(leg, leg.dtls, remote, setup, arm=True)
            return
        if leg.plain:
            return
        # Best effort (avp-crypto): an RTP/AVP answer with a=crypto takes our SRTP.
        best_effort = leg.proto == "RTP/AVP" and bool(audio.crypto)
        if not audio.secure and not best_effort:
            if self.srtp != "optional":
                self._refused += 1
                raise MediaRefused(488, "the callee answered without SRTP")
            # Optional mode: an RTP/AVP answer to our plain retry (core/srtpfallback.py)
            # or, from a lenient phone, to the SRTP offer itself. Our keys are dropped.
            leg.offered.clear()
            leg.proto = audio.proto
            self._go_plain(leg)
            return
        # Only what we offered: a caller's leg, which we only ever answered, gets an
        # answer only after a rekeyed offer (a transfer, _rekeyed_offer).
        picked = next((c for c in audio.crypto if c.tag in leg.offered), None)
        if picked is None:
            self._refused += 1
            raise MediaRefused(488, "the callee's crypto answer matches none offered")
        suite, ours = leg.offered[picked.tag]
        if picked.suite != suite.name:
            self._refused += 1
            raise MediaRefused(488, "the callee's crypto answer changed the suite")
        theirs = master_of(picked)
        leg.tag = picked.tag
        if leg.suite is not suite or leg.tx_master != ours:
            leg.suite = suite
            leg.tx_master = ours
            leg.tx = SrtpSession(outbound_policy(suite, ours), self._buffer)
        if leg.rx_master != theirs:
            leg.rx_master = theirs
            leg.rx = SrtpSession(inbound_policy(suite, theirs), self._buffer)
            # A new key may be a new phone (a transferred call, core/transfer.py): the
            # leg latches again on the first packet that authenticates with it.
            leg.latched_rtp = leg.latched_rtcp = None

    def _set_remote(
        self, media: CallMedia, leg: Leg, sdp: Sdp, audio: Media, peer: MediaPeer
    ) -> None:
        """Where the leg's media goes until it latches: the SDP's address, if allowed.

        A plain leg's latch is undone by every new SDP from its phone (a re-INVITE may
        move it), and only then: it never re-latches on packets alone.
        """
        leg.peer = peer
        if leg.plain:
            leg.latched_rtp = leg.latched_rtcp = None
        take_ice(leg, sdp, audio)
        address = sdp.address(audio) or ""
        rtcp_port = audio.port if audio.rtcp_mux else audio.port + 1
        leg.remote_rtp = self._destination(media, leg, address, audio.port)
        leg.remote_rtcp = self._destination(media, leg, address, rtcp_port)

    def _ice_lines(self, leg: Leg) -> tuple[str, ...]:
        """Our ICE-lite attributes for the SDP to ``leg``: only when its phone's own
        SDP offered ICE, so a phone that never asked sees no ICE (docs/media.md)."""
        if leg.ice is None:
            return ()
        return ice_sdp_lines(
            leg.ice.local, self.address, leg.port, None if leg.rtcp_mux else leg.port + 1
        )

    def _destination(
        self, media: CallMedia, leg: Leg, host: str, port: int
    ) -> tuple[str, int] | None:
        decision = self.policy.destination(host, port, leg.peer)
        if decision.allowed:
            return (host, port)
        self._refused_destinations += 1
        if not media.refusal_logged:
            media.refusal_logged = True
            log.info(
                "media %s: not sending to %s:%d from its SDP (%s); waiting for the phone's "
                "packets to latch the leg",
                leg.name,
                host,
                port,
                decision.reason,
            )
        return None

    # -- sockets ------------------------------------------------------------------

    def _open_leg(self, call: str, side: str, index: int = 0, kind: str = "audio") -> Leg:
        port, rtp, rtcp = self.pool.take()
        # The first stream's legs keep the names they always had: "<call>/a".
        name = f"{call[:8]}/{side}" if index == 0 else f"{call[:8]}/{side}{index}"
        leg = Leg(
            name=name, call=call, side=side, port=port, rtp=rtp, rtcp=rtcp, index=index, kind=kind
        )
        if kind == "video":
            leg.stats = StreamStats(clock_rate=VIDEO_CLOCK_RATE)  # for jitter in ms
        loop = self._event_loop()
        loop.add_reader(rtp.fileno(), self._readable, leg, rtp, False)
        loop.add_reader(rtcp.fileno(), self._readable, leg, rtcp, True)
        return leg

    def _event_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return self._loop

    def _close(self, leg: Leg) -> None:
        """The leg is over: its sockets go back to the pool, no longer read."""
        if leg.closed:
            return
        leg.closed = True
        loop = self._loop
        if loop is not None:
            loop.remove_reader(leg.rtp.fileno())
            loop.remove_reader(leg.rtcp.fileno())
        self.pool.give_back((leg.port, leg.rtp, leg.rtcp))

    # -- packets ------------------------------------------------------------------

    def _readable(self, leg: Leg, sock: socket.socket, rtcp_port: bool) -> None:
        data = self._buffer.data
        now = self.clock()
        for _ in range(READ_BATCH):
            try:
                size, source = sock.recvfrom_into(data, MAX_PACKET)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as err:
                if err.errno not in (errno.ECONNREFUSED, errno.EHOSTUNREACH):
                    log.debug("media %s: recv failed: %s", leg.name, err)
                return
            if len(source) != 2:  # IPv6: (host, port, flowinfo, scope id)
                source = (source[0], source[1])
            try:
                self._relay(leg, size, source, rtcp_port, now)
            except Exception:  # one bad packet never ends the relay of a call
                log.exception("media %s: packet handling failed", leg.name)

    def packet(self, leg: Leg, data: bytes, source: tuple[str, int], rtcp_port: bool) -> None:
        """One datagram that arrived on ``leg``: check, decrypt, re-encrypt, forward."""
        now = self.clock()
        if len(data) > MAX_PACKET:
            leg.stats.malformed()
            leg.drops.note("too long", leg.name, now)
            return
        self._buffer.view[: len(data)] = data
        self._relay(leg, len(data), source, rtcp_port, now)

    def _relay(
        self, leg: Leg, size: int, source: tuple[str, int], rtcp_port: bool, now: float
    ) -> None:
        """The datagram of ``size`` bytes in the buffer: check, decrypt, re-encrypt, forward."""
        data = self._buffer.data
        if size < RTP_HEADER or data[0] >> 6 != 2:
            if looks_like_stun(data, size):  # RFC 7983 §7: before any SRTP processing
                self._stun(leg, size, source, rtcp_port, now)
                return
            if leg.dtls is not None and size and is_dtls(data[0]):
                self._dtls_packet(leg, leg.dtls, size, source, rtcp_port, now)
                return
            leg.stats.malformed()
            leg.drops.note("malformed", leg.name, now)
            return
        rtcp = rtcp_port or (leg.rtcp_mux and 192 <= data[1] <= 223)
        latched = leg.latched_rtcp if rtcp else leg.latched_rtp
        moving = latched is not None and latched != source
        if moving and not _ice_moves(leg, source, rtcp_port):
            leg.stats.wrong_source()
            leg.drops.note(f"from {source[0]}:{source[1]}, not the latched peer", leg.name, now)
            return
        clear = self._decrypt(leg, size, rtcp, now, source)
        if clear < 0:
            return
        if latched is None or moving:
            decision = self.policy.latch(*source, leg.peer, authenticated=not leg.plain)
            if not decision.allowed:
                leg.stats.wrong_source()
                leg.drops.note(f"from {source[0]}:{source[1]}: {decision.reason}", leg.name, now)
                return
            if rtcp:
                leg.latched_rtcp = source
            else:
                leg.latched_rtp = source
        media, partner = leg.media, leg.partner
        if media is None or partner is None or leg.closed:
            return
        leg.heard = now
        if rtcp:
            leg.rtcp_packets += 1
            far_end(leg, data, clear)
        else:
            seq, timestamp = _SEQ_TIMESTAMP.unpack_from(data, 2)
            leg.stats.rtp(seq, timestamp, clear, now)
        self._forward(partner, clear, rtcp)

    def _stun(
        self, leg: Leg, size: int, source: tuple[str, int], rtcp_port: bool, now: float
    ) -> None:
        """A STUN message on ``leg``: answer a valid ICE check (rate-limited) from the
        port it came to, drop anything else. It never latches and never counts as
        media for the timeout: consent checks alone do not keep a call up."""
        ice = leg.ice
        if ice is not None and not ice.available(now):
            leg.stats.stun_dropped()
            leg.drops.note("STUN: answer rate limit", leg.name, now)
            return
        verdict = answer_check(bytes(self._buffer.view[:size]), source, ice)
        reason = verdict.reason
        if not reason and not self.policy.latch(*source, leg.peer, authenticated=True).allowed:
            reason = "source may not receive media"
        if ice is None or reason or verdict.response is None:
            leg.stats.stun_dropped()
            leg.drops.note(f"STUN: {reason}", leg.name, now)
            return
        sock = leg.rtcp if rtcp_port else leg.rtp
        try:
            sock.sendto(verdict.response, source)
        except OSError:
            return
        ice.take()
        ice.answered(source)
        leg.stats.stun_answered()
        if verdict.nominate:
            ice.nominate(source, rtcp_port)

    def _replay_early(self, leg: Leg) -> None:
        """The leg's key is known now: its early packets go through the normal path."""
        early, leg.early = leg.early, []
        for data, source, rtcp in early:
            if leg.rx is None or leg.closed:
                return
            self.packet(leg, data, source, rtcp)

    def _decrypt(self, leg: Leg, size: int, rtcp: bool, now: float, source: tuple[str, int]) -> int:
        """The clear packet's length in the buffer, or -1 when it was dropped or kept."""
        if leg.plain:
            return size
        rx = leg.rx
        if rx is None:
            # SDES: the callee may send media before its answer (with its key) reaches
            # us. Keep a few packets and check them once the key is known.
            if len(leg.early) < MAX_EARLY_PACKETS:
                leg.early.append((bytes(self._buffer.view[:size]), source, rtcp))
            else:
                leg.stats.auth_failure()
                leg.drops.note("no key yet", leg.name, now)
            return -1
        clear = rx.unprotect_rtcp(size) if rtcp else rx.unprotect(size)
        if clear >= 0:
            return clear
        if is_replay(clear):
            leg.stats.replay()
            leg.drops.note("replayed", leg.name, now)
        else:
            leg.stats.auth_failure()
            leg.drops.note("failed authentication", leg.name, now)
        return -1

    def _forward(self, out: Leg, clear: int, rtcp: bool) -> None:
        if rtcp:
            target = out.latched_rtcp or out.remote_rtcp
            if out.rtcp_mux:
                target = out.latched_rtp or out.remote_rtp
        else:
            target = out.latched_rtp or out.remote_rtp
        if target is None:
            return  # the other side's address is not known yet (no answer)
        if out.plain:
            size = clear
        elif out.tx is None:
            return
        else:
            size = out.tx.protect_rtcp(clear) if rtcp else out.tx.protect(clear)
            if size < 0:
                return  # libsrtp refuses to send a sequence number twice
        sock = out.rtp if (not rtcp or out.rtcp_mux) else out.rtcp
        try:
            sock.sendto(self._buffer.view[:size], target)
        except OSError:
            return
        self._relayed += 1

    # -- timeouts and reports -------------------------------------------------------

    def sweep(self) -> list[str]:
        """Answered calls with a leg that should be sending (.direction: not on hold)
        and sent nothing valid for longer than the timeout. DTLS handshakes' timers
        run here too (once a second in the workers; see :meth:`failures`)."""
        now = self.clock()
        self._dtls_timers(now)
        stopped = [
            media.call
            for media in self._calls.values()
            if any(self._silent(media, leg, now) for leg in media.timed_legs())
        ]
        self._timeouts += len(stopped)
        return stopped

    def _silent(self, media: CallMedia, leg: Leg, now: float) -> bool:
        return silent(
            leg.expect,
            heard=leg.heard,
            answered_at=media.answered_at,
            now=now,
            timeout=self.timeout,
        )

    def report(self, call: str) -> list[LegReport]:
        """The call's per-leg statistics; after ``release``, the final ones (once)."""
        media = self._calls.get(call)
        if media is None:
            return self._final.pop(call, [])
        return self._reports(media)

    def _reports(self, media: CallMedia) -> list[LegReport]:
        """Every leg's report: the open streams' in m= line order, then the closed ones'."""
        live = [r for stream in media.open_streams for r in self._stream_reports(stream)]
        return live + media.retired

    def _stream_reports(self, stream: Stream) -> list[LegReport]:
        return [
            LegReport(
                leg=side,
                suite=suite_name(leg),
                rtcp_packets=leg.rtcp_packets,
                received=leg.stats.snapshot(),
                local=(self.address, leg.port),
                remote=leg.latched_rtp or leg.remote_rtp,
                stream=stream.index,
                kind=stream.kind,
            )
            for side, leg in stream.legs.items()
        ]

    def ports_of(self, call: str) -> dict[str, int]:
        media = self._calls.get(call)
        return {} if media is None else {side: leg.port for side, leg in media.legs.items()}

    def statistics(self) -> MediaStatistics:
        return MediaStatistics(
            active_calls=len(self._calls),
            free_port_pairs=self.pool.free,
            relayed_packets=self._relayed,
            refused_offers=self._refused,
            timeouts=self._timeouts,
            refused_destinations=self._refused_destinations,
        )

    def close(self) -> None:
        for call in list(self._calls):
            self.release(call)
        self.pool.close()


def _ice_moves(leg: Leg, source: tuple[str, int], rtcp_port: bool) -> bool:
    """May a packet from ``source`` move the leg's latch, if it authenticates? Only on
    an SRTP leg, from the source of a check that nominated this port's pair (RFC 8445
    §8.2.1) or of any check we answered: a full agent may send on any valid pair before
    it nominates one (§12.1; Chromium moves a second after its handshake), and that
    source proved it knows our password. STUN alone never latches."""
    ice = leg.ice
    if leg.plain or ice is None:
        return False
    return ice.nominated(source, rtcp_port) or source in ice.checked


def _check_remote(sdp: Sdp, section: Media) -> None:
    if sdp.address(section) is None or section.port == 0:
        raise MediaRefused(488, f"no connection address for the {section.kind} stream")


__all__ = [
    "CallMedia",
    "Crypto",
    "Leg",
    "LegReport",
    "MediaPeer",
    "MediaRefused",
    "MediaRelay",
    "MediaStatistics",
    "PortPool",
    "Stream",
]


def _offered_crypto(leg: Leg) -> tuple[Crypto, ...]:
    """The a=crypto lines of the keys ``leg`` is offered (RFC 4568 §9.1), by tag."""
    return tuple(crypto_line(tag, suite, master) for tag, (suite, master) in leg.offered.items())

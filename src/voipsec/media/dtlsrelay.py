"""The relay's DTLS-SRTP half: handshakes on legs towards browsers (issue 17).

:class:`DtlsRelay` is a base of :class:`~.relay.MediaRelay`, kept apart so that each
module stays readable: the SDP decisions are :mod:`.dtlsleg`'s, the handshake state
machine :mod:`.dtls`'s; this is the glue on the relay's sockets and packet buffer.
Handshake datagrams arrive through the relay's packet path (RFC 7983 §7 first byte
20-63), replies leave from the leg's RTP port, and the handshake timers run in the
relay's once-a-second sweep (:meth:`DtlsRelay._dtls_timers`), which is also where a
failed handshake is collected (:meth:`DtlsRelay.failures`) to end its call.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
from collections.abc import Callable, Sequence

from .destinations import MediaPolicy
from .dtls import ESTABLISHED, FAILED, FAILURE_TIMEOUT, HANDSHAKING, DtlsEndpoint
from .dtlsidentity import DtlsIdentity, profiles_for
from .dtlsleg import (
    DTLS_PROTO,
    MAX_DTLS_RESETS,
    OFFER_SETUP,
    LegDtls,
    answer_setup,
    fingerprints,
    keeps,
    mid_of,
    sdp_lines,
)
from .errors import MediaRefused
from .fingerprint import Fingerprint, role_of_setup
from .icelite import PENDING_REMOTE, IceLite, new_credentials
from .legs import CallMedia, Leg
from .sdp import Media, MediaAnswer, Sdp
from .srtpsession import PacketBuffer, SrtpSession

log = logging.getLogger("voipsec.media")

#: How long before its end the relay's DTLS certificate is replaced for new legs.
IDENTITY_RENEWAL = datetime.timedelta(days=1)


class DtlsRelay:
    """DTLS-SRTP legs of :class:`~.relay.MediaRelay` (which sets what is declared here)."""

    clock: Callable[[], float]
    srtp: str
    preference: tuple[str, ...]
    #: Seconds a DTLS leg's handshake may take from our SDP reaching the browser
    #: (``media.dtls_timeout``).
    dtls_timeout: float
    policy: MediaPolicy
    _buffer: PacketBuffer
    _calls: dict[str, CallMedia]
    _refused: int

    def __init__(self) -> None:
        #: The certificate of DTLS-SRTP legs (made on the first one, in memory only).
        self._identity: DtlsIdentity | None = None
        #: Calls whose media failed (a DTLS handshake), with the reason, until swept.
        self._failed: dict[str, str] = {}
        self.dtls_handshakes = 0
        self.dtls_failures = 0

    def _event_loop(self) -> asyncio.AbstractEventLoop:
        raise NotImplementedError

    def _replay_early(self, leg: Leg) -> None:
        raise NotImplementedError

    @property
    def identity(self) -> DtlsIdentity:
        """The relay's DTLS certificate: one per process, made on first use, offering
        the SRTP profiles of ``media.suites`` (488 when none of them has one)."""
        now = datetime.datetime.now(datetime.UTC)
        if self._identity is None or now >= self._identity.not_after - IDENTITY_RENEWAL:
            profiles = profiles_for(self.preference)
            if not profiles:
                raise MediaRefused(488, "no suite of media.suites is usable with DTLS-SRTP")
            # A new one for new legs; running handshakes keep theirs (it is pinned).
            self._identity = DtlsIdentity.generate(now, profiles)
        return self._identity

    def _take_dtls_offer(self, leg: Leg, sdp: Sdp, section: Media) -> None:
        """A browser's offer (RFC 5763 §5): its fingerprints, and our role in answer.
        The handshake's deadline starts when our answer is written (:meth:`_dtls_answered`);
        ``srtp = "off"`` refused the offer before (.streams.offer_refusal)."""
        state = leg.dtls or LegDtls()
        leg.dtls, leg.plain = state, False
        state.mid = mid_of(section)
        self._dtls_start(leg, state, fingerprints(sdp, section), answer_setup(sdp, section))

    def _dtls_offer(self, leg: Leg, section: Media) -> MediaAnswer:
        """Our offer to a browser: DTLS-SRTP with AVPF, rtcp-mux (browsers require it,
        RFC 8829 §5.2.1) and ICE-lite credentials of ours (its answer brings its own)."""
        leg.plain, leg.proto, leg.rtcp_mux = False, DTLS_PROTO, True
        if leg.ice is None:
            leg.ice = IceLite(local=new_credentials(), remote=PENDING_REMOTE)
        return MediaAnswer(
            port=leg.port,
            proto=DTLS_PROTO,
            rtcp_mux=True,
            dtls=sdp_lines(self.identity, OFFER_SETUP),
            mid=mid_of(section) or str(leg.index),
        )

    def _dtls_answered(self, leg: Leg, state: LegDtls) -> None:
        """Our answer goes to the browser now: its handshake may start, and its deadline
        runs (not before: a call may ring for long before the browser can send)."""
        if state.deadline is None and state.endpoint is not None:
            self._arm(leg, state, self.clock())

    def _dtls_start(
        self,
        leg: Leg,
        state: LegDtls,
        remote: tuple[Fingerprint, ...],
        setup: str,
        *,
        arm: bool = False,
    ) -> None:
        """Our role is ``setup``: a new handshake unless the association is kept."""
        if not keeps(state, remote, setup):
            state.remote, state.setup = remote, setup
            state.deadline, state.last_failure, state.resets = None, "", 0
            self._new_endpoint(leg, state)
        if arm and state.deadline is None:
            self._arm(leg, state, self.clock())

    def _new_endpoint(self, leg: Leg, state: LegDtls) -> DtlsEndpoint:
        """A fresh handshake for ``leg``, bound to no source yet, its keys gone."""
        endpoint = DtlsEndpoint(
            self.identity,
            role_of_setup(state.setup),
            state.remote,
            self.clock(),
            handshake_timeout=self.dtls_timeout,
        )
        state.endpoint, state.peer = endpoint, None
        leg.rx = leg.tx = None
        leg.suite = None
        leg.tx_master = leg.rx_master = b""
        leg.latched_rtp = leg.latched_rtcp = None
        self.dtls_handshakes += 1
        return endpoint

    def _arm(self, leg: Leg, state: LegDtls, now: float) -> None:
        """Start the deadline; as the client, send the ClientHello (after the SDP's
        address or the ICE check is known: on the next loop turn, and by the timers)."""
        state.deadline = now + self.dtls_timeout
        endpoint = state.endpoint
        if endpoint is not None:
            first = endpoint.start(now)
            if first:
                self._event_loop().call_soon(self._dtls_send, leg, state, first, None)

    def _dtls_packet(
        self,
        leg: Leg,
        state: LegDtls,
        size: int,
        source: tuple[str, int],
        rtcp_port: bool,
        now: float,
    ) -> None:
        """A DTLS record on ``leg`` (RFC 7983 §7): into the handshake, if allowed."""
        endpoint = state.endpoint
        if endpoint is None or rtcp_port or not self._dtls_source(leg, state, source):
            leg.stats.wrong_source()
            leg.drops.note(f"DTLS from {source[0]}:{source[1]}: not allowed", leg.name, now)
            return
        state.peer = source
        replies = endpoint.receive(bytes(self._buffer.view[:size]), now)
        self._dtls_send(leg, state, replies, source)
        self._dtls_progress(leg, state, endpoint, now)

    def _dtls_source(self, leg: Leg, state: LegDtls, source: tuple[str, int]) -> bool:
        """May ``source`` handshake? The bound one; else one that passed an ICE check
        (a leg doing ICE), or the leg's signalling address (one that does not)."""
        if state.peer is not None:
            return source == state.peer
        if leg.ice is not None:
            return source in leg.ice.checked
        return self.policy.latch(*source, leg.peer, authenticated=False).allowed

    def _dtls_send(
        self,
        leg: Leg,
        state: LegDtls,
        datagrams: Sequence[bytes],
        to: tuple[str, int] | None,
    ) -> None:
        checked = leg.ice.checked[-1] if leg.ice is not None and leg.ice.checked else None
        target = to or state.peer or checked or leg.latched_rtp or leg.remote_rtp
        if target is None or leg.closed:
            return
        for datagram in datagrams:
            try:
                leg.rtp.sendto(datagram, target)
            except OSError:
                return

    def _dtls_progress(self, leg: Leg, state: LegDtls, endpoint: DtlsEndpoint, now: float) -> None:
        """Established: the leg gets its SRTP sessions. Failed after that: the call
        ends. Failed before (a stray or forged handshake): a fresh endpoint for the
        browser's own, until the deadline or MAX_DTLS_RESETS (then the call ends with
        the last failure's reason)."""
        keys = endpoint.keys
        if endpoint.state == ESTABLISHED and keys is not None and leg.rx is None:
            leg.suite, leg.tx_master, leg.rx_master = (
                keys.suite,
                keys.local_master,
                keys.remote_master,
            )
            leg.rx = SrtpSession(keys.inbound(), self._buffer)
            leg.tx = SrtpSession(keys.outbound(), self._buffer)
            if leg.early:
                self._event_loop().call_soon(self._replay_early, leg)
        elif endpoint.state == FAILED and endpoint is state.endpoint:
            if endpoint.established_at is not None or state.resets >= MAX_DTLS_RESETS:
                self._end_leg(leg, endpoint.failure)
                return
            state.last_failure = endpoint.failure
            state.resets += 1
            log.info("media %s: %s; the handshake starts again", leg.name, endpoint.failure)
            fresh = self._new_endpoint(leg, state)
            if state.deadline is not None:
                first = fresh.start(now)
                self._dtls_send(leg, state, first, None)

    def _end_leg(self, leg: Leg, reason: str) -> None:
        """The leg's media cannot go on: its call ends with ``reason`` (:meth:`failures`)."""
        if leg.call not in self._failed and not leg.closed:
            log.warning("media %s: %s; the call ends", leg.name, reason)
            self._failed[leg.call] = reason
            self.dtls_failures += 1

    def _dtls_timers(self, now: float) -> None:
        """Retransmit handshake flights; at a leg's deadline, end its call."""
        for media in self._calls.values():
            for stream in media.open_streams:
                for leg in stream.legs.values():
                    state = leg.dtls
                    endpoint = None if state is None else state.endpoint
                    if state is None or endpoint is None or endpoint.state == ESTABLISHED:
                        continue
                    if state.deadline is not None and now >= state.deadline:
                        self._end_leg(leg, state.last_failure or FAILURE_TIMEOUT)
                        continue
                    due = endpoint.next_timer(now)
                    if endpoint.state == HANDSHAKING and due is not None and due <= now:
                        self._dtls_send(leg, state, endpoint.poll(now), None)
                        self._dtls_progress(leg, state, endpoint, now)

    def failures(self) -> list[tuple[str, str]]:
        """Calls whose media failed since the last call (a DTLS handshake: a
        fingerprint mismatch, a timeout), with the CDR reason; the call layer ends them."""
        failed = [(call, why) for call, why in self._failed.items() if call in self._calls]
        self._failed.clear()
        return failed


__all__ = ["IDENTITY_RENEWAL", "DtlsRelay"]

"""The signaling side of the media relay workers: one channel to each, calls spread.

How this works: :class:`MediaPool` connects to every relay worker's control socket
(``DIR/run/media-K.sock``, :mod:`.worker`) and carries out the B2BUA's media actions
there (:mod:`.performer` names the contract: ``perform``, ``report``, ``sweep``). A
call's first offer goes to the connected worker with the fewest active calls (ties in
turn); the pool remembers call → worker, and every later action of the call goes to
the same worker. Each request gets an id; its reply (the rewritten SDP, a refusal,
the release report) is handed to the callback that waits for it.

Never a hung call: a request without a reply within :data:`REQUEST_TIMEOUT` is
answered as a refusal (503 with a Warning). A channel that closes (the worker died,
or sent a bad frame) refuses its pending requests the same way and marks each of its
calls lost: :meth:`MediaPool.sweep` hands them to the call layer, which ends them
with the CDR reason :data:`LOST_REASON` (BYE both legs). The pool reconnects every
:data:`RECONNECT_INTERVAL`; new calls go to the other workers meanwhile.

Failure mode: fails closed for the calls of a lost worker (ended, never silently
kept without media) and for new calls when no worker is connected (503).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.callmodel import AllocateMedia, AnswerMedia, MediaAnswered, MediaResult
from ..ipc import ChannelError, FrameDecoder
from .control import (
    MAX_REQUEST_ID,
    AnsweredNotice,
    AnswerRequest,
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
from .errors import MediaRefused
from .performer import MediaAction, ReportCallback, ResultCallback
from .relay import LegReport, MediaStatistics

log = logging.getLogger("voipsec.media.pool")

#: Seconds a request waits for its worker's reply before it is refused (503): a worker
#: answers in well under a millisecond; a phone retransmits an INVITE after 0.5 s.
REQUEST_TIMEOUT = 2.0
#: Seconds between two connection attempts to a worker that is not reachable.
RECONNECT_INTERVAL = 0.2
#: Seconds ``start`` waits for every worker's socket to accept.
START_TIMEOUT = 15.0
#: Seconds ``drain`` waits for outstanding replies (release reports) at shutdown.
DRAIN_TIMEOUT = 1.0
#: Bytes read from a channel at a time.
READ_SIZE = 64 * 1024
#: The CDR reason of a call whose relay worker was lost (docs/media.md).
LOST_REASON = "media worker lost"
#: The CDR reason of a call whose media stopped (as with the relay in process).
TIMEOUT_REASON = "media timeout"


class MediaPoolError(Exception):
    """A relay worker could not be reached at start."""


@dataclass(frozen=True, slots=True, kw_only=True)
class PoolStatistics:
    connected: int
    workers: int
    #: Replies whose request id was unknown (late after a timeout, or a bug).
    unknown_replies: int
    #: Requests refused because no reply came in time.
    timeouts: int
    #: Calls ended because their worker's channel closed.
    lost_calls: int


@dataclass(slots=True)
class _Pending:
    call: str
    on_result: ResultCallback | None
    timer: asyncio.TimerHandle | None = None


@dataclass(eq=False, slots=True)
class _Worker:
    index: int
    path: Path
    writer: asyncio.StreamWriter | None = None
    reader: asyncio.Task[None] | None = None
    calls: set[str] = field(default_factory=set)
    pending: dict[int, _Pending] = field(default_factory=dict)
    stats: MediaStatistics | None = None

    @property
    def connected(self) -> bool:
        return self.writer is not None and not self.writer.is_closing()


class MediaPool:
    """The relay workers as one media handler of the call layer."""

    def __init__(self, *, paths: Sequence[Path], timeout: float) -> None:
        #: Seconds without media before a call ends (the workers' sweep decides).
        self.timeout = timeout
        self._workers = [_Worker(index=k, path=p) for k, p in enumerate(paths)]
        self._owner: dict[str, _Worker] = {}
        self._ids = itertools.count(1)
        self._turn = 0
        self._ended: list[tuple[str, str]] = []
        self._reports: dict[str, ReportCallback] = {}
        #: Calls of a lost worker, until the call layer releases them: refused, never
        #: moved to another worker half-way (their legs are gone with the worker).
        self._lost_calls: set[str] = set()
        #: Calls whose release was sent and not answered yet.
        self._releasing: set[str] = set()
        self._closed = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._unknown = 0
        self._timeouts = 0
        self._lost = 0

    # -- connections ----------------------------------------------------------------

    async def start(self) -> None:
        """Connect to every worker (MediaPoolError after START_TIMEOUT)."""
        for worker in self._workers:
            try:
                await asyncio.wait_for(self._connect_until_up(worker), START_TIMEOUT)
            except TimeoutError:
                raise MediaPoolError(f"media worker {worker.index} did not accept") from None

    async def _connect_until_up(self, worker: _Worker) -> None:
        while not self._closed and not await self._connect(worker):
            await asyncio.sleep(RECONNECT_INTERVAL)

    async def _connect(self, worker: _Worker) -> bool:
        try:
            reader, writer = await asyncio.open_unix_connection(str(worker.path))
        except OSError:
            return False
        worker.writer = writer
        worker.reader = asyncio.get_running_loop().create_task(
            self._read(worker, reader), name=f"media worker {worker.index}"
        )
        log.info("connected to media worker %d", worker.index)
        return True

    async def _read(self, worker: _Worker, reader: asyncio.StreamReader) -> None:
        decoder = FrameDecoder()
        try:
            while data := await reader.read(READ_SIZE):
                for frame in decoder.feed(data):
                    self.on_message(worker, decode(frame))
        except ChannelError as err:
            log.error("media worker %d sent a bad frame: %s", worker.index, err)
        except ConnectionError:
            pass
        self._lose(worker)

    def _lose(self, worker: _Worker) -> None:
        """The channel closed: refuse what waits, end the worker's calls, reconnect."""
        if worker.writer is not None:
            worker.writer.close()
        worker.writer = None
        worker.stats = None
        if self._closed:
            self._fail_pending(worker, "media relay stopped")
            return
        if worker.calls:
            log.error(
                "media worker %d lost: ending its %d call(s)", worker.index, len(worker.calls)
            )
        else:
            log.warning("media worker %d lost", worker.index)
        for call in sorted(worker.calls):
            self._owner.pop(call, None)
            self._lost_calls.add(call)
            self._ended.append((call, LOST_REASON))
            self._lost += 1
        worker.calls.clear()
        self._fail_pending(worker, "media relay worker lost")
        self._own(self._connect_until_up(worker))

    def _fail_pending(self, worker: _Worker, warning: str) -> None:
        pending, worker.pending = worker.pending, {}
        for request_id, waiting in pending.items():
            self._refuse(request_id, waiting, warning)

    def _own(self, job: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(job)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- requests ---------------------------------------------------------------------

    def perform(self, action: MediaAction, done: ResultCallback) -> None:
        """Send ``action`` to its call's worker; ``done`` gets the result of an offer or
        answer when it arrives (or a refusal); the other actions have none."""
        if isinstance(action, MediaAnswered):
            owner = self._owner.get(action.call)
            if owner is not None and owner.connected:
                self._send(owner, encode(AnsweredNotice(call=action.call)))
            return
        if not isinstance(action, AllocateMedia | AnswerMedia):
            self._release(action.call)
            return
        worker = self._worker_for(action)
        if isinstance(worker, MediaRefused):
            done(worker)
            return
        request_id = self._request(worker, action.call, done)
        side, sdp, peer = action.side.value, action.sdp, action.peer
        message: OfferRequest | AnswerRequest = (
            OfferRequest(
                id=request_id,
                call=action.call,
                side=side,
                sdp=sdp,
                peer=peer,
                rekey=action.rekey,
                webrtc=action.webrtc,
            )
            if isinstance(action, AllocateMedia)
            else AnswerRequest(id=request_id, call=action.call, side=side, sdp=sdp, peer=peer)
        )
        self._own_call(worker, action.call)
        self._send(worker, encode(message))

    def _worker_for(self, action: AllocateMedia | AnswerMedia) -> _Worker | MediaRefused:
        """The call's worker; for its first offer, the least busy one."""
        worker = self._owner.get(action.call)
        if worker is not None:
            return worker
        if action.call in self._lost_calls:
            return MediaRefused(503, "media relay worker lost")
        if isinstance(action, AnswerMedia):
            return MediaRefused(488, "no offer for this answer")  # as the relay says
        if action.rekey:
            return MediaRefused(488, "no call to transfer")  # as the relay says
        return self._choose() or MediaRefused(503, "no media relay worker available")

    def _choose(self) -> _Worker | None:
        """The connected worker with the fewest calls; ties in turn (round robin)."""
        up = [w for w in self._workers if w.connected]
        if not up:
            return None
        fewest = min(len(w.calls) for w in up)
        tied = [w for w in up if len(w.calls) == fewest]
        self._turn += 1
        return tied[self._turn % len(tied)]

    def _own_call(self, worker: _Worker, call: str) -> None:
        if call not in self._owner:
            self._owner[call] = worker
            worker.calls.add(call)

    def _request(self, worker: _Worker, call: str, done: ResultCallback | None) -> int:
        request_id = next(self._ids) % MAX_REQUEST_ID
        waiting = _Pending(call=call, on_result=done)
        waiting.timer = asyncio.get_running_loop().call_later(
            REQUEST_TIMEOUT, self._expire, worker, request_id
        )
        worker.pending[request_id] = waiting
        return request_id

    def _send(self, worker: _Worker, data: bytes) -> None:
        if worker.writer is not None:
            worker.writer.write(data)

    def _release(self, call: str) -> None:
        self._lost_calls.discard(call)
        worker = self._owner.pop(call, None)
        if worker is None:
            return
        worker.calls.discard(call)
        if worker.connected:
            request_id = self._request(worker, call, None)
            self._releasing.add(call)
            self._send(worker, encode(ReleaseRequest(id=request_id, call=call)))

    def report(self, call: str, done: ReportCallback) -> None:
        """Hand ``done`` the call's final per-leg reports once its release is answered
        (at once, empty, when no release of the call is outstanding)."""
        if call in self._releasing:
            self._reports[call] = done
        else:
            done(())

    def _expire(self, worker: _Worker, request_id: int) -> None:
        waiting = worker.pending.pop(request_id, None)
        if waiting is not None:
            self._timeouts += 1
            log.error("media worker %d did not answer in %.1f s", worker.index, REQUEST_TIMEOUT)
            self._refuse(request_id, waiting, "media relay did not answer")

    def _refuse(self, request_id: int, waiting: _Pending, warning: str) -> None:
        if waiting.timer is not None:
            waiting.timer.cancel()
        if waiting.on_result is not None:
            _deliver(waiting.on_result, MediaRefused(503, warning))
        else:
            self._deliver_report(waiting.call, ())

    def _deliver_report(self, call: str, legs: Sequence[LegReport]) -> None:
        self._releasing.discard(call)
        done = self._reports.pop(call, None)
        if done is None:
            return
        try:
            done(tuple(legs))
        except Exception:
            log.exception("the media report of call %s failed", call[:64])

    # -- replies and notices ----------------------------------------------------------

    def on_message(self, worker: _Worker, message: object) -> None:
        """One message from ``worker``: a reply to the request waiting, or a notice."""
        if isinstance(message, StatsNotice):
            worker.stats = message.stats
        elif isinstance(message, TimeoutNotice):
            stopped = [c for c in message.calls if c in worker.calls]
            reason = message.reason or TIMEOUT_REASON
            self._ended.extend((call, reason) for call in stopped)
        elif isinstance(message, SdpReply | RefusalReply | ReleaseReply):
            self._reply(worker, message)
        else:
            raise ChannelError(f"{type(message).__name__} is not a worker's message")

    def _reply(self, worker: _Worker, reply: SdpReply | RefusalReply | ReleaseReply) -> None:
        waiting = worker.pending.pop(reply.id, None)
        if waiting is None:
            self._unknown += 1
            log.debug("media worker %d: reply to unknown request %d", worker.index, reply.id)
            return
        if waiting.timer is not None:
            waiting.timer.cancel()
        if isinstance(reply, ReleaseReply):
            self._deliver_report(waiting.call, reply.legs)
        elif waiting.on_result is not None:
            result: MediaResult = (
                reply.sdp
                if isinstance(reply, SdpReply)
                else MediaRefused(reply.status, reply.warning)
            )
            _deliver(waiting.on_result, result)

    # -- housekeeping -----------------------------------------------------------------

    def sweep(self) -> list[tuple[str, str]]:
        """Calls to end, with their CDR reason: media stopped, or their worker lost."""
        ended, self._ended = self._ended, []
        return ended

    def statistics(self) -> MediaStatistics:
        """The workers' relay statistics, summed (as last reported)."""
        stats = [w.stats for w in self._workers if w.stats is not None]
        return MediaStatistics(
            active_calls=sum(s.active_calls for s in stats),
            free_port_pairs=sum(s.free_port_pairs for s in stats),
            relayed_packets=sum(s.relayed_packets for s in stats),
            refused_offers=sum(s.refused_offers for s in stats),
            timeouts=sum(s.timeouts for s in stats),
            refused_destinations=sum(s.refused_destinations for s in stats),
        )

    def pool_statistics(self) -> PoolStatistics:
        return PoolStatistics(
            connected=sum(1 for w in self._workers if w.connected),
            workers=len(self._workers),
            unknown_replies=self._unknown,
            timeouts=self._timeouts,
            lost_calls=self._lost,
        )

    async def drain(self) -> None:
        """Wait (at most DRAIN_TIMEOUT) for outstanding replies: release reports at stop."""
        loop = asyncio.get_running_loop()
        end = loop.time() + DRAIN_TIMEOUT
        while any(w.pending and w.connected for w in self._workers) and loop.time() < end:
            await asyncio.sleep(0.01)

    def close(self) -> None:
        """Close every channel; what still waits is refused, reports come back empty."""
        self._closed = True
        for task in self._tasks:
            task.cancel()
        for worker in self._workers:
            if worker.reader is not None:
                worker.reader.cancel()
            if worker.writer is not None:
                worker.writer.close()
                worker.writer = None
            self._fail_pending(worker, "media relay stopped")


def _deliver(done: ResultCallback, result: MediaResult) -> None:
    """Hand a result to the call layer: its failure is its own, never the channel's."""
    try:
        done(result)
    except Exception:
        log.exception("the call layer failed on a media result")


__all__ = [
    "LOST_REASON",
    "REQUEST_TIMEOUT",
    "MediaPool",
    "MediaPoolError",
    "PoolStatistics",
]

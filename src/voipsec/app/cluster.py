"""The signaling workers' channel: one hub, one link per worker, replicated events.

How this works: with ``sip.workers = N > 1`` the parent process of ``voipsec serve`` is
worker 0 and serves a Unix socket (``DIR/run/sip.sock``, 0600 in a 0700 directory);
workers 1..N-1 connect to it and say ``hello`` with their index once their listeners
are bound. Every frame (voipsec/ipc.py) a worker sends names its destination in the
reserved header field ``_to`` (an index, or ``"*"`` for everyone); the hub relays it
and stamps ``_from`` with the index the link said hello with, so a worker never
learns an origin from a frame's own claim. The hub itself is worker 0: frames to 0 are
delivered in the parent.

:class:`Cluster` is what everything else uses, the same object in every mode:
``replicate`` sends this worker's local events of some types to every other worker,
where they are published as :class:`~voipsec.events.RemoteEvent`; ``send``/``broadcast``
carry custom frames, ``on`` receives them; ``on_joined``/``on_lost`` tell who came and
went (a worker that joins gets a snapshot from the others' ``on_joined`` handlers).
:meth:`Cluster.single` is the one-process cluster: every call is a no-op.

Failure mode: fails closed per link. A link that sends a malformed or oversized frame
or an unknown hello is closed (the supervisor restarts its process); the others keep
running and drop what only that worker could reach (``on_lost``). A frame for a worker
that is not connected is dropped and counted, never queued without bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..events import Event, EventBus, RemoteEvent
from ..ipc import ChannelError, Frame, FrameDecoder, decode_event, encode_event, encode_frame
from .supervisor import Supervisor, secure_run_dir, worker_spec

__all__ = [
    "Cluster",
    "ClusterStartError",
    "ClusterStatistics",
    "FrameHandler",
    "Hub",
    "SignalingWorkers",
    "WorkerLink",
    "run_dir",
    "socket_path",
]

log = logging.getLogger("voipsec.cluster")

#: The frame kind a replicated event travels in.
EVENT_KIND = "event"
#: Reserved header fields: the destination a worker names and the origin the hub stamps.
TO = "_to"
FROM = "_from"
EVERYONE = "*"
#: Bytes read from a link at a time.
READ_SIZE = 256 * 1024

FrameHandler = Callable[[int, Frame], None]
PeerHandler = Callable[[int], None]


def run_dir(data_dir: Path) -> Path:
    """``DIR/run`` (0700): the local channels' sockets live here, nowhere else
    (RunDirError when another user owns it or others may enter it)."""
    return secure_run_dir(data_dir)


def socket_path(data_dir: Path) -> Path:
    """The signaling hub's socket, ``DIR/run/sip.sock``."""
    return run_dir(data_dir) / "sip.sock"


@dataclass(frozen=True, slots=True, kw_only=True)
class ClusterStatistics:
    index: int
    size: int
    #: Workers this one knows to be up (itself included).
    alive: int
    sent: int
    received: int
    #: Frames for a worker that was not connected, or that no handler took.
    dropped: int


class Cluster:
    """This worker's view of the signaling workers (see the module docstring)."""

    def __init__(self, *, index: int, size: int, events: EventBus) -> None:
        self.index = index
        self.size = size
        self.events = events
        self._handlers: dict[str, FrameHandler] = {EVENT_KIND: self._remote_event}
        self._joined: list[PeerHandler] = []
        self._lost: list[PeerHandler] = []
        #: How frames leave: set by the hub or the worker link; None in one process.
        self._write: Callable[[int | str, bytes], None] | None = None
        self._alive: set[int] = {index}
        self._counts = {"sent": 0, "received": 0, "dropped": 0}

    @classmethod
    def single(cls, events: EventBus | None = None) -> Cluster:
        """The one-process cluster (sip.workers = 1, tests): every call is a no-op."""
        return cls(index=0, size=1, events=events if events is not None else EventBus())

    # -- the API -----------------------------------------------------------------------

    def replicate(self, *types: type) -> None:
        """Send this worker's local events of ``types`` to every other worker, where
        they are published as RemoteEvent(origin=this index, event=...)."""
        if self.size > 1:
            self.events.subscribe(self._send_event, *types)

    def send(
        self, to: int, kind: str, header: dict[str, Any] | None = None, payload: bytes = b""
    ) -> bool:
        """A frame for worker ``to``; False when it is not connected (dropped, counted)."""
        if to == self.index or not self.is_alive(to) or self._write is None:
            self._counts["dropped"] += 1
            return False
        return self._emit(to, kind, header, payload)

    def broadcast(
        self, kind: str, header: dict[str, Any] | None = None, payload: bytes = b""
    ) -> None:
        """A frame for every other worker (nothing in one process)."""
        if self._write is not None and len(self._alive) > 1:
            self._emit(EVERYONE, kind, header, payload)

    def on(self, kind: str, handler: FrameHandler) -> None:
        """``handler(origin, frame)`` for every frame of ``kind`` another worker sends."""
        if kind in self._handlers:
            raise ValueError(f"frame kind {kind!r} already has a handler")
        self._handlers[kind] = handler

    def on_joined(self, handler: PeerHandler) -> None:
        """``handler(k)`` when worker k (re)joins: send it a snapshot of your state."""
        self._joined.append(handler)

    def on_lost(self, handler: PeerHandler) -> None:
        """``handler(k)`` when worker k's process is gone: drop what only it could reach."""
        self._lost.append(handler)

    def is_alive(self, index: int) -> bool:
        """Whether worker ``index`` is up (a mark naming another one is treated as ours)."""
        return index in self._alive

    @property
    def alive(self) -> frozenset[int]:
        return frozenset(self._alive)

    def statistics(self) -> ClusterStatistics:
        return ClusterStatistics(
            index=self.index, size=self.size, alive=len(self._alive), **self._counts
        )

    # -- the channels' side ------------------------------------------------------------

    def attach(self, write: Callable[[int | str, bytes], None] | None) -> None:
        """The hub or worker link that carries this worker's frames (None: detached)."""
        self._write = write

    def deliver(self, origin: int, frame: Frame) -> None:
        """A frame from worker ``origin`` (the hub vouched for the origin)."""
        self._counts["received"] += 1
        handler = self._handlers.get(frame.kind)
        if handler is None:
            self._counts["dropped"] += 1
            log.debug("no handler for frame %r from worker %d", frame.kind[:32], origin)
            return
        try:
            handler(origin, frame)
        except Exception:
            # A bad frame from one worker must never take this worker's loop down.
            self._counts["dropped"] += 1
            log.exception("handling frame %r from worker %d failed", frame.kind[:32], origin)

    def joined(self, index: int) -> None:
        """Worker ``index`` is up (again): its snapshot handlers run."""
        self._alive.add(index)
        for handler in self._joined:
            self._call(handler, index)

    def lost(self, index: int) -> None:
        """Worker ``index`` is gone: what only it reached is dropped."""
        if index == self.index:
            return
        self._alive.discard(index)
        for handler in self._lost:
            self._call(handler, index)

    def set_alive(self, indices: list[int]) -> None:
        """The workers up when this one joined (the hub's welcome)."""
        self._alive = {self.index, *(i for i in indices if 0 <= i < self.size)}

    def _call(self, handler: PeerHandler, index: int) -> None:
        try:
            handler(index)
        except Exception:
            log.exception("cluster handler %r failed for worker %d", handler, index)

    def _emit(
        self, to: int | str, kind: str, header: dict[str, Any] | None, payload: bytes
    ) -> bool:
        assert self._write is not None  # checked by the callers; not peer data
        fields = dict(header or {})
        fields[TO] = to
        fields[FROM] = self.index  # the hub overwrites it with the link's own index
        try:
            data = encode_frame(kind, fields, payload)
        except ChannelError as err:
            self._counts["dropped"] += 1
            log.warning("frame %r not sent: %s", kind, err)
            return False
        self._counts["sent"] += 1
        self._write(to, data)
        return True

    def _send_event(self, event: Event) -> None:
        if isinstance(event, RemoteEvent):
            return  # never echo what came from elsewhere
        self.broadcast(EVENT_KIND, {"event": encode_event(event)})

    def _remote_event(self, origin: int, frame: Frame) -> None:
        event = decode_event(frame.header.get("event") or {})
        self.events.publish(RemoteEvent(origin=origin, event=event))


class _Link:
    """One worker's connection to the hub, as the hub sees it."""

    __slots__ = ("decoder", "index", "writer")

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self.decoder = FrameDecoder()
        self.index: int | None = None


class Hub:
    """Worker 0's side: serves the socket, relays frames, tells who joined and left."""

    def __init__(self, cluster: Cluster, path: Path) -> None:
        self.cluster = cluster
        self.path = path
        self._links: dict[int, _Link] = {}
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._complete = asyncio.Event()
        #: Set while serve stops its children: their links closing is no loss then.
        self.stopping = False
        cluster.attach(self._write)

    async def start(self) -> None:
        """Listen on the socket (0600: only this user's processes may connect)."""
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        old = os.umask(0o177)
        try:
            self._server = await asyncio.start_unix_server(self._serve, path=str(self.path))
        finally:
            os.umask(old)
        os.chmod(self.path, 0o600)

    @property
    def complete(self) -> bool:
        """Every worker said hello once (they may have restarted since)."""
        return self._complete.is_set()

    async def wait_complete(self) -> None:
        """Until every worker has said hello (they do once their listeners are bound)."""
        if self.cluster.size <= 1:
            return
        await self._complete.wait()

    def _write(self, to: int | str, data: bytes) -> None:
        """A frame worker 0 sends: to one link, or to every link."""
        if to == EVERYONE:
            for link in self._links.values():
                link.writer.write(data)
        elif isinstance(to, int) and to in self._links:
            self._links[to].writer.write(data)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        link = _Link(writer)
        try:
            while chunk := await reader.read(READ_SIZE):
                for frame in link.decoder.feed(chunk):
                    self._on_frame(link, frame)
        except (ChannelError, ConnectionError) as err:
            log.warning("closing signaling worker link %s: %s", link.index, err)
        finally:
            self._drop(link)
            writer.close()

    def _on_frame(self, link: _Link, frame: Frame) -> None:
        if link.index is None:
            self._hello(link, frame)
            return
        to = frame.header.pop(TO, None)
        origin = link.index
        frame.header[FROM] = origin  # the link's hello says who it is, not the frame
        if to == EVERYONE or to == self.cluster.index:
            self.cluster.deliver(origin, _bare(frame))
        if to == EVERYONE:
            self._relay(frame, origin, [i for i in self._links if i != origin])
        elif isinstance(to, int) and to != self.cluster.index:
            self._relay(frame, origin, [to])

    def _relay(self, frame: Frame, origin: int, targets: list[int]) -> None:
        data = encode_frame(frame.kind, frame.header, frame.payload)
        for index in targets:
            link = self._links.get(index)
            if link is not None:
                link.writer.write(data)

    def _hello(self, link: _Link, frame: Frame) -> None:
        index = frame.header.get("index")
        if frame.kind != "hello" or not isinstance(index, int) or not 0 < index < self.cluster.size:
            raise ChannelError(f"expected a hello with an index in 1..{self.cluster.size - 1}")
        old = self._links.pop(index, None)
        if old is not None:
            old.index = None  # its end must not report the new link lost
            old.writer.close()
            self.cluster.lost(index)
        link.index = index
        alive = sorted(self.cluster.alive)
        link.writer.write(encode_frame("welcome", {FROM: 0, "alive": alive}))
        self._links[index] = link
        log.info("signaling worker %d joined", index)
        for other in self._links.values():
            if other is not link:
                other.writer.write(encode_frame("joined", {FROM: 0, "worker": index}))
        self.cluster.joined(index)
        if len(self._links) == self.cluster.size - 1:
            self._complete.set()

    def _drop(self, link: _Link) -> None:
        index = link.index
        if index is None or self._links.get(index) is not link:
            return
        del self._links[index]
        if self.stopping:
            return
        log.warning("signaling worker %d left", index)
        for other in self._links.values():
            other.writer.write(encode_frame("lost", {FROM: 0, "worker": index}))
        self.cluster.lost(index)

    async def stop(self) -> None:
        for link in list(self._links.values()):
            link.index = None
            link.writer.close()
        self._links.clear()
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        self.cluster.attach(None)


class WorkerLink:
    """Worker k's side (k > 0): connects to the hub, says hello, delivers frames."""

    def __init__(self, cluster: Cluster, path: Path, *, on_closed: Callable[[], None]) -> None:
        self.cluster = cluster
        self.path = path
        self._on_closed = on_closed
        self._writer: asyncio.StreamWriter | None = None
        self._reading: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Connect and say hello (call once this worker's listeners are bound)."""
        reader, writer = await asyncio.open_unix_connection(str(self.path))
        self._writer = writer
        writer.write(encode_frame("hello", {"index": self.cluster.index}))
        self.cluster.attach(self._write)
        self._reading = asyncio.get_running_loop().create_task(self._read(reader))

    def _write(self, to: int | str, data: bytes) -> None:
        if self._writer is not None and not self._writer.is_closing():
            self._writer.write(data)

    async def _read(self, reader: asyncio.StreamReader) -> None:
        decoder = FrameDecoder()
        try:
            while chunk := await reader.read(READ_SIZE):
                for frame in decoder.feed(chunk):
                    self._on_frame(frame)
        except (ChannelError, ConnectionError) as err:
            log.error("signaling hub link broken: %s", err)
        finally:
            self.cluster.attach(None)
            self._on_closed()

    def _on_frame(self, frame: Frame) -> None:
        origin = frame.header.get(FROM, 0)
        if not isinstance(origin, int):
            return
        if frame.kind == "welcome":
            alive = frame.header.get("alive")
            self.cluster.set_alive(
                [i for i in alive if isinstance(i, int)] if isinstance(alive, list) else []
            )
        elif frame.kind == "joined" and isinstance(frame.header.get("worker"), int):
            self.cluster.joined(frame.header["worker"])
        elif frame.kind == "lost" and isinstance(frame.header.get("worker"), int):
            self.cluster.lost(frame.header["worker"])
        else:
            self.cluster.deliver(origin, _bare(frame))

    async def stop(self) -> None:
        if self._reading is not None:
            self._reading.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reading
        if self._writer is not None:
            self._writer.close()
        self.cluster.attach(None)


def _bare(frame: Frame) -> Frame:
    """A frame without the channel's own header fields, as handlers get it."""
    header = {k: v for k, v in frame.header.items() if k not in (TO, FROM)}
    return Frame(kind=frame.kind, header=header, payload=frame.payload)


class ClusterStartError(Exception):
    """A signaling worker exited before it had bound its listeners and said hello."""


class SignalingWorkers:
    """Worker 0's side of ``sip.workers = N > 1``: the hub, and workers 1..N-1 started
    as children (app/supervisor.py restarts one that dies; it binds again and says
    hello again, and the others send it their snapshot)."""

    def __init__(self, cluster: Cluster, data_dir: Path) -> None:
        self.cluster = cluster
        self.data_dir = data_dir
        self.hub = Hub(cluster, socket_path(data_dir))
        self.supervisor = Supervisor(on_exit=self._exited)
        self._failed: asyncio.Future[str] | None = None

    async def start(self) -> None:
        """Start the hub and every child; return once all said hello (their listeners
        are bound), or raise ClusterStartError when one exits first."""
        self._failed = asyncio.get_running_loop().create_future()
        await self.hub.start()
        for index in range(1, self.cluster.size):
            await self.supervisor.start(worker_spec("sip", self.data_dir, index))
        failed = self._failed
        complete: asyncio.Future[None] = asyncio.ensure_future(self.hub.wait_complete())
        waiting: list[asyncio.Future[Any]] = [complete, failed]
        await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        if not complete.done():
            complete.cancel()
            raise ClusterStartError(f"{failed.result()} exited before it was listening")

    def _exited(self, name: str, status: int) -> None:
        if self._failed is not None and not self._failed.done() and not self.hub.complete:
            self._failed.set_result(name)

    def pid(self, index: int) -> int | None:
        """The process id of signaling worker ``index`` (> 0), None between lives."""
        return self.supervisor.pid(f"sip-{index}")

    def forward_signal(self, signum: int) -> None:
        """Pass ``signum`` (SIGHUP: reload certificate and users) to every child."""
        for index in range(1, self.cluster.size):
            pid = self.pid(index)
            # Only a worker that said hello has its handler (SIGHUP would end it before).
            if pid is not None and self.cluster.is_alive(index):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signum)

    async def stop(self) -> None:
        """Every child stopped (SIGTERM, then SIGKILL), then the hub closed."""
        self.hub.stopping = True
        await self.supervisor.stop()
        await self.hub.stop()

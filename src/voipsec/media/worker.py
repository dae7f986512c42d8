"""A media relay worker: one process running the SRTP relay for a slice of the ports.

How this works: ``voipsec serve`` starts ``media.workers`` of these (through
:mod:`voipsec.app.supervisor` and :mod:`voipsec.app.worker_main`), like rtpengine
beside Kamailio. Worker ``K`` of ``N`` owns the K-th of N equal, disjoint slices of
``[media] ports`` (whole even/odd pairs), binds ``[media] address`` for its calls'
legs, and serves its control channel on the Unix socket ``DIR/run/media-K.sock``
(0600, in a 0700 directory: the channel is authenticated by file permissions and
never listens on the network). Every signaling process connects to every worker and
drives it with :mod:`.control` messages; the relay itself (:mod:`.relay`) is unchanged.

A call belongs to the channel that offered it: its media-timeout notice goes there,
and when that channel closes (its signaling process died) its calls are released, so
no port pair leaks. Every :data:`NOTICE_INTERVAL` the worker sweeps for answered calls
whose media stopped and sends its statistics to every channel.

Hardening stays in the relay: the destination rule covers the *whole* media port
range (another worker's ports are "the relay's own ports" too), latching, strict
source and the replay window are the relay's.

Failure mode: fails closed. A bad frame closes that channel (the signaling side
reconnects, its calls on this worker end); a run directory that others can read
stops the worker before it listens.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..app.supervisor import WorkerArgs, secure_run_dir
from ..config import CONFIG_NAME, Config, load, parse_listen
from ..ipc import ChannelError, FrameDecoder
from .control import (
    MAX_LEGS,
    MAX_TIMEOUT_CALLS,
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
from .destinations import MediaPolicy
from .errors import MediaRefused
from .relay import MediaRelay

log = logging.getLogger("voipsec.media.worker")

#: Seconds between two sweeps for stopped media (and statistics notices).
NOTICE_INTERVAL = 1.0
#: Bytes read from a control channel at a time.
READ_SIZE = 64 * 1024


def socket_path(data_dir: Path, index: int) -> Path:
    """The control socket of media worker ``index``."""
    return data_dir / "run" / f"media-{index}.sock"


def _write_pid(path: Path) -> None:
    """Our process id in ``path``, 0600 from the start, appearing whole: written to a
    temporary name and renamed, so a reader never sees an empty or partial file."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(f"{os.getpid()}\n")
    os.replace(temporary, path)


def pid_path(data_dir: Path, index: int) -> Path:
    """The file holding the process id of media worker ``index``."""
    return data_dir / "run" / f"media-{index}.pid"


def port_slices(ports: tuple[int, int], count: int) -> list[tuple[int, int]]:
    """``ports`` (inclusive LOW-HIGH) cut into at most ``count`` disjoint ranges of
    whole RTP/RTCP pairs (even RTP port); fewer when there are fewer pairs."""
    low, high = ports
    pairs = list(range(low + (low % 2), high, 2))
    count = max(1, min(count, len(pairs)))
    slices = []
    for k in range(count):
        mine = pairs[k * len(pairs) // count : (k + 1) * len(pairs) // count]
        slices.append((mine[0], mine[-1] + 1))
    return slices


def own_endpoints(config: Config) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """The SIP and TURN listeners: media never goes to them (nor to the relay's ports)."""
    listens = [*config.sip.listeners(), *(parse_listen(x) for x in config.turn.listen)]
    return tuple(sorted({x.host for x in listens})), tuple(sorted({x.port for x in listens}))


def build_relay(config: Config, ports: tuple[int, int] | None = None) -> MediaRelay:
    """The relay of ``[media]``, on ``ports`` (a worker's slice) or the whole range.

    Whatever the slice, the destination rule knows the whole range as the relay's
    own ports: media may never be sent to another worker's legs (SSRF, issue 13).
    """
    media = config.media
    own_addresses, own_ports = own_endpoints(config)
    relay = MediaRelay(
        address=media.address,
        ports=ports or media.port_range(),
        srtp=media.srtp,
        srtp_offer=media.srtp_offer,
        suites=media.suites,
        timeout=media.timeout,
        dscp=media.dscp,
        own_addresses=own_addresses,
        own_ports=own_ports,
        allowed_peers=media.allowed_peers,
        sdp_allow_attributes=media.sdp_allow_attributes,
        max_streams=media.max_streams,
        dtls_timeout=media.dtls_timeout,
    )
    if ports is not None:
        relay.policy = MediaPolicy(
            own_addresses=(media.address, *own_addresses),
            own_ports=own_ports,
            own_port_ranges=(media.port_range(),),
            allowed_peers=media.allowed_peers,
        )
    return relay


@dataclass(eq=False, slots=True)
class _Channel:
    """One signaling process's connection, and the calls it offered."""

    writer: asyncio.StreamWriter
    calls: set[str] = field(default_factory=set)

    def send(self, data: bytes) -> None:
        if not self.writer.is_closing():
            self.writer.write(data)


class RelayWorker:
    """The relay of one worker process and the control channels that drive it."""

    def __init__(self, relay: MediaRelay) -> None:
        self.relay = relay
        self._channels: set[_Channel] = set()
        self._owner: dict[str, _Channel] = {}
        self.bad_frames = 0

    async def serve_channel(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """Read one channel's requests until it closes or sends a bad frame."""
        channel = _Channel(writer=writer)
        self._channels.add(channel)
        decoder = FrameDecoder()
        try:
            while data := await reader.read(READ_SIZE):
                for frame in decoder.feed(data):
                    self.handle(channel, decode(frame))
        except ChannelError as err:
            self.bad_frames += 1
            log.warning("control channel closed: %s", err)
        except ConnectionError:
            pass
        finally:
            self._channels.discard(channel)
            self._release_all(channel)
            writer.close()

    def handle(self, channel: _Channel, message: object) -> None:
        """Carry out one request; replies go back on ``channel``."""
        if isinstance(message, OfferRequest | AnswerRequest):
            channel.send(encode(self._rewrite(channel, message)))
        elif isinstance(message, AnsweredNotice):
            self.relay.answered(message.call)
        elif isinstance(message, ReleaseRequest):
            self.relay.release(message.call)
            self._forget(message.call)
            legs = tuple(self.relay.report(message.call))[:MAX_LEGS]
            try:
                reply = encode(ReleaseReply(id=message.id, legs=legs))
            except ChannelError:  # never the channel for one call's report
                log.exception("the media report of call %s does not fit", message.call[:64])
                reply = encode(ReleaseReply(id=message.id, legs=()))
            channel.send(reply)
        else:
            raise ChannelError(f"{type(message).__name__} is not a request")

    def _rewrite(
        self, channel: _Channel, request: OfferRequest | AnswerRequest
    ) -> SdpReply | RefusalReply:
        call, side = request.call, request.side
        try:
            if isinstance(request, OfferRequest):
                sdp = self.relay.offer(
                    call,
                    side,
                    request.sdp,
                    request.peer,
                    rekey=request.rekey,
                    webrtc=request.webrtc,
                )
            else:
                sdp = self.relay.answer(call, side, request.sdp, request.peer)
        except MediaRefused as err:
            return RefusalReply(id=request.id, status=err.status, warning=err.warning)
        except Exception:
            log.exception("relay failed on call %s", request.call[:64])
            return RefusalReply(id=request.id, status=500, warning="media relay error")
        if request.call not in self._owner:
            self._owner[request.call] = channel
            channel.calls.add(request.call)
        return SdpReply(id=request.id, sdp=sdp)

    def _forget(self, call: str) -> None:
        owner = self._owner.pop(call, None)
        if owner is not None:
            owner.calls.discard(call)

    def _release_all(self, channel: _Channel) -> None:
        """The channel's signaling process is gone: its calls end here too."""
        if channel.calls:
            log.warning("control channel lost: releasing its %d call(s)", len(channel.calls))
        for call in list(channel.calls):
            self.relay.release(call)
            self.relay.report(call)  # its final report has no reader any more
            self._forget(call)

    def notify(self) -> None:
        """Send timed-out calls to their owners and statistics to every channel."""
        stopped: dict[tuple[_Channel, str], list[str]] = {}
        ended = [(call, "") for call in self.relay.sweep()] + self.relay.failures()
        for call, reason in ended:
            owner = self._owner.get(call)
            if owner is not None:
                stopped.setdefault((owner, reason), []).append(call)
        for (channel, reason), calls in stopped.items():
            for start in range(0, len(calls), MAX_TIMEOUT_CALLS):
                chunk = tuple(calls[start : start + MAX_TIMEOUT_CALLS])
                channel.send(encode(TimeoutNotice(calls=chunk, reason=reason)))
        stats = encode(StatsNotice(stats=self.relay.statistics()))
        for channel in self._channels:
            channel.send(stats)

    def close(self) -> None:
        self.relay.close()
        for channel in list(self._channels):
            channel.writer.close()


def _worker_count(extra: Sequence[str]) -> int | None:
    """``--workers N`` among the role's options: how many slices the parent cut."""
    if "--workers" in extra:
        position = list(extra).index("--workers")
        if position + 1 < len(extra) and extra[position + 1].isdigit():
            return int(extra[position + 1])
    return None


async def run(args: WorkerArgs, stopping: asyncio.Event) -> None:
    """The worker's life: relay and channel up, notices every second, until stopped."""
    config = load(args.data_dir / CONFIG_NAME)
    count = _worker_count(args.extra) or config.media.worker_count()
    slices = port_slices(config.media.port_range(), count)
    if not 0 <= args.index < len(slices):
        raise ValueError(f"media worker {args.index} of {len(slices)} does not exist")
    ports = slices[args.index]
    secure_run_dir(args.data_dir)
    worker = RelayWorker(build_relay(config, ports))
    path = socket_path(args.data_dir, args.index)
    server = await _listen(worker, path)
    pid_file = pid_path(args.data_dir, args.index)
    _write_pid(pid_file)
    log.info("relay on %s ports %d-%d, control %s", config.media.address, *ports, path.name)
    try:
        while not stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), NOTICE_INTERVAL)
            worker.notify()
    finally:
        server.close()
        worker.close()
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        with contextlib.suppress(FileNotFoundError):
            pid_file.unlink()
        log.info("stopped")


async def _listen(worker: RelayWorker, path: Path) -> asyncio.AbstractServer:
    """The control socket, created 0600 (a stale one from a dead worker replaced)."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    old = os.umask(0o177)
    try:
        server = await asyncio.start_unix_server(worker.serve_channel, path=str(path))
    finally:
        os.umask(old)
    path.chmod(0o600)
    return server


__all__ = [
    "NOTICE_INTERVAL",
    "RelayWorker",
    "build_relay",
    "own_endpoints",
    "pid_path",
    "port_slices",
    "run",
    "socket_path",
]

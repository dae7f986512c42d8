"""media/worker.py: port slices, the run directory check, and a RelayWorker's channels
(a closed channel releases its calls; a bad frame closes the channel; timeouts go to
the channel that owns the call)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.peers.proc import free_udp_ports
from voipsec.app.supervisor import RunDirError, secure_run_dir
from voipsec.config import Config
from voipsec.ipc import FrameDecoder
from voipsec.media.control import (
    OfferRequest,
    SdpReply,
    StatsNotice,
    TimeoutNotice,
    decode,
    encode,
)
from voipsec.media.destinations import MediaPeer
from voipsec.media.worker import RelayWorker, build_relay, port_slices

from .test_media_pool import PORTS, _sdp


def test_media_worker_port_slices_are_disjoint_whole_pairs() -> None:
    assert port_slices((20000, 20999), 2) == [(20000, 20499), (20500, 20999)]
    assert port_slices((20001, 20010), 2) == [(20002, 20005), (20006, 20009)]
    assert port_slices((20000, 20999), 1) == [(20000, 20999)]


def test_media_worker_port_slices_never_more_than_the_pairs() -> None:
    # Two pairs, four workers asked: two workers, one pair each.
    assert port_slices((20000, 20003), 4) == [(20000, 20001), (20002, 20003)]


def test_media_worker_run_dir_is_created_0700(tmp_path: Path) -> None:
    run = secure_run_dir(tmp_path)
    assert run == tmp_path / "run"
    assert run.stat().st_mode & 0o777 == 0o700


def test_media_worker_run_dir_others_may_enter_is_refused(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    (tmp_path / "run").chmod(0o750)
    with pytest.raises(RunDirError, match=r"accessible to group or others \(mode 750\)"):
        secure_run_dir(tmp_path)


def test_media_worker_run_dir_not_a_directory_is_refused(tmp_path: Path) -> None:
    (tmp_path / "run").symlink_to(tmp_path)
    with pytest.raises(RunDirError, match="is not a directory"):
        secure_run_dir(tmp_path)


async def _until(condition: Callable[[], object], deadline: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline
    while not condition():
        assert loop.time() < end, "condition not met before the deadline"
        await asyncio.sleep(0.005)


async def _worker(tmp_path: Path) -> tuple[RelayWorker, asyncio.AbstractServer, Path]:
    low = free_udp_ports(PORTS)
    config = Config.model_validate({"media": {"ports": f"{low}-{low + PORTS - 1}"}})
    worker = RelayWorker(build_relay(config, (low, low + 3)))
    path = tmp_path / "media-0.sock"
    server = await asyncio.start_unix_server(worker.serve_channel, path=str(path))
    return worker, server, path


async def test_media_worker_closed_channel_releases_its_calls(tmp_path: Path) -> None:
    worker, server, path = await _worker(tmp_path)
    reader, writer = await asyncio.open_unix_connection(str(path))
    offer = OfferRequest(id=1, call="c1", side="a", sdp=_sdp(), peer=MediaPeer(source="192.0.2.10"))
    writer.write(encode(offer))
    decoder = FrameDecoder()
    (frame,) = decoder.feed(await reader.read(65536))
    reply = decode(frame)
    assert isinstance(reply, SdpReply) and reply.id == 1
    free = worker.relay.statistics().free_port_pairs
    assert worker.relay.statistics().active_calls == 1
    writer.close()
    await _until(lambda: worker.relay.statistics().active_calls == 0)
    # Its port pairs are back in the relay's pool (media/sockets.py keeps them bound).
    assert worker.relay.statistics().free_port_pairs == free + 2
    server.close()
    worker.close()


async def test_media_worker_bad_frame_closes_the_channel(tmp_path: Path) -> None:
    worker, server, path = await _worker(tmp_path)
    reader, writer = await asyncio.open_unix_connection(str(path))
    writer.write(b"\xff\xff\xff\xff")  # a frame length over MAX_FRAME
    assert await reader.read(65536) == b""  # closed by the worker
    assert worker.bad_frames == 1
    writer.close()
    server.close()
    worker.close()


async def test_media_worker_timeout_goes_to_the_owner_and_stats_to_all(
    tmp_path: Path,
) -> None:
    low = free_udp_ports(PORTS)
    config = Config.model_validate({"media": {"ports": f"{low}-{low + PORTS - 1}", "timeout": 1.0}})
    clock = [1000.0]
    relay = build_relay(config, (low, low + 3))
    relay.clock = lambda: clock[0]
    worker = RelayWorker(relay)
    path = tmp_path / "media-0.sock"
    server = await asyncio.start_unix_server(worker.serve_channel, path=str(path))
    owner_r, owner_w = await asyncio.open_unix_connection(str(path))
    other_r, other_w = await asyncio.open_unix_connection(str(path))
    owner_w.write(
        encode(
            OfferRequest(id=1, call="c1", side="a", sdp=_sdp(), peer=MediaPeer(source="192.0.2.10"))
        )
    )
    await owner_r.read(65536)
    relay.answered("c1")
    clock[0] += 5.0
    await _until(lambda: len(worker._channels) == 2)
    worker.notify()
    owner = [decode(f) for f in FrameDecoder().feed(await owner_r.read(65536))]
    other = [decode(f) for f in FrameDecoder().feed(await other_r.read(65536))]
    assert TimeoutNotice(calls=("c1",)) in owner
    assert [type(m) for m in other] == [StatsNotice]
    for w in (owner_w, other_w):
        w.close()
    server.close()
    worker.close()

"""media/pool.py with media/worker.py's RelayWorker on Unix sockets, in this process.

The pool spreads calls (fewest active calls, ties in turn), hands each result to the
callback that waits for it, refuses what gets no reply (503 with a Warning), counts
and drops replies to unknown ids, ends a lost worker's calls with "media worker lost",
and reconnects. Conditions are awaited with a deadline, never slept for."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.peers.proc import free_udp_ports
from voipsec.config import Config
from voipsec.core.callmodel import AllocateMedia, AnswerMedia, ReleaseMedia, Side
from voipsec.ipc import FrameDecoder
from voipsec.media import pool as pool_module
from voipsec.media.control import SdpReply, TimeoutNotice, encode
from voipsec.media.destinations import MediaPeer
from voipsec.media.errors import MediaRefused
from voipsec.media.pool import LOST_REASON, TIMEOUT_REASON, MediaPool
from voipsec.media.relay import LegReport
from voipsec.media.sdes import SUITES, crypto_line, master_of, new_master
from voipsec.media.sdp import parse_sdp
from voipsec.media.worker import RelayWorker, build_relay, port_slices

#: Media ports per test (pairs are taken lazily, on an offer).
PORTS = 16
PEER = MediaPeer(source="192.0.2.10")
SUITE = SUITES["AES_CM_128_HMAC_SHA1_80"]


def _sdp(port: int = 4000) -> bytes:
    crypto = crypto_line(1, SUITE, new_master(SUITE))
    lines = [
        "v=0",
        "o=- 7 1 IN IP4 192.0.2.10",
        "s=-",
        "c=IN IP4 192.0.2.10",
        "t=0 0",
        f"m=audio {port} RTP/SAVP 0",
        "a=rtpmap:0 PCMU/8000",
        f"a=crypto:{crypto.tag} {crypto.suite} {crypto.key_params}",
    ]
    return ("\r\n".join(lines) + "\r\n").encode()


async def _until(condition: Callable[[], object], deadline: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline
    while not condition():
        assert loop.time() < end, "condition not met before the deadline"
        await asyncio.sleep(0.005)


@dataclass
class Results:
    """What the pool delivered, in order."""

    got: list[bytes | MediaRefused] = field(default_factory=list)

    def __call__(self, result: bytes | MediaRefused) -> None:
        self.got.append(result)

    async def next(self) -> bytes | MediaRefused:
        count = len(self.got)
        await _until(lambda: len(self.got) > count)
        return self.got[-1]


@dataclass
class Workers:
    paths: list[Path]
    relays: list[RelayWorker]
    servers: list[asyncio.AbstractServer]


async def _workers(tmp_path: Path, count: int) -> Workers:
    low = free_udp_ports(PORTS)
    config = Config.model_validate({"media": {"ports": f"{low}-{low + PORTS - 1}"}})
    slices = port_slices(config.media.port_range(), count)
    workers = Workers(paths=[], relays=[], servers=[])
    for k, ports in enumerate(slices):
        relay = RelayWorker(build_relay(config, ports))
        path = tmp_path / f"media-{k}.sock"
        server = await asyncio.start_unix_server(relay.serve_channel, path=str(path))
        workers.paths.append(path)
        workers.relays.append(relay)
        workers.servers.append(server)
    return workers


@pytest.fixture
async def two(tmp_path: Path) -> AsyncIterator[tuple[MediaPool, Workers]]:
    workers = await _workers(tmp_path, 2)
    pool = MediaPool(paths=workers.paths, timeout=30.0)
    await pool.start()
    yield pool, workers
    pool.close()
    for relay, server in zip(workers.relays, workers.servers, strict=True):
        server.close()
        relay.close()


def _offer(call: str, key: int = 1) -> AllocateMedia:
    return AllocateMedia(key=key, call=call, side=Side.A, sdp=_sdp(), peer=PEER)


def _active(workers: Workers) -> list[int]:
    return [r.relay.statistics().active_calls for r in workers.relays]


async def test_media_pool_offer_answer_release_round_trip(
    two: tuple[MediaPool, Workers],
) -> None:
    pool, workers = two
    results = Results()
    pool.perform(_offer("c1"), results)
    offer = await results.next()
    assert isinstance(offer, bytes) and b"c=IN IP4 127.0.0.1" in offer
    answer = AnswerMedia(key=2, call="c1", side=Side.B, sdp=_sdp(5000), peer=PEER)
    pool.perform(answer, results)
    assert isinstance(await results.next(), bytes)
    reports: list[Sequence[LegReport]] = []
    pool.perform(ReleaseMedia("c1"), results)
    pool.report("c1", reports.append)
    await _until(lambda: reports)
    assert sorted(leg.leg for leg in reports[0]) == ["a", "b"]
    assert _active(workers) == [0, 0]
    assert len(results.got) == 2  # the release has no result of its own


async def test_media_pool_rekeyed_offer_reaches_the_relay_with_its_flag(
    two: tuple[MediaPool, Workers],
) -> None:
    """A transfer's offer (rekey) crosses the control channel: the worker's relay
    offers bob's leg anew with a fresh key, not the one bob was given."""
    pool, _ = two
    results = Results()
    alice = _sdp()
    pool.perform(AllocateMedia(key=1, call="c1", side=Side.A, sdp=alice, peer=PEER), results)
    to_bob = await results.next()
    assert isinstance(to_bob, bytes)
    bob_crypto = parse_sdp(to_bob).media[0].crypto[0]  # alice's suite, tag 1: bob's pick
    assert (bob_crypto.tag, bob_crypto.suite) == (1, SUITE.name)
    answer = AnswerMedia(key=2, call="c1", side=Side.B, sdp=_sdp(5000), peer=PEER)
    pool.perform(answer, results)
    assert isinstance(await results.next(), bytes)
    rekeyed = AllocateMedia(key=3, call="c1", side=Side.A, sdp=alice, peer=PEER, rekey=True)
    pool.perform(rekeyed, results)
    to_carol = await results.next()
    assert isinstance(to_carol, bytes)
    keys = [master_of(c) for c in parse_sdp(to_carol).media[0].crypto]
    assert keys and master_of(bob_crypto) not in keys
    assert parse_sdp(to_carol).media[0].port == parse_sdp(to_bob).media[0].port


async def test_media_pool_spreads_calls_to_the_least_busy_worker(
    two: tuple[MediaPool, Workers],
) -> None:
    pool, workers = two
    results = Results()
    for call in ("c1", "c2"):
        pool.perform(_offer(call), results)
        await results.next()
    assert _active(workers) == [1, 1]
    busy = 0 if workers.relays[0].relay.ports_of("c1") else 1
    pool.perform(ReleaseMedia("c1"), results)
    pool.report("c1", lambda legs: None)
    await _until(lambda: sum(_active(workers)) == 1)
    pool.perform(_offer("c3"), results)
    await results.next()
    assert workers.relays[busy].relay.ports_of("c3")  # where c1 was: fewest calls


async def test_media_pool_relays_the_workers_refusal(two: tuple[MediaPool, Workers]) -> None:
    pool, _ = two
    results = Results()
    bad = AllocateMedia(key=1, call="c1", side=Side.A, sdp=b"not sdp", peer=PEER)
    pool.perform(bad, results)
    refused = await results.next()
    assert isinstance(refused, MediaRefused)
    assert refused.status == 488 and refused.warning.startswith("unusable SDP")


async def test_media_pool_answer_for_an_unknown_call_is_refused_488(
    two: tuple[MediaPool, Workers],
) -> None:
    pool, workers = two
    results = Results()
    pool.perform(AnswerMedia(key=1, call="nope", side=Side.B, sdp=_sdp(), peer=PEER), results)
    refused = results.got[0]
    assert isinstance(refused, MediaRefused)
    assert (refused.status, refused.warning) == (488, "no offer for this answer")
    rekey = AllocateMedia(key=2, call="nope", side=Side.A, sdp=_sdp(), peer=PEER, rekey=True)
    pool.perform(rekey, results)
    unknown = results.got[1]
    assert isinstance(unknown, MediaRefused)
    assert (unknown.status, unknown.warning) == (488, "no call to transfer")
    assert _active(workers) == [0, 0]  # no worker took a call that is not there


async def test_media_pool_without_a_worker_refuses_503(tmp_path: Path) -> None:
    pool = MediaPool(paths=[tmp_path / "media-0.sock"], timeout=30.0)
    results = Results()
    pool.perform(_offer("c1"), results)
    refused = results.got[0]
    assert isinstance(refused, MediaRefused)
    assert (refused.status, refused.warning) == (503, "no media relay worker available")
    pool.close()


async def test_media_pool_start_fails_when_a_worker_never_listens(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pool_module, "START_TIMEOUT", 0.1)
    pool = MediaPool(paths=[tmp_path / "media-0.sock"], timeout=30.0)
    with pytest.raises(pool_module.MediaPoolError, match="media worker 0 did not accept"):
        await pool.start()
    pool.close()


# -- a fake worker: reads requests, answers only what the test says ---------------------


@dataclass
class FakeWorker:
    path: Path
    frames: list[object] = field(default_factory=list)
    writers: list[asyncio.StreamWriter] = field(default_factory=list)
    server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        self.server = await asyncio.start_unix_server(self._serve, path=str(self.path))

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        decoder = FrameDecoder()
        while data := await reader.read(4096):
            self.frames.extend(decoder.feed(data))

    def send(self, data: bytes) -> None:
        self.writers[-1].write(data)

    def close(self) -> None:
        if self.server is not None:
            self.server.close()
        for writer in self.writers:
            writer.close()


@pytest.fixture
async def fake(tmp_path: Path) -> AsyncIterator[tuple[MediaPool, FakeWorker]]:
    worker = FakeWorker(tmp_path / "media-0.sock")
    await worker.start()
    pool = MediaPool(paths=[worker.path], timeout=30.0)
    await pool.start()
    await _until(lambda: worker.writers)
    yield pool, worker
    pool.close()
    worker.close()


async def test_media_pool_request_without_reply_is_refused_503(
    fake: tuple[MediaPool, FakeWorker], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pool_module, "REQUEST_TIMEOUT", 0.05)
    pool, worker = fake
    results = Results()
    pool.perform(_offer("c1"), results)
    refused = await results.next()
    assert isinstance(refused, MediaRefused)
    assert (refused.status, refused.warning) == (503, "media relay did not answer")
    assert pool.pool_statistics().timeouts == 1
    # The late reply is counted and dropped; the channel stays up.
    (request,) = worker.frames
    worker.send(encode(SdpReply(id=request.header["id"], sdp=b"late")))  # type: ignore[attr-defined]
    await _until(lambda: pool.pool_statistics().unknown_replies == 1)
    assert pool.pool_statistics().connected == 1
    assert results.got == [refused]


async def test_media_pool_lost_worker_refuses_pending_and_ends_its_calls(
    fake: tuple[MediaPool, FakeWorker],
) -> None:
    pool, worker = fake
    results = Results()
    pool.perform(_offer("c1"), results)
    await _until(lambda: worker.frames)
    worker.send(encode(SdpReply(id=worker.frames[0].header["id"], sdp=b"sdp")))  # type: ignore[attr-defined]
    assert await results.next() == b"sdp"
    pool.perform(_offer("c2"), results)  # pending when the worker goes
    await _until(lambda: len(worker.frames) == 2)
    worker.writers[-1].close()
    refused = await results.next()
    assert isinstance(refused, MediaRefused)
    assert (refused.status, refused.warning) == (503, "media relay worker lost")
    assert sorted(pool.sweep()) == [("c1", LOST_REASON), ("c2", LOST_REASON)]
    assert pool.sweep() == []
    assert pool.pool_statistics().lost_calls == 2
    # A lost call is refused until it is released, never moved to another worker.
    pool.perform(_offer("c1", key=3), results)
    assert results.got[-1].warning == "media relay worker lost"  # type: ignore[union-attr]
    pool.perform(ReleaseMedia("c1"), results)
    # The pool connects again by itself; new calls go there.
    await _until(lambda: len(worker.writers) == 2 and pool.pool_statistics().connected == 1)


async def test_media_pool_bad_frame_from_a_worker_closes_its_channel(
    fake: tuple[MediaPool, FakeWorker],
) -> None:
    pool, worker = fake
    worker.send(b"\x00\x00\x00\x05\x00\x03xyz")  # a header that is not JSON
    await _until(lambda: len(worker.writers) == 2)  # closed, then reconnected
    assert pool.pool_statistics().connected == 1


async def test_media_pool_timeout_notice_ends_only_that_workers_calls(
    fake: tuple[MediaPool, FakeWorker],
) -> None:
    pool, worker = fake
    results = Results()
    pool.perform(_offer("c1"), results)
    await _until(lambda: worker.frames)
    worker.send(encode(SdpReply(id=worker.frames[0].header["id"], sdp=b"sdp")))  # type: ignore[attr-defined]
    await results.next()
    worker.send(encode(TimeoutNotice(calls=("c1", "someone-elses"))))
    await _until(lambda: pool.sweep() == [("c1", TIMEOUT_REASON)])


async def test_media_pool_statistics_sum_the_workers(two: tuple[MediaPool, Workers]) -> None:
    pool, workers = two
    results = Results()
    for call in ("c1", "c2"):
        pool.perform(_offer(call), results)
        await results.next()
    for relay in workers.relays:
        relay.notify()
    await _until(lambda: pool.statistics().active_calls == 2)
    free = sum(r.relay.statistics().free_port_pairs for r in workers.relays)
    assert pool.statistics().free_port_pairs == free

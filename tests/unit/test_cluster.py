"""app/cluster.py: the hub relays frames between signaling workers and vouches for origins."""

from __future__ import annotations

import asyncio
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from voipsec.app.cluster import Cluster, Hub, WorkerLink, socket_path
from voipsec.events import BanLifted, Event, EventBus, RemoteEvent, RequestHandled
from voipsec.ipc import Frame, encode_frame

DEADLINE = 20.0  # generous: the machine may be busy; a pass is usually instant


async def until(condition: Callable[[], object], what: str) -> None:
    """Wait for ``condition`` with a deadline (the loop runs the links meanwhile)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + DEADLINE
    while not condition():
        if loop.time() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


class Node:
    """One worker: its bus, its cluster and what reached it."""

    def __init__(self, index: int, size: int) -> None:
        self.bus = EventBus()
        self.cluster = Cluster(index=index, size=size, events=self.bus)
        self.remote: list[Event] = []
        self.frames: list[tuple[int, Frame]] = []
        self.joined: list[int] = []
        self.lost: list[int] = []
        self.bus.subscribe(self.remote.append, RemoteEvent)
        self.cluster.on("ping", lambda origin, frame: self.frames.append((origin, frame)))
        self.cluster.on_joined(self.joined.append)
        self.cluster.on_lost(self.lost.append)


async def _three(tmp_path: Path) -> tuple[Hub, list[WorkerLink], list[Node]]:
    nodes = [Node(i, 3) for i in range(3)]
    hub = Hub(nodes[0].cluster, socket_path(tmp_path))
    await hub.start()
    links = [WorkerLink(n.cluster, hub.path, on_closed=lambda: None) for n in nodes[1:]]
    for link in links:
        await link.start()
    await asyncio.wait_for(hub.wait_complete(), DEADLINE)
    await until(lambda: all(len(n.cluster.alive) == 3 for n in nodes), "everyone alive")
    return hub, links, nodes


def test_cluster_single_is_a_noop() -> None:
    cluster = Cluster.single()
    cluster.replicate(BanLifted)
    cluster.broadcast("ping")
    assert cluster.send(1, "ping") is False
    assert (cluster.index, cluster.size, cluster.alive) == (0, 1, frozenset({0}))


def test_cluster_unicast_relayed_with_origin_from_the_hub(tmp_path: Path) -> None:
    async def run() -> list[Node]:
        hub, links, nodes = await _three(tmp_path)
        nodes[1].cluster.send(2, "ping", {"n": 1, "_from": 0}, b"payload")
        nodes[2].cluster.send(0, "ping", {"n": 2})
        nodes[0].cluster.send(1, "ping", {"n": 3})
        await until(lambda: all(n.frames for n in nodes), "every frame")
        for link in links:
            await link.stop()
        await hub.stop()
        return nodes

    nodes = asyncio.run(run())
    # Worker 1 claimed to be worker 0 in its header: the hub stamped the link's index.
    assert nodes[2].frames == [(1, Frame(kind="ping", header={"n": 1}, payload=b"payload"))]
    assert nodes[0].frames == [(2, Frame(kind="ping", header={"n": 2}))]
    assert nodes[1].frames == [(0, Frame(kind="ping", header={"n": 3}))]


def test_cluster_replicated_events_arrive_as_remote_events(tmp_path: Path) -> None:
    async def run() -> list[Node]:
        hub, links, nodes = await _three(tmp_path)
        for node in nodes:
            node.cluster.replicate(BanLifted)
        nodes[1].bus.publish(BanLifted(source="192.0.2.1", time=1.0))
        nodes[1].bus.publish(RequestHandled(method="INVITE", seconds=0.1))  # not replicated
        await until(lambda: nodes[0].remote and nodes[2].remote, "the replicated event")
        nodes[0].bus.publish(BanLifted(source="192.0.2.2", time=2.0))
        await until(lambda: len(nodes[2].remote) == 2, "the hub's own event")
        for link in links:
            await link.stop()
        await hub.stop()
        return nodes

    nodes = asyncio.run(run())
    first = RemoteEvent(origin=1, event=BanLifted(source="192.0.2.1", time=1.0))
    assert nodes[0].remote == [first]
    assert nodes[2].remote == [
        first,
        RemoteEvent(origin=0, event=BanLifted(source="192.0.2.2", time=2.0)),
    ]
    assert nodes[1].remote == [RemoteEvent(origin=0, event=BanLifted(source="192.0.2.2", time=2.0))]


def test_cluster_joined_and_lost_are_told_to_everyone(tmp_path: Path) -> None:
    async def run() -> list[Node]:
        hub, links, nodes = await _three(tmp_path)
        await links[1].stop()  # worker 2's process is gone
        await until(lambda: nodes[0].lost and nodes[1].lost, "the loss")
        assert nodes[1].cluster.send(2, "ping") is False
        await links[0].stop()
        await hub.stop()
        return nodes

    nodes = asyncio.run(run())
    assert nodes[0].joined == [1, 2] and nodes[1].joined == [2]
    assert nodes[0].lost == [2] and nodes[1].lost == [2]
    assert nodes[1].cluster.statistics().dropped == 1


def test_cluster_socket_is_private(tmp_path: Path) -> None:
    async def run() -> tuple[int, int]:
        hub = Hub(Cluster(index=0, size=2, events=EventBus()), socket_path(tmp_path))
        await hub.start()
        modes = (hub.path.stat().st_mode, hub.path.parent.stat().st_mode)
        await hub.stop()
        return modes

    sock, folder = asyncio.run(run())
    assert stat.S_IMODE(sock) == 0o600 and stat.S_IMODE(folder) == 0o700


@pytest.mark.parametrize(
    "hello",
    [
        encode_frame("hello", {"index": 0}),  # the hub's own index
        encode_frame("hello", {"index": 2}),  # out of range
        encode_frame("ping", {"index": 1}),  # not a hello
        b"\xff\xff\xff\xff",  # over MAX_FRAME
    ],
)
def test_cluster_bad_hello_closes_the_link(tmp_path: Path, hello: bytes) -> None:
    async def run() -> tuple[bytes, list[int]]:
        node = Node(0, 2)
        hub = Hub(node.cluster, socket_path(tmp_path))
        await hub.start()
        reader, writer = await asyncio.open_unix_connection(str(hub.path))
        writer.write(hello)
        rest = await asyncio.wait_for(reader.read(), DEADLINE)
        writer.close()
        await hub.stop()
        return rest, node.joined

    assert asyncio.run(run()) == (b"", [])


def test_cluster_handler_failure_is_contained(tmp_path: Path) -> None:
    cluster = Cluster(index=0, size=2, events=EventBus())

    def broken(origin: int, frame: Frame) -> None:
        raise KeyError("bad")

    cluster.on("boom", broken)
    cluster.deliver(1, Frame(kind="boom"))
    cluster.deliver(1, Frame(kind="unknown"))
    cluster.deliver(1, Frame(kind="event", header={"event": {"type": "Nope"}}))
    assert cluster.statistics().dropped == 3
    with pytest.raises(ValueError, match="already has a handler"):
        cluster.on("boom", broken)


def test_cluster_worker_saying_hello_again_replaces_its_old_link(tmp_path: Path) -> None:
    """A restarted worker's new link wins: the old one is closed, the loss and the new
    join are told (the others drop its state, then send it their snapshot)."""

    async def run() -> tuple[list[int], list[int], bool]:
        nodes = [Node(0, 2), Node(1, 2)]
        hub = Hub(nodes[0].cluster, socket_path(tmp_path))
        await hub.start()
        closed: list[bool] = []
        old = WorkerLink(nodes[1].cluster, hub.path, on_closed=lambda: closed.append(True))
        await old.start()
        await until(lambda: nodes[0].joined == [1], "the first hello")
        again = Node(1, 2)
        new = WorkerLink(again.cluster, hub.path, on_closed=lambda: None)
        await new.start()
        await until(lambda: closed and len(nodes[0].joined) == 2, "the second hello")
        again.cluster.send(0, "ping", {"n": 1})
        await until(lambda: nodes[0].frames, "a frame on the new link")
        await new.stop()
        await old.stop()
        await hub.stop()
        return nodes[0].joined, nodes[0].lost, hub.complete

    joined, lost, complete = asyncio.run(run())
    assert (joined, lost, complete) == ([1, 1], [1], True)

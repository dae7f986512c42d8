"""Two signaling workers' clusters joined in memory (app/cluster.py ``Cluster``, the real
class): frames are encoded, queued and delivered when a test says so (:meth:`flush`),
so a test sees the state between a worker's send and the other's receipt."""

from __future__ import annotations

from voipsec.app.cluster import FROM, TO, Cluster
from voipsec.events import EventBus
from voipsec.ipc import Frame, FrameDecoder


class ClusterPair:
    def __init__(self) -> None:
        self.buses = [EventBus(), EventBus()]
        self.clusters = [Cluster(index=i, size=2, events=bus) for i, bus in enumerate(self.buses)]
        #: (to, origin, frame) not delivered yet.
        self.queued: list[tuple[int, int, Frame]] = []
        for cluster in self.clusters:
            cluster.set_alive([0, 1])
            cluster.attach(self._writer(cluster.index))

    def _writer(self, origin: int):  # type: ignore[no-untyped-def]
        def write(to: int | str, data: bytes) -> None:
            for frame in FrameDecoder().feed(data):
                header = {k: v for k, v in frame.header.items() if k not in (TO, FROM)}
                bare = Frame(kind=frame.kind, header=header, payload=frame.payload)
                self.queued.append((1 - origin, origin, bare))

        return write

    def flush(self) -> int:
        """Deliver every queued frame (and what handling them sends); how many."""
        delivered = 0
        while self.queued:
            to, origin, frame = self.queued.pop(0)
            self.clusters[to].deliver(origin, frame)
            delivered += 1
        return delivered

    def inject(self, to: int, kind: str, payload: bytes, origin: int | None = None) -> None:
        """A frame as if the other worker had sent it (a malformed one, say)."""
        self.clusters[to].deliver(
            1 - to if origin is None else origin, Frame(kind=kind, payload=payload)
        )

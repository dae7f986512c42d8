"""What the shared-state replicas need of the signaling cluster, and their frame payloads.

The cluster (app/cluster.py) connects the signaling workers of one ``voipsec serve``
over the local channel (voipsec/ipc.py). The replicas use it through
:class:`ClusterPort` only, so unit tests wire two workers with an in-memory fake and
``sip.workers = 1`` runs with a cluster of one (nothing is ever sent).

A replica's own frames carry their data as a JSON payload (the frame header is for
routing and is limited to ipc.MAX_HEADER). Peers are voipsec's own processes, but a
payload is still checked before use: one that does not fit its shape is ignored and
counted (:class:`SharedCounters`), never raised into the channel's reader.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from ...ipc import Frame

#: Frame kinds of the replicas (the cluster's own kinds do not start with "state.").
BUCKETS = "state.buckets"
IDS_MATCHES = "state.ids"
FRAUD = "state.fraud"
METRICS = "state.metrics"
METRICS_PULL = "state.metrics.pull"

FrameHandler = Callable[[int, Frame], None]


class ClusterPort(Protocol):
    """The signaling workers of one server (app/cluster.py ``Cluster``)."""

    @property
    def index(self) -> int: ...

    @property
    def size(self) -> int: ...

    @property
    def alive(self) -> frozenset[int]: ...

    def replicate(self, *event_types: type) -> None: ...

    def send(self, to: int, kind: str, header: dict[str, Any], payload: bytes = b"") -> object: ...

    def broadcast(self, kind: str, header: dict[str, Any], payload: bytes = b"") -> object: ...

    def on(self, kind: str, handler: FrameHandler) -> None: ...

    def on_lost(self, handler: Callable[[int], None]) -> None: ...


class BadPayload(ValueError):
    """A replica frame whose payload does not have the shape its kind needs."""


@dataclass(slots=True)
class SharedCounters:
    """What the replicas sent and received, and what they refused."""

    frames_sent: int = 0
    frames_received: int = 0
    #: Remote frames (or entries of them) ignored because their shape was wrong.
    rejected: int = 0
    #: Local entries not sent because a batch was full (their sources are the slowest).
    dropped: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class SharedStatistics:
    frames_sent: int
    frames_received: int
    rejected: int
    dropped: int


def dump(data: object) -> bytes:
    """A replica frame's payload."""
    return json.dumps(data, separators=(",", ":")).encode()


def load_list(frame: Frame) -> list[Any]:
    """The JSON list a replica frame carries; BadPayload otherwise."""
    try:
        data = json.loads(frame.payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise BadPayload(f"{frame.kind}: payload is not JSON: {err}") from None
    if not isinstance(data, list):
        raise BadPayload(f"{frame.kind}: payload is not a list")
    return data


def load_object(frame: Frame) -> dict[str, Any]:
    """The JSON object a replica frame carries; BadPayload otherwise."""
    try:
        data = json.loads(frame.payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise BadPayload(f"{frame.kind}: payload is not JSON: {err}") from None
    if not isinstance(data, dict):
        raise BadPayload(f"{frame.kind}: payload is not an object")
    return data


def number(value: object) -> float:
    """A JSON number (not a bool); BadPayload otherwise."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadPayload(f"not a number: {str(value)[:32]!r}")
    return float(value)


def text(value: object, limit: int) -> str:
    """A JSON string of at most ``limit`` characters; BadPayload otherwise."""
    if not isinstance(value, str) or len(value) > limit:
        raise BadPayload("not a string or too long")
    return value

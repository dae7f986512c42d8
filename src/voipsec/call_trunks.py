"""The trunk connector: TLS connections we open to trunks, and registrations to them.

A request for a trunk with no open connection waits in a bounded queue while one
connection is opened (one per trunk address, however many calls want it); when it is
up every queued request goes out on it, when it fails every queued request fails
(its client transaction sees a transport error, RFC 3261 §8.1.3.1). A trunk with
``registration = true`` is kept registered by :mod:`voipsec.core.trunkreg`, which
decides when to refresh and retry; this shell sends its REGISTERs and runs its
timer. The connector owns every task and timer it starts and ends them in
:meth:`TrunkConnector.stop`.

Failure mode: a trunk that cannot be reached fails closed for its calls (they get a
final error from the B2BUA) and never blocks calls to anything else.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path

from .config import Config, TrunkSection
from .core.b2bua import SendRequest, Target
from .core.trunkreg import Step, TrunkRegistration, TrunkRegistrationStatus
from .pki.tls import client_context
from .ports import Clock, Signaling
from .qos import set_dscp
from .sip.layer import TxKey, client_key
from .sip.message import Request, Response
from .sip.uac import LocalAddress
from .transport.connections import ConnectionTable
from .transport.stream import StreamProtocol

log = logging.getLogger("voipsec.calls")

#: Seconds to open a TLS connection to a trunk before its calls fail with 408.
TRUNK_CONNECT_TIMEOUT = 10.0
#: Requests waiting for one trunk connection to open; more fail at once (503).
MAX_QUEUED_PER_TRUNK = 1000


class TrunkConnector:
    """Connections to trunks and registrations to them, for one server.

    ``unreachable`` is told of every request that could not be sent (its connection
    failed or its queue was full): call control turns it into a client failure.
    """

    def __init__(
        self,
        *,
        config: Config,
        data_dir: Path | None,
        signaling: Signaling,
        connections: ConnectionTable,
        clock: Clock,
        local: LocalAddress,
        unreachable: Callable[[Request], None],
    ) -> None:
        self._config = config
        self._data_dir = data_dir
        self._signaling = signaling
        self._connections = connections
        self._clock = clock
        self._local = local
        self._unreachable = unreachable
        self.trunks = {t.name: t for t in config.trunks}
        self._connecting: dict[tuple[str, int], list[SendRequest]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._registrations: dict[str, TrunkRegistration] = {}
        self._registering: dict[TxKey, str] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}

    # -- connections ----------------------------------------------------------------

    def send(self, action: SendRequest) -> None:
        """Send on the trunk's open connection, or queue until one is open."""
        target = action.target
        flow = self._connections.find(target.transport, target.host, target.port)
        if flow is None:
            self.queue(action)
        else:
            self._signaling.send_request(flow, action.request)

    def queue(self, action: SendRequest) -> None:
        """Hold ``action`` until the connection to its trunk is open (one attempt per
        address at a time), at most MAX_QUEUED_PER_TRUNK of them."""
        target = action.target
        key = (target.host, target.port)
        queue = self._connecting.get(key)
        if queue is not None:
            if len(queue) >= MAX_QUEUED_PER_TRUNK:
                self._unreachable(action.request)
            else:
                queue.append(action)
            return
        self._connecting[key] = [action]
        task = asyncio.get_running_loop().create_task(self._connect(target))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _connect(self, target: Target) -> None:
        key = (target.host, target.port)
        trunk = self.trunks.get(target.trunk or "")
        flow: StreamProtocol | None = None
        try:
            if trunk is None:
                raise OSError("unknown trunk")
            ctx = client_context(ca=self._trunk_ca(trunk), min_version=self._config.tls.min_version)
            loop = asyncio.get_running_loop()
            signaling, connections = self._signaling, self._connections
            transport, proto = await asyncio.wait_for(
                loop.create_connection(
                    lambda: StreamProtocol(signaling, connections, "tls"),
                    host=target.host,
                    port=target.port,
                    ssl=ctx,
                    server_hostname=target.host,
                ),
                TRUNK_CONNECT_TIMEOUT,
            )
            flow = proto
            set_dscp(transport.get_extra_info("socket"), self._config.sip.dscp)
            log.info("connected to trunk %s at %s:%d", target.trunk, target.host, target.port)
        except (OSError, TimeoutError, ValueError) as err:
            log.warning(
                "cannot reach trunk %s at %s:%d: %s", target.trunk, target.host, target.port, err
            )
        queued = self._connecting.pop(key, [])
        for action in queued:
            if flow is None:
                self._unreachable(action.request)
            else:
                self._signaling.send_request(flow, action.request)

    def _trunk_ca(self, trunk: TrunkSection) -> Path:
        """The CA a trunk's certificate must chain to: its own ``ca``, else ours."""
        if trunk.ca:
            return Path(trunk.ca)
        assert self._data_dir is not None
        return self._data_dir / "ca" / "ca.crt"

    # -- registrations ----------------------------------------------------------------

    def start_registrations(self) -> None:
        """Register to every trunk with ``registration = true`` (and keep it fresh)."""
        now = self._clock()
        for trunk in self._config.trunks:
            if not trunk.registration:
                continue
            self._registrations[trunk.name] = TrunkRegistration(
                domain=trunk.domain,
                username=trunk.username,
                password=trunk.password,
                local=self._local,
            )
            self._step(trunk.name, self._registrations[trunk.name].start(now))

    def on_response(self, key: TxKey, response: Response) -> bool:
        """A final response to one of our REGISTERs: True when ``key`` was ours."""
        if response.status < 200 or key not in self._registering:
            return False
        name = self._registering.pop(key)
        self._step(name, self._registrations[name].on_response(response, self._clock()))
        return True

    def on_failure(self, key: TxKey) -> bool:
        """One of our REGISTERs timed out or could not be sent: True when it was ours."""
        name = self._registering.pop(key, None)
        if name is None:
            return False
        self._step(name, self._registrations[name].on_failure(self._clock()))
        return True

    def _step(self, name: str, step: Step) -> None:
        registration = self._registrations[name]
        if step.request is not None:
            key = client_key(step.request.top_via.branch or "", "REGISTER")
            self._registering[key] = name
            address = self.trunks[name].listen()
            target = Target(transport="tls", host=address.host, port=address.port, trunk=name)
            self.send(SendRequest(step.request, target))
        status = registration.status(self._clock())
        if registration.last_status is not None and step.request is None:
            if status.registered:
                log.info("registered to trunk %s", name)
            else:
                log.warning("registration to trunk %s failed (%s)", name, status.last_status)
        old = self._timers.pop(name, None)
        if old is not None:
            old.cancel()
        delay = max(0.0, step.at - self._clock())
        self._timers[name] = asyncio.get_running_loop().call_later(delay, self._refresh, name)

    def _refresh(self, name: str) -> None:
        self._timers.pop(name, None)
        self._step(name, self._registrations[name].start(self._clock()))

    def status(self) -> dict[str, TrunkRegistrationStatus]:
        """Each registering trunk's state now."""
        now = self._clock()
        return {name: r.status(now) for name, r in self._registrations.items()}

    def stop(self) -> None:
        """Cancel the registration timers and the connection attempts in flight."""
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
        for task in self._tasks:
            task.cancel()
        self._tasks.clear()


__all__ = ["MAX_QUEUED_PER_TRUNK", "TRUNK_CONNECT_TIMEOUT", "TrunkConnector"]

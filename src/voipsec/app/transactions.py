"""Carries out the transaction layer's actions: sends, timers, terminations.

sip/layer.py runs the RFC 3261 §17 machines and returns actions; this shell sends
their bytes on the flow each transaction belongs to, runs their timers on the event
loop (one ``call_later`` per named timer, cancelled when the transaction ends), and
hands what client transactions pass up (responses, timeouts) to their user, the call
layer.

Failure mode: a server transaction nobody answers is forgotten by
:meth:`TransactionDriver.expire` (the layer's backstop), so the table never fills with
leaked entries; a timer whose flow is gone fires into the layer and sends nothing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Literal, Protocol

from ..events import EventBus, MessageSeen
from ..sip.layer import KeyedAction, NoAck, TransactionLayer, TxKey
from ..sip.message import Request, Response
from ..sip.transaction import CancelTimer, PassUp, Send, StartTimer, Terminated
from ..transport.connections import Flow

log = logging.getLogger("voipsec.sip")

#: Every timer name of RFC 3261 §17 (and §17.2.2's L, M of RFC 6026).
_TIMER_NAMES = "ABDEFGHIJKLM"


class ClientUser(Protocol):
    """Who started our client transactions and gets their outcome (the call layer)."""

    def on_response(self, key: TxKey, response: Response) -> None: ...

    def on_client_failure(self, key: TxKey) -> None: ...

    def client_done(self, key: TxKey) -> None: ...

    def on_no_ack(self, key: TxKey, response: Response) -> None:
        """Our 2xx ``response`` to server transaction ``key`` was never ACKed."""
        ...


class TransactionDriver:
    """The transaction layer's actions, carried out on the event loop."""

    def __init__(
        self,
        *,
        layer: TransactionLayer,
        client: ClientUser,
        events: EventBus,
        clock: Callable[[], float],
    ) -> None:
        self.layer = layer
        self.client = client
        self.events = events
        self.clock = clock
        self._timers: dict[tuple[TxKey, str], asyncio.TimerHandle] = {}
        self._tx_flows: dict[TxKey, Flow] = {}

    def bind(self, key: TxKey, flow: Flow) -> None:
        """Answers and retransmissions of transaction ``key`` go out on ``flow``."""
        self._tx_flows[key] = flow

    def do(self, flow: Flow, actions: list[KeyedAction]) -> None:
        """Carry out ``actions``; ``flow`` for transactions not bound to one."""
        for item in actions:
            action = item.action
            if isinstance(action, Send):
                target = self._tx_flows.get(item.key, flow)
                if self.events.wanted(MessageSeen):
                    publish_message(self.events, "out", target, action.data)
                target.send(action.data)
            elif isinstance(action, PassUp):
                self._pass_up(item.key, action.message)
            elif isinstance(action, StartTimer):
                self._start_timer(item.key, action)
            elif isinstance(action, CancelTimer):
                handle = self._timers.pop((item.key, action.name), None)
                if handle is not None:
                    handle.cancel()
            elif isinstance(action, Terminated):
                self._terminated(item.key)

    def respond(self, key: TxKey, response: Response) -> bool:
        """Answer server transaction ``key`` on its flow; False when it is gone."""
        flow = self._tx_flows.get(key)
        if flow is None:
            return False
        self.do(flow, self.layer.send_response(key, response, self.clock()))
        return True

    def send_request(self, flow: Flow, request: Request) -> None:
        """Send a request on ``flow``: an ACK as is, anything else in a client transaction."""
        if request.method == "ACK":
            data = request.to_bytes()
            if self.events.wanted(MessageSeen):
                publish_message(self.events, "out", flow, data)
            flow.send(data)
            return
        key, actions = self.layer.send_request(
            request, self.clock(), reliable=flow.transport != "udp"
        )
        self._tx_flows[key] = flow
        self.do(flow, actions)

    def forget(self, key: TxKey) -> None:
        """Drop a server transaction that will never be answered through the layer."""
        self.layer.discard(key)
        self._terminated(key)

    def expire(self) -> None:
        """Forget server transactions nobody answered in time (the layer's backstop)."""
        for item in self.layer.expire(self.clock()):
            log.warning("server transaction %s expired unanswered", item.key[1][:32])
            self._terminated(item.key)

    def _terminated(self, key: TxKey) -> None:
        self._tx_flows.pop(key, None)
        if key[0] == "c":
            self.client.client_done(key)
        for name in _TIMER_NAMES:
            handle = self._timers.pop((key, name), None)
            if handle is not None:
                handle.cancel()

    def _pass_up(self, key: TxKey, message: object) -> None:
        """What a transaction hands its user: responses and failures of client ones."""
        if key[0] != "c":
            # Server side: a 2xx never ACKed (§13.3.1.4) ends its session; an ACK in
            # Accepted (it reaches the TU on its own) or Timer H (no ACK) is absorbed.
            if isinstance(message, NoAck):
                self.client.on_no_ack(key, message.response)
            return
        if isinstance(message, Response):
            self.client.on_response(key, message)
        elif message in ("timeout", "transport_error"):
            self.client.on_client_failure(key)

    def _start_timer(self, key: TxKey, action: StartTimer) -> None:
        loop = asyncio.get_running_loop()
        old = self._timers.pop((key, action.name), None)
        if old is not None:
            old.cancel()
        delay = max(0.0, action.at - self.clock())
        self._timers[(key, action.name)] = loop.call_later(
            delay, self._fire_timer, key, action.name
        )

    def _fire_timer(self, key: TxKey, name: str) -> None:
        self._timers.pop((key, name), None)
        flow = self._tx_flows.get(key)
        actions = self.layer.timer_fired(key, name, self.clock())
        if flow is not None:
            self.do(flow, actions)


def publish_message(
    events: EventBus, direction: Literal["in", "out"], flow: Flow, data: bytes
) -> None:
    """A SIP message in or out, for the SIP log and HEP."""
    identity = flow.identity
    events.publish(
        MessageSeen(
            direction=direction,
            transport=flow.transport,
            local=flow.local,
            peer=flow.peer,
            tls_identity=(identity.aor or identity.subject) if identity else None,
            data=data,
        )
    )

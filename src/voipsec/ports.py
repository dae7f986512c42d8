"""What call control needs from the rest of the server, and what it offers it.

``Server`` builds the SIP service and the call service and hands each the other's
parts as these ``typing.Protocol`` ports: neither object is handed ``self``, and
call control imports nothing from ``voipsec.server`` (no import ring). Tests pass
small fakes that implement the few methods a port names.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from .core.auth import Role
from .edge.zones import Zone
from .endpoints.policy import PolicyReason
from .records import Binding, CdrRecord
from .sip.layer import TxKey
from .sip.message import Request, Response
from .storage.cdr import CdrDatabase
from .transport.connections import Flow
from .transport.stream import MessageSink

#: Seconds since the epoch, as the server's clock reads them (a fake one in tests).
Clock = Callable[[], float]


class Signaling(MessageSink, Protocol):
    """The SIP service's transaction layer, as call control uses it.

    It is also the sink of the connections call control opens to trunks (their
    responses come back through the same parser and transactions).
    """

    def respond(self, key: TxKey, response: Response) -> None:
        """Answer the server transaction ``key``."""
        ...

    def send_request(self, flow: Flow, request: Request) -> None:
        """Send ``request`` on ``flow`` (in a client transaction unless it is an ACK)."""
        ...


class Authenticate(Protocol):
    """Who sent ``request`` (digest or device certificate), or the response refusing it."""

    def __call__(self, flow: Flow, request: Request, role: Role, now: float) -> str | Response: ...


class Bindings(Protocol):
    """The registrar's live bindings of an address of record."""

    def lookup(self, aor: str, now: float) -> list[Binding]: ...


class DeviceRestrictions(Protocol):
    """Whether the endpoint policy restricts the device placing a call (issue 18
    ``restrict``; app/devices.py ``DeviceGate``)."""

    def restriction(self, user: str, request: Request, source_ip: str) -> str | None:
        """Why the device is restricted, None when it is not."""
        ...

    def srtp_offer(
        self, user: str, request: Request, source_ip: str, now: float, *, graded: bool = True
    ) -> PolicyReason | None:
        """Record the SRTP suites the INVITE offers for the device's inventory row; when
        ``graded``, the ``no_srtp_offer`` reason if the offer carries no SRTP."""
        ...


class Zones(Protocol):
    """The zone a source address belongs to (edge/zones.py)."""

    def zone_for(self, ip: str) -> Zone: ...


class CallStore(Protocol):
    """What call control reads from the store: classes of service and past CDRs (at
    start), and a CDR database connection of its own for the writer thread."""

    def user_classes(self) -> dict[str, str]: ...

    def version(self) -> tuple[int, int]: ...

    def cdrs(self, since: float = 0.0, limit: int | None = None) -> list[CdrRecord]: ...

    def open_writer_database(self) -> CdrDatabase: ...

    def open_fast_cdr_database(self) -> CdrDatabase | None: ...


class CallHandler(Protocol):
    """What the SIP service hands call control: the requests of calls and the
    outcome of the client transactions call control started."""

    def invite(self, flow: Flow, tx: TxKey, request: Request, now: float) -> Response | None:
        """A dialog-creating INVITE: a final refusal, or None when call control took it."""
        ...

    def in_dialog(self, flow: Flow, tx: TxKey, request: Request, now: float) -> Response | None:
        """A request inside a dialog (to-tag set): 481 when no call holds it."""
        ...

    def cancel(self, tx: TxKey, request: Request, now: float) -> None: ...

    def ack(self, request: Request, now: float) -> None: ...

    def on_response(self, key: TxKey, response: Response) -> None: ...

    def on_client_failure(self, key: TxKey) -> None: ...

    def client_done(self, key: TxKey) -> None: ...

    def on_no_ack(self, key: TxKey, response: Response) -> None:
        """Our 2xx to ``key`` was resent for 64*T1 and never ACKed (RFC 3261 §13.3.1.4)."""
        ...

    def reload_users(self) -> None:
        """The user table changed (``voipsec user add`` while serving): re-read it."""
        ...


__all__ = [
    "Authenticate",
    "Bindings",
    "CallHandler",
    "CallStore",
    "Clock",
    "DeviceRestrictions",
    "Signaling",
    "Zones",
]

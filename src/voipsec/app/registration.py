"""The registrar shell: REGISTER authenticated, applied, published and persisted.

core/registrar.py decides (RFC 3261 §10.3); this shell authenticates the request
through :class:`~voipsec.app.authn.AuthShell`, publishes
:class:`~voipsec.events.RegistrationChanged`, and queues the binding changes that
:meth:`RegistrationShell.flush` writes in one transaction per interval.

Failure mode: a batch that cannot be written is lost from the queue but the bindings
hold in memory (the server logs and serves on); a restart then reloads the last
written state.
"""

from __future__ import annotations

import email.utils
from collections.abc import Iterable
from typing import Protocol

from ..core.auth import Authenticated, Role
from ..core.registrar import Registrar
from ..endpoints.policy import warning_value
from ..events import (
    BindingFields,
    BindingsChanged,
    Event,
    EventBus,
    RegistrationChanged,
    RemoteEvent,
)
from ..records import Binding
from ..sip.message import Request, Response, response_to
from ..transport.connections import Flow
from .devices import DeviceGate
from .replies import flow_text, new_tag


class Authenticates(Protocol):
    """Who sent a request and how, or the response refusing it (app/authn.py)."""

    def authenticate_as(
        self, flow: Flow, request: Request, role: Role, now: float
    ) -> Authenticated | Response: ...


class BindingStore(Protocol):
    """Where bindings are kept between runs (storage/store.py)."""

    def save_bindings(
        self, upserts: Iterable[Binding], removals: Iterable[tuple[str, str]]
    ) -> None: ...


class RegistrationShell:
    """Carries out REGISTER: authentication, the registrar's outcome, persistence."""

    def __init__(
        self,
        *,
        registrar: Registrar,
        auth: Authenticates,
        store: BindingStore,
        events: EventBus,
        devices: DeviceGate | None = None,
    ) -> None:
        """``devices``: the endpoint policy and inventory (app/devices.py); None when
        ``endpoints.enabled`` is off."""
        self.registrar = registrar
        self.auth = auth
        self.store = store
        self.events = events
        self.devices = devices
        self._pending_upserts: dict[tuple[str, str], Binding] = {}
        self._pending_removals: set[tuple[str, str]] = set()

    def register(self, flow: Flow, request: Request, now: float) -> Response:
        """The answer to a REGISTER core/dispatch.py routed to the registrar."""
        found = self.auth.authenticate_as(flow, request, "registrar", now)
        if isinstance(found, Response):
            return found
        if self.devices is None:
            return self._apply(flow, request, found.user, now)
        check = self.devices.check(flow, request, found, now)
        if check.decision.action == "refuse":
            # Issue 18: 403 naming the reason and the fix (RFC 3261 §20.43 Warning);
            # no binding is stored, the refused device is in the inventory.
            self.devices.record(check)
            warning = warning_value(check.decision)
            return response_to(
                request, 403, "Forbidden", to_tag=new_tag(), extra=(("Warning", warning),)
            )
        response = self._apply(flow, request, found.user, now)
        if response.status == 200:
            self.devices.record(check)
        return response

    def _apply(self, flow: Flow, request: Request, user: str, now: float) -> Response:
        source = flow_text(flow)
        outcome = self.registrar.register(request, user=user, now=now, source=source)
        self.events.publish(
            RegistrationChanged(user=user, accepted=outcome.status == 200, source=source, time=now)
        )
        if (outcome.upserts or outcome.removals) and self.events.wanted(BindingsChanged):
            self.events.publish(_changed(outcome.upserts, outcome.removals))
        for b in outcome.upserts:
            self._pending_upserts[(b.aor, b.contact)] = b
            self._pending_removals.discard((b.aor, b.contact))
        for r in outcome.removals:
            self._pending_upserts.pop(r, None)
            self._pending_removals.add(r)
        extra = outcome.headers
        if outcome.status == 200:
            # RFC 3261 §10.3 step 8: a 200 OK SHOULD carry a Date header.
            extra = (*extra, ("Date", email.utils.formatdate(now, usegmt=True)))
        return response_to(request, outcome.status, outcome.reason, to_tag=new_tag(), extra=extra)

    def adopt(self, event: Event) -> None:
        """Another signaling worker's registrar changed bindings: hold them here too
        (sip.workers > 1; it persists them itself)."""
        if isinstance(event, RemoteEvent) and isinstance(event.event, BindingsChanged):
            changed = event.event
            self.registrar.replicate(
                (_binding(fields) for fields in changed.upserts), changed.removals
            )

    def drop_sources(self, sources: frozenset[str], *, persist: bool) -> int:
        """Forget bindings made over connections of a worker that is gone; ``persist``:
        queue their removal from storage too (worker 0 does, once). Returns how many."""
        gone = self.registrar.drop_sources(sources)
        if persist:
            for pair in gone:
                self._pending_upserts.pop(pair, None)
                self._pending_removals.add(pair)
        return len(gone)

    def expire(self, now: float) -> None:
        """Forget expired bindings, and queue their removal from storage."""
        for gone in self.registrar.expire(now):
            self._pending_upserts.pop(gone, None)
            self._pending_removals.add(gone)

    def flush(self) -> None:
        """Write pending binding changes in one transaction (and hand the devices seen
        to the inventory's writer)."""
        if self.devices is not None:
            self.devices.flush()
        if not self._pending_upserts and not self._pending_removals:
            return
        upserts = list(self._pending_upserts.values())
        removals = list(self._pending_removals)
        self._pending_upserts.clear()
        self._pending_removals.clear()
        self.store.save_bindings(upserts, removals)


def _changed(upserts: Iterable[Binding], removals: Iterable[tuple[str, str]]) -> BindingsChanged:
    return BindingsChanged(
        upserts=tuple(
            (b.aor, b.contact, b.expires_at, b.call_id, b.cseq, b.source, b.user_agent)
            for b in upserts
        ),
        removals=tuple(removals),
    )


def _binding(fields: BindingFields) -> Binding:
    aor, contact, expires_at, call_id, cseq, source, user_agent = fields
    return Binding(
        aor=aor,
        contact=contact,
        expires_at=float(expires_at),
        call_id=call_id,
        cseq=int(cseq),
        source=source,
        user_agent=user_agent,
    )

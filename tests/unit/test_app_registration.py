"""app/registration.py: REGISTER carried out — authenticated, published, batched to storage."""

from __future__ import annotations

from collections.abc import Iterable

from voipsec.app.registration import RegistrationShell
from voipsec.core.auth import Authenticated, Role
from voipsec.core.registrar import Registrar, RegistrarPolicy
from voipsec.events import Event, EventBus, RegistrationChanged
from voipsec.records import Binding
from voipsec.sip.message import Request, Response, parse_message, response_to
from voipsec.transport.connections import Flow

from .fakes import FakeFlow

NOW = 1_000.0
DOMAIN = "example.com"


class FakeAuth:
    """Accepts ``alice``; challenges everyone else."""

    def __init__(self, user: str | None) -> None:
        self.user = user

    def authenticate_as(
        self, flow: Flow, request: Request, role: Role, now: float
    ) -> Authenticated | Response:
        assert role == "registrar"
        if self.user is None:
            return response_to(request, 401, "Unauthorized", to_tag="t")
        return Authenticated(user=self.user, by="digest", algorithm="SHA-256")


class FakeBindingStore:
    def __init__(self) -> None:
        self.batches: list[tuple[list[Binding], list[tuple[str, str]]]] = []

    def save_bindings(
        self, upserts: Iterable[Binding], removals: Iterable[tuple[str, str]]
    ) -> None:
        self.batches.append((list(upserts), sorted(removals)))


def _register(contact: str, expires: int) -> Request:
    data = (
        f"REGISTER sip:{DOMAIN} SIP/2.0\r\n"
        "Via: SIP/2.0/TLS 192.0.2.10:40000;branch=z9hG4bKreg\r\n"
        "Max-Forwards: 70\r\n"
        f"To: <sip:alice@{DOMAIN}>\r\n"
        f"From: <sip:alice@{DOMAIN}>;tag=f1\r\n"
        "Call-ID: reg-1\r\n"
        f"CSeq: {expires + 1} REGISTER\r\n"
        f"Contact: <{contact}>;expires={expires}\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()
    message = parse_message(data)
    assert isinstance(message, Request)
    return message


def _shell(user: str | None) -> tuple[RegistrationShell, FakeBindingStore, list[Event]]:
    registrar = Registrar(RegistrarPolicy(domain=DOMAIN, domains=frozenset({DOMAIN})))
    store = FakeBindingStore()
    events = EventBus()
    seen: list[Event] = []
    events.subscribe(seen.append, RegistrationChanged)
    shell = RegistrationShell(registrar=registrar, auth=FakeAuth(user), store=store, events=events)
    return shell, store, seen


def test_app_registration_accepted_register_is_200_with_date_published_and_batched() -> None:
    shell, store, seen = _shell("alice")
    request = _register("sip:alice@192.0.2.10:40000", 600)
    response = shell.register(FakeFlow(), request, NOW)  # type: ignore[arg-type]
    assert (response.status, response.headers.get("date")) == (200, "Thu, 01 Jan 1970 00:16:40 GMT")
    assert seen == [
        RegistrationChanged(user="alice", accepted=True, source="tls:192.0.2.10:40000", time=NOW)
    ]
    assert store.batches == []  # written by flush, not on the request
    shell.flush()
    [(upserts, removals)] = store.batches
    assert [(b.aor, b.contact, b.expires_at) for b in upserts] == [
        ("alice@example.com", "sip:alice@192.0.2.10:40000", NOW + 600)
    ]
    assert removals == []
    shell.flush()
    assert len(store.batches) == 1  # nothing pending: no empty transaction


def test_app_registration_refused_authentication_is_answered_and_nothing_changes() -> None:
    shell, store, seen = _shell(None)
    request = _register("sip:alice@192.0.2.10:40000", 600)
    response = shell.register(FakeFlow(), request, NOW)  # type: ignore[arg-type]
    assert response.status == 401
    assert seen == []  # the auth shell publishes refusals of credentials (app/authn.py)
    shell.flush()
    assert store.batches == []


def test_app_registration_expired_binding_is_removed_in_the_next_batch() -> None:
    shell, store, _ = _shell("alice")
    request = _register("sip:alice@192.0.2.10:40000", 60)
    shell.register(FakeFlow(), request, NOW)  # type: ignore[arg-type]
    shell.expire(NOW + 61)
    shell.flush()
    # The upsert queued by the REGISTER is replaced by the removal: one batch, one row gone.
    assert store.batches == [([], [("alice@example.com", "sip:alice@192.0.2.10:40000")])]

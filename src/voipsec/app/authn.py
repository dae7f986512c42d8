"""Carrying out the authentication decisions (core/auth.py decides).

:class:`UserDigests` keeps the users' HA1 digests the digest authenticator checks
against, re-read when an unknown name shows up (a user added by the CLI while we
serve). :class:`AuthShell` asks core/auth.py who sent a request and carries out what
the answer implies: counts challenges and failures, logs a wrong password and publishes
:class:`~voipsec.events.CredentialsRejected` (and a refused
:class:`~voipsec.events.RegistrationChanged` for a REGISTER).

Failure mode: the digests are a snapshot; a user removed by the CLI keeps working
until the next re-read (SIGHUP), a user added works at once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol

from ..core.auth import Authenticated, Refused, RequestAuthenticator, Role
from ..events import CredentialsRejected, EventBus, RegistrationChanged
from ..sip.message import Request, Response, response_to
from ..transport.connections import Flow
from .replies import flow_text, new_tag

log = logging.getLogger("voipsec.sip")

#: Least seconds between two re-reads of the user table on an unknown user name.
USER_RELOAD_INTERVAL = 1.0


class DigestSource(Protocol):
    """Where the users' digests are stored (storage/store.py)."""

    def user_digests(self, realm: str) -> dict[tuple[str, str], str]: ...


class UserDigests:
    """(user, algorithm) → HA1 for the digest authenticator, re-read on a miss."""

    def __init__(self, *, store: DigestSource, realm: str, clock: Callable[[], float]) -> None:
        self._store = store
        self._realm = realm
        self._clock = clock
        self._digests = store.user_digests(realm)
        self._loaded = clock()

    def reload(self) -> None:
        """Re-read every digest (after `voipsec user add` while serving)."""
        self._digests = self._store.user_digests(self._realm)
        self._loaded = self._clock()

    def lookup(self, user: str, algorithm: str) -> str | None:
        """The HA1 of ``user`` for ``algorithm``, or None for an unknown user."""
        found = self._digests.get((user, algorithm))
        # A user added by the CLI while we serve: re-read, at most once per interval
        # so unknown-user floods cost one query a second, not one per request.
        if found is None and self._clock() - self._loaded >= USER_RELOAD_INTERVAL:
            self.reload()
            found = self._digests.get((user, algorithm))
        return found

    def knows(self, user: str) -> bool:
        """Whether ``user`` exists (as of the last read; never re-reads)."""
        return (user, "SHA-256") in self._digests


class AuthShell:
    """Who sent a request, or the response refusing it; counted and published."""

    def __init__(self, *, authenticator: RequestAuthenticator, events: EventBus) -> None:
        self.authenticator = authenticator
        self.events = events
        #: Challenges sent (401/407 with a fresh nonce).
        self.challenges = 0
        #: Wrong credentials (a 403 answered).
        self.failures = 0

    def authenticate(self, flow: Flow, request: Request, role: Role, now: float) -> str | Response:
        """Who sent ``request`` (its user name), or the response refusing it."""
        found = self.authenticate_as(flow, request, role, now)
        return found.user if isinstance(found, Authenticated) else found

    def authenticate_as(
        self, flow: Flow, request: Request, role: Role, now: float
    ) -> Authenticated | Response:
        """Who sent ``request`` and how (core/auth.py decides: the digest algorithm
        feeds the endpoint policy), or the response refusing it.

        Carries out what the decision implies: counts challenges and failures, logs a
        wrong password and publishes it (the metric; the IDS sees the 403 it answers).
        """
        source = flow.peer[0]
        decision = self.authenticator.authenticate(
            request, role=role, identity=flow.identity, source=source, now=now
        )
        if isinstance(decision, Authenticated):
            return decision
        if decision.challenge:
            self.challenges += 1
        elif decision.credentials_failed:
            self._credentials_failed(flow, request, decision, now)
        elif decision.detail:
            log.info("%s from %s refused: %s", request.method, source, decision.detail)
        return response_to(
            request, decision.status, decision.reason, to_tag=new_tag(), extra=decision.headers
        )

    def _credentials_failed(
        self, flow: Flow, request: Request, refused: Refused, now: float
    ) -> None:
        self.failures += 1
        user = refused.claimed_user or ""
        log.info(
            "%s authentication failed for %r from %s: %s",
            request.method,
            user,
            flow.peer[0],
            refused.detail,
        )
        self.events.publish(
            CredentialsRejected(
                service="sip",
                source=flow.peer[0],
                user=user,
                reason=refused.detail,
                # A connection's source answered our SYN-ACK; a datagram's proves nothing.
                verified_source=flow.transport != "udp",
                time=now,
            )
        )
        if request.method == "REGISTER":
            self.events.publish(
                RegistrationChanged(user=user, accepted=False, source=flow_text(flow), time=now)
            )

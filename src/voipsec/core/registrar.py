"""Registrar and location service (RFC 3261 §10.3), sans-IO.

:meth:`Registrar.register` takes an already-authenticated REGISTER and returns the
response to send plus the binding changes to persist; the shell stores them. The
registrar holds every binding in memory (looked up on each call) and is rebuilt
from the database at start, so bindings survive a restart.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from ..records import Binding
from ..sip.errors import SipParseError
from ..sip.message import Request
from ..sip.uri import SipUri


@dataclass(frozen=True, slots=True, kw_only=True)
class RegistrarPolicy:
    #: The primary domain: every AOR is stored as user@domain.
    domain: str
    #: Every name and address that means this server (domain included).
    domains: frozenset[str]
    min_expires: int = 60
    max_expires: int = 7200
    default_expires: int = 3600
    #: Contacts one AOR may hold; more gets 403 (a phone fleet per user is a smell).
    max_contacts_per_aor: int = 10


@dataclass(frozen=True, slots=True, kw_only=True)
class RegisterOutcome:
    status: int
    reason: str
    headers: tuple[tuple[str, str], ...] = ()
    upserts: tuple[Binding, ...] = ()
    removals: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class RegistrarStatistics:
    aors: int
    bindings: int
    registrations: int
    refusals: int
    expired: int


@dataclass(slots=True)
class _RegistrarCounters:
    registrations: int = 0
    refusals: int = 0
    expired: int = 0


@dataclass(slots=True)
class Registrar:
    policy: RegistrarPolicy
    _aors: dict[str, dict[str, Binding]] = field(default_factory=dict)
    _counts: _RegistrarCounters = field(default_factory=_RegistrarCounters)

    def load(self, bindings: Iterable[Binding]) -> None:
        for b in bindings:
            self._aors.setdefault(b.aor, {})[b.contact] = b

    def aor_for(self, uri: SipUri) -> str | None:
        """The AOR ``user@domain`` when the URI names one of our domains."""
        if uri.user is None or uri.host.lower() not in self.policy.domains:
            return None
        return f"{uri.user}@{self.policy.domain}"

    def lookup(self, aor: str, now: float) -> list[Binding]:
        return [b for b in self._aors.get(aor, {}).values() if b.expires_at > now]

    def register(self, request: Request, *, user: str, now: float, source: str) -> RegisterOutcome:
        """Apply a REGISTER for ``user`` (already authenticated) — RFC 3261 §10.3."""
        outcome = self._register(request, user=user, now=now, source=source)
        if outcome.status == 200:
            self._counts.registrations += 1
        else:
            self._counts.refusals += 1
        return outcome

    def _register(self, request: Request, *, user: str, now: float, source: str) -> RegisterOutcome:
        to_uri = request.to.uri
        if not isinstance(to_uri, SipUri):
            return RegisterOutcome(status=400, reason="To Must Be a SIP URI")
        aor = self.aor_for(to_uri)
        if aor is None:
            return RegisterOutcome(status=404, reason="Not Found")
        # §10.3 step 6: the authenticated user may only change their own bindings.
        if to_uri.user != user:
            return RegisterOutcome(status=403, reason="Forbidden")
        current = self._aors.get(aor, {})
        if request.wildcard_contact:
            return self._unregister_all(request, aor, current, now)
        changes = self._contact_changes(request, aor, now, source)
        if isinstance(changes, RegisterOutcome):
            return changes
        upserts, removals = changes
        touched = [b.contact for b in upserts] + [contact for _, contact in removals]
        for contact in touched:
            old = current.get(contact)
            if old is not None and old.call_id == request.call_id and request.cseq.seq <= old.cseq:
                # §10.3 step 7: an out-of-order REGISTER must neither update nor
                # remove a binding a newer one made.
                return RegisterOutcome(status=500, reason="Out of Order CSeq")
        after = {c: b for c, b in current.items() if b.expires_at > now}
        for aor_contact in removals:
            after.pop(aor_contact[1], None)
        after.update({b.contact: b for b in upserts})
        if len(after) > self.policy.max_contacts_per_aor:
            return RegisterOutcome(status=403, reason="Too Many Contacts")
        # Bindings that lapsed since the last sweep leave memory here, so the store
        # must forget them too (a contact registered again is an upsert instead).
        lapsed = [(aor, c) for c, b in current.items() if b.expires_at <= now and c not in after]
        self._counts.expired += len(lapsed)
        removals = [*removals, *(r for r in lapsed if r not in removals)]
        self._aors[aor] = after
        if not after:
            self._aors.pop(aor, None)
        return self._ok(aor, now, tuple(upserts), tuple(removals))

    def _unregister_all(
        self, request: Request, aor: str, current: dict[str, Binding], now: float
    ) -> RegisterOutcome:
        # §10.3 step 6: "*" is valid only alone and with Expires: 0.
        if request.contacts or request.int_header("expires") != 0:
            return RegisterOutcome(status=400, reason="Invalid Wildcard Contact")
        removals = tuple((aor, c) for c in current)
        self._aors.pop(aor, None)
        return self._ok(aor, now, (), removals)

    def _contact_changes(
        self, request: Request, aor: str, now: float, source: str
    ) -> tuple[list[Binding], list[tuple[str, str]]] | RegisterOutcome:
        header_expires = request.int_header("expires")
        ua = (request.headers.get("user-agent") or "")[:200]
        upserts: list[Binding] = []
        removals: list[tuple[str, str]] = []
        for contact in request.contacts:
            param = contact.param("expires")
            if param is not None:
                try:
                    expires = int(param) if param.isdigit() else -1
                except ValueError:
                    expires = -1
                if expires < 0:
                    raise SipParseError(400, "malformed Contact expires")
            elif header_expires is not None:
                expires = header_expires
            else:
                expires = self.policy.default_expires
            uri = str(contact.uri)
            if expires == 0:
                removals.append((aor, uri))
                continue
            if expires < self.policy.min_expires:
                return RegisterOutcome(
                    status=423,
                    reason="Interval Too Brief",
                    headers=(("Min-Expires", str(self.policy.min_expires)),),
                )
            expires = min(expires, self.policy.max_expires)
            upserts.append(
                Binding(
                    aor=aor,
                    contact=uri,
                    expires_at=now + expires,
                    call_id=request.call_id,
                    cseq=request.cseq.seq,
                    source=source,
                    user_agent=ua,
                )
            )
        return upserts, removals

    def _ok(
        self,
        aor: str,
        now: float,
        upserts: tuple[Binding, ...],
        removals: tuple[tuple[str, str], ...],
    ) -> RegisterOutcome:
        # §10.3 step 8: the 200 lists every current binding with its remaining expiry.
        contacts = tuple(
            ("Contact", f"<{b.contact}>;expires={max(0, int(b.expires_at - now))}")
            for b in self.lookup(aor, now)
        )
        return RegisterOutcome(
            status=200, reason="OK", headers=contacts, upserts=upserts, removals=removals
        )

    def expire(self, now: float) -> list[tuple[str, str]]:
        """Drop bindings whose time has passed; returns them for the store."""
        gone: list[tuple[str, str]] = []
        for aor in list(self._aors):
            contacts = self._aors[aor]
            for contact, b in list(contacts.items()):
                if b.expires_at <= now:
                    del contacts[contact]
                    gone.append((aor, contact))
            if not contacts:
                del self._aors[aor]
        self._counts.expired += len(gone)
        return gone

    def bindings(self) -> list[Binding]:
        """Every binding held (a snapshot for a signaling worker that joins)."""
        return [b for contacts in self._aors.values() for b in contacts.values()]

    def replicate(self, upserts: Iterable[Binding], removals: Iterable[tuple[str, str]]) -> None:
        """Apply what another signaling worker's registrar decided (sip.workers > 1):
        every worker holds every binding, so a call from any worker finds the callee."""
        for aor, contact in removals:
            contacts = self._aors.get(aor)
            if contacts is not None:
                contacts.pop(contact, None)
                if not contacts:
                    del self._aors[aor]
        self.load(upserts)

    def drop_sources(self, sources: frozenset[str]) -> list[tuple[str, str]]:
        """Forget the bindings whose REGISTER came over one of ``sources``
        ("transport:ip:port"): connections of a worker that is gone, never reachable
        again (the phones register anew). Returns the (aor, contact) pairs dropped."""
        gone: list[tuple[str, str]] = []
        for aor in list(self._aors):
            contacts = self._aors[aor]
            for contact, b in list(contacts.items()):
                if b.source in sources:
                    del contacts[contact]
                    gone.append((aor, contact))
            if not contacts:
                del self._aors[aor]
        return gone

    def statistics(self) -> RegistrarStatistics:
        return RegistrarStatistics(
            aors=len(self._aors),
            bindings=sum(len(c) for c in self._aors.values()),
            registrations=self._counts.registrations,
            refusals=self._counts.refusals,
            expired=self._counts.expired,
        )


__all__ = ["RegisterOutcome", "Registrar", "RegistrarPolicy", "RegistrarStatistics"]

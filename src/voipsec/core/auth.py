"""Who sent a request: device certificate and digest, per ``[auth] policy`` (sans-IO).

One decision for every method that needs an identity, so REGISTER and INVITE cannot
drift apart (they used to carry two copies of the challenge code). The role decides
the headers (RFC 3261 §22): as a *registrar* voipsec challenges with 401 and
WWW-Authenticate and reads Authorization (§22.2); towards a call it acts as the
caller's proxy and uses 407, Proxy-Authenticate and Proxy-Authorization (§22.3).

The policy:

- ``digest``: a digest answer is required; a certificate, if presented, must name
  the same user.
- ``cert_or_digest``: a certificate that names the user is enough; otherwise digest.
- ``cert_and_digest``: both, naming the same user.

A certificate names one AOR (the SIP URI in its SAN). For REGISTER it must be the AOR
registered (the To URI); for a call it must be a user of our domain. User parts compare
exactly (RFC 3261 §19.1.4, :func:`voipsec.sip.uri.same_aor`).

The module takes the request, the connection's verified certificate identity, the
source address and the time, and returns :class:`Authenticated` or :class:`Refused`;
it never touches a socket, the clock or the store (user digests come through the
:class:`~voipsec.sip.digest.DigestAuthenticator` lookup the shell gives it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from ..pki.identity import PeerIdentity
from ..sip.digest import DigestAuthenticator, DigestVerdict, parse_authorization
from ..sip.message import Request
from ..sip.uri import SipUri, same_aor

__all__ = [
    "AuthDecision",
    "Authenticated",
    "Refused",
    "RequestAuthenticator",
    "Role",
]

Role = Literal["registrar", "proxy"]
Policy = Literal["digest", "cert_or_digest", "cert_and_digest"]


@dataclass(frozen=True, slots=True)
class _RoleHeaders:
    status: int
    reason: str
    challenge: str
    credentials: str


#: RFC 3261 §22.2 (registrar, a UAS) and §22.3 (proxy).
_ROLES: dict[Role, _RoleHeaders] = {
    "registrar": _RoleHeaders(401, "Unauthorized", "WWW-Authenticate", "authorization"),
    "proxy": _RoleHeaders(
        407, "Proxy Authentication Required", "Proxy-Authenticate", "proxy-authorization"
    ),
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Authenticated:
    """The request comes from ``user`` of our domain."""

    user: str
    #: "certificate" when the device certificate alone identified the user.
    by: Literal["certificate", "digest"]
    #: The digest algorithm the credentials used ("SHA-256", "MD5"...); "" when the
    #: certificate alone identified the user. The endpoint policy grades MD5.
    algorithm: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Refused:
    """Answer the request with ``status``/``reason`` (and ``headers``) instead."""

    status: int
    reason: str
    headers: tuple[tuple[str, str], ...] = ()
    #: A challenge (401/407) asking for credentials; counted as such.
    challenge: bool = False
    #: A failed credential check (a wrong password): the IDS's evidence of guessing,
    #: the ``auth_failures`` metric. Other refusals are not.
    credentials_failed: bool = False
    #: The user name the credentials claimed (cut to 64 characters), for logs.
    claimed_user: str | None = None
    #: Why, for the log line (never a secret).
    detail: str = ""


AuthDecision = Authenticated | Refused


class RequestAuthenticator:
    """Certificate policy and digest for every method."""

    def __init__(
        self,
        *,
        digest: DigestAuthenticator,
        policy: Policy,
        domain: str,
        aor_for: Callable[[SipUri], str | None],
    ) -> None:
        """``aor_for``: the registrar's ``user@domain`` for a To URI of ours, else None."""
        self.digest = digest
        self.policy = policy
        self.domain = domain
        self._aor_for = aor_for

    def authenticate(
        self,
        request: Request,
        *,
        role: Role,
        identity: PeerIdentity | None,
        source: str,
        now: float,
    ) -> AuthDecision:
        """Decide who sent ``request`` (or how to refuse it).

        Raises :class:`~voipsec.sip.errors.SipParseError` (400) for credentials that
        do not parse (another scheme, a request-digest that is not hex...).
        """
        if identity is None and self.policy == "cert_and_digest":
            return Refused(status=403, reason="Certificate Required")
        cert_user: str | None = None
        if identity is not None:
            checked = self._certificate_user(request, role, identity)
            if isinstance(checked, Refused):
                return checked
            cert_user = checked
            if self.policy == "cert_or_digest":
                return Authenticated(user=cert_user, by="certificate")
        return self._digest(request, role, cert_user, source, now)

    def challenge(self, role: Role, source: str, now: float, *, stale: bool) -> Refused:
        """A fresh 401/407 with one challenge per configured algorithm (RFC 8760 §2.4)."""
        headers = _ROLES[role]
        values = self.digest.challenge(now, source, stale=stale)
        return Refused(
            status=headers.status,
            reason=headers.reason,
            headers=tuple((headers.challenge, v) for v in values),
            challenge=True,
        )

    def _certificate_user(
        self, request: Request, role: Role, identity: PeerIdentity
    ) -> str | Refused:
        """The user the certificate names, if it may be used for this request."""
        if role == "registrar":
            to_uri = request.to.uri
            aor = self._aor_for(to_uri) if isinstance(to_uri, SipUri) else None
            if identity.aor is None or aor is None or not same_aor(identity.aor, aor):
                return Refused(
                    status=403,
                    reason="Certificate Does Not Match AOR",
                    detail=f"certificate {identity.serial:x} ({identity.aor}) used for {aor}",
                )
            return aor.rpartition("@")[0]
        user = _user_of_domain(identity.aor, self.domain)
        if user is None:
            return Refused(status=403, reason="Certificate Has No AOR Here")
        return user

    def _digest(
        self, request: Request, role: Role, cert_user: str | None, source: str, now: float
    ) -> AuthDecision:
        headers = _ROLES[role]
        header = _our_credentials(request, headers.credentials, self.digest.realm)
        if header is None:
            return self.challenge(role, source, now, stale=False)
        # Unusable credentials raise SipParseError(400): the shell answers them
        # statelessly and keeps no transaction for input nobody authenticated.
        creds = parse_authorization(header)
        if creds.uri != request.raw_uri:
            return Refused(status=400, reason="Digest URI Mismatch")
        result = self.digest.verify(creds, method=request.method, now=now, source=source)
        if result.verdict is DigestVerdict.OK and result.username is not None:
            if cert_user is not None and cert_user != result.username:
                return Refused(status=403, reason="Certificate Does Not Match User")
            algorithm = creds.algorithm.strip('"').upper()
            return Authenticated(user=result.username, by="digest", algorithm=algorithm)
        if result.verdict is DigestVerdict.FAILED:
            return Refused(
                status=403,
                reason="Forbidden",
                credentials_failed=True,
                claimed_user=creds.username[:64],
                detail=result.detail,
            )
        return self.challenge(role, source, now, stale=result.verdict is DigestVerdict.STALE)


def _user_of_domain(aor: str | None, domain: str) -> str | None:
    """The user part of ``user@domain`` when the host is our domain."""
    if aor is None:
        return None
    user, at, host = aor.rpartition("@")
    return user if at and host.lower() == domain else None


def _our_credentials(request: Request, name: str, realm: str) -> str | None:
    """The credentials line for our realm, or the first one (RFC 3261 §22.3: a request
    may carry credentials for several realms along its path)."""
    lines = request.headers.lines(name)
    marker = f'realm="{realm}"'
    for line in lines:
        if marker in line:
            return line
    return lines[0] if lines else None

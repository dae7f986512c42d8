"""Registering voipsec to an upstream SIP trunk (RFC 3261 §10.2), sans-IO.

One :class:`TrunkRegistration` per trunk with ``registration = true``. The shell asks
for the next REGISTER, sends it in a client transaction, and feeds back the final
response (or a failure); each call returns what to send now, if anything, and when
to try again. A 401/407 is answered once per challenge with the trunk's credentials
(§22.2); a refusal or a timeout is retried after :data:`RETRY_AFTER_FAILURE` seconds,
and a success is refreshed halfway through the granted expiry.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from ..sip.dialog import new_branch, new_tag
from ..sip.digest import answer_challenge
from ..sip.message import Request, Response
from ..sip.uac import LocalAddress, make_request

#: Expiry asked of the trunk, in seconds.
REQUESTED_EXPIRES = 600
#: Seconds before another attempt after a refusal, a timeout or a transport error.
RETRY_AFTER_FAILURE = 60.0
#: Least seconds between two refreshes, whatever expiry the trunk grants.
MIN_REFRESH = 30.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Step:
    """What to do next: send ``request`` now (if any), come back at ``at``."""

    request: Request | None
    at: float


@dataclass(frozen=True, slots=True, kw_only=True)
class TrunkRegistrationStatus:
    registered: bool
    expires_at: float | None
    last_status: int | None
    attempts: int


class TrunkRegistration:
    """The registration of voipsec's account at one trunk."""

    def __init__(self, *, domain: str, username: str, password: str, local: LocalAddress) -> None:
        self.domain = domain
        self.username = username
        self._password = password
        self.local = local
        self.call_id = secrets.token_hex(16)
        self._tag = new_tag()
        self._cseq = 0
        self._answered_challenge = False
        self.expires_at: float | None = None
        self.last_status: int | None = None
        self.attempts = 0

    def start(self, now: float) -> Step:
        """A fresh REGISTER (first one, or a refresh)."""
        self._answered_challenge = False
        return Step(request=self._register(None), at=now + RETRY_AFTER_FAILURE)

    def on_response(self, response: Response, now: float) -> Step:
        self.last_status = response.status
        if 200 <= response.status < 300:
            granted = _granted_expires(response)
            self.expires_at = now + granted
            return Step(request=None, at=now + max(MIN_REFRESH, granted / 2))
        if response.status in (401, 407) and not self._answered_challenge:
            authorization = answer_challenge(
                response,
                username=self.username,
                password=self._password,
                method="REGISTER",
                uri=f"sip:{self.domain}",
            )
            if authorization is not None:
                self._answered_challenge = True
                return Step(request=self._register(authorization), at=now + RETRY_AFTER_FAILURE)
        self.expires_at = None
        return Step(request=None, at=now + RETRY_AFTER_FAILURE)

    def on_failure(self, now: float) -> Step:
        self.expires_at = None
        return Step(request=None, at=now + RETRY_AFTER_FAILURE)

    def status(self, now: float) -> TrunkRegistrationStatus:
        return TrunkRegistrationStatus(
            registered=self.expires_at is not None and self.expires_at > now,
            expires_at=self.expires_at,
            last_status=self.last_status,
            attempts=self.attempts,
        )

    def _register(self, authorization: tuple[str, str] | None) -> Request:
        self._cseq += 1
        self.attempts += 1
        aor = f"sip:{self.username}@{self.domain}"
        host = f"[{self.local.host}]" if ":" in self.local.host else self.local.host
        headers = [
            ("Via", self.local.via(new_branch())),
            ("Max-Forwards", "70"),
            ("From", f"<{aor}>;tag={self._tag}"),
            ("To", f"<{aor}>"),
            ("Call-ID", self.call_id),
            ("CSeq", f"{self._cseq} REGISTER"),
            (
                "Contact",
                f"<sip:{self.username}@{host}:{self.local.port};transport={self.local.transport}>",
            ),
            ("Expires", str(REQUESTED_EXPIRES)),
        ]
        if authorization is not None:
            headers.append(authorization)
        return make_request("REGISTER", f"sip:{self.domain}", headers)


def _granted_expires(response: Response) -> float:
    """§10.2.4: the expiry of our Contact in the 200, else Expires, else what we asked."""
    for contact in response.contacts:
        value = contact.param("expires")
        if value is not None and value.isdigit():
            return float(value)
    header = response.headers.get("expires")
    if header is not None and header.strip().isdigit():
        return float(header.strip())
    return float(REQUESTED_EXPIRES)

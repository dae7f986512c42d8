"""HTTP Digest authentication for SIP (RFC 7616, RFC 8760, RFC 3261 §22).

How this works: a challenge carries a *stateless* nonce — a timestamp, random bytes
and an HMAC over both plus the client's address, keyed by a server secret — so the
server keeps no state per challenge and a nonce stolen from one address is useless
from another. A credential is checked by recomputing the response from the stored
HA1 (the password itself is never stored) and comparing in constant time. A user
who does not exist is checked against a dummy HA1 so that unknown and known users
take the same path and get the same answer (no enumeration). The nonce-count of
every accepted nonce is remembered for the nonce's lifetime so a replayed
Authorization header is refused; a fresh nonce may start at any count >= 1, but
one issued before a nonce whose count was evicted is answered ``stale``.

Nothing here reads the clock: ``now`` is an argument.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import secrets
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum

from .errors import SipParseError
from .message import Response

#: Algorithms we implement, in the order challenges offer them (RFC 8760 §2.4:
#: the server lists its preferred algorithm first).
ALGORITHMS = ("SHA-256", "MD5")

#: Seconds a nonce stays valid; past this the client gets ``stale=true`` and simply
#: retries (RFC 7616 §3.3). Five minutes covers slow phones and clock-free servers.
NONCE_LIFETIME = 300

#: Nonces whose nonce-count we track for replay detection. Entries are only added
#: after a credential verified, so only authenticated users fill it; oldest first out.
MAX_TRACKED_NONCES = 200_000

#: Longest Authorization header value we look at; real ones are ~300 bytes.
MAX_AUTH_HEADER = 4_096

_HASHES: dict[str, Callable[[bytes], hashlib._Hash]] = {
    "SHA-256": hashlib.sha256,
    "MD5": hashlib.md5,
}
_NONCE_RANDOM = 12
_NONCE_MAC = 16
#: A nonce is stamp (8) | issuing worker (1) | random | MAC over all of them: the worker
#: byte says which signaling worker keeps its nonce-count (sip/ownership.py), and the
#: MAC covers it, so a forged byte only sends the nonce to a worker that refuses it.
_NONCE_BODY = 8 + 1 + _NONCE_RANDOM


def _h(algorithm: str, text: str) -> str:
    return _HASHES[algorithm](text.encode()).hexdigest()


def ha1(algorithm: str, username: str, realm: str, password: str) -> str:
    """H(username:realm:password), the only form in which passwords are stored."""
    return _h(algorithm, f"{username}:{realm}:{password}")


class DigestVerdict(Enum):
    OK = "ok"
    #: Nonce expired (or its count was forgotten): re-challenge with stale=true.
    STALE = "stale"
    #: Wrong credentials, unknown user, bad nonce, replay: refuse.
    FAILED = "failed"
    #: Header unusable (wrong realm, unsupported algorithm or qop): re-challenge.
    MALFORMED = "malformed"


@dataclass(frozen=True, slots=True, kw_only=True)
class Credentials:
    """The parameters of an Authorization header (RFC 7616 §3.4)."""

    username: str
    realm: str
    nonce: str
    uri: str
    response: str
    algorithm: str
    qop: str | None
    nc: str | None
    cnonce: str | None
    opaque: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthResult:
    verdict: DigestVerdict
    username: str | None = None
    #: Why, for logs and counters: never contains a secret.
    detail: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class DigestStatistics:
    challenges: int
    accepted: int
    failed: int
    stale: int
    replays: int
    tracked_nonces: int


def _nonce_bytes(nonce: str) -> bytes | None:
    """A nonce's bytes when it has our format's length, else None (never raises)."""
    if len(nonce) > 64:
        return None
    try:
        raw = base64.urlsafe_b64decode(nonce + "=" * (-len(nonce) % 4))
    except ValueError:
        return None
    return raw if len(raw) == _NONCE_BODY + _NONCE_MAC else None


def nonce_worker(nonce: str) -> int | None:
    """The signaling worker a nonce claims to come from (unverified: only its issuer
    can check the MAC), or None when it is not one of ours."""
    raw = _nonce_bytes(nonce)
    return None if raw is None else raw[8]


def parse_authorization(value: str) -> Credentials:
    """Parse ``Digest k=v, k="v", ...``; raises SipParseError(400) if unusable."""
    if len(value) > MAX_AUTH_HEADER:
        raise SipParseError(400, "Authorization header too long")
    scheme, _, rest = value.strip().partition(" ")
    if scheme.lower() != "digest":
        raise SipParseError(400, "unsupported authorization scheme")
    params = _parse_auth_params(rest)
    try:
        creds = Credentials(
            username=params["username"],
            realm=params["realm"],
            nonce=params["nonce"],
            uri=params["uri"],
            response=params["response"],
            algorithm=params.get("algorithm", "MD5"),
            qop=params.get("qop"),
            nc=params.get("nc"),
            cnonce=params.get("cnonce"),
            opaque=params.get("opaque"),
        )
    except KeyError as missing:
        raise SipParseError(400, f"Authorization lacks {missing.args[0]}") from None
    if _HEX_DIGEST.fullmatch(creds.response) is None:
        # RFC 3261 §25.1 request-digest = 32LHEX; RFC 8760 §2.6: 64 for SHA-256 and
        # SHA-512-256. Anything else (non-ASCII included) can never verify.
        raise SipParseError(400, "malformed digest response")
    return creds


#: A request-digest: 32 (MD5) or 64 (SHA-256, SHA-512-256) hex digits.
_HEX_DIGEST = re.compile(r"[0-9a-fA-F]{32}(?:[0-9a-fA-F]{32})?")

#: One ``name=value`` or ``name="quoted value"`` of an auth header (RFC 7616 §3.4).
_AUTH_PARAM = re.compile(
    r'[ \t,]*([^=\s,"]*)[ \t]*=[ \t]*(?:"([^"\\]*(?:\\.[^"\\]*)*)"|([^,"]*))[ \t]*(?:,|$)', re.S
)
_BLANK_TAIL = re.compile(r"[ \t,]*")
_ESCAPE = re.compile(r"\\(.)", re.S)


def _parse_auth_params(text: str) -> dict[str, str]:
    params: dict[str, str] = {}
    pos, n = 0, len(text)
    while pos < n:
        if _BLANK_TAIL.fullmatch(text, pos) is not None:
            break
        match = _AUTH_PARAM.match(text, pos)
        if match is None or match.end() == pos:
            if '"' in text[pos:]:
                raise SipParseError(400, "unbalanced quotes in Authorization")
            raise SipParseError(400, "malformed Authorization parameter")
        name = match.group(1).lower()
        quoted = match.group(2)
        if quoted is not None:
            value = _ESCAPE.sub(r"\1", quoted) if "\\" in quoted else quoted
        else:
            value = match.group(3).strip()
        if not name or name in params:
            raise SipParseError(400, "malformed Authorization parameter")
        params[name] = value
        pos = match.end()
    return params


class DigestAuthenticator:
    """Issues challenges and verifies credentials for one realm.

    ``lookup(username, algorithm)`` returns the stored HA1 or None; it is the only
    access to the user store.
    """

    def __init__(
        self,
        *,
        realm: str,
        algorithms: Sequence[str],
        lookup: Callable[[str, str], str | None],
        secret: bytes | None = None,
        nonce_lifetime: int = NONCE_LIFETIME,
        max_tracked_nonces: int = MAX_TRACKED_NONCES,
        worker: int = 0,
    ) -> None:
        unknown = [a for a in algorithms if a not in _HASHES]
        if unknown or not algorithms:
            raise ValueError(f"unsupported digest algorithms: {unknown or 'none given'}")
        self.realm = realm
        self.algorithms = tuple(a for a in ALGORITHMS if a in algorithms)
        self._lookup = lookup
        self._secret = secret if secret is not None else os.urandom(32)
        self._lifetime = nonce_lifetime
        self._max_tracked = max_tracked_nonces
        #: This signaling worker's index, marked in every nonce it issues (0..255).
        self._worker = worker.to_bytes(1, "big")
        #: The highest nonce-count seen per nonce, least recently used first. The issue
        #: time is not stored: every nonce carries it (issue 15: memory per call).
        self._nc_seen: OrderedDict[str, int] = OrderedDict()
        #: The newest issue time of a nonce evicted from ``_nc_seen`` before it expired:
        #: an untracked nonce issued no later than this may be one whose count was
        #: forgotten, so it is refused as stale rather than taken as fresh.
        self._forgotten_upto = float("-inf")
        self._dummy_ha1 = {a: _h(a, os.urandom(16).hex()) for a in ALGORITHMS}
        self._opaque = base64.urlsafe_b64encode(os.urandom(9)).decode()
        self._counts = {"challenges": 0, "accepted": 0, "failed": 0, "stale": 0, "replays": 0}

    # -- challenges ---------------------------------------------------------------

    def make_nonce(self, now: float, source: str) -> str:
        body = int(now).to_bytes(8, "big") + self._worker + os.urandom(_NONCE_RANDOM)
        mac = self._mac(body, source)
        return base64.urlsafe_b64encode(body + mac).decode().rstrip("=")

    def challenge(self, now: float, source: str, *, stale: bool = False) -> list[str]:
        """WWW-Authenticate values, one per enabled algorithm, SHA-256 first (RFC 8760 §2.4)."""
        self._counts["challenges"] += 1
        nonce = self.make_nonce(now, source)
        tail = ", stale=true" if stale else ""
        return [
            f'Digest realm="{self.realm}", nonce="{nonce}", opaque="{self._opaque}", '
            f'algorithm={alg}, qop="auth"{tail}'
            for alg in self.algorithms
        ]

    # -- verification -------------------------------------------------------------

    def verify(self, creds: Credentials, *, method: str, now: float, source: str) -> AuthResult:
        """Check one Authorization against a request's method from ``source``."""
        if creds.realm != self.realm:
            return AuthResult(verdict=DigestVerdict.MALFORMED, detail="wrong realm")
        algorithm = _canonical_algorithm(creds.algorithm)
        if algorithm not in self.algorithms:
            return AuthResult(verdict=DigestVerdict.MALFORMED, detail="algorithm not offered")
        if creds.qop != "auth" or creds.nc is None or creds.cnonce is None:
            return AuthResult(verdict=DigestVerdict.MALFORMED, detail="qop=auth required")
        nc = _parse_nc(creds.nc)
        if nc is None:
            return AuthResult(verdict=DigestVerdict.MALFORMED, detail="malformed nc")
        issued = self._nonce_time(creds.nonce, source)
        if issued is None:
            # Not ours, from before a restart, or bound to another address: a fresh
            # challenge costs nothing and a forged nonce gains nothing from it.
            self._counts["stale"] += 1
            return AuthResult(verdict=DigestVerdict.STALE, detail="nonce not ours or wrong source")
        stored = self._lookup(creds.username, algorithm)
        expected = self._response(
            stored if stored is not None else self._dummy_ha1[algorithm],
            algorithm,
            creds,
            method,
        )
        good = (
            hmac.compare_digest(expected.encode(), creds.response.lower().encode("utf-8"))
            and stored is not None
        )
        if not good:
            self._counts["failed"] += 1
            return AuthResult(verdict=DigestVerdict.FAILED, detail="bad credentials")
        if now - issued > self._lifetime:
            self._counts["stale"] += 1
            return AuthResult(verdict=DigestVerdict.STALE, detail="nonce expired")
        return self._check_count(creds.nonce, nc, now, creds.username)

    def _check_count(self, nonce: str, nc: int, now: float, username: str) -> AuthResult:
        """RFC 7616 §3.4: the nonce-count must grow; a repeat is a replay."""
        self._expire_counts(now)
        seen = self._nc_seen.get(nonce)
        if seen is None and _issued(nonce) <= self._forgotten_upto:
            # The count may have been evicted: a replay would look fresh, so fail safe
            # with a fresh nonce (the client retries once; no call is lost).
            self._counts["stale"] += 1
            return AuthResult(verdict=DigestVerdict.STALE, detail="nonce count unknown")
        # A nonce never seen may start at any count >= 1: RFC 7616 §3.4 only asks that
        # the count grows per nonce, and Jami (PJSIP) answers a fresh challenge with
        # nc=00000002 (issue 16).
        if seen is not None and nc <= seen:
            self._counts["replays"] += 1
            self._counts["failed"] += 1
            return AuthResult(verdict=DigestVerdict.FAILED, detail="nonce count replayed")
        self._nc_seen[nonce] = nc
        self._nc_seen.move_to_end(nonce)
        while len(self._nc_seen) > self._max_tracked:
            evicted, _ = self._nc_seen.popitem(last=False)
            self._forgotten_upto = max(self._forgotten_upto, _issued(evicted))
        self._counts["accepted"] += 1
        return AuthResult(verdict=DigestVerdict.OK, username=username)

    def _expire_counts(self, now: float) -> None:
        while self._nc_seen:
            nonce = next(iter(self._nc_seen))
            if now - _issued(nonce) <= self._lifetime:
                break
            del self._nc_seen[nonce]

    def _response(self, stored_ha1: str, algorithm: str, c: Credentials, method: str) -> str:
        ha2 = _h(algorithm, f"{method}:{c.uri}")
        return _h(algorithm, f"{stored_ha1}:{c.nonce}:{c.nc}:{c.cnonce}:{c.qop}:{ha2}")

    def _mac(self, payload: bytes, source: str) -> bytes:
        return hmac.new(self._secret, payload + source.encode(), hashlib.sha256).digest()[
            :_NONCE_MAC
        ]

    def _nonce_time(self, nonce: str, source: str) -> float | None:
        raw = _nonce_bytes(nonce)
        if raw is None:
            return None
        body, mac = raw[:_NONCE_BODY], raw[_NONCE_BODY:]
        if not hmac.compare_digest(mac, self._mac(body, source)):
            return None
        return float(int.from_bytes(body[:8], "big"))

    def statistics(self) -> DigestStatistics:
        return DigestStatistics(tracked_nonces=len(self._nc_seen), **self._counts)


def _issued(nonce: str) -> float:
    """The issue time in a tracked nonce's first 8 bytes (see ``make_nonce``): 12
    base64 characters are 9 bytes. Only verified nonces are tracked, so it decodes."""
    return float(int.from_bytes(base64.urlsafe_b64decode(nonce[:12])[:8], "big"))


def _canonical_algorithm(name: str) -> str:
    upper = name.strip('"').upper()
    return "SHA-256" if upper in ("SHA-256", "SHA256") else upper


_HEX = frozenset("0123456789abcdefABCDEF")


def _parse_nc(text: str) -> int | None:
    # RFC 7616 §3.4: nc-value = 8LHEX. int(text, 16) alone would also take "0x000001",
    # "+0000001" or "0000_001".
    # The count includes the request it is on, so it starts at 00000001.
    if len(text) != 8 or not set(text) <= _HEX:
        return None
    count = int(text, 16)
    return count if count >= 1 else None


def client_response(
    *,
    username: str,
    password: str,
    realm: str,
    nonce: str,
    method: str,
    uri: str,
    algorithm: str = "SHA-256",
    nc: int = 1,
    cnonce: str = "0a4f113b",
    opaque: str | None = None,
) -> str:
    """An Authorization value as a client computes it (for tests and outbound trunks)."""
    h1 = ha1(algorithm, username, realm, password)
    ha2 = _h(algorithm, f"{method}:{uri}")
    nc_text = f"{nc:08x}"
    resp = _h(algorithm, f"{h1}:{nonce}:{nc_text}:{cnonce}:auth:{ha2}")
    op = f', opaque="{opaque}"' if opaque is not None else ""
    return (
        f'Digest username="{username}", realm="{realm}", nonce="{nonce}", uri="{uri}", '
        f'response="{resp}", algorithm={algorithm}, qop=auth, nc={nc_text}, '
        f'cnonce="{cnonce}"{op}'
    )


def parse_challenge(value: str) -> dict[str, str]:
    """Parameters of a WWW-Authenticate value (for clients and tests)."""
    scheme, _, rest = value.strip().partition(" ")
    if scheme.lower() != "digest":
        raise SipParseError(400, "unsupported challenge scheme")
    return _parse_auth_params(rest)


def answer_challenge(
    response: Response, *, username: str, password: str, method: str, uri: str
) -> tuple[str, str] | None:
    """The credentials header answering a 401/407 as a client (RFC 3261 §22.2, §22.3).

    Returns ``(name, value)``: Authorization for a 401, Proxy-Authorization for a
    407, with a random cnonce. None when the challenge is missing, malformed, has no
    nonce or asks for an algorithm other than MD5 or SHA-256.
    """
    header = "www-authenticate" if response.status == 401 else "proxy-authenticate"
    name = "Authorization" if response.status == 401 else "Proxy-Authorization"
    challenge = response.headers.get(header)
    if challenge is None:
        return None
    try:
        params = parse_challenge(challenge)
    except SipParseError:
        return None
    algorithm = params.get("algorithm", "MD5").upper()
    if algorithm not in ("MD5", "SHA-256") or "nonce" not in params:
        return None
    value = client_response(
        username=username,
        password=password,
        realm=params.get("realm", ""),
        nonce=params["nonce"],
        method=method,
        uri=uri,
        algorithm=algorithm,
        cnonce=secrets.token_hex(8),
        opaque=params.get("opaque"),
    )
    return name, value

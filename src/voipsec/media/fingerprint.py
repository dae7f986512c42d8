"""SDP side of DTLS-SRTP: a=fingerprint (RFC 8122) and a=setup (RFC 5763 §5, RFC 4145).

How this works: the SDP carries no key, only the hash of the certificate each side will
present in the DTLS handshake (a=fingerprint) and who opens the handshake (a=setup).
:func:`parse_fingerprint` turns one a=fingerprint value into a :class:`Fingerprint`, or
raises :class:`DtlsError`, the one exception this module and :mod:`.dtls` give
callers; :func:`parse_fingerprints` keeps the usable ones of an m= section.
:func:`setup_answer` picks our a=setup for an answer and :func:`role_of_setup` says
which DTLS role that is. Pure functions over strings: no I/O, no clock.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

__all__ = [
    "FINGERPRINT_HASHES",
    "MAX_FINGERPRINT_TEXT",
    "MAX_REMOTE_FINGERPRINTS",
    "WEAK_HASHES",
    "DtlsError",
    "Fingerprint",
    "fingerprint_of",
    "parse_fingerprint",
    "parse_fingerprints",
    "role_of_setup",
    "setup_answer",
]

#: Hash functions accepted in a=fingerprint, with their digest length in bytes. RFC 8122
#: §5 requires sha-256 of every endpoint; sha-384/512 are what a stronger certificate
#: signature may bring. sha-1 and md5 are refused: a collision on them lets a peer
#: present another certificate under the same fingerprint (RFC 8122 §5, §7).
_DIGEST_LENGTHS: Final[dict[str, int]] = {"sha-256": 32, "sha-384": 48, "sha-512": 64}
FINGERPRINT_HASHES: Final = tuple(_DIGEST_LENGTHS)
WEAK_HASHES: Final = frozenset({"sha-1", "md5", "md2"})
_HASHLIB_NAMES: Final[dict[str, str]] = {
    "sha-256": "sha256",
    "sha-384": "sha384",
    "sha-512": "sha512",
}

#: Longest a=fingerprint value read: "sha-512 " and 64 colon-separated hex pairs is 199
#: characters; anything longer is not a fingerprint we accept.
MAX_FINGERPRINT_TEXT: Final = 200
#: Fingerprints one peer may name (RFC 8122 §5 allows one per certificate and hash).
#: A browser sends one; each is hashed against the certificate in the handshake, so
#: the count is bounded to keep that work small.
MAX_REMOTE_FINGERPRINTS: Final = 4

#: RFC 8122 §5: fingerprint = 2UHEX *(":" 2UHEX). Lower-case hex is accepted too
#: (some stacks write it); the hash token is case-insensitive.
_DIGEST_RE: Final = re.compile(r"[0-9A-Fa-f]{2}(?::[0-9A-Fa-f]{2})*")
_HASH_RE: Final = re.compile(r"[A-Za-z0-9-]{1,16}")

#: RFC 5763 §5 / RFC 4145 §4: our answer's a=setup for the offer's. An offer of
#: ``actpass`` is answered ``passive``: RFC 5763 §5 RECOMMENDS ``active`` to save half a
#: round trip, but the relay is an ICE-lite agent (RFC 8445 §2.5) that never sends checks
#: and learns the browser's address only from the browser's own checks; as the DTLS
#: server it answers a ClientHello to the address it came from instead of guessing
#: where to send one. ``holdconn`` (no connection) cannot carry media.
_SETUP_ANSWERS: Final[dict[str, str]] = {
    "actpass": "passive",
    "active": "passive",
    "passive": "active",
}
#: Our DTLS role for our own a=setup (RFC 5763 §5: the active side is the DTLS client).
_ROLES: Final[dict[str, str]] = {"active": "client", "passive": "server"}


class DtlsError(Exception):
    """A DTLS-SRTP input voipsec will not use: a malformed or unsupported a=fingerprint
    or a=setup, or an endpoint built without a usable peer fingerprint.

    The message is ours, safe to log and to put in a SIP Warning; it never contains key
    material or a certificate.
    """


class _UnsupportedHash(DtlsError):
    """A well-formed a=fingerprint whose hash we refuse or do not know."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Fingerprint:
    """A certificate fingerprint (RFC 8122 §5): the hash name and the raw digest."""

    hash: str
    digest: bytes

    def __str__(self) -> str:
        """The a=fingerprint value: ``sha-256 AB:CD:...`` (upper-case hex, RFC 8122 §5)."""
        return f"{self.hash} " + ":".join(f"{byte:02X}" for byte in self.digest)

    def matches(self, der: bytes) -> bool:
        """Whether ``der`` (a DER certificate) hashes to this fingerprint."""
        digest = hashlib.new(_HASHLIB_NAMES[self.hash], der).digest()
        return hmac.compare_digest(digest, self.digest)


def fingerprint_of(der: bytes, hash_name: str = "sha-256") -> Fingerprint:
    """The fingerprint of a DER certificate with one of :data:`FINGERPRINT_HASHES`."""
    if hash_name not in _HASHLIB_NAMES:
        raise DtlsError(f"unsupported fingerprint hash {hash_name!r}")
    return Fingerprint(hash=hash_name, digest=hashlib.new(_HASHLIB_NAMES[hash_name], der).digest())


def parse_fingerprint(value: str) -> Fingerprint:
    """One a=fingerprint value (``hash-func SP fingerprint``, RFC 8122 §5).

    Raises :class:`DtlsError` for a value too long, not two space-separated fields, a
    hash we refuse (weak) or do not know, hex that is not colon-separated pairs, or a
    digest whose length is wrong for its hash.
    """
    if len(value) > MAX_FINGERPRINT_TEXT:
        raise DtlsError("a=fingerprint too long")
    fields = value.strip().split(" ")
    if len(fields) != 2:
        raise DtlsError("a=fingerprint is not 'hash fingerprint'")
    hash_text, hex_text = fields
    if _HASH_RE.fullmatch(hash_text) is None:
        raise DtlsError("a=fingerprint hash is malformed")
    hash_name = hash_text.lower()
    if hash_name in WEAK_HASHES:
        raise _UnsupportedHash(f"a=fingerprint hash {hash_name} is too weak")
    length = _DIGEST_LENGTHS.get(hash_name)
    if length is None:
        raise _UnsupportedHash(f"a=fingerprint hash {hash_name} is not supported")
    if _DIGEST_RE.fullmatch(hex_text) is None:
        raise DtlsError("a=fingerprint digest is not colon-separated hex pairs")
    digest = bytes.fromhex(hex_text.replace(":", ""))
    if len(digest) != length:
        raise DtlsError(f"a=fingerprint digest length is wrong for {hash_name}")
    return Fingerprint(hash=hash_name, digest=digest)


def parse_fingerprints(values: Iterable[str]) -> tuple[Fingerprint, ...]:
    """The usable fingerprints of an m= section (its a=fingerprint values, RFC 8122 §5).

    A value with a hash we do not support is skipped, as RFC 8122 §5 lets an endpoint
    use those it supports (a peer that adds a sha-1 beside its sha-256 still works);
    a malformed one refuses the whole section. Raises :class:`DtlsError` when none is
    usable or more than :data:`MAX_REMOTE_FINGERPRINTS` are.
    """
    found: list[Fingerprint] = []
    for value in values:
        try:
            found.append(parse_fingerprint(value))
        except _UnsupportedHash:
            continue
    if not found:
        raise DtlsError("no usable a=fingerprint")
    if len(found) > MAX_REMOTE_FINGERPRINTS:
        raise DtlsError("too many a=fingerprint lines")
    return tuple(found)


def setup_answer(offer_setup: str) -> str:
    """Our a=setup in an answer to an offer's a=setup value (RFC 5763 §5).

    A caller whose offer has no a=setup passes ``"active"`` (RFC 4145 §4: the default).
    Raises :class:`DtlsError` for ``holdconn`` and anything unknown.
    """
    answer = _SETUP_ANSWERS.get(offer_setup.strip())
    if answer is None:
        raise DtlsError("a=setup is not actpass, active or passive")
    return answer


def role_of_setup(local_setup: str) -> str:
    """The DTLS role for our own a=setup: ``active`` is the client, ``passive`` the server.

    ``actpass`` (in our offer) has no role yet: the answer decides; it raises
    :class:`DtlsError` like anything else that is not active or passive.
    """
    role = _ROLES.get(local_setup.strip())
    if role is None:
        raise DtlsError("a=setup must be active or passive to have a DTLS role")
    return role

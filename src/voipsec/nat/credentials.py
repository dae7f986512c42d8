"""TURN credentials: the long-term key (RFC 8489 §9.2.2) and the TURN REST scheme.

The REST scheme is the one coturn calls ``use-auth-secret`` (draft-uberti-behave-turn-
rest-00): the username is ``EXPIRY:USER`` with EXPIRY a Unix time, the password is
base64(HMAC-SHA1(secret, username)). A web or SIP service that knows the shared secret
hands out such pairs; the TURN server checks them without a user database.

Nothing here reads the clock: ``now`` is an argument.
"""

from __future__ import annotations

import base64
import hmac
import os
import secrets
import time
from pathlib import Path

from ..sip.digest import ha1
from ..storage import Store

#: Separator between expiry and user, coturn's default ``rest-api-separator``.
REST_SEPARATOR = ":"


def long_term_key(username: str, realm: str, password: str) -> bytes:
    """MD5(username ":" realm ":" password) — RFC 8489 §9.2.2, the default algorithm.

    This is exactly the digest HA1 of RFC 2617 for the same realm, which is why a
    voipsec user's stored MD5 HA1 is their TURN key.
    """
    return bytes.fromhex(ha1("MD5", username, realm, password))


def rest_password(secret: bytes, username: str) -> str:
    """base64(HMAC-SHA1(secret, username)), as coturn computes it."""
    mac = hmac.new(secret, username.encode(), "sha1").digest()
    return base64.b64encode(mac).decode("ascii")


def rest_credentials(secret: bytes, user: str, ttl: int, now: float) -> tuple[str, str]:
    """A (username, password) pair for ``user`` valid until ``now + ttl``."""
    if ttl <= 0:
        raise ValueError("ttl must be positive")
    if not user:
        raise ValueError("user must not be empty")
    username = f"{int(now) + ttl}{REST_SEPARATOR}{user}"
    return username, rest_password(secret, username)


def parse_rest_username(username: str) -> tuple[int, str] | None:
    """(expiry, user) of a REST username, or None when it is not one."""
    expiry, sep, user = username.partition(REST_SEPARATOR)
    if not sep or not user or not expiry.isascii() or not expiry.isdigit() or len(expiry) > 12:
        return None
    return int(expiry), user


SECRET_NAME = "turn-secret"  # noqa: S105 - a file name, not a secret
#: Seconds the user table is cached between reads (user changes reach TURN this fast).
USER_CACHE_SECONDS = 2.0


def read_or_create_secret(path: Path) -> bytes:
    """The REST shared secret: the file's text, stripped (coturn's static-auth-secret
    is a string too, so the same value can be given to ``turnutils_uclient -W``)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_hex(32) + "\n")
    secret = path.read_bytes().strip()
    if not secret:
        raise ValueError(f"{path} is empty")
    return secret


class UserKeys:
    """lookup_key backed by the store: user -> MD5 HA1 for the realm, cached briefly."""

    def __init__(self, store: Store, realm: str) -> None:
        self._store = store
        self._realm = realm
        self._keys: dict[str, bytes] = {}
        self._read_at = float("-inf")

    def __call__(self, user: str) -> bytes | None:
        now = time.monotonic()
        if now - self._read_at > USER_CACHE_SECONDS:
            digests = self._store.user_digests(self._realm)
            self._keys = {
                name: bytes.fromhex(value)
                for (name, algorithm), value in digests.items()
                if algorithm == "MD5"
            }
            self._read_at = now
        return self._keys.get(user)

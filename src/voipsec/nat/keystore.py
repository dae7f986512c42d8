"""Where TURN's secrets come from (the shell side of credentials.py): the REST shared
secret in the data directory, and the users' long-term keys from the store.

credentials.py computes; this module reads files and the database, so the TURN
state machine (turn.py), which imports credentials.py, stays sans-IO.
"""

from __future__ import annotations

import os
import secrets
import time
from pathlib import Path

from ..storage import Store

__all__ = ["SECRET_NAME", "USER_CACHE_SECONDS", "UserKeys", "read_or_create_secret"]

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

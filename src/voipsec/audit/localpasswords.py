"""Which users have a common or guessable password, from their stored HA1 digests.

How this works: voipsec stores no password, only HA1 = H(user:realm:password) per
digest algorithm (RFC 7616 §3.4.2, RFC 8760 for SIP). For each user we compute the HA1
of every candidate — the shipped list of the most common passwords
(``data/common-passwords.txt``, its source in its header) and guesses made from the
user name (:func:`name_guesses`) — and compare it in constant time with the stored one.
The SHA-256 digest is used when stored (it always is since voipsec stores both), else
MD5. The hash of ``user:realm:`` is computed once per user and copied per candidate.

The work is bounded: at most :data:`MAX_COMMON_PASSWORDS` list entries and
:data:`MAX_PASSWORD_USERS` users (about a microsecond per candidate: ten thousand
users take about ten seconds). The result names users, never a password.

Sans-IO: the list's text, the digests and the realm come in as arguments.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

__all__ = [
    "MAX_COMMON_PASSWORDS",
    "MAX_PASSWORD_USERS",
    "PasswordScan",
    "StoredUser",
    "name_guesses",
    "parse_password_list",
    "scan_passwords",
]

#: Entries read from the password list; the shipped one has 1,001 (SecLists' "top
#: 1000"). A longer list given instead is cut here: each entry costs one hash per user.
MAX_COMMON_PASSWORDS = 2_000
#: Users checked per audit: 10,000 x ~1,030 candidates is ~10 million hashes, about
#: ten seconds. Users beyond it (by name) are counted as not checked.
MAX_PASSWORD_USERS = 10_000
#: Sequences typed when a phone is set up in a hurry (besides the name's own guesses).
_KEYPAD = ("1234", "12345", "123456", "1234567", "12345678", "123456789", "0000", "00000000")

_HASHES: dict[str, Callable[[bytes], hashlib._Hash]] = {
    "SHA-256": hashlib.sha256,
    "MD5": hashlib.md5,
}


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredUser:
    """A user as the store keeps it: HA1 digests (hex) for the realm, class of service."""

    name: str
    sha256: str = ""
    md5: str = ""
    cos: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class PasswordScan:
    """Users whose password is a candidate, and how many were (not) checked."""

    weak: tuple[str, ...]
    checked: int
    unchecked: int


def parse_password_list(text: str) -> tuple[str, ...]:
    """The passwords of a list file: one per line, ``#`` lines and blank lines skipped,
    duplicates dropped, at most :data:`MAX_COMMON_PASSWORDS`."""
    found: dict[str, None] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        found[line] = None
        if len(found) == MAX_COMMON_PASSWORDS:
            break
    return tuple(found)


def name_guesses(name: str, realm: str) -> tuple[str, ...]:
    """Passwords made from the user name: itself, capitalised, doubled, reversed, with
    1/123/1234/!, its digits (an extension: ``ext201`` -> ``201``, ``201201``), the
    realm, and the keypad sequences."""
    digits = "".join(c for c in name if c.isdigit())
    bases = [name, name.lower(), name.capitalize(), name.upper()]
    out: list[str] = []
    for base in bases:
        out += [base, base + "1", base + "123", base + "1234", base + "!", base + base]
    out += [name[::-1], realm, realm.split(".")[0], name + "@" + realm]
    if digits:
        out += [digits, digits + digits, digits + "1234", "1234" + digits]
    out += _KEYPAD
    return tuple(dict.fromkeys(g for g in out if g))


def _matches(user: StoredUser, realm: str, candidates: Iterable[str]) -> bool:
    algorithm, stored = ("SHA-256", user.sha256) if user.sha256 else ("MD5", user.md5)
    if not stored:
        return False
    expected = stored.lower().encode("ascii", "replace")
    prefix = _HASHES[algorithm](f"{user.name}:{realm}:".encode())
    for candidate in candidates:
        digest = prefix.copy()
        digest.update(candidate.encode())
        if hmac.compare_digest(digest.hexdigest().encode(), expected):
            return True
    return False


def scan_passwords(users: Sequence[StoredUser], realm: str, common: Sequence[str]) -> PasswordScan:
    """Users (by name) whose stored HA1 is that of a common or name-derived password."""
    ordered = sorted(users, key=lambda u: u.name)
    checked = ordered[:MAX_PASSWORD_USERS]
    listed = common[:MAX_COMMON_PASSWORDS]
    weak = tuple(
        u.name
        for u in checked
        if _matches(u, realm, dict.fromkeys((*name_guesses(u.name, realm), *listed)))
    )
    return PasswordScan(weak=weak, checked=len(checked), unchecked=len(ordered) - len(checked))

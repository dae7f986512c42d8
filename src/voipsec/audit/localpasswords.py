"""Which users have a common or guessable password, from their stored HA1 digests.

How this works: voipsec stores no password, only HA1 = H(user:realm:password) per
digest algorithm (RFC 7616 §3.4.2, RFC 8760 for SIP). For each user we compute the HA1
of every candidate — the shipped list of the most common passwords
(``data/common-passwords.txt``, its source in its header), the most common of them and
the realm mutated as a password policy makes people do (:func:`mutations`:
``Password1``, ``Summer2024!``; :func:`leet_forms`: ``P@ssw0rd``) and guesses made
from the user name (:func:`name_guesses`) — and compare it in constant time with the stored one.
The SHA-256 digest is used when stored (it always is since voipsec stores both), else
MD5. The hash of ``user:realm:`` is computed once per user and copied per candidate.

The work is bounded: at most :data:`MAX_COMMON_PASSWORDS` list entries,
:data:`MAX_MUTATED_BASES` of them mutated, and :data:`MAX_PASSWORD_USERS` users (about
a microsecond per candidate, ~13,000 candidates: about 15 ms per user). The
result names users, never a password.

Sans-IO: the list's text, the digests and the realm come in as arguments.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

__all__ = [
    "MAX_COMMON_PASSWORDS",
    "MAX_LEET_BASES",
    "MAX_MUTATED_BASES",
    "MAX_PASSWORD_USERS",
    "MIN_MUTATED_LENGTH",
    "PasswordScan",
    "StoredUser",
    "leet_forms",
    "mutations",
    "name_guesses",
    "parse_password_list",
    "scan_passwords",
]

#: Entries read from the password list; the shipped one has 1,001 (SecLists' "top
#: 1000"). A longer list given instead is cut here: each entry costs one hash per user.
MAX_COMMON_PASSWORDS = 2_000
#: Users checked per audit: each costs ~13,000 candidates (the list, its mutations,
#: their look-alike forms and the name's guesses), about 15 ms; 10,000 users take
#: under three minutes.
#: Users beyond it (by name) are counted as not checked.
MAX_PASSWORD_USERS = 10_000
#: The list's first (most common) entries that are mutated (:func:`mutations`): the
#: list is ordered by frequency; 150 bases x 62 forms is ~9,000 candidates per user.
MAX_MUTATED_BASES = 150
#: Mutations shorter than this are not tried: ``voipsec user add`` refuses them.
MIN_MUTATED_LENGTH = 8
#: The list's first entries also tried with look-alike symbols (:func:`leet_forms`:
#: ``P@ssw0rd``), each with the few endings of :data:`_LEET_SUFFIXES`: 50 bases x 2
#: cases x 7 symbol sets x 6 endings is at most ~4,200 more candidates per user.
MAX_LEET_BASES = 50
#: Look-alike symbols people put in a common word, each applied or not.
_LEET = (("a", "@"), ("o", "0"), ("s", "$"))
_LEET_SUFFIXES = ("", "1", "!", "123", "1!", "123!")
#: Years people append (a password set "this year", "Summer2024!").
_YEARS = tuple(str(y) for y in range(2018, 2030))
_SUFFIXES = (
    "",
    "1",
    "12",
    "123",
    "1234",
    "!",
    "1!",
    "123!",
    *_YEARS,
    *(y + "!" for y in _YEARS),
)
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


def mutations(bases: Iterable[str]) -> tuple[str, ...]:
    """What people make of a common word when a policy asks for 8 characters: itself
    and capitalised, with a digit run, ``!`` or a year (:data:`_SUFFIXES`). Only
    mutations of :data:`MIN_MUTATED_LENGTH` characters or more (``user add`` refuses
    shorter ones, and the plain list holds them already)."""
    out: dict[str, None] = {}
    for base in bases:
        for word in dict.fromkeys((base, base.capitalize())):
            for suffix in _SUFFIXES:
                candidate = word + suffix
                if len(candidate) >= MIN_MUTATED_LENGTH:
                    out[candidate] = None
    return tuple(out)


def leet_forms(bases: Iterable[str]) -> tuple[str, ...]:
    """Each base, itself and capitalised, with every non-empty subset of :data:`_LEET`
    applied (``password`` -> ``p@ssword``, ``P@ssw0rd``, ``Pa$$w0rd``, ...) and each of
    :data:`_LEET_SUFFIXES`; only forms of MIN_MUTATED_LENGTH characters or more that
    differ from the base (those are tried already)."""
    out: dict[str, None] = {}
    for base in bases:
        for word in dict.fromkeys((base, base.capitalize())):
            for mask in range(1, 2 ** len(_LEET)):
                form = word
                for bit, (plain, symbol) in enumerate(_LEET):
                    if mask & (1 << bit):
                        form = form.replace(plain, symbol)
                if form == word:
                    continue
                for suffix in _LEET_SUFFIXES:
                    if len(form + suffix) >= MIN_MUTATED_LENGTH:
                        out[form + suffix] = None
    return tuple(out)


def _matches(user: StoredUser, realm: str, candidates: Iterable[str]) -> bool:
    algorithm, stored = ("SHA-256", user.sha256) if user.sha256 else ("MD5", user.md5)
    if not stored:
        return False
    try:
        expected = bytes.fromhex(stored)
    except ValueError:
        return False
    prefix = _HASHES[algorithm](f"{user.name}:{realm}:".encode())
    for candidate in candidates:
        digest = prefix.copy()
        digest.update(candidate.encode())
        if hmac.compare_digest(digest.digest(), expected):
            return True
    return False


def scan_passwords(users: Sequence[StoredUser], realm: str, common: Sequence[str]) -> PasswordScan:
    """Users (by name) whose stored HA1 is that of a common or name-derived password."""
    ordered = sorted(users, key=lambda u: u.name)
    checked = ordered[:MAX_PASSWORD_USERS]
    listed = common[:MAX_COMMON_PASSWORDS]
    mutated = mutations((*listed[:MAX_MUTATED_BASES], realm, realm.split(".")[0]))
    mutated += leet_forms(listed[:MAX_LEET_BASES])
    weak = tuple(
        u.name
        for u in checked
        if _matches(u, realm, dict.fromkeys((*name_guesses(u.name, realm), *listed, *mutated)))
    )
    return PasswordScan(weak=weak, checked=len(checked), unchecked=len(ordered) - len(checked))

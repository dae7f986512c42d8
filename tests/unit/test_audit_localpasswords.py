"""The weak-password scan: stored HA1 digests against common and name-derived passwords."""

from __future__ import annotations

from importlib.resources import files

from voipsec.audit.local import COMMON_LIST_FILE
from voipsec.audit.localpasswords import (
    MAX_COMMON_PASSWORDS,
    MAX_LEET_BASES,
    MAX_MUTATED_BASES,
    MAX_PASSWORD_USERS,
    MIN_MUTATED_LENGTH,
    PasswordScan,
    StoredUser,
    leet_forms,
    mutations,
    name_guesses,
    parse_password_list,
    scan_passwords,
)
from voipsec.sip.digest import ha1

REALM = "example.test"


def _user(name: str, password: str, *, md5_only: bool = False) -> StoredUser:
    return StoredUser(
        name=name,
        sha256="" if md5_only else ha1("SHA-256", name, REALM, password),
        md5=ha1("MD5", name, REALM, password),
        cos="national",
    )


def test_localpasswords_shipped_list_is_seclists_top_1000() -> None:
    text = files("voipsec.audit").joinpath("data", COMMON_LIST_FILE).read_text(encoding="utf-8")
    assert "10-million-password-list-top-1000.txt" in text  # the source, named in the header
    common = parse_password_list(text)
    assert len(common) == 1001
    assert common[:4] == ("123456", "password", "12345678", "qwerty")
    assert common[-1] == "freepass"
    assert not any(p.startswith("#") for p in common)


def test_localpasswords_parse_skips_comments_blanks_and_duplicates() -> None:
    assert parse_password_list("# header\n\nabc\nabc\n#x\nxyz\n") == ("abc", "xyz")


def test_localpasswords_parse_stops_at_max_common_passwords() -> None:
    text = "\n".join(f"pw{i}" for i in range(MAX_COMMON_PASSWORDS + 5))
    parsed = parse_password_list(text)
    assert len(parsed) == MAX_COMMON_PASSWORDS
    assert parsed[-1] == f"pw{MAX_COMMON_PASSWORDS - 1}"


def test_localpasswords_name_guesses() -> None:
    guesses = name_guesses("ext201", REALM)
    for expected in ("ext201", "Ext201", "ext201123", "102txe", "201", "201201", "1234", REALM):
        assert expected in guesses
    assert len(guesses) == len(set(guesses))


def test_localpasswords_scan_finds_listed_and_guessed_passwords() -> None:
    users = [
        _user("alice", "123456"),
        _user("bob", "bob123"),
        _user("carol", "Xq7-long-and-random"),
        _user("dave", "password", md5_only=True),
        _user("2001", "20012001"),
    ]
    scan = scan_passwords(users, REALM, ("123456", "password"))
    assert scan == PasswordScan(weak=("2001", "alice", "bob", "dave"), checked=5, unchecked=0)


def test_localpasswords_other_realm_digest_does_not_match() -> None:
    user = StoredUser(name="alice", sha256=ha1("SHA-256", "alice", "other", "123456"))
    assert scan_passwords([user], REALM, ("123456",)).weak == ()


def test_localpasswords_user_without_digest_is_not_weak() -> None:
    assert scan_passwords([StoredUser(name="x")], REALM, ("123456",)).weak == ()


def test_localpasswords_scan_stops_at_max_password_users() -> None:
    stub = StoredUser(name="u", sha256="0" * 64)
    users = [
        StoredUser(name=f"u{i:06d}", sha256=stub.sha256) for i in range(MAX_PASSWORD_USERS + 3)
    ]
    scan = scan_passwords(users, REALM, ())
    assert (scan.checked, scan.unchecked) == (MAX_PASSWORD_USERS, 3)


def test_localpasswords_mutated_common_words_and_realm_are_found() -> None:
    # Each accepted by `voipsec user add` (8 characters or more), none in the list itself.
    cases = {
        "carol": "Password1",
        "eve": "Qwerty123",
        "ivy": "iloveyou1",
        "oli": "welcome1",
        "mia": "letmein!",
        "ned": "Summer2024!",
        "wes": "Example1",  # the realm's first label, capitalised, + 1
        "zed": "example.test1",  # the realm + 1
    }
    text = files("voipsec.audit").joinpath("data", COMMON_LIST_FILE).read_text(encoding="utf-8")
    common = parse_password_list(text)
    assert not set(cases.values()) & set(common)
    users = [_user(n, p) for n, p in cases.items()] + [_user("ok", "v7-Qp2x-Lm9a")]
    scan = scan_passwords(users, REALM, common)
    assert scan == PasswordScan(weak=tuple(sorted(cases)), checked=9, unchecked=0)


def test_localpasswords_mutations_bounded() -> None:
    forms = mutations(["qwerty"])
    assert forms[:4] == ("qwerty12", "qwerty123", "qwerty1234", "qwerty1!")
    assert "Qwerty2029!" in forms and "Qwerty2030" not in forms
    assert all(len(f) >= MIN_MUTATED_LENGTH for f in forms)
    assert len(mutations(["x" * 8])) == 2 * 32  # 32 suffixes, two cases
    text = "\n".join(f"w{i:07d}" for i in range(MAX_MUTATED_BASES + 1))
    common = parse_password_list(text)
    # The entry past MAX_MUTATED_BASES is tried as it is, never mutated.
    last = common[MAX_MUTATED_BASES]
    users = [_user("a", last), _user("b", last + "1"), _user("c", common[0] + "1")]
    assert scan_passwords(users, REALM, common).weak == ("a", "c")


def test_localpasswords_look_alike_symbols_are_found() -> None:
    """Review 3 #9: P@ssw0rd and friends (a->@, o->0, s->$, each or not) of the list's
    first MAX_LEET_BASES entries, bounded; an entry past them is not made leet."""
    text = files("voipsec.audit").joinpath("data", COMMON_LIST_FILE).read_text(encoding="utf-8")
    common = parse_password_list(text)
    cases = {"ann": "P@ssw0rd", "bob": "p@ssword1", "cat": "Pa$$w0rd!", "dan": "P@$$w0rd123"}
    assert not set(cases.values()) & set(common)
    users = [_user(n, p) for n, p in cases.items()] + [_user("ok", "v7-Qp2x-Lm9a")]
    assert scan_passwords(users, REALM, common).weak == tuple(sorted(cases))
    forms = leet_forms(["password"])
    assert forms[:3] == ("p@ssword", "p@ssword1", "p@ssword!")
    assert len(forms) == 2 * 7 * 6
    assert leet_forms(["12345678"]) == ()
    assert len(leet_forms(common[:MAX_LEET_BASES])) <= MAX_LEET_BASES * 2 * 7 * 6
    fill = "\n".join(f"w{i:07d}" for i in range(MAX_LEET_BASES)) + "\npassword"
    short = parse_password_list(fill)
    assert scan_passwords([_user("x", "P@ssw0rd")], REALM, short).weak == ()

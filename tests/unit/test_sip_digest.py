"""HTTP Digest authentication for SIP (voipsec.sip.digest)."""

from __future__ import annotations

import hashlib
from dataclasses import replace

import pytest

from voipsec.sip.digest import (
    NONCE_LIFETIME,
    AuthResult,
    Credentials,
    DigestAuthenticator,
    DigestStatistics,
    DigestVerdict,
    client_response,
    ha1,
    parse_authorization,
    parse_challenge,
)
from voipsec.sip.errors import SipParseError

REALM = "example.com"
PASSWORDS = {"alice": "alice-secret-1", "bob": "bob-secret-22"}
SOURCE = "tls:192.0.2.10:40000"
URI = "sip:example.com"
T0 = 1_700_000_000.0


def _lookup(user: str, algorithm: str) -> str | None:
    password = PASSWORDS.get(user)
    return None if password is None else ha1(algorithm, user, REALM, password)


def _auth(algorithms: tuple[str, ...] = ("SHA-256",), **kwargs: int) -> DigestAuthenticator:
    return DigestAuthenticator(
        realm=REALM, algorithms=algorithms, lookup=_lookup, secret=b"s" * 32, **kwargs
    )


def _nonce(auth: DigestAuthenticator, now: float = T0, source: str = SOURCE) -> str:
    return parse_challenge(auth.challenge(now, source)[0])["nonce"]


def _creds(
    nonce: str,
    *,
    user: str = "alice",
    password: str | None = None,
    algorithm: str = "SHA-256",
    nc: int = 1,
    method: str = "REGISTER",
) -> Credentials:
    value = client_response(
        username=user,
        password=PASSWORDS.get(user, "whatever") if password is None else password,
        realm=REALM,
        nonce=nonce,
        method=method,
        uri=URI,
        algorithm=algorithm,
        nc=nc,
    )
    return parse_authorization(value)


def _verify(
    auth: DigestAuthenticator, creds: Credentials, *, now: float = T0, source: str = SOURCE
) -> AuthResult:
    return auth.verify(creds, method="REGISTER", now=now, source=source)


# -- RFC 7616 §3.9.1 ----------------------------------------------------------------

RFC7616 = {
    "username": "Mufasa",
    "password": "Circle of Life",
    "realm": "http-auth@example.org",
    "nonce": "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
    "method": "GET",
    "uri": "/dir/index.html",
    "nc": 1,
    "cnonce": "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
    "opaque": "FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS",
}


@pytest.mark.parametrize(
    ("algorithm", "response"),
    [
        ("SHA-256", "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
        ("MD5", "8ca523f5e9506fed4657c9700eebdbec"),
    ],
)
def test_digest_rfc7616_example_response(algorithm: str, response: str) -> None:
    value = client_response(algorithm=algorithm, **RFC7616)  # type: ignore[arg-type]
    creds = parse_authorization(value)
    assert creds == Credentials(
        username="Mufasa",
        realm="http-auth@example.org",
        nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
        uri="/dir/index.html",
        response=response,
        algorithm=algorithm,
        qop="auth",
        nc="00000001",
        cnonce="f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
        opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS",
    )


def test_digest_ha1_is_hash_of_user_realm_password() -> None:
    text = b"Mufasa:http-auth@example.org:Circle of Life"
    assert ha1("MD5", "Mufasa", "http-auth@example.org", "Circle of Life") == (
        hashlib.md5(text).hexdigest()  # noqa: S324 - RFC 7616 MD5 digest
    )
    assert ha1("SHA-256", "Mufasa", "http-auth@example.org", "Circle of Life") == (
        hashlib.sha256(text).hexdigest()
    )


# -- challenges ---------------------------------------------------------------------


def test_digest_challenge_lists_sha256_before_md5() -> None:
    auth = _auth(("MD5", "SHA-256"))
    assert auth.algorithms == ("SHA-256", "MD5")
    challenges = [parse_challenge(c) for c in auth.challenge(T0, SOURCE)]
    assert [c["algorithm"] for c in challenges] == ["SHA-256", "MD5"]
    assert challenges[0]["nonce"] == challenges[1]["nonce"]
    assert challenges[0] == {
        "realm": REALM,
        "nonce": challenges[0]["nonce"],
        "opaque": challenges[0]["opaque"],
        "algorithm": "SHA-256",
        "qop": "auth",
    }


def test_digest_challenge_offers_only_enabled_algorithms() -> None:
    challenges = _auth(("SHA-256",)).challenge(T0, SOURCE)
    assert len(challenges) == 1
    assert challenges[0].startswith(f'Digest realm="{REALM}", nonce="')
    assert challenges[0].endswith(', algorithm=SHA-256, qop="auth"')


def test_digest_challenge_stale_flag() -> None:
    (challenge,) = _auth().challenge(T0, SOURCE, stale=True)
    assert parse_challenge(challenge)["stale"] == "true"


def test_digest_challenge_nonces_differ() -> None:
    auth = _auth()
    assert _nonce(auth) != _nonce(auth)


def test_digest_unsupported_algorithm_refused_at_construction() -> None:
    with pytest.raises(ValueError, match=r"^unsupported digest algorithms: \['SHA-1'\]$"):
        _auth(("SHA-256", "SHA-1"))
    with pytest.raises(ValueError, match=r"^unsupported digest algorithms: none given$"):
        _auth(())


def test_digest_parse_challenge_other_scheme_is_400() -> None:
    with pytest.raises(SipParseError) as info:
        parse_challenge('Basic realm="x"')
    assert (info.value.status, info.value.reason) == (400, "unsupported challenge scheme")


# -- verification -------------------------------------------------------------------


def test_digest_valid_credentials_ok() -> None:
    auth = _auth()
    result = _verify(auth, _creds(_nonce(auth)))
    assert result == AuthResult(verdict=DigestVerdict.OK, username="alice")


def test_digest_md5_ok_when_enabled() -> None:
    auth = _auth(("SHA-256", "MD5"))
    result = _verify(auth, _creds(_nonce(auth), algorithm="MD5"))
    assert result == AuthResult(verdict=DigestVerdict.OK, username="alice")


def test_digest_response_compared_case_insensitively() -> None:
    auth = _auth()
    creds = _creds(_nonce(auth))
    upper = replace(creds, response=creds.response.upper())
    assert _verify(auth, upper).verdict is DigestVerdict.OK


def test_digest_nonce_at_lifetime_ok_after_lifetime_stale() -> None:
    auth = _auth()
    nonce = _nonce(auth, now=T0)
    assert _verify(auth, _creds(nonce), now=T0 + NONCE_LIFETIME).verdict is DigestVerdict.OK
    assert _verify(auth, _creds(nonce, nc=2), now=T0 + NONCE_LIFETIME + 1) == AuthResult(
        verdict=DigestVerdict.STALE, detail="nonce expired"
    )


def test_digest_custom_nonce_lifetime() -> None:
    auth = _auth(nonce_lifetime=10)
    nonce = _nonce(auth, now=T0)
    assert _verify(auth, _creds(nonce), now=T0 + 11).detail == "nonce expired"


def test_digest_nonce_from_other_source_is_stale() -> None:
    auth = _auth()
    nonce = _nonce(auth, source="tls:192.0.2.10:40000")
    assert _verify(auth, _creds(nonce), source="tls:198.51.100.1:40000") == AuthResult(
        verdict=DigestVerdict.STALE, detail="nonce not ours or wrong source"
    )


@pytest.mark.parametrize("nonce", ["", "garbage", "é", "AAAA" * 12, "!!!!"])
def test_digest_foreign_or_forged_nonce_is_stale(nonce: str) -> None:
    assert _verify(_auth(), _creds(nonce)) == AuthResult(
        verdict=DigestVerdict.STALE, detail="nonce not ours or wrong source"
    )


def test_digest_nonce_from_other_secret_is_stale() -> None:
    other = DigestAuthenticator(
        realm=REALM, algorithms=("SHA-256",), lookup=_lookup, secret=b"t" * 32
    )
    assert _verify(_auth(), _creds(_nonce(other))).verdict is DigestVerdict.STALE


def test_digest_wrong_password_and_unknown_user_fail_alike() -> None:
    auth = _auth()
    wrong = _verify(auth, _creds(_nonce(auth), password="guess"))
    unknown = _verify(auth, _creds(_nonce(auth), user="mallory", password="guess"))
    assert wrong == AuthResult(verdict=DigestVerdict.FAILED, detail="bad credentials")
    # No user enumeration: an unknown user gets exactly the same answer.
    assert unknown == wrong


def test_digest_wrong_method_fails() -> None:
    auth = _auth()
    creds = _creds(_nonce(auth), method="INVITE")
    assert _verify(auth, creds).verdict is DigestVerdict.FAILED


def test_digest_replayed_nonce_count_fails() -> None:
    auth = _auth()
    creds = _creds(_nonce(auth))
    assert _verify(auth, creds).verdict is DigestVerdict.OK
    assert _verify(auth, creds) == AuthResult(
        verdict=DigestVerdict.FAILED, detail="nonce count replayed"
    )
    assert auth.statistics().replays == 1


def test_digest_increasing_nonce_count_ok() -> None:
    auth = _auth()
    nonce = _nonce(auth)
    for nc in (1, 2, 5, 6):
        assert _verify(auth, _creds(nonce, nc=nc), now=T0 + nc).verdict is DigestVerdict.OK
    assert _verify(auth, _creds(nonce, nc=4)).detail == "nonce count replayed"


def test_digest_fresh_nonce_first_count_above_one_ok() -> None:
    # Jami (PJSIP) answers a new challenge with nc=00000002 (issue 16); RFC 7616 §3.4
    # only asks that the count grows.
    auth = _auth()
    assert _verify(auth, _creds(_nonce(auth), nc=2)) == AuthResult(
        verdict=DigestVerdict.OK, username="alice"
    )


def test_digest_fresh_nonce_count_that_does_not_grow_is_replay() -> None:
    auth = _auth()
    nonce = _nonce(auth)
    assert _verify(auth, _creds(nonce, nc=7)).verdict is DigestVerdict.OK
    for nc in (7, 6, 1):
        assert _verify(auth, _creds(nonce, nc=nc)) == AuthResult(
            verdict=DigestVerdict.FAILED, detail="nonce count replayed"
        )
    assert _verify(auth, _creds(nonce, nc=8)).verdict is DigestVerdict.OK
    assert auth.statistics().replays == 3


def test_digest_nonce_count_zero_is_malformed() -> None:
    auth = _auth()
    creds = replace(_creds(_nonce(auth)), nc="00000000")
    assert _verify(auth, creds) == AuthResult(
        verdict=DigestVerdict.MALFORMED, detail="malformed nc"
    )


def test_digest_evicted_nonce_count_is_stale() -> None:
    auth = _auth(max_tracked_nonces=1)
    first, second = _nonce(auth), _nonce(auth)
    assert _verify(auth, _creds(first)).verdict is DigestVerdict.OK
    assert _verify(auth, _creds(second)).verdict is DigestVerdict.OK
    assert auth.statistics().tracked_nonces == 1
    assert _verify(auth, _creds(first, nc=2)).detail == "nonce count unknown"
    # The replay of the evicted nonce's first answer is refused too.
    assert _verify(auth, _creds(first)).detail == "nonce count unknown"


def test_digest_nonce_issued_after_an_eviction_may_start_above_one() -> None:
    auth = _auth(max_tracked_nonces=1)
    first, second = _nonce(auth), _nonce(auth)
    _verify(auth, _creds(first))
    _verify(auth, _creds(second))  # evicts first, issued at T0
    later = _nonce(auth, now=T0 + 1)
    assert _verify(auth, _creds(later, nc=2), now=T0 + 1).verdict is DigestVerdict.OK
    assert _verify(auth, _creds(later, nc=2), now=T0 + 1).detail == "nonce count replayed"


def test_digest_md5_refused_when_only_sha256_enabled() -> None:
    auth = _auth(("SHA-256",))
    assert _verify(auth, _creds(_nonce(auth), algorithm="MD5")) == AuthResult(
        verdict=DigestVerdict.MALFORMED, detail="algorithm not offered"
    )


def test_digest_missing_algorithm_means_md5() -> None:
    auth = _auth(("SHA-256",))
    value = client_response(
        username="alice", password="x", realm=REALM, nonce=_nonce(auth), method="REGISTER", uri=URI
    ).replace(", algorithm=SHA-256", "")
    creds = parse_authorization(value)
    assert creds.algorithm == "MD5"
    assert _verify(auth, creds).detail == "algorithm not offered"


def test_digest_algorithm_spelling_tolerated() -> None:
    auth = _auth()
    creds = _creds(_nonce(auth))
    sha256 = replace(creds, algorithm='"sha256"')
    assert _verify(auth, sha256).verdict is DigestVerdict.OK


def test_digest_missing_qop_is_malformed() -> None:
    auth = _auth()
    value = client_response(
        username="alice",
        password=PASSWORDS["alice"],
        realm=REALM,
        nonce=_nonce(auth),
        method="REGISTER",
        uri=URI,
    ).replace(" qop=auth,", "")
    creds = parse_authorization(value)
    assert creds.qop is None
    assert _verify(auth, creds) == AuthResult(
        verdict=DigestVerdict.MALFORMED, detail="qop=auth required"
    )


def test_digest_wrong_realm_is_malformed() -> None:
    auth = _auth()
    creds = replace(_creds(_nonce(auth)), realm="other.example")
    assert _verify(auth, creds) == AuthResult(verdict=DigestVerdict.MALFORMED, detail="wrong realm")


@pytest.mark.parametrize("nc", ["1", "000000001", "0x000001", "+0000001", "0000_001", "0000000g"])
def test_digest_malformed_nonce_count_is_malformed(nc: str) -> None:
    auth = _auth()
    creds = replace(_creds(_nonce(auth)), nc=nc)
    assert _verify(auth, creds) == AuthResult(
        verdict=DigestVerdict.MALFORMED, detail="malformed nc"
    )


def test_digest_statistics() -> None:
    auth = _auth()
    nonce = _nonce(auth)
    _verify(auth, _creds(nonce))
    _verify(auth, _creds(nonce))
    _verify(auth, _creds(nonce, password="bad", nc=2))
    _verify(auth, _creds(nonce, nc=3), source="tls:198.51.100.1:1")
    assert auth.statistics() == DigestStatistics(
        challenges=1, accepted=1, failed=2, stale=1, replays=1, tracked_nonces=1
    )


def test_digest_tracked_counts_expire_with_their_nonce() -> None:
    auth = _auth()
    _verify(auth, _creds(_nonce(auth, now=T0)), now=T0)
    later = _nonce(auth, now=T0 + NONCE_LIFETIME + 1)
    _verify(auth, _creds(later), now=T0 + NONCE_LIFETIME + 1)
    assert auth.statistics().tracked_nonces == 1


# -- parse_authorization ------------------------------------------------------------


def test_digest_parse_authorization_quoted_and_token_values() -> None:
    creds = parse_authorization(
        'Digest username="a\\"b", realm="r", nonce="n,1", uri="sip:x", '
        f"response={'ab' * 32}, algorithm=SHA-256, qop=auth, nc=00000001, cnonce=c"
    )
    assert (creds.username, creds.nonce, creds.response) == ('a"b', "n,1", "ab" * 32)
    assert (creds.qop, creds.nc, creds.cnonce, creds.opaque) == ("auth", "00000001", "c", None)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("Basic YWxpY2U6c2VjcmV0", "unsupported authorization scheme"),
        ("NoOneKnowsThisScheme opaque-data=here", "unsupported authorization scheme"),
        ("Digest", "Authorization lacks username"),
        ('Digest username="a", realm="r", nonce="n", response="x"', "Authorization lacks uri"),
        ('Digest username="a", username="b"', "malformed Authorization parameter"),
        # A request-digest is 32 or 64 hex digits (RFC 3261 §25.1, RFC 8760 §2.6); a
        # non-ASCII one made hmac.compare_digest raise TypeError (issue 13, finding 9).
        (
            'Digest username="a", realm="r", nonce="n", uri="u", response="x"',
            "malformed digest response",
        ),
        (
            'Digest username="a", realm="r", nonce="n", uri="u", response="' + "é" * 64 + '"',
            "malformed digest response",
        ),
        (
            'Digest username="a", realm="r", nonce="n", uri="u", response="' + "a" * 48 + '"',
            "malformed digest response",
        ),
        ('Digest username="a", realm', "malformed Authorization parameter"),
        ('Digest ="a"', "malformed Authorization parameter"),
        ('Digest username="a', "unbalanced quotes in Authorization"),
    ],
)
def test_digest_parse_authorization_errors_are_400(value: str, reason: str) -> None:
    with pytest.raises(SipParseError) as info:
        parse_authorization(value)
    assert (info.value.status, info.value.reason) == (400, reason)


def test_digest_nonce_counts_are_forgotten_with_their_nonce_lifetime() -> None:
    # The tracked entry holds only the count; the issue time comes from the nonce.
    auth = _auth(nonce_lifetime=10)
    old, young = _nonce(auth, now=T0), _nonce(auth, now=T0 + 5)
    assert _verify(auth, _creds(old), now=T0 + 6).verdict is DigestVerdict.OK
    assert _verify(auth, _creds(young), now=T0 + 7).verdict is DigestVerdict.OK
    assert auth.statistics().tracked_nonces == 2
    assert _verify(auth, _creds(young, nc=2), now=T0 + 11).verdict is DigestVerdict.OK
    assert auth.statistics().tracked_nonces == 1  # the old one passed its 10 s
    assert _verify(auth, _creds(young, nc=2), now=T0 + 12).detail == "nonce count replayed"

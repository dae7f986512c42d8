"""TURN credentials: the long-term key and coturn's REST scheme."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from voipsec.nat.credentials import (
    long_term_key,
    parse_rest_username,
    rest_credentials,
    rest_password,
)
from voipsec.sip.digest import ha1


def test_credentials_long_term_key_is_the_md5_digest_ha1() -> None:
    key = long_term_key("alice", "example.test", "pw")
    assert key == hashlib.md5(b"alice:example.test:pw", usedforsecurity=False).digest()
    assert key.hex() == ha1("MD5", "alice", "example.test", "pw")


def test_credentials_rest_pair_matches_coturn_use_auth_secret() -> None:
    username, password = rest_credentials(b"s3cret", "alice", 86400, 1_700_000_000.9)
    assert username == "1700086400:alice"
    expected = hmac.new(b"s3cret", b"1700086400:alice", "sha1").digest()
    assert password == base64.b64encode(expected).decode() == rest_password(b"s3cret", username)


@pytest.mark.parametrize(("ttl", "user"), [(0, "alice"), (-1, "alice"), (60, "")])
def test_credentials_rest_refuses_bad_arguments(ttl: int, user: str) -> None:
    with pytest.raises(ValueError):
        rest_credentials(b"s", user, ttl, 0.0)


@pytest.mark.parametrize(
    ("username", "parsed"),
    [
        ("1700086400:alice", (1700086400, "alice")),
        ("1:a:b", (1, "a:b")),
        ("alice", None),
        (":alice", None),
        ("1700086400:", None),
        ("17x:alice", None),
        ("١٢:alice", None),  # non-ASCII digits
        ("1" * 13 + ":alice", None),
    ],
)
def test_credentials_parse_rest_username(username: str, parsed: tuple[int, str] | None) -> None:
    assert parse_rest_username(username) == parsed

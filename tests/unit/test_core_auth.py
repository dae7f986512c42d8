"""Who sent a request (voipsec.core.auth): certificate policy and digest for every
method, 401 as a registrar and 407 as a proxy, driven by a fake clock."""

from __future__ import annotations

import pytest

from voipsec.core.auth import Authenticated, Refused, RequestAuthenticator, Role
from voipsec.pki.identity import PeerIdentity
from voipsec.sip.digest import DigestAuthenticator, answer_challenge, ha1
from voipsec.sip.errors import SipParseError
from voipsec.sip.message import Request, Response, parse_message, response_to
from voipsec.sip.uri import SipUri

DOMAIN = "example.test"
SOURCE = "192.0.2.10"
NOW = 1_000_000.0
USERS = {"alice": "alice-secret-1", "bob": "bob-secret-22"}


def _lookup(user: str, algorithm: str) -> str | None:
    password = USERS.get(user)
    return ha1(algorithm, user, DOMAIN, password) if password is not None else None


def _authenticator(policy: str = "digest") -> RequestAuthenticator:
    digest = DigestAuthenticator(realm=DOMAIN, algorithms=["SHA-256"], lookup=_lookup)

    def aor_for(uri: SipUri) -> str | None:
        return f"{uri.user}@{DOMAIN}" if uri.user and uri.host == DOMAIN else None

    return RequestAuthenticator(
        digest=digest,
        policy=policy,  # type: ignore[arg-type]
        domain=DOMAIN,
        aor_for=aor_for,
    )


def _request(method: str, user: str = "alice", extra: str = "") -> Request:
    uri = f"sip:{DOMAIN}" if method == "REGISTER" else f"sip:bob@{DOMAIN}"
    message = parse_message(
        (
            f"{method} {uri} SIP/2.0\r\n"
            f"Via: SIP/2.0/TLS {SOURCE}:5061;branch=z9hG4bKauth1\r\n"
            f"From: <sip:{user}@{DOMAIN}>;tag=f\r\nTo: <sip:{user}@{DOMAIN}>\r\n"
            f"Call-ID: c1\r\nCSeq: 1 {method}\r\n{extra}Content-Length: 0\r\n\r\n"
        ).encode()
    )
    assert isinstance(message, Request)
    return message


def _identity(aor: str | None) -> PeerIdentity:
    return PeerIdentity(serial=0x1F, aor=aor, subject="CN=phone")


def _answered(
    auth: RequestAuthenticator,
    role: Role,
    user: str,
    password: str,
    identity: PeerIdentity | None = None,
) -> Request:
    """The request again, with credentials answering the challenge ``auth`` gave."""
    method = "REGISTER" if role == "registrar" else "INVITE"
    refused = auth.authenticate(
        _request(method, user), role=role, identity=identity, source=SOURCE, now=NOW
    )
    assert isinstance(refused, Refused) and refused.challenge
    challenge = response_to(
        _request(method, user), refused.status, refused.reason, extra=refused.headers
    )
    assert isinstance(challenge, Response)
    uri = f"sip:{DOMAIN}" if method == "REGISTER" else f"sip:bob@{DOMAIN}"
    header = answer_challenge(challenge, username=user, password=password, method=method, uri=uri)
    assert header is not None
    return _request(method, user, f"{header[0]}: {header[1]}\r\n")


@pytest.mark.parametrize(
    ("role", "status", "reason", "header"),
    [
        ("registrar", 401, "Unauthorized", "WWW-Authenticate"),
        ("proxy", 407, "Proxy Authentication Required", "Proxy-Authenticate"),
    ],
)
def test_core_auth_challenge_by_role(role: Role, status: int, reason: str, header: str) -> None:
    method = "REGISTER" if role == "registrar" else "INVITE"
    decision = _authenticator().authenticate(
        _request(method), role=role, identity=None, source=SOURCE, now=NOW
    )
    assert isinstance(decision, Refused)
    assert (decision.status, decision.reason, decision.challenge) == (status, reason, True)
    assert [name for name, _ in decision.headers] == [header]
    assert "algorithm=SHA-256" in decision.headers[0][1]


@pytest.mark.parametrize("role", ["registrar", "proxy"])
def test_core_auth_right_password_authenticates(role: Role) -> None:
    auth = _authenticator()
    decision = auth.authenticate(
        _answered(auth, role, "alice", USERS["alice"]),
        role=role,
        identity=None,
        source=SOURCE,
        now=NOW + 1,
    )
    assert decision == Authenticated(user="alice", by="digest", algorithm="SHA-256")


@pytest.mark.parametrize("role", ["registrar", "proxy"])
def test_core_auth_wrong_password_is_a_failed_credential_check(role: Role) -> None:
    auth = _authenticator()
    decision = auth.authenticate(
        _answered(auth, role, "alice", "not-the-password"),
        role=role,
        identity=None,
        source=SOURCE,
        now=NOW + 1,
    )
    assert decision == Refused(
        status=403,
        reason="Forbidden",
        credentials_failed=True,
        claimed_user="alice",
        detail="bad credentials",
    )


@pytest.mark.parametrize("role", ["registrar", "proxy"])
def test_core_auth_unparsable_credentials_raise_the_parse_error(role: Role) -> None:
    # The shell answers them 400 statelessly: no transaction for unauthenticated garbage.
    name = "Authorization" if role == "registrar" else "Proxy-Authorization"
    method = "REGISTER" if role == "registrar" else "INVITE"
    with pytest.raises(SipParseError) as info:
        _authenticator().authenticate(
            _request(method, extra=f"{name}: Basic YWxpY2U6c2VjcmV0\r\n"),
            role=role,
            identity=None,
            source=SOURCE,
            now=NOW,
        )
    assert (info.value.status, info.value.reason) == (400, "unsupported authorization scheme")


def test_core_auth_cert_and_digest_without_certificate_is_403() -> None:
    decision = _authenticator("cert_and_digest").authenticate(
        _request("REGISTER"), role="registrar", identity=None, source=SOURCE, now=NOW
    )
    assert decision == Refused(status=403, reason="Certificate Required")


def test_core_auth_cert_or_digest_certificate_alone_is_enough() -> None:
    auth = _authenticator("cert_or_digest")
    for role, method in (("registrar", "REGISTER"), ("proxy", "INVITE")):
        decision = auth.authenticate(
            _request(method),
            role=role,  # type: ignore[arg-type]
            identity=_identity(f"alice@{DOMAIN}"),
            source=SOURCE,
            now=NOW,
        )
        assert decision == Authenticated(user="alice", by="certificate")


def test_core_auth_certificate_for_another_case_of_the_user_is_refused() -> None:
    # RFC 3261 §19.1.4: user parts compare exactly (issue 13, finding 11).
    decision = _authenticator("cert_or_digest").authenticate(
        _request("REGISTER", user="ALICE"),
        role="registrar",
        identity=_identity(f"alice@{DOMAIN}"),
        source=SOURCE,
        now=NOW,
    )
    assert isinstance(decision, Refused)
    assert (decision.status, decision.reason) == (403, "Certificate Does Not Match AOR")


def test_core_auth_proxy_certificate_of_another_domain_is_refused() -> None:
    decision = _authenticator("cert_or_digest").authenticate(
        _request("INVITE"),
        role="proxy",
        identity=_identity("alice@elsewhere.example"),
        source=SOURCE,
        now=NOW,
    )
    assert decision == Refused(status=403, reason="Certificate Has No AOR Here")


def test_core_auth_digest_must_name_the_certificates_user() -> None:
    auth = _authenticator("cert_and_digest")
    alice = _identity(f"alice@{DOMAIN}")
    request = _answered(auth, "proxy", "bob", USERS["bob"], alice)
    decision = auth.authenticate(request, role="proxy", identity=alice, source=SOURCE, now=NOW + 1)
    assert decision == Refused(status=403, reason="Certificate Does Not Match User")

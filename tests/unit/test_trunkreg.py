"""Registering to a trunk: challenge answered once, refresh halfway, retry on failure."""

from __future__ import annotations

from voipsec.core.trunkreg import (
    MIN_REFRESH,
    REQUESTED_EXPIRES,
    RETRY_AFTER_FAILURE,
    TrunkRegistration,
)
from voipsec.sip.digest import DigestAuthenticator, DigestVerdict, ha1, parse_authorization
from voipsec.sip.message import Request, Response, parse_message
from voipsec.sip.uac import LocalAddress

LOCAL = LocalAddress(transport="tls", host="127.0.0.1", port=5061)
REALM = "trunk.test"


def _registration() -> TrunkRegistration:
    return TrunkRegistration(
        domain="trunk.test", username="acct", password="trunk-secret", local=LOCAL
    )


def _answer(request: Request, status: int, reason: str, *extra: str) -> Response:
    lines = [
        f"SIP/2.0 {status} {reason}",
        f"Via: {request.headers.values('via')[0]}",
        f"From: {request.headers.get('from')}",
        f"To: {request.headers.get('to')};tag=trunktag",
        f"Call-ID: {request.call_id}",
        f"CSeq: {request.headers.get('cseq')}",
        *extra,
        "Content-Length: 0",
        "",
        "",
    ]
    message = parse_message("\r\n".join(lines).encode())
    assert isinstance(message, Response)
    return message


def _authenticator() -> DigestAuthenticator:
    def lookup(user: str, algorithm: str) -> str | None:
        return ha1(algorithm, user, REALM, "trunk-secret") if user == "acct" else None

    return DigestAuthenticator(realm=REALM, algorithms=["SHA-256"], lookup=lookup)


def test_first_register_names_the_account_and_asks_for_the_expiry() -> None:
    step = _registration().start(100.0)
    request = step.request
    assert request is not None
    assert request.raw_uri == "sip:trunk.test"
    assert str(request.from_.uri) == "sip:acct@trunk.test"
    assert str(request.to.uri) == "sip:acct@trunk.test"
    assert request.headers.get("expires") == str(REQUESTED_EXPIRES)
    assert request.headers.get("contact") == "<sip:acct@127.0.0.1:5061;transport=tls>"
    assert request.top_via.branch is not None and request.top_via.branch.startswith("z9hG4bK")
    assert step.at == 100.0 + RETRY_AFTER_FAILURE


def test_a_challenge_is_answered_with_credentials_the_trunk_verifies() -> None:
    reg = _registration()
    auth = _authenticator()
    first = reg.start(0.0).request
    assert first is not None
    challenge = auth.challenge(0.0, "127.0.0.1")[0]
    step = reg.on_response(
        _answer(first, 401, "Unauthorized", f"WWW-Authenticate: {challenge}"), 1.0
    )
    second = step.request
    assert second is not None
    assert second.call_id == first.call_id
    assert second.cseq.seq == first.cseq.seq + 1
    creds = parse_authorization(second.headers.get("authorization") or "")
    result = auth.verify(creds, method="REGISTER", now=1.0, source="127.0.0.1")
    assert result.verdict is DigestVerdict.OK
    assert result.username == "acct"


def test_a_second_challenge_in_a_row_is_not_answered_again() -> None:
    reg = _registration()
    auth = _authenticator()
    first = reg.start(0.0).request
    assert first is not None
    challenge = f"WWW-Authenticate: {auth.challenge(0.0, '127.0.0.1')[0]}"
    second = reg.on_response(_answer(first, 401, "Unauthorized", challenge), 1.0).request
    assert second is not None
    step = reg.on_response(_answer(second, 401, "Unauthorized", challenge), 2.0)
    assert step.request is None
    assert step.at == 2.0 + RETRY_AFTER_FAILURE
    assert reg.status(2.0).registered is False
    assert reg.status(2.0).last_status == 401


def test_success_is_refreshed_halfway_through_the_granted_expiry() -> None:
    reg = _registration()
    first = reg.start(0.0).request
    assert first is not None
    ok = _answer(first, 200, "OK", "Contact: <sip:acct@127.0.0.1:5061;transport=tls>;expires=300")
    step = reg.on_response(ok, 10.0)
    assert step.request is None
    assert step.at == 10.0 + 150.0
    assert reg.status(11.0).registered is True
    assert reg.status(11.0).expires_at == 310.0
    assert reg.status(311.0).registered is False


def test_a_tiny_expiry_is_not_refreshed_more_often_than_the_minimum() -> None:
    reg = _registration()
    first = reg.start(0.0).request
    assert first is not None
    step = reg.on_response(_answer(first, 200, "OK", "Expires: 10"), 0.0)
    assert step.at == MIN_REFRESH


def test_without_expiry_in_the_answer_the_requested_one_is_assumed() -> None:
    reg = _registration()
    first = reg.start(0.0).request
    assert first is not None
    reg.on_response(_answer(first, 200, "OK"), 0.0)
    assert reg.status(0.0).expires_at == float(REQUESTED_EXPIRES)


def test_a_timeout_or_a_refusal_is_retried_later() -> None:
    reg = _registration()
    assert reg.start(0.0).request is not None
    assert reg.on_failure(5.0).at == 5.0 + RETRY_AFTER_FAILURE
    first = reg.start(70.0).request
    assert first is not None
    step = reg.on_response(_answer(first, 403, "Forbidden"), 71.0)
    assert step.request is None
    assert step.at == 71.0 + RETRY_AFTER_FAILURE
    assert reg.status(71.0).attempts == 2


def test_the_password_is_not_in_the_request() -> None:
    reg = _registration()
    auth = _authenticator()
    first = reg.start(0.0).request
    assert first is not None
    challenge = f"WWW-Authenticate: {auth.challenge(0.0, '127.0.0.1')[0]}"
    second = reg.on_response(_answer(first, 401, "Unauthorized", challenge), 1.0).request
    assert second is not None
    assert b"trunk-secret" not in second.to_bytes()

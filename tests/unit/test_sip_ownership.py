"""sip/ownership.py: worker marks round-trip; forged or out-of-range marks stay local."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import pytest

from voipsec.sip import ownership
from voipsec.sip.dialog import new_branch, new_tag
from voipsec.sip.digest import DigestAuthenticator, client_response, nonce_worker
from voipsec.sip.message import Request, Response, parse_message
from voipsec.sip.ownership import MAX_MARK_DIGITS, Owner, Reason, mark, marked_worker, owner

ALIVE = frozenset({0, 1, 2})


@pytest.fixture(autouse=True)
def _worker_back_to_zero() -> Iterator[None]:
    yield
    ownership.set_worker(0)


def _alive(index: int) -> bool:
    return index in ALIVE


def _request(*, to_tag: str = "", auth: str = "") -> Request:
    to = "<sip:bob@example.com>" + (f";tag={to_tag}" if to_tag else "")
    extra = f"Authorization: {auth}\r\n" if auth else ""
    data = (
        "BYE sip:bob@example.com SIP/2.0\r\n"
        "Via: SIP/2.0/TLS 192.0.2.1:5061;branch=z9hG4bKphone1\r\n"
        f"To: {to}\r\nFrom: <sip:alice@example.com>;tag=a1\r\n"
        f"Call-ID: c1\r\nCSeq: 2 BYE\r\nMax-Forwards: 70\r\n{extra}Content-Length: 0\r\n\r\n"
    ).encode()
    message = parse_message(data)
    assert isinstance(message, Request)
    return message


def _response(branch: str) -> Response:
    data = (
        "SIP/2.0 200 OK\r\n"
        f"Via: SIP/2.0/TLS 127.0.0.1:5061;branch={branch}\r\n"
        "To: <sip:bob@example.com>;tag=b1\r\nFrom: <sip:alice@example.com>;tag=a1\r\n"
        "Call-ID: c1\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
    ).encode()
    message = parse_message(data)
    assert isinstance(message, Response)
    return message


def test_ownership_marks_round_trip() -> None:
    ownership.set_worker(2)
    assert mark("abc") == "abc.w2"
    assert marked_worker(new_tag()) == 2
    assert marked_worker(new_branch()) == 2
    assert ownership.this_worker() == 2


@pytest.mark.parametrize(
    "identifier",
    [None, "", "abc", "abc.w", "abc.w123", "abc.wx", "abc.w-1", "abc.w\u0661", "abc.w 1"],
)
def test_ownership_malformed_marks_name_nobody(identifier: str | None) -> None:
    assert marked_worker(identifier) is None


def test_ownership_set_worker_out_of_range() -> None:
    with pytest.raises(ValueError, match="out of range"):
        ownership.set_worker(10**MAX_MARK_DIGITS)


def test_ownership_response_follows_its_via_branch() -> None:
    assert owner(_response("z9hG4bKx.w1"), this=0, alive=_alive) == Owner(
        worker=1, reason=Reason.VIA
    )
    assert owner(_response("z9hG4bKx.w0"), this=0, alive=_alive) == Owner(
        worker=0, reason=Reason.LOCAL
    )


def test_ownership_in_dialog_request_follows_its_to_tag() -> None:
    assert owner(_request(to_tag="f00.w2"), this=1, alive=_alive) == Owner(
        worker=2, reason=Reason.TO_TAG
    )
    assert owner(_request(to_tag="phone-tag"), this=1, alive=_alive) == Owner(
        worker=1, reason=Reason.LOCAL
    )


@pytest.mark.parametrize("forged", ["x.w7", "x.w99", "x.w3"])
def test_ownership_forged_or_dead_marks_stay_local(forged: str) -> None:
    """A mark naming a worker out of range or not up is handled here and counted."""
    assert owner(_request(to_tag=forged), this=0, alive=_alive) == Owner(
        worker=0, reason=Reason.REFUSED
    )
    assert owner(_response(forged), this=1, alive=_alive) == Owner(worker=1, reason=Reason.REFUSED)


def _issuer(worker: int) -> DigestAuthenticator:
    return DigestAuthenticator(
        realm="example.com", algorithms=("MD5",), lookup=lambda u, a: None, worker=worker
    )


def test_ownership_request_follows_its_nonce() -> None:
    nonce = _issuer(2).make_nonce(1000.0, "192.0.2.1")
    assert nonce_worker(nonce) == 2
    auth = client_response(
        username="alice",
        realm="example.com",
        password="pw",
        method="REGISTER",
        uri="sip:example.com",
        nonce=nonce,
    )
    assert owner(_request(auth=auth), this=0, alive=_alive) == Owner(worker=2, reason=Reason.NONCE)


@pytest.mark.parametrize("auth", ["", "Basic abc", 'Digest username="a"', 'Digest nonce="zz"'])
def test_ownership_missing_or_bad_credentials_stay_local(auth: str) -> None:
    assert owner(_request(auth=auth), this=1, alive=_alive) == Owner(worker=1, reason=Reason.LOCAL)


def test_ownership_nonce_mark_is_under_the_mac() -> None:
    """A nonce whose worker byte was changed no longer verifies at any worker."""
    issuer = _issuer(1)
    nonce = issuer.make_nonce(1000.0, "192.0.2.1")

    raw = bytearray(base64.urlsafe_b64decode(nonce + "=" * (-len(nonce) % 4)))
    raw[8] = 0
    forged = base64.urlsafe_b64encode(bytes(raw)).decode().rstrip("=")
    assert nonce_worker(forged) == 0
    assert issuer._nonce_time(forged, "192.0.2.1") is None
    assert issuer._nonce_time(nonce, "192.0.2.1") == 1000.0


@pytest.mark.parametrize("nonce", ["", "!!!", "a" * 65, "YWJj"])
def test_ownership_foreign_nonces_name_nobody(nonce: str) -> None:
    assert nonce_worker(nonce) is None

"""Named sanity checks: each one fails its message and can be switched off."""

from __future__ import annotations

import pytest

from voipsec.edge.sanity import CHECKS, MAX_USER_LENGTH, Sanity, SanityFailure
from voipsec.sip import Request, parse_message


def _request(
    *,
    method: str = "REGISTER",
    uri: str = "sip:localhost",
    from_: str = "<sip:alice@localhost>;tag=1",
    to: str = "<sip:alice@localhost>",
    branch: str = "z9hG4bKabc",
    max_forwards: str | None = "70",
) -> Request:
    lines = [
        f"{method} {uri} SIP/2.0",
        f"Via: SIP/2.0/UDP 192.0.2.1:5060;branch={branch}",
        f"From: {from_}",
        f"To: {to}",
        "Call-ID: c1",
        f"CSeq: 1 {method}",
    ]
    if max_forwards is not None:
        lines.append(f"Max-Forwards: {max_forwards}")
    message = parse_message(("\r\n".join([*lines, "Content-Length: 0", "", ""])).encode())
    assert isinstance(message, Request)
    return message


ALL = Sanity(CHECKS)


def test_sanity_good_request_passes() -> None:
    assert ALL.check(_request()) is None


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"max_forwards": None}, ("max_forwards", 400, "Missing Max-Forwards")),
        ({"method": "INVITE", "max_forwards": "0"}, ("max_forwards", 483, "Too Many Hops")),
        ({"from_": "<sip:alice@localhost>"}, ("from_tag", 400, "Missing From Tag")),
        ({"branch": "1234"}, ("via_branch", 400, "Invalid Via Branch")),
        ({"uri": "tel:+15551234"}, ("uri_scheme", 416, "Unsupported URI Scheme")),
        (
            {"to": f"<sip:{'a' * (MAX_USER_LENGTH + 1)}@localhost>"},
            ("lengths", 400, "User Part Too Long"),
        ),
    ],
)
def test_sanity_each_check_fails_its_message(
    kwargs: dict[str, str | None], expected: tuple[str, int, str]
) -> None:
    failure = ALL.check(_request(**kwargs))  # type: ignore[arg-type]
    assert failure == SanityFailure(check=expected[0], status=expected[1], reason=expected[2])


def test_sanity_user_at_limit_passes() -> None:
    assert ALL.check(_request(to=f"<sip:{'a' * MAX_USER_LENGTH}@localhost>")) is None


def test_sanity_max_forwards_zero_allowed_for_options_and_register() -> None:
    assert ALL.check(_request(method="OPTIONS", max_forwards="0")) is None
    assert ALL.check(_request(method="REGISTER", max_forwards="0")) is None


def test_sanity_switched_off_check_lets_message_through() -> None:
    without_branch = Sanity([n for n in CHECKS if n != "via_branch"])
    assert without_branch.check(_request(branch="1234")) is None


def test_sanity_counts_failures_per_check() -> None:
    sanity = Sanity(CHECKS)
    sanity.check(_request(from_="<sip:a@localhost>"))
    sanity.check(_request(from_="<sip:a@localhost>"))
    assert sanity.failures["from_tag"] == 2
    assert sanity.failures["via_branch"] == 0


def test_sanity_unknown_check_name_refused() -> None:
    with pytest.raises(ValueError, match="unknown sanity checks: via"):
        Sanity(["via"])

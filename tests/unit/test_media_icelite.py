"""ICE-lite decisions on relay ports (voipsec.media.icelite; issue 16 item 5).

Checks are built with aioice's own STUN codec (an independent implementation, the one
the integration test's ICE agent uses), so both sides of every answer are checked
against code that is not ours.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

import pytest
from aioice import stun as aio
from hypothesis import given
from hypothesis import strategies as st

from voipsec.media import icelite
from voipsec.media.icelite import (
    MAX_PWD,
    MAX_RESPONSE_GROWTH,
    MAX_STUN_REQUEST,
    MAX_UFRAG,
    MIN_PWD,
    STUN_ANSWER_BURST,
    STUN_ANSWER_RATE,
    IceCredentials,
    IceLite,
    StunVerdict,
    answer_check,
    candidate_priority,
    looks_like_stun,
    new_credentials,
    remote_credentials,
    sdp_lines,
)

SOURCE = ("127.0.0.1", 40000)
THEIRS = IceCredentials(ufrag="Phn1", pwd="phonePassword0123456789x")


def _ice() -> IceLite:
    return IceLite(local=new_credentials(), remote=THEIRS)


def _check(
    ice: IceLite,
    *,
    username: str | None = None,
    key: bytes | None = None,
    cls: aio.Class = aio.Class.REQUEST,
    method: aio.Method = aio.Method.BINDING,
    integrity: bool = True,
    fingerprint: bool = True,
    extra: dict[str, object] | None = None,
) -> bytes:
    """An ICE connectivity check as a full agent sends it (RFC 8445 §7.2.2)."""
    attributes: dict[str, object] = {
        "USERNAME": f"{ice.local.ufrag}:{ice.remote.ufrag}" if username is None else username,
        "PRIORITY": 1853824767,
        "ICE-CONTROLLING": 0x1234,
        "USE-CANDIDATE": None,
        **(extra or {}),
    }
    message = aio.Message(message_method=method, message_class=cls, attributes=attributes)
    if integrity:
        message.add_message_integrity(ice.local.pwd.encode() if key is None else key)
    elif fingerprint:
        message.add_fingerprint()
    if not fingerprint:
        message.attributes.pop("FINGERPRINT", None)
    return bytes(message)


def _reason(request: bytes, ice: IceLite | None) -> str:
    verdict = answer_check(request, SOURCE, ice)
    assert verdict.response is None
    return verdict.reason


# -- demultiplexing (RFC 7983 §7) ------------------------------------------------------------


def test_icelite_demux_tells_stun_from_rtp_rtcp_and_junk() -> None:
    check = _check(_ice())
    rtp = bytes([0x80, 0]) + bytes(170)
    rtcp = bytes([0x81, 200]) + bytes(26)
    no_cookie = bytes([0x00, 0x01]) + bytes(30)
    assert looks_like_stun(check, len(check))
    assert looks_like_stun(bytearray(check) + bytearray(100), len(check))  # the relay's buffer
    assert not looks_like_stun(rtp, len(rtp))
    assert not looks_like_stun(rtcp, len(rtcp))
    assert not looks_like_stun(no_cookie, len(no_cookie))
    assert not looks_like_stun(check[:19], 19)  # shorter than a STUN header
    assert not looks_like_stun(bytes([4]) + check[1:], len(check))  # first byte 4: not STUN


# -- answers ----------------------------------------------------------------------------------


def test_icelite_answer_valid_check_gets_success_with_mapped_address_integrity_fingerprint() -> (
    None
):
    ice = _ice()
    request = _check(ice)
    verdict = answer_check(request, SOURCE, ice)
    assert verdict.reason == ""
    assert verdict.response is not None
    answer = aio.parse_message(verdict.response)  # checks its FINGERPRINT
    assert answer.message_class == aio.Class.RESPONSE
    assert answer.message_method == aio.Method.BINDING
    assert answer.transaction_id == aio.parse_message(request).transaction_id
    assert answer.attributes["XOR-MAPPED-ADDRESS"] == SOURCE
    assert list(answer.attributes) == ["XOR-MAPPED-ADDRESS", "MESSAGE-INTEGRITY", "FINGERPRINT"]
    assert answer.check_message_integrity(ice.local.pwd.encode())
    assert not answer.check_message_integrity(THEIRS.pwd.encode())
    assert len(verdict.response) <= len(request)


def test_icelite_answer_to_ipv6_source_is_at_most_growth_larger() -> None:
    ice = _ice()
    request = _check(ice)
    verdict = answer_check(request, ("::1", 40000), ice)
    assert verdict.response is not None
    assert aio.parse_message(verdict.response).attributes["XOR-MAPPED-ADDRESS"] == ("::1", 40000)
    assert len(verdict.response) <= len(request) + MAX_RESPONSE_GROWTH


@pytest.mark.parametrize(
    ("build", "reason"),
    [
        (
            lambda ice: _check(ice, key=b"not-the-password-at-all"),
            "MESSAGE-INTEGRITY does not verify",
        ),
        (lambda ice: _check(ice, key=THEIRS.pwd.encode()), "MESSAGE-INTEGRITY does not verify"),
        (lambda ice: _check(ice, username=f"x{ice.local.ufrag}:Phn1"), "wrong USERNAME"),
        (lambda ice: _check(ice, username=f"{ice.local.ufrag}:Othr"), "wrong USERNAME"),
        (lambda ice: _check(ice, username=ice.local.ufrag), "wrong USERNAME"),
        (lambda ice: _check(ice, integrity=False), "no MESSAGE-INTEGRITY"),
        (lambda ice: _check(ice, integrity=False, fingerprint=False), "no FINGERPRINT"),
        (lambda ice: _check(ice, fingerprint=False), "no FINGERPRINT"),
        (lambda ice: _check(ice, cls=aio.Class.INDICATION), "not a request"),
        (lambda ice: _check(ice, cls=aio.Class.RESPONSE), "not a request"),
        (lambda ice: _check(ice, method=aio.Method.ALLOCATE), "not a Binding request"),
        (
            lambda ice: _check(ice, extra={"REQUESTED-TRANSPORT": 17 << 24}),
            "unknown comprehension-required attribute",
        ),
    ],
    ids=[
        "wrong-password",
        "their-password",
        "wrong-our-ufrag",
        "wrong-their-ufrag",
        "no-colon",
        "no-integrity",
        "nothing",
        "no-fingerprint",
        "indication",
        "response",
        "allocate",
        "unknown-attribute",
    ],
)
def test_icelite_answer_drops_what_is_not_a_valid_check(
    build: Callable[[IceLite], bytes], reason: str
) -> None:
    ice = _ice()
    assert _reason(build(ice), ice) == reason


def test_icelite_answer_drops_a_bad_fingerprint_and_a_leg_without_ice() -> None:
    ice = _ice()
    request = bytearray(_check(ice))
    request[-1] ^= 0x01
    assert _reason(bytes(request), ice) == "FINGERPRINT mismatch"
    assert _reason(_check(ice), None) == "the leg does not do ICE"


def test_icelite_answer_larger_than_request_plus_growth_is_not_sent(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The guard cannot trip with our 12-character ufrag (the smallest valid check is
    as large as our largest answer), so shrink the allowance to show that it holds."""
    ice = IceLite(
        local=IceCredentials(ufrag="abcd", pwd="p" * MIN_PWD),
        remote=IceCredentials(ufrag="efgh", pwd="q" * MIN_PWD),
    )
    bare = aio.Message(
        message_method=aio.Method.BINDING,
        message_class=aio.Class.REQUEST,
        attributes={"USERNAME": "abcd:efgh"},
    )
    bare.add_message_integrity(ice.local.pwd.encode())
    request = bytes(bare)
    assert len(request) == 68
    monkeypatch.setattr(icelite, "MAX_RESPONSE_GROWTH", 0)
    assert answer_check(request, SOURCE, ice).response is not None  # IPv4: 64 bytes
    assert answer_check(request, ("::1", 40000), ice) == StunVerdict(
        reason="the answer would be larger than the request"
    )  # IPv6: 76 bytes


def test_icelite_answer_drops_a_request_over_the_size_limit() -> None:
    ice = _ice()
    padding = "p" * (MAX_STUN_REQUEST - 100)
    fits = _check(ice, extra={"SOFTWARE": padding[: MAX_STUN_REQUEST - len(_check(ice)) - 4]})
    assert len(fits) <= MAX_STUN_REQUEST
    assert answer_check(fits, SOURCE, ice).response is not None
    over = _check(ice, extra={"SOFTWARE": padding})
    assert len(over) > MAX_STUN_REQUEST
    assert _reason(over, ice) == f"larger than {MAX_STUN_REQUEST} bytes"


def test_icelite_answer_drops_a_source_it_cannot_encode() -> None:
    ice = _ice()
    verdict = answer_check(_check(ice), ("not-an-address", 40000), ice)
    assert verdict == StunVerdict(reason="source address cannot be encoded")


@given(st.binary(max_size=200))
def test_icelite_answer_never_raises_on_random_bytes(data: bytes) -> None:
    ice = IceLite(local=IceCredentials(ufrag="abcd1234abcd", pwd="p" * 32), remote=THEIRS)
    forged = data[:4] + struct.pack("!I", 0x2112A442) + data[8:] if len(data) >= 8 else data
    for candidate in (data, forged):
        verdict = answer_check(candidate, SOURCE, ice)
        assert verdict.response is None and verdict.reason


# -- the answer budget --------------------------------------------------------------------------


def test_icelite_rate_limit_allows_a_burst_then_refills_at_the_rate() -> None:
    ice = _ice()
    allowed = [ice.allow(100.0) for _ in range(STUN_ANSWER_BURST + 5)]
    assert allowed == [True] * STUN_ANSWER_BURST + [False] * 5
    later = 100.0 + 1.5 / STUN_ANSWER_RATE  # one and a half answers' worth
    assert [ice.allow(later), ice.allow(later)] == [True, False]
    assert [ice.allow(1000.0) for _ in range(STUN_ANSWER_BURST + 1)].count(True) == (
        STUN_ANSWER_BURST
    )  # a long pause refills no more than the burst


# -- SDP --------------------------------------------------------------------------------------


def test_icelite_credentials_are_random_ice_chars_of_enough_length() -> None:
    a, b = new_credentials(), new_credentials()
    assert a != b
    assert len(a.ufrag) == 12 and len(a.pwd) == 32
    assert a.pwd not in repr(a)
    assert remote_credentials((), (("ice-ufrag", a.ufrag), ("ice-pwd", a.pwd))) == a


def test_icelite_remote_credentials_media_level_wins_and_session_level_counts() -> None:
    session = (("ice-ufrag", "Sess"), ("ice-pwd", "s" * MIN_PWD))
    media = (("ice-ufrag", "Medi"), ("ice-pwd", "m" * MIN_PWD))
    assert remote_credentials(session, media) == IceCredentials(ufrag="Medi", pwd="m" * MIN_PWD)
    assert remote_credentials(session, ()) == IceCredentials(ufrag="Sess", pwd="s" * MIN_PWD)
    assert remote_credentials(session[:1], media[1:]) == IceCredentials(
        ufrag="Sess", pwd="m" * MIN_PWD
    )
    assert remote_credentials((), media[:1]) is None  # no password: no ICE


@pytest.mark.parametrize(
    ("ufrag", "pwd"),
    [
        ("abc", "p" * MIN_PWD),  # ufrag shorter than 4
        ("a" * (MAX_UFRAG + 1), "p" * MIN_PWD),
        ("abcd", "p" * (MIN_PWD - 1)),
        ("abcd", "p" * (MAX_PWD + 1)),
        ("ab:d", "p" * MIN_PWD),  # ':' is no ice-char (it would split USERNAME)
        ("abcd", None),
    ],
)
def test_icelite_remote_credentials_outside_the_grammar_mean_no_ice(
    ufrag: str, pwd: str | None
) -> None:
    assert remote_credentials((), (("ice-ufrag", ufrag), ("ice-pwd", pwd))) is None


def test_icelite_sdp_lines_name_one_host_candidate_per_component() -> None:
    creds = IceCredentials(ufrag="abcd1234abcd", pwd="q" * 32)
    assert candidate_priority(1) == 2130706431
    assert candidate_priority(2) == 2130706430
    assert sdp_lines(creds, "127.0.0.1", 20000, None) == (
        "ice-ufrag:abcd1234abcd",
        f"ice-pwd:{'q' * 32}",
        "candidate:1 1 UDP 2130706431 127.0.0.1 20000 typ host",
    )
    assert sdp_lines(creds, "::1", 20000, 20001)[2:] == (
        "candidate:1 1 UDP 2130706431 ::1 20000 typ host",
        "candidate:1 2 UDP 2130706430 ::1 20001 typ host",
    )

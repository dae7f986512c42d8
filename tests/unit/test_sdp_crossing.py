"""What of one phone's SDP reaches the other phone (issue 16, item 4): an allow-list of
attributes and bandwidth types, voipsec's own session name and timing, and an o= of
voipsec's own per leg whose version follows RFC 3264 §8. Also the config key
``media.sdp_allow_attributes`` that lets an admin add attribute names."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.peers.proc import free_udp_ports
from voipsec.config import ConfigError, load
from voipsec.config.checks import MAX_SDP_ALLOW_ATTRIBUTES, SDP_NEVER_CROSSING
from voipsec.media.relay import MediaRelay
from voipsec.media.sdp import (
    SDP_ATTRIBUTES_CROSSING,
    MediaAnswer,
    SentSdp,
    parse_sdp,
    rewrite,
    rewrite_for,
)

#: An offer with everything a phone may say about itself, in both the session and the
#: media part: the software (a=tool), its user (i= u= e= p=), its clock (r= z=), a
#: proprietary attribute, an RTP cname, a private bandwidth type.
LEAKY = (
    b"v=0\r\n"
    b"o=alice 123456 654321 IN IP4 192.0.2.10\r\n"
    b"s=Alice's conference\r\n"
    b"i=Quarterly numbers\r\n"
    b"u=http://alice.example/about\r\n"
    b"e=alice@example.com (Alice)\r\n"
    b"p=+1 555 0100\r\n"
    b"c=IN IP4 192.0.2.10\r\n"
    b"b=CT:1000\r\n"
    b"b=X-YZ:128\r\n"
    b"t=3034423619 3042462419\r\n"
    b"r=7d 1h 0 25h\r\n"
    b"z=2882844526 -1h 2898848070 0\r\n"
    b"a=tool:SecretPhone 9.9\r\n"
    b"a=x-secret-device:rack-17\r\n"
    b"a=recvonly\r\n"
    b"m=audio 4000 RTP/AVP 0 101\r\n"
    b"i=Alice's microphone\r\n"
    b"b=AS:64\r\n"
    b"b=TIAS:64000\r\n"
    b"b=RR:0\r\n"
    b"a=rtpmap:0 PCMU/8000\r\n"
    b"a=rtpmap:101 telephone-event/8000\r\n"
    b"a=fmtp:101 0-15\r\n"
    b"a=ptime:20\r\n"
    b"a=maxptime:40\r\n"
    b"a=rtcp-fb:* nack\r\n"
    b"a=mid:audio\r\n"
    b"a=ssrc:4242 cname:alice@192.0.2.10\r\n"
    b"a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level\r\n"
    b"a=label:alice-mic\r\n"
    b"a=setup:actpass\r\n"
    b"a=fingerprint:sha-256 AB:CD\r\n"
    b"a=sendonly\r\n"
)

PLAIN = MediaAnswer(port=30000, proto="RTP/AVP")


def _rewrite(allow: frozenset[str] = frozenset()) -> str:
    out = rewrite(
        parse_sdp(LEAKY),
        address="198.51.100.1",
        session_id=7,
        version=3,
        media=[PLAIN],
        allow=allow,
    )
    return out.decode()


def test_sdp_crossing_allow_list_byte_exact() -> None:
    assert _rewrite() == (
        "v=0\r\n"
        "o=- 7 3 IN IP4 198.51.100.1\r\n"
        "s=-\r\n"
        "c=IN IP4 198.51.100.1\r\n"
        "b=CT:1000\r\n"
        "t=0 0\r\n"
        "a=recvonly\r\n"
        "m=audio 30000 RTP/AVP 0 101\r\n"
        "b=AS:64\r\n"
        "b=TIAS:64000\r\n"
        "b=RR:0\r\n"
        "a=rtpmap:0 PCMU/8000\r\n"
        "a=rtpmap:101 telephone-event/8000\r\n"
        "a=fmtp:101 0-15\r\n"
        "a=ptime:20\r\n"
        "a=maxptime:40\r\n"
        "a=rtcp-fb:* nack\r\n"
        "a=mid:audio\r\n"
        "a=sendonly\r\n"
    )


def test_sdp_crossing_nothing_of_the_phone_survives() -> None:
    out = _rewrite()
    for leaked in (
        "alice",
        "Alice",
        "192.0.2.10",
        "123456",
        "654321",
        "SecretPhone",
        "rack-17",
        "Quarterly",
        "555",
        "3034423619",
        "2882844526",
        "X-YZ",
        "4242",
        "extmap",
        "fingerprint",
        "setup",
    ):
        assert leaked not in out, leaked
    for letter in "iuepkrz":
        assert f"\n{letter}=" not in out, letter


def test_sdp_crossing_admin_allows_more_attributes() -> None:
    out = _rewrite(frozenset({"extmap", "label"}))
    assert "a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level\r\n" in out
    assert "a=label:alice-mic\r\n" in out
    assert "a=ssrc" not in out


def test_sdp_crossing_never_crossing_names_stay_behind_even_when_allowed() -> None:
    # The config refuses these names; the writer does not trust that alone.
    out = _rewrite(frozenset({"fingerprint", "setup", "candidate", "ice-ufrag", "crypto"}))
    assert "fingerprint" not in out
    assert "setup" not in out


def test_sdp_crossing_lists_are_disjoint() -> None:
    assert not SDP_ATTRIBUTES_CROSSING & SDP_NEVER_CROSSING
    assert not any(name.startswith("ice-") for name in SDP_ATTRIBUTES_CROSSING)


# -- o= per leg (RFC 3264 §5, §8) ------------------------------------------------------


def _offer(direction: str) -> bytes:
    return (
        "v=0\r\no=bob 1 1 IN IP4 192.0.2.20\r\ns=-\r\nc=IN IP4 192.0.2.20\r\nt=0 0\r\n"
        f"m=audio 5000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na={direction}\r\n"
    ).encode()


def _write(sent: SentSdp, direction: str) -> SentSdp:
    return rewrite_for(sent, parse_sdp(_offer(direction)), address="198.51.100.1", media=[PLAIN])


def test_sdp_rewrite_for_version_grows_by_one_only_when_the_description_changes() -> None:
    first = _write(SentSdp(session_id=99, version=5), "sendrecv")
    assert (first.session_id, first.version) == (99, 5)
    assert first.body.startswith(b"v=0\r\no=- 99 5 IN IP4 198.51.100.1\r\n")
    same = _write(first, "sendrecv")  # a session refresh: unchanged, same version
    assert same == first
    hold = _write(same, "sendonly")
    assert (hold.session_id, hold.version) == (99, 6)
    assert hold.body.startswith(b"v=0\r\no=- 99 6 IN IP4 198.51.100.1\r\n")
    assert b"a=sendonly\r\n" in hold.body
    resume = _write(hold, "sendrecv")
    assert resume.version == 7
    assert resume.body == first.body.replace(b" 99 5 ", b" 99 7 ")


def _origin(body: bytes) -> tuple[str, int]:
    sdp = parse_sdp(body)
    assert sdp.origin.startswith("- ")
    return sdp.session_id, sdp.version


async def _relay_origins() -> list[tuple[str, int]]:
    low = free_udp_ports(2)
    relay = MediaRelay(
        address="127.0.0.1",
        ports=(low, low + 4),
        srtp="off",
        suites=["AES_CM_128_HMAC_SHA1_80"],
        timeout=30,
        dscp=0,
        sdp_allow_attributes=["x-keep"],
    )
    try:
        to_b = relay.offer("c1", "a", _offer("sendrecv").replace(b"t=0 0", b"t=0 0\r\na=x-keep:1"))
        assert b"a=x-keep:1\r\n" in to_b
        to_a = relay.answer("c1", "b", _offer("sendrecv"))
        hold_to_b = relay.offer("c1", "a", _offer("sendonly"))
        hold_to_a = relay.answer("c1", "b", _offer("recvonly"))
        refresh_to_b = relay.offer("c1", "a", _offer("sendonly"))
        return [_origin(x) for x in (to_b, to_a, hold_to_b, hold_to_a, refresh_to_b)]
    finally:
        relay.close()


def test_relay_each_leg_has_its_own_session_and_version() -> None:
    to_b, to_a, hold_to_b, hold_to_a, refresh_to_b = asyncio.run(_relay_origins())
    assert to_b[0] != to_a[0]  # nothing ties the two phones' sessions together
    # Each leg's version counts that leg's changes (RFC 3264 §8), not the call's.
    assert hold_to_b == (to_b[0], to_b[1] + 1)
    assert hold_to_a == (to_a[0], to_a[1] + 1)
    assert refresh_to_b == hold_to_b  # unchanged description, unchanged version


# -- media.sdp_allow_attributes -------------------------------------------------------


def _problems(tmp_path: Path, value: str) -> list[str]:
    path = tmp_path / "voipsec.toml"
    path.write_text(f"[media]\nsdp_allow_attributes = {value}\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load(path)
    return [p.removeprefix(f"{path}: ") for p in info.value.problems]


def test_config_sdp_allow_attributes_default_empty_and_read(tmp_path: Path) -> None:
    path = tmp_path / "voipsec.toml"
    path.write_text("", encoding="utf-8")
    assert load(path).media.sdp_allow_attributes == []
    path.write_text('[media]\nsdp_allow_attributes = ["extmap", "ssrc"]\n', encoding="utf-8")
    assert load(path).media.sdp_allow_attributes == ["extmap", "ssrc"]


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ('["a=tool"]', "'a=tool' is not an SDP attribute name (without a= or :)"),
        ('["rtpmap:0"]', "'rtpmap:0' is not an SDP attribute name (without a= or :)"),
        ('[""]', "'' is not an SDP attribute name (without a= or :)"),
        (
            '["candidate"]',
            "'candidate' never crosses: it names an endpoint's address or the relay's own",
        ),
        (
            '["ice-pwd"]',
            "'ice-pwd' never crosses: it names an endpoint's address or the relay's own",
        ),
        ('["crypto"]', "'crypto' never crosses: it names an endpoint's address or the relay's own"),
    ],
)
def test_config_sdp_allow_attributes_refused(tmp_path: Path, value: str, problem: str) -> None:
    assert _problems(tmp_path, value) == [f"media.sdp_allow_attributes: {problem}"]


def test_config_sdp_allow_attributes_limit(tmp_path: Path) -> None:
    names = [f"x-{i}" for i in range(MAX_SDP_ALLOW_ATTRIBUTES)]
    path = tmp_path / "voipsec.toml"
    path.write_text(f"[media]\nsdp_allow_attributes = {names!r}\n".replace("'", '"'))
    assert len(load(path).media.sdp_allow_attributes) == MAX_SDP_ALLOW_ATTRIBUTES
    over = [*names, "x-one-more"]
    assert _problems(tmp_path, repr(over).replace("'", '"')) == [
        f"media.sdp_allow_attributes: at most {MAX_SDP_ALLOW_ATTRIBUTES} attribute names"
    ]

"""SDP parsing and rewriting for the media relay (voipsec.media.sdp)."""

from __future__ import annotations

import contextlib
import random

import pytest

from voipsec.media.sdp import (
    MAX_LINE_LENGTH,
    MAX_MEDIA_SECTIONS,
    MAX_SDP_BYTES,
    MAX_SDP_LINES,
    Crypto,
    Media,
    MediaAnswer,
    SdpError,
    parse_crypto,
    parse_sdp,
    rewrite,
)

KEY_256 = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKis="
KEY_128 = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGw=="
KEY_80 = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwd"
KEY_32 = "ZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXp7fH1+f4CB"

#: Shaped like a baresip 3.x offer with mediaenc=srtp-mand, ICE and RFC 3605 a=rtcp,
#: audio and video, LF line endings as some endpoints send.
BARESIP_OFFER = (
    "v=0\n"
    "o=- 1683715413 1683715414 IN IP4 192.168.1.23\n"
    "s=-\n"
    "c=IN IP4 192.168.1.23\n"
    "t=0 0\n"
    "a=tool:baresip 3.10.1\n"
    "a=ice-lite\n"
    "m=audio 10372 RTP/SAVP 96 0 8 101\n"
    "b=AS:128\n"
    "a=rtpmap:96 opus/48000/2\n"
    "a=fmtp:96 stereo=1;sprop-stereo=1\n"
    "a=rtpmap:0 PCMU/8000\n"
    "a=rtpmap:8 PCMA/8000\n"
    "a=rtpmap:101 telephone-event/8000\n"
    "a=fmtp:101 0-15\n"
    "a=rtcp:10373 IN IP4 192.168.1.23\n"
    "a=rtcp-mux\n"
    "a=ptime:20\n"
    "a=sendrecv\n"
    "a=label:1\n"
    f"a=crypto:1 AEAD_AES_256_GCM inline:{KEY_256}\n"
    f"a=crypto:2 AEAD_AES_128_GCM inline:{KEY_128}\n"
    f"a=crypto:3 AES_CM_128_HMAC_SHA1_80 inline:{KEY_80}|2^20|1:4\n"
    f"a=crypto:4 AES_CM_128_HMAC_SHA1_32 inline:{KEY_32}\n"
    "a=ice-ufrag:7PDc\n"
    "a=ice-pwd:ZChk2F6vX6K0TdshYhYbEc\n"
    "a=candidate:1 1 UDP 2130706431 192.168.1.23 10372 typ host\n"
    "a=candidate:2 1 UDP 1694498815 203.0.113.7 10372 typ srflx raddr 192.168.1.23 rport 10372\n"
    "a=end-of-candidates\n"
    "m=video 10374 RTP/SAVP 97\n"
    "c=IN IP4 192.168.1.24\n"
    "a=rtpmap:97 H264/90000\n"
    "a=fmtp:97 packetization-mode=0;profile-level-id=42e01f\n"
    "a=recvonly\n"
    f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_80}\n"
).encode()


def _error(body: bytes) -> str:
    with pytest.raises(SdpError) as info:
        parse_sdp(body)
    return info.value.reason


def _minimal(extra: str = "", media: str = "m=audio 4000 RTP/AVP 0\r\n") -> bytes:
    return (
        "v=0\r\no=alice 1 2 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n"
        + extra
        + media
    ).encode()


def test_sdp_baresip_offer_parses() -> None:
    sdp = parse_sdp(BARESIP_OFFER)
    assert sdp.origin == "- 1683715413 1683715414 IN IP4 192.168.1.23"
    assert sdp.session_id == "1683715413"
    assert sdp.version == 1683715414
    assert sdp.session_name == "-"
    assert sdp.connection == "192.168.1.23"
    assert sdp.session_attributes == (("tool", "baresip 3.10.1"), ("ice-lite", None))
    audio, video = sdp.media
    assert (audio.kind, audio.port, audio.proto, audio.formats) == (
        "audio",
        10372,
        "RTP/SAVP",
        ("96", "0", "8", "101"),
    )
    assert audio.connection is None
    assert audio.secure is True
    assert audio.rtcp_mux is True
    assert audio.direction == "sendrecv"
    assert audio.crypto == (
        Crypto(tag=1, suite="AEAD_AES_256_GCM", key_params=f"inline:{KEY_256}"),
        Crypto(tag=2, suite="AEAD_AES_128_GCM", key_params=f"inline:{KEY_128}"),
        Crypto(tag=3, suite="AES_CM_128_HMAC_SHA1_80", key_params=f"inline:{KEY_80}|2^20|1:4"),
        Crypto(tag=4, suite="AES_CM_128_HMAC_SHA1_32", key_params=f"inline:{KEY_32}"),
    )
    assert ("rtcp", "10373 IN IP4 192.168.1.23") in audio.attributes
    assert ("end-of-candidates", None) in audio.attributes
    assert sdp.address(audio) == "192.168.1.23"
    assert video.connection == "192.168.1.24"
    assert sdp.address(video) == "192.168.1.24"
    assert video.direction == "recvonly"
    assert video.rtcp_mux is False
    assert [c.tag for c in video.crypto] == [1]


def test_sdp_crlf_and_lf_parse_the_same() -> None:
    assert parse_sdp(BARESIP_OFFER.replace(b"\n", b"\r\n")) == parse_sdp(BARESIP_OFFER)


def test_sdp_rewrite_baresip_offer() -> None:
    sdp = parse_sdp(BARESIP_OFFER)
    ours = Crypto(tag=1, suite="AES_CM_128_HMAC_SHA1_80", key_params=f"inline:{KEY_32}")
    out = rewrite(
        sdp,
        address="198.51.100.10",
        session_id=42,
        version=7,
        media=[MediaAnswer(port=30000, proto="RTP/SAVP", crypto=(ours,), rtcp_mux=True), None],
    )
    assert out.decode() == (
        "v=0\r\n"
        "o=- 42 7 IN IP4 198.51.100.10\r\n"
        "s=-\r\n"
        "c=IN IP4 198.51.100.10\r\n"
        "t=0 0\r\n"
        "m=audio 30000 RTP/SAVP 96 0 8 101\r\n"
        "b=AS:128\r\n"
        "a=rtpmap:96 opus/48000/2\r\n"
        "a=fmtp:96 stereo=1;sprop-stereo=1\r\n"
        "a=rtpmap:0 PCMU/8000\r\n"
        "a=rtpmap:8 PCMA/8000\r\n"
        "a=rtpmap:101 telephone-event/8000\r\n"
        "a=fmtp:101 0-15\r\n"
        "a=rtcp-mux\r\n"
        "a=ptime:20\r\n"
        "a=sendrecv\r\n"
        f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_32}\r\n"
        "m=video 0 RTP/SAVP 97\r\n"
        "c=IN IP4 198.51.100.10\r\n"
        "a=rtpmap:97 H264/90000\r\n"
        "a=fmtp:97 packetization-mode=0;profile-level-id=42e01f\r\n"
        "a=recvonly\r\n"
    )
    # Nothing of the endpoint's addresses, keys or software survives (issue 16).
    for leaked in (
        "192.168.1.2",
        "203.0.113.7",
        KEY_256,
        KEY_128,
        KEY_80,
        "ice-",
        "candidate",
        "baresip",
        "label",
    ):
        assert leaked not in out.decode()


def test_sdp_rewrite_round_trip_parses_back() -> None:
    sdp = parse_sdp(BARESIP_OFFER)
    answer = MediaAnswer(port=30000, proto="RTP/AVP", crypto=(), rtcp_mux=False)
    again = parse_sdp(
        rewrite(sdp, address="2001:db8::1", session_id=1, version=2, media=[answer, answer])
    )
    assert again.origin == "- 1 2 IN IP6 2001:db8::1"
    assert again.connection == "2001:db8::1"
    assert [m.port for m in again.media] == [30000, 30000]
    assert [m.proto for m in again.media] == ["RTP/AVP", "RTP/AVP"]
    assert [m.crypto for m in again.media] == [(), ()]
    assert [m.rtcp_mux for m in again.media] == [False, False]
    assert [again.address(m) for m in again.media] == ["2001:db8::1", "2001:db8::1"]
    assert again.media[0].attributes[:2] == (
        ("rtpmap", "96 opus/48000/2"),
        ("fmtp", "96 stereo=1;sprop-stereo=1"),
    )
    # A rewritten SDP rewritten again the same way is unchanged.
    first = rewrite(sdp, address="10.1.1.1", session_id=9, version=9, media=[answer, None])
    assert (
        rewrite(parse_sdp(first), address="10.1.1.1", session_id=9, version=9, media=[answer, None])
        == first
    )


def test_sdp_rewrite_small_example_byte_exact() -> None:
    body = (
        b"v=0\r\n"
        b"o=bob 2890844730 2890844731 IN IP4 host.example.com\r\n"
        b"s=call\r\n"
        b"t=0 0\r\n"
        b"k=clear:secret\r\n"
        b"m=audio 49172 RTP/AVP 0\r\n"
        b"c=IN IP4 192.0.2.5\r\n"
        b"a=rtpmap:0 PCMU/8000\r\n"
    )
    crypto = Crypto(tag=7, suite="AEAD_AES_128_GCM", key_params=f"inline:{KEY_128}")
    out = rewrite(
        parse_sdp(body),
        address="198.51.100.1",
        session_id=5,
        version=6,
        media=[MediaAnswer(port=40000, proto="RTP/SAVP", crypto=(crypto,), rtcp_mux=True)],
    )
    assert out == (
        b"v=0\r\n"
        b"o=- 5 6 IN IP4 198.51.100.1\r\n"
        b"s=-\r\n"
        b"c=IN IP4 198.51.100.1\r\n"
        b"t=0 0\r\n"
        b"m=audio 40000 RTP/SAVP 0\r\n"
        b"c=IN IP4 198.51.100.1\r\n"
        b"a=rtpmap:0 PCMU/8000\r\n"
        b"a=crypto:7 AEAD_AES_128_GCM inline:" + KEY_128.encode() + b"\r\n"
        b"a=rtcp-mux\r\n"
    )


def test_sdp_rewrite_removes_rtcp_mux_only_without_mux() -> None:
    sdp = parse_sdp(_minimal(media="m=audio 4000 RTP/AVP 0\r\na=rtcp-mux\r\na=rtcp-mux-only\r\n"))
    out = rewrite(
        sdp,
        address="10.9.9.9",
        session_id=1,
        version=1,
        media=[MediaAnswer(port=5000, proto="RTP/AVP")],
    )
    assert out.endswith(b"m=audio 5000 RTP/AVP 0\r\n")


def test_sdp_rewrite_refuses_programming_errors() -> None:
    sdp = parse_sdp(_minimal())
    with pytest.raises(ValueError, match="one MediaAnswer"):
        rewrite(sdp, address="10.0.0.1", session_id=1, version=1, media=[])
    with pytest.raises(ValueError, match="IP literal"):
        rewrite(sdp, address="relay.example", session_id=1, version=1, media=[None])


def test_sdp_crypto_repr_hides_the_key() -> None:
    crypto = Crypto(tag=1, suite="AES_CM_128_HMAC_SHA1_80", key_params=f"inline:{KEY_80}")
    assert KEY_80 not in repr(crypto)
    assert repr(crypto) == "Crypto(tag=1, suite='AES_CM_128_HMAC_SHA1_80', session_params='')"
    sdp = parse_sdp(BARESIP_OFFER)
    for key in (KEY_256, KEY_128, KEY_80, KEY_32):
        assert key not in repr(sdp)


def test_sdp_crypto_parse_with_session_params() -> None:
    crypto = parse_crypto(f"5 AES_CM_128_HMAC_SHA1_32 inline:{KEY_32} KDR=1 WSH=64")
    assert crypto == Crypto(
        tag=5,
        suite="AES_CM_128_HMAC_SHA1_32",
        key_params=f"inline:{KEY_32}",
        session_params="KDR=1 WSH=64",
    )
    assert str(crypto) == f"5 AES_CM_128_HMAC_SHA1_32 inline:{KEY_32} KDR=1 WSH=64"


def test_sdp_address_only_ip_literals() -> None:
    sdp = parse_sdp(_minimal(media="m=audio 4000 RTP/AVP 0\r\nc=IN IP4 pbx.example.com\r\n"))
    assert sdp.address(sdp.media[0]) is None
    sdp = parse_sdp(_minimal(media="m=audio 4000 RTP/AVP 0\r\nc=IN IP6 10.0.0.1\r\n"))
    assert sdp.address(sdp.media[0]) is None
    sdp = parse_sdp(_minimal(media="m=audio 4000 RTP/AVP 0\r\nc=IN IP6 2001:db8::5\r\n"))
    assert sdp.address(sdp.media[0]) == "2001:db8::5"
    sdp = parse_sdp(_minimal(media="m=audio 4000 RTP/AVP 0\r\nc=ATM NSAP 47.0005\r\n"))
    assert sdp.address(sdp.media[0]) is None


def test_sdp_media_defaults() -> None:
    sdp = parse_sdp(_minimal(media="m=audio 4000/2 RTP/AVP 0\r\n"))
    media = sdp.media[0]
    assert media == Media(kind="audio", port=4000, proto="RTP/AVP", formats=("0",), lines=())
    assert media.secure is False
    assert media.direction == "sendrecv"
    assert media.crypto == ()
    assert sdp.address(media) == "10.0.0.1"


def test_sdp_limit_body_size() -> None:
    filler = "a=x-pad:" + "p" * 100 + "\r\n"
    body = _minimal(extra=filler * (MAX_SDP_BYTES // len(filler) + 1))
    assert len(body) > MAX_SDP_BYTES
    assert _error(body) == "SDP body too large"


def test_sdp_limit_line_count() -> None:
    body = _minimal(extra="a=x\r\n" * MAX_SDP_LINES)
    assert len(body) <= MAX_SDP_BYTES
    assert _error(body) == "too many SDP lines"


def test_sdp_limit_line_length() -> None:
    assert _error(_minimal(extra="a=x-long:" + "y" * MAX_LINE_LENGTH + "\r\n")) == (
        "SDP line too long"
    )
    # exactly at the limit is fine
    parse_sdp(_minimal(extra="a=x-long:" + "y" * (MAX_LINE_LENGTH - 9) + "\r\n"))


def test_sdp_limit_media_sections() -> None:
    body = _minimal(media="m=audio 4000 RTP/AVP 0\r\n" * (MAX_MEDIA_SECTIONS + 1))
    assert _error(body) == "too many media sections"
    assert len(parse_sdp(_minimal(media="m=audio 4000 RTP/AVP 0\r\n" * 8)).media) == 8


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"", "SDP must start with v=0"),
        (b"v=1\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\n", "SDP must start with v=0"),
        (b"v=0\r\ns=-\r\n", "missing o= line"),
        (b"v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\nt=0 0\r\n", "missing s= line"),
        (b"v=0\r\no=- 1 1 IN IP4\r\ns=-\r\n", "malformed o= line"),
        (b"v=0\r\no=- x 1 IN IP4 1.2.3.4\r\ns=-\r\n", "malformed o= session id or version"),
        (_minimal(extra="o=- 1 1 IN IP4 1.2.3.4\r\n"), "duplicate o= line"),
        (_minimal(extra="hello\r\n"), "malformed SDP line"),
        (_minimal(extra="\r\n"), "malformed SDP line"),
        (_minimal(extra="x=1\r\n"), "unknown SDP line type"),
        (_minimal(extra="a=bad name\r\n"), "malformed attribute name"),
        (_minimal(extra="c=IN IP4\r\n"), "more than one session-level c= line"),
        (_minimal(media="m=audio 4000 RTP/AVP 0\r\nc=IN IP4\r\n"), "malformed c= line"),
        (_minimal(extra="a=x\x00\r\n"), "control character in SDP line"),
        (_minimal(extra="a=x\rb\r\n"), "control character in SDP line"),
        (_minimal(extra="a=\xff\r\n"), "malformed attribute name"),
        (_minimal(media="m=audio x RTP/AVP 0\r\n"), "malformed port in m= line"),
        (_minimal(media="m=audio -1 RTP/AVP 0\r\n"), "malformed port in m= line"),
        (_minimal(media="m=audio \u0664\u0660 RTP/AVP 0\r\n"), "malformed port in m= line"),
        (_minimal(media="m=audio 65536 RTP/AVP 0\r\n"), "port out of range in m= line"),
        (_minimal(media="m=audio 4000 RTP/AVP\r\n"), "malformed m= line"),
        (_minimal(media="m=audio  4000 RTP/AVP 0\r\n"), "malformed m= line"),
        (_minimal(media="m=audio 4000 RTP/AVP 0\r\nt=0 0\r\n"), "t= line in a media section"),
        (
            _minimal(media="m=audio 4000 RTP/AVP 0\r\nc=IN IP4 1.1.1.1\r\nc=IN IP4 1.1.1.2\r\n"),
            "more than one c= line in a media section",
        ),
        (_minimal(media="m=audio 4000 RTP/SAVP 0\r\na=crypto:1 X\r\n"), "malformed a=crypto"),
        (
            _minimal(media="m=audio 4000 RTP/SAVP 0\r\na=crypto:1234567890 A inline:x\r\n"),
            "malformed a=crypto",
        ),
        (
            _minimal(
                media="m=audio 4000 RTP/SAVP 0\r\na=crypto:1 A inline:x\r\na=crypto:1 B y\r\n"
            ),
            "duplicate a=crypto tag",
        ),
    ],
)
def test_sdp_garbage_is_refused(body: bytes, reason: str) -> None:
    assert _error(body) == reason


def test_sdp_non_utf8_is_refused() -> None:
    assert _error(_minimal().replace(b"s=-", b"s=\xff")) == "SDP line is not UTF-8"


def test_sdp_error_never_echoes_key_material() -> None:
    body = _minimal(media=f"m=audio 4000 RTP/SAVP 0\r\na=crypto:1 A inline:{KEY_80} x y\x00\r\n")
    assert KEY_80 not in _error(body)
    body = _minimal(media=f"m=audio 4000 RTP/SAVP 0\r\na=crypto:x A inline:{KEY_80}\r\n")
    reason = _error(body)
    assert reason == "malformed a=crypto"
    assert KEY_80 not in reason


def test_sdp_random_bytes_raise_only_sdp_error() -> None:
    rng = random.Random(4568)
    alphabet = b"vosmcat=0123456789 :/\r\n\x00\xffIPN4AVP"
    for _ in range(2000):
        body = bytes(rng.choice(alphabet) for _ in range(rng.randrange(0, 120)))
        with contextlib.suppress(SdpError):
            parse_sdp(body)
    prefix = bytearray(BARESIP_OFFER)
    for _ in range(500):
        mutated = bytearray(prefix)
        for _ in range(rng.randrange(1, 6)):
            mutated[rng.randrange(len(mutated))] = rng.randrange(256)
        try:
            sdp = parse_sdp(bytes(mutated))
        except SdpError:
            continue
        for media in sdp.media:
            _ = (media.crypto, media.rtcp_mux, media.direction, sdp.address(media))

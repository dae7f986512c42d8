"""voipsec.endpoints.offer: the SRTP suites an INVITE's offer names (SDES suites in
offer order, ``dtls``, ``none``), whether the policy counts it as SRTP, no offer for a
late offer or bad SDP, and the bounds on names and their length."""

from __future__ import annotations

from voipsec.endpoints.offer import (
    MAX_OFFERED_SUITES,
    MAX_SUITE_NAME,
    SrtpOffer,
    srtp_offer_of,
)

KEY = "AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0e"


def _sdp(*media: str) -> bytes:
    lines = ["v=0", "o=- 1 1 IN IP4 192.0.2.10", "s=-", "c=IN IP4 192.0.2.10", "t=0 0", *media]
    return ("\r\n".join(lines) + "\r\n").encode()


def _crypto(*suites: str) -> list[str]:
    return [f"a=crypto:{n} {suite} inline:{KEY}" for n, suite in enumerate(suites, 1)]


def test_offer_sdes_suites_in_offer_order() -> None:
    # RFC 6188's 256-bit suite preferred to RFC 4568's AES_CM_128_HMAC_SHA1_80.
    body = _sdp(
        "m=audio 4000 RTP/SAVP 0",
        *_crypto("AES_256_CM_HMAC_SHA1_80", "AES_CM_128_HMAC_SHA1_80"),
    )
    assert srtp_offer_of(body) == SrtpOffer(
        secure=True, suites="AES_256_CM_HMAC_SHA1_80 AES_CM_128_HMAC_SHA1_80"
    )


def test_offer_suites_once_across_sections() -> None:
    body = _sdp(
        "m=audio 4000 RTP/SAVP 0",
        *_crypto("AES_CM_128_HMAC_SHA1_80", "AES_CM_128_HMAC_SHA1_32"),
        "m=video 4002 RTP/SAVPF 96",
        *_crypto("AES_CM_128_HMAC_SHA1_80", "AEAD_AES_128_GCM"),
    )
    assert srtp_offer_of(body) == SrtpOffer(
        secure=True, suites="AES_CM_128_HMAC_SHA1_80 AES_CM_128_HMAC_SHA1_32 AEAD_AES_128_GCM"
    )


def test_offer_dtls_srtp() -> None:
    body = _sdp("m=audio 4000 UDP/TLS/RTP/SAVPF 0", "a=setup:actpass")
    assert srtp_offer_of(body) == SrtpOffer(secure=True, suites="dtls")


def test_offer_plain_rtp_is_none() -> None:
    assert srtp_offer_of(_sdp("m=audio 4000 RTP/AVP 0")) == SrtpOffer(secure=False, suites="none")
    # RTP/SAVP without a key names no suite anyone can use.
    assert srtp_offer_of(_sdp("m=audio 4000 RTP/SAVP 0")) == SrtpOffer(secure=False, suites="none")


def test_offer_one_plain_stream_beside_srtp() -> None:
    body = _sdp(
        "m=audio 4000 RTP/SAVP 0", *_crypto("AES_CM_128_HMAC_SHA1_80"), "m=video 4002 RTP/AVP 96"
    )
    assert srtp_offer_of(body) == SrtpOffer(secure=False, suites="AES_CM_128_HMAC_SHA1_80 none")


def test_offer_best_effort_srtp_lists_its_suites_but_is_not_secure() -> None:
    # a=crypto on RTP/AVP (baresip mediaenc=srtp, voipsec's own media.srtp_offer =
    # "avp-crypto"): the suites are offered; the policy counts only an SRTP profile.
    body = _sdp("m=audio 4000 RTP/AVP 0", *_crypto("AES_CM_128_HMAC_SHA1_80"))
    assert srtp_offer_of(body) == SrtpOffer(secure=False, suites="AES_CM_128_HMAC_SHA1_80")


def test_offer_declined_stream_ignored() -> None:
    body = _sdp(
        "m=audio 4000 RTP/SAVP 0", *_crypto("AES_CM_128_HMAC_SHA1_80"), "m=video 0 RTP/AVP 96"
    )
    assert srtp_offer_of(body) == SrtpOffer(secure=True, suites="AES_CM_128_HMAC_SHA1_80")


def test_offer_none_without_an_offer() -> None:
    assert srtp_offer_of(b"") is None  # a late offer
    assert srtp_offer_of(_sdp("m=audio 0 RTP/AVP 0")) is None  # nothing active
    assert srtp_offer_of(b"not sdp") is None  # the call layer refuses it
    assert srtp_offer_of(_sdp("m=audio 4000 RTP/SAVP 0", "a=crypto:1 BAD")) is None


def test_offer_names_bounded_keeping_none() -> None:
    many = [f"SUITE_{n:02d}" for n in range(MAX_OFFERED_SUITES + 3)]
    offer = srtp_offer_of(_sdp("m=audio 4000 RTP/SAVP 0", *_crypto(*many)))
    assert offer is not None
    # The last place is kept for "none": a plain stream is never cut off.
    assert offer.suites.split() == many[: MAX_OFFERED_SUITES - 1]
    with_plain = _sdp("m=audio 4000 RTP/SAVP 0", *_crypto(*many), "m=video 4002 RTP/AVP 96")
    offer = srtp_offer_of(with_plain)
    assert offer is not None
    assert offer.suites.split() == [*many[: MAX_OFFERED_SUITES - 1], "none"]
    assert len(offer.suites.split()) == MAX_OFFERED_SUITES


def test_offer_suite_name_cut() -> None:
    long = "X" * (MAX_SUITE_NAME + 25)
    offer = srtp_offer_of(_sdp("m=audio 4000 RTP/SAVP 0", *_crypto(long)))
    assert offer == SrtpOffer(secure=True, suites="X" * MAX_SUITE_NAME)

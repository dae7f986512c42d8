"""SDES keys and libsrtp policies (voipsec.media.sdes)."""

from __future__ import annotations

import base64

import pylibsrtp
import pytest

from voipsec.media.sdes import (
    DEFAULT_PREFERENCE,
    SUITES,
    Suite,
    choose,
    crypto_line,
    inbound_policy,
    master_of,
    new_master,
    outbound_policy,
)
from voipsec.media.sdp import Crypto, SdpError

KEY_80 = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwd"  # bytes(range(30))
KEY_128 = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGw=="  # bytes(range(28))
KEY_256 = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKis="  # bytes(range(44))

#: RTP version 2, PT 0, seq 1, timestamp 160, SSRC 0x12345678, then 160 bytes of PCMU.
RTP_HEADER = bytes([0x80, 0x00, 0x00, 0x01]) + (160).to_bytes(4, "big") + bytes.fromhex("12345678")
RTP_PACKET = RTP_HEADER + b"\xd5" * 160


def _crypto(suite: str, key_params: str, tag: int = 1, session_params: str = "") -> Crypto:
    return Crypto(tag=tag, suite=suite, key_params=key_params, session_params=session_params)


def _master_error(crypto: Crypto) -> str:
    with pytest.raises(SdpError) as info:
        master_of(crypto)
    return info.value.reason


def test_sdes_suites_lengths() -> None:
    assert {name: (s.key_length, s.salt_length) for name, s in SUITES.items()} == {
        "AEAD_AES_256_GCM": (32, 12),
        "AEAD_AES_128_GCM": (16, 12),
        "AES_CM_128_HMAC_SHA1_80": (16, 14),
        "AES_CM_128_HMAC_SHA1_32": (16, 14),
    }
    assert SUITES["AES_CM_128_HMAC_SHA1_80"].profile == (
        pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80
    )
    assert SUITES["AEAD_AES_256_GCM"].profile == pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_256_GCM
    assert set(DEFAULT_PREFERENCE) == set(SUITES)


@pytest.mark.parametrize("suite", list(SUITES.values()), ids=list(SUITES))
def test_sdes_new_master_and_crypto_line_round_trip(suite: Suite) -> None:
    master = new_master(suite)
    assert len(master) == suite.key_length + suite.salt_length
    assert new_master(suite) != master
    crypto = crypto_line(3, suite, master)
    assert crypto.tag == 3
    assert crypto.suite == suite.name
    assert crypto.session_params == ""
    assert crypto.key_params == "inline:" + base64.b64encode(master).decode()
    assert master_of(crypto) == master
    assert base64.b64encode(master).decode() not in repr(crypto)


def test_sdes_crypto_line_wrong_length() -> None:
    with pytest.raises(ValueError, match="length"):
        crypto_line(1, SUITES["AEAD_AES_128_GCM"], bytes(30))


def test_sdes_master_of_accepts_lifetime_and_missing_padding() -> None:
    suite = "AES_CM_128_HMAC_SHA1_80"
    assert master_of(_crypto(suite, f"inline:{KEY_80}|2^20")) == bytes(range(30))
    assert master_of(_crypto(suite, f"inline:{KEY_80}|1048576")) == bytes(range(30))
    assert master_of(_crypto("AEAD_AES_128_GCM", f"inline:{KEY_128}")) == bytes(range(28))
    assert master_of(_crypto("AEAD_AES_128_GCM", f"INLINE:{KEY_128[:-2]}")) == bytes(range(28))
    assert master_of(_crypto("AEAD_AES_256_GCM", f"inline:{KEY_256}")) == bytes(range(44))


@pytest.mark.parametrize(
    ("crypto", "reason"),
    [
        (_crypto("F8_128_HMAC_SHA1_80", f"inline:{KEY_80}"), "unsupported crypto-suite"),
        (_crypto("aes_cm_128_hmac_sha1_80x", f"inline:{KEY_80}"), "unsupported crypto-suite"),
        (
            _crypto("AES_CM_128_HMAC_SHA1_80", f"inline:{KEY_80}|2^20|1:4"),
            "a=crypto MKI is not supported",
        ),
        (
            _crypto("AES_CM_128_HMAC_SHA1_80", f"inline:{KEY_80}|1:4"),
            "a=crypto MKI is not supported",
        ),
        (
            _crypto(
                "AES_CM_128_HMAC_SHA1_80", f"inline:{KEY_80}|2^20|1:4;inline:{KEY_80}|2^20|2:4"
            ),
            "several keys in a=crypto are not supported",
        ),
        (_crypto("AES_CM_128_HMAC_SHA1_80", f"uri:{KEY_80}"), "a=crypto key method is not inline"),
        (_crypto("AES_CM_128_HMAC_SHA1_80", KEY_80), "a=crypto key method is not inline"),
        (
            _crypto("AES_CM_128_HMAC_SHA1_80", f"inline:{KEY_80}|2^x"),
            "malformed a=crypto lifetime",
        ),
        (
            _crypto("AES_CM_128_HMAC_SHA1_80", f"inline:{KEY_80}|2^20|2^20"),
            "malformed a=crypto key parameters",
        ),
        (
            _crypto("AES_CM_128_HMAC_SHA1_80", f"inline:{KEY_80}|1|2|3"),
            "malformed a=crypto key parameters",
        ),
        (
            _crypto("AES_CM_128_HMAC_SHA1_80", "inline:AAEC*wQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwd"),
            "a=crypto key is not valid base64",
        ),
        (
            _crypto(
                "AES_CM_128_HMAC_SHA1_80", "inline:AAEC\u00e9QFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwd"
            ),
            "a=crypto key is not valid base64",
        ),
        (
            _crypto("AES_CM_128_HMAC_SHA1_80", f"inline:{KEY_128}"),
            "a=crypto key length does not match its suite",
        ),
        (
            _crypto("AEAD_AES_256_GCM", f"inline:{KEY_80}"),
            "a=crypto key length does not match its suite",
        ),
    ],
)
def test_sdes_master_of_errors(crypto: Crypto, reason: str) -> None:
    got = _master_error(crypto)
    assert got == reason
    assert KEY_80 not in got


def test_sdes_choose_by_preference() -> None:
    offered = [
        _crypto("AES_CM_128_HMAC_SHA1_32", f"inline:{KEY_80}", tag=1),
        _crypto("AES_CM_128_HMAC_SHA1_80", f"inline:{KEY_80}", tag=2),
        _crypto("AEAD_AES_128_GCM", f"inline:{KEY_128}", tag=3),
    ]
    assert choose(offered, DEFAULT_PREFERENCE) == offered[2]
    assert choose(offered, ["AES_CM_128_HMAC_SHA1_80", "AEAD_AES_128_GCM"]) == offered[1]
    assert choose(offered, ["NOPE", "AES_CM_128_HMAC_SHA1_32"]) == offered[0]
    assert choose(offered, ["AEAD_AES_256_GCM"]) is None
    assert choose([], DEFAULT_PREFERENCE) is None


def test_sdes_choose_skips_unusable_lines() -> None:
    offered = [
        _crypto("AEAD_AES_256_GCM", f"inline:{KEY_80}", tag=1),  # wrong length
        _crypto("AEAD_AES_128_GCM", f"inline:{KEY_128}|2^20|1:4", tag=2),  # MKI
        _crypto(
            "AES_CM_128_HMAC_SHA1_80", f"inline:{KEY_80}", tag=3, session_params="UNENCRYPTED_SRTP"
        ),
        _crypto("AES_CM_128_HMAC_SHA1_80", f"inline:{KEY_80}", tag=4, session_params="KDR=1"),
        _crypto("AES_CM_128_HMAC_SHA1_80", f"inline:{KEY_80}", tag=5, session_params="WSH=128"),
        _crypto("AES_CM_128_HMAC_SHA1_32", f"inline:{KEY_80}", tag=6),
    ]
    assert choose(offered, DEFAULT_PREFERENCE) == offered[4]
    assert choose(offered[:4], DEFAULT_PREFERENCE) is None


@pytest.mark.parametrize("suite", list(SUITES.values()), ids=list(SUITES))
def test_sdes_srtp_round_trip(suite: Suite) -> None:
    master = new_master(suite)
    sender = pylibsrtp.Session(outbound_policy(suite, master))
    receiver = pylibsrtp.Session(inbound_policy(suite, master))
    protected = sender.protect(RTP_PACKET)
    assert protected[:12] == RTP_HEADER
    assert protected[12:172] != RTP_PACKET[12:]
    assert receiver.unprotect(protected) == RTP_PACKET
    # Replay protection (RFC 3711 §3.3.2): the same packet twice is refused.
    with pytest.raises(pylibsrtp.Error, match="replay check failed"):
        receiver.unprotect(protected)
    # The next packet still passes.
    second = RTP_HEADER[:3] + b"\x02" + RTP_HEADER[4:] + b"\xd5" * 160
    assert receiver.unprotect(sender.protect(second)) == second


@pytest.mark.parametrize("suite", list(SUITES.values()), ids=list(SUITES))
def test_sdes_srtp_wrong_master_fails(suite: Suite) -> None:
    sender = pylibsrtp.Session(outbound_policy(suite, new_master(suite)))
    receiver = pylibsrtp.Session(inbound_policy(suite, new_master(suite)))
    with pytest.raises(pylibsrtp.Error, match="authentication failure"):
        receiver.unprotect(sender.protect(RTP_PACKET))


@pytest.mark.parametrize("suite", list(SUITES.values()), ids=list(SUITES))
def test_sdes_srtp_through_crypto_line(suite: Suite) -> None:
    """What one side puts in a=crypto is what the other side's master_of decodes."""
    master = new_master(suite)
    line = crypto_line(1, suite, master)
    sender = pylibsrtp.Session(outbound_policy(suite, master))
    receiver = pylibsrtp.Session(inbound_policy(suite, master_of(line)))
    assert receiver.unprotect(sender.protect(RTP_PACKET)) == RTP_PACKET


def test_sdes_policies() -> None:
    suite = SUITES["AEAD_AES_128_GCM"]
    master = new_master(suite)
    out = outbound_policy(suite, master)
    assert out.ssrc_type == pylibsrtp.Policy.SSRC_ANY_OUTBOUND
    assert out.srtp_profile == suite.profile
    inbound = inbound_policy(suite, master)
    assert inbound.ssrc_type == pylibsrtp.Policy.SSRC_ANY_INBOUND
    assert inbound.allow_repeat_tx is False
    assert inbound.window_size == 0  # libsrtp's default (128)
    with pytest.raises(ValueError, match="length"):
        inbound_policy(suite, master + b"x")
    with pytest.raises(ValueError, match="length"):
        outbound_policy(suite, master[:-1])

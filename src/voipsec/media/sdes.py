"""SDES key exchange for SRTP (RFC 4568) on top of libsrtp (pylibsrtp).

The relay terminates SRTP on each leg: for every leg and direction it makes a fresh
master key and salt (:func:`new_master`), sends it in its own a=crypto line
(:func:`crypto_line`) and takes the peer's from the offer or answer (:func:`choose`,
:func:`master_of`). All cryptography is libsrtp's; this module only encodes keys and
builds policies. A crypto line that cannot be used exactly as written (unknown suite,
MKI, session parameters that change the protection) is refused, never approximated:
the stream then fails closed (no usable crypto, the m= line is refused).
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

import pylibsrtp

from .sdp import Crypto, SdpError


@dataclass(frozen=True, slots=True)
class Suite:
    """An SRTP crypto-suite usable with SDES."""

    name: str
    #: pylibsrtp.Policy.SRTP_PROFILE_*
    profile: int
    #: master key and master salt lengths in bytes
    key_length: int
    salt_length: int

    @property
    def master_length(self) -> int:
        return self.key_length + self.salt_length


#: RFC 4568 §6.2 (AES_CM_128_HMAC_SHA1_80/32: 128-bit key, 112-bit salt) and RFC 7714
#: §12 (AEAD_AES_128/256_GCM for SDES: 128/256-bit key, 96-bit salt).
SUITES: dict[str, Suite] = {
    s.name: s
    for s in (
        Suite("AEAD_AES_256_GCM", pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_256_GCM, 32, 12),
        Suite("AEAD_AES_128_GCM", pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_128_GCM, 16, 12),
        Suite("AES_CM_128_HMAC_SHA1_80", pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80, 16, 14),
        Suite("AES_CM_128_HMAC_SHA1_32", pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_32, 16, 14),
    )
}

#: AEAD first (RFC 7714: authenticated encryption, smaller per-packet overhead than
#: HMAC-SHA1-80), then the RFC 4568 mandatory-to-implement suite, the 32-bit tag last.
DEFAULT_PREFERENCE: tuple[str, ...] = (
    "AEAD_AES_256_GCM",
    "AEAD_AES_128_GCM",
    "AES_CM_128_HMAC_SHA1_80",
    "AES_CM_128_HMAC_SHA1_32",
)

#: RFC 4568 §6.1 lifetime: decimal or "2^" decimal.
_LIFETIME_RE = re.compile(r"(?:2\^)?[0-9]{1,20}")
#: RFC 4568 §6.3.7 WSH (window size hint) only advises the receiver; it does not change
#: what is sent, so a crypto line carrying it stays usable. Every other session
#: parameter (UNENCRYPTED_SRTP, UNAUTHENTICATED_SRTP, KDR, FEC_ORDER...) changes the
#: protection and is refused (RFC 4568 §6.3: not understood means not usable).
_HARMLESS_SESSION_PARAM_RE = re.compile(r"WSH=[0-9]{1,10}")


def suite_of(crypto: Crypto) -> Suite | None:
    """The suite of a crypto line, None if we do not support it."""
    return SUITES.get(crypto.suite)


def new_master(suite: Suite) -> bytes:
    """A fresh random master key || master salt for ``suite``."""
    return secrets.token_bytes(suite.master_length)


def crypto_line(tag: int, suite: Suite, master: bytes) -> Crypto:
    """Our a=crypto for ``master``: ``inline:<base64 key||salt>``, no lifetime, no MKI."""
    if len(master) != suite.master_length:
        raise ValueError("master key length does not match the suite")
    key = base64.b64encode(master).decode("ascii")
    return Crypto(tag=tag, suite=suite.name, key_params=f"inline:{key}")


def master_of(crypto: Crypto) -> bytes:
    """The master key || salt a peer's crypto line carries (RFC 4568 §9.2 SRTP key-params).

    Raises :class:`SdpError` for an unknown suite, several keys, an MKI (unsupported),
    a malformed lifetime, bad base64 or a length wrong for the suite. A lifetime is
    accepted and ignored: libsrtp enforces its own key-usage limits.
    """
    suite = suite_of(crypto)
    if suite is None:
        raise SdpError("unsupported crypto-suite")
    if ";" in crypto.key_params:
        raise SdpError("several keys in a=crypto are not supported")
    method, colon, info = crypto.key_params.partition(":")
    if not colon or method.lower() != "inline":
        raise SdpError("a=crypto key method is not inline")
    key_text, *extras = info.split("|")
    if len(extras) > 2:
        raise SdpError("malformed a=crypto key parameters")
    for extra in extras:
        if ":" in extra:
            raise SdpError("a=crypto MKI is not supported")
        if _LIFETIME_RE.fullmatch(extra) is None:
            raise SdpError("malformed a=crypto lifetime")
    if len(extras) == 2:
        raise SdpError("malformed a=crypto key parameters")  # two lifetimes
    # Some implementations omit base64 padding (38 characters for 28 bytes).
    padded = key_text + "=" * (-len(key_text) % 4)
    try:
        master = base64.b64decode(padded.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise SdpError("a=crypto key is not valid base64") from None
    if len(master) != suite.master_length:
        raise SdpError("a=crypto key length does not match its suite")
    return master


def _usable(crypto: Crypto) -> bool:
    if crypto.session_params and not all(
        _HARMLESS_SESSION_PARAM_RE.fullmatch(p) for p in crypto.session_params.split(" ")
    ):
        return False
    try:
        master_of(crypto)
    except SdpError:
        return False
    return True


def choose(offered: Sequence[Crypto], preference: Sequence[str]) -> Crypto | None:
    """The offered crypto line whose suite comes first in ``preference``.

    Lines we cannot use exactly (see :func:`master_of`, and session parameters other
    than WSH) are skipped. Among lines of the same suite the offerer's order wins
    (RFC 4568 §7.1.1). None when nothing is usable: the stream must be refused.
    """
    for name in preference:
        for crypto in offered:
            if crypto.suite == name and _usable(crypto):
                return crypto
    return None


def _check(suite: Suite, master: bytes) -> None:
    # pylibsrtp only checks the key is long *enough*; a longer one is a caller's bug.
    if len(master) != suite.master_length:
        raise ValueError("master key length does not match the suite")


def outbound_policy(suite: Suite, master: bytes) -> pylibsrtp.Policy:
    """Policy to protect what we send: any SSRC we send with ``master``."""
    _check(suite, master)
    return pylibsrtp.Policy(
        key=master, ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND, srtp_profile=suite.profile
    )


def inbound_policy(suite: Suite, master: bytes) -> pylibsrtp.Policy:
    """Policy to unprotect what a peer sends, with libsrtp's replay protection.

    The replay window keeps libsrtp's default (RFC 3711 §3.3.2, 128 packets);
    repeated packets are always refused.
    """
    _check(suite, master)
    policy = pylibsrtp.Policy(
        key=master, ssrc_type=pylibsrtp.Policy.SSRC_ANY_INBOUND, srtp_profile=suite.profile
    )
    policy.allow_repeat_tx = False
    return policy

"""The records voipsec stores: frozen dataclasses read from and written to its databases.

They import nothing but the standard library, so every layer (the core's registrar,
the CLI, the writer thread) can name them without pulling in a database driver.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass, fields

__all__ = [
    "BAN_SCOPES",
    "CDR_FIELDS",
    "CDR_KINDS",
    "DISPOSITIONS",
    "HANGUP_BY",
    "MAX_CDR_ENCRYPTION",
    "MAX_CDR_FIELD",
    "MAX_CDR_MEDIA",
    "RESTART_DISPOSITION",
    "RESTART_HANGUP_BY",
    "RESTART_REASON",
    "AlertRecord",
    "BanRecord",
    "Binding",
    "CdrRecord",
    "CdrStart",
    "CertificateRecord",
    "StoreError",
    "StoreUnavailable",
    "cdr_text",
    "check_media",
]


class StoreError(Exception):
    """A store operation was refused or failed; the message is safe to show."""


class StoreUnavailable(StoreError):
    """The database could not be used right now (locked, busy, unreachable, timed out).

    The writer keeps what it was writing and tries again; any other StoreError is a
    refusal that trying again would repeat.
    """


# -- records ------------------------------------------------------------------------

#: Longest text kept in any CDR field. Caller, callee, User-Agent and reason come from
#: peers; 256 is well past any real SIP URI user part or product token, and bounds
#: what one hostile INVITE can add to the database.
MAX_CDR_FIELD = 256

#: Longest media report (JSON) stored with a CDR.
MAX_CDR_MEDIA = 4096

#: Longest media_encryption value: "a:srtp b:srtp" is 13 characters; 64 leaves room
#: for more legs of one call.
MAX_CDR_ENCRYPTION = 64

#: Values of the CDR's ``kind``: the dial plan's kinds (core/dialplan.py CallKind).
CDR_KINDS = frozenset({"", "internal", "national", "international", "premium-rate", "emergency"})
#: Final states of a CDR row; '' (not listed) marks a call still in progress.
DISPOSITIONS = frozenset({"answered", "no_answer", "busy", "failed", "rejected", "incomplete"})
#: Who ended the call; '' when it was never answered.
HANGUP_BY = frozenset({"caller", "callee", "system", ""})

#: What close_open_cdrs writes into rows a crash left open.
RESTART_DISPOSITION = "incomplete"
RESTART_REASON = "server restarted"
RESTART_HANGUP_BY = "system"

#: Unicode categories replaced in CDR text: controls (terminal escapes), format
#: characters (bidi overrides) and lone surrogates (not encodable for SQLite). NUL is a
#: control character: PostgreSQL refuses it in text, so it must never reach a query.
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Cs"})
_REPLACEMENT = "?"


@dataclass(frozen=True, slots=True, kw_only=True)
class CdrStart:
    """What is known of a call when it starts; text fields are '' when unknown."""

    call_id: str
    caller: str
    #: The number or name as the caller dialled it.
    callee_dialled: str
    #: After the dial plan (E.164 for trunk calls, a user name for internal ones).
    callee: str
    #: Authenticated user placing the call; '' for calls from a trunk.
    user: str
    #: "ip:port" the INVITE came from.
    source: str
    transport: str
    #: Subject of the client certificate the call came over, if any.
    tls_identity: str
    trunk: str
    user_agent: str
    start: float
    #: What the dial plan made of the call (one of CDR_KINDS); "" when unknown.
    kind: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class CdrRecord:
    """One row of the ``cdrs`` table (see docs/cdr.md)."""

    id: int
    call_id: str
    caller: str
    callee_dialled: str
    callee: str
    user: str
    source: str
    transport: str
    tls_identity: str
    trunk: str
    user_agent: str
    start: float
    answer: float | None
    end: float | None
    duration: float | None
    billable: float | None
    #: One of DISPOSITIONS, or '' while the call is in progress.
    disposition: str
    status: int | None
    reason: str
    hangup_by: str
    #: Media quality per leg as JSON (docs/media.md), '' when no media was relayed.
    media: str = ""
    #: Which legs were encrypted, e.g. "a:srtp b:rtp" (docs/cdr.md); '' when no media
    #: was relayed.
    media_encryption: str = ""
    #: A user's call: "internal", "national", "international", "premium-rate" or
    #: "emergency" (docs/calls.md); "" for a call from a trunk or refused before the
    #: dial plan.
    kind: str = ""


#: CdrRecord's field names: the keys of `voipsec cdr list --format json` and the csv header.
CDR_FIELDS = tuple(f.name for f in fields(CdrRecord))


def cdr_text(text: str) -> str:
    """``text`` as stored in a CDR: at most MAX_CDR_FIELD characters, with control,
    format and surrogate characters replaced by '?' (peers choose these strings)."""
    text = text[:MAX_CDR_FIELD]
    if text.isprintable():
        return text
    return "".join(
        _REPLACEMENT if unicodedata.category(ch) in _UNSAFE_CATEGORIES else ch for ch in text
    )


def check_media(report: str, encryption: str) -> None:
    """Raise StoreError for a media report or media_encryption value over its limit
    (the one check of the writer's queue and of the database)."""
    if len(report) > MAX_CDR_MEDIA:
        raise StoreError(f"media report of {len(report)} characters is too long")
    if len(encryption) > MAX_CDR_ENCRYPTION:
        raise StoreError(f"media_encryption of {len(encryption)} characters is too long")


# -- registrar, bans, alerts, certificates (voipsec.db) ------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Binding:
    aor: str
    contact: str
    expires_at: float
    call_id: str
    cseq: int
    source: str
    user_agent: str


#: What a ban blocks (edge.guard.BanScope): "all", or "udp" when its only evidence came
#: over UDP, whose source addresses can be forged.
BAN_SCOPES = ("all", "udp")


@dataclass(frozen=True, slots=True, kw_only=True)
class BanRecord:
    source: str
    until: float
    reason: str
    created: float
    scope: str = "all"


@dataclass(frozen=True, slots=True, kw_only=True)
class AlertRecord:
    time: float
    rule: str
    source: str
    detail: str


@dataclass(frozen=True, slots=True, kw_only=True)
class CertificateRecord:
    serial: int
    name: str
    aor: str
    not_after: float
    revoked: float | None
    #: When the CA issued it (orders a device's renewals).
    issued: float


#: Statuses of a device in the inventory (endpoints/policy.py's actions as states).
DEVICE_STATUSES = ("ok", "warn", "restricted", "refused")


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceSighting:
    """What one REGISTER told about a device (a row of the inventory, as last seen).

    ``key`` tells devices of one user apart: the Contact's ``+sip.instance`` (RFC 5626
    §4.1) when it has one, else its User-Agent and source address."""

    user: str
    key: str
    aor: str
    contact: str
    source: str
    zone: str
    transport: str
    tls_version: str = ""
    tls_cipher: str = ""
    cert_subject: str = ""
    cert_serial: str = ""
    cert_expiry: float | None = None
    digest_algorithm: str = ""
    user_agent: str = ""
    vendor: str = ""
    model: str = ""
    version: str = ""
    status: str = "ok"
    reasons: tuple[str, ...] = ()
    time: float = 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceRecord:
    """One device of the inventory: its last sighting, first seen and how often."""

    id: int
    seen: DeviceSighting
    first_seen: float
    registrations: int
    #: The SRTP its last INVITE offered (endpoints/offer.py: ``AES_CM_128_HMAC_SHA1_80
    #: dtls``..., ``none`` for plain RTP); "" before its first INVITE with an offer.
    srtp_suites: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceSrtpOffer:
    """What one INVITE offered of SRTP, for the inventory row of ``user``'s device
    ``key`` (the key its REGISTER was recorded under, DeviceSighting.key)."""

    user: str
    key: str
    suites: str
    time: float = 0.0


#: What the gate queues for the inventory, written in order (a REGISTER's row before
#: the SRTP offer of the INVITE that followed it).
DeviceWrite = DeviceSighting | DeviceSrtpOffer

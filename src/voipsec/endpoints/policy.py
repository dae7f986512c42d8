"""The firmware and endpoint policy: what to do with a device that registers.

How this works: the shell gathers the :class:`DeviceFacts` of one REGISTER — which
device its User-Agent names (``useragent.identify``), the advisories its firmware
falls under (``advisories.matching``), the digest algorithm it answered with, its TLS
version and client certificate — and :func:`decide` runs every check against the
:class:`PolicySettings`. Each check that does not pass gives a :class:`PolicyReason` with
its configured action; the decision is the gravest of them (``allow`` < ``warn`` <
``restrict`` < ``refuse``), with every reason kept for the inventory and the alert.

Defaults are safe on upgrade (issue 18): only a KEV-listed advisory refuses; an
advisory, an unknown User-Agent, an MD5 digest, an expiring certificate or firmware
below a minimum warn. TLS 1.2 is allowed: it is still the best many deployed phones
speak (linphone's mbedTLS 2.28 is TLS 1.2 only, PEERS.md) and voipsec's TLS 1.2
suites are AEAD with forward secrecy only (pki/); a site that requires 1.3 sets
``tls.min_version``, or ``endpoints.tls12`` to grade it.

SRTP offers are not known at REGISTER: :func:`srtp_offer_reason` is the INVITE path's
check (``no_srtp_offer``), on the same settings.

Per zone and per class of service (``[endpoints.zones.<zone>]``,
``[endpoints.classes.<class>]``), a :class:`PolicyOverride` names some actions and
minimums; :func:`effective_settings` resolves the settings of one device as **the
stricter** of the global settings and every override that applies (the gravest action
per check; every minimum-firmware table is checked and the highest minimum that
applies wins). An override can tighten the policy, never loosen it: a device in a
strict zone stays held to it whatever its user's class says, and a typo'd or
forgotten override can only leave the global policy in force.

Sans-IO: facts and time come in as arguments.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

from .advisories import Advisory
from .useragent import Device
from .versions import compare_versions, try_parse_version

__all__ = [
    "ACTIONS",
    "CHECKS",
    "MAX_REASON_TEXT",
    "MAX_WARNING_UA",
    "Action",
    "DeviceFacts",
    "PolicyDecision",
    "PolicyOverride",
    "PolicyReason",
    "PolicySettings",
    "decide",
    "effective_settings",
    "minimum_for",
    "quote_warning_text",
    "srtp_offer_reason",
    "warning_value",
]

Action = Literal["allow", "warn", "restrict", "refuse"]

#: The actions from the mildest to the gravest: a decision is the gravest reason.
ACTIONS: tuple[Action, ...] = ("allow", "warn", "restrict", "refuse")

#: Characters of a User-Agent quoted in a reason (real ones are under 120; a Warning
#: header must stay readable and small, RFC 3261 §20.43).
MAX_WARNING_UA = 64

#: Characters of one reason's text (a long CVE list is cut): the Warning header and
#: the inventory's reasons column stay bounded.
MAX_REASON_TEXT = 300

#: The checks that take an action (the settings' and an override's keys).
CHECKS = (
    "kev_advisory",
    "advisory",
    "unknown_user_agent",
    "md5_digest",
    "tls12",
    "below_minimum",
    "missing_certificate",
    "expiring_certificate",
    "no_srtp_offer",
)

_DAY = 86_400.0


@dataclass(frozen=True, slots=True, kw_only=True)
class PolicySettings:
    """Per check, the action to take (config section ``[endpoints]``)."""

    kev_advisory: Action = "refuse"
    advisory: Action = "warn"
    unknown_user_agent: Action = "warn"
    md5_digest: Action = "warn"
    tls12: Action = "allow"
    below_minimum: Action = "warn"
    #: ``"Vendor"`` or ``"Vendor/MODEL-PATTERN"`` (shell-style, case-insensitive) →
    #: the lowest firmware version allowed. The most specific key (a model pattern
    #: over the vendor alone) applies.
    minimum_firmware: Mapping[str, str] = field(default_factory=dict)
    missing_certificate: Action = "allow"
    expiring_certificate: Action = "warn"
    #: A client certificate expiring within this many days is "expiring".
    certificate_days: int = 30
    #: At INVITE: an offer with no SRTP (srtp_offer_reason).
    no_srtp_offer: Action = "warn"
    #: The minimum-firmware tables of the overrides that apply: each is checked like
    #: ``minimum_firmware`` and the highest minimum found wins.
    more_minimums: tuple[Mapping[str, str], ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class PolicyOverride:
    """One zone's or class's ``[endpoints.*.<name>]`` table: only the keys it gives."""

    actions: Mapping[str, Action] = field(default_factory=dict)
    minimum_firmware: Mapping[str, str] = field(default_factory=dict)


def effective_settings(base: PolicySettings, *overrides: PolicyOverride) -> PolicySettings:
    """The settings for a device that ``overrides`` apply to: per check the gravest of
    ``base`` and the overrides' actions; their minimum tables added to those checked."""
    actions: dict[str, Action] = {}
    for check in CHECKS:
        given = [o.actions[check] for o in overrides if check in o.actions]
        actions[check] = max([getattr(base, check), *given], key=ACTIONS.index)
    more = tuple(o.minimum_firmware for o in overrides if o.minimum_firmware)
    return replace(base, **actions, more_minimums=base.more_minimums + more)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceFacts:
    """What the shell knows about the device behind one request."""

    user_agent: str
    device: Device | None
    #: ``advisories.matching(device, ...)``: KEV first.
    advisories: Sequence[Advisory] = ()
    #: "SHA-256", "MD5", "MD5-SESS"...; None when no digest was used (certificate).
    digest_algorithm: str | None = None
    #: "TLSv1.3", "TLSv1.2"; None off TLS (UDP/TCP in a trusted zone).
    tls_version: str | None = None
    #: Whether a verified client certificate was presented, and its notAfter.
    certificate: bool = False
    certificate_expiry: float | None = None
    now: float = 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class PolicyReason:
    """One check that did not pass: its name, the action it asks for, and a text
    naming the problem and its fix (the Warning header's and the inventory's)."""

    check: str
    action: Action
    text: str


@dataclass(frozen=True, slots=True, kw_only=True)
class PolicyDecision:
    action: Action
    reasons: tuple[PolicyReason, ...] = ()

    def grave(self) -> tuple[PolicyReason, ...]:
        """The reasons that made the decision (the Warning header names these)."""
        return tuple(r for r in self.reasons if r.action == self.action)


def decide(facts: DeviceFacts, settings: PolicySettings) -> PolicyDecision:
    """Every check over ``facts``; the gravest action wins, every reason is kept."""
    reasons = [
        *_advisory_reasons(facts, settings),
        *_user_agent_reasons(facts, settings),
        *_minimum_reasons(facts, settings),
        *_transport_reasons(facts, settings),
        *_certificate_reasons(facts, settings),
    ]
    kept = tuple(r for r in reasons if r.action != "allow")
    action: Action = max((r.action for r in kept), key=ACTIONS.index, default="allow")
    return PolicyDecision(action=action, reasons=kept)


def _reason(check: str, action: Action, text: str) -> PolicyReason:
    return PolicyReason(check=check, action=action, text=text[:MAX_REASON_TEXT])


def _advisory_reasons(facts: DeviceFacts, settings: PolicySettings) -> list[PolicyReason]:
    device = facts.device
    if device is None:
        return []
    return [
        _reason(
            "kev_advisory" if a.kev else "advisory",
            settings.kev_advisory if a.kev else settings.advisory,
            _advisory_text(device, a),
        )
        for a in facts.advisories
    ]


def _advisory_text(device: Device, advisory: Advisory) -> str:
    """``firmware 1.0.2.25 affected by CVE-2026-2329 (KEV); upgrade to 1.0.7.81``."""
    cves = ", ".join(advisory.cves) or advisory.id
    kev = " (KEV)" if advisory.kev else ""
    if advisory.fixed:
        fix = f"upgrade to {advisory.fixed}"
    elif advisory.last_affected:
        fix = f"upgrade past {advisory.last_affected}"
    else:
        fix = "no fixed firmware published: replace or isolate the device"
    return f"firmware {device.version} affected by {cves}{kev}; {fix}"


def _user_agent_reasons(facts: DeviceFacts, settings: PolicySettings) -> list[PolicyReason]:
    if facts.device is not None:
        return []
    shown = facts.user_agent[:MAX_WARNING_UA] or "(none)"
    return [
        _reason(
            "unknown_user_agent",
            settings.unknown_user_agent,
            f"unknown User-Agent {shown}; add a fingerprint to endpoints/fingerprints.yaml",
        )
    ]


def minimum_for(device: Device, minimums: Mapping[str, str]) -> str | None:
    """The minimum firmware that applies to ``device``: a ``Vendor/MODEL-PATTERN`` key
    over a ``Vendor`` key, the longest matching pattern first; None when none does."""
    vendor = device.vendor.casefold()
    best: tuple[int, str] | None = None
    for key, minimum in minimums.items():
        name, slash, pattern = key.partition("/")
        if name.strip().casefold() != vendor:
            continue
        if slash and not fnmatch.fnmatchcase(device.model.casefold(), pattern.casefold()):
            continue
        rank = len(pattern) + 1 if slash else 0
        if best is None or rank > best[0]:
            best = (rank, minimum)
    return best[1] if best is not None else None


def _minimum_reasons(facts: DeviceFacts, settings: PolicySettings) -> list[PolicyReason]:
    device = facts.device
    if device is None:
        return []
    minimum: str | None = None
    for table in (settings.minimum_firmware, *settings.more_minimums):
        found = minimum_for(device, table)
        if found is not None and (minimum is None or compare_versions(found, minimum) > 0):
            minimum = found
    if minimum is None:
        return []
    label = f"{device.vendor} {device.model}"
    if try_parse_version(device.version) is None:
        text = f"{label} names no readable firmware version; minimum is {minimum}"
    elif device.version is not None and compare_versions(device.version, minimum) < 0:
        text = f"firmware {device.version} below the minimum {minimum} for {label}; upgrade"
    else:
        return []
    return [_reason("below_minimum", settings.below_minimum, text)]


def _transport_reasons(facts: DeviceFacts, settings: PolicySettings) -> list[PolicyReason]:
    found: list[PolicyReason] = []
    algorithm = (facts.digest_algorithm or "").upper()
    if algorithm.startswith("MD5"):
        # RFC 8760: SHA-256 digests for SIP; MD5 is legacy (DESIGN.md: "MD5 only for
        # legacy").
        found.append(
            _reason("md5_digest", settings.md5_digest, "MD5 digest; configure SHA-256 (RFC 8760)")
        )
    if facts.tls_version == "TLSv1.2":
        found.append(_reason("tls12", settings.tls12, "TLS 1.2; enable TLS 1.3 on the device"))
    return found


def _certificate_reasons(facts: DeviceFacts, settings: PolicySettings) -> list[PolicyReason]:
    if not facts.certificate:
        return [
            _reason(
                "missing_certificate",
                settings.missing_certificate,
                "no client certificate; issue one (voipsec ca issue)",
            )
        ]
    expiry = facts.certificate_expiry
    if expiry is None or expiry - facts.now > settings.certificate_days * _DAY:
        return []
    days = max(0, int((expiry - facts.now) // _DAY))
    return [
        _reason(
            "expiring_certificate",
            settings.expiring_certificate,
            f"client certificate expires in {days} days; renew it (voipsec ca renew)",
        )
    ]


def srtp_offer_reason(offered: bool, settings: PolicySettings) -> PolicyReason | None:
    """The ``no_srtp_offer`` check of an INVITE whose offer did (not) carry SRTP; None
    when it passes or is allowed."""
    if offered or settings.no_srtp_offer == "allow":
        return None
    return _reason(
        "no_srtp_offer",
        settings.no_srtp_offer,
        "no SRTP in the offer; offer SRTP: enable SRTP (SDES a=crypto or DTLS-SRTP) on the device",
    )


def quote_warning_text(text: str) -> str:
    """``text`` as an RFC 3261 §25.1 quoted-string: backslash and double quote escaped,
    control characters (CR, LF...) replaced by spaces so nothing breaks the header."""
    cleaned = "".join(" " if ord(c) < 32 or ord(c) == 127 else c for c in text)
    return '"' + cleaned.replace("\\", "\\\\").replace('"', '\\"') + '"'


def warning_value(decision: PolicyDecision, agent: str = "voipsec") -> str:
    """The Warning header of a refusal (RFC 3261 §20.43): warn-code 399
    (miscellaneous), the agent, and the grave reasons' texts, comma-separated values."""
    return ", ".join(f"399 {agent} {quote_warning_text(r.text)}" for r in decision.grave())

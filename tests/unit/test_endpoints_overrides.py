"""Per-zone and per-class endpoint policy (issue 18 item 3) and the no_srtp_offer check.

``effective_settings`` is the stricter of the global settings and the overrides that
apply (exact settings); the gate resolves a device's zone and its user's class and
decides with them; ``srtp_offer_of`` reads an INVITE's offer; ``DeviceGate.srtp_offer``
gives the reason and alerts once per device a day.
"""

from __future__ import annotations

from dataclasses import replace

from voipsec.app.devices import DeviceGate, policy_override
from voipsec.config import EndpointsOverrideSection
from voipsec.core.auth import Authenticated
from voipsec.endpoints.loader import load_advisories, load_fingerprints
from voipsec.endpoints.offer import srtp_offer_of
from voipsec.endpoints.policy import (
    DeviceFacts,
    PolicyOverride,
    PolicyReason,
    PolicySettings,
    decide,
    effective_settings,
    srtp_offer_reason,
)
from voipsec.endpoints.useragent import Device
from voipsec.events import AlertRaised, EventBus
from voipsec.sip.message import Request, parse_message

from .fakes import FakeFlow

NOW = 1_800_000_000.0
DAY = 86_400.0
DOMAIN = "example.com"
SRTP_TEXT = (
    "no SRTP in the offer; offer SRTP: enable SRTP (SDES a=crypto or DTLS-SRTP) on the device"
)
KEY = "inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVzcyAoc2VuZGluZ3M="


def test_effective_settings_without_overrides_is_the_global() -> None:
    base = PolicySettings(minimum_firmware={"Cisco": "14.0"})
    assert effective_settings(base) == base


def test_effective_settings_stricter_action_wins_and_only_given_keys_apply() -> None:
    base = PolicySettings(advisory="restrict", unknown_user_agent="warn")
    zone = PolicyOverride(actions={"advisory": "warn", "unknown_user_agent": "refuse"})
    cls = PolicyOverride(actions={"tls12": "restrict", "no_srtp_offer": "refuse"})
    got = effective_settings(base, zone, cls)
    # advisory stays restrict (an override never loosens); the others tighten.
    assert got == replace(
        base, unknown_user_agent="refuse", tls12="restrict", no_srtp_offer="refuse"
    )


def test_effective_settings_highest_applicable_minimum_wins() -> None:
    base = PolicySettings(minimum_firmware={"Grandstream": "1.0.5"})
    zone = PolicyOverride(minimum_firmware={"Grandstream/GXP16??": "1.0.7.81"})
    cls = PolicyOverride(minimum_firmware={"Grandstream/GXP16??": "1.0.1"})
    got = effective_settings(base, zone, cls)
    assert got.more_minimums == (
        {"Grandstream/GXP16??": "1.0.7.81"},
        {"Grandstream/GXP16??": "1.0.1"},
    )
    facts = DeviceFacts(
        user_agent="Grandstream GXP1625 1.0.6.1",
        device=Device(
            vendor="Grandstream",
            family="GXP",
            model="GXP1625",
            version="1.0.6.1",
            kind="phone",
            fingerprint="grandstream",
        ),
        certificate=True,
    )
    # Global alone: 1.0.6.1 passes 1.0.5; the zone's model minimum holds it to 1.0.7.81
    # (the class's lower model minimum does not loosen it).
    assert decide(facts, base).reasons == ()
    assert decide(facts, got).reasons == (
        PolicyReason(
            check="below_minimum",
            action="warn",
            text="firmware 1.0.6.1 below the minimum 1.0.7.81 for Grandstream GXP1625; upgrade",
        ),
    )


def test_policy_override_takes_only_the_keys_given() -> None:
    section = EndpointsOverrideSection(no_srtp_offer="refuse", minimum_firmware={"Cisco": "14.2"})
    assert policy_override(section) == PolicyOverride(
        actions={"no_srtp_offer": "refuse"}, minimum_firmware={"Cisco": "14.2"}
    )


def test_srtp_offer_reason_per_action() -> None:
    assert srtp_offer_reason(True, PolicySettings(no_srtp_offer="refuse")) is None
    assert srtp_offer_reason(False, PolicySettings(no_srtp_offer="allow")) is None
    assert srtp_offer_reason(False, PolicySettings()) == PolicyReason(
        check="no_srtp_offer", action="warn", text=SRTP_TEXT
    )


def _sdp(*media: str) -> bytes:
    lines = ["v=0", "o=- 1 1 IN IP4 192.0.2.10", "s=-", "c=IN IP4 192.0.2.10", "t=0 0", *media]
    return ("\r\n".join(lines) + "\r\n").encode()


SAVP = ("m=audio 4000 RTP/SAVP 0", f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 {KEY}")
AVP = ("m=audio 4000 RTP/AVP 0",)
DTLS = ("m=audio 4000 UDP/TLS/RTP/SAVPF 0", "a=setup:actpass")


def srtp_offered(body: bytes) -> bool | None:
    """The no_srtp_offer check's view of an offer (None: no offer to judge)."""
    offer = srtp_offer_of(body)
    return offer.secure if offer is not None else None


def test_srtp_offered_reads_the_offer() -> None:
    assert srtp_offered(_sdp(*SAVP)) is True
    assert srtp_offered(_sdp(*DTLS)) is True
    assert srtp_offered(_sdp(*AVP)) is False
    # RTP/SAVP without a key is no SRTP anyone can use.
    assert srtp_offered(_sdp("m=audio 4000 RTP/SAVP 0")) is False
    # Every active section must be secure; a rejected (port 0) one does not count.
    assert srtp_offered(_sdp(*SAVP, "m=video 4002 RTP/AVP 96")) is False
    assert srtp_offered(_sdp(*SAVP, "m=video 0 RTP/AVP 96")) is True
    # No offer to judge: late offer, no active media, SDP the call layer refuses.
    assert srtp_offered(b"") is None
    assert srtp_offered(_sdp("m=audio 0 RTP/AVP 0")) is None
    assert srtp_offered(b"not sdp") is None


def _gate(
    settings: PolicySettings,
    *,
    zones: dict[str, PolicyOverride] | None = None,
    classes: dict[str, PolicyOverride] | None = None,
) -> tuple[DeviceGate, list[AlertRaised]]:
    events = EventBus()
    alerts: list[AlertRaised] = []
    events.subscribe(alerts.append, AlertRaised)

    class Writes:
        def save_devices(self, sightings: object) -> None:
            pass

    gate = DeviceGate(
        settings=settings,
        fingerprints=load_fingerprints(),
        advisories=load_advisories(),
        zone_of=lambda ip: "lab" if ip.startswith("10.") else "internet",
        writes=Writes(),
        events=events,
        zone_overrides=zones,
        class_overrides=classes,
    )
    return gate, alerts


def _request(method: str, body: bytes = b"", user_agent: str = "Acme Phone 1.0") -> Request:
    uri = f"sip:{DOMAIN}" if method == "REGISTER" else f"sip:bob@{DOMAIN}"
    content = "Content-Type: application/sdp\r\n" if body else ""
    data = (
        f"{method} {uri} SIP/2.0\r\n"
        "Via: SIP/2.0/TLS 192.0.2.10:40000;branch=z9hG4bKx\r\n"
        "Max-Forwards: 70\r\n"
        f"To: <sip:alice@{DOMAIN}>\r\n"
        f"From: <sip:alice@{DOMAIN}>;tag=f1\r\n"
        "Call-ID: c-1\r\n"
        f"CSeq: 1 {method}\r\n"
        "Contact: <sip:alice@192.0.2.10:40000;transport=tls>\r\n"
        f"User-Agent: {user_agent}\r\n"
        f"{content}Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    message = parse_message(data)
    assert isinstance(message, Request)
    return message


def test_gate_settings_for_zone_and_class() -> None:
    base = PolicySettings()
    gate, _ = _gate(
        base,
        zones={"lab": PolicyOverride(actions={"unknown_user_agent": "refuse"})},
        classes={"premium-rate": PolicyOverride(actions={"md5_digest": "restrict"})},
    )
    gate.class_of = lambda user: "premium-rate" if user == "carol" else "national"
    assert gate.settings_for("alice", "internet") == base
    assert gate.settings_for("alice", "lab") == replace(base, unknown_user_agent="refuse")
    assert gate.settings_for("carol", "internet") == replace(base, md5_digest="restrict")
    assert gate.settings_for("carol", "lab") == replace(
        base, unknown_user_agent="refuse", md5_digest="restrict"
    )


def test_gate_check_uses_the_zone_of_the_source() -> None:
    gate, _ = _gate(
        PolicySettings(), zones={"lab": PolicyOverride(actions={"unknown_user_agent": "refuse"})}
    )
    auth = Authenticated(user="alice", by="digest", algorithm="SHA-256")
    lab, internet = FakeFlow(peer=("10.0.0.5", 5060)), FakeFlow(peer=("192.0.2.10", 5060))
    register = _request("REGISTER")
    assert gate.check(lab, register, auth, NOW).decision.action == "refuse"  # type: ignore[arg-type]
    assert gate.check(internet, register, auth, NOW).decision.action == "warn"  # type: ignore[arg-type]


def test_gate_srtp_offer_reason_and_one_alert_a_day() -> None:
    gate, alerts = _gate(
        PolicySettings(), zones={"lab": PolicyOverride(actions={"no_srtp_offer": "refuse"})}
    )
    plain = _request("INVITE", _sdp(*AVP))
    assert gate.srtp_offer("alice", _request("INVITE", _sdp(*SAVP)), "192.0.2.10", NOW) is None
    assert gate.srtp_offer("alice", _request("INVITE"), "192.0.2.10", NOW) is None
    warn = PolicyReason(check="no_srtp_offer", action="warn", text=SRTP_TEXT)
    assert gate.srtp_offer("alice", plain, "192.0.2.10", NOW) == warn
    assert gate.srtp_offer("alice", plain, "192.0.2.10", NOW + 60) == warn
    assert gate.srtp_offer("alice", plain, "10.0.0.5", NOW) == replace(warn, action="refuse")
    assert gate.srtp_offer("alice", plain, "192.0.2.10", NOW + DAY) == warn
    assert [(a.what, a.source, a.time) for a in alerts] == [
        ("device policy: no SRTP offer (warn)", "192.0.2.10", NOW),
        ("device policy: no SRTP offer (refuse)", "10.0.0.5", NOW),
        ("device policy: no SRTP offer (warn)", "192.0.2.10", NOW + DAY),
    ]
    assert alerts[0].why == f"Acme Phone 1.0: {SRTP_TEXT}"

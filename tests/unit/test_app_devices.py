"""app/devices.py with app/registration.py: the endpoint policy carried out at REGISTER
(403 with the Warning and no binding for refuse; registered and recorded for warn and
restrict; one alert per device a day), the sightings queued for the inventory, and
the gate built from the data files (or one error)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pytest

from voipsec.app import devices as devices_module
from voipsec.app.devices import (
    MAX_PENDING_SIGHTINGS,
    DeviceGate,
    EndpointDataError,
    build_device_gate,
)
from voipsec.app.registration import RegistrationShell
from voipsec.config import EndpointsSection
from voipsec.core.auth import Authenticated, Role
from voipsec.core.registrar import Registrar, RegistrarPolicy
from voipsec.endpoints.loader import load_advisories, load_fingerprints
from voipsec.endpoints.policy import PolicySettings
from voipsec.events import AlertRaised, DeviceRestrictionChanged, Event, EventBus, RemoteEvent
from voipsec.ipc import decode_event, encode_event
from voipsec.records import Binding, DeviceSrtpOffer, DeviceWrite
from voipsec.sip.message import Request, Response, parse_message
from voipsec.transport.connections import Flow
from voipsec.transport.stream import TlsInfo

from .fakes import FakeFlow

NOW = 1_800_000_000.0
DAY = 86_400.0
DOMAIN = "example.com"
FINGERPRINTS = load_fingerprints()
ADVISORIES = load_advisories()
VULNERABLE = "Grandstream GXP1625 1.0.2.25"
FIXED = "Grandstream GXP1625 1.0.7.81"


class Auth:
    def __init__(self, algorithm: str = "SHA-256") -> None:
        self.algorithm = algorithm

    def authenticate_as(
        self, flow: Flow, request: Request, role: Role, now: float
    ) -> Authenticated | Response:
        return Authenticated(user="alice", by="digest", algorithm=self.algorithm)


class Writes:
    def __init__(self) -> None:
        self.bindings: list[Binding] = []
        self.devices: list[DeviceWrite] = []

    def save_bindings(
        self, upserts: Iterable[Binding], removals: Iterable[tuple[str, str]]
    ) -> None:
        self.bindings.extend(upserts)

    def save_devices(self, sightings: Iterable[DeviceWrite]) -> None:
        self.devices.extend(sightings)


class TlsFlow(FakeFlow):
    def __init__(self) -> None:
        super().__init__()
        self.tls = TlsInfo(version="TLSv1.3", cipher="TLS_AES_256_GCM_SHA384", cert_not_after=None)


def _register(user_agent: str, instance: str = "", cseq: int = 1) -> Request:
    params = f';+sip.instance="<urn:uuid:{instance}>"' if instance else ""
    data = (
        f"REGISTER sip:{DOMAIN} SIP/2.0\r\n"
        "Via: SIP/2.0/TLS 192.0.2.10:40000;branch=z9hG4bKreg\r\n"
        "Max-Forwards: 70\r\n"
        f"To: <sip:alice@{DOMAIN}>\r\n"
        f"From: <sip:alice@{DOMAIN}>;tag=f1\r\n"
        "Call-ID: reg-1\r\n"
        f"CSeq: {cseq} REGISTER\r\n"
        f"Contact: <sip:alice@192.0.2.10:40000;transport=tls>{params};expires=600\r\n"
        f"User-Agent: {user_agent}\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()
    message = parse_message(data)
    assert isinstance(message, Request)
    return message


def _shell(
    settings: PolicySettings | None = None, algorithm: str = "SHA-256"
) -> tuple[RegistrationShell, Writes, list[AlertRaised]]:
    events = EventBus()
    alerts: list[AlertRaised] = []
    events.subscribe(alerts.append, AlertRaised)
    writes = Writes()
    gate = DeviceGate(
        settings=settings or PolicySettings(),
        fingerprints=FINGERPRINTS,
        advisories=ADVISORIES,
        zone_of=lambda ip: "internet",
        writes=writes,
        events=events,
    )
    registrar = Registrar(RegistrarPolicy(domain=DOMAIN, domains=frozenset({DOMAIN})))
    shell = RegistrationShell(
        registrar=registrar, auth=Auth(algorithm), store=writes, events=events, devices=gate
    )
    return shell, writes, alerts


def test_app_devices_refuse_is_403_with_warning_and_no_binding() -> None:
    shell, writes, alerts = _shell(PolicySettings(advisory="refuse"))
    response = shell.register(TlsFlow(), _register(VULNERABLE), NOW)  # type: ignore[arg-type]
    assert (response.status, response.reason) == (403, "Forbidden")
    assert response.headers.get("warning") == (
        '399 voipsec "firmware 1.0.2.25 affected by CVE-2026-2329; upgrade to 1.0.7.81", '
        '399 voipsec "firmware 1.0.2.25 affected by CVE-2020-5738; upgrade past 1.0.4.152"'
    )
    assert shell.registrar.bindings() == []
    shell.flush()
    assert writes.bindings == []
    [seen] = writes.devices
    assert (seen.status, seen.vendor, seen.model, seen.version) == (
        "refused",
        "Grandstream",
        "GXP1625",
        "1.0.2.25",
    )
    assert (seen.tls_version, seen.tls_cipher, seen.digest_algorithm) == (
        "TLSv1.3",
        "TLS_AES_256_GCM_SHA384",
        "SHA-256",
    )
    assert seen.reasons[0] == "firmware 1.0.2.25 affected by CVE-2026-2329; upgrade to 1.0.7.81"
    assert [(a.what, a.who, a.action, a.source) for a in alerts] == [
        ("device policy: refused", "alice", "refused", "192.0.2.10")
    ]


def test_app_devices_fixed_firmware_registers_ok_without_alert() -> None:
    shell, writes, alerts = _shell(PolicySettings(advisory="refuse"))
    response = shell.register(TlsFlow(), _register(FIXED), NOW)  # type: ignore[arg-type]
    assert response.status == 200
    shell.flush()
    assert [(d.status, d.reasons, d.version) for d in writes.devices] == [("ok", (), "1.0.7.81")]
    assert len(writes.bindings) == 1
    assert alerts == []


def test_app_devices_warn_registers_and_alerts_once_a_day() -> None:
    shell, writes, alerts = _shell()
    for cseq, when in enumerate((NOW, NOW + 60, NOW + DAY), start=1):
        response = shell.register(TlsFlow(), _register(VULNERABLE, cseq=cseq), when)  # type: ignore[arg-type]
        assert response.status == 200
    shell.flush()
    assert [d.status for d in writes.devices] == ["warn", "warn", "warn"]
    assert [a.time for a in alerts] == [NOW, NOW + DAY]
    assert alerts[0].why == (
        "Grandstream GXP1625 1.0.2.25: firmware 1.0.2.25 affected by CVE-2026-2329; upgrade to "
        "1.0.7.81; firmware 1.0.2.25 affected by CVE-2020-5738; upgrade past 1.0.4.152"
    )


def test_app_devices_restrict_registers_marked_restricted() -> None:
    shell, writes, _ = _shell(PolicySettings(md5_digest="restrict"), algorithm="MD5")
    response = shell.register(TlsFlow(), _register(FIXED), NOW)  # type: ignore[arg-type]
    assert response.status == 200
    shell.flush()
    assert [(d.status, d.digest_algorithm, d.reasons) for d in writes.devices] == [
        ("restricted", "MD5", ("MD5 digest; configure SHA-256 (RFC 8760)",))
    ]


def test_app_devices_unknown_user_agent_and_no_tls() -> None:
    shell, writes, _ = _shell()
    response = shell.register(FakeFlow(), _register("Acme Phone 9"), NOW)  # type: ignore[arg-type]
    assert response.status == 200
    shell.flush()
    [seen] = writes.devices
    assert (seen.status, seen.vendor, seen.tls_version, seen.zone, seen.key) == (
        "warn",
        "",
        "",
        "internet",
        "Acme Phone 9 @ 192.0.2.10",
    )
    assert seen.aor == "alice@example.com"
    assert seen.contact == "sip:alice@192.0.2.10:40000;transport=tls"


def test_app_devices_instance_id_is_the_device_key() -> None:
    shell, writes, _ = _shell()
    uuid = "00000000-0000-1000-8000-000a95a0e128"
    shell.register(FakeFlow(), _register(FIXED, uuid), NOW)  # type: ignore[arg-type]
    shell.flush()
    assert [d.key for d in writes.devices] == [f"urn:uuid:{uuid}"]


def test_app_devices_pending_sightings_bounded() -> None:
    shell, writes, _ = _shell()
    gate = shell.devices
    assert gate is not None
    check = gate.check(FakeFlow(), _register(FIXED), Authenticated(user="a", by="digest"), NOW)  # type: ignore[arg-type]
    for _ in range(MAX_PENDING_SIGHTINGS + 3):
        gate.record(check)
    assert gate.dropped == 3
    gate.flush()
    assert len(writes.devices) == MAX_PENDING_SIGHTINGS


def test_app_devices_gate_disabled_is_none() -> None:
    gate = build_device_gate(
        section=EndpointsSection(enabled=False),
        data_dir=None,
        zone_of=lambda ip: "internet",
        writes=Writes(),
        events=EventBus(),
    )
    assert gate is None


def test_app_devices_bad_admin_file_is_one_error(tmp_path: Path) -> None:
    (tmp_path / "endpoints").mkdir()
    (tmp_path / "endpoints" / "advisories.yaml").write_text("advisories: 3\n", encoding="utf-8")
    with pytest.raises(EndpointDataError) as info:
        build_device_gate(
            section=EndpointsSection(),
            data_dir=tmp_path,
            zone_of=lambda ip: "internet",
            writes=Writes(),
            events=EventBus(),
        )
    assert str(info.value).startswith(f"{tmp_path}/endpoints/advisories.yaml: ")


def test_app_devices_statistics_count_decisions_and_alerts() -> None:
    shell, _, _ = _shell(PolicySettings(advisory="refuse"))
    shell.register(TlsFlow(), _register(VULNERABLE), NOW)  # type: ignore[arg-type]
    shell.register(TlsFlow(), _register(VULNERABLE, cseq=2), NOW + 1)  # type: ignore[arg-type]
    shell.register(TlsFlow(), _register(FIXED, cseq=3), NOW + 2)  # type: ignore[arg-type]
    assert shell.devices is not None
    stats = shell.devices.statistics()
    assert (stats.ok, stats.refused, stats.alerts, stats.dropped) == (1, 2, 1, 0)
    assert (stats.fingerprints, stats.advisories) == (len(FINGERPRINTS), len(ADVISORIES))


def test_app_devices_reload_takes_new_data_or_keeps_the_old(tmp_path: Path) -> None:
    shell, _, _ = _shell()
    gate = shell.devices
    assert gate is not None
    (tmp_path / "endpoints").mkdir()
    admin = tmp_path / "endpoints" / "advisories.yaml"
    admin.write_text("advisories:\n  - id: CVE-2026-2329\n    enabled: false\n", encoding="utf-8")
    assert gate.reload(tmp_path) is True
    assert len(gate.advisories) == len(ADVISORIES) - 1
    admin.write_text("advisories: 3\n", encoding="utf-8")
    assert gate.reload(tmp_path) is False
    assert len(gate.advisories) == len(ADVISORIES) - 1


def test_app_devices_alert_memory_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """Past MAX_ALERT_MEMORY devices the memory starts afresh: at worst one more alert
    that day for a device seen before."""
    monkeypatch.setattr(devices_module, "MAX_ALERT_MEMORY", 2)
    shell, _, alerts = _shell()
    gate = shell.devices
    assert gate is not None
    for n, ua in enumerate(["Acme 1", "Acme 2", "Acme 3", "Acme 1"]):
        auth = Authenticated(user="alice", by="digest")
        gate.record(gate.check(FakeFlow(), _register(ua), auth, NOW + n))  # type: ignore[arg-type]
    assert [a.time for a in alerts] == [NOW, NOW + 1, NOW + 2, NOW + 3]


# -- the restriction on INVITE (issue 18 `restrict`) -----------------------------------

MD5_REASON = "MD5 digest; configure SHA-256 (RFC 8760)"


def _invite(user_agent: str, instance: str = "", body: bytes = b"") -> Request:
    params = f';+sip.instance="<urn:uuid:{instance}>"' if instance else ""
    content = "Content-Type: application/sdp\r\n" if body else ""
    data = (
        f"INVITE sip:bob@{DOMAIN} SIP/2.0\r\n"
        "Via: SIP/2.0/TLS 192.0.2.10:40000;branch=z9hG4bKinv\r\n"
        "Max-Forwards: 70\r\n"
        f"To: <sip:bob@{DOMAIN}>\r\n"
        f"From: <sip:alice@{DOMAIN}>;tag=f1\r\n"
        "Call-ID: inv-1\r\n"
        "CSeq: 1 INVITE\r\n"
        f"Contact: <sip:alice@192.0.2.10:40000;transport=tls>{params}\r\n"
        f"User-Agent: {user_agent}\r\n"
        f"{content}Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    message = parse_message(data)
    assert isinstance(message, Request)
    return message


def _restricting_gate() -> tuple[RegistrationShell, DeviceGate]:
    shell, _, _ = _shell(PolicySettings(md5_digest="restrict"), algorithm="MD5")
    assert shell.devices is not None
    return shell, shell.devices


def test_app_devices_restriction_of_the_registered_device_is_its_reason() -> None:
    shell, gate = _restricting_gate()
    assert gate.restriction("alice", _invite(FIXED), "192.0.2.10") is None
    shell.register(FakeFlow(), _register(FIXED), NOW)  # type: ignore[arg-type]
    assert gate.restriction("alice", _invite(FIXED), "192.0.2.10") == MD5_REASON
    assert gate.statistics().restricted_remembered == 1  # one key: no instance
    # Another device: another User-Agent, another address, another user.
    assert gate.restriction("alice", _invite(VULNERABLE), "192.0.2.10") is None
    assert gate.restriction("alice", _invite(FIXED), "192.0.2.11") is None
    assert gate.restriction("bob", _invite(FIXED), "192.0.2.10") is None


def test_app_devices_restriction_found_by_instance_or_by_user_agent_and_address() -> None:
    shell, gate = _restricting_gate()
    uuid = "00000000-0000-1000-8000-000a95a0e128"
    shell.register(FakeFlow(), _register(FIXED, uuid), NOW)  # type: ignore[arg-type]
    # The INVITE's Contact has the instance (from anywhere), or has none.
    assert gate.restriction("alice", _invite("Other 1.0", uuid), "198.51.100.1") == MD5_REASON
    assert gate.restriction("alice", _invite(FIXED), "192.0.2.10") == MD5_REASON
    assert gate.restriction("alice", _invite("Other 1.0"), "192.0.2.10") is None


def test_app_devices_restriction_lifted_when_a_register_is_no_longer_restricted() -> None:
    shell, gate = _restricting_gate()
    shell.register(FakeFlow(), _register(FIXED), NOW)  # type: ignore[arg-type]
    gate.settings = PolicySettings()  # e.g. SIGHUP after the site allowed MD5
    shell.register(FakeFlow(), _register(FIXED, cseq=2), NOW + 1)  # type: ignore[arg-type]
    assert gate.restriction("alice", _invite(FIXED), "192.0.2.10") is None


def test_app_devices_refused_device_is_not_remembered_as_restricted() -> None:
    shell, _, _ = _shell(PolicySettings(advisory="refuse", md5_digest="restrict"), "MD5")
    assert shell.devices is not None
    response = shell.register(FakeFlow(), _register(VULNERABLE), NOW)  # type: ignore[arg-type]
    assert response.status == 403
    assert shell.devices.restriction("alice", _invite(VULNERABLE), "192.0.2.10") is None
    # Nor does a refusal lift the restriction an earlier REGISTER of the device had.
    shell.devices.settings = PolicySettings(md5_digest="restrict")
    assert shell.register(FakeFlow(), _register(VULNERABLE, cseq=2), NOW + 1).status == 200  # type: ignore[arg-type]
    shell.devices.settings = PolicySettings(advisory="refuse", md5_digest="restrict")
    assert shell.register(FakeFlow(), _register(VULNERABLE, cseq=3), NOW + 2).status == 403  # type: ignore[arg-type]
    assert shell.devices.restriction("alice", _invite(VULNERABLE), "192.0.2.10") == MD5_REASON


def test_app_devices_restriction_names_every_grave_reason() -> None:
    settings = PolicySettings(advisory="restrict", md5_digest="restrict", tls12="warn")
    shell, _, _ = _shell(settings, algorithm="MD5")
    assert shell.devices is not None
    shell.register(FakeFlow(), _register(VULNERABLE), NOW)  # type: ignore[arg-type]
    assert shell.devices.restriction("alice", _invite(VULNERABLE), "192.0.2.10") == (
        "firmware 1.0.2.25 affected by CVE-2026-2329; upgrade to 1.0.7.81; "
        "firmware 1.0.2.25 affected by CVE-2020-5738; upgrade past 1.0.4.152; " + MD5_REASON
    )


def test_app_devices_restriction_memory_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """Past MAX_RESTRICTED_MEMORY entries the least recently registered device is
    forgotten (fails open until its next REGISTER)."""
    monkeypatch.setattr(devices_module, "MAX_RESTRICTED_MEMORY", 2)
    shell, gate = _restricting_gate()
    for n, ua in enumerate(["Acme 1", "Acme 2"]):
        shell.register(FakeFlow(), _register(ua, cseq=n + 1), NOW + n)  # type: ignore[arg-type]
    # Each device without an instance is one entry (its key is its User-Agent at its
    # address): two fit.
    assert [
        gate.restriction("alice", _invite(ua), "192.0.2.10") for ua in ("Acme 1", "Acme 2")
    ] == [
        MD5_REASON,
        MD5_REASON,
    ]
    shell.register(FakeFlow(), _register("Acme 3", cseq=3), NOW + 2)  # type: ignore[arg-type]
    assert [
        gate.restriction("alice", _invite(ua), "192.0.2.10")
        for ua in ("Acme 1", "Acme 2", "Acme 3")
    ] == [None, MD5_REASON, MD5_REASON]


def test_app_devices_restriction_changes_published_once_and_adopted_by_another_worker() -> None:
    shell, gate = _restricting_gate()
    published: list[Event] = []
    shell.events.subscribe(published.append, DeviceRestrictionChanged)
    shell.register(FakeFlow(), _register(FIXED), NOW)  # type: ignore[arg-type]
    shell.register(FakeFlow(), _register(FIXED, cseq=2), NOW + 1)  # type: ignore[arg-type]
    restricted = DeviceRestrictionChanged(
        user="alice", keys=(f"{FIXED} @ 192.0.2.10",), reason=MD5_REASON
    )
    assert published == [restricted]  # a refresh that changes nothing is not sent
    gate.settings = PolicySettings()
    shell.register(FakeFlow(), _register(FIXED, cseq=3), NOW + 2)  # type: ignore[arg-type]
    lifted = DeviceRestrictionChanged(user="alice", keys=restricted.keys, reason="")
    assert published == [restricted, lifted]
    # Another signaling worker's gate, handed the events as the cluster carries them.
    other_shell, other = _restricting_gate()
    for event in (restricted, lifted):
        wire = decode_event(encode_event(event))
        other_shell.events.publish(RemoteEvent(origin=1, event=wire))
        expected = event.reason or None
        assert other.restriction("alice", _invite(FIXED), "192.0.2.10") == expected


def test_app_devices_restriction_of_an_unparsable_contact_is_by_user_agent() -> None:
    """An INVITE whose Contact does not parse is the call layer's to refuse with its
    own reason (400 "unterminated <URI>"): the lookup falls back to the User-Agent and
    address, and never raises."""
    shell, gate = _restricting_gate()
    shell.register(FakeFlow(), _register(FIXED), NOW)  # type: ignore[arg-type]
    raw = (
        f"INVITE sip:bob@{DOMAIN} SIP/2.0\r\n"
        "Via: SIP/2.0/TLS 192.0.2.10:40000;branch=z9hG4bKbad\r\n"
        "Max-Forwards: 70\r\n"
        f"To: <sip:bob@{DOMAIN}>\r\n"
        f"From: <sip:alice@{DOMAIN}>;tag=f1\r\n"
        "Call-ID: inv-bad\r\n"
        "CSeq: 1 INVITE\r\n"
        "Contact: <sip:alice@\r\n"
        f"User-Agent: {FIXED}\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()
    message = parse_message(raw)
    assert isinstance(message, Request)
    assert gate.restriction("alice", message, "192.0.2.10") == MD5_REASON


# -- the SRTP suites an INVITE offers (issue 18 item 1) ---------------------------------

KEY = "AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0e"


def _offer(*crypto: str, proto: str = "RTP/SAVP") -> bytes:
    lines = [
        "v=0",
        "o=- 1 1 IN IP4 192.0.2.10",
        "s=-",
        "c=IN IP4 192.0.2.10",
        "t=0 0",
        f"m=audio 4000 {proto} 0",
        *(f"a=crypto:{n} {suite} inline:{KEY}" for n, suite in enumerate(crypto, 1)),
    ]
    return ("\r\n".join(lines) + "\r\n").encode()


def _offers(writes: Writes) -> list[tuple[str, str, str]]:
    return [(w.user, w.key, w.suites) for w in writes.devices if isinstance(w, DeviceSrtpOffer)]


def test_app_devices_srtp_offer_queued_after_the_sighting_once_per_change() -> None:
    shell, writes, alerts = _shell()
    gate = shell.devices
    assert gate is not None
    shell.register(FakeFlow(), _register(FIXED), NOW)  # type: ignore[arg-type]
    key = f"{FIXED} @ 192.0.2.10"
    sdes = _invite(FIXED, body=_offer("AES_256_CM_HMAC_SHA1_80", "AES_CM_128_HMAC_SHA1_80"))
    for n in range(3):  # the same offer again: nothing more to write
        assert gate.srtp_offer("alice", sdes, "192.0.2.10", NOW + n) is None
    shell.flush()
    assert [type(w).__name__ for w in writes.devices] == ["DeviceSighting", "DeviceSrtpOffer"]
    assert _offers(writes) == [("alice", key, "AES_256_CM_HMAC_SHA1_80 AES_CM_128_HMAC_SHA1_80")]
    # A plain offer changes it (and is graded: warn); a late offer (no body) is no offer.
    plain = _invite(FIXED, body=_offer(proto="RTP/AVP"))
    assert gate.srtp_offer("alice", plain, "192.0.2.10", NOW + 5) is not None
    assert gate.srtp_offer("alice", _invite(FIXED), "192.0.2.10", NOW + 6) is None
    shell.flush()
    assert _offers(writes)[1:] == [("alice", key, "none")]
    assert len(alerts) == 1
    assert gate.statistics().offers_remembered == 1


def test_app_devices_srtp_offer_recorded_ungraded() -> None:
    """With ``media.srtp = "required"`` the call shell does not grade (the media layer
    refuses a plain offer): the suites are recorded all the same, and nothing alerts."""
    shell, writes, alerts = _shell()
    gate = shell.devices
    assert gate is not None
    plain = _invite(FIXED, body=_offer(proto="RTP/AVP"))
    assert gate.srtp_offer("alice", plain, "192.0.2.10", NOW, graded=False) is None
    gate.flush()
    assert (_offers(writes), alerts) == ([("alice", f"{FIXED} @ 192.0.2.10", "none")], [])


def test_app_devices_srtp_offer_finds_the_row_of_the_register_instance() -> None:
    """A REGISTER with ``+sip.instance`` keys the row by it; an INVITE whose Contact
    lacks it still lands on that row (found by its User-Agent at its address)."""
    shell, writes, _ = _shell()
    gate = shell.devices
    assert gate is not None
    uuid = "00000000-0000-1000-8000-000a95a0e128"
    shell.register(FakeFlow(), _register(FIXED, uuid), NOW)  # type: ignore[arg-type]
    dtls = _offer(proto="UDP/TLS/RTP/SAVPF")
    gate.srtp_offer("alice", _invite(FIXED, body=dtls), "192.0.2.10", NOW)
    gate.srtp_offer("alice", _invite(FIXED, uuid, body=dtls), "198.51.100.7", NOW)
    gate.srtp_offer("alice", _invite(FIXED, body=dtls), "198.51.100.7", NOW)
    gate.flush()
    instance = f"urn:uuid:{uuid}"
    # The first two are one device (one write); from another address without the
    # instance it is a device the inventory does not know under that key.
    assert _offers(writes) == [
        ("alice", instance, "dtls"),
        ("alice", f"{FIXED} @ 198.51.100.7", "dtls"),
    ]


def test_app_devices_srtp_offer_memory_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """Past MAX_OFFER_MEMORY devices the least recently seen is forgotten: its next
    offer is written once more."""
    monkeypatch.setattr(devices_module, "MAX_OFFER_MEMORY", 2)
    shell, writes, _ = _shell()
    gate = shell.devices
    assert gate is not None
    sdes = _offer("AES_CM_128_HMAC_SHA1_80")
    for ua in ("Acme 1", "Acme 2", "Acme 1", "Acme 3", "Acme 1", "Acme 2"):
        gate.srtp_offer("alice", _invite(ua, body=sdes), "192.0.2.10", NOW)
    gate.flush()
    assert [key.split(" @ ")[0] for _, key, _ in _offers(writes)] == [
        "Acme 1",
        "Acme 2",
        "Acme 3",
        "Acme 2",
    ]
    assert gate.statistics().offers_remembered == 2


def test_app_devices_srtp_offer_past_the_queue_is_dropped_and_retried() -> None:
    shell, writes, _ = _shell()
    gate = shell.devices
    assert gate is not None
    check = gate.check(FakeFlow(), _register(FIXED), Authenticated(user="a", by="digest"), NOW)  # type: ignore[arg-type]
    for _ in range(MAX_PENDING_SIGHTINGS):
        gate.record(check)
    sdes = _invite(FIXED, body=_offer("AES_CM_128_HMAC_SHA1_80"))
    gate.srtp_offer("alice", sdes, "192.0.2.10", NOW)
    assert (gate.dropped, _offers(writes)) == (1, [])
    gate.flush()
    # Not remembered as written: the next INVITE queues it.
    gate.srtp_offer("alice", sdes, "192.0.2.10", NOW + 1)
    gate.flush()
    assert _offers(writes) == [("alice", f"{FIXED} @ 192.0.2.10", "AES_CM_128_HMAC_SHA1_80")]

"""Routing decisions (voipsec.core.routing) on plain data: no server, no event loop.

Every refusal the INVITE path makes after authentication, with its exact status,
reason phrase, Warning and CDR fields, and every kind of route: a user's registered
contacts (reachable ones only), a trunk for a number, a trunk's call to a DID.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import pytest

from voipsec.config import Config, TrunkSection
from voipsec.core.b2bua import Fork, Target
from voipsec.core.dialplan import Dialplan
from voipsec.core.routing import (
    MAX_PHRASE,
    MAX_WARNING_TEXT,
    Caller,
    Lookups,
    Refusal,
    Route,
    RoutingPolicy,
    caller_number,
    class_of,
    identity_refusal,
    media_peer,
    refusal_response,
    route,
    trunk_caller,
    trunk_for,
    user_caller,
)
from voipsec.media.destinations import MediaPeer
from voipsec.records import Binding
from voipsec.sip.message import Request, parse_message
from voipsec.sip.uac import LocalAddress

DOMAIN = "example.com"
USERS = frozenset({"alice", "bob", "carol"})
CONFIG = Config.model_validate(
    {
        "sip": {"domain": DOMAIN, "listen": ["tcp:127.0.0.1:5060", "tls:127.0.0.1:5061"]},
        "zones": [
            {"name": "office", "cidrs": ["10.1.0.0/16"], "media_in_zone": True},
            {"name": "internet", "cidrs": ["0.0.0.0/0", "::/0"]},
        ],
        "trunks": [
            {
                "name": "carrier",
                "address": "tls:198.51.100.10:5061",
                "domain": "sip.carrier.example",
                "username": "acct",
                "password": "trunk-secret",
                "prefixes": ["+44"],
                "sources": ["198.51.100.0/28"],
                "dids": {"+442071234567": "bob"},
            },
        ],
    }
)
POLICY = RoutingPolicy.from_config(CONFIG, frozenset({DOMAIN}))
CARRIER = CONFIG.trunks[0]
PLAN = Dialplan.from_config(CONFIG, premium_prefixes=("+449",))
#: Connections we hold: (transport, host, port) -> our (host, port) on it.
OPEN = {
    ("tls", "10.1.2.3", 40001): ("127.0.0.1", 5061),
    ("udp", "192.0.2.9", 5060): ("0.0.0.0", 5060),
}


def _binding(user: str, contact: str, source: str) -> Binding:
    return Binding(
        aor=f"{user}@{DOMAIN}",
        contact=contact,
        expires_at=2_000_000.0,
        call_id=f"reg-{source}",
        cseq=1,
        source=source,
        user_agent="test",
    )


BOB_DESK = _binding("bob", "sip:bob@10.1.2.3:40001;transport=tls", "tls:10.1.2.3:40001")
BOB_HOME = _binding("bob", "sip:bob@192.0.2.9:5060", "udp:192.0.2.9:5060")
#: Registered, but its connection is gone: never a fork (RFC 5626).
BOB_GONE = _binding("bob", "sip:bob@10.1.9.9:40002;transport=tls", "tls:10.1.9.9:40002")
BINDINGS: dict[str, Sequence[Binding]] = {f"bob@{DOMAIN}": (BOB_DESK, BOB_GONE, BOB_HOME)}


def _zone(ip: str) -> str:
    return "office" if ip.startswith("10.1.") else "internet"


#: Stored classes of service (carol has none: the dial plan's default applies).
CLASSES = {"alice": "national", "bob": "international"}

LOOKUPS = Lookups(
    is_user=USERS.__contains__,
    bindings=lambda aor: BINDINGS.get(aor, ()),
    local_of=lambda t: OPEN.get((t.transport, t.host, t.port)),
    zone_of=_zone,
    stored_class=CLASSES.get,
)

ALICE = user_caller("alice", DOMAIN)


def _invite(*extra: str, from_: str = f"<sip:alice@{DOMAIN}>;tag=a1") -> Request:
    lines = [
        f"INVITE sip:bob@{DOMAIN} SIP/2.0",
        "Via: SIP/2.0/TLS 198.51.100.7:40001;branch=z9hG4bKa1",
        f"From: {from_}",
        f"To: <sip:bob@{DOMAIN}>",
        "Call-ID: c1",
        "CSeq: 1 INVITE",
        *extra,
        "Content-Length: 0",
    ]
    message = parse_message(("\r\n".join(lines) + "\r\n\r\n").encode())
    assert isinstance(message, Request)
    return message


def _route(caller: Caller, dialled: str) -> Route | Refusal:
    return route(caller, dialled, policy=POLICY, dialplan=PLAN, lookups=LOOKUPS)


# -- caller identity ------------------------------------------------------------------


def test_core_routing_user_caller_is_the_authenticated_user() -> None:
    assert ALICE.user == "alice"
    assert (ALICE.trunk, ALICE.uri) == (None, f"sip:alice@{DOMAIN}")


def test_core_routing_identity_of_the_user_is_no_refusal() -> None:
    request = _invite(f"P-Asserted-Identity: <sip:alice@{DOMAIN}>")
    assert identity_refusal(request, "alice", POLICY.domains) is None


@pytest.mark.parametrize(
    ("extra", "from_", "claimed"),
    [
        ((), f"<sip:bob@{DOMAIN}>;tag=a1", f"sip:bob@{DOMAIN}"),
        ((f"P-Asserted-Identity: <sip:bob@{DOMAIN}>",), f"<sip:alice@{DOMAIN}>;tag=a1", None),
    ],
)
def test_core_routing_identity_mismatch_is_403_with_its_warning(
    extra: tuple[str, ...], from_: str, claimed: str | None
) -> None:
    refusal = identity_refusal(_invite(*extra, from_=from_), "alice", POLICY.domains)
    assert refusal == Refusal(
        status=403,
        reason="Caller Identity Does Not Match",
        detail=f"authenticated as 'alice', claims {claimed or f'sip:bob@{DOMAIN}'}",
    )
    response = refusal_response(_invite(), refusal, DOMAIN)
    assert (response.status, response.reason) == (403, "Caller Identity Does Not Match")
    assert response.headers.get("warning") == f'399 {DOMAIN} "Caller Identity Does Not Match"'
    assert response.to.tag  # a final response to an INVITE creates no dialog but has a tag


def test_core_routing_trunk_caller_by_source_keeps_only_the_number() -> None:
    request = _invite(from_="<sip:+15551230000@sip.carrier.example>;tag=t1")
    assert trunk_for(POLICY.trunk_sources, "198.51.100.3") is CARRIER
    assert trunk_for(POLICY.trunk_sources, "::ffff:198.51.100.3") is CARRIER
    assert trunk_for(POLICY.trunk_sources, "198.51.100.16") is None  # outside the /28
    assert trunk_caller(request, CARRIER, DOMAIN) == Caller(
        user=None, trunk=CARRIER, uri=f"sip:+15551230000@{DOMAIN}"
    )


@pytest.mark.parametrize(
    ("from_", "number"),
    [
        ("<sip:+15551230000@carrier>;tag=t", "+15551230000"),
        ("<sip:02071234567@carrier>;tag=t", "02071234567"),
        ("<sip:carrier>;tag=t", "anonymous"),
        ("<tel:+15551230000>;tag=t", "anonymous"),
        ("<sip:%22evil%22@carrier>;tag=t", "anonymous"),
        (f"<sip:{'1' * 33}@carrier>;tag=t", "anonymous"),
    ],
)
def test_core_routing_caller_number_of_a_trunk_call(from_: str, number: str) -> None:
    assert caller_number(_invite(from_=from_)) == number


def test_core_routing_class_of_a_user_without_one_is_the_default() -> None:
    assert class_of(None, "national") == "national"
    assert class_of("international", "national") == "international"


# -- a user's calls -------------------------------------------------------------------


def test_core_routing_user_to_user_forks_to_every_reachable_contact() -> None:
    routed = _route(ALICE, "bob")
    assert isinstance(routed, Route)
    assert (routed.callee, routed.trunk) == ("bob", None)
    assert routed.destination is not None and routed.destination.kind == "internal"
    assert routed.forks == (
        Fork(
            request_uri="sip:bob@10.1.2.3:40001;transport=tls",
            to_uri=f"sip:bob@{DOMAIN}",
            target=Target(transport="tls", host="10.1.2.3", port=40001),
            local=LocalAddress(transport="tls", host="127.0.0.1", port=5061),
            # the office zone sets media_in_zone: its phones' SDP may name the zone
            media_peer=MediaPeer(source="10.1.2.3", networks=("10.1.0.0/16",)),
        ),
        Fork(
            request_uri="sip:bob@192.0.2.9:5060",
            to_uri=f"sip:bob@{DOMAIN}",
            target=Target(transport="udp", host="192.0.2.9", port=5060),
            local=LocalAddress(transport="udp", host="0.0.0.0", port=5060),
            media_peer=MediaPeer(source="192.0.2.9", networks=()),
        ),
    )


def test_core_routing_user_with_no_reachable_contact_is_480_no_answer() -> None:
    refusal = _route(ALICE, "carol")
    assert refusal == Refusal(
        status=480, reason="Temporarily Unavailable", callee="carol", disposition="no_answer"
    )
    assert isinstance(refusal, Refusal)
    response = refusal_response(_invite(), refusal, DOMAIN)
    assert (response.status, response.reason) == (480, "Temporarily Unavailable")
    assert response.headers.get("warning") is None


def test_core_routing_user_to_a_number_goes_to_its_trunk_with_credentials() -> None:
    routed = _route(ALICE, "02071234000")
    assert isinstance(routed, Route)
    assert (routed.callee, routed.trunk) == ("+442071234000", "carrier")
    assert routed.destination is not None and routed.destination.kind == "national"
    assert routed.forks == (
        Fork(
            request_uri="sip:+442071234000@sip.carrier.example",
            to_uri="sip:+442071234000@sip.carrier.example",
            target=Target(transport="tls", host="198.51.100.10", port=5061, trunk="carrier"),
            local=LocalAddress(transport="tls", host="127.0.0.1", port=5061),
            credentials=("acct", "trunk-secret"),
            media_peer=MediaPeer(source="198.51.100.10", networks=("198.51.100.0/28",)),
        ),
    )


def test_core_routing_number_beyond_the_class_of_service_is_403_with_warning() -> None:
    refusal = _route(ALICE, "0049301234567")
    assert refusal == Refusal(
        status=403,
        reason="international calls not allowed for class national",
        callee="+49301234567",
        detail="alice -> 0049301234567: international calls not allowed for class national",
        kind="international",
    )
    assert isinstance(refusal, Refusal)
    response = refusal_response(_invite(), refusal, DOMAIN)
    assert response.headers.get("warning") == (
        f'399 {DOMAIN} "international calls not allowed for class national"'
    )
    premium = _route(user_caller("bob", DOMAIN), "09001234567")
    assert isinstance(premium, Refusal)
    assert (premium.status, premium.reason, premium.callee) == (
        403,
        "premium-rate calls not allowed for class international",
        "+449001234567",
    )


def test_core_routing_number_no_trunk_routes_is_404_no_route() -> None:
    refusal = _route(user_caller("bob", DOMAIN), "0049301234567")
    assert refusal == Refusal(status=404, reason="No Route", callee="+49301234567")
    assert isinstance(refusal, Refusal)
    assert refusal_response(_invite(), refusal, DOMAIN).headers.get("warning") is None


@pytest.mark.parametrize(
    ("dialled", "status", "reason", "warning"),
    [
        ("dave", 404, "Not A Number", "not a telephone number"),
        ("0", 484, "Address Incomplete", "address incomplete"),
    ],
)
def test_core_routing_not_a_number_is_refused_with_the_rule_as_warning(
    dialled: str, status: int, reason: str, warning: str
) -> None:
    refusal = _route(ALICE, dialled)
    assert refusal == Refusal(status=status, reason=reason, warning=warning)
    assert isinstance(refusal, Refusal)
    response = refusal_response(_invite(), refusal, DOMAIN)
    assert (response.status, response.reason) == (status, reason)
    assert response.headers.get("warning") == f'399 {DOMAIN} "{warning}"'


# -- a device restricted by the endpoint policy (issue 18 `restrict`) ----------------

CVE = "firmware 1.0.2.25 affected by CVE-2026-2329; upgrade to 1.0.7.81"
RESTRICTED = replace(ALICE, restricted=CVE)


def test_core_routing_restricted_device_still_calls_an_internal_user() -> None:
    routed = _route(RESTRICTED, "bob")
    assert isinstance(routed, Route)
    assert (routed.callee, routed.trunk, len(routed.forks)) == ("bob", None, 2)
    assert routed == _route(ALICE, "bob")


def test_core_routing_restricted_device_still_calls_an_emergency_number() -> None:
    routed = _route(RESTRICTED, "112")
    assert isinstance(routed, Route)
    assert routed.destination is not None and routed.destination.kind == "emergency"
    assert (routed.callee, routed.trunk) == ("112", "carrier")
    assert routed.forks[0].request_uri == "sip:112@sip.carrier.example"


@pytest.mark.parametrize(
    ("dialled", "callee", "kind"),
    [
        ("02071234000", "+442071234000", "national"),
        ("0049301234567", "+49301234567", "international"),
        ("09001234567", "+449001234567", "premium-rate"),
        ("+44112", "+44112", "national"),
    ],
)
def test_core_routing_restricted_device_calling_out_is_403_naming_the_reason(
    dialled: str, callee: str, kind: str
) -> None:
    refusal = _route(RESTRICTED, dialled)
    warning = f"device restricted by the endpoint policy: {CVE}; only internal and emergency calls"
    assert refusal == Refusal(
        status=403,
        reason="Device Restricted",
        callee=callee,
        warning=warning,
        detail=f"alice -> {dialled}: device restricted ({CVE})",
        kind=kind,  # type: ignore[arg-type]
    )
    assert isinstance(refusal, Refusal)
    response = refusal_response(_invite(), refusal, DOMAIN)
    assert (response.status, response.reason) == (403, "Device Restricted")
    assert response.headers.get("warning") == f'399 {DOMAIN} "{warning}"'


def test_core_routing_unrestricted_device_calls_out_as_its_class_allows() -> None:
    routed = _route(replace(ALICE, restricted=None), "02071234000")
    assert isinstance(routed, Route) and routed.trunk == "carrier"


def test_core_routing_restriction_reason_past_max_warning_text_keeps_the_rule() -> None:
    reason = "x" * (MAX_WARNING_TEXT + 50)
    refusal = _route(replace(ALICE, restricted=reason), "02071234000")
    assert isinstance(refusal, Refusal) and refusal.warning is not None
    prefix = "device restricted by the endpoint policy: "
    suffix = "; only internal and emergency calls"
    assert refusal.warning == prefix + "x" * (MAX_WARNING_TEXT - len(prefix) - len(suffix)) + suffix
    assert len(refusal.warning) == MAX_WARNING_TEXT
    response = refusal_response(_invite(), refusal, DOMAIN)
    assert response.headers.get("warning") == f'399 {DOMAIN} "{refusal.warning}"'
    # Any Warning text is cut at the limit (a reason phrase at MAX_PHRASE).
    longer = Refusal(status=403, reason="r" * 200, warning="w" * (MAX_WARNING_TEXT + 1))
    cut = refusal_response(_invite(), longer, DOMAIN)
    assert cut.reason == "r" * MAX_PHRASE
    assert cut.headers.get("warning") == f'399 {DOMAIN} "{"w" * MAX_WARNING_TEXT}"'


# -- a trunk's calls ------------------------------------------------------------------


def _from_trunk(dialled: str) -> Route | Refusal:
    request = _invite(from_="<sip:+15551230000@sip.carrier.example>;tag=t1")
    return _route(trunk_caller(request, CARRIER, DOMAIN), dialled)


@pytest.mark.parametrize("dialled", ["+442071234567", "442071234567", "02071234567"])
def test_core_routing_trunk_call_to_a_did_forks_to_its_user(dialled: str) -> None:
    routed = _from_trunk(dialled)
    assert isinstance(routed, Route)
    assert (routed.callee, routed.trunk, routed.destination) == ("bob", "carrier", None)
    assert [f.request_uri for f in routed.forks] == [BOB_DESK.contact, BOB_HOME.contact]


@pytest.mark.parametrize("dialled", ["+442071234000", "bob", "+15551230000"])
def test_core_routing_trunk_call_to_anything_but_a_did_is_404_unknown_did(dialled: str) -> None:
    # Not even a local user by name, nor a number another trunk routes: no relaying.
    assert _from_trunk(dialled) == Refusal(status=404, reason="Unknown DID")


def test_core_routing_trunk_call_to_an_offline_did_user_is_480() -> None:
    offline = Lookups(
        is_user=USERS.__contains__,
        bindings=lambda aor: (),
        local_of=LOOKUPS.local_of,
        zone_of=_zone,
        stored_class=CLASSES.get,
    )
    request = _invite(from_="<sip:+15551230000@sip.carrier.example>;tag=t1")
    refusal = route(
        trunk_caller(request, CARRIER, DOMAIN),
        "+442071234567",
        policy=POLICY,
        dialplan=PLAN,
        lookups=offline,
    )
    assert refusal == Refusal(
        status=480, reason="Temporarily Unavailable", callee="bob", disposition="no_answer"
    )


# -- answering a refusal -----------------------------------------------------------


def test_core_routing_refusal_words_are_one_safe_line_with_no_double_quote() -> None:
    refusal = Refusal(status=403, reason='blocked: "premium"\r\nX-Evil: 1' + "x" * 200)
    response = refusal_response(_invite(), refusal, DOMAIN)
    assert response.reason == ('blocked: "premium"X-Evil: 1' + "x" * 200)[:MAX_PHRASE]
    text = ("blocked: 'premium'X-Evil: 1" + "x" * 200)[:MAX_WARNING_TEXT]
    assert response.headers.get("warning") == f'399 {DOMAIN} "{text}"'


def test_core_routing_media_peer_of_a_trunk_names_its_sources() -> None:
    peer = media_peer("198.51.100.10", POLICY, "internet", CARRIER)
    assert peer == MediaPeer(source="198.51.100.10", networks=("198.51.100.0/28",))
    assert media_peer("10.1.2.3", POLICY, "office") == MediaPeer(
        source="10.1.2.3", networks=("10.1.0.0/16",)
    )


def test_core_routing_policy_from_config() -> None:
    assert POLICY.domain == DOMAIN
    assert POLICY.trunks == {"carrier": CARRIER}
    assert POLICY.tls_local == LocalAddress(transport="tls", host="127.0.0.1", port=5061)
    assert POLICY.default_class == "national"
    assert isinstance(CARRIER, TrunkSection)


def test_core_routing_class_is_read_after_the_dial_plan_looked_the_callee_up() -> None:
    # The shell re-reads its user table when the dial plan asks about a name it does
    # not know; a class changed meanwhile (`voipsec user class`) must count at once.
    classes = {"alice": "national"}

    def is_user(name: str) -> bool:
        classes["alice"] = "international"  # the re-read saw the CLI's change
        return name in USERS

    lookups = Lookups(
        is_user=is_user,
        bindings=LOOKUPS.bindings,
        local_of=LOOKUPS.local_of,
        zone_of=_zone,
        stored_class=classes.get,
    )
    routed = route(ALICE, "0049301234567", policy=POLICY, dialplan=PLAN, lookups=lookups)
    assert routed == Refusal(status=404, reason="No Route", callee="+49301234567")


def test_core_routing_user_with_no_stored_class_gets_the_default() -> None:
    refusal = _route(user_caller("carol", DOMAIN), "0049301234567")
    assert isinstance(refusal, Refusal)
    assert refusal.reason == "international calls not allowed for class national"

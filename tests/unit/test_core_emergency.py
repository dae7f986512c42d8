"""Emergency calls always go through (voipsec.core.emergency, issue 18 item 4).

A safety requirement, tested on plain data: every default emergency number, dialled
with separators, reaches the trunk for every class of service (the most restricted,
"internal", and one nobody knows); the same digits behind a prefix are no emergency
number and obey the class of service; the config's limits; the fraud engine sees the
call but cannot refuse it; every emergency call is alerted and marked in the CDR.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from voipsec.call_records import EMERGENCY_RULE, CallRecords
from voipsec.config import CLASSES_OF_SERVICE, Config, ConfigError, validate
from voipsec.core.b2bua import Fork, Target
from voipsec.core.dialplan import Destination, Dialplan, allows, refusal_reason
from voipsec.core.emergency import (
    DEFAULT_EMERGENCY_NUMBERS,
    EMERGENCY,
    MAX_EMERGENCY_DIALLED,
    MAX_EMERGENCY_DIGITS,
    MAX_EMERGENCY_NUMBERS,
    EmergencyNumbers,
    exempt,
    restricted_allows,
)
from voipsec.core.routing import Lookups, Refusal, Route, RoutingPolicy, route, user_caller
from voipsec.events import AlertRaised, Event, EventBus
from voipsec.media.destinations import MediaPeer
from voipsec.sip.message import Request, parse_message
from voipsec.sip.uac import LocalAddress
from voipsec.storage import Store

from .fakes import FakeClock, FakeFlow

DOMAIN = "example.com"
CARRIER = {
    "name": "carrier",
    "address": "tls:198.51.100.10:5061",
    "domain": "sip.carrier.example",
    "prefixes": ["+44"],
}
PSAP = {"name": "psap", "address": "tls:198.51.100.20:5061", "domain": "psap.example"}


def _config(**calls: object) -> Config:
    return Config.model_validate(
        {
            "sip": {"domain": DOMAIN, "listen": ["tls:127.0.0.1:5061"]},
            "trunks": [CARRIER, PSAP],
            "calls": calls,
        }
    )


def _route(dialled: str, user_class: str, config: Config | None = None) -> Route | Refusal:
    config = config or _config()
    return route(
        user_caller("alice", DOMAIN),
        dialled,
        policy=RoutingPolicy.from_config(config, frozenset({DOMAIN})),
        dialplan=Dialplan.from_config(config, premium_prefixes=("+4490",)),
        lookups=Lookups(
            is_user={"alice", "bob", "112"}.__contains__,
            bindings=lambda aor: (),
            local_of=lambda target: None,
            zone_of=lambda ip: "internet",
            stored_class={"alice": user_class}.get,
        ),
    )


def _fork(number: str, trunk: str = "carrier") -> Fork:
    host = "198.51.100.10" if trunk == "carrier" else "198.51.100.20"
    domain = "sip.carrier.example" if trunk == "carrier" else "psap.example"
    return Fork(
        request_uri=f"sip:{number}@{domain}",
        to_uri=f"sip:{number}@{domain}",
        target=Target(transport="tls", host=host, port=5061, trunk=trunk),
        local=LocalAddress(transport="tls", host="127.0.0.1", port=5061),
        credentials=None,
        media_peer=MediaPeer(source=host, networks=()),
    )


# -- the decision -----------------------------------------------------------------------


@pytest.mark.parametrize("number", DEFAULT_EMERGENCY_NUMBERS)
@pytest.mark.parametrize("user_class", [*CLASSES_OF_SERVICE, "no-such-class"])
def test_emergency_every_default_number_reaches_the_trunk_for_every_class(
    number: str, user_class: str
) -> None:
    """112, 911, 999 and 000 go to the trunk of +44<number>, as dialled (no +44, no
    national prefix added), whatever the caller's class, even one we do not know."""
    routed = _route(number, user_class)
    assert routed == Route(
        callee=number,
        trunk="carrier",
        forks=(_fork(number),),
        destination=Destination(
            dialled=number, e164=None, kind="emergency", user=None, trunk="carrier"
        ),
    )


@pytest.mark.parametrize("dialled", ["1 1 2", "1-1-2", "(112)", "1.1.2", "%20112", " 112 "])
def test_emergency_separators_are_dropped_like_the_dial_plan_does(dialled: str) -> None:
    routed = _route(dialled, "internal")
    assert isinstance(routed, Route)
    assert (routed.callee, routed.forks) == ("112", (_fork("112"),))
    assert EmergencyNumbers.of(DEFAULT_EMERGENCY_NUMBERS).match(dialled) == "112"


@pytest.mark.parametrize(
    ("dialled", "callee"),
    [
        ("+44112", "+44112"),
        ("0112", "+44112"),
        ("0044 112", "+44112"),
        ("+44 999", "+44999"),
        ("9112", "+449112"),  # an outside-line digit is the dial plan's business
        ("1120", "+441120"),
    ],
)
def test_emergency_digits_behind_a_prefix_obey_the_class_of_service(
    dialled: str, callee: str
) -> None:
    """Only the number itself bypasses the class: with a prefix it is an ordinary
    number, refused to the most restricted class (no way around the class of service)."""
    assert EmergencyNumbers.of(DEFAULT_EMERGENCY_NUMBERS).match(dialled) is None
    refusal = _route(dialled, "internal")
    assert isinstance(refusal, Refusal)
    assert (refusal.status, refusal.callee) == (403, callee)
    assert refusal.kind in ("national", "premium-rate")
    assert refusal.reason.endswith("calls not allowed for class internal")


def test_emergency_plus_number_is_no_emergency_number() -> None:
    """ "+112" is an international number of country 1 ("+1 12"), never the short code."""
    assert EmergencyNumbers.of(DEFAULT_EMERGENCY_NUMBERS).match("+112") is None
    refusal = _route("+112", "internal")
    assert isinstance(refusal, Refusal)
    assert (refusal.status, refusal.reason) == (
        403,
        "international calls not allowed for class internal",
    )


def test_emergency_national_number_still_refused_for_the_internal_class() -> None:
    refusal = _route("02071234567", "internal")
    assert isinstance(refusal, Refusal)
    assert (refusal.status, refusal.reason, refusal.kind) == (
        403,
        "national calls not allowed for class internal",
        "national",
    )


def test_emergency_number_wins_over_a_local_user_of_that_name() -> None:
    routed = _route("112", "internal")
    assert isinstance(routed, Route) and routed.trunk == "carrier"


def test_emergency_trunk_setting_overrides_the_dial_plan_route() -> None:
    routed = _route("999", "internal", _config(emergency_trunk="psap"))
    assert isinstance(routed, Route)
    assert (routed.trunk, routed.forks) == ("psap", (_fork("999", "psap"),))


def test_emergency_without_a_route_is_503_marked_emergency() -> None:
    """No trunk takes +44 and none is set: the call fails loudly (the shell logs
    CRITICAL and alerts on kind "emergency"), never as a silent 404."""
    config = Config.model_validate(
        {"sip": {"domain": DOMAIN, "listen": ["tls:127.0.0.1:5061"]}, "trunks": [PSAP]}
    )
    refusal = _route("112", "premium-rate", config)
    assert refusal == Refusal(
        status=503,
        reason="Emergency Call Not Routable",
        callee="112",
        disposition="failed",
        detail="alice -> emergency 112: no trunk routes it",
        kind="emergency",
    )


def test_emergency_empty_list_turns_the_bypass_off() -> None:
    refusal = _route("999", "internal", _config(emergency_numbers=[]))
    assert isinstance(refusal, Refusal)
    assert (refusal.status, refusal.callee, refusal.kind) == (403, "+44999", "national")


def test_emergency_calls_from_a_trunk_are_not_relayed() -> None:
    """A carrier's call to 112 is for one of our DIDs or nobody: no trunk-to-trunk path."""
    config = _config()
    trunk = config.trunks[0]
    from voipsec.core.routing import trunk_caller

    request = parse_message(
        (
            f"INVITE sip:112@{DOMAIN} SIP/2.0\r\nVia: SIP/2.0/TLS 198.51.100.10;branch=z9hG4bK1\r\n"
            f"From: <sip:+442071234567@x>;tag=1\r\nTo: <sip:112@{DOMAIN}>\r\nCall-ID: t1\r\n"
            "CSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
        ).encode()
    )
    assert isinstance(request, Request)
    refusal = route(
        trunk_caller(request, trunk, DOMAIN),
        "112",
        policy=RoutingPolicy.from_config(config, frozenset({DOMAIN})),
        dialplan=Dialplan.from_config(config, premium_prefixes=()),
        lookups=Lookups(
            is_user=lambda n: False,
            bindings=lambda aor: (),
            local_of=lambda t: None,
            zone_of=lambda ip: "internet",
            stored_class=lambda u: None,
        ),
    )
    assert refusal == Refusal(status=404, reason="Unknown DID")


def test_emergency_longer_than_max_dialled_is_not_looked_at() -> None:
    numbers = EmergencyNumbers.of(["112"])
    at_limit = "1" + " " * (MAX_EMERGENCY_DIALLED - 3) + "12"
    assert len(at_limit) == MAX_EMERGENCY_DIALLED
    assert numbers.match(at_limit) == "112"
    assert numbers.match(at_limit + " ") is None


@pytest.mark.parametrize("dialled", ["", "   ", "11\uff12", "112;x", "11a2", "*112", "112#"])
def test_emergency_non_digits_never_match(dialled: str) -> None:
    assert EmergencyNumbers.of(DEFAULT_EMERGENCY_NUMBERS).match(dialled) is None


def test_emergency_class_checks_later_parts_call() -> None:
    """What the device quarantine (issue 18 "restrict") and any later limit build on."""
    assert all(allows(c, "emergency") for c in CLASSES_OF_SERVICE)  # type: ignore[arg-type]
    assert allows("no-such-class", "emergency")  # type: ignore[arg-type]
    emergency = Destination(dialled="112", e164=None, kind="emergency", user=None, trunk=None)
    assert refusal_reason("internal", emergency) is None
    assert [k for k in (*CLASSES_OF_SERVICE, EMERGENCY) if restricted_allows(k)] == [  # type: ignore[arg-type]
        "internal",
        "emergency",
    ]
    assert [k for k in (*CLASSES_OF_SERVICE, EMERGENCY) if exempt(k)] == ["emergency"]  # type: ignore[arg-type]


# -- configuration ----------------------------------------------------------------------


def test_emergency_config_defaults() -> None:
    calls = Config().calls
    assert (calls.emergency_numbers, calls.emergency_trunk) == (["112", "911", "999", "000"], "")


@pytest.mark.parametrize(
    ("numbers", "error"),
    [
        (["+112"], "'+112' is not an emergency number (2 to 8 digits, no '+')"),
        (["1"], "'1' is not an emergency number (2 to 8 digits, no '+')"),
        (["1" * (MAX_EMERGENCY_DIGITS + 1)], "'111111111' is not an emergency number"),
        (["11\uff12"], "'11\uff12' is not an emergency number"),
        (["1 12"], "'1 12' is not an emergency number"),
        (["112", "112"], "an emergency number is listed twice"),
        (
            [str(100 + n) for n in range(MAX_EMERGENCY_NUMBERS + 1)],
            f"at most {MAX_EMERGENCY_NUMBERS} emergency numbers",
        ),
    ],
)
def test_emergency_config_limits(numbers: list[str], error: str) -> None:
    with pytest.raises(ConfigError) as info:
        validate({"calls": {"emergency_numbers": numbers}}, Path("voipsec.toml"))
    (line,) = info.value.problems
    assert line.startswith(f"voipsec.toml: calls.emergency_numbers: {error}")


def test_emergency_config_at_the_limits_and_empty_are_accepted() -> None:
    at_most = [str(10_000_000 + n) for n in range(MAX_EMERGENCY_NUMBERS)]
    calls = validate({"calls": {"emergency_numbers": at_most}}, Path("v.toml")).calls
    assert len(calls.emergency_numbers) == MAX_EMERGENCY_NUMBERS
    assert validate({"calls": {"emergency_numbers": ["17", "110"]}}, Path("v.toml"))
    assert (
        validate({"calls": {"emergency_numbers": []}}, Path("v.toml")).calls.emergency_numbers == []
    )


def test_emergency_config_trunk_must_exist() -> None:
    with pytest.raises(ConfigError) as info:
        validate({"calls": {"emergency_trunk": "psap"}}, Path("voipsec.toml"))
    assert info.value.problems == [
        "voipsec.toml: (top level): calls.emergency_trunk: no trunk named 'psap'"
    ]


# -- the shell's records: fraud, alert, CDR ---------------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "voipsec.db")
    yield s
    s.close()


def _records(store: Store, tmp_path: Path, events: list[Event]) -> CallRecords:
    bus = EventBus()
    bus.subscribe(events.append)
    return CallRecords(
        config=_config(),
        data_dir=tmp_path,
        store=store,
        events=bus,
        clock=FakeClock(),
        media_report=lambda call, done: done([]),
    )


def _invite(number: str) -> Request:
    message = parse_message(
        (
            f"INVITE sip:{number}@{DOMAIN} SIP/2.0\r\n"
            "Via: SIP/2.0/TLS 192.0.2.10:40000;branch=z9hG4bKem1\r\n"
            f"From: <sip:alice@{DOMAIN}>;tag=a1\r\nTo: <sip:{number}@{DOMAIN}>\r\n"
            f"Call-ID: em-{number}\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
        ).encode()
    )
    assert isinstance(message, Request)
    return message


def test_emergency_a_suspended_user_still_gets_through_the_fraud_engine(
    store: Store, tmp_path: Path
) -> None:
    """The fraud engine sees the emergency call (it is checked and counted) but cannot
    refuse it nor shorten it; the same user's national call is refused."""
    events: list[Event] = []
    records = _records(store, tmp_path, events)
    assert records.fraud is not None
    records.fraud.mirror_suspension("alice", "toll-burst", 1.0, "alice: 40 calls a minute")
    alice = user_caller("alice", DOMAIN)
    emergency = _route("112", "internal")
    assert isinstance(emergency, Route)
    checks = records.fraud.statistics().checks
    admission = records.admit(_invite("112"), alice, "112", emergency, "192.0.2.10", 5.0)
    assert (admission.refusal, admission.max_duration, admission.tracked) == (None, None, "")
    assert records.fraud.statistics().checks == checks + 1
    national = _route("02071234567", "national")
    assert isinstance(national, Route)
    refused = records.admit(_invite("02071234567"), alice, "0", national, "192.0.2.10", 6.0)
    assert refused.refusal is not None
    assert refused.refusal.reason == "user suspended by fraud rule toll-burst"


def test_emergency_call_alert_names_caller_source_and_number(store: Store, tmp_path: Path) -> None:
    events: list[Event] = []
    records = _records(store, tmp_path, events)
    alice = user_caller("alice", DOMAIN)
    records.emergency(alice, "112", ("192.0.2.10", 40000), 7.0, trunk="carrier")
    records.emergency(alice, "999", ("192.0.2.10", 40000), 8.0, trunk=None)
    assert events == [
        AlertRaised(
            what="emergency call",
            who="alice",
            why="dialled 112 from 192.0.2.10:40000",
            action="routed to trunk carrier",
            rule=EMERGENCY_RULE,
            time=7.0,
            source="192.0.2.10",
        ),
        AlertRaised(
            what="emergency call",
            who="alice",
            why="dialled 999 from 192.0.2.10:40000; no trunk routes it",
            action="failed (503)",
            rule="emergency_call",
            time=8.0,
            source="192.0.2.10",
        ),
    ]


def test_emergency_unroutable_call_cdr_is_marked_emergency(store: Store, tmp_path: Path) -> None:
    records = _records(store, tmp_path, [])
    records.cdr.start()
    refusal = Refusal(
        status=503, reason="Emergency Call Not Routable", callee="112", disposition="failed",
        kind="emergency",
    )  # fmt: skip
    records.refused(FakeFlow(), _invite("112"), user_caller("alice", DOMAIN), "112", refusal, 9.0)
    assert records.cdr.stop() == 0
    (row,) = store.cdrs()
    assert (row.kind, row.callee, row.disposition, row.status) == (
        "emergency",
        "112",
        "failed",
        503,
    )


def test_emergency_serve_warns_at_start_only_when_the_list_is_empty(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from voipsec.server import _warn_without_emergency_numbers

    with caplog.at_level(logging.WARNING, logger="voipsec"):
        _warn_without_emergency_numbers(_config())
        assert caplog.records == []
        _warn_without_emergency_numbers(_config(emergency_numbers=[]))
    [record] = caplog.records
    assert (record.levelname, record.getMessage()) == (
        "WARNING",
        "calls.emergency_numbers is empty: emergency calls get no bypass of classes "
        "of service, fraud limits or device restrictions",
    )

"""The IDS rule engine (voipsec.edge.ids): default rules at and below their thresholds,
sliding windows, escalation, zones, rule-file errors, memory limits and replayed
sipvicious captures (tests/data/ids/SOURCE.md). Time is a number the tests pass in.
"""

from __future__ import annotations

import inspect
import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from voipsec.edge.ids import (
    MAX_KEY_LENGTH,
    MAX_THRESHOLD_COUNT,
    MAX_TRACKED_KEYS,
    MAX_USER_AGENT_MEMO,
    AlertAction,
    BanAction,
    Drop,
    IdsAction,
    IdsEngine,
    Observation,
    Reply,
    Rule,
    Threshold,
    is_numeric_call_id,
    is_sipvicious_branch,
    is_sipvicious_from_tag,
)
from voipsec.edge.ids_loader import RuleError, default_rules_path, load_rules
from voipsec.sip import Request, SipUri, parse_message

DATA = Path(__file__).resolve().parent.parent / "data" / "ids"
ATTACKER = "203.0.113.66"
PHONE = "198.51.100.7"
ZONE = "internet"
UA_PHONE = "Yealink SIP-T46S 66.86.0.15"


def engine() -> IdsEngine:
    return IdsEngine(load_rules([default_rules_path()]))


def request(
    method: str = "REGISTER",
    *,
    source: str = PHONE,
    zone: str = ZONE,
    user_agent: str | None = UA_PHONE,
    from_tag: str | None = "a73kszlfl",
    call_id: str | None = "3848276298220188511@198.51.100.7",
    branch: str | None = "z9hG4bK776asdhds",
    to_user: str | None = "alice",
    headers: dict[str, str] | None = None,
    compact: bool = False,
) -> Observation:
    """A request as a well-behaved phone sends it; change what a test needs."""
    return Observation(
        source=source,
        zone=zone,
        kind="request",
        method=method,
        user_agent=user_agent,
        from_tag=from_tag,
        call_id=call_id,
        branch=branch,
        to_user=to_user,
        headers=headers or {},
        compact=compact,
    )


def response(
    status: int,
    method: str = "REGISTER",
    *,
    source: str = PHONE,
    zone: str = ZONE,
    to_user: str = "alice",
    target_known: bool = True,
    auth_user: str | None = None,
    auth_failed: bool | None = None,
) -> Observation:
    """An answer we sent; a 403 is a failed credential check unless told otherwise."""
    return Observation(
        source=source,
        zone=zone,
        kind="response_sent",
        method=method,
        status=status,
        to_user=to_user,
        target_known=target_known,
        auth_user=auth_user,
        auth_failed=status == 403 if auth_failed is None else auth_failed,
    )


def malformed(source: str = ATTACKER) -> Observation:
    return Observation(source=source, zone=ZONE, kind="malformed")


def feed(e: IdsEngine, obs: Observation, n: int, start: float = 0.0, step: float = 0.0) -> None:
    """Feed ``obs`` ``n`` times, asserting that none of them gives an action."""
    for i in range(n):
        assert e.observe(obs, start + i * step) == [], f"observation {i + 1} fired"


def observation_of(data: bytes, source: str = ATTACKER, zone: str = ZONE) -> Observation:
    """Build the observation of a captured request the way the server does."""
    message = parse_message(data)
    assert isinstance(message, Request)
    headers: dict[str, str] = {}
    for h in message.headers:
        headers.setdefault(h.key, h.value)
    to_uri = message.to.uri
    return Observation(
        source=source,
        zone=zone,
        kind="request",
        method=message.method,
        user_agent=headers.get("user-agent"),
        from_tag=message.from_.tag,
        call_id=message.call_id,
        branch=message.top_via.branch,
        to_user=to_uri.user if isinstance(to_uri, SipUri) else None,
        headers=headers,
        compact=any(len(h.name) == 1 for h in message.headers),
    )


def capture(name: str) -> bytes:
    return (DATA / name).read_bytes()


def without_user_agent(data: bytes, replacement: bytes | None = None) -> bytes:
    lines = data.split(b"\r\n")
    out = [
        (b"User-Agent: " + replacement if replacement is not None else None)
        if line.lower().startswith(b"user-agent:")
        else line
        for line in lines
    ]
    return b"\r\n".join(line for line in out if line is not None)


def scanner_ban(rule: str, detail: str, source: str = ATTACKER) -> list[IdsAction]:
    return [
        AlertAction(rule=rule, key=source, source=source, detail=detail),
        BanAction(rule=rule, source=source, seconds=3600),
        Drop(rule=rule),
    ]


# -- the shipped ruleset ---------------------------------------------------------------


def test_ids_default_rules_names_in_order() -> None:
    assert [r.name for r in load_rules([default_rules_path()])] == [
        "scanner-user-agent",
        "sipvicious-from-tag",
        "sipvicious-call-id-branch",
        "sipvicious-compact",
        "options-sweep",
        "extension-enumeration",
        "password-guessing-source",
        "password-guessing-target",
        "invite-flood",
        "register-flood",
        "malformed-burst",
        "turn-password-guessing-source",
        "turn-password-guessing-target",
    ]


def test_ids_default_rules_path_is_in_the_package() -> None:
    path = default_rules_path()
    assert path.parts[-3:] == ("edge", "rules", "default.yaml")
    assert path.is_file()


@pytest.mark.parametrize(
    "user_agent",
    [
        "friendly-scanner",
        "FRIENDLY-SCANNER",
        "sipvicious",
        "SIPVicious 0.3.3",
        "sipcli/v1.8",
        "VaxSIPUserAgent/3.1",
        "pplsip",
        "sundayddr",
        "sip-scan",
        "SIPScan 1.0",
        "iWar",
        "SIVuS",
        "smap",
        "Gulp",
    ],
)
def test_ids_scanner_user_agent_bans_at_first_packet(user_agent: str) -> None:
    actions = engine().observe(request("OPTIONS", source=ATTACKER, user_agent=user_agent), 0.0)
    assert actions == scanner_ban("scanner-user-agent", f"user agent {user_agent!r}")


@pytest.mark.parametrize(
    "user_agent",
    [
        UA_PHONE,
        "baresip v1.0.0 (x86_64/linux)",
        "Linphone/5.2.0 (belle-sip/5.2.0)",
        "Zoiper rv2.10.19.7",
        "MicroSIP/3.21.3",
        "Grandstream GXP2170 1.0.11.23",
        "Asterisk PBX 20.5.0",
        "sipsak 0.9.8",
        "Bria 6 release 6.5.3",
        "Gulpfish phone",
    ],
)
def test_ids_ordinary_user_agent_passes(user_agent: str) -> None:
    assert engine().observe(request(user_agent=user_agent), 0.0) == []


# -- fingerprints ----------------------------------------------------------------------

#: From tags in the captures of tests/data/ids (svmap, svwar, svcrack guesses).
CAPTURED_TAGS = [
    "3766303030303031336537660133343936323733333239",  # svmap: 7f0000013e7f \x01 3496273329
    "3130300131343332393534333738",  # svwar: 100 \x01 1432954378
    "3130303a3130300132373836303237353130",  # svcrack: 100:100 \x01 2786027510
    "3206210844",  # svcrack's fixed tag of its first REGISTER
]


@pytest.mark.parametrize("tag", CAPTURED_TAGS)
def test_ids_sipvicious_from_tag_matches_captures(tag: str) -> None:
    assert is_sipvicious_from_tag(tag)


@pytest.mark.parametrize(
    "tag",
    [
        "87c3e3320b0282d3",  # baresip (captured)
        "87c3e3010b0282d3",  # hex with a 0x01 byte, not sipvicious' shape
        "3130300131343332393534333738ff",  # trailing byte after the digits
        "0131343332",  # nothing before the 0x01
        "31303001",  # no digits after it
        "313030013131313131313131313131",  # 11 digits: more than getrandbits(32) gives
        "3130300134323934393637323936",  # 10 digits but 4294967296 = 2**32
        "313030013132333435",  # 5 digits: too few to tell from chance
        "31303001303132333435",  # a leading zero: not str() of a number
        "3130300101313233",  # two 0x01 bytes
        "ff300131",  # text not UTF-8
        "0a300131",  # text not printable
        "313",  # odd length
        "25952SIPpTag001",  # SIPp
        "",
    ],
)
def test_ids_sipvicious_from_tag_rejects_other_tags(tag: str) -> None:
    assert not is_sipvicious_from_tag(tag)


def test_ids_sipvicious_from_tag_false_positive_rate_of_random_hex_tags() -> None:
    # 8 to 32 hex digits, as baresip, Linphone and most phones make them: about 3% of
    # these hold a 0x01 byte; none of 200,000 has sipvicious' shape (with "0x01 then
    # any digits", 5 of them did).
    rng = random.Random(4475)
    tags = [rng.randbytes(rng.choice((4, 8, 16))).hex() for _ in range(200_000)]
    assert sum(b"\x01" in bytes.fromhex(t) for t in tags) > 2000
    assert [t for t in tags if is_sipvicious_from_tag(t)] == []


@pytest.mark.parametrize(
    ("branch", "expected"),
    [
        ("z9hG4bK-3242679912", True),  # svmap capture
        ("z9hG4bK-1", True),
        ("z9hG4bK-12345678901", False),  # 11 digits
        ("z9hG4bK-25952-1-0", False),  # SIPp
        ("z9hG4bKfdffbf6df536914b", False),  # baresip
        ("z9hG4bK776asdhds", False),
        ("z9hG4bK-", False),
        ("z9hg4bk-1234", False),
    ],
)
def test_ids_sipvicious_branch(branch: str, expected: bool) -> None:
    assert is_sipvicious_branch(branch) is expected


@pytest.mark.parametrize(
    ("call_id", "expected"),
    [
        ("566444442262142759428646", True),
        ("1110963735", True),
        ("1-25952@127.0.0.1", False),
        ("41589de8d27692a7", False),
        ("١٢٣", False),  # Arabic-Indic digits are digits, not ASCII
        ("", False),
    ],
)
def test_ids_numeric_call_id(call_id: str, expected: bool) -> None:
    assert is_numeric_call_id(call_id) is expected


def test_ids_from_tag_fingerprint_bans_at_first_packet() -> None:
    obs = request(source=ATTACKER, from_tag=CAPTURED_TAGS[1])
    assert engine().observe(obs, 0.0) == scanner_ban(
        "sipvicious-from-tag", "fingerprint sipvicious_from_tag"
    )


def test_ids_call_id_and_branch_fire_at_third_packet_in_10_s() -> None:
    e = engine()
    obs = request(source=ATTACKER, call_id="1110963735", branch="z9hG4bK-557383166")
    feed(e, obs, 2, step=4.0)
    assert e.observe(obs, 9.9) == scanner_ban(
        "sipvicious-call-id-branch",
        "fingerprint numeric_call_id+sipvicious_branch; 3 within 10 s per source",
    )


def test_ids_call_id_and_branch_window_slides() -> None:
    e = engine()
    obs = request(source=ATTACKER, call_id="1110963735", branch="z9hG4bK-557383166")
    # At t=10 the match of t=0 has left the 10 s window: 2 in the window, not 3.
    feed(e, obs, 1, start=0.0)
    feed(e, obs, 1, start=5.0)
    feed(e, obs, 1, start=10.0)
    feed(e, obs, 1, start=15.0)
    assert e.observe(obs, 19.0)[-1] == Drop(rule="sipvicious-call-id-branch")


def test_ids_numeric_call_id_alone_never_fires() -> None:
    feed(engine(), request(call_id="1110963735"), 50)


def test_ids_compact_without_user_agent_and_sipvicious_ids_bans_at_first_packet() -> None:
    obs = request(
        "OPTIONS",
        source=ATTACKER,
        user_agent=None,
        compact=True,
        call_id="56880402167023423542469",
        branch="z9hG4bK-1249109724",
    )
    assert engine().observe(obs, 0.0) == scanner_ban(
        "sipvicious-compact",
        "fingerprint compact_no_user_agent+numeric_call_id+sipvicious_branch",
    )


def test_ids_compact_without_user_agent_alone_passes() -> None:
    feed(engine(), request(user_agent=None, compact=True), 50)


# -- reconnaissance and guessing -------------------------------------------------------


def test_ids_options_sweep_fires_past_20_in_10_s() -> None:
    e = engine()
    obs = request("OPTIONS", source=ATTACKER)
    feed(e, obs, 20, step=0.45)
    assert e.observe(obs, 9.9) == [
        AlertAction(
            rule="options-sweep",
            key=ATTACKER,
            source=ATTACKER,
            detail="OPTIONS; 21 within 10 s per source",
        ),
        BanAction(rule="options-sweep", source=ATTACKER, seconds=3600),
        Drop(rule="options-sweep"),
    ]


def test_ids_options_sweep_window_slides() -> None:
    e = engine()
    obs = request("OPTIONS", source=ATTACKER)
    feed(e, obs, 20, step=0.5)  # t = 0 .. 9.5
    feed(e, obs, 1, start=10.0)  # t=0 has left: still 20 in the window
    feed(e, obs, 1, start=10.5)
    assert e.observe(obs, 10.9)[0].rule == "options-sweep"


def test_ids_extension_enumeration_fires_past_10_unknown_users_in_60_s() -> None:
    e = engine()
    for i in range(10):
        obs = response(404, source=ATTACKER, to_user=str(100 + i), target_known=False)
        assert e.observe(obs, i * 5.0) == []
    obs = response(401, source=ATTACKER, to_user="1234", target_known=False)
    assert e.observe(obs, 59.0) == [
        AlertAction(
            rule="extension-enumeration",
            key=ATTACKER,
            source=ATTACKER,
            detail="unknown target '1234'; 11 within 60 s per source",
        ),
        BanAction(rule="extension-enumeration", source=ATTACKER, seconds=3600),
    ]


def test_ids_known_users_are_not_enumeration() -> None:
    feed(engine(), response(401, target_known=True), 100, step=0.1)


def test_ids_provisional_responses_are_ignored() -> None:
    e = engine()
    feed(e, response(100, "INVITE", source=ATTACKER, target_known=False), 50)
    assert e.statistics().rule_matches["extension-enumeration"] == 0


def test_ids_password_guessing_per_source_fires_past_5_in_60_s() -> None:
    e = engine()
    for i in range(5):
        obs = response(403, "REGISTER" if i % 2 else "INVITE", source=ATTACKER)
        assert e.observe(obs, i * 10.0) == []
    assert e.observe(response(403, source=ATTACKER), 59.5) == [
        AlertAction(
            rule="password-guessing-source",
            key=ATTACKER,
            source=ATTACKER,
            detail="answered 403 to REGISTER; 6 within 60 s per source",
        ),
        BanAction(rule="password-guessing-source", source=ATTACKER, seconds=900),
    ]


@pytest.mark.parametrize(
    ("status", "method"), [(401, "REGISTER"), (403, "OPTIONS"), (200, "REGISTER")]
)
def test_ids_password_guessing_counts_only_403_to_register_or_invite(
    status: int, method: str
) -> None:
    feed(engine(), response(status, method, source=ATTACKER), 30)


def test_ids_password_guessing_ignores_403_that_is_no_credential_check() -> None:
    # "403 Too Many Contacts" from a real phone's REGISTER refreshes (issue 13, 15).
    feed(engine(), response(403, "REGISTER", source=PHONE, auth_failed=False), 30)


def test_ids_rule_auth_failed_only_for_response_sent(tmp_path: Path) -> None:
    text = (
        "rules:\n  - name: x\n    match: {kind: request, auth_failed: true}\n    actions: [alert]\n"
    )
    with pytest.raises(RuleError) as info:
        rules_from(tmp_path, text)
    assert str(info.value) == (
        f"{tmp_path / 'rules.yaml'}: rule 'x': match.auth_failed: only for kind response_sent"
    )


def test_ids_password_guessing_per_target_alerts_without_banning() -> None:
    e = engine()
    for i in range(20):
        assert e.observe(response(403, source=f"192.0.2.{i}", to_user="alice"), i * 10.0) == []
    assert e.observe(response(403, source="192.0.2.200", to_user="alice"), 299.0) == [
        AlertAction(
            rule="password-guessing-target",
            key="alice",
            source="192.0.2.200",
            detail="answered 403 to REGISTER; 21 within 300 s per target user",
        )
    ]
    # Still over the threshold: the alert is not repeated within the window...
    assert e.observe(response(403, source="192.0.2.201", to_user="alice"), 300.0) == []
    assert e.statistics().alerts_suppressed == 1
    # ...but is again once a window has passed and the failures go on.
    for i in range(20):
        e.observe(response(403, source=f"192.0.2.{i}", to_user="alice"), 400.0 + i)
    assert [a.rule for a in e.observe(response(403, source="192.0.2.9"), 600.0)] == [
        "password-guessing-target"
    ]


# -- floods ----------------------------------------------------------------------------


def test_ids_invite_flood_fires_past_30_in_2_s() -> None:
    e = engine()
    obs = request("INVITE", source=ATTACKER)
    feed(e, obs, 30, step=0.06)
    assert e.observe(obs, 1.99) == [
        AlertAction(
            rule="invite-flood",
            key=ATTACKER,
            source=ATTACKER,
            detail="INVITE; 31 within 2 s per source",
        ),
        BanAction(rule="invite-flood", source=ATTACKER, seconds=60),
        Drop(rule="invite-flood"),
    ]


def test_ids_invite_flood_window_slides() -> None:
    e = engine()
    obs = request("INVITE", source=ATTACKER)
    # 14 INVITE a second for 10 s: never 31 within 2 s.
    feed(e, obs, 140, step=1 / 14)


def test_ids_register_flood_fires_past_600_in_2_s() -> None:
    e = engine()
    obs = request(source=ATTACKER)
    feed(e, obs, 600, step=0.003)
    assert e.observe(obs, 1.9) == [
        AlertAction(
            rule="register-flood",
            key=ATTACKER,
            source=ATTACKER,
            detail="REGISTER; 601 within 2 s per source",
        ),
        BanAction(rule="register-flood", source=ATTACKER, seconds=60),
        Drop(rule="register-flood"),
    ]


def test_ids_legitimate_load_of_100_registrations_per_second_from_one_address() -> None:
    # Each registration: REGISTER, 401 challenge, REGISTER with credentials, 200 — for
    # 100 users behind one address, 100 a second for 30 s.
    e = engine()
    for i in range(3000):
        t = i / 100
        user = f"user{i % 100}"
        assert e.observe(request(to_user=user, call_id=f"{i}@load"), t) == []
        assert e.observe(response(401, to_user=user), t) == []
        assert e.observe(request(to_user=user, call_id=f"{i}@load"), t + 0.001) == []
        assert e.observe(response(200, to_user=user, auth_user=user), t + 0.001) == []
    assert e.statistics().alerts == 0


def test_ids_malformed_burst_fires_past_10_in_10_s() -> None:
    e = engine()
    feed(e, malformed(), 10, step=0.9)
    assert e.observe(malformed(), 9.5) == [
        AlertAction(
            rule="malformed-burst",
            key=ATTACKER,
            source=ATTACKER,
            detail="malformed message; 11 within 10 s per source",
        ),
        BanAction(rule="malformed-burst", source=ATTACKER, seconds=300),
        Drop(rule="malformed-burst"),
    ]


# -- bans and escalation ---------------------------------------------------------------


def flood(e: IdsEngine, start: float) -> list[IdsAction]:
    obs = request("INVITE", source=ATTACKER)
    feed(e, obs, 30, start=start, step=0.01)
    return e.observe(obs, start + 0.5)


def test_ids_recidive_third_ban_within_an_hour_lasts_a_day() -> None:
    e = engine()
    assert flood(e, 0.0)[1] == BanAction(rule="invite-flood", source=ATTACKER, seconds=60)
    assert flood(e, 100.0)[1] == BanAction(rule="invite-flood", source=ATTACKER, seconds=60)
    assert flood(e, 3599.0) == [
        AlertAction(
            rule="invite-flood",
            key=ATTACKER,
            source=ATTACKER,
            detail="INVITE; 31 within 2 s per source",
        ),
        AlertAction(
            rule="invite-flood",
            key=ATTACKER,
            source=ATTACKER,
            detail="recidive: 3 bans within 3600 s, banned 86400 s",
        ),
        BanAction(rule="invite-flood", source=ATTACKER, seconds=86400),
        Drop(rule="invite-flood"),
    ]
    assert e.statistics().escalations == 1


def test_ids_recidive_counts_bans_of_any_rule() -> None:
    e = engine()
    assert flood(e, 0.0)[1].rule == "invite-flood"
    feed(e, malformed(), 10, start=100.0)
    assert e.observe(malformed(), 100.0)[1] == BanAction(
        rule="malformed-burst", source=ATTACKER, seconds=300
    )
    assert flood(e, 500.0)[2] == BanAction(rule="invite-flood", source=ATTACKER, seconds=86400)


def test_ids_recidive_ignores_bans_older_than_its_window() -> None:
    e = engine()
    for start in (0.0, 1800.0, 3601.0):
        assert flood(e, start)[1] == BanAction(rule="invite-flood", source=ATTACKER, seconds=60)


def test_ids_source_already_banned_gets_no_second_ban() -> None:
    e = engine()
    # The svmap packet matches two rules: one BanAction, the rule of the longest (first) ban.
    obs = observation_of(capture("svmap-options.sip"))
    first = e.observe(obs, 0.0)
    assert [type(a).__name__ for a in first] == ["AlertAction", "AlertAction", "BanAction", "Drop"]
    # A packet the guard let through before it learnt the ban: alerts and drop, no ban.
    second = e.observe(obs, 0.1)
    assert [type(a).__name__ for a in second] == ["AlertAction", "AlertAction", "Drop"]
    assert e.statistics().bans == 1
    # Once the ban has run out, the next packet is banned again.
    assert BanAction(rule="scanner-user-agent", source=ATTACKER, seconds=3600) in e.observe(
        obs, 3600.0
    )


def test_ids_lift_forgets_a_ban() -> None:
    e = engine()
    obs = request(source=ATTACKER, user_agent="friendly-scanner")
    assert len(e.observe(obs, 0.0)) == 3
    e.lift(ATTACKER)
    assert e.observe(obs, 1.0) == scanner_ban("scanner-user-agent", "user agent 'friendly-scanner'")


# -- custom rules ----------------------------------------------------------------------


def rules_from(tmp_path: Path, text: str, name: str = "rules.yaml") -> list[Rule]:
    path = tmp_path / name
    path.write_text(text)
    return load_rules([path])


def test_ids_rule_zones_filter(tmp_path: Path) -> None:
    e = IdsEngine(
        rules_from(
            tmp_path,
            """
rules:
  - name: no-options-from-internet
    zones: [internet]
    match: {methods: [OPTIONS]}
    actions: [drop]
""",
        )
    )
    assert e.observe(request("OPTIONS", zone="office"), 0.0) == []
    assert e.observe(request("OPTIONS", zone="internet"), 0.0) == [
        Drop(rule="no-options-from-internet")
    ]


def test_ids_header_regex_and_reply_403(tmp_path: Path) -> None:
    e = IdsEngine(
        rules_from(
            tmp_path,
            """
rules:
  - name: premium-numbers
    description: calls to premium-rate numbers
    match:
      kind: request
      methods: [INVITE]
      headers: {to: '<sip:\\+?(00)?1900'}
    actions: [alert, reply_403]
""",
        )
    )
    hit = request("INVITE", headers={"to": "<sip:+19005550100@example.com>"})
    miss = request("INVITE", headers={"to": "<sip:+15550100@example.com>"})
    assert e.observe(hit, 0.0) == [
        AlertAction(rule="premium-numbers", key=PHONE, source=PHONE, detail="INVITE"),
        Reply(rule="premium-numbers", status=403),
    ]
    assert e.observe(miss, 0.0) == []
    assert e.observe(request("INVITE"), 0.0) == []  # no To header given: no match


def test_ids_drop_wins_over_reply_and_neither_applies_to_responses(tmp_path: Path) -> None:
    e = IdsEngine(
        rules_from(
            tmp_path,
            """
rules:
  - name: answer
    match: {methods: [MESSAGE]}
    actions: [reply_403]
  - name: silence
    match: {methods: [MESSAGE]}
    actions: [drop]
  - name: watch-responses
    match: {kind: response_sent, status: [486]}
    actions: [alert, {ban: 5}]
""",
        )
    )
    assert e.observe(request("MESSAGE"), 0.0) == [Drop(rule="silence")]
    assert e.observe(response(486, "INVITE"), 0.0) == [
        AlertAction(
            rule="watch-responses", key=PHONE, source=PHONE, detail="answered 486 to INVITE"
        ),
        BanAction(rule="watch-responses", source=PHONE, seconds=5),
    ]


@pytest.mark.parametrize(
    ("key", "expected_keys"),
    [
        ("source", ["192.0.2.1"]),
        ("user", ["bob"]),
        ("target_user", ["carol"]),
        ("source_and_target", ["192.0.2.1/carol"]),
    ],
)
def test_ids_threshold_keys(tmp_path: Path, key: str, expected_keys: list[str]) -> None:
    e = IdsEngine(
        rules_from(
            tmp_path,
            f"""
rules:
  - name: keyed
    match: {{kind: response_sent, status: [403]}}
    threshold: {{count: 2, window: 10, key: {key}}}
    actions: [alert]
""",
        )
    )
    obs = response(403, source="192.0.2.1", to_user="carol", auth_user="bob")
    assert e.observe(obs, 0.0) == []
    assert [a.key for a in e.observe(obs, 1.0) if isinstance(a, AlertAction)] == expected_keys


def test_ids_threshold_key_missing_does_not_count(tmp_path: Path) -> None:
    e = IdsEngine(
        rules_from(
            tmp_path,
            """
rules:
  - name: by-user
    match: {kind: response_sent}
    threshold: {count: 1, window: 1, key: user}
    actions: [alert]
""",
        )
    )
    assert e.observe(response(403, auth_user=None), 0.0) == []
    assert e.statistics().rule_matches == {"by-user": 1}
    assert e.statistics().rule_fires == {"by-user": 0}


def test_ids_keys_are_cut_to_max_key_length(tmp_path: Path) -> None:
    e = IdsEngine(
        rules_from(
            tmp_path,
            """
rules:
  - name: per-target
    match: {kind: response_sent}
    threshold: {count: 2, window: 10, key: target_user}
    actions: [alert]
""",
        )
    )
    prefix = "u" * MAX_KEY_LENGTH
    assert e.observe(response(403, to_user=prefix + "a"), 0.0) == []
    assert e.observe(response(403, to_user=prefix + "b"), 1.0) == [
        AlertAction(
            rule="per-target", key=prefix, source=PHONE, detail="2 within 10 s per target user"
        )
    ]


def test_ids_a_clock_going_backwards_keeps_windows_ordered(tmp_path: Path) -> None:
    e = engine()
    obs = request("INVITE", source=ATTACKER)
    feed(e, obs, 15, start=10.0, step=0.01)
    feed(e, obs, 15, start=9.0, step=0.01)
    assert e.observe(obs, 10.5)[0].rule == "invite-flood"


# -- memory limits ---------------------------------------------------------------------


def test_ids_max_tracked_keys_evicts_least_recently_used(tmp_path: Path) -> None:
    e = IdsEngine(
        rules_from(
            tmp_path,
            """
rules:
  - name: pairs
    match: {methods: [OPTIONS]}
    threshold: {count: 2, window: 1000000, key: source}
    actions: [drop]
""",
        )
    )
    first, recent = "10.255.255.254", "10.255.255.253"
    assert e.observe(request("OPTIONS", source=first), 0.0) == []
    assert e.observe(request("OPTIONS", source=recent), 0.0) == []
    for i in range(MAX_TRACKED_KEYS - 2):
        e.observe(request("OPTIONS", source=f"10.{i >> 16}.{(i >> 8) & 255}.{i & 255}"), 1.0)
    assert e.statistics().tracked_keys == MAX_TRACKED_KEYS
    # ``recent`` is used again, then one key more than the table holds arrives.
    assert e.observe(request("OPTIONS", source=recent), 2.0) == [Drop(rule="pairs")]
    e.observe(request("OPTIONS", source="172.16.0.1"), 3.0)
    stats = e.statistics()
    assert (stats.tracked_keys, stats.evicted_keys) == (MAX_TRACKED_KEYS, 1)
    # ``first`` was the least recently used: forgotten, its count restarts.
    assert e.observe(request("OPTIONS", source=first), 4.0) == []
    assert e.observe(request("OPTIONS", source=recent), 5.0) == [Drop(rule="pairs")]


def test_ids_max_tracked_keys_bounds_ban_records(tmp_path: Path) -> None:
    e = IdsEngine(
        rules_from(
            tmp_path,
            """
rules:
  - name: ban-all
    match: {methods: [OPTIONS]}
    actions: [{ban: 100000}]
""",
        )
    )
    for i in range(MAX_TRACKED_KEYS + 1):
        e.observe(request("OPTIONS", source=f"10.{i >> 16}.{(i >> 8) & 255}.{i & 255}"), 0.0)
    stats = e.statistics()
    assert (stats.tracked_sources, stats.evicted_keys, stats.bans) == (
        MAX_TRACKED_KEYS,
        1,
        MAX_TRACKED_KEYS + 1,
    )
    # The oldest record is gone: its source, still sending, is banned again.
    assert e.observe(request("OPTIONS", source="10.0.0.0"), 1.0) == [
        BanAction(rule="ban-all", source="10.0.0.0", seconds=100000)
    ]
    # (Its new record pushed out the next oldest, 10.0.0.1; 10.0.0.2 is still banned.)
    assert e.observe(request("OPTIONS", source="10.0.0.2"), 1.0) == []


def test_ids_max_user_agent_memo_is_cleared_when_full() -> None:
    e = engine()
    rule = next(c for c in e._compiled if c.name == "scanner-user-agent")
    assert rule.test is not None
    memo = inspect.getclosurevars(rule.test).nonlocals["memo"]
    for i in range(MAX_USER_AGENT_MEMO):
        assert e.observe(request(source=f"192.0.2.{i % 200}", user_agent=f"phone/{i}"), i) == []
    assert len(memo) == MAX_USER_AGENT_MEMO
    # One more distinct string: the memo starts again, verdicts stay right.
    actions = e.observe(request(source=ATTACKER, user_agent="friendly-scanner"), 2000.0)
    assert actions == scanner_ban("scanner-user-agent", "user agent 'friendly-scanner'")
    assert memo == {"friendly-scanner": True}
    assert e.observe(request(user_agent="phone/1"), 2001.0) == []
    assert memo == {"friendly-scanner": True, "phone/1": False}


def test_ids_max_threshold_count(tmp_path: Path) -> None:
    text = """
rules:
  - name: big
    match: {{methods: [OPTIONS]}}
    threshold: {{count: {count}, window: 1}}
    actions: [drop]
"""
    e = IdsEngine(rules_from(tmp_path, text.format(count=MAX_THRESHOLD_COUNT)))
    feed(e, request("OPTIONS"), MAX_THRESHOLD_COUNT - 1)
    assert e.observe(request("OPTIONS"), 0.0) == [Drop(rule="big")]
    with pytest.raises(RuleError) as info:
        rules_from(tmp_path, text.format(count=MAX_THRESHOLD_COUNT + 1))
    assert str(info.value) == (
        f"{tmp_path / 'rules.yaml'}: rule 'big': threshold.count: "
        f"must be an integer from 1 to {MAX_THRESHOLD_COUNT}"
    )


# -- rule files --------------------------------------------------------------------------

GOOD_RULE = """
  - name: r
    match: {methods: [OPTIONS]}
    actions: [drop]
"""


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("rules: [", "line 1: invalid YAML: expected the node content, but found '<stream end>'"),
        ("- name: r\n", "the file must be a mapping with one key, 'rules'"),
        ("rules: {}\n", "rules: must be a list"),
        ("rules:\n  - 5\n", "rule #1: must be a mapping"),
        ("rules:\n  - name: 'a b'\n", "rule #1: name: must be letters, digits, '.', '_' or '-'"),
        (
            "rules:\n  - name: r\n    mathc: {}\n",
            "rule 'r': mathc: unknown key (known: actions, description, enabled, escalation, "
            "match, name, threshold, zones)",
        ),
        ("rules:\n  - name: r\n    actions: [drop]\n", "rule 'r': match: is required"),
        (
            "rules:\n  - name: r\n    match: {kind: response}\n    actions: [drop]\n",
            "rule 'r': match.kind: must be one of request, response_sent, malformed",
        ),
        (
            "rules:\n  - name: r\n    match: {user_agent: '(scan'}\n    actions: [drop]\n",
            "rule 'r': match.user_agent: invalid regular expression: "
            "missing ), unterminated subpattern at position 0",
        ),
        (
            "rules:\n  - name: r\n    match: {headers: {subject: '[a'}}\n    actions: [drop]\n",
            "rule 'r': match.headers.subject: invalid regular expression: "
            "unterminated character set at position 0",
        ),
        (
            "rules:\n  - name: r\n    match: {fingerprints: [nmap]}\n    actions: [drop]\n",
            "rule 'r': match.fingerprints: must be a list of: sipvicious_from_tag, "
            "numeric_call_id, sipvicious_branch, compact_no_user_agent",
        ),
        (
            "rules:\n  - name: r\n    match: {status: [403]}\n    actions: [drop]\n",
            "rule 'r': match.status: only for kind response_sent",
        ),
        (
            "rules:\n  - name: r\n    match: {kind: response_sent, status: [180]}\n"
            "    actions: [alert]\n",
            "rule 'r': match.status: must be a non-empty list of final statuses (200-699)",
        ),
        (
            "rules:\n  - name: r\n    match: {}\n    threshold: {count: 3}\n    actions: [drop]\n",
            "rule 'r': threshold.window: is required (seconds > 0) when count > 1",
        ),
        (
            "rules:\n  - name: r\n    match: {}\n    threshold: {count: 0, window: 1}\n"
            "    actions: [drop]\n",
            f"rule 'r': threshold.count: must be an integer from 1 to {MAX_THRESHOLD_COUNT}",
        ),
        (
            "rules:\n  - name: r\n    match: {}\n    threshold: {key: ip}\n    actions: [drop]\n",
            "rule 'r': threshold.key: must be one of source, user, target_user, source_and_target",
        ),
        (
            "rules:\n  - name: r\n    match: {}\n    actions: [block]\n",
            "rule 'r': actions: unknown action 'block' (alert, drop, reply_403, ban: SECONDS)",
        ),
        (
            "rules:\n  - name: r\n    match: {}\n    actions: [{ban: -1}]\n",
            "rule 'r': actions.ban: must be a whole number of seconds > 0",
        ),
        (
            "rules:\n  - name: r\n    match: {kind: response_sent}\n    actions: [drop]\n",
            "rule 'r': actions: drop does not apply to kind response_sent",
        ),
        (
            "rules:\n  - name: r\n    match: {kind: malformed}\n    actions: [reply_403]\n",
            "rule 'r': actions: reply_403 only for kind request",
        ),
        (
            "rules:\n  - name: r\n    match: {}\n    actions: [alert]\n"
            "    escalation: {count: 3, window: 60, ban_seconds: 600}\n",
            "rule 'r': escalation: needs a ban action",
        ),
        (
            "rules:\n  - name: r\n    match: {}\n    actions: [{ban: 600}]\n"
            "    escalation: {count: 3, window: 60, ban_seconds: 60}\n",
            "rule 'r': escalation.ban_seconds: must be whole seconds > the ban (600)",
        ),
        (
            "rules:\n  - name: r\n    zones: internet\n    match: {}\n    actions: [drop]\n",
            "rule 'r': zones: must be a non-empty list of zone names",
        ),
        ("rules:" + GOOD_RULE + GOOD_RULE, "rule 'r': name: defined twice in this file"),
    ],
)
def test_ids_bad_rule_file_raises_one_line(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(RuleError) as info:
        rules_from(tmp_path, text)
    assert str(info.value) == f"{tmp_path / 'rules.yaml'}: {message}"
    assert "\n" not in str(info.value)


def test_ids_missing_rule_file(tmp_path: Path) -> None:
    with pytest.raises(RuleError) as info:
        load_rules([tmp_path / "nope.yaml"])
    assert str(info.value) == f"{tmp_path / 'nope.yaml'}: cannot read: No such file or directory"


def test_ids_user_file_retunes_and_disables_default_rules(tmp_path: Path) -> None:
    user = tmp_path / "local.yaml"
    user.write_text(
        """
rules:
  - name: invite-flood
    description: this PBX sends many calls
    match: {kind: request, methods: [INVITE]}
    threshold: {count: 501, window: 2, key: source}
    actions: [alert, drop, {ban: 60}]
  - name: options-sweep
    enabled: false
    match: {}
    actions: [drop]
  - name: local-extra
    match: {methods: [PUBLISH]}
    actions: [reply_403]
"""
    )
    rules = load_rules([default_rules_path(), user])
    names = [r.name for r in rules]
    assert "options-sweep" not in names
    assert names.index("invite-flood") == 7  # keeps its place among the defaults
    assert names[-1] == "local-extra"
    e = IdsEngine(rules)
    feed(e, request("INVITE", source=ATTACKER), 100)
    feed(e, request("OPTIONS", source=ATTACKER), 100)


def test_ids_replace_rules_keeps_unchanged_windows(tmp_path: Path) -> None:
    e = engine()
    invite = request("INVITE", source=ATTACKER)
    options = request("OPTIONS", source=ATTACKER)
    feed(e, invite, 30)
    feed(e, options, 20)
    rules = [
        r
        if r.name != "options-sweep"
        else Rule(name=r.name, match=r.match, threshold=Threshold(count=22, window=10), drop=True)
        for r in e.rules
    ]
    e.replace_rules(rules)
    assert e.observe(invite, 0.0)[0].rule == "invite-flood"  # its window was kept
    assert e.observe(options, 0.0) == []  # its window restarted


def test_ids_statistics(tmp_path: Path) -> None:
    e = engine()
    e.observe(request(), 0.0)
    e.observe(observation_of(capture("svmap-options.sip")), 0.0)
    stats = e.statistics()
    assert (stats.observations, stats.alerts, stats.bans, stats.drops, stats.replies) == (
        2,
        2,
        1,
        1,
        0,
    )
    # register-flood for the phone; options-sweep and call-id-branch for the scanner
    assert stats.tracked_keys == 3
    assert stats.rule_matches["scanner-user-agent"] == 1
    assert stats.rule_matches["register-flood"] == 1
    assert stats.rule_fires["sipvicious-from-tag"] == 1
    assert stats.rule_fires["sipvicious-call-id-branch"] == 0


# -- replayed sipvicious captures --------------------------------------------------------


def test_ids_replay_svmap_default_banned_at_first_packet() -> None:
    obs = observation_of(capture("svmap-options.sip"))
    assert engine().observe(obs, 0.0) == [
        AlertAction(
            rule="scanner-user-agent",
            key=ATTACKER,
            source=ATTACKER,
            detail="user agent 'friendly-scanner'",
        ),
        AlertAction(
            rule="sipvicious-from-tag",
            key=ATTACKER,
            source=ATTACKER,
            detail="fingerprint sipvicious_from_tag",
        ),
        BanAction(rule="scanner-user-agent", source=ATTACKER, seconds=3600),
        Drop(rule="scanner-user-agent"),
    ]


def test_ids_replay_svmap_compact_banned_at_first_packet() -> None:
    obs = observation_of(capture("svmap-compact-options.sip"))
    assert (obs.user_agent, obs.compact) == (None, True)
    assert engine().observe(obs, 0.0) == [
        AlertAction(
            rule="sipvicious-from-tag",
            key=ATTACKER,
            source=ATTACKER,
            detail="fingerprint sipvicious_from_tag",
        ),
        AlertAction(
            rule="sipvicious-compact",
            key=ATTACKER,
            source=ATTACKER,
            detail="fingerprint compact_no_user_agent+numeric_call_id+sipvicious_branch",
        ),
        BanAction(rule="sipvicious-from-tag", source=ATTACKER, seconds=3600),
        Drop(rule="sipvicious-from-tag"),
    ]


@pytest.mark.parametrize(
    "name",
    [
        "svwar-register-1.sip",
        "svwar-compact-register-1.sip",
        "svwar-invite-1.sip",
        "svcrack-register-1.sip",
        "svcrack-compact-register-1.sip",
    ],
)
def test_ids_replay_first_packet_of_each_tool_is_banned(name: str) -> None:
    actions = engine().observe(observation_of(capture(name)), 0.0)
    assert [a for a in actions if isinstance(a, BanAction)] == [
        BanAction(rule=actions[0].rule, source=ATTACKER, seconds=3600)
    ]


@pytest.mark.parametrize(
    "names",
    [
        ["svmap-options.sip"],
        ["svwar-register-1.sip", "svwar-register-2.sip", "svwar-register-3.sip"],
        ["svwar-invite-1.sip", "svwar-invite-2.sip", "svwar-invite-3.sip"],
        ["svcrack-register-1.sip", "svcrack-register-2.sip", "svcrack-register-3.sip"],
    ],
)
@pytest.mark.parametrize("user_agent", [None, b"Yealink SIP-T46S 66.86.0.15"])
def test_ids_replay_with_user_agent_changed_or_removed_still_banned(
    names: list[str], user_agent: bytes | None
) -> None:
    e = engine()
    packets = [observation_of(without_user_agent(capture(n), user_agent)) for n in names]
    assert all(p.user_agent == (user_agent.decode() if user_agent else None) for p in packets)
    # By the from-tag fingerprint at the first packet (svcrack's first REGISTER has
    # its fixed tag).
    assert e.observe(packets[0], 0.0)[-2] == BanAction(
        rule="sipvicious-from-tag", source=ATTACKER, seconds=3600
    )


def test_ids_replay_without_from_tag_fingerprint_banned_at_third_packet() -> None:
    # A sipvicious modified to make ordinary tags and user agent is still caught by its
    # Call-ID and branch within three packets.
    e = engine()
    names = ["svwar-register-1.sip", "svwar-register-2.sip", "svwar-register-3.sip"]
    packets = []
    for n in names:
        data = without_user_agent(capture(n), b"Yealink SIP-T46S 66.86.0.15")
        message = parse_message(data)
        data = data.replace(f"tag={message.from_.tag}".encode(), b"tag=a73kszlfl")
        packets.append(observation_of(data))
    assert e.observe(packets[0], 0.0) == []
    assert e.observe(packets[1], 0.01) == []
    assert e.observe(packets[2], 0.02) == scanner_ban(
        "sipvicious-call-id-branch",
        "fingerprint numeric_call_id+sipvicious_branch; 3 within 10 s per source",
    )


@pytest.mark.parametrize(
    "name", ["baresip-register-1.sip", "baresip-register-2.sip", "sipp-uac-invite.sip"]
)
def test_ids_replay_real_phones_pass(name: str) -> None:
    e = engine()
    obs = observation_of(capture(name), source=PHONE)
    for i in range(20):
        assert e.observe(obs, i * 0.5) == []


# -- robustness --------------------------------------------------------------------------

_text = st.one_of(st.none(), st.text(max_size=40))


@settings(max_examples=300, deadline=None)
@given(
    kind=st.sampled_from(["request", "response_sent", "malformed"]),
    method=_text,
    status=st.one_of(st.none(), st.integers(-5, 1000)),
    user_agent=_text,
    from_tag=_text,
    call_id=_text,
    branch=_text,
    to_user=_text,
    auth_user=_text,
    target_known=st.one_of(st.none(), st.booleans()),
    compact=st.booleans(),
    times=st.lists(st.floats(-1e6, 1e6), min_size=1, max_size=5),
)
def test_ids_observe_never_raises(
    kind: str,
    method: str | None,
    status: int | None,
    user_agent: str | None,
    from_tag: str | None,
    call_id: str | None,
    branch: str | None,
    to_user: str | None,
    auth_user: str | None,
    target_known: bool | None,
    compact: bool,
    times: list[float],
) -> None:
    e = ENGINE_FOR_FUZZ
    obs = Observation(
        source="192.0.2.99",
        zone="internet",
        kind=kind,  # type: ignore[arg-type]
        method=method,
        status=status,
        user_agent=user_agent,
        from_tag=from_tag,
        call_id=call_id,
        branch=branch,
        to_user=to_user,
        auth_user=auth_user,
        target_known=target_known,
        compact=compact,
    )
    for t in times:
        for action in e.observe(obs, t):
            assert isinstance(action, AlertAction | Drop | Reply | BanAction)


ENGINE_FOR_FUZZ = engine()


# -- TURN credentials (issue 13, finding 7) ----------------------------------------------


def turn_failure(source: str = ATTACKER, user: str = "alice") -> Observation:
    """What voipsec serve reports for a refused TURN credential (server.py
    ``observe_rejected_credentials``)."""
    return Observation(
        source=source,
        zone=ZONE,
        kind="response_sent",
        method="TURN",
        status=401,
        to_user=user,
        auth_user=user,
        auth_failed=True,
    )


def test_ids_turn_password_guessing_bans_the_source_past_5_in_60_s() -> None:
    e = engine()
    feed(e, turn_failure(), 5, step=10.0)
    assert e.observe(turn_failure(), 59.5) == [
        AlertAction(
            rule="turn-password-guessing-source",
            key=ATTACKER,
            source=ATTACKER,
            detail="answered 401 to TURN; 6 within 60 s per source",
        ),
        BanAction(rule="turn-password-guessing-source", source=ATTACKER, seconds=900),
    ]


def test_ids_turn_password_guessing_window_slides() -> None:
    e = engine()
    feed(e, turn_failure(), 5, step=12.0)  # 0, 12, ... 48
    assert e.observe(turn_failure(), 60.0) == []  # the first fell out of the window


def test_ids_turn_password_guessing_per_target_alerts_without_banning() -> None:
    e = engine()
    for i in range(20):
        assert e.observe(turn_failure(source=f"192.0.2.{i}"), i * 10.0) == []
    assert e.observe(turn_failure(source="192.0.2.200"), 299.0) == [
        AlertAction(
            rule="turn-password-guessing-target",
            key="alice",
            source="192.0.2.200",
            detail="answered 401 to TURN; 21 within 300 s per target user",
        )
    ]


def test_ids_sip_challenges_are_not_turn_failures() -> None:
    """A SIP 401 (a challenge, the normal first answer to REGISTER) counts for no
    password-guessing rule; a TURN 401 (a refused credential) does."""
    e = engine()
    feed(e, response(401, "REGISTER", source=ATTACKER, target_known=True), 30)
    assert e.statistics().rule_matches["turn-password-guessing-source"] == 0

"""Dial plan: normalisation, classes of service, trunk routes (voipsec.core.dialplan)."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from voipsec.config import CLASSES_OF_SERVICE, ClassOfService, Config, validate
from voipsec.core.dialplan import (
    MAX_DIALLED_LENGTH,
    MAX_E164_DIGITS,
    Destination,
    Dialplan,
    DialplanConfigError,
    DialplanError,
    allows,
    refusal_reason,
)
from voipsec.core.dialplan_loader import default_premium_rate_path, load_dialplan
from voipsec.rulefile import MAX_PREFIXES, RuleFileError, load_prefix_file

USERS = frozenset({"alice", "bob", "1001"})


def _is_user(name: str) -> bool:
    return name in USERS


def _plan(
    *,
    country_code: str = "44",
    national_prefix: str = "0",
    international_prefix: str = "00",
    premium: tuple[str, ...] = ("+449", "+44871", "+1900", "+881"),
    trunks: dict[str, list[str]] | None = None,
    dids: dict[str, str] | None = None,
) -> Dialplan:
    return Dialplan(
        country_code=country_code,
        national_prefix=national_prefix,
        international_prefix=international_prefix,
        premium_prefixes=premium,
        trunk_prefixes=trunks if trunks is not None else {"carrier": ["+"]},
        dids=dids if dids is not None else {"+442071234567": "alice"},
    )


def _error(plan: Dialplan, dialled: str) -> tuple[int, str]:
    with pytest.raises(DialplanError) as info:
        plan.normalise(dialled)
    assert str(info.value) == f"{info.value.status} {info.value.reason}"
    return info.value.status, info.value.reason


def _config(tmp_path: Path, **sections: object) -> Config:
    return validate(dict(sections), tmp_path / "voipsec.toml")


def _trunk(name: str, prefixes: list[str], dids: dict[str, str] | None = None) -> dict[str, object]:
    return {
        "name": name,
        "address": "tls:198.51.100.10:5061",
        "domain": "sip.carrier.example",
        "prefixes": prefixes,
        "dids": dids or {},
    }


# -- normalisation --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dialled", "e164"),
    [
        ("+442071234567", "+442071234567"),  # rule 3: "+digits" stays
        ("00442071234567", "+442071234567"),  # rule 4: international prefix
        ("0033123456789", "+33123456789"),
        ("02071234567", "+442071234567"),  # rule 5: national prefix
        ("2071234567", "+442071234567"),  # rule 6: national subscriber number
        ("7", "+447"),
    ],
)
def test_dialplan_normalise_rules(dialled: str, e164: str) -> None:
    assert _plan().normalise(dialled) == e164


@pytest.mark.parametrize(
    ("dialled", "e164"),
    [
        ("+44 20 7123 4567", "+442071234567"),
        ("020-7123-4567", "+442071234567"),
        ("020.7123.4567", "+442071234567"),
        ("(020) 7123 4567", "+442071234567"),
        ("00 33 1 23 45 67 89", "+33123456789"),
        ("+1 (212) 555-0100", "+12125550100"),
    ],
)
def test_dialplan_normalise_strips_visual_separators(dialled: str, e164: str) -> None:
    assert _plan().normalise(dialled) == e164


@pytest.mark.parametrize(
    ("dialled", "e164"),
    [
        # E.123 "(0)": the trunk prefix after a country code is not dialled from abroad.
        ("+44(0)9012345678", "+449012345678"),
        ("+44 (0)20 7123 4567", "+442071234567"),
        ("+44 ( 0 ) 20 7123 4567", "+442071234567"),
        ("+44-(0)90-1234-5678", "+449012345678"),  # RFC 3966 visual separators
        ("+44.(0)90.1234.5678", "+449012345678"),
        ("+49 (0)30 1234567", "+49301234567"),
        ("+1(0)2125550100", "+12125550100"),
        ("+352 (0)26 123", "+35226123"),  # a 3-digit country code
        # Escapes (RFC 3261 §19.1.2): a space is %20 in a URI, "+" may be %2B.
        ("%2B44%20(0)%209012345678", "+449012345678"),
        ("+44%2090%201234%205678", "+449012345678"),
        ("020%207123%204567", "+442071234567"),
        # Groups that are not a trunk prefix keep their digits.
        ("+44 (20) 7123 4567", "+442071234567"),
        ("(020) 7123-4567", "+442071234567"),
        ("(0)20 7123 4567", "+442071234567"),  # a national number: (0) is its prefix
        ("()020 7123 4567", "+442071234567"),
    ],
)
def test_dialplan_normalise_notations(dialled: str, e164: str) -> None:
    assert _plan().normalise(dialled) == e164


@pytest.mark.parametrize(
    ("dialled", "detail"),
    [
        ("+4409012345678", "national prefix after the country code"),
        ("004409012345678", "national prefix after the country code"),
        ("+44 0 90 1234 5678", "national prefix after the country code"),
        ("+44 (020) 7123 4567", "malformed number: trunk prefix inside an international number"),
        ("+44 20 (0)7123 4567", "malformed number: trunk prefix inside an international number"),
        ("+4420(0)71234567", "malformed number: trunk prefix inside an international number"),
        ("+(0)449012345678", "malformed number: trunk prefix inside an international number"),
        ("+44(00)9012345678", "malformed number: trunk prefix inside an international number"),
        ("+44(0)(0)9012345678", "malformed number: trunk prefix inside an international number"),
        ("+44 (0 9012345678", "malformed number: '(' not closed"),
        ("+44 0) 9012345678", "malformed number: ')' without '('"),
        ("+44 ((0)) 9012345678", "malformed number: nested '('"),
        ("(+44) 9012345678", "malformed number: '+' after the start"),
        ("+44+9012345678", "malformed number: '+' after the start"),
        ("++449012345678", "malformed number: '+' after the start"),
        ("%2B%2B449012345678", "malformed number: '+' after the start"),
        ("+44 90 I234 5678", "not a telephone number"),  # a letter I for a 1
        ("+44 90 l234 5678", "not a telephone number"),
        ("+44/90/1234/5678", "not a telephone number"),
        ("+44_9012345678", "not a telephone number"),
        ("+449012345678;ext=1", "not a telephone number"),
        ("+449012345678;phone-context=+44", "not a telephone number"),
        ("tel:+449012345678", "not a telephone number"),
        ("+44%0D9012345678", "not a telephone number"),  # an escaped CR
        ("+44%C2%A09012345678", "not a telephone number"),  # an escaped no-break space
        ("+44%FF9012345678", "not a telephone number"),  # not UTF-8
        ("+44\u00a09012345678", "not a telephone number"),
        ("+0442071234567", "no country code starts with 0"),
    ],
)
def test_dialplan_normalise_refuses_what_it_cannot_classify(dialled: str, detail: str) -> None:
    with pytest.raises(DialplanError) as info:
        _plan().normalise(dialled)
    assert (info.value.status, info.value.reason, info.value.detail) == (
        404,
        "Not A Number",
        detail,
    )


@given(st.text(alphabet="0123456789+()-. %2BCx(0)\u0660\r", max_size=40))
def test_dialplan_normalise_is_e164_or_refused(dialled: str) -> None:
    # Any string: an E.164 number the premium check can see, or a DialplanError.
    try:
        e164 = _plan().normalise(dialled)
    except DialplanError as err:
        assert err.status in (404, 484)
        return
    assert re.fullmatch(r"\+[1-9][0-9]{0,14}", e164) is not None
    assert not e164.startswith("+440")


def test_dialplan_normalise_national_prefix_rule_follows_the_settings() -> None:
    # NANP: the national prefix is 1; no area code starts with 1 either.
    nanp = _plan(country_code="1", national_prefix="1", international_prefix="011")
    assert _error(nanp, "+11234567890") == (404, "Not A Number")
    # Without a national prefix (Italy), a 0 after the country code is the number's own.
    assert _plan(country_code="39", national_prefix="").normalise("+39 06 1234") == "+39061234"


@pytest.mark.parametrize(
    "dialled",
    ["+44(0)9012345678", "+44 (0)90 1234 5678", "+44-(0)90-1234-5678", "%2B44%20(0)9012345678"],
)
def test_dialplan_classify_trunk_prefix_notation_is_premium_rate(dialled: str) -> None:
    assert _plan().classify(dialled, is_user=_is_user) == Destination(
        dialled=dialled,
        e164="+449012345678",
        kind="premium-rate",
        user=None,
        trunk="carrier",
    )


def test_dialplan_normalise_nanp_prefixes() -> None:
    plan = _plan(country_code="1", national_prefix="1", international_prefix="011")
    assert plan.normalise("011442071234567") == "+442071234567"
    assert plan.normalise("12125550100") == "+12125550100"
    assert plan.normalise("2125550100") == "+12125550100"


def test_dialplan_normalise_without_national_prefix() -> None:
    plan = _plan(country_code="39", national_prefix="")
    # Italy keeps the leading 0 of geographic numbers in E.164.
    assert plan.normalise("0612345678") == "+390612345678"
    assert plan.normalise("0044207") == "+44207"


@pytest.mark.parametrize(
    ("dialled", "error"),
    [
        ("", (404, "Not A Number")),
        (" - ", (404, "Not A Number")),
        ("alice", (404, "Not A Number")),
        ("020 7123 456x", (404, "Not A Number")),
        ("++44207", (404, "Not A Number")),
        ("0044+207", (404, "Not A Number")),
        ("*97", (404, "Not A Number")),
        ("#31#0207", (404, "Not A Number")),
        ("020\t7123", (404, "Not A Number")),
        ("+44207\n", (404, "Not A Number")),
        ("+\uff14\uff14\uff12\uff10\uff17", (404, "Not A Number")),  # fullwidth digits
        ("+44\u0662\u0660\u0667", (404, "Not A Number")),  # Arabic-Indic digits
        ("+²", (404, "Not A Number")),
        ("+0442071234567", (404, "Not A Number")),  # no country code starts with 0
        ("000442071234567", (404, "Not A Number")),
        ("+", (484, "Address Incomplete")),
        ("00", (484, "Address Incomplete")),
        ("0", (484, "Address Incomplete")),
        ("( 0 )", (484, "Address Incomplete")),
    ],
)
def test_dialplan_normalise_refuses_non_numbers(dialled: str, error: tuple[int, str]) -> None:
    assert _error(_plan(), dialled) == error


def test_dialplan_normalise_at_max_e164_digits() -> None:
    number = "+" + "4" * MAX_E164_DIGITS
    assert _plan().normalise(number) == number
    assert _plan().normalise("00" + "4" * MAX_E164_DIGITS) == number


def test_dialplan_normalise_over_max_e164_digits() -> None:
    assert _error(_plan(), "+" + "4" * (MAX_E164_DIGITS + 1)) == (404, "Number Too Long")
    # The country code added to a national number counts too: 13 + 2 digits is the
    # limit, 14 + 2 is over it.
    assert _plan().normalise("0" + "2" * (MAX_E164_DIGITS - 2)) == "+44" + "2" * 13
    assert _error(_plan(), "0" + "2" * (MAX_E164_DIGITS - 1)) == (404, "Number Too Long")
    assert _error(_plan(), "2" * (MAX_E164_DIGITS - 1)) == (404, "Number Too Long")


def test_dialplan_normalise_at_max_dialled_length() -> None:
    # Separators do not count towards the digits but do towards the length.
    dialled = "+44 20 7123 4567".ljust(MAX_DIALLED_LENGTH, " ")
    assert len(dialled) == MAX_DIALLED_LENGTH
    assert _plan().normalise(dialled) == "+442071234567"


def test_dialplan_normalise_over_max_dialled_length() -> None:
    dialled = "+44 20 7123 4567".ljust(MAX_DIALLED_LENGTH + 1, " ")
    assert _error(_plan(), dialled) == (404, "Number Too Long")
    assert _error(_plan(), "x" * 100_000) == (404, "Number Too Long")


def test_dialplan_error_reason_does_not_repeat_the_input() -> None:
    with pytest.raises(DialplanError) as info:
        _plan().normalise("<script>")
    assert "script" not in str(info.value)
    assert "script" not in info.value.detail


def test_dialplan_normalise_over_max_dialled_length_with_escapes() -> None:
    # The limit applies to the string as received, escapes included.
    dialled = "+44" + "%20" * 10
    assert _error(_plan(), dialled + "9012345678") == (404, "Number Too Long")
    assert _plan().normalise("+44" + "%20" * 6 + "9012345678") == "+449012345678"


# -- classify -------------------------------------------------------------------------


def test_dialplan_classify_internal_user() -> None:
    destination = _plan().classify("alice", is_user=_is_user)
    assert destination == Destination(
        dialled="alice", e164=None, kind="internal", user="alice", trunk=None
    )


def test_dialplan_classify_numeric_user_is_internal() -> None:
    # An extension number that is a user wins over the national subscriber rule.
    assert _plan().classify("1001", is_user=_is_user) == Destination(
        dialled="1001", e164=None, kind="internal", user="1001", trunk=None
    )


def test_dialplan_classify_national() -> None:
    assert _plan().classify("020 7123 4567", is_user=_is_user) == Destination(
        dialled="020 7123 4567",
        e164="+442071234567",
        kind="national",
        user=None,
        trunk="carrier",
    )


def test_dialplan_classify_international() -> None:
    assert _plan().classify("0033123456789", is_user=_is_user) == Destination(
        dialled="0033123456789",
        e164="+33123456789",
        kind="international",
        user=None,
        trunk="carrier",
    )


@pytest.mark.parametrize(
    ("dialled", "e164"),
    [
        ("09061234567", "+449061234567"),  # national premium: premium wins
        ("08712345678", "+448712345678"),
        ("+19005550100", "+19005550100"),  # international premium
        ("00881612345678", "+881612345678"),
    ],
)
def test_dialplan_classify_premium_rate(dialled: str, e164: str) -> None:
    destination = _plan().classify(dialled, is_user=_is_user)
    assert (destination.e164, destination.kind) == (e164, "premium-rate")


def test_dialplan_classify_near_premium_is_not_premium() -> None:
    plan = _plan()
    assert plan.classify("08702345678", is_user=_is_user).kind == "national"
    assert plan.classify("+18005550100", is_user=_is_user).kind == "international"


def test_dialplan_classify_other_country_is_international_even_if_it_starts_alike() -> None:
    # +4 is not +44: country codes are prefix-free, so +43 (Austria) is international.
    assert _plan().classify("+43123456", is_user=_is_user).kind == "international"


def test_dialplan_classify_refuses_non_numbers() -> None:
    with pytest.raises(DialplanError) as info:
        _plan().classify("mallory", is_user=_is_user)
    assert (info.value.status, info.value.reason) == (404, "Not A Number")


def test_dialplan_classify_trunk_longest_prefix() -> None:
    plan = _plan(trunks={"world": ["+"], "uk": ["+44"], "london": ["+4420"], "us": ["+1"]})
    assert plan.classify("02071234567", is_user=_is_user).trunk == "london"
    assert plan.classify("01611234567", is_user=_is_user).trunk == "uk"
    assert plan.classify("+12125550100", is_user=_is_user).trunk == "us"
    assert plan.classify("+33123456789", is_user=_is_user).trunk == "world"


def test_dialplan_classify_trunk_tie_goes_to_first_configured() -> None:
    plan = _plan(trunks={"primary": ["+44"], "backup": ["+44", "+1"]})
    assert plan.classify("02071234567", is_user=_is_user).trunk == "primary"
    assert plan.classify("+12125550100", is_user=_is_user).trunk == "backup"
    swapped = _plan(trunks={"backup": ["+44", "+1"], "primary": ["+44"]})
    assert swapped.classify("02071234567", is_user=_is_user).trunk == "backup"


def test_dialplan_classify_no_route() -> None:
    plan = _plan(trunks={"uk": ["+44"]})
    destination = plan.classify("+33123456789", is_user=_is_user)
    assert destination == Destination(
        dialled="+33123456789", e164="+33123456789", kind="international", user=None, trunk=None
    )
    assert _plan(trunks={}).classify("02071234567", is_user=_is_user).trunk is None


def test_dialplan_classify_prefix_longer_than_number_does_not_match() -> None:
    plan = _plan(trunks={"long": ["+4420712345678"]})
    assert plan.classify("+442071234", is_user=_is_user).trunk is None


# -- classes of service ---------------------------------------------------------------

_ALLOWED = {
    "internal": {"internal"},
    "national": {"internal", "national"},
    "international": {"internal", "national", "international"},
    "premium-rate": {"internal", "national", "international", "premium-rate"},
}


@pytest.mark.parametrize(
    ("user_class", "kind"), list(itertools.product(CLASSES_OF_SERVICE, CLASSES_OF_SERVICE))
)
def test_dialplan_allows_matrix(user_class: ClassOfService, kind: ClassOfService) -> None:
    assert allows(user_class, kind) is (kind in _ALLOWED[user_class])


def _destination(kind: ClassOfService) -> Destination:
    if kind == "internal":
        return Destination(dialled="bob", e164=None, kind=kind, user="bob", trunk=None)
    return Destination(dialled="+1", e164="+1", kind=kind, user=None, trunk="carrier")


@pytest.mark.parametrize(
    ("user_class", "kind", "reason"),
    [
        ("internal", "internal", None),
        ("internal", "national", "national calls not allowed for class internal"),
        ("internal", "international", "international calls not allowed for class internal"),
        ("internal", "premium-rate", "premium-rate calls not allowed for class internal"),
        ("national", "internal", None),
        ("national", "national", None),
        ("national", "international", "international calls not allowed for class national"),
        ("national", "premium-rate", "premium-rate calls not allowed for class national"),
        ("international", "internal", None),
        ("international", "national", None),
        ("international", "international", None),
        (
            "international",
            "premium-rate",
            "premium-rate calls not allowed for class international",
        ),
        ("premium-rate", "internal", None),
        ("premium-rate", "national", None),
        ("premium-rate", "international", None),
        ("premium-rate", "premium-rate", None),
    ],
)
def test_dialplan_refusal_reason_matrix(
    user_class: ClassOfService, kind: ClassOfService, reason: str | None
) -> None:
    assert refusal_reason(user_class, _destination(kind)) == reason


def test_dialplan_unknown_class_allows_nothing() -> None:
    # A class read from a damaged store fails closed, even for internal calls.
    bogus: ClassOfService = "everything"  # type: ignore[assignment]
    assert allows(bogus, "internal") is False
    assert allows("premium-rate", bogus) is False
    assert (
        refusal_reason(bogus, _destination("internal")) == "unknown class of service 'everything'"
    )


# -- inbound DIDs ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "dialled",
    ["+442071234567", "+44 20 7123 4567", "00442071234567", "02071234567", "2071234567"],
)
def test_dialplan_inbound_user_by_did(dialled: str) -> None:
    assert _plan().inbound_user(dialled) == "alice"


def test_dialplan_inbound_user_e164_without_plus() -> None:
    assert _plan().inbound_user("442071234567") == "alice"
    assert _plan().inbound_user("44 20 7123 4567") == "alice"


@pytest.mark.parametrize("dialled", ["+442071234568", "alice", "", "+", "4" * 40, "+44207123456x"])
def test_dialplan_inbound_user_unknown_or_not_a_number(dialled: str) -> None:
    assert _plan().inbound_user(dialled) is None


# -- prefix files ---------------------------------------------------------------------


def test_dialplan_load_prefix_file_comments_and_blanks(tmp_path: Path) -> None:
    path = tmp_path / "premium-rate.txt"
    path.write_text(
        "# premium\n\n+4490\n  +4491   # with a comment\n\t\n+4490\n# +4498\n+1900",
        encoding="utf-8",
    )
    assert load_prefix_file(path) == ["+4490", "+4491", "+1900"]


@pytest.mark.parametrize(
    ("line", "shown"),
    [
        ("4490", "'4490'"),
        ("+", "'+'"),
        ("+0800", "'+0800'"),
        ("+44 90", "'+44 90'"),
        ("+44-90", "'+44-90'"),
        ("+" + "9" * 16, "'+" + "9" * 16 + "'"),
    ],
)
def test_dialplan_load_prefix_file_bad_line(tmp_path: Path, line: str, shown: str) -> None:
    path = tmp_path / "premium-rate.txt"
    path.write_text(f"# premium\n+4490\n\n{line}  # bad\n+4491\n", encoding="utf-8")
    with pytest.raises(RuleFileError) as info:
        load_prefix_file(path)
    assert str(info.value) == (f"{path}:4: {shown} is not an E.164 prefix ('+' and 1 to 15 digits)")
    assert isinstance(info.value, ValueError)


def test_dialplan_load_prefix_file_missing(tmp_path: Path) -> None:
    path = tmp_path / "nothing.txt"
    with pytest.raises(RuleFileError) as info:
        load_prefix_file(path)
    assert str(info.value) == f"{path}: cannot read: No such file or directory"


def test_dialplan_load_prefix_file_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "premium-rate.txt"
    path.write_bytes(b"+4490\n\xff\n")
    with pytest.raises(RuleFileError) as info:
        load_prefix_file(path)
    assert str(info.value) == f"{path}: not UTF-8: invalid start byte at byte 6"


def test_dialplan_load_prefix_file_limit(tmp_path: Path) -> None:
    path = tmp_path / "premium-rate.txt"
    path.write_text("".join(f"+1{i:06d}\n" for i in range(MAX_PREFIXES + 1)), encoding="utf-8")
    with pytest.raises(RuleFileError) as info:
        load_prefix_file(path)
    assert str(info.value) == f"{path}:{MAX_PREFIXES + 1}: more than {MAX_PREFIXES} prefixes"


def test_dialplan_shipped_premium_rate_file() -> None:
    prefixes = load_prefix_file(default_premium_rate_path())
    assert prefixes == [
        "+449",
        "+44871",
        "+44872",
        "+44873",
        "+1900",
        "+870",
        "+881",
        "+882",
        "+883",
        "+979",
    ]


# -- construction and from_config ----------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"country_code": "044"}, "country_code '044' does not match [1-9][0-9]{0,2}"),
        ({"national_prefix": "0a"}, "national_prefix '0a' does not match [0-9]{0,3}"),
        ({"international_prefix": ""}, "international_prefix '' does not match [0-9]{1,4}"),
        ({"premium": ("+",)}, "premium prefix '+' does not match \\+[1-9][0-9]{0,14}"),
        ({"trunks": {"t": ["44"]}}, "trunk 't' prefix '44' does not match \\+[0-9]*"),
        (
            {"dids": {"02071234567": "alice"}},
            "DID '02071234567' does not match \\+[1-9][0-9]{1,14}",
        ),
    ],
)
def test_dialplan_constructor_refuses_bad_settings(
    changes: dict[str, object], message: str
) -> None:
    with pytest.raises(DialplanConfigError) as info:
        _plan(**changes)  # type: ignore[arg-type]
    assert str(info.value) == message


def test_dialplan_from_config_defaults_use_shipped_list(tmp_path: Path) -> None:
    plan = load_dialplan(Config(), tmp_path)
    assert plan.classify("09061234567", is_user=_is_user) == Destination(
        dialled="09061234567", e164="+449061234567", kind="premium-rate", user=None, trunk=None
    )
    assert plan.classify("+870123456", is_user=_is_user).kind == "premium-rate"
    assert plan.inbound_user("+442071234567") is None


def test_dialplan_from_config_trunks_and_dids(tmp_path: Path) -> None:
    config = _config(
        tmp_path,
        dialplan={"country_code": "1", "national_prefix": "1", "international_prefix": "011"},
        trunks=[
            _trunk("us", ["+1"], {"+12125550100": "alice"}),
            _trunk("world", ["+"], {"+442071234567": "bob"}),
            _trunk("also-us", ["+1"]),
        ],
    )
    plan = load_dialplan(config, tmp_path)
    assert plan.classify("2125550199", is_user=_is_user) == Destination(
        dialled="2125550199", e164="+12125550199", kind="national", user=None, trunk="us"
    )
    assert plan.classify("011442071234567", is_user=_is_user).trunk == "world"
    assert plan.inbound_user("12125550100") == "alice"
    assert plan.inbound_user("+442071234567") == "bob"


def test_dialplan_from_config_same_did_same_user_on_two_trunks(tmp_path: Path) -> None:
    did = {"+442071234567": "alice"}
    config = _config(tmp_path, trunks=[_trunk("a", ["+"], did), _trunk("b", ["+44"], did)])
    assert load_dialplan(config, tmp_path).inbound_user("02071234567") == "alice"


def test_dialplan_from_config_conflicting_did(tmp_path: Path) -> None:
    config = _config(
        tmp_path,
        trunks=[
            _trunk("a", ["+"], {"+442071234567": "alice"}),
            _trunk("b", ["+44"], {"+442071234567": "bob"}),
        ],
    )
    with pytest.raises(DialplanConfigError) as info:
        load_dialplan(config, tmp_path)
    assert str(info.value) == "DID +442071234567 is 'alice' on trunk 'a' but 'bob' on trunk 'b'"


def test_dialplan_from_config_user_file_replaces_shipped(tmp_path: Path) -> None:
    (tmp_path / "dialplan").mkdir()
    (tmp_path / "dialplan" / "premium-rate.txt").write_text("+4420\n", encoding="utf-8")
    plan = load_dialplan(Config(), tmp_path)
    assert plan.classify("02071234567", is_user=_is_user).kind == "premium-rate"
    # Replaced whole: the shipped +449 is gone.
    assert plan.classify("09061234567", is_user=_is_user).kind == "national"


def test_dialplan_from_config_user_file_in_configured_dir(tmp_path: Path) -> None:
    (tmp_path / "numbers").mkdir()
    (tmp_path / "numbers" / "premium-rate.txt").write_text("# none\n", encoding="utf-8")
    config = _config(tmp_path, dialplan={"prefixes_dir": "numbers"})
    plan = load_dialplan(config, tmp_path)
    assert plan.classify("09061234567", is_user=_is_user).kind == "national"


def test_dialplan_from_config_bad_user_file_does_not_fall_back(tmp_path: Path) -> None:
    (tmp_path / "dialplan").mkdir()
    path = tmp_path / "dialplan" / "premium-rate.txt"
    path.write_text("+449\nnine\n", encoding="utf-8")
    with pytest.raises(DialplanConfigError) as info:
        load_dialplan(Config(), tmp_path)
    assert str(info.value) == (f"{path}:2: 'nine' is not an E.164 prefix ('+' and 1 to 15 digits)")


def test_dialplan_from_config_directory_in_place_of_user_file(tmp_path: Path) -> None:
    path = tmp_path / "dialplan" / "premium-rate.txt"
    path.mkdir(parents=True)
    with pytest.raises(DialplanConfigError) as info:
        load_dialplan(Config(), tmp_path)
    assert str(info.value) == f"{path}: cannot read: Is a directory"


def test_dialplan_from_config_takes_parsed_prefixes() -> None:
    # The core reads no file: the prefixes come in as data.
    plan = Dialplan.from_config(Config(), premium_prefixes=["+4420"])
    assert plan.classify("02071234567", is_user=_is_user).kind == "premium-rate"
    assert plan.classify("09061234567", is_user=_is_user).kind == "national"

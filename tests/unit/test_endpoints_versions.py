"""Firmware versions compared as versions (voipsec.endpoints.versions): dotted numbers
as packaging orders them, vendor suffixes as later builds, one error type."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from packaging.version import Version

from voipsec.endpoints.versions import (
    MAX_VERSION_LENGTH,
    MAX_VERSION_PARTS,
    VersionError,
    compare_versions,
    parse_version,
    try_parse_version,
)

#: Real firmware versions from the fingerprints' examples and the advisories.
DOTTED = [
    ("1.0.7.40", "1.0.7.81"),
    ("1.0.4.152", "1.0.5.3"),
    ("66.85.0.5", "66.86.0.15"),
    ("66.9", "66.86.0.15"),
    ("14.2", "14.2.1"),
    ("6.4.3.5156", "6.4.8"),
    ("7.2.8", "8.1.7"),
    ("2.12.18.9", "2.12.19"),
    ("1.0", "1.0.0.1"),
]


@pytest.mark.parametrize(("older", "newer"), DOTTED)
def test_versions_dotted_numbers_agree_with_packaging(older: str, newer: str) -> None:
    assert Version(older) < Version(newer)
    assert compare_versions(older, newer) == -1
    assert compare_versions(newer, older) == 1
    assert parse_version(older) < parse_version(newer)


@pytest.mark.parametrize(("a", "b"), [("14.2", "14.2.0"), ("1.0", "1.0.0.0"), ("8.0", "8")])
def test_versions_trailing_zeros_are_equal(a: str, b: str) -> None:
    assert Version(a) == Version(b)
    assert compare_versions(a, b) == 0
    assert parse_version(a) == parse_version(b)


def test_versions_cisco_parenthesised_release_is_one_more_number() -> None:
    # Cisco writes the first fixed release of CVE-2022-20968 as 14.2(1); phones say 14.2.1.
    assert compare_versions("14.2(1)", "14.2.1") == 0
    assert compare_versions("14.2", "14.2(1)") == -1


def test_versions_vendor_suffix_is_a_later_build() -> None:
    ordered = ["11.3.7", "11.3.7SR1", "11.3.7SR2", "11.3.7SR10", "11.3.8"]
    assert sorted(ordered, key=parse_version) == ordered
    assert sorted(["7.4.8b", "7.4.8", "7.4.8a"], key=parse_version) == ["7.4.8", "7.4.8a", "7.4.8b"]
    # PEP 440 reads the letter as a pre-release; firmware vendors do not.
    assert Version("7.4.8a") < Version("7.4.8")
    assert compare_versions("7.4.8a", "7.4.8") == 1
    assert compare_versions("1.4.1(SR5)", "1.4.1") == 1


def test_versions_prerelease_words_sort_before_the_release() -> None:
    ordered = ["2.0-dev", "2.0-alpha", "2.0-beta2", "2.0-beta10", "2.0-rc1", "2.0", "2.0.1"]
    assert sorted(reversed(ordered), key=parse_version) == ordered


def test_versions_release_words_and_build_metadata_are_ignored() -> None:
    assert compare_versions("1.10.12-release", "1.10.12") == 0
    assert compare_versions("2.43.0+build.5f0a106", "2.43") == 0
    assert compare_versions("1.10.7-dev", "1.10.7-release") == -1


def test_versions_key_keeps_the_text_but_does_not_compare_it() -> None:
    key = parse_version(" 14.2 ")
    assert key.text == "14.2"
    assert key.release == (14, 2)
    assert key == parse_version("14.2.0")


@pytest.mark.parametrize("text", ["", "   ", "abc", "v1.2", "SR1", ".5"])
def test_versions_not_a_version(text: str) -> None:
    with pytest.raises(VersionError, match=r"^not a version: ") as err:
        parse_version(text)
    assert "\n" not in str(err.value)
    assert try_parse_version(text) is None


def test_versions_length_limit() -> None:
    text = "1." * (MAX_VERSION_LENGTH // 2) + "1"
    assert len(text) > MAX_VERSION_LENGTH
    with pytest.raises(VersionError, match=r"^not a version: "):
        parse_version(text)


def test_versions_parts_limit() -> None:
    assert parse_version(".".join(["1"] * MAX_VERSION_PARTS)).release == (1,) * MAX_VERSION_PARTS
    text = ".".join(["1"] * MAX_VERSION_PARTS) + "(1)"
    with pytest.raises(VersionError, match=f"more than {MAX_VERSION_PARTS} numbers"):
        parse_version(text)


def test_versions_try_parse_none_is_none() -> None:
    assert try_parse_version(None) is None


@given(st.text(max_size=80))
def test_versions_any_text_parses_or_raises_version_error(text: str) -> None:
    try:
        key = parse_version(text)
    except VersionError:
        return
    assert compare_versions(text, text) == 0
    assert key == parse_version(text)


@given(
    st.lists(st.integers(0, 999), min_size=1, max_size=6),
    st.lists(st.integers(0, 999), min_size=1, max_size=6),
)
def test_versions_dotted_order_is_packaging_order(a: list[int], b: list[int]) -> None:
    sa, sb = ".".join(map(str, a)), ".".join(map(str, b))
    expected = (Version(sa) > Version(sb)) - (Version(sa) < Version(sb))
    assert compare_versions(sa, sb) == expected

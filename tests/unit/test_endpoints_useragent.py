"""Devices identified from their User-Agent (voipsec.endpoints.useragent) with the
shipped fingerprints: every vendor with real User-Agent strings (sources in
endpoints/data/fingerprints.yaml), unknown ones, the length cut and the pattern checks."""

from __future__ import annotations

import re

import pytest

from voipsec.endpoints.loader import load_fingerprints
from voipsec.endpoints.useragent import (
    MAX_MODEL_LENGTH,
    MAX_PATTERN_LENGTH,
    MAX_USER_AGENT,
    Device,
    DeviceFingerprint,
    FingerprintError,
    check_pattern,
    identify,
)

FINGERPRINTS = load_fingerprints()

#: (User-Agent as published, vendor, family, model, version, kind)
REAL = [
    ("Yealink SIP-T21P_E2 52.83.0.35", "Yealink", "SIP-T", "SIP-T21P_E2", "52.83.0.35", "phone"),
    ("Yealink W60B 77.83.0.85", "Yealink", "W", "W60B", "77.83.0.85", "phone"),
    ("PolycomVVX-VVX_250-UA/6.4.3.5156", "Poly", "VVX", "VVX_250", "6.4.3.5156", "phone"),
    ("Cisco-CP8845/14.2", "Cisco", "Enterprise", "CP8845", "14.2", "phone"),
    ("Cisco-CP-8841-3PCC/11.0 (00562b043615)", "Cisco", "MPP", "CP-8841-3PCC", "11.0", "phone"),
    ("Cisco/SPA122-1.4.1(SR5)", "Cisco", "SPA", "SPA122", "1.4.1(SR5)", "phone"),
    ("Grandstream GXP1625 1.0.2.25", "Grandstream", "GXP", "GXP1625", "1.0.2.25", "phone"),
    ("Grandstream HT812 1.0.29.8", "Grandstream", "HT", "HT812", "1.0.29.8", "phone"),
    ("snom370/7.3.14", "Snom", "snom", "370", "7.3.14", "phone"),
    ("Fanvil X303 2.12.18.9 0c383e63963b", "Fanvil", "", "X303", "2.12.18.9", "phone"),
    ("OBIHAI/OBi1062-5.0.0.1542", "Obihai", "", "OBi1062", "5.0.0.1542", "phone"),
    (
        "Gigaset N870 IP PRO/83.V2.43.0+build.5f0a106;7C2F80XXXXXX",
        "Gigaset",
        "Nx70 IP PRO",
        "N870",
        "2.43.0",
        "phone",
    ),
    (
        "Avaya one-X Deskphone 7.1.15.1.3 b4475ea2e9a0",
        "Avaya",
        "one-X",
        "one-X Deskphone",
        "7.1.15.1.3",
        "phone",
    ),
    ("Mitel 6930/6.4.0.132", "Mitel", "Mitel", "6930", "6.4.0.132", "phone"),
    (
        "AUDC-IPPhone/2.2.8.61 (440HDG-Rev0; 00908F602AAC)",
        "AudioCodes",
        "IPPhone",
        "440HDG",
        "2.2.8.61",
        "phone",
    ),
    (
        "Linphone Desktop/ (Ubuntu 22.04.3 LTS, Qt 5.15.3) LinphoneCore/4.4.21",
        "Belledonne Communications",
        "LinphoneCore",
        "Linphone Desktop",
        "4.4.21",
        "softphone",
    ),
    (
        "Linphonec/5.1.65",
        "Belledonne Communications",
        "Linphone",
        "Linphonec",
        "5.1.65",
        "softphone",
    ),
    ("baresip v1.0.0 (x86_64/linux)", "baresip", "baresip", "baresip", "1.0.0", "softphone"),
    (
        "Jami Daemon 13.7.0 (linux)",
        "Savoir-faire Linux",
        "Jami",
        "Jami Daemon",
        "13.7.0",
        "softphone",
    ),
    ("MicroSIP/3.21.5", "MicroSIP", "MicroSIP", "MicroSIP", "3.21.5", "softphone"),
    ("Zoiper v2.10.20.4_1", "Zoiper", "Zoiper", "Zoiper", "2.10.20.4", "softphone"),
    ("Bria 3 release 3.5.5 stamp 71243", "CounterPath", "Bria", "3", "3.5.5", "softphone"),
    ("Asterisk PBX 18.20.0", "Sangoma", "Asterisk", "Asterisk", "18.20.0", "pbx"),
    (
        "FreeSWITCH-mod_sofia/1.10.12-release~a88d069d6f~64bit",
        "SignalWire",
        "FreeSWITCH",
        "FreeSWITCH",
        "1.10.12-release",
        "pbx",
    ),
]


@pytest.mark.parametrize(("ua", "vendor", "family", "model", "version", "kind"), REAL)
def test_useragent_identifies_real_user_agents(
    ua: str, vendor: str, family: str, model: str, version: str, kind: str
) -> None:
    device = identify(ua, FINGERPRINTS)
    assert device is not None
    assert (device.vendor, device.family, device.model, device.version, device.kind) == (
        vendor,
        family,
        model,
        version,
        kind,
    )


def test_useragent_shipped_vendors() -> None:
    # The issue's list, Poly as one vendor; Groundwire waits for a public sample of its
    # User-Agent (fingerprints.yaml says so).
    assert {fp.vendor for fp in FINGERPRINTS} == {
        "Yealink",
        "Poly",
        "Cisco",
        "Grandstream",
        "Snom",
        "Fanvil",
        "Obihai",
        "Gigaset",
        "Avaya",
        "Mitel",
        "AudioCodes",
        "Belledonne Communications",
        "baresip",
        "MicroSIP",
        "Savoir-faire Linux",
        "Zoiper",
        "CounterPath",
        "Sangoma",
        "SignalWire",
    }
    assert all(fp.source for fp in FINGERPRINTS)


@pytest.mark.parametrize(
    "ua", ["", "   ", "friendly-scanner", "LeakyPhone/6.6.6", "Yealink", "Grandstream GXP1625"]
)
def test_useragent_unknown_is_none(ua: str) -> None:
    assert identify(ua, FINGERPRINTS) is None


def test_useragent_without_version_gives_none_version() -> None:
    fp = DeviceFingerprint(
        name="t",
        vendor="V",
        model="M",
        pattern=check_pattern("^V(?: (?P<version>[0-9]+))?", fixed_model=True),
    )
    assert identify("V", [fp]) == Device(
        vendor="V", family="", model="M", version=None, kind="phone", fingerprint="t"
    )


def test_useragent_is_cut_to_max_user_agent_before_matching() -> None:
    ua = "Grandstream GXP1625 1.0.7.40 " + "x" * 100_000
    device = identify(ua, FINGERPRINTS)
    assert device is not None and device.version == "1.0.7.40"
    # What lies past the limit is never seen.
    assert identify(" " * MAX_USER_AGENT + "Grandstream GXP1625 1.0.7.40", FINGERPRINTS) is None


def test_useragent_hostile_user_agent_is_not_identified() -> None:
    # Long runs of what the patterns repeat: bounded patterns, cut input, no match.
    for ua in ("Yealink " + "A" * 5000, "Grandstream " + "1." * 5000, "Polycom" + "a-" * 5000):
        assert identify(ua, FINGERPRINTS) is None


def test_useragent_first_matching_fingerprint_wins() -> None:
    general = DeviceFingerprint(
        name="g", vendor="G", pattern=check_pattern("^(?P<model>X)(?P<version>1)")
    )
    special = DeviceFingerprint(
        name="s", vendor="S", pattern=check_pattern("^(?P<model>X)(?P<version>1)")
    )
    assert identify("X1", [special, general]).fingerprint == "s"  # type: ignore[union-attr]
    assert identify("X1", [general, special]).fingerprint == "g"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("Yealink (?P<model>x) (?P<version>1)", "must be anchored with '^'"),
        ("^(?:a+)+(?P<model>x)(?P<version>1)", "a quantified group holds a quantifier"),
        ("^(\\w*\\.)*(?P<model>x)(?P<version>1)", "a quantified group holds a quantifier"),
        ("^(a{1,3})+(?P<model>x)(?P<version>1)", "a quantified group holds a quantifier"),
        (
            "^(?P<model>x)(?P<version>1",
            "not a regular expression: missing ), unterminated subpattern",
        ),
        ("^(?P<model>x)", "needs the named group(s) version"),
        ("^(?P<version>1)", "needs the named group(s) model"),
        ("^(?P<model>x)(?P<version>1)(?P<mac>[0-9a-f]{12})", "unknown named group(s) mac"),
        ("^" + "a" * MAX_PATTERN_LENGTH, f"longer than {MAX_PATTERN_LENGTH} characters"),
    ],
)
def test_useragent_pattern_checks(pattern: str, message: str) -> None:
    with pytest.raises(FingerprintError, match=f"^{re.escape(message)}"):
        check_pattern(pattern)


def test_useragent_bounded_repeats_are_allowed() -> None:
    compiled = check_pattern(r"^(?P<model>[A-Z]{2,4})(?P<version>[0-9]{1,3}(?:\.[0-9]{1,4}){2,4})")
    assert compiled.groupindex.keys() == {"model", "version"}


def test_useragent_model_and_family_are_cut_to_max_model_length() -> None:
    fp = DeviceFingerprint(
        name="t",
        vendor="V",
        pattern=check_pattern(
            r"^(?P<family>[a-z]{1,100}) (?P<model>[A-Z]{1,100}) (?P<version>[0-9])"
        ),
    )
    device = identify(f"{'f' * 100} {'M' * 100} 1", [fp])
    assert device is not None
    assert (device.family, device.model) == ("f" * MAX_MODEL_LENGTH, "M" * MAX_MODEL_LENGTH)

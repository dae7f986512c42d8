"""The [endpoints] section: safe defaults, actions, minimum firmware validated (one
exact line per problem), its limit exceeded."""

from __future__ import annotations

from pathlib import Path

import pytest

from voipsec.config import (
    MAX_MINIMUM_FIRMWARE,
    MAX_POLICY_OVERRIDES,
    Config,
    ConfigError,
    EndpointsOverrideSection,
    load,
)


def _problems(tmp_path: Path, text: str) -> tuple[Path, list[str]]:
    path = tmp_path / "voipsec.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load(path)
    return path, info.value.problems


def test_config_endpoints_defaults_refuse_only_kev() -> None:
    e = Config().endpoints
    actions = {
        "kev_advisory": e.kev_advisory,
        "advisory": e.advisory,
        "unknown_user_agent": e.unknown_user_agent,
        "md5_digest": e.md5_digest,
        "tls12": e.tls12,
        "below_minimum": e.below_minimum,
        "missing_certificate": e.missing_certificate,
        "expiring_certificate": e.expiring_certificate,
        "no_srtp_offer": e.no_srtp_offer,
    }
    assert [k for k, v in actions.items() if v == "refuse"] == ["kev_advisory"]
    assert (e.enabled, e.minimum_firmware, e.no_srtp_offer) == (True, {}, "warn")
    assert (e.zones, e.classes) == ({}, {})


def test_config_endpoints_values_are_read(tmp_path: Path) -> None:
    path = tmp_path / "voipsec.toml"
    path.write_text(
        '[endpoints]\nadvisory = "refuse"\nminimum_firmware = { "Grandstream/GXP16??" = '
        '"1.0.7.81", "Cisco" = "14.2(1)" }\n',
        encoding="utf-8",
    )
    e = load(path).endpoints
    assert e.advisory == "refuse"
    assert e.minimum_firmware == {"Grandstream/GXP16??": "1.0.7.81", "Cisco": "14.2(1)"}


def test_config_endpoints_overrides_are_read(tmp_path: Path) -> None:
    path = tmp_path / "voipsec.toml"
    path.write_text(
        '[endpoints.zones.internet]\nunknown_user_agent = "refuse"\n'
        '[endpoints.classes.premium-rate]\nno_srtp_offer = "refuse"\n'
        'minimum_firmware = { "Cisco" = "14.2" }\n',
        encoding="utf-8",
    )
    e = load(path).endpoints
    assert e.zones == {"internet": EndpointsOverrideSection(unknown_user_agent="refuse")}
    assert e.classes == {
        "premium-rate": EndpointsOverrideSection(
            no_srtp_offer="refuse", minimum_firmware={"Cisco": "14.2"}
        )
    }


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (
            '[endpoints.zones.lab]\nadvisory = "refuse"\n',
            "(top level): endpoints.zones: no zone named 'lab'",
        ),
        (
            '[endpoints.classes.vip]\nadvisory = "refuse"\n',
            "endpoints.classes: no class of service named 'vip' "
            "(one of internal, national, international, premium-rate)",
        ),
        (
            '[endpoints.zones.internet]\nno_srtp_offer = "block"\n',
            "endpoints.zones.internet.no_srtp_offer: Input should be 'allow', 'warn', "
            "'restrict' or 'refuse'",
        ),
        (
            "[endpoints.zones.internet]\ncertificate_days = 3\n",
            "endpoints.zones.internet.certificate_days: unknown key",
        ),
        (
            '[endpoints.classes.internal]\nminimum_firmware = { "Cisco" = "v1" }\n',
            "endpoints.classes.internal.minimum_firmware: 'Cisco': 'v1' is not a version "
            "(e.g. 1.0.7.81)",
        ),
        (
            '[endpoints]\nadvisory = "block"\n',
            "endpoints.advisory: Input should be 'allow', 'warn', 'restrict' or 'refuse'",
        ),
        (
            '[endpoints]\nminimum_firmware = { "Grandstream/GXP 16" = "1.0" }\n',
            "endpoints.minimum_firmware: 'Grandstream/GXP 16' is not 'Vendor' or "
            "'Vendor/MODEL-PATTERN'",
        ),
        (
            '[endpoints]\nminimum_firmware = { "Grandstream" = "v1.0" }\n',
            "endpoints.minimum_firmware: 'Grandstream': 'v1.0' is not a version (e.g. 1.0.7.81)",
        ),
    ],
)
def test_config_endpoints_bad_value_is_one_exact_line(
    tmp_path: Path, text: str, problem: str
) -> None:
    path, problems = _problems(tmp_path, text)
    assert problems == [f"{path}: {problem}"]


def test_config_endpoints_minimum_firmware_over_limit(tmp_path: Path) -> None:
    entries = ", ".join(f'"V{n}" = "1"' for n in range(MAX_MINIMUM_FIRMWARE + 1))
    path, problems = _problems(tmp_path, f"[endpoints]\nminimum_firmware = {{ {entries} }}\n")
    assert problems == [f"{path}: endpoints.minimum_firmware: at most 500 entries"]


def test_config_endpoints_override_tables_over_limit(tmp_path: Path) -> None:
    count = MAX_POLICY_OVERRIDES + 1
    zones = "".join(f'[[zones]]\nname = "z{n}"\ncidrs = ["10.{n}.0.0/16"]\n' for n in range(count))
    tables = "".join(f'[endpoints.zones.z{n}]\nadvisory = "refuse"\n' for n in range(count))
    path, problems = _problems(tmp_path, zones + tables)
    assert problems == [f"{path}: endpoints: at most 64 zone and class tables in all"]

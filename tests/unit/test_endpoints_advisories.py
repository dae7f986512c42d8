"""Which advisories a device falls under (voipsec.endpoints.advisories): range edges,
model patterns, vendors, unknown versions, order; and the shipped advisories against
real User-Agent formats."""

from __future__ import annotations

import pytest

from voipsec.endpoints.advisories import Advisory, covers_model, matching
from voipsec.endpoints.loader import load_advisories, load_fingerprints
from voipsec.endpoints.useragent import Device, identify


def _device(version: str | None, *, model: str = "GXP1625", vendor: str = "Grandstream") -> Device:
    return Device(
        vendor=vendor, family="GXP", model=model, version=version, kind="phone", fingerprint="t"
    )


def _advisory(**fields: object) -> Advisory:
    base: dict[str, object] = {
        "id": "CVE-2026-2329",
        "vendor": "Grandstream",
        "models": ("GXP16??",),
        "cves": ("CVE-2026-2329",),
    }
    return Advisory(**{**base, **fields})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("version", "affected"),
    [
        ("1.0.7.40", True),
        ("1.0.7.80", True),
        ("1.0.7.81", False),
        ("1.0.7.81.1", False),
        ("1.0.8", False),
    ],
)
def test_advisories_fixed_is_exclusive(version: str, affected: bool) -> None:
    advisory = _advisory(fixed="1.0.7.81")
    assert matching(_device(version), [advisory]) == ([advisory] if affected else [])


@pytest.mark.parametrize(
    ("version", "affected"),
    [("1.0.4.151", True), ("1.0.4.152", True), ("1.0.4.152.0", True), ("1.0.4.153", False)],
)
def test_advisories_last_affected_is_inclusive(version: str, affected: bool) -> None:
    advisory = _advisory(last_affected="1.0.4.152")
    assert matching(_device(version), [advisory]) == ([advisory] if affected else [])


@pytest.mark.parametrize(
    ("version", "affected"),
    [("1.0.5.9", False), ("1.0.6", True), ("1.0.6.0", True), ("1.0.7.80", True)],
)
def test_advisories_introduced_is_inclusive(version: str, affected: bool) -> None:
    advisory = _advisory(introduced="1.0.6", fixed="1.0.7.81")
    assert matching(_device(version), [advisory]) == ([advisory] if affected else [])


def test_advisories_without_bounds_affect_every_version() -> None:
    advisory = _advisory()
    assert matching(_device("0.1"), [advisory]) == [advisory]
    assert matching(_device("999.0"), [advisory]) == [advisory]


def test_advisories_model_patterns_and_vendor() -> None:
    advisory = _advisory(models=("GXP16??", "HT8*"))
    assert covers_model(advisory, "gxp1625")
    assert covers_model(advisory, "HT812")
    assert not covers_model(advisory, "GXP2170")
    assert not covers_model(advisory, "GXP162")
    assert matching(_device("1.0", vendor="grandstream"), [advisory]) == [advisory]
    assert matching(_device("1.0", vendor="Yealink"), [advisory]) == []


def test_advisories_unknown_version_only_when_asked() -> None:
    advisory = _advisory(fixed="1.0.7.81")
    for version in (None, "unknown"):
        assert matching(_device(version), [advisory]) == []
        assert matching(_device(version), [advisory], unknown_version=True) == [advisory]
    assert matching(_device(None, model="GXP2170"), [advisory], unknown_version=True) == []


def test_advisories_order_kev_then_cvss_then_id() -> None:
    low = _advisory(id="B", cvss=5.0)
    high = _advisory(id="C", cvss=9.8)
    none = _advisory(id="A")
    kev = _advisory(id="D", cvss=4.0, kev=True)
    assert [a.id for a in matching(_device("1.0"), [low, none, high, kev])] == ["D", "C", "B", "A"]


SHIPPED = load_advisories()
FINGERPRINTS = load_fingerprints()


@pytest.mark.parametrize(
    ("ua", "ids"),
    [
        # Firmware format of the real banners (fingerprints.yaml); versions chosen around
        # each advisory's bounds.
        ("Grandstream GXP1625 1.0.2.25", ["CVE-2026-2329", "CVE-2020-5738"]),
        ("Grandstream GXP1625 1.0.7.40", ["CVE-2026-2329"]),
        ("Grandstream GXP1625 1.0.7.81", []),
        ("Grandstream GXP2170 1.0.7.40", []),
        ("Cisco-CP8845/14.2", ["CVE-2022-20968"]),
        ("Cisco-CP8845/14.2.1", []),
        ("Cisco-CP8821/11.0", []),
        ("Cisco-CP-8841-3PCC/11.0 (00562b043615)", ["CVE-2023-20078"]),
        ("Cisco-CP-8841-3PCC/11.3.7SR1 (00562b043615)", []),
        ("PolycomVVX-VVX_250-UA/6.4.3.5156", ["CVE-2026-0826#vvx"]),
        ("Yealink SIP-T21P_E2 52.83.0.35", []),
    ],
)
def test_advisories_shipped_entries_match_real_formats(ua: str, ids: list[str]) -> None:
    device = identify(ua, FINGERPRINTS)
    assert device is not None
    assert [a.id for a in matching(device, SHIPPED)] == ids


def test_advisories_shipped_entries_are_sourced() -> None:
    assert sorted(a.id for a in SHIPPED) == [
        "CVE-2020-5738",
        "CVE-2022-20968",
        "CVE-2023-20078",
        "CVE-2026-0826#trio8300",
        "CVE-2026-0826#trio8500-8800",
        "CVE-2026-0826#vvx",
        "CVE-2026-2329",
    ]
    assert all(a.source.startswith("https://") and a.notes for a in SHIPPED)
    assert not any(a.kev for a in SHIPPED)

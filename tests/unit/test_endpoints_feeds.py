"""CISA KEV and NVD CVE API 2.0 files (voipsec.endpoints.feeds): the real-format
excerpts in tests/data/endpoints (README there names their sources), advisories made
from them, every limit and the one error type."""

from __future__ import annotations

import contextlib
import hashlib
import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from voipsec.endpoints.advisories import Advisory
from voipsec.endpoints.feeds import (
    MAX_CPE_MATCHES,
    MAX_FEED_BYTES,
    MAX_FEED_ENTRIES,
    NVD_NOTE,
    CpeRange,
    FeedError,
    KevEntry,
    NvdCve,
    advisories_from_nvd,
    kev_phone_entries,
    mark_kev,
    parse_kev,
    parse_nvd,
)

DATA = Path(__file__).parent.parent / "data" / "endpoints"
KEV = (DATA / "kev-excerpt.json").read_bytes()
NVD = (DATA / "nvd-cve-2020-5739.json").read_bytes()
#: The six firmware CPEs of the real NVD record, in its order.
GXP16XX = ("gxp1610", "gxp1615", "gxp1620", "gxp1625", "gxp1628", "gxp1630")

MITEL = KevEntry(
    cve="CVE-2024-41710",
    vendor="Mitel",
    product="SIP Phones",
    name="Mitel SIP Phones Argument Injection Vulnerability",
    date_added="2025-02-12",
)


def test_feeds_kev_excerpt() -> None:
    catalog = parse_kev(KEV)
    assert (catalog.version, catalog.released) == ("2025.02.25", "2025-02-25T20:33:53.3676Z")
    assert [e.cve for e in catalog.entries] == ["CVE-2023-34192", "CVE-2024-41710"]
    assert catalog.entries[1] == MITEL
    assert catalog.cves() == {"CVE-2023-34192", "CVE-2024-41710"}


def test_feeds_kev_phone_entries() -> None:
    assert kev_phone_entries(parse_kev(KEV)) == [MITEL]


def test_feeds_mark_kev() -> None:
    mitel = Advisory(id="CVE-2024-41710", vendor="Mitel", models=("68*",), cves=("CVE-2024-41710",))
    other = Advisory(
        id="CVE-2026-2329", vendor="Grandstream", models=("GXP16??",), cves=("CVE-2026-2329",)
    )
    marked = mark_kev([mitel, other], parse_kev(KEV))
    assert [(a.id, a.kev) for a in marked] == [("CVE-2024-41710", True), ("CVE-2026-2329", False)]


def test_feeds_nvd_record_is_the_published_one() -> None:
    # The record inside the API wrapper is fkie-cad/nvd-json-data-feeds' file byte for
    # byte (tests/data/endpoints/README.md names the commit and these digests).
    start = NVD.index(b'"cve": ') + len(b'"cve": ')
    record = NVD[start : NVD.rindex(b"\n    }\n  ]\n}")]
    assert len(record) == 7955
    assert hashlib.sha256(record).hexdigest() == (
        "8c48d7380030dd9875f90c5d845afd317c6f8d439d5c6fd4720602c7ac0b69ab"
    )
    assert json.loads(NVD)["vulnerabilities"][0]["cve"] == json.loads(record)


def test_feeds_nvd_excerpt() -> None:
    assert parse_nvd(NVD) == [
        NvdCve(
            id="CVE-2020-5739",
            summary=(
                "Grandstream GXP1600 series firmware 1.0.4.152 and below is vulnerable to "
                "authenticated remote command execution when an attacker adds an OpenVPN up "
                'script to the phone\'s VPN settings via the "Additional Settings" field in '
                "the web interface. When the VPN's connection is established, the user "
                "defined script is executed with root privileges."
            ),
            cvss=8.8,
            cvss_version="3.1",
            ranges=tuple(
                CpeRange(
                    vendor="grandstream", product=f"{model}_firmware", last_affected="1.0.4.152"
                )
                for model in GXP16XX
            ),
        )
    ]


def test_feeds_advisories_from_nvd_excerpt() -> None:
    assert advisories_from_nvd(parse_nvd(NVD)) == [
        Advisory(
            id="CVE-2020-5739",
            vendor="Grandstream",
            models=GXP16XX,
            cves=("CVE-2020-5739",),
            last_affected="1.0.4.152",
            cvss=8.8,
            cvss_version="3.1",
            summary=parse_nvd(NVD)[0].summary,
            source="https://nvd.nist.gov/vuln/detail/CVE-2020-5739",
            notes=NVD_NOTE,
        )
    ]


def _nvd(*matches: dict[str, object], cve: str = "CVE-2023-20078", metrics: object = None) -> bytes:
    record: dict[str, object] = {
        "id": cve,
        "descriptions": [{"lang": "es", "value": "x"}],
        "metrics": metrics or {},
        "configurations": [{"nodes": [{"operator": "OR", "cpeMatch": list(matches)}]}],
    }
    return json.dumps({"vulnerabilities": [{"cve": record}]}).encode()


def _match(criteria: str, **bounds: str) -> dict[str, object]:
    return {"vulnerable": True, "criteria": criteria, **bounds}


def test_feeds_nvd_ranges_group_into_advisories() -> None:
    data = _nvd(
        _match(
            "cpe:2.3:o:cisco:ip_phone_8845_firmware:*:*:*:*:*:*:*:*", versionEndExcluding="14.2.1"
        ),
        _match(
            "cpe:2.3:o:cisco:ip_phone_7841_firmware:*:*:*:*:*:*:*:*", versionEndExcluding="14.2.1"
        ),
        _match(
            "cpe:2.3:o:cisco:ip_phone_8821_firmware:*:*:*:*:*:*:*:*",
            versionStartIncluding="11.0",
            versionEndIncluding="11.0.6",
        ),
        _match("cpe:2.3:o:cisco:ios_xe:*:*:*:*:*:*:*:*", versionEndExcluding="17.9"),
        _match("cpe:2.3:o:yealink:sip-t46s_firmware:66.86.0.15:*:*:*:*:*:*:*"),
        _match("cpe:2.3:o:fanvil:x5u_firmware:*:*:*:*:*:*:*:*"),
        {"vulnerable": False, "criteria": "cpe:2.3:h:cisco:ip_phone_8845:-:*:*:*:*:*:*:*"},
    )
    found = advisories_from_nvd(parse_nvd(data))
    assert [(a.id, a.vendor, a.models, a.introduced, a.fixed, a.last_affected) for a in found] == [
        ("CVE-2023-20078#1", "Cisco", ("CP7841*", "CP8845*"), None, "14.2.1", None),
        ("CVE-2023-20078#2", "Cisco", ("CP8821*",), "11.0", None, "11.0.6"),
        ("CVE-2023-20078#3", "Yealink", ("sip-t46s",), "66.86.0.15", None, "66.86.0.15"),
    ]
    assert all(a.summary == "" and a.cvss is None for a in found)


def test_feeds_nvd_prefers_newest_cvss_and_nvd_primary() -> None:
    metrics = {
        "cvssMetricV31": [
            {
                "source": "psirt@cisco.com",
                "type": "Secondary",
                "cvssData": {"version": "3.1", "baseScore": 9.8},
            },
            {
                "source": "nvd@nist.gov",
                "type": "Primary",
                "cvssData": {"version": "3.1", "baseScore": 9.6},
            },
        ],
        "cvssMetricV40": [
            {"source": "x", "type": "Secondary", "cvssData": {"version": "4.0", "baseScore": 9.3}}
        ],
    }
    (cve,) = parse_nvd(_nvd(metrics=metrics))
    assert (cve.cvss, cve.cvss_version) == (9.3, "4.0")
    del metrics["cvssMetricV40"]
    (cve,) = parse_nvd(_nvd(metrics=metrics))
    assert (cve.cvss, cve.cvss_version) == (9.6, "3.1")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\xff\xfe", "not UTF-8: invalid start byte at byte 0"),
        (b"{", "not JSON: Expecting property name enclosed in double quotes at line 1 column 2"),
        (b"[]", "must be a JSON object"),
        (b"{}", "catalogVersion: must be a string"),
        (b'{"catalogVersion": "1"}', "vulnerabilities: must be a list"),
        (
            b'{"catalogVersion": "1", "vulnerabilities": [1]}',
            "vulnerabilities[0]: must be an object",
        ),
        (
            b'{"catalogVersion": "1", "vulnerabilities": [{"cveID": "CVE-1"}]}',
            "vulnerabilities[0].cveID: 'CVE-1' is not a CVE id",
        ),
        (
            b'{"catalogVersion": "1", "vulnerabilities": '
            b'[{"cveID": "CVE-2024-41710", "vendorProject": 3}]}',
            "vulnerabilities[0].vendorProject: must be a string",
        ),
    ],
)
def test_feeds_kev_errors(data: bytes, message: str) -> None:
    with pytest.raises(FeedError) as err:
        parse_kev(data)
    assert str(err.value) == message


@pytest.mark.parametrize(
    ("record", "message"),
    [
        (
            {"id": "CVE-2020-5739", "metrics": []},
            "vulnerabilities[0].cve.metrics: must be an object",
        ),
        (
            {
                "id": "CVE-2020-5739",
                "metrics": {"cvssMetricV31": [{"cvssData": {"baseScore": 11}}]},
            },
            "vulnerabilities[0].cve.metrics.cvssMetricV31[0].cvssData.baseScore: "
            "must be a number from 0 to 10",
        ),
        (
            {
                "id": "CVE-2020-5739",
                "configurations": [
                    {"nodes": [{"cpeMatch": [{"vulnerable": True, "criteria": "cpe:/o:x:y"}]}]}
                ],
            },
            "vulnerabilities[0].cve.configurations[0].nodes[0].cpeMatch[0].criteria: "
            "'cpe:/o:x:y' is not a CPE 2.3 name",
        ),
    ],
)
def test_feeds_nvd_errors(record: dict[str, object], message: str) -> None:
    with pytest.raises(FeedError) as err:
        parse_nvd(json.dumps({"vulnerabilities": [{"cve": record}]}).encode())
    assert str(err.value) == message


def test_feeds_size_limit() -> None:
    with pytest.raises(FeedError, match=f"^larger than {MAX_FEED_BYTES} bytes$"):
        parse_kev(b" " * (MAX_FEED_BYTES + 1))


def test_feeds_entries_limit() -> None:
    entry = {"cveID": "CVE-2024-41710", "vendorProject": "Mitel", "product": "SIP Phones"}
    data = json.dumps(
        {"catalogVersion": "1", "vulnerabilities": [entry] * MAX_FEED_ENTRIES}
    ).encode()
    assert len(parse_kev(data).entries) == MAX_FEED_ENTRIES
    data = json.dumps(
        {"catalogVersion": "1", "vulnerabilities": [entry] * (MAX_FEED_ENTRIES + 1)}
    ).encode()
    with pytest.raises(FeedError, match=f"^vulnerabilities: more than {MAX_FEED_ENTRIES} entries$"):
        parse_kev(data)


def test_feeds_cpe_match_limit() -> None:
    match = _match(
        "cpe:2.3:o:grandstream:gxp1610_firmware:*:*:*:*:*:*:*:*", versionEndExcluding="1.0.7.81"
    )
    assert len(parse_nvd(_nvd(*[match] * MAX_CPE_MATCHES))[0].ranges) == MAX_CPE_MATCHES
    with pytest.raises(FeedError, match=f"more than {MAX_CPE_MATCHES} entries$"):
        parse_nvd(_nvd(*[match] * (MAX_CPE_MATCHES + 1)))


def test_feeds_long_text_is_cut() -> None:
    entry = {
        "cveID": "CVE-2024-41710",
        "vendorProject": "Mitel",
        "product": "SIP Phones",
        "vulnerabilityName": "x" * 5000,
    }
    (parsed,) = parse_kev(
        json.dumps({"catalogVersion": "1", "vulnerabilities": [entry]}).encode()
    ).entries
    assert len(parsed.name) == 1000


@given(st.binary(max_size=200))
def test_feeds_random_bytes_raise_only_feed_error(data: bytes) -> None:
    for parse in (parse_kev, parse_nvd):
        with contextlib.suppress(FeedError):
            parse(data)


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=5),
        lambda c: (
            st.lists(c, max_size=3)
            | st.dictionaries(
                st.sampled_from(
                    [
                        "vulnerabilities",
                        "cve",
                        "id",
                        "cveID",
                        "metrics",
                        "configurations",
                        "nodes",
                        "cpeMatch",
                        "criteria",
                        "vulnerable",
                        "cvssMetricV31",
                        "cvssData",
                        "baseScore",
                    ]
                ),
                c,
                max_size=4,
            )
        ),
        max_leaves=20,
    )
)
def test_feeds_random_json_raise_only_feed_error(doc: object) -> None:
    data = json.dumps(doc).encode()
    for parse in (parse_kev, parse_nvd):
        with contextlib.suppress(FeedError):
            parse(data)


def test_feeds_nvd_exclusive_start_becomes_introduced() -> None:
    data = _nvd(
        _match(
            "cpe:2.3:o:grandstream:ht801_firmware:*:*:*:*:*:*:*:*",
            versionStartExcluding="1.0.3",
            versionEndExcluding="1.0.9",
        )
    )
    (advisory,) = advisories_from_nvd(parse_nvd(data))
    assert (advisory.models, advisory.introduced, advisory.fixed) == (("ht801",), "1.0.3", "1.0.9")

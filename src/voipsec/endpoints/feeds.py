"""Reading the CISA KEV catalog and NVD CVE API 2.0 files an admin downloaded.

How this works: both feeds are JSON documents; :func:`parse_kev` and
:func:`parse_nvd` take their bytes (read by the shell, up to
:data:`MAX_FEED_BYTES`) and return frozen records, or raise the one
:class:`FeedError` whose message is one line naming what is wrong and where
(``vulnerabilities[3].cveID: ...``). Only the fields voipsec uses are read; others
are ignored, so newer feed versions with more fields still load.

* KEV (``known_exploited_vulnerabilities.json``, schema
  ``known_exploited_vulnerabilities_schema.json`` in github.com/cisagov/kev-data):
  ``catalogVersion``, ``dateReleased``, ``vulnerabilities[]`` with ``cveID``,
  ``vendorProject``, ``product``, ``vulnerabilityName``, ``dateAdded``.
  :func:`mark_kev` sets ``kev`` on the advisories whose CVEs are listed.
* NVD CVE API 2.0 (https://nvd.nist.gov/developers/vulnerabilities):
  ``vulnerabilities[].cve`` with ``id``, ``descriptions``, ``metrics``
  (``cvssMetricV40``, ``cvssMetricV31``, ``cvssMetricV30``, ``cvssMetricV2``) and
  ``configurations[].nodes[].cpeMatch[]`` (``vulnerable``, ``criteria`` — a CPE 2.3
  name — and ``versionStartIncluding``, ``versionStartExcluding``,
  ``versionEndExcluding``, ``versionEndIncluding``). An advisory has no exclusive
  lower bound, so ``versionStartExcluding`` becomes ``introduced``: the one version
  named is marked too (rare in NVD; erring towards a warning, never away from one).
  :func:`advisories_from_nvd` turns the vulnerable CPE
  matches of known phone vendors (:data:`PHONE_CPE_VENDORS`) into advisories.

Sans-IO: bytes in, records out; the CLI (``endpoints/cli.py``) reads and writes files.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from .advisories import Advisory
from .versions import try_parse_version

__all__ = [
    "MAX_CPE_MATCHES",
    "MAX_FEED_BYTES",
    "MAX_FEED_ENTRIES",
    "NVD_NOTE",
    "PHONE_CPE_VENDORS",
    "CpeRange",
    "FeedError",
    "KevCatalog",
    "KevEntry",
    "NvdCve",
    "PhoneVendor",
    "advisories_from_nvd",
    "kev_phone_entries",
    "mark_kev",
    "parse_kev",
    "parse_nvd",
]

#: A feed file larger than this is refused before parsing. The whole KEV catalog is
#: about 1.5 MB (1,280 entries in 2025.02.25); an NVD API 2.0 page holds at most
#: 2,000 CVEs, about 20 MB with configurations.
MAX_FEED_BYTES = 64 * 1024 * 1024
#: Entries in one feed file (KEV: 1,280 in 2025; NVD pages: 2,000).
MAX_FEED_ENTRIES = 50_000
#: CPE matches read per CVE (large Cisco CVEs list a few hundred products).
MAX_CPE_MATCHES = 5_000
#: The longest text field kept (descriptions are cut, never refused).
MAX_TEXT = 1_000

_CVE_ID = re.compile(r"CVE-[0-9]{4}-[0-9]{4,7}")
#: CPE 2.3 formatted string (NISTIR 7695 §6.2): cpe:2.3:part:vendor:product:version:...
_CPE = re.compile(r"cpe:2\.3:([aho]):([^:]{1,100}):([^:]{1,100}):([^:]{0,100}):")


class FeedError(ValueError):
    """A KEV or NVD file that cannot be used; one line naming the field and why."""


@dataclass(frozen=True, slots=True, kw_only=True)
class KevEntry:
    """One known-exploited vulnerability."""

    cve: str
    vendor: str
    product: str
    name: str = ""
    date_added: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class KevCatalog:
    """The KEV catalog: its version and entries."""

    version: str
    released: str
    entries: tuple[KevEntry, ...]

    def cves(self) -> frozenset[str]:
        return frozenset(e.cve for e in self.entries)


@dataclass(frozen=True, slots=True, kw_only=True)
class CpeRange:
    """One vulnerable CPE match: a product and the affected versions."""

    vendor: str
    product: str
    version: str | None = None
    introduced: str | None = None
    fixed: str | None = None
    last_affected: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class NvdCve:
    """One NVD CVE record, reduced to what advisories need."""

    id: str
    summary: str
    cvss: float | None
    cvss_version: str | None
    ranges: tuple[CpeRange, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class PhoneVendor:
    """How a CPE vendor's products name phone models: ``name`` is our vendor name (as
    the fingerprints give it); ``product`` matches the CPE product and ``model``
    rewrites it (``re.sub`` template) into a model pattern for :class:`Advisory`."""

    name: str
    product: str
    model: str


#: CPE vendors whose products are phones or softphones, and how their CPE product
#: names map to the models the fingerprints report. NVD names firmware
#: ``<model>_firmware`` (``gxp1610_firmware``); Cisco ``ip_phone_8845_firmware``.
PHONE_CPE_VENDORS: Mapping[str, PhoneVendor] = {
    "grandstream": PhoneVendor(name="Grandstream", product=r"(.+?)(?:_firmware)?", model=r"\1"),
    "yealink": PhoneVendor(name="Yealink", product=r"(.+?)(?:_firmware)?", model=r"\1"),
    "polycom": PhoneVendor(name="Poly", product=r"(vvx|trio)_?(\d+)(?:_firmware)?", model=r"\1*\2"),
    "hp": PhoneVendor(
        name="Poly", product=r"(?:poly_)?(vvx|trio)_?(\d+)(?:_firmware)?", model=r"\1*\2"
    ),
    "cisco": PhoneVendor(
        name="Cisco",
        product=r"(?:unified_)?ip_(?:conference_)?phone_(\d{4})(?:_firmware)?",
        model=r"CP\1*",
    ),
    "snom": PhoneVendor(name="Snom", product=r"(?:snom_?)?(.+?)(?:_firmware)?", model=r"\1"),
    "fanvil": PhoneVendor(name="Fanvil", product=r"(.+?)(?:_firmware)?", model=r"\1"),
    "mitel": PhoneVendor(
        name="Mitel", product=r"(\d{4}[a-z]?)(?:_sip_phone)?(?:_firmware)?", model=r"\1"
    ),
    "obihai": PhoneVendor(name="Obihai", product=r"(obi\d+)(?:_firmware)?", model=r"\1"),
    "gigaset": PhoneVendor(name="Gigaset", product=r"(.+?)(?:_firmware)?", model=r"\1"),
    "audiocodes": PhoneVendor(name="AudioCodes", product=r"(\d{3}hd)(?:_firmware)?", model=r"\1*"),
}


#: The ``notes`` of an advisory made from an NVD record, so that a later import knows
#: which entries it wrote (and may replace) and which were written by people.
NVD_NOTE = "Imported from the NVD CVE API 2.0"

#: KEV products that are phones, adapters or VoIP software ("Cisco IP Phones",
#: "Mitel SIP Phones"): KEV names vendors broadly (Cisco has hundreds of entries).
_PHONE_PRODUCT = re.compile(r"phone|voip|\bsip\b|\bata\b|handset|dect|\bpbx\b", re.IGNORECASE)


def kev_phone_entries(catalog: KevCatalog) -> list[KevEntry]:
    """The KEV entries about phones and VoIP products (by product name), so an import
    can say which of them no advisory covers yet."""
    return [e for e in catalog.entries if _PHONE_PRODUCT.search(e.product)]


def parse_kev(data: bytes) -> KevCatalog:
    """The KEV catalog in ``data``; raises :class:`FeedError`."""
    doc = _json(data)
    version = _str(doc, "catalogVersion", "")
    items = _list(doc, "vulnerabilities", "")
    entries = tuple(_kev_entry(item, f"vulnerabilities[{i}]") for i, item in enumerate(items))
    released = doc.get("dateReleased")
    return KevCatalog(
        version=version, released=released if isinstance(released, str) else "", entries=entries
    )


def parse_nvd(data: bytes) -> list[NvdCve]:
    """The CVE records in an NVD CVE API 2.0 response; raises :class:`FeedError`."""
    doc = _json(data)
    items = _list(doc, "vulnerabilities", "")
    return [_nvd_cve(item, f"vulnerabilities[{i}]") for i, item in enumerate(items)]


def mark_kev(advisories: Iterable[Advisory], catalog: KevCatalog) -> list[Advisory]:
    """The advisories with ``kev`` set where one of their CVEs is in ``catalog``
    (a KEV listing is never removed here: CISA does not delist)."""
    listed = catalog.cves()
    return [replace(a, kev=True) if set(a.cves) & listed else a for a in advisories]


def advisories_from_nvd(
    cves: Iterable[NvdCve], vendors: Mapping[str, PhoneVendor] = PHONE_CPE_VENDORS
) -> list[Advisory]:
    """Advisories for the CVEs whose vulnerable CPEs name a phone vendor of
    ``vendors``: one per distinct (vendor, version range), with the models of that
    range. A CVE with one range gets the CVE id as advisory id, with more
    ``CVE-...#1``, ``#2``... in a stable order. CPE matches without any version bound
    or version are skipped (they would mark every version of a model)."""
    out: list[Advisory] = []
    for cve in cves:
        groups = _group_ranges(cve, vendors)
        ordered = sorted(groups.items(), key=lambda kv: tuple(x or "" for x in kv[0]))
        for n, ((vendor, low, fixed, last), models) in enumerate(ordered, 1):
            out.append(
                Advisory(
                    id=cve.id if len(groups) == 1 else f"{cve.id}#{n}",
                    vendor=vendor,
                    models=tuple(sorted(models)),
                    cves=(cve.id,),
                    introduced=low,
                    fixed=fixed,
                    last_affected=last,
                    cvss=cve.cvss,
                    cvss_version=cve.cvss_version,
                    summary=cve.summary,
                    source=f"https://nvd.nist.gov/vuln/detail/{cve.id}",
                    notes=NVD_NOTE,
                )
            )
    return out


_RangeKey = tuple[str, str | None, str | None, str | None]


def _group_ranges(cve: NvdCve, vendors: Mapping[str, PhoneVendor]) -> dict[_RangeKey, set[str]]:
    groups: dict[_RangeKey, set[str]] = {}
    for r in cve.ranges:
        phone = vendors.get(r.vendor)
        found = re.fullmatch(phone.product, r.product) if phone is not None else None
        if phone is None or found is None:
            continue
        low, fixed, last = r.introduced, r.fixed, r.last_affected
        if r.version is not None:
            low = last = r.version
        if not (low or fixed or last) or not all(
            v is None or try_parse_version(v) is not None for v in (low, fixed, last)
        ):
            continue
        groups.setdefault((phone.name, low, fixed, last), set()).add(found.expand(phone.model))
    return groups


# -- reading JSON ---------------------------------------------------------------------


def _json(data: bytes) -> dict[str, Any]:
    if len(data) > MAX_FEED_BYTES:
        raise FeedError(f"larger than {MAX_FEED_BYTES} bytes")
    try:
        # RFC 8259 §8.1: JSON exchanged between systems is UTF-8 (json.loads would
        # guess UTF-16 or UTF-32 from the first bytes).
        doc = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise FeedError(f"not UTF-8: {exc.reason} at byte {exc.start}") from None
    except json.JSONDecodeError as exc:
        raise FeedError(f"not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:
        raise FeedError("not JSON: nested too deeply") from None
    if not isinstance(doc, dict):
        raise FeedError("must be a JSON object")
    return doc


def _where(at: str, key: str) -> str:
    return f"{at}.{key}" if at else key


def _str(obj: Mapping[str, Any], key: str, at: str, *, required: bool = True) -> str:
    value = obj.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str):
        raise FeedError(f"{_where(at, key)}: must be a string")
    return value[:MAX_TEXT]


def _list(obj: Mapping[str, Any], key: str, at: str, *, limit: int = MAX_FEED_ENTRIES) -> list[Any]:
    value = obj.get(key, [] if at else None)
    if not isinstance(value, list):
        raise FeedError(f"{_where(at, key)}: must be a list")
    if len(value) > limit:
        raise FeedError(f"{_where(at, key)}: more than {limit} entries")
    return value


def _obj(item: object, at: str) -> Mapping[str, Any]:
    if not isinstance(item, dict):
        raise FeedError(f"{at}: must be an object")
    return item


def _cve_id(obj: Mapping[str, Any], key: str, at: str) -> str:
    value = _str(obj, key, at)
    if _CVE_ID.fullmatch(value) is None:
        raise FeedError(f"{_where(at, key)}: {value[:40]!r} is not a CVE id")
    return value


def _kev_entry(item: object, at: str) -> KevEntry:
    obj = _obj(item, at)
    return KevEntry(
        cve=_cve_id(obj, "cveID", at),
        vendor=_str(obj, "vendorProject", at).strip(),
        product=_str(obj, "product", at).strip(),
        name=_str(obj, "vulnerabilityName", at, required=False),
        date_added=_str(obj, "dateAdded", at, required=False),
    )


def _nvd_cve(item: object, at: str) -> NvdCve:
    cve = _obj(_obj(item, at).get("cve"), f"{at}.cve")
    at = f"{at}.cve"
    score, version = _cvss(_obj(cve.get("metrics", {}), f"{at}.metrics"), f"{at}.metrics")
    return NvdCve(
        id=_cve_id(cve, "id", at),
        summary=_summary(cve, at),
        cvss=score,
        cvss_version=version,
        ranges=tuple(_ranges(cve, at)),
    )


def _summary(cve: Mapping[str, Any], at: str) -> str:
    for n, d in enumerate(_list(cve, "descriptions", at)):
        desc = _obj(d, f"{at}.descriptions[{n}]")
        if desc.get("lang") == "en":
            return _str(desc, "value", f"{at}.descriptions[{n}]")
    return ""


#: CVSS metric lists in order of preference (the newest CVSS version first).
_METRICS = ("cvssMetricV40", "cvssMetricV31", "cvssMetricV30", "cvssMetricV2")


def _cvss(metrics: Mapping[str, Any], at: str) -> tuple[float | None, str | None]:
    """The preferred CVSS base score: the newest version, NVD's own ("Primary") first."""
    for key in _METRICS:
        entries = [_obj(m, f"{at}.{key}[{n}]") for n, m in enumerate(_list(metrics, key, at))]
        entries.sort(key=lambda m: m.get("type") != "Primary")
        for n, m in enumerate(entries):
            data = _obj(m.get("cvssData"), f"{at}.{key}[{n}].cvssData")
            score = data.get("baseScore")
            if isinstance(score, (int, float)) and not isinstance(score, bool) and 0 <= score <= 10:
                return float(score), _str(data, "version", f"{at}.{key}[{n}].cvssData")
            raise FeedError(f"{at}.{key}[{n}].cvssData.baseScore: must be a number from 0 to 10")
    return None, None


def _ranges(cve: Mapping[str, Any], at: str) -> list[CpeRange]:
    out: list[CpeRange] = []
    for c, config in enumerate(_list(cve, "configurations", at)):
        cat = f"{at}.configurations[{c}]"
        for n, node in enumerate(_list(_obj(config, cat), "nodes", cat)):
            nat = f"{cat}.nodes[{n}]"
            for m, match in enumerate(
                _list(_obj(node, nat), "cpeMatch", nat, limit=MAX_CPE_MATCHES)
            ):
                found = _cpe_range(_obj(match, f"{nat}.cpeMatch[{m}]"), f"{nat}.cpeMatch[{m}]")
                if found is not None:
                    out.append(found)
                if len(out) > MAX_CPE_MATCHES:
                    raise FeedError(f"{at}: more than {MAX_CPE_MATCHES} CPE matches")
    return out


def _cpe_range(match: Mapping[str, Any], at: str) -> CpeRange | None:
    if match.get("vulnerable") is not True:
        return None
    criteria = _str(match, "criteria", at)
    found = _CPE.match(criteria)
    if found is None:
        raise FeedError(f"{at}.criteria: {criteria[:80]!r} is not a CPE 2.3 name")
    _, vendor, product, version = found.groups()
    bound = {k: _str(match, k, at, required=False) or None for k in _BOUNDS}
    return CpeRange(
        vendor=vendor,
        product=product,
        version=None if version in ("*", "-", "") else version,
        introduced=bound["versionStartIncluding"] or bound["versionStartExcluding"],
        fixed=bound["versionEndExcluding"],
        last_affected=bound["versionEndIncluding"],
    )


_BOUNDS = (
    "versionStartIncluding",
    "versionStartExcluding",
    "versionEndExcluding",
    "versionEndIncluding",
)

"""Which published vulnerabilities a device's firmware has.

How this works: an :class:`Advisory` names a vendor, the models it covers (shell-style
patterns such as ``GXP16??`` or ``CP88*``, compared case-insensitively), the affected
versions — from ``introduced`` (inclusive, optional) up to ``fixed`` (exclusive) or
``last_affected`` (inclusive) — the CVE ids, CVSS, whether CISA lists it as known
exploited (KEV) and its source. :func:`matching` returns the advisories a
:class:`~.useragent.Device` falls under, comparing versions with :mod:`.versions`.

A device whose User-Agent names no version, or a version that cannot be read, matches
no advisory unless ``unknown_version=True`` asks for the advisories that *may* apply
(its model is covered): the firmware policy decides what an unknown version means.

Sans-IO: advisories come in as data (``endpoints/loader.py`` reads the files).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable
from dataclasses import dataclass

from .useragent import Device
from .versions import VersionKey, try_parse_version

__all__ = ["Advisory", "affects_version", "covers_model", "matching"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Advisory:
    """One vulnerability of one vendor's models and version range.

    ``id`` names the entry (a CVE id, or the CVE id and a suffix when a CVE has
    several ranges); an entry in the admin file with the same ``id`` replaces the
    shipped one. Without ``fixed`` and ``last_affected`` every version from
    ``introduced`` on is affected (no fix published yet)."""

    id: str
    vendor: str
    models: tuple[str, ...]
    cves: tuple[str, ...]
    introduced: str | None = None
    fixed: str | None = None
    last_affected: str | None = None
    cvss: float | None = None
    cvss_version: str | None = None
    kev: bool = False
    summary: str = ""
    source: str = ""
    notes: str = ""


def covers_model(advisory: Advisory, model: str) -> bool:
    """Whether one of the advisory's model patterns matches ``model`` (case-folded)."""
    folded = model.casefold()
    return any(fnmatch.fnmatchcase(folded, p.casefold()) for p in advisory.models)


def affects_version(advisory: Advisory, version: VersionKey) -> bool:
    """Whether ``version`` lies in the advisory's affected range (bounds that cannot
    be read as versions are refused when the advisory is loaded)."""
    low = try_parse_version(advisory.introduced)
    if low is not None and version < low:
        return False
    fixed = try_parse_version(advisory.fixed)
    if fixed is not None and not version < fixed:
        return False
    last = try_parse_version(advisory.last_affected)
    return last is None or not last < version


def matching(
    device: Device, advisories: Iterable[Advisory], *, unknown_version: bool = False
) -> list[Advisory]:
    """The advisories ``device`` falls under, KEV-listed first, then by CVSS (highest
    first), then by id. With ``unknown_version``, a device without a readable version
    gets every advisory covering its vendor and model."""
    version = try_parse_version(device.version)
    vendor = device.vendor.casefold()
    found = [
        a
        for a in advisories
        if a.vendor.casefold() == vendor
        and covers_model(a, device.model)
        and (affects_version(a, version) if version is not None else unknown_version)
    ]
    return sorted(found, key=lambda a: (not a.kev, -(a.cvss or 0.0), a.id))

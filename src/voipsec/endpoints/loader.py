"""Reading and writing the fingerprint and advisory files: the loader the shell calls
before it identifies devices or matches advisories, which themselves read no file.

The shipped files are ``voipsec/endpoints/data/fingerprints.yaml`` and
``advisories.yaml``; the admin's ``DIR/endpoints/fingerprints.yaml`` and
``DIR/endpoints/advisories.yaml`` extend them: an entry with the name (``id`` for an
advisory) of a shipped one replaces it, ``enabled: false`` switches it off, others
are added (an admin's new fingerprints are tried before the shipped ones, so a
site-specific pattern wins). Files are read by :mod:`voipsec.rulefile` (size limit,
libyaml's safe loader: an NVD import can make the advisory file large), each entry
validated field by field here; every problem raises the one
:class:`~voipsec.rulefile.RuleFileError`, one line naming the file, the entry and the
key (``advisories.yaml: advisory 'CVE-2026-2329': fixed: ...``).

Each fingerprint carries ``examples``: real User-Agent strings with the model and
version they must give. They are checked at load, so a pattern that stops matching
the strings it was written from is an error, not a silent miss.

Fails closed: a file with any problem stops the load (the caller decides whether a
server starts without endpoint data; the CLI exits 1).
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Mapping, Sequence
from importlib.resources import files
from pathlib import Path
from typing import Any

import yaml

from ..rulefile import FAST_YAML_LOADER, RuleFileError, RuleReader, load_rule_files, load_rule_items
from .advisories import Advisory
from .useragent import DeviceFingerprint, FingerprintError, check_pattern, identify
from .versions import try_parse_version

__all__ = [
    "ADMIN_DIR",
    "ADVISORIES_FILE",
    "FINGERPRINTS_FILE",
    "MAX_ADVISORIES",
    "MAX_FINGERPRINTS",
    "RuleFileError",
    "admin_path",
    "advisory_to_dict",
    "load_admin_advisories",
    "load_advisories",
    "load_fingerprints",
    "shipped_path",
    "write_advisories",
]

ADMIN_DIR = "endpoints"
FINGERPRINTS_FILE = "fingerprints.yaml"
ADVISORIES_FILE = "advisories.yaml"
#: Fingerprints in all files together (the shipped file has 22; a site adds a
#: few; each costs one regex match per unknown User-Agent).
MAX_FINGERPRINTS = 1_000
#: Advisories in all files together (NVD lists a few hundred phone CVEs in all; an
#: import of several years stays well below).
MAX_ADVISORIES = 20_000
#: Model patterns and CVE ids per advisory.
MAX_MODELS = 200
MAX_CVES = 50
#: Examples per fingerprint.
MAX_EXAMPLES = 20
#: The longest free-text field (summary, notes, source).
MAX_TEXT = 2_000
#: The longest name, vendor, model or version field.
MAX_NAME = 100

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.#\-]{0,99}")
_CVE = re.compile(r"CVE-[0-9]{4}-[0-9]{4,7}")
_MODEL = re.compile(r"[A-Za-z0-9_.*?\[\]\-]{1,100}")
_KINDS = frozenset({"phone", "softphone", "gateway", "pbx"})
_FP_KEYS = frozenset(
    {"name", "vendor", "kind", "family", "model", "pattern", "examples", "source", "enabled"}
)
_ADV_KEYS = frozenset(
    {
        "id",
        "vendor",
        "models",
        "cves",
        "introduced",
        "fixed",
        "last_affected",
        "cvss",
        "cvss_version",
        "kev",
        "summary",
        "source",
        "notes",
        "enabled",
    }
)


def shipped_path(name: str) -> Path:
    """A shipped data file, ``voipsec/endpoints/data/<name>``."""
    resource = files("voipsec.endpoints").joinpath("data").joinpath(name)
    return resource if isinstance(resource, Path) else Path(str(resource))


def admin_path(data_dir: Path, name: str) -> Path:
    """The admin's file ``DIR/endpoints/<name>`` (it may not exist)."""
    return data_dir / ADMIN_DIR / name


def _paths(data_dir: Path | None, name: str) -> list[Path]:
    paths = [shipped_path(name)]
    if data_dir is not None:
        admin = admin_path(data_dir, name)
        # exists(), not is_file(): a directory in the way is an error to report.
        if admin.exists():
            paths.append(admin)
    return paths


def load_fingerprints(data_dir: Path | None = None) -> list[DeviceFingerprint]:
    """The shipped fingerprints extended by ``DIR/endpoints/fingerprints.yaml``, in
    matching order. Raises :class:`RuleFileError`."""
    paths = _paths(data_dir, FINGERPRINTS_FILE)
    merged = _load(paths, _FingerprintReader, "name", "fingerprints", MAX_FINGERPRINTS)
    shipped = {_entry_name(i) for i in load_rule_items(paths[0], key="fingerprints")}
    # The admin's new fingerprints first: a site-specific pattern wins over a shipped one.
    return sorted(merged, key=lambda fp: fp.name in shipped)


def load_advisories(data_dir: Path | None = None) -> list[Advisory]:
    """The shipped advisories extended by ``DIR/endpoints/advisories.yaml``.
    Raises :class:`RuleFileError`."""
    return _load(
        _paths(data_dir, ADVISORIES_FILE), _AdvisoryReader, "id", "advisories", MAX_ADVISORIES
    )


def load_admin_advisories(data_dir: Path) -> list[Advisory]:
    """Only the admin's advisories (what an import rewrites); [] without the file."""
    path = admin_path(data_dir, ADVISORIES_FILE)
    if not path.exists():
        return []
    return _load([path], _AdvisoryReader, "id", "advisories", MAX_ADVISORIES)


def _load(paths: Sequence[Path], reader: Any, name_key: str, key: str, limit: int) -> list[Any]:
    result: list[Any] = load_rule_files(
        paths, reader, name_key=name_key, loader=FAST_YAML_LOADER, max_rules=limit, key=key
    )
    return result


def _entry_name(item: object) -> str:
    return str(item.get("name")) if isinstance(item, dict) else ""


def advisory_to_dict(a: Advisory) -> dict[str, Any]:
    """The mapping :func:`write_advisories` writes for ``a`` (empty fields left out)."""
    out: dict[str, Any] = {"id": a.id, "vendor": a.vendor, "models": list(a.models)}
    out["cves"] = list(a.cves)
    for key in ("introduced", "fixed", "last_affected", "cvss", "cvss_version"):
        value = getattr(a, key)
        if value is not None:
            out[key] = value
    out["kev"] = a.kev
    for key in ("summary", "source", "notes"):
        if getattr(a, key):
            out[key] = getattr(a, key)
    return out


def write_advisories(path: Path, items: Sequence[Mapping[str, Any]], header: str) -> None:
    """Write the advisory mappings ``items`` (as :func:`advisory_to_dict` makes them,
    or as read from the admin file) to ``path``, whole and atomically: a temporary
    file in the same directory, checked to load, then renamed over ``path`` — so a
    running server never reads half a file and a bad result never replaces a good
    one. Mode 0644: advisories are public data, not secrets. ``header`` becomes
    comment lines at the top (what was imported from which feed)."""
    # Only DIR/endpoints is created: the data directory itself is made (0700) by init.
    path.parent.mkdir(mode=0o755, exist_ok=True)
    body = yaml.safe_dump(
        {"advisories": [dict(i) for i in items]}, sort_keys=False, allow_unicode=True, width=100
    )
    text = "".join(f"# {line}\n" for line in header.splitlines()) + body
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    tmp = Path(name)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        _load([tmp], _AdvisoryReader, "id", "advisories", MAX_ADVISORIES)
        tmp.chmod(0o644)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


# -- validating entries ----------------------------------------------------------------


class _Reader(RuleReader[Any]):
    """Shared field readers; every error names file, entry and key."""

    kind = "entry"

    def __init__(self, path: Path, index: int, item: object) -> None:
        super().__init__(path, index, item)
        self.label = f"{self.kind} #{index}"

    def keys(self, item: dict[Any, Any], allowed: frozenset[str]) -> None:
        unknown = sorted(str(k) for k in item if k not in allowed)
        if unknown:
            raise self.fail(unknown[0], f"unknown key (allowed: {', '.join(sorted(allowed))})")

    def name(self, item: dict[Any, Any], key: str) -> str:
        value = item.get(key)
        if not isinstance(value, str) or _NAME.fullmatch(value) is None:
            raise self.fail(key, "must be letters, digits, '.', '_', '#' or '-' (up to 100)")
        self.label = f"{self.kind} {value!r}"
        return value

    def text(
        self, item: dict[Any, Any], key: str, *, limit: int = MAX_TEXT, required: bool = False
    ) -> str:
        value = item.get(key, None if required else "")
        if not isinstance(value, str) or (required and not value.strip()):
            raise self.fail(key, "must be a non-empty string" if required else "must be a string")
        if len(value) > limit:
            raise self.fail(key, f"longer than {limit} characters")
        return value.strip()

    def version(self, item: dict[Any, Any], key: str) -> str | None:
        value = item.get(key)
        if value is None:
            return None
        # YAML reads 1.10 as the float 1.1: versions must be quoted (an int is exact).
        text = str(value) if isinstance(value, int) and not isinstance(value, bool) else value
        if not isinstance(text, str) or try_parse_version(text) is None:
            raise self.fail(key, f"{value!r} is not a version (dotted numbers, e.g. 1.0.7.81)")
        return text

    def string_list(
        self, item: dict[Any, Any], key: str, pattern: re.Pattern[str], limit: int
    ) -> tuple[str, ...]:
        value = item.get(key)
        if not isinstance(value, list) or not value:
            raise self.fail(key, "must be a non-empty list")
        if len(value) > limit:
            raise self.fail(key, f"more than {limit} entries")
        for v in value:
            if not isinstance(v, str) or pattern.fullmatch(v) is None:
                raise self.fail(key, f"{v!r} is not valid")
        return tuple(value)

    def enabled(self, item: dict[Any, Any]) -> bool:
        value = item.get("enabled", True)
        if not isinstance(value, bool):
            raise self.fail("enabled", "must be true or false")
        return value


class _FingerprintReader(_Reader):
    kind = "fingerprint"

    def read(self) -> tuple[str, DeviceFingerprint | None]:
        item = self.mapping()
        name = self.name(item, "name")
        self.keys(item, _FP_KEYS)
        if not self.enabled(item):
            return name, None
        model = self.text(item, "model", limit=MAX_NAME)
        try:
            pattern = check_pattern(
                self.text(item, "pattern", required=True), fixed_model=bool(model)
            )
        except FingerprintError as exc:
            raise self.fail("pattern", str(exc)) from None
        kind = self.text(item, "kind") or "phone"
        if kind not in _KINDS:
            raise self.fail("kind", f"must be one of {', '.join(sorted(_KINDS))}")
        fp = DeviceFingerprint(
            name=name,
            vendor=self.text(item, "vendor", limit=MAX_NAME, required=True),
            pattern=pattern,
            family=self.text(item, "family", limit=MAX_NAME),
            model=model,
            kind=kind,
            source=self.text(item, "source", required=True),
        )
        self._examples(item, fp)
        return name, fp

    def _examples(self, item: dict[Any, Any], fp: DeviceFingerprint) -> None:
        """Every example must give its model and version with this fingerprint."""
        examples = item.get("examples")
        if not isinstance(examples, list) or not examples:
            raise self.fail("examples", "must be a non-empty list of {ua, model, version}")
        if len(examples) > MAX_EXAMPLES:
            raise self.fail("examples", f"more than {MAX_EXAMPLES} entries")
        for n, ex in enumerate(examples, 1):
            if not isinstance(ex, dict) or not isinstance(ex.get("ua"), str):
                raise self.fail("examples", f"#{n}: must be a mapping with 'ua'")
            device = identify(ex["ua"], [fp])
            got = (device.model, device.version) if device is not None else None
            want = (
                str(ex.get("model", "")),
                None if ex.get("version") is None else str(ex["version"]),
            )
            if got != want:
                raise self.fail("examples", f"#{n}: {ex['ua']!r} gives {got}, expected {want}")


class _AdvisoryReader(_Reader):
    kind = "advisory"

    def read(self) -> tuple[str, Advisory | None]:
        item = self.mapping()
        name = self.name(item, "id")
        self.keys(item, _ADV_KEYS)
        if not self.enabled(item):
            return name, None
        kev = item.get("kev", False)
        if not isinstance(kev, bool):
            raise self.fail("kev", "must be true or false")
        advisory = Advisory(
            id=name,
            vendor=self.text(item, "vendor", limit=MAX_NAME, required=True),
            models=self.string_list(item, "models", _MODEL, MAX_MODELS),
            cves=self.string_list(item, "cves", _CVE, MAX_CVES),
            introduced=self.version(item, "introduced"),
            fixed=self.version(item, "fixed"),
            last_affected=self.version(item, "last_affected"),
            cvss=self._cvss(item),
            cvss_version=self.version(item, "cvss_version"),
            kev=kev,
            summary=self.text(item, "summary"),
            source=self.text(item, "source", required=True),
            notes=self.text(item, "notes"),
        )
        if advisory.fixed is not None and advisory.last_affected is not None:
            raise self.fail("fixed", "give either fixed or last_affected, not both")
        return name, advisory

    def _cvss(self, item: dict[Any, Any]) -> float | None:
        value = item.get("cvss")
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 10:
            raise self.fail("cvss", "must be a number from 0 to 10")
        return float(value)

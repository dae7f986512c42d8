"""``voipsec endpoints import-kev FILE`` and ``import-nvd FILE``: update the admin's
advisory file offline from feeds an administrator downloaded (the server never
fetches anything itself; docs/endpoints.md "Refreshing the advisories").

Both commands read the feed (at most :data:`~.feeds.MAX_FEED_BYTES`), parse it
(:mod:`.feeds`), merge the result into ``DIR/endpoints/advisories.yaml`` — which
extends the shipped advisories, entry by entry, by id — and print what changed.
Entries of the admin file are kept as written (including ``enabled: false``
overrides); only the ones an import owns are rewritten. Any problem is one line on
stderr and exit status 1, and the admin file is left as it was.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

import typer

from ..rulefile import load_rule_items
from .advisories import Advisory
from .feeds import (
    MAX_FEED_BYTES,
    NVD_NOTE,
    FeedError,
    advisories_from_nvd,
    kev_phone_entries,
    mark_kev,
    parse_kev,
    parse_nvd,
)
from .loader import (
    ADVISORIES_FILE,
    RuleFileError,
    admin_path,
    advisory_to_dict,
    load_advisories,
    write_advisories,
)

__all__ = ["endpoints_app", "import_kev", "import_nvd"]

endpoints_app = typer.Typer(
    help="Endpoint security data: advisories from CISA KEV and NVD files.", no_args_is_help=True
)

DirOption = Annotated[Path, typer.Option("--dir", help="Data directory.", show_default=True)]
FeedArgument = Annotated[Path, typer.Argument(metavar="FILE", help="The downloaded feed (JSON).")]
DEFAULT_DIR = Path("./voipsec-data")


class ImportFailed(Exception):
    """A failed import: one line, exit status 1."""


def read_feed(path: Path) -> bytes:
    """The bytes of ``path``, refused past :data:`MAX_FEED_BYTES` (read stops there)."""
    try:
        with path.open("rb") as f:
            data = f.read(MAX_FEED_BYTES + 1)
    except OSError as exc:
        raise ImportFailed(f"{path}: cannot read: {exc.strerror or exc}") from None
    if len(data) > MAX_FEED_BYTES:
        raise ImportFailed(f"{path}: larger than {MAX_FEED_BYTES} bytes")
    return data


@endpoints_app.command("import-kev")
def import_kev_command(file: FeedArgument, dir: DirOption = DEFAULT_DIR) -> None:
    """Mark the advisories whose CVEs CISA lists as known exploited (KEV JSON feed)."""
    _run(lambda: import_kev(file, dir))


@endpoints_app.command("import-nvd")
def import_nvd_command(file: FeedArgument, dir: DirOption = DEFAULT_DIR) -> None:
    """Add or update advisories from an NVD CVE API 2.0 JSON file."""
    _run(lambda: import_nvd(file, dir))


def _run(action: Callable[[], list[str]]) -> None:
    try:
        for line in action():
            typer.echo(line)
    except (ImportFailed, RuleFileError) as err:
        typer.echo(f"voipsec: error: {err}", err=True)
        raise typer.Exit(1) from None


def import_kev(file: Path, data_dir: Path) -> list[str]:
    """Import a KEV catalog into ``data_dir``; the lines to print."""
    try:
        catalog = parse_kev(read_feed(file))
    except FeedError as err:
        raise ImportFailed(f"{file}: {err}") from None
    current = load_advisories(data_dir)
    newly = [
        a
        for a, was in zip(mark_kev(current, catalog), current, strict=True)
        if a.kev and not was.kev
    ]
    covered = {cve for a in current for cve in a.cves}
    missing = [e for e in kev_phone_entries(catalog) if e.cve not in covered]
    if newly:
        _save(data_dir, newly, f"import-kev (KEV catalog {catalog.version})")
    lines = [f"KEV catalog {catalog.version}: {len(catalog.entries)} entries"]
    lines.append(f"marked known exploited: {', '.join(a.id for a in newly) or 'none'}")
    for e in missing:
        lines.append(f"KEV-listed, no advisory: {e.cve} ({e.vendor} {e.product})")
    return lines


def import_nvd(file: Path, data_dir: Path) -> list[str]:
    """Import an NVD CVE API 2.0 file into ``data_dir``; the lines to print. CVEs
    already covered by an advisory not written by an NVD import are left to it."""
    try:
        cves = parse_nvd(read_feed(file))
    except FeedError as err:
        raise ImportFailed(f"{file}: {err}") from None
    current = load_advisories(data_dir)
    kev = {cve for a in current if a.kev for cve in a.cves}
    by_people = {cve for a in current if a.notes != NVD_NOTE for cve in a.cves}
    found = advisories_from_nvd(cves)
    fresh = [replace(a, kev=bool(set(a.cves) & kev)) for a in found if not set(a.cves) & by_people]
    kept = sorted({cve for a in found for cve in a.cves} & by_people)
    stale = {a.id for a in current if a.notes == NVD_NOTE and set(a.cves) & _cves(fresh)}
    if fresh:
        _save(data_dir, fresh, f"import-nvd ({len(cves)} CVE records)", drop=stale)
    lines = [f"NVD: {len(cves)} CVE records, {len(found)} phone advisories"]
    lines.append(f"added or updated: {', '.join(a.id for a in fresh) or 'none'}")
    if kept:
        lines.append(f"left to existing advisories: {', '.join(kept)}")
    return lines


def _cves(advisories: Iterable[Advisory]) -> set[str]:
    return {cve for a in advisories for cve in a.cves}


def _save(data_dir: Path, updates: Sequence[Advisory], what: str, drop: Iterable[str] = ()) -> None:
    """Merge ``updates`` into the admin file: an entry with the same id is replaced in
    place, the ids in ``drop`` are removed, others are appended. Entries the admin
    wrote are kept as they are (their YAML, including ``enabled: false``)."""
    if not data_dir.is_dir():
        raise ImportFailed(f"{data_dir}: no such data directory (run `voipsec init` first)")
    path = admin_path(data_dir, ADVISORIES_FILE)
    items: list[Any] = load_rule_items(path, key="advisories") if path.exists() else []
    new = {a.id: advisory_to_dict(a) for a in updates}
    dropped = set(drop) - set(new)
    merged = [new.pop(i["id"], i) for i in items if _id(i) not in dropped]
    merged.extend(new.values())
    header = (
        f"Written by `voipsec endpoints {what}`. Extends voipsec's shipped advisories:\n"
        "an entry with a shipped id replaces it; `enabled: false` switches one off."
    )
    write_advisories(path, merged, header)


def _id(item: object) -> object:
    return item.get("id") if isinstance(item, dict) else None

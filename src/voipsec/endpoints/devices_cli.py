"""``voipsec devices list [--user U] [--format table|json|csv]`` and ``devices show ID``:
the device inventory the server keeps in voipsec.db (storage/devices.py), or in
PostgreSQL when the config's ``cdr.url`` sends the CDRs there (storage/devices_db.py).

JSON and CSV keys are the fields of :func:`device_fields` (one flat object per device:
``id``, the last sighting's fields, ``first_seen``, ``last_seen``, ``registrations``;
``reasons`` a list in JSON, joined with " | " in CSV). Times are epoch seconds in
JSON/CSV and UTC in the table. Problems (a data directory without a database, an
unknown id, a bad format) are one line on stderr and exit status 1.
"""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from ..config import CONFIG_NAME, ConfigError, load
from ..records import DeviceRecord, StoreError
from ..rulefile import RuleFileError
from ..storage import DB_NAME, Store
from .loader import load_advisories
from .report import DevicePosture, compliance_report
from .report_format import REPORT_FORMATS, csv_cell, report_csv, report_json, report_md

__all__ = ["device_fields", "devices_app", "devices_csv", "devices_json", "report_devices"]

devices_app = typer.Typer(
    help="The device inventory: every device that registered (refused ones too).",
    no_args_is_help=True,
)

DirOption = Annotated[Path, typer.Option("--dir", help="Data directory.", show_default=True)]
DEFAULT_DIR = Path("./voipsec-data")
FORMATS = ("table", "json", "csv")

#: The flat fields of a device, in output order.
FIELDS = (
    "id",
    "user",
    "aor",
    "status",
    "reasons",
    "vendor",
    "model",
    "version",
    "user_agent",
    "contact",
    "source",
    "zone",
    "transport",
    "tls_version",
    "tls_cipher",
    "cert_subject",
    "cert_serial",
    "cert_expiry",
    "digest_algorithm",
    "srtp_suites",
    "first_seen",
    "last_seen",
    "registrations",
    "key",
)


class DevicesFailed(Exception):
    """One line on stderr, exit status 1."""


def device_fields(record: DeviceRecord) -> dict[str, Any]:
    """One device as a flat mapping of :data:`FIELDS` (what the report part reuses)."""
    s = record.seen
    values: dict[str, Any] = {
        "id": record.id,
        "user": s.user,
        "aor": s.aor,
        "status": s.status,
        "reasons": list(s.reasons),
        "vendor": s.vendor,
        "model": s.model,
        "version": s.version,
        "user_agent": s.user_agent,
        "contact": s.contact,
        "source": s.source,
        "zone": s.zone,
        "transport": s.transport,
        "tls_version": s.tls_version,
        "tls_cipher": s.tls_cipher,
        "cert_subject": s.cert_subject,
        "cert_serial": s.cert_serial,
        "cert_expiry": s.cert_expiry,
        "digest_algorithm": s.digest_algorithm,
        "srtp_suites": record.srtp_suites,
        "first_seen": record.first_seen,
        "last_seen": s.time,
        "registrations": record.registrations,
        "key": s.key,
    }
    return {name: values[name] for name in FIELDS}


def devices_json(records: Sequence[DeviceRecord]) -> str:
    return json.dumps([device_fields(r) for r in records], indent=2)


def devices_csv(records: Sequence[DeviceRecord]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(FIELDS)
    for r in records:
        row = device_fields(r)
        row["reasons"] = " | ".join(row["reasons"])
        writer.writerow([csv_cell(row[f]) for f in FIELDS])
    return out.getvalue()


def _when(seconds: float | None) -> str:
    if seconds is None:
        return ""
    return time.strftime("%Y-%m-%d %H:%M", time.gmtime(seconds))


def _table(records: Sequence[DeviceRecord]) -> Table:
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, padding=(0, 1, 0, 0))
    for name in ("id", "user", "device", "status", "tls", "digest", "srtp", "last seen", "regs"):
        table.add_column(name)
    for r in records:
        s = r.seen
        device = f"{s.vendor} {s.model} {s.version}".strip() or s.user_agent or "(no User-Agent)"
        # Text, not str: a User-Agent is the device's own words, never rich markup
        # ("[/x]" would end the listing, "[link=...]" would hide a link in it).
        table.add_row(
            *(
                Text(cell)
                for cell in (
                    str(r.id),
                    s.user,
                    device,
                    s.status,
                    s.tls_version or s.transport,
                    s.digest_algorithm or "certificate",
                    r.srtp_suites or "-",
                    _when(s.time),
                    str(r.registrations),
                )
            )
        )
    return table


def _open_store(data_dir: Path) -> Store:
    """voipsec.db with the inventory where the server keeps it: PostgreSQL when the
    config's ``cdr.url`` names one (storage/devices_db.py), else voipsec.db."""
    path = data_dir / DB_NAME
    if not path.is_file():
        raise DevicesFailed(f"{path}: no database (run `voipsec init --dir {data_dir}`)")
    url = ""
    if (data_dir / CONFIG_NAME).is_file():
        try:
            url = load(data_dir / CONFIG_NAME).cdr.url
        except ConfigError as err:
            raise DevicesFailed(err.problems[0] if err.problems else "bad config") from None
    try:
        return Store(path, cdr_url=url)
    except StoreError as err:
        raise DevicesFailed(str(err)) from None


def list_devices(data_dir: Path, user: str | None) -> list[DeviceRecord]:
    """The inventory of ``data_dir`` (one user's devices when ``user`` is given)."""
    store = _open_store(data_dir)
    try:
        return store.devices(user)
    finally:
        store.close()


def show_device(data_dir: Path, device_id: int) -> DeviceRecord:
    """One device, or :class:`DevicesFailed` naming the unknown id."""
    store = _open_store(data_dir)
    try:
        found = store.device(device_id)
    finally:
        store.close()
    if found is None:
        raise DevicesFailed(f"no device {device_id}")
    return found


def _print_table(table: Table) -> None:
    console = Console()
    if not console.is_terminal:
        console = Console(width=160)
    console.print(table)


def _exit_with(err: DevicesFailed) -> NoReturn:
    """The one error line and exit status 1 of every voipsec command."""
    typer.echo(f"voipsec: error: {err}", err=True)
    raise typer.Exit(1) from None


@devices_app.command("list")
def list_command(
    user: Annotated[str | None, typer.Option(metavar="U", help="Only this user's.")] = None,
    format: Annotated[str, typer.Option(help="table, json or csv.")] = "table",
    dir: DirOption = DEFAULT_DIR,
) -> None:
    """Every device seen at REGISTER: who, what (vendor, model, firmware), how (TLS,
    digest, certificate) and the policy's status with its reasons."""
    try:
        if format not in FORMATS:
            raise DevicesFailed("--format must be table, json or csv")
        records = list_devices(dir, user)
    except DevicesFailed as err:
        _exit_with(err)
    if format == "json":
        typer.echo(devices_json(records))
    elif format == "csv":
        typer.echo(devices_csv(records), nl=False)
    else:
        _print_table(_table(records))


@devices_app.command("show")
def show_command(
    id: Annotated[int, typer.Argument(metavar="ID", help="The device's id (devices list).")],
    dir: DirOption = DEFAULT_DIR,
) -> None:
    """One device, every field (JSON)."""
    try:
        record = show_device(dir, id)
    except DevicesFailed as err:
        _exit_with(err)
    typer.echo(json.dumps(device_fields(record), indent=2))


def report_devices(data_dir: Path, now: float) -> list[DevicePosture]:
    """The compliance report of ``data_dir``: its inventory judged against the
    advisories in use (shipped and admin files), its config's minimum firmware and
    ``pki.expiry_warning_days``, and its CA's certificate records."""
    try:
        config = load(data_dir / CONFIG_NAME)
    except ConfigError as err:
        raise DevicesFailed(err.problems[0] if err.problems else "bad config") from None
    try:
        advisories = load_advisories(data_dir)
    except RuleFileError as err:
        raise DevicesFailed(f"endpoint data: {err}") from None
    store = _open_store(data_dir)
    try:
        records = store.devices(None)
        certificates = store.certificates()
    finally:
        store.close()
    return compliance_report(
        records,
        advisories=advisories,
        now=now,
        warning_days=config.pki.expiry_warning_days,
        minimum_firmware=config.endpoints.minimum_firmware,
        certificates=certificates,
    )


@devices_app.command("report")
def report_command(
    format: Annotated[str, typer.Option(help="md, json or csv.")] = "md",
    dir: DirOption = DEFAULT_DIR,
) -> None:
    """The compliance report: every device's firmware (advisories: CVE, CVSS, KEV,
    fixed version), client certificate, TLS, digest and status, with what to do,
    grouped by severity (critical, high, medium, low, ok)."""
    now = time.time()
    try:
        if format not in REPORT_FORMATS:
            raise DevicesFailed("--format must be md, json or csv")
        postures = report_devices(dir, now)
    except DevicesFailed as err:
        _exit_with(err)
    if format == "json":
        typer.echo(report_json(postures))
    elif format == "csv":
        typer.echo(report_csv(postures), nl=False)
    else:
        typer.echo(report_md(postures, now=now), nl=False)

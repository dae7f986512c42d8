"""The ``voipsec`` command. Errors are one clear line and a non-zero exit."""

from __future__ import annotations

import asyncio
import csv
import dataclasses
import datetime
import io
import ipaddress
import json
import os
import re
import secrets
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

import typer
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from . import __version__, logfmt
from .audit.cli import AuditFailed, audit
from .config import (
    CLASSES_OF_SERVICE,
    CONFIG_NAME,
    DEFAULT_TOML,
    DEMO_FILE,
    Config,
    ConfigError,
    get_key,
    load,
    set_key,
)
from .endpoints.cli import endpoints_app
from .endpoints.devices_cli import devices_app
from .netaddr import IPV6_RATE_PREFIX
from .pki.ca import (
    LEAF_DAYS,
    CaPaths,
    ServerPaths,
    create_ca,
    create_server_certificate,
    issue_device,
    write_crl,
    write_private,
)
from .pki.lifecycle import (
    MAX_VALIDITY_DAYS,
    MIN_VALIDITY_DAYS,
    certificate_statuses,
    latest_certificate,
)
from .storage import CDR_FIELDS, DB_NAME, CdrRecord, Store, StoreError

app = typer.Typer(
    help="voipsec: a secure-by-default VoIP edge (SIP over TLS, digest auth, SRTP).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
user_app = typer.Typer(help="Manage SIP users.", no_args_is_help=True)
config_app = typer.Typer(help="Read and change voipsec.toml.", no_args_is_help=True)
ca_app = typer.Typer(help="The built-in CA: device certificates.", no_args_is_help=True)
app.add_typer(user_app, name="user")
app.add_typer(config_app, name="config")
app.add_typer(ca_app, name="ca")
bans_app = typer.Typer(help="Banned source addresses.", no_args_is_help=True)
alerts_app = typer.Typer(help="Security alerts.", no_args_is_help=True)
app.add_typer(bans_app, name="bans")
app.add_typer(alerts_app, name="alerts")
turn_app = typer.Typer(help="STUN/TURN relay.", no_args_is_help=True)
app.add_typer(turn_app, name="turn")
cdr_app = typer.Typer(help="Call detail records.", no_args_is_help=True)
app.add_typer(cdr_app, name="cdr")
app.add_typer(endpoints_app, name="endpoints")
app.add_typer(devices_app, name="devices")
app.command("audit")(audit)

DirOption = Annotated[Path, typer.Option("--dir", help="Data directory.", show_default=True)]
DEFAULT_DIR = Path("./voipsec-data")


class CliError(Exception):
    """A user-facing failure: printed as one line, exit status 1."""


def _fail(message: str) -> None:
    raise CliError(message)


# -- init ---------------------------------------------------------------------------


def _write_private(path: Path, text: str) -> None:
    """Create ``path`` readable by its owner only (0600) from the first byte.

    The config file can come to hold secrets (trunk and SMTP passwords, the metrics
    token); a file created 0644 and tightened later is readable in between.
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(text)


def initialise(data_dir: Path, domain: str | None = None) -> bool:
    """Create config, CA, server certificate, database and demo user if missing.

    Returns True when something was created. Never overwrites existing files.
    """
    created = False
    data_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(data_dir, 0o700)
    config_path = data_dir / CONFIG_NAME
    if not config_path.exists():
        text = DEFAULT_TOML
        if domain:
            text = text.replace('domain = "localhost"', f'domain = "{domain}"', 1)
        _write_private(config_path, text)
        created = True
    config = load(config_path)
    ca = CaPaths.in_dir(data_dir)
    if not ca.cert.exists():
        create_ca(ca, f"voipsec CA {config.sip.domain}")
        created = True
    server = ServerPaths.in_dir(data_dir)
    if not server.cert.exists():
        names = tuple(dict.fromkeys([config.sip.domain, "localhost", *config.sip.aliases]))
        names = tuple(n for n in names if not _is_ip(n))
        addrs = {"127.0.0.1", *(x.host for x in config.sip.listeners())}
        addrs.update(a for a in config.sip.aliases if _is_ip(a))
        create_server_certificate(ca, server, names=names, addresses=tuple(sorted(addrs)))
        created = True
    store = Store(data_dir / DB_NAME)
    try:
        if not (data_dir / DEMO_FILE).exists() and "demo" not in store.users():
            password = secrets.token_urlsafe(12)
            store.add_user("demo", password, config.sip.domain, config.dialplan.default_class)
            write_private(data_dir / DEMO_FILE, f"user=demo\npassword={password}\n".encode())
            created = True
    finally:
        store.close()
    return created


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


@app.command()
def init(
    dir: DirOption = DEFAULT_DIR,
    domain: Annotated[str | None, typer.Option(help="SIP domain (default localhost).")] = None,
) -> None:
    """Create the config, CA, server certificate, database and a demo user."""
    if (dir / CONFIG_NAME).exists() and domain:
        _fail(f"{dir / CONFIG_NAME} exists: change the domain with `voipsec config set`")
    created = initialise(dir, domain)
    typer.echo(f"{'initialised' if created else 'already initialised'}: {dir}")


# -- serve --------------------------------------------------------------------------


def _banner(config: Config, data_dir: Path) -> str:
    lines = ["voipsec is running. Point a softphone at:"]
    for listen in config.sip.listeners():
        lines.append(f"  SIP {listen.transport.upper()}  {listen.host}:{listen.port}")
    lines.append(f"  domain / realm  {config.sip.domain}")
    lines.append(f"  CA certificate  {CaPaths.in_dir(data_dir).cert.resolve()}")
    demo = data_dir / DEMO_FILE
    if demo.exists():
        fields = dict(line.split("=", 1) for line in demo.read_text().splitlines() if "=" in line)
        if sys.stdout.isatty():
            secret = f"password {fields.get('password')}"
        else:
            # Not a terminal (a service manager's journal, a log file): no secrets in logs.
            secret = f"password in {demo.resolve()}"
        lines.append(f"  demo user       {fields.get('user')}  {secret}")
    lines.append(f"  digest          {', '.join(config.auth.algorithms)}")
    if config.turn.listen:
        lines.append(f"  STUN/TURN       {', '.join(config.turn.listen)}")
    lines.append("Stop with Ctrl-C.")
    return "\n".join(lines)


def _use_uvloop() -> None:
    try:
        import uvloop
    except ImportError:
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


@app.command()
def serve(dir: DirOption = DEFAULT_DIR) -> None:
    """Run every service; initialises DIR on first run."""
    from .app.cluster import ClusterStartError
    from .app.devices import EndpointDataError
    from .app.supervisor import RunDirError
    from .edge.ids_loader import RuleError
    from .media.pool import MediaPoolError
    from .server import Server

    initialise(dir)
    config = load(dir / CONFIG_NAME)
    logfmt.configure(config.log.level)
    _use_uvloop()

    async def main() -> None:
        server = Server(config=config, data_dir=dir)
        server.install_signal_handlers()
        try:
            # With sip.workers > 1 this returns once every worker is listening.
            await server.start()
        except BaseException:
            if server.workers is not None:
                await server.workers.stop()  # no child outlives a failed start
            raise
        typer.echo(_banner(config, dir), err=False)
        sys.stdout.flush()
        await server.run_started()

    try:
        asyncio.run(main())
    except OSError as err:
        _fail(f"cannot listen: {err.strerror or err}")
    except RuleError as err:
        _fail(f"IDS rules: {err}")
    except EndpointDataError as err:
        _fail(f"endpoint data: {err}")
    except RunDirError as err:
        _fail(f"run directory: {err}")
    except ClusterStartError as err:
        _fail(f"signaling workers: {err}")
    except MediaPoolError as err:
        _fail(f"media relay workers: {err}")


# -- users --------------------------------------------------------------------------


def _open(dir: Path) -> tuple[Config, Store]:
    config = load(dir / CONFIG_NAME)
    return config, Store(dir / DB_NAME)


@user_app.command("add")
def user_add(
    name: str,
    password: Annotated[
        str | None, typer.Option(help="Password; a random one is generated and printed if absent.")
    ] = None,
    cert: Annotated[bool, typer.Option("--cert", help="Also issue a device certificate.")] = False,
    out: Annotated[Path | None, typer.Option(help="Where --cert writes its files.")] = None,
    cos: Annotated[
        str | None,
        typer.Option(
            "--class",
            metavar="CLASS",
            help=f"Class of service: {', '.join(CLASSES_OF_SERVICE)} "
            "(default: dialplan.default_class).",
        ),
    ] = None,
    dir: DirOption = DEFAULT_DIR,
) -> None:
    """Add a SIP user (stores only HA1 digests of the password)."""
    config, store = _open(dir)
    generated = password is None
    secret = password if password is not None else secrets.token_urlsafe(12)
    if len(secret) < 8:
        _fail("password must be at least 8 characters")
    try:
        store.add_user(
            name,
            secret,
            config.sip.domain,
            cos if cos is not None else config.dialplan.default_class,
        )
        typer.echo(f"added {name}@{config.sip.domain}")
        if generated:
            typer.echo(f"password: {secret}")
        if cert:
            _issue(dir, config, store, name, out, None)
    finally:
        store.close()


@user_app.command("remove")
def user_remove(name: str, dir: DirOption = DEFAULT_DIR) -> None:
    """Remove a SIP user."""
    _, store = _open(dir)
    try:
        store.remove_user(name)
    finally:
        store.close()
    typer.echo(f"removed {name}")


@user_app.command("class")
def user_class(
    name: str,
    cos: Annotated[
        str, typer.Argument(metavar="CLASS", help=f"One of {', '.join(CLASSES_OF_SERVICE)}.")
    ],
    dir: DirOption = DEFAULT_DIR,
) -> None:
    """Change the class of service of user NAME (what numbers they may call)."""
    _, store = _open(dir)
    try:
        store.set_user_class(name, cos)
    finally:
        store.close()
    typer.echo(f"{name}: class {cos}")


@user_app.command("list")
def user_list(
    dir: DirOption = DEFAULT_DIR,
    format: Annotated[str, typer.Option(help="table or json")] = "table",
) -> None:
    """Users and their current registrations."""
    config, store = _open(dir)
    try:
        now = time.time()
        classes = store.user_classes()
        bindings = store.bindings(now)
    finally:
        store.close()
    by_aor: dict[str, list[dict[str, object]]] = {}
    for b in bindings:
        by_aor.setdefault(b.aor, []).append(
            {
                "contact": b.contact,
                "expires_in": int(b.expires_at - now),
                "source": b.source,
                "user_agent": b.user_agent,
            }
        )
    rows = [
        {
            "user": u,
            "aor": f"{u}@{config.sip.domain}",
            "class": cos,
            "bindings": by_aor.get(f"{u}@{config.sip.domain}", []),
        }
        for u, cos in classes.items()
    ]
    if format == "json":
        typer.echo(json.dumps(rows, indent=2))
        return
    if format != "table":
        _fail("--format must be table or json")
    for row in rows:
        blist = row["bindings"]
        assert isinstance(blist, list)
        typer.echo(f"{row['aor']}  class {row['class']}  {len(blist)} binding(s)")
        for b in blist:
            typer.echo(
                f"    {b['contact']}  expires in {b['expires_in']} s  via {b['source']}"
                f"  {b['user_agent']}"
            )


# -- ca -----------------------------------------------------------------------------


def _issue(
    dir: Path,
    config: Config,
    store: Store,
    name: str,
    out: Path | None,
    p12_password: str | None,
    *,
    days: int = LEAF_DAYS,
    aor: str | None = None,
) -> int:
    """Issue NAME's certificate (for ``aor``, default NAME@domain); its serial."""
    if name not in store.users():
        _fail(f"no user {name!r} (add it with `voipsec user add {name}`)")
    target = out if out is not None else dir / "devices" / name
    password = p12_password or secrets.token_urlsafe(12)
    aor = aor or f"{name}@{config.sip.domain}"
    bundle = issue_device(
        CaPaths.in_dir(dir), name=name, aor=aor, out_dir=target, p12_password=password, days=days
    )
    store.add_certificate(
        serial=bundle.serial, name=name, aor=aor, not_after=bundle.not_after.timestamp()
    )
    until = bundle.not_after.date().isoformat()
    typer.echo(f"issued certificate for sip:{aor} (serial {bundle.serial:x}, until {until})")
    typer.echo(f"  {bundle.cert}\n  {bundle.key}\n  {bundle.p12}\n  {bundle.ca}")
    if p12_password is None:
        typer.echo(f"PKCS#12 password: {password}")
    return bundle.serial


OutOption = Annotated[Path | None, typer.Option(help="Directory for NAME.crt/.key/.p12, ca.crt.")]
P12Option = Annotated[
    str | None, typer.Option(help="PKCS#12 password; random and printed if absent.")
]
DaysOption = Annotated[
    int,
    typer.Option(
        min=MIN_VALIDITY_DAYS,
        max=MAX_VALIDITY_DAYS,
        help=f"Validity in days ({MIN_VALIDITY_DAYS}-{MAX_VALIDITY_DAYS}).",
    ),
]


@ca_app.command("issue")
def ca_issue(
    name: str,
    out: OutOption = None,
    p12_password: P12Option = None,
    days: DaysOption = LEAF_DAYS,
    dir: DirOption = DEFAULT_DIR,
) -> None:
    """Issue a device certificate for user NAME (SAN sip:NAME@domain)."""
    config, store = _open(dir)
    try:
        _issue(dir, config, store, name, out, p12_password, days=days)
    finally:
        store.close()


@ca_app.command("renew")
def ca_renew(
    name: str,
    out: OutOption = None,
    p12_password: P12Option = None,
    days: DaysOption = LEAF_DAYS,
    revoke_old: Annotated[
        bool,
        typer.Option(
            "--revoke-old",
            help="Revoke NAME's other certificates at once (after a compromise); by "
            "default they stay valid until they expire.",
        ),
    ] = False,
    dir: DirOption = DEFAULT_DIR,
) -> None:
    """A new certificate for NAME: same identity (CN, SAN), a new key and serial."""
    config, store = _open(dir)
    try:
        latest = latest_certificate(store.certificates(), name)
        if latest is None:
            _fail(f"no certificate for {name!r} to renew (issue one with `voipsec ca issue`)")
            return
        serial = _issue(dir, config, store, name, out, p12_password, days=days, aor=latest.aor)
        revoked = store.revoke_certificates(name, except_serial=serial) if revoke_old else []
        all_revoked = store.revoked_certificates()
    finally:
        store.close()
    if revoked:
        _write_crl(dir, all_revoked)
    for old in revoked:
        typer.echo(f"revoked {name} (serial {old:x})")


def _write_crl(dir: Path, revoked: list[tuple[int, float]]) -> None:
    write_crl(
        CaPaths.in_dir(dir),
        crl_path(dir),
        [(s, datetime.datetime.fromtimestamp(t, datetime.UTC)) for s, t in revoked],
    )


@ca_app.command("revoke")
def ca_revoke(name: str, dir: DirOption = DEFAULT_DIR) -> None:
    """Revoke NAME's certificates; a running server drops their connections."""
    _, store = _open(dir)
    try:
        serials = store.revoke_certificates(name)
        revoked = store.revoked_certificates()
    finally:
        store.close()
    _write_crl(dir, revoked)
    for serial in serials:
        typer.echo(f"revoked {name} (serial {serial:x})")


@ca_app.command("list")
def ca_list(dir: DirOption = DEFAULT_DIR) -> None:
    """Issued device certificates and their status: ok, expiring in N days (within
    pki.expiry_warning_days), expired or revoked; "renewed by" names a newer one."""
    config, store = _open(dir)
    try:
        records = store.certificates()
    finally:
        store.close()
    statuses = certificate_statuses(
        records, now=time.time(), warning_days=config.pki.expiry_warning_days
    )
    for st in statuses:
        until = datetime.datetime.fromtimestamp(st.not_after, datetime.UTC).date().isoformat()
        renewed = f"  renewed by {st.renewed_by:x}" if st.renewed_by is not None else ""
        typer.echo(
            f"{st.name}  sip:{st.aor}  serial {st.serial:x}  {st.label}  until {until}{renewed}"
        )


def crl_path(dir: Path) -> Path:
    return dir / "ca" / "crl.pem"


# -- bans and alerts ----------------------------------------------------------------


def _check_ip(text: str) -> str:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise CliError(f"{text!r} is not an IP address") from None


def _check_ban_source(text: str) -> str:
    """An IP address, or an IPv6 /64 as rate bans of IPv6 sources are stored."""
    if "/" not in text:
        return _check_ip(text)
    try:
        network = ipaddress.IPv6Network(text)
    except ValueError:
        network = None
    if network is None or network.prefixlen != IPV6_RATE_PREFIX:
        raise CliError(f"{text!r} is not an IP address or an IPv6 /{IPV6_RATE_PREFIX}")
    return str(network)


@bans_app.command("list")
def bans_list(dir: DirOption = DEFAULT_DIR) -> None:
    """Bans in force: address, seconds left, reason ("(UDP only)": blocks UDP only)."""
    _, store = _open(dir)
    try:
        now = time.time()
        for ban in store.bans(now):
            # UDP-only bans (evidence over UDP) are marked; other lines are as they were.
            scope = "  (UDP only)" if ban.scope == "udp" else ""
            typer.echo(f"{ban.source}  {int(ban.until - now)} s left  {ban.reason}{scope}")
    finally:
        store.close()


@bans_app.command("add")
def bans_add(
    ip: str,
    seconds: Annotated[int, typer.Option(help="Ban length.")] = 3600,
    reason: Annotated[str, typer.Option(help="Why (shown in lists and alerts).")] = "manual",
    dir: DirOption = DEFAULT_DIR,
) -> None:
    """Ban an address; a running server drops it within a second."""
    address = _check_ip(ip)
    _, store = _open(dir)
    try:
        store.add_ban(address, time.time() + seconds, reason)
    finally:
        store.close()
    typer.echo(f"banned {address} for {seconds} s")


@bans_app.command("remove")
def bans_remove(ip: str, dir: DirOption = DEFAULT_DIR) -> None:
    """Lift a ban (of an address or an IPv6 /64); a running server accepts it again
    within a second."""
    address = _check_ban_source(ip)
    _, store = _open(dir)
    try:
        store.remove_ban(address)
    finally:
        store.close()
    typer.echo(f"unbanned {address}")


@alerts_app.command("list")
def alerts_list(
    since: Annotated[float, typer.Option(help="Unix time of the oldest alert shown.")] = 0.0,
    dir: DirOption = DEFAULT_DIR,
) -> None:
    """Alerts raised by the IDS and the guard."""
    _, store = _open(dir)
    try:
        for a in store.alerts(since):
            when = datetime.datetime.fromtimestamp(a.time, datetime.UTC).isoformat(
                timespec="seconds"
            )
            typer.echo(f"{when}  {a.rule}  {a.source}  {a.detail}")
    finally:
        store.close()


# -- cdr ------------------------------------------------------------------------------

#: Seconds per unit of a relative --since ("15m", "2h", "1d", "1w").
SINCE_UNITS = {"s": 1, "m": 60, "h": 3_600, "d": 86_400, "w": 604_800}
# At most 9 digits: more than 30 years in seconds, and int() never sees a huge string.
_RELATIVE = re.compile(r"(\d{1,9})([smhdw])")
#: Longest --since text considered for an ISO-8601 parse (and echoed in the error).
MAX_SINCE_TEXT = 64
CDR_FORMATS = ("table", "csv", "json")
CDR_TABLE_TIME = "%Y-%m-%d %H:%M:%S"
#: Caller and callee columns keep at least this many characters: a national E.164
#: number with its "+" (+442071234567) is 13; longer ones fold onto a second line.
CDR_TABLE_PARTY_WIDTH = 13
#: Width of tables written to a pipe or file (rich would assume 80 and cut columns).
PIPED_TABLE_WIDTH = 160


def parse_since(text: str, now: float) -> float:
    """Epoch seconds for --since: ISO-8601 date/time (UTC when it has no offset) or a
    duration before ``now`` such as 15m, 2h, 1d."""
    stripped = text.strip()
    relative = _RELATIVE.fullmatch(stripped)
    if relative is not None:
        return now - int(relative.group(1)) * SINCE_UNITS[relative.group(2)]
    when = _parse_iso(stripped)
    if when is None:
        raise CliError(
            f"--since {text[:MAX_SINCE_TEXT]!r}: expected an ISO-8601 date/time such as "
            "2026-11-27 or 2026-11-27T10:00:00, or a duration such as 15m, 2h, 1d"
        )
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    return when.timestamp()


def _parse_iso(text: str) -> datetime.datetime | None:
    if len(text) > MAX_SINCE_TEXT:
        return None
    try:
        return datetime.datetime.fromisoformat(text)
    except ValueError:
        return None


def _cdrs_json(records: Sequence[CdrRecord]) -> str:
    rows = []
    for r in records:
        row: dict[str, object] = dataclasses.asdict(r)
        # The media report is JSON itself: nest it rather than quote it.
        row["media"] = json.loads(r.media) if r.media else None
        rows.append(row)
    return json.dumps(rows, indent=2)


def _cdrs_csv(records: Sequence[CdrRecord]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CDR_FIELDS)
    for r in records:
        writer.writerow(["" if v is None else v for v in dataclasses.astuple(r)])
    return out.getvalue()


def _cdrs_table(records: Sequence[CdrRecord]) -> Table:
    # Short headers and one space between columns (the box's blank separator, no
    # padding) leave caller and callee room in an 80-column terminal.
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, padding=0)
    table.add_column("start (UTC)", no_wrap=True)
    table.add_column("caller", overflow="fold", min_width=CDR_TABLE_PARTY_WIDTH)
    table.add_column("callee", overflow="fold", min_width=CDR_TABLE_PARTY_WIDTH)
    table.add_column("disposition", no_wrap=True)
    table.add_column("secs", justify="right", no_wrap=True)
    table.add_column("SIP", justify="right", no_wrap=True)
    table.add_column("hangup", no_wrap=True)
    for r in records:
        # Text(), not str: a caller named "[bold]" must not be read as rich markup.
        table.add_row(
            datetime.datetime.fromtimestamp(r.start, datetime.UTC).strftime(CDR_TABLE_TIME),
            Text(r.caller),
            Text(r.callee),
            r.disposition or _in_progress(r),
            "" if r.duration is None else f"{r.duration:.1f}",
            "" if r.status is None else str(r.status),
            r.hangup_by,
        )
    return table


def _in_progress(record: CdrRecord) -> str:
    return "talking" if record.answer is not None else "ringing"


def _print_table(table: Table) -> None:
    console = Console()
    if not console.is_terminal:
        console = Console(width=PIPED_TABLE_WIDTH)
    console.print(table)


@cdr_app.command("list")
def cdr_list(
    since: Annotated[
        str | None,
        typer.Option(
            metavar="T", help="Calls started since T: 2026-11-27, 2026-11-27T10:00:00, 15m, 2h, 1d."
        ),
    ] = None,
    format: Annotated[str, typer.Option(help="table, csv or json.")] = "table",
    limit: Annotated[
        int | None, typer.Option(metavar="N", help="Only the N most recent calls.")
    ] = None,
    dir: DirOption = DEFAULT_DIR,
) -> None:
    """Call detail records, oldest first (json/csv keys are the CDR field names)."""
    if format not in CDR_FORMATS:
        _fail(f"--format must be {', '.join(CDR_FORMATS[:-1])} or {CDR_FORMATS[-1]}")
    if limit is not None and limit < 1:
        _fail("--limit must be at least 1")
    start = 0.0 if since is None else parse_since(since, time.time())
    config = load(dir / CONFIG_NAME)
    store = Store(dir / DB_NAME, cdr_url=config.cdr.url)
    try:
        records = store.cdrs(since=start, limit=limit)
    finally:
        store.close()
    if format == "json":
        typer.echo(_cdrs_json(records))
    elif format == "csv":
        typer.echo(_cdrs_csv(records), nl=False)
    else:
        _print_table(_cdrs_table(records))


# -- turn -----------------------------------------------------------------------------


@turn_app.command("credentials")
def turn_credentials(
    name: str,
    ttl: Annotated[int, typer.Option(help="Seconds the pair stays valid.")] = 86_400,
    dir: DirOption = DEFAULT_DIR,
) -> None:
    """A time-limited TURN username/password for NAME (coturn's REST scheme)."""
    from .nat.credentials import rest_credentials
    from .nat.keystore import SECRET_NAME, read_or_create_secret

    if ttl <= 0 or ttl > 30 * 86_400:
        _fail("--ttl must be between 1 and 2592000 seconds")
    _, store = _open(dir)
    try:
        if name not in store.users():
            _fail(f"no user {name!r}")
    finally:
        store.close()
    secret = read_or_create_secret(dir / SECRET_NAME)
    username, password = rest_credentials(secret, name, ttl, time.time())
    typer.echo(f"username: {username}")
    typer.echo(f"password: {password}")


# -- config -------------------------------------------------------------------------


@config_app.command("get")
def config_get(key: str, dir: DirOption = DEFAULT_DIR) -> None:
    """Print the effective value of SECTION.KEY."""
    value = get_key(dir / CONFIG_NAME, key)
    typer.echo(json.dumps(value) if not isinstance(value, str) else value)


def _holds_secret(model: object) -> bool:
    """A section model (or a list of them) with a field kept out of reprs: a secret."""
    fields = getattr(model, "model_fields", None)
    if fields is None:
        return any(_holds_secret(arg) for arg in getattr(model, "__args__", ()))
    return any(not f.repr or _holds_secret(f.annotation) for f in fields.values())


def is_secret_key(key: str) -> bool:
    """Does SECTION.KEY hold a secret (a password, token, auth key, a URL with a
    password, or a list of trunks with their passwords)? Such values are not echoed."""
    section, _, name = key.partition(".")
    field = Config.model_fields.get(section)
    if field is None:
        return False
    if not name:
        return _holds_secret(field.annotation)
    inner = getattr(field.annotation, "model_fields", {}).get(name)
    return inner is not None and (not inner.repr or _holds_secret(inner.annotation))


@config_app.command("set")
def config_set(key: str, value: str, dir: DirOption = DEFAULT_DIR) -> None:
    """Set SECTION.KEY to a TOML literal (validated before it is written). A secret's
    value is not echoed (terminal scrollback and CI logs keep what is printed)."""
    set_key(dir / CONFIG_NAME, key, value)
    typer.echo(f"{key} set (a secret: not shown)" if is_secret_key(key) else f"{key} = {value}")


@app.command()
def version() -> None:
    """Print the version."""
    typer.echo(__version__)


def main() -> None:
    """Entry point: run the app, turning known errors into one line and exit 1."""
    try:
        app(standalone_mode=True)
    except (CliError, StoreError, FileExistsError, AuditFailed) as err:
        typer.echo(f"voipsec: error: {err}", err=True)
        sys.exit(1)
    except ConfigError as err:
        for problem in err.problems:
            typer.echo(f"voipsec: config error: {problem}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)

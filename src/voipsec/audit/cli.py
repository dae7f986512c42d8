"""``voipsec audit``: score an installation and SIP servers per SAME-FLOW control.

Without ``--target`` the installation in ``--dir`` is audited: its configuration and
files (:mod:`.local`), then its own listeners live (:mod:`.live`, :mod:`.turnprobe`),
unless ``--no-live``. Each ``--target sips:HOST:PORT`` (and ``--turn HOST:PORT``) is
probed live; with targets, the installation is audited only when ``--dir`` names one
that exists. The latest result is kept in ``DIR/audit/latest.json`` (0600) for the
dashboard. Exit status: 0; 1 on an error (one line); :data:`EXIT_UNDER` when the
overall score is under ``--fail-under``.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Annotated

import typer

from .. import __version__
from ..config import CONFIG_NAME, Config, load
from .live import live_results
from .local import local_results
from .model import AuditReport, CheckResult, score
from .options import ProbeOptions
from .report import FORMATS, render, report_dict
from .targets import MAX_TARGETS, SipTarget, TargetError, TurnTarget, parse_target, parse_turn
from .turnprobe import turn_results

__all__ = [
    "ANY_TO_LOOPBACK",
    "EXIT_UNDER",
    "LATEST_FILE",
    "AuditFailed",
    "audit",
    "own_targets",
    "run_audit",
]

#: Exit status when the score is under ``--fail-under`` (1 is an error, 2 a usage error).
EXIT_UNDER = 3
LATEST_FILE = Path("audit") / "latest.json"


class AuditFailed(Exception):
    """A failure of the audit itself: one line, exit status 1."""


#: A listener on an any-address is probed on the loopback address of its family: the
#: any-address is no destination (its certificate does not name it, and the probes' own
#: loopback sources must be what the server sees, so that its zones and bans apply to
#: them as the audit expects).
ANY_TO_LOOPBACK = {"0.0.0.0": "127.0.0.1", "::": "::1"}  # noqa: S104


def _probe_host(host: str) -> str:
    return ANY_TO_LOOPBACK.get(host, host)


def own_targets(config: Config) -> tuple[list[SipTarget], list[TurnTarget]]:
    """This installation's first TLS SIP listener and first UDP TURN listener; an
    any-address listener is probed on loopback (:data:`ANY_TO_LOOPBACK`)."""
    sips = [
        SipTarget(_probe_host(x.host), x.port)
        for x in config.sip.listeners()
        if x.transport == "tls"
    ]
    turns: list[TurnTarget] = []
    for item in config.turn.listen:
        transport, _, rest = item.partition(":")
        if transport == "udp":
            host, _, port = rest.rpartition(":")
            turns.append(TurnTarget(_probe_host(host.strip("[]")), int(port)))
    return sips[:1], turns[:1]


def run_audit(
    *,
    data_dir: Path | None,
    config: Config | None,
    sips: list[SipTarget],
    turns: list[TurnTarget],
    options: ProbeOptions,
    live_own: bool,
) -> AuditReport:
    """Run the checks and score them."""
    started = time.time()
    results: list[CheckResult] = []
    names: list[str] = []
    if data_dir is not None and config is not None:
        names.append("local")
        results += local_results(data_dir, config, started)
        if live_own:
            own_sips, own_turns = own_targets(config)
            own = ProbeOptions(
                user=options.user,
                password=options.password,
                turn_user=options.turn_user,
                turn_password=options.turn_password,
                own=config,
                data_dir=data_dir,
                timeout=options.timeout,
            )
            for target in own_sips:
                names.append(str(target))
                results += live_results(target, own)
            for turn in own_turns:
                names.append(str(turn))
                results += turn_results(turn, own)
    for target in sips:
        names.append(str(target))
        results += live_results(target, options)
    for turn in turns:
        names.append(str(turn))
        results += turn_results(turn, options)
    return score(results, started=started, targets=names)


def _save_latest(data_dir: Path, report: AuditReport) -> None:
    """``DIR/audit/latest.json``, written 0600 through a temporary and renamed; an
    error is one line (AuditFailed)."""
    path = data_dir / LATEST_FILE
    tmp = path.with_suffix(".tmp")
    try:
        path.parent.mkdir(mode=0o700, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    except OSError as err:
        raise AuditFailed(f"cannot save {path}: {err.strerror or err}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(report_dict(report), handle, indent=2)
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise AuditFailed(f"cannot save {path}: {err.strerror or err}") from None


def audit(
    dir: Annotated[Path, typer.Option("--dir", help="Data directory of the installation.")] = Path(
        "./voipsec-data"
    ),
    target: Annotated[
        list[str] | None, typer.Option("--target", help="sips:HOST:PORT of a SIP server to probe.")
    ] = None,
    turn: Annotated[
        list[str] | None, typer.Option("--turn", help="HOST:PORT of a TURN server (UDP).")
    ] = None,
    user: Annotated[
        str | None, typer.Option("--user", help="A test user for the live probes.")
    ] = None,
    password: Annotated[
        str | None, typer.Option("--password", help="The test user's password.")
    ] = None,
    turn_user: Annotated[
        str | None, typer.Option("--turn-user", help="TURN user (default --user).")
    ] = None,
    turn_password: Annotated[
        str | None, typer.Option("--turn-password", help="TURN password (default --password).")
    ] = None,
    fmt: Annotated[str, typer.Option("--format", help="text, json, md or sarif.")] = "text",
    fail_under: Annotated[
        float | None, typer.Option("--fail-under", help="Exit 3 when the score is under this.")
    ] = None,
    live: Annotated[
        bool, typer.Option("--live/--no-live", help="Probe the installation's listeners.")
    ] = True,
) -> None:
    """Check the controls: local configuration and files, live listeners, --targets."""
    if fmt not in FORMATS:
        raise AuditFailed(f"--format must be one of {', '.join(FORMATS)}")
    if fail_under is not None and not 0 <= fail_under <= 100:
        raise AuditFailed("--fail-under must be 0-100")
    targets = target or []
    turn_texts = turn or []
    if len(targets) + len(turn_texts) > MAX_TARGETS:
        raise AuditFailed(f"at most {MAX_TARGETS} targets per run")
    try:
        sips = [parse_target(t) for t in targets]
        turns = [parse_turn(t) for t in turn_texts]
    except TargetError as err:
        raise AuditFailed(str(err)) from None
    config_path = dir / CONFIG_NAME
    own = not (sips or turns) or config_path.exists()
    config = load(config_path, refuse_readable_secrets=False) if own else None
    options = ProbeOptions(
        user=user,
        password=password,
        turn_user=turn_user or user,
        turn_password=turn_password or password,
    )
    report = run_audit(
        data_dir=dir if own else None,
        config=config,
        sips=sips,
        turns=turns,
        options=options,
        live_own=live,
    )
    # The report is printed first: a broken DIR/audit must not lose it.
    typer.echo(render(report, fmt, __version__), nl=False)
    if own:
        _save_latest(dir, report)
    if fail_under is not None and report.overall < fail_under:
        raise typer.Exit(EXIT_UNDER)

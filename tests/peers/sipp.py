"""Run SIPp (3.6.1, Debian's ``sip-tester``) non-interactively and read its exact counts.

SIPp runs in a fresh working directory (it writes trace files there), with stdin from
/dev/null and ``-nostdin``, bounded by ``-m calls`` and ``-timeout Ns -timeout_error``,
plus a hard wall-clock limit on the process. Counts come from the statistics CSV
(``-trace_stat -stf FILE``), whose final row SIPp writes at exit; the screen dump
(``-trace_screen``) is the fallback. Debian's SIPp has no TLS: put a stunnel hop in front
(see ``tests/peers/stunnel.py``).
"""

from __future__ import annotations

import csv
import re
import resource
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .proc import free_port, require

STATS_FILE = "stats.csv"
SCREEN_FILE = "screen.log"
ERROR_FILE = "errors.log"
STDOUT_FILE = "sipp.out"
#: Seconds SIPp may take beyond its own ``-timeout`` before it is killed.
KILL_MARGIN = 15.0
_ELAPSED = re.compile(r"(\d+):(\d+):(\d+)(?::(\d+))?")
_SCREEN_ROW = re.compile(r"^\s*(Successful call|Failed call)\s*\|\s*\d+\s*\|\s*(\d+)", re.M)


@dataclass(frozen=True)
class SippResult:
    """What one SIPp run did. ``elapsed``: seconds from SIPp's start to its final
    statistics (wall-clock time of the process when SIPp wrote none)."""

    successful: int
    failed: int
    returncode: int
    elapsed: float
    stats: dict[str, str] = field(default_factory=dict)
    workdir: Path | None = None

    @property
    def achieved_rate(self) -> float:
        """Successful calls per second of SIPp's elapsed time."""
        return self.successful / self.elapsed if self.elapsed > 0 else 0.0

    def error_tail(self, chars: int = 2000) -> str:
        """The end of SIPp's error log and stdout, for a failure message."""
        if self.workdir is None:
            return ""
        parts = []
        for name in (ERROR_FILE, STDOUT_FILE):
            path = self.workdir / name
            if path.exists():
                parts.append(f"--- {name}\n{path.read_text(errors='replace')[-chars:]}")
        return "\n".join(parts)


def write_users_csv(path: Path, users: Sequence[tuple[str, str]], domain: str) -> Path:
    """Write a SIPp injection file, read in order: ``user;password;domain`` per line."""
    lines = ["SEQUENTIAL", *(f"{user};{password};{domain}" for user, password in users)]
    path.write_text("\n".join(lines) + "\n", encoding="ascii")
    return path


def safe_max_socket(margin: int = 64) -> int:
    """A ``-max_socket`` value below ``ulimit -n`` (SIPp fails when it reaches it)."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    limit = soft if soft != resource.RLIM_INFINITY else 65536
    return max(16, limit - margin)


def sipp_argv(
    scenario: Path,
    target: str,
    *,
    inf_csv: Path | None,
    rate: float,
    calls: int,
    transport: str,
    timeout: float,
    max_socket: int,
    extra: Sequence[str],
) -> list[str]:
    """The SIPp command line: bounded, non-interactive, with statistics files.

    Local SIP and control ports are free ones picked now (SIPp's defaults, 5060 and
    8888, collide when several SIPp run at once: exit code 254, "binding a socket").
    """
    argv = [require("sipp"), target, "-sf", str(scenario), "-t", transport, "-i", "127.0.0.1"]
    argv += ["-p", str(free_port()), "-cp", str(free_port(kind=socket.SOCK_DGRAM))]
    if inf_csv is not None:
        argv += ["-inf", str(inf_csv)]
    argv += ["-m", str(calls), "-r", _decimal(rate), "-rp", "1000"]
    argv += ["-timeout", f"{max(1, round(timeout))}s", "-timeout_error", "-nostdin"]
    argv += ["-max_socket", str(max_socket)]
    argv += ["-trace_stat", "-stf", STATS_FILE, "-fd", "1"]
    argv += ["-trace_screen", "-screen_file", SCREEN_FILE]
    argv += ["-trace_err", "-error_file", ERROR_FILE]
    return argv + list(extra)


def _decimal(value: float) -> str:
    """A plain decimal (SIPp reads ``-r 12.5``, not ``1.2e+06``)."""
    return f"{value:.3f}".rstrip("0").rstrip(".")


def _parse_elapsed(text: str) -> float:
    """SIPp's ``HH:MM:SS`` or ``HH:MM:SS:ffffff`` (fraction of a second)."""
    match = _ELAPSED.fullmatch(text.strip())
    if match is None:
        return 0.0
    hours, minutes, seconds, frac = match.groups()
    fraction = int(frac) / 10 ** len(frac) if frac else 0.0
    return int(hours) * 3600 + int(minutes) * 60 + int(seconds) + fraction


def _epoch(text: str) -> float | None:
    """The epoch seconds SIPp puts last in a time column (``date<TAB>time<TAB>epoch``)."""
    try:
        return float(text.split()[-1])
    except (IndexError, ValueError):
        return None


def stats_elapsed(stats: dict[str, str]) -> float:
    """Seconds from SIPp's start to its last statistics row (0.0 when unknown).

    The CSV's ``ElapsedTime(C)`` has whole seconds only, so the start and current
    timestamps are used when present.
    """
    start, now = _epoch(stats.get("StartTime", "")), _epoch(stats.get("CurrentTime", ""))
    if start is not None and now is not None and now >= start:
        return now - start
    return _parse_elapsed(stats.get("ElapsedTime(C)", ""))


def read_stats(path: Path) -> dict[str, str]:
    """The last row of SIPp's statistics CSV as {column: value}; {} when absent."""
    if not path.exists():
        return {}
    with path.open(newline="", encoding="ascii", errors="replace") as handle:
        rows = [row for row in csv.reader(handle, delimiter=";") if row]
    if len(rows) < 2:
        return {}
    header, last = rows[0], rows[-1]
    return {name: value for name, value in zip(header, last, strict=False) if name}


def read_screen_counts(path: Path) -> tuple[int, int] | None:
    """(successful, failed) cumulative counts from the last screen dump, if any."""
    if not path.exists():
        return None
    found = dict(
        (name, int(value)) for name, value in _SCREEN_ROW.findall(path.read_text(errors="replace"))
    )
    if "Successful call" not in found or "Failed call" not in found:
        return None
    return found["Successful call"], found["Failed call"]


def _counts(workdir: Path, stats: dict[str, str]) -> tuple[int, int]:
    """(successful, failed) from the CSV, else from the screen dump, else (0, 0)."""
    try:
        return int(stats["SuccessfulCall(C)"]), int(stats["FailedCall(C)"])
    except (KeyError, ValueError):
        return read_screen_counts(workdir / SCREEN_FILE) or (0, 0)


def _execute(argv: list[str], workdir: Path, wall_limit: float) -> tuple[int, float]:
    """Run SIPp with no terminal; kill it past ``wall_limit``. Returns (rc, wall seconds)."""
    start = time.monotonic()
    with (workdir / STDOUT_FILE).open("wb") as out:
        proc = subprocess.Popen(
            argv, cwd=workdir, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
        )
        try:
            returncode = proc.wait(timeout=wall_limit)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
            returncode = -9
    return returncode, time.monotonic() - start


def run_sipp(
    scenario: Path,
    target: str,
    *,
    workdir: Path | None = None,
    inf_csv: Path | None = None,
    rate: float = 10.0,
    calls: int = 1,
    transport: str = "t1",
    extra: Sequence[str] = (),
    timeout: float = 30.0,
    max_socket: int | None = None,
) -> SippResult:
    """Run one bounded SIPp UAC against ``target`` (host:port) and return its counts.

    ``workdir`` (created if missing; a fresh temporary directory when None) receives the
    statistics, screen and error files. SIPp stops after ``calls`` calls or ``timeout``
    seconds (counted as an error), and is killed ``KILL_MARGIN`` seconds after that.
    SIPp's return code: 0 all calls succeeded, 1 some failed, 255/-1 fatal error.
    """
    workdir = Path(tempfile.mkdtemp(prefix="sipp-")) if workdir is None else workdir
    workdir.mkdir(parents=True, exist_ok=True)
    argv = sipp_argv(
        scenario,
        target,
        inf_csv=inf_csv,
        rate=rate,
        calls=calls,
        transport=transport,
        timeout=timeout,
        max_socket=max_socket if max_socket is not None else safe_max_socket(),
        extra=extra,
    )
    returncode, wall = _execute(argv, workdir, timeout + KILL_MARGIN)
    stats = read_stats(workdir / STATS_FILE)
    successful, failed = _counts(workdir, stats)
    elapsed = stats_elapsed(stats) or wall
    return SippResult(successful, failed, returncode, elapsed, stats, workdir)

"""Run SIPp (3.6.1, Debian's ``sip-tester``) non-interactively and read its exact counts.

SIPp runs in a fresh working directory (it writes trace files there), with stdin from
/dev/null and ``-nostdin``, bounded by ``-m calls`` and ``-timeout Ns -timeout_error``,
plus a hard wall-clock limit on the process. Counts come from the statistics CSV
(``-trace_stat -stf FILE``), whose final row SIPp writes at exit; the screen dump
(``-trace_screen``) is the fallback. Debian's SIPp has no TLS: put a stunnel hop in front
(see ``tests/peers/stunnel.py``).

``run_sipp`` runs one SIPp to its end; ``start_sipp`` starts one in the background (a
callee waiting for calls) and ``SippProcess.wait`` collects the same result later.
Options for call scenarios: ``ooc_scenario`` (``-oocsf``: requests with a Call-ID the
main scenario never used, e.g. calls to a registered SIPp, run this scenario on the
socket they came in on), ``keys`` (``-key NAME VALUE``: ``[NAME]`` in the scenario),
``call_length_ms`` (``-d``: ``<pause/>`` without milliseconds), ``local_port`` (a
listening SIPp's port) and ``trace_logs`` (``<log>`` actions to ``logs.log``, read with
``SippResult.log_lines``).
"""

from __future__ import annotations

import contextlib
import csv
import re
import resource
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .proc import free_port, require

STATS_FILE = "stats.csv"
SCREEN_FILE = "screen.log"
ERROR_FILE = "errors.log"
STDOUT_FILE = "sipp.out"
LOG_FILE = "logs.log"
#: Seconds SIPp may take beyond its own ``-timeout`` before it is killed.
KILL_MARGIN = 15.0
_ELAPSED = re.compile(r"(\d+):(\d+):(\d+)(?::(\d+))?")
_SCREEN_ROW = re.compile(r"^\s*(Successful call|Failed call)\s*\|\s*\d+\s*\|\s*(\d+)", re.M)
#: SIPp's error file: a heading, then events that each start with a timestamp
#: (``2026-11-27<TAB>23:44:09.610238<TAB>1795823049.610238: text``), not always on
#: lines of their own.
_ERROR_EVENT = re.compile(r"\d{4}-\d\d-\d\d\t[\d:.]+\t[\d.]+: ")
#: Error-file events that are reports, not errors: an out-of-call request handed to
#: the -oocsf scenario, which is what that scenario is for.
BENIGN_EVENTS = ("using the out-of-call scenario",)
#: Statistics columns that count messages no scenario step expected.
UNEXPECTED_COLUMNS = ("FailedUnexpectedMessage(C)", "OutOfCallMsgs(C)", "DeadCallMsgs(C)")


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
        for name in (ERROR_FILE, STDOUT_FILE, LOG_FILE):
            path = self.workdir / name
            if path.exists():
                parts.append(f"--- {name}\n{path.read_text(errors='replace')[-chars:]}")
        return "\n".join(parts)

    def log_lines(self, prefix: str = "") -> list[str]:
        """Lines the scenario's ``<log>`` actions wrote (``trace_logs``) that start
        with ``prefix``, in order."""
        if self.workdir is None or not (self.workdir / LOG_FILE).exists():
            return []
        text = (self.workdir / LOG_FILE).read_text(errors="replace")
        return [line for line in text.splitlines() if line.startswith(prefix)]

    def error_events(self) -> list[str]:
        """SIPp's error-file events (``-trace_err``) other than ``BENIGN_EVENTS``."""
        if self.workdir is None or not (self.workdir / ERROR_FILE).exists():
            return []
        text = (self.workdir / ERROR_FILE).read_text(errors="replace")
        events = [e.strip() for e in _ERROR_EVENT.split(text)[1:]]
        return [e for e in events if e and not any(b in e for b in BENIGN_EVENTS)]

    def unexpected(self) -> dict[str, int]:
        """Counts of unexpected, out-of-call and dead-call messages (main scenario)."""
        return {name: int(self.stats.get(name, "0") or 0) for name in UNEXPECTED_COLUMNS}


def write_users_csv(path: Path, users: Sequence[tuple[str, str]], domain: str) -> Path:
    """Write a SIPp injection file, read in order: ``user;password;domain`` per line."""
    return write_csv(path, [(user, password, domain) for user, password in users])


def write_csv(path: Path, rows: Sequence[Sequence[str]]) -> Path:
    """Write a SEQUENTIAL SIPp injection file: ``[field0]``, ``[field1]``... per row."""
    for row in rows:
        if any(";" in value or "\n" in value for value in row):
            raise ValueError(f"a SIPp field cannot hold ';' or a newline: {row!r}")
    lines = ["SEQUENTIAL", *(";".join(row) for row in rows)]
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
    local_port: int | None = None,
    ooc_scenario: Path | None = None,
    keys: Mapping[str, str] | None = None,
    call_length_ms: int | None = None,
    trace_logs: bool = False,
) -> list[str]:
    """The SIPp command line: bounded, non-interactive, with statistics files.

    Local SIP and control ports are free ones picked now unless ``local_port`` is given
    (SIPp's defaults, 5060 and 8888, collide when several SIPp run at once: exit code
    254, "binding a socket"). An empty ``target`` runs SIPp without a remote host (a
    server scenario, which answers whoever connects).
    """
    argv = [require("sipp")] + ([target] if target else [])
    argv += ["-sf", str(scenario), "-t", transport, "-i", "127.0.0.1"]
    port = local_port if local_port is not None else free_port()
    argv += ["-p", str(port), "-cp", str(free_port(kind=socket.SOCK_DGRAM))]
    if ooc_scenario is not None:
        argv += ["-oocsf", str(ooc_scenario)]
    for name, value in (keys or {}).items():
        argv += ["-key", name, value]
    if call_length_ms is not None:
        argv += ["-d", str(call_length_ms)]
    if trace_logs:
        argv += ["-trace_logs", "-log_file", LOG_FILE]
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
    process = SippProcess.start(argv, workdir)
    return process.finish(wall_limit)


@dataclass
class SippProcess:
    """A SIPp started in the background (``start_sipp``); ``wait`` gives its result."""

    proc: subprocess.Popen[bytes]
    workdir: Path
    started: float
    argv: list[str]

    @classmethod
    def start(cls, argv: list[str], workdir: Path) -> SippProcess:
        with (workdir / STDOUT_FILE).open("wb") as out:
            proc = subprocess.Popen(
                argv, cwd=workdir, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
            )
        return cls(proc, workdir, time.monotonic(), argv)

    def running(self) -> bool:
        return self.proc.poll() is None

    def finish(self, wall_limit: float) -> tuple[int, float]:
        """Wait until ``wall_limit`` seconds after the start, then kill. (rc, wall)."""
        remaining = max(0.0, self.started + wall_limit - time.monotonic())
        try:
            returncode = self.proc.wait(timeout=remaining)
        except subprocess.TimeoutExpired:
            self.kill()
            returncode = -9
        return returncode, time.monotonic() - self.started

    def kill(self) -> None:
        """Kill this SIPp (only this process) if it still runs."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def wait(self, deadline: float) -> SippResult:
        """Wait at most ``deadline`` more seconds for SIPp to end (killed after), and
        return its counts."""
        try:
            returncode = self.proc.wait(timeout=deadline)
        except subprocess.TimeoutExpired:
            self.kill()
            returncode = -9
        return _result(self.workdir, returncode, time.monotonic() - self.started)


def _result(workdir: Path, returncode: int, wall: float) -> SippResult:
    stats = read_stats(workdir / STATS_FILE)
    successful, failed = _counts(workdir, stats)
    elapsed = stats_elapsed(stats) or wall
    return SippResult(successful, failed, returncode, elapsed, stats, workdir)


def _prepare(
    scenario: Path,
    target: str,
    *,
    workdir: Path | None,
    inf_csv: Path | None,
    rate: float,
    calls: int,
    transport: str,
    extra: Sequence[str],
    timeout: float,
    max_socket: int | None,
    local_port: int | None,
    ooc_scenario: Path | None,
    keys: Mapping[str, str] | None,
    call_length_ms: int | None,
    trace_logs: bool,
) -> tuple[list[str], Path]:
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
        local_port=local_port,
        ooc_scenario=ooc_scenario,
        keys=keys,
        call_length_ms=call_length_ms,
        trace_logs=trace_logs,
    )
    return argv, workdir


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
    local_port: int | None = None,
    ooc_scenario: Path | None = None,
    keys: Mapping[str, str] | None = None,
    call_length_ms: int | None = None,
    trace_logs: bool = False,
) -> SippResult:
    """Run one bounded SIPp UAC against ``target`` (host:port) and return its counts.

    ``workdir`` (created if missing; a fresh temporary directory when None) receives the
    statistics, screen and error files. SIPp stops after ``calls`` calls or ``timeout``
    seconds (counted as an error), and is killed ``KILL_MARGIN`` seconds after that.
    SIPp's return code: 0 all calls succeeded, 1 some failed, 255/-1 fatal error.
    """
    argv, workdir = _prepare(
        scenario,
        target,
        workdir=workdir,
        inf_csv=inf_csv,
        rate=rate,
        calls=calls,
        transport=transport,
        extra=extra,
        timeout=timeout,
        max_socket=max_socket,
        local_port=local_port,
        ooc_scenario=ooc_scenario,
        keys=keys,
        call_length_ms=call_length_ms,
        trace_logs=trace_logs,
    )
    returncode, wall = _execute(argv, workdir, timeout + KILL_MARGIN)
    return _result(workdir, returncode, wall)


@contextlib.contextmanager
def start_sipp(
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
    local_port: int | None = None,
    ooc_scenario: Path | None = None,
    keys: Mapping[str, str] | None = None,
    call_length_ms: int | None = None,
    trace_logs: bool = False,
) -> Iterator[SippProcess]:
    """Start SIPp in the background for a with-block (same options as ``run_sipp``).

    Collect the result with ``SippProcess.wait``; a SIPp still running when the block
    ends is killed (it is bounded by its own ``-timeout`` anyway).
    """
    argv, workdir = _prepare(
        scenario,
        target,
        workdir=workdir,
        inf_csv=inf_csv,
        rate=rate,
        calls=calls,
        transport=transport,
        extra=extra,
        timeout=timeout,
        max_socket=max_socket,
        local_port=local_port,
        ooc_scenario=ooc_scenario,
        keys=keys,
        call_length_ms=call_length_ms,
        trace_logs=trace_logs,
    )
    process = SippProcess.start(argv, workdir)
    try:
        yield process
    finally:
        process.kill()

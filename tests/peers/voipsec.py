"""Run the real ``voipsec`` command (init, user add, config set, serve) for tests.

``voipsec serve`` always runs as its own process. The short commands (init, config,
user, bans, alerts, cdr ...) run in the test process by default: the same entry point
(``voipsec.cli.main``) with the same argv, output and exit status, without the ~0.5 s
of CPU a fresh interpreter spends importing the CLI, which made setup and polling
the larger part of the suite's CPU. ``voipsec_cli`` runs the real process; the CLI
tests (test_cli.py) and one end-to-end ``prepare(..., cli=True)`` use it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from click.testing import CliRunner

from voipsec.cli import main as cli_main

from .proc import DEFAULT_RELAY_PORTS, free_port, relay_ports, running, wait_for

VOIPSEC = [sys.executable, "-m", "voipsec"]
#: The first line ``voipsec serve`` prints when it has started every listener.
BANNER = "voipsec is running."


def voipsec_cli(*args: str, data_dir: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run one ``voipsec`` subcommand with ``--dir`` as a real process."""
    proc = subprocess.run(
        [*VOIPSEC, *args, "--dir", str(data_dir)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return _checked(proc, args, check)


def voipsec(*args: str, data_dir: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run one ``voipsec`` subcommand with ``--dir`` in this process (see the module doc).

    ``voipsec.cli.main`` is what ``python -m voipsec`` runs; click's isolation gives it its own
    argv, stdin, stdout and stderr (not terminals, as with a piped process), and its
    SystemExit is the exit status. An exception that would end the process with a
    traceback is status 1 with the traceback on stderr, as Python does.
    """
    argv = ["voipsec", *args, "--dir", str(data_dir)]
    with CliRunner().isolation() as (out, err, _):
        saved, sys.argv = sys.argv, argv
        try:
            cli_main()
            code = 0
        except SystemExit as exit_:
            code = _exit_status(exit_.code)
        except Exception:
            traceback.print_exc()
            code = 1
        finally:
            sys.argv = saved
        sys.stdout.flush()
        sys.stderr.flush()
        stdout, stderr = out.getvalue().decode(), err.getvalue().decode()
    proc = subprocess.CompletedProcess(argv, code, stdout, stderr)
    return _checked(proc, args, check)


def _exit_status(code: object) -> int:
    """The process status ``sys.exit(code)`` gives: None is 0, a message is 1."""
    if code is None:
        return 0
    return code if isinstance(code, int) else 1


def _checked(
    proc: subprocess.CompletedProcess[str], args: Sequence[str], check: bool
) -> subprocess.CompletedProcess[str]:
    if check and proc.returncode != 0:
        raise AssertionError(f"voipsec {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc


@dataclass
class VoipsecServer:
    """A ``voipsec serve`` process and what a client needs to reach it."""

    data_dir: Path
    host: str
    port: int
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def ca(self) -> Path:
        return self.data_dir / "ca" / "ca.crt"

    def bindings(self, user: str) -> list[dict[str, object]]:
        rows = json.loads(
            voipsec("user", "list", "--format", "json", data_dir=self.data_dir).stdout
        )
        for row in rows:
            if row["user"] == user:
                return list(row["bindings"])
        raise AssertionError(f"no user {user}")

    def wait_bindings(
        self, user: str, count: int, deadline: float = 15.0
    ) -> list[dict[str, object]]:
        found: list[dict[str, object]] = []

        def check() -> bool:
            found[:] = self.bindings(user)
            return len(found) == count

        wait_for(check, deadline=deadline, what=f"{count} binding(s) of {user}")
        return found

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


#: The suite's process mode: unset = the defaults; "1" = sip.workers = media.workers = 1.
WORKERS_ENV = "VOIPSEC_TEST_WORKERS"


def worker_settings() -> list[tuple[str, str]]:
    """The config settings of the process mode the suite runs in (WORKERS_ENV)."""
    count = os.environ.get(WORKERS_ENV, "")
    if not count:
        return []
    return [("sip.workers", count), ("media.workers", count)]


def prepare(
    data_dir: Path,
    *,
    users: Sequence[tuple[str, str]] = (),
    settings: Sequence[tuple[str, str]] = (),
    host: str = "127.0.0.1",
    port: int | None = None,
    cli: bool = False,
) -> VoipsecServer:
    """``voipsec init``, users and config settings; listens on a free TLS port.

    The commands run in this process unless ``cli`` is true (real processes).
    """
    run = voipsec_cli if cli else voipsec
    run("init", data_dir=data_dir)
    port = port or free_port(host)
    run("config", "set", "sip.listen", f'["tls:{host}:{port}"]', data_dir=data_dir)
    # Tests run several servers: none binds the default STUN/TURN port unless asked.
    run("config", "set", "turn.listen", "[]", data_dir=data_dir)
    # ... nor the metrics port (a test that wants /metrics sets metrics.listen).
    run("config", "set", "metrics.listen", '""', data_dir=data_dir)
    # make test runs the integration suite twice: with the defaults (a process per core)
    # and with VOIPSEC_TEST_WORKERS=1 (one signaling process, one relay process).
    for key, value in worker_settings():
        run("config", "set", key, value, data_dir=data_dir)
    low, high = relay_ports()
    if (low, high) != DEFAULT_RELAY_PORTS:
        run("config", "set", "media.ports", f'"{low}-{high}"', data_dir=data_dir)
    for key, value in settings:
        run("config", "set", key, value, data_dir=data_dir)
    for name, password in users:
        run("user", "add", name, "--password", password, data_dir=data_dir)
    return VoipsecServer(data_dir=data_dir, host=host, port=port, log=data_dir / "serve.log")


@contextlib.contextmanager
def serving(server: VoipsecServer) -> Iterator[VoipsecServer]:
    """Run ``voipsec serve`` until the with-block ends; waits for the TLS port."""
    env = {"PYTHONUNBUFFERED": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    # The log is appended to: only this run's banner counts (a restarted server's log
    # still holds the one before, whose old processes may still be leaving).
    start = len(server.log_text())
    with running(
        [*VOIPSEC, "serve", "--dir", str(server.data_dir)], log=server.log, env=env
    ) as proc:
        server.proc = proc
        # The banner is printed once every listener of every worker is bound (TLS,
        # UDP, TURN...): the TLS port alone can accept before a UDP listener exists.
        # No probe connection: it would count against the per-source connection
        # limit until the server saw it close (test_connection_limits.py).
        wait_for(
            lambda: proc.poll() is not None or BANNER in server.log_text()[start:],
            what="voipsec serve to listen",
        )
        if proc.poll() is not None:
            raise AssertionError(f"voipsec serve exited: {server.log_text()[-2000:]}")
        yield server
    server.proc = None


def set_zones(data_dir: Path, zones_toml: str) -> None:
    """Replace the ``[[zones]]`` tables of DIR/voipsec.toml (set_key cannot edit arrays).

    The sections after the zones ([calls] ... [metrics]) are kept: cutting them would
    put the metrics server back on its default port, shared by every test server.
    """
    path = data_dir / "voipsec.toml"
    kept: list[str] = []
    in_zone = False
    for line in path.read_text().splitlines(keepends=True):
        if line.startswith("["):
            in_zone = line.startswith("[[zones]]")
        if not in_zone:
            kept.append(line)
    path.write_text("".join(kept) + "\n" + zones_toml)
    voipsec("config", "get", "sip.domain", data_dir=data_dir)  # validates the new file


def stored_listing(
    data_dir: Path, kind: str, shows: Callable[[str], bool], *, deadline: float = 10.0
) -> str:
    """``voipsec KIND list`` once its output ``shows`` what the test waits for.

    Bans and alerts reach voipsec.db through the server's store writer thread, a moment
    after the event (storage/storewriter.py): read them with a deadline, not at once.
    """
    out = ""

    def ready() -> bool:
        nonlocal out
        out = voipsec(kind, "list", data_dir=data_dir).stdout
        return shows(out)

    wait_for(ready, deadline=deadline, what=f"`voipsec {kind} list` to show it")
    return out


def worker_holding(server: VoipsecServer, port: int, source: str = "127.0.0.1") -> int:
    """The signaling worker that accepted our TLS connection from ``source``:``port``
    (sip.workers > 1: each worker logs "signaling worker K holds tls:HOST:PORT")."""
    pattern = re.compile(rf"signaling worker (\d+) holds tls:{re.escape(source)}:{port}\b")
    found: list[int] = []

    def logged() -> bool:
        match = pattern.search(server.log_text())
        if match:
            found.append(int(match.group(1)))
        return bool(match)

    wait_for(logged, what=f"the worker holding {source}:{port}")
    return found[0]

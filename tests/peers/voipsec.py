"""Run the real ``voipsec`` command (init, user add, config set, serve) for tests."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from .proc import free_port, running, wait_for, wait_port

VOIPSEC = [sys.executable, "-m", "voipsec"]
#: The first line ``voipsec serve`` prints when it has started every listener.
BANNER = "voipsec is running."


def voipsec(*args: str, data_dir: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run one ``voipsec`` subcommand with ``--dir``; returns the completed process."""
    proc = subprocess.run(
        [*VOIPSEC, *args, "--dir", str(data_dir)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
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


def prepare(
    data_dir: Path,
    *,
    users: Sequence[tuple[str, str]] = (),
    settings: Sequence[tuple[str, str]] = (),
    host: str = "127.0.0.1",
    port: int | None = None,
) -> VoipsecServer:
    """``voipsec init``, users and config settings; listens on a free TLS port."""
    voipsec("init", data_dir=data_dir)
    port = port or free_port(host)
    voipsec("config", "set", "sip.listen", f'["tls:{host}:{port}"]', data_dir=data_dir)
    # Tests run several servers: none binds the default STUN/TURN port unless asked.
    voipsec("config", "set", "turn.listen", "[]", data_dir=data_dir)
    # ... nor the metrics port (a test that wants /metrics sets metrics.listen).
    voipsec("config", "set", "metrics.listen", '""', data_dir=data_dir)
    for key, value in settings:
        voipsec("config", "set", key, value, data_dir=data_dir)
    for name, password in users:
        voipsec("user", "add", name, "--password", password, data_dir=data_dir)
    return VoipsecServer(data_dir=data_dir, host=host, port=port, log=data_dir / "serve.log")


@contextlib.contextmanager
def serving(server: VoipsecServer) -> Iterator[VoipsecServer]:
    """Run ``voipsec serve`` until the with-block ends; waits for the TLS port."""
    env = {"PYTHONUNBUFFERED": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    with running(
        [*VOIPSEC, "serve", "--dir", str(server.data_dir)], log=server.log, env=env
    ) as proc:
        server.proc = proc
        # The banner is printed once every listener is bound (TLS, UDP, TURN...):
        # the TLS port alone can accept before a UDP listener exists.
        wait_for(
            lambda: proc.poll() is not None or (BANNER in server.log_text() and _accepting(server)),
            what="voipsec serve to listen",
        )
        if proc.poll() is not None:
            raise AssertionError(f"voipsec serve exited: {server.log_text()[-2000:]}")
        yield server
    server.proc = None


def _accepting(server: VoipsecServer) -> bool:
    try:
        wait_port(server.host, server.port, deadline=0.05)
    except AssertionError:
        return False
    return True


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

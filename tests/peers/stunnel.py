"""stunnel4 as a TLS hop for peers that only speak plain TCP (Debian's SIPp has no TLS).

Client mode (``stunnel_client``): a plain-TCP peer connects to 127.0.0.1:accept_port and
stunnel carries the bytes over TLS to the server, verifying the server's certificate
chain against a CA file *and* its name: ``checkIP`` when the target is an IP address,
``checkHost`` otherwise. Server mode (``stunnel_server``): TLS in, plain TCP out, for a
future SIPp UAS behind TLS.

stunnel runs in the foreground with no pid file; its log goes to ``workdir``.
"""

from __future__ import annotations

import contextlib
import ipaddress
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

from .proc import port_open, require, running, wait_for

#: Socket options on both sides: SIP messages are small, so no Nagle delay.
SOCKET_OPTIONS = ("l:TCP_NODELAY=1", "r:TCP_NODELAY=1")
START_DEADLINE = 15.0


def stunnel_binary() -> str:
    """Path of stunnel (Debian installs it as ``stunnel4``; ``stunnel`` elsewhere)."""
    for name in ("stunnel4", "stunnel"):
        path = shutil.which(name)
        if path is not None:
            return path
    return require("stunnel4")


def _global_section(log: Path) -> list[str]:
    """Options shared by both modes: foreground, no pid file, quiet-ish log, no Nagle."""
    lines = [
        "foreground = yes",
        "pid =",
        "syslog = no",
        f"output = {log}",
        "debug = 4",
    ]
    lines += [f"socket = {opt}" for opt in SOCKET_OPTIONS]
    return lines


def _peer_check(host: str) -> str:
    """``checkIP`` for an address, ``checkHost`` for a name: the certificate must match."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return f"checkHost = {host}"
    return f"checkIP = {host}"


def client_config(
    accept_port: int,
    connect_host: str,
    connect_port: int,
    ca_file: Path,
    log: Path,
    local: str | None = None,
) -> str:
    """stunnel.conf text for a TLS client hop 127.0.0.1:accept_port -> host:port."""
    lines = _global_section(log)
    lines += [
        "[tls-client]",
        "client = yes",
        f"accept = 127.0.0.1:{accept_port}",
        f"connect = {connect_host}:{connect_port}",
        f"CAfile = {ca_file}",
        "verifyChain = yes",
        _peer_check(connect_host),
        "sslVersionMin = TLSv1.2",
        "delay = no",
        "TIMEOUTclose = 0",
    ]
    if local is not None:
        lines.append(f"local = {local}")  # the source address of the TLS connection
    return "\n".join(lines) + "\n"


def server_config(accept_port: int, connect_port: int, cert: Path, key: Path, log: Path) -> str:
    """stunnel.conf text for a TLS server hop 127.0.0.1:accept_port -> 127.0.0.1:port."""
    lines = _global_section(log)
    lines += [
        "[tls-server]",
        f"accept = 127.0.0.1:{accept_port}",
        f"connect = 127.0.0.1:{connect_port}",
        f"cert = {cert}",
        f"key = {key}",
        "sslVersionMin = TLSv1.2",
        "TIMEOUTclose = 0",
    ]
    return "\n".join(lines) + "\n"


@contextlib.contextmanager
def _run(
    config_text: str, name: str, accept_port: int, workdir: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """Write NAME.conf, start stunnel, wait until accept_port accepts, yield the process."""
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / f"{name}.conf"
    config.write_text(config_text, encoding="utf-8")
    log = workdir / f"{name}.stderr"
    with running([stunnel_binary(), str(config)], cwd=workdir, log=log) as proc:
        wait_for(
            lambda: proc.poll() is not None or port_open("127.0.0.1", accept_port),
            deadline=START_DEADLINE,
            what=f"stunnel to accept on 127.0.0.1:{accept_port}",
        )
        _check_alive(proc, log, workdir / f"{name}.log")
        yield proc


def _check_alive(proc: subprocess.Popen[bytes], *logs: Path) -> None:
    """Raise with stunnel's own words when it exited during start-up."""
    if proc.poll() is None:
        return
    text = "\n".join(p.read_text(errors="replace") for p in logs if p.exists())
    raise AssertionError(f"stunnel exited with {proc.returncode}:\n{text[-2000:]}")


@contextlib.contextmanager
def stunnel_client(
    accept_port: int,
    connect_host: str,
    connect_port: int,
    ca_file: Path,
    workdir: Path,
    *,
    local: str | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    """TLS client hop: plain TCP on 127.0.0.1:accept_port, TLS to connect_host:port.

    The server certificate must chain to ``ca_file`` and match ``connect_host``
    (checkIP for an address, checkHost for a name). Yields the running stunnel process
    (its config is ``workdir/stunnel-client.conf``, its log ``workdir/stunnel-client.log``).
    """
    log = workdir / "stunnel-client.log"
    text = client_config(accept_port, connect_host, connect_port, ca_file, log, local)
    with _run(text, "stunnel-client", accept_port, workdir) as proc:
        yield proc


@contextlib.contextmanager
def stunnel_server(
    accept_port: int, connect_port: int, cert: Path, key: Path, workdir: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """TLS server hop: TLS on 127.0.0.1:accept_port, plain TCP to 127.0.0.1:connect_port.

    No client certificate is requested. Yields the running stunnel process (config
    ``workdir/stunnel-server.conf``, log ``workdir/stunnel-server.log``).
    """
    log = workdir / "stunnel-server.log"
    text = server_config(accept_port, connect_port, cert, key, log)
    with _run(text, "stunnel-server", accept_port, workdir) as proc:
        yield proc

"""``openssl s_client`` as a TLS peer: what it negotiated, or that it was refused."""

from __future__ import annotations

import re
import subprocess
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .proc import require


@dataclass(frozen=True)
class Handshake:
    returncode: int
    protocol: str | None
    cipher: str | None
    verified: bool
    output: str

    @property
    def established(self) -> bool:
        return self.cipher is not None and self.cipher not in ("(NONE)", "0000")


def s_client(
    host: str,
    port: int,
    *,
    options: Sequence[str] = (),
    ca: Path | None = None,
    send: bytes = b"",
    timeout: float = 15.0,
) -> Handshake:
    """Run one ``openssl s_client`` handshake and report what was negotiated."""
    argv = [require("openssl"), "s_client", "-connect", f"{host}:{port}"]
    if ca is not None:
        argv += ["-CAfile", str(ca), "-verify_return_error"]
    argv += list(options)
    if send:
        returncode, out = _exchange(argv, send, timeout)
    else:
        proc = subprocess.run(argv, input=b"", capture_output=True, timeout=timeout, check=False)
        returncode = proc.returncode
        out = proc.stdout.decode(errors="replace") + proc.stderr.decode(errors="replace")
    cipher = _first(r"Cipher is (\S+)", out)
    return Handshake(
        returncode=returncode,
        protocol=_first(r"New, (TLSv[\d.]+), Cipher is", out),
        cipher=cipher,
        verified="Verify return code: 0 (ok)" in out,
        output=out,
    )


def _first(pattern: str, text: str) -> str | None:
    match = re.search(pattern, text)
    return match.group(1) if match else None


def _exchange(argv: list[str], send: bytes, timeout: float) -> tuple[int, str]:
    """Send ``send`` after the handshake; stop at the first SIP status line or EOF."""
    proc = subprocess.Popen(
        [*argv, "-ign_eof"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(send)
    proc.stdin.flush()
    lines: list[str] = []
    done = threading.Event()

    def reader() -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            lines.append(raw.decode(errors="replace"))
            if raw.startswith(b"SIP/2.0 "):
                break
        done.set()

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    done.wait(timeout)
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=5)
    thread.join(timeout=5)
    proc.stdin.close()
    proc.stdout.close()
    return proc.returncode, "".join(lines)

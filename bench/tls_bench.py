"""TLS handshakes per second against voipsec's SIP/TLS listener, with `openssl s_time`.

Full and resumed handshakes, TLS 1.2 and 1.3, with and without a device certificate
(client_cert = "required" for the latter). Each measurement is bounded by --seconds.

    .venv/bin/python bench/tls_bench.py [--seconds 5] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.peers.proc import free_port  # noqa: E402
from tests.peers.voipsec import prepare, serving, voipsec  # noqa: E402


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def s_time(port: int, seconds: int, args: list[str]) -> int:
    out = subprocess.run(
        ["openssl", "s_time", "-connect", f"127.0.0.1:{port}", "-time", str(seconds), *args],
        capture_output=True,
        text=True,
        timeout=seconds + 30,
        check=False,
    ).stdout
    match = re.search(r"(\d+) connections in (\d+) real seconds", out)
    if match is None:
        raise SystemExit(f"s_time gave no result: {out[-500:]}")
    return int(match.group(1))


def run(seconds: int) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    work = Path(tempfile.mkdtemp(prefix="tls-bench-"))
    for client_cert in ("off", "required"):
        prepared = prepare(work / client_cert, users=[("alice", "alice-secret-1")])
        port = free_port()
        voipsec(
            "config",
            "set",
            "sip.listen",
            f'["tls:127.0.0.1:{port};client_cert={client_cert}"]',
            data_dir=prepared.data_dir,
        )
        prepared.port = port
        voipsec(
            "ca",
            "issue",
            "alice",
            "--out",
            str(work / "alice"),
            "--p12-password",
            "x" * 12,
            data_dir=prepared.data_dir,
        )
        cert = [
            "-cert",
            str(work / "alice" / "alice.crt"),
            "-key",
            str(work / "alice" / "alice.key"),
        ]
        extra = cert if client_cert == "required" else []
        with serving(prepared) as server:
            assert server.proc is not None
            for version in ("-tls1_2", "-tls1_3"):
                for mode in ("-new", "-reuse"):
                    before = cpu_seconds(server.proc.pid)
                    count = s_time(port, seconds, [mode, version, *extra])
                    used = cpu_seconds(server.proc.pid) - before
                    rows.append(
                        {
                            "client_cert": client_cert,
                            "version": version[1:],
                            "mode": mode[1:],
                            "handshakes": count,
                            "per_second": round(count / seconds),
                            "server_cpu_s": round(used, 2),
                            "server_cpu_us_each": round(used / max(count, 1) * 1e6),
                        }
                    )
                    print(rows[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    rows = run(args.seconds)
    print(f"\n{'client cert':12} {'TLS':7} {'mode':6} {'per s':>7} {'server CPU/handshake':>22}")
    for r in rows:
        print(
            f"{r['client_cert']!s:12} {r['version']!s:7} {r['mode']!s:6} "
            f"{r['per_second']!s:>7} {r['server_cpu_us_each']!s:>19} us"
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()

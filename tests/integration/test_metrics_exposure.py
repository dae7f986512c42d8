"""/metrics exposure (issue 13, finding 14): no token beyond loopback is refused, and one
address holding idle connections cannot starve the scrapes of others."""

from __future__ import annotations

import http.client
import socket
import ssl
import subprocess
from pathlib import Path

import pytest
import tomlkit

from tests.peers.proc import free_port, wait_for
from tests.peers.voipsec import VOIPSEC, VoipsecServer, prepare, serving, voipsec
from voipsec.monitor.metrics import MAX_CONNECTIONS

pytestmark = pytest.mark.peers

IDLER = "127.0.0.8"


def _scrape(server: VoipsecServer, port: int) -> int:
    context = ssl.create_default_context(cafile=str(server.ca))
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=10)
    try:
        conn.request("GET", "/metrics")
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def test_metrics_idle_connections_from_one_source_do_not_starve_scrapes(tmp_path: Path) -> None:
    port = free_port()
    prepared = prepare(tmp_path / "data", settings=[("metrics.listen", f'"127.0.0.1:{port}"')])
    with serving(prepared) as server:
        wait_for(lambda: _scrape(server, port) == 200, deadline=10, what="the metrics port")
        context = ssl.create_default_context(cafile=str(server.ca))
        idle: list[socket.socket] = []
        try:
            for _ in range(MAX_CONNECTIONS + 8):  # 40: more than every slot there is
                raw = socket.create_connection(
                    ("127.0.0.1", port), timeout=10, source_address=(IDLER, 0)
                )
                try:
                    idle.append(context.wrap_socket(raw, server_hostname="127.0.0.1"))
                except (ConnectionError, ssl.SSLError):
                    raw.close()  # closed by the server: that source has enough
            assert _scrape(server, port) == 200
        finally:
            for sock in idle:
                sock.close()


def test_metrics_beyond_loopback_without_token_is_refused(tmp_path: Path) -> None:
    prepared = prepare(tmp_path / "data")
    refused = voipsec(
        "config", "set", "metrics.listen", '"0.0.0.0:9443"', data_dir=prepared.data_dir, check=False
    )
    assert refused.returncode == 1
    assert "metrics.listen 0.0.0.0:9443 is not loopback: set metrics.token" in refused.stderr
    # Written by hand, the file stops `serve` with one line (it never listens).
    path = prepared.data_dir / "voipsec.toml"
    document = tomlkit.parse(path.read_text())
    document["metrics"]["listen"] = "0.0.0.0:9443"  # type: ignore[index]
    path.write_text(tomlkit.dumps(document))
    proc = subprocess.run(
        [*VOIPSEC, "serve", "--dir", str(prepared.data_dir)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 1
    assert proc.stderr == (
        f"voipsec: config error: {path}: metrics.allow_no_token: metrics.listen 0.0.0.0:9443 "
        "is not loopback: set metrics.token (or metrics.allow_no_token = true)\n"
    )

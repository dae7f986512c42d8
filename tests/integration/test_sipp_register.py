"""SIPp registers many users over TLS (through a stunnel hop) with digest auth.

Debian's SIPp 3.6.1 has no TLS (stunnel carries its TCP over TLS) and computes only MD5
digests from the first challenge it sees, so these tests run voipsec in its legacy
`auth.algorithms = ["MD5"]` mode — and one test shows the SHA-256 default refusing it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.peers.proc import free_port
from tests.peers.sipp import run_sipp, write_users_csv
from tests.peers.stunnel import stunnel_client
from tests.peers.voipsec import VoipsecServer, prepare, serving, voipsec
from voipsec.storage import Store

pytestmark = pytest.mark.peers

BENCH = Path(__file__).resolve().parents[2] / "bench" / "sipp"
USERS = [(f"user{i:04d}", f"pw{i:04d}-test") for i in range(200)]
#: The wrong-password test's users on the shared ``md5_server`` (USERS register there).
REFUSED_USERS = [(f"refused{i:02d}", f"pw{i:02d}-refused") for i in range(20)]
MD5_ONLY = ("auth.algorithms", '["MD5"]')


def _server(tmp_path: Path, *settings: tuple[str, str]) -> VoipsecServer:
    prepared = prepare(tmp_path / "data", settings=list(settings))
    store = Store(prepared.data_dir / "voipsec.db")
    try:
        for name, password in [*USERS, *REFUSED_USERS]:
            store.add_user(name, password, "localhost")
    finally:
        store.close()
    return prepared


@pytest.fixture(scope="module")
def md5_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VoipsecServer]:
    """auth.algorithms ["MD5"]: shared by the two tests that use it, each with users of
    its own (USERS register, REFUSED_USERS give wrong passwords)."""
    with serving(_server(tmp_path_factory.mktemp("md5"), MD5_ONLY)) as server:
        yield server


def _register(
    server: VoipsecServer,
    tmp_path: Path,
    scenario: str,
    users: list[tuple[str, str]],
    rate: float = 200.0,
) -> tuple[int, int, int]:
    hop = free_port()
    csv = write_users_csv(tmp_path / f"{scenario}.csv", users, "localhost")
    with stunnel_client(hop, server.host, server.port, server.ca, tmp_path):
        result = run_sipp(
            BENCH / scenario,
            f"127.0.0.1:{hop}",
            workdir=tmp_path / f"sipp-{scenario}",
            inf_csv=csv,
            rate=rate,
            calls=len(users),
            transport="t1",
            extra=["-auth_uri", "localhost"],
            timeout=60,
        )
    return result.successful, result.failed, result.returncode


def test_sipp_registers_200_users_over_tls_with_digest(
    md5_server: VoipsecServer, tmp_path: Path
) -> None:
    server = md5_server
    successful, failed, code = _register(server, tmp_path, "register_digest.xml", USERS)
    assert (successful, failed, code) == (len(USERS), 0, 0)
    server.wait_bindings("user0000", 1)
    server.wait_bindings("user0199", 1)


def test_sipp_wrong_password_refused_and_nothing_bound(
    md5_server: VoipsecServer, tmp_path: Path
) -> None:
    server = md5_server
    wrong = [(name, "not-the-password") for name, _ in REFUSED_USERS]
    successful, failed, _ = _register(server, tmp_path, "register_wrong_password.xml", wrong)
    assert (successful, failed) == (20, 0)  # every REGISTER refused, as the scenario expects
    out = voipsec("user", "list", "--format", "json", data_dir=server.data_dir).stdout
    # None of this test's users is bound (the other test's USERS may be).
    rows = {row["user"]: row for row in json.loads(out)}
    assert [rows[name]["bindings"] for name, _ in REFUSED_USERS] == [[]] * len(REFUSED_USERS)
    assert "authentication failed for 'refused00' from 127.0.0.1: bad credentials" in (
        server.log_text()
    )


def test_sipp_md5_only_client_refused_by_sha256_default(tmp_path: Path) -> None:
    with serving(_server(tmp_path)) as server:
        successful, _, code = _register(server, tmp_path, "register_digest.xml", USERS[:5])
        assert successful == 0
        assert code != 0
        rows = voipsec("user", "list", "--format", "json", data_dir=server.data_dir).stdout
        assert '"contact"' not in rows

"""Bindings are stored in SQLite and survive a restart of `voipsec serve`."""

from __future__ import annotations

import os
import stat

import pytest

from tests.conftest import ALICE, BOB
from tests.peers.sipclient import TlsSipClient
from tests.peers.voipsec import VoipsecServer, serving

pytestmark = pytest.mark.peers


def test_bindings_survive_restart(server_dir: VoipsecServer) -> None:
    with serving(server_dir) as server:
        with TlsSipClient(server.host, server.port, server.ca) as client:
            assert client.register(*ALICE, expires=600).status == 200
        before = server.wait_bindings("alice", 1)
    # Stopped: the process is gone, the bindings are in the database.
    with serving(server_dir) as server:
        after = server.bindings("alice")
        assert [b["contact"] for b in after] == [b["contact"] for b in before]
        # The restarted registrar knows the binding too: a refresh from another
        # connection adds a second contact rather than starting from nothing.
        with TlsSipClient(server.host, server.port, server.ca) as client:
            response = client.register(*ALICE, expires=600)
        assert response.status == 200
        assert len(response.headers.values("contact")) == 2


def test_unregister_removes_stored_binding(shared_server: VoipsecServer) -> None:
    server = shared_server
    with TlsSipClient(server.host, server.port, server.ca) as client:
        assert client.register(*BOB, expires=600).status == 200
        server.wait_bindings("bob", 1)
        call_id = "unreg-" + os.urandom(4).hex()
        assert client.register(*BOB, expires=0, call_id=call_id).status == 200
    server.wait_bindings("bob", 0)


def test_database_and_keys_are_private(shared_server: VoipsecServer) -> None:
    server = shared_server
    for path in (
        server.data_dir / "voipsec.db",
        server.data_dir / "ca" / "ca.key",
        server.data_dir / "tls" / "server.key",
        server.data_dir / "demo-user.txt",
    ):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path

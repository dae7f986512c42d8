"""The server TLS context's policy knobs (voipsec.pki.tls)."""

from __future__ import annotations

from pathlib import Path

import pytest

from voipsec.config import MAX_SESSION_TICKETS
from voipsec.pki.ca import CaPaths, ServerPaths, create_ca, create_server_certificate
from voipsec.pki.tls import server_context


@pytest.fixture(scope="module")
def paths(tmp_path_factory: pytest.TempPathFactory) -> ServerPaths:
    data = tmp_path_factory.mktemp("pki")
    ca, server = CaPaths.in_dir(data), ServerPaths.in_dir(data)
    create_ca(ca, "test CA")
    create_server_certificate(ca, server, names=("localhost",), addresses=("127.0.0.1",))
    return server


def test_pki_tls_server_context_sends_no_tls13_tickets_by_default(paths: ServerPaths) -> None:
    ctx = server_context(cert=paths.cert, key=paths.key, client_ca=None)
    assert ctx.num_tickets == 0


@pytest.mark.parametrize("tickets", [0, 2, MAX_SESSION_TICKETS])
def test_pki_tls_server_context_session_tickets(paths: ServerPaths, tickets: int) -> None:
    ctx = server_context(cert=paths.cert, key=paths.key, client_ca=None, session_tickets=tickets)
    assert ctx.num_tickets == tickets


@pytest.mark.parametrize("tickets", [-1, MAX_SESSION_TICKETS + 1])
def test_pki_tls_server_context_session_tickets_out_of_range(
    paths: ServerPaths, tickets: int
) -> None:
    with pytest.raises(ValueError, match=f"session_tickets must be 0..{MAX_SESSION_TICKETS}, not"):
        server_context(
            cert=Path("unused.crt"), key=Path("unused.key"), client_ca=None, session_tickets=tickets
        )

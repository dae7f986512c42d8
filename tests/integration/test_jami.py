"""Jami 13.7 (``jamid``, PJSIP + GnuTLS) against ``voipsec serve`` (issue 16).

Jami registers over TLS 1.3 with an MD5 digest (it cannot do SHA-256), with the server's
defaults apart from ``auth.algorithms``. Two things broke it before issue 16: voipsec's
TLS 1.3 session tickets (PJSIP/GnuTLS lost the 401 that followed them) and its answer
``nc=00000002`` to a fresh challenge (taken as stale, forever).

jamid looks up names and probes the network by itself, so the whole test runs inside a
network namespace it creates, with loopback only (tests/peers/netns.py): voipsec, the
private D-Bus and jamid all live on that namespace's 127.0.0.1.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass

import pytest

from tests.conftest import ALICE, BOB
from tests.peers import netns
from tests.peers.jami import Jami, Registration, sip_account
from tests.peers.proc import free_port
from tests.peers.sipclient import TlsSipClient
from tests.peers.voipsec import VoipsecServer, prepare, serving
from voipsec.sip.digest import client_response, parse_challenge

pytestmark = pytest.mark.peers

DEADLINE = 20.0
#: The only setting Jami needs that is not a default: it answers MD5 digests only.
MD5_TOO = ("auth.algorithms", '["SHA-256", "MD5"]')
#: What TLS 1.3 negotiates with voipsec's policy (GnuTLS's name for the suite).
TLS13_SUITE = "TLS_AES_256_GCM_SHA384"
JAMI_AGENT = re.compile(r"^Jami Daemon 13\.7\.\d+ \(linux\)$")


@dataclass(frozen=True)
class Setup:
    server: VoipsecServer
    jami: Jami
    account: str


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    base = tmp_path_factory.mktemp("jami")
    with ExitStack() as stack:
        stack.enter_context(netns.entered("vsjami"))
        prepared = prepare(base / "data", users=[ALICE, BOB], settings=[MD5_TOO])
        server = stack.enter_context(serving(prepared))
        jami = stack.enter_context(Jami(base / "jami"))
        account = jami.add_account(
            sip_account(
                user=ALICE[0],
                password=ALICE[1],
                server=f"{server.host}:{server.port}",
                ca=server.ca,
                local_port=free_port(),
            )
        )
        yield Setup(server=server, jami=jami, account=account)


def _registered(setup: Setup) -> Registration:
    try:
        return setup.jami.wait_registration(setup.account, deadline=DEADLINE)
    except AssertionError as err:
        raise AssertionError(
            f"{err}\n--- voipsec ---\n{setup.server.log_text()[-3000:]}"
            f"\n--- jamid ---\n{setup.jami.log_text()[-3000:]}"
        ) from None


def test_jami_registers_over_tls13_with_md5_digest(setup: Setup) -> None:
    registration = _registered(setup)
    assert registration == Registration(status="REGISTERED", code="200", cipher=TLS13_SUITE)
    (binding,) = setup.server.wait_bindings(ALICE[0], 1, deadline=DEADLINE)
    assert JAMI_AGENT.match(str(binding["user_agent"])), binding
    assert str(binding["contact"]).startswith("sips:alice@127.0.0.1:"), binding


def test_jami_account_uses_tls_and_checks_the_server(setup: Setup) -> None:
    details = setup.jami.account_details(setup.account)
    assert (details["TLS.enable"], details["TLS.verifyServer"]) == ("true", "true")
    assert details["TLS.certificateListFile"] == str(setup.server.ca)


# -- the digest change Jami needed, attacked (RFC 7616 §3.4) ------------------------------


def _client(server: VoipsecServer) -> TlsSipClient:
    return TlsSipClient(server.host, server.port, server.ca)


def _md5_challenge(client: TlsSipClient) -> dict[str, str]:
    """The MD5 challenge voipsec answers an unauthenticated REGISTER with on ``client``."""
    challenge = client.request_register(BOB[0], "localhost", 0, "jami-nc", 1, None)
    assert challenge.status == 401, challenge
    offered = [parse_challenge(v) for v in challenge.headers.lines("www-authenticate")]
    return next(c for c in offered if c.get("algorithm") == "MD5")


def _answer(challenge: dict[str, str], nc: int) -> str:
    """Bob's valid MD5 answer to ``challenge`` with nonce-count ``nc``."""
    return client_response(
        username=BOB[0],
        password=BOB[1],
        realm=challenge["realm"],
        nonce=challenge["nonce"],
        method="REGISTER",
        uri="sip:localhost",
        algorithm="MD5",
        nc=nc,
        opaque=challenge.get("opaque"),
    )


def test_jami_style_first_count_two_accepted_and_its_replay_refused(setup: Setup) -> None:
    """A fresh nonce may start at nc=2 (as Jami does); the same header again, from
    another connection (possibly another signaling worker), or a valid answer with a
    count that does not grow, is a replay: 403. A growing count is fine."""
    server = setup.server

    def status(client: TlsSipClient, cseq: int, auth: str) -> int:
        # Expires: 0 binds nothing: only the digest decision is looked at.
        return client.request_register(BOB[0], "localhost", 0, "jami-nc", cseq, auth).status

    with _client(server) as first, _client(server) as second:
        challenge = _md5_challenge(first)
        two = _answer(challenge, 2)
        assert status(first, 2, two) == 200
        assert status(second, 3, two) == 403
        assert status(first, 4, _answer(challenge, 1)) == 403
        assert status(first, 5, _answer(challenge, 2)) == 403
        assert status(first, 6, _answer(challenge, 3)) == 200

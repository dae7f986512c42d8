"""SIP over secure WebSocket (RFC 7118) against a running ``voipsec serve``.

One server for the file, listening on TLS and on ``wss:``, its origin allow-list
naming two page origins. The WebSocket clients are real implementations: JsSIP (the
browser SIP stack, from npm) in Debian's headless Chromium, and the ``websockets``
library (handshake, masking, fragmentation and close are its own) with SIP written by
the test for what a browser never sends; baresip calls users registered over WSS.
"""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, TextMessage
from wsproto.events import Request as WsRequest

from tests.conftest import ALICE, BOB
from tests.peers.baresip import Baresip, account_line, free_sip_ports
from tests.peers.jssip import chromium, page_server
from tests.peers.metrics import scrape
from tests.peers.proc import free_port, wait_for
from tests.peers.voipsec import VoipsecServer, prepare, serving
from tests.peers.wsclient import CLIENT_HOST, WsSipClient, ws_connect
from voipsec.pki.ca import ServerPaths
from voipsec.sip import Request
from voipsec.sip.websocket import CLOSE_TOO_BIG, MAX_HANDSHAKE_BYTES, MAX_WS_MESSAGE

pytestmark = pytest.mark.peers

DEADLINE = 15.0
#: A page origin the server lets in (the JsSIP page's is the other).
PAGE_ORIGIN = "https://127.0.0.1:8443"
METRICS_TOKEN = "metrics-token-wss-51"
#: The user of the JsSIP phone, and one only the WebSocket registration test uses.
CAROL = ("carol", "carol-secret-333")
DAVE = ("dave", "dave-secret-4444")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VoipsecServer]:
    data = tmp_path_factory.mktemp("wss") / "data"
    tls_port, wss_port, page_port, metrics_port = (free_port() for _ in range(4))
    prepared = prepare(
        data,
        users=[ALICE, BOB, CAROL, DAVE],
        port=tls_port,
        settings=[
            ("sip.listen", f'["tls:127.0.0.1:{tls_port}", "wss:127.0.0.1:{wss_port}"]'),
            (
                "sip.websocket_origins",
                f'["{PAGE_ORIGIN}", "https://127.0.0.1:{page_port}"]',
            ),
            # baresip 1.0.0 (the caller) fails on any SHA-256 challenge and JsSIP answers
            # MD5 only: this server challenges with MD5 alone (docs/webrtc.md).
            ("auth.algorithms", '["MD5"]'),
            ("metrics.listen", f'"127.0.0.1:{metrics_port}"'),
            ("metrics.token", json.dumps(METRICS_TOKEN)),
        ],
    )
    with serving(prepared) as running:
        running.wss_port = wss_port  # type: ignore[attr-defined]
        running.page_port = page_port  # type: ignore[attr-defined]
        running.metrics_port = metrics_port  # type: ignore[attr-defined]
        yield running


def wss_port(server: VoipsecServer) -> int:
    port: int = server.wss_port  # type: ignore[attr-defined]
    return port


def caller_phone(server: VoipsecServer, workdir: Path) -> Baresip:
    sip_port, ctrl_port = free_sip_ports()
    return Baresip(
        workdir,
        account_line=account_line(
            *ALICE,
            server_port=server.port,
            extra="mediaenc=srtp-mand;answermode=manual;audio_codecs=PCMU",
        ),
        ca_file=server.ca,
        sip_port=sip_port,
        ctrl_port=ctrl_port,
    )


def test_websocket_jssip_in_chromium_registers_and_is_called(
    server: VoipsecServer, tmp_path: Path
) -> None:
    """JsSIP in headless Chromium, served from an allowed origin, registers carol over
    WSS with digest (MD5: all JsSIP answers); baresip's call to carol reaches the
    browser over its WebSocket and the browser's 486 comes back to baresip."""
    paths = ServerPaths.in_dir(server.data_dir)
    port = server.page_port  # type: ignore[attr-defined]
    query = urllib.parse.urlencode(
        {
            "wss": f"wss://localhost:{wss_port(server)}",
            "user": CAROL[0],
            "password": CAROL[1],
            "domain": "localhost",
        }
    )
    with (
        page_server(paths.cert, paths.key, port) as browser,
        chromium(f"https://127.0.0.1:{port}/?{query}", tmp_path / "chromium", paths.cert),
    ):
        assert browser.wait_event("registered") == "registered", browser.events()
        bindings = server.wait_bindings("carol", 1)
        assert str(bindings[0]["source"]).startswith("wss:127.0.0.1:"), bindings
        assert str(bindings[0]["contact"]).endswith(";transport=ws"), bindings
        with caller_phone(server, tmp_path / "alice") as caller:
            caller.wait_event("REGISTER_OK", deadline=DEADLINE)
            caller.send("dial", "sip:carol@localhost")
            assert browser.wait_event("invited") == "invited alice", browser.events()
            closed = caller.wait_event("CALL_CLOSED", deadline=DEADLINE)
            assert "486" in str(closed.get("param")), closed


def test_websocket_jssip_from_a_foreign_origin_is_refused(
    server: VoipsecServer, tmp_path: Path
) -> None:
    """The same JsSIP page served from an origin not in sip.websocket_origins: Chromium
    gets 403 for the WebSocket, JsSIP never registers, the refusal names the page."""
    paths = ServerPaths.in_dir(server.data_dir)
    port = free_port()
    query = urllib.parse.urlencode(
        {"wss": f"wss://localhost:{wss_port(server)}", "user": CAROL[0]}
        | {"password": CAROL[1], "domain": "localhost"}
    )
    with (
        page_server(paths.cert, paths.key, port) as browser,
        chromium(f"https://127.0.0.1:{port}/?{query}", tmp_path / "chromium", paths.cert),
    ):
        browser.wait_event("disconnected")
        wait_for(
            lambda: f"origin not allowed: 'https://127.0.0.1:{port}'" in server.log_text(),
            deadline=DEADLINE,
            what="the refusal logged",
        )
        assert not [e for e in browser.events() if e.startswith(("registered", "connected"))]


def test_websocket_register_with_digest_binds_the_connection(server: VoipsecServer) -> None:
    with WsSipClient(wss_port(server), server.ca, origin=PAGE_ORIGIN) as client:
        assert client.ws.subprotocol == "sip"
        assert client.register(*DAVE, algorithm="MD5").status == 200
        local = client.ws.socket.getsockname()
        # RFC 7118 §5: reachable only over this connection, which the binding names.
        bindings = server.wait_bindings("dave", 1)
        assert bindings[0]["source"] == f"wss:127.0.0.1:{local[1]}", bindings
        assert bindings[0]["contact"] == f"sip:dave@{CLIENT_HOST};transport=ws"


def test_websocket_contact_is_gone_with_its_connection(
    server: VoipsecServer, tmp_path: Path
) -> None:
    """RFC 7118 §5: a WebSocket contact is reachable over its connection only. bob
    registers over WSS and closes it; baresip's call to bob then gets 480, nothing is
    sent anywhere else."""
    with WsSipClient(wss_port(server), server.ca) as bob:
        assert bob.register(*BOB, algorithm="MD5").status == 200
        source = f"wss:127.0.0.1:{bob.ws.socket.getsockname()[1]}"
    with caller_phone(server, tmp_path) as caller:
        caller.wait_event("REGISTER_OK", deadline=DEADLINE)
        caller.send("dial", "sip:bob@localhost")
        closed = caller.wait_event("CALL_CLOSED", deadline=DEADLINE)
        assert "480" in str(closed.get("param")), closed
    assert source in {str(b["source"]) for b in server.bindings("bob")}


def test_websocket_crlf_keepalive_is_answered(server: VoipsecServer) -> None:
    """SIP.js's keep-alive over WebSocket: CRLFCRLF in a message, CRLF back."""
    with ws_connect(wss_port(server), server.ca) as ws:
        ws.send("\r\n\r\n")
        assert ws.recv(timeout=DEADLINE) == "\r\n"
        ws.ping(b"alive").wait(DEADLINE)  # RFC 6455 §5.5.2: the pong comes back


def test_websocket_wrong_password_is_refused(server: VoipsecServer) -> None:
    with WsSipClient(wss_port(server), server.ca) as client:
        assert client.register("bob", "not-bobs-password", algorithm="MD5").status == 403


def test_websocket_call_reaches_the_wss_user_over_its_connection(
    server: VoipsecServer, tmp_path: Path
) -> None:
    """baresip (TLS) calls bob, registered over WSS: the INVITE arrives on bob's
    WebSocket with voipsec's WSS Via and a ws Contact; bob's 486 reaches baresip."""
    caller = caller_phone(server, tmp_path)
    with WsSipClient(wss_port(server), server.ca) as bob, caller:
        assert bob.register(*BOB, algorithm="MD5").status == 200
        caller.wait_event("REGISTER_OK", deadline=DEADLINE)
        caller.send("dial", "sip:bob@localhost")
        invite = bob.receive_message()
        while not (isinstance(invite, Request) and invite.method == "INVITE"):
            invite = bob.receive_message()
        assert invite.headers.get("via", "").startswith(f"SIP/2.0/WSS 127.0.0.1:{wss_port(server)}")
        assert ";transport=ws>" in (invite.headers.get("contact") or ""), invite
        bob.send(_answer(invite, 486, "Busy Here"))
        closed = caller.wait_event("CALL_CLOSED", deadline=DEADLINE)
        assert "486" in str(closed.get("param")), closed


def test_websocket_foreign_origin_is_refused(server: VoipsecServer) -> None:
    """Cross-site WebSocket hijacking: a page of another site gets 403, no upgrade;
    logged and counted in /metrics (sip_websocket_refused)."""
    assert _refused(server, origin="https://evil.example") == 403
    wait_for(
        lambda: (
            "handshake refused: origin not allowed: 'https://evil.example'" in server.log_text()
        ),
        deadline=DEADLINE,
        what="the refusal logged",
    )
    _counted(server, "voipsec_sip_websocket_refused", "handshake refused: ")


def test_websocket_without_sip_subprotocol_is_refused(server: VoipsecServer) -> None:
    assert _refused(server, origin=PAGE_ORIGIN, subprotocols=()) == 400
    wait_for(
        lambda: "handshake refused: no sip subprotocol" in server.log_text(),
        deadline=DEADLINE,
        what="the refusal logged",
    )


def test_websocket_oversized_message_closes_the_connection(server: VoipsecServer) -> None:
    """One byte over MAX_WS_MESSAGE, sent in fragments: closed with 1009, logged and
    counted in /metrics (sip_websocket_broken)."""
    half = MAX_WS_MESSAGE // 2 + 1
    with ws_connect(wss_port(server), server.ca) as ws, pytest.raises(ConnectionClosed) as closed:
        ws.send(iter(["R" * half, "R" * half]))
        ws.recv(timeout=DEADLINE)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == CLOSE_TOO_BIG
    wait_for(
        lambda: "closed: message too big" in server.log_text(),
        deadline=DEADLINE,
        what="the close logged",
    )
    _counted(server, "voipsec_sip_websocket_broken", "closed: ")


def test_websocket_oversized_handshake_is_refused(server: VoipsecServer) -> None:
    assert _refused(server, headers={"X-Padding": "p" * MAX_HANDSHAKE_BYTES}) == 431


def test_websocket_plain_tls_without_upgrade_is_closed(server: VoipsecServer) -> None:
    """SIP bytes straight over TLS to the WSS port: an HTTP 400, then closed."""
    ctx = ssl.create_default_context(cafile=str(server.ca))
    raw = socket.create_connection(("127.0.0.1", wss_port(server)), timeout=DEADLINE)
    with ctx.wrap_socket(raw, server_hostname="localhost") as sock:
        sock.sendall(b"OPTIONS sip:localhost SIP/2.0\r\n\r\n")
        answer = b""
        while chunk := sock.recv(4096):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 400 "), answer


def _counted(server: VoipsecServer, gauge: str, logged: str) -> None:
    """/metrics ``gauge`` comes to the number of "websocket from ... <logged>" lines in
    the log (the gauges are published every second, summed over the workers)."""
    port: int = server.metrics_port  # type: ignore[attr-defined]

    def agree() -> bool:
        lines = [x for x in server.log_text().splitlines() if "websocket from" in x]
        count = sum(logged in x for x in lines)
        return count > 0 and scrape(port, server.ca, METRICS_TOKEN)[(gauge, ())] == count

    wait_for(agree, deadline=DEADLINE, what=f"{gauge} to count every {logged!r}")


def _refused(server: VoipsecServer, **options: Any) -> int:
    """The HTTP status of a handshake the server refuses."""
    with (
        pytest.raises(InvalidStatus) as refused,
        ws_connect(wss_port(server), server.ca, **options),
    ):
        pass
    status: int = refused.value.response.status_code
    return status


def _answer(request: Request, status: int, reason: str) -> bytes:
    h = request.headers
    to = h.get("to") or ""
    lines = [
        f"SIP/2.0 {status} {reason}",
        *(f"Via: {v}" for v in h.values("via")),
        f"From: {h.get('from')}",
        f"To: {to};tag=wsbob" if ";tag=" not in to else f"To: {to}",
        f"Call-ID: {h.get('call-id')}",
        f"CSeq: {h.get('cseq')}",
        "Content-Length: 0",
        "",
        "",
    ]
    return "\r\n".join(lines).encode()


def test_websocket_connections_meet_the_tls_limits(tmp_path: Path) -> None:
    """Per-source limit, handshake and message time limits of TLS hold for WSS: a third
    WebSocket from one address is closed before its handshake, a TLS connection that
    never sends its Upgrade is dropped after tls.handshake_timeout, and a message left
    in fragments is cut off after tls.message_timeout (slowloris)."""
    tls_port, port = free_port(), free_port()
    limited = prepare(
        tmp_path / "data",
        port=tls_port,
        settings=[
            ("sip.listen", f'["tls:127.0.0.1:{tls_port}", "wss:127.0.0.1:{port}"]'),
            ("tls.max_connections_per_ip", "2"),
            ("tls.handshake_timeout", "1.0"),
            ("tls.message_timeout", "1.0"),
        ],
    )
    with serving(limited) as running:
        with ws_connect(port, running.ca), ws_connect(port, running.ca):
            with pytest.raises((OSError, ssl.SSLError)), ws_connect(port, running.ca):
                pass
            wait_for(
                lambda: "refused connection from 127.0.0.1" in running.log_text(),
                deadline=DEADLINE,
                what="the refusal logged",
            )
        ctx = ssl.create_default_context(cafile=str(running.ca))
        raw = socket.create_connection(("127.0.0.1", port), timeout=DEADLINE)
        with ctx.wrap_socket(raw, server_hostname="localhost") as silent:
            assert silent.recv(10) == b""  # dropped by the server, no Upgrade in time
        wait_for(
            lambda: "no upgrade in time" in running.log_text(),
            deadline=DEADLINE,
            what="the timeout logged",
        )
        with _upgraded_raw(port, running.ca) as (sock, client):
            sock.sendall(client.send(TextMessage(data="REGISTER", message_finished=False)))
            assert sock.recv(10) == b""  # aborted: the message never completed
        wait_for(
            lambda: "message incomplete too long" in running.log_text(),
            deadline=DEADLINE,
            what="the slow message logged",
        )


@contextlib.contextmanager
def _upgraded_raw(port: int, ca: Path) -> Iterator[tuple[ssl.SSLSocket, WSConnection]]:
    """A WebSocket driven frame by frame (wsproto's client) over a TLS socket."""
    ctx = ssl.create_default_context(cafile=str(ca))
    raw = socket.create_connection(("127.0.0.1", port), timeout=DEADLINE)
    with ctx.wrap_socket(raw, server_hostname="localhost") as sock:
        client = WSConnection(ConnectionType.CLIENT)
        sock.sendall(client.send(WsRequest(host="localhost", target="/", subprotocols=["sip"])))
        while not any(isinstance(e, AcceptConnection) for e in client.events()):
            client.receive_data(sock.recv(4096))
        yield sock, client

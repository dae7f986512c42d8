"""The sans-IO SIP WebSocket session (RFC 7118 over RFC 6455), driven by wsproto's
own client so every frame is a real, masked client frame."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    Pong,
    Request,
    TextMessage,
)

from voipsec.config import ConfigError, load, parse_listen
from voipsec.config.checks import check_origin
from voipsec.sip.websocket import (
    CLOSE_TOO_BIG,
    MAX_HANDSHAKE_BYTES,
    MAX_LOGGED_ORIGIN,
    MAX_WS_MESSAGE,
    WebSocketOutcome,
    WebSocketSession,
    origin_allowed,
)

PAGE = "https://phone.example.com"
ORIGINS = frozenset({PAGE})
REGISTER = "REGISTER sip:localhost SIP/2.0\r\nContent-Length: 0\r\n\r\n"


def handshake(
    *, origin: str | None = PAGE, subprotocols: tuple[str, ...] = ("sip",), extra: int = 0
) -> tuple[WSConnection, bytes]:
    client = WSConnection(ConnectionType.CLIENT)
    headers = [(b"origin", origin.encode())] if origin is not None else []
    if extra:
        headers.append((b"x-padding", b"p" * extra))
    data = client.send(
        Request(
            host="localhost", target="/", subprotocols=list(subprotocols), extra_headers=headers
        )
    )
    return client, data


def upgraded() -> tuple[WSConnection, WebSocketSession]:
    client, data = handshake()
    session = WebSocketSession(origins=ORIGINS)
    outcome = session.receive(data)
    client.receive_data(outcome.send)
    assert isinstance(next(client.events()), AcceptConnection)
    return client, session


def test_websocket_origin_allowed_exact_and_case_insensitive() -> None:
    assert origin_allowed(PAGE, ORIGINS)
    assert origin_allowed("HTTPS://Phone.Example.com", ORIGINS)
    assert not origin_allowed("https://phone.example.com:8443", ORIGINS)
    assert not origin_allowed("http://phone.example.com", ORIGINS)
    assert not origin_allowed("null", ORIGINS)
    assert not origin_allowed(PAGE, frozenset())


def test_websocket_origin_absent_is_not_a_browser() -> None:
    assert origin_allowed(None, frozenset())


def test_websocket_handshake_accepted_with_sip_subprotocol() -> None:
    client, data = handshake()
    session = WebSocketSession(origins=ORIGINS)
    outcome = session.receive(data)
    assert outcome.send.startswith(b"HTTP/1.1 101 ")
    assert not outcome.close and session.upgraded
    client.receive_data(outcome.send)
    assert next(client.events()) == AcceptConnection(subprotocol="sip")


def test_websocket_handshake_foreign_origin_gets_403() -> None:
    _, data = handshake(origin="https://evil.example")
    session = WebSocketSession(origins=ORIGINS)
    outcome = session.receive(data)
    assert outcome.send.startswith(b"HTTP/1.1 403 Forbidden\r\n")
    assert outcome.close and outcome.refused == "origin not allowed: 'https://evil.example'"
    assert not session.upgraded


def test_websocket_handshake_default_refuses_every_browser() -> None:
    _, data = handshake()
    outcome = WebSocketSession(origins=frozenset()).receive(data)
    assert outcome.refused == f"origin not allowed: {PAGE!r}"


def test_websocket_handshake_two_origins_refused() -> None:
    client = WSConnection(ConnectionType.CLIENT)
    data = client.send(
        Request(
            host="localhost",
            target="/",
            subprotocols=["sip"],
            extra_headers=[(b"origin", PAGE.encode()), (b"origin", b"https://evil.example")],
        )
    )
    outcome = WebSocketSession(origins=ORIGINS).receive(data)
    assert outcome.refused == "more than one Origin"


def test_websocket_handshake_without_sip_subprotocol_gets_400() -> None:
    _, data = handshake(subprotocols=("chat",))
    outcome = WebSocketSession(origins=ORIGINS).receive(data)
    assert outcome.send.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert outcome.refused == "no sip subprotocol"


def test_websocket_handshake_limit_exceeded_gets_431() -> None:
    _, data = handshake(extra=MAX_HANDSHAKE_BYTES)
    outcome = WebSocketSession(origins=ORIGINS).receive(data)
    assert outcome.send.startswith(b"HTTP/1.1 431 ")
    assert outcome.refused == "handshake too large"


def test_websocket_handshake_limit_counts_a_slow_sender() -> None:
    session = WebSocketSession(origins=ORIGINS)
    assert session.receive(b"GET / HTTP/1.1\r\n") == WebSocketOutcome()
    outcome = session.receive(b"X-A: " + b"a" * MAX_HANDSHAKE_BYTES)
    assert outcome.refused == "handshake too large"


def test_websocket_handshake_not_http_gets_400() -> None:
    outcome = WebSocketSession(origins=ORIGINS).receive(b"OPTIONS sip:x SIP/2.0\r\n\r\n")
    assert outcome.send.startswith(b"HTTP/1.1 400 ")
    assert outcome.close and outcome.refused == "malformed handshake"


def test_websocket_text_and_binary_frames_are_one_message_each() -> None:
    client, session = upgraded()
    data = client.send(TextMessage(data=REGISTER)) + client.send(BytesMessage(data=b"OPTIONS"))
    outcome = session.receive(data)
    assert outcome.messages == (REGISTER.encode(), b"OPTIONS")
    assert not outcome.close


def test_websocket_fragments_reassembled() -> None:
    client, session = upgraded()
    first = session.receive(client.send(TextMessage(data=REGISTER[:10], message_finished=False)))
    assert first.messages == () and session.buffered
    second = session.receive(client.send(TextMessage(data=REGISTER[10:])))
    assert second.messages == (REGISTER.encode(),) and not session.buffered


def test_websocket_message_at_the_limit_passes() -> None:
    client, session = upgraded()
    outcome = session.receive(client.send(BytesMessage(data=b"x" * MAX_WS_MESSAGE)))
    assert outcome.messages == (b"x" * MAX_WS_MESSAGE,) and not outcome.close


def test_websocket_message_over_the_limit_in_fragments_closes_1009() -> None:
    client, session = upgraded()
    half = MAX_WS_MESSAGE // 2 + 1
    session.receive(client.send(TextMessage(data="x" * half, message_finished=False)))
    outcome = session.receive(client.send(TextMessage(data="x" * half)))
    assert outcome.close and outcome.error == "message too big" and outcome.messages == ()
    client.receive_data(outcome.send)
    closing = next(client.events())
    assert isinstance(closing, CloseConnection) and closing.code == CLOSE_TOO_BIG


def test_websocket_ping_answered_with_pong() -> None:
    client, session = upgraded()
    outcome = session.receive(client.send(Ping(payload=b"hi")))
    client.receive_data(outcome.send)
    assert next(client.events()) == Pong(payload=b"hi")


def test_websocket_close_answered_and_ends_cleanly() -> None:
    client, session = upgraded()
    outcome = session.receive(client.send(CloseConnection(code=1000)))
    assert outcome.close and outcome.error is None and outcome.refused is None
    client.receive_data(outcome.send)
    assert isinstance(next(client.events()), CloseConnection)
    assert session.receive(b"more").close


def test_websocket_unmasked_client_frame_is_a_protocol_error() -> None:
    _, session = upgraded()
    outcome = session.receive(b"\x81\x03abc")  # RFC 6455 §5.1: clients MUST mask
    assert outcome.close and outcome.error is not None


def test_websocket_frame_is_one_text_frame_and_nothing_before_upgrade() -> None:
    client, session = upgraded()
    client.receive_data(session.frame(b"SIP/2.0 200 OK\r\n\r\n"))
    assert next(client.events()) == TextMessage(data="SIP/2.0 200 OK\r\n\r\n")
    assert WebSocketSession(origins=ORIGINS).frame(b"x") == b""


def test_websocket_frame_not_utf8_goes_binary_unaltered() -> None:
    client, session = upgraded()
    message = b"MESSAGE sip:a@b SIP/2.0\r\nContent-Length: 2\r\n\r\n\xff\xfe"
    client.receive_data(session.frame(message))
    assert next(client.events()) == BytesMessage(data=message)


def test_websocket_close_frame_once() -> None:
    client, session = upgraded()
    client.receive_data(session.close_frame())
    assert next(client.events()) == CloseConnection(code=1000, reason="")
    assert session.close_frame() == b"" and session.frame(b"x") == b""


def test_websocket_refusal_has_no_body_and_closes() -> None:
    _, data = handshake(origin="https://evil.example")
    outcome = WebSocketSession(origins=ORIGINS).receive(data)
    assert outcome.send == (
        b"HTTP/1.1 403 Forbidden\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    )


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=2048))
def test_websocket_random_bytes_never_escape(data: bytes) -> None:
    session = WebSocketSession(origins=ORIGINS)
    session.receive(data)
    _, upgraded_session = upgraded()
    for i in range(0, len(data), 7):
        upgraded_session.receive(data[i : i + 7])


def test_websocket_listen_entry_parses() -> None:
    listen = parse_listen("wss:127.0.0.1:8443")
    assert (listen.transport, listen.host, listen.port) == ("wss", "127.0.0.1", 8443)
    with pytest.raises(ValueError, match="client_cert applies to tls listeners only"):
        parse_listen("wss:127.0.0.1:8443;client_cert=required")


def test_websocket_origin_setting_validated() -> None:
    assert check_origin("HTTPS://Phone.Example.com:8443") == "https://phone.example.com:8443"
    for bad in ("phone.example.com", "https://phone.example.com/", "https://*.example.com"):
        with pytest.raises(ValueError, match="is not an origin like"):
            check_origin(bad)


def test_websocket_origins_setting_bad_entry_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "voipsec.toml"
    path.write_text('[sip]\nwebsocket_origins = ["https://ok.example", "evil"]\n')
    with pytest.raises(ConfigError) as info:
        load(path)
    assert info.value.problems == [
        f"{path}: sip.websocket_origins.1: 'evil' is not an origin like "
        "https://example.com or https://host:8443"
    ]


def test_websocket_origins_setting_default_empty_and_lower_cased(tmp_path: Path) -> None:
    path = tmp_path / "voipsec.toml"
    path.write_text('[sip]\nwebsocket_origins = ["HTTPS://Phone.Example.com"]\n')
    assert load(path).sip.websocket_origins == ["https://phone.example.com"]
    path.write_text("")
    assert load(path).sip.websocket_origins == []


def test_websocket_refused_origin_logged_cut_and_escaped() -> None:
    origin = "https://" + "a" * 200 + "\x1b[31m"
    _, data = handshake(origin=origin)
    outcome = WebSocketSession(origins=ORIGINS).receive(data)
    assert outcome.refused == f"origin not allowed: {origin[:MAX_LOGGED_ORIGIN]!r}"


def test_websocket_zones_hear_wss_by_default(tmp_path: Path) -> None:
    path = tmp_path / "voipsec.toml"
    path.write_text('[[zones]]\nname = "office"\ncidrs = ["10.0.0.0/8"]\n')
    assert "wss" in load(path).zones[0].transports

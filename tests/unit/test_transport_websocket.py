"""The WSS shell's part in the IDS (voipsec.transport.websocket with the real SIP
service and the shipped rules): what a web page can make its visitors' browsers do
must not get their address banned."""

from __future__ import annotations

import asyncio
from pathlib import Path

from voipsec.config import Config
from voipsec.edge.ids_loader import default_rules_path, load_rules
from voipsec.server import build_sip_service
from voipsec.storage import Store
from voipsec.transport.connections import ConnectionLimits, ConnectionTable
from voipsec.transport.websocket import WebSocketCounts, WebSocketProtocol

#: A visitor's (shared NAT) address, in the default "internet" zone.
VISITOR = "203.0.113.7"
ALLOWED = "https://phone.example.test"
#: More refusals than the shipped malformed-burst rule allows (11 in 10 s).
REFUSALS = 30


class _Transport:
    """What WebSocketProtocol asks of its asyncio transport."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.out: list[bytes] = []
        self.closed = False

    def get_extra_info(self, key: str, default: object = None) -> object:
        extra = {"peername": (VISITOR, self.port), "sockname": ("198.51.100.1", 8443)}
        return extra.get(key, default)

    def set_write_buffer_limits(self, high: int) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0

    def is_closing(self) -> bool:
        return self.closed

    def write(self, data: bytes) -> None:
        self.out.append(data)

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True


def _handshake(origin: str, protocol: str = "sip") -> bytes:
    return (
        "GET / HTTP/1.1\r\nHost: sip.example.test\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        f"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: {protocol}\r\n"
        f"Origin: {origin}\r\n\r\n"
    ).encode()


def test_transport_websocket_refused_handshakes_from_web_pages_ban_nobody(
    tmp_path: Path,
) -> None:
    """Attack: a page on evil.example opens many WebSockets to voipsec from every
    visitor's browser (a foreign Origin, or no "sip" subprotocol). Each is refused
    and counted, but none is malformed SIP for the IDS: the visitors' NAT address
    stays unbanned for their phones' TLS."""

    async def attack() -> None:
        config = Config.model_validate(
            {"sip": {"domain": "example.test", "websocket_origins": [ALLOWED]}}
        )
        service, _ = build_sip_service(
            config=config,
            store=Store(tmp_path / "voipsec.db"),
            ids_rules=load_rules([default_rules_path()]),
        )
        table = ConnectionTable(ConnectionLimits(max_per_ip=256, max_total=1000, idle_timeout=900))
        counts = WebSocketCounts()
        answers: list[bytes] = []
        for n in range(REFUSALS):
            flow = WebSocketProtocol(
                service,
                table,
                None,
                origins=frozenset({ALLOWED}),
                upgrade_timeout=10,
                counts=counts,
            )
            transport = _Transport(40000 + n)
            flow.connection_made(transport)  # type: ignore[arg-type]
            page = _handshake("https://evil.example") if n % 2 else _handshake(ALLOWED, "chat")
            flow.data_received(page)
            answers.append(b"".join(transport.out).split(b"\r\n", 1)[0])
            assert transport.closed
        assert answers.count(b"HTTP/1.1 403 Forbidden") == REFUSALS // 2
        assert answers.count(b"HTTP/1.1 400 Bad Request") == REFUSALS // 2
        assert counts.refused == REFUSALS
        assert service.guard.bans() == []
        assert not service.guard.is_banned(VISITOR, service.clock(), "tls")

    asyncio.run(attack())

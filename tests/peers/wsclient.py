"""A blocking SIP-over-secure-WebSocket client (RFC 7118) on the ``websockets`` library.

A real WebSocket implementation (handshake, masking, fragmentation, ping/pong and close
are the library's, not ours) that sends SIP we write by hand: what a test needs to
register with digest, to be called over its connection, and to send what a browser
never would (a foreign Origin, no subprotocol, an oversized message).
"""

from __future__ import annotations

import secrets
import ssl
from contextlib import ExitStack
from pathlib import Path

from websockets.sync.client import ClientConnection, connect
from websockets.typing import Origin, Subprotocol

from voipsec.sip import Request, Response, parse_message
from voipsec.sip.digest import client_response, parse_challenge

#: Where a WebSocket SIP client says it is (RFC 7118 §5: a made-up .invalid host).
CLIENT_HOST = "df7jal23ls0d.invalid"


def ws_connect(
    port: int,
    ca: Path,
    *,
    origin: str | None = None,
    subprotocols: tuple[str, ...] = ("sip",),
    timeout: float = 10.0,
    headers: dict[str, str] | None = None,
) -> ClientConnection:
    """Open wss://127.0.0.1:port/ trusting voipsec's CA (the server name is localhost);
    use it as a context manager (it closes the WebSocket)."""
    ctx = ssl.create_default_context(cafile=str(ca))
    return connect(
        f"wss://127.0.0.1:{port}/",
        ssl=ctx,
        server_hostname="localhost",
        origin=Origin(origin) if origin is not None else None,
        subprotocols=[Subprotocol(p) for p in subprotocols] or None,
        additional_headers=headers,
        compression=None,
        proxy=None,
        open_timeout=timeout,
        ping_interval=None,
        max_size=None,
    )


class WsSipClient:
    """One SIP WebSocket; messages go out as text frames, one per message."""

    def __init__(self, port: int, ca: Path, *, origin: str | None = None) -> None:
        self._stack = ExitStack()
        self.ws = self._stack.enter_context(ws_connect(port, ca, origin=origin))
        self.timeout = 10.0

    def close(self) -> None:
        self._stack.close()

    def __enter__(self) -> WsSipClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, data: bytes) -> None:
        self.ws.send(data.decode())

    def receive_message(self) -> Request | Response:
        frame = self.ws.recv(timeout=self.timeout)
        data = frame.encode() if isinstance(frame, str) else frame
        return parse_message(data, datagram=False)

    def receive(self) -> Response:
        message = self.receive_message()
        if not isinstance(message, Response):
            raise AssertionError(f"expected a response, got {message!r}")
        return message

    def register(
        self, user: str, password: str, *, domain: str = "localhost", algorithm: str = "SHA-256"
    ) -> Response:
        """REGISTER as a browser would (Contact on a .invalid host, transport=ws) and
        answer the digest challenge; returns the final response."""
        call_id = secrets.token_hex(8)
        first = self.request_register(user, domain, call_id, 1, None)
        if first.status != 401:
            return first
        challenges = [parse_challenge(v) for v in first.headers.lines("www-authenticate")]
        chosen = next(c for c in challenges if c.get("algorithm", "MD5") == algorithm)
        auth = client_response(
            username=user,
            password=password,
            realm=chosen["realm"],
            nonce=chosen["nonce"],
            method="REGISTER",
            uri=f"sip:{domain}",
            algorithm=algorithm,
            opaque=chosen.get("opaque"),
        )
        return self.request_register(user, domain, call_id, 2, auth)

    def request_register(
        self, user: str, domain: str, call_id: str, cseq: int, auth: str | None
    ) -> Response:
        lines = [
            f"REGISTER sip:{domain} SIP/2.0",
            f"Via: SIP/2.0/WSS {CLIENT_HOST};branch=z9hG4bK{secrets.token_hex(6)}",
            "Max-Forwards: 70",
            f"From: <sip:{user}@{domain}>;tag={secrets.token_hex(4)}",
            f"To: <sip:{user}@{domain}>",
            f"Call-ID: {call_id}",
            f"CSeq: {cseq} REGISTER",
            f"Contact: <sip:{user}@{CLIENT_HOST};transport=ws>",
            "Expires: 600",
        ]
        if auth is not None:
            lines.append(f"Authorization: {auth}")
        lines += ["Content-Length: 0", "", ""]
        self.send("\r\n".join(lines).encode())
        return self.receive()

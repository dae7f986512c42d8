"""A minimal blocking SIP-over-TLS client for tests that need byte-level control.

Used where no real peer can do the job: sending garbage, oversized and
byte-at-a-time input, or registering across a server restart. Registration
behaviour itself is proven with SIPp and baresip.
"""

from __future__ import annotations

import secrets
import socket
import ssl
from pathlib import Path

from voipsec.sip import Request, Response, StreamFramer, parse_message
from voipsec.sip.digest import client_response, parse_challenge
from voipsec.sip.framing import FramedMessage


class TlsSipClient:
    def __init__(
        self,
        host: str,
        port: int,
        ca: Path,
        *,
        timeout: float = 10.0,
        cert: Path | None = None,
        key: Path | None = None,
        source: str | None = None,
    ) -> None:
        """``source``: the local address to connect from (another 127.0.0.x)."""
        ctx = ssl.create_default_context(cafile=str(ca))
        if cert is not None:
            ctx.load_cert_chain(str(cert), str(key) if key else None)
        raw = socket.create_connection(
            (host, port), timeout=timeout, source_address=(source, 0) if source else None
        )
        self.sock = ctx.wrap_socket(raw, server_hostname="localhost")
        self.local = self.sock.getsockname()
        self._framer = StreamFramer()
        self._pending: list[bytes] = []

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> TlsSipClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def ping(self) -> bytes:
        """RFC 5626 keep-alive: send CRLFCRLF, return what came back (CRLF when alive)."""
        self.sock.sendall(b"\r\n\r\n")
        return self.sock.recv(2)

    def receive_message(self) -> Request | Response:
        """The next whole message from the server (raises on timeout or close)."""
        while not self._pending:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("server closed the connection")
            for item in self._framer.feed(chunk):
                if isinstance(item, FramedMessage):
                    self._pending.append(item.data)
        message = parse_message(self._pending.pop(0), datagram=False)
        assert isinstance(message, Request | Response)
        return message

    def receive(self) -> Response:
        """The next whole message, which must be a response."""
        message = self.receive_message()
        if not isinstance(message, Response):
            raise AssertionError(f"expected a response, got {message!r}")
        return message

    def register(
        self,
        user: str,
        password: str | None,
        *,
        domain: str = "localhost",
        expires: int = 600,
        call_id: str | None = None,
        algorithm: str = "SHA-256",
    ) -> Response:
        """REGISTER, answer the challenge with ``password``; returns the final response."""
        call_id = call_id or secrets.token_hex(8)
        first = self.request_register(user, domain, expires, call_id, 1, None)
        if first.status != 401 or password is None:
            return first
        challenges = [parse_challenge(v) for v in first.headers.lines("www-authenticate")]
        chosen = next(c for c in challenges if c.get("algorithm") == algorithm)
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
        return self.request_register(user, domain, expires, call_id, 2, auth)

    def request_register(
        self, user: str, domain: str, expires: int, call_id: str, cseq: int, auth: str | None
    ) -> Response:
        host, port = self.local[0], self.local[1]
        lines = [
            f"REGISTER sip:{domain} SIP/2.0",
            f"Via: SIP/2.0/TLS {host}:{port};branch=z9hG4bK{secrets.token_hex(6)};rport",
            "Max-Forwards: 70",
            f"From: <sip:{user}@{domain}>;tag={secrets.token_hex(4)}",
            f"To: <sip:{user}@{domain}>",
            f"Call-ID: {call_id}",
            f"CSeq: {cseq} REGISTER",
            f"Contact: <sip:{user}@{host}:{port};transport=tls>",
            f"Expires: {expires}",
        ]
        if auth is not None:
            lines.append(f"Authorization: {auth}")
        lines += ["Content-Length: 0", "", ""]
        self.send("\r\n".join(lines).encode())
        return self.receive()


def response_bytes(
    request: Request, status: int, reason: str, *, contact: str, body: bytes = b""
) -> bytes:
    """A phone's answer to ``request``: its Via/From/To/Call-ID/CSeq, a To tag if none."""
    h = request.headers
    to = h.get("to") or ""
    lines = [
        f"SIP/2.0 {status} {reason}",
        *(f"Via: {v}" for v in h.values("via")),
        f"From: {h.get('from')}",
        f"To: {to}" + ("" if "tag=" in to else ";tag=callee-tag"),
        f"Call-ID: {request.call_id}",
        f"CSeq: {h.get('cseq')}",
        f"Contact: {contact}",
    ]
    if body:
        lines.append("Content-Type: application/sdp")
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join([*lines, "", ""])).encode() + body

"""A scripted SIP phone on one TLS connection: exact bytes both ways, for call tests.

It registers, places authenticated calls (INVITE, 407, ACK, INVITE with credentials),
answers the requests voipsec sends it and reads every message as the bytes that
arrived (``raw``) or parsed. The tests that pin down what each call leg carries use it
where a real phone (SIPp, baresip) cannot be steered byte by byte.
"""

from __future__ import annotations

import secrets

from tests.peers.sipclient import TlsSipClient, response_bytes
from tests.peers.voipsec import VoipsecServer
from voipsec.sip import StreamFramer, parse_message
from voipsec.sip.digest import client_response, parse_challenge
from voipsec.sip.framing import FramedMessage
from voipsec.sip.message import Request, Response

#: The SDP offer of every scripted call: one SRTP audio stream.
SDP = (
    b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    b"m=audio 4000 RTP/SAVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
    b"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR\r\n"
)


class ScriptedPhone:
    """One user's phone on one TLS connection to ``server``."""

    def __init__(self, server: VoipsecServer, user: str, password: str) -> None:
        self.user = user
        self.password = password
        self.client = TlsSipClient(server.host, server.port, server.ca)
        self.host, self.port = self.client.local[0], self.client.local[1]
        self._framer = StreamFramer()
        self._queue: list[bytes] = []

    def close(self) -> None:
        self.client.close()

    def register(self) -> None:
        assert self.client.register(self.user, self.password, algorithm="SHA-256").status == 200

    def raw(self) -> bytes:
        """The next whole message exactly as it arrived."""
        while not self._queue:
            chunk = self.client.sock.recv(65536)
            if not chunk:
                raise ConnectionError("server closed the connection")
            for item in self._framer.feed(chunk):
                if isinstance(item, FramedMessage):
                    self._queue.append(item.data)
        return self._queue.pop(0)

    def next(self) -> Request | Response:
        message = parse_message(self.raw(), datagram=False)
        assert isinstance(message, Request | Response), message
        return message

    def response(self) -> Response:
        message = self.next()
        assert isinstance(message, Response), message
        return message

    def request(self) -> Request:
        message = self.next()
        assert isinstance(message, Request), message
        return message

    def invite(
        self,
        target: str,
        call_id: str,
        *,
        from_: str | None = None,
        contact: str | None = None,
        extra: tuple[str, ...] = (),
        ack_final: bool = False,
    ) -> Response:
        """INVITE, 407, ACK, INVITE with credentials; the first response after that
        (ACKed when it is a final one and ``ack_final``)."""
        self._send_invite(target, call_id, 1, None, from_, contact, extra)
        challenge = self.response()
        assert challenge.status == 407, challenge
        self.ack(challenge, target)
        params = parse_challenge(challenge.headers.get("proxy-authenticate") or "")
        auth = client_response(
            username=self.user,
            password=self.password,
            realm=params["realm"],
            nonce=params["nonce"],
            method="INVITE",
            uri=f"sip:{target}@localhost",
            opaque=params.get("opaque"),
        )
        self._send_invite(target, call_id, 2, auth, from_, contact, extra)
        answer = self.response()
        if ack_final and answer.status >= 300:
            self.ack(answer, target)
        return answer

    def _send_invite(
        self,
        target: str,
        call_id: str,
        cseq: int,
        auth: str | None,
        from_: str | None,
        contact: str | None,
        extra: tuple[str, ...],
    ) -> None:
        via = f"SIP/2.0/TLS {self.host}:{self.port};branch=z9hG4bK{secrets.token_hex(8)}"
        lines = [
            f"INVITE sip:{target}@localhost SIP/2.0",
            f"Via: {via};rport",
            "Max-Forwards: 70",
            f"From: {from_ or f'<sip:{self.user}@localhost>'};tag=caller-tag",
            f"To: <sip:{target}@localhost>",
            f"Call-ID: {call_id}",
            f"CSeq: {cseq} INVITE",
            f"Contact: {contact or f'<sip:{self.user}@{self.host}:{self.port};transport=tls>'}",
            "Content-Type: application/sdp",
            *extra,
        ]
        if auth:
            lines.append(f"Proxy-Authorization: {auth}")
        lines.append(f"Content-Length: {len(SDP)}")
        self.client.send(("\r\n".join([*lines, "", ""])).encode() + SDP)

    def ack(self, response: Response, target: str) -> None:
        """RFC 3261 §17.1.1.3: the ACK of a non-2xx final response, in its transaction."""
        self.send_raw(
            f"ACK sip:{target}@localhost SIP/2.0\r\n"
            f"Via: {response.headers.values('via')[0]}\r\nMax-Forwards: 70\r\n"
            f"From: {response.headers.get('from')}\r\nTo: {response.headers.get('to')}\r\n"
            f"Call-ID: {response.call_id}\r\nCSeq: {response.cseq.seq} ACK\r\n"
            "Content-Length: 0\r\n\r\n"
        )

    def answer(self, request: Request, status: int, reason: str, body: bytes = b"") -> None:
        contact = f"<sip:{self.user}@{self.host}:{self.port};transport=tls>"
        self.client.send(response_bytes(request, status, reason, contact=contact, body=body))

    def send_raw(self, text: str) -> None:
        self.client.send(text.encode())

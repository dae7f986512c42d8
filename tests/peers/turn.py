"""Run ``python -m voipsec.nat`` for tests and benches, and a small raw TURN client.

The raw client is built on voipsec's own codec and speaks UDP with a deadline per
request (and a bounded number of retransmissions), for the checks the real peers
cannot make: the exact error code of a refused CreatePermission, 401 on expired REST
credentials, 486 over quota.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from voipsec.nat import stun
from voipsec.nat.credentials import long_term_key
from voipsec.nat.stun import Attr, Message, MessageClass, Method

from .proc import free_port, running, wait_for

HOST = "127.0.0.1"
#: Seconds one request waits for its answer before it is sent again.
REQUEST_TIMEOUT = 1.0
#: Sends of one request (the first and the retransmissions) before giving up.
REQUEST_ATTEMPTS = 3


@dataclass
class TurnRunner:
    """A running ``python -m voipsec.nat`` and how to reach it."""

    data_dir: Path
    host: str
    port: int
    tls_port: int | None
    log: Path

    @property
    def secret(self) -> str:
        return (self.data_dir / "turn-secret").read_text().strip()

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def free_udp_tcp_port(host: str = HOST, attempts: int = 50) -> int:
    """A port free for both TCP and UDP on ``host`` right now."""
    for _ in range(attempts):
        port = free_port(host)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            try:
                probe.bind((host, port))
            except OSError:
                continue
            return port
    raise AssertionError("no port free for both TCP and UDP")


def binding(host: str, port: int, *, timeout: float = 0.3) -> tuple[str, int] | None:
    """The XOR-MAPPED-ADDRESS a STUN Binding request to host:port returns, or None."""
    request = Message(
        method=Method.BINDING, cls=MessageClass.REQUEST, transaction_id=os.urandom(12)
    )
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.sendto(stun.encode(request), (host, port))
            data, _ = sock.recvfrom(2048)
        except OSError:
            return None
    response = stun.parse_message(data)
    return response.xor_address() if response.cls == MessageClass.SUCCESS else None


@contextlib.contextmanager
def turn_running(
    data_dir: Path,
    *,
    allow_peers: Sequence[str] = (),
    extra: Sequence[str] = (),
    tls: bool = False,
    log_name: str = "turn.log",
) -> Iterator[TurnRunner]:
    """``python -m voipsec.nat`` on free UDP+TCP (and TLS) ports of 127.0.0.1."""
    port = free_udp_tcp_port()
    argv = [
        sys.executable,
        "-m",
        "voipsec.nat",
        "--dir",
        str(data_dir),
        "--listen",
        f"udp:{HOST}:{port}",
        "--listen",
        f"tcp:{HOST}:{port}",
    ]
    tls_port = None
    if tls:
        tls_port = free_port(HOST)
        argv += ["--listen", f"tls:{HOST}:{tls_port}"]
    for cidr in allow_peers:
        argv += ["--allow-peer", cidr]
    argv += list(extra)
    log = data_dir / log_name
    env = {"PYTHONUNBUFFERED": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    with running(argv, log=log, env=env) as proc:
        runner = TurnRunner(data_dir=data_dir, host=HOST, port=port, tls_port=tls_port, log=log)
        wait_for(
            lambda: proc.poll() is not None or binding(HOST, port) is not None,
            deadline=15,
            what="voipsec TURN to answer a Binding request",
        )
        if proc.poll() is not None:
            raise AssertionError(f"voipsec.nat exited: {runner.log_text()[-2000:]}")
        yield runner


class TurnClient:
    """A blocking UDP TURN client with long-term credentials (one 5-tuple)."""

    def __init__(
        self, server: tuple[str, int], username: str, password: str, *, bind: str = HOST
    ) -> None:
        """``bind``: the loopback address to send from (another source than 127.0.0.1)."""
        self.server = server
        self.username = username
        self.password = password
        self.realm: str | None = None
        self.nonce: str | None = None
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((bind, 0))
        self.sock.settimeout(REQUEST_TIMEOUT)

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> TurnClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _exchange(self, message: Message, key: bytes | None) -> Message:
        data = stun.encode(message, key=key, fingerprint=True)
        for _ in range(REQUEST_ATTEMPTS):
            self.sock.sendto(data, self.server)
            try:
                while True:
                    reply, _ = self.sock.recvfrom(65535)
                    if not stun.is_stun(reply):
                        continue
                    answer = stun.parse_message(reply)
                    if answer.transaction_id == message.transaction_id:
                        return answer
            except TimeoutError:
                continue
        raise AssertionError(f"no answer to {Method(message.method).name} from {self.server}")

    def request(
        self, method: int, attributes: Callable[[bytes], list[tuple[int, bytes]]]
    ) -> Message:
        """Send a request; answer a 401/438 challenge once with the credentials."""
        for _ in range(2):
            tid = os.urandom(12)
            attrs = attributes(tid)
            key = None
            if self.nonce is not None and self.realm is not None:
                attrs += [
                    (Attr.USERNAME, self.username.encode()),
                    (Attr.REALM, self.realm.encode()),
                    (Attr.NONCE, self.nonce.encode()),
                ]
                key = long_term_key(self.username, self.realm, self.password)
            message = Message(
                method=method,
                cls=MessageClass.REQUEST,
                transaction_id=tid,
                attributes=tuple(attrs),
            )
            answer = self._exchange(message, key)
            error = answer.error_code() if answer.cls == MessageClass.ERROR else None
            if error is None or error[0] not in (401, 438) or (key is not None and error[0] == 401):
                return answer
            self.nonce = answer.text(Attr.NONCE)
            self.realm = answer.text(Attr.REALM) or self.realm
        return answer

    def allocate(self) -> Message:
        return self.request(
            Method.ALLOCATE,
            lambda tid: [(Attr.REQUESTED_TRANSPORT, stun.encode_requested_transport())],
        )

    def create_permission(self, peer: tuple[str, int]) -> Message:
        return self.request(
            Method.CREATE_PERMISSION,
            lambda tid: [(Attr.XOR_PEER_ADDRESS, stun.encode_xor_address(peer, tid))],
        )


def error_code(message: Message) -> int | None:
    """The error code of a response, None for a success."""
    if message.cls != MessageClass.ERROR:
        return None
    error = message.error_code()
    return None if error is None else error[0]

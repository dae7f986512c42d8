"""The live probes' I/O: TLS handshakes and SIP over TLS, TCP and UDP (blocking sockets).

A one-shot command, so plain sockets with timeouts: every wait is bounded by the
probe's timeout, every loop by a count. The client never checks the server's
certificate (the audit reads it, :func:`peer_certificate`); it sends nothing secret a
man in the middle could reuse — digest responses only, for the test user's
credentials the admin gave. Decisions live in :mod:`.livechecks`.
"""

from __future__ import annotations

import contextlib
import ipaddress
import random
import select
import socket
import ssl
import time
import warnings
from dataclasses import dataclass, field

from OpenSSL import SSL

from ..sip import Request, Response, StreamFramer, parse_message
from ..sip.errors import FramingError, SipParseError
from ..sip.framing import FramedMessage
from ..sip.uac import LocalAddress, ack_for_failure
from .livechecks import weak_suites
from .liverequests import Party
from .options import ProbeOptions
from .targets import SipTarget

__all__ = [
    "MAX_ANSWER_BYTES",
    "MAX_MESSAGES",
    "MAX_REQUESTS",
    "PROBE_RATE",
    "ProbeBudgetExceeded",
    "ProbeRun",
    "SipStream",
    "peer_certificate",
    "renegotiation",
    "stream_exchange",
    "tls_version_accepted",
    "udp_exchange",
    "weak_suite_accepted",
]

#: Bytes read from one UDP answer or kept from one stream before giving up.
MAX_ANSWER_BYTES = 65_536
#: Messages read for one request (provisionals, retransmissions, in-between requests).
MAX_MESSAGES = 16

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    _OLD = (ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1)
_VERSIONS = {
    "TLS 1.0": _OLD[0],
    "TLS 1.1": _OLD[1],
    "TLS 1.2": ssl.TLSVersion.TLSv1_2,
    "TLS 1.3": ssl.TLSVersion.TLSv1_3,
}


def _client_context() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    # Debian's OpenSSL 3 refuses to offer TLS 1.0/1.1 and weak suites at the default
    # security level: level 0 lets the client offer what it must test.
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    return ctx


def _connect(host: str, port: int, timeout: float, source: str | None = None) -> socket.socket:
    return socket.create_connection(
        (host, port), timeout=timeout, source_address=(source, 0) if source else None
    )


def tls_version_accepted(
    host: str, port: int, version: str, timeout: float, *, source: str | None = None
) -> bool:
    """One handshake with min = max = ``version`` (one of livechecks.TLS_VERSIONS)."""
    ctx = _client_context()
    with warnings.catch_warnings():
        # Python deprecates naming TLS 1.0/1.1; offering them is what this probe is for.
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx.minimum_version = _VERSIONS[version]
        ctx.maximum_version = _VERSIONS[version]
    try:
        with _connect(host, port, timeout, source) as raw, ctx.wrap_socket(raw):
            return True
    except (ssl.SSLError, OSError):
        return False


def weak_suite_accepted(
    host: str, port: int, timeout: float, *, source: str | None = None
) -> str | None:
    """A TLS 1.2 handshake offering only weak suites: the suite taken, or None."""
    ctx = _client_context()
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers("ALL:COMPLEMENTOFALL:@SECLEVEL=0")
    names = weak_suites(ctx.get_ciphers())
    ctx.set_ciphers(":".join(names) + ":@SECLEVEL=0")
    with _connect(host, port, timeout, source) as raw:  # not reachable: an error, not a pass
        try:
            with ctx.wrap_socket(raw) as tls:
                chosen = tls.cipher()
                return chosen[0] if chosen else "?"
        except (ssl.SSLError, ConnectionResetError, BrokenPipeError):
            return None


def peer_certificate(
    host: str, port: int, timeout: float, *, source: str | None = None
) -> tuple[bytes | None, str | None]:
    """The leaf certificate (DER) the server presents, and TLS compression if any."""
    ctx = _client_context()
    with _connect(host, port, timeout, source) as raw, ctx.wrap_socket(raw) as tls:
        return tls.getpeercert(binary_form=True), tls.compression()


def _blocking(op: object, sock: socket.socket, deadline: float) -> object:
    """Run a pyOpenSSL call on a non-blocking socket until it completes or times out."""
    assert callable(op)
    while True:
        try:
            return op()
        except SSL.WantReadError:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("TLS handshake timed out") from None
            select.select([sock], [], [], left)
        except SSL.WantWriteError:
            select.select([], [sock], [], max(deadline - time.monotonic(), 0))


def renegotiation(host: str, port: int, timeout: float, *, source: str | None = None) -> bool:
    """RFC 5746 aside, does the server complete a renegotiation the client asks for?

    TLS 1.2 (1.3 has none), then ``renegotiate()`` and a second handshake: refused
    when the server sends an alert or closes, accepted when the handshake completes.
    """
    ctx = SSL.Context(SSL.TLS_CLIENT_METHOD)
    ctx.set_max_proto_version(SSL.TLS1_2_VERSION)
    ctx.set_cipher_list(b"DEFAULT:@SECLEVEL=0")
    deadline = time.monotonic() + timeout
    with _connect(host, port, timeout, source) as raw:
        raw.setblocking(False)
        conn = SSL.Connection(ctx, raw)
        conn.set_connect_state()
        try:
            _blocking(conn.do_handshake, raw, deadline)
        except SSL.Error as err:
            raise OSError(f"TLS 1.2 handshake failed: {err}") from None
        if not conn.renegotiate():
            return False
        try:
            _blocking(conn.do_handshake, raw, deadline)
        except (SSL.Error, OSError, TimeoutError):
            return False
        return not conn.renegotiate_pending()


def udp_exchange(
    host: str, port: int, data: bytes, timeout: float, *, source: str | None = None
) -> list[bytes]:
    """Send one datagram; every datagram answered within ``timeout`` (bounded)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    answers: list[bytes] = []
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        if source:
            sock.bind((source, 0))
        sock.connect((host, port))
        sock.send(data)
        deadline = time.monotonic() + timeout
        while len(answers) < MAX_MESSAGES:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            sock.settimeout(left)
            try:
                answers.append(sock.recv(MAX_ANSWER_BYTES))
            except (TimeoutError, ConnectionRefusedError):
                break
            # One final answer is enough; keep reading only after a provisional.
            if not answers[-1].startswith(b"SIP/2.0 1"):
                break
    return answers


def stream_exchange(
    host: str, port: int, data: bytes, timeout: float, *, source: str | None = None
) -> bytes:
    """Plain TCP: send ``data``, return the first whole SIP message (b"" when none)."""
    try:
        with _connect(host, port, timeout, source) as sock:
            sock.sendall(data)
            framer = StreamFramer()
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                sock.settimeout(max(deadline - time.monotonic(), 0.01))
                chunk = sock.recv(MAX_ANSWER_BYTES)
                if not chunk:
                    return b""
                for item in framer.feed(chunk):
                    if isinstance(item, FramedMessage):
                        return item.data
    except (OSError, FramingError):
        return b""
    return b""


class SipStream:
    """A SIP-over-TLS connection of the probe: send requests, read what comes back."""

    def __init__(self, host: str, port: int, timeout: float, *, source: str | None = None) -> None:
        ctx = _client_context()
        raw = _connect(host, port, timeout, source)
        try:
            self.sock = ctx.wrap_socket(raw)
        except BaseException:
            raw.close()
            raise
        self.timeout = timeout
        name = self.sock.getsockname()
        self.local = LocalAddress(transport="tls", host=name[0], port=name[1])
        self._framer = StreamFramer()
        self._pending: list[bytes] = []
        self.closed = False
        #: Requests the server sent in between (a forked INVITE, OPTIONS probes).
        self.requests: list[Request] = []

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

    def send(self, message: Request | Response) -> None:
        self.sock.sendall(message.to_bytes())

    def next_message(self, timeout: float | None = None) -> Request | Response | None:
        """The next whole message, or None on timeout or close (``closed`` tells)."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while not self._pending:
            left = deadline - time.monotonic()
            if left <= 0 or self.closed:
                return None
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(MAX_ANSWER_BYTES)
            except (TimeoutError, ssl.SSLError, OSError):
                return None
            if not chunk:
                self.closed = True
                return None
            try:
                items = self._framer.feed(chunk)
            except FramingError:
                self.closed = True
                return None
            self._pending += [i.data for i in items if isinstance(i, FramedMessage)]
        try:
            return parse_message(self._pending.pop(0), datagram=False)
        except SipParseError:
            return None

    def transaction(self, req: Request, *, timeout: float | None = None) -> list[Response]:
        """Send ``req``; its responses up to the final one (requests in between are
        left in :attr:`requests`). Empty when nothing came within the timeout."""
        self.send(req)
        return self.responses_to(req, timeout=timeout)

    def responses_to(self, req: Request, *, timeout: float | None = None) -> list[Response]:
        got: list[Response] = []
        for _ in range(MAX_MESSAGES):
            msg = self.next_message(timeout)
            if msg is None:
                break
            if isinstance(msg, Request):
                self.requests.append(msg)
                continue
            if msg.call_id != req.call_id or msg.cseq.method != req.cseq.method:
                continue
            got.append(msg)
            if msg.status >= 200:
                break
        return got

    def __enter__(self) -> SipStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


#: SIP requests per second outside the rate-limit burst (below Kamailio pike's 16/2 s
#: and voipsec's untrusted zones, so the probes do not trip the limit they measure).
PROBE_RATE = 6.0
#: SIP requests per target outside the burst; more is a bug of the probes.
MAX_REQUESTS = 120


class ProbeBudgetExceeded(Exception):
    """More than MAX_REQUESTS requests: a probe loops."""


@dataclass(slots=True)
class ProbeRun:
    """One target's probe run: pacing, what was seen, who the probe is."""

    target: SipTarget
    options: ProbeOptions
    party: Party
    user: str | None
    password: str | None = field(repr=False)
    seen: list[Response] = field(default_factory=list)
    sent: int = 0
    #: Seconds the last :meth:`ask` waited for its answers (pacing not included).
    last_seconds: float = 0.0
    _last: float = 0.0
    _sources: set[str] = field(default_factory=set)

    @property
    def own(self) -> bool:
        return self.options.own is not None

    @property
    def name(self) -> str:
        return str(self.target)

    def pace(self) -> None:
        """Wait for the next request's slot (PROBE_RATE), count it (MAX_REQUESTS)."""
        self.sent += 1
        if self.sent > MAX_REQUESTS:
            raise ProbeBudgetExceeded(f"more than {MAX_REQUESTS} requests")
        wait = self._last + 1 / PROBE_RATE - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        self._last = time.monotonic()

    def fresh_source(self) -> str | None:
        """A source address of its own for the next probe on a loopback target, so
        that an IDS ban earned by one probe does not spoil the next, and never
        127.0.0.1 (the admin's own): 127.0.0.2-127 (the burst has 127.0.0.128/25).
        None (the system's choice) for any other target."""
        try:
            addr = ipaddress.ip_address(self.target.host)
        except ValueError:
            return None
        if addr.version != 4 or not addr.is_loopback:
            return None
        while True:
            source = f"127.0.0.{random.randrange(2, 128)}"
            if source not in self._sources:
                self._sources.add(source)
                return source

    @property
    def sources(self) -> frozenset[str]:
        """The source addresses the probes used (their own, in what answers echo)."""
        return frozenset(self._sources)

    def stream(self, *, source: str | None = None) -> SipStream:
        """A SIP-over-TLS connection from ``source`` (default: a fresh one)."""
        source = source or self.fresh_source()
        return SipStream(self.target.host, self.target.port, self.options.timeout, source=source)

    def ask(self, stream: SipStream, req: Request) -> list[Response]:
        """One paced transaction; a non-2xx final INVITE answer is ACKed (§17.1.1.3)."""
        self.pace()
        started = time.monotonic()
        got = stream.transaction(req)
        self.last_seconds = time.monotonic() - started
        self.seen += got
        if req.method == "INVITE" and got and got[-1].status >= 300:
            stream.send(ack_for_failure(req, got[-1]))
        return got

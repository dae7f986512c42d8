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
import select
import socket
import ssl
import time
import warnings
from collections.abc import Callable
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
    "AUTH_SOURCE",
    "MAX_ANSWER_BYTES",
    "MAX_MESSAGES",
    "MAX_REQUESTS",
    "MAX_SILENT",
    "MAX_TARGET_SECONDS",
    "PROBE_RATE",
    "TRANSACTION_TIMEOUTS",
    "ProbeBudgetExceeded",
    "ProbeRun",
    "SipStream",
    "certificate_trust",
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
#: Probe timeouts one transaction may wait in all, provisionals or not: a target that
#: drips 100 Trying holds a probe this long, not MAX_MESSAGES timeouts.
TRANSACTION_TIMEOUTS = 2

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


def server_name(host: str) -> str | None:
    """The SNI a client sends for ``host`` (RFC 6066 §3: a DNS name, never a literal
    address)."""
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return host
    return None


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
        with (
            _connect(host, port, timeout, source) as raw,
            ctx.wrap_socket(raw, server_hostname=server_name(host)),
        ):
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
            with ctx.wrap_socket(raw, server_hostname=server_name(host)) as tls:
                chosen = tls.cipher()
                return chosen[0] if chosen else "?"
        except (ssl.SSLError, ConnectionResetError, BrokenPipeError):
            return None


def peer_certificate(
    host: str, port: int, timeout: float, *, source: str | None = None
) -> tuple[bytes | None, str | None]:
    """The leaf certificate (DER) the server presents, and TLS compression if any."""
    ctx = _client_context()
    with (
        _connect(host, port, timeout, source) as raw,
        ctx.wrap_socket(raw, server_hostname=server_name(host)) as tls,
    ):
        return tls.getpeercert(binary_form=True), tls.compression()


def certificate_trust(
    host: str, port: int, timeout: float, *, cafile: str | None, source: str | None = None
) -> str | None:
    """Why the server's chain or name does not verify (against ``cafile``, else the
    system's CAs; the name is ``host``, a DNS name or an address), None when it does.
    Any TLS version and suite is allowed here: the other probes judge those."""
    ctx = ssl.create_default_context(cafile=cafile)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx.minimum_version = _OLD[0]
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    try:
        with (
            _connect(host, port, timeout, source) as raw,
            ctx.wrap_socket(raw, server_hostname=host),
        ):
            return None
    except ssl.SSLCertVerificationError as err:
        return str(err.verify_message or err.reason or err)


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
        name = server_name(host)
        if name is not None:
            conn.set_tlsext_host_name(name.encode("idna"))
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


#: What a plaintext probe sends: bytes, or a request built once the socket knows its
#: own address (RFC 3261 §18.1.1: the Via names where the answer is to go).
Payload = bytes | Callable[[LocalAddress], bytes]


def _payload(data: Payload, transport: str, sock: socket.socket) -> bytes:
    if isinstance(data, bytes):
        return data
    name = sock.getsockname()
    return data(LocalAddress(transport=transport, host=name[0], port=name[1]))


def udp_exchange(
    host: str, port: int, data: Payload, timeout: float, *, source: str | None = None
) -> list[bytes]:
    """Send one datagram; every datagram answered within ``timeout`` (bounded)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    answers: list[bytes] = []
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        if source:
            sock.bind((source, 0))
        sock.connect((host, port))
        sock.send(_payload(data, "udp", sock))
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
    host: str, port: int, data: Payload, timeout: float, *, source: str | None = None
) -> bytes:
    """Plain TCP: send ``data``, return the first whole SIP message (b"" when none)."""
    try:
        with _connect(host, port, timeout, source) as sock:
            sock.sendall(_payload(data, "tcp", sock))
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

    def __init__(
        self,
        host: str,
        port: int,
        timeout: float,
        *,
        source: str | None = None,
        deadline: float | None = None,
    ) -> None:
        ctx = _client_context()
        raw = _connect(host, port, timeout, source)
        try:
            self.sock = ctx.wrap_socket(raw, server_hostname=server_name(host))
        except BaseException:
            raw.close()
            raise
        self.timeout = timeout
        #: No read waits past this (time.monotonic()): the run's time budget.
        self.deadline = deadline
        #: Whole messages that did not parse (skipped: the next one may be the answer).
        self.unparsed = 0
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
        if self.deadline is not None:
            deadline = min(deadline, self.deadline)
        while True:
            while not self._pending:
                left = deadline - time.monotonic()
                if left <= 0 or self.closed:
                    return None
                self.sock.settimeout(left)
                try:
                    chunk = self.sock.recv(MAX_ANSWER_BYTES)
                except (TimeoutError, ssl.SSLError):
                    return None
                except OSError:  # reset: as good as closed
                    self.closed = True
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
                # Junk in between is skipped, not taken for silence: the answer may follow.
                self.unparsed += 1

    def transaction(self, req: Request, *, timeout: float | None = None) -> list[Response]:
        """Send ``req``; its responses up to the final one (requests in between are
        left in :attr:`requests`). Empty when nothing came within the timeout."""
        self.send(req)
        return self.responses_to(req, timeout=timeout)

    def responses_to(self, req: Request, *, timeout: float | None = None) -> list[Response]:
        got: list[Response] = []
        each = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + each * TRANSACTION_TIMEOUTS
        for _ in range(MAX_MESSAGES):
            msg = self.next_message(min(each, max(deadline - time.monotonic(), 0.0)))
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
#: Seconds all probes of one target may take (the rate-limit burst included): past
#: this every probe not yet run is an ERROR, and no read waits beyond it. A silent or
#: dripping target ends here instead of costing each probe its full timeouts.
MAX_TARGET_SECONDS = 30.0
#: Requests in a row left without a final answer after which the target counts as silent: every
#: probe not yet run is an ERROR at once instead of waiting out its own timeouts.
MAX_SILENT = 3
#: The loopback source of every probe that logs in as the test user, each run: the
#: own installation's devices table keys a device by User-Agent and source address.
AUTH_SOURCE = "127.0.0.2"
#: Loopback source addresses the other probes take from (127.0.0.3-127; the burst has
#: 127.0.0.128/25), in this order: the same ones every run.
_SOURCES = tuple(f"127.0.0.{i}" for i in range(3, 128))


class ProbeBudgetExceeded(Exception):
    """More than MAX_REQUESTS requests, or MAX_TARGET_SECONDS spent: a probe loops or
    the target holds it."""


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
    #: When (time.monotonic()) the run's MAX_TARGET_SECONDS are spent.
    deadline: float = field(default_factory=lambda: time.monotonic() + MAX_TARGET_SECONDS)
    #: Requests in a row that got no final answer (MAX_SILENT).
    unanswered: int = 0
    #: Sources banned now by the own installation (its store's bans): never used, so a
    #: ban one run earned does not spoil the next run's probe from the same address.
    banned: frozenset[str] = frozenset()
    _last: float = 0.0
    _sources: list[str] = field(default_factory=list)
    _auth_source: str | None = None
    _next: int = 0

    @property
    def own(self) -> bool:
        return self.options.own is not None

    @property
    def name(self) -> str:
        return str(self.target)

    def check_time(self) -> None:
        """Raise ProbeBudgetExceeded once MAX_TARGET_SECONDS are spent or the target
        left MAX_SILENT requests in a row unanswered."""
        if self.unanswered >= MAX_SILENT:
            raise ProbeBudgetExceeded(f"no final answer to {MAX_SILENT} requests in a row")
        if time.monotonic() >= self.deadline:
            raise ProbeBudgetExceeded(
                f"the probes of one target may take {MAX_TARGET_SECONDS:g} s, all spent"
            )

    def answered(self, got: list[Response]) -> None:
        """Note whether a request got a final answer (MAX_SILENT): provisionals only
        (a target dripping 100 Trying) count as none."""
        final = any(r.status >= 200 for r in got)
        self.unanswered = 0 if final else self.unanswered + 1

    def wait(self, seconds: float) -> float:
        """``seconds``, or less when the run's time budget ends sooner (never < 0)."""
        return max(min(seconds, self.deadline - time.monotonic()), 0.0)

    def pace(self) -> None:
        """Wait for the next request's slot (PROBE_RATE), count it (MAX_REQUESTS)."""
        self.check_time()
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
        127.0.0.1 (the admin's own): the next of 127.0.0.3-127 (the burst has
        127.0.0.128/25) that is not :attr:`banned` — the same ones each run, so a run
        adds no new devices. None (the system's choice) for any other target. Raises
        ProbeBudgetExceeded when all are used."""
        if not self.fresh_source_applies():
            return None
        while self._next < len(_SOURCES) and _SOURCES[self._next] in self.banned:
            self._next += 1
        if self._next >= len(_SOURCES):
            raise ProbeBudgetExceeded(f"all {len(_SOURCES)} loopback sources used or banned")
        source = _SOURCES[self._next]
        self._next += 1
        self._sources.append(source)
        return source

    def auth_source(self) -> str | None:
        """The one source of every probe that logs in as the test user (nonce replay,
        media) on a loopback target, AUTH_SOURCE: one device row and its policy alerts
        for all runs, not new ones per probe and run. None for other targets."""
        if self._auth_source is None and self.fresh_source_applies():
            self._auth_source = AUTH_SOURCE
            self._sources.append(AUTH_SOURCE)
        return self._auth_source

    def fresh_source_applies(self) -> bool:
        """Whether the target is IPv4 loopback (the probes pick their sources)."""
        try:
            addr = ipaddress.ip_address(self.target.host)
        except ValueError:
            return False
        return addr.version == 4 and addr.is_loopback

    def media_hosts(self) -> frozenset[str]:
        """Where the media probes may send: the target's addresses and the own
        installation's media.address (nothing else, see mediaprobe)."""
        found: set[str] = set()
        with contextlib.suppress(OSError, UnicodeError):
            for info in socket.getaddrinfo(self.target.host, None, type=socket.SOCK_DGRAM):
                found.add(str(info[4][0]))
        with contextlib.suppress(ValueError):
            found.add(str(ipaddress.ip_address(self.target.host.strip("[]"))))
        if self.options.own is not None:
            found.add(self.options.own.media.address)
        return frozenset(found)

    @property
    def sources(self) -> frozenset[str]:
        """The source addresses the probes used (their own, in what answers echo)."""
        return frozenset(self._sources)

    def stream(self, *, source: str | None = None) -> SipStream:
        """A SIP-over-TLS connection from ``source`` (default: a fresh one), whose
        reads end with the run's time budget."""
        self.check_time()
        source = source or self.fresh_source()
        return SipStream(
            self.target.host,
            self.target.port,
            self.options.timeout,
            source=source,
            deadline=self.deadline,
        )

    def ask(self, stream: SipStream, req: Request) -> list[Response]:
        """One paced transaction; a non-2xx final INVITE answer is ACKed (§17.1.1.3)."""
        self.pace()
        started = time.monotonic()
        got = stream.transaction(req)
        self.last_seconds = time.monotonic() - started
        self.answered(got)
        self.seen += got
        if req.method == "INVITE" and got and got[-1].status >= 300:
            stream.send(ack_for_failure(req, got[-1]))
        return got

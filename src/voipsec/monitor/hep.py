"""HEPv3 export of SIP messages and call-quality reports to a Homer (sipcapture) collector.

How this works: :func:`encode_hep3` is the sans-IO core. It turns one captured message
and what is known about it (addresses, transport, time, capture agent, Call-ID) into
one HEPv3 packet: the ASCII id ``HEP3``, a 16-bit total length, then chunks of
``vendor id (16) | type id (16) | length (16, header included) | value``, all in
network byte order (HEP3 Network Protocol Specification, sipcapture/HEP, "HEP3
packet structure" and the chunk type table). :class:`HepExporter` is the thin asyncio
shell: it encodes, queues and sends to the collector over UDP or TCP.

Call-quality reports. At the end of each call the relay's statistics of each leg go out
as one HEP packet of payload type 0x22 ("MOS full report", JSON) with the Call-ID as
correlation id, so Homer shows them beside the call's SIP, and the estimated MOS in
the MOS chunk (0x0020, MOS x 100). The source and destination are the phone's media
address and the relay's: the report says what the relay received on that leg.

Chunk order. Receivers that walk the chunks accept any order, but the first HEP3
receivers (hep-c, and tools built on it such as sngrep 1.x) read a fixed layout: the
eight fixed-size chunks of hep-c's ``struct hep_generic`` first (family, protocol,
ports, time, payload type, capture id), then the two addresses, the auth key, then
the payload. So we write that order and put the correlation id *after* the payload,
as OpenSIPS does, where a fixed-layout reader never looks.

Secrets. By default every SIP payload goes through :func:`voipsec.monitor.siplog.redact`
(the SIP log's redaction: digest ``response``, ``nonce`` and ``cnonce``, SDP
``a=crypto`` keys, ``k=`` and ``a=key-mgmt``) before it is encoded: a HEP capture is
copied to collectors, dashboards and files that must not hold what decrypts a call or
lets a password be guessed offline. ``redact=False`` sends them as they were, for a lab.
The redacted message is no longer the right length for its Content-Length: HEP is for
reading, not for replay.

Failure mode: fails open for the caller. :meth:`HepExporter.send` never blocks and
never raises for the network: a full queue, a TCP collector that is down, or a packet
that cannot be encoded drops the message and counts it. Export is a copy for
troubleshooting, so losing some is better than slowing a call.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import logging
import struct
import time as _time
from dataclasses import dataclass
from typing import Literal, cast

from .siplog import redact as redact_secrets

__all__ = [
    "AUTH_KEY",
    "CAPTURE_ID",
    "CORRELATION_ID",
    "DST_IPV4",
    "DST_IPV6",
    "DST_PORT",
    "GENERIC_VENDOR",
    "HEP_PORT",
    "IP_FAMILY",
    "IP_PROTOCOL",
    "MAX_AUTH_KEY",
    "MAX_CORRELATION_ID",
    "MAX_PACKET",
    "MAX_PAYLOAD",
    "MAX_QUEUE",
    "MOS",
    "PAYLOAD",
    "PAYLOAD_TYPE",
    "PAYLOAD_TYPE_QOS_JSON",
    "PAYLOAD_TYPE_SIP",
    "SRC_IPV4",
    "SRC_IPV6",
    "SRC_PORT",
    "TIMESTAMP_SEC",
    "TIMESTAMP_USEC",
    "HepError",
    "HepExporter",
    "HepExporterStatistics",
    "HepTarget",
    "encode_hep3",
    "parse_target",
]

log = logging.getLogger("voipsec.hep")

# -- the wire format ------------------------------------------------------------------

MAGIC = b"HEP3"
#: ``HEP3`` + 16-bit total length.
HEADER_SIZE = 6
#: vendor id, type id and length, 16 bits each.
CHUNK_HEADER_SIZE = 6

#: Chunks of the generic vendor (0x0000) that voipsec writes; numbers from the HEP3
#: specification's chunk type table.
IP_FAMILY = 0x0001  # uint8: 2 = IPv4, 10 = IPv6
IP_PROTOCOL = 0x0002  # uint8: IANA protocol number, 17 UDP, 6 TCP
SRC_IPV4 = 0x0003
DST_IPV4 = 0x0004
SRC_IPV6 = 0x0005
DST_IPV6 = 0x0006
SRC_PORT = 0x0007  # uint16
DST_PORT = 0x0008  # uint16
TIMESTAMP_SEC = 0x0009  # uint32, seconds since the epoch
TIMESTAMP_USEC = 0x000A  # uint32, microseconds within that second
PAYLOAD_TYPE = 0x000B  # uint8: 1 = SIP
CAPTURE_ID = 0x000C  # uint32: the capture agent (node) id
AUTH_KEY = 0x000E  # octet string: the collector's password
PAYLOAD = 0x000F  # octet string: the captured message
CORRELATION_ID = 0x0011  # octet string: Homer groups packets by it (the Call-ID)
MOS = 0x0020  # uint16: mean opinion score x 100

#: Vendor id of the chunks defined by the specification itself; a receiver reads a
#: chunk with another vendor id as that vendor's extension.
GENERIC_VENDOR = 0x0000
#: HEP payload type of a SIP message.
PAYLOAD_TYPE_SIP = 1
#: HEP payload type of a call-quality report in JSON ("MOS full report").
PAYLOAD_TYPE_QOS_JSON = 0x22
#: The port Homer collectors listen on by default (heplify-server, captagent).
HEP_PORT = 9060

#: Address family values of the IP family chunk (the spec uses the BSD/Linux AF_*).
FAMILY_IPV4 = 2
FAMILY_IPV6 = 10

# -- limits ---------------------------------------------------------------------------

#: A whole HEP3 packet: the total length field has 16 bits.
MAX_PACKET = 0xFFFF
#: The auth key. Collectors compare it with a configured password; 256 bytes is far
#: beyond any password and keeps the packet budget below predictable.
MAX_AUTH_KEY = 256
#: The correlation id (a Call-ID). RFC 3261 sets no limit; real Call-IDs are under 100
#: bytes, and 1 KiB keeps a hostile one from eating the packet.
MAX_CORRELATION_ID = 1_024
#: The captured message. A UDP datagram over IPv4 carries at most 65,507 bytes; this
#: leaves room for every other chunk at its largest (IPv6 addresses, a full auth key and
#: correlation id: 1,415 bytes), so an encoded packet always fits one datagram.
MAX_PAYLOAD = 64_000


#: Parsed addresses kept (the peers and local addresses of the messages exported).
ADDRESS_CACHE = 4_096


class HepError(ValueError):
    """A value cannot be encoded in HEPv3 (out of range, too long, mixed families)."""


def _chunk(vendor: int, kind: int, value: bytes) -> bytes:
    return struct.pack("!HHH", vendor, kind, CHUNK_HEADER_SIZE + len(value)) + value


def _address(text: str, what: str) -> tuple[int, bytes]:
    """(IP version, packed address) of ``text``."""
    parsed = _parse_address(text)
    if parsed is None:
        raise HepError(f"{what} address {text!r} is not an IP address")
    return parsed


@functools.lru_cache(maxsize=ADDRESS_CACHE)
def _parse_address(text: str) -> tuple[int, bytes] | None:
    # Cached: a SIP service talks to few addresses, and ipaddress parsing was a third of
    # the encoder's time (bench/siplog_bench.py).
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    return address.version, address.packed


def _check_range(value: int, bits: int, what: str) -> None:
    if not 0 <= value < 1 << bits:
        raise HepError(f"{what} {value} does not fit {bits} bits")


def encode_hep3(
    *,
    src: tuple[str, int],
    dst: tuple[str, int],
    proto: int,
    timestamp: float,
    payload: bytes,
    payload_type: int = PAYLOAD_TYPE_SIP,
    capture_id: int,
    auth_key: str | None = None,
    correlation_id: str | None = None,
    mos: float | None = None,
    vendor: int = GENERIC_VENDOR,
) -> bytes:
    """One HEPv3 packet for ``payload`` sent from ``src`` to ``dst``.

    ``proto`` is the IP protocol number the message travelled on (17 UDP, 6 TCP, also
    for TLS: HEP carries the decrypted message). ``timestamp`` is seconds since the
    epoch, split into the seconds and microseconds chunks. ``vendor`` is written in
    every chunk; leave it at :data:`GENERIC_VENDOR` unless a collector wants another.
    ``mos`` (1.0-5.0, for a quality report) goes in the MOS chunk as an integer x 100.
    Raises :class:`HepError` for a value that does not fit its chunk or a limit.
    """
    src_version, src_packed = _address(src[0], "source")
    dst_version, dst_packed = _address(dst[0], "destination")
    if src_version != dst_version:
        raise HepError(f"source {src[0]} and destination {dst[0]} are of different families")
    _check_range(src[1], 16, "source port")
    _check_range(dst[1], 16, "destination port")
    _check_range(proto, 8, "protocol")
    _check_range(payload_type, 8, "payload type")
    _check_range(capture_id, 32, "capture id")
    _check_range(vendor, 16, "vendor id")
    if not 0 <= timestamp < 1 << 32:
        raise HepError(f"timestamp {timestamp} does not fit 32 bits of seconds")
    if len(payload) > MAX_PAYLOAD:
        raise HepError(f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD}")
    key = auth_key.encode() if auth_key is not None else None
    if key is not None and len(key) > MAX_AUTH_KEY:
        raise HepError(f"auth key exceeds {MAX_AUTH_KEY} bytes")
    correlation = correlation_id.encode() if correlation_id is not None else None
    if correlation is not None and len(correlation) > MAX_CORRELATION_ID:
        raise HepError(f"correlation id of {len(correlation)} bytes exceeds {MAX_CORRELATION_ID}")

    mos_value = None
    if mos is not None:
        if not 0.0 <= mos <= 5.0:
            raise HepError(f"MOS {mos} is outside 0-5")
        mos_value = round(mos * 100)

    seconds = int(timestamp)
    micros = round((timestamp - seconds) * 1_000_000)
    if micros == 1_000_000:  # 0.9999996 rounds up into the next second
        seconds, micros = seconds + 1, 0
    _check_range(seconds, 32, "timestamp")

    if src_version == 4:
        family, src_kind, dst_kind = FAMILY_IPV4, SRC_IPV4, DST_IPV4
    else:
        family, src_kind, dst_kind = FAMILY_IPV6, SRC_IPV6, DST_IPV6
    chunks = [
        _chunk(vendor, IP_FAMILY, struct.pack("!B", family)),
        _chunk(vendor, IP_PROTOCOL, struct.pack("!B", proto)),
        _chunk(vendor, SRC_PORT, struct.pack("!H", src[1])),
        _chunk(vendor, DST_PORT, struct.pack("!H", dst[1])),
        _chunk(vendor, TIMESTAMP_SEC, struct.pack("!I", seconds)),
        _chunk(vendor, TIMESTAMP_USEC, struct.pack("!I", micros)),
        _chunk(vendor, PAYLOAD_TYPE, struct.pack("!B", payload_type)),
        _chunk(vendor, CAPTURE_ID, struct.pack("!I", capture_id)),
        _chunk(vendor, src_kind, src_packed),
        _chunk(vendor, dst_kind, dst_packed),
    ]
    if key is not None:
        chunks.append(_chunk(vendor, AUTH_KEY, key))
    chunks.append(_chunk(vendor, PAYLOAD, payload))
    if correlation is not None:
        # After the payload: see "Chunk order" in the module docstring.
        chunks.append(_chunk(vendor, CORRELATION_ID, correlation))
    if mos_value is not None:
        chunks.append(_chunk(vendor, MOS, struct.pack("!H", mos_value)))
    body = b"".join(chunks)
    total = HEADER_SIZE + len(body)
    # Cannot happen within the limits above; kept as the format's own rule.
    if total > MAX_PACKET:
        raise HepError(f"packet of {total} bytes exceeds {MAX_PACKET}")
    return MAGIC + struct.pack("!H", total) + body


# -- the asyncio shell ------------------------------------------------------------------

#: Encoded packets waiting for the socket. A SIP message is about 1 KiB, so this bounds
#: the exporter's memory near 4 MiB while covering a collector's pause of a few seconds
#: at hundreds of messages per second.
MAX_QUEUE = 4_096
#: Seconds to wait for a TCP connection to the collector.
CONNECT_TIMEOUT = 5.0
#: Reconnection delay after a TCP failure: starts here, doubles, stops at the maximum.
RECONNECT_MIN = 0.5
RECONNECT_MAX = 30.0
#: Bytes read (and discarded) at a time from a TCP collector: it sends nothing useful,
#: reading only tells us when it closes.
_READ_SIZE = 4_096

#: IP protocol of each SIP transport; TLS and WebSockets run over TCP and HEP carries
#: the decrypted message.
_PROTOCOLS = {"udp": 17, "tcp": 6, "tls": 6, "ws": 6, "wss": 6, "sctp": 132}


@dataclass(frozen=True, slots=True, kw_only=True)
class HepTarget:
    """Where the collector listens: ``udp`` or ``tcp``, a host name or address, a port."""

    transport: Literal["udp", "tcp"]
    host: str
    port: int


def parse_target(text: str) -> HepTarget:
    """``udp:10.0.0.5:9060``, ``tcp:homer.example.net:9061``, ``udp:[2001:db8::1]:9060``."""
    transport, sep, rest = text.partition(":")
    if not sep or transport not in ("udp", "tcp"):
        raise ValueError(f"{text!r}: a HEP target is udp:HOST:PORT or tcp:HOST:PORT")
    if rest.startswith("["):
        host, _, port_text = rest[1:].partition("]:")
    else:
        host, _, port_text = rest.rpartition(":")
    if not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"{text!r}: a HEP target needs a host and a port 1-65535")
    return HepTarget(
        transport=cast(Literal["udp", "tcp"], transport), host=host, port=int(port_text)
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class HepExporterStatistics:
    #: Packets written to the socket.
    sent: int
    sent_bytes: int
    #: Messages dropped because :data:`MAX_QUEUE` packets were already waiting.
    dropped_queue_full: int
    #: Messages dropped because the TCP connection to the collector was down.
    dropped_disconnected: int
    #: Messages that could not be encoded (see :func:`encode_hep3`'s limits) or had an
    #: unknown direction or transport.
    dropped_invalid: int
    #: Socket errors while sending (ICMP unreachable on UDP, a reset on TCP).
    send_errors: int
    #: TCP connections made to the collector.
    connects: int
    #: Whether a packet can be sent now: always True for UDP once started.
    connected: bool
    #: Packets waiting in the queue.
    queued: int


class _UdpProtocol(asyncio.DatagramProtocol):
    """Counts what the kernel reports for the connected UDP socket (ICMP errors) and
    tells the exporter when asyncio's send buffer is over its high-water mark."""

    def __init__(self, exporter: HepExporter) -> None:
        self._exporter = exporter

    def error_received(self, exc: Exception) -> None:
        self._exporter._send_errors += 1
        log.debug("HEP collector unreachable: %s", exc)

    def pause_writing(self) -> None:
        self._exporter._udp_paused = True

    def resume_writing(self) -> None:
        self._exporter._udp_paused = False


class HepExporter:
    """Sends SIP messages and quality reports as HEPv3 to one collector, never blocking
    the caller.

    ``target`` is ``udp:HOST:PORT`` or ``tcp:HOST:PORT``. Over TCP the exporter keeps
    one connection and reconnects with backoff; messages sent while it is down are
    dropped and counted rather than stored. ``redact`` (the default) removes secrets
    from SIP payloads; see "Secrets" in the module docstring.
    """

    def __init__(
        self,
        target: str,
        *,
        capture_id: int,
        auth_key: str | None = None,
        max_queue: int = MAX_QUEUE,
        redact: bool = True,
    ) -> None:
        self.target = parse_target(target)
        self.redact = redact
        _check_range(capture_id, 32, "capture id")
        if auth_key is not None and len(auth_key.encode()) > MAX_AUTH_KEY:
            raise HepError(f"auth key exceeds {MAX_AUTH_KEY} bytes")
        self._capture_id = capture_id
        self._auth_key = auth_key
        self._queue: asyncio.Queue[bytes] = asyncio.Queue(max_queue)
        self._udp: asyncio.DatagramTransport | None = None
        self._udp_paused = False
        self._writer: asyncio.StreamWriter | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._started = False
        self._sent = 0
        self._sent_bytes = 0
        self._dropped_queue_full = 0
        self._dropped_disconnected = 0
        self._dropped_invalid = 0
        self._send_errors = 0
        self._connects = 0

    async def start(self) -> None:
        """Open the UDP socket (resolving the host now) or start connecting over TCP."""
        if self._started:
            return
        loop = asyncio.get_running_loop()
        if self.target.transport == "udp":
            transport, _ = await loop.create_datagram_endpoint(
                lambda: _UdpProtocol(self), remote_addr=(self.target.host, self.target.port)
            )
            self._udp = transport
        else:
            self._tasks.append(asyncio.create_task(self._connect_loop()))
        self._tasks.append(asyncio.create_task(self._write_loop()))
        self._started = True

    def send(
        self,
        *,
        direction: Literal["in", "out"],
        src: tuple[str, int],
        dst: tuple[str, int],
        transport: str,
        payload: bytes,
        call_id: str | None,
        time: float | None = None,
        redacted: bytes | None = None,
    ) -> None:
        """Queue ``payload`` (a SIP message, decrypted) for export; never blocks or raises.

        HEP has no direction chunk: ``src`` and ``dst`` say which way the message went,
        ``direction`` ("in" received by voipsec, "out" sent) only has to agree with them.
        ``call_id`` becomes the correlation id; ``time`` defaults to now. ``redacted``
        is ``redact(payload)`` when the caller already has it (it is then exported
        instead of ``payload`` when :attr:`redact` is on); otherwise it is computed here.
        """
        proto = _PROTOCOLS.get(transport.lower())
        if proto is None or direction not in ("in", "out"):
            self._dropped_invalid += 1
            log.debug("HEP: not exported: direction %r, transport %r", direction, transport)
            return
        if self.redact:
            payload = redacted if redacted is not None else redact_secrets(payload)
        self._enqueue(
            src=src,
            dst=dst,
            proto=proto,
            payload=payload,
            payload_type=PAYLOAD_TYPE_SIP,
            call_id=call_id,
            mos=None,
            time=time,
        )

    def send_report(
        self,
        *,
        src: tuple[str, int],
        dst: tuple[str, int],
        report: bytes,
        call_id: str,
        mos: float | None,
        time: float | None = None,
    ) -> None:
        """Queue a call-quality report (JSON) of the media from ``src`` to ``dst``, sent
        as payload type :data:`PAYLOAD_TYPE_QOS_JSON` over UDP (the media's transport);
        never blocks or raises."""
        self._enqueue(
            src=src,
            dst=dst,
            proto=_PROTOCOLS["udp"],
            payload=report,
            payload_type=PAYLOAD_TYPE_QOS_JSON,
            call_id=call_id,
            mos=mos,
            time=time,
        )

    def _enqueue(
        self,
        *,
        src: tuple[str, int],
        dst: tuple[str, int],
        proto: int,
        payload: bytes,
        payload_type: int,
        call_id: str | None,
        mos: float | None,
        time: float | None,
    ) -> None:
        if self.target.transport == "tcp" and self._writer is None:
            self._dropped_disconnected += 1
            return
        if self._queue.full():
            self._dropped_queue_full += 1
            return
        try:
            packet = encode_hep3(
                src=src,
                dst=dst,
                proto=proto,
                timestamp=_time.time() if time is None else time,
                payload=payload,
                payload_type=payload_type,
                capture_id=self._capture_id,
                auth_key=self._auth_key,
                correlation_id=call_id,
                mos=mos,
            )
        except HepError as exc:
            self._dropped_invalid += 1
            log.debug("HEP: not exported: %s", exc)
            return
        self._queue.put_nowait(packet)

    async def _write_loop(self) -> None:
        while True:
            packet = await self._queue.get()
            if self._udp is not None:
                if self._udp.is_closing():
                    self._send_errors += 1
                    continue
                if self._udp_paused:
                    # asyncio's buffer passed its high-water mark: the kernel is full.
                    self._dropped_queue_full += 1
                    continue
                self._udp.sendto(packet)
                self._sent += 1
                self._sent_bytes += len(packet)
                continue
            writer = self._writer
            if writer is None:
                self._dropped_disconnected += 1
                continue
            try:
                writer.write(packet)
                await writer.drain()
            except (OSError, RuntimeError) as exc:
                # RuntimeError: write after the transport closed under us.
                self._send_errors += 1
                log.debug("HEP: TCP send failed: %s", exc)
                if self._writer is writer:
                    self._writer = None
                writer.close()
                continue
            self._sent += 1
            self._sent_bytes += len(packet)

    async def _connect_loop(self) -> None:
        delay = RECONNECT_MIN
        down_logged = False
        while True:
            try:
                async with asyncio.timeout(CONNECT_TIMEOUT):
                    reader, writer = await asyncio.open_connection(
                        self.target.host, self.target.port
                    )
            except (OSError, TimeoutError) as exc:
                if not down_logged:
                    log.warning(
                        "HEP collector tcp:%s:%d unreachable: %s",
                        self.target.host,
                        self.target.port,
                        exc,
                    )
                    down_logged = True
                await asyncio.sleep(delay)
                delay = min(delay * 2, RECONNECT_MAX)
                continue
            self._connects += 1
            self._writer = writer
            down_logged = False
            delay = RECONNECT_MIN
            log.info("HEP collector tcp:%s:%d connected", self.target.host, self.target.port)
            try:
                while await reader.read(_READ_SIZE):
                    pass
            except OSError as exc:
                log.debug("HEP: TCP connection lost: %s", exc)
            if self._writer is writer:
                self._writer = None
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    def statistics(self) -> HepExporterStatistics:
        if self.target.transport == "udp":
            connected = self._udp is not None and not self._udp.is_closing()
        else:
            connected = self._writer is not None
        return HepExporterStatistics(
            sent=self._sent,
            sent_bytes=self._sent_bytes,
            dropped_queue_full=self._dropped_queue_full,
            dropped_disconnected=self._dropped_disconnected,
            dropped_invalid=self._dropped_invalid,
            send_errors=self._send_errors,
            connects=self._connects,
            connected=connected,
            queued=self._queue.qsize(),
        )

    async def stop(self) -> None:
        """Stop the tasks and close the socket; packets still queued are discarded."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        if self._udp is not None:
            self._udp.close()
            self._udp = None
        if self._writer is not None:
            writer, self._writer = self._writer, None
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        self._started = False

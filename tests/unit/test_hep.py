"""HEPv3 encoding and export (voipsec.monitor.hep).

The packets are read back by a minimal parser written here from the HEP3 specification
(chunk numbers as literals, not the module's constants), and by two programs nobody
here wrote: sngrep (Irontec's SIP viewer, whose HEP3 receiver comes from sipcapture's
hep-c) decapsulates them, from a pcap and live over UDP, and tshark decodes the SIP
inside. Debian 12's tshark (4.0) has no HEP dissector of its own (sipcapture ships one
as an out-of-tree Lua plugin), so sngrep does the HEP step.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ipaddress
import json
import socket
import struct
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from tests.peers.proc import require, running, wait_for
from tests.unit.test_siplog import BARESIP_INVITE, SECRETS
from voipsec.events import MediaStats
from voipsec.monitor.hep import (
    ADDRESS_CACHE,
    MAX_AUTH_KEY,
    MAX_CORRELATION_ID,
    MAX_PAYLOAD,
    MAX_QUEUE,
    MOS,
    PAYLOAD_TYPE_QOS_JSON,
    HepError,
    HepExporter,
    encode_hep3,
    parse_target,
)
from voipsec.monitor.service import quality_report
from voipsec.monitor.siplog import redact

DATA = Path(__file__).resolve().parents[1] / "data" / "ids"
#: A real INVITE as SIPp 3.6.1 sent it (tests/data/ids/SOURCE.md).
INVITE = (DATA / "sipp-uac-invite.sip").read_bytes()
INVITE_CALL_ID = "1-25952@127.0.0.1"

Chunk = tuple[int, int, bytes]


def parse_hep3(packet: bytes) -> list[Chunk]:
    """(vendor, type, value) of each chunk; asserts the framing is exact."""
    assert packet[:4] == b"HEP3"
    (total,) = struct.unpack("!H", packet[4:6])
    assert total == len(packet)
    chunks: list[Chunk] = []
    pos = 6
    while pos < total:
        vendor, kind, length = struct.unpack("!HHH", packet[pos : pos + 6])
        assert length >= 6
        assert pos + length <= total
        chunks.append((vendor, kind, packet[pos + 6 : pos + length]))
        pos += length
    assert pos == total
    return chunks


def encode(**overrides: object) -> bytes:
    args: dict[str, object] = {
        "src": ("192.0.2.10", 5061),
        "dst": ("198.51.100.7", 40123),
        "proto": 6,
        "timestamp": 1_700_000_000.123456,
        "payload": INVITE,
        "capture_id": 2001,
        "auth_key": "homer-secret",
        "correlation_id": INVITE_CALL_ID,
    }
    args.update(overrides)
    return encode_hep3(**args)  # type: ignore[arg-type]


# -- encoder ----------------------------------------------------------------------------


def test_hep_encode_ipv4_every_chunk() -> None:
    chunks = parse_hep3(encode())
    assert chunks == [
        (0, 0x0001, b"\x02"),
        (0, 0x0002, b"\x06"),
        (0, 0x0007, struct.pack("!H", 5061)),
        (0, 0x0008, struct.pack("!H", 40123)),
        (0, 0x0009, struct.pack("!I", 1_700_000_000)),
        (0, 0x000A, struct.pack("!I", 123_456)),
        (0, 0x000B, b"\x01"),
        (0, 0x000C, struct.pack("!I", 2001)),
        (0, 0x0003, bytes([192, 0, 2, 10])),
        (0, 0x0004, bytes([198, 51, 100, 7])),
        (0, 0x000E, b"homer-secret"),
        (0, 0x000F, INVITE),
        (0, 0x0011, INVITE_CALL_ID.encode()),
    ]


def test_hep_encode_ipv6_uses_chunks_5_and_6() -> None:
    chunks = dict(
        (kind, value)
        for _, kind, value in parse_hep3(
            encode(src=("2001:db8::1", 5060), dst=("2001:db8::2", 5060), proto=17)
        )
    )
    assert chunks[0x0001] == b"\x0a"
    assert chunks[0x0002] == b"\x11"
    assert chunks[0x0005] == ipaddress.IPv6Address("2001:db8::1").packed
    assert chunks[0x0006] == ipaddress.IPv6Address("2001:db8::2").packed
    assert 0x0003 not in chunks and 0x0004 not in chunks


def test_hep_encode_exact_bytes_of_a_small_packet() -> None:
    packet = encode_hep3(
        src=("10.0.0.1", 5060),
        dst=("10.0.0.2", 9),
        proto=17,
        timestamp=1.5,
        payload=b"x",
        capture_id=1,
    )
    assert packet == bytes.fromhex(
        "48455033 0064"  # "HEP3", total 100
        "0000 0001 0007 02"  # IPv4
        "0000 0002 0007 11"  # UDP
        "0000 0007 0008 13c4"  # source port 5060
        "0000 0008 0008 0009"  # destination port 9
        "0000 0009 000a 00000001"  # 1 s
        "0000 000a 000a 0007a120"  # 500,000 us
        "0000 000b 0007 01"  # SIP
        "0000 000c 000a 00000001"  # capture id 1
        "0000 0003 000a 0a000001"
        "0000 0004 000a 0a000002"
        "0000 000f 0007 78"  # payload "x"
    )


def test_hep_encode_without_key_or_correlation_omits_them() -> None:
    kinds = [kind for _, kind, _ in parse_hep3(encode(auth_key=None, correlation_id=None))]
    assert 0x000E not in kinds and 0x0011 not in kinds
    assert kinds[-1] == 0x000F


def test_hep_encode_vendor_and_payload_type_are_written() -> None:
    chunks = parse_hep3(encode(vendor=0x0002, payload_type=0x05))
    assert {vendor for vendor, _, _ in chunks} == {0x0002}
    assert dict((kind, value) for _, kind, value in chunks)[0x000B] == b"\x05"


def test_hep_encode_mos_chunk_is_mos_times_100_after_the_correlation_id() -> None:
    chunks = parse_hep3(encode(payload_type=PAYLOAD_TYPE_QOS_JSON, mos=4.376))
    assert chunks[-1] == (0, MOS, struct.pack("!H", 438))
    assert chunks[-2][1] == 0x0011
    assert dict((kind, value) for _, kind, value in chunks)[0x000B] == b"\x22"


@pytest.mark.parametrize("mos", [-0.01, 5.01])
def test_hep_encode_mos_out_of_range_is_refused(mos: float) -> None:
    with pytest.raises(HepError, match=f"^MOS {mos} is outside 0-5$"):
        encode(mos=mos)


def test_hep_quality_report_json_names_the_leg_and_its_counters() -> None:
    stats = MediaStats(call_id="c-1@x", cdr_id=7, time=9.0, leg="b", suite="AEAD_AES_256_GCM",
                       packets=500, lost=3, jitter_ms=1.234, auth_failures=1, replays=2,
                       wrong_source=4, malformed=5, mos=4.3911, local=("127.0.0.1", 30002),
                       remote=("127.0.0.5", 4000), stun_answered=6, stun_dropped=8)  # fmt: skip
    assert json.loads(quality_report(stats)) == {
        "type": "voipsec.media",
        "call_id": "c-1@x",
        "cdr_id": 7,
        "leg": "b",
        "suite": "AEAD_AES_256_GCM",
        "packets": 500,
        "lost": 3,
        "jitter_ms": 1.23,
        "mos": 4.39,
        "auth_failures": 1,
        "replays": 2,
        "wrong_source": 4,
        "malformed": 5,
        "stun_answered": 6,
        "stun_dropped": 8,
    }
    silent = dataclasses.replace(stats, packets=0)
    assert json.loads(quality_report(silent))["mos"] is None


def test_hep_encode_more_addresses_than_the_cache_holds_stay_exact() -> None:
    """ADDRESS_CACHE parsed addresses are kept; one more evicts the oldest, which is
    then parsed again, not mixed up."""
    first = dict((kind, value) for _, kind, value in parse_hep3(encode(src=("10.0.0.1", 5060))))
    for n in range(ADDRESS_CACHE + 1):
        encode(src=(str(ipaddress.IPv4Address(0x0A010000 + n)), 5060))
    again = dict((kind, value) for _, kind, value in parse_hep3(encode(src=("10.0.0.1", 5060))))
    assert first[0x0003] == again[0x0003] == bytes([10, 0, 0, 1])


def test_hep_encode_microseconds_round_up_into_next_second() -> None:
    chunks = dict((kind, value) for _, kind, value in parse_hep3(encode(timestamp=41.9999997)))
    assert chunks[0x0009] == struct.pack("!I", 42)
    assert chunks[0x000A] == struct.pack("!I", 0)


def test_hep_encode_max_payload_fits_one_udp_datagram() -> None:
    packet = encode(
        src=("2001:db8::1", 5060),
        dst=("2001:db8::2", 5060),
        payload=b"a" * MAX_PAYLOAD,
        auth_key="k" * MAX_AUTH_KEY,
        correlation_id="c" * MAX_CORRELATION_ID,
    )
    assert len(packet) <= 65_507
    assert parse_hep3(packet)[-2] == (0, 0x000F, b"a" * MAX_PAYLOAD)


def test_hep_encode_payload_over_limit_is_refused() -> None:
    with pytest.raises(
        HepError, match=f"^payload of {MAX_PAYLOAD + 1} bytes exceeds {MAX_PAYLOAD}$"
    ):
        encode(payload=b"a" * (MAX_PAYLOAD + 1))


def test_hep_encode_auth_key_over_limit_is_refused() -> None:
    with pytest.raises(HepError, match=f"^auth key exceeds {MAX_AUTH_KEY} bytes$"):
        encode(auth_key="k" * (MAX_AUTH_KEY + 1))


def test_hep_encode_correlation_id_over_limit_is_refused() -> None:
    too_long = MAX_CORRELATION_ID + 1
    with pytest.raises(
        HepError, match=f"^correlation id of {too_long} bytes exceeds {MAX_CORRELATION_ID}$"
    ):
        encode(correlation_id="c" * too_long)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"src": ("example.net", 5060)}, "source address 'example.net' is not an IP address"),
        ({"dst": ("192.0.2.1", 5060), "src": ("2001:db8::1", 5060)}, "different families"),
        ({"src": ("192.0.2.10", 65_536)}, "source port 65536 does not fit 16 bits"),
        ({"proto": 256}, "protocol 256 does not fit 8 bits"),
        ({"capture_id": 1 << 32}, "capture id 4294967296 does not fit 32 bits"),
        ({"timestamp": -1.0}, "timestamp -1.0 does not fit 32 bits of seconds"),
        ({"vendor": 0x10000}, "vendor id 65536 does not fit 16 bits"),
    ],
)
def test_hep_encode_bad_values_raise_hep_error(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(HepError, match=message):
        encode(**overrides)


def test_hep_parse_target_forms() -> None:
    assert parse_target("udp:10.0.0.5:9060").port == 9060
    assert parse_target("tcp:homer.example.net:9061").host == "homer.example.net"
    assert parse_target("udp:[2001:db8::1]:9060").host == "2001:db8::1"
    for bad in ("tls:10.0.0.5:9060", "udp:10.0.0.5", "udp::9060", "udp:h:0"):
        with pytest.raises(ValueError, match="HEP target"):
            parse_target(bad)


# -- the exporter, over real sockets -----------------------------------------------------


class _Collector(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.packets: asyncio.Queue[bytes] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: tuple[str | object, int]) -> None:
        self.packets.put_nowait(data)


@contextlib.asynccontextmanager
async def udp_exporter(
    capture_id: int, auth_key: str | None = None, *, redact: bool = True
) -> AsyncIterator[tuple[HepExporter, _Collector]]:
    """A started exporter sending to a UDP collector on loopback; both closed after."""
    loop = asyncio.get_running_loop()
    transport, collector = await loop.create_datagram_endpoint(
        _Collector, local_addr=("127.0.0.1", 0)
    )
    port = transport.get_extra_info("sockname")[1]
    exporter = HepExporter(
        f"udp:127.0.0.1:{port}", capture_id=capture_id, auth_key=auth_key, redact=redact
    )
    await exporter.start()
    try:
        yield exporter, collector
    finally:
        await exporter.stop()
        transport.close()


async def test_hep_exporter_udp_sends_each_message() -> None:
    async with udp_exporter(77, auth_key="pw") as (exporter, collector):
        exporter.send(
            direction="in",
            src=("192.0.2.10", 5060),
            dst=("127.0.0.1", 5060),
            transport="UDP",
            payload=INVITE,
            call_id=INVITE_CALL_ID,
            time=1_700_000_002.5,
        )
        packet = await asyncio.wait_for(collector.packets.get(), 5)
    chunks = dict((kind, value) for _, kind, value in parse_hep3(packet))
    assert chunks[0x0002] == b"\x11"
    assert chunks[0x000C] == struct.pack("!I", 77)
    assert chunks[0x000E] == b"pw"
    assert chunks[0x0009] == struct.pack("!I", 1_700_000_002)
    assert chunks[0x000A] == struct.pack("!I", 500_000)
    assert chunks[0x000F] == INVITE
    assert chunks[0x0011] == INVITE_CALL_ID.encode()
    stats = exporter.statistics()
    assert (stats.sent, stats.sent_bytes, stats.dropped_invalid) == (1, len(packet), 0)


async def _exported_payload(message: bytes, *, redact: bool, **extra: object) -> bytes:
    """The payload chunk of the packet ``message`` became."""
    async with udp_exporter(77, redact=redact) as (exporter, collector):
        exporter.send(
            direction="in",
            src=("192.0.2.10", 5061),
            dst=("127.0.0.1", 5061),
            transport="TLS",
            payload=message,
            call_id="c",
            time=1_700_000_002.0,
            **extra,  # type: ignore[arg-type]
        )
        packet = await asyncio.wait_for(collector.packets.get(), 5)
    return dict((kind, value) for _, kind, value in parse_hep3(packet))[0x000F]


async def test_hep_exporter_redacts_digest_and_sdp_keys_by_default() -> None:
    """Issue 13, finding 4: the SIP log's redaction, applied to HEP."""
    payload = await _exported_payload(BARESIP_INVITE, redact=True)
    assert payload == redact(BARESIP_INVITE)
    assert b'response="<redacted>"' in payload
    assert b"inline:<redacted>" in payload
    for secret in SECRETS:
        assert secret not in payload, secret
    assert b"\r\nCall-ID: 395dc802343e4e5c\r\n" in payload  # the rest is intact


async def test_hep_exporter_redact_false_exports_secrets_in_clear() -> None:
    assert await _exported_payload(BARESIP_INVITE, redact=False) == BARESIP_INVITE


async def test_hep_exporter_uses_the_callers_redaction_instead_of_redacting_again() -> None:
    """The monitor redacts once for the SIP log and HEP: what it passes is exported."""
    assert await _exported_payload(BARESIP_INVITE, redact=True, redacted=b"done") == b"done"
    # ...and it is ignored when redaction is off.
    off = await _exported_payload(BARESIP_INVITE, redact=False, redacted=b"done")
    assert off == BARESIP_INVITE


async def test_hep_exporter_report_is_udp_qos_json_with_mos() -> None:
    async with udp_exporter(77) as (exporter, collector):
        exporter.send_report(
            src=("192.0.2.10", 4000),
            dst=("127.0.0.1", 30000),
            report=b'{"leg":"a"}',
            call_id=INVITE_CALL_ID,
            mos=4.41,
            time=1_700_000_002.0,
        )
        packet = await asyncio.wait_for(collector.packets.get(), 5)
    chunks = dict((kind, value) for _, kind, value in parse_hep3(packet))
    assert chunks[0x0002] == b"\x11"
    assert chunks[0x000B] == bytes([PAYLOAD_TYPE_QOS_JSON])
    assert chunks[0x0003] == bytes([192, 0, 2, 10])
    assert chunks[0x0007] == struct.pack("!H", 4000)
    assert chunks[0x000F] == b'{"leg":"a"}'
    assert chunks[0x0011] == INVITE_CALL_ID.encode()
    assert chunks[MOS] == struct.pack("!H", 441)


async def test_hep_exporter_tls_is_exported_as_tcp_and_bad_input_is_counted() -> None:
    common = {"src": ("192.0.2.10", 5061), "dst": ("127.0.0.1", 5061), "call_id": "c"}
    async with udp_exporter(1) as (exporter, collector):
        exporter.send(direction="out", transport="tls", payload=b"SIP", **common)  # type: ignore[arg-type]
        exporter.send(direction="out", transport="carrier-pigeon", payload=b"SIP", **common)  # type: ignore[arg-type]
        exporter.send(direction="sideways", transport="udp", payload=b"SIP", **common)  # type: ignore[arg-type]
        exporter.send(direction="in", transport="udp", payload=b"a" * (MAX_PAYLOAD + 1), **common)  # type: ignore[arg-type]
        packet = await asyncio.wait_for(collector.packets.get(), 5)
    assert dict((kind, value) for _, kind, value in parse_hep3(packet))[0x0002] == b"\x06"
    assert exporter.statistics().dropped_invalid == 3


async def test_hep_exporter_queue_over_max_queue_drops_and_counts() -> None:
    exporter = HepExporter("udp:127.0.0.1:9", capture_id=1)
    await exporter.start()
    try:
        # No await in between: the writer task cannot run, so the queue fills.
        for _ in range(MAX_QUEUE + 1):
            exporter.send(
                direction="out",
                src=("127.0.0.1", 5060),
                dst=("127.0.0.1", 5062),
                transport="udp",
                payload=b"OPTIONS",
                call_id="q",
            )
        stats = exporter.statistics()
        assert (stats.queued, stats.dropped_queue_full) == (MAX_QUEUE, 1)
    finally:
        await exporter.stop()


async def _wait_until(condition: Callable[[], bool], what: str) -> None:
    try:
        async with asyncio.timeout(5):
            while not condition():
                await asyncio.sleep(0.01)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


async def test_hep_exporter_tcp_streams_packets_and_drops_while_down() -> None:
    received: asyncio.Queue[bytes] = asyncio.Queue()
    peers: list[asyncio.StreamWriter] = []

    async def collector(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peers.append(writer)
        # HEP over TCP: each packet's own length field frames it.
        with contextlib.suppress(asyncio.IncompleteReadError):
            while True:
                header = await reader.readexactly(6)
                (total,) = struct.unpack("!H", header[4:6])
                received.put_nowait(header + await reader.readexactly(total - 6))

    server = await asyncio.start_server(collector, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    exporter = HepExporter(f"tcp:127.0.0.1:{port}", capture_id=9)
    await exporter.start()
    message = {
        "direction": "in",
        "src": ("192.0.2.10", 5061),
        "dst": ("127.0.0.1", 5061),
        "transport": "tls",
        "call_id": INVITE_CALL_ID,
    }
    try:
        await _wait_until(lambda: exporter.statistics().connected, "connected")
        for n in range(3):
            exporter.send(payload=INVITE + str(n).encode(), **message)  # type: ignore[arg-type]
        packets = [await asyncio.wait_for(received.get(), 5) for _ in range(3)]
        payloads = [dict((k, v) for _, k, v in parse_hep3(p))[0x000F] for p in packets]
        assert payloads == [INVITE + b"0", INVITE + b"1", INVITE + b"2"]

        # The collector goes away: messages are dropped, not stored.
        server.close()
        peers[0].close()
        await _wait_until(lambda: not exporter.statistics().connected, "disconnected")
        exporter.send(payload=INVITE, **message)  # type: ignore[arg-type]
        stats = exporter.statistics()
        assert (stats.sent, stats.connects, stats.dropped_disconnected) == (3, 1, 1)
    finally:
        await exporter.stop()
        await server.wait_closed()


async def test_hep_exporter_tcp_collector_down_at_start_drops() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens on it
    exporter = HepExporter(f"tcp:127.0.0.1:{port}", capture_id=1)
    await exporter.start()
    try:
        exporter.send(
            direction="in",
            src=("127.0.0.1", 5060),
            dst=("127.0.0.1", 5060),
            transport="tcp",
            payload=b"x",
            call_id=None,
        )
        stats = exporter.statistics()
        assert (stats.connected, stats.dropped_disconnected, stats.sent) == (False, 1, 0)
    finally:
        await exporter.stop()


# -- real peers: sngrep receives the HEP, tshark reads the SIP ---------------------------

#: Link type of the test pcap: Ethernet (sngrep writes its output with the input's).
LINKTYPE_ETHERNET = 1


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def write_pcap(path: Path, udp_payload: bytes, *, dport: int, when: float) -> None:
    """A pcap with one Ethernet/IPv4/UDP frame 127.0.0.1:40000 -> 127.0.0.1:dport."""
    udp = struct.pack("!HHHH", 40_000, dport, 8 + len(udp_payload), 0) + udp_payload
    ip = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0, b"\x7f\0\0\1", b"\x7f\0\0\1"
    )
    ip = ip[:10] + struct.pack("!H", _checksum(ip)) + ip[12:]
    frame = b"\x02\0\0\0\0\2" + b"\x02\0\0\0\0\1" + b"\x08\x00" + ip + udp
    seconds = int(when)
    micros = round((when - seconds) * 1_000_000)
    path.write_bytes(
        struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65_535, LINKTYPE_ETHERNET)
        + struct.pack("<IIII", seconds, micros, len(frame), len(frame))
        + frame
    )


def tshark_fields(pcap: Path, *fields: str) -> list[list[str]]:
    argv = [require("tshark"), "-r", str(pcap), "-T", "fields"]
    for field in fields:
        argv += ["-e", field]
    out = subprocess.run(argv, capture_output=True, check=True, timeout=60).stdout.decode()
    return [line.split("\t") for line in out.splitlines()]


SIP_FIELDS = ("ip.src", "udp.srcport", "ip.dst", "udp.dstport", "sip.Method", "sip.Call-ID")


@pytest.mark.peers
def test_hep_pcap_sngrep_decapsulates_and_tshark_finds_call_id(tmp_path: Path) -> None:
    packet = encode(src=("192.0.2.10", 5060), dst=("198.51.100.7", 5062), proto=17, auth_key=None)
    write_pcap(tmp_path / "hep.pcap", packet, dport=9060, when=1_700_000_100.0)
    # The frame itself is right: tshark sees UDP to the HEP port with our packet in it.
    assert tshark_fields(tmp_path / "hep.pcap", "udp.dstport", "udp.length") == [
        ["9060", str(8 + len(packet))]
    ]
    subprocess.run(
        [require("sngrep"), "-F", "-N", "-q", "-E", "-I", str(tmp_path / "hep.pcap"),
         "-O", str(tmp_path / "sip.pcap")],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    # Addresses, ports and time come from the HEP chunks, the SIP from the payload.
    # (sngrep 1.6 writes a packet it decapsulated from a file twice.)
    rows = tshark_fields(tmp_path / "sip.pcap", "frame.time_epoch", *SIP_FIELDS)
    expected = [
        "1700000000.123456000",
        "192.0.2.10", "5060", "198.51.100.7", "5062", "INVITE", INVITE_CALL_ID,
    ]  # fmt: skip
    assert rows and rows == [expected] * len(rows)


def _udp_port_bound(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return True
        return False


def _udp_unread(port: int) -> int:
    """Bytes waiting in the receive queue of the UDP socket bound to 127.0.0.1:port."""
    local = f"0100007F:{port:04X}"
    for line in Path("/proc/net/udp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1] == local:
            return int(fields[4].split(":")[1], 16)
    return 0


@contextlib.contextmanager
def sngrep_listening(tmp_path: Path, password: str | None) -> Iterator[tuple[int, Path]]:
    """sngrep as a HEP collector on a free UDP port, writing what it gets to a pcap."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    if password is None:
        config = ["-F"]
    else:
        (tmp_path / "sngreprc").write_text(f"set eep.listen.pass {password}\n")
        config = ["-F", "-f", str(tmp_path / "sngreprc")]
    out = tmp_path / "collected.pcap"
    argv = [require("sngrep"), *config, "-N", "-q", "-L", f"udp:127.0.0.1:{port}", "-O", str(out)]
    with running(argv, log=tmp_path / "sngrep.log") as proc:
        wait_for(lambda: _udp_port_bound(port) or proc.poll() is not None, what="sngrep")
        assert proc.poll() is None, (tmp_path / "sngrep.log").read_text()
        yield port, out
    # running() stopped sngrep with SIGTERM, which flushes its pcap.


@pytest.mark.peers
def test_hep_exporter_to_live_sngrep_with_auth_key(tmp_path: Path) -> None:
    async def export(port: int, key: str, call_id: str) -> None:
        exporter = HepExporter(f"udp:127.0.0.1:{port}", capture_id=2001, auth_key=key)
        await exporter.start()
        exporter.send(
            direction="in",
            src=("203.0.113.5", 5060),
            dst=("192.0.2.1", 5060),
            transport="udp",
            payload=INVITE.replace(INVITE_CALL_ID.encode(), call_id.encode()),
            call_id=call_id,
            time=1_700_000_200.25,
        )
        await _wait_until(lambda: exporter.statistics().sent == 1, "sent")
        await exporter.stop()

    with sngrep_listening(tmp_path, password="homer-pw") as (port, out):
        asyncio.run(export(port, "homer-pw", "right-key@example"))
        asyncio.run(export(port, "wrong-pw", "wrong-key@example"))
        wait_for(lambda: _udp_unread(port) == 0, what="sngrep to read its socket")
        time.sleep(0.2)  # sngrep decodes and dumps right after each read
    # sngrep checked the auth key chunk: only the packet with the right key arrived.
    assert tshark_fields(out, "frame.time_epoch", *SIP_FIELDS) == [
        [
            "1700000200.250000000",
            "203.0.113.5", "5060", "192.0.2.1", "5060", "INVITE", "right-key@example",
        ]
    ]  # fmt: skip

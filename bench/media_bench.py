"""SRTP media relay throughput: N concurrent synthetic G.711 calls through the relay.

Three kinds of process, all on 127.0.0.1:

- **the relay under test**, alone in its process: ``media_bench.py relay`` runs an
  asyncio loop (uvloop when importable) with a :class:`voipsec.media.relay.MediaRelay`
  (``srtp="required"``, the default suites, DSCP EF) and takes JSON-line commands on
  stdin (offer, answer, release, profile). With ``--target rtpengine`` it is instead
  rtpengine's user-space daemon (``--table=-1``, one worker thread), driven through
  its ng control protocol (bencode over UDP); see :class:`Rtpengine` for how it is
  made to decrypt and re-encrypt.
- **the load generator(s)**: ``media_bench.py generate``. For every call it opens
  two endpoints, A (caller) and B (callee), each one UDP socket (symmetric RTP). A
  offers RTP/SAVP with its own SDES key; B answers the relay's offer with its own
  key. Each endpoint sends 50 packets/s (20 ms G.711: 12-byte RTP header + 160-byte
  payload, protected with pylibsrtp) to the relay's port for its leg. Sends are
  spread evenly over each 20 ms period. Packets are protected before the timed run
  and what arrives is only recorded (bytes, arrival time) during it, so that the
  generator's run-time cost is one send and one receive per packet. After the run
  every received datagram is authenticated and decrypted with the key the relay gave
  that leg, in arrival order, and its header (SSRC, sequence) and payload (stream,
  index, a per-stream pattern) are checked. Its latency is taken against the send
  time of the same packet (both ends of a call are in one generator: one clock).
- **this orchestrator**, which sets the calls up through the relay, starts the
  generators at a common monotonic instant, samples the relay's CPU time from
  ``/proc/PID/stat`` (utime + stime, all threads) over the steady part of the run,
  and collects the results.

Per step of N calls (N x 100 packets/s relayed), for a bounded duration:

- relayed packets/s = packets received intact by the endpoints / seconds of sending;
- loss = sent - received intact within 0.5 s after the last send; failed
  authentication, payload mismatches and duplicates are counted apart and fail the
  step too;
- latency median and p99 end to end (endpoint send -> relay -> endpoint receive);
  a *direct* run (A and B send to each other, no relay) at the same N gives the
  generator + loopback baseline, so "added" latency = through the relay - direct;
- relay CPU % of one core over the steady window; packets per relay CPU-second.

**DTLS-SRTP legs** (``--keying dtls``, or ``both`` for each step with either, side by
side; issue 17): A is then browser-like: its offer is ``UDP/TLS/RTP/SAVPF`` with the
fingerprint of its own certificate (one per call, as per RTCPeerConnection),
``a=setup:actpass`` and rtcp-mux, no ICE (so the voipsec relay takes the handshake
from the leg's SIP source, 127.0.0.1, which the relay process is given). The relay
answers with its fingerprint; the generator runs every call's handshake at once, in
the role the answer gave it (client to voipsec's ``passive``, server to rtpengine's
``active``), before the timed run, and protects and checks A's packets with the
handshake's keys. B stays an SDES desk phone. The handshakes' wall time, failures,
retransmissions and the relay's CPU meanwhile are the step's setup figures. A offers
one use_srtp profile, ``--suite``'s unless ``--dtls-suite`` names another, so both
legs run the same libsrtp transform by default. The relay process sweeps once a
second, as a media worker does: DTLS retransmissions and deadlines run there.

A step passes with 0 lost, 0 bad packets, the generator reaching >= 99 % of the
asked send rate, and the relay below 100 % of a core. voipsec also loses each call's
first packet (sent before the far leg latched, which the relay then does not
forward: docs/media.md); they are counted apart ("first"), and the side-by-side
table's verdict leaves them out. The load generator and the
relay share the machine's cores; the generators' CPU and the machine's busy share
are reported for that reason.

    python bench/media_bench.py                                  # voipsec, default steps
    python bench/media_bench.py --target both --json /tmp/media.json
    python bench/media_bench.py --calls 50,100 --seconds 5 --no-direct --profile-calls 0
    python bench/media_bench.py --workers 2 --calls 400,500 --no-direct --profile-calls 0
    python bench/media_bench.py --target both --keying both --calls 50,100 --seconds 5 \
        --no-direct --profile-calls 0                             # SDES-SDES vs DTLS-SDES
    python bench/media_bench.py cost --packets 5000 --keying dtls  # under callgrind
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import secrets
import select
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))

HOST = "127.0.0.1"
#: Packets per second per direction of a call: 20 ms G.711 packetization.
PPS = 50
PERIOD_NS = 1_000_000_000 // PPS
PAYLOAD = 160
DEFAULT_CALLS = (50, 100, 200, 300, 400, 500, 600)
DEFAULT_SUITE = "AES_CM_128_HMAC_SHA1_80"
#: Relay port ranges: below call_bench's 20000-32767 voipsec range is taken, the
#: kernel's ephemeral range (32768-60999) holds the generators' sockets.
VOIPSEC_PORTS = (61000, 65534)
RTPENGINE_PORTS = (61000, 65534)
#: Seconds at the start of a run left out of the CPU window (setup, latching).
WARMUP = 1.0
#: Seconds after the last send for packets in flight to arrive.
DRAIN = 0.5
#: Steps stop after this many consecutive failed steps.
MAX_FAILED_STEPS = 2
#: A step passes only when the generators sent at least this share of the asked rate.
RATE_TOLERANCE = 0.99
#: A step during which other work used more than this many cores is run again.
DISTURBED = 0.15
#: Generous bound on any control request (setting up hundreds of calls included).
REQUEST_TIMEOUT = 60.0
#: How A is keyed (--keying): "sdes" as a desk phone, "dtls" as a browser
#: (UDP/TLS/RTP/SAVPF, RFC 5763/5764, no ICE); B is always an SDES desk phone.
KEYINGS = ("sdes", "dtls")
#: Seconds between the bench relay's sweeps, as the media workers' NOTICE_INTERVAL:
#: DTLS handshake retransmissions and deadlines run in MediaRelay.sweep().
SWEEP_INTERVAL = 1.0
#: Seconds the generator waits for all its calls' DTLS handshakes: the relay's own
#: deadline (media.dtls.DTLS_HANDSHAKE_TIMEOUT, 10 s) plus margin.
HANDSHAKE_LIMIT = 15.0


# -- child processes: JSON lines over pipes, every read bounded ---------------------------


class Child:
    """A child process spoken to with one JSON object per line."""

    def __init__(self, argv: Sequence[str], *, stderr: Path | None = None) -> None:
        self._err = open(stderr, "ab") if stderr else subprocess.DEVNULL  # noqa: SIM115
        self.proc = subprocess.Popen(
            list(argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._err, bufsize=0
        )
        self._buf = b""

    @property
    def pid(self) -> int:
        return self.proc.pid

    def send(self, obj: object) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(obj).encode() + b"\n")

    def read(self, timeout: float = REQUEST_TIMEOUT) -> dict:
        assert self.proc.stdout is not None
        end = time.monotonic() + timeout
        while b"\n" not in self._buf:
            left = end - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"child {self.pid} did not answer in {timeout:.0f} s")
            ready, _, _ = select.select([self.proc.stdout], [], [], left)
            if ready:
                chunk = os.read(self.proc.stdout.fileno(), 1 << 20)
                if not chunk:
                    raise RuntimeError(f"child {self.pid} exited ({self.proc.poll()})")
                self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        reply = json.loads(line)
        if "error" in reply:
            raise RuntimeError(f"child {self.pid}: {reply['error']}")
        return reply

    def request(self, obj: object, timeout: float = REQUEST_TIMEOUT) -> dict:
        self.send(obj)
        return self.read(timeout)

    def close(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(OSError):
                self.send({"op": "quit"})
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        if self._err is not subprocess.DEVNULL:
            self._err.close()


def cpu_times(pid: int) -> tuple[float, float]:
    """(utime, stime) of a process and its threads, in seconds."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0, 0.0
    fields = text[text.rindex(")") + 2 :].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def relay_times(relay: Relay | None) -> tuple[float, float]:
    """utime and stime of every relay process together (zero without a relay)."""
    if relay is None:
        return (0.0, 0.0)
    times = [cpu_times(pid) for pid in relay.pids]
    return (sum(t[0] for t in times), sum(t[1] for t in times))


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process and its threads, in seconds."""
    return sum(cpu_times(pid))


def machine_busy() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


def wait_idle(limit: float, *, quiet: float = 4.0, share: float = 0.10) -> float:
    """Wait (at most ``limit`` s) until the machine was < ``share`` busy for ``quiet`` s.

    The bench shares the machine with whatever else runs; a step started while other
    work is going on measures that work too. Returns the seconds waited.
    """
    start = time.monotonic()
    calm = 0.0
    while time.monotonic() - start < limit:
        a = machine_busy()
        time.sleep(1.0)
        b = machine_busy()
        busy = (b[0] - a[0]) / max(1, b[1] - a[1])
        calm = calm + 1.0 if busy < share else 0.0
        if calm >= quiet:
            break
    return time.monotonic() - start


#: taskset prefixes: the relay on one core, the generators on the other (--pin).
PIN: dict[str, list[str]] = {"relay": [], "generator": []}


def udp_errors() -> int:
    """Kernel UDP receive-buffer drops (machine-wide), from /proc/net/snmp."""
    lines = [
        ln.split()
        for ln in Path("/proc/net/snmp").read_text().splitlines()
        if ln.startswith("Udp:")
    ]
    names, values = lines[0], lines[1]
    return int(values[names.index("RcvbufErrors")])


# -- SDP ------------------------------------------------------------------------------------


def endpoint_sdp(port: int, suite: str, tag: int, master: bytes, session: int) -> bytes:
    key = base64.b64encode(master).decode()
    return (
        f"v=0\r\no=- {session} 1 IN IP4 {HOST}\r\ns=-\r\nc=IN IP4 {HOST}\r\nt=0 0\r\n"
        f"m=audio {port} RTP/SAVP 0\r\na=rtpmap:0 PCMU/8000\r\na=ptime:20\r\n"
        f"a=sendrecv\r\na=rtcp-mux\r\na=crypto:{tag} {suite} inline:{key}\r\n"
    ).encode()


def browser_sdp(port: int, fingerprint: str, session: int) -> bytes:
    """A WebRTC-like offer without ICE (RFC 5763 §5, RFC 8842): DTLS-SRTP with AVPF,
    our certificate's fingerprint, actpass as an offerer must say, rtcp-mux.

    Without ICE the relay takes the handshake only from the address the leg's SIP came
    from (media/dtlsleg.py): the relay process is told that is 127.0.0.1."""
    return (
        f"v=0\r\no=- {session} 2 IN IP4 {HOST}\r\ns=-\r\nt=0 0\r\n"
        f"m=audio {port} UDP/TLS/RTP/SAVPF 0\r\nc=IN IP4 {HOST}\r\n"
        f"a=rtpmap:0 PCMU/8000\r\na=ptime:20\r\na=fingerprint:{fingerprint}\r\n"
        "a=setup:actpass\r\na=mid:0\r\na=sendrecv\r\na=rtcp-mux\r\n"
    ).encode()


def dtls_side(body: bytes, *, passive: bool = True) -> tuple[int, str, str]:
    """(port, fingerprint, our DTLS role) of the relay's DTLS-SRTP answer to a
    browser-like offer. voipsec must answer passive (docs/webrtc.md: the browser is the
    client); rtpengine answers an actpass offer active (``passive=False`` allows it)."""
    from voipsec.media.dtlsleg import DTLS_PROTO, attribute
    from voipsec.media.sdp import parse_sdp

    sdp = parse_sdp(body)
    audio = next(m for m in sdp.media if m.kind == "audio")
    fingerprint = attribute(sdp, audio, "fingerprint")
    setup = attribute(sdp, audio, "setup")
    roles = ("passive", "active") if not passive else ("passive",)
    if audio.proto != DTLS_PROTO or audio.crypto or not fingerprint or setup not in roles:
        raise RuntimeError(
            f"the relay's answer to a browser is not passive DTLS-SRTP: {audio.proto}, "
            f"setup {setup}, {len(audio.crypto)} a=crypto"
        )
    return audio.port, fingerprint, "client" if setup == "passive" else "server"


def relay_side(body: bytes, suite: str) -> tuple[int, int, bytes]:
    """(port, crypto tag, master key) of the relay's SDP for ``suite``."""
    from voipsec.media.sdes import master_of
    from voipsec.media.sdp import parse_sdp

    sdp = parse_sdp(body)
    audio = next(m for m in sdp.media if m.kind == "audio")
    crypto = next((c for c in audio.crypto if c.suite == suite), None)
    if crypto is None:
        raise RuntimeError(f"the relay's SDP offers no {suite}")
    return audio.port, crypto.tag, master_of(crypto)


# -- the voipsec relay process ------------------------------------------------------------


def relay_main(args: argparse.Namespace) -> None:
    import asyncio

    try:
        import uvloop

        uvloop.install()
        loop_name = f"uvloop {uvloop.__version__}"
    except ImportError:
        loop_name = "asyncio"

    from voipsec.media import relay as relay_module
    from voipsec.media.destinations import MediaPeer
    from voipsec.media.legs import UNKNOWN_PEER
    from voipsec.media.relay import MediaRelay

    if args.read_batch:
        relay_module.READ_BATCH = args.read_batch
    from voipsec.media.sdes import DEFAULT_PREFERENCE

    # A browser leg without ICE handshakes only from its SIP source (dtlsleg); SDES
    # legs keep the default (nothing sent before latching), as in every earlier run.
    sip_source = MediaPeer(source=HOST)

    low, high = (int(p) for p in args.ports.split("-"))

    async def serve() -> None:
        relay = MediaRelay(
            address=HOST,
            ports=(low, high),
            srtp="required",
            suites=DEFAULT_PREFERENCE,
            timeout=3600.0,
        )
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        buf = bytearray()
        profiler = None
        failures: Counter[str] = Counter()

        async def sweeping() -> None:
            """The media workers' periodic sweep: DTLS retransmissions and deadlines."""
            while True:
                await asyncio.sleep(SWEEP_INTERVAL)
                relay.sweep()
                failures.update(why for _, why in relay.failures())

        sweeper = asyncio.create_task(sweeping())

        def reply(obj: object) -> None:
            sys.stdout.write(json.dumps(obj) + "\n")
            sys.stdout.flush()

        def handle(cmd: dict) -> None:
            nonlocal profiler
            op = cmd["op"]
            if op == "hello":
                reply({"loop": loop_name})
            elif op == "offer":
                peer = sip_source if cmd.get("dtls") else UNKNOWN_PEER
                out = {
                    c: relay.offer(c, "a", sdp.encode(), peer).decode() for c, sdp in cmd["calls"]
                }
                reply({"sdp": out})
            elif op == "answer":
                out = {}
                for c, sdp in cmd["calls"]:
                    out[c] = relay.answer(c, "b", sdp.encode()).decode()
                    relay.answered(c)
                reply({"sdp": out})
            elif op == "stats":
                reply(
                    {
                        "relayed": relay.statistics().relayed_packets,
                        "dtls_handshakes": relay.dtls_handshakes,
                        "dtls_failures": relay.dtls_failures,
                        "failures": dict(failures),
                    }
                )
            elif op == "release":
                totals: Counter[str] = Counter()
                suites: Counter[str] = Counter()
                for c in list(relay._calls):
                    for leg in relay.report(c):
                        suites[leg.suite] += 1
                        r = leg.received
                        totals.update(
                            packets=r.packets,
                            lost=r.lost,
                            auth_failures=r.auth_failures,
                            replays=r.replays,
                            wrong_source=r.wrong_source,
                            malformed=r.malformed,
                        )
                    relay.release(c)
                    relay.report(c)  # collect the final report: none is kept
                reply(
                    {
                        "legs": dict(totals),
                        "suites": dict(suites),
                        "relayed": relay.statistics().relayed_packets,
                    }
                )
            elif op == "profile_start":
                import cProfile

                profiler = cProfile.Profile()
                profiler.enable()
                reply({})
            elif op == "profile_stop":
                import io
                import pstats

                assert profiler is not None
                profiler.disable()
                text = io.StringIO()
                stats = pstats.Stats(profiler, stream=text)
                stats.sort_stats("tottime").print_stats(cmd.get("top", 25))
                profiler = None
                reply({"profile": text.getvalue(), "total": stats.total_tt})
            elif op == "quit":
                reply({})
                done.set_result(None)
            else:
                reply({"error": f"unknown op {op}"})

        def readable() -> None:
            chunk = os.read(0, 1 << 20)
            if not chunk:
                if not done.done():
                    done.set_result(None)
                return
            buf.extend(chunk)
            while b"\n" in buf:
                line, _, rest = bytes(buf).partition(b"\n")
                buf[:] = rest
                try:
                    handle(json.loads(line))
                except Exception as err:
                    reply({"error": f"{type(err).__name__}: {err}"})

        loop.add_reader(0, readable)
        await done
        sweeper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sweeper
        relay.close()

    asyncio.run(serve())


# -- the relay's own cost per packet, for callgrind ----------------------------------------


def cost_main(args: argparse.Namespace) -> None:
    """One call through a MediaRelay, its readiness callback driven by hand.

    For deterministic comparisons on a noisy machine: run it under ``valgrind
    --tool=callgrind`` with ``--packets 0`` and ``--packets N``; the difference of the
    two instruction counts over N is the cost of one packet, one readiness event each
    (the low-load case), the harness's own sends, receives and checks included;
    ``--no-relay`` measures the harness alone. Every packet is checked on the far
    side, as in the bench.
    """
    import asyncio

    import pylibsrtp

    from voipsec.media import relay as relay_module
    from voipsec.media.destinations import MediaPeer
    from voipsec.media.relay import MediaRelay
    from voipsec.media.sdes import SUITES, inbound_policy, outbound_policy

    if args.read_batch:
        relay_module.READ_BATCH = args.read_batch
    suite = SUITES[args.suite]

    async def run() -> None:
        relay = MediaRelay(
            address=HOST,
            ports=VOIPSEC_PORTS,
            srtp="required",
            suites=(args.suite,),
            timeout=3600.0,
            dscp=0,
        )
        a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        a.bind((HOST, 0))
        b.bind((HOST, 0))
        a_master, b_master = os.urandom(30), os.urandom(30)
        dtls_suite = args.dtls_suite or args.suite
        browser = browser_identities(1, dtls_suite)[0] if args.keying == "dtls" else None
        if browser is None:
            a_sdp = endpoint_sdp(a.getsockname()[1], args.suite, 1, a_master, 1)
            offer = relay.offer("cost", "a", a_sdp)
        else:
            a_sdp = browser_sdp(a.getsockname()[1], str(browser.fingerprint), 1)
            offer = relay.offer("cost", "a", a_sdp, MediaPeer(source=HOST))
        _, tag, b_rx = relay_side(offer, args.suite)
        answer = relay.answer(
            "cost", "b", endpoint_sdp(b.getsockname()[1], args.suite, tag, b_master, 2)
        )
        relay.answered("cost")
        leg = relay._calls["cost"].legs["a"]
        a_suite = suite
        if browser is None:
            port_a, _, _ = relay_side(answer, args.suite)
            sender = pylibsrtp.Session(outbound_policy(suite, a_master))
        else:
            port_a, fingerprint, _ = dtls_side(answer)
            keys = handshake_by_hand(relay, leg, a, port_a, browser, fingerprint)
            a_master, a_suite = keys.local_master, keys.suite  # for --no-relay's check
            sender = pylibsrtp.Session(keys.outbound())
        header = bytes([0x80, 0])
        a.settimeout(5.0)
        b.settimeout(5.0)
        clear = [
            header
            + seq.to_bytes(2, "big")
            + (seq * PAYLOAD).to_bytes(4, "big")
            + b"\x11" * 4
            + seq.to_bytes(4, "big") * (PAYLOAD // 4)
            for seq in range(1, args.packets + 1)
        ]
        packets = [sender.protect(p) for p in clear]
        # Both legs latch first: before that, nothing goes to an address taken from an
        # SDP that names this host (see voipsec.media.destinations).
        a.sendto(sender.protect(header + bytes(6) + bytes(PAYLOAD)), (HOST, port_a))
        relay._readable(leg, leg.rtp, False)
        latch = relay._calls["cost"].legs["b"]
        b_tx = pylibsrtp.Session(outbound_policy(suite, b_master))
        b.sendto(b_tx.protect(header + bytes(6) + bytes(PAYLOAD)), (HOST, latch.port))
        relay._readable(latch, latch.rtp, False)
        a.recv(2048)
        readable = relay._readable
        target = (HOST, port_a)
        b_suite = suite
        if args.no_relay:  # the harness alone: A sends straight to B, B checks A's key
            readable, target, b_rx, b_suite = _nothing, b.getsockname(), a_master, a_suite
        got = []
        started = time.process_time()
        for packet in packets:
            a.sendto(packet, target)
            readable(leg, leg.rtp, False)
            got.append(b.recv(2048))
        spent = time.process_time() - started
        receiver = pylibsrtp.Session(inbound_policy(b_suite, b_rx))
        ok = sum(receiver.unprotect(g) == c for g, c in zip(got, clear, strict=True))
        relay.close()
        print(
            json.dumps(
                {
                    "packets": args.packets,
                    "verified": ok,
                    "cpu_us_per_packet": 1e6 * spent / max(1, args.packets),
                }
            )
        )
        if ok != args.packets:
            raise SystemExit("packets lost or corrupted")

    asyncio.run(run())


def _nothing(*_: object) -> None:
    """The relay's readiness callback, left out (``cost --no-relay``)."""


def handshake_by_hand(
    relay: Any, leg: Any, sock: socket.socket, port: int, identity: Any, fp: str
) -> Any:
    """``cost --keying dtls``: A's DTLS handshake (client) with the relay's leg, the
    relay's readiness callback called by hand as for the packets; A's SrtpKeys.

    The handshake happens before the measured packets, so it is in both callgrind
    runs (``--packets 0`` and ``--packets N``) and cancels out of the difference."""
    from voipsec.media.dtls import ESTABLISHED, HANDSHAKING, DtlsEndpoint
    from voipsec.media.fingerprint import parse_fingerprint

    endpoint = DtlsEndpoint(identity, "client", [parse_fingerprint(fp)], time.monotonic())
    sock.settimeout(1.0)  # a lost flight: the endpoint's timer sends it again
    out = endpoint.start(time.monotonic())
    deadline = time.monotonic() + HANDSHAKE_LIMIT
    while endpoint.state == HANDSHAKING and time.monotonic() < deadline:
        for datagram in out:
            sock.sendto(datagram, (HOST, port))
        relay._readable(leg, leg.rtp, False)
        try:
            out = endpoint.receive(sock.recv(4096), time.monotonic())
        except TimeoutError:
            out = endpoint.poll(time.monotonic())
    if endpoint.state != ESTABLISHED or endpoint.keys is None:
        raise SystemExit(f"DTLS handshake with the relay failed: {endpoint.failure}")
    sock.settimeout(0.05)  # the relay's last flight may have come in more datagrams
    with contextlib.suppress(TimeoutError):
        while True:
            sock.recv(4096)
    sock.settimeout(5.0)
    return endpoint.keys


# -- rtpengine, through its ng protocol ----------------------------------------------------


def bencode(value: object) -> bytes:
    if isinstance(value, int):
        return b"i%de" % value
    if isinstance(value, str):
        value = value.encode()
    if isinstance(value, bytes):
        return b"%d:%s" % (len(value), value)
    if isinstance(value, list):
        return b"l" + b"".join(bencode(v) for v in value) + b"e"
    if isinstance(value, dict):
        return b"d" + b"".join(bencode(k) + bencode(value[k]) for k in sorted(value)) + b"e"
    raise TypeError(type(value))


def bdecode(data: bytes, i: int = 0) -> tuple[object, int]:
    c = data[i : i + 1]
    if c == b"i":
        end = data.index(b"e", i)
        return int(data[i + 1 : end]), end + 1
    if c == b"l":
        i += 1
        items = []
        while data[i : i + 1] != b"e":
            v, i = bdecode(data, i)
            items.append(v)
        return items, i + 1
    if c == b"d":
        i += 1
        d = {}
        while data[i : i + 1] != b"e":
            k, i = bdecode(data, i)
            v, i = bdecode(data, i)
            d[k.decode() if isinstance(k, bytes) else k] = v
        return d, i + 1
    colon = data.index(b":", i)
    n = int(data[i:colon])
    return data[colon + 1 : colon + 1 + n], colon + 1 + n


class Rtpengine:
    """rtpengine's user-space daemon with one worker thread, and an ng client.

    With SDES and the same suite on both legs, rtpengine copies the offerer's key into
    its offer to the other leg and the answerer's key into its answer (SRTP<>SRTP
    pass-through), and then forwards SRTP without touching it. rtpengine 10.5 has no
    flag to force fresh per-leg keys; it decrypts and re-encrypts ("must recrypt")
    when, among other cases, DTMF logging is on. ``recrypt=True`` turns that on
    (``--dtmf-log-dest`` to the discard port; the bench sends no DTMF events), so
    every packet is authenticated, decrypted and encrypted again as voipsec does,
    with the same keys on both legs. ``recrypt=False`` measures the pass-through.
    """

    def __init__(
        self, workdir: Path, ports: tuple[int, int], threads: int, *, recrypt: bool
    ) -> None:
        binary = shutil.which("rtpengine")
        if binary is None:
            raise RuntimeError("rtpengine is not installed (Debian package rtpengine-daemon)")
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        probe.bind((HOST, 0))
        self.ng = probe.getsockname()[1]
        probe.close()
        self.log = workdir / "rtpengine.log"
        argv = [
            binary,
            "--foreground",
            "--table=-1",
            f"--interface={HOST}",
            f"--listen-ng={HOST}:{self.ng}",
            f"--port-min={ports[0]}",
            f"--port-max={ports[1]}",
            f"--num-threads={threads}",
            "--media-num-threads=0",
            "--log-stderr",
            "--log-level=4",
            "--delete-delay=0",
            "--timeout=3600",
            "--tos=184",
        ]
        if recrypt:
            argv.append(f"--dtmf-log-dest={HOST}:9")
        self._out = open(self.log, "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            PIN["relay"] + argv, stdout=self._out, stderr=subprocess.STDOUT
        )
        self.pid = self.proc.pid
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.settimeout(2.0)
        end = time.monotonic() + 20
        while True:
            try:
                if self.command({"command": "ping"}).get("result") == b"pong":
                    break
            except (TimeoutError, OSError):
                pass
            if time.monotonic() > end or self.proc.poll() is not None:
                raise RuntimeError(f"rtpengine did not start: see {self.log}")
            time.sleep(0.2)
        self.calls: list[str] = []

    def command(self, body: dict) -> dict:
        cookie = secrets.token_hex(6).encode()
        self.sock.sendto(cookie + b" " + bencode(body), (HOST, self.ng))
        while True:
            data, _ = self.sock.recvfrom(65536)
            got, _, rest = data.partition(b" ")
            if got == cookie:
                reply, _ = bdecode(rest)
                assert isinstance(reply, dict)
                if reply.get("result") == b"error":
                    raise RuntimeError(f"rtpengine: {reply.get('error-reason')!r}")
                return reply

    def offer(self, calls: Sequence[tuple[str, str]], *, dtls: bool = False) -> dict[str, str]:
        """``dtls``: A is a browser (DTLS-SRTP); B is offered SDES (RTP/SAVP)."""
        out = {}
        for call, sdp in calls:
            reply = self.command(
                {
                    "command": "offer",
                    "call-id": call,
                    "from-tag": "a",
                    "sdp": sdp,
                    "ICE": "remove",
                    "replace": ["origin", "session-connection"],
                }
                | ({"transport-protocol": "RTP/SAVP"} if dtls else {})
            )
            out[call] = reply["sdp"].decode()
            self.calls.append(call)
        return out

    def answer(self, calls: Sequence[tuple[str, str]], *, dtls: bool = False) -> dict[str, str]:
        """``dtls``: the answer to A goes back as DTLS-SRTP. rtpengine 10.5 answers an
        actpass offer ``active`` and opens the handshake itself (with ``DTLS: passive``
        it still sent a ClientHello while writing passive), so A is the DTLS server."""
        out = {}
        for call, sdp in calls:
            reply = self.command(
                {
                    "command": "answer",
                    "call-id": call,
                    "from-tag": "a",
                    "to-tag": "b",
                    "sdp": sdp,
                    "ICE": "remove",
                    "replace": ["origin", "session-connection"],
                }
                | ({"transport-protocol": "UDP/TLS/RTP/SAVPF"} if dtls else {})
            )
            out[call] = reply["sdp"].decode()
        return out

    def release(self) -> None:
        for call in self.calls:
            with contextlib.suppress(RuntimeError, TimeoutError):
                self.command({"command": "delete", "call-id": call, "from-tag": "a"})
        self.calls.clear()

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
        self._out.close()
        self.sock.close()


# -- the load generator process -------------------------------------------------------------


def browser_identities(calls: int, suite: str) -> dict:
    """A DTLS identity per A socket (socket 2c of call c), offering only ``suite``.

    A browser offers several use_srtp profiles and the relay takes the first it
    prefers (AES-256-GCM); offering only the SDES legs' suite keeps the comparison
    per packet like for like (both legs run the same libsrtp transform)."""
    import datetime

    from voipsec.media.dtlsidentity import SRTP_PROFILES, DtlsIdentity

    profile = next((name for name, s in SRTP_PROFILES.items() if s.name == suite), None)
    if profile is None:
        raise SystemExit(f"--keying dtls: no DTLS-SRTP profile for {suite} (RFC 5764 §4.1.2)")
    now = datetime.datetime.now(datetime.UTC)
    out = {}
    for c in range(calls):
        identity = DtlsIdentity.generate(now)
        # The bench's own restriction, on the bench's side only (see the docstring).
        identity._context.set_tlsext_use_srtp(profile.encode("ascii"))
        out[2 * c] = identity
    return out


def handshake_all(socks: list[socket.socket], identities: dict, remote: dict) -> tuple[dict, dict]:
    """Every browser socket's DTLS handshake with the relay, all at once, retransmitting
    on the endpoints' timers. ``remote``: socket -> (the relay's fingerprint, our role);
    client when the relay answered passive (voipsec), server when active (rtpengine).

    Returns each socket's :class:`SrtpKeys` and what the setup took: wall seconds from
    the first ClientHello to the last handshake settled, this process's CPU, failures.
    """
    from voipsec.media.dtls import ESTABLISHED, HANDSHAKING, DtlsEndpoint
    from voipsec.media.fingerprint import parse_fingerprint

    clock = time.monotonic
    start, cpu0 = clock(), time.process_time()
    endpoints = {
        j: DtlsEndpoint(ident, remote[j][1], [parse_fingerprint(remote[j][0])], start)
        for j, ident in identities.items()
    }
    ep = select.epoll()
    by_fd = {socks[j].fileno(): j for j in endpoints}
    for fd in by_fd:
        ep.register(fd, select.EPOLLIN)

    def send(j: int, datagrams: list[bytes]) -> None:
        for d in datagrams:
            with contextlib.suppress(BlockingIOError, ConnectionRefusedError):
                socks[j].send(d)  # a lost flight is sent again on the endpoint's timer

    for j, endpoint in endpoints.items():
        send(j, endpoint.start(clock()))
    pending = set(endpoints)
    while pending and clock() - start < HANDSHAKE_LIMIT:
        now = clock()
        due = min((endpoints[j].next_timer(now) or now + 0.1 for j in pending), default=now)
        for fd, _ in ep.poll(min(0.1, max(0.0, due - now))):
            j = by_fd[fd]
            while True:
                try:
                    data = socks[j].recv(4096)
                except BlockingIOError:
                    break
                except ConnectionRefusedError:
                    continue
                send(j, endpoints[j].receive(data, clock()))
        now = clock()
        for j in list(pending):
            endpoint = endpoints[j]
            timer = endpoint.next_timer(now)
            if timer is not None and timer <= now:
                send(j, endpoint.poll(now))
            if endpoint.state != HANDSHAKING:
                pending.discard(j)
    wall, cpu = clock() - start, time.process_time() - cpu0
    ep.close()
    done = {j: e.keys for j, e in endpoints.items() if e.state == ESTABLISHED and e.keys}
    failed = Counter(e.failure or e.state for e in endpoints.values() if e.state != ESTABLISHED)
    return done, {
        "handshakes": len(done),
        "failed": dict(failed),
        "seconds": wall,
        "cpu": cpu,
        "retransmits": sum(e.statistics().retransmits for e in endpoints.values()),
    }


def generate_main(args: argparse.Namespace) -> None:
    import pylibsrtp

    from voipsec.media.sdes import SUITES, inbound_policy, outbound_policy

    def reply(obj: object) -> None:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()

    def read() -> dict:
        line = sys.stdin.readline()
        if not line:
            sys.exit(0)
        return json.loads(line)

    cmd = read()  # {"op": "open", "calls": n, "suite": name, "keying": "sdes" | "dtls"}
    suite = SUITES[cmd["suite"]]
    calls = cmd["calls"]
    socks: list[socket.socket] = []  # 2c: A of call c, 2c + 1: B of call c
    for _ in range(2 * calls):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setblocking(False)
        s.bind((HOST, 0))
        socks.append(s)
    keys = [secrets.token_bytes(suite.master_length) for _ in socks]
    # Browser-like A endpoints: a certificate each, as each RTCPeerConnection has.
    dtls_suite = cmd.get("dtls_suite") or cmd["suite"]
    browsers = browser_identities(calls, dtls_suite) if cmd.get("keying") == "dtls" else {}
    reply(
        {
            "ports": [s.getsockname()[1] for s in socks],
            "keys": [base64.b64encode(k).decode() for k in keys],
            "fingerprints": {str(j): str(ident.fingerprint) for j, ident in browsers.items()},
        }
    )

    # {"op": "peer", "to": [port per socket], "rx_keys": [b64 per socket], "seconds": s,
    #  "dtls": {socket: [the relay's fingerprint, our role]}} (no rx key for a DTLS
    #  socket: the handshake makes it)
    cmd = read()
    seconds = float(cmd["seconds"])
    per_stream = round(seconds * PPS)
    streams = len(socks)  # stream i is sent by socket i to its peer socket i ^ 1
    for s, port in zip(socks, cmd["to"], strict=True):
        s.connect((HOST, port))
    tx_policy = [outbound_policy(suite, k) for k in keys]
    rx_policy = [inbound_policy(suite, base64.b64decode(k)) if k else None for k in cmd["rx_keys"]]
    setup: dict = {"handshakes": 0}
    if browsers:
        remote = {int(j): (fp, role) for j, (fp, role) in cmd["dtls"].items()}
        done, setup = handshake_all(socks, browsers, remote)
        if len(done) != len(browsers):
            reply({"error": f"DTLS handshakes failed: {setup['failed']}"})
            sys.exit(1)
        sdes = set(keys) | {base64.b64decode(k) for k in cmd["rx_keys"] if k}
        setup["shared_keys"] = 0
        for j, got in done.items():
            tx_policy[j], rx_policy[j] = got.outbound(), got.inbound()
            setup["shared_keys"] += len({got.local_master, got.remote_master} & sdes)
            setup["suite"] = got.suite.name
    rx = [pylibsrtp.Session(policy=p) for p in rx_policy]

    # Everything sent is made and protected now, out of the timed run.
    ssrcs = [secrets.randbits(32) for _ in range(streams)]
    seq0 = [secrets.randbelow(65536 - per_stream) for _ in range(streams)]
    fillers = [bytes((i * 7 + j) & 0xFF for j in range(PAYLOAD - 6)) for i in range(streams)]
    packets: list[list[bytes]] = []
    for i in range(streams):
        tx = pylibsrtp.Session(policy=tx_policy[i])
        ts0 = secrets.randbits(31)
        packets.append(
            [
                tx.protect(
                    struct.pack(
                        ">BBHII", 0x80, 0, seq0[i] + k, (ts0 + 160 * k) & 0xFFFFFFFF, ssrcs[i]
                    )
                    + struct.pack(">IH", i, k)
                    + fillers[i]
                )
                for k in range(per_stream)
            ]
        )
    reply({"ready": True, "setup": setup})

    cmd = read()  # {"op": "go", "t0": monotonic ns}
    t0 = int(cmd["t0"])
    total = streams * per_stream
    sent_ns = [[0] * per_stream for _ in range(streams)]
    lat = [[-1] * per_stream for _ in range(streams)]  # ns, -1: not (yet) received
    # During the run a receiving socket only records what arrived and when; every
    # datagram is authenticated and checked after the run (in arrival order, so
    # libsrtp's replay window sees what it would have seen live).
    arrivals: list[list] = [[] for _ in socks]  # per receiving socket j: [data, ns, ...]
    by_fd = {s.fileno(): (s.recv, arrivals[j].append) for j, s in enumerate(socks)}
    ep = select.epoll()
    for s in socks:
        ep.register(s.fileno(), select.EPOLLIN)
    send_fail = 0
    clock = time.monotonic_ns
    send = [s.send for s in socks]
    end_ns = t0 + per_stream * PERIOD_NS + int(DRAIN * 1e9)

    while clock() < t0:
        time.sleep(min(0.01, max(0.0, (t0 - clock()) / 1e9)))
    cpu0 = time.process_time()
    n = 0  # packets sent, in schedule order: packet n is due at t0 + n * PERIOD / streams
    while True:
        now = clock()
        while n < total and t0 + n * PERIOD_NS // streams <= now:
            i = n % streams
            k = n // streams
            try:
                send[i](packets[i][k])
            except (BlockingIOError, ConnectionRefusedError):
                send_fail += 1
            sent_ns[i][k] = clock()
            n += 1
        if n >= total and now >= end_ns:
            break
        due = t0 + n * PERIOD_NS // streams if n < total else end_ns
        wait = max(0.0, (due - clock()) / 1e9)
        for fd, _ in ep.poll(wait):
            recv, record = by_fd[fd]
            while True:
                try:
                    data = recv(2048)
                except BlockingIOError:
                    break
                except ConnectionRefusedError:
                    continue
                record(data)
                record(clock())
    cpu = time.process_time() - cpu0

    received = bad = mismatch = duplicate = 0
    for j, got in enumerate(arrivals):
        i = j ^ 1  # socket j receives stream j ^ 1
        unprotect, s0, ssrc, filler = (
            rx[j].unprotect,
            seq0[i],
            ssrcs[i].to_bytes(4, "big"),
            fillers[i],
        )
        sent_i, lat_i = sent_ns[i], lat[i]
        for x in range(0, len(got), 2):
            try:
                clear = unprotect(got[x])
            except pylibsrtp.Error:
                bad += 1
                continue
            k = ((clear[2] << 8) | clear[3]) - s0
            if (
                not 0 <= k < per_stream
                or clear[8:12] != ssrc
                or int.from_bytes(clear[12:16], "big") != i
                or int.from_bytes(clear[16:18], "big") != k
                or clear[18:] != filler
            ):
                mismatch += 1
                continue
            if lat_i[k] >= 0:
                duplicate += 1
                continue
            lat_i[k] = got[x + 1] - sent_i[k]
            received += 1
    sent = n - send_fail
    last_send = max(max(row) for row in sent_ns)
    latency: Counter[int] = Counter()
    by_second: list[Counter[int]] = [Counter() for _ in range((per_stream + PPS - 1) // PPS)]
    for row in lat:
        for k, ns in enumerate(row):
            if ns >= 0:
                latency[ns // 1000] += 1
                by_second[k // PPS][ns // 1000] += 1
    reply(
        {
            "asked": total,
            "sent": sent,
            "send_fail": send_fail,
            "send_seconds": (last_send - t0) / 1e9,
            "received": received,
            "lost": sent - received,
            # A stream's first packet may reach the relay before the far leg latched;
            # the relay sends nothing to a leg before that (docs/media.md, issue 13).
            "first_lost": sum(1 for row in lat if row and row[0] < 0),
            "bad": bad,
            "mismatch": mismatch,
            "duplicate": duplicate,
            "cpu": cpu,
            "latency_us": {str(k): v for k, v in latency.items()},
            "latency_by_second": [{str(k): v for k, v in c.items()} for c in by_second],
        }
    )
    for s in socks:
        s.close()


# -- orchestration ----------------------------------------------------------------------------


@dataclass
class Step:
    target: str
    calls: int
    seconds: float
    asked_pps: int
    #: Relay processes (voipsec --workers); each must stay below its own core.
    workers: int = 1
    sent: int = 0
    received: int = 0
    lost: int = 0
    #: Of ``lost``, streams' first packets: sent before the far leg latched, which the
    #: relay then does not forward (issue 13); at most one per call is expected.
    first_lost: int = 0
    bad: int = 0
    mismatch: int = 0
    duplicate: int = 0
    send_seconds: float = 0.0
    relayed_pps: float = 0.0
    latency_median_us: float = 0.0
    latency_p99_us: float = 0.0
    latency_max_us: float = 0.0
    relay_cpu: float = 0.0  # share of one core over the steady window
    relay_kernel_cpu: float = 0.0  # the part of it in the kernel (stime)
    generator_cpu: float = 0.0  # share of one core, all generators together
    machine_busy: float = 0.0  # share of all cores
    #: cores busy with anything but the relay and the generators (other work, the
    #: kernel's softirq time charged to no process of ours, this orchestrator)
    other_cpu: float = 0.0
    udp_rcvbuf_errors: int = 0
    #: Each leg had its own keys (False: the relay copied keys across legs).
    rekeyed: bool = True
    #: p99 latency of the packets sent in each second of the run.
    latency_p99_by_second_us: list = field(default_factory=list)
    relay_legs: dict = field(default_factory=dict)
    #: Legs per keying as the relay reports them ("DTLS/<suite>" for a DTLS leg).
    relay_suites: dict = field(default_factory=dict)
    profile: str = ""
    #: "sdes": both legs SDES; "dtls": A a browser-like DTLS-SRTP leg, B SDES.
    keying: str = "sdes"
    #: DTLS setup (keying "dtls"): handshakes completed, wall seconds from the first
    #: ClientHello to the last handshake done (the slowest generator's), failures,
    #: retransmitted flights, the generators' and the relay's CPU seconds for them.
    handshakes: int = 0
    handshake_seconds: float = 0.0
    handshake_failures: int = 0
    handshake_retransmits: int = 0
    handshake_generator_cpu: float = 0.0
    setup_relay_cpu: float = 0.0
    #: The suite the handshakes negotiated (use_srtp, RFC 5764 §4.1.2).
    dtls_suite: str = ""
    #: DTLS masters equal to an SDES key of the same calls (must be 0).
    shared_keys: int = 0

    @property
    def passed(self) -> bool:
        return (
            self.lost == 0
            and self.bad == 0
            and self.mismatch == 0
            and self.duplicate == 0
            and self.sent >= RATE_TOLERANCE * self.asked_pps * self.seconds
            and (self.target == "direct" or self.relay_cpu < self.workers)
        )

    @property
    def disturbed(self) -> bool:
        """Other work took a noticeable share of the machine during the step."""
        return self.other_cpu > DISTURBED

    @property
    def per_cpu_second(self) -> float:
        return self.relayed_pps / self.relay_cpu if self.relay_cpu else 0.0

    @property
    def label(self) -> str:
        """The target, with "dtls-sdes" when A is a DTLS-SRTP leg."""
        return self.target if self.keying == "sdes" else f"{self.target} dtls-sdes"

    @property
    def handshakes_per_second(self) -> float:
        return self.handshakes / self.handshake_seconds if self.handshake_seconds else 0.0

    def add_setup(self, setup: dict) -> None:
        """One generator's DTLS setup figures (the generators handshake in parallel)."""
        self.handshakes += setup["handshakes"]
        if not setup["handshakes"]:
            return
        self.handshake_seconds = max(self.handshake_seconds, setup["seconds"])
        self.handshake_failures += sum(setup["failed"].values())
        self.handshake_retransmits += setup["retransmits"]
        self.handshake_generator_cpu += setup["cpu"]
        self.dtls_suite = setup.get("suite", "")
        self.shared_keys += setup["shared_keys"]


def percentile(hist: Counter[int], q: float) -> float:
    total = sum(hist.values())
    if not total:
        return 0.0
    rank = q * (total - 1)
    seen = 0
    for value in sorted(hist):
        seen += hist[value]
        if seen > rank:
            return float(value)
    return float(max(hist))


def port_slices(low: int, high: int, workers: int) -> list[tuple[int, int]]:
    """``workers`` disjoint port ranges covering ``low``-``high``, each starting even."""
    width = (high - low) // workers
    width -= width % 2
    return [(low + i * width, low + (i + 1) * width - 1) for i in range(workers)]


class Relay:
    """The relay under test, whichever it is: offer/answer/release and its pids.

    voipsec may run as ``workers`` independent relay processes (``--workers``), each
    with its own slice of the port range and of the calls (call i goes to process
    i mod workers), as a media worker per core would. Process i is pinned to CPU
    (1 + i) mod cores, so with two workers on two cores the second shares CPU 0 with
    the load generator.
    """

    def __init__(
        self, target: str, workdir: Path, threads: int, workers: int = 1, read_batch: int = 0
    ) -> None:
        self.target = target
        self.voipsec: list[Child] = []
        self.rtpengine: Rtpengine | None = None
        self.loop = ""
        self.workers = workers if target == "voipsec" else 1
        if target == "voipsec":
            cores = os.cpu_count() or 1
            argv = [sys.executable, __file__, "relay", "--read-batch", str(read_batch)]
            for i, (low, high) in enumerate(port_slices(*VOIPSEC_PORTS, self.workers)):
                pin = ["taskset", "-c", str((1 + i) % cores)] if PIN["relay"] else []
                self.voipsec.append(
                    Child(
                        [*pin, *argv, "--ports", f"{low}-{high}"],
                        stderr=workdir / f"relay-{i}.log",
                    )
                )
            self.loop = self.voipsec[0].request({"op": "hello"})["loop"]
            self.pids = [child.pid for child in self.voipsec]
        else:
            self.rtpengine = Rtpengine(
                workdir, RTPENGINE_PORTS, threads, recrypt=target == "rtpengine"
            )
            self.pids = [self.rtpengine.pid]

    def _spread(self, op: str, calls: list[tuple[str, str]], dtls: bool = False) -> dict[str, str]:
        """``op`` for each call on its worker; the workers work on their shares at once."""
        shares = [calls[i :: self.workers] for i in range(self.workers)]
        for child, share in zip(self.voipsec, shares, strict=True):
            child.send({"op": op, "calls": share, "dtls": dtls})
        out: dict[str, str] = {}
        for child in self.voipsec:
            out.update(child.read()["sdp"])
        return out

    def offer(self, calls: list[tuple[str, str]], *, dtls: bool = False) -> dict[str, str]:
        """The relay's offers to B; ``dtls``: A's are browser offers."""
        if self.voipsec:
            return self._spread("offer", calls, dtls)
        assert self.rtpengine
        return self.rtpengine.offer(calls, dtls=dtls)

    def answer(self, calls: list[tuple[str, str]], *, dtls: bool = False) -> dict[str, str]:
        if self.voipsec:
            return self._spread("answer", calls)
        assert self.rtpengine
        return self.rtpengine.answer(calls, dtls=dtls)

    def release(self) -> tuple[dict, dict]:
        """The legs' receive counters and how many legs had each keying."""
        if self.voipsec:
            totals: Counter[str] = Counter()
            suites: Counter[str] = Counter()
            for child in self.voipsec:
                got = child.request({"op": "release"})
                totals.update(got["legs"])
                suites.update(got["suites"])
            return dict(totals), dict(suites)
        assert self.rtpengine
        self.rtpengine.release()
        return {}, {}

    def dtls_counters(self) -> dict:
        """Handshakes the voipsec relay started and failed, and its failure reasons."""
        totals: Counter[str] = Counter()
        for child in self.voipsec:  # none for rtpengine: see its log
            got = child.request({"op": "stats"})
            totals.update(
                handshakes=got["dtls_handshakes"], failures=got["dtls_failures"], **got["failures"]
            )
        return dict(totals)

    def profile(self, start: bool) -> dict:
        """cProfile of the first worker (the others carry the same kind of load)."""
        assert self.voipsec
        return self.voipsec[0].request({"op": "profile_start" if start else "profile_stop"})

    def close(self) -> None:
        for child in self.voipsec:
            child.close()
        if self.rtpengine:
            self.rtpengine.close()


def set_up_calls(
    relay: Relay, g: int, info: dict, suite: str
) -> tuple[list[int], list[str], dict[str, list[str]]]:
    """Generator ``g``'s calls through the relay: where each socket sends, the SDES key
    it receives with ("" for a DTLS socket), the relay's fingerprint per DTLS socket.

    With ``info["fingerprints"]`` (``--keying dtls``) A offers as a browser would
    (:func:`browser_sdp`) and gets the relay's passive DTLS-SRTP answer; B is an SDES
    desk phone either way."""
    ports, keys, browsers = info["ports"], info["keys"], info.get("fingerprints") or {}
    n = len(ports) // 2
    ids = [f"bench-{g}-{c}-{secrets.token_hex(4)}" for c in range(n)]

    def a_offer(c: int) -> bytes:
        if browsers:
            return browser_sdp(ports[2 * c], browsers[str(2 * c)], 1000 + c)
        return endpoint_sdp(ports[2 * c], suite, 1, base64.b64decode(keys[2 * c]), 1000 + c)

    dtls_a = bool(browsers)
    offers = relay.offer([(ids[c], a_offer(c).decode()) for c in range(n)], dtls=dtls_a)
    to = [0] * (2 * n)
    rx_keys = [""] * (2 * n)
    answers = []
    for c in range(n):
        port_b, tag, master = relay_side(offers[ids[c]].encode(), suite)
        to[2 * c + 1] = port_b
        rx_keys[2 * c + 1] = base64.b64encode(master).decode()
        b_master = base64.b64decode(keys[2 * c + 1])
        b_sdp = endpoint_sdp(ports[2 * c + 1], suite, tag, b_master, 2000 + c)
        answers.append((ids[c], b_sdp.decode()))
    replies = relay.answer(answers, dtls=dtls_a)
    dtls: dict[str, list[str]] = {}
    for c in range(n):
        if browsers:
            port, fp, role = dtls_side(replies[ids[c]].encode(), passive=relay.voipsec != [])
            to[2 * c], dtls[str(2 * c)] = port, [fp, role]
            continue
        port_a, _, master = relay_side(replies[ids[c]].encode(), suite)
        to[2 * c] = port_a
        rx_keys[2 * c] = base64.b64encode(master).decode()
    return to, rx_keys, dtls


def run_step(
    relay: Relay | None,
    calls: int,
    seconds: float,
    suite: str,
    generators: int,
    workdir: Path,
    *,
    profile: bool = False,
    keying: str = "sdes",
    dtls_suite: str = "",
) -> Step:
    """One step: ``calls`` calls for ``seconds``, through ``relay`` (None: direct).

    ``profile``: the voipsec relay runs under cProfile from the start of the traffic to
    its end (call setup excluded); the report lands in ``step.profile``. ``keying``
    "dtls": A is a browser-like DTLS-SRTP endpoint whose handshakes run during setup
    (their rate and the relay's CPU for them land in the step); its browser offers
    only ``dtls_suite``'s use_srtp profile ("": ``suite``'s).
    """
    target = relay.target if relay else "direct"
    step = Step(
        target=target,
        calls=calls,
        seconds=seconds,
        asked_pps=calls * 2 * PPS,
        workers=relay.workers if relay else 1,
        keying=keying if relay else "sdes",
    )
    shares = [calls // generators + (1 if g < calls % generators else 0) for g in range(generators)]
    shares = [s for s in shares if s]
    gens = [
        Child(
            [*PIN["generator"], sys.executable, __file__, "generate"],
            stderr=workdir / "generate.log",
        )
        for _ in shares
    ]
    try:
        opened = [
            g.request(
                {
                    "op": "open",
                    "calls": n,
                    "suite": suite,
                    "keying": step.keying,
                    "dtls_suite": dtls_suite,
                }
            )
            for g, n in zip(gens, shares, strict=True)
        ]
        peers = []
        for g, info in enumerate(opened):
            ports, keys = info["ports"], info["keys"]
            n = len(ports) // 2
            dtls: dict[str, list[str]] = {}
            if relay is None:
                # A and B send to each other; each decrypts with the other's key.
                to = [ports[j ^ 1] for j in range(2 * n)]
                rx_keys = [keys[j ^ 1] for j in range(2 * n)]
            else:
                to, rx_keys, dtls = set_up_calls(relay, g, info, suite)
                # Per-leg keys: no endpoint receives with a key it or its peer sent
                # with. rtpengine copies the offerer's key to the other leg when both
                # use the same suite (see Rtpengine); voipsec must never do that.
                if set(rx_keys) & set(keys):
                    step.rekeyed = False
                    if relay.target == "voipsec":
                        raise RuntimeError("voipsec passed an SRTP key to the other leg")
            peers.append(
                {"op": "peer", "to": to, "rx_keys": rx_keys, "seconds": seconds, "dtls": dtls}
            )
        r_setup = relay_times(relay)
        for gen, peer in zip(gens, peers, strict=True):
            gen.send(peer)
        for gen in gens:
            setup = gen.read(timeout=REQUEST_TIMEOUT + 10 * seconds)["setup"]
            step.add_setup(setup)
        # The relay did nothing else meanwhile (the generators protect their packets):
        # with DTLS this is the relay's CPU for the handshakes.
        step.setup_relay_cpu = sum(relay_times(relay)) - sum(r_setup)
        if step.shared_keys and relay is not None and relay.target == "voipsec":
            raise RuntimeError("voipsec gave a DTLS leg a key of the SDES leg")
        if profile and relay:
            relay.profile(True)
        t0 = time.monotonic_ns() + 300_000_000
        for gen in gens:
            gen.send({"op": "go", "t0": t0})

        def sleep_until(ns: int) -> None:
            time.sleep(max(0.0, (ns - time.monotonic_ns()) / 1e9))

        sleep_until(t0 + int(WARMUP * 1e9))
        w0 = time.monotonic()
        r0 = relay_times(relay)
        g0 = sum(cpu_seconds(g.pid) for g in gens)
        m0 = machine_busy()
        u0 = udp_errors()
        sleep_until(t0 + int(seconds * 1e9))
        w1 = time.monotonic()
        r1 = relay_times(relay)
        g1 = sum(cpu_seconds(g.pid) for g in gens)
        m1 = machine_busy()
        results = [gen.read(timeout=seconds + 60) for gen in gens]
        if profile and relay:
            step.profile = relay.profile(False)["profile"]
        step.udp_rcvbuf_errors = udp_errors() - u0
        window = w1 - w0
        step.relay_cpu = (sum(r1) - sum(r0)) / window
        step.relay_kernel_cpu = (r1[1] - r0[1]) / window
        step.generator_cpu = (g1 - g0) / window
        step.machine_busy = (m1[0] - m0[0]) / max(1, m1[1] - m0[1])
        step.other_cpu = max(
            0.0, step.machine_busy * (os.cpu_count() or 1) - step.relay_cpu - step.generator_cpu
        )
        hist: Counter[int] = Counter()
        seconds_hist: list[Counter[int]] = []
        for r in results:
            for sec, h in enumerate(r["latency_by_second"]):
                if sec == len(seconds_hist):
                    seconds_hist.append(Counter())
                seconds_hist[sec].update({int(k): v for k, v in h.items()})
            step.sent += r["sent"]
            step.received += r["received"]
            step.lost += r["lost"]
            step.first_lost += r["first_lost"]
            step.bad += r["bad"]
            step.mismatch += r["mismatch"]
            step.duplicate += r["duplicate"]
            step.send_seconds = max(step.send_seconds, r["send_seconds"])
            hist.update({int(k): v for k, v in r["latency_us"].items()})
        step.relayed_pps = step.received / max(seconds, step.send_seconds)
        step.latency_median_us = percentile(hist, 0.5)
        step.latency_p99_us = percentile(hist, 0.99)
        step.latency_max_us = float(max(hist)) if hist else 0.0
        step.latency_p99_by_second_us = [percentile(h, 0.99) for h in seconds_hist]
        if relay:
            step.relay_legs, step.relay_suites = relay.release()
    finally:
        for gen in gens:
            gen.close()
    return step


def show(step: Step, direct: Step | None) -> str:
    added = ""
    if direct and direct.received:
        added = (
            f"  added {step.latency_median_us - direct.latency_median_us:+.0f}/"
            f"{step.latency_p99_us - direct.latency_p99_us:+.0f} us"
        )
    return (
        f"{step.label:<21} calls {step.calls:>4}  asked {step.asked_pps:>6}/s  "
        f"relayed {step.relayed_pps:>8,.0f}/s  lost {step.lost:>5} ({step.first_lost} first)  "
        f"bad {step.bad + step.mismatch}  "
        f"lat med {step.latency_median_us:>5.0f} p99 {step.latency_p99_us:>6.0f} us{added}  "
        f"relay CPU {100 * step.relay_cpu:>5.1f} % (sys {100 * step.relay_kernel_cpu:.0f})  "
        f"gen CPU {100 * step.generator_cpu:>5.1f} %  "
        f"machine {100 * step.machine_busy:>3.0f} % (others {step.other_cpu:.2f} cores)  "
        f"rcvbuf drops {step.udp_rcvbuf_errors}  "
        f"{'PASS' if step.passed else 'FAIL'}{' (disturbed)' if step.disturbed else ''}\n"
        f"          p99 by second (us): {[int(v) for v in step.latency_p99_by_second_us]}"
        f"{show_setup(step)}"
    )


def show_setup(step: Step) -> str:
    """The DTLS setup of a dtls-sdes step (empty for the others)."""
    if step.keying != "dtls":
        return ""
    return (
        f"\n          DTLS setup: {step.handshakes} handshakes ({step.dtls_suite}) in "
        f"{step.handshake_seconds:.2f} s = {step.handshakes_per_second:,.0f}/s, "
        f"{step.handshake_failures} failed, {step.handshake_retransmits} retransmitted "
        f"flights; relay CPU {1e3 * step.setup_relay_cpu / max(1, step.handshakes):.2f} ms "
        f"per handshake, generator "
        f"{1e3 * step.handshake_generator_cpu / max(1, step.handshakes):.2f} ms"
    )


@contextlib.contextmanager
def relay_for(
    target: str, workdir: Path, threads: int, workers: int = 1, read_batch: int = 0
) -> Iterator[Relay]:
    relay = Relay(target, workdir, threads, workers, read_batch)
    try:
        yield relay
    finally:
        relay.close()


def main_orchestrate(args: argparse.Namespace) -> None:
    calls = [int(c) for c in args.calls.split(",")]
    targets = {
        "both": ["voipsec", "rtpengine"],
        "all": ["voipsec", "rtpengine", "rtpengine-passthrough"],
    }.get(args.target, [args.target])
    if args.pin and (os.cpu_count() or 1) >= 2 and shutil.which("taskset"):
        PIN["relay"] = ["taskset", "-c", "1"]
        PIN["generator"] = ["taskset", "-c", "0"]
    report: dict = {
        "suite": args.suite,
        "keying": args.keying,
        "dtls_suite": args.dtls_suite or args.suite,
        "seconds": args.seconds,
        "generators": args.generators,
        "workers": args.workers,
        "pinned": bool(PIN["relay"]),
        "load_before": os.getloadavg(),
        "steps": [],
        "profile": None,
    }

    def measured(
        relay: Relay | None, n: int, seconds: float, *, profile: bool = False, keying: str = "sdes"
    ) -> Step:
        """A step, run again (up to --retries times) when other work disturbed it."""
        for attempt in range(args.retries + 1):
            if args.wait_idle:
                waited = wait_idle(args.wait_idle)
                if waited > 5:
                    print(f"          (waited {waited:.0f} s for the machine to be idle)")
            step = run_step(
                relay,
                n,
                seconds,
                args.suite,
                args.generators,
                workdir,
                profile=profile,
                keying=keying,
                dtls_suite=args.dtls_suite,
            )
            if not step.disturbed or attempt == args.retries:
                return step
            print(
                f"          ({step.label} {n} calls disturbed: other work used "
                f"{step.other_cpu:.2f} cores; again)",
                flush=True,
            )
        raise AssertionError("unreachable")

    with tempfile.TemporaryDirectory(prefix="media-bench-") as tmp:
        workdir = Path(tmp)
        directs: dict[int, Step] = {}
        for target in targets:
            failed = 0
            with relay_for(
                target, workdir, args.rtpengine_threads, args.workers, args.read_batch
            ) as relay:
                print(
                    f"== {target} (pids {relay.pids}{', ' + relay.loop if relay.loop else ''}), "
                    f"{relay.workers} relay process(es), "
                    f"suite {args.suite}, {args.seconds:g} s per step"
                    f"{', relay pinned to CPU 1, generators to CPU 0' if PIN['relay'] else ''}",
                    flush=True,
                )
                keyings = keyings_for(target, args.keying)
                for n in calls:
                    if args.direct and n not in directs:
                        directs[n] = measured(None, n, args.seconds)
                        print(show(directs[n], None), flush=True)
                        report["steps"].append(asdict(directs[n]) | {"passed": directs[n].passed})
                    # With --keying both the two keyings run back to back at each N, so
                    # the pair shares the machine's state as far as it can.
                    passed = False
                    for keying in keyings:
                        step = measured(relay, n, args.seconds, keying=keying)
                        print(show(step, directs.get(n)), flush=True)
                        if step.relay_legs:
                            print(
                                f"          relay's legs: {step.relay_legs} "
                                f"keyed {step.relay_suites}",
                                flush=True,
                            )
                        report["steps"].append(
                            asdict(step)
                            | {
                                "passed": step.passed,
                                "per_cpu_second": step.per_cpu_second,
                                "handshakes_per_second": step.handshakes_per_second,
                            }
                        )
                        passed = passed or step.passed
                    failed = 0 if passed else failed + 1
                    if failed >= MAX_FAILED_STEPS:
                        break
                if "dtls" in keyings and relay.voipsec:
                    print(f"          relay's DTLS counters: {relay.dtls_counters()}", flush=True)
                if target == "voipsec" and args.profile_calls:
                    step = measured(relay, args.profile_calls, args.profile_seconds, profile=True)
                    print(
                        f"-- profile of the voipsec relay process, {args.profile_calls} calls, "
                        f"{args.profile_seconds:g} s under cProfile:",
                        flush=True,
                    )
                    print(show(step, None))
                    print(step.profile, flush=True)
                    report["profile"] = asdict(step)
        report["load_after"] = os.getloadavg()
    print(summary(report), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))


def keyings_for(target: str, keying: str) -> list[str]:
    """The keyings run against ``target``. rtpengine-passthrough is SDES only: with a
    DTLS leg there is nothing to pass through (the keys differ), it is "rtpengine"."""
    wanted = list(KEYINGS) if keying == "both" else [keying]
    if target == "rtpengine-passthrough":
        if "dtls" in wanted:
            print(f"          ({target}: SDES legs only; a DTLS leg always recrypts)")
        return ["sdes"]
    return wanted


def summary(report: dict) -> str:
    lines = ["", "best step with 0 loss, relay < 100 % of a core:"]
    for target, keying in (
        ("voipsec", "sdes"),
        ("voipsec", "dtls"),
        ("rtpengine", "sdes"),
        ("rtpengine", "dtls"),
        ("rtpengine-passthrough", "sdes"),
    ):
        mine = [s for s in report["steps"] if s["target"] == target and s.get("keying") == keying]
        steps = [s for s in mine if s["passed"] and s["other_cpu"] <= DISTURBED]
        name = target if keying == "sdes" else f"{target} dtls-sdes"
        if not mine:
            continue
        if not steps:
            lines.append(f"  {name}: no step passed")
            continue
        best = max(steps, key=lambda s: s["relayed_pps"])
        lines.append(
            f"  {name}: {best['relayed_pps']:,.0f} relayed packets/s ({best['calls']} calls) at "
            f"{100 * best['relay_cpu']:.0f} % of a core = {best['per_cpu_second']:,.0f} "
            f"packets per relay CPU-second; latency median {best['latency_median_us']:.0f} us, "
            f"p99 {best['latency_p99_us']:.0f} us"
        )
    lines += side_by_side(report["steps"])
    lines.append(f"load average before {report['load_before']}, after {report['load_after']}")
    return "\n".join(lines)


def side_by_side(steps: list[dict]) -> list[str]:
    """SDES-SDES and DTLS-SDES through each relay at each call count (--keying both).

    Once a DTLS leg has its keys it is an SRTP leg like any (libsrtp both ways), so
    the relay CPU per packet should match; the handshakes are a setup cost apart."""
    out: list[str] = []
    for target in ("voipsec", "rtpengine"):
        out += pair_table(target, [s for s in steps if s["target"] == target])
    return out


def pair_table(target: str, steps: list[dict]) -> list[str]:
    """One target's SDES-SDES and DTLS-SDES steps, row by row at each call count."""
    pairs: dict[int, dict[str, dict]] = {}
    for s in steps:
        pairs.setdefault(s["calls"], {})[s["keying"]] = s
    if not [p for p in pairs.values() if len(p) == 2]:
        return []
    out = [
        "",
        f"{target}, SDES-SDES vs DTLS-SDES (relay CPU per relayed packet; DTLS setup):",
        f"  {'calls':>5}  {'keying':<9} {'relayed/s':>9}  {'lost':>5}  {'relay CPU':>9}  "
        f"{'us/pkt':>6}  {'handshakes/s':>12}  {'relay ms/hs':>11}  pass (latch losses apart)",
    ]
    for calls in sorted(pairs):
        for keying in KEYINGS:
            s = pairs[calls].get(keying)
            if s is None:
                continue
            us = 1e6 * s["relay_cpu"] / s["relayed_pps"] if s["relayed_pps"] else 0.0
            hs = s["handshakes"]
            setup = (
                f"{s['handshakes_per_second']:>12,.0f}  {1e3 * s['setup_relay_cpu'] / hs:>11.2f}"
                if hs
                else f"{'-':>12}  {'-':>11}"
            )
            out.append(
                f"  {calls:>5}  {keying + '-sdes':<9} {s['relayed_pps']:>9,.0f}  {s['lost']:>5}  "
                f"{100 * s['relay_cpu']:>8.1f}%  {us:>6.1f}  {setup}  "
                f"{'PASS' if latch_only(s) else 'FAIL'}"
            )
    return out


def latch_only(step: dict) -> bool:
    """Passed but for streams' first packets lost before latching (one per call at
    most): the rule of docs/performance.md "Issue 15: the table, refilled"."""
    rest = dict(step, lost=step["lost"] - step["first_lost"])
    return (
        step["first_lost"] <= step["calls"]
        and Step(**{k: v for k, v in rest.items() if k in Step.__dataclass_fields__}).passed
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="mode")
    relay = sub.add_parser("relay", help="(internal) the voipsec relay process")
    relay.add_argument("--ports", required=True)
    relay.add_argument("--read-batch", type=int, default=0)
    sub.add_parser("generate", help="(internal) a load generator process")
    cost = sub.add_parser("cost", help="one call, callbacks driven by hand (for callgrind)")
    cost.add_argument("--packets", type=int, default=2000)
    cost.add_argument("--suite", default=DEFAULT_SUITE)
    cost.add_argument("--read-batch", type=int, default=0)
    cost.add_argument("--no-relay", action="store_true", help="the harness alone")
    cost.add_argument("--keying", choices=KEYINGS, default="sdes", help="A's keying")
    cost.add_argument("--dtls-suite", default="", help="A's DTLS profile (default: --suite)")
    parser.add_argument(
        "--target",
        choices=("voipsec", "rtpengine", "rtpengine-passthrough", "both", "all"),
        default="voipsec",
        help="rtpengine: re-encrypting (forced); rtpengine-passthrough: its SDES default; "
        "both: voipsec + rtpengine; all: the three",
    )
    parser.add_argument(
        "--calls",
        default=",".join(map(str, DEFAULT_CALLS)),
        help="concurrent calls per step, comma-separated",
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="sending time per step")
    parser.add_argument("--suite", default=DEFAULT_SUITE)
    parser.add_argument(
        "--keying",
        choices=(*KEYINGS, "both"),
        default="sdes",
        help="A's keying against voipsec: sdes (a desk phone), dtls (a browser: "
        "DTLS-SRTP, handshakes during setup), both (each step with either, side by side); "
        "B is always SDES",
    )
    parser.add_argument(
        "--dtls-suite",
        default="",
        help="the one use_srtp profile the browser-like A offers, as an SDES suite name "
        "(default: --suite; Chromium offers AEAD_AES_256_GCM first)",
    )
    parser.add_argument("--generators", type=int, default=1, help="load generator processes")
    parser.add_argument(
        "--direct",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also run each step without a relay (latency baseline)",
    )
    parser.add_argument(
        "--profile-calls",
        type=int,
        default=200,
        help="calls of the cProfile run of the voipsec relay (0: none)",
    )
    parser.add_argument("--profile-seconds", type=float, default=5.0)
    parser.add_argument("--rtpengine-threads", type=int, default=1)
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="voipsec relay processes, each with its own slice of calls and ports",
    )
    parser.add_argument(
        "--read-batch",
        type=int,
        default=0,
        help="datagrams the voipsec relay reads per readiness event (0: its READ_BATCH)",
    )
    parser.add_argument(
        "--pin",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="relay on CPU 1, load generators on CPU 0 (taskset)",
    )
    parser.add_argument(
        "--wait-idle",
        type=float,
        default=0.0,
        help="before each step, wait up to this many seconds for an idle machine",
    )
    parser.add_argument(
        "--retries", type=int, default=0, help="runs again of a step that other work disturbed"
    )
    parser.add_argument("--json", help="write the full results here")
    args = parser.parse_args()
    if args.mode == "relay":
        relay_main(args)
    elif args.mode == "generate":
        generate_main(args)
    elif args.mode == "cost":
        cost_main(args)
    else:
        main_orchestrate(args)


if __name__ == "__main__":
    main()

"""TURN throughput: voipsec's TURN (``python -m voipsec.nat``) against coturn, same load.

Both servers run on 127.0.0.1 with the same credentials (user ``bench``, realm ``r``,
long-term mechanism) and loopback peers allowed; coturn is started in the foreground as
``turnserver -n --allow-loopback-peers --no-cli --no-tls --no-dtls --lt-cred-mech``.

Relayed packets per second: coturn's ``turnutils_uclient`` (S sessions, 170-byte
packets, channels, EVEN-PORT/RTCP pairs, DONT-FRAGMENT: ``-m S -l 170 -X -g``) echoes
through the server to ``turnutils_peer``. The per-session interval ``-z`` is stepped
down until packets are lost (uclient's own send rate is measured too: with RTP/RTCP
pairs about half of the S sessions send, so it is near S*500/z, not S*1000/z). Every
echoed packet crosses the relay twice (client -> peer, peer -> client), so
relayed/s = 2 x received/s, measured from uclient's once-a-second progress lines
(timestamped here as they arrive) between the first echo and the last. The figure per
server is the highest rate of a step with 0 lost packets.

Allocations per second: uclient paces its own connects (about 9 sessions per second
here against either server), so it cannot load a server's allocation path. Instead C
concurrent clients built on voipsec's STUN codec repeat Allocate (long-term
credentials, the nonce kept between cycles as clients do) + Refresh(LIFETIME=0) on
their own 5-tuple, N cycles in total; allocations/s = successful Allocates / wall time.

Each phase is bounded in count and time. The client programs share the machine's cores
with the server: both servers see the same clients. Server CPU seconds are read from
/proc for every phase.

CPU per relayed packet (``--cost N``): loss thresholds move with whatever else runs on
the machine, so the relay path is also measured at a load that loses nothing. S
sessions built on voipsec's STUN codec each bind a channel to one echoing peer socket
and keep W ChannelData messages in flight (closed loop: nothing is ever dropped), N
echoes in all; every echo is two relayed packets. The server's CPU seconds (from /proc)
divided by the relayed packets is its cost per packet, user and system time apart. Run
it several times and compare medians (``--repeat``). ``--strace`` also counts the
server's system calls per relayed packet (``strace -c -f`` attached for the run): a
count, not a time, so it holds on a busy machine.

The Python path alone (``--path N``): N ChannelData datagrams handed to the UDP
listener's protocol in this process, with a relay socket that only counts; prints
CPU µs per datagram. For a count that does not depend on the machine's load, run it
under callgrind twice and take the difference per datagram, e.g.
``valgrind --tool=callgrind python bench/turn_bench.py --path 20000`` and ``40000``.

    python bench/turn_bench.py                       # both targets, default steps
    python bench/turn_bench.py --target voipsec --intervals 5,2,1 --json /tmp/turn.json
    python bench/turn_bench.py --cost 100000 --repeat 5   # CPU per relayed packet
    python bench/turn_bench.py --target voipsec --cost 20000 --strace
    python bench/turn_bench.py --path 200000              # the listener's Python path
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import selectors
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "src"))

from tests.peers.proc import free_port, require, running, wait_for  # noqa: E402
from tests.peers.turn import TurnClient, binding, free_udp_tcp_port  # noqa: E402

from voipsec.nat import stun  # noqa: E402
from voipsec.nat.credentials import long_term_key  # noqa: E402
from voipsec.nat.stun import Attr, Message, MessageClass, Method  # noqa: E402

USER, PASSWORD, REALM = "bench", "bench-password", "r"
HOST = "127.0.0.1"
DEFAULT_INTERVALS = (20, 10, 5, 4, 3, 2, 1)
#: Steps are stopped after this many consecutive steps that lost packets.
MAX_LOSSY_STEPS = 2
#: Upper bound on one uclient run (its connect phase alone takes S/9 seconds).
UCLIENT_TIMEOUT = 180.0
#: Seconds a bench allocation request waits before it is sent again, and how often.
REQUEST_TIMEOUT = 1.0
REQUEST_ATTEMPTS = 3

_PROGRESS = re.compile(r"tot_send_msgs=(\d+), tot_recv_msgs=(\d+)")
_LOST = re.compile(r"Total lost packets (\d+)")


# -- results --------------------------------------------------------------------------


@dataclass
class RelayStep:
    interval_ms: int
    packets_per_session: int
    #: Packets per second uclient sent while echoes flowed (measured: with RTP/RTCP
    #: pairs only about half of the -m sessions send, so S*1000/z overstates it).
    sent_per_second: float
    sent: int
    received: int
    lost: int
    relayed_per_second: float
    server_cpu: float
    #: Server CPU seconds per second while the echoes flowed (1.0 = one core busy).
    server_cpu_share: float
    seconds: float

    @property
    def passed(self) -> bool:
        return self.lost == 0 and self.received == self.sent and self.sent > 0


@dataclass
class AllocationRun:
    cycles: int
    concurrency: int
    allocations: int
    errors: int
    timeouts: int
    error_codes: dict[int, int]
    seconds: float
    server_cpu: float

    @property
    def per_second(self) -> float:
        return self.allocations / self.seconds if self.seconds else 0.0


@dataclass
class TargetReport:
    target: str
    relay: list[RelayStep] = field(default_factory=list)
    allocation: AllocationRun | None = None
    cost: list[CostRun] = field(default_factory=list)

    @property
    def best_relay(self) -> RelayStep | None:
        passing = [s for s in self.relay if s.passed]
        return max(passing, key=lambda s: s.relayed_per_second, default=None)


# -- processes ---------------------------------------------------------------------------


def cpu_split(pid: int) -> tuple[float, float]:
    """(utime, stime) of a process and its threads, in seconds."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0, 0.0
    fields = text[text.rindex(")") + 2 :].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process and its threads, in seconds."""
    return sum(cpu_split(pid))


def voipsec(*args: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "voipsec", *args], check=True, capture_output=True, timeout=60
    )


def prepare_voipsec(data_dir: Path) -> None:
    voipsec("init", "--dir", str(data_dir))
    voipsec("config", "set", "sip.domain", f'"{REALM}"', "--dir", str(data_dir))
    voipsec("user", "add", USER, "--password", PASSWORD, "--dir", str(data_dir))


@contextlib.contextmanager
def start_target(target: str, workdir: Path) -> Iterator[tuple[int, int]]:
    """Run a TURN server on a free UDP+TCP port; yields (port, pid)."""
    port = free_udp_tcp_port()
    if target == "voipsec":
        data_dir = workdir / "voipsec-data"
        if not data_dir.exists():
            prepare_voipsec(data_dir)
        argv = [sys.executable, "-m", "voipsec.nat", "--dir", str(data_dir)]
        argv += ["--listen", f"udp:{HOST}:{port}", "--listen", f"tcp:{HOST}:{port}"]
        argv += ["--allow-peer", "127.0.0.1/32", "--user-quota", "100000"]
        argv += ["--total-quota", "100000", "--bandwidth", str(10**9)]
        env = {"PYTHONPATH": str(REPO / "src")}
    else:
        argv = [require("turnserver"), "-n", "--listening-ip", HOST, "--relay-ip", HOST]
        argv += ["-p", str(port), "--allow-loopback-peers", "--no-cli", "--no-tls", "--no-dtls"]
        argv += ["--lt-cred-mech", "--user", f"{USER}:{PASSWORD}", "--realm", REALM]
        argv += ["--log-file", "stdout", "--pidfile", str(workdir / "turnserver.pid")]
        env = {}
    with running(argv, log=workdir / f"{target}.log", env=env) as proc:
        wait_for(
            lambda: proc.poll() is not None or binding(HOST, port) is not None,
            deadline=30,
            what=f"{target} to answer STUN",
        )
        if proc.poll() is not None:
            raise SystemExit(f"{target} exited; see {workdir / f'{target}.log'}")
        yield port, proc.pid


def udp_echoes(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(0.2)
        try:
            sock.sendto(b"ping", (HOST, port))
            return sock.recvfrom(64)[0] == b"ping"
        except OSError:
            return False


# -- relay steps -----------------------------------------------------------------------------


def relay_step(
    port: int,
    pid: int,
    peer_port: int,
    *,
    sessions: int,
    length: int,
    interval: int,
    seconds: float,
) -> RelayStep:
    packets = max(20, round(seconds * 1000 / interval))
    argv = [require("turnutils_uclient"), "-n", str(packets), "-m", str(sessions)]
    argv += ["-l", str(length), "-z", str(interval), "-e", HOST, "-r", str(peer_port)]
    argv += ["-X", "-g", "-u", USER, "-w", PASSWORD, "-p", str(port), HOST]
    samples: list[tuple[float, int, int, float]] = []  # time, sent, received, server CPU
    lost = -1
    cpu_before = cpu_seconds(pid)
    start = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            now = time.monotonic()
            if now - start > UCLIENT_TIMEOUT:
                break
            progress = _PROGRESS.search(line)
            if progress:
                sent_so_far, received_so_far = int(progress.group(1)), int(progress.group(2))
                samples.append((now, sent_so_far, received_so_far, cpu_seconds(pid)))
            found = _LOST.search(line)
            if found:
                lost = int(found.group(1))
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
    elapsed = time.monotonic() - start
    cpu = cpu_seconds(pid) - cpu_before
    total = packets * sessions
    sent = samples[-1][1] if samples else 0
    received = samples[-1][2] if samples else 0
    rate = window_cpu = sent_rate = 0.0
    first = next((s for s in samples if s[2] > 0), None)
    if first is not None:
        # The window ends with the first sample that had every echo that came back.
        last = min((s for s in samples if s[2] == received), key=lambda s: s[0])
        if last[0] > first[0]:
            span = last[0] - first[0]
            rate = 2 * (last[2] - first[2]) / span
            sent_rate = (last[1] - first[1]) / span
            window_cpu = (last[3] - first[3]) / span
    if lost < 0:
        lost = total - received
    return RelayStep(
        interval_ms=interval,
        packets_per_session=packets,
        sent_per_second=sent_rate,
        sent=sent,
        received=received,
        lost=lost,
        relayed_per_second=rate,
        server_cpu=cpu,
        server_cpu_share=window_cpu,
        seconds=elapsed,
    )


# -- allocation cycles -------------------------------------------------------------------------


class _Worker:
    """One client 5-tuple repeating Allocate + Refresh(0) with long-term credentials."""

    def __init__(self, server: tuple[str, int]) -> None:
        self.server = server
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((HOST, 0))
        self.sock.setblocking(False)
        self.nonce: bytes | None = None
        self.method = Method.ALLOCATE
        self.tid = b""
        self.sent_at = 0.0
        self.attempts = 0
        self.key = long_term_key(USER, REALM, PASSWORD)

    def renew(self, selector: selectors.BaseSelector) -> None:
        """A new socket (a new 5-tuple); the nonce is kept, as one client would."""
        selector.unregister(self.sock)
        self.sock.close()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((HOST, 0))
        self.sock.setblocking(False)
        selector.register(self.sock, selectors.EVENT_READ, self)

    def send(self, now: float, *, again: bool = False) -> None:
        if not again:
            self.tid = os.urandom(12)
            self.attempts = 0
        attrs: list[tuple[int, bytes]] = []
        if self.method == Method.ALLOCATE:
            attrs.append((Attr.REQUESTED_TRANSPORT, stun.encode_requested_transport()))
        else:
            attrs.append((Attr.LIFETIME, stun.encode_uint32(0)))
        key = None
        if self.nonce is not None:
            attrs += [
                (Attr.USERNAME, USER.encode()),
                (Attr.REALM, REALM.encode()),
                (Attr.NONCE, self.nonce),
            ]
            key = self.key
        message = Message(
            method=self.method,
            cls=MessageClass.REQUEST,
            transaction_id=self.tid,
            attributes=tuple(attrs),
        )
        self.sock.sendto(stun.encode(message, key=key), self.server)
        self.sent_at = now
        self.attempts += 1


def allocation_cycles(
    port: int, pid: int, *, cycles: int, concurrency: int, deadline: float
) -> AllocationRun:
    server = (HOST, port)
    selector = selectors.DefaultSelector()
    workers = [_Worker(server) for _ in range(concurrency)]
    allocations = errors = timeouts = started = 0
    error_codes: dict[int, int] = {}
    cpu_before = cpu_seconds(pid)
    start = time.monotonic()
    for worker in workers:
        selector.register(worker.sock, selectors.EVENT_READ, worker)
        worker.send(start)
        started += 1
    active = set(workers)
    while active and time.monotonic() - start < deadline:
        for key, _ in selector.select(timeout=0.1):
            worker: _Worker = key.data
            try:
                data = worker.sock.recv(2048)
            except OSError:
                continue
            try:
                reply = stun.parse_message(data)
            except stun.StunParseError:
                continue
            if reply.transaction_id != worker.tid:
                continue
            now = time.monotonic()
            if reply.cls == MessageClass.ERROR:
                error = reply.error_code()
                if error is not None and error[0] in (401, 438) and worker.attempts < 4:
                    nonce = reply.get(Attr.NONCE)
                    worker.nonce = nonce
                    worker.send(now)
                    continue
                errors += 1
                code = error[0] if error is not None else 0
                error_codes[code] = error_codes.get(code, 0) + 1
            elif worker.method == Method.ALLOCATE:
                allocations += 1
                worker.method = Method.REFRESH
                worker.send(now)
                continue
            # A cycle ended (deleted, or failed): the next one is a new client on a new
            # 5-tuple (coturn refuses a second Allocate on a 5-tuple it has just freed).
            worker.method = Method.ALLOCATE
            worker.renew(selector)
            if started < cycles:
                started += 1
                worker.send(now)
            else:
                active.discard(worker)
        now = time.monotonic()
        for worker in list(active):
            if now - worker.sent_at > REQUEST_TIMEOUT:
                if worker.attempts >= REQUEST_ATTEMPTS:
                    timeouts += 1
                    active.discard(worker)
                else:
                    worker.send(now, again=True)
    elapsed = time.monotonic() - start
    for worker in workers:
        selector.unregister(worker.sock)
        worker.sock.close()
    return AllocationRun(
        cycles=cycles,
        concurrency=concurrency,
        allocations=allocations,
        errors=errors,
        timeouts=timeouts,
        error_codes=error_codes,
        seconds=elapsed,
        server_cpu=cpu_seconds(pid) - cpu_before,
    )


# -- CPU per relayed packet ------------------------------------------------------------------


@dataclass
class CostRun:
    sessions: int
    window: int
    echoes: int
    resent: int
    seconds: float
    user_cpu: float
    system_cpu: float

    @property
    def relayed(self) -> int:
        return 2 * self.echoes

    @property
    def us_per_packet(self) -> float:
        return 1e6 * (self.user_cpu + self.system_cpu) / self.relayed if self.echoes else 0.0


def _bind_channel(client: TurnClient, number: int, peer: tuple[str, int]) -> None:
    answer = client.request(
        Method.CHANNEL_BIND,
        lambda tid: [
            (Attr.CHANNEL_NUMBER, stun.encode_channel_number(number)),
            (Attr.XOR_PEER_ADDRESS, stun.encode_xor_address(peer, tid)),
        ],
    )
    if answer.cls != MessageClass.SUCCESS:
        raise SystemExit(f"ChannelBind refused: {answer.error_code()}")


def relay_cost(
    port: int, pid: int, *, echoes: int, sessions: int, window: int, length: int
) -> CostRun:
    """``echoes`` ChannelData round trips through the server, ``window`` per session."""
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer.bind((HOST, 0))
    peer.setblocking(False)
    clients = [TurnClient((HOST, port), USER, PASSWORD) for _ in range(sessions)]
    selector = selectors.DefaultSelector()
    try:
        frames = {}
        for index, client in enumerate(clients):
            answer = client.allocate()
            if answer.cls != MessageClass.SUCCESS:
                raise SystemExit(f"Allocate refused: {answer.error_code()}")
            _bind_channel(client, 0x4000 + index, peer.getsockname())
            client.sock.setblocking(False)
            frames[client.sock] = stun.encode_channel_data(0x4000 + index, bytes(length))
            selector.register(client.sock, selectors.EVENT_READ)
        selector.register(peer, selectors.EVENT_READ)
        return _pump(selector, peer, frames, (HOST, port), pid, echoes=echoes, window=window)
    finally:
        selector.close()
        peer.close()
        for client in clients:
            _release(client)


def _release(client: TurnClient) -> None:
    """Refresh(0), then close: the next run's clients may get the same ports, and a
    5-tuple that still holds an allocation gets 437 (RFC 8656 §7.2)."""
    client.sock.settimeout(REQUEST_TIMEOUT)
    with contextlib.suppress(AssertionError, OSError):
        client.request(Method.REFRESH, lambda tid: [(Attr.LIFETIME, stun.encode_uint32(0))])
    client.close()


def _pump(
    selector: selectors.BaseSelector,
    peer: socket.socket,
    frames: dict[socket.socket, bytes],
    server: tuple[str, int],
    pid: int,
    *,
    echoes: int,
    window: int,
) -> CostRun:
    """Keep ``window`` frames in flight per session until ``echoes`` came back."""
    received = sent = resent = 0
    budget = echoes
    user0, system0 = cpu_split(pid)
    start = time.monotonic()
    for sock, frame in frames.items():
        for _ in range(window):
            sock.sendto(frame, server)
            sent += 1
    while received < echoes:
        events = selector.select(timeout=0.5)
        if not events:
            # Lost on the way (a kernel buffer overflowed): one more frame per session.
            for sock, frame in frames.items():
                sock.sendto(frame, server)
                resent += 1
            continue
        for key, _ in events:
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            if sock is peer:
                _echo(peer)
                continue
            while True:
                try:
                    sock.recv(2048)
                except BlockingIOError:
                    break
                received += 1
                if sent < budget:
                    sock.sendto(frames[sock], server)
                    sent += 1
    user1, system1 = cpu_split(pid)
    return CostRun(
        sessions=len(frames),
        window=window,
        echoes=received,
        resent=resent,
        seconds=time.monotonic() - start,
        user_cpu=user1 - user0,
        system_cpu=system1 - system0,
    )


def _echo(peer: socket.socket) -> None:
    """Send back everything the peer socket has received (to the relay it came from)."""
    while True:
        try:
            data, source = peer.recvfrom(2048)
        except BlockingIOError:
            return
        peer.sendto(data, source)


@contextlib.contextmanager
def traced(pid: int, output: Path, *, enabled: bool) -> Iterator[dict[str, int]]:
    """System calls of ``pid`` while the block runs (``strace -c -f``), by name."""
    calls: dict[str, int] = {}
    if not enabled:
        yield calls
        return
    argv = [require("strace"), "-c", "-f", "-p", str(pid), "-o", str(output)]
    tracer = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True)
    assert tracer.stderr is not None
    tracer.stderr.readline()  # "strace: Process N attached": tracing from here on
    try:
        yield calls
    finally:
        tracer.send_signal(signal.SIGINT)
        tracer.wait(timeout=30)
        for line in output.read_text().splitlines():
            parts = line.split()
            # "% time  seconds  usecs/call  calls  [errors]  syscall"
            if len(parts) >= 5 and parts[3].isdigit() and parts[-1] != "total":
                calls[parts[-1]] = int(parts[3])


class _CountingRelay:
    def __init__(self) -> None:
        self.sent = 0

    def sendto(self, data: bytes, peer: object) -> None:
        self.sent += 1


def path_cost(datagrams: int) -> float:
    """CPU µs per ChannelData datagram through the UDP listener's protocol, in process."""
    from voipsec.nat import service as shell

    now = time.time()
    turn = shell.TurnService(
        listen=[f"udp:{HOST}:3478"],
        realm=REALM,
        lookup_key=lambda user: long_term_key(USER, REALM, PASSWORD) if user == USER else None,
        rest_secret=None,
        allowed_peers=[f"{HOST}/32"],
        bandwidth=10**12,
    )
    client, server, peer = (HOST, 40000), (HOST, 3478), (HOST, 40002)
    five = shell.FiveTuple("udp", client, server)
    nonce = stun.parse_message(turn.core.handle(now, five, _request(Method.ALLOCATE))[0].data)
    key_attrs = nonce.get(Attr.NONCE)
    assert key_attrs is not None
    for method in (Method.ALLOCATE, Method.CHANNEL_BIND):
        actions = turn.core.handle(now, five, _request(method, key_attrs, peer))
        for action in actions:
            if isinstance(action, shell.OpenRelay):
                turn.core.relay_opened(now, action.allocation, (HOST, 50000))
    relay = _CountingRelay()
    turn._relays[1] = relay  # type: ignore[assignment]
    listener = shell._ClientDatagrams(turn)
    listener._local = server
    frame = stun.encode_channel_data(0x4000, bytes(160))
    receive = listener.datagram_received
    start = time.process_time()
    for _ in range(datagrams):
        receive(frame, client)
    spent = time.process_time() - start
    if relay.sent != datagrams:
        raise SystemExit(f"only {relay.sent} of {datagrams} datagrams were relayed")
    return 1e6 * spent / datagrams


def _request(method: int, nonce: bytes | None = None, peer: tuple[str, int] = ("", 0)) -> bytes:
    tid = os.urandom(12)
    attrs: list[tuple[int, bytes]] = []
    if method == Method.ALLOCATE:
        attrs.append((Attr.REQUESTED_TRANSPORT, stun.encode_requested_transport()))
    else:
        attrs.append((Attr.CHANNEL_NUMBER, stun.encode_channel_number(0x4000)))
        attrs.append((Attr.XOR_PEER_ADDRESS, stun.encode_xor_address(peer, tid)))
    key = None
    if nonce is not None:
        attrs += [(Attr.USERNAME, USER.encode()), (Attr.REALM, REALM.encode()), (Attr.NONCE, nonce)]
        key = long_term_key(USER, REALM, PASSWORD)
    message = Message(
        method=method, cls=MessageClass.REQUEST, transaction_id=tid, attributes=tuple(attrs)
    )
    return stun.encode(message, key=key)


# -- the run ---------------------------------------------------------------------------------


def bench_target(
    target: str, workdir: Path, peer_port: int, args: argparse.Namespace
) -> TargetReport:
    report = TargetReport(target=target)
    with start_target(target, workdir) as (port, pid):
        if args.cost:
            for _ in range(args.repeat):
                with traced(pid, workdir / "strace.txt", enabled=args.strace) as calls:
                    cost = relay_cost(
                        port,
                        pid,
                        echoes=args.cost // 2,
                        sessions=args.cost_sessions,
                        window=args.cost_window,
                        length=args.length,
                    )
                report.cost.append(cost)
                print(
                    f"  {target}: {cost.us_per_packet:.2f} µs CPU per relayed packet"
                    f" (user {1e6 * cost.user_cpu / cost.relayed:.2f},"
                    f" system {1e6 * cost.system_cpu / cost.relayed:.2f});"
                    f" {cost.relayed / cost.seconds:,.0f} relayed/s, {cost.resent} resent",
                    flush=True,
                )
                if calls:
                    shown = ", ".join(f"{n} {c / cost.relayed:.2f}" for n, c in calls.items())
                    total = sum(calls.values()) / cost.relayed
                    print(f"  {target}: {total:.2f} system calls per relayed packet: {shown}")
            return report
        report.allocation = allocation_cycles(
            port, pid, cycles=args.alloc_cycles, concurrency=args.alloc_concurrency, deadline=120
        )
        alloc = report.allocation
        print(
            f"  {target}: {alloc.per_second:,.0f} allocations/s"
            f" ({alloc.allocations} in {alloc.seconds:.1f} s, errors {alloc.error_codes},"
            f" {alloc.timeouts} timeouts)",
            flush=True,
        )
        lossy = 0
        for interval in args.intervals:
            step = relay_step(
                port,
                pid,
                peer_port,
                sessions=args.sessions,
                length=args.length,
                interval=interval,
                seconds=args.seconds,
            )
            report.relay.append(step)
            print(
                f"  {target}: -z {interval:>2}: client sent {step.sent_per_second:>7,.0f}/s,"
                f" relayed {step.relayed_per_second:>7,.0f}/s, lost {step.lost}",
                flush=True,
            )
            lossy = 0 if step.passed else lossy + 1
            if lossy >= MAX_LOSSY_STEPS:
                break
    return report


def cost_summary(reports: Sequence[TargetReport]) -> str:
    """Median CPU per relayed packet of each target (and voipsec's over coturn's)."""
    lines = ["", f"{'target':<10}{'µs CPU per relayed packet, median (runs)':>44}"]
    medians = {}
    for report in reports:
        if report.cost:
            medians[report.target] = statistics.median(c.us_per_packet for c in report.cost)
            runs = ", ".join(f"{c.us_per_packet:.2f}" for c in report.cost)
            lines.append(f"{report.target:<10}{medians[report.target]:>10.2f}  ({runs})")
    if "voipsec" in medians and medians.get("coturn"):
        lines.append(f"CPU per packet voipsec/coturn: {medians['voipsec'] / medians['coturn']:.2f}")
    return "\n".join(lines)


def summary(reports: Sequence[TargetReport]) -> str:
    if any(r.cost for r in reports):
        return cost_summary(reports)
    lines = [
        "",
        f"{'target':<10}{'relayed pkt/s (0 lost)':>24}{'at -z':>7}{'server CPU %':>14}"
        f"{'allocations/s':>15}{'alloc CPU %':>13}",
    ]
    for report in reports:
        best = report.best_relay
        alloc = report.allocation
        relay = f"{best.relayed_per_second:,.0f}" if best else "-"
        at = str(best.interval_ms) if best else "-"
        relay_cpu = f"{100 * best.server_cpu_share:.0f}" if best else "-"
        alloc_rate = f"{alloc.per_second:,.0f}" if alloc else "-"
        alloc_cpu = f"{100 * alloc.server_cpu / alloc.seconds:.0f}" if alloc else "-"
        lines.append(
            f"{report.target:<10}{relay:>24}{at:>7}{relay_cpu:>14}{alloc_rate:>15}{alloc_cpu:>13}"
        )
    by_name = {r.target: r for r in reports}
    voip, coturn = by_name.get("voipsec"), by_name.get("coturn")
    if voip and coturn:
        vb, cb = voip.best_relay, coturn.best_relay
        if vb and cb:
            lines.append(
                f"relay ratio voipsec/coturn: {vb.relayed_per_second / cb.relayed_per_second:.2f}"
            )
        if voip.allocation and coturn.allocation and coturn.allocation.per_second:
            ratio = voip.allocation.per_second / coturn.allocation.per_second
            lines.append(f"allocation ratio voipsec/coturn: {ratio:.2f}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", choices=["voipsec", "coturn", "both"], default="both")
    parser.add_argument("--sessions", type=int, default=100, help="uclient -m")
    parser.add_argument("--length", type=int, default=170, help="uclient -l")
    parser.add_argument(
        "--intervals",
        type=lambda text: [int(x) for x in text.split(",")],
        default=list(DEFAULT_INTERVALS),
        help="uclient -z steps in ms, slowest first",
    )
    parser.add_argument("--seconds", type=float, default=5.0, help="sending time per step")
    parser.add_argument("--alloc-cycles", type=int, default=5000)
    parser.add_argument("--alloc-concurrency", type=int, default=50)
    parser.add_argument(
        "--cost", type=int, default=0, help="measure CPU per relayed packet over N packets"
    )
    parser.add_argument("--repeat", type=int, default=1, help="--cost runs per target")
    parser.add_argument("--cost-sessions", type=int, default=50)
    parser.add_argument("--cost-window", type=int, default=4, help="frames in flight each")
    parser.add_argument("--strace", action="store_true", help="--cost: count system calls")
    parser.add_argument("--path", type=int, default=0, help="the listener's Python path only")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.path:
        print(f"{path_cost(args.path):.3f} µs CPU per ChannelData datagram (Python path)")
        return
    targets = ["voipsec", "coturn"] if args.target == "both" else [args.target]
    with tempfile.TemporaryDirectory(prefix="turn-bench-") as tmp:
        workdir = Path(tmp)
        peer_port = free_port(HOST, socket.SOCK_DGRAM)
        peer = [require("turnutils_peer"), "-L", HOST, "-p", str(peer_port)]
        with running(peer, log=workdir / "peer.log"):
            wait_for(lambda: udp_echoes(peer_port), deadline=10, what="turnutils_peer")
            reports = [bench_target(t, workdir, peer_port, args) for t in targets]
    print(summary(reports))
    if args.json:
        data = [
            {
                "target": r.target,
                "relay": [asdict(s) | {"passed": s.passed} for s in r.relay],
                "cost": [asdict(c) | {"us_per_packet": c.us_per_packet} for c in r.cost],
                "allocation": asdict(r.allocation) | {"per_second": r.allocation.per_second}
                if r.allocation
                else None,
            }
            for r in reports
        ]
        args.json.write_text(json.dumps(data, indent=2))


if __name__ == "__main__":
    main()

"""Calls per second over TLS: the voipsec B2BUA against Kamailio as a stateful proxy.

The load is SIPp (Debian's 3.6.1 has no TLS) behind stunnel client hops, as in
``bench/register_bench.py`` and ``tests/integration/test_calls_sipp.py``:

    SIPp UAC (bench_call_uac.xml, -t t1) ─TCP─ stunnel ─TLS─┐
                                                             server (voipsec | Kamailio)
    SIPp UAS (call_uas_register.xml, -oocsf                  │
              bench_call_uas_answer.xml, -t t1) ─TCP─ stunnel ─TLS─┘

Each callee SIPp REGISTERs its user (digest) over its own connection and answers every
call the server sends down that connection (out-of-call scenario). Each caller SIPp is
one TCP connection (one TLS connection through the hop) and places calls
INVITE → 407 → ACK → INVITE with MD5 credentials → 100/180 → 200 → ACK → hold
(``--hold-ms``) → BYE → 200. SIPp 3.6.1 computes MD5 only, so voipsec runs with
``auth.algorithms = ["MD5"]``; Kamailio's auth module uses MD5 by default. Kamailio runs
``bench/kamailio/kamailio-calls.cfg`` (tm, registrar/usrloc, auth, record_route, t_relay;
2 worker processes, TLSF allocator, 1 GB shared memory); voipsec is one process with its
defaults otherwise: the media relay (its port range widened to ``MEDIA_PORTS``: the
default holds 250 calls), the fraud engine (its ``concurrent-calls`` rule retuned above
the load in DATA/fraud/bench.yaml: a few callers place every call), CDRs, and metrics
(on a free port) -- unless ``--monitor`` says otherwise.

The rate is stepped upward (``--rates``); every step is bounded in calls
(``rate * --duration``, capped by ``--max-calls``) and in time (SIPp ``-timeout``, then
killed). A step passes when every call succeeded, SIPp exited 0 and the calls kept up
(successful calls / (SIPp's elapsed time - hold) >= 90 % of the asked rate: past
saturation the server queues before anything fails). Stepping stops at the first step
that does not pass; the result is the passing step with the highest achieved rate. Per
step: the server's CPU (its whole process tree, from /proc),
the hops' and SIPp's CPU, the CPU of everything else on the machine, the 1-minute load
average when the step started, the peak of concurrent calls (SIPp's ``CurrentCall``),
and the server's memory (PSS of its process tree, sampled every 0.2 s): its growth over
the idle value after warm-up, divided by the peak of concurrent calls, is the memory
per concurrent call -- use a long ``--hold-ms`` for that figure (it also holds what the
server keeps for a while per call placed, e.g. digest nonces; a run with the same calls
and no hold measures that part).

The machine should be otherwise idle: the ``other%`` column shows what else ran, and
``--retries`` repeats a step that did not pass while other work was busy.

``--edge`` (voipsec only): "trusted" keeps the default trusted loopback zone (no guard
bucket, no IDS); "ids" makes loopback an untrusted zone with its rate limit above the
load and the default IDS ruleset on, with ``invite-flood`` retuned above the load in a
user rule file (DATA/rules/bench.yaml; it is still evaluated for every INVITE); "off"
is the same untrusted zone with the IDS disabled, to isolate the IDS cost.

``--monitor`` (voipsec only): "default" is a fresh install's monitoring (metrics
listener and fraud engine on, SIP log and HEP export off); "off" also turns the metrics
listener and the fraud engine off (alerts cannot be turned off: they are stored when
raised, and this load raises none); "full" is the default plus the SIP log
(DATA/sip.log, default rotation) and HEP export over UDP to a sink in the bench process
(a thread drains and counts the datagrams). Wherever the metrics listener is on,
/metrics is scraped once after the last step: the run fails unless the answered-calls
counter equals the calls SIPp completed (check calls included). "full" also reports the
HEP datagrams and SIP log lines per call.

    .venv/bin/python bench/call_bench.py --target voipsec --edge trusted \\
        --rates 25,50,75,100,125,150,175,200 --duration 10 --retries 1
    .venv/bin/python bench/call_bench.py --target kamailio \\
        --rates 500,1000,1250,1500,1750,2000,2250,2500,3000 --duration 10 --retries 1
    .venv/bin/python bench/call_bench.py --target voipsec --rates 60 --duration 20 \\
        --hold-ms 25000      # memory per concurrent call (hold < media.timeout, 30 s)
    .venv/bin/python bench/call_bench.py --target voipsec --monitor full \\
        --rates 100 --duration 20 --retries 1      # CPU per call with all monitoring on

``--transport udp`` (issue 16) runs the same calls over UDP: the server gets a UDP
listener next to its TLS one (voipsec: ``sip.udp_buffer`` at its default; Kamailio: a
``listen=udp:`` line added to its config), the caller and callee SIPps talk to it
directly with ``-t u1`` (no stunnel hops; a caller SIPp is one
UDP socket), the callees register with a plain ``sip:`` Contact and answer with
``bench_call_uas_answer_udp.xml`` (the 200 retransmitted until the ACK, as a UDP UAS
must). After the last step the kernel's drop counter of voipsec's UDP sockets and the
2xx never ACKed are read from /metrics and printed:

    .venv/bin/python bench/call_bench.py --target voipsec --transport udp \
        --rates 150,200,250,300 --duration 8 --retries 1

``--loop-lag`` (voipsec only) runs the server with the event-loop lag probe
(``bench/looplag/sitecustomize.py``, first on the server's PYTHONPATH; src/ is not
changed): a callback every 5 ms records how late it ran, and each step reports the
longest lag and its 99th and 99.9th percentiles over the step, and the most CPU the loop
thread used between a tick's scheduling and its run (its own work, not time it waited for
a core) (``bench/loop_lag.py``).
``--src DIR`` runs voipsec -- the server, ``voipsec init``/``config`` and the user store
-- from another source tree (e.g. a worktree of an older revision), so this script
measures any revision the same way; the revision printed is that tree's:

    .venv/bin/python bench/call_bench.py --target voipsec --rates 100 --duration 30 \\
        --loop-lag --src /path/to/old-worktree/src      # CDR writes and the event loop
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import http.client
import importlib
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench"
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(BENCH))

import call_stats as cs  # noqa: E402
import register_bench as rb  # noqa: E402
from loop_lag import LoopLag, main_thread_cpu, python_path, server_env, step_lag  # noqa: E402
from register_bench import BUSY_SHARE, CHECK_CALLS, DOMAIN, RATE_TOLERANCE  # noqa: E402
from tests.peers.proc import free_port, require, running, wait_for  # noqa: E402
from tests.peers.sipp import (  # noqa: E402
    LOG_FILE,
    SippProcess,
    SippResult,
    run_sipp,
    start_sipp,
    write_csv,
)
from tests.peers.stunnel import stunnel_client  # noqa: E402

SIPP_DIR = BENCH / "sipp"
UAC_XML = SIPP_DIR / "bench_call_uac.xml"
UAS_REGISTER_XML = SIPP_DIR / "call_uas_register.xml"
UAS_ANSWER_XML = SIPP_DIR / "bench_call_uas_answer.xml"
UAS_ANSWER_UDP_XML = SIPP_DIR / "bench_call_uas_answer_udp.xml"
KAMAILIO_CFG = BENCH / "kamailio" / "kamailio-calls.cfg"
KAMAILIO_TLS_CFG = BENCH / "kamailio" / "tls.cfg"
#: Kamailio's memory manager for shared and private memory. Its default here, q_malloc
#: (the debugging one), spent 44 % of Kamailio's CPU in qm_malloc under this load
#: (perf); TLSF is one of its allocators without the debugging bookkeeping.
MEMORY_MANAGER = "tlsf"
#: Kamailio's shared memory (MB). Transactions live 5 s after they end (tm's wait
#: timer) and TLS buffers are in shared memory: 256 MB ran out at 2,000 calls/s.
SHM_MB = 1024
#: voipsec's relay port range for the bench (4 ports per call: 3,192 calls at once).
MEDIA_PORTS = "20000-32767"
DEFAULT_RATES = (50, 100, 200, 300, 400, 500, 600, 800, 1000, 1250, 1500, 1750, 2000, 2500, 3000)
#: The callees register for this long (call_uas_register.xml: Expires 600); the bench
#: must end well before.
REGISTRATION_SECONDS = 600
#: The callee SIPp waits for this many calls, i.e. runs until it is stopped.
NEVER = "1000000000"
#: The loop-lag probe's output, in the target's working directory (``--loop-lag``).
LAG_FILE = "loop-lag.jsonl"
#: The /metrics sample that counts completed calls.
ANSWERED_CALLS = 'voipsec_calls_total{disposition="answered"}'
#: The /metrics samples a UDP run reports (issue 16): kernel drops, 2xx never ACKed.
UDP_DROPS = "voipsec_sip_udp_receive_drops"
UNACKED_2XX = "voipsec_sip_2xx_unacknowledged"


# -- data ----------------------------------------------------------------------------


@dataclass
class Step:
    """One rate step: what the caller SIPps did and what it cost."""

    rate: int
    calls: int
    hold_ms: int
    successful: int
    failed: int
    returncode: int
    elapsed: float
    server_cpu: float
    stunnel_cpu: float
    sipp_cpu: float
    other_cpu: float
    load1: float
    concurrent_peak: int
    mem_idle_kib: int
    mem_peak_kib: int
    #: SIPp's mean call length (ms) over the step, hold included.
    call_length_ms: float
    unexpected: int = 0
    #: The first distinct SIPp error events of the callers (why calls failed).
    errors: list[str] = field(default_factory=list)
    #: How late the server's event loop ran its callbacks (``--loop-lag``).
    loop_lag: LoopLag | None = None
    #: The part of server_cpu spent by the server process's main thread (voipsec: the
    #: event loop; the rest is its other threads).
    server_main_cpu: float = 0.0

    @property
    def achieved(self) -> float:
        """Successful calls per second of the time spent placing them (hold excluded)."""
        placing = self.elapsed - self.hold_ms / 1000
        return self.successful / placing if placing > 0 else 0.0

    @property
    def passed(self) -> bool:
        return (
            self.failed == 0
            and self.successful == self.calls
            and self.returncode == 0
            and self.achieved >= RATE_TOLERANCE * self.rate
        )

    @property
    def cpu_percent(self) -> float:
        """Server CPU as a share of one core over the step."""
        return 100 * self.server_cpu / self.elapsed if self.elapsed else 0.0

    @property
    def cpu_us_per_call(self) -> float:
        return 1e6 * self.server_cpu / self.successful if self.successful else 0.0

    @property
    def kib_per_concurrent_call(self) -> float:
        """Server memory growth over idle per concurrent call at the peak."""
        if self.concurrent_peak <= 0:
            return 0.0
        return max(0, self.mem_peak_kib - self.mem_idle_kib) / self.concurrent_peak


@dataclass
class MonitorCheck:
    """What voipsec's monitoring outputs saw over a whole run (check calls included)."""

    #: Calls SIPp completed.
    calls: int
    #: ANSWERED_CALLS at the end; None without a metrics listener.
    metrics_answered: int | None = None
    #: Datagrams the HEP sink received; None without HEP export.
    hep_datagrams: int | None = None
    #: Lines of DATA/sip.log and its rotations; None without the SIP log.
    siplog_lines: int | None = None

    @property
    def ok(self) -> bool:
        return (
            self.metrics_answered in (None, self.calls)
            and self.hep_datagrams != 0
            and self.siplog_lines != 0
        )

    def describe(self) -> str:
        def per_call(n: int) -> str:
            return f"{n:,} ({n / self.calls:.1f} per call)" if self.calls else f"{n:,}"

        parts = [f"{self.calls:,} calls completed"]
        if self.metrics_answered is not None:
            parts.append(f"/metrics answered calls {self.metrics_answered:,}")
        if self.hep_datagrams is not None:
            parts.append(f"HEP datagrams {per_call(self.hep_datagrams)}")
        if self.siplog_lines is not None:
            parts.append(f"SIP log lines {per_call(self.siplog_lines)}")
        return ", ".join(parts)


@dataclass
class TargetReport:
    target: str
    edge: str
    monitor: str = "default"
    transport: str = "tls"
    check_ok: bool = False
    steps: list[Step] = field(default_factory=list)
    monitor_check: MonitorCheck | None = None

    @classmethod
    def of(cls, args: argparse.Namespace) -> TargetReport:
        if args.target == "voipsec":
            return cls(args.target, args.edge, args.monitor, args.transport)
        return cls(args.target, "-", "-", args.transport)

    @property
    def name(self) -> str:
        if self.target != "voipsec":
            return self.target + ("" if self.transport == "tls" else f"/{self.transport}")
        monitor = "" if self.monitor == "default" else f"/mon-{self.monitor}"
        transport = "" if self.transport == "tls" else f"/{self.transport}"
        return f"{self.target}/{self.edge}{monitor}{transport}"

    @property
    def best(self) -> Step | None:
        """The passing step with the highest achieved rate."""
        passing = [s for s in self.steps if s.passed]
        return max(passing, key=lambda s: s.achieved, default=None)


@dataclass(frozen=True)
class Server:
    name: str
    proc: subprocess.Popen[bytes]
    port: int
    ca_file: Path
    #: voipsec's /metrics port, when its listener is on.
    metrics_port: int | None = None
    #: voipsec's SIP log, when it is on.
    siplog: Path | None = None
    #: voipsec's UDP listener (``--transport udp``).
    udp_port: int | None = None


# -- servers -----------------------------------------------------------------------------


def bench_users(callers: int, callees: int) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(callers, callees) as (user, password); voipsec wants 8+ character passwords."""
    return (
        [(f"caller{i}", f"caller{i}-bench-pw") for i in range(1, callers + 1)],
        [(f"callee{i}", f"callee{i}-bench-pw") for i in range(1, callees + 1)],
    )


def kamailio_config(
    workdir: Path, port: int, users: Sequence[tuple[str, str]], udp_port: int | None = None
) -> Path:
    """kamailio-calls.cfg, tls.cfg, users.cfg and a throwaway PKI in workdir; with
    ``udp_port``, a UDP listener next to the TLS one (``--transport udp``)."""
    _ca, cert, key = rb.make_pki(workdir)
    tls_cfg = rb._fill(KAMAILIO_TLS_CFG, workdir / "tls.cfg", {"CERT": str(cert), "KEY": str(key)})
    users_cfg = workdir / "users.cfg"
    loads = "".join(f'\t$sht(passwords=>{u}) = "{p}";\n' for u, p in users)
    users_cfg.write_text("event_route[htable:mod-init] {\n" + loads + "}\n", encoding="utf-8")
    values = {"TLS_PORT": str(port), "TLS_CFG": str(tls_cfg), "USERS_CFG": str(users_cfg)}
    cfg = rb._fill(KAMAILIO_CFG, workdir / "kamailio.cfg", values)
    if udp_port is not None:
        tls = f"listen=tls:127.0.0.1:{port}\n"
        text = cfg.read_text(encoding="utf-8")
        cfg.write_text(text.replace(tls, f"{tls}listen=udp:127.0.0.1:{udp_port}\n", 1))
    return cfg


@contextlib.contextmanager
def kamailio_server(
    workdir: Path, users: Sequence[tuple[str, str]], children: int, transport: str = "tls"
) -> Iterator[Server]:
    port = free_port()
    udp_port = free_port(kind=socket.SOCK_DGRAM) if transport == "udp" else None
    cfg = kamailio_config(workdir, port, users, udp_port)
    check = subprocess.run(
        [require("kamailio"), "-c", "-f", str(cfg)], capture_output=True, text=True, check=False
    )
    if check.returncode != 0:
        raise RuntimeError(f"kamailio -c: {check.stderr[-3000:]}")
    rundir = workdir / "run"
    rundir.mkdir()
    argv = [
        require("kamailio"), "-DD", "-E", "-f", str(cfg), "-n", str(children),
        "-m", str(SHM_MB), "-M", "32", "-x", MEMORY_MANAGER, "-X", MEMORY_MANAGER,
        "-P", str(rundir / "kamailio.pid"),
        "-Y", str(rundir), "-w", str(rundir),
    ]  # fmt: skip
    log = workdir / "kamailio.log"
    with running(argv, cwd=workdir, log=log) as proc:
        rb._wait_listening(proc, port, log, "kamailio")
        yield Server("kamailio", proc, port, workdir / "ca.crt", udp_port=udp_port)


BENCH_RULES = """\
rules:
  - name: invite-flood
    description: retuned above the benchmark load (two INVITEs per call from one source)
    match: {kind: request, methods: [INVITE]}
    threshold: {count: 10000, window: 1, key: source}
    actions: [alert]
"""


BENCH_FRAUD_RULES = """\
rules:
  - id: concurrent-calls
    description: retuned above the benchmark load (a few caller users place every call)
    check: concurrent_calls
    critical: {threshold: 9999, action: block}
"""


@contextlib.contextmanager
def voipsec_server(
    workdir: Path,
    users: Sequence[tuple[str, str]],
    edge: str,
    monitor: str = "default",
    hep_port: int | None = None,
    env: dict[str, str] | None = None,
    sip_workers: int | None = None,
    transport: str = "tls",
) -> Iterator[Server]:
    """``voipsec serve`` on a free TLS port (and a UDP one for ``transport`` "udp"), MD5
    digest only, no TURN listener; users through ``Store.add_user``; loopback trusted or
    an untrusted zone, and monitoring as ``monitor`` says, HEP to ``hep_port`` for "full"
    (see the doc); ``env`` is added to the server's environment only."""
    storage = _storage()
    port = free_port()
    data = workdir / "voipsec-data"
    rb._voipsec("init", data=data)
    udp_port = free_port(kind=socket.SOCK_DGRAM) if transport == "udp" else None
    listen = f'"tls:127.0.0.1:{port}"' + (f', "udp:127.0.0.1:{udp_port}"' if udp_port else "")
    rb._voipsec("config", "set", "sip.listen", f"[{listen}]", data=data)
    rb._voipsec("config", "set", "auth.algorithms", '["MD5"]', data=data)
    rb._voipsec("config", "set", "turn.listen", "[]", data=data)
    if sip_workers is not None:  # signaling processes (default: one per core)
        rb._voipsec("config", "set", "sip.workers", str(sip_workers), data=data)
    # The media relay takes two port pairs per call: the default 1,000 ports hold 250
    # calls, fewer than this bench has at once. Stay below the ephemeral port range.
    rb._voipsec("config", "set", "media.ports", f'"{MEDIA_PORTS}"', data=data)
    # The metrics server stays on (unless --monitor off), on a free port (its default,
    # 8443, may be taken).
    metrics_port = None if monitor == "off" else free_port()
    metrics = f'"127.0.0.1:{metrics_port}"' if metrics_port else '""'
    rb._voipsec("config", "set", "metrics.listen", metrics, data=data)
    # The fraud engine stays on with its shipped rules; only the one the load breaks by
    # design (a few callers placing every call) is retuned above it, still evaluated.
    fraud = data / "fraud"
    fraud.mkdir(exist_ok=True)
    (fraud / "bench.yaml").write_text(BENCH_FRAUD_RULES, encoding="utf-8")
    siplog = None
    if monitor == "off":
        rb._voipsec("config", "set", "fraud.enabled", "false", data=data)
    elif monitor == "full":
        if hep_port is None:
            raise ValueError("--monitor full needs a HEP sink")
        rb._voipsec("config", "set", "siplog.enabled", "true", data=data)
        rb._voipsec("config", "set", "hep.target", f'"udp:127.0.0.1:{hep_port}"', data=data)
        siplog = data / "sip.log"
    if edge in ("ids", "off"):
        config = data / "voipsec.toml"
        text = config.read_text()
        cut = text.index("[[zones]]")
        rest = text[text.index("[calls]") :]
        config.write_text(
            text[:cut]
            + '[[zones]]\nname = "internet"\ncidrs = ["0.0.0.0/0", "::/0"]\n'
            + 'trust = "untrusted"\nrate_requests = 1000000\nrate_window = 1.0\n\n'
            + rest
        )
        rb._voipsec("config", "set", "ids.enabled", "true" if edge == "ids" else "false", data=data)
        rules = data / "rules"
        rules.mkdir(exist_ok=True)
        (rules / "bench.yaml").write_text(BENCH_RULES, encoding="utf-8")
    store = storage.Store(data / storage.DB_NAME)
    try:
        for name, password in users:
            store.add_user(name, password, DOMAIN)
    finally:
        store.close()
    log = workdir / "voipsec.log"
    argv = [*rb.voipsec_argv(), "serve", "--dir", str(data)]
    with running(argv, cwd=workdir, log=log, env=env) as proc:
        rb._wait_listening(proc, port, log, "voipsec")
        yield Server("voipsec", proc, port, data / "ca" / "ca.crt", metrics_port, siplog, udp_port)


def _storage() -> ModuleType:
    """voipsec.storage, or voipsec.store in a ``--src`` tree from before issue 14 moved it."""
    try:
        return importlib.import_module("voipsec.storage")
    except ModuleNotFoundError:
        return importlib.import_module("voipsec.store")


@contextlib.contextmanager
def start_server(
    args: argparse.Namespace, work: Path, users: Sequence[tuple[str, str]], hep_port: int | None
) -> Iterator[Server]:
    if args.target == "kamailio":
        with kamailio_server(work, users, args.children, args.transport) as server:
            yield server
    else:
        env = server_env(work / LAG_FILE) if args.loop_lag else None
        with voipsec_server(
            work, users, args.edge, args.monitor, hep_port, env, args.sip_workers, args.transport
        ) as server:
            yield server


# -- monitoring outputs ----------------------------------------------------------------------


class DatagramSink:
    """A UDP socket on loopback that a thread drains, counting the datagrams: the HEP
    collector of ``--monitor full`` (voipsec's export costs the same whoever reads it)."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with contextlib.suppress(OSError):  # capped by net.core.rmem_max
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(cs.SAMPLE_INTERVAL)
        self.port: int = self.sock.getsockname()[1]
        self.datagrams = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        buffer = bytearray(65536)
        while not self._stop.is_set():
            try:
                self.sock.recv_into(buffer)
            except TimeoutError:
                continue
            except OSError:
                return
            self.datagrams += 1

    def __enter__(self) -> DatagramSink:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()


def scrape_metrics(server: Server) -> dict[str, float]:
    """GET /metrics once over TLS, trusting voipsec's CA: ``name{labels}`` -> value."""
    from prometheus_client.parser import text_string_to_metric_families

    port = server.metrics_port
    assert port is not None
    context = ssl.create_default_context(cafile=str(server.ca_file))
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=10)
    try:
        conn.request("GET", "/metrics")
        response = conn.getresponse()
        body = response.read().decode("utf-8")
    finally:
        conn.close()
    if response.status != 200:
        raise RuntimeError(f"/metrics: HTTP {response.status}: {body[:300]}")
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return samples


def check_monitoring(server: Server, calls: int, sink: DatagramSink | None) -> MonitorCheck:
    """What /metrics, the HEP sink and the SIP log saw, after the calls have settled."""
    time.sleep(1.0)
    check = MonitorCheck(calls)
    if server.metrics_port is not None:
        check.metrics_answered = int(scrape_metrics(server).get(ANSWERED_CALLS, 0))
    if sink is not None:
        check.hep_datagrams = sink.datagrams
    if server.siplog is not None:
        check.siplog_lines = sum(
            path.read_bytes().count(b"\n") for path in server.siplog.parent.glob("sip.log*")
        )
    return check


# -- the load ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Load:
    """Caller SIPps (one injection file, hence one caller and callee, each) and the hop."""

    hop: str
    csvs: tuple[Path, ...]
    callee_of: tuple[str, ...]
    #: SIPp's -t: "t1" (TCP to a stunnel hop) or "u1" (UDP straight to voipsec).
    sipp_transport: str = "t1"


@contextlib.contextmanager
def callees_registered(
    server: Server,
    callees: Sequence[tuple[str, str]],
    work: Path,
    budget: float,
) -> Iterator[tuple[subprocess.Popen[bytes] | None, list[SippProcess]]]:
    """One SIPp per callee over one stunnel hop (over UDP straight to voipsec when it has
    a UDP listener): registered, answering every call. Yields the hop's stunnel process
    (None over UDP) and the callee SIPps."""
    hop = free_port()
    udp = server.udp_port
    with contextlib.ExitStack() as stack:
        tunnel = None
        if udp is None:
            tunnel = stack.enter_context(
                stunnel_client(
                    hop, "127.0.0.1", server.port, server.ca_file, work / "stunnel-callee"
                )
            )
        procs = []
        for user, password in callees:
            port = free_port(kind=socket.SOCK_DGRAM) if udp else free_port()
            inf = write_csv(work / f"{user}.csv", [(user, password, DOMAIN, NEVER)])
            contact = f"sip:{user}@127.0.0.1:{port}" + ("" if udp else ";transport=tls")
            procs.append(
                stack.enter_context(
                    start_sipp(
                        UAS_REGISTER_XML,
                        f"127.0.0.1:{udp or hop}",
                        workdir=work / f"sipp-{user}",
                        inf_csv=inf,
                        calls=1,
                        transport="u1" if udp else "t1",
                        local_port=port,
                        ooc_scenario=UAS_ANSWER_UDP_XML if udp else UAS_ANSWER_XML,
                        keys={"uas_contact": contact},
                        extra=["-auth_uri", DOMAIN],
                        timeout=budget,
                        trace_logs=True,
                    )
                )
            )
        for proc in procs:
            wait_for(
                functools.partial(_registered_or_gone, proc),
                deadline=20,
                what="a callee SIPp to register",
            )
            if not proc.running():
                raise RuntimeError(f"callee SIPp exited:\n{proc.wait(0).error_tail()}")
        yield tunnel, procs


def _registered_or_gone(proc: SippProcess) -> bool:
    """True once the callee SIPp logged its registration, or when it exited."""
    if not proc.running():
        return True
    log = proc.workdir / LOG_FILE
    return log.exists() and "registered " in log.read_text(errors="replace")


def _caller(
    load: Load, index: int, rate: float, calls: int, hold_ms: int, timeout: float, work: Path
) -> SippResult:
    return run_sipp(
        UAC_XML, load.hop, workdir=work, inf_csv=load.csvs[index], rate=rate, calls=calls,
        transport=load.sipp_transport, extra=["-auth_uri", f"{load.callee_of[index]}@{DOMAIN}"],
        call_length_ms=hold_ms, timeout=timeout,
    )  # fmt: skip


def run_callers(
    load: Load, rate: float, calls: int, hold_ms: int, timeout: float, work: Path
) -> list[SippResult]:
    """``calls`` at ``rate`` in all, split evenly over the caller SIPps."""
    k = len(load.csvs)
    shares = [calls // k + (1 if i < calls % k else 0) for i in range(k)]
    with ThreadPoolExecutor(max_workers=k) as pool:
        futures = [
            pool.submit(_caller, load, i, rate / k, n, hold_ms, timeout, work / f"caller-{i}")
            for i, n in enumerate(shares)
            if n > 0
        ]
        return [f.result() for f in futures]


# -- steps ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pids:
    server: int
    stunnels: tuple[int, ...]
    callees: tuple[int, ...]
    #: The loop-lag probe's output (``--loop-lag``).
    lag_file: Path | None = None


def cpu_snapshot(pids: Pids) -> tuple[float, float, float, float]:
    """(server tree, stunnel hops, SIPp: callees running + callers reaped, machine)."""
    return (
        rb.cpu_seconds(pids.server),
        sum(rb.cpu_seconds(p) for p in pids.stunnels),
        sum(rb.cpu_seconds(p) for p in pids.callees) + rb.children_cpu(),
        rb.machine_busy_cpu(),
    )


def run_step(
    pids: Pids, load: Load, rate: int, args: argparse.Namespace, work: Path, mem_idle: int
) -> Step:
    calls = max(1, min(int(rate * args.duration), args.max_calls))
    timeout = 2 * calls / rate + args.hold_ms / 1000 + 20
    load1 = os.getloadavg()[0]
    before = cpu_snapshot(pids)
    start, main_before = time.monotonic(), main_thread_cpu(pids.server)
    with cs.MemorySampler(pids.server) as memory:
        results = run_callers(load, rate, calls, args.hold_ms, timeout, work)
    end, main_cpu = time.monotonic(), main_thread_cpu(pids.server) - main_before
    after = cpu_snapshot(pids)
    lag = step_lag(pids.lag_file, start, end) if pids.lag_file else None
    server_cpu, stunnel_cpu, sipp_cpu, busy = (a - b for a, b in zip(after, before, strict=True))
    codes = [r.returncode for r in results]
    return Step(
        rate=rate, calls=calls, hold_ms=args.hold_ms,
        successful=sum(r.successful for r in results), failed=sum(r.failed for r in results),
        returncode=next((c for c in codes if c != 0), 0),
        elapsed=round(max(r.elapsed for r in results), 3),
        server_cpu=round(server_cpu, 2), stunnel_cpu=round(stunnel_cpu, 2),
        sipp_cpu=round(sipp_cpu, 2),
        other_cpu=round(max(0.0, busy - server_cpu - stunnel_cpu - sipp_cpu), 2),
        load1=round(load1, 2), concurrent_peak=cs.concurrent_peak(results),
        mem_idle_kib=mem_idle, mem_peak_kib=memory.peak,
        call_length_ms=round(cs.mean_call_length_ms(results), 1),
        unexpected=sum(sum(r.unexpected().values()) for r in results),
        errors=first_errors(results), loop_lag=lag, server_main_cpu=round(main_cpu, 2),
    )  # fmt: skip


def first_errors(results: Sequence[SippResult], limit: int = 3) -> list[str]:
    """Up to ``limit`` distinct SIPp error events (cut to 300 characters)."""
    found: list[str] = []
    for result in results:
        for event in result.error_events():
            text = " ".join(event.split())[:300]
            if text not in found:
                found.append(text)
            if len(found) >= limit:
                return found
    return found


def bench(args: argparse.Namespace, root: Path) -> TargetReport:
    """Start the server, register the callees, check a few calls, step the rate, check
    what the monitoring saw."""
    report = TargetReport.of(args)
    work = root / report.name.replace("/", "-")
    work.mkdir()
    callers, callees = bench_users(args.callers, args.callees)
    budget = REGISTRATION_SECONDS - 30
    with contextlib.ExitStack() as stack:
        sink = stack.enter_context(DatagramSink()) if report.monitor == "full" else None
        server = stack.enter_context(
            start_server(args, work, [*callers, *callees], sink.port if sink else None)
        )
        hop = free_port()
        over_udp = server.udp_port is not None
        with (
            contextlib.nullcontext(None) if over_udp else
            stunnel_client(hop, "127.0.0.1", server.port, server.ca_file, work / "stunnel-caller")
            as caller_hop,
            callees_registered(server, callees, work, budget) as (callee_hop, callee_procs),
        ):  # fmt: skip
            started = time.monotonic()
            targets = [callees[i % len(callees)][0] for i in range(len(callers))]
            csvs = tuple(
                write_csv(work / f"{u}.csv", [(u, p, DOMAIN, t)])
                for (u, p), t in zip(callers, targets, strict=True)
            )
            if over_udp:
                load = Load(f"127.0.0.1:{server.udp_port}", csvs, tuple(targets), "u1")
            else:
                load = Load(f"127.0.0.1:{hop}", csvs, tuple(targets))
            pids = Pids(
                server.proc.pid,
                tuple(h.pid for h in (caller_hop, callee_hop) if h is not None),
                tuple(p.proc.pid for p in callee_procs),
                work / LAG_FILE if args.loop_lag else None,
            )
            check = run_callers(load, 20, CHECK_CALLS, 0, 30, work / "check")
            report.check_ok = sum(r.successful for r in check) == CHECK_CALLS and not any(
                r.failed for r in check
            )
            if not report.check_ok:
                tails = "\n".join(r.error_tail() for r in check)
                raise RuntimeError(f"{report.name}: calls do not work\n{tails}")
            time.sleep(1.0)
            mem_idle = cs.tree_pss_kib(server.proc.pid)
            for rate in args.rates:
                if time.monotonic() - started + args.duration + args.hold_ms / 1000 > budget:
                    print(f"{report.name}: stopping: the callees' registration would expire")
                    break
                if not step_rate(report, pids, load, rate, args, work, mem_idle):
                    break
            if report.target == "voipsec" and report.monitor != "off":
                completed = CHECK_CALLS + sum(s.successful for s in report.steps)
                report.monitor_check = check_monitoring(server, completed, sink)
                if over_udp:
                    samples = scrape_metrics(server)
                    print(
                        f"{report.name}: /metrics {UDP_DROPS} {samples.get(UDP_DROPS, 0):.0f}, "
                        f"{UNACKED_2XX} {samples.get(UNACKED_2XX, 0):.0f}",
                        flush=True,
                    )
    return report


def step_rate(
    report: TargetReport,
    pids: Pids,
    load: Load,
    rate: int,
    args: argparse.Namespace,
    work: Path,
    mem_idle: int,
) -> bool:
    """One step (again, up to --retries times, when it failed while the machine was
    busy with other work). Every attempt is recorded; True if one passed."""
    for attempt in range(args.retries + 1):
        step = run_step(pids, load, rate, args, work / f"step-{rate}-{attempt}", mem_idle)
        report.steps.append(step)
        print_step(report.name, step)
        for error in step.errors:
            print(f"    SIPp: {error}", flush=True)
        if step.passed:
            return True
        if step.other_cpu < BUSY_SHARE * step.elapsed:
            return False
    return False


# -- output ------------------------------------------------------------------------------

HEADER = (
    f"{'target':<24} {'rate/s':>6} {'calls':>6} {'ok':>6} {'failed':>6} {'rc':>3} "
    f"{'achvd/s':>7} {'srv CPU%':>8} {'us/call':>7} {'hops%':>6} {'sipp%':>6} "
    f"{'other%':>6} {'load1':>5} {'conc':>6} {'mem MiB':>7} {'KiB/call':>8} {'len ms':>7}"
)
LAG_HEADER = (
    f" {'lag max ms':>10} {'p99.9 ms':>8} {'p99 ms':>6} {'ticks':>6}"
    f" {'loopCPU max':>11} {'p99 ms':>6} {'main us/call':>12}"
)


def print_step(name: str, s: Step) -> None:
    def pct(cpu: float) -> float:
        return 100 * cpu / s.elapsed if s.elapsed else 0.0

    print(
        f"{name:<24} {s.rate:>6} {s.calls:>6} {s.successful:>6} {s.failed:>6} "
        f"{s.returncode:>3} {s.achieved:>7.0f} {s.cpu_percent:>8.0f} {s.cpu_us_per_call:>7.0f} "
        f"{pct(s.stunnel_cpu):>6.0f} {pct(s.sipp_cpu):>6.0f} {pct(s.other_cpu):>6.0f} "
        f"{s.load1:>5.2f} {s.concurrent_peak:>6} {s.mem_peak_kib / 1024:>7.1f} "
        f"{s.kib_per_concurrent_call:>8.2f} {s.call_length_ms:>7.1f}" + _lag_columns(s),
        flush=True,
    )


def _lag_columns(s: Step) -> str:
    """The --loop-lag columns: the lag, the loop's CPU per tick, main-thread CPU per call."""
    lag = s.loop_lag
    if lag is None:
        return ""
    main_us = 1e6 * s.server_main_cpu / s.successful if s.successful else 0.0
    return (
        f" {lag.max_us / 1000:>10.1f} {lag.p999_us / 1000:>8.1f} {lag.p99_us / 1000:>6.1f}"
        f" {lag.count:>6} {lag.cpu_max_us / 1000:>11.1f} {lag.cpu_p99_us / 1000:>6.1f}"
        f" {main_us:>12.0f}"
    )


def summary(report: TargetReport) -> list[str]:
    lines: list[str] = []
    if report.monitor_check is not None:
        verdict = "ok" if report.monitor_check.ok else "FAILED"
        lines.append(f"{report.name}: monitoring {verdict}: {report.monitor_check.describe()}")
    best = report.best
    if best is None:
        return [*lines, f"{report.name}: no step passed (check calls ok: {report.check_ok})"]
    lines += [
        f"{report.name}: highest rate with 0 failed calls: {best.achieved:.0f}/s "
        f"(step {best.rate}/s), server CPU {best.cpu_percent:.0f}% of a core, "
        f"{best.cpu_us_per_call:.0f} us per call",
        f"{report.name}: memory idle {best.mem_idle_kib / 1024:.1f} MiB; peak "
        f"{best.mem_peak_kib / 1024:.1f} MiB with {best.concurrent_peak} concurrent calls "
        f"at {best.rate}/s, hold {best.hold_ms} ms"
        + (
            f": {best.kib_per_concurrent_call:.2f} KiB per concurrent call"
            if best.hold_ms > 0
            else " (run with a long --hold-ms for the memory per concurrent call)"
        ),
    ]
    if best.loop_lag is not None:
        lag = best.loop_lag
        lines.append(
            f"{report.name}: event-loop lag at {best.rate}/s: longest {lag.max_us / 1000:.1f} ms, "
            f"p99.9 {lag.p999_us / 1000:.1f} ms, p99 {lag.p99_us / 1000:.1f} ms "
            f"({lag.count} ticks); the loop's CPU between a tick's scheduling and run: "
            f"longest {lag.cpu_max_us / 1000:.1f} ms, p99 {lag.cpu_p99_us / 1000:.1f} ms"
        )
    steps = report.steps
    worst = max((s.other_cpu / s.elapsed for s in steps if s.elapsed), default=0.0)
    if worst >= BUSY_SHARE:
        lines.append(
            f"warning: other processes used up to {100 * worst:.0f}% of a core during a step: "
            "the rates are low-side; rerun on an idle machine"
        )
    return lines


def revision(tree: Path = REPO) -> str:
    """The commit measured (``tree``: this checkout, or the one ``--src`` is in), and
    whether its src/ differs from it (other work in progress)."""
    try:
        head = subprocess.run(
            ["git", "-C", str(tree), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(tree), "status", "--porcelain", "--", "src"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + (" (src/ modified)" if dirty else "")


def to_json(report: TargetReport, args: argparse.Namespace) -> dict[str, object]:
    def step_json(s: Step) -> dict[str, object]:
        return {
            **asdict(s),
            "passed": s.passed,
            "achieved": round(s.achieved, 1),
            "cpu_percent": round(s.cpu_percent, 1),
            "cpu_us_per_call": round(s.cpu_us_per_call, 1),
            "kib_per_concurrent_call": round(s.kib_per_concurrent_call, 3),
        }

    names = (
        "target edge monitor rates duration hold_ms callers callees children max_calls retries "
        "loop_lag"
    )
    monitor = report.monitor_check
    return {
        "revision": revision(_tree(args)),
        "settings": {
            **{name: getattr(args, name) for name in names.split()},
            "src": str(args.src) if args.src else None,
        },
        "check_ok": report.check_ok,
        "monitor_check": {**asdict(monitor), "ok": monitor.ok} if monitor else None,
        "steps": [step_json(s) for s in report.steps],
        "best": step_json(report.best) if report.best else None,
        "summary": summary(report),
    }


# -- command line ----------------------------------------------------------------------------


def _rates(text: str) -> list[int]:
    rates = sorted({int(x) for x in text.split(",") if x.strip()})
    if not rates or rates[0] <= 0:
        raise argparse.ArgumentTypeError("rates must be positive integers")
    return rates


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--target", choices=("voipsec", "kamailio"), default="voipsec")
    parser.add_argument(
        "--rates", type=_rates, default=list(DEFAULT_RATES),
        help="comma-separated call rates per second, stepped upward",
    )  # fmt: skip
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of calls per step")
    parser.add_argument("--hold-ms", type=int, default=0, help="call length after the ACK (ms)")
    parser.add_argument("--max-calls", type=int, default=60_000, help="cap on calls per step")
    parser.add_argument(
        "--callers", type=int, default=2,
        help="caller SIPp processes, one TLS connection and one caller user each",
    )  # fmt: skip
    parser.add_argument(
        "--callees", type=int, default=1,
        help="callee SIPp processes, each a registered user on its own TLS connection",
    )  # fmt: skip
    parser.add_argument("--children", type=int, default=2, help="Kamailio worker processes")
    parser.add_argument(
        "--edge", choices=("trusted", "ids", "off"), default="trusted",
        help="voipsec only: loopback trusted, untrusted with the IDS, or untrusted without",
    )  # fmt: skip
    parser.add_argument(
        "--monitor", choices=("off", "default", "full"), default="default",
        help="voipsec only: metrics and fraud off; a fresh install's (metrics, fraud); "
        "or those plus the SIP log and HEP export to a UDP sink",
    )  # fmt: skip
    parser.add_argument(
        "--retries", type=int, default=0,
        help="repeat a failed step this often when other processes were busy meanwhile",
    )  # fmt: skip
    parser.add_argument(
        "--loop-lag", action="store_true",
        help="voipsec only: measure the server's event-loop lag per step (bench/looplag)",
    )  # fmt: skip
    parser.add_argument(
        "--src", type=Path,
        help="voipsec only: run voipsec from this source tree (another revision's src/)",
    )  # fmt: skip
    parser.add_argument(
        "--sip-workers", type=int,
        help="voipsec only: sip.workers (signaling processes; default: the config's, one per core)",
    )  # fmt: skip
    parser.add_argument(
        "--transport", choices=("tls", "udp"), default="tls",
        help="the SIPps reach the server over TLS (stunnel hops) or UDP (issue 16)",
    )  # fmt: skip
    parser.add_argument("--json", type=Path, help="write the results to this file")
    parser.add_argument("--keep", action="store_true", help="keep the working directory")
    args = parser.parse_args(argv)
    if args.callers < 1 or args.callees < 1 or args.duration <= 0 or args.hold_ms < 0:
        parser.error("--callers, --callees and --duration must be positive, --hold-ms >= 0")
    if args.target != "voipsec" and (args.loop_lag or args.src):
        parser.error("--loop-lag and --src are for --target voipsec")
    if args.src and not (args.src / "voipsec" / "__init__.py").is_file():
        parser.error(f"--src {args.src}: no voipsec package there")
    return args


def _tree(args: argparse.Namespace) -> Path:
    """The checkout whose revision is measured."""
    return args.src.resolve().parent if args.src else REPO


def use_src(src: Path) -> None:
    """Import voipsec from ``src`` here and in every child (before the first import)."""
    if "voipsec" in sys.modules:
        raise RuntimeError("--src: voipsec was imported before the source tree was chosen")
    sys.path.insert(0, str(src.resolve()))
    os.environ["PYTHONPATH"] = python_path(str(src.resolve()))


def main(argv: Sequence[str] | None = None) -> int:
    """Run the bench; 0 when the check calls worked, at least one step passed and the
    monitoring saw the calls."""
    args = parse_args(argv)
    if args.src:
        use_src(args.src)
    root = Path(tempfile.mkdtemp(prefix="call-bench-"))
    report = TargetReport.of(args)
    print(f"revision {revision(_tree(args))}; load average {os.getloadavg()[0]:.2f}", flush=True)
    print(HEADER + (LAG_HEADER if args.loop_lag else ""), flush=True)
    try:
        report = bench(args, root)
    except (RuntimeError, AssertionError, subprocess.CalledProcessError) as err:
        detail = getattr(err, "stderr", None) or b""
        if isinstance(detail, bytes):
            detail = detail.decode(errors="replace")
        print(f"{report.name}: {err} {detail}".strip(), flush=True)
    finally:
        if args.keep:
            print(f"working directory kept: {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    for line in summary(report):
        print(line)
    if args.json:
        args.json.write_text(json.dumps(to_json(report, args), indent=2) + "\n")
    monitor_ok = report.monitor_check is None or report.monitor_check.ok
    return 0 if report.check_ok and report.best and monitor_ok else 1


if __name__ == "__main__":
    sys.exit(main())

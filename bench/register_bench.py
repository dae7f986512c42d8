"""REGISTER-with-digest throughput over TLS: voipsec against Kamailio, same load, same hop.

For each target the bench starts the registrar on 127.0.0.1 (TLS only), creates N users,
puts a stunnel client hop in front (Debian's SIPp has no TLS), checks that a good password
registers, steps SIPp's REGISTER rate, and at the end checks that a wrong password is
refused. Each step is
bounded (``rate * duration`` calls, capped, and a SIPp timeout) and records the failures
and the CPU seconds the server's processes used. The result per target is the highest
rate whose step had 0 failed registrations and kept up (SIPp reached 90% of the asked
rate; past saturation the server queues and SIPp's elapsed time stretches). Stepping stops
after the first step that does not pass.

Digest: SIPp 3.6.1 computes MD5 only and answers the FIRST WWW-Authenticate header (it
exits on a SHA-256 challenge), so voipsec is configured with ``auth.algorithms = ["MD5"]``
for this bench; Kamailio's auth module stays at its default, MD5, with qop=auth.

Connections: every SIPp runs with ``-t t1`` (one persistent TCP connection, hence one
TLS connection through stunnel, as phones keep theirs); ``--connections K`` runs K SIPp
processes side by side, each with 1/K of the rate and its own slice of the users, so the
server sees K long-lived TLS connections. ``-t tn`` is not used: SIPp 3.6.1 either opens a
connection (a TLS handshake) per REGISTER or, once ``-max_socket`` is reached, shares
sockets that other calls then close ("Broken pipe"). The same K is used for every target.

    python bench/register_bench.py --target kamailio --json /tmp/bench.json
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import ipaddress
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.peers.proc import free_port, port_open, require, running, wait_for  # noqa: E402
from tests.peers.sipp import SippResult, run_sipp, write_users_csv  # noqa: E402
from tests.peers.stunnel import stunnel_client  # noqa: E402

BENCH = REPO / "bench"
DIGEST_XML = BENCH / "sipp" / "register_digest.xml"
WRONG_XML = BENCH / "sipp" / "register_wrong_password.xml"
KAMAILIO_DIR = BENCH / "kamailio"
DOMAIN = "localhost"
DEFAULT_RATES = (500, 1000, 2000, 3000, 4000, 6000, 8000, 12000, 16000)
#: Kamailio's best figure here: with one TLS connection a single worker serves it.
DEFAULT_CONNECTIONS = 4
CHECK_CALLS = 20
START_DEADLINE = 30.0
#: A step passes only if SIPp also reached this share of the asked rate.
RATE_TOLERANCE = 0.9
#: Share of one core used by unrelated processes above which the results get a warning.
BUSY_SHARE = 0.2


# -- data ----------------------------------------------------------------------------


@dataclass
class Step:
    """One rate step: what SIPp did and what it cost the server."""

    rate: int
    calls: int
    successful: int
    failed: int
    returncode: int
    elapsed: float
    achieved: float
    server_cpu: float
    stunnel_cpu: float
    sipp_cpu: float
    #: CPU seconds used on this machine by everything else (other jobs share the cores).
    other_cpu: float = 0.0

    @property
    def passed(self) -> bool:
        """Every REGISTER succeeded and SIPp kept (nearly) the asked rate."""
        return (
            self.failed == 0
            and self.successful == self.calls
            and self.returncode == 0
            and self.achieved >= RATE_TOLERANCE * self.rate
        )

    @property
    def cpu_us_per_register(self) -> float:
        """Server CPU microseconds per successful registration."""
        return 1e6 * self.server_cpu / self.successful if self.successful else 0.0


@dataclass
class TargetReport:
    """All steps for one target and the checks done before them."""

    target: str
    register_ok: bool = False
    wrong_password_refused: bool = False
    steps: list[Step] = field(default_factory=list)

    @property
    def best(self) -> Step | None:
        """The passing step with the highest achieved rate."""
        passing = [s for s in self.steps if s.passed]
        return max(passing, key=lambda s: s.achieved, default=None)


@dataclass(frozen=True)
class Server:
    """A running registrar: its main process and the CA its certificate chains to."""

    name: str
    proc: subprocess.Popen[bytes]
    port: int
    ca_file: Path


# -- helpers -------------------------------------------------------------------------


def bench_users(count: int) -> list[tuple[str, str]]:
    """userNNNN / pwNNNN-bench (voipsec wants passwords of 8 characters or more)."""
    return [(f"user{i:04d}", f"pw{i:04d}-bench") for i in range(1, count + 1)]


def _clock_ticks() -> int:
    return int(os.sysconf("SC_CLK_TCK"))


def _stat_fields(pid: int) -> list[str] | None:
    """/proc/PID/stat fields after the command name (field 3 onward), or None."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()


def process_tree(root: int) -> list[int]:
    """``root`` and all its live descendants (Kamailio forks its workers)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        if fields is not None:
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, []))
    return tree


def cpu_seconds(root: int) -> float:
    """utime + stime of ``root``'s process tree, in seconds (threads included)."""
    ticks = 0
    for pid in process_tree(root):
        fields = _stat_fields(pid)
        if fields is not None:
            ticks += int(fields[11]) + int(fields[12])
    return ticks / _clock_ticks()


def children_cpu() -> float:
    """CPU seconds of this process's reaped children (SIPp runs, once finished)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def machine_busy_cpu() -> float:
    """CPU seconds all cores spent not idle since boot (/proc/stat, idle and iowait out)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    guest = sum(fields[8:10])  # guest time is already counted in user and nice
    return (sum(fields) - idle - guest) / _clock_ticks()


def cpu_snapshot(server_pid: int, stunnel_pid: int) -> tuple[float, float, float, float]:
    """(server, stunnel, finished SIPp runs, whole machine) CPU seconds so far."""
    return (
        cpu_seconds(server_pid),
        cpu_seconds(stunnel_pid),
        children_cpu(),
        machine_busy_cpu(),
    )


def _wait_listening(proc: subprocess.Popen[bytes], port: int, log: Path, what: str) -> None:
    """Wait until port accepts; fail with the log tail if the process exits first."""
    wait_for(
        lambda: proc.poll() is not None or port_open("127.0.0.1", port),
        deadline=START_DEADLINE,
        what=f"{what} to listen on 127.0.0.1:{port}",
    )
    if proc.poll() is not None:
        tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
        raise RuntimeError(f"{what} exited with {proc.returncode}:\n{tail}")


# -- PKI for Kamailio ----------------------------------------------------------------


def make_pki(directory: Path) -> tuple[Path, Path, Path]:
    """A throwaway ECDSA P-256 CA and a server certificate for localhost / 127.0.0.1.

    Returns (ca_cert, server_cert, server_key) as PEM files.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(name("bench CA"))
        .issuer_name(name("bench CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    san = x509.SubjectAlternativeName(
        [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(name("localhost"))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(san, critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = (directory / "ca.crt", directory / "server.crt", directory / "server.key")
    paths[0].write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    paths[2].chmod(0o600)
    return paths


# -- Kamailio ------------------------------------------------------------------------


def _fill(template: Path, target: Path, values: dict[str, str]) -> Path:
    """Copy a template replacing each @NAME@ with its value."""
    text = template.read_text(encoding="utf-8")
    for key, value in values.items():
        text = text.replace(f"@{key}@", value)
    target.write_text(text, encoding="utf-8")
    return target


def kamailio_config(workdir: Path, port: int, users: Sequence[tuple[str, str]]) -> Path:
    """Write kamailio.cfg, tls.cfg, users.cfg and the PKI into workdir; returns the cfg."""
    _ca, cert, key = make_pki(workdir)
    tls_cfg = _fill(
        KAMAILIO_DIR / "tls.cfg", workdir / "tls.cfg", {"CERT": str(cert), "KEY": str(key)}
    )
    users_cfg = workdir / "users.cfg"
    loads = "".join(f'\t$sht(passwords=>{u}) = "{p}";\n' for u, p in users)
    users_cfg.write_text("event_route[htable:mod-init] {\n" + loads + "}\n", encoding="utf-8")
    values = {"TLS_PORT": str(port), "TLS_CFG": str(tls_cfg), "USERS_CFG": str(users_cfg)}
    return _fill(KAMAILIO_DIR / "kamailio.cfg", workdir / "kamailio.cfg", values)


@contextlib.contextmanager
def kamailio_server(
    workdir: Path, users: Sequence[tuple[str, str]], children: int
) -> Iterator[Server]:
    """Kamailio in the foreground (-DD -E) with ``children`` TLS workers."""
    port = free_port()
    cfg = kamailio_config(workdir, port, users)
    rundir = workdir / "run"
    rundir.mkdir()
    argv = [
        require("kamailio"), "-DD", "-E", "-f", str(cfg), "-n", str(children),
        "-m", "256", "-M", "32", "-P", str(rundir / "kamailio.pid"),
        "-Y", str(rundir), "-w", str(rundir),
    ]  # fmt: skip
    log = workdir / "kamailio.log"
    with running(argv, cwd=workdir, log=log) as proc:
        _wait_listening(proc, port, log, "kamailio")
        yield Server("kamailio", proc, port, workdir / "ca.crt")


# -- voipsec -------------------------------------------------------------------------


def voipsec_argv() -> list[str]:
    """How to run the voipsec command: this interpreter's module, else PATH."""
    with contextlib.suppress(ImportError):
        import voipsec  # noqa: F401

        return [sys.executable, "-m", "voipsec"]
    return [require("voipsec")]


def _voipsec(*args: str, data: Path) -> None:
    subprocess.run([*voipsec_argv(), *args, "--dir", str(data)], check=True, capture_output=True)


def add_voipsec_users(data: Path, users: Sequence[tuple[str, str]]) -> None:
    """The first user through ``voipsec user add``; the rest through the same Store API
    in-process when importable (the CLI costs ~0.7 s a user), else through the CLI."""
    first, rest = users[0], users[1:]
    _voipsec("user", "add", first[0], "--password", first[1], data=data)
    try:
        from voipsec.storage import DB_NAME, Store
    except ImportError:
        for name, password in rest:
            _voipsec("user", "add", name, "--password", password, data=data)
        return
    store = Store(data / DB_NAME)
    try:
        for name, password in rest:
            store.add_user(name, password, DOMAIN)
    finally:
        store.close()


@contextlib.contextmanager
def voipsec_server(
    workdir: Path, users: Sequence[tuple[str, str]], edge: str = "trusted"
) -> Iterator[Server]:
    """``voipsec serve`` on a free TLS port, MD5 digest only (what SIPp 3.6.1 can do).

    ``edge``: "trusted" keeps the default trusted loopback zone (no guard buckets, no
    IDS); "ids" makes loopback an untrusted zone with a rate limit above the load, so
    the guard and the default IDS ruleset see every message; "off" also disables the
    IDS in that zone setting, to measure the IDS alone.
    """
    port = free_port()
    data = workdir / "voipsec-data"
    _voipsec("init", data=data)
    _voipsec("config", "set", "sip.listen", f'["tls:127.0.0.1:{port}"]', data=data)
    _voipsec("config", "set", "auth.algorithms", '["MD5"]', data=data)
    if edge in ("ids", "off"):
        config = data / "voipsec.toml"
        text = config.read_text()
        config.write_text(
            text[: text.index("[[zones]]")]
            + '[[zones]]\nname = "internet"\ncidrs = ["0.0.0.0/0", "::/0"]\n'
            + "rate_requests = 1000000\nrate_window = 1.0\n"
        )
        _voipsec("config", "set", "ids.enabled", "true" if edge == "ids" else "false", data=data)
        # The load is one source sending thousands of REGISTER/s, which the default
        # register-flood rule rightly bans. Retuned above the load, the rule is still
        # evaluated for every message, so the IDS costs what it costs in service.
        rules = data / "rules"
        rules.mkdir()
        (rules / "bench.yaml").write_text(
            "rules:\n"
            "  - name: register-flood\n"
            "    description: retuned above the benchmark load\n"
            "    match: {kind: request, methods: [REGISTER]}\n"
            "    threshold: {count: 10000, window: 1, key: source}\n"
            "    actions: [alert]\n"
        )
    add_voipsec_users(data, users)
    log = workdir / "voipsec.log"
    with running([*voipsec_argv(), "serve", "--dir", str(data)], cwd=workdir, log=log) as proc:
        _wait_listening(proc, port, log, "voipsec")
        yield Server("voipsec", proc, port, data / "ca" / "ca.crt")


# -- the bench -----------------------------------------------------------------------


@dataclass(frozen=True)
class Load:
    """How SIPp drives the hop, the same for every target: one t1 SIPp per users file."""

    hop: str
    users_csvs: tuple[Path, ...]

    @property
    def connections(self) -> int:
        return len(self.users_csvs)


def write_user_slices(work: Path, users: Sequence[tuple[str, str]], k: int) -> tuple[Path, ...]:
    """Split the users over k injection files (one per SIPp, so one per connection)."""
    k = max(1, min(k, len(users)))
    return tuple(write_users_csv(work / f"users-{i}.csv", users[i::k], DOMAIN) for i in range(k))


def _sipp(
    load: Load, index: int, scenario: Path, rate: float, calls: int, timeout: float, work: Path
) -> SippResult:
    """One t1 SIPp (one TCP connection to the hop) with the index-th users file."""
    return run_sipp(
        scenario, load.hop, workdir=work, inf_csv=load.users_csvs[index], rate=rate,
        calls=calls, transport="t1", extra=["-auth_uri", DOMAIN], timeout=timeout,
    )  # fmt: skip


def combine(results: Sequence[SippResult]) -> SippResult:
    """Sum the counts of SIPp processes that ran side by side."""
    codes = [r.returncode for r in results]
    return SippResult(
        successful=sum(r.successful for r in results),
        failed=sum(r.failed for r in results),
        returncode=next((c for c in codes if c != 0), 0),
        elapsed=max(r.elapsed for r in results),
        stats={},
        workdir=next((r.workdir for r in results if r.returncode != 0), results[0].workdir),
    )


def run_load(
    load: Load, scenario: Path, rate: float, calls: int, timeout: float, work: Path
) -> SippResult:
    """``calls`` at ``rate`` in all, split evenly over the load's SIPp processes."""
    k = load.connections
    shares = [calls // k + (1 if i < calls % k else 0) for i in range(k)]
    with ThreadPoolExecutor(max_workers=k) as pool:
        futures = [
            pool.submit(_sipp, load, i, scenario, rate / k, n, timeout, work / f"sipp-{i}")
            for i, n in enumerate(shares)
            if n > 0
        ]
        return combine([f.result() for f in futures])


def check_good_password(report: TargetReport, load: Load, work: Path) -> None:
    """Every user slice registers with its password; raises when not."""
    good = run_load(load, DIGEST_XML, 50, CHECK_CALLS, 20, work / "check-good")
    report.register_ok = good.successful == CHECK_CALLS and good.failed == 0
    if not report.register_ok:
        raise RuntimeError(f"{report.target}: REGISTER does not work\n{good.error_tail()}")


def check_wrong_password(report: TargetReport, load: Load, work: Path) -> None:
    """A wrong password is refused (401 or 403). Run after the steps, so that a server
    which blocks an address after failed logins does not spoil the measurement."""
    bad = run_load(load, WRONG_XML, 50, CHECK_CALLS, 20, work / "check-wrong")
    report.wrong_password_refused = bad.successful == CHECK_CALLS and bad.failed == 0


def run_step(
    server: Server, stunnel_pid: int, load: Load, rate: int, args: argparse.Namespace, work: Path
) -> Step:
    """One bounded SIPp run at ``rate`` (files in ``work``); CPU read from /proc before
    and after."""
    calls = min(int(rate * args.duration), args.max_calls)
    timeout = 2 * calls / rate + 10
    before = cpu_snapshot(server.proc.pid, stunnel_pid)
    result = run_load(load, DIGEST_XML, rate, calls, timeout, work)
    after = cpu_snapshot(server.proc.pid, stunnel_pid)
    server_cpu, stunnel_cpu, sipp_cpu, busy = (a - b for a, b in zip(after, before, strict=True))
    other = max(0.0, busy - server_cpu - stunnel_cpu - sipp_cpu)
    return Step(
        rate=rate, calls=calls, successful=result.successful, failed=result.failed,
        returncode=result.returncode, elapsed=round(result.elapsed, 3),
        achieved=round(result.achieved_rate, 1), server_cpu=round(server_cpu, 2),
        stunnel_cpu=round(stunnel_cpu, 2), sipp_cpu=round(sipp_cpu, 2), other_cpu=round(other, 2),
    )  # fmt: skip


@contextlib.contextmanager
def start_server(
    target: str, work: Path, users: Sequence[tuple[str, str]], args: argparse.Namespace
) -> Iterator[Server]:
    """The named registrar, running."""
    if target == "kamailio":
        with kamailio_server(work, users, args.children) as server:
            yield server
    else:
        with voipsec_server(work, users, args.edge) as server:
            yield server


def bench_target(target: str, args: argparse.Namespace, root: Path) -> TargetReport:
    """Start ``target``, check it registers, step the rate until a step fails, check
    that a wrong password is refused."""
    work = root / target
    work.mkdir()
    users = bench_users(args.users)
    report = TargetReport(target)
    with start_server(target, work, users, args) as server:
        hop_port = free_port()
        with stunnel_client(hop_port, "127.0.0.1", server.port, server.ca_file, work) as hop:
            load = Load(f"127.0.0.1:{hop_port}", write_user_slices(work, users, args.connections))
            check_good_password(report, load, work)
            for rate in args.rates:
                if not step_rate(report, server, hop.pid, load, rate, args, work):
                    break
            check_wrong_password(report, load, work)
    return report


def step_rate(
    report: TargetReport,
    server: Server,
    stunnel_pid: int,
    load: Load,
    rate: int,
    args: argparse.Namespace,
    work: Path,
) -> bool:
    """Run one rate step, again (up to --retries times) when it failed while other
    processes were busy on the machine. Every attempt is recorded; True if one passed."""
    for attempt in range(args.retries + 1):
        step = run_step(server, stunnel_pid, load, rate, args, work / f"step-{rate}-{attempt}")
        report.steps.append(step)
        print_step(report.target, step)
        if step.passed:
            return True
        if step.other_cpu < BUSY_SHARE * step.elapsed:
            return False
    return False


def guarded_bench_target(target: str, args: argparse.Namespace, root: Path) -> TargetReport:
    """``bench_target``, turning a start-up or check failure into a failed report."""
    try:
        return bench_target(target, args, root)
    except subprocess.CalledProcessError as err:
        output = (err.stderr or b"").decode(errors="replace") + (err.stdout or b"").decode(
            errors="replace"
        )
        print(f"{target}: {' '.join(map(str, err.cmd))} failed: {output.strip()}", flush=True)
    except (RuntimeError, AssertionError) as err:
        print(f"{target}: {err}", flush=True)
    return TargetReport(target)


# -- output --------------------------------------------------------------------------

HEADER = (
    f"{'target':<9} {'rate/s':>7} {'calls':>6} {'ok':>6} {'failed':>6} {'rc':>3} "
    f"{'achieved/s':>10} {'srv CPU s':>9} {'srv CPU%':>8} {'us/reg':>7} "
    f"{'stunnel s':>9} {'sipp s':>7} {'other s':>7}"
)


def print_step(target: str, s: Step) -> None:
    """One table row, printed as soon as the step ends."""
    pct = 100 * s.server_cpu / s.elapsed if s.elapsed else 0.0
    print(
        f"{target:<9} {s.rate:>7} {s.calls:>6} {s.successful:>6} {s.failed:>6} "
        f"{s.returncode:>3} {s.achieved:>10.0f} {s.server_cpu:>9.2f} {pct:>8.0f} "
        f"{s.cpu_us_per_register:>7.0f} {s.stunnel_cpu:>9.2f} {s.sipp_cpu:>7.2f} "
        f"{s.other_cpu:>7.2f}",
        flush=True,
    )


def summary(reports: Sequence[TargetReport]) -> list[str]:
    """Per target: checks and best 0-failure rate; the voipsec/kamailio ratio if both."""
    lines = []
    for r in reports:
        best = r.best
        rate = f"{best.achieved:.0f}/s (step {best.rate}/s)" if best else "none"
        cpu = f", {best.cpu_us_per_register:.0f} us server CPU/reg" if best else ""
        lines.append(
            f"{r.target}: max 0-failure REGISTER rate {rate}{cpu}; good password registers: "
            f"{r.register_ok}; wrong password refused: {r.wrong_password_refused}"
        )
    by_name = {r.target: r.best for r in reports}
    vs, ka = by_name.get("voipsec"), by_name.get("kamailio")
    if vs and ka:
        lines.append(f"ratio voipsec/kamailio: {vs.achieved / ka.achieved:.2f}")
    return lines + busy_warning(reports)


def busy_warning(reports: Sequence[TargetReport]) -> list[str]:
    """A warning when other processes took a noticeable share of the cores meanwhile."""
    steps = [s for r in reports for s in r.steps]
    worst = max((s.other_cpu / s.elapsed for s in steps if s.elapsed), default=0.0)
    if worst < BUSY_SHARE:
        return []
    return [
        f"warning: other processes used up to {100 * worst:.0f}% of a core during a step "
        f"({sum(s.other_cpu for s in steps):.1f} CPU-s in all): the rates are low-side; "
        "rerun on an idle machine"
    ]


def step_json(step: Step) -> dict[str, object]:
    """A step's fields plus its verdict and CPU per registration."""
    return {
        **asdict(step),
        "passed": step.passed,
        "cpu_us_per_register": round(step.cpu_us_per_register, 1),
    }


def target_json(report: TargetReport) -> dict[str, object]:
    """A target's checks, every step and the best passing one."""
    return {
        "target": report.target,
        "register_ok": report.register_ok,
        "wrong_password_refused": report.wrong_password_refused,
        "steps": [step_json(s) for s in report.steps],
        "best": step_json(report.best) if report.best else None,
    }


def to_json(reports: Sequence[TargetReport], args: argparse.Namespace) -> dict[str, object]:
    """The whole run as plain data."""
    return {
        "settings": {
            "rates": args.rates, "duration": args.duration, "users": args.users,
            "connections": args.connections, "children": args.children,
            "retries": args.retries,
        },
        "targets": [target_json(r) for r in reports],
        "summary": summary(reports),
    }  # fmt: skip


# -- command line --------------------------------------------------------------------


def _rates(text: str) -> list[int]:
    return sorted({int(x) for x in text.split(",") if x.strip()})


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    default_target = "both" if shutil.which("kamailio") else "voipsec"
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--target", choices=("voipsec", "kamailio", "both"), default=default_target)
    parser.add_argument(
        "--rates",
        type=_rates,
        default=list(DEFAULT_RATES),
        help="comma-separated REGISTER rates per second, stepped upward",
    )
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per step")
    parser.add_argument("--max-calls", type=int, default=80_000, help="cap on calls per step")
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument(
        "--connections",
        type=int,
        default=DEFAULT_CONNECTIONS,
        help="SIPp processes side by side, one TLS connection each",
    )
    parser.add_argument("--children", type=int, default=2, help="Kamailio worker processes")
    parser.add_argument(
        "--retries",
        type=int,
        default=1,
        help="repeat a failed step this often when other processes were busy meanwhile",
    )
    parser.add_argument(
        "--edge",
        choices=("trusted", "ids", "off"),
        default="trusted",
        help="voipsec only: loopback trusted (default), untrusted with the IDS, or "
        "untrusted without the IDS",
    )
    parser.add_argument("--json", type=Path, help="write the results to this file")
    parser.add_argument("--keep", action="store_true", help="keep the working directory")
    args = parser.parse_args(argv)
    args.connections = max(1, args.connections)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the bench; 0 when every target registered, refused wrong passwords, and passed
    at least one step."""
    args = parse_args(argv)
    targets = ["voipsec", "kamailio"] if args.target == "both" else [args.target]
    root = Path(tempfile.mkdtemp(prefix="register-bench-"))
    reports = []
    print(HEADER, flush=True)
    try:
        for target in targets:
            reports.append(guarded_bench_target(target, args, root))
    finally:
        if args.keep:
            print(f"working directory kept: {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    for line in summary(reports):
        print(line)
    if args.json:
        args.json.write_text(json.dumps(to_json(reports, args), indent=2) + "\n")
    ok = all(r.register_ok and r.wrong_password_refused and r.best for r in reports)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

"""Drive a headless baresip (Debian ``baresip-core`` 1.0.0) through its ctrl_tcp module.

Each :class:`Baresip` gets its own config directory (``baresip -f DIR``): no sound card,
no terminal UI, SIP bound to 127.0.0.1 only. ctrl_tcp speaks JSON in netstrings
(``LEN:JSON,``) both ways: commands go out as ``{"command", "params", "token"}`` and
come back as ``{"response": true, "ok", "data", "token"}``; everything the UA reports
arrives as ``{"event": true, "type": "REGISTER_OK", "param": ..., ...}``.

Things baresip 1.0.0 does that a caller must know:

* ``sip_listen 127.0.0.1:P`` binds UDP and TCP on P **and TLS on P + 1**; use
  :func:`free_sip_ports` so neither collides with the ctrl_tcp port.
* The account is created with the ``uanew`` command once ctrl_tcp is connected (no
  ``accounts`` file): ctrl_tcp only reports events to a connected client, and baresip
  registers as soon as an account exists.
* The ``menu`` module provides the ctrl_tcp commands (``reginfo``, ``dial``, ...); it
  does not read the terminal (``stdio`` does, and is not loaded).
* ``baresip -s`` prints every SIP message it sends and receives; it is on by default
  so tests can inspect the wire (:meth:`Baresip.sip_trace`).
"""

from __future__ import annotations

import contextlib
import json
import re
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from .proc import DEFAULT_DEADLINE, free_port, require, stop, wait_for
from .siptext import SipText

MODULE_PATH = Path("/usr/lib/baresip/modules")
#: Loaded in this order; enough to register, call and carry SRTP audio headless.
MODULES = ("ausine.so", "aubridge.so", "g711.so", "srtp.so")
APP_MODULES = ("menu.so", "ctrl_tcp.so")
#: An audio filter that writes what is sent (``dump-PEER-enc.wav``) and what is
#: received and decoded (``dump-PEER-dec.wav``) into ``snd_path`` (``record_dir``).
RECORD_MODULE = "sndfile.so"

Event = dict[str, Any]
#: Seconds baresip may spend unregistering on SIGTERM before it is told again.
UNREGISTER_GRACE = 3.0

#: One message of ``baresip -s`` output: colour, ``#``, ``TLS SRC -> DST``, the message.
_TRACE = re.compile(
    r"\x1b\[36;1m#\n(?P<transport>\S+) (?P<src>\S+) -> (?P<dst>\S+)\n(?P<message>.*?)\x1b\[;m",
    re.DOTALL,
)


@dataclass(frozen=True)
class TraceEntry(SipText):
    """A SIP message baresip sent or received, as its ``-s`` trace printed it."""

    transport: str
    src: str
    dst: str
    text: str


class BaresipError(AssertionError):
    """baresip exited, refused a command or did not answer in time."""


def _udp_tcp_free(port: int) -> bool:
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        with socket.socket(socket.AF_INET, kind) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


def free_sip_ports() -> tuple[int, int]:
    """``(sip_port, ctrl_port)``: sip_port and sip_port + 1 free on UDP and TCP."""
    for _ in range(200):
        sip_port = free_port()
        if sip_port < 65535 and _udp_tcp_free(sip_port) and _udp_tcp_free(sip_port + 1):
            ctrl_port = free_port()
            if ctrl_port not in (sip_port, sip_port + 1):
                return sip_port, ctrl_port
    raise AssertionError("no pair of adjacent free ports on 127.0.0.1")


def account_line(
    user: str,
    password: str,
    *,
    server_port: int,
    domain: str = "localhost",
    server_host: str = "127.0.0.1",
    regint: int = 600,
    extra: str = "",
) -> str:
    """An accounts-file line: AOR in ``domain``, every request sent over TLS to the server.

    ``outbound`` makes baresip connect to ``server_host:server_port`` (it adds a loose
    Route to it) while the Request-URI, To and From stay in ``domain``.
    """
    line = (
        f"<sip:{user}@{domain};transport=tls>;auth_pass={password}"
        f';outbound="sip:{server_host}:{server_port};transport=tls";regint={regint}'
    )
    return f"{line};{extra}" if extra else line


_TCP_STATES = {
    "01": "ESTABLISHED",
    "02": "SYN_SENT",
    "03": "SYN_RECV",
    "04": "FIN_WAIT1",
    "05": "FIN_WAIT2",
    "06": "TIME_WAIT",
    "07": "CLOSE",
    "08": "CLOSE_WAIT",
    "09": "LAST_ACK",
    "0A": "LISTEN",
    "0B": "CLOSING",
}


def tcp_state(local: str, remote: str) -> str | None:
    """State of the IPv4 TCP socket ``local`` -> ``remote`` (``"A.B.C.D:PORT"``), from
    /proc/net/tcp; None when there is no such socket."""

    def encode(address: str) -> str:
        host, port = address.rsplit(":", 1)
        packed = socket.inet_aton(host)[::-1].hex().upper()
        return f"{packed}:{int(port):04X}"

    want = (encode(local), encode(remote))
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if (fields[1], fields[2]) == want:
            return _TCP_STATES.get(fields[3], fields[3])
    return None


class NetstringReader:
    """Incremental netstring decoder (``LEN:DATA,``)."""

    def __init__(self) -> None:
        self._buf = b""

    def feed(self, data: bytes) -> list[bytes]:
        self._buf += data
        out: list[bytes] = []
        while True:
            colon = self._buf.find(b":")
            if colon < 0:
                if len(self._buf) > 10:
                    raise ValueError(f"bad netstring length prefix: {self._buf[:20]!r}")
                return out
            length = int(self._buf[:colon])
            end = colon + 1 + length
            if len(self._buf) < end + 1:
                return out
            if self._buf[end : end + 1] != b",":
                raise ValueError("netstring not terminated by ','")
            out.append(self._buf[colon + 1 : end])
            self._buf = self._buf[end + 1 :]


def netstring(payload: bytes) -> bytes:
    return str(len(payload)).encode() + b":" + payload + b","


class Baresip:
    """A running baresip with one account, driven over ctrl_tcp; use as a context manager."""

    def __init__(
        self,
        workdir: Path,
        *,
        account_line: str,
        ca_file: Path | None,
        sip_port: int,
        ctrl_port: int,
        cert_file: Path | None = None,
        sip_trace: bool = True,
        audio_source: str = "ausine,440",
        record_dir: Path | None = None,
    ) -> None:
        self.workdir = workdir
        self.account_line = account_line
        self.ca_file = ca_file
        self.sip_port = sip_port
        self.ctrl_port = ctrl_port
        self.cert_file = cert_file
        self.sip_trace_enabled = sip_trace
        self.audio_source = audio_source
        self.record_dir = record_dir
        self.log = workdir / "baresip.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._sock: socket.socket | None = None
        self._reader: threading.Thread | None = None
        self._cond = threading.Condition()
        self._events: list[Event] = []
        self._responses: dict[str, Event] = {}
        self._reader_error: BaseException | None = None
        self._closed = False
        self._token = 0

    # -- configuration ---------------------------------------------------------------

    @property
    def tls_port(self) -> int:
        """Where baresip's own SIP/TLS listener is (sip_port + 1)."""
        return self.sip_port + 1

    def config_text(self) -> str:
        lines = [
            "poll_method\t\tepoll",
            f"sip_listen\t\t127.0.0.1:{self.sip_port}",
            "net_interface\t\t127.0.0.1",
            f"audio_source\t\t{self.audio_source}",
            "ausrc_srate\t\t48000",
            "ausrc_channels\t\t2",
            "audio_player\t\taubridge,baresip",
            "audio_alert\t\taubridge,baresip",
            "rtp_ports\t\t10000-19999",
            f"module_path\t\t{MODULE_PATH}",
            f"ctrl_tcp_listen\t\t127.0.0.1:{self.ctrl_port}",
        ]
        if self.ca_file is not None:
            lines.append(f"sip_cafile\t\t{self.ca_file}")
        if self.cert_file is not None:
            lines.append(f"sip_certificate\t\t{self.cert_file}")
        modules: tuple[str, ...] = MODULES
        if self.record_dir is not None:
            lines.append(f"snd_path\t\t{self.record_dir}")
            modules = (*MODULES, RECORD_MODULE)
        lines += [f"module\t\t\t{m}" for m in modules]
        lines += [f"module_app\t\t{m}" for m in APP_MODULES]
        return "\n".join(lines) + "\n"

    def write_config(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        extra: tuple[str, ...] = ()
        if self.record_dir is not None:
            self.record_dir.mkdir(parents=True, exist_ok=True)
            extra = (RECORD_MODULE,)
        for module in (*MODULES, *extra, *APP_MODULES):
            if not (MODULE_PATH / module).exists():
                raise AssertionError(f"baresip module {module} missing in {MODULE_PATH}")
        (self.workdir / "config").write_text(self.config_text())
        (self.workdir / "contacts").write_text("")

    # -- lifecycle -------------------------------------------------------------------

    def __enter__(self) -> Baresip:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def start(self, *, deadline: float = DEFAULT_DEADLINE) -> None:
        binary = require("baresip")
        self.write_config()
        argv = [binary, "-f", str(self.workdir)]
        if self.sip_trace_enabled:
            argv.append("-s")
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
            )
        try:
            self._sock = self._connect(deadline)
            self._reader = threading.Thread(
                target=self._read_loop, name="baresip-ctrl", daemon=True
            )
            self._reader.start()
            # The account is added only now, so no REGISTER event can precede our connection.
            self.send("uanew", self.account_line)
        except BaseException:
            self.close()
            raise

    def _connect(self, deadline: float) -> socket.socket:
        proc = self.proc
        assert proc is not None

        def attempt() -> socket.socket | bool | None:
            if proc.poll() is not None:
                return True
            try:
                return socket.create_connection(("127.0.0.1", self.ctrl_port), timeout=0.5)
            except OSError:
                return None

        result = wait_for(attempt, deadline=deadline, what="baresip ctrl_tcp to accept")
        if not isinstance(result, socket.socket):
            raise BaresipError(f"baresip exited ({proc.returncode}): {self.log_text()[-2000:]}")
        result.settimeout(None)
        return result

    def close(self) -> None:
        """Stop baresip (it unregisters on SIGTERM) and the ctrl connection."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self.proc is not None:
            self._stop_process(self.proc)
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)
            self._sock.close()
            self._sock = None
        if self._reader is not None:
            self._reader.join(timeout=5)
            self._reader = None

    @staticmethod
    def _stop_process(proc: subprocess.Popen[bytes]) -> None:
        """SIGTERM makes baresip unregister and wait for that to finish; a transaction the
        server never answers keeps it alive until SIP Timer F (32 s). A second SIGTERM
        makes it exit at once; SIGKILL is the last resort."""
        for _ in range(2):
            if proc.poll() is not None:
                return
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=UNREGISTER_GRACE)
        stop(proc, deadline=5.0)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    # -- ctrl_tcp --------------------------------------------------------------------

    def _read_loop(self) -> None:
        sock = self._sock
        assert sock is not None
        decoder = NetstringReader()
        try:
            while True:
                data = sock.recv(65536)
                if not data:
                    break
                for raw in decoder.feed(data):
                    self._dispatch(json.loads(raw))
        except OSError:
            pass
        except (ValueError, json.JSONDecodeError) as exc:
            with self._cond:
                self._reader_error = exc
        finally:
            with self._cond:
                self._closed = True
                self._cond.notify_all()

    def _dispatch(self, message: Event) -> None:
        with self._cond:
            if message.get("event"):
                self._events.append(message)
            elif message.get("response"):
                self._responses[str(message.get("token", ""))] = message
            self._cond.notify_all()

    def _wait(self, predicate: Callable[[], Any], deadline: float, what: str) -> Any:
        end = time.monotonic() + deadline
        with self._cond:
            while True:
                value = predicate()
                if value:
                    return value
                if self._reader_error is not None:
                    raise BaresipError(f"bad ctrl_tcp data: {self._reader_error}")
                if self._closed:
                    raise BaresipError(
                        f"baresip went away while waiting for {what}: {self.log_text()[-2000:]}"
                    )
                remaining = end - time.monotonic()
                if remaining <= 0:
                    raise BaresipError(
                        f"timed out after {deadline}s waiting for {what}; "
                        f"events so far: {[e.get('type') for e in self._events]}"
                    )
                self._cond.wait(remaining)

    def send(self, command: str, params: str | None = None, *, deadline: float = 10.0) -> Event:
        """Run one command; returns the response (``ok``, ``data``); raises if not ok."""
        if self._sock is None:
            raise BaresipError("baresip is not running")
        self._token += 1
        token = f"t{self._token}"
        message: dict[str, str] = {"command": command, "token": token}
        if params is not None:
            message["params"] = params
        self._sock.sendall(netstring(json.dumps(message).encode()))
        response: Event = self._wait(
            lambda: self._responses.pop(token, None), deadline, f"response to {command}"
        )
        if not response.get("ok"):
            raise BaresipError(f"{command} {params or ''} failed: {response.get('data')}")
        return response

    def events(self) -> list[Event]:
        with self._cond:
            return list(self._events)

    def wait_event(self, *types: str, deadline: float = DEFAULT_DEADLINE, after: int = 0) -> Event:
        """The first event (from index ``after``) whose type is one of ``types``."""

        def find() -> Event | None:
            for event in self._events[after:]:
                if event.get("type") in types:
                    return event
            return None

        result: Event = self._wait(find, deadline, " or ".join(types))
        return result

    # -- output ----------------------------------------------------------------------

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def sip_trace(self) -> list[TraceEntry]:
        """Every SIP message in the ``-s`` trace, in order (both directions)."""
        return [
            TraceEntry(m["transport"], m["src"], m["dst"], m["message"].replace("\r\n", "\n"))
            for m in _TRACE.finditer(self.log_text())
        ]

    def recordings(self, kind: str = "dec") -> list[Path]:
        """The sndfile module's wav files of ``kind``: "dec" (received audio, decoded)
        or "enc" (audio sent); empty without ``record_dir``."""
        if self.record_dir is None or not self.record_dir.exists():
            return []
        return sorted(self.record_dir.glob(f"dump-*-{kind}.wav"))

    def requests(self, method: str) -> list[TraceEntry]:
        return [e for e in self.sip_trace() if e.start_line.startswith(f"{method} ")]

    def responses(self) -> list[TraceEntry]:
        return [e for e in self.sip_trace() if e.start_line.startswith("SIP/2.0 ")]

    def connections_to(self, remote: str) -> list[str]:
        """Local addresses baresip used to send to ``remote`` (``"127.0.0.1:PORT"``)."""
        seen: list[str] = []
        for entry in self.sip_trace():
            if entry.dst == remote and entry.src not in seen:
                seen.append(entry.src)
        return seen

    def dropped_by(self, remote: str) -> bool:
        """True once baresip has sent to ``remote`` over TCP and every such connection is
        past its established state (the peer closed it, or it is gone)."""
        local = self.connections_to(remote)
        alive = {"ESTABLISHED", "SYN_SENT", "SYN_RECV"}
        return bool(local) and all(tcp_state(a, remote) not in alive for a in local)

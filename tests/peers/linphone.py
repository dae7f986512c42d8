"""Drive a headless linphonec (Debian ``linphone-cli`` 5.1.65, mbedTLS 2.28) on stdin.

Each :class:`Linphone` has its own HOME (linphonec keeps its databases in
``$HOME/.local/share/linphone`` and will not start without that directory) and its own
config file (``linphonec -c FILE``; linphonec rewrites it with every default it knows on
exit). Commands go to stdin, which stays open for the life of the process; linphonec
answers on stdout after a ``linphonec> `` prompt that has no newline, so output is
matched with regular expressions over everything printed so far, never line by line.
``-d 6 -l FILE`` writes liblinphone's log, with every SIP message in full, to
:attr:`Linphone.log`.

Things linphonec 5.1.65 does that a caller must know, found by running it:

* No sound card: ``soundcard use files`` makes it read the file given by ``play`` as
  its microphone and write what it receives to the file given by ``record`` (WAV).
* mbedTLS does not match IP addresses against IP SANs: the proxy must be given a DNS
  name that the server certificate carries (voipsec's carries ``sip.domain``,
  ``localhost`` by default). It speaks TLS 1.2 only.
* A server that asks for a client certificate (voipsec's default
  ``tls.client_cert = "optional"``) makes linphonec prompt
  ``Password for (null) on (null):`` and read the next stdin line as that password.
  liblinphone does nothing more until a line arrives; the driver answers each such
  prompt at once (:data:`CERT_PROMPT_ANSWER`), so no command is taken as a password.
* An ``[auth_info]`` section without ``algorithm`` is an MD5 one: it is not offered to
  a SHA-256 challenge (RFC 8760), and the password is rewritten as an MD5 HA1 unless
  ``store_ha1_passwd=0``. :func:`config_text` sets both.
* Video (``video=True``): linphonec ignores ``[video] enabled=1`` ("video is disabled
  in linphonec, use -V or -C or -D") unless started with one of those flags. ``-V``
  also turns the display on (and writes ``display=1`` back into the config), so the
  driver passes ``-C``: capture only. The one camera it lists without a webcam is
  ``StaticImage: Static picture`` (a built-in image, 1 frame a second unless
  ``staticpic fps`` says otherwise), encoded as VP8 (the only video codec of this
  build) and offered as ``m=video PORT RTP/SAVP 96`` with its own four SDES keys.
  ``call URI --audio-only`` leaves video out of one call; ``camera on`` in an
  audio-only call re-INVITEs with ``m=video`` added.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from .proc import DEFAULT_DEADLINE, free_port, require, stop, wait_for
from .siptext import SipText

#: linphonec's answer to a server asking for a client certificate it has none for.
_CERT_PROMPT = re.compile(r"Password for \(null\) on \(null\): ")
#: What the driver types at that prompt. An empty line makes linphonec ask again at
#: once, forever; any other line is kept as a password with no user name or realm,
#: which no digest challenge matches. liblinphone's loop stops while the prompt waits.
CERT_PROMPT_ANSWER = "no-certificate"
#: Seconds linphonec may take to unregister and exit after ``quit``.
QUIT_GRACE = 5.0
#: The camera linphonec offers when no webcam exists (``webcam list``).
STATIC_CAMERA = "StaticImage: Static picture"
#: Frames a second the static picture is sent at with video on (linphonec's default
#: is 1): enough packets to see a video stream flow within a second or two, still
#: cheap to encode at QCIF (176x144) on a loaded 2-core machine.
STATIC_PICTURE_FPS = 5


#: One SIP message in liblinphone's ``-d 6`` log: a belle-sip channel line naming the
#: direction and the peer, the message, then a blank line before the next log line.
_SIP_LOG = re.compile(
    r"belle-sip-message-channel \[0x[0-9a-f]+\]: "
    r"(?P<verb>message sent to|received \[\d+\] new bytes from) \[(?P<peer>[^\]]+)\]"
    r"(?:, size: \[\d+\] bytes|:)\n"
    r"(?P<message>.*?)"
    r"(?=^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d:\d{3} |\Z)",
    re.DOTALL | re.MULTILINE,
)


@dataclass(frozen=True)
class SipLogEntry(SipText):
    """A SIP message linphonec sent (``sent``) to, or received from, ``peer``."""

    sent: bool
    peer: str
    text: str

    @property
    def body(self) -> str:
        return self.text.split("\n\n", 1)[1] if "\n\n" in self.text else ""


class LinphoneError(AssertionError):
    """linphonec exited or did not print what was expected in time."""


def _udp_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_rtp_port(*, besides: tuple[int, ...] = ()) -> int:
    """An even UDP port P with P + 1 free too (RTP and RTCP, RFC 3550 §11), not the
    pair of any port in ``besides`` (nothing is bound yet, so a second call could
    find the same pair)."""
    taken = {p for b in besides for p in (b, b + 1)}
    for _ in range(200):
        port = free_port(kind=socket.SOCK_DGRAM)
        if port % 2 or port >= 65535 or port in taken or port + 1 in taken:
            continue
        if _udp_free(port) and _udp_free(port + 1):
            return port
    raise AssertionError("no free pair of UDP ports for RTP on 127.0.0.1")


def video_section(*, video: bool) -> list[str]:
    """linphonerc's ``[video]`` lines: off, or the static picture as camera (QCIF, no
    display, no preview), offered in every call and accepted when offered."""
    if not video:
        return ["[video]", "enabled=0", "capture=0", "display=0"]
    return [
        "[video]",
        "enabled=1",
        "capture=1",
        "display=0",
        "show_local=0",
        "automatically_initiate=1",
        "automatically_accept=1",
        f"device={STATIC_CAMERA}",
        "size=qcif",
    ]


def config_text(
    *,
    user: str,
    password: str,
    server_port: int,
    ca_file: Path,
    rtp_port: int,
    domain: str = "localhost",
    server_name: str = "localhost",
    algorithm: str = "SHA-256",
    srtp: bool = True,
    video_rtp_port: int = 0,
) -> str:
    """A linphonerc: one account over TLS to ``server_name``, audio only unless
    ``video_rtp_port`` is given; SDES-SRTP mandatory (RFC 4568), or plain RTP/AVP when
    ``srtp`` is false.

    ``server_name`` must be a DNS name in the server certificate (mbedTLS ignores IP
    SANs). SIP listens on TLS only (port -1: any free one), bound to 127.0.0.1.
    """
    return "\n".join(
        [
            "[sip]",
            "sip_port=0",
            "sip_tcp_port=0",
            "sip_tls_port=-1",
            "bind_address=127.0.0.1",
            f"root_ca={ca_file}",
            "verify_server_certs=1",
            "verify_server_cn=1",
            f"media_encryption={'srtp' if srtp else 'none'}",
            f"media_encryption_mandatory={int(srtp)}",
            "store_ha1_passwd=0",
            "default_proxy=0",
            "register_only_when_network_is_up=0",
            "auto_net_state_mon=0",
            "",
            "[rtp]",
            f"audio_rtp_port={rtp_port}",
            *([f"video_rtp_port={video_rtp_port}"] if video_rtp_port else []),
            "",
            *video_section(video=bool(video_rtp_port)),
            "",
            "[proxy_0]",
            f"reg_proxy=<sip:{server_name}:{server_port};transport=tls>",
            f"reg_identity=<sip:{user}@{domain}>",
            "reg_expires=600",
            "reg_sendregister=1",
            "publish=0",
            "",
            "[auth_info_0]",
            f"username={user}",
            f"passwd={password}",
            f"realm={domain}",
            f"domain={domain}",
            f"algorithm={algorithm}",
            "",
        ]
    )


class Linphone:
    """A running linphonec with one account; use as a context manager."""

    def __init__(
        self,
        workdir: Path,
        *,
        user: str,
        password: str,
        server_port: int,
        ca_file: Path,
        domain: str = "localhost",
        srtp: bool = True,
        video: bool = False,
    ) -> None:
        self.workdir = workdir
        self.srtp = srtp
        self.video = video
        self.user = user
        self.password = password
        self.server_port = server_port
        self.ca_file = ca_file
        self.domain = domain
        self.home = workdir / "home"
        self.config = workdir / "linphonerc"
        self.log = workdir / "linphone.log"
        #: Everything linphonec printed on stdout (its prompts and answers).
        self.transcript = workdir / "linphonec.out"
        self.rtp_port = 0
        #: linphonec's own video RTP port (0: video off).
        self.video_rtp_port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self._reader: threading.Thread | None = None
        self._cond = threading.Condition()
        self._output = ""
        self._answered_prompts = 0
        self._closed = False

    # -- lifecycle -------------------------------------------------------------------

    def __enter__(self) -> Linphone:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def write_config(self) -> None:
        (self.home / ".local" / "share" / "linphone").mkdir(parents=True, exist_ok=True)
        self.rtp_port = free_rtp_port()
        if self.video:
            self.video_rtp_port = free_rtp_port(besides=(self.rtp_port,))
        self.config.write_text(
            config_text(
                user=self.user,
                password=self.password,
                server_port=self.server_port,
                ca_file=self.ca_file,
                rtp_port=self.rtp_port,
                domain=self.domain,
                srtp=self.srtp,
                video_rtp_port=self.video_rtp_port,
            )
        )

    def start(self) -> None:
        binary = require("linphonec")
        self.write_config()
        env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "PULSE_SERVER")}
        env["HOME"] = str(self.home)
        # linphonec reads stdin with readline, which wraps its echo of a long line at
        # the terminal width (80 without a terminal) unless told otherwise.
        env["COLUMNS"] = "4096"
        env["TERM"] = "dumb"
        argv = [binary, "-c", str(self.config), "-d", "6", "-l", str(self.log)]
        if self.video:
            argv.append("-C")  # video capture without a display (see the module doc)
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            cwd=self.workdir,
            env=env,
        )
        self._reader = threading.Thread(target=self._read_loop, name="linphonec", daemon=True)
        self._reader.start()

    def close(self) -> None:
        """``quit`` (linphonec unregisters), then SIGTERM/SIGKILL if it lingers."""
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(OSError, ValueError):
                self.send("quit")
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=QUIT_GRACE)
        stop(proc, deadline=5.0)
        if proc.stdin is not None:
            with contextlib.suppress(OSError):
                proc.stdin.close()
        if self._reader is not None:
            self._reader.join(timeout=5)
            self._reader = None
        if proc.stdout is not None:
            proc.stdout.close()
        self.proc = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    # -- stdin / stdout --------------------------------------------------------------

    def _read_loop(self) -> None:
        proc = self.proc
        assert proc is not None and proc.stdout is not None
        fd = proc.stdout.fileno()
        try:
            while True:
                data = os.read(fd, 65536)
                if not data:
                    break
                with open(self.transcript, "ab") as transcript:
                    transcript.write(data)
                with self._cond:
                    self._output += data.decode(errors="replace")
                    self._answer_cert_prompts()
                    self._cond.notify_all()
        except (OSError, LinphoneError):
            pass  # linphonec went away: expect() reports it
        finally:
            with self._cond:
                self._closed = True
                self._cond.notify_all()

    def _answer_cert_prompts(self) -> None:
        """Decline each client-certificate prompt with an empty line (see the module doc)."""
        prompts = len(_CERT_PROMPT.findall(self._output))
        while self._answered_prompts < prompts:
            self._answered_prompts += 1
            self._write(CERT_PROMPT_ANSWER)

    def _write(self, line: str) -> None:
        proc = self.proc
        if proc is None or proc.stdin is None:
            raise LinphoneError("linphonec is not running")
        proc.stdin.write(line.encode() + b"\n")
        proc.stdin.flush()

    def send(self, command: str) -> int:
        """Type one command; returns the output offset from which its effects appear."""
        with self._cond:
            mark = len(self._output)
            self._write(command)
            return mark

    def output(self) -> str:
        with self._cond:
            return self._output

    def expect(
        self, pattern: str, *, after: int = 0, deadline: float = DEFAULT_DEADLINE
    ) -> re.Match[str]:
        """The first match of ``pattern`` in the output from offset ``after``."""
        regex = re.compile(pattern)
        end = time.monotonic() + deadline
        with self._cond:
            while True:
                found = regex.search(self._output, after)
                if found is not None:
                    return found
                remaining = end - time.monotonic()
                if self._closed or remaining <= 0:
                    why = "exited" if self._closed else f"timed out after {deadline}s"
                    raise LinphoneError(
                        f"linphonec {why} waiting for {pattern!r}; output: {self._output[-2000:]!r}"
                    )
                self._cond.wait(remaining)

    def command(self, command: str, *, deadline: float = DEFAULT_DEADLINE) -> str:
        """Run ``command`` and return what linphonec printed before its next prompt."""
        mark = self.send(command)
        # linphonec echoes each line it reads from a pipe: its answer follows the echo
        # (a prompt printed after an event may come between the two).
        echo = self.expect(re.escape(command) + "\n", after=mark, deadline=deadline)
        found = self.expect(r"\nlinphonec> ", after=echo.end() - 1, deadline=deadline)
        return self.output()[echo.end() : found.start()].strip("\n")

    def registration(self, *, deadline: float = DEFAULT_DEADLINE) -> str:
        """The account's first final registration state: ``"Ok"`` or ``"Failed"``.

        The log is watched rather than stdin polled: a command typed while the
        client-certificate prompt is open would be read as that password.
        """
        state = re.compile(
            rf"identity \[sip:{re.escape(self.user)}@{re.escape(self.domain)}\] moving from "
            r"state \[\w+\] to \[LinphoneRegistration(Ok|Failed)\]"
        )
        found = wait_for(
            lambda: state.search(self.log_text()) or not self.running,
            deadline=deadline,
            what=f"linphonec to register {self.user}",
        )
        if not isinstance(found, re.Match):
            raise LinphoneError(f"linphonec exited: {self.log_text()[-3000:]}")
        return found.group(1)

    def wait_registered(self, *, deadline: float = DEFAULT_DEADLINE) -> str:
        """Wait for the account to register; returns ``status register``'s answer."""
        if self.registration(deadline=deadline) != "Ok":
            raise LinphoneError(f"{self.user} did not register: {self.log_text()[-3000:]}")
        return self.command("status register")

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def sip_messages(self) -> list[SipLogEntry]:
        """Every SIP message linphonec sent or received, in order, from its log."""
        return [
            SipLogEntry(
                sent=m["verb"].startswith("message sent"),
                peer=m["peer"],
                text=m["message"].replace("\r\n", "\n").strip("\n"),
            )
            for m in _SIP_LOG.finditer(self.log_text())
        ]

    def sent(self, start: str) -> list[SipLogEntry]:
        """Messages linphonec sent whose start line begins with ``start``."""
        return [e for e in self.sip_messages() if e.sent and e.start_line.startswith(start)]

    def received(self, start: str) -> list[SipLogEntry]:
        """Messages linphonec received whose start line begins with ``start``."""
        return [e for e in self.sip_messages() if not e.sent and e.start_line.startswith(start)]

    # -- calls -----------------------------------------------------------------------

    def use_files(self, *, play: Path) -> None:
        """No sound card: read ``play`` (a 16-bit WAV) as the microphone."""
        answer = self.command("soundcard use files")
        if "Using wav files instead of soundcard." not in answer:
            raise LinphoneError(f"soundcard use files: {answer!r}")
        self.command(f"play {play}")

    def record(self, path: Path) -> None:
        """Write what the next call receives to ``path`` (WAV, 16-bit mono)."""
        self.command(f"record {path}")

    def use_static_camera(self) -> None:
        """Send the static picture as camera, :data:`STATIC_PICTURE_FPS` frames a second
        (video must be on: ``video=True``)."""
        cameras = self.command("webcam list")
        found = re.search(rf"^(\d+): {re.escape(STATIC_CAMERA)}$", cameras, re.MULTILINE)
        if not self.video or found is None:
            raise LinphoneError(f"no static camera (video={self.video}): {cameras!r}")
        self.command(f"webcam use {found.group(1)}")
        self.command(f"staticpic fps {STATIC_PICTURE_FPS}")

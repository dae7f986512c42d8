"""A JsSIP phone in headless Chromium, registering with voipsec over WSS.

``jssip_phone`` serves ``jssip_page.html`` and the JsSIP bundle over HTTPS on a free
port of 127.0.0.1 (with voipsec's own server certificate, so the page's origin is
``https://127.0.0.1:PORT``), starts Debian's Chromium on it and yields a
:class:`JsSipPhone` whose ``events()`` are what the page reported (``registered``,
``registrationFailed <cause>``, ``invited <caller>``...), each a POST to ``/event``.

``/call`` serves ``jssip_call_page.html``, a phone with media: it answers every call
with Chromium's fake devices and takes orders from :meth:`JsSipPhone.command` (``call
URI``, ``hangup``, ``stats``...), which it polls on ``/command``, so one browser serves a
whole test module. :func:`chromium` with ``audio=`` starts the browser with the fake
devices (:data:`MEDIA_FLAGS`) and that WAV as its microphone.

Chromium trusts the one certificate it needs by its key:
``--ignore-certificate-errors-spki-list`` with the SHA-256 of the server key's
SubjectPublicKeyInfo (Chromium honours it only with a ``--user-data-dir``); every other
certificate error still fails. JsSIP is installed by ``tests/peers/install_jssip.sh``
(npm, into ``.cache/jssip``).
"""

from __future__ import annotations

import base64
import collections
import contextlib
import hashlib
import http.server
import json
import ssl
import threading
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from .proc import DeadlineExceeded, require, running, wait_for

ROOT = Path(__file__).resolve().parents[2]
PAGE = Path(__file__).with_name("jssip_page.html")
CALL_PAGE = Path(__file__).with_name("jssip_call_page.html")
#: Where tests/peers/install_jssip.sh puts the bundle.
BUNDLE = ROOT / ".cache" / "jssip" / "jssip.js"
#: Flags for a headless Chromium on a machine with no network but loopback
#: (/work/.library/env/machines/python.md: without them it tries Google's hosts).
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # The page's console (its errors; JsSIP's trace with the page's ``debug=1``) goes
    # to chromium.log in the test's directory.
    "--enable-logging=stderr",
    "--log-level=0",
)
#: Flags for a browser that calls with media on this machine. Fake devices without a
#: permission prompt; WebRTC gathers no candidates on loopback interfaces unless told
#: to (the relay is on 127.0.0.1), and hides host addresses behind mDNS ``.local``
#: names unless that feature is off (voipsec would not resolve them). Received video
#: is decoded (framesDecoded counts) without an element playing it.
MEDIA_FLAGS = (
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    "--allow-loopback-in-peer-connection",
    "--disable-features=WebRtcHideLocalIpsWithMdns",
)


def spki_hash(cert: Path) -> str:
    """base64(SHA-256(SubjectPublicKeyInfo)), as --ignore-certificate-errors-spki-list wants."""
    public = x509.load_pem_x509_certificate(cert.read_bytes()).public_key()
    der = public.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(der).digest()).decode()


@dataclass
class JsSipPhone:
    origin: str
    _events: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _commands: collections.deque[str] = field(default_factory=collections.deque)

    def command(self, text: str) -> int:
        """Queue an order for the call page; returns the event count before it, for
        :meth:`wait_event`'s ``after``."""
        with self._lock:
            self._commands.append(text)
            return len(self._events)

    def next_command(self) -> str | None:
        with self._lock:
            return self._commands.popleft() if self._commands else None

    def events(self) -> list[str]:
        with self._lock:
            return list(self._events)

    def add(self, event: str) -> None:
        with self._lock:
            self._events.append(event)

    def wait_event(
        self, prefix: str | tuple[str, ...], deadline: float = 30.0, *, after: int = 0
    ) -> str:
        """The first reported event starting with ``prefix`` (or one of several), from
        event index ``after`` on."""
        found: list[str] = []

        def seen() -> bool:
            found[:] = [e for e in self.events()[after:] if e.startswith(prefix)]
            return bool(found)

        try:
            wait_for(seen, deadline=deadline, what=f"JsSIP {prefix!r}")
        except DeadlineExceeded as exc:
            raise DeadlineExceeded(f"{exc} (events: {self.short()})") from None
        return found[0]

    def short(self) -> list[str]:
        """The events, each cut to a line (SDPs are long), for failure messages."""
        return [e.splitlines()[0][:100] if e else e for e in self.events()]

    def stats(self, deadline: float = 10.0) -> dict[str, Any]:
        """The call page's summary of ``RTCPeerConnection.getStats()`` right now."""
        after = self.command("stats")
        event = self.wait_event("stats ", deadline, after=after)
        result: dict[str, Any] = json.loads(event.removeprefix("stats "))
        return result

    def wait_stats(
        self, condition: Any, *, deadline: float = 20.0, what: str = ""
    ) -> dict[str, Any]:
        """getStats() summaries until ``condition(summary)`` holds; the one that did."""
        last: list[dict[str, Any]] = [{}]

        def check() -> bool:
            last[0] = self.stats()
            return bool(condition(last[0]))

        wait_for(check, deadline=deadline, what=f"{what} (last stats {last[0]})")
        return last[0]


def _handler(phone: JsSipPhone) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = urllib.parse.urlsplit(self.path).path
            if path == "/command":
                self._command()
                return
            files = {
                "/": (PAGE, "text/html"),
                "/call": (CALL_PAGE, "text/html"),
                "/jssip.js": (BUNDLE, "text/javascript"),
            }
            if path not in files:
                self.send_error(404)
                return
            source, kind = files[path]
            body = source.read_bytes()
            self.send_response(200)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _command(self) -> None:
            command = phone.next_command()
            if command is None:
                self.send_response(204)
                self.end_headers()
                return
            body = command.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            phone.add(self.rfile.read(length).decode(errors="replace"))
            self.send_response(204)
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler


@contextlib.contextmanager
def page_server(cert: Path, key: Path, port: int) -> Iterator[JsSipPhone]:
    """The HTTPS server of the page on 127.0.0.1:port (the origin voipsec must allow)."""
    if not BUNDLE.exists():
        raise AssertionError(
            f"JsSIP is not installed in {BUNDLE}: run tests/peers/install_jssip.sh"
        )
    phone = JsSipPhone(origin="")
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", port), _handler(phone))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(cert), str(key))
    httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
    phone.origin = f"https://127.0.0.1:{port}"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield phone
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


@contextlib.contextmanager
def chromium(url: str, workdir: Path, cert: Path, *, audio: Path | None = None) -> Iterator[None]:
    """Headless Chromium on ``url`` until the block ends; its log in workdir. With
    ``audio`` (a PCM WAV, played in a loop) it has fake media devices."""
    workdir.mkdir(parents=True, exist_ok=True)
    media = () if audio is None else (*MEDIA_FLAGS, f"--use-file-for-fake-audio-capture={audio}")
    argv = [
        require("chromium"),
        *CHROMIUM_FLAGS,
        *media,
        f"--user-data-dir={workdir / 'profile'}",
        f"--ignore-certificate-errors-spki-list={spki_hash(cert)}",
        "--remote-debugging-port=0",  # keeps the headless browser running
        url,
    ]
    with running(argv, log=workdir / "chromium.log"):
        yield

"""Drive Jami's daemon (Debian ``jami-daemon`` 13.7, ``/usr/libexec/jamid``) over D-Bus.

jamid is Jami without its GUI: it owns ``cx.ring.Ring`` on a session bus and is told
what to do through the interfaces in ``/usr/share/dbus-1/interfaces/cx.ring.Ring.*``.
Each :class:`Jami` starts a private ``dbus-daemon`` (a session bus with no service
directories, its socket in the work directory) and a jamid with its own HOME and XDG
directories, so nothing of the machine's user leaks in and nothing is left behind.
Methods are called with ``gdbus call`` (no D-Bus binding in the venv); its GVariant
text answers are read by :func:`parse_gvariant`.

jamid looks up names and probes the network interfaces on its own: run it inside a
network namespace with loopback only (tests/peers/netns.py).

What jamid 13.7 does that a caller must know (found by running it):

* A SIP account is created with ``addAccount`` and the details of
  ``getAccountTemplate("SIP")``; it registers at once. ``Account.hostname`` takes
  ``HOST:PORT``; with ``TLS.enable`` it speaks TLS to it and checks the certificate
  against ``TLS.certificateListFile`` and the name in ``TLS.serverName``.
* ``getVolatileAccountDetails`` reports ``Account.registrationStatus`` (``REGISTERED``,
  ``TRYING``, ``ERROR_AUTH``, ...) and the TLS suite in ``TLS_CIPHER``.
* It answers a fresh digest challenge with ``nc=00000002`` and MD5 only; after TLS 1.3
  post-handshake session tickets it loses the next message (issue 16).
* Calls do not work here yet: ``placeCallWithMedia`` blocks in PJNATH's ICE set-up
  until jamid is killed, and the deprecated ``placeCall`` offers an SDP without media
  (docs/interop.md).
"""

from __future__ import annotations

import ast
import contextlib
import os
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from .proc import DEFAULT_DEADLINE, require, stop, wait_for

JAMID = Path("/usr/libexec/jamid")
BUS_NAME = "cx.ring.Ring"
CONFIGURATION = "ConfigurationManager"
CALLS = "CallManager"
#: gdbus waits this long for an answer; jamid answers in milliseconds once up.
CALL_TIMEOUT = 10


#: The private bus: a session bus with no service directories. The system's
#: ``cx.ring.Ring.service`` would let the first call to the name *start* a jamid of its
#: own (D-Bus activation, without our arguments, outliving the bus); ours then finds
#: "another daemon" and exits.
BUS_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>{address}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"""


def _object_path(interface: str) -> str:
    return f"/cx/ring/Ring/{interface}"


# -- GVariant text (what ``gdbus call`` prints) --------------------------------------------

#: Type annotations GVariant's text form puts before a value whose type is ambiguous.
_TYPE_WORDS = frozenset(
    [
        "byte",
        "int16",
        "uint16",
        "int32",
        "uint32",
        "int64",
        "uint64",
        "handle",
        "double",
        "objectpath",
        "signature",
    ]
)


class _Reader:
    """A recursive-descent reader for the subset of GVariant text jamid's answers use:
    tuples, arrays, dictionaries, strings, integers, booleans."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def _skip(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos] in " \t\n,":
            self.pos += 1

    def value(self) -> Any:
        self._skip()
        char = self.text[self.pos]
        if char == "@":  # "@as []": a type for an empty container
            self.pos = self.text.index(" ", self.pos)
            return self.value()
        if char in "([{":
            return self._container(char)
        if char in "'\"":
            return self._string(char)
        return self._word()

    def _container(self, opener: str) -> Any:
        closer = {"(": ")", "[": "]", "{": "}"}[opener]
        self.pos += 1
        items: list[Any] = []
        pairs: dict[Any, Any] = {}
        while True:
            self._skip()
            if self.text[self.pos] == closer:
                self.pos += 1
                break
            item = self.value()
            self._skip()
            if self.text[self.pos] == ":":
                self.pos += 1
                pairs[item] = self.value()
            else:
                items.append(item)
        if opener == "{":
            return pairs
        return tuple(items) if opener == "(" else items

    def _string(self, quote: str) -> str:
        end = self.pos + 1
        while self.text[end] != quote:
            end += 2 if self.text[end] == "\\" else 1
        token = self.text[self.pos : end + 1]
        self.pos = end + 1
        return str(ast.literal_eval(token))

    def _word(self) -> Any:
        start = self.pos
        while self.pos < len(self.text) and self.text[self.pos] not in " ,)]}:":
            self.pos += 1
        word = self.text[start : self.pos]
        if word in _TYPE_WORDS:
            return self.value()
        if word in ("true", "false"):
            return word == "true"
        return int(word) if word.lstrip("-").isdigit() else float(word)


def parse_gvariant(text: str) -> Any:
    """The Python value of ``gdbus call`` output: ``('a', {'k': 'v'}, @as [])``."""
    return _Reader(text.strip()).value()


def gvariant_string(value: str) -> str:
    """A Python string as a GVariant text literal (for gdbus arguments)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def gvariant_dict(details: Mapping[str, str]) -> str:
    """An ``a{ss}`` as GVariant text."""
    body = ", ".join(f"{gvariant_string(k)}: {gvariant_string(v)}" for k, v in details.items())
    return "{" + body + "}" if body else "@a{ss} {}"


# -- accounts ------------------------------------------------------------------------------


def sip_account(
    *,
    user: str,
    password: str,
    server: str,
    ca: Path,
    server_name: str = "localhost",
    local_port: int,
) -> dict[str, str]:
    """Details of a SIP account that registers over TLS to ``server`` (HOST:PORT).

    ``local_port`` is jamid's own SIP port (UDP/TCP) and ``local_port + 1`` its TLS
    listener; UPnP, video and the other discovery features are off.
    """
    return {
        "Account.type": "SIP",
        "Account.alias": user,
        "Account.hostname": server,
        "Account.username": user,
        "Account.password": password,
        "Account.upnpEnabled": "false",
        "Account.localInterface": "lo",
        "Account.localPort": str(local_port),
        "Account.publishedSameAsLocal": "true",
        "Account.videoEnabled": "false",
        "Account.autoAnswer": "false",
        "TLS.enable": "true",
        "TLS.listenerPort": str(local_port + 1),
        "TLS.certificateListFile": str(ca),
        "TLS.verifyServer": "true",
        "TLS.serverName": server_name,
        "TLS.requireClientCertificate": "false",
        "TLS.verifyClient": "false",
        "SRTP.enable": "true",
        "SRTP.keyExchange": "sdes",
        "SRTP.rtpFallback": "false",
    }


@dataclass(frozen=True)
class Registration:
    status: str
    code: str
    cipher: str


class Jami:
    """A private session bus and a jamid on it; use as a context manager."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.bus = workdir / "bus"
        self.log = workdir / "jamid.log"
        self._dbus: subprocess.Popen[bytes] | None = None
        self._jamid: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"unix:path={self.bus}"

    def _env(self) -> dict[str, str]:
        home = self.workdir / "home"
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(home),
            "XDG_CONFIG_HOME": str(home / ".config"),
            "XDG_DATA_HOME": str(home / ".local" / "share"),
            "XDG_CACHE_HOME": str(home / ".cache"),
            "XDG_RUNTIME_DIR": str(home / "run"),
            "DBUS_SESSION_BUS_ADDRESS": self.address,
            # PJSIP's own log (transports, transactions, TLS) in jamid.log, for diagnosis.
            "SIPLOGLEVEL": "5",
        }
        for key in ("XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_CACHE_HOME", "XDG_RUNTIME_DIR"):
            Path(env[key]).mkdir(parents=True, exist_ok=True, mode=0o700)
        return env

    # -- lifecycle ---------------------------------------------------------------------

    def __enter__(self) -> Jami:
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
        if not JAMID.exists():
            raise AssertionError(f"{JAMID} is missing: run `make peers` (jami-daemon)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        env = self._env()
        try:
            config = self.workdir / "bus.conf"
            config.write_text(BUS_CONFIG.format(address=self.address))
            self._dbus = subprocess.Popen(
                [require("dbus-daemon"), f"--config-file={config}", "--nofork", "--nopidfile"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                env=env,
            )
            wait_for(self.bus.exists, deadline=deadline, what="the private D-Bus socket")
            with open(self.log, "wb") as out:
                # -c: log to the console (here the log file), -d: debug messages,
                # -p: stay up when no client is connected to the bus.
                self._jamid = subprocess.Popen(
                    [str(JAMID), "-c", "-d", "-p"],
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env=env,
                )
            wait_for(self._answers, deadline=deadline, what="jamid on the private bus")
        except BaseException:
            self.close()
            raise

    def _answers(self) -> bool:
        if self._jamid is not None and self._jamid.poll() is not None:
            raise AssertionError(f"jamid exited: {self.log_text()[-2000:]}")
        try:
            self.call(CONFIGURATION, "getAccountList", timeout=2)
        except AssertionError:
            return False
        return True

    def close(self) -> None:
        for proc in (self._jamid, self._dbus):
            if proc is not None:
                stop(proc, deadline=5.0)
        self._jamid = self._dbus = None

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    # -- D-Bus ---------------------------------------------------------------------------

    def call(self, interface: str, method: str, *args: str, timeout: int = CALL_TIMEOUT) -> Any:
        """``cx.ring.Ring.INTERFACE.METHOD(args)``; args are GVariant text. Returns the
        answer's tuple of values."""
        argv = [
            require("gdbus"),
            "call",
            "--address",
            self.address,
            "--dest",
            BUS_NAME,
            "--object-path",
            _object_path(interface),
            "--timeout",
            str(timeout),
            "--method",
            f"{BUS_NAME}.{interface}.{method}",
            *args,
        ]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout + 5)
        if proc.returncode != 0:
            raise AssertionError(f"{method}: {proc.stderr.strip()}")
        return parse_gvariant(proc.stdout)

    def add_account(self, details: Mapping[str, str]) -> str:
        (account,) = self.call(CONFIGURATION, "addAccount", gvariant_dict(details))
        return str(account)

    def account_details(self, account: str) -> dict[str, str]:
        (details,) = self.call(CONFIGURATION, "getAccountDetails", gvariant_string(account))
        return dict(details)

    def registration(self, account: str) -> Registration:
        (details,) = self.call(CONFIGURATION, "getVolatileAccountDetails", gvariant_string(account))
        return Registration(
            status=details.get("Account.registrationStatus", ""),
            code=details.get("Account.registrationCode", ""),
            cipher=details.get("TLS_CIPHER", ""),
        )

    def wait_registration(
        self, account: str, status: str = "REGISTERED", *, deadline: float = DEFAULT_DEADLINE
    ) -> Registration:
        seen: list[Registration] = []

        def reached() -> bool:
            seen[:] = [self.registration(account)]
            return seen[0].status == status

        with contextlib.suppress(AssertionError):
            wait_for(reached, deadline=deadline, what=f"jami account {status}")
        if not seen or seen[0].status != status:
            raise AssertionError(f"jami account never {status}: last {seen}")
        return seen[0]

"""The SIP message log: every message voipsec sends or receives, as JSON lines.

How this works: :func:`redact` is the sans-IO core. It takes one SIP message as bytes
and returns it with its secrets replaced by ``<redacted>``:

* in ``Authorization`` and ``Proxy-Authorization`` headers, the values of ``response``,
  ``cnonce`` and ``nonce`` (RFC 3261 §22.4, RFC 7616 §3.4); username, realm, uri, qop,
  nc and algorithm stay, since they say who tried what. The header is read with a
  small auth-param scanner (``scheme param=value, ...``, quoted strings with escapes,
  folded lines), not a regular expression, so a quote inside another value cannot hide
  a response from it. A header the scanner cannot read loses its whole value: the
  log fails closed.
* in any body, the key of every SDES key parameter (``a=crypto:... inline:KEY|...``,
  RFC 4568 §6.1: the lifetime and MKI after the key stay), ``k=`` lines (RFC 4566
  §5.12), the data of ``a=key-mgmt`` (RFC 4567) and ``a=ice-pwd`` (RFC 8839 §5.4: with
  the relay's ICE-lite password, STUN gets answers from a relay port). Every body line
  is checked, so
  SDP inside a multipart body is covered too.

A redacted body is shorter or longer than the original: when the message had one
Content-Length that matched its body (RFC 3261 §20.14), it is rewritten to the
redacted body's length, so that a reader that frames by it (sngrep, Homer, tshark) sees
the message whole. The copy is for reading, not for replay.

:class:`SipLog` is the shell: it writes one JSON object per line to a file of mode
0600, rotates it by size (``log``, ``log.1`` ... ``log.N``) and never raises into the
call path. Failure mode: fails open — when the file cannot be written (disk full, a
bad path), the message is not logged, the error is logged once and counted, and
signaling goes on.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "DEFAULT_BACKUPS",
    "DEFAULT_MAX_BYTES",
    "FILE_MODE",
    "MAX_BACKUPS",
    "MAX_LOGGED_MESSAGE",
    "REDACTED",
    "SipLog",
    "SipLogStatistics",
    "redact",
]

log = logging.getLogger("voipsec.siplog")

#: What a secret is replaced with.
REDACTED = "<redacted>"
_REDACTED = REDACTED.encode()

#: Size at which the log is rotated, by default: 10 MiB is some 10,000 messages and
#: opens in any editor.
DEFAULT_MAX_BYTES = 10 * 1024 * 1024
#: Rotated files kept by default (``log.1`` ... ``log.5``).
DEFAULT_BACKUPS = 5
#: Most rotated files that can be configured; renaming more on every rotation is slow
#: and a log that long belongs in a log collector.
MAX_BACKUPS = 100
#: Bytes of one message that are logged; the rest is cut and the line says
#: ``"truncated": true``. Equal to voipsec.sip.limits.MAX_MESSAGE_SIZE: nothing larger
#: is accepted, so only a message voipsec builds itself could reach it.
MAX_LOGGED_MESSAGE = 65_535
#: Mode of the log and its rotated files: they hold user names, addresses and calls.
FILE_MODE = 0o600

# -- redaction (sans-IO) ----------------------------------------------------------------

_SECRET_PARAMS = frozenset({b"response", b"cnonce", b"nonce"})
#: The auth scheme: an RFC 3261 §25.1 token after optional whitespace.
_SCHEME = re.compile(rb"[ \t\r\n]*[A-Za-z0-9\-.!%*_+`'~]+")
#: One auth-param (RFC 3261 §25.1): token = (quoted string, quoted-pairs included, or a
#: bare value up to whitespace, a comma or a quote), then a comma or the end.
_AUTH_PARAM = re.compile(
    rb"([A-Za-z0-9\-.!%*_+`'~]+)[ \t\r\n]*=[ \t\r\n]*"
    rb'("(?:[^"\\]|\\.)*"|[^\s,"]+)[ \t\r\n]*(?=,|\Z)',
    re.DOTALL,
)
#: The key-salt of an SDES inline key parameter, up to its lifetime or MKI.
_INLINE_KEY = re.compile(rb"(inline:)[^|;\s]*", re.IGNORECASE)
#: Whitespace and commas between auth-params.
_SEPARATORS = re.compile(rb"[ \t\r\n,]*")
#: An Authorization or Proxy-Authorization field: its name and colon, then its value
#: with any folded continuation lines (RFC 3261 §7.3.1). Only these fields are
#: rewritten; the rest of the head is copied as it is.
_AUTH_FIELD = re.compile(
    rb"^([ \t]*(?:proxy-)?authorization[ \t]*:)(.*(?:\n[ \t].*)*)", re.IGNORECASE | re.MULTILINE
)
#: A body line that carries a key: k= (RFC 4566 §5.12), a=crypto (RFC 4568), a=key-mgmt
#: (RFC 4567).
#: A Content-Length field, long or compact form (RFC 3261 §7.3.3, §20.14), and its value.
_CONTENT_LENGTH = re.compile(
    rb"^((?:content-length|l)[ \t]*:[ \t]*)([0-9]{1,9})(?=[ \t]*\r?$)", re.IGNORECASE | re.MULTILINE
)
_KEY_LINE = re.compile(rb"^(?:k=|a=crypto:|a=key-mgmt:|a=ice-pwd:).*", re.IGNORECASE | re.MULTILINE)


class _Unreadable(Exception):
    """The auth header does not follow ``scheme param=value, ...``."""


def _redact_credentials(value: bytes) -> bytes:
    """``value`` (after the header's colon) with the secret auth-params replaced."""
    scheme = _SCHEME.match(value)
    if scheme is None:
        raise _Unreadable
    pos = scheme_end = scheme.end()
    spans: list[tuple[int, int, bool]] = []
    while True:
        pos = _SEPARATORS.match(value, pos).end()  # type: ignore[union-attr]
        if pos == len(value):
            break
        param = _AUTH_PARAM.match(value, pos)
        if param is None:
            # Fail closed: keep only the scheme.
            return value[:scheme_end] + b" " + _REDACTED
        if param[1].lower() in _SECRET_PARAMS:
            start, end = param.span(2)
            spans.append((start, end, value[start] == 0x22))
        pos = param.end()
    out = bytearray()
    last = 0
    for start, end, quoted in spans:
        out += value[last:start]
        out += b'"' + _REDACTED + b'"' if quoted else _REDACTED
        last = end
    out += value[last:]
    return bytes(out)


def _redact_body_line(line: bytes) -> bytes:
    lower = line.lower()
    if lower.startswith(b"k="):
        return b"k=" + _REDACTED + (b"\r" if line.endswith(b"\r") else b"")
    if lower.startswith(b"a=crypto:"):
        # a=crypto:<tag> <suite> <key-params> [<session-params>] (RFC 4568 §9.1)
        parts = line.split(b" ", 2)
        if len(parts) < 3:
            return line
        if b"inline:" in parts[2].lower():
            return parts[0] + b" " + parts[1] + b" " + _INLINE_KEY.sub(rb"\1" + _REDACTED, parts[2])
        cr = b"\r" if line.endswith(b"\r") else b""
        return parts[0] + b" " + parts[1] + b" " + _REDACTED + cr
    if lower.startswith(b"a=ice-pwd:"):
        return line[:10] + _REDACTED + (b"\r" if line.endswith(b"\r") else b"")
    if lower.startswith(b"a=key-mgmt:"):
        # a=key-mgmt:<prtcl-id> <keymgmt-data> (RFC 4567 §3.1)
        protocol, space, _ = line.partition(b" ")
        cr = b"\r" if line.endswith(b"\r") else b""
        return protocol + b" " + _REDACTED + cr if space else line
    return line


def redact(message: bytes) -> bytes:
    """``message`` with digest responses, nonces and SDP keys replaced by ``<redacted>``
    (and its Content-Length following the body, see the module docstring).

    Accepts any bytes (a log sees malformed messages too) and never raises.
    """
    head, sep, body = message.partition(b"\r\n\r\n")
    if not sep:
        head, sep, body = message.partition(b"\n\n")
    clean_head, clean_body = _redact_head(head), _redact_body(body)
    if len(clean_body) != len(body):
        clean_head = _follow_body(clean_head, len(body), len(clean_body))
    return clean_head + sep + clean_body


def _redact_head(head: bytes) -> bytes:
    # The start line is checked too: on a malformed message it may be a header, and a
    # request or status line never starts with an auth header's name.
    return _AUTH_FIELD.sub(_redact_auth_field, head)


def _redact_auth_field(match: re.Match[bytes]) -> bytes:
    try:
        return match[1] + _redact_credentials(match[2])
    except _Unreadable:
        # Not even a scheme: nothing of the value is kept.
        return match[1] + b" " + _REDACTED


def _follow_body(head: bytes, old_length: int, new_length: int) -> bytes:
    """``head`` with its Content-Length set to ``new_length`` when it has exactly one and
    it said ``old_length``; anything else (none, several, a wrong one) stays as it was."""
    fields = _CONTENT_LENGTH.findall(head)
    if len(fields) != 1 or int(fields[0][1]) != old_length:
        return head
    return _CONTENT_LENGTH.sub(lambda m: m[1] + str(new_length).encode(), head)


def _redact_body(body: bytes) -> bytes:
    return _KEY_LINE.sub(lambda match: _redact_body_line(match[0]), body)


# -- the log file -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class SipLogStatistics:
    #: Lines written.
    written: int
    #: Bytes written to the current and rotated files since start.
    bytes_written: int
    rotations: int
    #: Messages longer than :data:`MAX_LOGGED_MESSAGE`, logged cut.
    truncated: int
    #: Messages not logged because the file could not be written.
    errors: int


def _address(address: tuple[str, int]) -> str:
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class SipLog:
    """Appends redacted SIP messages as JSON lines to ``path``, rotated by size.

    When a line would take the file past ``max_bytes``, the file becomes ``path.1``,
    ``path.1`` becomes ``path.2`` and so on; ``path.<backups>`` is deleted. With
    ``backups=0`` the file is simply started again.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        backups: int = DEFAULT_BACKUPS,
    ) -> None:
        if max_bytes <= 0:
            raise ValueError(f"max_bytes must be positive, not {max_bytes}")
        if not 0 <= backups <= MAX_BACKUPS:
            raise ValueError(f"backups must be 0-{MAX_BACKUPS}, not {backups}")
        self.path = os.fspath(path)
        self.max_bytes = max_bytes
        self.backups = backups
        self._fd: int | None = None
        self._size = 0
        self._error_logged = False
        self._written = 0
        self._bytes_written = 0
        self._rotations = 0
        self._truncated = 0
        self._errors = 0

    def write(
        self,
        *,
        direction: Literal["in", "out"],
        local: tuple[str, int],
        remote: tuple[str, int],
        transport: str,
        tls_identity: str | None,
        call_id: str | None,
        message: bytes,
        time: float,
        redacted: bytes | None = None,
    ) -> None:
        """Log one message; ``direction`` is "in" (received) or "out" (sent).

        ``redacted`` is ``redact(message)`` when the caller already has it (the monitor
        redacts once for the SIP log and HEP); otherwise it is computed here.
        Never raises: a failed write is counted in :meth:`statistics` and logged once.
        """
        truncated = len(message) > MAX_LOGGED_MESSAGE
        if redacted is None:
            redacted = redact(message[:MAX_LOGGED_MESSAGE])
        if truncated:
            self._truncated += 1
        record = {
            "time": time,
            "direction": direction,
            "local": _address(local),
            "remote": _address(remote),
            "transport": transport,
            "tls_identity": tls_identity,
            "call_id": call_id,
            "size": len(message),
            "truncated": truncated,
            "message": redacted[:MAX_LOGGED_MESSAGE].decode("utf-8", "backslashreplace"),
        }
        line = (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8", "backslashreplace")
        try:
            self._append(line)
        except OSError as exc:
            self._errors += 1
            self._close_fd()
            if not self._error_logged:
                self._error_logged = True
                log.warning("SIP log %s: %s; later errors are only counted", self.path, exc)
            else:
                log.debug("SIP log %s: %s", self.path, exc)

    def _append(self, line: bytes) -> None:
        if self._fd is None:
            self._open()
        if self._size > 0 and self._size + len(line) > self.max_bytes:
            self._rotate()
        assert self._fd is not None
        written = os.write(self._fd, line)
        self._size += written
        self._bytes_written += written
        self._written += 1

    def _open(self) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
        try:
            # A file that existed before keeps its mode on open: tighten it.
            os.fchmod(fd, FILE_MODE)
            self._size = os.fstat(fd).st_size
        except OSError:
            os.close(fd)
            raise
        self._fd = fd

    def _rotate(self) -> None:
        self._close_fd()
        if self.backups == 0:
            os.unlink(self.path)
        else:
            for n in range(self.backups - 1, 0, -1):
                older = f"{self.path}.{n}"
                if os.path.exists(older):
                    os.replace(older, f"{self.path}.{n + 1}")
            os.replace(self.path, f"{self.path}.1")
        self._rotations += 1
        self._open()

    def _close_fd(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            try:
                os.close(fd)
            except OSError as exc:
                log.debug("SIP log %s: close: %s", self.path, exc)

    def close(self) -> None:
        """Close the file; a later :meth:`write` opens it again."""
        self._close_fd()

    def statistics(self) -> SipLogStatistics:
        return SipLogStatistics(
            written=self._written,
            bytes_written=self._bytes_written,
            rotations=self._rotations,
            truncated=self._truncated,
            errors=self._errors,
        )

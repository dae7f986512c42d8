"""Log lines that input cannot forge (issue 13, finding 13).

Many log lines carry text an attacker chose: a user name, a header value that did not
parse, a User-Agent. A CR or LF in it would start a forged line, and an ESC would send
terminal control sequences to whoever reads the log with ``tail``. The formatter below
escapes every control character of the *message* (C0, DEL, C1 and the Unicode line and
paragraph separators) as ``\\xNN`` / ``\\uNNNN`` at the one place every line is built,
so no call site has to remember. Tracebacks appended after the message are ours, not
input, and keep their newlines.
"""

from __future__ import annotations

import logging
import re
import sys

#: The characters escaped in a log message: C0 controls, DEL, C1 controls and
#: U+2028/U+2029 (line breaks to some log viewers).
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def escape_controls(text: str) -> str:
    """``text`` with every control character written as an escape sequence."""
    return _CONTROL.sub(_escape, text)


class SafeFormatter(logging.Formatter):
    """A formatter whose messages hold no control characters."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = escape_controls(record.message)
        return super().formatMessage(record)


def configure(level: str) -> None:
    """Log to stderr at ``level`` through :class:`SafeFormatter` (``serve``, TURN)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(SafeFormatter(FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())

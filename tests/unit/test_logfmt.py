"""Log lines built from input cannot be forged (voipsec.logfmt; issue 13, finding 13)."""

from __future__ import annotations

import logging

from voipsec.logfmt import SafeFormatter, escape_controls


def _format(message: str, *args: object, exc: bool = False) -> str:
    record = logging.LogRecord("voipsec.sip", logging.INFO, __file__, 1, message, args, None)
    if exc:
        try:
            raise ValueError("ours")
        except ValueError:
            import sys

            record.exc_info = sys.exc_info()
    return SafeFormatter("%(levelname)s %(name)s: %(message)s").format(record)


def test_logfmt_escape_controls_every_control_class() -> None:
    assert escape_controls("a\r\nb\x1b[31mc\x00d\x7fe\x85f\u2028g\tz") == (
        "a\\x0d\\x0ab\\x1b[31mc\\x00d\\x7fe\\x85f\\u2028g\\x09z"
    )
    assert escape_controls("plain ünïcode text") == "plain ünïcode text"


def test_logfmt_forged_line_in_an_argument_stays_on_one_line() -> None:
    pai = "<sip:x@y\r\n2026-12-06 INFO voipsec.sip: alice registered\x1b[2K"
    line = _format("unparsable P-Asserted-Identity %s from %s", pai, "192.0.2.1")
    assert line == (
        "INFO voipsec.sip: unparsable P-Asserted-Identity <sip:x@y\\x0d\\x0a2026-12-06 INFO "
        "voipsec.sip: alice registered\\x1b[2K from 192.0.2.1"
    )


def test_logfmt_traceback_keeps_its_newlines() -> None:
    text = _format("failed %s", "x\ny", exc=True)
    first, *rest = text.split("\n")
    assert first == "INFO voipsec.sip: failed x\\x0ay"
    assert rest[0] == "Traceback (most recent call last):"
    assert rest[-1] == "ValueError: ours"

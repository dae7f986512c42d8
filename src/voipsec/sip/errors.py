"""The one exception family that escapes the SIP parsers.

Every error carries the status code a server answers with (RFC 3261 §21.4,
§21.5), so the transport shell can respond without knowing why parsing failed.
"""

from __future__ import annotations

REASONS: dict[int, str] = {
    400: "Bad Request",
    413: "Request Entity Too Large",
    414: "Request-URI Too Long",
    416: "Unsupported URI Scheme",
    420: "Bad Extension",
    483: "Too Many Hops",
    500: "Server Internal Error",
    505: "Version Not Supported",
    513: "Message Too Large",
}


class SipParseError(Exception):
    """Untrusted bytes did not form an acceptable SIP message.

    ``status`` is the response code to send (when the message was a request and
    enough of it parsed to answer); ``reason`` is a short, peer-safe explanation:
    it never contains secrets, only the name of the offending element.
    """

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason

    @property
    def phrase(self) -> str:
        """The standard reason phrase for ``status``."""
        return REASONS.get(self.status, "Bad Request")


class FramingError(SipParseError):
    """A stream can no longer be framed; the connection must be closed."""

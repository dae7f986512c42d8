"""Named, switchable sanity checks on parsed requests (the edge's, after the parser's).

The parser already refuses what cannot be SIP (framing, start line, CSeq, Content-Length,
Via count, lengths of the whole message). These checks refuse what is SIP but not
what a well-behaved phone sends; each can be switched off in ``[sanity] checks`` for a
peer that needs it, and answered (400/483/416) or dropped silently per ``action``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from ..sip.message import Request, is_rfc3261_branch
from ..sip.uri import SipUri

#: Longest user part of a Request-URI, From or To we accept (extensions, E.164 numbers
#: and e-mail-like names fit well within it).
MAX_USER_LENGTH = 64


@dataclass(frozen=True, slots=True, kw_only=True)
class SanityFailure:
    check: str
    status: int
    reason: str


def _max_forwards(request: Request) -> SanityFailure | None:
    value = request.int_header("max-forwards")
    if value is None:
        # RFC 3261 §8.1.1.6: a UAC MUST insert a Max-Forwards header field.
        return SanityFailure(check="max_forwards", status=400, reason="Missing Max-Forwards")
    if value == 0 and request.method not in ("OPTIONS", "REGISTER"):
        # §16.3: a request that may not be forwarded further ends here.
        return SanityFailure(check="max_forwards", status=483, reason="Too Many Hops")
    return None


def _from_tag(request: Request) -> SanityFailure | None:
    # RFC 3261 §8.1.1.3: the From field MUST contain a tag.
    if not request.from_.tag:
        return SanityFailure(check="from_tag", status=400, reason="Missing From Tag")
    return None


def _via_branch(request: Request) -> SanityFailure | None:
    # RFC 3261 §8.1.1.7: the branch MUST begin with the magic cookie z9hG4bK.
    if not is_rfc3261_branch(request.top_via.branch):
        return SanityFailure(check="via_branch", status=400, reason="Invalid Via Branch")
    return None


def _uri_scheme(request: Request) -> SanityFailure | None:
    for uri in (request.uri, request.from_.uri, request.to.uri):
        if not isinstance(uri, SipUri):
            return SanityFailure(check="uri_scheme", status=416, reason="Unsupported URI Scheme")
    return None


def _lengths(request: Request) -> SanityFailure | None:
    for uri in (request.uri, request.from_.uri, request.to.uri):
        if isinstance(uri, SipUri) and uri.user is not None and len(uri.user) > MAX_USER_LENGTH:
            return SanityFailure(check="lengths", status=400, reason="User Part Too Long")
    return None


CHECKS: dict[str, Callable[[Request], SanityFailure | None]] = {
    "max_forwards": _max_forwards,
    "from_tag": _from_tag,
    "via_branch": _via_branch,
    "uri_scheme": _uri_scheme,
    "lengths": _lengths,
}


class Sanity:
    """Runs the enabled checks in a fixed order; the first failure wins."""

    def __init__(self, enabled: Iterable[str]) -> None:
        names = list(enabled)
        unknown = [n for n in names if n not in CHECKS]
        if unknown:
            raise ValueError(f"unknown sanity checks: {', '.join(unknown)}")
        self._checks = [CHECKS[n] for n in CHECKS if n in names]
        self.failures: dict[str, int] = {n: 0 for n in names}

    def check(self, request: Request) -> SanityFailure | None:
        if request.method in ("ACK", "CANCEL"):
            return None
        for check in self._checks:
            failure = check(request)
            if failure is not None:
                self.failures[failure.check] += 1
                return failure
        return None

"""Which signaling worker owns a message: the worker mark in the identifiers we make.

How this works: with ``sip.workers > 1`` several processes share the SIP listeners and
each keeps its own transactions, dialogs and nonce-counts. Every identifier a worker
generates carries its index as a mark — Via branches (RFC 3261 §8.1.1.7), the From and
To tags it creates (§19.3), B-leg Call-IDs, digest nonces (sip/digest.py, inside the
MAC) — so a message that reaches another worker names its owner:

- a response: the top Via branch (§18.2.1: it matches our client transaction);
- an in-dialog request: its To tag (§12.2.2: we made that tag, as UAS or UAC);
- a request with credentials: the nonce of its Authorization or Proxy-Authorization
  (RFC 7616 §3.4: the nonce-count of a nonce lives with its issuer, so replay
  protection holds across workers).

A mark is ``.w<index>`` at the end of a branch, tag or Call-ID: still a token (§25.1).
Marks are attacker-controlled like the rest of a message: :func:`owner` only reads
them, never trusts them. A mark that is malformed, out of range or names a worker that
is not up means "this worker"; the worst a forged mark does is cost one frame to a
worker that answers 481 or a fresh challenge. Sans-IO: no sockets, no clock.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from .digest import nonce_worker, parse_authorization
from .errors import SipParseError
from .message import Request, Response

__all__ = [
    "MARK",
    "MAX_MARK_DIGITS",
    "Owner",
    "Reason",
    "mark",
    "marked_worker",
    "owner",
    "set_worker",
    "this_worker",
]

#: The separator of a mark from the identifier it ends.
MARK = ".w"
#: At most this many digits in a mark (config.MAX_WORKERS is 64).
MAX_MARK_DIGITS = 2

#: This process's worker index: set once at start by the shell (app/cluster.py's
#: worker), read by the identifier factories (sip/dialog.py, app/replies.py). One
#: process is one worker for its whole life, so a per-process value is the truth.
_worker = 0


def set_worker(index: int) -> None:
    """This process is signaling worker ``index`` (done once, before any identifier)."""
    global _worker
    if not 0 <= index < 10**MAX_MARK_DIGITS:
        raise ValueError(f"worker index {index} out of range")
    _worker = index


def this_worker() -> int:
    """This process's worker index (0 in a single-process server)."""
    return _worker


def mark(identifier: str) -> str:
    """``identifier`` with this worker's mark."""
    return f"{identifier}{MARK}{_worker}"


def marked_worker(identifier: str | None) -> int | None:
    """The index an identifier's mark names, or None when it has no well-formed mark."""
    if not identifier:
        return None
    _, sep, digits = identifier.rpartition(MARK)
    if not sep or not 0 < len(digits) <= MAX_MARK_DIGITS or not digits.isascii():
        return None
    if not digits.isdigit():
        return None
    return int(digits)


class Reason(Enum):
    """Why a message belongs where :func:`owner` says."""

    LOCAL = "local"
    VIA = "via"
    TO_TAG = "to_tag"
    NONCE = "nonce"
    #: A mark named a worker out of range or not up: handled here, counted.
    REFUSED = "refused"


@dataclass(frozen=True, slots=True, kw_only=True)
class Owner:
    """Where a message is handled: ``worker`` (this one for LOCAL and REFUSED)."""

    worker: int
    reason: Reason


def owner(message: Request | Response, *, this: int, alive: Callable[[int], bool]) -> Owner:
    """The worker that owns ``message`` (may raise SipParseError for a bad header,
    like any first use of a lazily parsed header)."""
    if isinstance(message, Response):
        return _decide(marked_worker(message.top_via.branch), Reason.VIA, this, alive)
    tag = message.to.tag
    if tag is not None:
        return _decide(marked_worker(tag), Reason.TO_TAG, this, alive)
    return _decide(_nonce_owner(message), Reason.NONCE, this, alive)


def _decide(index: int | None, reason: Reason, this: int, alive: Callable[[int], bool]) -> Owner:
    if index is None or index == this:
        return Owner(worker=this, reason=Reason.LOCAL)
    if not alive(index):
        return Owner(worker=this, reason=Reason.REFUSED)
    return Owner(worker=index, reason=reason)


def _nonce_owner(request: Request) -> int | None:
    """The worker named by the first credentials' nonce (RFC 7616 §3.4), if any."""
    headers = request.headers
    for name in ("authorization", "proxy-authorization"):
        value = headers.get(name)
        if value is None:
            continue
        try:
            creds = parse_authorization(value)
        except SipParseError:
            return None  # the authenticator answers a bad header where it lands
        return nonce_worker(creds.nonce)
    return None

"""Dialog state (RFC 3261 §12): identifiers, sequence numbers, route set, target.

A :class:`Dialog` is an immutable value; creating a request in the dialog returns the
request's header values and the next dialog value, so the call layer keeps one
current value per leg. The B2BUA (calls issue) builds on this.
"""

from __future__ import annotations

import secrets
import sys
from dataclasses import dataclass, replace

from .errors import SipParseError
from .message import Request, Response
from .ownership import mark


def new_tag() -> str:
    """A From/To tag with 64 bits of randomness (RFC 3261 §19.3 asks for 32), marked
    with this signaling worker (sip/ownership.py: in-dialog requests find their owner)."""
    return mark(secrets.token_hex(8))


def new_branch() -> str:
    """A Via branch with the RFC 3261 magic cookie (§8.1.1.7), marked with this
    signaling worker (sip/ownership.py: responses find their client transaction)."""
    return mark("z9hG4bK" + secrets.token_hex(10))


@dataclass(frozen=True, slots=True, kw_only=True)
class DialogId:
    call_id: str
    local_tag: str
    remote_tag: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Dialog:
    id: DialogId
    local_uri: str
    remote_uri: str
    remote_target: str
    local_seq: int | None
    remote_seq: int | None
    route_set: tuple[str, ...]
    secure: bool

    def next_request(self) -> tuple[Dialog, int]:
        """The dialog after sending one more request, and that request's CSeq (§12.2.1.1)."""
        seq = (self.local_seq or 0) + 1
        return replace(self, local_seq=seq), seq

    def accept_remote_cseq(self, seq: int) -> Dialog:
        """§12.2.2: a request with a lower CSeq than the last one is out of order (500)."""
        if self.remote_seq is not None and seq < self.remote_seq:
            raise SipParseError(500, "CSeq lower than the dialog's")
        return replace(self, remote_seq=seq)


def uas_dialog(request: Request, local_tag: str) -> Dialog:
    """§12.1.1: the dialog a UAS creates when it answers ``request`` with a 2xx/1xx."""
    remote_tag = request.from_.tag
    if remote_tag is None:
        raise SipParseError(400, "From tag missing")
    if not request.contacts:
        raise SipParseError(400, "dialog-creating request without Contact")
    return Dialog(
        id=DialogId(call_id=request.call_id, local_tag=local_tag, remote_tag=remote_tag),
        local_uri=_shared(str(request.to.uri)),
        remote_uri=_shared(str(request.from_.uri)),
        remote_target=_shared(str(request.contacts[0].uri)),
        local_seq=None,
        remote_seq=request.cseq.seq,
        route_set=tuple(request.headers.values("record-route")),
        secure=request.uri.secure,
    )


def uac_dialog(request: Request, response: Response) -> Dialog:
    """§12.1.2: the dialog a UAC creates from the response to its request."""
    local_tag = request.from_.tag
    remote_tag = response.to.tag
    if local_tag is None or remote_tag is None:
        raise SipParseError(400, "dialog needs both tags")
    if not response.contacts:
        raise SipParseError(400, "dialog-creating response without Contact")
    return Dialog(
        id=DialogId(call_id=request.call_id, local_tag=local_tag, remote_tag=remote_tag),
        local_uri=_shared(str(request.from_.uri)),
        remote_uri=_shared(str(request.to.uri)),
        remote_target=_shared(str(response.contacts[0].uri)),
        local_seq=request.cseq.seq,
        remote_seq=None,
        # §12.1.2: the UAC's route set is the Record-Route list in reverse order.
        route_set=tuple(reversed(response.headers.values("record-route"))),
        secure=request.uri.secure,
    )


def _shared(uri: str) -> str:
    """One copy of a URI every dialog of a user or phone repeats (issue 15: memory per
    call). Interned strings are freed with their last dialog, so peers cannot grow it."""
    return sys.intern(uri)

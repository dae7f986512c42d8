"""Small helpers every SIP shell part shares: To tags, flow names, decided answers."""

from __future__ import annotations

import secrets

from ..core.dispatch import Answer
from ..sip.message import Request, Response, response_to
from ..sip.ownership import mark
from ..transport.connections import Flow


def new_tag() -> str:
    """A fresh To tag for our answers (RFC 3261 §19.3: at least 32 random bits), marked
    with this signaling worker (sip/ownership.py)."""
    return mark(secrets.token_hex(6))


def flow_text(flow: Flow) -> str:
    """``transport:ip:port`` of a flow, as bindings and events record it."""
    return f"{flow.transport}:{flow.peer[0]}:{flow.peer[1]}"


def answer_to(request: Request, answer: Answer) -> Response:
    """The response core/dispatch.py decided on, with a fresh To tag when it says so."""
    return response_to(
        request,
        answer.status,
        answer.reason,
        to_tag=new_tag() if answer.to_tag else None,
        extra=answer.headers,
    )

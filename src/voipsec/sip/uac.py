"""Building the requests a user agent client sends (sans-IO).

New requests (RFC 3261 §8.1.1), the ACK for a non-2xx final response, which belongs
to the INVITE transaction (§17.1.1.3), CANCEL (§9.1) and requests inside a dialog
(§12.2.1.1, including the ACK for a 2xx, §13.2.2.4). Every builder returns a
:class:`Request` value; nothing here touches a socket.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from .dialog import Dialog, new_branch
from .headers import Header, Headers, canonical_name
from .message import CSeq, Request, Response, Via
from .uri import parse_uri

#: Max-Forwards of the requests we originate (RFC 3261 §8.1.1.6 recommends 70).
DEFAULT_MAX_FORWARDS = 70


@dataclass(frozen=True, slots=True, kw_only=True)
class LocalAddress:
    """How this element names itself in Via and Contact on one transport."""

    transport: str
    host: str
    port: int

    def via(self, branch: str) -> str:
        """A Via value with ``rport`` so NATed peers answer to the source (RFC 3581)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"SIP/2.0/{self.transport.upper()} {host}:{self.port};branch={branch};rport"

    def parsed_via(self, branch: str) -> Via:
        """What :meth:`via` parses to, built directly (the layer reads its branch)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return Via(
            transport=self.transport.upper(),
            host=host,
            port=self.port,
            params=(("branch", branch), ("rport", None)),
        )

    def contact(self, user: str = "voipsec", *, secure: bool = False) -> str:
        """Our Contact; a SIPS URI when the dialog is secure (§8.1.1.8, §12.1.1)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        if secure:
            return f"<sips:{user}@{host}:{self.port}>"
        # RFC 7118 §5: the URI parameter is "ws" for WS and WSS alike (Via says WSS).
        param = "ws" if self.transport == "wss" else self.transport
        return f"<sip:{user}@{host}:{self.port};transport={param}>"


def make_request(
    method: str, uri: str, headers: Iterable[tuple[str, str]], body: bytes = b""
) -> Request:
    """A request from header pairs; Content-Length is appended from the body."""
    fields = [Header(name=n, key=canonical_name(n), value=v) for n, v in headers]
    fields.append(Header(name="Content-Length", key="content-length", value=str(len(body))))
    return Request(
        method=method, raw_uri=uri, uri=parse_uri(uri), headers=Headers(tuple(fields)), body=body
    )


def ack_for_failure(invite: Request, response: Response) -> Request:
    """§17.1.1.3: the ACK for a non-2xx final response, built by the transaction.

    Same Request-URI, Call-ID, From, CSeq number and top Via as the INVITE, the To of
    the response (with its tag), and the INVITE's Route headers.
    """
    headers: list[tuple[str, str]] = [("Via", invite.headers.values("via")[0])]
    headers += [("Route", r) for r in invite.headers.values("route")]
    headers += [
        ("Max-Forwards", str(DEFAULT_MAX_FORWARDS)),
        ("From", invite.headers.get("from") or ""),
        ("To", response.headers.get("to") or ""),
        ("Call-ID", invite.call_id),
        ("CSeq", f"{invite.cseq.seq} ACK"),
    ]
    return make_request("ACK", invite.raw_uri, headers)


def cancel_for(invite: Request) -> Request:
    """§9.1: CANCEL names the INVITE by its Request-URI, Call-ID, From, To, CSeq and Via."""
    headers: list[tuple[str, str]] = [("Via", invite.headers.values("via")[0])]
    headers += [("Route", r) for r in invite.headers.values("route")]
    headers += [
        ("Max-Forwards", str(DEFAULT_MAX_FORWARDS)),
        ("From", invite.headers.get("from") or ""),
        ("To", invite.headers.get("to") or ""),
        ("Call-ID", invite.call_id),
        ("CSeq", f"{invite.cseq.seq} CANCEL"),
    ]
    return make_request("CANCEL", invite.raw_uri, headers)


def in_dialog(
    dialog: Dialog,
    method: str,
    local: LocalAddress,
    *,
    extra: Iterable[tuple[str, str]] = (),
    body: bytes = b"",
    seq: int | None = None,
) -> tuple[Request, Dialog]:
    """§12.2.1.1: a request inside ``dialog``, and the dialog after it.

    The ACK for a 2xx (§13.2.2.4) and CANCEL reuse the CSeq number they name (``seq``);
    every other request takes the next local CSeq.
    """
    if seq is None:
        dialog, seq = dialog.next_request()
    cseq_method = method
    uri = dialog.remote_target
    routes = list(dialog.route_set)
    if routes and not _loose(routes[0]):
        # §12.2.1.1 strict routing: the first route becomes the Request-URI.
        routes = [*routes[1:], f"<{uri}>"]
        uri = routes_first_uri(dialog.route_set[0])
    branch = new_branch()
    headers: list[tuple[str, str]] = [("Via", local.via(branch))]
    headers += [("Route", r) for r in routes]
    headers += [
        ("Max-Forwards", str(DEFAULT_MAX_FORWARDS)),
        ("From", f"<{dialog.local_uri}>;tag={dialog.id.local_tag}"),
        ("To", f"<{dialog.remote_uri}>;tag={dialog.id.remote_tag}"),
        ("Call-ID", dialog.id.call_id),
        ("CSeq", f"{seq} {cseq_method}"),
    ]
    if method not in ("ACK", "BYE", "CANCEL"):
        headers.append(("Contact", local.contact(secure=dialog.secure)))
    added = list(extra)
    headers += added
    request = make_request(method, uri, headers, body)
    if not any(canonical_name(name) in ("via", "cseq") for name, _ in added):
        # Built here, so known without parsing: the layer keys the transaction on them.
        via = local.parsed_via(branch)
        request.known_bodies(vias=(via,), cseq=CSeq(seq=seq, method=cseq_method))
    return request, dialog


def routes_first_uri(route: str) -> str:
    """The URI inside a Route value ``<uri>;params``."""
    start, end = route.find("<"), route.find(">")
    return route[start + 1 : end] if 0 <= start < end else route.strip()


def _loose(route: str) -> bool:
    """§19.1.1: the ``lr`` URI parameter (names are case-insensitive, §25)."""
    uri = routes_first_uri(route)
    return any(p.split("=", 1)[0].strip().lower() == "lr" for p in uri.split(";")[1:])

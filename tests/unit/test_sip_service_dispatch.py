"""The SIP service carries out core/dispatch.py's decisions: exact answers, in process.

The same requests the integration tests send, fed to ``SipService`` with a fake flow and
a fake clock: each answer's status line and headers are what the server answered
before dispatch moved into the core, and no transaction is left behind.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from voipsec.config import Config
from voipsec.server import SipService, build_sip_service
from voipsec.sip.message import Response, parse_message
from voipsec.storage import Store

from .fakes import FakeClock, FakeFlow

DOMAIN = "example.test"
ALLOW = "INVITE, ACK, BYE, CANCEL, OPTIONS, REGISTER, UPDATE, INFO, REFER"


def _service(tmp_path: Path, **config: Any) -> SipService:
    settings: dict[str, Any] = {"sip": {"domain": DOMAIN}, **config}
    store = Store(tmp_path / "voipsec.db")
    service, _ = build_sip_service(
        config=Config.model_validate(settings), store=store, clock=FakeClock(), ids_rules=[]
    )
    return service


def _request(method: str, uri: str = f"sip:bob@{DOMAIN}", extra: str = "") -> bytes:
    return (
        f"{method} {uri} SIP/2.0\r\n"
        "Via: SIP/2.0/TLS 192.0.2.10:40000;branch=z9hG4bKdisp1\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:alice@{DOMAIN}>;tag=f1\r\n"
        f"To: <sip:bob@{DOMAIN}>\r\n"
        "Call-ID: dispatch-1\r\n"
        f"CSeq: 1 {method}\r\n"
        f"{extra}"
        "Content-Length: 0\r\n\r\n"
    ).encode()


def _answer(service: SipService, data: bytes) -> Response | None:
    flow = FakeFlow()
    service.on_stream_message(flow, data)  # type: ignore[arg-type]
    assert len(flow.sent) <= 1
    if not flow.sent:
        return None
    response = parse_message(flow.sent[0])
    assert isinstance(response, Response)
    return response


async def test_sip_service_dispatch_options_is_200_with_allow(
    tmp_path: Path,
) -> None:
    response = _answer(_service(tmp_path), _request("OPTIONS"))
    assert response is not None
    assert (response.status, response.reason) == (200, "OK")
    assert [response.headers.get(h) for h in ("allow", "accept", "supported")] == [
        ALLOW,
        "application/sdp",
        "outbound, path",
    ]
    assert response.to.tag is not None


async def test_sip_service_dispatch_unserved_and_unknown_methods(tmp_path: Path) -> None:
    service = _service(tmp_path)
    answers = {
        method: _answer(service, _request(method).replace(b"disp1", method.encode()))
        for method in ("SUBSCRIBE", "FOO", "BYE")
    }
    assert {m: (r.status, r.reason, r.headers.get("allow")) for m, r in answers.items() if r} == {
        "SUBSCRIBE": (405, "Method Not Allowed", ALLOW),
        "FOO": (501, "Not Implemented", ALLOW),
        "BYE": (481, "Call/Transaction Does Not Exist", None),
    }
    assert len(service.layer) == 0


async def test_sip_service_dispatch_register_for_a_foreign_domain_is_404(tmp_path: Path) -> None:
    response = _answer(_service(tmp_path), _request("REGISTER", "sip:elsewhere.test"))
    assert response is not None
    assert (response.status, response.reason) == (404, "Domain Not Served")


async def test_sip_service_dispatch_unsupported_require_is_420(tmp_path: Path) -> None:
    response = _answer(_service(tmp_path), _request("INVITE", extra="Require: foo, path\r\n"))
    assert response is not None
    assert (response.status, response.reason, response.headers.get("unsupported")) == (
        420,
        "Bad Extension",
        "foo",
    )


async def test_sip_service_dispatch_sanity_failure_is_answered_or_dropped(tmp_path: Path) -> None:
    hops = _request("INVITE").replace(b"Max-Forwards: 70", b"Max-Forwards: 0")
    (tmp_path / "reply").mkdir()
    response = _answer(_service(tmp_path / "reply"), hops)
    assert response is not None
    assert (response.status, response.reason) == (483, "Too Many Hops")
    (tmp_path / "drop").mkdir()
    dropping = _service(tmp_path / "drop", sanity={"action": "drop"})
    assert _answer(dropping, hops) is None
    assert dropping.statistics().dropped == 1
    assert len(dropping.layer) == 0


async def test_sip_service_dispatch_zone_method_policy_is_403(tmp_path: Path) -> None:
    zones = [{"name": "internet", "cidrs": ["0.0.0.0/0"], "methods": ["OPTIONS"]}]
    service = _service(tmp_path, zones=zones)
    response = _answer(service, _request("INVITE"))
    assert response is not None
    assert (response.status, response.reason) == (403, "Not Allowed From This Zone")
    options = _answer(service, _request("OPTIONS").replace(b"disp1", b"disp2"))
    assert options is not None and options.status == 200


async def test_sip_service_dispatch_full_table_is_503_statelessly(
    tmp_path: Path,
) -> None:
    service = _service(tmp_path)
    service.layer._max_server = 0
    response = _answer(service, _request("OPTIONS"))
    assert response is not None
    assert (response.status, response.reason, response.headers.get("retry-after")) == (
        503,
        "Service Unavailable",
        "5",
    )
    assert response.to.tag is None
    assert service.statistics().overloaded == 1

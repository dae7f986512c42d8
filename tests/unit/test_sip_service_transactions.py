"""Every exit path of the SIP service frees its server transaction (issue 13, finding 2).

A request that fails after its server transaction was created (a header parsed on
first use, an unsupported auth scheme, an empty Via, ...) used to be answered 400
statelessly while its transaction stayed in the table with no timer, until the table
was full and every source got 503. These tests drive ``SipService`` in process with a
fake clock and fake flows (no network), then run every timer it started: no
transaction may be left behind.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from voipsec.config import Config
from voipsec.server import SipService, build_sip_service
from voipsec.sip.layer import MAX_INVITE_TU_WAIT
from voipsec.sip.message import parse_message
from voipsec.storage import Store

from .fakes import FakeClock, FakeFlow

DOMAIN = "example.test"


def _service(tmp_path: Path, clock: FakeClock) -> SipService:
    config = Config.model_validate({"sip": {"domain": DOMAIN}})
    store = Store(tmp_path / "voipsec.db")
    store.add_user("alice", "alice-secret-1", DOMAIN)
    return build_sip_service(config=config, store=store, clock=clock, ids_rules=[])[0]


def _request(
    method: str = "REGISTER",
    *,
    branch: str = "z9hG4bKleak1",
    via: str | None = None,
    contact: str = "<sip:alice@192.0.2.10:40000;transport=tls>",
    extra: str = "",
    to: str = f"<sip:alice@{DOMAIN}>",
) -> bytes:
    uri = f"sip:{DOMAIN}" if method == "REGISTER" else f"sip:bob@{DOMAIN}"
    via_line = via if via is not None else f"SIP/2.0/TLS 192.0.2.10:40000;branch={branch}"
    return (
        f"{method} {uri} SIP/2.0\r\n"
        f"Via: {via_line}\r\n"
        f"Max-Forwards: 70\r\n"
        f"From: <sip:alice@{DOMAIN}>;tag=f1\r\n"
        f"To: {to}\r\n"
        f"Call-ID: leak-{branch}\r\n"
        f"CSeq: 1 {method}\r\n"
        f"Contact: {contact}\r\n"
        f"{extra}"
        f"Content-Length: 0\r\n\r\n"
    ).encode()


#: Requests that used to leave a transaction behind, and the status each gets.
ERROR_PATHS: dict[str, tuple[bytes, int]] = {
    "basic auth": (_request(extra="Authorization: Basic YWxpY2U6c2VjcmV0\r\n"), 400),
    "non-ASCII digest response": (
        _request(
            extra=(
                f'Authorization: Digest username="alice", realm="{DOMAIN}", nonce="n", '
                f'uri="sip:{DOMAIN}", response="{"é" * 64}", algorithm=SHA-256\r\n'
            )
        ),
        400,
    ),
    "unparsable To": (_request(to="<sip:alice@"), 400),
    "invite unparsable To": (_request("INVITE", to="<<>"), 400),
    "unsupported Require": (_request(extra="Require: foo\r\n"), 420),
    "unparsable Contact, unauthenticated": (_request(contact="<sip:"), 401),
}


def _run_every_timer(service: SipService, clock: FakeClock) -> None:
    """Advance the fake clock past every timer the service started and fire them."""
    clock.now += MAX_INVITE_TU_WAIT + 1
    for _ in range(100):
        pending = list(service.transactions._timers)
        if not pending:
            break
        for key, name in pending:
            handle = service.transactions._timers.get((key, name))
            if handle is not None:
                handle.cancel()
                service.transactions._fire_timer(key, name)
    service.transactions.expire()


async def _feed(service: SipService, clock: FakeClock, messages: list[bytes]) -> FakeFlow:
    flow = FakeFlow()
    for data in messages:
        service.on_stream_message(flow, data)  # type: ignore[arg-type]
    _run_every_timer(service, clock)
    return flow


async def test_sip_service_every_error_path_answers_and_frees_its_transaction(
    tmp_path: Path,
) -> None:
    clock = FakeClock()
    service = _service(tmp_path, clock)
    for name, (data, status) in ERROR_PATHS.items():
        flow = FakeFlow()
        service.on_stream_message(flow, data)  # type: ignore[arg-type]
        first_line = flow.sent[-1].split(b"\r\n", 1)[0] if flow.sent else b""
        assert first_line.startswith(f"SIP/2.0 {status} ".encode()), (name, first_line)
        # Answered over a reliable transport (Timer J = 0, RFC 3261 §17.2.2) or statelessly
        # after forgetting the transaction: nothing is left waiting.
        assert len(service.layer) == 0, name
    _run_every_timer(service, clock)
    assert len(service.layer) == 0
    assert service.transactions._tx_flows == {}


async def test_sip_service_empty_first_via_is_400_not_an_index_error(tmp_path: Path) -> None:
    clock = FakeClock()
    service = _service(tmp_path, clock)
    data = _request().replace(
        b"Via: ", b"Via: \r\nVia: ", 1
    )  # an empty Via header line above a good one
    flow = FakeFlow()
    service.on_stream_message(flow, data)  # type: ignore[arg-type]
    assert flow.sent[0].startswith(b"SIP/2.0 400 Bad Request\r\n")
    assert len(service.layer) == 0


async def test_sip_service_unanswered_transaction_expires_and_counts(tmp_path: Path) -> None:
    clock = FakeClock()
    service = _service(tmp_path, clock)
    # A request the TU takes and never answers stands for any future bug on that path.
    request = parse_message(_request("OPTIONS"))
    key, _ = service.layer.receive_request(request, clock.now, reliable=True)  # type: ignore[arg-type]
    assert key is not None and len(service.layer) == 1
    _run_every_timer(service, clock)
    assert len(service.layer) == 0
    assert service.layer.statistics().expired == 1


_METHODS = st.sampled_from(["REGISTER", "INVITE", "OPTIONS", "BYE", "SUBSCRIBE", "FOO"])
_BAD_EXTRAS = st.sampled_from(
    [
        "",
        "Authorization: Basic YWxpY2U6c2VjcmV0\r\n",
        'Authorization: Digest username="alice"\r\n',
        "Proxy-Authorization: Digest garbage\r\n",
        "Require: 100rel, foo\r\n",
        "P-Asserted-Identity: <sip:\x1b[31m@x\r\n",
        "Expires: -1\r\n",
        "Route: <sip:\r\n",
    ]
)
_CONTACTS = st.sampled_from(["<sip:alice@192.0.2.10:40000>", "<sip:", "*", "<>;expires=x"])
_TOS = st.sampled_from([f"<sip:alice@{DOMAIN}>", "<sip:alice@", f"<sip:alice@{DOMAIN}>;tag=t1"])
_VIAS = st.sampled_from([None, "", "SIP/2.0/TLS", "SIP/2.0/TLS 192.0.2.10;branch=z9hG4bKx"])


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    st.lists(
        st.tuples(_METHODS, st.integers(0, 3), _VIAS, _CONTACTS, _BAD_EXTRAS, _TOS),
        min_size=1,
        max_size=12,
    )
)
def test_sip_service_no_input_sequence_leaves_transactions_behind(
    tmp_path: Path,
    sequence: list[tuple[str, int, str | None, str, str, str]],
) -> None:
    clock = FakeClock()
    workdir = tmp_path / f"seq{abs(hash(tuple(sequence)))}"
    workdir.mkdir(exist_ok=True)
    service = _service(workdir, clock)
    messages = [
        _request(method, branch=f"z9hG4bK{n}", via=via, contact=contact, extra=extra, to=to)
        for method, n, via, contact, extra, to in sequence
    ]
    asyncio.run(_feed(service, clock, messages))
    assert len(service.layer) == 0
    assert service.transactions._tx_flows == {}
    service.store.close()

"""Transaction matching and bookkeeping (voipsec.sip.layer), driven by a fake clock."""

from __future__ import annotations

from voipsec.sip.layer import (
    MAX_INVITE_TU_WAIT,
    MAX_NON_INVITE_TU_WAIT,
    KeyedAction,
    LayerStatistics,
    NoAck,
    TransactionLayer,
    client_key,
    server_key,
)
from voipsec.sip.message import Request, Response, parse_message, response_to
from voipsec.sip.transaction import (
    T1,
    T2,
    CancelTimer,
    Kind,
    PassUp,
    Send,
    StartTimer,
    Terminated,
)


def _request(
    method: str = "INVITE",
    *,
    branch: str | None = "z9hG4bK74bf9",
    sent_by: str = "192.0.2.1:5060",
    cseq_method: str | None = None,
    to_tag: str | None = None,
    uri: str = "sip:bob@example.com",
) -> Request:
    branch_param = f";branch={branch}" if branch is not None else ""
    to = "<sip:bob@example.com>" + (f";tag={to_tag}" if to_tag else "")
    data = (
        f"{method} {uri} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {sent_by}{branch_param}\r\n"
        f"To: {to}\r\n"
        f"From: <sip:alice@example.com>;tag=9fxced76sl\r\n"
        f"Call-ID: 3848276298220188511@atlanta.example.com\r\n"
        f"CSeq: 1 {cseq_method or method}\r\n"
        f"Content-Length: 0\r\n\r\n"
    ).encode()
    message = parse_message(data)
    assert isinstance(message, Request)
    return message


def _response(request: Request, status: int, reason: str) -> Response:
    return response_to(request, status, reason, to_tag="314159")


def _actions(keyed: list[KeyedAction]) -> list[object]:
    return [k.action for k in keyed]


# -- server_key -----------------------------------------------------------------------


def test_layer_server_key_rfc3261_branch_sent_by_method() -> None:
    assert server_key(_request()) == ("s", "z9hG4bK74bf9", "192.0.2.1", "5060", "INVITE")
    assert server_key(_request(sent_by="Host.Example.COM")) == (
        "s",
        "z9hG4bK74bf9",
        "host.example.com",
        "",
        "INVITE",
    )


def test_layer_server_key_ack_matches_invite() -> None:
    assert server_key(_request("ACK")) == server_key(_request("INVITE"))


def test_layer_server_key_cancel_differs_from_invite() -> None:
    assert server_key(_request("CANCEL")) != server_key(_request("INVITE"))


def test_layer_server_key_differs_by_sent_by_and_branch() -> None:
    base = server_key(_request())
    assert server_key(_request(sent_by="192.0.2.2:5060")) != base
    assert server_key(_request(sent_by="192.0.2.1:5070")) != base
    assert server_key(_request(branch="z9hG4bKother")) != base


def test_layer_server_key_rfc2543_fallback() -> None:
    request = _request(branch=None)
    assert server_key(request) == (
        "s2543",
        "sip:bob@example.com",
        "",
        "9fxced76sl",
        "3848276298220188511@atlanta.example.com",
        "1",
        "INVITE",
        "SIP/2.0/UDP 192.0.2.1:5060",
    )


def test_layer_server_key_rfc2543_ack_with_to_tag_matches_invite() -> None:
    # §17.2.3: the ACK carries the To tag of the response; the INVITE did not.
    invite = _request(branch=None)
    ack = _request("ACK", branch=None, to_tag="314159")
    assert server_key(ack) == server_key(invite)


def test_layer_server_key_rfc2543_for_non_rfc3261_branch_and_bare_cookie() -> None:
    assert server_key(_request(branch="1234"))[0] == "s2543"
    # RFC 4475 §3.2.1: the magic cookie alone is no transaction identifier.
    assert server_key(_request(branch="z9hG4bK"))[0] == "s2543"


def test_layer_client_key() -> None:
    assert client_key("z9hG4bK1", "INVITE") == ("c", "z9hG4bK1", "INVITE")
    assert client_key("z9hG4bK1", "ACK") == ("c", "z9hG4bK1", "INVITE")


# -- server transactions --------------------------------------------------------------


def test_layer_new_request_creates_transaction() -> None:
    layer = TransactionLayer()
    key, actions = layer.receive_request(_request(), 0.0, reliable=False)
    assert key == server_key(_request())
    assert actions == []
    assert layer.statistics() == LayerStatistics(
        server_transactions=1,
        client_transactions=0,
        retransmissions_absorbed=0,
        overloaded=0,
        expired=0,
    )


def test_layer_retransmission_returns_resend_of_last_response() -> None:
    layer = TransactionLayer()
    request = _request()
    key, _ = layer.receive_request(request, 0.0, reliable=False)
    assert key is not None
    ringing = _response(request, 180, "Ringing")
    assert layer.send_response(key, ringing, 0.1) == [
        KeyedAction(key=key, action=Send(ringing.to_bytes()))
    ]
    assert layer.receive_request(request, 0.5, reliable=False) == (
        None,
        [KeyedAction(key=key, action=Send(ringing.to_bytes()))],
    )
    assert layer.statistics().retransmissions_absorbed == 1


def test_layer_retransmission_before_any_response_is_absorbed() -> None:
    layer = TransactionLayer()
    request = _request("OPTIONS")
    layer.receive_request(request, 0.0, reliable=False)
    assert layer.receive_request(request, 0.5, reliable=False) == (None, [])
    assert layer.statistics().retransmissions_absorbed == 1


def test_layer_invite_final_unreliable_then_ack() -> None:
    layer = TransactionLayer()
    request = _request()
    key, _ = layer.receive_request(request, 0.0, reliable=False)
    assert key is not None
    busy = _response(request, 486, "Busy Here")
    assert _actions(layer.send_response(key, busy, 1.0)) == [
        Send(busy.to_bytes()),
        StartTimer("H", 33.0),
        StartTimer("G", 1.5),
    ]
    assert _actions(layer.timer_fired(key, "G", 1.5)) == [
        Send(busy.to_bytes()),
        StartTimer("G", 2.5),
    ]
    # The ACK for the non-2xx final goes into the INVITE's transaction.
    assert layer.receive_request(_request("ACK", to_tag="314159"), 2.0, reliable=False) == (
        None,
        [
            KeyedAction(key=key, action=CancelTimer("G")),
            KeyedAction(key=key, action=CancelTimer("H")),
            KeyedAction(key=key, action=StartTimer("I", 7.0)),
        ],
    )
    assert _actions(layer.timer_fired(key, "I", 7.0)) == [Terminated("confirmed, timer I")]
    assert layer.statistics().server_transactions == 0


def test_layer_zero_timers_fire_inline_on_reliable_transport() -> None:
    layer = TransactionLayer()
    request = _request("OPTIONS")
    key, _ = layer.receive_request(request, 0.0, reliable=True)
    assert key is not None
    ok = _response(request, 200, "OK")
    # Timer J is zero on a reliable transport: the transaction ends at once.
    assert _actions(layer.send_response(key, ok, 1.0)) == [
        Send(ok.to_bytes()),
        Terminated("completed, timer J"),
    ]
    assert layer.statistics().server_transactions == 0
    # A retransmission now starts a new transaction (the TU sees it again).
    assert layer.receive_request(request, 1.1, reliable=True)[0] == key


def test_layer_reliable_invite_ack_ends_transaction_inline() -> None:
    layer = TransactionLayer()
    request = _request()
    key, _ = layer.receive_request(request, 0.0, reliable=True)
    assert key is not None
    layer.send_response(key, _response(request, 486, "Busy Here"), 0.0)
    _, actions = layer.receive_request(_request("ACK"), 0.2, reliable=True)
    assert _actions(actions) == [
        CancelTimer("G"),
        CancelTimer("H"),
        Terminated("confirmed, timer I"),
    ]
    assert layer.statistics().server_transactions == 0


def test_layer_ack_without_transaction_goes_to_tu() -> None:
    layer = TransactionLayer()
    ack = _request("ACK")
    assert layer.receive_request(ack, 0.0, reliable=False) == (server_key(ack), [])
    assert layer.statistics().server_transactions == 0


def test_layer_send_response_unknown_key_is_ignored() -> None:
    request = _request()
    assert TransactionLayer().send_response(("s", "x"), _response(request, 200, "OK"), 0.0) == []


def test_layer_full_property_and_overload() -> None:
    layer = TransactionLayer(max_server_transactions=1)
    assert layer.full is False
    layer.receive_request(_request(branch="z9hG4bKa"), 0.0, reliable=False)
    assert layer.full is True
    assert layer.receive_request(_request(branch="z9hG4bKb"), 0.0, reliable=False) == (None, [])
    # A retransmission of a live transaction is still matched when full.
    assert layer.receive_request(_request(branch="z9hG4bKa"), 0.1, reliable=False) == (None, [])
    stats = layer.statistics()
    assert (stats.overloaded, stats.retransmissions_absorbed) == (1, 1)


def test_layer_server_transport_error_removes_transaction() -> None:
    layer = TransactionLayer()
    request = _request()
    key, _ = layer.receive_request(request, 0.0, reliable=True)
    assert key is not None
    layer.send_response(key, _response(request, 180, "Ringing"), 0.0)
    assert _actions(layer.transport_error(key, 0.1)) == [
        PassUp("transport_error"),
        Terminated("transport error"),
    ]
    assert layer.statistics().server_transactions == 0
    assert layer.transport_error(key, 0.2) == []


# -- client transactions --------------------------------------------------------------


def test_layer_client_invite_unreliable_retransmits_and_matches_responses() -> None:
    layer = TransactionLayer()
    request = _request()
    key, actions = layer.send_request(request, 0.0, reliable=False)
    assert key == ("c", "z9hG4bK74bf9", "INVITE")
    assert _actions(actions) == [
        Send(request.to_bytes()),
        StartTimer("A", 0.5),
        StartTimer("B", 32.0),
    ]
    assert _actions(layer.timer_fired(key, "A", 0.5)) == [
        Send(request.to_bytes()),
        StartTimer("A", 1.5),
    ]
    ringing = _response(request, 180, "Ringing")
    assert _actions(layer.receive_response(ringing, 0.7)) == [CancelTimer("A"), PassUp(ringing)]


def test_layer_client_reliable_final_ends_inline() -> None:
    layer = TransactionLayer()
    request = _request()
    key, actions = layer.send_request(request, 0.0, reliable=True)
    assert _actions(actions) == [Send(request.to_bytes()), StartTimer("B", 32.0)]
    busy = _response(request, 486, "Busy Here")
    # §17.1.1.3: the transaction ACKs a non-2xx itself, with the INVITE's top Via.
    ack = (
        "ACK sip:bob@example.com SIP/2.0\r\n"
        f"Via: {request.headers.values('via')[0]}\r\n"
        "Max-Forwards: 70\r\n"
        f"From: {request.headers.get('from')}\r\n"
        f"To: {busy.headers.get('to')}\r\n"
        f"Call-ID: {request.call_id}\r\n"
        f"CSeq: {request.cseq.seq} ACK\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()
    assert _actions(layer.receive_response(busy, 1.0)) == [
        CancelTimer("A"),
        CancelTimer("B"),
        Send(ack),
        PassUp(busy),
        Terminated("completed, timer D"),
    ]
    assert layer.statistics().client_transactions == 0
    assert layer.timer_fired(key, "B", 32.0) == []


def test_layer_client_non_invite_timeout() -> None:
    layer = TransactionLayer()
    key, _ = layer.send_request(_request("OPTIONS"), 0.0, reliable=True)
    assert _actions(layer.timer_fired(key, "F", 32.0)) == [PassUp("timeout"), Terminated("timeout")]
    assert layer.statistics().client_transactions == 0


def test_layer_unmatched_response_is_absorbed() -> None:
    layer = TransactionLayer()
    layer.send_request(_request(), 0.0, reliable=False)
    stray = _response(_request(branch="z9hG4bKunknown"), 200, "OK")
    assert layer.receive_response(stray, 0.1) == []
    # Same branch, other method (CSeq): not the INVITE's transaction either.
    other = _response(_request("OPTIONS"), 200, "OK")
    assert layer.receive_response(other, 0.1) == []
    assert layer.statistics().retransmissions_absorbed == 2


def test_layer_client_transport_error() -> None:
    layer = TransactionLayer()
    key, _ = layer.send_request(_request("OPTIONS"), 0.0, reliable=False)
    assert _actions(layer.transport_error(key, 0.1)) == [
        PassUp("transport_error"),
        Terminated("transport error"),
    ]


# -- the TU-answer backstop (issue 13, finding 2) ----------------------------------------


def test_layer_unanswered_non_invite_expires_after_its_wait() -> None:
    layer = TransactionLayer()
    key, _ = layer.receive_request(_request("REGISTER"), 0.0, reliable=False)
    assert key is not None
    assert layer.expire(MAX_NON_INVITE_TU_WAIT - 0.001) == []
    assert layer.expire(MAX_NON_INVITE_TU_WAIT) == [
        KeyedAction(key=key, action=Terminated("no answer from the TU"))
    ]
    assert (len(layer), layer.statistics().expired) == (0, 1)


def test_layer_unanswered_invite_expires_after_the_longer_wait() -> None:
    layer = TransactionLayer()
    key, _ = layer.receive_request(_request("INVITE"), 0.0, reliable=True)
    layer.send_response(key or (), _response(_request("INVITE"), 180, "Ringing"), 1.0)
    assert layer.expire(MAX_INVITE_TU_WAIT - 0.001) == []
    assert _actions(layer.expire(MAX_INVITE_TU_WAIT)) == [Terminated("no answer from the TU")]
    assert len(layer) == 0


def test_layer_answered_transaction_is_not_expired() -> None:
    layer = TransactionLayer()
    request = _request("REGISTER")
    key, _ = layer.receive_request(request, 0.0, reliable=False)
    assert key is not None
    layer.send_response(key, _response(request, 200, "OK"), 1.0)
    # Completed on UDP: Timer J holds it 64*T1 for retransmissions; expiry leaves it be.
    assert layer.expire(MAX_NON_INVITE_TU_WAIT + 1) == []
    assert len(layer) == 1
    layer.timer_fired(key, "J", 1.0 + MAX_NON_INVITE_TU_WAIT)
    assert len(layer) == 0


def test_layer_expiry_spares_a_newer_transaction_with_the_same_key() -> None:
    layer = TransactionLayer()
    request = _request("OPTIONS")
    key, _ = layer.receive_request(request, 0.0, reliable=True)
    assert key is not None
    layer.discard(key)
    again, _ = layer.receive_request(request, 10.0, reliable=True)
    assert again == key
    assert layer.expire(MAX_NON_INVITE_TU_WAIT) == []
    assert len(layer) == 1
    assert len(layer.expire(10.0 + MAX_NON_INVITE_TU_WAIT)) == 1


# -- what the layer keeps per transaction (issue 15: memory per call) -----------------


def test_layer_accepted_invite_client_forgets_its_invite() -> None:
    layer = TransactionLayer()
    request = _request()
    key, _ = layer.send_request(request, 0.0, reliable=True)
    assert layer._invites == {key: request}
    ok = _response(request, 200, "OK")
    layer.receive_response(ok, 1.0)
    # RFC 6026 §7.2: the TU ACKs a 2xx; the INVITE is not kept for Timer M.
    assert layer._invites == {}
    assert _actions(layer.receive_response(ok, 2.0)) == [PassUp(ok)]
    assert _actions(layer.timer_fired(key, "M", 32.0)) == [Terminated("accepted, timer M")]


def test_layer_answered_transactions_leave_the_deadline_queue() -> None:
    layer = TransactionLayer()
    for i in range(3):
        request = _request(branch=f"z9hG4bK-{i}")
        key, _ = layer.receive_request(request, float(i), reliable=True)
        assert key is not None
        layer.send_response(key, _response(request, 486, "Busy Here"), float(i))
    # Each new transaction drops the answered ones ahead of it, not after 660 s.
    assert [k[1] for _, k in layer._due[Kind.INVITE_SERVER]] == ["z9hG4bK-2"]
    assert layer.expire(MAX_INVITE_TU_WAIT + 10) == []


# -- 2xx retransmission over UDP (RFC 3261 §13.3.1.4) -----------------------------------


def _answered_invite(layer: TransactionLayer) -> tuple[tuple[str, ...], Response]:
    invite = _request()
    key, _ = layer.receive_request(invite, 0.0, reliable=False)
    assert key is not None
    ok = _response(invite, 200, "OK")
    assert _actions(layer.send_response(key, ok, 1.0)) == [
        Send(ok.to_bytes()),
        StartTimer("L", 1.0 + 64 * T1),
        StartTimer("G", 1.0 + T1),
    ]
    return key, ok


def test_layer_2xx_over_udp_resent_until_its_ack_with_a_branch_of_its_own() -> None:
    layer = TransactionLayer()
    key, ok = _answered_invite(layer)
    assert _actions(layer.timer_fired(key, "G", 1.5)) == [
        Send(ok.to_bytes()),
        StartTimer("G", 1.5 + 2 * T1),
    ]
    # §17.1.1.3: the ACK for a 2xx is a new transaction (its own branch): the layer
    # matches it by Call-ID, CSeq number and To tag, stops the 2xx and still hands the
    # ACK to the TU (it may carry an answer).
    ack = _request("ACK", branch="z9hG4bKack1", to_tag="314159")
    tu_key, actions = layer.receive_request(ack, 2.0, reliable=False)
    assert tu_key == server_key(ack)
    assert actions == [
        KeyedAction(key=key, action=CancelTimer("G")),
        KeyedAction(key=key, action=PassUp(ack)),
    ]
    assert layer.statistics().acks_matched == 1
    # A retransmitted ACK finds nothing more to stop and goes to the TU alone.
    assert layer.receive_request(ack, 2.1, reliable=False) == (server_key(ack), [])
    assert _actions(layer.timer_fired(key, "L", 33.0)) == [Terminated("accepted, timer L")]
    assert layer.statistics().unacknowledged_2xx == 0


def test_layer_ack_of_another_dialog_or_cseq_does_not_stop_the_2xx() -> None:
    layer = TransactionLayer()
    key, ok = _answered_invite(layer)
    other_tag = _request("ACK", branch="z9hG4bKack2", to_tag="271828")
    assert layer.receive_request(other_tag, 1.2, reliable=False)[1] == []
    assert _actions(layer.timer_fired(key, "G", 1.5))[0] == Send(ok.to_bytes())


def test_layer_2xx_never_acked_passes_up_no_ack_with_the_response() -> None:
    layer = TransactionLayer()
    key, ok = _answered_invite(layer)
    now, interval = 1.0, T1
    sends = 0
    while now + interval < 1.0 + 64 * T1:
        now += interval
        actions = _actions(layer.timer_fired(key, "G", now))
        assert actions[0] == Send(ok.to_bytes())
        sends += 1
        interval = min(interval * 2, T2)
    assert sends == 10  # 0.5 1 2 4 4 4 4 4 4 4 (§13.3.1.4's schedule within 64*T1)
    assert _actions(layer.timer_fired(key, "L", 1.0 + 64 * T1)) == [
        CancelTimer("G"),
        PassUp(NoAck(response=ok)),
        Terminated("no ACK for the 2xx (timer L)"),
    ]
    assert layer.statistics().unacknowledged_2xx == 1
    assert len(layer) == 0
    # Its ACK id is forgotten with it: a late ACK only goes to the TU.
    late = _request("ACK", branch="z9hG4bKack3", to_tag="314159")
    assert layer.receive_request(late, 40.0, reliable=False)[1] == []


def test_layer_2xx_over_reliable_transport_waits_for_no_ack() -> None:
    layer = TransactionLayer()
    invite = _request()
    key, _ = layer.receive_request(invite, 0.0, reliable=True)
    assert key is not None
    ok = _response(invite, 200, "OK")
    assert _actions(layer.send_response(key, ok, 1.0)) == [
        Send(ok.to_bytes()),
        StartTimer("L", 1.0 + 64 * T1),
    ]
    assert _actions(layer.timer_fired(key, "L", 33.0)) == [Terminated("accepted, timer L")]
    assert layer.statistics().unacknowledged_2xx == 0


def test_layer_discarded_answered_transaction_forgets_its_ack_id() -> None:
    layer = TransactionLayer()
    key, _ = _answered_invite(layer)
    layer.discard(key)
    ack = _request("ACK", branch="z9hG4bKack4", to_tag="314159")
    assert layer.receive_request(ack, 2.0, reliable=False)[1] == []
    assert layer._awaiting_ack == {} and layer._answers == {}

"""The four RFC 3261 §17 transaction machines, driven by a fake clock.

Time is only ever the ``now`` argument: a test "waits" by firing the timer a previous
action asked for, at the time it asked for.
"""

from __future__ import annotations

import pytest

from voipsec.sip.transaction import (
    NO_ACK,
    T1,
    T2,
    T4,
    TABLES,
    Action,
    CancelTimer,
    InvalidTransition,
    Kind,
    PassUp,
    Send,
    StartTimer,
    State,
    Terminated,
    Transaction,
    response_event,
    tu_event,
)

REQUEST = b"INVITE sip:bob@example.com SIP/2.0\r\n...\r\n\r\n"
PROVISIONAL = b"SIP/2.0 180 Ringing\r\n...\r\n\r\n"
OK = b"SIP/2.0 200 OK\r\n...\r\n\r\n"
BUSY = b"SIP/2.0 486 Busy Here\r\n...\r\n\r\n"
ACK = b"ACK sip:bob@example.com SIP/2.0\r\n...\r\n\r\n"


def _timer(actions: list[Action], name: str) -> StartTimer:
    (timer,) = [a for a in actions if isinstance(a, StartTimer) and a.name == name]
    return timer


def _retransmission_schedule(
    tx: Transaction, actions: list[Action], name: str, count: int, data: bytes
) -> list[float]:
    """Fire timer ``name`` ``count`` times when asked; return the intervals it asked for."""
    intervals: list[float] = []
    timer = _timer(actions, name)
    now = 0.0
    for _ in range(count):
        intervals.append(timer.at - now)
        now = timer.at
        actions = tx.process(f"timer_{name}", now)
        assert actions[0] == Send(data)
        timer = _timer(actions, name)
    intervals.append(timer.at - now)
    return intervals


def test_transaction_timer_base_values() -> None:
    assert (T1, T2, T4) == (0.5, 4.0, 5.0)


def test_transaction_event_names() -> None:
    assert [response_event(s) for s in (100, 183, 200, 299, 300, 486, 699)] == [
        "1xx", "1xx", "2xx", "2xx", "final", "final", "final"
    ]  # fmt: skip
    assert [tu_event(s) for s in (100, 200, 404)] == ["tu_1xx", "tu_2xx", "tu_final"]


# -- INVITE client (§17.1.1, RFC 6026) ----------------------------------------------


def test_transaction_ict_unreliable_start() -> None:
    tx = Transaction(Kind.INVITE_CLIENT, reliable=False)
    assert tx.state is State.CALLING
    assert tx.start(10.0, REQUEST) == [
        Send(REQUEST),
        StartTimer("A", 10.0 + T1),
        StartTimer("B", 10.0 + 64 * T1),
    ]


def test_transaction_ict_timer_a_doubles_without_cap() -> None:
    # §17.1.1.2: Timer A doubles on every retransmission; unlike E and G it is not
    # capped at T2 — Timer B ends the transaction after 64*T1.
    tx = Transaction(Kind.INVITE_CLIENT, reliable=False)
    actions = tx.start(0.0, REQUEST)
    assert _retransmission_schedule(tx, actions, "A", 6, REQUEST) == [
        0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0
    ]  # fmt: skip
    assert tx.state is State.CALLING


def test_transaction_ict_timer_b_times_out() -> None:
    tx = Transaction(Kind.INVITE_CLIENT, reliable=False)
    b = _timer(tx.start(0.0, REQUEST), "B")
    assert b.at == 32.0
    assert tx.process("timer_B", b.at) == [PassUp("timeout"), Terminated("timeout")]
    assert tx.terminated


def test_transaction_ict_reliable_has_no_timer_a() -> None:
    tx = Transaction(Kind.INVITE_CLIENT, reliable=True)
    assert tx.start(0.0, REQUEST) == [Send(REQUEST), StartTimer("B", 32.0)]


def test_transaction_ict_provisional_then_proceeding() -> None:
    tx = Transaction(Kind.INVITE_CLIENT, reliable=False)
    tx.start(0.0, REQUEST)
    assert tx.process("1xx", 0.2, "180") == [CancelTimer("A"), PassUp("180")]
    assert tx.state is State.PROCEEDING
    assert tx.process("1xx", 0.3, "183") == [PassUp("183")]
    # A Timer A that fired anyway is absorbed.
    assert tx.process("timer_A", 0.5) == []
    assert tx.absorbed == 1


def test_transaction_ict_2xx_accepted_then_timer_m() -> None:
    tx = Transaction(Kind.INVITE_CLIENT, reliable=False)
    tx.start(0.0, REQUEST)
    tx.process("1xx", 1.0, "180")
    assert tx.process("2xx", 2.0, "200") == [
        CancelTimer("A"),
        CancelTimer("B"),
        PassUp("200"),
        StartTimer("M", 2.0 + 64 * T1),
    ]
    assert tx.state is State.ACCEPTED
    # RFC 6026 §8.4: retransmitted 2xx go to the TU (which ACKs them).
    assert tx.process("2xx", 3.0, "200 again") == [PassUp("200 again")]
    assert tx.process("final", 3.5, "486") == []
    assert tx.process("timer_M", 34.0) == [Terminated("accepted, timer M")]
    assert tx.terminated


def test_transaction_ict_failure_acks_and_waits_timer_d() -> None:
    tx = Transaction(Kind.INVITE_CLIENT, reliable=False)
    tx.start(0.0, REQUEST)
    assert tx.process("final", 1.0, ("486", ACK)) == [
        CancelTimer("A"),
        CancelTimer("B"),
        Send(ACK),
        PassUp("486"),
        StartTimer("D", 33.0),
    ]
    assert tx.state is State.COMPLETED
    # §17.1.1.2: a retransmitted final response is ACKed again, not passed up.
    assert tx.process("final", 2.0, ("486", ACK)) == [Send(ACK)]
    assert tx.process("timer_D", 33.0) == [Terminated("completed, timer D")]


def test_transaction_ict_failure_reliable_timer_d_zero() -> None:
    tx = Transaction(Kind.INVITE_CLIENT, reliable=True)
    tx.start(0.0, REQUEST)
    actions = tx.process("final", 1.0, ("486", ACK))
    assert _timer(actions, "D").at == 1.0


def test_transaction_ict_failure_without_ack_bytes() -> None:
    tx = Transaction(Kind.INVITE_CLIENT, reliable=False)
    tx.start(0.0, REQUEST)
    assert tx.process("final", 1.0, "486") == [
        CancelTimer("A"),
        CancelTimer("B"),
        PassUp("486"),
        StartTimer("D", 33.0),
    ]
    assert tx.process("final", 2.0, "486") == []


def test_transaction_ict_transport_error() -> None:
    tx = Transaction(Kind.INVITE_CLIENT, reliable=True)
    tx.start(0.0, REQUEST)
    assert tx.process("transport_error", 0.1) == [
        PassUp("transport_error"),
        Terminated("transport error"),
    ]


def test_transaction_ict_tu_event_is_invalid_transition() -> None:
    tx = Transaction(Kind.INVITE_CLIENT, reliable=False)
    tx.start(0.0, REQUEST)
    with pytest.raises(InvalidTransition, match=r"^ict: tu_2xx in state calling$"):
        tx.process("tu_2xx", 0.1, OK)
    assert tx.state is State.CALLING


# -- non-INVITE client (§17.1.2) ----------------------------------------------------


def test_transaction_nict_unreliable_start() -> None:
    tx = Transaction(Kind.NON_INVITE_CLIENT, reliable=False)
    assert tx.state is State.TRYING
    assert tx.start(0.0, REQUEST) == [Send(REQUEST), StartTimer("E", T1), StartTimer("F", 32.0)]


def test_transaction_nict_timer_e_doubles_capped_at_t2() -> None:
    tx = Transaction(Kind.NON_INVITE_CLIENT, reliable=False)
    actions = tx.start(0.0, REQUEST)
    assert _retransmission_schedule(tx, actions, "E", 6, REQUEST) == [
        0.5, 1.0, 2.0, 4.0, 4.0, 4.0, 4.0
    ]  # fmt: skip


def test_transaction_nict_timer_e_in_proceeding_is_t2() -> None:
    tx = Transaction(Kind.NON_INVITE_CLIENT, reliable=False)
    tx.start(0.0, REQUEST)
    assert tx.process("1xx", 0.1, "100") == [PassUp("100")]
    assert tx.state is State.PROCEEDING
    assert tx.process("timer_E", 0.5) == [Send(REQUEST), StartTimer("E", 0.5 + T2)]


def test_transaction_nict_timer_f_times_out_in_trying_and_proceeding() -> None:
    for provisional in (False, True):
        tx = Transaction(Kind.NON_INVITE_CLIENT, reliable=False)
        f = _timer(tx.start(0.0, REQUEST), "F")
        if provisional:
            tx.process("1xx", 1.0, "100")
        assert tx.process("timer_F", f.at) == [PassUp("timeout"), Terminated("timeout")]


@pytest.mark.parametrize("event", ["2xx", "final"])
def test_transaction_nict_final_then_timer_k(event: str) -> None:
    tx = Transaction(Kind.NON_INVITE_CLIENT, reliable=False)
    tx.start(0.0, REQUEST)
    assert tx.process(event, 1.0, "resp") == [
        CancelTimer("E"),
        CancelTimer("F"),
        PassUp("resp"),
        StartTimer("K", 1.0 + T4),
    ]
    assert tx.state is State.COMPLETED
    # §17.1.2.2: retransmitted finals and late timers are absorbed in Completed.
    assert tx.process(event, 2.0, "resp") == []
    assert tx.process("timer_E", 2.0) == []
    assert tx.process("timer_F", 32.0) == []
    assert tx.absorbed == 3
    assert tx.process("timer_K", 6.0) == [Terminated("completed, timer K")]


def test_transaction_nict_reliable_no_timer_e_and_zero_timer_k() -> None:
    tx = Transaction(Kind.NON_INVITE_CLIENT, reliable=True)
    assert tx.start(0.0, REQUEST) == [Send(REQUEST), StartTimer("F", 32.0)]
    assert _timer(tx.process("final", 1.0, "404"), "K").at == 1.0


def test_transaction_nict_tu_event_is_invalid_transition() -> None:
    tx = Transaction(Kind.NON_INVITE_CLIENT, reliable=False)
    with pytest.raises(InvalidTransition, match=r"^nict: tu_1xx in state trying$"):
        tx.process("tu_1xx", 0.0, PROVISIONAL)


# -- INVITE server (§17.2.1, RFC 6026) ----------------------------------------------


def test_transaction_ist_start_sends_nothing() -> None:
    tx = Transaction(Kind.INVITE_SERVER, reliable=False)
    assert tx.state is State.PROCEEDING
    assert tx.start(0.0, REQUEST) == []


def test_transaction_ist_retransmission_answered_with_last_provisional() -> None:
    tx = Transaction(Kind.INVITE_SERVER, reliable=False)
    assert tx.process("request", 0.1) == []  # nothing sent yet
    assert tx.process("tu_1xx", 0.2, PROVISIONAL) == [Send(PROVISIONAL)]
    assert tx.process("request", 0.5) == [Send(PROVISIONAL)]
    assert tx.absorbed == 0  # a table transition, not an absorbed event


def test_transaction_ist_final_timer_g_doubles_capped_at_t2() -> None:
    tx = Transaction(Kind.INVITE_SERVER, reliable=False)
    actions = tx.process("tu_final", 0.0, BUSY)
    assert actions == [Send(BUSY), StartTimer("H", 64 * T1), StartTimer("G", T1)]
    assert tx.state is State.COMPLETED
    assert _retransmission_schedule(tx, actions, "G", 6, BUSY) == [
        0.5, 1.0, 2.0, 4.0, 4.0, 4.0, 4.0
    ]  # fmt: skip


def test_transaction_ist_completed_retransmission_answered_with_final() -> None:
    tx = Transaction(Kind.INVITE_SERVER, reliable=False)
    tx.process("tu_1xx", 0.0, PROVISIONAL)
    tx.process("tu_final", 1.0, BUSY)
    assert tx.process("request", 1.5) == [Send(BUSY)]


def test_transaction_ist_ack_confirms_then_timer_i() -> None:
    tx = Transaction(Kind.INVITE_SERVER, reliable=False)
    tx.process("tu_final", 0.0, BUSY)
    assert tx.process("ack", 1.0, "ACK") == [
        CancelTimer("G"),
        CancelTimer("H"),
        StartTimer("I", 1.0 + T4),
    ]
    assert tx.state is State.CONFIRMED
    assert tx.process("ack", 2.0, "ACK") == []  # retransmitted ACK absorbed by the table
    assert tx.process("request", 2.5) == []  # late INVITE retransmission
    assert tx.process("timer_G", 3.0) == []
    assert tx.absorbed == 2
    assert tx.process("timer_I", 6.0) == [Terminated("confirmed, timer I")]


def test_transaction_ist_reliable_no_timer_g_and_zero_timer_i() -> None:
    tx = Transaction(Kind.INVITE_SERVER, reliable=True)
    assert tx.process("tu_final", 0.0, BUSY) == [Send(BUSY), StartTimer("H", 32.0)]
    assert tx.process("ack", 1.0, "ACK") == [
        CancelTimer("G"),
        CancelTimer("H"),
        StartTimer("I", 1.0),
    ]


def test_transaction_ist_timer_h_without_ack() -> None:
    tx = Transaction(Kind.INVITE_SERVER, reliable=False)
    h = _timer(tx.process("tu_final", 0.0, BUSY), "H")
    assert h.at == 32.0
    assert tx.process("timer_H", h.at) == [
        CancelTimer("G"),
        PassUp("timeout"),
        Terminated("no ACK (timer H)"),
    ]


def test_transaction_ist_2xx_accepted_then_timer_l() -> None:
    tx = Transaction(Kind.INVITE_SERVER, reliable=True)
    assert tx.process("tu_2xx", 0.0, OK) == [Send(OK), StartTimer("L", 32.0)]
    assert tx.state is State.ACCEPTED
    # RFC 6026 §7.1: the TU may resend its 2xx; INVITE retransmissions are absorbed;
    # ACKs for the 2xx go to the TU.
    assert tx.process("tu_2xx", 0.5, OK) == [Send(OK)]
    assert tx.process("request", 0.6) == []
    assert tx.process("ack", 0.7, "ACK") == [PassUp("ACK")]
    assert tx.process("timer_L", 32.0) == [Terminated("accepted, timer L")]


def test_transaction_ist_2xx_over_udp_resent_t1_doubling_to_t2_until_ack() -> None:
    # RFC 3261 §13.3.1.4: T1, 2*T1, 4*T1... capped at T2, until the ACK.
    tx = Transaction(Kind.INVITE_SERVER, reliable=False)
    actions = tx.process("tu_2xx", 0.0, OK)
    assert actions == [Send(OK), StartTimer("L", 32.0), StartTimer("G", T1)]
    assert _retransmission_schedule(tx, actions, "G", 5, OK) == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert tx.process("ack", 12.0, "ACK") == [CancelTimer("G"), PassUp("ACK")]
    assert tx.process("timer_G", 15.5) == []  # a timer that raced the ACK sends nothing
    assert tx.process("ack", 16.0, "ACK") == [PassUp("ACK")]  # a resent ACK: once more up
    assert tx.process("timer_L", 32.0) == [Terminated("accepted, timer L")]


def test_transaction_ist_2xx_over_udp_never_acked_passes_up_no_ack() -> None:
    # §13.3.1.4: 64*T1 without an ACK: the session SHOULD be terminated (by the TU).
    tx = Transaction(Kind.INVITE_SERVER, reliable=False)
    tx.process("tu_2xx", 0.0, OK)
    assert tx.process("timer_G", T1) == [Send(OK), StartTimer("G", T1 + 2 * T1)]
    assert tx.process("timer_L", 64 * T1) == [
        CancelTimer("G"),
        PassUp(NO_ACK),
        Terminated("no ACK for the 2xx (timer L)"),
    ]
    assert tx.terminated


def test_transaction_ist_2xx_resent_by_tu_is_the_copy_the_timer_resends() -> None:
    other = OK.replace(b"OK", b"Fine")
    tx = Transaction(Kind.INVITE_SERVER, reliable=False)
    tx.process("tu_2xx", 0.0, OK)
    assert tx.process("tu_2xx", 0.2, other) == [Send(other)]
    assert tx.process("timer_G", T1) == [Send(other), StartTimer("G", T1 + 2 * T1)]


def test_transaction_ist_2xx_over_tls_not_resent_and_no_ack_not_reported() -> None:
    tx = Transaction(Kind.INVITE_SERVER, reliable=True)
    tx.process("tu_2xx", 0.0, OK)
    assert tx.process("timer_G", T1) == []
    assert tx.process("timer_L", 64 * T1) == [Terminated("accepted, timer L")]


def test_transaction_ist_payload_message_is_serialized() -> None:
    class Message:
        def to_bytes(self) -> bytes:
            return OK

    tx = Transaction(Kind.INVITE_SERVER, reliable=True)
    assert tx.process("tu_2xx", 0.0, Message()) == [Send(OK), StartTimer("L", 32.0)]


def test_transaction_ist_payload_not_a_message_is_invalid_transition() -> None:
    tx = Transaction(Kind.INVITE_SERVER, reliable=False)
    with pytest.raises(InvalidTransition, match=r"^a response to send must be bytes or a message$"):
        tx.process("tu_1xx", 0.0, "180 Ringing")


def test_transaction_ist_tu_final_after_final_is_invalid_transition() -> None:
    tx = Transaction(Kind.INVITE_SERVER, reliable=False)
    tx.process("tu_final", 0.0, BUSY)
    with pytest.raises(InvalidTransition, match=r"^ist: tu_final in state completed$"):
        tx.process("tu_final", 0.1, BUSY)
    with pytest.raises(InvalidTransition, match=r"^ist: tu_2xx in state completed$"):
        tx.process("tu_2xx", 0.1, OK)


def test_transaction_ist_transport_error() -> None:
    tx = Transaction(Kind.INVITE_SERVER, reliable=True)
    tx.process("tu_final", 0.0, BUSY)
    assert tx.process("transport_error", 0.1) == [
        PassUp("transport_error"),
        Terminated("transport error"),
    ]


# -- non-INVITE server (§17.2.2) ----------------------------------------------------


def test_transaction_nist_trying_absorbs_retransmissions() -> None:
    tx = Transaction(Kind.NON_INVITE_SERVER, reliable=False)
    assert tx.state is State.TRYING
    assert tx.start(0.0, REQUEST) == []
    assert tx.process("request", 0.5) == []


def test_transaction_nist_provisional_resent_on_retransmission() -> None:
    tx = Transaction(Kind.NON_INVITE_SERVER, reliable=False)
    assert tx.process("tu_1xx", 0.0, PROVISIONAL) == [Send(PROVISIONAL)]
    assert tx.state is State.PROCEEDING
    assert tx.process("request", 0.5) == [Send(PROVISIONAL)]


@pytest.mark.parametrize("event", ["tu_2xx", "tu_final"])
def test_transaction_nist_final_then_timer_j(event: str) -> None:
    tx = Transaction(Kind.NON_INVITE_SERVER, reliable=False)
    assert tx.process(event, 1.0, OK) == [Send(OK), StartTimer("J", 1.0 + 64 * T1)]
    assert tx.state is State.COMPLETED
    assert tx.process("request", 2.0) == [Send(OK)]
    assert tx.process("timer_J", 33.0) == [Terminated("completed, timer J")]


def test_transaction_nist_reliable_zero_timer_j() -> None:
    tx = Transaction(Kind.NON_INVITE_SERVER, reliable=True)
    assert tx.process("tu_final", 1.0, BUSY) == [Send(BUSY), StartTimer("J", 1.0)]


def test_transaction_nist_second_final_is_invalid_transition() -> None:
    tx = Transaction(Kind.NON_INVITE_SERVER, reliable=False)
    tx.process("tu_final", 0.0, BUSY)
    with pytest.raises(InvalidTransition, match=r"^nist: tu_final in state completed$"):
        tx.process("tu_final", 0.1, BUSY)


def test_transaction_nist_late_network_events_absorbed_and_counted() -> None:
    tx = Transaction(Kind.NON_INVITE_SERVER, reliable=False)
    tx.process("tu_final", 0.0, BUSY)
    assert tx.process("ack", 0.1) == []
    assert tx.process("timer_G", 0.2) == []
    assert tx.process("2xx", 0.3, "stray") == []
    assert tx.absorbed == 3
    assert tx.state is State.COMPLETED


def test_transaction_terminated_absorbs_everything_from_the_network() -> None:
    tx = Transaction(Kind.NON_INVITE_SERVER, reliable=False)
    tx.process("tu_final", 0.0, BUSY)
    tx.process("timer_J", 32.0)
    assert tx.terminated
    assert tx.process("request", 33.0) == []
    assert tx.absorbed == 1
    with pytest.raises(InvalidTransition, match=r"^nist: tu_1xx in state terminated$"):
        tx.process("tu_1xx", 33.0, PROVISIONAL)


# -- the tables -----------------------------------------------------------------------


def test_transaction_tables_never_leave_terminated() -> None:
    for table in TABLES.values():
        assert all(state is not State.TERMINATED for state, _ in table)


def test_transaction_tables_every_state_is_reachable() -> None:
    expected = {
        Kind.INVITE_CLIENT: {"calling", "proceeding", "accepted", "completed", "terminated"},
        Kind.NON_INVITE_CLIENT: {"trying", "proceeding", "completed", "terminated"},
        Kind.INVITE_SERVER: {"proceeding", "accepted", "completed", "confirmed", "terminated"},
        Kind.NON_INVITE_SERVER: {"trying", "proceeding", "completed", "terminated"},
    }
    for kind, table in TABLES.items():
        states = {s.value for s, _ in table} | {nxt.value for nxt, _ in table.values()}
        assert states == expected[kind]


# -- what a transaction keeps once it no longer resends it (issue 15: memory) --------


def test_transaction_ict_accepted_keeps_no_request_bytes() -> None:
    tx = Transaction(Kind.INVITE_CLIENT, reliable=False)
    tx.start(0.0, REQUEST)
    tx.process("2xx", 1.0, "200")
    # RFC 6026 §7.2: no Timer A in Accepted; a late timer event is absorbed, not resent.
    assert tx._last == b""
    assert tx.process("timer_A", 1.5) == []


def test_transaction_nict_completed_keeps_no_request_bytes() -> None:
    tx = Transaction(Kind.NON_INVITE_CLIENT, reliable=False)
    tx.start(0.0, REQUEST)
    tx.process("2xx", 1.0, "200")
    assert tx._last == b""
    assert tx.process("timer_E", 1.5) == []


def test_transaction_ist_accepted_and_confirmed_keep_no_response_bytes() -> None:
    accepted = Transaction(Kind.INVITE_SERVER, reliable=True)
    accepted.process("tu_1xx", 0.0, PROVISIONAL)
    accepted.process("tu_2xx", 1.0, OK)
    assert accepted._last == b""
    assert accepted.process("request", 1.5) == []  # RFC 6026 §7.1: absorbed
    over_udp = Transaction(Kind.INVITE_SERVER, reliable=False)
    over_udp.process("tu_2xx", 1.0, OK)
    assert over_udp._last == OK  # resent until the ACK (§13.3.1.4), then freed
    over_udp.process("ack", 1.2, "ACK")
    assert over_udp._last == b""
    confirmed = Transaction(Kind.INVITE_SERVER, reliable=False)
    confirmed.process("tu_final", 0.0, BUSY)
    assert confirmed.process("request", 0.5) == [Send(BUSY)]  # Completed still resends
    confirmed.process("ack", 1.0)
    assert confirmed._last == b""
    assert confirmed.process("ack", 1.5) == []

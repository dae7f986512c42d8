"""The TURN probe's decisions (audit/turnpeers.py) and the shell's limits (audit/turnprobe.py).

The requests are read back with voipsec's own STUN codec; the answers are built with it.
The limits are exceeded against a UDP responder on 127.0.0.1 that answers Allocate and
then falls silent (a real TURN server cannot be told to): it shows the retransmissions
(REQUEST_SENDS) and the end after MAX_SILENT unanswered requests.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from ipaddress import ip_address
from pathlib import Path

import pytest

from voipsec.audit import turnprobe
from voipsec.audit.model import Outcome
from voipsec.audit.options import ProbeOptions
from voipsec.audit.targets import TurnTarget
from voipsec.audit.turnpeers import (
    PEER_PORT,
    PROBED_PEERS,
    SPEC,
    LongTerm,
    PeerAnswer,
    PeerVerdict,
    TurnAnswer,
    TurnAnswerKind,
    allocate_attributes,
    allocation_for,
    build_request,
    coturn_fix,
    judge,
    own_fix,
    permission_attributes,
    permission_verdict,
    read_answer,
    refresh_attributes,
    retry_credentials,
)
from voipsec.config import Config
from voipsec.nat import peerfilter, stun
from voipsec.nat.credentials import long_term_key
from voipsec.nat.stun import (
    FAMILY_IPV4,
    FAMILY_IPV6,
    Attr,
    Message,
    MessageClass,
    Method,
)

TID = bytes(range(12))
BARE = LongTerm(username="probe", password="secret")
CHALLENGED = LongTerm(username="probe", password="secret", realm="audit.test", nonce="n1")
TARGET = "turn:192.0.2.7:3478"


def _answer(
    cls: int, attributes: tuple[tuple[int, bytes], ...] = (), key: bytes | None = None
) -> Message:
    data = stun.encode(
        Message(method=Method.ALLOCATE, cls=cls, transaction_id=TID, attributes=attributes),
        key=key,
    )
    return stun.parse_message(data)


def _error(code: int, realm: str = "", nonce: str = "") -> Message:
    attrs: list[tuple[int, bytes]] = [(Attr.ERROR_CODE, stun.encode_error_code(code))]
    if realm:
        attrs.append((Attr.REALM, realm.encode()))
    if nonce:
        attrs.append((Attr.NONCE, nonce.encode()))
    return _answer(MessageClass.ERROR, tuple(attrs))


# -- requests -----------------------------------------------------------------------------


def test_turnpeers_first_request_carries_no_credentials() -> None:
    data = build_request(Method.ALLOCATE, TID, allocate_attributes(FAMILY_IPV4), BARE)
    message = stun.parse_message(data)
    assert (message.method, message.cls) == (Method.ALLOCATE, MessageClass.REQUEST)
    assert [kind for kind, _ in message.attributes] == [
        Attr.REQUESTED_TRANSPORT,
        Attr.FINGERPRINT,
    ]


def test_turnpeers_challenged_request_is_integrity_protected() -> None:
    data = build_request(Method.ALLOCATE, TID, allocate_attributes(FAMILY_IPV6), CHALLENGED)
    message = stun.parse_message(data)
    assert [kind for kind, _ in message.attributes] == [
        Attr.REQUESTED_TRANSPORT,
        Attr.REQUESTED_ADDRESS_FAMILY,
        Attr.USERNAME,
        Attr.REALM,
        Attr.NONCE,
        Attr.MESSAGE_INTEGRITY,
        Attr.FINGERPRINT,
    ]
    assert message.requested_family() == FAMILY_IPV6
    assert (message.text(Attr.USERNAME), message.text(Attr.REALM)) == ("probe", "audit.test")
    assert stun.verify_integrity(message, long_term_key("probe", "audit.test", "secret"))


def test_turnpeers_permission_and_refresh_attributes() -> None:
    message = stun.parse_message(
        build_request(
            Method.CREATE_PERMISSION, TID, permission_attributes("::ffff:127.0.0.1", TID), BARE
        )
    )
    assert message.xor_addresses(Attr.XOR_PEER_ADDRESS) == [("::ffff:7f00:1", PEER_PORT)]
    refresh = stun.parse_message(build_request(Method.REFRESH, TID, refresh_attributes(), BARE))
    assert refresh.uint32(Attr.LIFETIME) == 0


def test_turnpeers_allocation_for_prefers_own_family() -> None:
    assert allocation_for("10.0.0.1", [FAMILY_IPV4, FAMILY_IPV6]) == FAMILY_IPV4
    assert allocation_for("fe80::1", [FAMILY_IPV4, FAMILY_IPV6]) == FAMILY_IPV6
    assert allocation_for("fe80::1", [FAMILY_IPV4]) == FAMILY_IPV4
    assert allocation_for("10.0.0.1", [FAMILY_IPV6]) == FAMILY_IPV6
    assert allocation_for("10.0.0.1", []) is None


# -- answers ------------------------------------------------------------------------------


def test_turnpeers_success_needs_valid_integrity() -> None:
    key = CHALLENGED.key()
    assert read_answer(_answer(MessageClass.SUCCESS, key=key), CHALLENGED) == TurnAnswer(
        kind=TurnAnswerKind.SUCCESS
    )
    forged = read_answer(_answer(MessageClass.SUCCESS, key=b"x" * 16), CHALLENGED)
    assert forged.kind is TurnAnswerKind.FORGED
    assert read_answer(_answer(MessageClass.SUCCESS), CHALLENGED).kind is TurnAnswerKind.FORGED


def test_turnpeers_401_then_438_then_final_401() -> None:
    first = read_answer(_error(401, "audit.test", "n1"), BARE)
    assert first == TurnAnswer(kind=TurnAnswerKind.ERROR, code=401, realm="audit.test", nonce="n1")
    assert retry_credentials(first, BARE) == CHALLENGED
    stale = read_answer(_error(438, "audit.test", "n2"), CHALLENGED)
    retried = retry_credentials(stale, CHALLENGED)
    assert retried is not None and (retried.realm, retried.nonce) == ("audit.test", "n2")
    # A 401 to a request that had credentials: they are wrong, no retry.
    assert (
        retry_credentials(read_answer(_error(401, "audit.test", "n3"), CHALLENGED), CHALLENGED)
        is None
    )
    # A 438 before any challenge, or an error without a nonce, is final too.
    assert retry_credentials(read_answer(_error(438, "audit.test", "n4"), BARE), BARE) is None
    assert retry_credentials(read_answer(_error(403), CHALLENGED), CHALLENGED) is None


def test_turnpeers_password_not_in_repr() -> None:
    assert "secret" not in repr(CHALLENGED)


def test_turnpeers_permission_verdicts() -> None:
    ok = TurnAnswer(kind=TurnAnswerKind.SUCCESS)
    assert permission_verdict("10.0.0.1", ok) == PeerAnswer(
        peer="10.0.0.1", verdict=PeerVerdict.GRANTED
    )
    refused = TurnAnswer(kind=TurnAnswerKind.ERROR, code=403)
    assert permission_verdict("::1", refused).verdict is PeerVerdict.REFUSED
    mismatch = TurnAnswer(kind=TurnAnswerKind.ERROR, code=443)
    assert permission_verdict("::1", mismatch, note="no IPv6 allocation: 440; ") == PeerAnswer(
        peer="::1",
        verdict=PeerVerdict.UNTESTED,
        detail="no IPv6 allocation: 440; 443 Peer Address Family Mismatch",
    )
    assert permission_verdict("::1", None) == PeerAnswer(
        peer="::1", verdict=PeerVerdict.UNEXPECTED, detail="no answer"
    )
    forged = permission_verdict("::1", TurnAnswer(kind=TurnAnswerKind.FORGED))
    assert (forged.verdict, forged.detail) == (
        PeerVerdict.UNEXPECTED,
        "a success without valid MESSAGE-INTEGRITY",
    )
    # A family mismatch on the peer's own family, or another error, is unexpected.
    assert permission_verdict("::1", mismatch).verdict is PeerVerdict.UNEXPECTED
    bad = TurnAnswer(kind=TurnAnswerKind.ERROR, code=400)
    assert permission_verdict("10.0.0.1", bad) == PeerAnswer(
        peer="10.0.0.1", verdict=PeerVerdict.UNEXPECTED, detail="400 Bad Request"
    )


# -- the verdict --------------------------------------------------------------------------


def test_turnpeers_judge_fails_on_any_grant_with_coturn_fix() -> None:
    answers = [
        PeerAnswer(peer="127.0.0.1", verdict=PeerVerdict.GRANTED),
        PeerAnswer(peer="10.0.0.1", verdict=PeerVerdict.REFUSED),
        PeerAnswer(peer="::ffff:127.0.0.1", verdict=PeerVerdict.GRANTED),
        PeerAnswer(peer="fe80::1", verdict=PeerVerdict.UNEXPECTED, detail="no answer"),
    ]
    result = judge(TARGET, answers, allowed=None)
    assert (result.spec, result.outcome, result.target) == (SPEC, Outcome.FAILED, TARGET)
    assert result.observed == (
        "granted: 127.0.0.1, ::ffff:127.0.0.1; refused: 10.0.0.1;"
        " unexpected answer (no answer): fe80::1"
    )
    assert result.fix == (
        "refuse internal peers in the TURN server's relay policy (RFC 8656 §21); for coturn:"
        " denied-peer-ip=127.0.0.0-127.255.255.255,"
        " denied-peer-ip=::ffff:0.0.0.0-::ffff:255.255.255.255; remove allow-loopback-peers"
    )


def test_turnpeers_judge_passes_only_with_a_refusal() -> None:
    refused = [PeerAnswer(peer="10.0.0.1", verdict=PeerVerdict.REFUSED)]
    untested = [
        PeerAnswer(
            peer="::1", verdict=PeerVerdict.UNTESTED, detail="443 Peer Address Family Mismatch"
        )
    ]
    result = judge(TARGET, refused + untested, allowed=[])
    assert (result.outcome, result.fix) == (Outcome.PASSED, "")
    assert result.observed == (
        "refused: 10.0.0.1; not testable (443 Peer Address Family Mismatch): ::1"
    )
    nothing = judge(TARGET, untested, allowed=[])
    assert (nothing.outcome, nothing.observed) == (
        Outcome.ERROR,
        "not testable (443 Peer Address Family Mismatch): ::1",
    )
    assert judge(TARGET, [], allowed=None).observed == "no peer asked"


def test_turnpeers_judge_unexpected_answers_are_an_error() -> None:
    # A hostile server: 403 for loopback, a forged success or a 400/508 for the others.
    answers = [
        permission_verdict("127.0.0.1", TurnAnswer(kind=TurnAnswerKind.ERROR, code=403)),
        permission_verdict("10.0.0.1", TurnAnswer(kind=TurnAnswerKind.FORGED)),
        permission_verdict("172.16.0.1", TurnAnswer(kind=TurnAnswerKind.ERROR, code=400)),
        permission_verdict("192.168.0.1", TurnAnswer(kind=TurnAnswerKind.ERROR, code=508)),
    ]
    result = judge(TARGET, answers, allowed=None)
    assert (result.outcome, result.observed, result.fix) == (
        Outcome.ERROR,
        "refused: 127.0.0.1; unexpected answer (a success without valid MESSAGE-INTEGRITY):"
        " 10.0.0.1; unexpected answer (400 Bad Request): 172.16.0.1;"
        " unexpected answer (508 Insufficient Capacity): 192.168.0.1",
        "",
    )


def test_turnpeers_own_fix_keeps_only_public_entries() -> None:
    allowed = [
        "10.0.0.0/8",
        "192.0.3.0/24",
        "127.0.0.1/32",
        "0.0.0.0/0",
        "2001:4860::/32",
        "::ffff:10.0.0.0/104",
        "fd00::/8",
    ]
    assert own_fix(allowed) == (
        """voipsec config set turn.allowed_peers '["192.0.3.0/24", "2001:4860::/32"]'"""
    )
    assert own_fix(["192.0.3.0/24"]) == (
        "restart voipsec serve: voipsec.toml's turn.allowed_peers opens no internal range"
    )


def test_turnpeers_judge_own_installation_gives_config_line() -> None:
    answers = [PeerAnswer(peer="10.0.0.1", verdict=PeerVerdict.GRANTED)]
    result = judge(TARGET, answers, allowed=["10.0.0.0/8"])
    assert result.fix == "voipsec config set turn.allowed_peers '[]'"


# -- the shell: credentials and limits ----------------------------------------------------


def test_turnprobe_without_credentials_is_skipped() -> None:
    [result] = turnprobe.turn_results(TurnTarget("127.0.0.1", 9), ProbeOptions(turn_user="probe"))
    assert (result.outcome, result.observed) == (
        Outcome.SKIPPED,
        "no TURN credentials: give --turn-user and --turn-password",
    )


def test_turnprobe_own_installation_without_secret_is_an_error(tmp_path: Path) -> None:
    options = ProbeOptions(own=Config(), data_dir=tmp_path)
    [result] = turnprobe.turn_results(TurnTarget("127.0.0.1", 9), options)
    assert (result.outcome, result.observed) == (
        Outcome.ERROR,
        f"cannot read {tmp_path / 'turn-secret'} (voipsec serve creates it)",
    )


@contextlib.contextmanager
def _responder() -> Iterator[tuple[int, list[Message]]]:
    """UDP on 127.0.0.1: challenges (401), grants an IPv4 Allocate, and is silent to
    everything else; yields (port, every request received)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.05)
    seen: list[Message] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                data, peer = sock.recvfrom(2048)
            except TimeoutError:
                continue
            request = stun.parse_message(data)
            seen.append(request)
            reply = None
            if request.method == Method.ALLOCATE and not request.has(Attr.MESSAGE_INTEGRITY):
                reply = Message(
                    method=Method.ALLOCATE,
                    cls=MessageClass.ERROR,
                    transaction_id=request.transaction_id,
                    attributes=(
                        (Attr.ERROR_CODE, stun.encode_error_code(401)),
                        (Attr.REALM, b"audit.test"),
                        (Attr.NONCE, b"n1"),
                    ),
                )
                sock.sendto(stun.encode(reply), peer)
            elif request.method == Method.ALLOCATE and request.requested_family() is None:
                reply = Message(
                    method=Method.ALLOCATE,
                    cls=MessageClass.SUCCESS,
                    transaction_id=request.transaction_id,
                )
                sock.sendto(stun.encode(reply, key=CHALLENGED.key()), peer)
            elif request.method == Method.ALLOCATE:
                reply = Message(
                    method=Method.ALLOCATE,
                    cls=MessageClass.ERROR,
                    transaction_id=request.transaction_id,
                    attributes=((Attr.ERROR_CODE, stun.encode_error_code(440)),),
                )
                sock.sendto(stun.encode(reply, key=CHALLENGED.key()), peer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield sock.getsockname()[1], seen
    finally:
        stop.set()
        thread.join(timeout=5)
        sock.close()


def test_turnprobe_silent_server_ends_after_max_silent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(turnprobe, "REQUEST_RTO", 0.02)
    options = ProbeOptions(turn_user="probe", turn_password="secret", timeout=0.3)
    with _responder() as (port, seen):
        [result] = turnprobe.turn_results(TurnTarget("127.0.0.1", port), options)
    assert (result.outcome, result.observed) == (
        Outcome.ERROR,
        f"no answer to {turnprobe.MAX_SILENT} requests in a row",
    )
    permissions = [m for m in seen if m.method == Method.CREATE_PERMISSION]
    # MAX_SILENT transactions, each sent REQUEST_SENDS times (the same transaction ID).
    assert len({m.transaction_id for m in permissions}) == turnprobe.MAX_SILENT
    assert len(permissions) == turnprobe.MAX_SILENT * turnprobe.REQUEST_SENDS
    # The IPv4 allocation was freed all the same: a Refresh with lifetime 0.
    refreshes = [m for m in seen if m.method == Method.REFRESH]
    assert refreshes and refreshes[0].uint32(Attr.LIFETIME) == 0


def test_turnprobe_silent_target_is_an_error() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as quiet:
        quiet.bind(("127.0.0.1", 0))
        port = quiet.getsockname()[1]
        options = ProbeOptions(turn_user="probe", turn_password="secret", timeout=0.2)
        [result] = turnprobe.turn_results(TurnTarget("127.0.0.1", port), options)
    assert (result.outcome, result.observed) == (Outcome.ERROR, "IPv4 Allocate: no answer")


def test_turnprobe_closed_port_is_an_error() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as gone:
        gone.bind(("127.0.0.1", 0))
        port = gone.getsockname()[1]
    options = ProbeOptions(turn_user="probe", turn_password="secret", timeout=0.5)
    [result] = turnprobe.turn_results(TurnTarget("127.0.0.1", port), options)
    assert (result.outcome, result.observed) == (
        Outcome.ERROR,
        "port unreachable: no TURN server there",
    )


def test_turnprobe_secret_not_a_small_regular_file_is_an_error(tmp_path: Path) -> None:
    options = ProbeOptions(own=Config(), data_dir=tmp_path)
    secret = tmp_path / "turn-secret"
    secret.symlink_to("/dev/zero")
    [result] = turnprobe.turn_results(TurnTarget("127.0.0.1", 9), options)
    assert (result.outcome, result.observed) == (
        Outcome.ERROR,
        f"cannot read {secret}: Too many levels of symbolic links",
    )
    secret.unlink()
    secret.write_bytes(b"a" * (turnprobe.MAX_SECRET_BYTES + 1))
    [result] = turnprobe.turn_results(TurnTarget("127.0.0.1", 9), options)
    assert (result.outcome, result.observed) == (
        Outcome.ERROR,
        f"cannot read {secret}: {secret}: larger than {turnprobe.MAX_SECRET_BYTES} bytes",
    )


def test_turnpeers_probed_peers_include_every_embedded_loopback_form() -> None:
    embedded = [
        "::ffff:127.0.0.1",
        "::ffff:0:7f00:1",
        "::7f00:1",
        "64:ff9b::7f00:1",
        "2002:7f00:1::",
    ]
    assert [p.address for p in PROBED_PEERS if p.address in embedded] == embedded
    for address in embedded:
        assert str(peerfilter.normalise(ip_address(address))) == "127.0.0.1"
        assert not peerfilter.PeerFilter().allows(address)
    # Room for them all within MAX_REQUESTS: two challenged Allocates and every peer.
    assert 4 + len(PROBED_PEERS) <= turnprobe.MAX_REQUESTS
    assert coturn_fix(["64:ff9b::7f00:1", "2002:7f00:1::"]) == (
        "refuse internal peers in the TURN server's relay policy (RFC 8656 §21); for coturn:"
        " denied-peer-ip=64:ff9b::-64:ff9b::ffff:ffff,"
        " denied-peer-ip=2002::-2002:ffff:ffff:ffff:ffff:ffff:ffff:ffff;"
        " remove allow-loopback-peers"
    )


def test_turnprobe_endless_stale_nonces_stop_after_max_challenges() -> None:
    """A server that answers every Allocate with 438 and a new NONCE: the probe gives up
    after 1 + MAX_CHALLENGES requests for it, an error."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.05)
    seen: list[Message] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                data, peer = sock.recvfrom(2048)
            except TimeoutError:
                continue
            request = stun.parse_message(data)
            seen.append(request)
            code = 438 if request.has(Attr.MESSAGE_INTEGRITY) else 401
            reply = Message(
                method=request.method,
                cls=MessageClass.ERROR,
                transaction_id=request.transaction_id,
                attributes=(
                    (Attr.ERROR_CODE, stun.encode_error_code(code)),
                    (Attr.REALM, b"audit.test"),
                    (Attr.NONCE, f"n{len(seen)}".encode()),
                ),
            )
            sock.sendto(stun.encode(reply), peer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        options = ProbeOptions(turn_user="probe", turn_password="secret", timeout=1.0)
        [result] = turnprobe.turn_results(TurnTarget("127.0.0.1", sock.getsockname()[1]), options)
    finally:
        stop.set()
        thread.join(timeout=5)
        sock.close()
    assert (result.outcome, result.observed) == (Outcome.ERROR, "IPv4 Allocate: 438 Stale Nonce")
    assert len(seen) == 1 + turnprobe.MAX_CHALLENGES

"""The TURN probe (issue 19): which internal peers does a TURN server grant permissions for.

The shell of :mod:`.turnpeers`, which decides everything: this module resolves the
target, sends the requests over UDP with retransmissions (RFC 8489 §6.2.1), reads the
answers and frees the allocations (Refresh, lifetime 0) whatever happened. One socket
per allocation: an IPv4 one and, when the server has them, an IPv6 one (a second
Allocate on the same 5-tuple would be a 437). It sends nothing but Allocate,
CreatePermission and Refresh requests to the server itself: never data to a peer.

Credentials: for the own installation (``ProbeOptions.own``), a short-lived TURN REST
pair made from ``DIR/turn-secret`` as ``voipsec turn credentials`` makes it; for another
server, ``--turn-user``/``--turn-password``. Without either the check is skipped.
Neither is ever printed.

Bounded: at most :data:`MAX_REQUESTS` requests per target (plus the Refreshes that free
what was allocated), each sent at most :data:`REQUEST_SENDS` times within the probe
timeout, and :data:`MAX_SILENT` unanswered requests in a row end the probe.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Sequence
from functools import partial

from ..nat.credentials import rest_credentials
from ..nat.keystore import SECRET_NAME
from ..nat.stun import (
    FAMILY_IPV4,
    FAMILY_IPV6,
    MAX_MESSAGE_SIZE,
    MessageClass,
    Method,
    StunParseError,
    is_stun,
    parse_message,
)
from .model import CheckResult, CheckSpec, errored, skipped, with_data_dir
from .options import ProbeOptions, read_bounded
from .targets import TurnTarget
from .turnpeers import (
    FAMILY_NAMES,
    PROBED_PEERS,
    SPEC,
    LongTerm,
    PeerAnswer,
    TurnAnswer,
    TurnAnswerKind,
    allocate_attributes,
    allocation_for,
    build_request,
    judge,
    peer_family,
    permission_attributes,
    permission_verdict,
    read_answer,
    refresh_attributes,
    retry_credentials,
)

__all__ = [
    "CREDENTIAL_TTL",
    "MAX_CHALLENGES",
    "MAX_REQUESTS",
    "MAX_SECRET_BYTES",
    "MAX_SILENT",
    "PROBE_USER",
    "REQUEST_RTO",
    "REQUEST_SENDS",
    "SPECS",
    "turn_results",
]

SPECS: tuple[CheckSpec, ...] = (SPEC,)

#: The user name in the own installation's REST credentials (shown in its TURN log).
PROBE_USER = "voipsec-audit"
#: Bytes read of DIR/turn-secret: voipsec writes 32 random bytes, hex; more is not its.
MAX_SECRET_BYTES = 4096
#: Seconds those credentials stay valid: the probe takes a few seconds at most.
CREDENTIAL_TTL = 300
#: Requests per target: two Allocates answered after their 401 (4) and sixteen
#: CreatePermissions make 20; 40 leaves room for stale-nonce (438) retries. The
#: Refreshes that free the allocations are on top.
MAX_REQUESTS = 40
#: The first retransmission timeout, doubled after each send (RFC 8489 §6.2.1: 500 ms).
REQUEST_RTO = 0.5
#: Sends of one request (Rc). RFC 8489 §6.2.1 defaults to 7 over 39.5 s; a probe of a
#: server the admin named gives up sooner, within ProbeOptions.timeout.
REQUEST_SENDS = 3
#: Answers to a 401 or 438 challenge per request (RFC 8489 §9.2.5: the first request
#: learns REALM and NONCE, a later one may meet a stale nonce once).
MAX_CHALLENGES = 2
#: Unanswered requests in a row after which the server is taken as gone.
MAX_SILENT = 2


class _Stopped(Exception):
    """The probe cannot go on; the message is the result's one line."""


class _Budget:
    """Counts requests against MAX_REQUESTS and unanswered ones against MAX_SILENT."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.sent = 0
        self.silent = 0

    def spend(self) -> None:
        if self.sent >= self.limit:
            raise _Stopped(f"stopped after {self.limit} requests (MAX_REQUESTS)")
        self.sent += 1


class _TurnSocket:
    """One UDP socket to the server (one 5-tuple, at most one allocation)."""

    def __init__(
        self, address: tuple[int, tuple[str, int]], credentials: LongTerm, timeout: float
    ) -> None:
        family, sockaddr = address
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.sock.connect(sockaddr)
        self.credentials = credentials
        self.timeout = timeout
        self.allocated = False

    def close(self) -> None:
        self.sock.close()

    def _exchange(self, transaction_id: bytes, data: bytes) -> TurnAnswer | None:
        """Send with retransmissions until the answer with this transaction ID."""
        start = time.monotonic()
        deadline = start + self.timeout
        rto = REQUEST_RTO
        next_send = start
        sends = 0
        while True:
            now = time.monotonic()
            if now >= deadline:
                return None
            if sends < REQUEST_SENDS and now >= next_send:
                self.sock.send(data)
                sends += 1
                next_send = now + rto
                rto *= 2
            wait_until = min(deadline, next_send) if sends < REQUEST_SENDS else deadline
            self.sock.settimeout(max(wait_until - time.monotonic(), 0.001))
            try:
                reply = self.sock.recv(MAX_MESSAGE_SIZE)
            except TimeoutError:
                continue
            except ConnectionRefusedError:
                raise _Stopped("port unreachable: no TURN server there") from None
            if not is_stun(reply):
                continue
            try:
                message = parse_message(reply)
                if message.transaction_id != transaction_id or message.cls not in (
                    MessageClass.SUCCESS,
                    MessageClass.ERROR,
                ):
                    continue
                return read_answer(message, self.credentials)
            except StunParseError:
                continue

    def transact(
        self,
        budget: _Budget,
        method: int,
        attributes: Callable[[bytes], Sequence[tuple[int, bytes]]],
        *,
        release: bool = False,
    ) -> TurnAnswer | None:
        """One request, answered (with credentials) after a 401/438; None if silent."""
        answer: TurnAnswer | None = None
        for _ in range(1 + MAX_CHALLENGES):
            if not release:
                budget.spend()
            transaction_id = os.urandom(12)
            data = build_request(
                method, transaction_id, attributes(transaction_id), self.credentials
            )
            answer = self._exchange(transaction_id, data)
            if answer is None:
                budget.silent += 1
                if budget.silent >= MAX_SILENT and not release:
                    raise _Stopped(f"no answer to {budget.silent} requests in a row")
                return None
            budget.silent = 0
            retry = retry_credentials(answer, self.credentials)
            if retry is None:
                return answer
            self.credentials = retry
        return answer


def _fixed(
    attributes: Sequence[tuple[int, bytes]],
) -> Callable[[bytes], Sequence[tuple[int, bytes]]]:
    """Attributes that do not depend on the transaction ID."""
    return lambda _transaction_id: attributes


def _credentials(options: ProbeOptions) -> LongTerm | str:
    """The credentials to probe with, or why there are none (the skip reason)."""
    if options.own is not None and options.data_dir is not None:
        path = options.data_dir / SECRET_NAME
        try:
            secret = read_bounded(path, MAX_SECRET_BYTES).strip()
        except FileNotFoundError:
            secret = b""
        except OSError as err:
            raise _Stopped(f"cannot read {path}: {err.strerror or err}") from None
        if not secret:
            raise _Stopped(f"cannot read {path} (voipsec serve creates it)")
        username, password = rest_credentials(secret, PROBE_USER, CREDENTIAL_TTL, time.time())
        return LongTerm(username=username, password=password)
    if options.turn_user and options.turn_password:
        return LongTerm(username=options.turn_user, password=options.turn_password)
    return "no TURN credentials: give --turn-user and --turn-password"


def _resolve(target: TurnTarget) -> tuple[int, tuple[str, int]]:
    try:
        infos = socket.getaddrinfo(target.host, target.port, type=socket.SOCK_DGRAM)
    except OSError:
        raise _Stopped(f"cannot resolve {target.host}") from None
    family, _, _, _, sockaddr = infos[0]
    return int(family), (str(sockaddr[0]), int(sockaddr[1]))


def _allocate(
    address: tuple[int, tuple[str, int]],
    credentials: LongTerm,
    options: ProbeOptions,
    budget: _Budget,
    channels: list[_TurnSocket],
) -> tuple[dict[int, _TurnSocket], dict[int, str]]:
    """An allocation per family the server grants; why not, for the others."""
    allocated: dict[int, _TurnSocket] = {}
    refused: dict[int, str] = {}
    for family in (FAMILY_IPV4, FAMILY_IPV6):
        name = FAMILY_NAMES[family]
        channel = _TurnSocket(address, credentials, options.timeout)
        channels.append(channel)
        answer = channel.transact(budget, Method.ALLOCATE, _fixed(allocate_attributes(family)))
        if answer is not None and answer.kind is TurnAnswerKind.SUCCESS:
            channel.allocated = True
            allocated[family] = channel
            continue
        why = "no answer" if answer is None else answer.describe()
        if answer is not None and answer.code == 401:
            why += " (wrong TURN credentials?)"
        if family == FAMILY_IPV4 and (answer is None or answer.code != 440):
            raise _Stopped(f"{name} Allocate: {why}")
        refused[family] = f"no {name} allocation: {why}"
    if not allocated:
        raise _Stopped("; ".join(refused.values()))
    return allocated, refused


def _ask_peers(
    allocated: dict[int, _TurnSocket], refused: dict[int, str], budget: _Budget
) -> list[PeerAnswer]:
    answers: list[PeerAnswer] = []
    for peer in PROBED_PEERS:
        family = allocation_for(peer.address, list(allocated))
        if family is None:  # pragma: no cover - _allocate made at least one
            break
        note = ""
        own = peer_family(peer.address)
        if family != own:
            note = f"{refused[own]}; on the {FAMILY_NAMES[family]} allocation: "
        answer = allocated[family].transact(
            budget,
            Method.CREATE_PERMISSION,
            partial(permission_attributes, peer.address),
        )
        answers.append(permission_verdict(peer.address, answer, note=note))
    return answers


def _release(channels: list[_TurnSocket], budget: _Budget) -> None:
    """Refresh with lifetime 0 on every allocation (RFC 8656 §7.3), then close."""
    for channel in channels:
        try:
            if channel.allocated:
                channel.transact(
                    budget, Method.REFRESH, lambda _: refresh_attributes(), release=True
                )
        except (_Stopped, OSError):
            pass  # the allocation expires by itself at the end of its lifetime
        finally:
            channel.close()


def turn_results(
    target: TurnTarget, options: ProbeOptions, *, max_requests: int = MAX_REQUESTS
) -> list[CheckResult]:
    """The TURN peer-filter check's result at ``target`` (module docstring)."""
    name = str(target)
    budget = _Budget(max_requests)
    channels: list[_TurnSocket] = []
    try:
        credentials = _credentials(options)
        if isinstance(credentials, str):
            return [skipped(SPEC, name, credentials)]
        address = _resolve(target)
        allocated, refused = _allocate(address, credentials, options, budget, channels)
        answers = _ask_peers(allocated, refused, budget)
    except _Stopped as stop:
        return [errored(SPEC, name, str(stop))]
    except OSError as err:
        return [errored(SPEC, name, f"socket error: {err.strerror or err}")]
    finally:
        _release(channels, budget)
    if options.own is None:
        return [judge(name, answers, allowed=None)]
    result = judge(name, answers, allowed=list(options.own.turn.allowed_peers))
    if options.data_dir is None:
        return [result]
    return with_data_dir([result], str(options.data_dir))

"""Transaction matching and bookkeeping (RFC 3261 §17.1.3, §17.2.3), sans-IO.

The layer keeps the live transactions, matches incoming messages to them, absorbs
retransmissions, and turns the machines' actions into keyed actions for the shell.
Timers due at or before ``now`` (the zero-length timers of reliable transports) are
fired at once instead of being handed to the shell.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from .message import Request, Response, is_rfc3261_branch
from .transaction import (
    NO_ACK,
    T1,
    Action,
    Kind,
    PassUp,
    StartTimer,
    State,
    Terminated,
    Transaction,
    response_event,
    tu_event,
)
from .uac import ack_for_failure

#: Live server transactions at once. At the 5,000 requests/s we aim for and Timer J's
#: 32 s on UDP that is 160k; a bigger number means a flood, answered 503 by the caller.
MAX_SERVER_TRANSACTIONS = 200_000

#: Seconds a non-INVITE server transaction may wait for its TU's final response. The
#: client's Timer F gives up after 64*T1 (RFC 3261 §17.1.2.2), so an answer after that
#: reaches nobody; a request an error path never answered is forgotten then.
MAX_NON_INVITE_TU_WAIT = 64 * T1

#: Seconds an INVITE server transaction may wait for its TU's final response. The call
#: layer answers within [calls] ring_timeout (at most 600 s) plus a trunk connection
#: (10 s) and the B-leg's Timer B (32 s); past that nothing will answer it. RFC 3261
#: §16.6 gives proxies Timer C (> 3 min) for the same purpose.
MAX_INVITE_TU_WAIT = 660.0

#: The phases in which a server transaction waits for its TU (§17.2.1, §17.2.2).
_WAITING_FOR_TU = frozenset({State.TRYING, State.PROCEEDING})

TxKey = tuple[str, ...]
#: What an ACK for a 2xx shares with the 2xx (RFC 3261 §13.2.2.4, §17.1.1.3): Call-ID,
#: CSeq number and To tag. It has a branch of its own, so no server key matches it.
AckId = tuple[str, int, str]


def _ack_id(message: Request | Response) -> AckId:
    return (message.call_id, message.cseq.seq, message.to.tag or "")


@dataclass(frozen=True, slots=True, kw_only=True)
class NoAck:
    """Passed up for a server transaction whose 2xx was never ACKed (§13.3.1.4): the
    TU finds the dialog from ``response`` (Call-ID and tags) and ends the session."""

    response: Response


@dataclass(frozen=True, slots=True, kw_only=True)
class KeyedAction:
    """An action of one transaction, so the shell knows whose timer or socket it is."""

    key: TxKey
    action: Action


@dataclass(frozen=True, slots=True, kw_only=True)
class LayerStatistics:
    server_transactions: int
    client_transactions: int
    retransmissions_absorbed: int
    overloaded: int
    expired: int
    #: ACKs that stopped a 2xx's retransmissions, and 2xx never ACKed (§13.3.1.4).
    acks_matched: int = 0
    unacknowledged_2xx: int = 0


def server_key(request: Request, *, method: str | None = None) -> TxKey:
    """§17.2.3: branch + sent-by + method (ACK matches its INVITE).

    ``method="INVITE"`` gives, for a CANCEL, the key of the INVITE it cancels (§9.2).
    """
    via = request.top_via
    if method is None:
        method = "INVITE" if request.method == "ACK" else request.method
    branch = via.branch
    if branch is not None and is_rfc3261_branch(branch):
        return ("s", branch, via.host.lower(), str(via.port or ""), method)
    # RFC 2543 fallback: Request-URI, To tag, From tag, Call-ID, CSeq and top Via.
    to_tag = request.to.tag or "" if request.method != "ACK" else ""
    return (
        "s2543",
        request.raw_uri,
        to_tag,
        request.from_.tag or "",
        request.call_id,
        str(request.cseq.seq),
        method,
        request.headers.values("via")[0],
    )


def client_key(branch: str, method: str) -> TxKey:
    """§17.1.3: the branch of the top Via and the CSeq method."""
    return ("c", branch, "INVITE" if method == "ACK" else method)


class TransactionLayer:
    """All live transactions of one SIP element."""

    def __init__(self, *, max_server_transactions: int = MAX_SERVER_TRANSACTIONS) -> None:
        self._server: dict[TxKey, Transaction] = {}
        self._client: dict[TxKey, Transaction] = {}
        #: The INVITE of each INVITE client transaction: its non-2xx ACK is built from it.
        self._invites: dict[TxKey, Request] = {}
        self._max_server = max_server_transactions
        self._absorbed = 0
        self._overloaded = 0
        self._expired = 0
        #: Each server transaction's deadline for a TU answer, and the same deadlines
        #: in the order they fall due (one queue per wait, so each stays sorted).
        self._tu_deadline: dict[TxKey, float] = {}
        self._due: dict[Kind, deque[tuple[float, TxKey]]] = {
            Kind.INVITE_SERVER: deque(),
            Kind.NON_INVITE_SERVER: deque(),
        }
        #: INVITE server transactions resending a 2xx over UDP until its ACK
        #: (§13.3.1.4): the ACK's id leads to the transaction, which keeps the 2xx.
        self._awaiting_ack: dict[AckId, TxKey] = {}
        self._answers: dict[TxKey, Response] = {}
        self._acks_matched = 0
        self._unacknowledged = 0

    # -- server side --------------------------------------------------------------

    @property
    def full(self) -> bool:
        """True when a new server transaction would exceed the limit."""
        return len(self._server) >= self._max_server

    def receive_request(
        self, request: Request, now: float, *, reliable: bool
    ) -> tuple[TxKey | None, list[KeyedAction]]:
        """Match a request. Returns (key of a *new* transaction or None, actions).

        A retransmission returns (None, actions that resend the last response);
        an ACK for a non-2xx final goes into its INVITE transaction. A new request
        over the transaction limit returns ``(None, [])`` and counts as overloaded:
        the caller answers 503 statelessly.
        """
        key = server_key(request)
        tx = self._server.get(key)
        if tx is not None:
            event = "ack" if request.method == "ACK" else "request"
            if event == "request":
                self._absorbed += 1
            return None, self._run(self._server, key, tx, event, now, request)
        if request.method == "ACK":
            # An ACK for a 2xx is its own transaction-less request (§17.2.3): the TU's.
            # It stops the 2xx's retransmissions first (§13.3.1.4).
            return key, self._ack_for_2xx(request, now)
        if len(self._server) >= self._max_server:
            self._overloaded += 1
            return None, []
        kind = Kind.INVITE_SERVER if request.method == "INVITE" else Kind.NON_INVITE_SERVER
        self._server[key] = Transaction(kind, reliable=reliable)
        wait = MAX_INVITE_TU_WAIT if kind is Kind.INVITE_SERVER else MAX_NON_INVITE_TU_WAIT
        self._tu_deadline[key] = now + wait
        due = self._due[kind]
        due.append((now + wait, key))
        while self._tu_deadline.get(due[0][1]) != due[0][0]:
            # Answered long before its deadline (nearly every one): forget it now, not
            # after MAX_INVITE_TU_WAIT, so its key does not outlive its call by minutes.
            due.popleft()
        return key, []

    def send_response(self, key: TxKey, response: Response, now: float) -> list[KeyedAction]:
        """The TU answers a server transaction."""
        tx = self._server.get(key)
        if tx is None:
            return []
        if response.status >= 200:
            self._tu_deadline.pop(key, None)
        actions = self._run(self._server, key, tx, tu_event(response.status), now, response)
        if tx.state is State.ACCEPTED and not tx.reliable and key not in self._answers:
            ack_id = _ack_id(response)
            self._awaiting_ack[ack_id] = key
            self._answers[key] = response
        return actions

    def _ack_for_2xx(self, ack: Request, now: float) -> list[KeyedAction]:
        """Feed an ACK to the INVITE server transaction whose 2xx it acknowledges."""
        if not self._awaiting_ack:
            return []  # TLS/TCP only, or every 2xx ACKed: no header to parse
        key = self._awaiting_ack.pop(_ack_id(ack), None)
        if key is None:
            return []
        self._answers.pop(key, None)
        tx = self._server.get(key)
        if tx is None:
            return []
        self._acks_matched += 1
        return self._run(self._server, key, tx, "ack", now, ack)

    def discard(self, key: TxKey) -> None:
        """Forget a server transaction the TU will never answer (a dropped request)."""
        self._server.pop(key, None)
        self._forget_server(key)

    def expire(self, now: float) -> list[KeyedAction]:
        """Terminate server transactions whose TU never answered in time.

        Every path that creates a server transaction must answer or discard it; this
        is the backstop that keeps a forgotten one (a bug, an error path) from holding
        a slot of :data:`MAX_SERVER_TRANSACTIONS` forever. Call it periodically.
        """
        out: list[KeyedAction] = []
        for due in self._due.values():
            while due and due[0][0] <= now:
                deadline, key = due.popleft()
                if self._tu_deadline.get(key) != deadline:
                    continue  # answered, discarded, or a newer transaction with this key
                del self._tu_deadline[key]
                tx = self._server.get(key)
                if tx is None or tx.state not in _WAITING_FOR_TU:
                    continue
                del self._server[key]
                self._expired += 1
                out.append(KeyedAction(key=key, action=Terminated("no answer from the TU")))
        return out

    # -- client side --------------------------------------------------------------

    def send_request(
        self, request: Request, now: float, *, reliable: bool
    ) -> tuple[TxKey, list[KeyedAction]]:
        branch = request.top_via.branch or ""
        key = client_key(branch, request.method)
        kind = Kind.INVITE_CLIENT if request.method == "INVITE" else Kind.NON_INVITE_CLIENT
        tx = Transaction(kind, reliable=reliable)
        self._client[key] = tx
        if kind is Kind.INVITE_CLIENT:
            self._invites[key] = request
        actions = tx.start(now, request.to_bytes())
        return key, self._expand(self._client, key, tx, actions, now)

    def receive_response(self, response: Response, now: float) -> list[KeyedAction]:
        """Match a response to its client transaction; an unmatched one goes nowhere."""
        key = client_key(response.top_via.branch or "", response.cseq.method)
        tx = self._client.get(key)
        if tx is None:
            self._absorbed += 1
            return []
        event = response_event(response.status)
        payload: object = response
        invite = self._invites.get(key)
        if event == "final" and invite is not None:
            payload = (response, ack_for_failure(invite, response).to_bytes())
        actions = self._run(self._client, key, tx, event, now, payload)
        if tx.state is State.ACCEPTED:
            # RFC 6026 §7.2: after a 2xx no ACK is built from the INVITE here (the TU
            # ACKs 2xx), so it is not kept for Timer M's 32 s.
            self._invites.pop(key, None)
        return actions

    # -- timers and errors ----------------------------------------------------------

    def timer_fired(self, key: TxKey, name: str, now: float) -> list[KeyedAction]:
        table = self._server if key[0].startswith("s") else self._client
        tx = table.get(key)
        if tx is None:
            return []
        return self._run(table, key, tx, f"timer_{name}", now, None)

    def transport_error(self, key: TxKey, now: float) -> list[KeyedAction]:
        table = self._server if key[0].startswith("s") else self._client
        tx = table.get(key)
        if tx is None:
            return []
        return self._run(table, key, tx, "transport_error", now, None)

    def _run(
        self,
        table: dict[TxKey, Transaction],
        key: TxKey,
        tx: Transaction,
        event: str,
        now: float,
        payload: object,
    ) -> list[KeyedAction]:
        actions = tx.process(event, now, payload)
        return self._expand(table, key, tx, actions, now)

    def _expand(
        self,
        table: dict[TxKey, Transaction],
        key: TxKey,
        tx: Transaction,
        actions: list[Action],
        now: float,
    ) -> list[KeyedAction]:
        out: list[KeyedAction] = []
        for action in actions:
            if isinstance(action, StartTimer) and action.at <= now:
                out.extend(self._run(table, key, tx, f"timer_{action.name}", now, None))
                continue
            if isinstance(action, PassUp) and action.message == NO_ACK:
                self._unacknowledged += 1
                answer = self._answers.get(key)
                if answer is None:
                    continue
                action = PassUp(NoAck(response=answer))
            if isinstance(action, Terminated):
                table.pop(key, None)
                self._invites.pop(key, None)
                if table is self._server:
                    self._forget_server(key)
            out.append(KeyedAction(key=key, action=action))
        return out

    def _forget_server(self, key: TxKey) -> None:
        self._tu_deadline.pop(key, None)
        answer = self._answers.pop(key, None)
        if answer is not None:
            ack_id = _ack_id(answer)
            if self._awaiting_ack.get(ack_id) == key:
                del self._awaiting_ack[ack_id]

    def statistics(self) -> LayerStatistics:
        return LayerStatistics(
            server_transactions=len(self._server),
            client_transactions=len(self._client),
            retransmissions_absorbed=self._absorbed,
            overloaded=self._overloaded,
            expired=self._expired,
            acks_matched=self._acks_matched,
            unacknowledged_2xx=self._unacknowledged,
        )

    def __len__(self) -> int:
        """Live transactions, server and client (the ``sip_transactions`` gauge)."""
        return len(self._server) + len(self._client)

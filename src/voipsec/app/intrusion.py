"""The IDS shell: reports what the SIP service sees to the IDS and carries out its actions.

The rule engine (edge/ids.py) decides; this shell builds its observations (requests,
the answers we send, malformed input, credentials another service refused), applies
the bans it asks for through the guard, publishes its alerts, and tells the SIP
service how to treat the request at hand (an :class:`~voipsec.core.dispatch.IdsVerdict`
for core/dispatch.py). Trusted zones are never observed.

Failure mode: without rules (``[ids] enabled = false``) nothing is observed and every
request passes on to dispatch (fails open; the guard's rate limits still hold).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Protocol

from ..core.dispatch import IdsVerdict
from ..edge.guard import BanAdded, Guard, scope_of
from ..edge.ids import AlertAction, BanAction, Drop, IdsAction, IdsEngine, Observation, Reply, Rule
from ..edge.zones import Zone
from ..events import AlertRaised, BanLifted, CredentialsRejected, Event, EventBus
from ..netaddr import rate_key
from ..sip.message import Request, Response
from ..sip.uri import SipUri
from ..transport.connections import Flow


class BanRecorder(Protocol):
    """Stores and publishes a ban the guard added (app/bans.py)."""

    def record_ban(self, added: BanAdded) -> None: ...


class KnownUsers(Protocol):
    """Whether a user name exists (the IDS tells user enumeration from typos)."""

    def knows(self, user: str) -> bool: ...


class IntrusionShell:
    """Feeds the IDS engine and carries out its bans, drops, replies and alerts."""

    def __init__(
        self,
        *,
        engine: IdsEngine | None,
        enabled: bool,
        guard: Guard,
        bans: BanRecorder,
        users: KnownUsers,
        events: EventBus,
        clock: Callable[[], float],
    ) -> None:
        self.engine = engine
        self._enabled = enabled
        self.guard = guard
        self.bans = bans
        self.users = users
        self.events = events
        self.clock = clock

    @property
    def active(self) -> bool:
        """Whether the IDS observes anything at all."""
        return self.engine is not None

    def inspect(self, flow: Flow, request: Request, zone: Zone, now: float) -> IdsVerdict | None:
        """Report a request to the IDS (untrusted zones) and carry out its actions."""
        if self.engine is None or zone.trusted:
            return None
        headers = request.headers
        to_uri = request.to.uri
        observation = Observation(
            source=rate_key(flow.peer[0]),
            zone=zone.name,
            kind="request",
            method=request.method,
            user_agent=headers.get("user-agent"),
            from_tag=request.from_.tag,
            call_id=request.call_id,
            branch=request.top_via.branch,
            to_user=to_uri.user if isinstance(to_uri, SipUri) else None,
            auth_user=auth_user(headers.get("authorization")),
            headers={h.key: h.value for h in reversed(headers.fields)},
            compact=any(len(h.name) == 1 for h in headers.fields),
            transport=flow.transport,
        )
        return self._apply(self.engine.observe(observation, now), flow.transport, now)

    def observe_answer(
        self,
        flow: Flow,
        request: Request,
        response: Response,
        zone: Zone,
        now: float,
        *,
        auth_failed: bool,
    ) -> None:
        """The answer we sent: evidence of scanning, enumeration or password guessing."""
        if self.engine is None:
            return
        to_uri = request.to.uri
        user = to_uri.user if isinstance(to_uri, SipUri) else None
        observation = Observation(
            source=rate_key(flow.peer[0]),
            zone=zone.name,
            kind="response_sent",
            method=request.method,
            status=response.status,
            to_user=user,
            target_known=user is not None and self.users.knows(user),
            auth_failed=auth_failed,
            auth_user=auth_user(request.headers.get("authorization")),
            transport=flow.transport,
        )
        self._apply(self.engine.observe(observation, now), flow.transport, now)

    def observe_malformed(self, flow: Flow) -> None:
        """Unparsable input from ``flow``'s source."""
        zone = self.guard.zones.zone_for(flow.peer[0])
        if self.engine is None or zone.trusted:
            return
        now = self.clock()
        observation = Observation(
            source=rate_key(flow.peer[0]),
            zone=zone.name,
            kind="malformed",
            transport=flow.transport,
        )
        self._apply(self.engine.observe(observation, now), flow.transport, now)

    def observe_rejected_credentials(self, event: Event) -> None:
        """Credentials another service refused (TURN, RFC 8489 §9.2.4): for the IDS an
        answer 401 to the pseudo-method "TURN", so rules count password guessing on that
        channel too. Only a verified source counts: spoofed UDP must not ban a victim."""
        if not isinstance(event, CredentialsRejected) or not event.verified_source:
            return
        if event.service == "sip":
            return  # the IDS already saw the 403 the SIP service answered (observe_answer)
        zone = self.guard.zones.zone_for(event.source)
        if self.engine is None or zone.trusted:
            return
        now = self.clock()
        observation = Observation(
            source=rate_key(event.source),
            zone=zone.name,
            kind="response_sent",
            method=event.service.upper(),
            status=401,
            to_user=event.user,
            auth_user=event.user,
            auth_failed=True,
            transport=event.service,
        )
        # The source echoed a nonce issued to its address: evidence as good as a
        # connection's, so a ban it triggers covers every transport.
        self._apply(self.engine.observe(observation, now), event.service, now)

    def lift(self, event: Event) -> None:
        """A ban lifted by hand (:class:`BanLifted`): the IDS may ban that source again
        at once."""
        if isinstance(event, BanLifted) and self.engine is not None:
            self.engine.lift(event.source)

    def merged(self, rule: str, key: str, transport: str) -> None:
        """Other workers' matches of ``rule`` for ``key`` were merged: carry out what
        the IDS decides over every worker's count (app/shared/counters.py, worker 0).
        ``transport`` is "udp" unless every merged match came over TCP/TLS, so spoofed
        datagrams never widen a ban (guard.py)."""
        now = self.clock()
        # A source another worker banned already (its ban replicated here) is done with.
        if self.engine is None or self.guard.is_banned(key.partition("/")[0], now, transport):
            return
        self._apply(self.engine.check_merged(rule, key, now), transport, now)

    def reload_rules(self, rules: list[Rule]) -> None:
        """New rule set from the rule files; counters start again."""
        if self.engine is not None:
            # Keeps the counting windows, ban history (recidive) and statistics.
            self.engine.replace_rules(rules)
        elif self._enabled:
            self.engine = IdsEngine(rules)

    def _apply(self, actions: list[IdsAction], transport: str, now: float) -> IdsVerdict | None:
        """Alerts are published, bans applied; returns how to treat the request itself.

        A ban's scope is the transport of the observation that triggered it: UDP
        evidence bans UDP only (guard.py).
        """
        verdict: IdsVerdict | None = None
        for action in actions:
            if isinstance(action, BanAction):
                added = self.guard.ban(
                    action.source,
                    action.seconds,
                    f"ids: {action.rule}",
                    now,
                    scope=scope_of(transport),
                )
                if added is not None:
                    self.bans.record_ban(added)
                verdict = IdsVerdict(rule=action.rule, status=0)
            elif isinstance(action, Drop):
                verdict = IdsVerdict(rule=action.rule, status=0)
            elif isinstance(action, Reply) and verdict is None:
                verdict = IdsVerdict(rule=action.rule, status=action.status)
            elif isinstance(action, AlertAction):
                self._alert(action)
        return verdict

    def _alert(self, alert: AlertAction) -> None:
        self.events.publish(
            AlertRaised(
                what="IDS rule matched",
                who=alert.source,
                why=alert.detail,
                action="alerted",
                rule=alert.rule,
                time=self.clock(),
                source=alert.source,
            )
        )


_AUTH_USER = re.compile(r'username\s*=\s*"([^"]{0,128})"')


def auth_user(header: str | None) -> str | None:
    """The user name of an Authorization header, cheaply, for the IDS."""
    if header is None:
        return None
    match = _AUTH_USER.search(header)
    return match.group(1) if match else None

"""app/intrusion.py: the IDS shell's event feeds (TURN's refused credentials, lifted bans)."""

from __future__ import annotations

from voipsec.app.intrusion import IntrusionShell, auth_user
from voipsec.edge.guard import BanAdded, Guard
from voipsec.edge.ids import IdsEngine
from voipsec.edge.ids_loader import default_rules_path, load_rules
from voipsec.edge.zones import Zone, ZoneMap
from voipsec.events import BanLifted, CredentialsRejected, EventBus

from .fakes import FakeClock

#: turn-password-guessing-source fires on the 6th refused TURN credential in 60 s.
TURN_GUESSES = 6
SOURCE = "192.0.2.20"


class FakeBans:
    def __init__(self) -> None:
        self.recorded: list[BanAdded] = []

    def record_ban(self, added: BanAdded) -> None:
        self.recorded.append(added)


class NoUsers:
    def knows(self, user: str) -> bool:
        return False


def _shell() -> tuple[IntrusionShell, FakeBans, EventBus, FakeClock]:
    clock, bans, events = FakeClock(), FakeBans(), EventBus()
    shell = IntrusionShell(
        engine=IdsEngine(load_rules([default_rules_path()])),
        enabled=True,
        guard=Guard(ZoneMap([], Zone(name="internet", networks=()))),
        bans=bans,
        users=NoUsers(),
        events=events,
        clock=clock,
    )
    events.subscribe(shell.observe_rejected_credentials, CredentialsRejected)
    events.subscribe(shell.lift, BanLifted)
    return shell, bans, events, clock


def _rejected(
    clock: FakeClock, *, service: str = "turn", verified: bool = True
) -> CredentialsRejected:
    return CredentialsRejected(
        service=service,
        source=SOURCE,
        user="alice",
        reason="wrong key",
        verified_source=verified,
        time=clock.now,
    )


def test_app_intrusion_turn_password_guessing_bans_every_transport() -> None:
    _, bans, events, clock = _shell()
    for _ in range(TURN_GUESSES):
        events.publish(_rejected(clock))
    [added] = bans.recorded
    assert (added.ban.source, added.ban.reason, added.ban.scope.value) == (
        SOURCE,
        "ids: turn-password-guessing-source",
        "all",
    )


def test_app_intrusion_unverified_or_sip_rejections_are_not_counted() -> None:
    _, bans, events, clock = _shell()
    for _ in range(TURN_GUESSES):
        events.publish(_rejected(clock, verified=False))
        events.publish(_rejected(clock, service="sip"))
    assert bans.recorded == []


def test_app_intrusion_a_lifted_ban_lets_the_ids_ban_again_at_once() -> None:
    shell, bans, events, clock = _shell()
    for _ in range(TURN_GUESSES):
        events.publish(_rejected(clock))
    assert len(bans.recorded) == 1
    shell.guard.replace_bans([])  # `voipsec bans remove`, adopted by the ban keeper
    events.publish(BanLifted(source=SOURCE, time=clock.now))
    for _ in range(TURN_GUESSES):
        events.publish(_rejected(clock))
    assert len(bans.recorded) == 2


def test_app_intrusion_auth_user_reads_the_quoted_username() -> None:
    assert auth_user('Digest username="alice", realm="x"') == "alice"
    assert auth_user("Basic YWxpY2U6c2VjcmV0") is None
    assert auth_user(None) is None

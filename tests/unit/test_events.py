"""The internal event stream (voipsec.events)."""

from __future__ import annotations

import dataclasses
import logging

import pytest

from voipsec.events import (
    CallAnswered,
    CallEnded,
    CallStarted,
    Event,
    EventBus,
    EventBusStatistics,
)

STARTED = CallStarted(
    call_id="a84b4c76e66710",
    cdr_id=1,
    caller="alice",
    callee="+442071234567",
    user="alice",
    source="tls:192.0.2.1:40000",
    trunk="carrier",
    time=1_000.0,
)
ANSWERED = CallAnswered(call_id="a84b4c76e66710", cdr_id=1, time=1_004.0)
ENDED = CallEnded(
    call_id="a84b4c76e66710",
    cdr_id=1,
    time=1_064.0,
    disposition="answered",
    status=200,
    reason="OK",
    hangup_by="caller",
    duration=64.0,
    billable=60.0,
)


def test_events_are_frozen_slotted_keyword_only() -> None:
    for event in (STARTED, ANSWERED, ENDED):
        with pytest.raises(dataclasses.FrozenInstanceError):
            event.time = 0.0  # type: ignore[misc]
        assert not hasattr(event, "__dict__")
    with pytest.raises(TypeError):
        CallAnswered("a84b4c76e66710", 1, 1_004.0)  # type: ignore[call-arg]


def test_events_bus_delivers_in_order_to_every_subscriber() -> None:
    bus = EventBus()
    first: list[Event] = []
    second: list[Event] = []
    bus.subscribe(first.append)
    bus.subscribe(second.append)
    for event in (STARTED, ANSWERED, ENDED):
        bus.publish(event)
    assert first == [STARTED, ANSWERED, ENDED]
    assert second == [STARTED, ANSWERED, ENDED]
    assert bus.statistics() == EventBusStatistics(published=3, subscriber_errors=0)


def test_events_bus_without_subscribers_counts_published() -> None:
    bus = EventBus()
    bus.publish(STARTED)
    assert bus.statistics() == EventBusStatistics(published=1, subscriber_errors=0)


def test_events_bus_failing_subscriber_is_logged_and_isolated(
    caplog: pytest.LogCaptureFixture,
) -> None:
    bus = EventBus()
    before: list[Event] = []
    after: list[Event] = []

    def broken(event: Event) -> None:
        raise RuntimeError("disk full")

    bus.subscribe(before.append)
    bus.subscribe(broken)
    bus.subscribe(after.append)
    with caplog.at_level(logging.ERROR, logger="voipsec.events"):
        bus.publish(STARTED)
        bus.publish(ENDED)
    assert before == [STARTED, ENDED]
    assert after == [STARTED, ENDED]
    assert bus.statistics() == EventBusStatistics(published=2, subscriber_errors=2)
    records = [r for r in caplog.records if r.name == "voipsec.events"]
    assert len(records) == 2
    assert records[0].getMessage().endswith("failed on CallStarted")
    assert records[1].getMessage().endswith("failed on CallEnded")
    assert records[0].exc_info is not None
    assert isinstance(records[0].exc_info[1], RuntimeError)


def test_events_bus_subscription_during_publish_starts_with_next_event() -> None:
    bus = EventBus()
    late: list[Event] = []

    def subscribe_late(event: Event) -> None:
        if event is STARTED:
            bus.subscribe(late.append)

    bus.subscribe(subscribe_late)
    bus.publish(STARTED)
    bus.publish(ANSWERED)
    assert late == [ANSWERED]


def test_events_bus_typed_subscription_and_wanted() -> None:
    from voipsec.events import BanLifted, MessageSeen

    bus = EventBus()
    lifted: list[object] = []
    assert not bus.wanted(BanLifted)
    bus.subscribe(lifted.append, BanLifted)
    assert bus.wanted(BanLifted) and not bus.wanted(MessageSeen)
    bus.publish(BanLifted(source="192.0.2.1", time=1.0))
    bus.publish(
        MessageSeen(
            direction="in",
            transport="tls",
            local=("127.0.0.1", 5061),
            peer=("192.0.2.1", 4000),
            tls_identity=None,
            data=b"OPTIONS",
        )
    )
    assert lifted == [BanLifted(source="192.0.2.1", time=1.0)]
    assert bus.statistics() == EventBusStatistics(published=2, subscriber_errors=0)


def test_events_bus_refuses_a_type_that_is_no_event() -> None:
    bus = EventBus()
    with pytest.raises(TypeError) as info:
        bus.subscribe(print, int)
    assert str(info.value) == "int is not an event type"

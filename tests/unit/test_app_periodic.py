"""app/periodic.py: the one owner of the server's periodic jobs (fake clock, no sleeping)."""

from __future__ import annotations

import asyncio
import logging

import pytest

from voipsec.app.periodic import Periodic

from .fakes import FakeClock


def _periodic(clock: FakeClock, ran: list[str]) -> Periodic:
    periodic = Periodic(tick=0.2, clock=clock)
    periodic.every(1.0, "sweep", lambda: ran.append("sweep"))
    periodic.every(0.2, "flush", lambda: ran.append("flush"))
    return periodic


def test_app_periodic_first_tick_runs_every_job_in_the_order_added() -> None:
    clock, ran = FakeClock(), []
    _periodic(clock, ran).run_due()
    assert ran == ["sweep", "flush"]


def test_app_periodic_each_job_runs_once_per_its_interval() -> None:
    clock, ran = FakeClock(), []
    periodic = _periodic(clock, ran)
    for _ in range(11):  # ticks at 0.0, 0.2, ..., 2.0 s
        periodic.run_due()
        clock.now += 0.2
    assert ran.count("flush") == 11
    assert ran.count("sweep") == 3  # at 0, 1.0 and 2.0 s


def test_app_periodic_a_tick_that_wakes_a_little_early_still_runs_the_job() -> None:
    clock, ran = FakeClock(), []
    periodic = _periodic(clock, ran)
    periodic.run_due()
    clock.now += 0.19  # asyncio may wake a sleeper up to its clock resolution early
    periodic.run_due()
    assert ran == ["sweep", "flush", "flush"]


def test_app_periodic_a_failing_job_is_logged_and_the_others_still_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock, ran = FakeClock(), []
    periodic = Periodic(tick=0.2, clock=clock)

    def broken() -> None:
        raise RuntimeError("disk full")

    periodic.every(0.2, "broken", broken)
    periodic.every(0.2, "flush", lambda: ran.append("flush"))
    with caplog.at_level(logging.ERROR, logger="voipsec.sip"):
        periodic.run_due()
        clock.now += 0.2
        periodic.run_due()
    assert ran == ["flush", "flush"]
    assert [r.getMessage() for r in caplog.records] == [
        "periodic job broken failed; it runs again next time"
    ] * 2


async def test_app_periodic_start_and_stop_own_one_task() -> None:
    ran: list[str] = []
    periodic = Periodic(tick=0.001)
    periodic.every(0.001, "job", lambda: ran.append("job"))
    periodic.start()
    periodic.start()  # a second start does not start a second task
    tasks = [t for t in asyncio.all_tasks() if t.get_name() == "voipsec-periodic"]
    assert len(tasks) == 1
    deadline = asyncio.get_running_loop().time() + 5.0
    while not ran and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.001)
    await periodic.stop()
    assert ran and tasks[0].cancelled()
    count = len(ran)
    await asyncio.sleep(0.01)
    assert len(ran) == count  # nothing runs after stop
    await periodic.stop()  # stopping twice is harmless

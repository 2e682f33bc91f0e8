"""The scheduler loop, driven by a manual clock and a sleep that only moves that clock (no real waiting)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, timedelta

import pytest

from bot.calendar import ET, next_feed_poll
from bot.scheduler import Job, Scheduler, SystemClock

T0 = datetime(2026, 11, 24, 0, 10, tzinfo=UTC)


class ManualClock:
    def __init__(self, start: datetime) -> None:
        self.current = start

    def now(self) -> datetime:
        return self.current

    def advance(self, seconds: float) -> None:
        self.current += timedelta(seconds=seconds)


class FakeSleep:
    """Moves the clock by the requested time (or by a scripted jump, to simulate a suspend)."""

    def __init__(self, clock: ManualClock) -> None:
        self.clock = clock
        self.requests: list[float] = []
        self.jumps: list[float] = []  # consumed first: actual seconds that pass instead of the request

    async def __call__(self, seconds: float) -> None:
        self.requests.append(seconds)
        self.clock.advance(self.jumps.pop(0) if self.jumps else seconds)
        await asyncio.sleep(0)


def hourly(now: datetime) -> datetime:
    return now.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)


def recorder(
    log: list[datetime], stop: asyncio.Event, stop_after: int
) -> Callable[[datetime], Awaitable[None]]:
    async def run(now: datetime) -> None:
        log.append(now)
        if len(log) >= stop_after:
            stop.set()

    return run


async def run_loop(scheduler: Scheduler, jobs: list[Job], stop: asyncio.Event) -> None:
    # A guard against a hung loop: the fake sleep makes every test finish in milliseconds.
    await asyncio.wait_for(scheduler.run(jobs, stop), timeout=5)


async def test_runs_jobs_at_their_times() -> None:
    clock = ManualClock(T0)
    sleep = FakeSleep(clock)
    stop = asyncio.Event()
    runs: list[datetime] = []
    job = Job("hourly", hourly, recorder(runs, stop, 3))
    await run_loop(Scheduler(clock, sleep), [job], stop)
    assert runs == [T0.replace(hour=1, minute=0), T0.replace(hour=2, minute=0), T0.replace(hour=3, minute=0)]


async def test_long_waits_are_sliced_so_the_wall_clock_is_reread() -> None:
    clock = ManualClock(T0)
    sleep = FakeSleep(clock)
    stop = asyncio.Event()
    runs: list[datetime] = []
    job = Job("hourly", hourly, recorder(runs, stop, 1))
    await run_loop(Scheduler(clock, sleep, max_sleep=60), [job], stop)
    assert runs == [T0.replace(hour=1, minute=0)]
    assert max(sleep.requests) <= 60
    assert sum(sleep.requests) == pytest.approx(50 * 60)


async def test_catches_up_once_after_a_suspend() -> None:
    clock = ManualClock(T0)
    sleep = FakeSleep(clock)
    sleep.jumps = [3 * 24 * 3600]  # the first wait lasts three days: 72 hourly runs were missed
    stop = asyncio.Event()
    runs: list[datetime] = []
    job = Job("hourly", hourly, recorder(runs, stop, 2))
    await run_loop(Scheduler(clock, sleep), [job], stop)
    woke = T0 + timedelta(seconds=3 * 24 * 3600)
    assert runs == [woke, woke.replace(hour=1, minute=0)]


async def test_due_jobs_run_one_at_a_time_in_due_order() -> None:
    clock = ManualClock(T0)
    sleep = FakeSleep(clock)
    stop = asyncio.Event()
    order: list[str] = []
    in_flight = 0
    most = 0

    def make(name: str, offset: timedelta) -> Job:
        async def run(now: datetime) -> None:
            nonlocal in_flight, most
            in_flight += 1
            most = max(most, in_flight)
            await asyncio.sleep(0)  # let any concurrent job start, if the loop allowed one
            clock.advance(10)
            order.append(name)
            in_flight -= 1
            if len(order) == 6:
                stop.set()

        return Job(name, lambda now: hourly(now) + offset, run)

    jobs = [
        make("late", timedelta(minutes=2)),
        make("early", timedelta(0)),
        make("mid", timedelta(minutes=1)),
    ]
    sleep.jumps = [3600]  # wake at 01:10 with all three overdue at once
    await run_loop(Scheduler(clock, sleep), jobs, stop)
    assert most == 1
    assert order == ["early", "mid", "late", "early", "mid", "late"]


async def test_a_failing_job_is_logged_rescheduled_and_does_not_stop_others(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = ManualClock(T0)
    sleep = FakeSleep(clock)
    stop = asyncio.Event()
    failures: list[datetime] = []
    good: list[datetime] = []

    async def boom(now: datetime) -> None:
        failures.append(now)
        raise RuntimeError("feed exploded")

    jobs = [
        Job("boom", hourly, boom),
        Job("good", lambda now: hourly(now) + timedelta(minutes=1), recorder(good, stop, 3)),
    ]
    with caplog.at_level(logging.ERROR, logger="bot.scheduler"):
        await run_loop(Scheduler(clock, sleep), jobs, stop)
    assert len(good) == 3
    assert failures == [T0.replace(hour=h, minute=0) for h in (1, 2, 3)]
    messages = [r for r in caplog.records if "boom" in r.getMessage()]
    assert len(messages) == 3
    assert messages[0].exc_info is not None and "feed exploded" in str(messages[0].exc_info[1])


async def test_stop_during_a_run_lets_it_finish_and_runs_nothing_else() -> None:
    clock = ManualClock(T0)
    sleep = FakeSleep(clock)
    stop = asyncio.Event()
    finished: list[str] = []

    async def first(now: datetime) -> None:
        stop.set()
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        finished.append("first")

    async def second(now: datetime) -> None:
        finished.append("second")

    at_once = lambda now: T0  # noqa: E731 - both due immediately on start
    await run_loop(
        Scheduler(clock, sleep), [Job("first", at_once, first), Job("second", at_once, second)], stop
    )
    assert finished == ["first"]


async def test_stop_wakes_a_sleeping_loop() -> None:
    clock = ManualClock(T0)
    never = asyncio.Event()

    async def sleep_forever(seconds: float) -> None:
        await never.wait()

    ran: list[datetime] = []

    async def run(now: datetime) -> None:
        ran.append(now)

    stop = asyncio.Event()
    task = asyncio.create_task(Scheduler(clock, sleep_forever).run([Job("j", hourly, run)], stop))
    for _ in range(5):
        await asyncio.sleep(0)
    assert not task.done()
    stop.set()
    await asyncio.wait_for(task, timeout=1)
    assert ran == []


async def test_stop_already_set_returns_without_running() -> None:
    clock = ManualClock(T0)
    stop = asyncio.Event()
    stop.set()
    ran: list[datetime] = []

    async def run(now: datetime) -> None:
        ran.append(now)

    await run_loop(Scheduler(clock, FakeSleep(clock)), [Job("j", lambda now: T0, run)], stop)
    assert ran == []


async def test_no_jobs_waits_for_stop() -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(Scheduler(ManualClock(T0)).run([], stop))
    await asyncio.sleep(0)
    assert not task.done()
    stop.set()
    await asyncio.wait_for(task, timeout=1)


async def test_next_run_failure_is_retried_later(caplog: pytest.LogCaptureFixture) -> None:
    clock = ManualClock(T0)
    sleep = FakeSleep(clock)
    stop = asyncio.Event()
    asked: list[datetime] = []

    def flaky(now: datetime) -> datetime:
        asked.append(now)
        if len(asked) == 1:
            raise ValueError("bad settings")
        return hourly(now)

    runs: list[datetime] = []
    with caplog.at_level(logging.ERROR, logger="bot.scheduler"):
        await run_loop(
            Scheduler(clock, sleep, retry_after=timedelta(minutes=5)),
            [Job("j", flaky, recorder(runs, stop, 1))],
            stop,
        )
    # The failed plan became "try again in 5 minutes": it ran then, and asked for the next time after.
    assert runs == [T0 + timedelta(minutes=5)]
    assert any("next_run failed" in r.getMessage() for r in caplog.records)


async def test_naive_next_run_is_treated_as_a_failure() -> None:
    clock = ManualClock(T0)
    stop = asyncio.Event()
    runs: list[datetime] = []
    job = Job("naive", lambda now: datetime(2026, 11, 24, 3, 0), recorder(runs, stop, 1))
    await run_loop(Scheduler(clock, FakeSleep(clock), retry_after=timedelta(minutes=7)), [job], stop)
    assert runs == [T0 + timedelta(minutes=7)]


async def test_a_job_that_always_says_now_does_not_spin() -> None:
    clock = ManualClock(T0)
    sleep = FakeSleep(clock)
    stop = asyncio.Event()
    runs: list[datetime] = []
    await run_loop(Scheduler(clock, sleep), [Job("eager", lambda now: now, recorder(runs, stop, 4))], stop)
    assert runs == [T0 + timedelta(seconds=s) for s in range(4)]


async def test_a_broken_sleep_surfaces_instead_of_spinning() -> None:
    async def broken(seconds: float) -> None:
        raise OSError("no sleep for you")

    stop = asyncio.Event()
    with pytest.raises(OSError, match="no sleep"):
        await run_loop(Scheduler(ManualClock(T0), broken), [Job("j", hourly, recorder([], stop, 1))], stop)


async def test_drives_the_feed_poll_cadence() -> None:
    """The ingest loop as app.py would wire it: poll until fresh, then wait for the next paper day."""
    clock = ManualClock(datetime(2026, 11, 23, 23, 0, tzinfo=ET).astimezone(UTC))
    stop = asyncio.Event()
    fresh: list[date] = []
    polls: list[datetime] = []

    async def ingest(now: datetime) -> None:
        polls.append(now)
        if len(polls) == 3:  # the third poll finds Tuesday's feed current
            fresh.append(now.astimezone(ET).date())
        if len(polls) == 4:
            stop.set()

    job = Job("rss", lambda now: next_feed_poll(now, last_fresh_day=fresh[-1] if fresh else None), ingest)
    await run_loop(Scheduler(clock, FakeSleep(clock), max_sleep=3600), [job], stop)
    assert [p.astimezone(ET).replace(tzinfo=None) for p in polls] == [
        datetime(2026, 11, 24, 0, 5),
        datetime(2026, 11, 24, 0, 35),
        datetime(2026, 11, 24, 1, 5),
        datetime(2026, 11, 25, 0, 5),
    ]


def test_system_clock_is_aware_utc() -> None:
    now = SystemClock().now()
    assert now.tzinfo is UTC
    assert abs(now - datetime.now(UTC)) < timedelta(seconds=5)


def test_max_sleep_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_sleep"):
        Scheduler(SystemClock(), max_sleep=0)

"""A small async job runner: each job says when it next runs; the loop sleeps until the earliest one.

Jobs run one at a time, in the order they fell due. A job that raises is logged and rescheduled; it never
stops the loop. A missed run (the machine slept through it) runs once on waking, not once per missed slot,
because the next run is always computed from the clock after a run rather than from the missed time.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from bot.ports import Clock

_log = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Job:
    """`next_run(now)` returns the next aware instant to run, normally strictly after `now`;
    `run(now)` is called with the clock's time when the run starts (later than planned after a catch-up)."""

    name: str
    next_run: Callable[[datetime], datetime]
    run: Callable[[datetime], Awaitable[None]]


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


class Scheduler:
    """Runs jobs against `clock`, waiting with `sleep` (injectable so tests never wait).

    `max_sleep` caps one wait: asyncio sleeps on the monotonic clock, which stands still while the machine
    is suspended and ignores wall-clock corrections, so long waits are cut into slices that re-read `clock`.
    `retry_after` is how long to wait before asking a job whose `next_run` failed again.
    """

    def __init__(
        self,
        clock: Clock,
        sleep: Sleep = asyncio.sleep,
        *,
        max_sleep: float = 60.0,
        retry_after: timedelta = timedelta(minutes=5),
    ) -> None:
        if max_sleep <= 0:
            raise ValueError("max_sleep must be positive")
        self._clock = clock
        self._sleep = sleep
        self._max_sleep = max_sleep
        self._retry_after = retry_after

    async def run(self, jobs: Sequence[Job], stop: asyncio.Event) -> None:
        """Run `jobs` until `stop` is set; returns once the job in flight (if any) has finished."""
        if not jobs:
            await stop.wait()
            return
        start = self._now()
        # Keyed by position: two jobs may share a name.
        due = [self._plan(job, start, first=True) for job in jobs]
        while not stop.is_set():
            now = self._now()
            ready = sorted((at, i) for i, at in enumerate(due) if at <= now)
            if not ready:
                wait = (min(due) - now).total_seconds()
                await self._wait(min(wait, self._max_sleep), stop)
                continue
            for _, i in ready:
                if stop.is_set():
                    break
                job = jobs[i]
                started = self._now()
                try:
                    await job.run(started)
                except Exception:
                    _log.exception("job %s failed at %s; rescheduling", job.name, started.isoformat())
                due[i] = self._plan(job, self._now(), first=False)

    def _now(self) -> datetime:
        now = self._clock.now()
        if now.tzinfo is None or now.utcoffset() is None:
            raise ValueError("the scheduler's clock must return timezone-aware datetimes")
        return now

    def _plan(self, job: Job, now: datetime, *, first: bool) -> datetime:
        try:
            at = job.next_run(now)
            if at.tzinfo is None or at.utcoffset() is None:
                raise ValueError(f"next_run returned a naive datetime {at.isoformat()}")
        except Exception:
            _log.exception("job %s: next_run failed; asking again in %s", job.name, self._retry_after)
            return now + self._retry_after
        if not first and at <= now:
            # A job that keeps saying "now" would spin the loop; give the rest of the world a second.
            _log.warning("job %s: next_run(%s) is not in the future; waiting 1 s", job.name, now.isoformat())
            return now + timedelta(seconds=1)
        return at

    async def _wait(self, seconds: float, stop: asyncio.Event) -> None:
        """Sleep up to `seconds`, returning early when `stop` is set."""
        sleeper = asyncio.ensure_future(self._sleep(max(seconds, 0.0)))
        stopper = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({sleeper, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (sleeper, stopper):
                if not task.done():
                    task.cancel()
            await asyncio.gather(sleeper, stopper, return_exceptions=True)
        if sleeper.done() and not sleeper.cancelled():
            failure = sleeper.exception()
            if failure is not None:
                raise failure  # a broken sleep would otherwise turn the loop into a busy spin

"""The one composition root: builds stores, sources, platforms and the router, and runs them in one loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import TextIO

from adapters.console import CONSOLE_CHANNEL, ConsolePlatform
from bot import calendar
from bot.commands import RateLimiter, Router
from bot.delivery import DeliveryReport, deliver_pending
from bot.deps import Config, Deps
from bot.digest import plan_thread
from bot.handlers import HANDLERS
from bot.ingest import IngestReport, route_new, run_source, store_papers
from bot.models import ChannelRule, Command, FetchResult, Paper, Reply, UserRef
from bot.ports import ChatPlatform, Clock, PaperSource
from bot.sample import load_sample
from bot.scheduler import Job, Scheduler, SystemClock
from bot.settings import Settings
from storage.sqlite import Stores

log = logging.getLogger("paperboy")


class AppService:
    """The CommandService every adapter calls: the shared router with the app's dependencies."""

    def __init__(self, router: Router, deps: Deps) -> None:
        self.router = router
        self.deps = deps

    async def handle(self, command: Command) -> Reply:
        return await self.router.dispatch(command, self.deps)

    async def complete(self, user: UserRef, arg: str, current: str) -> list[tuple[str, str]]:
        if arg != "subscription":
            return []
        subs = await self.deps.subscriptions.for_user(user)
        needle = current.lower().strip()
        out = []
        for i, s in enumerate(subs, start=1):
            label = f"{i}. {s.query}"
            if not needle or needle in label.lower():
                out.append((label[:100], str(i)))
        return out[:25]


def config_from(settings: Settings) -> Config:
    return Config(
        default_categories=settings.category_list,
        default_post_time=settings.digest_time,
        default_timezone=settings.timezone,
        max_subscriptions=settings.max_subscriptions,
    )


@dataclass
class App:
    settings: Settings
    clock: Clock = field(default_factory=SystemClock)
    out: TextIO = field(default_factory=lambda: sys.stdout)
    stores: Stores | None = None
    deps: Deps | None = None
    service: AppService | None = None
    platforms: dict[str, ChatPlatform] = field(default_factory=dict)
    sources: list[PaperSource] = field(default_factory=list)
    _kick: asyncio.Event = field(default_factory=asyncio.Event)
    # One delivery run at a time: two concurrent runs read the same pending rows and would both send them.
    _delivering: asyncio.Lock = field(default_factory=asyncio.Lock)
    _http: object | None = None
    enricher: Callable[[Sequence[str]], Awaitable[list[Paper]]] | None = None
    last_fresh_day: date | None = None
    _old_clients: list[object] = field(default_factory=list)

    async def open(self) -> App:
        self.stores = await Stores.open(self.settings.db)
        s = self.stores
        self.deps = Deps(s.papers, s.channels, s.subscriptions, s.ledger, s.status, self.clock,
                         config_from(self.settings), kick=self._kick.set)
        router = Router(HANDLERS, RateLimiter(self.settings.commands_per_minute))
        self.service = AppService(router, self.deps)
        fresh = await self.deps.status.get_meta("rss:last_fresh_day")
        self.last_fresh_day = date.fromisoformat(fresh) if fresh else None
        return self

    async def close(self) -> None:
        for p in list(self.platforms.values()):
            with contextlib.suppress(Exception):
                await p.stop()
        for client in [self._http, *self._old_clients]:
            if client is not None:
                with contextlib.suppress(Exception):
                    await client.aclose()  # type: ignore[attr-defined]  # PoliteClient; bot/ stays httpx-free
        if self.stores is not None:
            await self.stores.close()

    # ------------------------------------------------------------ building parts

    def build_platforms(self, console_out: TextIO | None = None) -> dict[str, ChatPlatform]:
        assert self.service is not None and self.stores is not None
        st = self.settings
        platforms: dict[str, ChatPlatform] = {}
        if st.discord_token:
            from adapters.discord.platform import DiscordPlatform

            platforms["discord"] = DiscordPlatform(st, self.service, self.stores.status)
        if st.slack_bot_token:
            from adapters.slack.platform import SlackPlatform

            platforms["slack"] = SlackPlatform(st, self.service, post_interval=st.slack_post_interval)
        if not platforms:
            platforms["console"] = ConsolePlatform(self.service, console_out or self.out,
                                                   transcript=st.console_log)
        self.platforms = platforms
        return platforms

    def build_sources(self, *, probe: bool = False) -> list[PaperSource]:
        """The live sources. `probe` makes one quick try each (start-up must not hang on a dead network; the
        scheduler's regular client then retries with backoff)."""
        from adapters.sources.arxiv_rss import ArxivRssSource
        from adapters.sources.hf_daily import HfDailySource
        from adapters.sources.http import PoliteClient

        client = PoliteClient(self.settings, max_tries=1, timeout=8.0) if probe else PoliteClient(self.settings)
        if self._http is not None and not probe:
            self._old_clients.append(self._http)
        self._http = client
        sources: list[PaperSource] = [ArxivRssSource(client, self.settings), HfDailySource(client, self.settings)]
        if not probe:
            from adapters.sources.arxiv_api import ArxivApiSource

            api = ArxivApiSource(client, self.settings)

            async def by_ids(ids: Sequence[str]) -> list[Paper]:
                return list((await api.by_ids(ids)).papers)

            self.sources = sources
            self.enricher = by_ids
        return sources

    # ------------------------------------------------------------ flows

    @property
    def d(self) -> Deps:
        assert self.deps is not None
        return self.deps

    async def ingest(self, sources: Sequence[PaperSource] | None = None) -> list[IngestReport]:
        reports = []
        for source in sources if sources is not None else self.sources:
            report = await run_source(self.d, source)
            reports.append(report)
            if source.name == "rss" and report.outcome in ("ok", "quiet") and report.feed_day is not None:
                self.last_fresh_day = report.feed_day
                await self.d.status.set_meta("rss:last_fresh_day", report.feed_day.isoformat())
            if source.name == "rss" and report.new_ids and self.enricher is not None:
                reports.append(await self.enrich(report.new_ids))
        # Routing comes after enrichment, so channels and alerts see primary categories and comments too.
        await route_new(self.d)
        return reports

    async def enrich(self, ids: Sequence[str]) -> IngestReport:
        """The RSS feed lacks the primary category, v1 time and comments: ask the arXiv API for them."""
        assert self.enricher is not None
        try:
            papers = await self.enricher(ids)
        except Exception as exc:  # enrichment is a nicety: the papers are already stored and will be posted
            log.warning("arXiv API enrichment failed: %s", exc)
            return IngestReport("api", "error", 0, 0, 0, f"enrichment failed: {str(exc)[:200]}")
        return await store_papers(self.d, FetchResult("api", tuple(papers), detail="enrichment by id"))

    async def ingest_papers(self, result: FetchResult) -> IngestReport:
        report = await store_papers(self.d, result)
        await route_new(self.d)
        return report

    async def load_sample_if_empty(self) -> int:
        if await self.d.papers.count() > 0:
            return 0
        day = calendar.latest_paper_day(self.clock.now())
        papers = load_sample(announced=day)
        await self.ingest_papers(FetchResult("sample", tuple(papers), detail="bundled sample papers"))
        return len(papers)

    async def ensure_console_follow(self) -> None:
        """The console channel follows the configured categories, so a first run shows a thread at once."""
        if "console" not in self.platforms:
            return
        if await self.d.channels.get_rule(CONSOLE_CHANNEL) is None:
            await self.d.channels.set_rule(ChannelRule(
                CONSOLE_CHANNEL, categories=self.settings.category_list, post_time=self.settings.digest_time,
                timezone=self.settings.timezone))

    async def deliver(self, stop: asyncio.Event | None = None) -> DeliveryReport:
        async with self._delivering:
            return await deliver_pending(self.d, self.platforms, stop=stop.is_set if stop is not None else None)

    async def digest_tick(self, now: datetime) -> int:
        """Plan every channel whose post time has come since it last posted (catching up once after downtime)."""
        planned = 0
        for rule in await self.d.channels.rules():
            if rule.channel.platform not in self.platforms or rule.paused_reason:
                continue
            try:
                due = last_post_time(now, rule)
            except ValueError:
                continue
            meta_key = f"digest:last:{rule.channel.key}"
            last = await self.d.status.get_meta(meta_key)
            if last is None:
                # A newly followed channel starts from its next slot; `post` is there for "now".
                await self.d.status.set_meta(meta_key, due.isoformat())
                continue
            if due > datetime.fromisoformat(last):
                day = due.astimezone(calendar.zone(rule.timezone)).date()
                report = await plan_thread(self.d, rule, day)
                await self.d.status.set_meta(meta_key, due.isoformat())
                planned += report.messages
        return planned

    async def delivery_loop(self, stop: asyncio.Event, every: float = 30.0) -> None:
        while not stop.is_set():
            self._kick.clear()
            try:
                await self.deliver(stop)
            except Exception:
                log.exception("delivery run failed; retrying")
            with contextlib.suppress(TimeoutError):
                waiter = asyncio.ensure_future(self._kick.wait())
                stopper = asyncio.ensure_future(stop.wait())
                await asyncio.wait({waiter, stopper}, timeout=every, return_when=asyncio.FIRST_COMPLETED)
                for t in (waiter, stopper):
                    t.cancel()

    def jobs(self) -> list[Job]:
        st = self.settings

        async def poll(now: datetime) -> None:
            for r in await self.ingest():
                log.info("%s", r.line())

        async def digest(now: datetime) -> None:
            await self.digest_tick(now)

        def poll_next(now: datetime) -> datetime:
            if st.ingest_every_seconds is not None:
                return now + timedelta(seconds=st.ingest_every_seconds)
            return min(calendar.next_feed_poll(now, last_fresh_day=self.last_fresh_day),
                       now + timedelta(minutes=max(5, st.ingest_every_minutes)))

        return [
            Job("ingest", poll_next, poll),
            Job("digest", lambda now: now + timedelta(seconds=st.digest_tick_seconds), digest),
        ]

    async def run(self, *, stdin: TextIO | None = None, stop: asyncio.Event | None = None,
                  fetch: bool = True) -> None:
        """The service. With the console adapter, commands come from stdin and end of input stops it."""
        stop = stop or asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        self.build_platforms()
        for p in self.platforms.values():
            await p.start()
        await self.ensure_console_follow()
        tasks = []
        if fetch and not self.settings.offline:
            reports = await self.ingest(self.build_sources(probe=True))
            self.build_sources()
            failed = [r for r in reports if r.outcome == "error"]
            if failed:
                self._say("Sources unreachable: " + ", ".join(r.source for r in failed)
                          + "; retrying in the background (`status` shows why).")
        loaded = await self.load_sample_if_empty()
        if loaded:
            self._say(f"Loaded {loaded} bundled sample papers so every command works offline.")
        tasks.append(asyncio.create_task(self.delivery_loop(stop)))
        if fetch and not self.settings.offline:
            tasks.append(asyncio.create_task(Scheduler(self.clock).run(self.jobs(), stop)))
        else:
            tasks.append(asyncio.create_task(Scheduler(self.clock).run(self.jobs()[1:], stop)))
        console = self.platforms.get("console")
        try:
            if isinstance(console, ConsolePlatform):
                reader = asyncio.create_task(console.repl(stdin))
                stopper = asyncio.create_task(stop.wait())
                await asyncio.wait({reader, stopper}, return_when=asyncio.FIRST_COMPLETED)
                for t in (reader, stopper):
                    t.cancel()
                # End of input: finish what the commands planned, then stop.
                await self.deliver()
                stop.set()
            else:
                await stop.wait()
        finally:
            stop.set()
            for t in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await asyncio.wait_for(t, timeout=10)

    def _say(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()


def last_post_time(now: datetime, rule: ChannelRule) -> datetime:
    """The latest scheduled post instant at or before `now` (looking back up to 10 days)."""
    t = calendar.next_post_time(now - timedelta(days=10), post_time=rule.post_time, timezone=rule.timezone,
                                weekends=rule.weekends)
    last = t
    while t <= now:
        last = t
        t = calendar.next_post_time(t, post_time=rule.post_time, timezone=rule.timezone, weekends=rule.weekends)
    return last

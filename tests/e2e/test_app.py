"""The composition root end to end, in process: sources -> store -> routing -> daily thread -> console."""

from __future__ import annotations

import io
from dataclasses import replace
from datetime import UTC, date, datetime
from pathlib import Path

from adapters.console import CONSOLE_CHANNEL, ConsolePlatform
from adapters.sources.detect import load_file
from bot.app import App, last_post_time
from bot.models import ChannelRule, FetchResult, Paper
from bot.settings import Settings
from tests.conftest import FIXTURES


class Clock:
    def __init__(self, now: datetime) -> None:
        self.t = now

    def now(self) -> datetime:
        return self.t


class ListSource:
    def __init__(self, name: str, papers: list[Paper], feed_day: date | None = None) -> None:
        self.name = name
        self.papers = papers
        self.feed_day = feed_day
        self.calls = 0

    async def fetch(self, now: datetime) -> FetchResult:
        self.calls += 1
        return FetchResult(self.name, tuple(self.papers), feed_day=self.feed_day)


async def make_app(tmp_path: Path, now: datetime) -> tuple[App, io.StringIO]:
    out = io.StringIO()
    app = await App(Settings(PAPERBOY_DB=str(tmp_path / "t.db")), clock=Clock(now), out=out).open()  # type: ignore[call-arg]
    assert app.service is not None
    app.platforms = {"console": ConsolePlatform(app.service, out)}
    return app, out


async def test_rss_enrich_route_thread_once(tmp_path: Path) -> None:
    _, rss_papers, _ = load_file(FIXTURES / "arxiv_rss_cs.LG+cs.AI+cs.CL+stat.ML.xml")
    feed_day = date(2026, 9, 24)
    now = datetime(2026, 9, 24, 12, 0, tzinfo=UTC)
    app, out = await make_app(tmp_path, now)
    try:
        enriched: list[list[str]] = []

        async def by_ids(ids: list[str]) -> list[Paper]:
            enriched.append(list(ids))
            return [replace(p, primary_category="cs.LG", comment="10 pages", source="api")
                    for p in rss_papers if p.arxiv_id in ids]

        app.enricher = by_ids  # type: ignore[assignment]
        await app.d.channels.set_rule(ChannelRule(CONSOLE_CHANNEL, categories=("cs.LG", "stat.ML"),
                                                  post_time="09:00", timezone="UTC"))
        source = ListSource("rss", rss_papers, feed_day)
        reports = await app.ingest([source])
        assert reports[0].new == 3  # 2 new + 1 cross; the replacement is not news
        assert enriched and sorted(enriched[0]) == sorted(reports[0].new_ids)
        assert app.last_fresh_day == feed_day
        assert (await app.d.papers.get(reports[0].new_ids[0])) is not None
        assert (await app.d.papers.get(reports[0].new_ids[0])).comment == "10 pages"  # type: ignore[union-attr]
        # First tick only remembers the slot; the next slot (Fri 09:00) posts the queue.
        assert await app.digest_tick(now) == 0
        app.clock.t = datetime(2026, 9, 25, 9, 1, tzinfo=UTC)  # type: ignore[attr-defined]
        planned = await app.digest_tick(app.clock.now())
        assert planned >= 2
        report = await app.deliver()
        assert report.sent == planned and report.failed == 0
        text = out.getvalue()
        assert text.count("thread «Papers · 2026-09-25") == 1
        # Ingesting the same feed again, ticking and delivering again posts nothing new.
        await app.ingest([source])
        assert await app.digest_tick(app.clock.now()) == 0
        assert (await app.deliver()).sent == 0
        assert out.getvalue().count("thread «Papers") == 1
    finally:
        await app.close()


async def test_digest_catches_up_once_after_downtime(tmp_path: Path) -> None:
    now = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)  # Monday, before the 09:00 slot
    app, out = await make_app(tmp_path, now)
    try:
        await app.d.channels.set_rule(ChannelRule(CONSOLE_CHANNEL, categories=("cs.LG",), post_time="09:00",
                                                  timezone="UTC"))
        await app.digest_tick(now)
        _, papers, _ = load_file(FIXTURES / "arxiv_api_query_cat_cs.LG_OR_cs.AI.xml")
        await app.ingest_papers(FetchResult("api", tuple(papers)))
        # Down from Monday 08:00 to Wednesday 15:00: two slots were missed; one thread catches up.
        app.clock.t = datetime(2026, 11, 25, 15, 0, tzinfo=UTC)  # type: ignore[attr-defined]
        assert await app.digest_tick(app.clock.now()) > 0
        assert await app.digest_tick(app.clock.now()) == 0
        await app.deliver()
        assert out.getvalue().count("thread «Papers") == 1
    finally:
        await app.close()


def test_last_post_time_is_the_latest_slot() -> None:
    rule = ChannelRule(CONSOLE_CHANNEL, post_time="09:00", timezone="Europe/Berlin")
    now = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)  # Wednesday 13:00 in Berlin
    assert last_post_time(now, rule) == datetime(2026, 11, 25, 8, 0, tzinfo=UTC)

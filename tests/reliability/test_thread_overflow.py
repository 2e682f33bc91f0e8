"""A channel's thread planned twice on one day (a `post`, then the scheduled post) where both runs exceed the cap:
every paper claimed for the thread must be in some message of it (a card, or the "…and N more" line)."""

from __future__ import annotations

import io
from dataclasses import replace
from pathlib import Path

from adapters.console import CONSOLE_CHANNEL, ConsolePlatform
from bot.app import App
from bot.digest import plan_thread
from bot.models import ChannelRule, FetchResult
from bot.sample import load_sample
from tests.reliability.harness import ConsoleReceiver
from tests.reliability.support import settings_for


async def test_two_overflowing_plans_on_one_day_lose_no_paper(tmp_path: Path) -> None:
    app = await App(settings_for(tmp_path / "p.db"), out=io.StringIO()).open()
    try:
        receiver = ConsoleReceiver(tmp_path)
        app.platforms = {"console": ConsolePlatform(app.service, io.StringIO(), transcript=receiver.transcript)}
        rule = ChannelRule(CONSOLE_CHANNEL, cap=2)
        await app.d.channels.set_rule(rule)
        sample = load_sample()
        first = tuple(replace(p, arxiv_id=f"2790.{i:05d}") for i, p in enumerate(sample[:5]))
        second = tuple(replace(p, arxiv_id=f"2791.{i:05d}") for i, p in enumerate(sample[5:10]))
        day = app.d.today()
        await app.ingest_papers(FetchResult("first", first))
        await plan_thread(app.d, rule, day)
        await app.deliver()
        await app.ingest_papers(FetchResult("second", second))
        await plan_thread(app.d, rule, day)
        await app.deliver()
        mentioned = {p for r in receiver.received() for p in r.paper_ids}
        assert mentioned == {p.arxiv_id for p in first + second}
    finally:
        await app.close()

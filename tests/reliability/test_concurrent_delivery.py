"""Two delivery runs at once (the loop, and the run the console makes at end of input) must not both send."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

from adapters.console import CONSOLE_CHANNEL, ConsolePlatform
from bot.app import App
from bot.digest import plan_thread
from bot.models import ChannelRule, FetchResult
from bot.sample import load_sample
from bot.settings import Settings
from tests.reliability.harness import ConsoleReceiver


async def test_concurrent_delivery_runs_send_each_message_once(tmp_path: Path) -> None:
    app = await App(Settings(PAPERBOY_DB=tmp_path / "p.db", PAPERBOY_OFFLINE=True), out=io.StringIO()).open()
    try:
        receiver = ConsoleReceiver(tmp_path)
        app.platforms = {"console": ConsolePlatform(app.service, io.StringIO(), transcript=receiver.transcript)}
        rule = ChannelRule(CONSOLE_CHANNEL, cap=100)
        await app.d.channels.set_rule(rule)
        await app.ingest_papers(FetchResult("sample", tuple(load_sample())))
        planned = await plan_thread(app.d, rule, app.d.today())
        assert planned.messages > 5
        await asyncio.gather(app.deliver(), app.deliver(), app.deliver())
        keys = [r.key for r in receiver.received()]
        assert len(keys) == len(set(keys)) == planned.messages
    finally:
        await app.close()

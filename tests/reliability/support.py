"""In-process helpers for the fault, security and database suites: a real App on a temporary SQLite file."""

from __future__ import annotations

import io
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from adapters.console import CONSOLE_CHANNEL, ConsolePlatform
from adapters.discord.platform import DiscordPlatform
from adapters.slack.platform import SlackPlatform
from adapters.sources.arxiv_rss import ArxivRssSource
from adapters.sources.hf_daily import HfDailySource
from adapters.sources.http import PoliteClient
from bot.app import App
from bot.models import ChannelRef, ChannelRule, Command, FetchResult, Reply, UserRef
from bot.ports import PaperSource
from bot.sample import load_sample
from bot.settings import Settings
from tests.adapters.discord.fake_discord import TOKEN, FakeDiscord
from tests.adapters.slack.conftest import SIGNING_SECRET
from tests.adapters.slack.fake_slack import BOT_TOKEN, FakeSlack
from tests.reliability.harness import ConsoleReceiver
from tests.reliability.source_fake import SourceFake

INJECTED: Counter[str] = Counter()  # faulty answers served by the fakes this session (conftest.py reports them)


def settings_for(db: Path, **values: Any) -> Settings:
    base: dict[str, Any] = {"PAPERBOY_DB": str(db), "PAPERBOY_ARXIV_INTERVAL": 0, "PAPERBOY_OFFLINE": True}
    base.update(values)
    return Settings(_env_file=None, **base)  # type: ignore[call-arg]


@asynccontextmanager
async def console_app(tmp: Path, **values: Any) -> AsyncIterator[tuple[App, ConsoleReceiver]]:
    """An App with the console platform recording to a transcript; the console channel follows everything."""
    app = await App(settings_for(tmp / "paperboy.db", **values), out=io.StringIO()).open()
    receiver = ConsoleReceiver(tmp)
    app.platforms = {"console": ConsolePlatform(app.service, io.StringIO(), transcript=receiver.transcript)}
    await app.d.channels.set_rule(ChannelRule(CONSOLE_CHANNEL, cap=100))
    try:
        yield app, receiver
    finally:
        await app.close()


async def chat_app(db: Path, slack: FakeSlack, discord: FakeDiscord, *, send_timeout: float = 120.0,
                   **values: Any) -> tuple[App, int]:
    """An opened App with the real Slack (HTTP mode) and Discord adapters started against the loopback fakes and
    the bundled sample stored; returns it and Slack's HTTP port. The caller closes the app and the fakes."""
    s = settings_for(db, SLACK_BOT_TOKEN=BOT_TOKEN, SLACK_API_URL=slack.api_url, SLACK_SIGNING_SECRET=SIGNING_SECRET,
                     PAPERBOY_SLACK_PORT=0, DISCORD_TOKEN=TOKEN, DISCORD_API_BASE=discord.api_base,
                     DISCORD_GATEWAY_URL=discord.gateway_url, **values)
    app = await App(s, out=io.StringIO()).open()
    assert app.service is not None and app.stores is not None
    slack_platform = SlackPlatform(s, app.service, post_interval=0.0, host="127.0.0.1")
    discord_platform = DiscordPlatform(s, app.service, app.stores.status, ready_timeout=10.0,
                                       send_timeout=send_timeout, guild_ready_timeout=0.05)
    app.platforms = {"slack": slack_platform, "discord": discord_platform}
    await slack_platform.start()
    await discord_platform.start()
    await app.ingest_papers(FetchResult("sample", tuple(load_sample())))
    assert slack_platform.http_port
    return app, slack_platform.http_port


def fast_sources(source: SourceFake, settings: Settings, *, tries: int = 3, timeout: float = 2.0) -> tuple[
        PoliteClient, list[PaperSource]]:
    """The real sources over loopback, with short backoff so a test never waits long (Retry-After still counts)."""
    s = settings.model_copy(update={"arxiv_rss_url": source.rss_url, "hf_api_url": source.hf_url})
    client = PoliteClient(s, max_tries=tries, backoff=0.05, max_backoff=0.2, max_retry_after=3.0, timeout=timeout)
    return client, [ArxivRssSource(client, s), HfDailySource(client, s)]


async def say(app: App, line: str, *, user: UserRef | None = None, channel: ChannelRef | None = CONSOLE_CHANNEL,
              admin: bool = True) -> Reply:
    from bot.commands import parse_line

    name, args = parse_line(line)
    who = user or UserRef("console", "tester", "tester", "local")
    assert app.service is not None
    return await app.service.handle(Command(name or "help", args, who, channel, is_admin=admin))

"""Faults survived, platforms: the whole bot (App, SQLite ledger, the real Discord and Slack adapters) against the
loopback fakes answering 429, 5xx, deleted channels, missing permissions and closed DMs. A failing channel or user
never blocks the others, a transient failure is retried and then delivered exactly once, a permanent one is
parked with its reason visible in `status`, and a paused channel's admin is told.
"""

from __future__ import annotations

import io
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from adapters.discord.platform import DiscordPlatform
from adapters.slack.platform import SlackPlatform
from bot.app import App
from bot.digest import plan_thread
from bot.models import ChannelRef, ChannelRule, FetchResult, UserRef
from bot.sample import load_sample
from tests.adapters.discord.fake_discord import (
    ADMIN_ID,
    FORUM_ID,
    GUILD_ID,
    TEXT_ID,
    TOKEN,
    USER_ID,
    FakeDiscord,
)
from tests.adapters.slack.fake_slack import BOT_TOKEN, TEAM_ID, FakeSlack, FakeUser
from tests.reliability.support import INJECTED, say, settings_for

G = str(GUILD_ID)
TEXT = ChannelRef("discord", str(TEXT_ID), G)
FORUM = ChannelRef("discord", str(FORUM_ID), G, kind="forum")
READER = UserRef("discord", str(USER_ID), "reader", G)
OTHER = UserRef("discord", str(ADMIN_ID), "other", G)
QUERY = "learning OR model OR language"  # broad: every sample batch alerts both users


@pytest.fixture
async def discord_fake() -> AsyncIterator[FakeDiscord]:
    fake = FakeDiscord()
    await fake.start()
    yield fake
    await fake.stop()
    INJECTED.update(f"discord {r.status}" for r in fake.requests if r.status >= 400)
    assert fake.violations == []


@pytest.fixture
async def discord_app(tmp_path: Path, discord_fake: FakeDiscord) -> AsyncIterator[App]:
    settings = settings_for(tmp_path / "p.db", DISCORD_TOKEN=TOKEN, DISCORD_API_BASE=discord_fake.api_base,
                            DISCORD_GATEWAY_URL=discord_fake.gateway_url)
    app = await App(settings, out=io.StringIO()).open()
    assert app.service is not None and app.stores is not None
    platform = DiscordPlatform(settings, app.service, app.stores.status, ready_timeout=10.0, send_timeout=3.0,
                               guild_ready_timeout=0.05)
    app.platforms = {"discord": platform}
    await platform.start()
    try:
        yield app
    finally:
        await app.close()


async def _world(app: App, channels: list[ChannelRef], users: list[UserRef]) -> None:
    for ch in channels:
        await app.d.channels.set_rule(ChannelRule(ch, cap=100))
    for u in users:
        await app.d.subscriptions.add(u, QUERY, at=datetime.now(UTC))
    await app.ingest_papers(FetchResult("sample", tuple(load_sample())))
    day = app.d.today()
    for ch in channels:
        rule = await app.d.channels.get_rule(ch)
        assert rule is not None
        await plan_thread(app.d, rule, day)


def _slack_parts(fake: FakeSlack, *, dms: bool = False) -> Counter[str]:
    """Messages per (ledger key, part): each must be exactly one."""
    out: Counter[str] = Counter()
    for m in fake.messages:
        if dms and not m.channel.startswith("D"):
            continue
        payload = (m.metadata or {}).get("event_payload", {})
        out[f"{payload.get('ledger_key')}#{payload.get('part', 0)}"] += 1
    return out


def _nonce_counts(fake: FakeDiscord) -> Counter[str]:
    return Counter(str(m["nonce"]) for m in fake.all_messages() if m.get("nonce") is not None)


async def _states(app: App) -> dict[str, int]:
    return await app.d.ledger.counts()


async def test_a_deleted_channel_is_paused_with_a_reason_and_blocks_nobody(discord_app: App,
                                                                          discord_fake: FakeDiscord) -> None:
    app, fake = discord_app, discord_fake
    await _world(app, [TEXT, FORUM], [READER, OTHER])
    fake.fail("POST", rf"/channels/{TEXT_ID}/messages$", 404, code=10003, message="Unknown Channel", times=1000)
    await app.deliver()
    rule = await app.d.channels.get_rule(TEXT)
    assert rule is not None and rule.paused_reason and "no longer exists" in rule.paused_reason
    # The forum's thread and both users' alerts went out all the same.
    forum_threads = [c for c in fake.channels.values() if str(c.get("parent_id")) == str(FORUM_ID)]
    assert len(forum_threads) == 1
    assert len(fake.dm_channels) == 2
    status = (await say(app, "status", user=OTHER, channel=TEXT)).text
    assert "paused" in status and "no longer exists" in status
    # Nothing more is attempted for the paused channel; no row is lost: it waits, visibly.
    before = len(fake.requests)
    await app.deliver()
    assert not [r for r in fake.requests[before:] if r.path == f"/channels/{TEXT_ID}/messages"]
    assert (await _states(app)).get("pending", 0) + (await _states(app)).get("skipped", 0) > 0


@pytest.mark.parametrize(("status", "code"), [(403, 50013), (403, 50001)])
async def test_missing_permission_pauses_only_that_channel(discord_app: App, discord_fake: FakeDiscord,
                                                           status: int, code: int) -> None:
    await _world(discord_app, [TEXT, FORUM], [])
    discord_fake.fail("POST", rf"/channels/{TEXT_ID}/messages$", status, code=code, times=1000)
    await discord_app.deliver()
    text_rule = await discord_app.d.channels.get_rule(TEXT)
    forum_rule = await discord_app.d.channels.get_rule(FORUM)
    assert text_rule is not None and text_rule.paused_reason and "permission" in text_rule.paused_reason
    assert forum_rule is not None and forum_rule.paused_reason is None


async def test_closed_dms_park_one_user_and_tell_them_once(discord_app: App, discord_fake: FakeDiscord) -> None:
    app, fake = discord_app, discord_fake
    fake.block_dm(USER_ID, 50007)
    await _world(app, [TEXT], [READER, OTHER])
    await app.deliver()
    assert await app.d.subscriptions.unreachable(READER)
    assert await app.d.subscriptions.unreachable(OTHER) is None
    assert fake.dm_channels.get(ADMIN_ID) is not None and fake.messages.get(fake.dm_channels[ADMIN_ID])
    assert fake.messages.get(int(TEXT_ID))  # the thread is not held up either
    first = await say(app, "subscriptions", user=READER, channel=TEXT, admin=False)
    second = await say(app, "subscriptions", user=READER, channel=TEXT, admin=False)
    assert "DM" in first.text and "⚠️" in first.text
    assert "⚠️" not in second.text


async def test_transient_errors_are_retried_and_delivered_exactly_once(discord_app: App,
                                                                      discord_fake: FakeDiscord) -> None:
    app, fake = discord_app, discord_fake
    await _world(app, [TEXT, FORUM], [READER])
    # The text channel answers 503 for a while; the others carry on.
    fake.fail("POST", rf"/channels/{TEXT_ID}/messages$", 503, times=3)
    first = await app.deliver()
    assert first.failed >= 1 and first.sent > 0
    rule = await app.d.channels.get_rule(TEXT)
    assert rule is not None and rule.paused_reason is None  # transient: not paused
    assert "503" in (await say(app, "status", channel=TEXT)).text
    for _ in range(4):
        await app.deliver()
    counts = await _states(app)
    assert counts.get("pending", 0) == counts.get("failed", 0) == 0
    assert all(n == 1 for n in _nonce_counts(fake).values())
    assert fake.messages.get(TEXT_ID)


async def test_a_429_storm_is_waited_out(discord_app: App, discord_fake: FakeDiscord) -> None:
    await _world(discord_app, [TEXT], [READER])
    discord_fake.fail("POST", r"/channels/\d+/messages$", 429, retry_after=0.1, times=3,
                      message="You are being rate limited.")
    await discord_app.deliver()
    counts = await _states(discord_app)
    assert counts.get("pending", 0) == counts.get("failed", 0) == 0
    assert all(n == 1 for n in _nonce_counts(discord_fake).values())


async def test_a_paused_channels_admin_is_told_once(discord_app: App, discord_fake: FakeDiscord) -> None:
    await _world(discord_app, [TEXT], [])
    discord_fake.fail("POST", rf"/channels/{TEXT_ID}/messages$", 403, code=50013, times=1000)
    await discord_app.deliver()
    # The next thing an admin does in that channel carries a one-time notice (like the closed-DM notice).
    first = await say(discord_app, "help", user=OTHER, channel=TEXT)
    second = await say(discord_app, "help", user=OTHER, channel=TEXT)
    assert "paused" in first.text
    assert "paused" not in second.text


# ---------------------------------------------------------------------------------------------- Slack

SLACK_CH = ChannelRef("slack", "C0GENERAL", TEAM_ID)
SLACK_OTHER_CH = ChannelRef("slack", "C0OTHER", TEAM_ID)
SLACK_A = UserRef("slack", "UMEMBER", "mia", TEAM_ID)
SLACK_B = UserRef("slack", "UREADER", "rea", TEAM_ID)


@pytest.fixture
async def slack_app(tmp_path: Path) -> AsyncIterator[tuple[App, FakeSlack]]:
    async with FakeSlack() as fake:
        fake.users.setdefault("UREADER", FakeUser("UREADER", "rea"))
        settings = settings_for(tmp_path / "p.db", SLACK_BOT_TOKEN=BOT_TOKEN, SLACK_API_URL=fake.api_url,
                                SLACK_SIGNING_SECRET="s" * 32, PAPERBOY_SLACK_PORT=0)
        app = await App(settings, out=io.StringIO()).open()
        assert app.service is not None
        platform = SlackPlatform(settings, app.service, post_interval=0.0, host="127.0.0.1")
        app.platforms = {"slack": platform}
        await platform.start()
        try:
            yield app, fake
        finally:
            await app.close()
            INJECTED.update(f"slack {fake.channel_errors.get(str(a.get('channel')))}" for m, a in fake.calls
                            if str(a.get("channel")) in fake.channel_errors and m != "auth.test")
            INJECTED.update(f"slack {fake.user_errors.get(str(a.get('users')))}" for m, a in fake.calls
                            if str(a.get("users")) in fake.user_errors)


@pytest.mark.parametrize("error", ["channel_not_found", "not_in_channel", "is_archived"])
async def test_slack_channel_errors_pause_one_channel_only(slack_app: tuple[App, FakeSlack], error: str) -> None:
    app, fake = slack_app
    fake.channel_errors["C0GENERAL"] = error
    await _world(app, [SLACK_CH, SLACK_OTHER_CH], [SLACK_A])
    await app.deliver()
    bad = await app.d.channels.get_rule(SLACK_CH)
    good = await app.d.channels.get_rule(SLACK_OTHER_CH)
    assert bad is not None and bad.paused_reason and error in bad.paused_reason
    assert good is not None and good.paused_reason is None
    assert [m for m in fake.messages if m.channel == "C0OTHER"]
    assert error in (await say(app, "status", user=SLACK_A, channel=SLACK_CH)).text


async def test_slack_unreachable_user_is_parked_others_get_alerts(slack_app: tuple[App, FakeSlack]) -> None:
    app, fake = slack_app
    fake.user_errors["UREADER"] = "user_not_found"
    await _world(app, [SLACK_CH], [SLACK_A, SLACK_B])
    await app.deliver()
    assert await app.d.subscriptions.unreachable(SLACK_B)
    assert await app.d.subscriptions.unreachable(SLACK_A) is None
    dm_keys = _slack_parts(fake, dms=True)
    assert dm_keys and all(n == 1 for n in dm_keys.values())


@pytest.mark.slow  # slack_sdk's own backoff on 500 takes a few seconds
async def test_slack_429_and_500_are_retried_and_sent_once(slack_app: tuple[App, FakeSlack]) -> None:
    from tests.adapters.slack.fake_slack import Failure

    app, fake = slack_app
    await _world(app, [SLACK_CH], [SLACK_A])
    scripted = [Failure("chat.postMessage", status=429, error="ratelimited", retry_after=1, count=1),
                Failure("chat.postMessage", status=500, error="internal_error", retry_after=None, count=2)]
    fake.failures.extend(scripted)
    for _ in range(5):
        await app.deliver()
    assert all(f.count == 0 for f in scripted)
    INJECTED.update({"slack 429": 1, "slack 500": 2})
    counts = await _states(app)
    assert counts.get("pending", 0) == counts.get("failed", 0) == 0
    keys = _slack_parts(fake)
    assert keys and all(n == 1 for n in keys.values())

"""Login, gateway handshake and command sync: the real discord.py client against the loopback fake."""

from __future__ import annotations

import discord
import pytest

from adapters.discord.platform import COMMANDS_HASH_KEY, DiscordPlatform, DiscordStartError
from bot.commands import COMMANDS
from tests.adapters.discord.conftest import FakeService, MemoryMeta, PlatformFactory, make_settings
from tests.adapters.discord.fake_discord import GUILD_ID, TOKEN, FakeDiscord


def command_puts(fake: FakeDiscord) -> list[str]:
    return [r.path for r in fake.requests if r.method == "PUT" and r.path.endswith("/commands")]


async def test_login_connects_and_syncs_the_command_table(fake: FakeDiscord, started: PlatformFactory,
                                                          meta: MemoryMeta) -> None:
    platform = await started()
    assert platform.client.is_ready()
    assert platform.client.get_guild(GUILD_ID) is not None
    assert fake.identifies == 1
    assert fake.last_identify is not None
    assert fake.last_identify["intents"] == discord.Intents.default().value  # no privileged intents
    assert command_puts(fake) == ["/applications/900000000000000002/commands"]

    (papers,) = fake.commands["global"]
    assert papers["name"] == "papers"
    subs = {o["name"]: o for o in papers["options"]}
    assert list(subs) == [c.name for c in COMMANDS]
    for spec in COMMANDS:
        sub = subs[spec.name]
        assert sub["type"] == 1 and sub["description"] == spec.summary
        assert [o["name"] for o in sub.get("options", [])] == [a.name for a in spec.args]
        for opt, arg in zip(sub.get("options", []), spec.args, strict=True):
            assert opt["type"] == 3 and opt["required"] == arg.required and opt["description"] == arg.help
            assert opt.get("autocomplete", False) == (arg.autocomplete == "subscriptions")
            assert [c["value"] for c in opt.get("choices", [])] == list(arg.choices)
    assert meta.values[COMMANDS_HASH_KEY]


async def test_no_resync_when_the_table_is_unchanged(fake: FakeDiscord, service: FakeService,
                                                     meta: MemoryMeta) -> None:
    for _ in range(2):
        platform = DiscordPlatform(make_settings(fake), service, meta, ready_timeout=10, guild_ready_timeout=0.05)
        await platform.start()
        await platform.stop()
    assert len(command_puts(fake)) == 1
    assert fake.identifies == 2


async def test_resync_when_the_stored_hash_differs(fake: FakeDiscord, started: PlatformFactory,
                                                   meta: MemoryMeta) -> None:
    meta.values[COMMANDS_HASH_KEY] = "an older table"
    await started()
    assert len(command_puts(fake)) == 1
    assert meta.values[COMMANDS_HASH_KEY] != "an older table"


async def test_guild_sync_when_a_dev_guild_is_set(fake: FakeDiscord, started: PlatformFactory,
                                                  meta: MemoryMeta) -> None:
    await started(DISCORD_GUILD_ID=str(GUILD_ID))
    assert command_puts(fake) == [f"/applications/900000000000000002/guilds/{GUILD_ID}/commands"]
    assert [c["name"] for c in fake.commands[str(GUILD_ID)]] == ["papers"]
    assert "global" not in fake.commands


async def test_a_failed_sync_is_retried_on_the_next_start(fake: FakeDiscord, service: FakeService,
                                                          meta: MemoryMeta) -> None:
    fake.fail("PUT", r"/commands$", 403, code=50001, message="Missing Access")
    platform = DiscordPlatform(make_settings(fake), service, meta, ready_timeout=10, guild_ready_timeout=0.05)
    await platform.start()  # serving goes on: commands synced earlier keep working
    await platform.stop()
    assert COMMANDS_HASH_KEY not in meta.values
    platform = DiscordPlatform(make_settings(fake), service, meta, ready_timeout=10, guild_ready_timeout=0.05)
    await platform.start()
    await platform.stop()
    assert len(command_puts(fake)) == 2
    assert "global" in fake.commands


async def test_a_bad_token_is_a_clear_error_that_does_not_echo_it(fake: FakeDiscord, service: FakeService,
                                                                  meta: MemoryMeta) -> None:
    secret = "wrong-token-ABCDEF.123"
    platform = DiscordPlatform(make_settings(fake, DISCORD_TOKEN=secret), service, meta, ready_timeout=5)
    with pytest.raises(DiscordStartError) as info:
        await platform.start()
    assert "401" in str(info.value) and secret not in str(info.value)


async def test_missing_token(fake: FakeDiscord, service: FakeService, meta: MemoryMeta) -> None:
    platform = DiscordPlatform(make_settings(fake, DISCORD_TOKEN=""), service, meta)
    with pytest.raises(DiscordStartError, match="DISCORD_TOKEN"):
        await platform.start()


async def test_unreachable_gateway_fails_start_within_the_timeout(fake: FakeDiscord, service: FakeService,
                                                                  meta: MemoryMeta) -> None:
    settings = make_settings(fake, DISCORD_GATEWAY_URL="ws://127.0.0.1:9/nothing")
    platform = DiscordPlatform(settings, service, meta, ready_timeout=1.5)
    with pytest.raises(DiscordStartError, match="not ready") as info:
        await platform.start()
    assert TOKEN not in str(info.value)

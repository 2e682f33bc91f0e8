"""Slash commands as real INTERACTION_CREATE events through the gateway, answered over REST."""

from __future__ import annotations

import re

import pytest

from adapters.discord.platform import DiscordPlatform
from bot.commands import COMMANDS, CommandSpec
from bot.models import Card, ChannelRef, Field, Reply, UserRef, Visibility
from tests.adapters.discord.conftest import FakeService, PlatformFactory
from tests.adapters.discord.fake_discord import (
    ADMIN_ID,
    FORUM_ID,
    GUILD_ID,
    MANAGE_CHANNELS,
    MANAGE_GUILD,
    MEMBER_PERMISSIONS,
    TEXT_ID,
    USER_ID,
    FakeDiscord,
)

MENTION = re.compile(r"@(everyone|here)|<@[!&]?\d+>|<#\d+>")
SAMPLE = {"query": "graph neural networks", "paper": "2401.01234", "subscription": "2", "command": "search",
          "topic": "cs.LG cs.AI", "time": "08:30", "timezone": "Europe/Berlin", "cap": "20", "weekends": "on"}


def options_for(spec: CommandSpec) -> dict[str, str]:
    return {a.name: SAMPLE[a.name] for a in spec.args}


@pytest.mark.parametrize("spec", COMMANDS, ids=lambda s: s.name)
async def test_every_subcommand_reaches_the_service(spec: CommandSpec, platform: DiscordPlatform,
                                                    fake: FakeDiscord, service: FakeService) -> None:
    token = await fake.interact(spec.name, options_for(spec))
    followups = await fake.wait_answered(token)

    (callback,) = fake.callbacks[token]
    assert callback["type"] == 5  # deferred, "thinking": the acknowledgement comes first
    assert bool((callback.get("data") or {}).get("flags", 0) & 64) == (not spec.shared)
    (command,) = service.commands
    assert command.name == spec.name
    expected_args = " ".join(f"{a.name} {SAMPLE[a.name]}" if a.keyword else SAMPLE[a.name] for a in spec.args)
    assert command.args == expected_args
    assert command.user == UserRef("discord", str(USER_ID), f"user{USER_ID % 1000}", str(GUILD_ID))
    assert command.channel == ChannelRef("discord", str(TEXT_ID), str(GUILD_ID), kind="text", name="papers")
    assert command.is_admin is False
    assert followups[0]["content"] == f"ok {spec.name}: {expected_args}".strip()
    # The callback went out before the service was asked (the 3 s deadline covers only the ack).
    callback_at = next(i for i, r in enumerate(fake.requests) if r.route.endswith("/callback"))
    followup_at = next(i for i, r in enumerate(fake.requests) if r.route == "/webhooks/{webhook_id}/{webhook_token}")
    assert callback_at < followup_at


async def test_settings_options_become_keyword_text(platform: DiscordPlatform, fake: FakeDiscord,
                                                    service: FakeService) -> None:
    token = await fake.interact("settings", {"weekends": "off", "time": "07:15"}, permissions=MEMBER_PERMISSIONS
                                | MANAGE_GUILD)
    await fake.wait_answered(token)
    assert service.commands[0].args == "time 07:15 weekends off"
    assert service.commands[0].is_admin is True


async def test_hostile_query_text_arrives_verbatim_and_never_pings(platform: DiscordPlatform, fake: FakeDiscord,
                                                                   service: FakeService) -> None:
    hostile = '@everyone <@123> <@&456> **bold** `x` "; DROP TABLE papers; -- NEAR( $x_i$'
    service.replies["search"] = Reply(
        text=f"No papers match `{hostile}`", visibility=Visibility.CHANNEL,
        cards=(Card(title=hostile, body=hostile, fields=(Field("Authors", hostile),)),))
    token = await fake.interact("search", {"query": hostile})
    (followup,) = await fake.wait_answered(token)

    assert service.commands[0].args == hostile
    body = next(r.body for r in fake.requests if r.route == "/webhooks/{webhook_id}/{webhook_token}")
    assert body["allowed_mentions"] == {"parse": []}
    embed = followup["embeds"][0]
    for text in (followup["content"], embed["title"], embed["description"], embed["fields"][0]["value"]):
        assert not MENTION.search(text), text
    assert "**bold**" not in embed["title"]


@pytest.mark.parametrize(
    ("permissions", "user_id", "admins", "expected"),
    [
        (MEMBER_PERMISSIONS, USER_ID, "", False),
        (MEMBER_PERMISSIONS | MANAGE_GUILD, ADMIN_ID, "", True),
        (MEMBER_PERMISSIONS | MANAGE_CHANNELS, ADMIN_ID, "", True),
        (MEMBER_PERMISSIONS, USER_ID, f"discord:{USER_ID}", True),
        (MEMBER_PERMISSIONS, USER_ID, f"slack:{USER_ID}", False),
    ],
    ids=["member", "manage-server", "manage-channels", "listed-admin", "listed-on-slack-only"],
)
async def test_follow_admin_flag_comes_from_real_permissions(
    permissions: int, user_id: int, admins: str, expected: bool, started: PlatformFactory, fake: FakeDiscord,
    service: FakeService,
) -> None:
    await started(PAPERBOY_ADMINS=admins)
    token = await fake.interact("follow", {"topic": "cs.LG"}, user_id=user_id, permissions=permissions)
    await fake.wait_answered(token)
    assert service.commands[0].name == "follow"
    assert service.commands[0].is_admin is expected


async def test_command_in_a_forum_post_is_about_the_forum(platform: DiscordPlatform, fake: FakeDiscord,
                                                          service: FakeService) -> None:
    thread_id = fake.add_thread(FORUM_ID, "discussion")
    token = await fake.interact("today", channel_id=thread_id)
    await fake.wait_answered(token)
    assert service.commands[0].channel == ChannelRef("discord", str(FORUM_ID), str(GUILD_ID), kind="forum",
                                                     name="paper-forum")


async def test_command_in_a_text_thread_is_about_its_channel(platform: DiscordPlatform, fake: FakeDiscord,
                                                             service: FakeService) -> None:
    thread_id = fake.add_thread(TEXT_ID, "Papers 2026-11-27")
    token = await fake.interact("why", {"paper": "2401.01234"}, channel_id=thread_id)
    await fake.wait_answered(token)
    channel = service.commands[0].channel
    assert channel is not None and (channel.id, channel.kind) == (str(TEXT_ID), "text")


async def test_command_in_a_dm(platform: DiscordPlatform, fake: FakeDiscord, service: FakeService) -> None:
    token = await fake.interact("subscriptions", dm=True)
    await fake.wait_answered(token)
    command = service.commands[0]
    assert command.channel is not None and command.channel.kind == "dm" and command.channel.workspace == ""
    assert command.user == UserRef("discord", str(USER_ID), f"user{USER_ID % 1000}", "")
    assert command.is_admin is False


async def test_a_failing_handler_still_answers_the_user(platform: DiscordPlatform, fake: FakeDiscord,
                                                        service: FakeService) -> None:
    service.fail_on.add("status")
    token = await fake.interact("status")
    (followup,) = await fake.wait_answered(token)
    assert "failed on our side" in followup["content"]
    assert "Traceback" not in followup["content"] and "blew up" not in followup["content"]


async def test_private_reply_to_a_shared_command_is_not_shown_to_the_channel(
    platform: DiscordPlatform, fake: FakeDiscord, service: FakeService
) -> None:
    service.replies["show"] = Reply(text="'nope' is not an arXiv id", is_error=True)  # PRIVATE by default
    token = await fake.interact("show", {"paper": "nope"})
    (followup,) = await fake.wait_answered(token)
    assert fake.deleted_originals == [token]  # the public "thinking…" message is removed
    body = next(r.body for r in fake.requests if r.route == "/webhooks/{webhook_id}/{webhook_token}")
    assert body["flags"] & 64
    assert followup["content"] == "'nope' is not an arXiv id"


async def test_a_long_reply_is_several_followups(platform: DiscordPlatform, fake: FakeDiscord,
                                                 service: FakeService) -> None:
    cards = tuple(Card(title=f"Paper {i}", url=f"https://arxiv.org/abs/2401.{i:05d}", body="b" * 500)
                  for i in range(23))
    service.replies["search"] = Reply(text="23 papers", cards=cards, visibility=Visibility.CHANNEL)
    token = await fake.interact("search", {"query": "x"})
    followups = await fake.wait_answered(token, count=3)
    assert [len(f["embeds"]) for f in followups] == [10, 10, 3]
    assert [e["title"] for f in followups for e in f["embeds"]] == [f"Paper {i}" for i in range(23)]


async def test_unsubscribe_autocompletes_from_the_service(platform: DiscordPlatform, fake: FakeDiscord,
                                                          service: FakeService) -> None:
    token = await fake.interact("unsubscribe", {"subscription": "diff"}, focused="subscription")
    await fake.wait_for(lambda: bool(fake.callbacks.get(token)))
    (callback,) = fake.callbacks[token]
    assert callback["type"] == 8
    assert callback["data"]["choices"] == [{"name": "2: diffusion -survey", "value": "2"}]
    (user, arg, current) = service.completions[0]
    assert (user.id, arg, current) == (str(USER_ID), "subscription", "diff")
    assert service.commands == []  # autocomplete is not a command


async def test_commands_keep_working_after_the_gateway_drops(platform: DiscordPlatform, fake: FakeDiscord,
                                                             service: FakeService) -> None:
    await fake.drop_connections()
    await fake.wait_for(lambda: fake.resumes == 1 and bool(fake._sockets), timeout=10)
    token = await fake.interact("help")
    await fake.wait_answered(token)
    assert fake.identifies == 1  # resumed, not a new session
    assert [c.name for c in service.commands] == ["help"]

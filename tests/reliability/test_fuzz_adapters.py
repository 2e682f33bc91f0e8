"""Bad input through both adapters' request parsing: hostile slash-command text as correctly signed Slack requests
to the bolt HTTP endpoint, and hostile option values as Discord INTERACTION_CREATE events through the fake gateway,
all answered by the real App (router, handlers, SQLite). Each gets an answer, no exception is raised or logged,
and no answer carries a live mention."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.app import App
from bot.commands import COMMANDS, CommandSpec
from tests.adapters.discord.fake_discord import ADMIN_ID, ALL_PERMISSIONS, USER_ID, FakeDiscord
from tests.adapters.slack.conftest import command_form, post_signed
from tests.adapters.slack.fake_slack import FakeSlack
from tests.reliability.fuzzing import (
    _DISCORD_ID,
    _DISCORD_MASS,
    _SLACK_LIVE,
    _slack_texts,
    any_args,
    error_log,
    examples,
    fuzzed,
)
from tests.reliability.support import chat_app


@dataclass
class Stack:
    loop: asyncio.AbstractEventLoop
    app: App
    slack: FakeSlack
    slack_port: int
    discord: FakeDiscord


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp: Path = tmp_path_factory.mktemp("fuzz-adapters")
    loop = asyncio.new_event_loop()

    async def up() -> Stack:
        slack = await FakeSlack().start()
        discord_fake = FakeDiscord()
        await discord_fake.start()
        app, port = await chat_app(tmp / "p.db", slack, discord_fake, PAPERBOY_COMMANDS_PER_MINUTE=10**9,
                                   PAPERBOY_MAX_SUBSCRIPTIONS=10**6)
        return Stack(loop, app, slack, port, discord_fake)

    stack = loop.run_until_complete(up())
    yield stack

    async def down() -> None:
        await stack.app.close()
        await stack.slack.stop()
        await stack.discord.stop()

    loop.run_until_complete(down())
    loop.close()
    assert stack.slack.violations == []
    assert stack.discord.violations == []


def _no_live_slack_mention(response: dict[str, Any]) -> None:
    for text in [str(response.get("text") or ""), *_slack_texts(response.get("blocks") or [])]:
        assert not _SLACK_LIVE.search(text), f"live Slack mention in {text[:200]!r}"


@settings(max_examples=examples(120), deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                            HealthCheck.function_scoped_fixture])
@given(text=any_args, user=st.sampled_from(["UADMIN", "UMEMBER", "UOWNER"]),
       channel=st.sampled_from(["C0GENERAL", "D0DIRECT"]), prefix=st.sampled_from(["", "search ", "subscribe ",
                                                                                      "follow ", "why ", "show "]))
def test_slack_slash_commands_with_hostile_text(stack: Stack, text: str, user: str, channel: str,
                                                prefix: str) -> None:
    async def one() -> dict[str, Any]:
        before = len(stack.slack.responses)
        form = command_form(stack.slack, prefix + text, user_id=user, channel_id=channel,
                            response=f"fz{before}")
        status, _ = await post_signed(stack.slack_port, form)
        assert status == 200
        await stack.slack.wait_for(lambda: len(stack.slack.responses) > before, timeout=10)
        return stack.slack.responses[-1]

    with error_log() as errors:
        response = stack.loop.run_until_complete(one())
    assert not errors.records, errors.describe()
    assert str(response.get("text") or "").strip()
    _no_live_slack_mention(response)
    fuzzed("slack: signed slash commands over HTTP")


def _options(spec: CommandSpec, value: str) -> dict[str, str]:
    # Discord caps a string option at 6000 characters: longer input never reaches a bot.
    return {a.name: value[:6000] for a in spec.args[:1]} if spec.args else {}


@settings(max_examples=examples(120), deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                            HealthCheck.function_scoped_fixture])
@given(spec=st.sampled_from(COMMANDS), value=any_args, admin=st.booleans())
def test_discord_interactions_with_hostile_options(stack: Stack, spec: CommandSpec, value: str, admin: bool) -> None:
    async def one() -> list[dict[str, Any]]:
        kw: dict[str, Any] = {"user_id": ADMIN_ID, "permissions": ALL_PERMISSIONS} if admin else {"user_id": USER_ID}
        token = await stack.discord.interact(spec.name, _options(spec, value), **kw)
        return await stack.discord.wait_answered(token, timeout=10)

    with error_log() as errors:
        followups = stack.loop.run_until_complete(one())
    assert not errors.records, errors.describe()
    first = followups[0]
    assert str(first.get("content") or "").strip() or first.get("embeds")
    for message in followups:
        texts = [str(message.get("content") or "")]
        for embed in message.get("embeds") or []:
            texts += [str(embed.get("title") or ""), str(embed.get("description") or "")]
            texts += [str(f.get("value") or "") for f in embed.get("fields") or []]
        for text in texts:
            assert not _DISCORD_MASS.search(text) and not _DISCORD_ID.search(text), text[:200]
        assert message.get("allowed_mentions", {"parse": []}).get("parse") == []
    fuzzed("discord: interactions through the gateway")

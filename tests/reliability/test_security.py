"""Security: Slack signatures with the 5-minute window and no replays, admin-only commands refused for others on
both platforms, per-user rate limiting and length caps with polite replies, and no token or secret in any log,
error or `status` — the whole App with the real adapters against the loopback fakes."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
import pytest
from slack_sdk.signature import SignatureVerifier

from bot.app import App
from bot.commands import COMMANDS, MAX_ARGS_CHARS
from bot.models import ChannelRef, Command, FetchResult, UserRef
from bot.sample import load_sample
from tests.adapters.discord.fake_discord import (
    ADMIN_ID,
    ALL_PERMISSIONS,
    GUILD_ID,
    MEMBER_PERMISSIONS,
    TEXT_ID,
    TOKEN,
    USER_ID,
    FakeDiscord,
)
from tests.adapters.slack.conftest import SIGNING_SECRET, command_form
from tests.adapters.slack.fake_slack import APP_TOKEN, BOT_TOKEN, FakeSlack
from tests.reliability.support import chat_app

SECRETS = (TOKEN, BOT_TOKEN, APP_TOKEN, SIGNING_SECRET)


@dataclass
class Stack:
    app: App
    slack: FakeSlack
    slack_port: int
    discord: FakeDiscord
    logs: list[str]


class _Capture(logging.Handler):
    def __init__(self, sink: list[str]) -> None:
        super().__init__(level=logging.DEBUG)
        self.sink = sink
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        text = self.format(record)  # includes the traceback text when there is one
        self.sink.append(text)


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    logs: list[str] = []
    handler = _Capture(logs)
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)  # the most talkative the bot ever is: libraries' DEBUG included
    slack = await FakeSlack().start()
    discord_fake = FakeDiscord()
    await discord_fake.start()
    app, port = await chat_app(tmp_path / "p.db", slack, discord_fake, send_timeout=3.0,
                               PAPERBOY_COMMANDS_PER_MINUTE=20, PAPERBOY_MAX_SUBSCRIPTIONS=5)
    try:
        yield Stack(app, slack, port, discord_fake, logs)
    finally:
        await app.close()
        await slack.stop()
        await discord_fake.stop()
        root.removeHandler(handler)
        root.setLevel(old_level)


def _signed(body: str, *, age: float = 0.0, secret: str = SIGNING_SECRET) -> dict[str, str]:
    timestamp = str(int(time.time() - age))
    signature = SignatureVerifier(secret).generate_signature(timestamp=timestamp, body=body) or ""
    return {"Content-Type": "application/x-www-form-urlencoded", "X-Slack-Request-Timestamp": timestamp,
            "X-Slack-Signature": signature}


async def _post(port: int, body: str, headers: dict[str, str]) -> int:
    async with aiohttp.ClientSession() as session, session.post(
            f"http://127.0.0.1:{port}/slack/events", data=body.encode(), headers=headers) as response:
        return response.status


async def _slack_command(stack: Stack, text: str, *, user: str = "UMEMBER", name: str = "r") -> dict[str, Any]:
    before = len(stack.slack.responses)
    body = urlencode(command_form(stack.slack, text, user_id=user, response=name))
    assert await _post(stack.slack_port, body, _signed(body)) == 200
    await stack.slack.wait_for(lambda: len(stack.slack.responses) > before, timeout=10)
    return stack.slack.responses[-1]


def _slack_text(response: dict[str, Any]) -> str:
    return str(response.get("text") or "") + str(response.get("blocks") or "")


# ------------------------------------------------------------------------------------------ Slack signatures

@pytest.mark.parametrize(("age", "accepted"), [(0, True), (240, True), (330, False), (-330, False), (3600, False)])
async def test_slack_signature_window_is_five_minutes(stack: Stack, age: float, accepted: bool) -> None:
    body = urlencode(command_form(stack.slack, "help", response=f"age{age}"))
    status = await _post(stack.slack_port, body, _signed(body, age=age))
    assert (status == 200) is accepted
    await asyncio.sleep(0.3)
    assert bool(stack.slack.responses) is accepted


@pytest.mark.parametrize("tamper", [
    "wrong secret", "body changed", "no signature",
    "garbage timestamp",
])
async def test_slack_rejects_forged_requests(stack: Stack, tamper: str) -> None:
    body = urlencode(command_form(stack.slack, "follow cs.LG", user_id="UADMIN"))
    headers = _signed(body, secret="not-the-secret" if tamper == "wrong secret" else SIGNING_SECRET)
    if tamper == "body changed":
        body = body.replace("cs.LG", "cs.CV")
    if tamper == "no signature":
        del headers["X-Slack-Signature"]
    if tamper == "garbage timestamp":
        headers["X-Slack-Request-Timestamp"] = "yesterday"
    assert await _post(stack.slack_port, body, headers) == 401
    await asyncio.sleep(0.3)
    assert stack.slack.responses == []
    assert await stack.app.d.channels.rules() == []


async def test_slack_replayed_request_is_rejected(stack: Stack) -> None:
    body = urlencode(command_form(stack.slack, "subscribe graph neural", response="once"))
    headers = _signed(body)
    assert await _post(stack.slack_port, body, headers) == 200
    await stack.slack.wait_for(lambda: len(stack.slack.responses) == 1, timeout=10)
    replay = await _post(stack.slack_port, body, headers)
    await asyncio.sleep(0.5)
    assert replay != 200 or len(stack.slack.responses) == 1


# ------------------------------------------------------------------------------------------ admin-only

ADMIN_COMMANDS = [c for c in COMMANDS if c.admin]


@pytest.mark.parametrize("spec", ADMIN_COMMANDS, ids=[c.name for c in ADMIN_COMMANDS])
async def test_admin_commands_are_refused_for_members_on_slack(stack: Stack, spec: Any) -> None:
    response = await _slack_command(stack, f"{spec.name} cs.LG" if spec.args else spec.name, user="UMEMBER")
    assert "admin" in _slack_text(response)
    assert response["response_type"] == "ephemeral"
    assert await stack.app.d.channels.rules() == []


@pytest.mark.parametrize("spec", ADMIN_COMMANDS, ids=[c.name for c in ADMIN_COMMANDS])
async def test_admin_commands_are_refused_for_members_on_discord(stack: Stack, spec: Any) -> None:
    options = {spec.args[0].name: "cs.LG"} if spec.args and spec.args[0].required else {}
    token = await stack.discord.interact(spec.name, options, user_id=USER_ID, permissions=MEMBER_PERMISSIONS)
    [answer] = await stack.discord.wait_answered(token)
    text = str(answer.get("content")) + str(answer.get("embeds"))
    assert "admin" in text
    assert await stack.app.d.channels.rules() == []


async def test_admins_are_obeyed_on_both(stack: Stack) -> None:
    await _slack_command(stack, "follow cs.LG", user="UADMIN")
    token = await stack.discord.interact("follow", {"topic": "cs.CL"}, user_id=ADMIN_ID, permissions=ALL_PERMISSIONS)
    await stack.discord.wait_answered(token)
    keys = sorted(r.channel.key for r in await stack.app.d.channels.rules())
    assert keys == sorted([ChannelRef("slack", "C0GENERAL", "T0FAKE").key,
                           ChannelRef("discord", str(TEXT_ID), str(GUILD_ID)).key])


# ------------------------------------------------------------------------------------------ limits

async def test_per_user_rate_limit_is_polite_and_per_user(stack: Stack) -> None:
    assert stack.app.service is not None
    mia = UserRef("slack", "UMEMBER", "mia", "T0FAKE")
    bob = UserRef("slack", "UBOB", "bob", "T0FAKE")
    replies = [await stack.app.service.handle(Command("help", "", mia, None)) for _ in range(21)]
    assert all(not r.is_error for r in replies[:20])
    assert replies[20].is_error and "too fast" in replies[20].text and "wait" in replies[20].text
    assert not (await stack.app.service.handle(Command("help", "", bob, None))).is_error
    # Through the adapter too: the 22nd request of the minute from the same user gets the same polite answer.
    response = await _slack_command(stack, "help", user="UMEMBER", name="limited")
    assert "too fast" in _slack_text(response)


async def test_query_and_subscription_caps(stack: Stack) -> None:
    assert stack.app.service is not None
    user = UserRef("discord", str(USER_ID), "u", str(GUILD_ID))
    long = await stack.app.service.handle(Command("subscribe", "a" * (MAX_ARGS_CHARS + 1), user, None))
    assert long.is_error and str(MAX_ARGS_CHARS) in long.text
    for i in range(5):
        ok = await stack.app.service.handle(Command("subscribe", f"topic{i} learning", user, None))
        assert not ok.is_error, ok.text
    refused = await stack.app.service.handle(Command("subscribe", "one more", user, None))
    assert refused.is_error and "5" in refused.text
    assert await stack.app.d.subscriptions.count_for(user) == 5


# ------------------------------------------------------------------------------------------ secrets

async def test_no_secret_in_logs_errors_or_status(stack: Stack) -> None:
    app = stack.app
    assert app.service is not None
    # Make every path talk: commands on both platforms, failures with tokens in flight, status.
    await _slack_command(stack, "follow cs.LG", user="UADMIN")
    await _slack_command(stack, "subscribe learning", user="UMEMBER", name="s2")
    stack.slack.channel_errors["C0GENERAL"] = "invalid_auth"
    token = await stack.discord.interact("follow", {"topic": "cs.LG"}, user_id=ADMIN_ID, permissions=ALL_PERMISSIONS)
    await stack.discord.wait_answered(token)
    stack.discord.fail("POST", rf"/channels/{TEXT_ID}/messages$", 401, code=0, message="401: Unauthorized", times=50)
    fresh = tuple(replace(p, arxiv_id=f"2799.{i:05d}") for i, p in enumerate(load_sample()))
    await app.ingest_papers(FetchResult("sample2", fresh))
    from adapters.console import CONSOLE_CHANNEL

    for rule in await app.d.channels.rules():
        await app.service.handle(Command("post", "", UserRef(rule.channel.platform, "x"), rule.channel,
                                         is_admin=True))
    await app.deliver()
    status = await app.service.handle(Command("status", "", UserRef("console", "me"), CONSOLE_CHANNEL))
    failures = await app.d.ledger.failures(50)
    assert failures, "the scripted failures should have been recorded"
    everything = "\n".join(stack.logs) + status.text + "".join(f.error or "" for f in failures)
    everything += str(stack.slack.responses) + str([m for m in stack.discord.all_messages()])
    assert len(stack.logs) > 50  # DEBUG from discord.py, slack_sdk, aiohttp and ours
    for secret in SECRETS:
        assert secret not in everything, f"{secret[:6]}… leaked"

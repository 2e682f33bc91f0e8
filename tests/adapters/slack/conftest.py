"""Slack adapter test fixtures: the loopback fake, a recording CommandService double, signed requests."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import urlencode

import aiohttp
import pytest
from slack_sdk.signature import SignatureVerifier

from adapters.slack.platform import SlackPlatform
from bot.models import Command, Reply, UserRef
from bot.settings import Settings
from tests.adapters.slack.fake_slack import APP_TOKEN, BOT_TOKEN, TEAM_ID, FakeSlack

SIGNING_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"


class RecordingService:
    """A CommandService test double: records every Command and answers with a canned or computed Reply."""

    def __init__(self) -> None:
        self.commands: list[Command] = []
        self.answer: Callable[[Command], Reply] = lambda c: Reply(f"ran {c.name}: {c.args}")
        self.fail = False
        self.gate: asyncio.Event | None = None  # when set, handle() waits for it: a slow search

    async def handle(self, command: Command) -> Reply:
        self.commands.append(command)
        if self.gate is not None:
            await self.gate.wait()
        if self.fail:
            raise RuntimeError("boom")
        return self.answer(command)

    async def complete(self, user: UserRef, arg: str, current: str) -> list[tuple[str, str]]:
        return []


def make_settings(
    fake: FakeSlack, *, http: bool = True, socket: bool = False, admins: str = "", bot_token: str = BOT_TOKEN
) -> Settings:
    values: dict[str, Any] = {
        "SLACK_BOT_TOKEN": bot_token,
        "SLACK_API_URL": fake.api_url,
        "PAPERBOY_SLACK_PORT": 0,
        "PAPERBOY_ADMINS": admins,
        "SLACK_SIGNING_SECRET": SIGNING_SECRET if http else None,
        "SLACK_APP_TOKEN": APP_TOKEN if socket else None,
    }
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@pytest.fixture
async def fake() -> AsyncIterator[FakeSlack]:
    async with FakeSlack() as server:
        yield server


@pytest.fixture
def service() -> RecordingService:
    return RecordingService()


PlatformFactory = Callable[..., Awaitable[SlackPlatform]]


@pytest.fixture
async def make_platform(fake: FakeSlack, service: RecordingService) -> AsyncIterator[PlatformFactory]:
    started: list[SlackPlatform] = []

    async def factory(**kwargs: Any) -> SlackPlatform:
        settings_kw = {k: kwargs.pop(k) for k in ("http", "socket", "admins", "bot_token") if k in kwargs}
        kwargs.setdefault("post_interval", 0.0)
        kwargs.setdefault("host", "127.0.0.1")
        platform = SlackPlatform(make_settings(fake, **settings_kw), service, **kwargs)
        await platform.start()
        started.append(platform)
        return platform

    yield factory
    for platform in started:
        await platform.stop()


def command_form(
    fake: FakeSlack,
    text: str,
    *,
    user_id: str = "UMEMBER",
    channel_id: str = "C0GENERAL",
    response: str = "r1",
    team_id: str = TEAM_ID,
) -> dict[str, str]:
    return {
        "token": "legacy-verification-token",
        "team_id": team_id,
        "team_domain": "fake",
        "channel_id": channel_id,
        "channel_name": "directmessage" if channel_id.startswith("D") else "general",
        "user_id": user_id,
        "user_name": "someone",
        "command": "/papers",
        "text": text,
        "api_app_id": "AFAKE",
        "is_enterprise_install": "false",
        "response_url": fake.response_url(response),
        "trigger_id": "1.2.3",
    }


async def post_signed(
    port: int, form: dict[str, str], *, secret: str = SIGNING_SECRET, age: float = 0.0
) -> tuple[int, str]:
    """POST a slash command to the running bolt endpoint, signed as Slack signs it."""
    body = urlencode(form)
    timestamp = str(int(time.time() - age))
    signature = SignatureVerifier(secret).generate_signature(timestamp=timestamp, body=body) or ""
    headers = {
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Slack-Request-Timestamp": timestamp,
        "X-Slack-Signature": signature,
    }
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"http://127.0.0.1:{port}/slack/events", data=body.encode(), headers=headers) as response,
    ):
        return response.status, await response.text()

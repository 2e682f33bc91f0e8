"""Fixtures: the loopback fake Discord, a recording CommandService double, an in-memory meta store."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest

from adapters.discord.platform import DiscordPlatform
from bot.models import Command, Reply, SourceStatus, UserRef
from bot.settings import Settings
from tests.adapters.discord.fake_discord import TOKEN, FakeDiscord


@dataclass
class FakeService:
    """Test double of the core's CommandService: records commands, answers with canned replies."""

    replies: dict[str, Reply] = field(default_factory=dict)
    commands: list[Command] = field(default_factory=list)
    completions: list[tuple[UserRef, str, str]] = field(default_factory=list)
    fail_on: set[str] = field(default_factory=set)

    async def handle(self, command: Command) -> Reply:
        self.commands.append(command)
        if command.name in self.fail_on:
            raise RuntimeError("handler blew up")
        return self.replies.get(command.name, Reply(text=f"ok {command.name}: {command.args}"))

    async def complete(self, user: UserRef, arg: str, current: str) -> list[tuple[str, str]]:
        self.completions.append((user, arg, current))
        subs = [("1: graph neural networks", "1"), ("2: diffusion -survey", "2")]
        return [s for s in subs if current.lower() in s[0].lower()]


@dataclass
class MemoryMeta:
    values: dict[str, str] = field(default_factory=dict)
    writes: int = 0

    async def record_fetch(self, status: SourceStatus) -> None:
        raise NotImplementedError

    async def fetch_statuses(self) -> list[SourceStatus]:
        return []

    async def get_meta(self, key: str) -> str | None:
        return self.values.get(key)

    async def set_meta(self, key: str, value: str) -> None:
        self.writes += 1
        self.values[key] = value


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    server = FakeDiscord()
    await server.start()
    yield server
    await server.stop()
    # Every body the bot sent must have been a valid Discord request.
    assert server.violations == []


def make_settings(fake: FakeDiscord, **extra: object) -> Settings:
    values: dict[str, object] = {"DISCORD_TOKEN": TOKEN, "DISCORD_API_BASE": fake.api_base,
                                 "DISCORD_GATEWAY_URL": fake.gateway_url, **extra}
    # model_validate skips the environment and .env: tests see only what they set.
    return Settings.model_validate(values)


@pytest.fixture
def service() -> FakeService:
    return FakeService()


@pytest.fixture
def meta() -> MemoryMeta:
    return MemoryMeta()


PlatformFactory = Callable[..., Awaitable[DiscordPlatform]]


@pytest.fixture
async def started(fake: FakeDiscord, service: FakeService, meta: MemoryMeta) -> AsyncIterator[PlatformFactory]:
    """Start a real DiscordPlatform against the fake; stopped at teardown."""
    platforms: list[DiscordPlatform] = []

    async def start(**kw: object) -> DiscordPlatform:
        settings_kw = {k: v for k, v in kw.items() if k.isupper()}
        platform_kw = {k: v for k, v in kw.items() if not k.isupper()}
        platform = DiscordPlatform(make_settings(fake, **settings_kw), service, meta,
                                   ready_timeout=10.0, guild_ready_timeout=0.05, **platform_kw)  # type: ignore[arg-type]
        platforms.append(platform)
        await platform.start()
        return platform

    yield start
    for p in platforms:
        await p.stop()


@pytest.fixture
async def platform(started: PlatformFactory) -> DiscordPlatform:
    return await started()

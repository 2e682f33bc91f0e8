"""Shared helpers for the source tests: the recorded fixtures and a fake clock for the polite client."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from adapters.sources.http import PoliteClient
from bot.settings import Settings

# The repo root's sibling `shared/` folder holds the recordings; CI runs the repo from another folder.
FIXTURES = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures" / "sources"


def fixture_bytes(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def arxivpy_body(name: str) -> tuple[bytes, int]:
    data = json.loads(fixture_bytes(name))
    return data["body"].encode("latin-1"), data["status_code"]


class FakeTime:
    """A monotonic clock that only moves when the client sleeps; records every sleep."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []
        self.wall = datetime(2026, 9, 24, 12, 0, tzinfo=UTC)

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    def monotonic(self) -> float:
        return self.now

    def wall_clock(self) -> datetime:
        return self.wall


@pytest.fixture
def fake_time() -> FakeTime:
    return FakeTime()


@pytest.fixture
def settings() -> Settings:
    return Settings(_env_file=None, PAPERBOY_CATEGORIES="cs.LG cs.AI", PAPERBOY_ARXIV_INTERVAL=3.0)  # type: ignore[call-arg]


MakeClient = Callable[..., PoliteClient]


@pytest.fixture
def make_client(fake_time: FakeTime, settings: Settings) -> MakeClient:
    def build(handler: Callable[[httpx.Request], object], **kwargs: object) -> PoliteClient:
        options: dict[str, object] = {
            "transport": httpx.MockTransport(handler),  # type: ignore[arg-type]
            "sleep": fake_time.sleep,
            "monotonic": fake_time.monotonic,
            "wall_clock": fake_time.wall_clock,
            "jitter": lambda: 0.0,
        }
        options.update(kwargs)
        return PoliteClient(settings, **options)  # type: ignore[arg-type]

    return build

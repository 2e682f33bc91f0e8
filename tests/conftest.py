"""Shared test fixtures: where the recorded source fixtures live, a CLI runner, and a store for sync tests."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from storage.sqlite import Stores

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
FIXTURES = SHARED / "fixtures" / "sources"


@pytest.fixture
def fixtures_dir() -> Path:
    assert FIXTURES.is_dir(), f"shared fixtures not found at {FIXTURES}"
    return FIXTURES


def offline_env(tmp_path: Path) -> dict[str, str]:
    """An environment with no tokens and every live source pointed at a closed loopback port."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DISCORD_", "SLACK_", "PAPERBOY_"))}
    dead = "http://127.0.0.1:9/"
    env.update({
        "PAPERBOY_DB": str(tmp_path / "paperboy.db"),
        "ARXIV_RSS_URL": dead, "ARXIV_API_URL": dead, "HF_API_URL": dead, "OAI_PMH_URL": dead,
        "PYTHONIOENCODING": "utf-8",
    })
    return env


def run_cli(args: list[str], tmp_path: Path, *, stdin: str | None = None, timeout: float = 120,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bot.cli", *args], input=stdin, capture_output=True, text=True, timeout=timeout,
        cwd=tmp_path, env=env or offline_env(tmp_path),
    )


@pytest.fixture
def sync_stores(tmp_path: Path) -> Iterator[tuple[asyncio.AbstractEventLoop, Stores]]:
    """An SQLite store and its own event loop, for hypothesis tests (which cannot be async functions)."""
    loop = asyncio.new_event_loop()
    stores = loop.run_until_complete(Stores.open(tmp_path / "sync.db"))
    try:
        yield loop, stores
    finally:
        loop.run_until_complete(stores.close())
        loop.close()

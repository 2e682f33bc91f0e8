"""The fake itself: it must reject what Discord rejects, or the adapter tests prove nothing."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.adapters.discord.fake_discord import TEXT_ID, TOKEN, USER_ID, FakeDiscord

AUTH = {"Authorization": f"Bot {TOKEN}"}


async def call(fake: FakeDiscord, method: str, path: str, body: Any = None,
               headers: dict[str, str] | None = None) -> tuple[int, Any, str]:
    async with aiohttp.ClientSession() as session, session.request(
        method, fake.api_base + path, json=body, headers=AUTH if headers is None else headers
    ) as resp:
        return resp.status, await resp.json(content_type=None), resp.headers["Content-Type"]


def embed(description: str = "d", title: str = "t") -> dict[str, Any]:
    return {"title": title, "description": description}


@pytest.mark.parametrize(
    ("body", "why"),
    [
        ({"content": "x" * 2001}, "content is 2001"),
        ({"embeds": [embed("x" * 4097)]}, "description"),
        ({"embeds": [embed() for _ in range(11)]}, "embeds"),
        ({"embeds": [embed("x" * 3000), embed("y" * 3000)]}, "embeds total"),
        ({"content": "hi", "nonce": "x" * 26}, "nonce"),
    ],
    ids=["content-2001", "description-4097", "11-embeds", "embed-total-6000", "nonce-26"],
)
async def test_invalid_message_bodies_are_rejected(body: dict[str, Any], why: str, fake: FakeDiscord) -> None:
    status, data, _ = await call(fake, "POST", f"/channels/{TEXT_ID}/messages", body)
    assert (status, data["code"]) == (400, 50035)
    assert fake.violations and any(why.split()[0] in v for v in fake.violations), fake.violations
    assert TEXT_ID not in fake.messages
    fake.violations.clear()


async def test_thread_name_over_100_is_rejected(fake: FakeDiscord) -> None:
    status, msg, _ = await call(fake, "POST", f"/channels/{TEXT_ID}/messages", {"content": "opener"})
    assert status == 200
    status, _, _ = await call(fake, "POST", f"/channels/{TEXT_ID}/messages/{msg['id']}/threads",
                              {"name": "n" * 101, "auto_archive_duration": 1440})
    assert status == 400
    assert fake.violations
    fake.violations.clear()


async def test_valid_bodies_pass_and_int_snowflakes_are_normalised(fake: FakeDiscord) -> None:
    status, data, content_type = await call(fake, "POST", "/users/@me/channels", {"recipient_id": USER_ID})
    assert status == 200 and data["type"] == 1
    assert content_type == "application/json"  # exactly: discord.py compares the string
    status, _, _ = await call(fake, "POST", f"/channels/{TEXT_ID}/messages",
                              {"content": "x" * 2000, "embeds": [embed("y" * 4096)], "nonce": "n" * 25,
                               "enforce_nonce": True, "allowed_mentions": {"parse": []}})
    assert status == 200
    assert fake.violations == []


async def test_nonce_dedup_only_with_enforce_nonce(fake: FakeDiscord) -> None:
    for enforce in (True, True, False):
        await call(fake, "POST", f"/channels/{TEXT_ID}/messages",
                   {"content": "a", "nonce": "same", "enforce_nonce": enforce})
    assert len(fake.messages[TEXT_ID]) == 2


async def test_requests_without_the_token_are_401(fake: FakeDiscord) -> None:
    status, _, _ = await call(fake, "GET", "/users/@me", headers={})
    assert status == 401


async def test_standalone_server_prints_its_port_and_records(tmp_path: Path) -> None:
    record = tmp_path / "requests.jsonl"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.adapters.discord.fake_discord", "--port", "0", "--record", str(record),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL, cwd=Path(__file__).parents[3],
    )
    try:
        assert proc.stdout is not None
        port = int((await asyncio.wait_for(proc.stdout.readline(), 20)).decode())
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{port}/api/v10/users/@me", headers=AUTH) as resp:
                assert resp.status == 200
            async with session.get(f"http://127.0.0.1:{port}/_fake/state") as resp:
                state = await resp.json()
        assert state["requests"] == 1 and state["violations"] == []
        lines = [json.loads(line) for line in record.read_text().splitlines()]
        assert [(x["method"], x["path"], x["status"]) for x in lines] == [("GET", "/users/@me", 200)]
    finally:
        proc.terminate()
        await proc.wait()

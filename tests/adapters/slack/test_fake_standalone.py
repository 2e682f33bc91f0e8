"""The fake runs as its own process (for crash-test harnesses): prints its port, serves, records, stops."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from tests.adapters.slack.fake_slack import BOT_TOKEN


async def test_standalone_fake_serves_records_and_stops(tmp_path: Path) -> None:
    record = tmp_path / "calls.jsonl"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.adapters.slack.fake_slack",
        "--port",
        "0",
        "--record",
        str(record),
        stdout=asyncio.subprocess.PIPE,
        cwd=Path(__file__).resolve().parents[3],
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), timeout=10)
        port = int(line)
        client = AsyncWebClient(token=BOT_TOKEN, base_url=f"http://127.0.0.1:{port}/api/")
        auth = await client.auth_test()
        assert auth["ok"] and auth["bot_id"]
        async with aiohttp.ClientSession() as session:
            async with session.post(
                f"http://127.0.0.1:{port}/_control/error",
                json={"channel": "CGONE", "error": "channel_not_found"},
            ) as r:
                assert r.status == 200
            posted = await client.chat_postMessage(
                channel="C1",
                text="hello",
                metadata={
                    "event_type": "paperboy_delivery",
                    "event_payload": {"ledger_key": "k", "ledger_id": 1},
                },
            )
            try:
                await client.chat_postMessage(channel="CGONE", text="x")
                raise AssertionError("expected channel_not_found")
            except SlackApiError as exc:
                assert exc.response["error"] == "channel_not_found"
            async with session.get(f"http://127.0.0.1:{port}/_state") as r:
                state = await r.json()
        assert [m["ts"] for m in state["messages"]] == [posted["ts"]]
        assert state["messages"][0]["metadata"]["event_payload"]["ledger_key"] == "k"
        kinds = [json.loads(x)["kind"] for x in record.read_text().splitlines()]
        assert kinds.count("message") == 1 and kinds.count("call") == 3
    finally:
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), timeout=10) == 0

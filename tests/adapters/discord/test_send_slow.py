"""Slow: discord.py's own 5xx back-off (1, 3, 5, 7, 9 s) runs to the end."""

from __future__ import annotations

import pytest

from adapters.discord.platform import DiscordPlatform
from tests.adapters.discord.fake_discord import TEXT_ID, FakeDiscord
from tests.adapters.discord.test_send import NAME, OPENER, opener


@pytest.mark.slow
async def test_500_after_discord_py_gives_up(platform: DiscordPlatform, fake: FakeDiscord) -> None:
    fake.fail("POST", rf"/channels/{TEXT_ID}/messages$", 500, times=5)  # discord.py tries 5 times
    out = await platform.send(opener(TEXT_ID), OPENER, thread_name=NAME, parent_id=None)
    assert not out.ok and not out.permanent and out.error and "500" in out.error
    assert TEXT_ID not in fake.messages

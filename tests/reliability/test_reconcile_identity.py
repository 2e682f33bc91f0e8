"""Found by the crash harness (full Discord run): resuming a post (attempts > 1) reconciled it against a *different*
paper's message with the same title and abstract (the fingerprint ignored the embed's URL), so the paper was
marked sent and never posted. Two papers with the same title and abstract are real (re-submissions, the same
abstract for a paper and its companion); a resumed message must only match a message of its own."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from adapters.discord.platform import DiscordPlatform
from bot.models import Card, Delivery, DeliveryState, Reply, Visibility
from tests.adapters.discord.fake_discord import GUILD_ID, TEXT_ID, TOKEN, FakeDiscord
from tests.reliability.support import settings_for


class _NoMeta:
    async def get_meta(self, key: str) -> str | None:
        return None

    async def set_meta(self, key: str, value: str) -> None:
        return None


@pytest.fixture
async def platform(tmp_path: Path) -> AsyncIterator[tuple[DiscordPlatform, FakeDiscord]]:
    fake = FakeDiscord()
    await fake.start()
    settings = settings_for(tmp_path / "p.db", DISCORD_TOKEN=TOKEN, DISCORD_API_BASE=fake.api_base,
                            DISCORD_GATEWAY_URL=fake.gateway_url)
    p = DiscordPlatform(settings, _NoMeta(), _NoMeta(), ready_timeout=10.0, guild_ready_timeout=0.05)  # type: ignore[arg-type]
    await p.start()
    try:
        yield p, fake
    finally:
        await p.stop()
        await fake.stop()


def _post(key: str, arxiv_id: str, attempts: int) -> tuple[Delivery, Reply]:
    target = f"discord:{GUILD_ID}:{TEXT_ID}"
    card = Card(title="The Same Title", url=f"https://arxiv.org/abs/{arxiv_id}", body="The same abstract.")
    return (Delivery(id=attempts, key=key, platform="discord", target=target, kind="post",
                     state=DeliveryState.PENDING, attempts=attempts, paper_ids=(arxiv_id,)),
            Reply(text="", cards=(card,), visibility=Visibility.CHANNEL))


async def test_a_resumed_post_never_reconciles_to_another_papers_message(
        platform: tuple[DiscordPlatform, FakeDiscord]) -> None:
    p, fake = platform
    thread = str(TEXT_ID)
    first, reply_a = _post("thread:x:2701.00001", "2701.00001", 1)
    out_a = await p.send(first, reply_a, thread_name=None, parent_id=thread)
    # The second paper's first attempt was cut off by a crash before anything went out: the resume must post it.
    second, reply_b = _post("thread:x:2701.00101", "2701.00101", 2)
    out_b = await p.send(second, reply_b, thread_name=None, parent_id=thread)
    assert out_a.ok and out_b.ok
    assert out_b.message_id != out_a.message_id
    urls = [e.get("url") for m in fake.messages.get(TEXT_ID, []) for e in m.get("embeds") or []]
    assert urls == ["https://arxiv.org/abs/2701.00001", "https://arxiv.org/abs/2701.00101"]

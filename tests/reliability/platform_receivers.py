"""Receivers for the crash harness that are the loopback platform fakes: what Discord and Slack "received".

Discord: every message the bot creates carries a nonce derived from its ledger key (`message_nonce`), so the
fake's messages map back to ledger rows; the fake honours `enforce_nonce` like Discord. Slack: every message
carries the ledger key in its metadata (the adapter's reconciliation reads it back), so the same mapping holds.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from bot.models import ChannelRef, UserRef
from tests.reliability.harness import BotProcess, Received, Receiver, _wait_until


def _ledger(db: Path) -> list[tuple[str, str, str, tuple[str, ...]]]:
    if not db.exists():
        return []
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        rows = conn.execute("SELECT d.key, d.kind, d.target, group_concat(p.arxiv_id) FROM deliveries d "
                            "LEFT JOIN delivery_papers p ON p.delivery_id = d.id GROUP BY d.id").fetchall()
    except sqlite3.OperationalError:
        return []
    finally:
        conn.close()
    return [(str(k), str(kind), str(t), tuple(sorted(str(ids).split(","))) if ids else ()) for k, kind, t, ids in rows]


class DiscordReceiver(Receiver):
    name = "discord"

    def __init__(self, workdir: Path) -> None:
        from tests.adapters.discord.fake_discord import GUILD_ID, TEXT_ID, USER_ID, FakeDiscord

        self.fake = FakeDiscord(validate=True)
        self.db = workdir / "paperboy.db"
        self.channel = ChannelRef("discord", str(TEXT_ID), str(GUILD_ID))
        self.user = UserRef("discord", str(USER_ID), "reader", str(GUILD_ID))
        self._by_nonce: dict[str, tuple[str, int, str, str, tuple[str, ...]]] = {}
        self._identifies = 0

    def users(self, count: int) -> list[UserRef]:
        return [UserRef("discord", str(int(self.user.id) + i), f"reader{i}", self.user.workspace)
                for i in range(count)]

    async def start(self) -> None:
        await self.fake.start()

    async def stop(self) -> None:
        await self.fake.stop()

    def env(self) -> dict[str, str]:
        from tests.adapters.discord.fake_discord import TOKEN

        return {"DISCORD_TOKEN": TOKEN, "DISCORD_API_BASE": self.fake.api_base,
                "DISCORD_GATEWAY_URL": self.fake.gateway_url}

    async def ready(self, bot: BotProcess) -> None:
        before = self._identifies
        ok = await _wait_until(lambda: self.fake.identifies > before, timeout=20, step=0.02)
        self._identifies = self.fake.identifies
        if not ok:
            raise AssertionError("the bot never identified on the fake gateway:\n" + bot.stderr()[-2000:])
        await _wait_until(lambda: False, timeout=0.2)  # READY and GUILD_CREATE reach the client

    async def request_post(self, bot: BotProcess) -> None:
        from tests.adapters.discord.fake_discord import ADMIN_ID, ALL_PERMISSIONS, TEXT_ID

        self.fake._sockets = [ws for ws in self.fake._sockets if not ws.closed]
        await self.fake.interact("post", user_id=ADMIN_ID, permissions=ALL_PERMISSIONS, channel_id=TEXT_ID)

    async def finish(self, bot: BotProcess) -> int:
        return await bot.terminate()

    def _refresh(self) -> None:
        from adapters.discord.platform import message_nonce

        for key, kind, target, papers in _ledger(self.db):
            for i in range(6):
                self._by_nonce.setdefault(message_nonce(key, i), (key, i, kind, target, papers))

    def received(self) -> list[Received]:
        out: list[Received] = []
        messages: list[dict[str, Any]] = self.fake.all_messages()
        if any(str(m.get("nonce")) not in self._by_nonce for m in messages if m.get("nonce") is not None):
            self._refresh()
        for m in messages:
            nonce = m.get("nonce")
            if nonce is None or str(nonce) not in self._by_nonce:
                continue  # interaction followups and the like: not ledger messages
            key, index, kind, target, papers = self._by_nonce[str(nonce)]
            mid = str(m["id"])
            if kind == "opener":
                mid = str(self.fake.threads_by_message.get(int(mid), mid))
            out.append(Received(key if index == 0 else f"{key}#{index}", kind, target, mid,
                                papers if index == 0 else ()))
        return out

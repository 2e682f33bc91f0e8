"""Receivers for the crash harness that are the loopback platform fakes: what Discord and Slack "received".

Discord: every message the bot creates carries a nonce derived from its ledger key (`message_nonce`), so the
fake's messages map back to ledger rows; the fake honours `enforce_nonce` like Discord. Slack: every message
carries the ledger key in its metadata (the adapter's reconciliation reads it back), so the same mapping holds.
"""

from __future__ import annotations

import random
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
        self.nonces_forgotten = 0

    def users(self, count: int) -> list[UserRef]:
        return [UserRef("discord", str(int(self.user.id) + i), f"reader{i}", self.user.workspace)
                for i in range(count)]

    async def start(self) -> None:
        await self.fake.start()

    async def stop(self) -> None:
        await self.fake.stop()

    def between_lives(self, rng: random.Random) -> None:
        # Discord honours a nonce for a few minutes only: now and then the restart comes after a long outage, and
        # only the adapter's read-back of the channel stands between a resumed message and a duplicate.
        if rng.random() < 0.3:
            self.fake.forget_nonces()
            self.nonces_forgotten += 1

    def stats(self) -> dict[str, int]:
        return {"restarts_after_the_nonce_window": self.nonces_forgotten}

    def env(self) -> dict[str, str]:
        from tests.adapters.discord.fake_discord import TOKEN

        return {"DISCORD_TOKEN": TOKEN, "DISCORD_API_BASE": self.fake.api_base,
                "DISCORD_GATEWAY_URL": self.fake.gateway_url}

    def secrets(self) -> tuple[str, ...]:
        from tests.adapters.discord.fake_discord import TOKEN

        return (TOKEN,)

    async def ready(self, bot: BotProcess) -> None:
        before = self._identifies
        ok = await _wait_until(lambda: self.fake.identifies > before, timeout=20, step=0.02)
        self._identifies = self.fake.identifies
        if not ok:
            raise AssertionError("the bot never identified on the fake gateway:\n" + bot.stderr()[-2000:])
        await _wait_until(lambda: False, timeout=0.2)  # READY and GUILD_CREATE reach the client

    async def request_post(self, bot: BotProcess) -> None:
        from tests.adapters.discord.fake_discord import ADMIN_ID, ALL_PERMISSIONS, TEXT_ID

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


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class SlackReceiver(Receiver):
    """Slack in HTTP mode: slash commands are signed requests to the bot's bolt endpoint."""

    name = "slack"

    def __init__(self, workdir: Path) -> None:
        from tests.adapters.slack.fake_slack import TEAM_ID, FakeSlack

        self.fake = FakeSlack()
        self.db = workdir / "paperboy.db"
        self.port = _free_port()
        self.channel = ChannelRef("slack", "C0GENERAL", TEAM_ID)
        self.user = UserRef("slack", "UMEMBER", "mia", TEAM_ID)
        self._requests = 0

    def users(self, count: int) -> list[UserRef]:
        from tests.adapters.slack.fake_slack import FakeUser

        out = [self.user]
        for i in range(1, count):
            uid = f"UREADER{i}"
            self.fake.users.setdefault(uid, FakeUser(uid, f"reader{i}"))
            out.append(UserRef("slack", uid, f"reader{i}", self.user.workspace))
        return out

    async def start(self) -> None:
        await self.fake.start()

    async def stop(self) -> None:
        await self.fake.stop()

    def env(self) -> dict[str, str]:
        from tests.adapters.slack.conftest import SIGNING_SECRET
        from tests.adapters.slack.fake_slack import BOT_TOKEN

        return {"SLACK_BOT_TOKEN": BOT_TOKEN, "SLACK_API_URL": self.fake.api_url,
                "SLACK_SIGNING_SECRET": SIGNING_SECRET, "PAPERBOY_SLACK_PORT": str(self.port),
                "PAPERBOY_SLACK_POST_INTERVAL": "0"}

    def secrets(self) -> tuple[str, ...]:
        from tests.adapters.slack.conftest import SIGNING_SECRET
        from tests.adapters.slack.fake_slack import BOT_TOKEN

        return (BOT_TOKEN, SIGNING_SECRET)

    async def ready(self, bot: BotProcess) -> None:
        import asyncio
        import contextlib

        async def listening() -> bool:
            with contextlib.suppress(OSError):
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
                writer.close()
                return True
            return False

        for _ in range(400):
            if await listening():
                return
            await asyncio.sleep(0.05)
        raise AssertionError("the bot never listened on its Slack port:\n" + bot.stderr()[-2000:])

    async def request_post(self, bot: BotProcess) -> None:
        import contextlib

        import aiohttp

        from tests.adapters.slack.conftest import command_form, post_signed

        self._requests += 1
        form = command_form(self.fake, "post", user_id="UADMIN", channel_id="C0GENERAL",
                            response=f"post{self._requests}")
        with contextlib.suppress(aiohttp.ClientError, OSError):
            await post_signed(self.port, form)

    async def finish(self, bot: BotProcess) -> int:
        return await bot.terminate()

    def received(self) -> list[Received]:
        ledger = {key: (kind, target, papers) for key, kind, target, papers in _ledger(self.db)}
        out: list[Received] = []
        for m in list(self.fake.messages):
            meta = m.metadata or {}
            payload = meta.get("event_payload") or {}
            key = payload.get("ledger_key")
            if not isinstance(key, str):
                continue
            part = int(payload.get("part") or 0)
            kind, target, papers = ledger.get(key, ("?", "?", ()))
            out.append(Received(key if part == 0 else f"{key}#{part}", kind, target, m.ts,
                                papers if part == 0 else ()))
        return out

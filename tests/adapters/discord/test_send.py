"""Delivery of ledger rows: daily threads (text channel and forum), DM alerts, failures and resume."""

from __future__ import annotations

import pytest

from adapters.discord.platform import DiscordPlatform, message_nonce
from bot.models import Card, Delivery, DeliveryState, Reply
from tests.adapters.discord.conftest import PlatformFactory
from tests.adapters.discord.fake_discord import BOT_ID, FORUM_ID, GUILD_ID, TEXT_ID, TOKEN, USER_ID, FakeDiscord

G = GUILD_ID
DAY = "2026-11-27"


def delivery(kind: str, target: str, key: str, *, attempts: int = 1, parent_key: str | None = None) -> Delivery:
    return Delivery(id=1, key=key, platform="discord", target=target, kind=kind, state=DeliveryState.PENDING,
                    parent_key=parent_key, attempts=attempts)


def opener(channel_id: int, attempts: int = 1) -> Delivery:
    return delivery("opener", f"discord:{G}:{channel_id}", f"thread:discord:{G}:{channel_id}:{DAY}",
                    attempts=attempts)


def post(channel_id: int, n: int, attempts: int = 1) -> Delivery:
    key = f"thread:discord:{G}:{channel_id}:{DAY}"
    return delivery("post", f"discord:{G}:{channel_id}", f"{key}:post:{n}", attempts=attempts, parent_key=key)


def dm(user_id: int, paper: str = "2401.01234", attempts: int = 1) -> Delivery:
    return delivery("dm", f"discord:{G}:{user_id}", f"dm:discord:{G}:{user_id}:{paper}", attempts=attempts)


def card(i: int) -> Card:
    return Card(title=f"Paper {i}", url=f"https://arxiv.org/abs/2401.{i:05d}", body=f"Abstract {i}",
                links=(("PDF", f"https://arxiv.org/pdf/2401.{i:05d}"),))


OPENER = Reply(text="**12 new papers** in cs.LG today")
NAME = f"cs.LG papers — {DAY}"


def posted(fake: FakeDiscord, channel_id: int) -> list[str]:
    return [m["content"] for m in fake.messages.get(channel_id, [])]


def message_posts(fake: FakeDiscord) -> list[dict[str, object]]:
    return [r.body for r in fake.requests if r.route == "/channels/{channel_id}/messages"]


async def test_daily_thread_in_a_text_channel(platform: DiscordPlatform, fake: FakeDiscord) -> None:
    out = await platform.send(opener(TEXT_ID), OPENER, thread_name=NAME, parent_id=None)
    assert out.ok and out.message_id
    thread = fake.thread(int(out.message_id))
    assert thread is not None and thread["parent_id"] == str(TEXT_ID) and thread["name"] == NAME
    assert posted(fake, TEXT_ID) == ["**12 new papers** in cs.LG today"]
    assert fake.messages[TEXT_ID][0]["id"] == out.message_id  # the thread hangs off the opener

    for n in range(2):
        p = await platform.send(post(TEXT_ID, n), Reply(text="", cards=(card(n),)), thread_name=None,
                                parent_id=out.message_id)
        assert p.ok
    in_thread = fake.messages[int(out.message_id)]
    assert [m["embeds"][0]["title"] for m in in_thread] == ["Paper 0", "Paper 1"]
    for body in message_posts(fake):
        assert isinstance(body, dict)
        assert body["enforce_nonce"] is True and len(str(body["nonce"])) <= 25
        assert body["allowed_mentions"] == {"parse": []}
    assert message_posts(fake)[0]["nonce"] == message_nonce(opener(TEXT_ID).key, 0)


async def test_daily_thread_in_a_forum(platform: DiscordPlatform, fake: FakeDiscord) -> None:
    out = await platform.send(opener(FORUM_ID), OPENER, thread_name=NAME, parent_id=None)
    assert out.ok and out.message_id
    thread = fake.thread(int(out.message_id))
    assert thread is not None and thread["parent_id"] == str(FORUM_ID) and thread["name"] == NAME
    assert posted(fake, int(out.message_id)) == ["**12 new papers** in cs.LG today"]  # the post's first message

    p = await platform.send(post(FORUM_ID, 0), Reply(text="", cards=(card(0),)), thread_name=None,
                            parent_id=out.message_id)
    assert p.ok
    assert len(fake.messages[int(out.message_id)]) == 2
    assert FORUM_ID not in fake.messages  # nothing is posted into the forum itself


async def test_thread_name_is_clamped(platform: DiscordPlatform, fake: FakeDiscord) -> None:
    out = await platform.send(opener(TEXT_ID), OPENER, thread_name="x\n" * 200, parent_id=None)
    assert out.ok and out.message_id
    name = fake.channels[int(out.message_id)]["name"]
    assert 1 <= len(name) <= 100 and "\n" not in name


async def test_resend_after_a_crash_does_not_duplicate(platform: DiscordPlatform, fake: FakeDiscord) -> None:
    first = await platform.send(opener(TEXT_ID), OPENER, thread_name=NAME, parent_id=None)
    p1 = await platform.send(post(TEXT_ID, 0), Reply(text="", cards=(card(0),)), thread_name=None,
                             parent_id=first.message_id)
    # The process died before the ledger marked them sent: the same rows come again, attempts=2.
    again = await platform.send(opener(TEXT_ID, attempts=2), OPENER, thread_name=NAME, parent_id=None)
    p2 = await platform.send(post(TEXT_ID, 0, attempts=2), Reply(text="", cards=(card(0),)), thread_name=None,
                             parent_id=again.message_id)
    assert again.ok and again.message_id == first.message_id
    assert p2.ok and p2.message_id == p1.message_id
    assert len(fake.messages[TEXT_ID]) == 1
    assert first.message_id is not None and len(fake.messages[int(first.message_id)]) == 1
    assert sum(1 for c in fake.channels.values() if c["type"] == 11) == 1


async def test_opener_message_sent_but_thread_not_created(platform: DiscordPlatform, fake: FakeDiscord) -> None:
    fake.fail("POST", r"/messages/\d+/threads$", 503, message="upstream connect error")
    broken = await platform.send(opener(TEXT_ID), OPENER, thread_name=NAME, parent_id=None)
    assert not broken.ok and not broken.permanent
    assert len(fake.messages[TEXT_ID]) == 1  # the opener is out, its thread is not

    resumed = await platform.send(opener(TEXT_ID, attempts=2), OPENER, thread_name=NAME, parent_id=None)
    assert resumed.ok and resumed.message_id is not None
    assert len(fake.messages[TEXT_ID]) == 1  # the nonce returned the existing opener
    assert resumed.message_id == fake.messages[TEXT_ID][0]["id"]
    assert fake.thread(int(resumed.message_id)) is not None


async def test_thread_already_exists_uses_the_message_id(platform: DiscordPlatform, fake: FakeDiscord) -> None:
    first = await platform.send(opener(TEXT_ID), OPENER, thread_name=NAME, parent_id=None)
    # A resume that did not know an attempt was made (attempts=1): Discord answers 160004.
    again = await platform.send(opener(TEXT_ID), OPENER, thread_name=NAME, parent_id=None)
    assert again.ok and again.message_id == first.message_id
    statuses = [r.status for r in fake.requests if r.route.endswith("/messages/{message_id}/threads")]
    assert statuses == [201, 400]
    assert len(fake.messages[TEXT_ID]) == 1


async def test_forum_resume_finds_the_existing_post(platform: DiscordPlatform, fake: FakeDiscord) -> None:
    first = await platform.send(opener(FORUM_ID), OPENER, thread_name=NAME, parent_id=None)
    again = await platform.send(opener(FORUM_ID, attempts=2), OPENER, thread_name=NAME, parent_id=None)
    assert again.ok and again.message_id == first.message_id
    assert sum(1 for c in fake.channels.values() if c["type"] == 11) == 1


async def test_resume_after_the_nonce_window_finds_posted_messages(platform: DiscordPlatform,
                                                                   fake: FakeDiscord) -> None:
    fake.fail("POST", r"/messages/\d+/threads$", 503)
    await platform.send(opener(TEXT_ID), OPENER, thread_name=NAME, parent_id=None)
    fake.forget_nonces()  # the restart came hours later: Discord no longer remembers the nonces
    start = await platform.send(opener(TEXT_ID, attempts=2), OPENER, thread_name=NAME, parent_id=None)
    assert start.ok and start.message_id is not None
    assert len(fake.messages[TEXT_ID]) == 1 and fake.thread(int(start.message_id)) is not None

    reply = Reply(text="", cards=tuple(card(i) for i in range(12)))
    first = await platform.send(post(TEXT_ID, 0), reply, thread_name=None, parent_id=start.message_id)
    fake.forget_nonces()
    again = await platform.send(post(TEXT_ID, 0, attempts=2), reply, thread_name=None, parent_id=start.message_id)
    assert again.ok and again.message_id == first.message_id
    assert [len(m["embeds"]) for m in fake.messages[int(start.message_id)]] == [10, 2]

    alert = Reply(text="New paper for your alert", cards=(card(3),))
    d1 = await platform.send(dm(USER_ID), alert, thread_name=None, parent_id=None)
    fake.forget_nonces()
    d2 = await platform.send(dm(USER_ID, attempts=2), alert, thread_name=None, parent_id=None)
    assert d1.ok and d2.ok and d1.message_id == d2.message_id
    assert len(fake.messages[fake.dm_channels[USER_ID]]) == 1


async def test_a_long_post_is_several_messages_each_sent_once(platform: DiscordPlatform, fake: FakeDiscord) -> None:
    start = await platform.send(opener(TEXT_ID), OPENER, thread_name=NAME, parent_id=None)
    assert start.message_id is not None
    thread = int(start.message_id)
    reply = Reply(text="Part two", cards=tuple(card(i) for i in range(23)))
    one = await platform.send(post(TEXT_ID, 1), reply, thread_name=None, parent_id=start.message_id)
    two = await platform.send(post(TEXT_ID, 1, attempts=2), reply, thread_name=None, parent_id=start.message_id)
    assert one.ok and two.ok and one.message_id == two.message_id == fake.messages[thread][0]["id"]
    assert [len(m["embeds"]) for m in fake.messages[thread]] == [10, 10, 3]
    assert len({m["nonce"] for m in fake.messages[thread]}) == 3


async def test_dm_alert(platform: DiscordPlatform, fake: FakeDiscord) -> None:
    out = await platform.send(dm(USER_ID), Reply(text="New paper for *gnn*", cards=(card(1),)), thread_name=None,
                              parent_id=None)
    assert out.ok
    dm_channel = fake.dm_channels[USER_ID]
    assert [m["id"] for m in fake.messages[dm_channel]] == [out.message_id]
    opened = [r.body for r in fake.requests if r.route == "/users/@me/channels"]
    assert opened and str(opened[0]["recipient_id"]) == str(USER_ID)


@pytest.mark.parametrize("code", [50007, 50278])
async def test_dm_to_a_user_who_blocks_the_bot(code: int, platform: DiscordPlatform, fake: FakeDiscord) -> None:
    fake.block_dm(USER_ID, code)
    out = await platform.send(dm(USER_ID), Reply(text="New paper"), thread_name=None, parent_id=None)
    assert (out.ok, out.unreachable_user, out.permanent) == (False, True, True)
    assert out.error and TOKEN not in out.error
    dm_posts = [r for r in fake.requests if r.route == "/channels/{channel_id}/messages"]
    assert len(dm_posts) == 1  # refused once, not retried


async def test_429_is_waited_out_and_the_message_exists_once(platform: DiscordPlatform, fake: FakeDiscord) -> None:
    fake.fail("POST", rf"/channels/{TEXT_ID}/messages$", 429, retry_after=0.2, message="You are being rate limited.")
    out = await platform.send(opener(TEXT_ID), OPENER, thread_name=NAME, parent_id=None)
    assert out.ok
    statuses = [r.status for r in fake.requests if r.path == f"/channels/{TEXT_ID}/messages"]
    assert statuses == [429, 200]
    assert len(fake.messages[TEXT_ID]) == 1


async def test_429_without_via_is_not_retried_blindly(platform: DiscordPlatform, fake: FakeDiscord) -> None:
    # Cloudflare's ban looks like a 429 without Via; discord.py gives up at once and so do we, for now.
    fake.fail("POST", rf"/channels/{TEXT_ID}/messages$", 429, retry_after=0.2, via=False)
    out = await platform.send(opener(TEXT_ID), OPENER, thread_name=NAME, parent_id=None)
    assert not out.ok and not out.permanent


async def test_503_leaves_the_row_for_the_next_run(platform: DiscordPlatform, fake: FakeDiscord) -> None:
    fake.fail("POST", rf"/channels/{TEXT_ID}/messages$", 503)
    out = await platform.send(opener(TEXT_ID), OPENER, thread_name=NAME, parent_id=None)
    assert not out.ok and not out.permanent and out.error and "503" in out.error
    assert TEXT_ID not in fake.messages


async def test_persistent_500_times_out_as_retryable(started: PlatformFactory, fake: FakeDiscord) -> None:
    platform = await started(send_timeout=1.5)
    fake.fail("POST", rf"/channels/{TEXT_ID}/messages$", 500, times=100)
    out = await platform.send(opener(TEXT_ID), OPENER, thread_name=NAME, parent_id=None)
    assert not out.ok and not out.permanent


async def test_500_once_is_retried_by_discord_py(platform: DiscordPlatform, fake: FakeDiscord) -> None:
    fake.fail("POST", rf"/channels/{TEXT_ID}/messages$", 500, times=1)
    out = await platform.send(opener(TEXT_ID), OPENER, thread_name=NAME, parent_id=None)
    assert out.ok
    assert len(fake.messages[TEXT_ID]) == 1


async def test_unknown_channel_is_permanent(platform: DiscordPlatform, fake: FakeDiscord) -> None:
    out = await platform.send(opener(123456789012345678), OPENER, thread_name=NAME, parent_id=None)
    assert not out.ok and out.permanent and not out.unreachable_user
    assert out.error and "no longer exists" in out.error


@pytest.mark.parametrize(("status", "code"), [(403, 50013), (403, 50001)])
async def test_missing_permissions_is_permanent(status: int, code: int, platform: DiscordPlatform,
                                                fake: FakeDiscord) -> None:
    fake.fail("POST", rf"/channels/{TEXT_ID}/messages$", status, code=code, message="Missing Permissions")
    out = await platform.send(opener(TEXT_ID), OPENER, thread_name=NAME, parent_id=None)
    assert not out.ok and out.permanent and out.error and "permission" in out.error
    assert TOKEN not in out.error


async def test_post_into_an_archived_thread_unarchives_it(platform: DiscordPlatform, fake: FakeDiscord) -> None:
    start = await platform.send(opener(TEXT_ID), OPENER, thread_name=NAME, parent_id=None)
    assert start.message_id is not None
    fake.lock_thread(int(start.message_id), archived=True, locked=False)
    out = await platform.send(post(TEXT_ID, 0), Reply(text="late"), thread_name=None, parent_id=start.message_id)
    assert out.ok


async def test_post_into_a_locked_thread_tries_to_reopen_it(platform: DiscordPlatform, fake: FakeDiscord) -> None:
    start = await platform.send(opener(TEXT_ID), OPENER, thread_name=NAME, parent_id=None)
    assert start.message_id is not None
    fake.lock_thread(int(start.message_id))
    out = await platform.send(post(TEXT_ID, 0), Reply(text="late"), thread_name=None, parent_id=start.message_id)
    assert out.ok
    patches = [r.body for r in fake.requests if r.method == "PATCH"]
    assert patches == [{"archived": False, "locked": False}]


async def test_a_locked_thread_we_cannot_reopen_is_permanent(platform: DiscordPlatform, fake: FakeDiscord) -> None:
    start = await platform.send(opener(TEXT_ID), OPENER, thread_name=NAME, parent_id=None)
    assert start.message_id is not None
    fake.lock_thread(int(start.message_id))
    fake.fail("PATCH", r"/channels/\d+$", 403, code=50013, message="Missing Permissions")
    out = await platform.send(post(TEXT_ID, 0), Reply(text="late"), thread_name=None, parent_id=start.message_id)
    assert not out.ok and out.permanent


async def test_bad_rows_are_permanent_errors(platform: DiscordPlatform, fake: FakeDiscord) -> None:
    no_parent = await platform.send(post(TEXT_ID, 0), Reply(text="x"), thread_name=None, parent_id=None)
    assert not no_parent.ok and no_parent.permanent
    wrong = await platform.send(delivery("dm", "slack:T1:U1", "k"), Reply(text="x"), thread_name=None,
                                parent_id=None)
    assert not wrong.ok and wrong.permanent
    assert fake.all_messages() == []


async def test_bot_identity_owns_the_threads(platform: DiscordPlatform, fake: FakeDiscord) -> None:
    out = await platform.send(opener(TEXT_ID), OPENER, thread_name=NAME, parent_id=None)
    assert out.message_id is not None
    assert fake.channels[int(out.message_id)]["owner_id"] == str(BOT_ID)


async def test_openers_with_many_cards_put_the_rest_in_the_thread(platform: DiscordPlatform,
                                                                  fake: FakeDiscord) -> None:
    reply = Reply(text="Today", cards=tuple(card(i) for i in range(14)))
    for channel_id in (TEXT_ID, FORUM_ID):
        out = await platform.send(opener(channel_id), reply, thread_name=NAME, parent_id=None)
        assert out.ok and out.message_id is not None
        thread_msgs = fake.messages[int(out.message_id)]
        if channel_id == TEXT_ID:
            assert [len(m["embeds"]) for m in fake.messages[TEXT_ID]] == [10]
            assert [len(m["embeds"]) for m in thread_msgs] == [4]
        else:
            assert [len(m["embeds"]) for m in thread_msgs] == [10, 4]


async def test_a_revoked_token_keeps_rows_pending(platform: DiscordPlatform, fake: FakeDiscord) -> None:
    fake.fail("POST", rf"/channels/{TEXT_ID}/messages$", 401, message="401: Unauthorized")
    out = await platform.send(opener(TEXT_ID), OPENER, thread_name=NAME, parent_id=None)
    assert not out.ok and not out.permanent and out.error and TOKEN not in out.error


async def test_send_before_start_is_retryable(fake: FakeDiscord) -> None:
    from tests.adapters.discord.conftest import FakeService, MemoryMeta, make_settings

    idle = DiscordPlatform(make_settings(fake), FakeService(), MemoryMeta())
    out = await idle.send(opener(TEXT_ID), OPENER, thread_name=NAME, parent_id=None)
    assert not out.ok and not out.permanent
    assert fake.requests == []

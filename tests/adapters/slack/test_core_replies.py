"""The core's real replies (sample papers, daily thread, alerts, help) go through render and send cleanly."""

from __future__ import annotations

from datetime import UTC, date, datetime

from adapters.slack.render import render_reply
from bot import replies
from bot.models import ChannelRef, ChannelRule, Delivery, DeliveryState
from bot.sample import load_sample
from tests.adapters.slack.conftest import PlatformFactory
from tests.adapters.slack.fake_slack import TEAM_ID, FakeSlack


def _row(key: str, kind: str, target: str, i: int) -> Delivery:
    return Delivery(
        id=i,
        key=key,
        platform="slack",
        target=target,
        kind=kind,
        state=DeliveryState.PENDING,
        attempts=1,
        created=datetime.now(UTC),
    )


async def test_sample_daily_thread_and_alert_reach_the_fake_within_limits(
    fake: FakeSlack, make_platform: PlatformFactory
) -> None:
    day = date(2026, 11, 27)
    papers = load_sample(announced=day)
    channel = ChannelRef("slack", "C0ML", TEAM_ID)
    thread = replies.daily_thread(ChannelRule(channel, categories=("cs.LG",), cap=5), day, papers)
    platform = await make_platform(http=False)
    opener = await platform.send(
        _row(thread.thread_key, "opener", channel.key, 0), thread.opener, thread_name=thread.title, parent_id=None
    )
    assert opener.ok and opener.message_id
    for i, post in enumerate(thread.posts, start=1):
        outcome = await platform.send(
            _row(f"{thread.thread_key}:{post.key}", "post", channel.key, i),
            post.reply,
            thread_name=None,
            parent_id=opener.message_id,
        )
        assert outcome.ok, outcome.error
    alert = replies.alert_reply(papers[:3], {p.arxiv_id: ["graph*"] for p in papers[:3]})
    dm = await platform.send(
        _row("dm:1", "dm", f"slack:{TEAM_ID}:UMEMBER", 99), alert, thread_name=None, parent_id=None
    )
    assert dm.ok
    assert fake.violations == []
    in_thread = [m for m in fake.posts_in("C0ML") if m.thread_ts == opener.message_id]
    assert len(in_thread) >= len(thread.posts)
    assert fake.posts_in("C0ML")[0].blocks[0]["type"] == "header"


def test_every_sample_paper_detail_and_help_render() -> None:
    for paper in load_sample():
        for message in render_reply(replies.paper_detail(paper)):
            assert len(message.blocks) <= 50
            assert all(len(b["text"]["text"]) <= 3000 for b in message.blocks if b["type"] == "section")
    [help_message] = render_reply(replies.info(replies.help_text()))
    text = "".join(b["text"]["text"] for b in help_message.blocks)
    assert "*paperboy*" in text and "`search QUERY`" in text and "**" not in text

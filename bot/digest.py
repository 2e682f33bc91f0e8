"""Daily threads: a channel's queued papers become ledger rows (opener, then posts), planned in one transaction."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from bot import replies
from bot.deps import Deps
from bot.models import ChannelRule, DailyThread, Delivery, DeliveryState


@dataclass(frozen=True, slots=True)
class PlanReport:
    channel: str
    papers: int
    messages: int


def thread_rows(thread: DailyThread) -> list[Delivery]:
    ch = thread.channel
    opener_key = thread.thread_key + ":opener"
    rows = [Delivery(id=0, key=opener_key, platform=ch.platform, target=ch.key, kind="opener",
                     state=DeliveryState.PENDING,
                     payload=replies.reply_to_json(thread.opener, thread_name=thread.title))]
    for post in thread.posts:
        rows.append(Delivery(id=0, key=f"{thread.thread_key}:{post.key}", platform=ch.platform, target=ch.key,
                             kind="post", state=DeliveryState.PENDING, payload=replies.reply_to_json(post.reply),
                             parent_key=opener_key, paper_ids=post.paper_ids))
    return rows


async def plan_thread(deps: Deps, rule: ChannelRule, day: date) -> PlanReport:
    """Claim the channel's queued papers for `day` and plan its thread. Idempotent: a second call the same day
    adds only papers queued since (into the same thread), and planning twice never doubles a row."""
    ids = await deps.channels.queued(rule.channel)
    if not ids:
        return PlanReport(rule.channel.key, 0, 0)
    papers = await deps.papers.get_many(ids)
    thread = replies.daily_thread(rule, day, papers)
    rows = thread_rows(thread)
    added = await deps.ledger.plan(rows, claim=(rule.channel, day, ids))
    if added:
        deps.kick()
    return PlanReport(rule.channel.key, len(papers), added)

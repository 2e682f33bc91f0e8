"""Ingest: papers from a source into the store, then routing: new papers to channel queues and alert DMs."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime

from bot import replies
from bot.deps import Deps
from bot.matching import Found, Standing, match_papers
from bot.models import ChannelRef, ChannelRule, Delivery, DeliveryState, FetchResult, Paper, SourceStatus, UserRef
from bot.ports import PaperSource
from bot.query import Query, QueryError, parse

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class IngestReport:
    source: str
    outcome: str
    fetched: int
    new: int
    updated: int
    detail: str = ""
    feed_day: date | None = None
    new_ids: tuple[str, ...] = ()

    def line(self) -> str:
        text = f"{self.source}: {self.outcome}, {self.fetched} fetched, {self.new} new, {self.updated} updated"
        return text + (f" ({self.detail})" if self.detail else "")


@dataclass(frozen=True, slots=True)
class RouteReport:
    papers: int
    queued: int
    alerts: int


async def store_papers(deps: Deps, result: FetchResult, *, route: bool = True) -> IngestReport:
    now = deps.clock.now()
    upsert = await deps.papers.upsert(result.papers, source=result.source, seen_at=now, route=route)
    report = IngestReport(result.source, result.outcome, len(result.papers), len(upsert.new), len(upsert.updated),
                          result.detail, result.feed_day, upsert.new)
    await deps.status.record_fetch(SourceStatus(result.source, now, result.outcome, len(result.papers),
                                                report.line()))
    return report


async def run_source(deps: Deps, source: PaperSource) -> IngestReport:
    """Fetch one source and store what it gave; a failing source is reported, never raised."""
    try:
        result = await source.fetch(deps.clock.now())
    except Exception as exc:  # a source bug must not stop the others; the status shows it
        log.exception("source %s failed", source.name)
        result = FetchResult(source.name, outcome="error", detail=f"{type(exc).__name__}: {str(exc)[:200]}")
    return await store_papers(deps, result)


def rule_query(rule: ChannelRule, today: datetime | None = None) -> Query | None:
    """A channel's follow rule as one query: any of its categories AND its query. None = everything."""
    parts = []
    if rule.categories:
        parts.append("(" + " OR ".join(f"cat:{c}" for c in rule.categories) + ")")
    if rule.query:
        parts.append(f"({rule.query})")
    if not parts:
        return None
    return parse(" ".join(parts), today=today.date() if today else None)


def dm_target(user: UserRef) -> str:
    return user.key


def _dm_key(user: UserRef, ids: Sequence[str]) -> str:
    digest = hashlib.sha256(",".join(sorted(ids)).encode()).hexdigest()[:16]
    return f"dm:{user.key}:{digest}"


async def route_new(deps: Deps, batch: int = 2000) -> RouteReport:
    """Queue unrouted papers for every channel whose rule matches and plan one DM per user per run.

    Everything for a batch commits in one transaction with the papers marked routed, so a crash here neither
    loses nor doubles a paper: the restart routes the same batch again.
    """
    total_papers = total_queued = total_alerts = 0
    now = deps.clock.now()
    if not await deps.papers.unrouted(1):
        return RouteReport(0, 0, 0)  # nothing new: don't load or compile a single alert
    rules = await deps.channels.rules()
    standing_rules: list[Standing] = []
    rule_by_key: dict[str, ChannelRule] = {}
    for rule in rules:
        try:
            q = rule_query(rule, now)
        except QueryError as exc:
            log.warning("channel %s has an unusable rule: %s", rule.channel.key, exc)
            continue
        rule_by_key[rule.channel.key] = rule
        standing_rules.append(Standing(rule.channel.key, q if q is not None else _match_all()))
    standing_subs: list[Standing] = []
    sub_owner: dict[str, UserRef] = {}
    sub_order: dict[str, int] = {}
    sub_text: dict[str, str] = {}
    cache = deps.queries
    async for sub in deps.subscriptions.all():
        # Alerts hold no relative dates (subscribe refuses since:), so a parsed query depends on its text only.
        parsed = cache.get(sub.query)
        if parsed is None:
            try:
                parsed = parse(sub.query, today=now.date())
            except QueryError:
                continue
            cache.put(sub.query, parsed)
        key = f"sub:{sub.id}"
        standing_subs.append(Standing(key, parsed))
        sub_owner[key] = sub.user
        sub_order[key] = len(sub_order)
        sub_text[key] = sub.query
    matcher = cache.matcher(standing_rules + standing_subs)
    while True:
        papers = await deps.papers.unrouted(batch)
        if not papers:
            break
        enqueue: list[tuple[ChannelRef, list[str]]] = []
        rows: list[Delivery] = []
        hits = match_papers(papers, standing_rules + standing_subs, matcher=matcher)
        # One walk over what matched (not a lookup per subscription: there may be a million), then in
        # subscription order, which is the order a user's matched terms are listed in.
        for_rules: dict[str, Found] = {}
        for_subs: list[tuple[int, str, Found]] = []
        for key, answer in hits.pairs():
            if key in rule_by_key:
                for_rules[key] = answer
            elif (order := sub_order.get(key)) is not None:
                for_subs.append((order, key, answer))
        for_subs.sort(key=lambda hit: hit[0])
        for key, rule in rule_by_key.items():
            matched = [p.arxiv_id for p, _ in for_rules.get(key, ())]
            if matched:
                enqueue.append((rule.channel, matched))
                total_queued += len(matched)
        per_user: dict[str, tuple[UserRef, dict[str, Paper], dict[str, list[str]]]] = {}
        for _, key, answer in for_subs:
            user = sub_owner[key]
            for paper, terms in answer:
                entry = per_user.setdefault(user.key, (user, {}, {}))
                entry[1][paper.arxiv_id] = paper
                entry[2].setdefault(paper.arxiv_id, [])
                for t in terms or [sub_text[key]]:
                    if t not in entry[2][paper.arxiv_id]:
                        entry[2][paper.arxiv_id].append(t)
        for user, found, matched_by in per_user.values():
            fresh = [p for pid, p in found.items() if not await deps.ledger.find(dm_target(user), pid)]
            if not fresh:
                continue
            reply = replies.alert_reply(fresh, matched_by)
            ids = tuple(p.arxiv_id for p in fresh)
            rows.append(Delivery(id=0, key=_dm_key(user, ids), platform=user.platform, target=dm_target(user),
                                 kind="dm", state=DeliveryState.PENDING, payload=replies.reply_to_json(reply),
                                 paper_ids=ids))
        total_alerts += await deps.ledger.commit_routing(enqueue, rows, [p.arxiv_id for p in papers], at=now)
        total_papers += len(papers)
        if len(papers) < batch:
            break
    if total_alerts:
        deps.kick()
    return RouteReport(total_papers, total_queued, total_alerts)


def _match_all() -> Query:
    return Query(text="", root=None)

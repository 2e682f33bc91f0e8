"""In-memory test doubles for the store ports, a scriptable chat platform and a manual clock.

The stores satisfy bot.ports structurally and follow the same contract as storage.sqlite (tests/storage/
test_contract.py runs one suite over both). Paper merging reuses storage.sqlite.merge_paper: which fields a new
record may overwrite is domain policy, and two copies of it would drift.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from typing import Any

from bot.deps import Config, Deps
from bot.matching import doc_of
from bot.models import (
    ChannelRef,
    ChannelRule,
    Delivery,
    DeliveryState,
    Paper,
    Reply,
    SearchHit,
    SearchResult,
    SourceStatus,
    Subscription,
    UserRef,
)
from bot.ports import SendOutcome, UpsertResult
from bot.query import Query, Term, matches, term_matches
from storage.sqlite import merge_paper

T0 = datetime(2026, 11, 24, 15, 0, tzinfo=UTC)  # a Tuesday afternoon, after Monday evening's announcement


class ManualClock:
    """A clock that only moves when told to."""

    def __init__(self, start: datetime = T0) -> None:
        if start.tzinfo is None:
            raise ValueError("ManualClock needs an aware datetime")
        self.current = start

    def now(self) -> datetime:
        return self.current

    def advance(self, **delta: float) -> datetime:
        self.current += timedelta(**delta)
        return self.current

    def set(self, when: datetime) -> None:
        self.current = when


def _stored(p: Paper) -> Paper:
    """What a store gives back: the record's provenance fields are not part of the stored paper."""
    return replace(p, source="", announce_type=None)


class FakePaperStore:
    def __init__(self) -> None:
        self._papers: dict[str, Paper] = {}
        self._seq: dict[str, int] = {}
        self._routed: dict[str, bool] = {}
        self._sources: dict[str, dict[str, datetime]] = {}
        self._next = itertools.count(1)

    async def upsert(
        self, papers: Sequence[Paper], *, source: str, seen_at: datetime, route: bool = True
    ) -> UpsertResult:
        incoming: dict[str, Paper] = {}
        for p in papers:
            prev = incoming.get(p.arxiv_id)
            incoming[p.arxiv_id] = merge_paper(prev, p) if prev else p
        new: list[str] = []
        updated: list[str] = []
        unchanged = 0
        for pid, paper in incoming.items():
            old = self._papers.get(pid)
            if old is None:
                fresh = paper.is_announcement and route
                self._papers[pid] = _stored(paper)
                self._seq[pid] = next(self._next)
                self._routed[pid] = not fresh
                if fresh:
                    new.append(pid)
            else:
                merged = merge_paper(old, paper)
                if merged == old:
                    unchanged += 1
                else:
                    self._papers[pid] = _stored(merged)
                    updated.append(pid)
            self._sources.setdefault(pid, {}).setdefault(source, seen_at)
        return UpsertResult(tuple(new), tuple(updated), unchanged)

    async def unrouted(self, limit: int = 5000) -> list[Paper]:
        ids = sorted((pid for pid, r in self._routed.items() if not r), key=self._seq.__getitem__)
        return [self._papers[pid] for pid in ids[:limit]]

    def mark_routed(self, ids: Sequence[str]) -> None:
        for pid in ids:
            if pid in self._routed:
                self._routed[pid] = True

    async def latest_announced(self) -> date | None:
        days = [p.announced for p in self._papers.values() if p.announced]
        return max(days) if days else None

    async def get(self, arxiv_id: str) -> Paper | None:
        return self._papers.get(arxiv_id)

    async def get_many(self, arxiv_ids: Sequence[str]) -> list[Paper]:
        return [self._papers[i] for i in dict.fromkeys(arxiv_ids) if i in self._papers]

    async def search(
        self, query: Query, *, limit: int = 10, offset: int = 0, order: str = "rank", count: bool = False
    ) -> SearchResult:
        limit = max(1, min(limit, 100))
        found = [p for p in self._papers.values() if matches(query, doc_of(p))]
        scored = [(self._score(query, p), p) for p in found]
        if order == "recent" or query.root is None:  # nothing to rank by: newest first, as SQLite does
            scored.sort(key=lambda sp: (sp[1].published or date.min, self._seq[sp[1].arxiv_id]), reverse=True)
        else:
            scored.sort(key=lambda sp: (-sp[0], sp[1].arxiv_id))
        page = scored[offset : offset + limit]
        return SearchResult(tuple(SearchHit(p, s) for s, p in page), total=len(found) if count else None,
                            notes=query.notes)

    @staticmethod
    def _score(query: Query, paper: Paper) -> float:
        """Simple and deterministic: a positive term in the title counts 10, elsewhere 1."""
        doc = doc_of(paper)
        score = 0.0
        for leaf in query.terms():
            if isinstance(leaf, Term):
                score += 10.0 if term_matches(replace(leaf, column="title"), doc) else 1.0
        return score

    async def count(self) -> int:
        return len(self._papers)

    async def count_announced(self, day: date) -> int:
        return sum(1 for p in self._papers.values() if p.announced == day)

    async def sources_of(self, arxiv_id: str) -> list[tuple[str, datetime]]:
        return sorted(self._sources.get(arxiv_id, {}).items(), key=lambda st: st[1])


@dataclass
class _Queued:
    seq: int
    queued_at: datetime
    thread_day: date | None = None


class FakeChannelStore:
    def __init__(self) -> None:
        self._rules: dict[str, ChannelRule] = {}
        self._queue: dict[str, dict[str, _Queued]] = {}

    async def set_rule(self, rule: ChannelRule) -> None:
        self._rules[rule.channel.key] = rule

    async def get_rule(self, channel: ChannelRef) -> ChannelRule | None:
        return self._rules.get(channel.key)

    async def remove_rule(self, channel: ChannelRef) -> bool:
        removed = self._rules.pop(channel.key, None) is not None
        queue = self._queue.get(channel.key, {})
        for pid in [pid for pid, q in queue.items() if q.thread_day is None]:
            del queue[pid]
        return removed

    async def rules(self, platform: str | None = None) -> list[ChannelRule]:
        return [r for k, r in sorted(self._rules.items()) if platform is None or r.channel.platform == platform]

    async def enqueue(self, channel: ChannelRef, arxiv_ids: Sequence[str], *, at: datetime) -> int:
        queue = self._queue.setdefault(channel.key, {})
        seq = max((q.seq for q in queue.values()), default=0)
        added = 0
        for pid in arxiv_ids:
            if pid in queue:
                continue
            seq += 1
            queue[pid] = _Queued(seq, at)
            added += 1
        return added

    async def queued(self, channel: ChannelRef) -> list[str]:
        queue = self._queue.get(channel.key, {})
        return [pid for pid, q in sorted(queue.items(), key=lambda kv: kv[1].seq) if q.thread_day is None]

    async def queue_state(self, channel: ChannelRef, arxiv_id: str) -> str | None:
        q = self._queue.get(channel.key, {}).get(arxiv_id)
        if q is None:
            return None
        return q.thread_day.isoformat() if q.thread_day else "queued"

    async def set_paused(self, channel: ChannelRef, reason: str | None) -> None:
        rule = self._rules.get(channel.key)
        if rule is not None:
            self._rules[channel.key] = replace(rule, paused_reason=reason)

    def claim(self, channel: ChannelRef, day: date, ids: Sequence[str]) -> None:
        queue = self._queue.get(channel.key, {})
        for pid in ids:
            q = queue.get(pid)
            if q is not None and q.thread_day is None:
                q.thread_day = day


@dataclass
class _User:
    unreachable: str | None = None
    notice: str | None = None


class FakeSubscriptionStore:
    def __init__(self) -> None:
        self._subs: dict[int, tuple[str, Subscription]] = {}
        self._users: dict[str, _User] = {}
        self._next = itertools.count(1)

    async def add(self, user: UserRef, query: str, *, at: datetime) -> Subscription:
        for key, sub in self._subs.values():
            if key == user.key and sub.query == query:
                return sub
        sub = Subscription(next(self._next), user, query, at)
        self._subs[sub.id] = (user.key, sub)
        return sub

    async def remove(self, user: UserRef, sub_id: int) -> bool:
        entry = self._subs.get(sub_id)
        if entry is None or entry[0] != user.key:
            return False
        del self._subs[sub_id]
        return True

    async def for_user(self, user: UserRef) -> list[Subscription]:
        return [s for k, s in sorted(self._subs.values(), key=lambda e: e[1].id) if k == user.key]

    async def count_for(self, user: UserRef) -> int:
        return len(await self.for_user(user))

    async def all(self) -> AsyncIterator[Subscription]:
        for _, sub in sorted(self._subs.values(), key=lambda e: e[1].id):
            yield sub

    async def set_unreachable(self, user: UserRef, reason: str | None) -> None:
        state = self._users.setdefault(user.key, _User())
        state.unreachable = reason
        if reason:
            state.notice = (f"I could not send you alerts by direct message ({reason}). Open your DMs to this bot "
                            "and use any command to turn alerts back on.")

    async def unreachable(self, user: UserRef) -> str | None:
        state = self._users.get(user.key)
        return state.unreachable if state else None

    async def take_notice(self, user: UserRef) -> str | None:
        state = self._users.get(user.key)
        if state is None or state.notice is None:
            return None
        notice = state.notice
        state.notice = None
        state.unreachable = None
        return notice


class FakeDeliveryLedger:
    def __init__(self, papers: FakePaperStore, channels: FakeChannelStore, clock: ManualClock) -> None:
        self._papers = papers
        self._channels = channels
        self._clock = clock
        self._rows: dict[int, Delivery] = {}
        self._by_key: dict[str, int] = {}
        self._next = itertools.count(1)
        self._touched = itertools.count(1)
        self._touch: dict[int, int] = {}

    def _insert(self, rows: Sequence[Delivery]) -> int:
        added = 0
        now = self._clock.now()
        for d in rows:
            if d.key in self._by_key:
                continue
            did = next(self._next)
            self._rows[did] = replace(d, id=did, state=DeliveryState.PENDING, attempts=0, message_id=None,
                                      error=None, created=now, updated=now)
            self._by_key[d.key] = did
            self._touch[did] = next(self._touched)
            added += 1
        return added

    async def plan(
        self, rows: Sequence[Delivery], *, claim: tuple[ChannelRef, date, Sequence[str]] | None = None
    ) -> int:
        added = self._insert(rows)
        if claim is not None:
            self._channels.claim(*claim)
        return added

    async def commit_routing(
        self,
        enqueue: Sequence[tuple[ChannelRef, Sequence[str]]],
        rows: Sequence[Delivery],
        routed: Sequence[str],
        *,
        at: datetime,
    ) -> int:
        for channel, ids in enqueue:
            await self._channels.enqueue(channel, ids, at=at)
        added = self._insert(rows)
        self._papers.mark_routed(routed)
        return added

    async def pending(self, platform: str | None = None, limit: int = 1000) -> list[Delivery]:
        states = (DeliveryState.PENDING, DeliveryState.FAILED)
        out = [d for _, d in sorted(self._rows.items())
               if d.state in states and (platform is None or d.platform == platform)]
        return out[:limit]

    async def get(self, key: str) -> Delivery | None:
        did = self._by_key.get(key)
        return self._rows[did] if did is not None else None

    def _update(self, delivery_id: int, **changes: Any) -> None:
        row = self._rows.get(delivery_id)
        if row is None:
            return
        self._rows[delivery_id] = replace(row, updated=self._clock.now(), **changes)
        self._touch[delivery_id] = next(self._touched)

    async def begin_attempt(self, delivery_id: int) -> None:
        row = self._rows.get(delivery_id)
        if row is not None:
            self._update(delivery_id, attempts=row.attempts + 1)

    async def mark_sent(self, delivery_id: int, message_id: str) -> None:
        self._update(delivery_id, state=DeliveryState.SENT, message_id=message_id, error=None)

    async def mark_failed(self, delivery_id: int, error: str, *, permanent: bool) -> None:
        state = DeliveryState.SKIPPED if permanent else DeliveryState.FAILED
        self._update(delivery_id, state=state, error=error[:500])

    async def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for d in self._rows.values():
            out[d.state.value] = out.get(d.state.value, 0) + 1
        return out

    async def for_target(self, target: str, limit: int = 50) -> list[Delivery]:
        return [d for _, d in sorted(self._rows.items(), reverse=True) if d.target == target][:limit]

    async def failures(self, limit: int = 10) -> list[Delivery]:
        failed = [d for d in self._rows.values() if d.state in (DeliveryState.FAILED, DeliveryState.SKIPPED)]
        failed.sort(key=lambda d: self._touch[d.id], reverse=True)
        return failed[:limit]

    async def find(self, target_prefix: str, paper_id: str) -> list[Delivery]:
        return [d for _, d in sorted(self._rows.items()) if d.target == target_prefix and paper_id in d.paper_ids]


class FakeStatusStore:
    def __init__(self) -> None:
        self._fetches: dict[str, SourceStatus] = {}
        self._meta: dict[str, str] = {}

    async def record_fetch(self, status: SourceStatus) -> None:
        self._fetches[status.source] = replace(status, detail=status.detail[:500])

    async def fetch_statuses(self) -> list[SourceStatus]:
        return [s for _, s in sorted(self._fetches.items())]

    async def get_meta(self, key: str) -> str | None:
        return self._meta.get(key)

    async def set_meta(self, key: str, value: str) -> None:
        self._meta[key] = value


class FakeStores:
    """The in-memory twin of storage.sqlite.Stores: the same attribute names, wired to share state."""

    def __init__(self, clock: ManualClock | None = None) -> None:
        self.clock = clock or ManualClock()
        self.papers = FakePaperStore()
        self.channels = FakeChannelStore()
        self.subscriptions = FakeSubscriptionStore()
        self.ledger = FakeDeliveryLedger(self.papers, self.channels, self.clock)
        self.status = FakeStatusStore()

    async def close(self) -> None:
        return None


# ---------------------------------------------------------------- the chat platform


class SimulatedCrash(BaseException):
    """Raised by FakeChatPlatform to stand for the process dying mid-send; not an Exception, so nothing
    in the core catches it, exactly like a kill."""


@dataclass(frozen=True, slots=True)
class SentMessage:
    delivery_key: str
    kind: str
    target: str
    reply: Reply
    thread_name: str | None
    parent_id: str | None
    message_id: str


Script = Callable[[Delivery], SendOutcome | BaseException | None]


@dataclass
class FakeChatPlatform:
    """Records every message that really went out; can be scripted to fail per target or per call.

    Like the real platforms it reconciles a retried row (`delivery.attempts > 1`): when an earlier attempt
    did go out, it answers with that message's id instead of posting again.
    """

    name: str = "console"
    sent: list[SentMessage] = field(default_factory=list)
    calls: list[Delivery] = field(default_factory=list)
    unreachable: set[str] = field(default_factory=set)  # user keys whose DMs are closed
    gone: set[str] = field(default_factory=set)  # channel keys that were deleted
    transient: dict[str, int] = field(default_factory=dict)  # target -> how many calls still fail
    script: list[Script] = field(default_factory=list)  # consulted first; None = carry on
    crash_after_send: set[str] = field(default_factory=set)  # delivery keys: post, then "die" before answering
    violations: list[str] = field(default_factory=list)  # contract breaches seen by the platform
    started: bool = False
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    async def start(self) -> None:
        self.started = True

    async def stop(self) -> None:
        self.started = False

    def by_key(self) -> dict[str, SentMessage]:
        return {m.delivery_key: m for m in self.sent}

    def keys(self) -> list[str]:
        return [m.delivery_key for m in self.sent]

    async def send(
        self, delivery: Delivery, reply: Reply, *, thread_name: str | None, parent_id: str | None
    ) -> SendOutcome:
        self.calls.append(delivery)
        for rule in self.script:
            result = rule(delivery)
            if isinstance(result, BaseException):
                raise result
            if result is not None:
                return result
        if delivery.attempts > 1:
            earlier = self.by_key().get(delivery.key)
            if earlier is not None:
                return SendOutcome(ok=True, message_id=earlier.message_id)
        if delivery.kind == "dm" and delivery.target in self.unreachable:
            return SendOutcome(ok=False, error="Cannot send messages to this user", permanent=True,
                               unreachable_user=True)
        if delivery.target in self.gone:
            return SendOutcome(ok=False, error="Unknown Channel", permanent=True)
        if self.transient.get(delivery.target, 0) > 0:
            self.transient[delivery.target] -= 1
            return SendOutcome(ok=False, error="503 Service Unavailable", retry_after=1.0)
        if delivery.kind == "post" and parent_id is None:
            # Recorded as well as raised: the delivery loop turns exceptions into failed rows.
            self.violations.append(f"post {delivery.key} sent without its opener's id")
            raise AssertionError(self.violations[-1])
        mid = f"{self.name}-m{next(self._ids)}"
        self.sent.append(SentMessage(delivery.key, delivery.kind, delivery.target, reply, thread_name, parent_id,
                                     mid))
        if delivery.key in self.crash_after_send:
            self.crash_after_send.discard(delivery.key)
            raise SimulatedCrash(delivery.key)
        return SendOutcome(ok=True, message_id=mid)


# ---------------------------------------------------------------- papers and deps

DAY = date(2026, 11, 23)  # the announcement T0 falls after


def make_paper(arxiv_id: str, title: str = "A paper", abstract: str = "", *, authors: Sequence[str] = ("Ada Lovelace",),
               categories: Sequence[str] = ("cs.LG",), version: int = 1, announced: date | None = DAY,
               announce_type: str | None = "new", upvotes: int | None = None, source: str = "rss",
               **more: Any) -> Paper:
    return Paper(arxiv_id=arxiv_id, title=title, abstract=abstract, authors=tuple(authors),
                 categories=tuple(categories), version=version, announced=announced, announce_type=announce_type,
                 upvotes=upvotes, source=source, **more)



def make_deps(
    stores: Any | None = None,
    *,
    clock: ManualClock | None = None,
    config: Config | None = None,
    kick: Callable[[], None] | None = None,
) -> Deps:
    """Deps over fakes (default) or over any bundle with the Stores attributes (storage.sqlite.Stores)."""
    if stores is None:
        stores = FakeStores(clock)
    clock = clock or getattr(stores, "clock", None) or ManualClock()
    deps = Deps(stores.papers, stores.channels, stores.subscriptions, stores.ledger, stores.status, clock,
                config or Config())
    if kick is not None:
        deps.kick = kick
    return deps

"""The core flows end to end: ingest -> route -> daily thread -> delivery, and alert DMs, with scripted platforms.

Every flow runs over the in-memory fakes and over SQLite: the guarantees (each paper once per channel, each
(user, paper) once, nothing lost on a failure or a crash) are the store of record's, not only the fakes'.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.commands import RateLimiter, Router, parse_line
from bot.delivery import DeliveryReport, deliver_pending
from bot.deps import Deps
from bot.digest import PlanReport, plan_thread
from bot.handlers import HANDLERS
from bot.ingest import RouteReport, route_new, run_source, store_papers
from bot.models import (
    ChannelRef,
    ChannelRule,
    Command,
    Delivery,
    DeliveryState,
    FetchResult,
    Paper,
    Reply,
    UserRef,
)
from bot.ports import SendOutcome
from storage.sqlite import Stores
from tests.core.fakes import (
    DAY,
    T0,
    FakeChatPlatform,
    FakeStores,
    ManualClock,
    SentMessage,
    SimulatedCrash,
    make_deps,
    make_paper,
)

LG = ChannelRef("discord", "c-lg", "g1", name="ml")
GRAPHS = ChannelRef("slack", "C-GRAPH", "T1", name="graphs")
ALICE = UserRef("discord", "u-alice", "alice", "g1")
BOB = UserRef("slack", "U-BOB", "bob", "T1")


class World:
    def __init__(self, stores: Any, clock: ManualClock) -> None:
        self.stores = stores
        self.clock = clock
        self.kicks = 0
        self.deps: Deps = make_deps(stores, clock=clock, kick=self._kick)
        self.discord = FakeChatPlatform("discord")
        self.slack = FakeChatPlatform("slack")
        self.router = Router(HANDLERS, RateLimiter(limit=10_000))

    def _kick(self) -> None:
        self.kicks += 1

    @property
    def platforms(self) -> dict[str, FakeChatPlatform]:
        return {"discord": self.discord, "slack": self.slack}

    async def ingest(self, source: str, papers: Sequence[Paper]) -> RouteReport:
        await store_papers(self.deps, FetchResult(source, tuple(papers)))
        return await route_new(self.deps)

    async def digest(self, day: date) -> list[PlanReport]:
        return [await plan_thread(self.deps, rule, day) for rule in await self.deps.channels.rules()]

    async def deliver(self) -> DeliveryReport:
        return await deliver_pending(self.deps, self.platforms)

    async def say(self, user: UserRef, line: str, channel: ChannelRef | None = None) -> Reply:
        name, args = parse_line(line)
        return await self.router.dispatch(Command(name, args, user, channel, received_at=self.clock.now()),
                                          self.deps)

    async def unroute(self, ids: Sequence[str]) -> None:
        """Mark papers unrouted again, as a restore from backup or a re-run would."""
        if isinstance(self.stores, FakeStores):
            for pid in ids:
                self.stores.papers._routed[pid] = False
            return
        async with self.stores.db.write() as conn:
            await conn.executemany("UPDATE papers SET routed=0 WHERE arxiv_id=?", [(pid,) for pid in ids])

    def all_sent(self) -> list[SentMessage]:
        assert self.discord.violations == [] and self.slack.violations == []
        return self.discord.sent + self.slack.sent


@pytest.fixture(params=["fake", "sqlite"])
async def world(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[World]:
    clock = ManualClock(T0)
    if request.param == "fake":
        w = World(FakeStores(clock), clock)
    else:
        w = World(await Stores.open(tmp_path / "flows.db"), clock)
    try:
        yield w
        # Whatever the test checked, no platform may have seen a post without its opener.
        assert w.discord.violations == [] and w.slack.violations == []
    finally:
        await w.stores.close()


async def follow_both(w: World, *, cap: int = 30) -> None:
    await w.deps.channels.set_rule(ChannelRule(LG, categories=("cs.LG",), cap=cap))
    await w.deps.channels.set_rule(ChannelRule(GRAPHS, query="graph*", cap=cap))


def posted_papers(messages: Sequence[SentMessage], target: str) -> list[str]:
    """Paper ids that went into threads on `target`, one entry per appearance (cards and the '…more' line)."""
    out: list[str] = []
    for m in messages:
        if m.target != target or m.kind != "post":
            continue
        out += [c.paper_id for c in m.reply.cards if c.paper_id]
        if m.reply.text.startswith("…and"):
            out += re.findall(r"\d{4}\.\d{4,5}", m.reply.text.split("See them all")[0])
    return out


def assert_threads_well_formed(messages: Sequence[SentMessage]) -> None:
    """Every post went out after its opener, into the opener's message, and nothing went out twice."""
    openers: dict[str, str] = {}
    for m in messages:
        if m.kind == "opener":
            openers[m.delivery_key] = m.message_id
        elif m.kind == "post":
            assert m.parent_id in openers.values(), f"{m.delivery_key} posted before its opener"
    keys = [m.delivery_key for m in messages]
    assert len(keys) == len(set(keys)), f"a message went out twice: {Counter(keys).most_common(3)}"


PAPERS = [
    make_paper("2611.00001", "Graph transformers", "Attention on graphs.", categories=("cs.LG",)),
    make_paper("2611.00002", "Graphene sheets", "Material science.", categories=("cond-mat.mtrl-sci",)),
    make_paper("2611.00003", "Policy gradients", "Reinforcement learning.", categories=("cs.LG", "cs.AI")),
    make_paper("2611.00004", "Protein folding", "Biology.", categories=("q-bio.BM",)),
]


# ---------------------------------------------------------------- channels get each paper once


async def test_each_paper_reaches_each_following_channel_exactly_once(world: World) -> None:
    w = world
    await follow_both(w)
    first = await w.ingest("rss", PAPERS)
    assert first.papers == 4 and first.queued == 4  # LG: 1, 3; GRAPHS: 1, 2
    # The same papers again, from another source, from Hugging Face, and as new versions.
    assert (await w.ingest("rss", PAPERS)).papers == 0
    assert (await w.ingest("api", [replace(p, source="api") for p in PAPERS])).papers == 0
    hf = make_paper("2611.00001", "graph transformers", source="hf", announce_type=None, upvotes=12)
    assert (await w.ingest("hf", [hf])).papers == 0
    v2 = [replace(p, version=2, announce_type="replace", title=p.title + " (revised)") for p in PAPERS[:2]]
    assert (await w.ingest("rss", v2)).papers == 0

    await w.digest(DAY)
    report = await w.deliver()
    assert report.sent == 2 + 2 + 2 and report.failed == report.skipped == report.waiting == 0
    assert w.kicks >= 1

    # Next day: the same papers keep arriving, plus one new one.
    w.clock.advance(days=1)
    new = make_paper("2611.00009", "Graph kernels", categories=("cs.LG",), announced=DAY + timedelta(days=1))
    await w.ingest("rss", [*PAPERS, new])
    await w.ingest("api", [replace(p, version=3, announce_type="replace") for p in PAPERS])
    await w.digest(DAY + timedelta(days=1))
    await w.deliver()
    # And planning and delivering again changes nothing.
    await w.digest(DAY + timedelta(days=1))
    assert (await w.deliver()).sent == 0

    assert sorted(posted_papers(w.discord.sent, LG.key)) == ["2611.00001", "2611.00003", "2611.00009"]
    assert sorted(posted_papers(w.slack.sent, GRAPHS.key)) == ["2611.00001", "2611.00002", "2611.00009"]
    assert_threads_well_formed(w.discord.sent)
    assert_threads_well_formed(w.slack.sent)
    assert await w.deps.ledger.counts() == {"sent": 10}


async def test_follow_then_route_does_not_double_the_latest_papers(world: World) -> None:
    w = world
    await w.ingest("rss", PAPERS)
    reply = await w.router.dispatch(Command("follow", "cs.LG", ALICE, LG, is_admin=True), w.deps)
    assert "2 papers from the latest announcement are queued" in reply.text
    await w.ingest("api", [replace(p, source="api") for p in PAPERS])
    await w.unroute([p.arxiv_id for p in PAPERS])  # even a full re-route cannot queue them twice
    await w.ingest("rss", [])
    await w.digest(DAY)
    await w.deliver()
    assert sorted(posted_papers(w.discord.sent, LG.key)) == ["2611.00001", "2611.00003"]


# ---------------------------------------------------------------- alerts


def dm_papers(messages: Sequence[SentMessage], user: UserRef) -> list[list[str]]:
    return [[c.paper_id or "" for c in m.reply.cards] for m in messages if m.kind == "dm" and m.target == user.key]


def matched_field(message: SentMessage, paper_id: str) -> str:
    card = next(c for c in message.reply.cards if c.paper_id == paper_id)
    return next(f.value for f in card.fields if f.name == "Matched")


async def test_one_dm_per_user_per_run_never_the_same_paper_twice(world: World) -> None:
    w = world
    await w.deps.subscriptions.add(ALICE, "graph*", at=T0)
    await w.deps.subscriptions.add(ALICE, "cat:cs.AI", at=T0)
    await w.deps.subscriptions.add(ALICE, "transformers", at=T0)
    await w.deps.subscriptions.add(BOB, "protein", at=T0)
    report = await w.ingest("rss", PAPERS)
    assert report.alerts == 2
    await w.deliver()
    assert dm_papers(w.discord.sent, ALICE) == [["2611.00001", "2611.00002", "2611.00003"]]
    assert dm_papers(w.slack.sent, BOB) == [["2611.00004"]]
    alice_dm = next(m for m in w.discord.sent if m.kind == "dm")
    assert matched_field(alice_dm, "2611.00001") == "graph*, transformers"
    assert matched_field(alice_dm, "2611.00003") == "cat:cs.AI"
    assert "3 new papers match your alerts" in alice_dm.reply.text

    # Run 2: one new paper for Alice, the old ones again from other sources and as new versions.
    w.clock.advance(days=1)
    new = make_paper("2611.00010", "Graph sampling", announced=DAY + timedelta(days=1))
    await w.ingest("rss", [replace(p, version=2, announce_type="replace") for p in PAPERS])
    await store_papers(w.deps, FetchResult("api", (*PAPERS, new)))
    # Even a paper routed a second time (a restored backup, a re-run), in one batch with a new one, is not
    # sent to the same user again.
    await w.unroute(["2611.00001"])
    assert (await route_new(w.deps)).alerts == 1
    await w.deliver()
    assert await w.deliver() == DeliveryReport()
    assert dm_papers(w.discord.sent, ALICE) == [["2611.00001", "2611.00002", "2611.00003"], ["2611.00010"]]
    assert dm_papers(w.slack.sent, BOB) == [["2611.00004"]]


async def test_unreachable_user_is_skipped_marked_and_told_once(world: World) -> None:
    w = world
    await w.deps.subscriptions.add(ALICE, "graph*", at=T0)
    await w.deps.subscriptions.add(BOB, "graph*", at=T0)
    w.discord.unreachable.add(ALICE.key)
    await w.ingest("rss", PAPERS[:1])
    report = await w.deliver()
    assert report.sent == 1 and report.skipped == 1
    assert dm_papers(w.slack.sent, BOB) == [["2611.00001"]]
    rows = await w.deps.ledger.find(ALICE.key, "2611.00001")
    assert [r.state for r in rows] == [DeliveryState.SKIPPED]
    assert await w.deps.subscriptions.unreachable(ALICE) is not None

    # While unreachable, new alerts are skipped without trying the platform again.
    calls = len(w.discord.calls)
    await w.ingest("rss", [make_paper("2611.00011", "Graph coloring")])
    await w.deliver()
    assert len(w.discord.calls) == calls
    assert [r.state for r in await w.deps.ledger.find(ALICE.key, "2611.00011")] == [DeliveryState.SKIPPED]

    # The next command carries the notice, once; the one after does not.
    first = await w.say(ALICE, "help")
    assert "could not send you alerts by direct message" in first.text
    second = await w.say(ALICE, "help")
    assert "could not send you alerts" not in second.text
    assert "could not send" not in (await w.say(BOB, "help")).text

    # Back in touch: the next alert goes out.
    w.discord.unreachable.clear()
    await w.ingest("rss", [make_paper("2611.00012", "Graph drawing")])
    await w.deliver()
    assert dm_papers(w.discord.sent, ALICE) == [["2611.00012"]]


# ---------------------------------------------------------------- failures and crashes


async def test_transient_failure_retries_next_run_without_blocking_others(world: World) -> None:
    w = world
    await follow_both(w)
    await w.ingest("rss", PAPERS)
    await w.digest(DAY)
    w.discord.transient[LG.key] = 1
    report = await w.deliver()
    assert report.failed == 1 and report.sent == 3 and report.waiting == 2  # LG's posts wait for its opener
    assert [m.kind for m in w.slack.sent] == ["opener", "post", "post"]
    assert w.discord.sent == []
    opener = next(r for r in await w.deps.ledger.pending() if r.kind == "opener")
    assert opener.state is DeliveryState.FAILED and opener.attempts == 1 and "503" in (opener.error or "")

    report = await w.deliver()
    assert report.sent == 3 and report.failed == 0
    assert [m.kind for m in w.discord.sent] == ["opener", "post", "post"]
    assert_threads_well_formed(w.discord.sent)
    assert await w.deps.ledger.counts() == {"sent": 6}


async def test_gives_up_after_max_attempts(world: World) -> None:
    w = world
    w.deps.config = replace(w.deps.config, max_attempts=3)
    await follow_both(w)
    await w.ingest("rss", PAPERS)
    await w.digest(DAY)
    w.discord.transient[LG.key] = 100
    for _ in range(4):
        await w.deliver()
    states = Counter(r.state.value for r in await w.deps.ledger.for_target(LG.key))
    assert states == {"skipped": 3}  # the opener gave up, its posts were skipped with it
    opener = next(r for r in await w.deps.ledger.for_target(LG.key) if r.kind == "opener")
    assert opener.attempts == 3 and "gave up after 3 attempts" in (opener.error or "")
    assert w.discord.sent == []


@pytest.mark.parametrize("when", ["after_send", "before_send"])
async def test_crash_mid_delivery_resumes_without_repeating(world: World, when: str) -> None:
    w = world
    await follow_both(w)
    await w.deps.subscriptions.add(ALICE, "graph*", at=T0)
    await w.ingest("rss", PAPERS)
    await w.digest(DAY)
    crash_key = f"thread:{LG.key}:{DAY.isoformat()}:2611.00001"
    if when == "after_send":
        w.discord.crash_after_send.add(crash_key)  # the message is out, the process dies before mark_sent
    else:
        crashed: list[str] = []

        def die_once(d: Any) -> BaseException | None:
            if d.key == crash_key and not crashed:
                crashed.append(d.key)
                return SimulatedCrash(d.key)  # the process dies after begin_attempt, before sending
            return None

        w.discord.script.append(die_once)
    with pytest.raises(SimulatedCrash):
        await w.deliver()
    row = await w.deps.ledger.get(crash_key)
    assert row is not None and row.state is DeliveryState.PENDING and row.attempts == 1

    # The restart: a fresh delivery run over the same ledger.
    report = await w.deliver()
    assert report.failed == report.skipped == 0
    assert await w.deliver() == DeliveryReport()
    assert_threads_well_formed(w.discord.sent)
    assert_threads_well_formed(w.slack.sent)
    assert sorted(posted_papers(w.discord.sent, LG.key)) == ["2611.00001", "2611.00003"]
    assert sorted(posted_papers(w.slack.sent, GRAPHS.key)) == ["2611.00001", "2611.00002"]
    assert dm_papers(w.discord.sent, ALICE) == [["2611.00001", "2611.00002"]]
    done = await w.deps.ledger.get(crash_key)
    assert done is not None and done.state is DeliveryState.SENT and done.attempts == 2
    assert done.message_id == w.discord.by_key()[crash_key].message_id


async def test_platform_exception_is_a_retried_failure(world: World) -> None:
    w = world
    await follow_both(w)
    await w.ingest("rss", PAPERS)
    await w.digest(DAY)
    boom = [True]

    def explode(d: Any) -> BaseException | None:
        if d.kind == "opener" and boom:
            boom.clear()
            return RuntimeError("adapter bug")
        return None

    w.slack.script.append(explode)
    report = await w.deliver()
    assert report.failed == 1 and w.slack.sent == []
    failed = next(r for r in await w.deps.ledger.for_target(GRAPHS.key) if r.kind == "opener")
    assert "RuntimeError: adapter bug" in (failed.error or "")
    await w.deliver()
    assert [m.kind for m in w.slack.sent] == ["opener", "post", "post"]


async def test_post_never_goes_out_before_its_opener(world: World) -> None:
    w = world
    await follow_both(w)
    await w.ingest("rss", PAPERS)
    w.discord.transient[LG.key] = 2
    reply = await w.router.dispatch(Command("post", "", ALICE, LG, is_admin=True), w.deps)
    assert "Posting 2 papers" in reply.text
    for _ in range(2):
        report = await w.deliver()
        assert report.waiting >= 2
        assert [m for m in w.discord.sent if m.kind == "post"] == []
    await w.deliver()
    assert [m.kind for m in w.discord.sent] == ["opener", "post", "post"]
    assert_threads_well_formed(w.discord.sent)
    # `post` again: nothing is planned twice.
    again = await w.router.dispatch(Command("post", "", ALICE, LG, is_admin=True), w.deps)
    assert "Nothing is queued" in again.text
    assert (await w.deliver()).sent == 0


async def test_deleted_channel_skips_the_thread_and_pauses_the_channel(world: World) -> None:
    w = world
    await follow_both(w)
    await w.ingest("rss", PAPERS)
    await w.digest(DAY)
    w.discord.gone.add(LG.key)
    report = await w.deliver()
    assert report.skipped >= 1 and w.discord.sent == []
    await w.deliver()
    assert Counter(r.state.value for r in await w.deps.ledger.for_target(LG.key)) == {"skipped": 3}
    rule = await w.deps.channels.get_rule(LG)
    assert rule is not None and rule.paused_reason == "Unknown Channel"
    assert [m.kind for m in w.slack.sent] == ["opener", "post", "post"]


# ---------------------------------------------------------------- thread layout


async def test_trending_first_then_announcement_order_and_the_cap(world: World) -> None:
    w = world
    await w.deps.channels.set_rule(ChannelRule(LG, categories=("cs.LG",), cap=3))
    papers = [make_paper(f"2611.0020{i}", f"Paper {i}", upvotes=votes)
              for i, votes in enumerate([None, 3, None, 10, None])]
    await w.ingest("rss", papers)
    await w.digest(DAY)
    await w.deliver()
    sent = w.discord.sent
    assert [m.kind for m in sent] == ["opener", "post", "post", "post", "post"]
    opener = sent[0]
    assert "5 new papers" in opener.reply.text and "2 trending" in opener.reply.text
    assert "Showing 3" in opener.reply.text
    assert opener.thread_name is not None and DAY.isoformat() in opener.thread_name
    shown = [m.reply.cards[0].paper_id for m in sent[1:4]]
    assert shown == ["2611.00203", "2611.00201", "2611.00200"]  # 10 votes, 3 votes, then queue order
    more = sent[4].reply.text
    assert more.startswith("…and 2 more (2611.00202, 2611.00204).")
    # The hint in the summary line really finds the papers left out.
    hint = more.split("`/papers search ", 1)[1].rstrip("`.")
    result = await w.deps.papers.search(w.deps.parse(hint), limit=50)
    assert {"2611.00202", "2611.00204"} <= {h.paper.arxiv_id for h in result.hits}


async def test_a_second_plan_the_same_day_loses_no_paper(world: World) -> None:
    w = world
    await w.deps.channels.set_rule(ChannelRule(LG, categories=("cs.LG",), cap=1))
    await w.ingest("rss", [make_paper(f"2611.0030{i}", f"Early {i}") for i in range(3)])
    await w.digest(DAY)
    await w.ingest("rss", [make_paper(f"2611.0031{i}", f"Late {i}") for i in range(3)])
    await w.digest(DAY)
    await w.deliver()
    assert sorted(posted_papers(w.discord.sent, LG.key)) == sorted(
        [f"2611.0030{i}" for i in range(3)] + [f"2611.0031{i}" for i in range(3)])
    assert [m.kind for m in w.discord.sent].count("opener") == 1
    assert_threads_well_formed(w.discord.sent)


async def test_dm_payload_survives_the_ledger_round_trip(world: World) -> None:
    """What is planned is what is sent: the ledger payload rebuilds the same Reply."""
    w = world
    await w.deps.subscriptions.add(BOB, "protein", at=T0)
    await w.ingest("rss", PAPERS)
    await w.deliver()
    (dm,) = [m for m in w.slack.sent if m.kind == "dm"]
    card = dm.reply.cards[0]
    assert card.title == "Protein folding" and card.url == "https://arxiv.org/abs/2611.00004"
    assert ("pdf", "https://arxiv.org/pdf/2611.00004") in card.links
    assert dm.reply.private


async def test_outcome_without_message_id_is_not_marked_sent(world: World) -> None:
    w = world
    await w.deps.subscriptions.add(BOB, "protein", at=T0)
    await w.ingest("rss", PAPERS)
    w.slack.script.append(lambda d: SendOutcome(ok=True, message_id=None))
    report = await w.deliver()
    assert report.sent == 0
    row = (await w.deps.ledger.find(BOB.key, "2611.00004"))[0]
    assert row.state is DeliveryState.FAILED


# ---------------------------------------------------------------- chaos: any mix of failures and crashes

FAULTS = st.lists(st.sampled_from(["ok", "ok", "transient", "raise", "crash_before", "crash_after"]), max_size=40)


@given(discord_faults=FAULTS, slack_faults=FAULTS)
@settings(max_examples=120, deadline=None)
async def test_any_mix_of_failures_and_crashes_delivers_each_message_exactly_once(
        discord_faults: list[str], slack_faults: list[str]) -> None:
    clock = ManualClock(T0)
    w = World(FakeStores(clock), clock)
    w.deps.config = replace(w.deps.config, max_attempts=1000)
    await follow_both(w, cap=2)
    await w.deps.subscriptions.add(ALICE, "graph*", at=T0)
    await w.deps.subscriptions.add(BOB, "cat:cs.LG", at=T0)
    for platform, faults in ((w.discord, list(discord_faults)), (w.slack, list(slack_faults))):
        def chaos(d: Any, faults: list[str] = faults, platform: FakeChatPlatform = platform) -> Any:
            kind = faults.pop(0) if faults else "ok"
            if kind == "transient":
                return SendOutcome(ok=False, error="503 Service Unavailable")
            if kind == "raise":
                return RuntimeError("adapter bug")
            if kind == "crash_before":
                return SimulatedCrash(d.key)
            if kind == "crash_after":
                platform.crash_after_send.add(d.key)
            return None

        platform.script.append(chaos)
    await w.ingest("rss", PAPERS)
    await w.digest(DAY)
    for _ in range(200):  # every round is a fresh delivery run, as after a restart
        try:
            report = await w.deliver()
        except SimulatedCrash:
            continue
        if report == DeliveryReport():
            break
    assert await w.deps.ledger.counts() == {"sent": len(w.all_sent())}
    assert_threads_well_formed(w.discord.sent)
    assert_threads_well_formed(w.slack.sent)
    assert sorted(posted_papers(w.discord.sent, LG.key)) == ["2611.00001", "2611.00003"]
    assert sorted(posted_papers(w.slack.sent, GRAPHS.key)) == ["2611.00001", "2611.00002"]
    assert dm_papers(w.discord.sent, ALICE) == [["2611.00001", "2611.00002"]]
    assert dm_papers(w.slack.sent, BOB) == [["2611.00001", "2611.00003"]]


async def test_a_failing_source_is_reported_not_raised(world: World) -> None:
    class Broken:
        name = "api"

        async def fetch(self, now: Any) -> FetchResult:
            raise ConnectionError("connection reset by peer")

    class Fine:
        name = "rss"

        async def fetch(self, now: Any) -> FetchResult:
            return FetchResult("rss", tuple(PAPERS[:2]))

    w = world
    broken = await run_source(w.deps, Broken())
    fine = await run_source(w.deps, Fine())
    assert broken.outcome == "error" and "ConnectionError: connection reset by peer" in broken.detail
    assert fine.new == 2
    statuses = {s.source: s for s in await w.deps.status.fetch_statuses()}
    assert statuses["api"].outcome == "error" and statuses["rss"].outcome == "ok"
    status = await w.say(ALICE, "status")
    assert "• api: error" in status.text and "connection reset" in status.text
    assert (await route_new(w.deps)).papers == 2


async def test_rows_for_a_platform_no_longer_configured_do_not_starve_the_others(world: World) -> None:
    """A deployment that dropped Slack keeps its Slack users' rows pending; Discord must still get through."""
    w = world
    stale = [Delivery(id=0, key=f"dm:old:{i}", platform="teams", target=f"teams:t:u{i}", kind="dm",
                      state=DeliveryState.PENDING, payload='{"text": "x", "visibility": "private", '
                      '"is_error": false, "cards": []}') for i in range(1005)]
    await w.deps.ledger.plan(stale)
    await w.deps.subscriptions.add(ALICE, "graph*", at=T0)
    await w.ingest("rss", PAPERS)
    report = await w.deliver()
    assert report.sent == 1
    assert dm_papers(w.discord.sent, ALICE) == [["2611.00001", "2611.00002"]]

"""Every chat command through Router.dispatch, on the in-memory stores: what the user reads, what is stored."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.commands import COMMANDS, MAX_ARGS_CHARS, RateLimiter, Router, parse_line
from bot.deps import Config, Deps
from bot.handlers import HANDLERS
from bot.models import ChannelRef, ChannelRule, Command, DeliveryState, Reply, UserRef, Visibility
from storage.sqlite import Stores
from tests.core.fakes import DAY, T0, FakeStores, ManualClock, make_deps, make_paper

ALICE = UserRef("discord", "u1", "alice", "g1")
BOB = UserRef("discord", "u2", "bob", "g1")
CHANNEL = ChannelRef("discord", "c1", "g1", name="papers")
DM = ChannelRef("discord", "d1", "g1", kind="dm")

PAPERS = [
    make_paper("2611.00001", "Graph neural networks for molecules", "We learn molecular graphs.",
               categories=("cs.LG", "q-bio.BM"), upvotes=5, announced=DAY),
    make_paper("2611.00002", "Diffusion models: a survey", "A survey of diffusion.", categories=("cs.CV",),
               announced=DAY),
    make_paper("2611.00003", "Diffusion for audio", "Audio generation with diffusion.", categories=("cs.SD",),
               announced=DAY - timedelta(days=1)),
    make_paper("2611.00004", "Graph diffusion", "Diffusion on graphs.", authors=("Alan Turing",),
               categories=("cs.LG",), announced=DAY - timedelta(days=2)),
    make_paper("2609.00005", "An old graph paper", "Graphs, long ago.", categories=("cs.LG",),
               announced=DAY - timedelta(days=60)),
    make_paper("hep-th/9901001", "Strings of old", "An old-style identifier.", categories=("hep-th",),
               announced=None, submitted=None),
]


class Bot:
    """A router over fakes, and a one-line way to talk to it."""

    def __init__(self, deps: Deps, router: Router) -> None:
        self.deps = deps
        self.router = router

    async def say(self, line: str, *, user: UserRef = ALICE, channel: ChannelRef | None = CHANNEL,
                  admin: bool = False) -> Reply:
        name, args = parse_line(line)
        reply = await self.router.dispatch(Command(name, args, user, channel, is_admin=admin, received_at=T0),
                                           self.deps)
        assert isinstance(reply, Reply)
        return reply


def make_bot(config: Config | None = None, limiter: RateLimiter | None = None) -> Bot:
    stores = FakeStores(ManualClock(T0))
    deps = make_deps(stores, config=config)
    return Bot(deps, Router(HANDLERS, limiter or RateLimiter(limit=10_000)))


@pytest.fixture(params=["fake", "sqlite"])
async def bot(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Bot]:
    """The router over the fakes and, for the same tests, over SQLite: handlers must not care which."""
    if request.param == "fake":
        b = make_bot()
        await b.deps.papers.upsert(PAPERS, source="rss", seen_at=T0)
        yield b
        return
    stores = await Stores.open(tmp_path / "handlers.db")
    try:
        b = Bot(make_deps(stores, clock=ManualClock(T0)), Router(HANDLERS, RateLimiter(limit=10_000)))
        await b.deps.papers.upsert(PAPERS, source="rss", seen_at=T0)
        yield b
    finally:
        await stores.close()


def oops(reply: Reply) -> bool:
    """True when the router had to catch a handler's exception."""
    return "failed on our side" in reply.text


# ---------------------------------------------------------------- search, today, show


async def test_search_results(bot: Bot) -> None:
    reply = await bot.say("search diffusion")
    assert not reply.is_error and reply.visibility is Visibility.CHANNEL
    assert reply.text.startswith("Top 3 of 3 for `diffusion`")
    assert {c.paper_id for c in reply.cards} == {"2611.00002", "2611.00003", "2611.00004"}
    assert all(c.url and c.url.startswith("https://arxiv.org/abs/") for c in reply.cards)


async def test_search_caps_results_at_config(bot: Bot) -> None:
    bot.deps.config = replace(bot.deps.config, search_results=2)
    reply = await bot.say("search graph OR diffusion")
    assert len(reply.cards) == 2 and "of 5" in reply.text


async def test_search_no_results(bot: Bot) -> None:
    reply = await bot.say("search quantum gravity")
    assert not reply.is_error and reply.cards == ()
    assert "No papers match `quantum gravity`" in reply.text


@pytest.mark.parametrize("query", ["-survey", "a OR -b", "since:tomorrow", "ti:", '"!!"'])
async def test_search_bad_query_is_a_one_line_error(bot: Bot, query: str) -> None:
    reply = await bot.say(f"search {query}")
    assert reply.is_error and reply.private and "\n" not in reply.text and not oops(reply)


async def test_search_alias_and_prefix(bot: Bot) -> None:
    assert (await bot.say("/papers find diffusion")).text == (await bot.say("search diffusion")).text


async def test_today_lists_the_latest_announcement_for_the_channel_topic(bot: Bot) -> None:
    everything = await bot.say("today")
    assert {c.paper_id for c in everything.cards} == {"2611.00001", "2611.00002"}
    assert "all topics" in everything.text
    await bot.deps.channels.set_rule(ChannelRule(CHANNEL, categories=("cs.LG",)))
    followed = await bot.say("today")
    assert [c.paper_id for c in followed.cards] == ["2611.00001"]
    assert "cs.LG" in followed.text


async def test_today_without_papers() -> None:
    b = make_bot()
    reply = await b.say("today")
    assert "No announced papers" in reply.text and not reply.is_error


@pytest.mark.parametrize("ref", ["2611.00004", "2611.00004v3", "arXiv:2611.00004", "https://arxiv.org/abs/2611.00004v2",
                                 "https://arxiv.org/pdf/2611.00004.pdf", "https://huggingface.co/papers/2611.00004"])
async def test_show_by_id_url_and_version(bot: Bot, ref: str) -> None:
    reply = await bot.say(f"show {ref}")
    assert not reply.is_error
    assert [c.paper_id for c in reply.cards] == ["2611.00004"]
    assert reply.cards[0].title == "Graph diffusion"


async def test_show_old_style_id(bot: Bot) -> None:
    reply = await bot.say("show HEP-TH/9901001")
    assert [c.paper_id for c in reply.cards] == ["hep-th/9901001"]


async def test_show_unknown_and_garbage(bot: Bot) -> None:
    unknown = await bot.say("show 2612.99999")
    assert unknown.is_error and "2612.99999" in unknown.text and "https://arxiv.org/abs/2612.99999" in unknown.text
    garbage = await bot.say("show '; DROP TABLE papers")
    assert garbage.is_error and "is not an arXiv id" in garbage.text and not oops(garbage)
    missing = await bot.say("show")
    assert missing.is_error and "Usage: `show" in missing.text


# ---------------------------------------------------------------- subscriptions


async def test_subscribe_previews_the_last_30_days(bot: Bot) -> None:
    reply = await bot.say("subscribe graph")
    assert not reply.is_error and reply.private
    assert "Alert #1 saved: `graph`" in reply.text
    # 2611.00001 and 2611.00004 fall in the window; the 60-day-old paper does not.
    assert "would have matched 2 papers" in reply.text
    assert [c.paper_id for c in reply.cards] == ["2611.00001", "2611.00004"]
    assert [s.query for s in await bot.deps.subscriptions.for_user(ALICE)] == ["graph"]


async def test_subscribe_preview_shows_the_latest_three() -> None:
    b = make_bot()
    await b.deps.papers.upsert([make_paper(f"2611.1000{i}", f"Sparse attention {i}",
                                           announced=DAY - timedelta(days=i)) for i in range(6)],
                               source="rss", seen_at=T0)
    reply = await b.say("subscribe sparse attention")
    assert "would have matched 6 papers" in reply.text
    assert [c.paper_id for c in reply.cards] == ["2611.10000", "2611.10001", "2611.10002"]


async def test_subscribe_that_matches_nothing_says_so(bot: Bot) -> None:
    reply = await bot.say("subscribe quantum gravity")
    assert "matched nothing in the last 30 days" in reply.text and reply.cards == ()


async def test_subscribe_duplicate_cap_and_bad_queries(bot: Bot) -> None:
    bot.deps.config = replace(bot.deps.config, max_subscriptions=2)
    await bot.say("subscribe graph")
    dup = await bot.say("subscribe graph")
    assert "already have the alert `graph`" in dup.text
    await bot.say("subscribe diffusion")
    capped = await bot.say("subscribe audio")
    assert capped.is_error and "most allowed (2)" in capped.text and "unsubscribe" in capped.text
    assert await bot.deps.subscriptions.count_for(ALICE) == 2
    # Another user has their own allowance.
    assert not (await bot.say("subscribe audio", user=BOB)).is_error
    since = await bot.say("subscribe graph since:2026-01-01", user=BOB)
    assert since.is_error and "since:" in since.text
    bad = await bot.say("subscribe -survey", user=BOB)
    assert bad.is_error


async def test_unsubscribe_by_number_and_by_query(bot: Bot) -> None:
    for query in ("graph", "diffusion model", "audio"):
        await bot.say(f"subscribe {query}")
    by_number = await bot.say("unsubscribe 2")
    assert "Removed the alert `diffusion model`" in by_number.text
    by_query = await bot.say("unsub   GRAPH ")
    assert "Removed the alert `graph`" in by_query.text
    assert [s.query for s in await bot.deps.subscriptions.for_user(ALICE)] == ["audio"]
    out_of_range = await bot.say("unsubscribe 5")
    assert out_of_range.is_error and "1 to 1" in out_of_range.text
    unknown = await bot.say("unsubscribe transformers")
    assert unknown.is_error and "No alert" in unknown.text
    assert "Removed" in (await bot.say("unsubscribe #1")).text
    assert "no alerts" in (await bot.say("unsubscribe 1")).text


@pytest.mark.parametrize("arg", ["¹", "²", "٣٣", "0", "-1", "#"])
async def test_unsubscribe_odd_numbers_get_a_message(bot: Bot, arg: str) -> None:
    await bot.say("subscribe graph")
    reply = await bot.say(f"unsubscribe {arg}")
    assert reply.is_error and not oops(reply)
    assert await bot.deps.subscriptions.count_for(ALICE) == 1


async def test_subscriptions_lists_numbered(bot: Bot) -> None:
    assert "no alerts" in (await bot.say("subscriptions")).text
    await bot.say("subscribe graph")
    await bot.say('subscribe "diffusion model" -survey')
    reply = await bot.say("subs")
    assert reply.private
    assert '1. `graph`' in reply.text and '2. `"diffusion model" -survey`' in reply.text
    assert "(2/50)" in reply.text
    await bot.deps.subscriptions.set_unreachable(ALICE, "DMs closed")
    paused = await bot.say("subscriptions")
    assert "Alerts are paused: I could not DM you (DMs closed)" in paused.text
    assert "⚠️ I could not send you alerts by direct message (DMs closed)" in paused.text  # the one-time notice
    again = await bot.say("subscriptions")
    assert "paused" not in again.text and "could not send" not in again.text


# ---------------------------------------------------------------- admin: follow, unfollow, settings, post


async def test_follow_categories(bot: Bot) -> None:
    reply = await bot.say("follow cs.LG cs.AI cs.LG", admin=True)
    assert not reply.is_error and reply.visibility is Visibility.CHANNEL
    rule = await bot.deps.channels.get_rule(CHANNEL)
    assert rule is not None and rule.categories == ("cs.LG", "cs.AI") and rule.query is None
    assert (rule.post_time, rule.timezone, rule.cap) == ("09:00", "UTC", 30)
    # The latest announcement's matching papers are queued at once, so `post` shows something.
    assert "1 paper from the latest announcement" in reply.text
    assert await bot.deps.channels.queued(CHANNEL) == ["2611.00001"]


async def test_follow_query(bot: Bot) -> None:
    reply = await bot.say('follow "diffusion models" OR graph', admin=True)
    assert not reply.is_error
    rule = await bot.deps.channels.get_rule(CHANNEL)
    assert rule is not None and rule.categories == () and rule.query == '"diffusion models" OR graph'
    assert set(await bot.deps.channels.queued(CHANNEL)) == {"2611.00001", "2611.00002"}
    bad = await bot.say("follow -survey", admin=True)
    assert bad.is_error
    assert (await bot.deps.channels.get_rule(CHANNEL)) == rule


async def test_follow_keeps_earlier_settings(bot: Bot) -> None:
    await bot.say("follow cs.LG", admin=True)
    await bot.say("settings time 07:15 cap 5", admin=True)
    await bot.say("follow cs.AI", admin=True)
    rule = await bot.deps.channels.get_rule(CHANNEL)
    assert rule is not None and rule.categories == ("cs.AI",) and (rule.post_time, rule.cap) == ("07:15", 5)


@pytest.mark.parametrize("line", ["follow cs.LG", "unfollow", "settings cap 3", "post"])
async def test_admin_commands_refuse_non_admins(bot: Bot, line: str) -> None:
    await bot.deps.channels.set_rule(ChannelRule(CHANNEL, categories=("cs.CV",)))
    await bot.deps.channels.enqueue(CHANNEL, ["2611.00002"], at=T0)
    reply = await bot.say(line, admin=False)
    assert reply.is_error and "admins" in reply.text
    assert await bot.deps.channels.get_rule(CHANNEL) == ChannelRule(CHANNEL, categories=("cs.CV",))
    assert await bot.deps.ledger.counts() == {}


@pytest.mark.parametrize("line", ["follow cs.LG", "unfollow", "settings", "post"])
async def test_channel_commands_refuse_dms(bot: Bot, line: str) -> None:
    reply = await bot.say(line, admin=True, channel=DM)
    assert reply.is_error and "direct message" in reply.text


async def test_unfollow(bot: Bot) -> None:
    await bot.say("follow cs.LG", admin=True)
    reply = await bot.say("unfollow", admin=True)
    assert "no longer" in reply.text
    assert await bot.deps.channels.get_rule(CHANNEL) is None
    assert await bot.deps.channels.queued(CHANNEL) == []
    assert "follows nothing" in (await bot.say("unfollow", admin=True)).text


async def test_settings_show_and_change(bot: Bot) -> None:
    assert "follows nothing" in (await bot.say("settings", admin=True)).text
    await bot.say("follow cs.LG", admin=True)
    shown = await bot.say("settings", admin=True)
    assert "Daily at 09:00 UTC, at most 30 papers, weekends off" in shown.text
    changed = await bot.say("settings time 8:30 timezone Europe/Berlin cap 20 weekends on", admin=True)
    assert changed.text.startswith("Saved.") and not changed.is_error
    rule = await bot.deps.channels.get_rule(CHANNEL)
    assert rule is not None
    assert (rule.post_time, rule.timezone, rule.cap, rule.weekends) == ("08:30", "Europe/Berlin", 20, True)
    # 08:30 in Berlin is 07:30 UTC in winter; today's slot has passed at 15:00 UTC.
    assert "Next post: Wed 25 Nov 2026 07:30 UTC" in changed.text
    await bot.say("settings weekends off", admin=True)
    rule = await bot.deps.channels.get_rule(CHANNEL)
    assert rule is not None and rule.weekends is False and rule.cap == 20


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ("time 25:00", "not a time"),
        ("time soon", "not a time"),
        ("timezone Mars/Olympus", "not an IANA timezone"),
        ("timezone ../../etc/passwd", "not an IANA timezone"),
        ("cap 0", "1 to 100"),
        ("cap 101", "1 to 100"),
        ("cap lots", "1 to 100"),
        ("cap ²", "1 to 100"),
        ("cap ٣", "1 to 100"),
        ("weekends maybe", "on or off"),
        ("colour blue", "Unknown setting"),
        ("time", "needs a value"),
        ("cap 5 time", "needs a value"),
    ],
)
async def test_settings_bad_values_are_clear_errors(bot: Bot, args: str, message: str) -> None:
    await bot.say("follow cs.LG", admin=True)
    before = await bot.deps.channels.get_rule(CHANNEL)
    reply = await bot.say(f"settings {args}", admin=True)
    assert reply.is_error and message in reply.text and not oops(reply)
    assert await bot.deps.channels.get_rule(CHANNEL) == before  # nothing half-applied


async def test_post_plans_the_thread_once(bot: Bot) -> None:
    kicks: list[int] = []
    bot.deps.kick = lambda: kicks.append(1)
    await bot.say("follow cs.LG", admin=True)
    await bot.deps.channels.enqueue(CHANNEL, ["2611.00004"], at=T0)
    reply = await bot.say("post", admin=True)
    assert "Posting 2 papers" in reply.text and kicks == [1]
    rows = await bot.deps.ledger.pending()
    assert [r.kind for r in rows] == ["opener", "post", "post"]
    assert [r.paper_ids for r in rows[1:]] == [("2611.00001",), ("2611.00004",)]
    assert all(r.target == CHANNEL.key and r.state is DeliveryState.PENDING for r in rows)
    assert rows[1].parent_key == rows[0].key
    again = await bot.say("post", admin=True)
    assert "Nothing is queued" in again.text
    assert len(await bot.deps.ledger.pending()) == 3 and kicks == [1]
    assert await bot.deps.channels.queue_state(CHANNEL, "2611.00001") == DAY.isoformat()


async def test_post_without_a_rule(bot: Bot) -> None:
    reply = await bot.say("post", admin=True)
    assert reply.is_error and "follows nothing" in reply.text


# ---------------------------------------------------------------- status, why, help


async def test_status(bot: Bot) -> None:
    reply = await bot.say("status")
    assert "no source has been fetched yet" in reply.text
    assert f"Papers stored: {len(PAPERS)}; in the latest announcement ({DAY}): 2." in reply.text
    assert "Messages: 0 pending, 0 sent, 0 failed, 0 skipped" in reply.text
    await bot.say("follow cs.LG", admin=True)
    from bot.models import SourceStatus

    await bot.deps.status.record_fetch(SourceStatus("rss", T0, "ok", 6, "rss: ok, 6 fetched"))
    await bot.say("post", admin=True)
    opener = (await bot.deps.ledger.pending())[0]
    await bot.deps.ledger.mark_failed(opener.id, "Missing Permissions", permanent=True)
    reply = await bot.say("status")
    assert "• rss: ok at 2026-11-24 15:00 UTC" in reply.text
    assert "This channel follows cs.LG: 0 queued" in reply.text
    assert "1 pending, 0 sent, 0 failed, 1 skipped" in reply.text
    assert "Missing Permissions" in reply.text


async def test_why_explains_channel_and_alerts(bot: Bot) -> None:
    await bot.say("follow cs.LG", admin=True)  # queues 2611.00001
    await bot.say("subscribe molecules")
    await bot.say("subscribe audio")
    queued = await bot.say("why 2611.00001")
    assert "the paper matches" in queued.text and "queued for the next daily thread" in queued.text
    assert "`molecules` (matched molecul" in queued.text
    no_match = await bot.say("why https://arxiv.org/abs/2611.00002v1")
    assert "does not match" in no_match.text and "never queued here." in no_match.text
    assert "none of your 2" in no_match.text
    await bot.say("post", admin=True)
    rows = {r.key.rsplit(":", 1)[-1]: r for r in await bot.deps.ledger.pending()}
    await bot.deps.ledger.mark_failed(rows["2611.00001"].id, "503 Service Unavailable", permanent=False)
    posted = await bot.say("why 2611.00001")
    assert f"went into the thread of {DAY.isoformat()}" in posted.text
    assert "Ledger: post failed — 503 Service Unavailable" in posted.text
    unknown = await bot.say("why 2612.00009")
    assert "never seen arXiv:2612.00009" in unknown.text
    garbage = await bot.say("why nonsense")
    assert garbage.is_error and "not an arXiv id" in garbage.text


async def test_why_in_an_unfollowed_channel_and_for_dms(bot: Bot) -> None:
    reply = await bot.say("why 2611.00003")
    assert "follows nothing" in reply.text and "no alerts" in reply.text
    await bot.deps.subscriptions.set_unreachable(ALICE, "DMs closed")
    dm_reply = await bot.say("why 2611.00003", channel=None)
    assert "I can't DM you: DMs closed." in dm_reply.text


async def test_help(bot: Bot) -> None:
    reply = await bot.say("help")
    assert not reply.is_error
    for spec in COMMANDS:
        assert f"`{spec.usage}`" in reply.text
    one = await bot.say("help search")
    assert "`search QUERY`" in one.text and "Example:" in one.text
    assert "Admins only" in (await bot.say("help /follow")).text
    assert "No command `frobnicate`" in (await bot.say("help frobnicate")).text


async def test_unknown_command_gets_help(bot: Bot) -> None:
    reply = await bot.say("frobnicate now")
    assert reply.is_error and "I don't know the command `frobnicate`" in reply.text
    assert "`search QUERY`" in reply.text


# ---------------------------------------------------------------- the router's guards


async def test_rate_limit_is_polite_and_per_user() -> None:
    ticks = [0.0]
    b = make_bot(limiter=RateLimiter(limit=3, window_s=60, clock=lambda: ticks[0]))
    for _ in range(3):
        assert not (await b.say("help")).is_error
    limited = await b.say("help")
    assert limited.is_error and "too fast" in limited.text
    assert not (await b.say("help", user=BOB)).is_error
    ticks[0] = 61.0
    assert not (await b.say("help")).is_error


async def test_over_long_args_get_a_message(bot: Bot) -> None:
    reply = await bot.say("search " + "graph " * 400)
    assert reply.is_error and f"at most {MAX_ARGS_CHARS}" in reply.text


async def test_a_handler_bug_is_a_polite_logged_reply(caplog: pytest.LogCaptureFixture) -> None:
    async def broken(cmd: Command, deps: Deps) -> Reply:
        raise RuntimeError("boom")

    stores = FakeStores(ManualClock(T0))
    router = Router({**HANDLERS, "search": broken})
    with caplog.at_level(logging.ERROR):
        reply = await router.dispatch(Command("search", "x", ALICE, CHANNEL), make_deps(stores))
    assert reply.is_error and "failed on our side" in reply.text and "boom" not in reply.text
    assert any("command search failed" in r.getMessage() and r.exc_info for r in caplog.records)


async def test_a_failing_store_is_a_polite_reply(bot: Bot) -> None:
    async def down(*args: Any, **kwargs: Any) -> Any:
        raise OSError("disk I/O error")

    bot.deps.papers.search = down  # type: ignore[method-assign]
    reply = await bot.say("search graph")
    assert reply.is_error and "failed on our side" in reply.text


COMMAND_NAMES = [c.name for c in COMMANDS] + ["nope"]
ARGS = st.one_of(
    st.text(max_size=60),
    st.lists(st.sampled_from(["time", "timezone", "cap", "weekends", "on", "08:30", "²", "-1", "UTC", "#2",
                              "2611.00001", "cs.LG", '"', "(", "-x", "OR", "since:30d", "ti:", "/"]),
             max_size=6).map(" ".join),
)

Step = Callable[[Bot], Awaitable[Reply]]


@given(name=st.sampled_from(COMMAND_NAMES), args=ARGS, admin=st.booleans(), in_channel=st.booleans())
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
async def test_no_input_makes_a_handler_raise(bot: Bot, name: str, args: str, admin: bool, in_channel: bool) -> None:
    if not await bot.deps.channels.get_rule(CHANNEL):
        await bot.say("follow cs.LG", admin=True)
        await bot.say("subscribe graph")
    reply = await bot.router.dispatch(
        Command(name, args, ALICE, CHANNEL if in_channel else None, is_admin=admin), bot.deps)
    assert isinstance(reply, Reply)
    assert not oops(reply), (name, args, reply.text)


async def test_a_failing_notice_lookup_still_answers(bot: Bot, caplog: pytest.LogCaptureFixture) -> None:
    async def down(user: UserRef) -> str | None:
        raise OSError("database is locked")

    bot.deps.subscriptions.take_notice = down  # type: ignore[method-assign]
    with caplog.at_level(logging.ERROR):
        reply = await bot.say("search graph")
    assert not reply.is_error and reply.cards
    assert any(r.exc_info for r in caplog.records)


async def test_follow_with_too_many_categories_is_refused_before_saving(bot: Bot) -> None:
    many = " ".join(f"cs.{chr(65 + i // 26)}{chr(65 + i % 26)}" for i in range(30))
    reply = await bot.say(f"follow {many}", admin=True)
    assert reply.is_error and not oops(reply) and "24" in reply.text
    assert await bot.deps.channels.get_rule(CHANNEL) is None

"""One contract for the store ports, run over the in-memory fakes and over SQLite.

A behaviour the core relies on belongs here, so the fakes used by the core tests cannot drift from the store of
record. SQLite-only guarantees (WAL, migrations, transactions, backup) follow at the end.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from bot.models import ChannelRef, ChannelRule, Delivery, DeliveryState, SourceStatus, UserRef
from bot.query import parse
from storage import db as dbmod
from storage.sqlite import Stores
from tests.core.fakes import DAY, T0, FakeStores, ManualClock, make_paper

CH = ChannelRef("discord", "c1", "g1", name="papers")
CH2 = ChannelRef("slack", "C2", "T1")
ALICE = UserRef("discord", "u1", "alice", "g1")
BOB = UserRef("slack", "U2", "bob", "T1")


@pytest.fixture(params=["fake", "sqlite"])
async def stores(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    if request.param == "fake":
        yield FakeStores(ManualClock())
        return
    s = await Stores.open(tmp_path / "t.db")
    try:
        yield s
    finally:
        await s.close()


def row(key: str, *, target: str = CH.key, kind: str = "post", parent: str | None = None,
        papers: tuple[str, ...] = (), platform: str = "discord") -> Delivery:
    return Delivery(id=0, key=key, platform=platform, target=target, kind=kind, state=DeliveryState.PENDING,
                    payload='{"text": "x"}', parent_key=parent, paper_ids=papers)


# ---------------------------------------------------------------- papers


async def test_upsert_dedups_on_the_versionless_id(stores: Any) -> None:
    p = make_paper("2611.00001", "Graph networks")
    first = await stores.papers.upsert([p], source="rss", seen_at=T0)
    assert first.new == ("2611.00001",)
    again = await stores.papers.upsert([p], source="api", seen_at=T0 + timedelta(hours=1))
    assert again.new == () and again.updated == () and again.unchanged == 1
    assert await stores.papers.count() == 1
    # The same paper twice in one batch is one paper.
    twice = await stores.papers.upsert([make_paper("2611.00002"), make_paper("2611.00002")], source="rss",
                                       seen_at=T0)
    assert twice.new == ("2611.00002",)
    assert await stores.papers.count() == 2
    assert [s for s, _ in await stores.papers.sources_of("2611.00001")] == ["rss", "api"]


async def test_new_version_updates_in_place_and_is_not_new(stores: Any) -> None:
    await stores.papers.upsert([make_paper("2611.00001", "Old title", "old words")], source="rss", seen_at=T0)
    v2 = make_paper("2611.00001", "New title", "fresh words", version=2, announce_type="replace",
                    announced=DAY + timedelta(days=1))
    res = await stores.papers.upsert([v2], source="rss", seen_at=T0 + timedelta(days=1))
    assert res.new == () and res.updated == ("2611.00001",)
    got = await stores.papers.get("2611.00001")
    assert got is not None
    assert (got.version, got.title, got.abstract) == (2, "New title", "fresh words")
    assert got.announced == DAY  # a replacement keeps the paper's first announcement day
    assert await stores.papers.count() == 1
    # The index follows the update: the new words are found, the old ones are not.
    hits = await stores.papers.search(parse("fresh"), limit=10)
    assert [h.paper.arxiv_id for h in hits.hits] == ["2611.00001"]
    assert (await stores.papers.search(parse("old"), limit=10)).hits == ()
    # An older version arriving late does not roll the row back.
    await stores.papers.upsert([make_paper("2611.00001", "Old title", version=1)], source="api", seen_at=T0)
    got = await stores.papers.get("2611.00001")
    assert got is not None and got.version == 2 and got.title == "New title"


async def test_hf_data_merges_without_overwriting_arxiv_metadata(stores: Any) -> None:
    arxiv = make_paper("2611.00003", "Exact arXiv Title", "The arXiv abstract.", authors=("A. One", "B. Two"),
                       categories=("cs.CL", "cs.LG"), version=2)
    await stores.papers.upsert([arxiv], source="rss", seen_at=T0)
    hf = make_paper("2611.00003", "exact arxiv title (HF casing)", "HF abstract", authors=("One",),
                    categories=(), version=1, source="hf", announce_type=None, announced=None, upvotes=42,
                    ai_summary="In one line.", github_repo="https://github.com/x/y", hf_day=DAY)
    res = await stores.papers.upsert([hf], source="hf", seen_at=T0)
    assert res.new == () and res.updated == ("2611.00003",)
    got = await stores.papers.get("2611.00003")
    assert got is not None
    assert (got.title, got.abstract, got.authors, got.categories, got.version) == (
        "Exact arXiv Title", "The arXiv abstract.", ("A. One", "B. Two"), ("cs.CL", "cs.LG"), 2)
    assert (got.upvotes, got.ai_summary, got.github_repo, got.hf_day) == (42, "In one line.",
                                                                          "https://github.com/x/y", DAY)
    # A later arXiv record without HF fields keeps the upvotes.
    await stores.papers.upsert([replace(arxiv, comment="10 pages")], source="rss", seen_at=T0)
    got = await stores.papers.get("2611.00003")
    assert got is not None and got.upvotes == 42 and got.comment == "10 pages"


async def test_hf_first_then_arxiv_takes_arxiv_metadata(stores: Any) -> None:
    hf = make_paper("2611.00004", "hf title", source="hf", announce_type=None, upvotes=3, categories=())
    await stores.papers.upsert([hf], source="hf", seen_at=T0)
    await stores.papers.upsert([make_paper("2611.00004", "The Real Title", categories=("cs.AI",))], source="rss",
                               seen_at=T0)
    got = await stores.papers.get("2611.00004")
    assert got is not None and got.title == "The Real Title" and got.categories == ("cs.AI",)
    assert got.upvotes == 3


async def test_replacements_are_never_new(stores: Any) -> None:
    for i, kind in enumerate(("replace", "replace-cross")):
        pid = f"2611.0001{i}"
        res = await stores.papers.upsert([make_paper(pid, announce_type=kind, version=3)], source="rss",
                                         seen_at=T0)
        assert res.new == ()
    assert await stores.papers.unrouted() == []
    assert await stores.papers.count() == 2


async def test_route_false_stores_without_routing(stores: Any) -> None:
    res = await stores.papers.upsert([make_paper("2611.00005")], source="snapshot", seen_at=T0, route=False)
    assert res.new == ()
    assert await stores.papers.unrouted() == []


async def test_unrouted_until_commit_routing(stores: Any) -> None:
    papers = [make_paper(f"2611.0002{i}") for i in range(3)]
    await stores.papers.upsert(papers, source="rss", seen_at=T0)
    assert [p.arxiv_id for p in await stores.papers.unrouted()] == ["2611.00020", "2611.00021", "2611.00022"]
    assert [p.arxiv_id for p in await stores.papers.unrouted(limit=2)] == ["2611.00020", "2611.00021"]
    dm = row("dm:x", target=ALICE.key, kind="dm", papers=("2611.00020",))
    added = await stores.ledger.commit_routing([(CH, ["2611.00020", "2611.00022"])], [dm],
                                               ["2611.00020", "2611.00021"], at=T0)
    assert added == 1
    assert [p.arxiv_id for p in await stores.papers.unrouted()] == ["2611.00022"]
    assert await stores.channels.queued(CH) == ["2611.00020", "2611.00022"]
    assert [d.key for d in await stores.ledger.find(ALICE.key, "2611.00020")] == ["dm:x"]
    # Routing the same batch again (a crash before the caller saw the result) doubles nothing.
    assert await stores.ledger.commit_routing([(CH, ["2611.00020"])], [dm], ["2611.00020"], at=T0) == 0
    assert await stores.channels.queued(CH) == ["2611.00020", "2611.00022"]


async def test_latest_announced_get_many_and_counts(stores: Any) -> None:
    await stores.papers.upsert([make_paper("2611.00030", announced=DAY - timedelta(days=1)),
                                make_paper("2611.00031", announced=DAY), make_paper("2611.00032", announced=DAY),
                                make_paper("2611.00033", announced=None)], source="rss", seen_at=T0)
    assert await stores.papers.latest_announced() == DAY
    assert await stores.papers.count_announced(DAY) == 2
    got = await stores.papers.get_many(["2611.00032", "nope", "2611.00030", "2611.00032"])
    assert [p.arxiv_id for p in got] == ["2611.00032", "2611.00030"]
    assert await stores.papers.get("2611.99999") is None


async def test_search_rank_recent_and_count(stores: Any) -> None:
    await stores.papers.upsert([
        make_paper("2611.00040", "Diffusion models", "we study sampling", announced=DAY - timedelta(days=2)),
        make_paper("2611.00041", "Sampling", "diffusion for audio", announced=DAY),
        make_paper("2611.00042", "Unrelated", "nothing here", announced=DAY),
    ], source="rss", seen_at=T0)
    res = await stores.papers.search(parse("diffusion"), limit=10, count=True)
    assert res.total == 2
    assert [h.paper.arxiv_id for h in res.hits] == ["2611.00040", "2611.00041"]  # title beats abstract
    recent = await stores.papers.search(parse("diffusion"), limit=10, order="recent")
    assert [h.paper.arxiv_id for h in recent.hits] == ["2611.00041", "2611.00040"]
    one = await stores.papers.search(parse("diffusion"), limit=1, count=True)
    assert len(one.hits) == 1 and one.total == 2
    dated = await stores.papers.search(parse(f"since:{DAY.isoformat()}"), limit=10, count=True)
    assert {h.paper.arxiv_id for h in dated.hits} == {"2611.00041", "2611.00042"} and dated.total == 2


# ---------------------------------------------------------------- channels and the queue


async def test_channel_rules_set_get_remove(stores: Any) -> None:
    rule = ChannelRule(CH, categories=("cs.LG", "cs.AI"), query='"graph neural"', post_time="08:30",
                       timezone="Europe/Berlin", cap=12, weekends=True)
    await stores.channels.set_rule(rule)
    assert await stores.channels.get_rule(CH) == rule
    await stores.channels.set_rule(replace(rule, cap=5))
    assert (await stores.channels.get_rule(CH)).cap == 5
    await stores.channels.set_rule(ChannelRule(CH2))
    assert [r.channel.key for r in await stores.channels.rules()] == sorted([CH.key, CH2.key])
    assert [r.channel.key for r in await stores.channels.rules("slack")] == [CH2.key]
    await stores.channels.set_paused(CH, "Missing Access")
    assert (await stores.channels.get_rule(CH)).paused_reason == "Missing Access"
    assert await stores.channels.remove_rule(CH) is True
    assert await stores.channels.get_rule(CH) is None
    assert await stores.channels.remove_rule(CH) is False


async def test_enqueue_ignores_already_queued_or_posted(stores: Any) -> None:
    assert await stores.channels.enqueue(CH, ["a1", "a2"], at=T0) == 2
    assert await stores.channels.enqueue(CH, ["a2", "a3"], at=T0) == 1
    assert await stores.channels.queued(CH) == ["a1", "a2", "a3"]
    assert await stores.channels.queue_state(CH, "a1") == "queued"
    await stores.ledger.plan([row("t:opener", kind="opener")], claim=(CH, DAY, ["a1", "a2"]))
    assert await stores.channels.queued(CH) == ["a3"]
    assert await stores.channels.queue_state(CH, "a1") == DAY.isoformat()
    # Posted papers never come back into the queue.
    assert await stores.channels.enqueue(CH, ["a1", "a4"], at=T0) == 1
    assert await stores.channels.queued(CH) == ["a3", "a4"]
    assert await stores.channels.queue_state(CH2, "a1") is None
    # Other channels have their own queue.
    assert await stores.channels.enqueue(CH2, ["a1"], at=T0) == 1
    # Unfollowing drops what was waiting but keeps the history of what went out.
    await stores.channels.set_rule(ChannelRule(CH))
    await stores.channels.remove_rule(CH)
    assert await stores.channels.queued(CH) == []
    assert await stores.channels.queue_state(CH, "a1") == DAY.isoformat()


# ---------------------------------------------------------------- the delivery ledger


async def test_plan_is_idempotent_on_keys_and_claims(stores: Any) -> None:
    await stores.channels.enqueue(CH, ["p1", "p2"], at=T0)
    rows = [row("th:opener", kind="opener"), row("th:p1", parent="th:opener", papers=("p1",)),
            row("th:p2", parent="th:opener", papers=("p2",))]
    assert await stores.ledger.plan(rows, claim=(CH, DAY, ["p1", "p2"])) == 3
    assert await stores.ledger.plan(rows, claim=(CH, DAY, ["p1", "p2"])) == 0
    assert await stores.channels.queued(CH) == []
    assert (await stores.ledger.counts()) == {"pending": 3}
    got = await stores.ledger.get("th:p1")
    assert got is not None and got.parent_key == "th:opener" and got.paper_ids == ("p1",)
    assert got.state is DeliveryState.PENDING and got.attempts == 0
    assert await stores.ledger.get("nope") is None
    # A claim never moves a paper from an earlier thread day.
    await stores.ledger.plan([], claim=(CH, DAY + timedelta(days=1), ["p1"]))
    assert await stores.channels.queue_state(CH, "p1") == DAY.isoformat()


async def test_pending_order_and_platform_filter(stores: Any) -> None:
    await stores.ledger.plan([row("o", kind="opener"), row("p", parent="o"),
                              row("dm", target=BOB.key, kind="dm", platform="slack")])
    assert [d.key for d in await stores.ledger.pending()] == ["o", "p", "dm"]
    assert [d.key for d in await stores.ledger.pending("slack")] == ["dm"]
    assert [d.key for d in await stores.ledger.pending(limit=2)] == ["o", "p"]


async def test_attempts_sent_and_failed(stores: Any) -> None:
    await stores.ledger.plan([row("a"), row("b"), row("c"), row("d", target=ALICE.key, kind="dm",
                                                                  papers=("x1", "x2"))])
    a, b, c, d = [await stores.ledger.get(k) for k in "abcd"]
    await stores.ledger.begin_attempt(a.id)
    assert (await stores.ledger.get("a")).attempts == 1
    assert (await stores.ledger.get("a")).state is DeliveryState.PENDING  # attempted is not sent
    await stores.ledger.mark_sent(a.id, "m-1")
    sent = await stores.ledger.get("a")
    assert sent.state is DeliveryState.SENT and sent.message_id == "m-1" and sent.error is None
    await stores.ledger.begin_attempt(b.id)
    await stores.ledger.mark_failed(b.id, "503 Service Unavailable", permanent=False)
    await stores.ledger.mark_failed(c.id, "Unknown Channel", permanent=True)
    assert (await stores.ledger.get("b")).state is DeliveryState.FAILED
    assert (await stores.ledger.get("c")).state is DeliveryState.SKIPPED
    # Transient failures are retried, permanent ones are not, sent rows are done.
    assert [r.key for r in await stores.ledger.pending()] == ["b", "d"]
    await stores.ledger.mark_failed(d.id, "x" * 2000, permanent=True)
    assert len((await stores.ledger.get("d")).error) <= 500
    assert await stores.ledger.counts() == {"sent": 1, "failed": 1, "skipped": 2}
    assert {f.key for f in await stores.ledger.failures(10)} == {"b", "c", "d"}
    assert len(await stores.ledger.failures(1)) == 1
    assert [r.key for r in await stores.ledger.for_target(CH.key)] == ["c", "b", "a"]
    assert [r.key for r in await stores.ledger.find(ALICE.key, "x2")] == ["d"]
    assert await stores.ledger.find(CH.key, "x2") == []
    # A retry that succeeds clears the error.
    await stores.ledger.mark_sent(b.id, "m-2")
    assert (await stores.ledger.get("b")).error is None


# ---------------------------------------------------------------- subscriptions and users


async def test_subscriptions(stores: Any) -> None:
    s1 = await stores.subscriptions.add(ALICE, "graph neural", at=T0)
    s2 = await stores.subscriptions.add(ALICE, "diffusion", at=T0)
    s3 = await stores.subscriptions.add(BOB, "graph neural", at=T0)
    assert len({s1.id, s2.id, s3.id}) == 3
    assert s1.user.key == ALICE.key and s1.query == "graph neural"
    again = await stores.subscriptions.add(ALICE, "graph neural", at=T0)
    assert again.id == s1.id
    assert [s.query for s in await stores.subscriptions.for_user(ALICE)] == ["graph neural", "diffusion"]
    assert await stores.subscriptions.count_for(ALICE) == 2
    assert [s.id async for s in stores.subscriptions.all()] == [s1.id, s2.id, s3.id]
    # Only the owner can remove a subscription.
    assert await stores.subscriptions.remove(BOB, s1.id) is False
    assert await stores.subscriptions.remove(ALICE, s1.id) is True
    assert await stores.subscriptions.remove(ALICE, s1.id) is False
    assert [s.query for s in await stores.subscriptions.for_user(ALICE)] == ["diffusion"]
    all_users = {s.user.key async for s in stores.subscriptions.all()}
    assert all_users == {ALICE.key, BOB.key}


async def test_unreachable_and_notice_given_once(stores: Any) -> None:
    assert await stores.subscriptions.unreachable(ALICE) is None
    assert await stores.subscriptions.take_notice(ALICE) is None
    await stores.subscriptions.set_unreachable(ALICE, "DMs closed")
    assert await stores.subscriptions.unreachable(ALICE) == "DMs closed"
    assert await stores.subscriptions.unreachable(BOB) is None
    notice = await stores.subscriptions.take_notice(ALICE)
    assert notice is not None and "DMs closed" in notice
    assert await stores.subscriptions.take_notice(ALICE) is None
    # Using a command shows the user is back: alerts resume.
    assert await stores.subscriptions.unreachable(ALICE) is None


# ---------------------------------------------------------------- status


async def test_status_and_meta(stores: Any) -> None:
    await stores.status.record_fetch(SourceStatus("rss", T0, "ok", 12, "rss: ok"))
    await stores.status.record_fetch(SourceStatus("hf", T0, "error", 0, "x" * 1000))
    await stores.status.record_fetch(SourceStatus("rss", T0 + timedelta(hours=1), "quiet", 0, "nothing new"))
    got = await stores.status.fetch_statuses()
    assert [(s.source, s.outcome) for s in got] == [("hf", "error"), ("rss", "quiet")]
    assert got[1].last_run == T0 + timedelta(hours=1)
    assert len(got[0].detail) <= 500
    assert await stores.status.get_meta("k") is None
    await stores.status.set_meta("k", "v1")
    await stores.status.set_meta("k", "v2")
    assert await stores.status.get_meta("k") == "v2"


# ---------------------------------------------------------------- SQLite only


async def test_sqlite_runs_in_wal_mode(tmp_path: Path) -> None:
    s = await Stores.open(tmp_path / "t.db")
    try:
        assert (await s.db.fetchone("PRAGMA journal_mode"))[0] == "wal"
        assert (await s.db.fetchone("PRAGMA foreign_keys"))[0] == 1
        assert (await s.db.fetchone("PRAGMA user_version"))[0] == dbmod.latest_version()
    finally:
        await s.close()


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("journal", ["wal", "delete"])
async def test_newer_schema_is_refused_and_left_unchanged(tmp_path: Path, journal: str) -> None:
    path = tmp_path / "newer.db"
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA journal_mode={journal}")
    conn.execute("CREATE TABLE future (x)")
    conn.execute(f"PRAGMA user_version={dbmod.latest_version() + 5}")
    conn.commit()
    conn.close()
    before = _digest(path)
    with pytest.raises(dbmod.DatabaseError, match="newer than this paperboy"):
        await Stores.open(path)
    with pytest.raises(dbmod.DatabaseError, match="newer"):
        dbmod.open_sync(path)
    assert _digest(path) == before
    check = sqlite3.connect(path)
    assert check.execute("PRAGMA user_version").fetchone()[0] == dbmod.latest_version() + 5
    check.close()


async def test_batch_upsert_is_one_transaction(tmp_path: Path) -> None:
    s = await Stores.open(tmp_path / "t.db")
    try:
        await s.papers.upsert([make_paper("2611.00050", "Version one")], source="rss", seen_at=T0)
        batch = [
            make_paper("2611.00050", "Version two", version=2),  # an update
            make_paper("2611.00051", "Fine"),
            make_paper("2611.00052", "Broken", comment=object()),  # cannot be bound: fails mid-batch
            make_paper("2611.00053", "Also fine"),
        ]
        with pytest.raises((sqlite3.Error, dbmod.DatabaseError)):
            await s.papers.upsert(batch, source="api", seen_at=T0)
        assert await s.papers.count() == 1
        kept = await s.papers.get("2611.00050")
        assert kept is not None and kept.title == "Version one"
        assert await s.papers.get("2611.00051") is None
        assert [src for src, _ in await s.papers.sources_of("2611.00050")] == ["rss"]
        assert (await s.papers.search(parse("fine"), limit=10)).hits == ()
        # The connection is usable afterwards.
        await s.papers.upsert([make_paper("2611.00051", "Fine")], source="rss", seen_at=T0)
        assert await s.papers.count() == 2
    finally:
        await s.close()


async def test_backup_command_copy_passes_integrity_check(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    from bot.cli import main

    src = tmp_path / "live.db"
    s = await Stores.open(src)
    try:
        await s.papers.upsert([make_paper(f"2611.{i:05d}", f"Paper {i}") for i in range(50)], source="rss",
                              seen_at=T0)
        monkeypatch.delenv("PAPERBOY_DB", raising=False)
        dest = tmp_path / "copy.db"
        # Online: the service still holds its connection while the copy is made.
        assert main(["backup", "--db", str(src), str(dest)]) == 0
        assert "integrity ok" in capsys.readouterr().out
        assert main(["backup", "--db", str(src), str(dest)]) == 1  # never overwrites
        assert "exists" in capsys.readouterr().err
    finally:
        await s.close()
    conn = sqlite3.connect(dest)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert conn.execute("SELECT count(*) FROM papers").fetchone()[0] == 50
        assert conn.execute("SELECT count(*) FROM papers_fts WHERE papers_fts MATCH 'paper'").fetchone()[0] == 50
    finally:
        conn.close()


def test_migrations_are_numbered_and_applied_once(tmp_path: Path) -> None:
    path = tmp_path / "m.db"
    conn = dbmod.open_sync(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == dbmod.latest_version()
    conn.close()
    conn = dbmod.open_sync(path)  # a second open applies nothing and fails on nothing
    assert conn.execute("PRAGMA user_version").fetchone()[0] == dbmod.latest_version()
    conn.close()

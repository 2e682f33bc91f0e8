"""The SQLite implementations of the store ports: one aiosqlite connection and one write lock for everything
but searches, which run on search connections of their own (SqlitePaperStore)."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import json
import sqlite3
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import date, datetime
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

from bot.models import (
    ChannelRef,
    ChannelRule,
    Delivery,
    DeliveryState,
    Paper,
    SearchHit,
    SearchResult,
    SourceStatus,
    Subscription,
    UserRef,
)
from bot.ports import UpsertResult
from bot.query import Query
from bot.text import authors_text, category_tokens
from storage.db import DatabaseError, friendly_error, open_async, open_sync
from storage.search_index import SearchPlanner, WriteFirst, write_first

# Title counts most, then authors, then the abstract; the category column only filters.
BM25_WEIGHTS = "10.0, 1.0, 3.0, 0.0"
SEARCH_READERS = 2  # connections for searches (one per core here): see SqlitePaperStore
# Search connections read the file through a memory map (SQLite's build caps it at 2 GB: all of a 100k database,
# the first 2 GB of a larger one): a page of a doclist is then read in place instead of copied by a read() call.
# First-sight prefix searches at 100k papers: p99 3.3-4.0 ms instead of 3.4-5.5 (three runs each, measured).
# Mapped pages are the OS page cache's, shared and clean; they count in RSS once a search has touched them.
SEARCH_MMAP = 0x7FFF0000
_WRITE_TRIES = 3  # writes a search may ask for (a fold, lasts, a fold again) before it runs without them

T = TypeVar("T")

PAPER_COLUMNS = (
    "arxiv_id, version, title, abstract, authors_json, categories, primary_category, submitted, updated, "
    "announced, comment, doi, journal_ref, upvotes, ai_summary, ai_keywords, github_repo, hf_day"
)


def _iso(value: datetime | date | None) -> str | None:
    return value.isoformat() if value is not None else None


def _dt(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def _d(value: str | None) -> date | None:
    return date.fromisoformat(value[:10]) if value else None


def paper_from_row(row: Sequence[Any]) -> Paper:
    return Paper(
        arxiv_id=row[0],
        version=row[1],
        title=row[2],
        abstract=row[3],
        authors=tuple(json.loads(row[4])),
        categories=tuple(row[5].split()),
        primary_category=row[6],
        submitted=_dt(row[7]),
        updated=_dt(row[8]),
        announced=_d(row[9]),
        comment=row[10],
        doi=row[11],
        journal_ref=row[12],
        upvotes=row[13],
        ai_summary=row[14],
        ai_keywords=tuple(json.loads(row[15] or "[]")),
        github_repo=row[16],
        hf_day=_d(row[17]),
    )


def paper_values(p: Paper) -> tuple[Any, ...]:
    return (
        p.arxiv_id, p.version, p.title, p.abstract, authors_text(p.authors), json.dumps(list(p.authors)),
        " ".join(p.categories), category_tokens(p.categories), p.primary_category, _iso(p.submitted),
        _iso(p.updated), _iso(p.announced), _iso(p.published), p.comment, p.doi, p.journal_ref, p.upvotes,
        p.ai_summary, json.dumps(list(p.ai_keywords)), p.github_repo, _iso(p.hf_day),
    )


INSERT_PAPER = (
    "INSERT INTO papers (arxiv_id, version, title, abstract, authors, authors_json, categories, cats, "
    "primary_category, submitted, updated, announced, published, comment, doi, journal_ref, upvotes, ai_summary, "
    "ai_keywords, github_repo, hf_day, first_seen, last_seen, routed) "
    "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
)
UPDATE_PAPER = (
    "UPDATE papers SET version=?, title=?, abstract=?, authors=?, authors_json=?, categories=?, cats=?, "
    "primary_category=?, submitted=?, updated=?, announced=?, published=?, comment=?, doi=?, journal_ref=?, "
    "upvotes=?, ai_summary=?, ai_keywords=?, github_repo=?, hf_day=?, last_seen=? WHERE arxiv_id=?"
)

HF_ONLY_SOURCES = ("hf",)


def merge_paper(old: Paper, new: Paper) -> Paper:
    """Combine what we knew with a new record of the same paper.

    arXiv metadata comes from arXiv sources and only moves forward in version; Hugging Face adds community
    fields (upvotes, summary, repo) and never overwrites arXiv's metadata. Missing values never erase known ones.
    """
    merged = old
    arxiv_source = new.source not in HF_ONLY_SOURCES
    if arxiv_source and new.version >= old.version:
        merged = replace(
            merged,
            version=new.version,
            title=new.title or old.title,
            abstract=new.abstract or old.abstract,
            authors=new.authors or old.authors,
            categories=new.categories or old.categories,
            primary_category=new.primary_category or old.primary_category,
            updated=new.updated or old.updated,
            comment=new.comment or old.comment,
            doi=new.doi or old.doi,
            journal_ref=new.journal_ref or old.journal_ref,
        )
    elif not arxiv_source:
        merged = replace(
            merged,
            title=old.title or new.title,
            abstract=old.abstract or new.abstract,
            authors=old.authors or new.authors,
        )
    merged = replace(
        merged,
        submitted=old.submitted or new.submitted,
        # The first announcement dates a paper; replacements are re-announced but keep their day.
        announced=old.announced or (new.announced if new.is_announcement else None),
        upvotes=new.upvotes if new.upvotes is not None else old.upvotes,
        ai_summary=new.ai_summary or old.ai_summary,
        ai_keywords=new.ai_keywords or old.ai_keywords,
        github_repo=new.github_repo or old.github_repo,
        hf_day=new.hf_day or old.hf_day,
    )
    return merged


class Database:
    """One aiosqlite connection; writes are serialised by a lock so two coroutines never share a transaction."""

    def __init__(self, conn: aiosqlite.Connection, path: Path) -> None:
        self.conn = conn
        self.path = path
        self._write_lock = asyncio.Lock()

    @classmethod
    async def open(cls, path: Path | str) -> Database:
        p = Path(path)
        conn = await open_async(p)
        return cls(conn, p)

    async def close(self) -> None:
        await self.conn.close()

    @asynccontextmanager
    async def write(self) -> AsyncIterator[aiosqlite.Connection]:
        async with self._write_lock:
            try:
                await self.conn.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                raise DatabaseError(f"The database {self.path} is locked by another process ({exc}).") from exc
            try:
                yield self.conn
            except sqlite3.OperationalError as exc:
                await self._rollback()
                raise friendly_error(exc, self.path) from exc
            except BaseException:
                await self._rollback()
                raise
            try:
                await self.conn.execute("COMMIT")
            except sqlite3.Error as exc:
                await self._rollback()
                raise friendly_error(exc, self.path) from exc

    async def _rollback(self) -> None:
        # SQLite rolls back by itself after some errors (a full disk, an I/O error); rolling back again would
        # raise "no transaction is active" and hide the real error.
        if self.conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                await self.conn.execute("ROLLBACK")

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row | tuple[Any, ...]]:
        async with self.conn.execute(sql, params) as cur:
            return list(await cur.fetchall())

    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> Any:
        async with self.conn.execute(sql, params) as cur:
            return await cur.fetchone()

    async def integrity_check(self) -> str:
        row = await self.fetchone("PRAGMA integrity_check")
        return str(row[0])


class Lane:
    """A search connection (plain sqlite3, used by one search at a time) and its planner."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.planner = SearchPlanner(conn)
        self.busy: asyncio.Future[Any] | None = None  # the call on a worker thread, while it runs

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """fn(*args) on a worker thread. Cancelled, the statement running is interrupted; the connection is
        only handed to another search once the thread is done with it (SqlitePaperStore._lane)."""
        self.busy = asyncio.get_running_loop().run_in_executor(None, functools.partial(fn, *args))
        try:
            return await asyncio.shield(self.busy)
        except asyncio.CancelledError:
            self.conn.interrupt()
            raise


class _Lanes:
    """Search connections handed out first come, first served, and the most recently used first.

    First come, first served: asyncio.Queue lets a search that just gave a connection back take it again
    before the searches already waiting run (measured: median 5 ms, p99 760 ms for 20 users). Most recently
    used first: one user at a time keeps getting the connection whose page cache and planner are warm."""

    def __init__(self, lanes: list[Lane]) -> None:
        self._free = lanes  # a stack
        self._waiting: collections.deque[asyncio.Future[Lane]] = collections.deque()

    async def get(self) -> Lane:
        if self._free:  # then nobody waits: put() hands a connection straight to a waiting search
            return self._free.pop()
        waiter: asyncio.Future[Lane] = asyncio.get_running_loop().create_future()
        self._waiting.append(waiter)
        try:
            return await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.put(waiter.result())  # handed over just as the search was cancelled: pass it on
            else:
                with contextlib.suppress(ValueError):  # put() may have dropped it already
                    self._waiting.remove(waiter)
            raise

    def put(self, lane: Lane) -> None:
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_result(lane)
                return
        self._free.append(lane)


def _open_search(path: Path) -> sqlite3.Connection:
    conn = open_sync(path, migrate=False)
    conn.execute(f"PRAGMA mmap_size={SEARCH_MMAP}")
    return conn


def _failed(exc: sqlite3.OperationalError) -> SearchResult:
    # Our compiler should never produce an invalid MATCH; if it does, the user still gets an answer.
    return SearchResult((), error=f"That query could not be run ({str(exc)[:80]}); try simpler words.")


class SqlitePaperStore:
    def __init__(self, db: Database, readers: int = SEARCH_READERS) -> None:
        self.db = db
        # Searches run on `readers` connections of their own (opened on the first search; at least one), so
        # that concurrent slash commands run side by side instead of queueing on one connection, and never
        # behind the one every write uses: p99 of 20 concurrent searches at 2.5M papers 373 ms on one
        # connection, 158 ms on two (paperboy bench).
        self._readers = max(1, readers)
        self._lanes: _Lanes | None = None
        self._opened: list[Lane] = []
        self._lanes_lock = asyncio.Lock()

    async def upsert(
        self, papers: Sequence[Paper], *, source: str, seen_at: datetime, route: bool = True
    ) -> UpsertResult:
        # One record per id per batch: the last (newest) wins, merged with what is stored.
        incoming: dict[str, Paper] = {}
        for p in papers:
            prev = incoming.get(p.arxiv_id)
            incoming[p.arxiv_id] = merge_paper(prev, p) if prev else p
        if not incoming:
            return UpsertResult((), ())
        seen = seen_at.isoformat()
        new_ids: list[str] = []
        updated_ids: list[str] = []
        unchanged = 0
        async with self.db.write() as conn:
            existing: dict[str, Paper] = {}
            ids = list(incoming)
            for i in range(0, len(ids), 500):
                chunk = ids[i : i + 500]
                marks = ",".join("?" * len(chunk))
                sql = f"SELECT {PAPER_COLUMNS} FROM papers WHERE arxiv_id IN ({marks})"
                async with conn.execute(sql, chunk) as cur:
                    for row in await cur.fetchall():
                        existing[row[0]] = paper_from_row(row)
            inserts = []
            updates = []
            for pid, paper in incoming.items():
                old = existing.get(pid)
                if old is None:
                    fresh = paper.is_announcement and route
                    inserts.append((*paper_values(paper), seen, seen, 0 if fresh else 1))
                    if fresh:
                        new_ids.append(pid)
                    continue
                merged = merge_paper(old, paper)
                if merged == old:
                    unchanged += 1
                    continue
                vals = paper_values(merged)
                updates.append((*vals[1:], seen, pid))
                updated_ids.append(pid)
            if inserts:
                await conn.executemany(INSERT_PAPER, inserts)
            if updates:
                await conn.executemany(UPDATE_PAPER, updates)
            await conn.executemany(
                "INSERT INTO paper_sources(arxiv_id, source, first_seen, last_seen) VALUES (?,?,?,?) "
                "ON CONFLICT(arxiv_id, source) DO UPDATE SET last_seen=excluded.last_seen",
                [(pid, source, seen, seen) for pid in incoming],
            )
        return UpsertResult(tuple(new_ids), tuple(updated_ids), unchanged)

    async def unrouted(self, limit: int = 5000) -> list[Paper]:
        rows = await self.db.fetchall(f"SELECT {PAPER_COLUMNS} FROM papers WHERE routed=0 ORDER BY id LIMIT ?",
                                      (limit,))
        return [paper_from_row(r) for r in rows]

    async def latest_announced(self) -> date | None:
        row = await self.db.fetchone("SELECT max(announced) FROM papers")
        return _d(row[0]) if row and row[0] else None

    async def get(self, arxiv_id: str) -> Paper | None:
        row = await self.db.fetchone(f"SELECT {PAPER_COLUMNS} FROM papers WHERE arxiv_id=?", (arxiv_id,))
        return paper_from_row(row) if row else None

    async def get_many(self, arxiv_ids: Sequence[str]) -> list[Paper]:
        found: dict[str, Paper] = {}
        ids = list(dict.fromkeys(arxiv_ids))
        for i in range(0, len(ids), 500):
            chunk = ids[i : i + 500]
            marks = ",".join("?" * len(chunk))
            sql = f"SELECT {PAPER_COLUMNS} FROM papers WHERE arxiv_id IN ({marks})"
            for row in await self.db.fetchall(sql, chunk):
                found[row[0]] = paper_from_row(row)
        return [found[i] for i in ids if i in found]

    async def search(
        self, query: Query, *, limit: int = 10, offset: int = 0, order: str = "rank", count: bool = False
    ) -> SearchResult:
        """Ranked or newest-first search; the plan and the ranking are defined in storage.search_index."""
        limit = max(1, min(limit, 100))
        offset = max(0, offset)
        params: list[Any] = []
        where = []
        if query.since is not None:
            where.append("p.published >= ?")
            params.append(query.since.isoformat())
        try:
            if query.root is None:
                cond = (" WHERE " + " AND ".join(where)) if where else ""
                sql = (f"SELECT {_prefixed(PAPER_COLUMNS)}, 0.0 FROM papers p{cond} "
                       "ORDER BY p.published DESC, p.id DESC LIMIT ? OFFSET ?")
                rows = await self.db.fetchall(sql, [*params, limit, offset])
                total = None
                if count:
                    total = int((await self.db.fetchone(f"SELECT count(*) FROM papers p{cond}", params))[0])
                hits = tuple(SearchHit(paper_from_row(r), 0.0) for r in rows)
                return SearchResult(hits, total=total, notes=query.notes)
        except sqlite3.OperationalError as exc:
            return _failed(exc)
        async with self._lane() as lane:
            stale = False
            for attempt in range(_WRITE_TRIES + 1):
                outcome = await lane.call(self._search_on, lane, query, limit, offset, order, count,
                                          stale or attempt == _WRITE_TRIES)
                if isinstance(outcome, SearchResult):
                    return outcome
                try:
                    await write_first(self.db, outcome, lane.planner.tok)
                except DatabaseError:
                    stale = True  # another process holds the write lock (a backfill, say): search without it
        raise AssertionError("a search that may not ask for a write asked for one")

    @staticmethod
    def _search_on(lane: Lane, query: Query, limit: int, offset: int, order: str, count: bool,
                   stale_ok: bool) -> SearchResult | WriteFirst:
        """The whole search on the lane's connection, on its worker thread, in one read transaction."""
        conn = lane.conn
        try:
            if conn.in_transaction:  # a cancelled search interrupted in its ROLLBACK left its read transaction
                conn.execute("ROLLBACK")
            conn.execute("BEGIN")
            try:
                ranked = lane.planner.plan(query, limit=limit, offset=offset, order=order, count=count,
                                           stale_ok=stale_ok)
                if isinstance(ranked, WriteFirst):
                    return ranked
                found: dict[int, Paper] = {}
                ids = [i for i, _ in ranked.ids]
                if ids:
                    marks = ",".join("?" * len(ids))
                    for row in conn.execute(f"SELECT id, {PAPER_COLUMNS} FROM papers WHERE id IN ({marks})", ids):
                        found[int(row[0])] = paper_from_row(row[1:])
            finally:
                if conn.in_transaction:  # a read transaction: nothing to keep
                    conn.execute("ROLLBACK")
        except sqlite3.OperationalError as exc:
            return _failed(exc)
        hits = tuple(SearchHit(found[i], score) for i, score in ranked.ids if i in found)
        return SearchResult(hits, total=ranked.total, notes=query.notes)

    @asynccontextmanager
    async def _lane(self) -> AsyncIterator[Lane]:
        """A search connection and its planner, for one search at a time."""
        if self._lanes is None:
            async with self._lanes_lock:
                if self._lanes is None:
                    for _ in range(self._readers):
                        self._opened.append(Lane(await asyncio.to_thread(_open_search, self.db.path)))
                    self._lanes = _Lanes(list(self._opened))
        pool = self._lanes
        lane = await pool.get()
        try:
            yield lane
        finally:
            busy, lane.busy = lane.busy, None
            if busy is not None and not busy.done():
                # Cancelled while its thread still runs (interrupted): the connection goes back when it stops.
                def back(done: asyncio.Future[Any]) -> None:
                    if not done.cancelled():
                        done.exception()  # retrieved: the interruption is the expected end
                    pool.put(lane)

                busy.add_done_callback(back)
            else:
                pool.put(lane)

    async def close_readers(self) -> None:
        opened, pool, self._opened, self._lanes = self._opened, self._lanes, [], None
        for lane in opened:
            lane.conn.interrupt()  # a search still running stops now
        if pool is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(10):
                    for _ in opened:
                        await pool.get()  # each back from its thread
        for lane in opened:
            lane.conn.close()

    async def count(self) -> int:
        return int((await self.db.fetchone("SELECT count(*) FROM papers"))[0])

    async def count_announced(self, day: date) -> int:
        return int((await self.db.fetchone("SELECT count(*) FROM papers WHERE announced=?", (day.isoformat(),)))[0])

    async def sources_of(self, arxiv_id: str) -> list[tuple[str, datetime]]:
        rows = await self.db.fetchall(
            "SELECT source, first_seen FROM paper_sources WHERE arxiv_id=? ORDER BY first_seen", (arxiv_id,)
        )
        return [(r[0], datetime.fromisoformat(r[1])) for r in rows]


def _prefixed(columns: str) -> str:
    return ", ".join("p." + c.strip() for c in columns.split(","))


class SqliteChannelStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def set_rule(self, rule: ChannelRule) -> None:
        ch = rule.channel
        now = datetime.now().astimezone().isoformat()
        async with self.db.write() as conn:
            await conn.execute(
                "INSERT INTO channels(key, platform, workspace, channel_id, kind, name, categories, query, post_time, "
                "timezone, cap, weekends, paused_reason, created, updated) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?) "
                "ON CONFLICT(key) DO UPDATE SET kind=excluded.kind, name=excluded.name, "
                "categories=excluded.categories, query=excluded.query, post_time=excluded.post_time, "
                "timezone=excluded.timezone, cap=excluded.cap, weekends=excluded.weekends, "
                "paused_reason=excluded.paused_reason, updated=excluded.updated",
                (ch.key, ch.platform, ch.workspace, ch.id, ch.kind, ch.name, " ".join(rule.categories), rule.query,
                 rule.post_time, rule.timezone, rule.cap, int(rule.weekends), rule.paused_reason, now, now),
            )

    @staticmethod
    def _rule(row: Sequence[Any]) -> ChannelRule:
        return ChannelRule(
            channel=ChannelRef(row[0], row[2], row[1], row[3], row[4]),
            categories=tuple(row[5].split()),
            query=row[6],
            post_time=row[7],
            timezone=row[8],
            cap=row[9],
            weekends=bool(row[10]),
            paused_reason=row[11],
        )

    _RULE_COLS = ("platform, workspace, channel_id, kind, name, categories, query, post_time, timezone, cap, "
                  "weekends, paused_reason")

    async def get_rule(self, channel: ChannelRef) -> ChannelRule | None:
        row = await self.db.fetchone(f"SELECT {self._RULE_COLS} FROM channels WHERE key=?", (channel.key,))
        return self._rule(row) if row else None

    async def remove_rule(self, channel: ChannelRef) -> bool:
        async with self.db.write() as conn:
            cur = await conn.execute("DELETE FROM channels WHERE key=?", (channel.key,))
            removed = cur.rowcount > 0
            await conn.execute("DELETE FROM channel_queue WHERE channel_key=? AND thread_day IS NULL", (channel.key,))
        return removed

    async def rules(self, platform: str | None = None) -> list[ChannelRule]:
        if platform:
            rows = await self.db.fetchall(f"SELECT {self._RULE_COLS} FROM channels WHERE platform=? ORDER BY key",
                                          (platform,))
        else:
            rows = await self.db.fetchall(f"SELECT {self._RULE_COLS} FROM channels ORDER BY key")
        return [self._rule(r) for r in rows]

    async def enqueue(self, channel: ChannelRef, arxiv_ids: Sequence[str], *, at: datetime) -> int:
        if not arxiv_ids:
            return 0
        async with self.db.write() as conn:
            row = await (await conn.execute(
                "SELECT coalesce(max(seq), 0) FROM channel_queue WHERE channel_key=?", (channel.key,))).fetchone()
            seq = int(row[0]) if row else 0
            before = conn.total_changes
            await conn.executemany(
                "INSERT OR IGNORE INTO channel_queue(channel_key, arxiv_id, queued_at, seq) VALUES (?,?,?,?)",
                [(channel.key, pid, at.isoformat(), seq + i + 1) for i, pid in enumerate(arxiv_ids)],
            )
            return conn.total_changes - before

    async def queued(self, channel: ChannelRef) -> list[str]:
        rows = await self.db.fetchall(
            "SELECT arxiv_id FROM channel_queue WHERE channel_key=? AND thread_day IS NULL ORDER BY seq",
            (channel.key,),
        )
        return [r[0] for r in rows]

    async def queue_state(self, channel: ChannelRef, arxiv_id: str) -> str | None:
        row = await self.db.fetchone(
            "SELECT coalesce(thread_day, 'queued') FROM channel_queue WHERE channel_key=? AND arxiv_id=?",
            (channel.key, arxiv_id),
        )
        return str(row[0]) if row else None

    async def set_paused(self, channel: ChannelRef, reason: str | None) -> None:
        async with self.db.write() as conn:
            await conn.execute("UPDATE channels SET paused_reason=? WHERE key=?", (reason, channel.key))


class SqliteSubscriptionStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    @staticmethod
    def _sub(row: Sequence[Any]) -> Subscription:
        return Subscription(row[0], UserRef(row[1], row[3], row[4], row[2]), row[5], _dt(row[6]))

    _COLS = "id, platform, workspace, user_id, user_name, query, created"

    async def add(self, user: UserRef, query: str, *, at: datetime) -> Subscription:
        async with self.db.write() as conn:
            await conn.execute(
                "INSERT OR IGNORE INTO subscriptions(user_key, platform, workspace, user_id, user_name, query, "
                "created) VALUES (?,?,?,?,?,?,?)",
                (user.key, user.platform, user.workspace, user.id, user.name, query, at.isoformat()),
            )
            row = await (await conn.execute(
                f"SELECT {self._COLS} FROM subscriptions WHERE user_key=? AND query=?", (user.key, query))).fetchone()
        assert row is not None
        return self._sub(row)

    async def remove(self, user: UserRef, sub_id: int) -> bool:
        async with self.db.write() as conn:
            cur = await conn.execute("DELETE FROM subscriptions WHERE id=? AND user_key=?", (sub_id, user.key))
            return cur.rowcount > 0

    async def for_user(self, user: UserRef) -> list[Subscription]:
        rows = await self.db.fetchall(f"SELECT {self._COLS} FROM subscriptions WHERE user_key=? ORDER BY id",
                                      (user.key,))
        return [self._sub(r) for r in rows]

    async def count_for(self, user: UserRef) -> int:
        return int((await self.db.fetchone("SELECT count(*) FROM subscriptions WHERE user_key=?", (user.key,)))[0])

    async def all(self) -> AsyncIterator[Subscription]:
        last = 0
        while True:
            rows = await self.db.fetchall(
                f"SELECT {self._COLS} FROM subscriptions WHERE id > ? ORDER BY id LIMIT 5000", (last,))
            if not rows:
                return
            for r in rows:
                yield self._sub(r)
            last = rows[-1][0]

    async def set_unreachable(self, user: UserRef, reason: str | None) -> None:
        now = datetime.now().astimezone().isoformat()
        notice = (f"I could not send you alerts by direct message ({reason}). Open your DMs to this bot and use "
                  "any command to turn alerts back on.") if reason else None
        async with self.db.write() as conn:
            await conn.execute(
                "INSERT INTO users(user_key, unreachable, notice, updated) VALUES (?,?,?,?) "
                "ON CONFLICT(user_key) DO UPDATE SET unreachable=excluded.unreachable, "
                "notice=coalesce(excluded.notice, users.notice), updated=excluded.updated",
                (user.key, reason, notice, now),
            )

    async def unreachable(self, user: UserRef) -> str | None:
        row = await self.db.fetchone("SELECT unreachable FROM users WHERE user_key=?", (user.key,))
        return row[0] if row else None

    async def take_notice(self, user: UserRef) -> str | None:
        row = await self.db.fetchone("SELECT notice FROM users WHERE user_key=? AND notice IS NOT NULL", (user.key,))
        if not row:
            return None
        async with self.db.write() as conn:
            # The user just used a command, so they can be reached again: the notice is their one telling.
            await conn.execute("UPDATE users SET notice=NULL, unreachable=NULL WHERE user_key=?", (user.key,))
        return str(row[0])


class SqliteDeliveryLedger:
    _COLS = ("id, key, platform, target, kind, state, payload, message_id, parent_key, attempts, error, created, "
             "updated")

    def __init__(self, db: Database) -> None:
        self.db = db

    async def _papers_for(self, ids: Sequence[int]) -> dict[int, tuple[str, ...]]:
        if not ids:
            return {}
        out: dict[int, list[str]] = {}
        marks = ",".join("?" * len(ids))
        for r in await self.db.fetchall(
            f"SELECT delivery_id, arxiv_id FROM delivery_papers WHERE delivery_id IN ({marks})", list(ids)
        ):
            out.setdefault(r[0], []).append(r[1])
        return {k: tuple(v) for k, v in out.items()}

    async def _rows(self, sql: str, params: Sequence[Any]) -> list[Delivery]:
        rows = await self.db.fetchall(sql, params)
        papers = await self._papers_for([r[0] for r in rows])
        return [
            Delivery(
                id=r[0], key=r[1], platform=r[2], target=r[3], kind=r[4], state=DeliveryState(r[5]), payload=r[6],
                message_id=r[7], parent_key=r[8], attempts=r[9], error=r[10], created=_dt(r[11]), updated=_dt(r[12]),
                paper_ids=papers.get(r[0], ()),
            )
            for r in rows
        ]

    async def plan(
        self, rows: Sequence[Delivery], *, claim: tuple[ChannelRef, date, Sequence[str]] | None = None
    ) -> int:
        now = datetime.now().astimezone().isoformat()
        async with self.db.write() as conn:
            added = await self._insert_rows(conn, rows, now)
            if claim is not None:
                channel, day, ids = claim
                await conn.executemany(
                    "UPDATE channel_queue SET thread_day=? WHERE channel_key=? AND arxiv_id=? AND thread_day IS NULL",
                    [(day.isoformat(), channel.key, pid) for pid in ids],
                )
        return added

    async def commit_routing(
        self,
        enqueue: Sequence[tuple[ChannelRef, Sequence[str]]],
        rows: Sequence[Delivery],
        routed: Sequence[str],
        *,
        at: datetime,
    ) -> int:
        """Queue papers for channels, plan alert DMs and mark the papers routed, all in one transaction, so a
        crash either routes a batch completely or not at all (and the restart routes it again)."""
        stamp = at.isoformat()
        added = 0
        async with self.db.write() as conn:
            for channel, ids in enqueue:
                row = await (await conn.execute(
                    "SELECT coalesce(max(seq), 0) FROM channel_queue WHERE channel_key=?", (channel.key,))).fetchone()
                seq = int(row[0]) if row else 0
                await conn.executemany(
                    "INSERT OR IGNORE INTO channel_queue(channel_key, arxiv_id, queued_at, seq) VALUES (?,?,?,?)",
                    [(channel.key, pid, stamp, seq + i + 1) for i, pid in enumerate(ids)],
                )
            added = await self._insert_rows(conn, rows, stamp)
            await conn.executemany("UPDATE papers SET routed=1 WHERE arxiv_id=?", [(pid,) for pid in routed])
        return added

    async def _insert_rows(self, conn: aiosqlite.Connection, rows: Sequence[Delivery], stamp: str) -> int:
        added = 0
        for d in rows:
            cur = await conn.execute(
                "INSERT OR IGNORE INTO deliveries(key, platform, target, kind, state, payload, parent_key, "
                "attempts, created, updated) VALUES (?,?,?,?,?,?,?,0,?,?)",
                (d.key, d.platform, d.target, d.kind, DeliveryState.PENDING.value, d.payload, d.parent_key,
                 stamp, stamp),
            )
            if cur.rowcount > 0:
                added += 1
                did = cur.lastrowid
                await conn.executemany(
                    "INSERT OR IGNORE INTO delivery_papers(arxiv_id, delivery_id) VALUES (?,?)",
                    [(pid, did) for pid in d.paper_ids],
                )
        return added

    async def pending(self, platform: str | None = None, limit: int = 1000) -> list[Delivery]:
        states = (DeliveryState.PENDING.value, DeliveryState.FAILED.value)
        if platform:
            return await self._rows(
                f"SELECT {self._COLS} FROM deliveries WHERE state IN (?,?) AND platform=? ORDER BY id LIMIT ?",
                (*states, platform, limit))
        return await self._rows(
            f"SELECT {self._COLS} FROM deliveries WHERE state IN (?,?) ORDER BY id LIMIT ?", (*states, limit))

    async def get(self, key: str) -> Delivery | None:
        rows = await self._rows(f"SELECT {self._COLS} FROM deliveries WHERE key=?", (key,))
        return rows[0] if rows else None

    async def _set(self, sql: str, params: Sequence[Any]) -> None:
        async with self.db.write() as conn:
            await conn.execute(sql, params)

    async def begin_attempt(self, delivery_id: int) -> None:
        await self._set("UPDATE deliveries SET attempts=attempts+1, updated=? WHERE id=?",
                        (datetime.now().astimezone().isoformat(), delivery_id))

    async def mark_sent(self, delivery_id: int, message_id: str) -> None:
        await self._set("UPDATE deliveries SET state='sent', message_id=?, error=NULL, updated=? WHERE id=?",
                        (message_id, datetime.now().astimezone().isoformat(), delivery_id))

    async def mark_failed(self, delivery_id: int, error: str, *, permanent: bool) -> None:
        state = DeliveryState.SKIPPED if permanent else DeliveryState.FAILED
        await self._set("UPDATE deliveries SET state=?, error=?, updated=? WHERE id=?",
                        (state.value, error[:500], datetime.now().astimezone().isoformat(), delivery_id))

    async def counts(self) -> dict[str, int]:
        rows = await self.db.fetchall("SELECT state, count(*) FROM deliveries GROUP BY state")
        return {r[0]: int(r[1]) for r in rows}

    async def for_target(self, target: str, limit: int = 50) -> list[Delivery]:
        return await self._rows(
            f"SELECT {self._COLS} FROM deliveries WHERE target=? ORDER BY id DESC LIMIT ?", (target, limit))

    async def failures(self, limit: int = 10) -> list[Delivery]:
        return await self._rows(
            f"SELECT {self._COLS} FROM deliveries WHERE state IN ('failed', 'skipped') ORDER BY updated DESC LIMIT ?",
            (limit,))

    async def find(self, target_prefix: str, paper_id: str) -> list[Delivery]:
        return await self._rows(
            f"SELECT {_prefixed(self._COLS)} FROM deliveries p JOIN delivery_papers dp ON dp.delivery_id = p.id "
            "WHERE dp.arxiv_id=? AND p.target=? ORDER BY p.id",
            (paper_id, target_prefix))


class SqliteStatusStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def record_fetch(self, status: SourceStatus) -> None:
        async with self.db.write() as conn:
            await conn.execute(
                "INSERT INTO source_status(source, last_run, outcome, papers, detail) VALUES (?,?,?,?,?) "
                "ON CONFLICT(source) DO UPDATE SET last_run=excluded.last_run, outcome=excluded.outcome, "
                "papers=excluded.papers, detail=excluded.detail",
                (status.source, _iso(status.last_run), status.outcome, status.papers, status.detail[:500]),
            )

    async def fetch_statuses(self) -> list[SourceStatus]:
        rows = await self.db.fetchall(
            "SELECT source, last_run, outcome, papers, detail FROM source_status ORDER BY source")
        return [SourceStatus(r[0], _dt(r[1]), r[2], r[3], r[4]) for r in rows]

    async def get_meta(self, key: str) -> str | None:
        row = await self.db.fetchone("SELECT value FROM meta WHERE key=?", (key,))
        return str(row[0]) if row else None

    async def set_meta(self, key: str, value: str) -> None:
        async with self.db.write() as conn:
            await conn.execute(
                "INSERT INTO meta(key, value) VALUES (?,?) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                (key, value))


class Stores:
    """The SQLite store of record behind every port, on one database."""

    def __init__(self, db: Database, readers: int = 0) -> None:
        self.db = db
        self.papers = SqlitePaperStore(db, readers)
        self.channels = SqliteChannelStore(db)
        self.subscriptions = SqliteSubscriptionStore(db)
        self.ledger = SqliteDeliveryLedger(db)
        self.status = SqliteStatusStore(db)

    @classmethod
    async def open(cls, path: Path | str, readers: int = SEARCH_READERS) -> Stores:
        return cls(await Database.open(path), readers)

    async def close(self) -> None:
        await self.papers.close_readers()
        await self.db.close()

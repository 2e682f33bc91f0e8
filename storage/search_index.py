"""Search at millions of papers on FTS5: a bounded candidate plan instead of `ORDER BY bm25() LIMIT 10`.

Why not bm25(): FTS5's bm25 counts, once per statement, every row that matches each phrase (its IDF), so a
query with one common word reads that word's whole doclist whatever the LIMIT: 1.3 s at 2.5M papers. Walking
a MATCH in rowid order and stopping early, by contrast, costs the same at 100k and 2.5M papers.

The ranking (defined here, tested against the reference matcher):

1. The candidates are the CANDIDATES (200) newest matching papers (store id descending; ids ascend as papers are
   stored). A query with fewer matches has all of them as candidates, so its ranking is over everything.
2. Each candidate scores, for every positive word or phrase of the query (`Query.terms()`, categories
   aside), TITLE_WEIGHT if its title contains it and AUTHOR_WEIGHT if its author list does (a leaf limited to
   another column adds nothing): the reference `term_matches` with the column set, so the score is exactly
   reproducible in Python.
3. Order: score descending, then newest first. Pages past the candidates continue newest first.

Prefix terms are expanded to the exact index terms they cover through `search_vocab` (migration 002): an OR
of a few terms streams in rowid order, where a native FTS5 prefix query first merges every doclist of every
term with that prefix across the whole table.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from bot.query import And, Category, Node, Not, Or, Query, Term, to_fts
from bot.text import Tokenizer, category_token, default_tokenizer
from storage.db import DatabaseError

CANDIDATES = 200
COUNT_CAP = 2_000
TITLE_WEIGHT = 10.0
AUTHOR_WEIGHT = 3.0
MAX_EXPANSION = 4000  # a prefix covering more terms than this runs as a native FTS5 prefix query
DIRTY_REBUILD = 20_000  # more papers than this with unindexed terms: rebuild search_vocab from FTS5 in bulk
_TOP = "\U0010ffff"

VOCAB_TABLE = "temp.papers_fts_terms"
CREATE_VOCAB = f"CREATE VIRTUAL TABLE IF NOT EXISTS {VOCAB_TABLE} USING fts5vocab(main, papers_fts, 'row')"


class _Nothing:
    """A subtree that can match no paper (a prefix no stored term starts with)."""


NOTHING = _Nothing()


def _quote(text: str) -> str:
    return '"' + text.replace('"', '""') + '"'


class Compiler:
    """Compiles a query to an FTS5 MATCH like bot.query.to_fts, expanding single-word prefixes to terms.

    `expand(prefix)` returns the stored terms starting with `prefix`, or None to keep FTS5's own prefix query.
    A term is only emitted quoted if FTS5 re-tokenises it to itself (Porter is not idempotent on every stem);
    otherwise the native prefix query is used for that leaf, which is slower but always exact.
    """

    def __init__(self, expand: Callable[[str], list[str] | None], tokenizer: Tokenizer | None = None,
                 verified: dict[str, str | None] | None = None) -> None:
        self.expand = expand
        self.tok = tokenizer or default_tokenizer()
        # term -> what FTS5 makes of it as query text (itself for most stems), None if not one token
        self.verified: dict[str, str | None] = verified if verified is not None else {}

    def compile(self, node: Node) -> str | _Nothing:
        if isinstance(node, Term):
            return self._term(node)
        if isinstance(node, Category):
            return "cats : " + _quote(category_token(node.name))
        if isinstance(node, Or):
            parts = [p for p in (self.compile(c) for c in node.children) if not isinstance(p, _Nothing)]
            if not parts:
                return NOTHING
            return parts[0] if len(parts) == 1 else "(" + " OR ".join(p for p in parts if isinstance(p, str)) + ")"
        if isinstance(node, Not):
            raise AssertionError("NOT is compiled by its parent AND")
        assert isinstance(node, And)
        positives: list[str] = []
        for c in node.children:
            if isinstance(c, Not):
                continue
            p = self.compile(c)
            if isinstance(p, _Nothing):
                return NOTHING
            positives.append(p)
        negatives = [p for p in (self.compile(c.child) for c in node.children if isinstance(c, Not))
                     if not isinstance(p, _Nothing)]
        expr = "(" + " AND ".join(positives) + ")"
        if negatives:
            expr = "(" + expr + " NOT (" + " OR ".join(p for p in negatives if isinstance(p, str)) + "))"
        return expr

    def _term(self, term: Term) -> str | _Nothing:
        if not (term.prefix and len(term.tokens) == 1):
            return to_fts(term)
        terms = self.expand(term.tokens[0])
        if terms is None:
            return to_fts(term)
        if not terms:
            return NOTHING
        unknown = [t for t in terms if t not in self.verified]
        if unknown:
            if len(self.verified) > 500_000:
                self.verified.clear()
            for t, stream in zip(unknown, self.tok.tokenize_many(unknown), strict=True):
                self.verified[t] = stream[0] if len(stream) == 1 else None
        prefix = term.tokens[0]
        parts = []
        for t in terms:
            again = self.verified[t]
            if again == t:
                parts.append(_quote(t))
            elif again is not None and t.startswith(again) and again.startswith(prefix):
                # Porter is not idempotent on this stem (agreed -> agre -> agr), so "agre" cannot be asked
                # for exactly. "agre"* covers the terms starting with agre, or, if FTS5 stems it first, with
                # agr; both include agre and start with the user's prefix, so the union is unchanged.
                parts.append(_quote(t) + "*")
            else:
                return to_fts(term)
        cols = term.column or "title abstract authors"
        return "{" + cols + "} : (" + " OR ".join(parts) + ")"


def has_prefix(node: Node | None) -> bool:
    if node is None:
        return False
    if isinstance(node, Term):
        return node.prefix and len(node.tokens) == 1
    if isinstance(node, Category):
        return False
    if isinstance(node, Not):
        return has_prefix(node.child)
    return any(has_prefix(c) for c in node.children)


# ---------------------------------------------------------------- the prefix vocabulary (derived data)


def rebuild_vocab_sync(conn: sqlite3.Connection) -> int:
    """Refill search_vocab from the FTS5 index itself, in one transaction with clearing the dirty list."""
    conn.execute(CREATE_VOCAB)
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute("DELETE FROM search_vocab")
        conn.execute(f"INSERT INTO search_vocab(term) SELECT term FROM {VOCAB_TABLE}")
        conn.execute("DELETE FROM search_vocab_dirty")
        n = int(conn.execute("SELECT count(*) FROM search_vocab").fetchone()[0])
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return n


def refresh_vocab_sync(conn: sqlite3.Connection, tokenizer: Tokenizer | None = None) -> int:
    """Fold papers marked dirty into search_vocab. Returns how many papers were folded in."""
    if conn.execute("SELECT 1 FROM search_vocab_dirty LIMIT 1").fetchone() is None:
        return 0
    conn.execute("BEGIN IMMEDIATE")
    try:
        ids = [r[0] for r in conn.execute("SELECT id FROM search_vocab_dirty LIMIT ?", (DIRTY_REBUILD + 1,))]
        if len(ids) > DIRTY_REBUILD:
            conn.execute("ROLLBACK")
            rebuild_vocab_sync(conn)
            return len(ids)
        _fold(conn, ids, tokenizer or default_tokenizer())
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return len(ids)


def _fold(conn: Any, ids: Sequence[int], tok: Tokenizer) -> None:
    texts: list[str] = []
    for i in range(0, len(ids), 500):
        chunk = ids[i : i + 500]
        marks = ",".join("?" * len(chunk))
        for row in conn.execute(f"SELECT title, abstract, authors, cats FROM papers WHERE id IN ({marks})", chunk):
            texts.extend(str(x or "") for x in row)
    terms: set[str] = set()
    for stream in tok.tokenize_many(texts):
        terms.update(stream)
    conn.executemany("INSERT OR IGNORE INTO search_vocab(term) VALUES (?)", [(t,) for t in terms])
    conn.executemany("DELETE FROM search_vocab_dirty WHERE id=?", [(i,) for i in ids])


# ---------------------------------------------------------------- the plan, on the async store connection


@dataclass(frozen=True, slots=True)
class Ranked:
    ids: list[tuple[int, float]]  # (paper id, score), in result order, already paged
    total: int | None


class SearchPlanner:
    """The fast search plan over one aiosqlite connection (the store's)."""

    def __init__(self, db: Any, tokenizer: Tokenizer | None = None) -> None:
        self.db = db  # storage.sqlite.Database
        self.tok = tokenizer or default_tokenizer()
        self._vocab_ready = False
        self._verified: dict[str, str | None] = {}
        self._floors: dict[tuple[str, int, int], int] = {}

    async def _ensure_vocab(self) -> None:
        conn = self.db.conn
        if not self._vocab_ready:
            await conn.execute(CREATE_VOCAB)
            self._vocab_ready = True
        row = await self.db.fetchone("SELECT 1 FROM search_vocab_dirty LIMIT 1")
        if row is None:
            return
        async with self.db.write() as wconn:
            ids = [r[0] for r in await (await wconn.execute(
                "SELECT id FROM search_vocab_dirty LIMIT ?", (DIRTY_REBUILD + 1,))).fetchall()]
            if len(ids) > DIRTY_REBUILD:
                await wconn.execute("DELETE FROM search_vocab")
                await wconn.execute(f"INSERT INTO search_vocab(term) SELECT term FROM {VOCAB_TABLE}")
                await wconn.execute("DELETE FROM search_vocab_dirty")
                return
            texts: list[str] = []
            for i in range(0, len(ids), 500):
                chunk = ids[i : i + 500]
                marks = ",".join("?" * len(chunk))
                rows = await (await wconn.execute(
                    f"SELECT title, abstract, authors, cats FROM papers WHERE id IN ({marks})", chunk)).fetchall()
                for row in rows:
                    texts.extend(str(x or "") for x in row)
            streams = await asyncio.to_thread(self.tok.tokenize_many, texts)
            terms = {t for s in streams for t in s}
            await wconn.executemany("INSERT OR IGNORE INTO search_vocab(term) VALUES (?)", [(t,) for t in terms])
            await wconn.executemany("DELETE FROM search_vocab_dirty WHERE id=?", [(i,) for i in ids])

    async def compile(self, query: Query) -> str | _Nothing:
        assert query.root is not None
        if not has_prefix(query.root):
            return to_fts(query.root)
        try:
            await self._ensure_vocab()
        except DatabaseError:
            # Another process holds the write lock (a backfill, say) and the vocabulary is behind: FTS5's own
            # prefix query is slower but never misses a word.
            return to_fts(query.root)
        compiler = await self._compiler_for(query)
        # Checking that each term re-tokenises to itself runs the tokenizer: off the event loop.
        return await asyncio.to_thread(compiler.compile, query.root)

    async def since_floor(self, query: Query) -> int:
        """The smallest id of a paper dated on or after `since` (0 = no bound): lets FTS5 skip older rowids."""
        if query.since is None:
            return 0
        # Scanning the date index costs ~25 ms for a year of 2.5M papers; the answer only changes when the
        # database does (another connection's commit bumps data_version, ours bump total_changes).
        version = int((await self.db.fetchone("PRAGMA data_version"))[0])
        key = (query.since.isoformat(), version, int(self.db.conn.total_changes))
        cached = self._floors.get(key)
        if cached is not None:
            return cached
        row = await self.db.fetchone(
            "SELECT min(id) FROM papers INDEXED BY papers_published WHERE published >= ?", (query.since.isoformat(),))
        floor = int(row[0]) if row and row[0] is not None else -1
        if len(self._floors) > 256:
            self._floors.clear()
        self._floors[key] = floor
        return floor

    async def run(self, query: Query, match: str, *, limit: int, offset: int, order: str, count: bool) -> Ranked:
        floor = await self.since_floor(query)
        if floor < 0:
            return Ranked([], 0 if count else None)
        want = offset + limit
        n = max(CANDIDATES, want)
        params: list[Any] = [match, floor]
        since_sql = ""
        if query.since is not None:
            since_sql = " AND p.published >= ?"
            params.append(query.since.isoformat())
        cols = "papers_fts.rowid, NULL" if order == "rank" else "papers_fts.rowid, p.published"
        join = " JOIN papers p ON p.id = papers_fts.rowid" if since_sql or order != "rank" else ""
        sql = (f"SELECT {cols} FROM papers_fts{join} WHERE papers_fts MATCH ? AND papers_fts.rowid >= ?{since_sql} "
               "ORDER BY papers_fts.rowid DESC LIMIT ?")
        rows = await self.db.fetchall(sql, [*params, n])
        if order == "rank":
            scores = await self._scores(query, match, [int(r[0]) for r in rows])
            scored = sorted(scores.items(), key=lambda x: (-x[1], -x[0]))
        else:
            # Newest by date within the window of newest stored matches (exact whenever all matches fit).
            by_date = sorted(rows, key=lambda r: (r[1] or "", int(r[0])), reverse=True)
            scored = [(int(r[0]), 0.0) for r in by_date]
        total: int | None = None
        if count:
            if len(rows) < n:
                total = len(rows)
            else:
                csql = (f"SELECT count(*) FROM (SELECT papers_fts.rowid FROM papers_fts{join} WHERE papers_fts MATCH ? "
                        f"AND papers_fts.rowid >= ?{since_sql} ORDER BY papers_fts.rowid DESC LIMIT ?)")
                cap = COUNT_CAP if query.since is None else 10 * COUNT_CAP
                c = int((await self.db.fetchone(csql, [*params, cap + 1]))[0])
                total = c if c <= cap else None
        return Ranked(scored[offset:want], total)

    async def _scores(self, query: Query, match: str, ids: list[int]) -> dict[int, float]:
        """Each candidate's score: per positive word or phrase of the query, TITLE_WEIGHT if the title has it
        and AUTHOR_WEIGHT if the author list has it. One FTS5 query per (leaf, column), limited to the
        candidates' rowid range and AND-ed with the whole query, so FTS5 skips through the doclists."""
        scores = dict.fromkeys(ids, 0.0)
        if not ids:
            return scores
        low = min(ids)
        leaf_exprs: list[tuple[str, float]] = []
        compiler = None
        for leaf in query.terms():
            if not isinstance(leaf, Term):
                continue
            for column, weight in (("title", TITLE_WEIGHT), ("authors", AUTHOR_WEIGHT)):
                if leaf.column not in (None, column):
                    continue
                one = replace(leaf, column=column)
                if has_prefix(one):
                    if compiler is None:
                        compiler = await self._compiler_for(query)
                    expr = await asyncio.to_thread(compiler.compile, one)
                else:
                    expr = to_fts(one)
                if isinstance(expr, str):
                    leaf_exprs.append((expr, weight))
        for expr, weight in leaf_exprs:
            rows = await self.db.fetchall(
                "SELECT rowid FROM papers_fts WHERE papers_fts MATCH ? AND rowid >= ?",
                (f"({match}) AND ({expr})", low))
            for r in rows:
                rid = int(r[0])
                if rid in scores:
                    scores[rid] += weight
        return scores

    async def _compiler_for(self, query: Query) -> Compiler:
        expansions: dict[str, list[str] | None] = {}
        for prefix in _prefixes(query.root) if query.root is not None else []:
            rows = await self.db.fetchall(
                "SELECT term FROM search_vocab WHERE term >= ? AND term < ? LIMIT ?",
                (prefix, prefix + _TOP, MAX_EXPANSION + 1))
            terms = [str(r[0]) for r in rows]
            expansions[prefix] = None if len(terms) > MAX_EXPANSION else terms
        return Compiler(lambda p: expansions.get(p), self.tok, self._verified)


def _prefixes(node: Node) -> list[str]:
    out: list[str] = []
    if isinstance(node, Term):
        if node.prefix and len(node.tokens) == 1:
            out.append(node.tokens[0])
    elif isinstance(node, Not):
        out += _prefixes(node.child)
    elif isinstance(node, And | Or):
        for c in node.children:
            out += _prefixes(c)
    return out

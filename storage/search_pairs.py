"""The pair index (migration 005): two-word phrases of common words without FTS5's position lists.

A phrase of two common words ("learning different", "that transformers") costs FTS5 a walk over both words'
position lists, 2-4 ms at 100k papers even for the 200 newest matches, since such a phrase is rare among the
tens of thousands of papers that have both words (measured). Here every adjacent pair of head words (a word in
at least PAIR_HEAD_SHARE of the papers when the index was built) is one token, `a_b`, plus `a_b_t` in a title
and `a_b_a` in an author list; a phrase of two head words is then a lookup of one doclist (0.15 ms). A phrase
with a rarer word stays with FTS5, which is quick for it (at most ~1 ms at 100k, measured). Only ASCII stems
are heads, so a pair token is `[a-z0-9_]` and FTS5's ascii tokenizer (with `_` a token character) keeps it whole.

Exactness: a token `a_b` is indexed for a paper exactly when stems a, b are adjacent in its title, abstract or
author list (the token streams are FTS5's own, `FastTokenizer`), which is FTS5's phrase "a b" over those
columns. Coverage is every paper with id >= `search_pairs_low` (meta), except papers marked in
search_pairs_dirty, which a search folds in first (`storage.search_index.write_first`) or, if it cannot take
the write lock, reads through FTS5 instead. The heads change only in a rebuild, which empties the index first,
so a row's tokens are always removed with the same heads they were added with.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterable, Sequence
from itertools import compress, pairwise
from operator import and_
from typing import Any

from bot.matching import fast_tokenizer
from bot.query import Term
from bot.text import Tokenizer, default_tokenizer

PAIR_HEAD_SHARE = 0.02  # a head word is in at least this share of the papers (2%: 944 words at 100k, measured)
PAIR_HEAD_MIN = 500  # and in at least this many: below that, FTS5's phrase query is quick anyway
PAIR_WINDOW = 500_000  # a rebuild indexes the pairs of this many newest papers (search_index.RECENT_PAPERS)
PAIR_DIRTY_MAX = 20_000  # more marked papers than this are left to a rebuild (backfill, reindex), not a search
_CHUNK = 5_000
LOW_KEY = "search_pairs_low"
_COLUMN_TAG = {"title": "_t", "authors": "_a"}  # a column-limited phrase's token; an abstract one stays in FTS5

_LOW = f"(SELECT CAST(value AS INTEGER) FROM meta WHERE key = '{LOW_KEY}')"
SELECT_STATE = (f"SELECT {_LOW}, (SELECT count(*) FROM search_pairs_heads WHERE term IN (?, ?)), "
                f"EXISTS (SELECT 1 FROM search_pairs_dirty WHERE id >= {_LOW})")
COUNT_MARKED = "SELECT count(*) FROM (SELECT 1 FROM search_pairs_dirty WHERE id >= ? LIMIT ?)"
SELECT_DIRTY = "SELECT id, indexed, title, abstract, authors FROM search_pairs_dirty WHERE id >= ? LIMIT ?"
DELETE_PAIRS = "INSERT INTO search_pairs(search_pairs, rowid, pairs) VALUES ('delete', ?, ?)"
INSERT_PAIRS = "INSERT INTO search_pairs(rowid, pairs) VALUES (?, ?)"
UNMARK = "DELETE FROM search_pairs_dirty WHERE id = ?"
LOW_SQL = f"SELECT {_LOW}"
SET_LOW = f"INSERT OR REPLACE INTO meta(key, value) VALUES ('{LOW_KEY}', ?)"


def pair_token(term: Term) -> str | None:
    """The pair index's token for a word-pair phrase it could hold, or None (FTS5 then answers it)."""
    if term.prefix or len(term.tokens) != 2 or term.column not in (None, "title", "authors"):
        return None
    a, b = term.tokens
    if not (_plain(a) and _plain(b)):
        return None
    return f"{a}_{b}" + ("" if term.column is None else _COLUMN_TAG[term.column])


def _plain(stem: str) -> bool:
    return stem.isascii() and stem.isalnum()


def _pairs(stream: Sequence[str], heads: frozenset[str]) -> list[str]:
    # Iterators and C methods only: a Python loop over every adjacent pair cost 4 of 21 s of a 100k build.
    is_head = list(map(heads.__contains__, stream))
    return list(map("_".join, compress(pairwise(stream), map(and_, is_head, is_head[1:]))))


def pair_texts(texts: Sequence[str], heads: frozenset[str], tok: Tokenizer) -> list[str]:
    """For each (title, abstract, authors) triple in `texts` (3 per paper), its pair tokens as one text."""
    streams = fast_tokenizer(tok).tokenize_many(texts)
    out = []
    for i in range(0, len(streams), 3):
        title, abstract, authors = (_pairs(s, heads) for s in streams[i : i + 3])
        tokens = {*title, *abstract, *authors, *(p + _COLUMN_TAG["title"] for p in title),
                  *(p + _COLUMN_TAG["authors"] for p in authors)}
        out.append(" ".join(tokens))
    return out


def fold_rows(dirty: Sequence[Any], current: Iterable[Any], heads: frozenset[str], low: int,
              tok: Tokenizer) -> tuple[list[tuple[int, str]], list[tuple[int, str]]]:
    """(rowid, text) to delete and to insert for marked papers: `dirty` rows (id, indexed, title, abstract,
    authors) and the papers' `current` rows (id, title, abstract, authors). Pure, so the writer can run it off
    its event loop."""
    if not heads:
        return [], []
    old = [r for r in dirty if r[1] and int(r[0]) >= low]
    new = [r for r in current if int(r[0]) >= low]
    texts = [str(x or "") for r in old for x in r[2:5]] + [str(x or "") for r in new for x in r[1:4]]
    made = pair_texts(texts, heads, tok)
    deletes = [(int(r[0]), t) for r, t in zip(old, made[: len(old)], strict=True) if t]
    inserts = [(int(r[0]), t) for r, t in zip(new, made[len(old) :], strict=True) if t]
    return deletes, inserts


def current_rows_sql(ids: Sequence[int]) -> str:
    return f"SELECT id, title, abstract, authors FROM papers WHERE id IN ({','.join('?' * len(ids))})"


def heads_of(conn: Any) -> frozenset[str]:
    return frozenset(str(r[0]) for r in conn.execute("SELECT term FROM search_pairs_heads"))


def low_of(conn: sqlite3.Connection) -> int:
    return _low(conn.execute(LOW_SQL).fetchone())


def _low(row: Any) -> int:
    """The low mark read by LOW_SQL (1 if none is stored: every paper)."""
    return int(row[0]) if row and row[0] is not None else 1


def fold_sync(conn: sqlite3.Connection, tok: Tokenizer | None = None, *, most: int = PAIR_DIRTY_MAX) -> int:
    """Fold up to `most` marked papers into the pair index, in the caller's write transaction. Returns how many
    were folded; marks below the low mark are just cleared (those papers are not covered)."""
    tok = tok or default_tokenizer()
    low = low_of(conn)
    conn.execute("DELETE FROM search_pairs_dirty WHERE id < ?", (low,))
    dirty = conn.execute(SELECT_DIRTY, (low, most)).fetchall()
    heads = heads_of(conn)
    for i in range(0, len(dirty), 500):
        chunk = dirty[i : i + 500]
        ids = [int(r[0]) for r in chunk]
        deletes, inserts = fold_rows(chunk, conn.execute(current_rows_sql(ids), ids), heads, low, tok)
        conn.executemany(DELETE_PAIRS, deletes)
        conn.executemany(INSERT_PAIRS, inserts)
        conn.executemany(UNMARK, [(i,) for i in ids])
    return len(dirty)


async def fold_async(wconn: Any, tok: Tokenizer) -> int:
    """fold_sync on the store's writer (an aiosqlite connection, in its write transaction), tokenising off the
    event loop."""
    low = _low(await (await wconn.execute(LOW_SQL)).fetchone())
    await wconn.execute("DELETE FROM search_pairs_dirty WHERE id < ?", (low,))
    dirty = await (await wconn.execute(SELECT_DIRTY, (low, PAIR_DIRTY_MAX))).fetchall()
    heads = frozenset(str(r[0]) for r in await (await wconn.execute("SELECT term FROM search_pairs_heads")).fetchall())
    ids = [int(r[0]) for r in dirty]
    current = [row for i in range(0, len(ids), 500)
               for row in await (await wconn.execute(current_rows_sql(ids[i : i + 500]), ids[i : i + 500])).fetchall()]
    deletes, inserts = await asyncio.to_thread(fold_rows, dirty, current, heads, low, tok)
    await wconn.executemany(DELETE_PAIRS, deletes)
    await wconn.executemany(INSERT_PAIRS, inserts)
    await wconn.executemany(UNMARK, [(i,) for i in ids])
    return len(ids)


def choose_heads(conn: sqlite3.Connection) -> list[str]:
    """Head words: ASCII stems in at least PAIR_HEAD_SHARE of the papers, and at least PAIR_HEAD_MIN of them."""
    from storage.search_index import CREATE_VOCAB, VOCAB_TABLE

    conn.execute(CREATE_VOCAB)
    papers = int(conn.execute("SELECT count(*) FROM papers").fetchone()[0])
    floor = max(PAIR_HEAD_MIN, PAIR_HEAD_SHARE * papers)
    return [str(r[0]) for r in conn.execute(f"SELECT term FROM {VOCAB_TABLE} WHERE doc >= ?", (floor,))
            if _plain(str(r[0]))]


def rebuild_sync(conn: sqlite3.Connection, tok: Tokenizer | None = None, *, window: int = PAIR_WINDOW) -> int:
    """Choose the heads again and index the pairs of the `window` newest papers, in the caller's write
    transaction; returns how many papers were indexed."""
    from storage.backfill import BULK_FTS_CONFIG, FTS_DEFAULTS  # the settings its bulk load uses for papers_fts

    tok = tok or default_tokenizer()
    heads = choose_heads(conn)
    conn.execute("INSERT INTO search_pairs(search_pairs) VALUES ('delete-all')")
    conn.execute("DELETE FROM search_pairs_heads")
    conn.execute("DELETE FROM search_pairs_dirty")
    conn.executemany("INSERT INTO search_pairs_heads(term) VALUES (?)", [(h,) for h in heads])
    top = int(conn.execute("SELECT coalesce(max(id), 0) FROM papers").fetchone()[0])
    low = max(1, top - window + 1) if heads else top + 1
    head_set = frozenset(heads)
    high, done = top, 0
    for key, value in BULK_FTS_CONFIG:  # as the backfill loads papers_fts: merge once, at the end
        conn.execute("INSERT INTO search_pairs(search_pairs, rank) VALUES (?, ?)", (key, value))
    while heads and high >= low:
        rows = conn.execute("SELECT id, title, abstract, authors FROM papers WHERE id BETWEEN ? AND ?",
                            (max(low, high - _CHUNK + 1), high)).fetchall()
        texts = pair_texts([str(x or "") for r in rows for x in r[1:]], head_set, tok)
        conn.executemany(INSERT_PAIRS, [(int(r[0]), t) for r, t in zip(rows, texts, strict=True) if t])
        done += len(rows)
        high -= _CHUNK
    conn.execute(SET_LOW, (str(low),))
    conn.execute("INSERT INTO search_pairs(search_pairs) VALUES ('optimize')")
    for key, value in FTS_DEFAULTS.items():
        conn.execute("INSERT INTO search_pairs(search_pairs, rank) VALUES (?, ?)", (key, value))
    return done


def refresh_sync(conn: sqlite3.Connection, tok: Tokenizer | None = None, *, window: int = PAIR_WINDOW,
                 rebuild: bool = False) -> int:
    """After a bulk load: rebuild if asked, if there are no heads yet or if there are too many marks to fold;
    else fold. Its own write transaction. Returns how many papers were indexed or folded."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        low = low_of(conn)
        marked = conn.execute(COUNT_MARKED, (low, PAIR_DIRTY_MAX + 1)).fetchone()[0]
        empty = conn.execute("SELECT NOT EXISTS (SELECT 1 FROM search_pairs_heads)").fetchone()[0]
        again = rebuild or empty or marked > PAIR_DIRTY_MAX
        n = rebuild_sync(conn, tok, window=window) if again else fold_sync(conn, tok)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return n

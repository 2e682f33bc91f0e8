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

Prefixes (`spi*`) use the same table. A short prefix is an OR of hundreds of index terms (`spi*`: 538 at 100k
papers), and FTS5 sets up every term it is asked for: 2-3 ms at 100k papers before a row is read, even asked for
only among the newest papers (search_index's tiers). A head prefix (an ASCII prefix of more than
PREFIX_HEAD_TERMS of the indexed terms when the index was built) is one token here, `_spi`, for every paper
with a title, abstract or author token starting with it: the 200 newest matches are then one doclist read
(0.2 ms). Prefix tokens cover the PREFIX_WINDOW newest papers, from `search_prefix_low` (meta) up: a broad
prefix finds all its candidates among them, and a narrower one continues through FTS5 below. Their heads are
stored beside the head words, as `spi*`.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import compress, count, groupby, pairwise
from operator import and_, itemgetter
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
# A prefix is a head if more indexed terms than this start with it: what search_index.TIER_TERMS asks for in tiers.
PREFIX_HEAD_TERMS = 64
PREFIX_WINDOW = 100_000  # a rebuild indexes the head prefixes of this many newest papers
PREFIX_KEY = "search_prefix_low"
_PREFIX_MARK = "_"  # a prefix token is `_spi`; a pair token starts with a word, never with `_`
_PREFIX_HEAD = "*"  # a head prefix is stored in search_pairs_heads as `spi*`, beside the head words
_NONE = 2**62  # a low mark above every id: nothing covered

_LOW = f"(SELECT CAST(value AS INTEGER) FROM meta WHERE key = '{LOW_KEY}')"
_PREFIX_LOW = f"(SELECT CAST(value AS INTEGER) FROM meta WHERE key = '{PREFIX_KEY}')"
SELECT_STATE = (f"SELECT {_LOW}, (SELECT count(*) FROM search_pairs_heads WHERE term IN (?, ?)), "
                f"EXISTS (SELECT 1 FROM search_pairs_dirty WHERE id >= {_LOW})")
SELECT_PREFIX_STATE = (f"SELECT {_PREFIX_LOW}, EXISTS (SELECT 1 FROM search_pairs_heads WHERE term = ?), "
                       f"EXISTS (SELECT 1 FROM search_pairs_dirty WHERE id >= {_PREFIX_LOW})")
COUNT_MARKED = "SELECT count(*) FROM (SELECT 1 FROM search_pairs_dirty WHERE id >= ? LIMIT ?)"
SELECT_DIRTY = "SELECT id, indexed, title, abstract, authors FROM search_pairs_dirty WHERE id >= ? LIMIT ?"
DELETE_PAIRS = "INSERT INTO search_pairs(search_pairs, rowid, pairs) VALUES ('delete', ?, ?)"
INSERT_PAIRS = "INSERT INTO search_pairs(rowid, pairs) VALUES (?, ?)"
UNMARK = "DELETE FROM search_pairs_dirty WHERE id = ?"
SELECT_HEADS = "SELECT term FROM search_pairs_heads"
LOW_SQL = f"SELECT {_LOW}, {_PREFIX_LOW}"
SET_LOW = f"INSERT OR REPLACE INTO meta(key, value) VALUES ('{LOW_KEY}', ?)"
SET_PREFIX_LOW = f"INSERT OR REPLACE INTO meta(key, value) VALUES ('{PREFIX_KEY}', ?)"


@dataclass(frozen=True, slots=True)
class Heads:
    """What the index holds: pairs of `words`, and from `prefix_low` up the head `prefixes`."""

    words: frozenset[str]
    prefixes: frozenset[str] = frozenset()
    prefix_low: int = _NONE

    @property
    def lengths(self) -> tuple[int, ...]:
        return tuple(sorted({len(p) for p in self.prefixes}))


def pair_token(term: Term) -> str | None:
    """The pair index's token for a word-pair phrase it could hold, or None (FTS5 then answers it)."""
    if term.prefix or len(term.tokens) != 2 or term.column not in (None, "title", "authors"):
        return None
    a, b = term.tokens
    if not (_plain(a) and _plain(b)):
        return None
    return f"{a}_{b}" + ("" if term.column is None else _COLUMN_TAG[term.column])


def prefix_token(term: Term) -> str | None:
    """The index's token for a prefix term it could hold (in any text column), or None."""
    if not term.prefix or len(term.tokens) != 1 or term.column is not None or not _plain(term.tokens[0]):
        return None
    return _PREFIX_MARK + term.tokens[0]


def prefix_head(token: str) -> str:
    """How a prefix token's head is stored in search_pairs_heads."""
    return token[len(_PREFIX_MARK):] + _PREFIX_HEAD


def _plain(stem: str) -> bool:
    return stem.isascii() and stem.isalnum()


def _pairs(stream: Sequence[str], heads: frozenset[str]) -> list[str]:
    # Iterators and C methods only: a Python loop over every adjacent pair cost 4 of 21 s of a 100k build.
    is_head = list(map(heads.__contains__, stream))
    return list(map("_".join, compress(pairwise(stream), map(and_, is_head, is_head[1:]))))


def _prefixes(streams: Sequence[Sequence[str]], prefixes: frozenset[str], cuts: Sequence[itemgetter[Any]]) -> list[str]:
    """The prefix tokens of one paper: its head prefixes that some token of its streams starts with. A token
    shorter than a cut is itself (a head it equals is one it starts with), so this is exact."""
    tokens = set().union(*streams)
    found: set[str] = set()
    for cut in cuts:  # t[:k] for every k a head has, at C speed
        found.update(prefixes.intersection(map(cut, tokens)))
    return [_PREFIX_MARK + p for p in found]


def pair_texts(texts: Sequence[str], heads: Heads, tok: Tokenizer, prefixed: Sequence[bool] | None = None) -> list[str]:
    """For each (title, abstract, authors) triple in `texts` (3 per paper), its tokens as one text: pairs of head
    words, and the head prefixes where `prefixed[paper]`."""
    words = heads.words
    cuts = [itemgetter(slice(0, k)) for k in heads.lengths]
    streams = fast_tokenizer(tok).tokenize_many(texts)
    out = []
    for i in range(0, len(streams), 3):
        three = streams[i : i + 3]
        title, abstract, authors = (_pairs(s, words) for s in three)
        tokens = {*title, *abstract, *authors, *(p + _COLUMN_TAG["title"] for p in title),
                  *(p + _COLUMN_TAG["authors"] for p in authors)}
        if prefixed is not None and prefixed[i // 3] and cuts:
            tokens.update(_prefixes(three, heads.prefixes, cuts))
        out.append(" ".join(tokens))
    return out


def fold_rows(dirty: Sequence[Any], current: Iterable[Any], heads: Heads, low: int,
              tok: Tokenizer) -> tuple[list[tuple[int, str]], list[tuple[int, str]]]:
    """(rowid, text) to delete and to insert for marked papers: `dirty` rows (id, indexed, title, abstract,
    authors) and the papers' `current` rows (id, title, abstract, authors). Pure, so the writer can run it off
    its event loop."""
    if not heads.words and not heads.prefixes:
        return [], []
    old = [r for r in dirty if r[1] and int(r[0]) >= low]
    new = [r for r in current if int(r[0]) >= low]
    texts = [str(x or "") for r in old for x in r[2:5]] + [str(x or "") for r in new for x in r[1:4]]
    made = pair_texts(texts, heads, tok, [int(r[0]) >= heads.prefix_low for r in (*old, *new)])
    deletes = [(int(r[0]), t) for r, t in zip(old, made[: len(old)], strict=True) if t]
    inserts = [(int(r[0]), t) for r, t in zip(new, made[len(old) :], strict=True) if t]
    return deletes, inserts


def current_rows_sql(ids: Sequence[int]) -> str:
    return f"SELECT id, title, abstract, authors FROM papers WHERE id IN ({','.join('?' * len(ids))})"


def _heads(rows: Iterable[Any], prefix_low: int) -> Heads:
    terms = [str(r[0]) for r in rows]
    return Heads(frozenset(t for t in terms if not t.endswith(_PREFIX_HEAD)),
                 frozenset(t[: -len(_PREFIX_HEAD)] for t in terms if t.endswith(_PREFIX_HEAD)), prefix_low)


def heads_of(conn: sqlite3.Connection) -> Heads:
    return _heads(conn.execute(SELECT_HEADS), _lows(conn.execute(LOW_SQL).fetchone())[1])


def low_of(conn: sqlite3.Connection) -> int:
    return _lows(conn.execute(LOW_SQL).fetchone())[0]


def _lows(row: Any) -> tuple[int, int]:
    """The low marks read by LOW_SQL: pairs (1 if none is stored: every paper), prefixes (none: no paper)."""
    return (int(row[0]) if row and row[0] is not None else 1,
            int(row[1]) if row and row[1] is not None else _NONE)


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
    low, prefix_low = _lows(await (await wconn.execute(LOW_SQL)).fetchone())
    await wconn.execute("DELETE FROM search_pairs_dirty WHERE id < ?", (low,))
    dirty = await (await wconn.execute(SELECT_DIRTY, (low, PAIR_DIRTY_MAX))).fetchall()
    heads = _heads(await (await wconn.execute(SELECT_HEADS)).fetchall(), prefix_low)
    ids = [int(r[0]) for r in dirty]
    current = [row for i in range(0, len(ids), 500)
               for row in await (await wconn.execute(current_rows_sql(ids[i : i + 500]), ids[i : i + 500])).fetchall()]
    deletes, inserts = await asyncio.to_thread(fold_rows, dirty, current, heads, low, tok)
    await wconn.executemany(DELETE_PAIRS, deletes)
    await wconn.executemany(INSERT_PAIRS, inserts)
    await wconn.executemany(UNMARK, [(i,) for i in ids])
    return len(ids)


def choose_heads(conn: sqlite3.Connection) -> tuple[list[str], list[str]]:
    """Head words (ASCII stems in at least PAIR_HEAD_SHARE of the papers, and at least PAIR_HEAD_MIN of them)
    and head prefixes (ASCII prefixes, of two characters or more as a query's are, of more than
    PREFIX_HEAD_TERMS indexed terms)."""
    from storage.search_index import CREATE_VOCAB, VOCAB_TABLE

    conn.execute(CREATE_VOCAB)
    papers = int(conn.execute("SELECT count(*) FROM papers").fetchone()[0])
    floor = max(PAIR_HEAD_MIN, PAIR_HEAD_SHARE * papers)
    words: list[str] = []

    def plain_terms() -> Iterable[str]:
        for term, docs in conn.execute(f"SELECT term, doc FROM {VOCAB_TABLE}"):
            if _plain(term := str(term)):  # ASCII only: a head prefix is ASCII (which are heads changes only speed)
                if docs >= floor:
                    words.append(term)
                yield term

    # fts5vocab lists the terms in order, so the terms with one two-character start are one run: counted a run
    # at a time, memory holds one run, not every term (all of them took 231 MB more at 3M terms, measured,
    # above the backfill's budget on a real vocabulary).
    prefixes: list[str] = []
    for _, run in groupby(plain_terms(), key=itemgetter(slice(0, 2))):
        prefixes += head_prefixes(list(run))
    return words, prefixes


def head_prefixes(terms: Sequence[str]) -> list[str]:
    """The prefixes, of two characters or more, of more than PREFIX_HEAD_TERMS of these terms."""
    out: list[str] = []
    for k in count(2):
        # Counted in C, a length at a time (a term shorter than k counts as itself and is no k-prefix); no k-prefix
        # over the bar means no longer one either.
        counts = Counter(map(itemgetter(slice(0, k)), terms))
        found = [p for p, n in counts.items() if n > PREFIX_HEAD_TERMS and len(p) == k]
        if not found:
            break
        out += found
    return out


def rebuild_sync(conn: sqlite3.Connection, tok: Tokenizer | None = None, *, window: int = PAIR_WINDOW,
                 prefix_window: int | None = None) -> int:
    """Choose the heads again and index the pairs of the `window` newest papers (and the head prefixes of the
    `prefix_window` newest), in the caller's write transaction; returns how many papers were indexed."""
    from storage.backfill import BULK_FTS_CONFIG, FTS_DEFAULTS  # the settings its bulk load uses for papers_fts

    tok = tok or default_tokenizer()
    words, prefixes = choose_heads(conn)
    conn.execute("INSERT INTO search_pairs(search_pairs) VALUES ('delete-all')")
    conn.execute("DELETE FROM search_pairs_heads")
    conn.execute("DELETE FROM search_pairs_dirty")
    conn.executemany("INSERT INTO search_pairs_heads(term) VALUES (?)",
                     [(h,) for h in (*words, *(p + _PREFIX_HEAD for p in prefixes))])
    top = int(conn.execute("SELECT coalesce(max(id), 0) FROM papers").fetchone()[0])
    anything = bool(words or prefixes)
    low = max(1, top - window + 1) if anything else top + 1
    prefix_low = max(low, top - (prefix_window or PREFIX_WINDOW) + 1) if prefixes else top + 1
    heads = Heads(frozenset(words), frozenset(prefixes), prefix_low)
    high, done = top, 0
    for key, value in BULK_FTS_CONFIG:  # as the backfill loads papers_fts: merge once, at the end
        conn.execute("INSERT INTO search_pairs(search_pairs, rank) VALUES (?, ?)", (key, value))
    while anything and high >= low:
        rows = conn.execute("SELECT id, title, abstract, authors FROM papers WHERE id BETWEEN ? AND ?",
                            (max(low, high - _CHUNK + 1), high)).fetchall()
        texts = pair_texts([str(x or "") for r in rows for x in r[1:]], heads, tok,
                           [int(r[0]) >= prefix_low for r in rows])
        conn.executemany(INSERT_PAIRS, [(int(r[0]), t) for r, t in zip(rows, texts, strict=True) if t])
        done += len(rows)
        high -= _CHUNK
    conn.execute(SET_LOW, (str(low),))
    conn.execute(SET_PREFIX_LOW, (str(prefix_low),))
    conn.execute("INSERT INTO search_pairs(search_pairs) VALUES ('optimize')")
    for key, value in FTS_DEFAULTS.items():
        conn.execute("INSERT INTO search_pairs(search_pairs, rank) VALUES (?, ?)", (key, value))
    return done


def refresh_sync(conn: sqlite3.Connection, tok: Tokenizer | None = None, *, window: int = PAIR_WINDOW,
                 rebuild: bool = False) -> int:
    """After a bulk load: rebuild if asked, if there are no heads yet, if the index is from before prefixes or if
    there are too many marks to fold; else fold. Its own write transaction. Returns how many papers were indexed
    or folded."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        low = low_of(conn)
        marked = conn.execute(COUNT_MARKED, (low, PAIR_DIRTY_MAX + 1)).fetchone()[0]
        empty = conn.execute("SELECT NOT EXISTS (SELECT 1 FROM search_pairs_heads) "
                             "OR NOT EXISTS (SELECT 1 FROM meta WHERE key = ?)", (PREFIX_KEY,)).fetchone()[0]
        again = rebuild or empty or marked > PAIR_DIRTY_MAX
        n = rebuild_sync(conn, tok, window=window) if again else fold_sync(conn, tok)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return n

"""Search at millions of papers on FTS5: a bounded candidate plan instead of `ORDER BY bm25() LIMIT 10`.

Why not bm25(): FTS5's bm25 counts, once per statement, every row that matches each phrase (its IDF), so a
query with one common word reads that word's whole doclist whatever the LIMIT: 1.3 s at 2.5M papers. Walking
a MATCH in rowid order and stopping early, by contrast, costs the same at 100k and 2.5M papers.

The ranking (defined here, tested against the reference matcher):

1. The candidates are the CANDIDATES (200) newest matching papers (store id descending; ids ascend as papers are
   stored). A query with fewer matches has all of them as candidates, so its ranking is over everything.
   Except for a query with a phrase (and no prefix) that matches some of the RECENT_PAPERS (500k, about 18
   months of arXiv) newest papers: its candidates are the CANDIDATES newest of those only, and older matches
   follow all of them, newest first (score 0). A phrase of a common and a rarer word ("for X") is slow in
   FTS5 (each of X's rows seeks into the common word's position lists) and often has a few hundred matches
   spread over all of arXiv: finding the 200 newest meant reading X's whole list (30 ms at 2.5M papers).
   Recent papers are what a reader of new papers wants first; the count stays the count of all matches.
2. Each candidate scores, for every positive word or phrase of the query (`Query.terms()`, categories
   aside), TITLE_WEIGHT if its title contains it and AUTHOR_WEIGHT if its author list does (a leaf limited to
   another column adds nothing): the reference `term_matches` with the column set, so the score is exactly
   reproducible in Python.
3. Order: score descending, then newest first. Pages past the candidates continue newest first.

How it is computed (none of it changes what matches or the order):

- For a query with a phrase or a prefix, scores come from the candidates' own title and author text (fetched
  with them), tokenised as FTS5 does, not from more FTS5 queries: those re-ran the whole MATCH, the dear part
  of a phrase or a prefix, twice more. Only the new words that could equal a query token are stemmed, and
  all the candidates' texts are tokenised together (FastTokenizer.joined_many). Words alone keep the FTS5
  queries, which are cheaper for them (measured).
- A word or phrase that the category column cannot hold is asked for without the column filter (`leaf_fts`).
- Prefix terms are expanded to the exact index terms they cover through `search_vocab` (migration 002): an OR
  of a few terms streams in rowid order, where a native FTS5 prefix query first merges every doclist of every
  term with that prefix across the whole table. A stem FTS5 would re-stem is asked for by a word that stems
  to it (`Compiler.verify`).
- An OR of hundreds of terms costs FTS5 a set-up per term, though few occur among the newest papers.
  `search_vocab.last` (migration 003) bounds each term's newest paper, so the newest ids are asked for first
  with only their terms (`Compiled.tiers`), and the rest only if that finds too few.
- A phrase of two common words is read from the pair index (storage.search_pairs, migration 005) for the papers
  it covers (the newest), and from FTS5 below them: FTS5 decodes both words' position lists, 2-4 ms at 100k
  papers even for 200 matches, where the pair index reads one doclist. So is a prefix of many terms on its
  own (`spi*`: one token `_spi` per paper), where the tiers above still set up 100-400 terms (1-2.5 ms); it is
  expanded for FTS5 only if the newest papers the index covers hold too few candidates (Compiled.lazy).
- A search runs whole on a search connection's worker thread, in one read transaction (one snapshot).
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any, cast

from bot.matching import fast_tokenizer
from bot.query import And, Category, Node, Not, Or, Query, Term, to_fts
from bot.text import Tokenizer, category_token, default_tokenizer
from storage.search_pairs import (
    COUNT_MARKED,
    PAIR_DIRTY_MAX,
    SELECT_PREFIX_STATE,
    SELECT_STATE,
    fold_async,
    pair_token,
    prefix_head,
    prefix_token,
)

CANDIDATES = 200
COUNT_CAP = 2_000
TITLE_WEIGHT = 10.0
AUTHOR_WEIGHT = 3.0
_WEIGHTS = (("title", TITLE_WEIGHT), ("authors", AUTHOR_WEIGHT))
RECENT_PAPERS = 500_000  # a phrase query ranks the matches among this many newest papers (module docstring)
TIER_TERMS = 64  # an expansion of more terms than this is asked for newest papers first (Compiled.tiers)
TIER_WINDOWS = (300, 1_200, 5_000)  # the newest ids asked for first, then the next; then the rest, every term
_NO_TOP = 2**63 - 1
SCORE_BY: str | None = None  # "text" or "fts" forces a way of scoring (tests); None: text for phrases/prefixes
# Terms whose reads and quoted form a search connection keeps (two dicts, about 10 MB apiece when full; a
# real arXiv vocabulary has millions of terms, so they are cleared and refilled from search_vocab as needed).
TERM_CACHE = 100_000
MAX_EXPANSION = 4000  # a prefix covering more terms than this runs as a native FTS5 prefix query
FTS_SCORED_TERMS = 64  # prefixes of at most this many terms (TIER_TERMS) are scored by FTS5 like words (_scored_by_fts)
DIRTY_REBUILD = 20_000  # more papers than this with unindexed terms: rebuild search_vocab from FTS5 in bulk
_TOP = "\U0010ffff"
CATEGORY_END = "0"  # every category index token ends with it (bot.text.category_token)

VOCAB_TABLE = "temp.papers_fts_terms"
CREATE_VOCAB = f"CREATE VIRTUAL TABLE IF NOT EXISTS {VOCAB_TABLE} USING fts5vocab(main, papers_fts, 'row')"


class _Nothing:
    """A subtree that can match no paper (a prefix no stored term starts with)."""


NOTHING = _Nothing()


def _quote(text: str) -> str:
    return '"' + text.replace('"', '""') + '"'


# Porter is not idempotent on every stem: the stem "bacts" (of "bacts") read back as query text is "bact", so
# an expanded term cannot always be asked for by quoting it. A word that Porter turns into exactly that stem
# can (verified with the tokenizer itself, never assumed): "bactse" -> "bacts", "agree" -> "agre".
_SURFACE_SUFFIXES = ("e", "ing", "ed", "es", "eing")


class Compiler:
    """Compiles a query to an FTS5 MATCH like bot.query.to_fts, expanding single-word prefixes to terms.

    `expand(prefix)` returns the stored terms starting with `prefix`, or None to keep FTS5's own prefix query.
    Each term is emitted as a quoted word that FTS5 tokenises to exactly that term (`surface`); for a term with
    no such word, the slower but always exact fallbacks below.
    """

    def __init__(self, expand: Callable[[str], list[str] | None], tokenizer: Tokenizer | None = None,
                 verified: dict[str, tuple[str | None, str | None]] | None = None,
                 quoted: dict[str, str] | None = None) -> None:
        self.expand = expand
        # term -> its word, quoted. Like `verified`, a cache its owner (SearchPlanner) keeps bounded.
        self.quoted: dict[str, str] = quoted if quoted is not None else {}
        self.tok = tokenizer or default_tokenizer()
        # term -> (a query word FTS5 reads as exactly that term or None, what FTS5 makes of the term itself or
        # None if not one token)
        self.verified: dict[str, tuple[str | None, str | None]] = verified if verified is not None else {}

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

    def verify(self, terms: list[str]) -> None:
        unknown = [t for t in terms if t not in self.verified]
        if not unknown:
            return
        self.verified.update(verify_terms(unknown, self.tok))

    def _term(self, term: Term) -> str | _Nothing:
        if not (term.prefix and len(term.tokens) == 1):
            return leaf_fts(term)
        terms = self.expand(term.tokens[0])
        if terms is None:
            return leaf_fts(term)
        if not terms:
            return NOTHING
        self.verify(terms)
        prefix = term.tokens[0]
        # A prefix of 600 terms is compiled up to three times per search (all of them, then recency tiers):
        # each term's quoted word comes from a cache, in one C-level pass.
        quoted = self.quoted
        parts: list[str | None] = list(map(quoted.get, terms))
        exact = True
        if None in parts:
            for i, t in enumerate(terms):
                if parts[i] is not None:
                    continue
                word, again = self.verified[t]
                if word is not None:
                    parts[i] = quoted[t] = _quote(word)
                elif again is not None and t.startswith(again) and again.startswith(prefix):
                    # No word found that FTS5 reads as exactly this stem. "agre"* covers the terms starting with
                    # agre, or, if FTS5 stems it first, with agr; both include agre and start with the user's
                    # prefix, so the union is unchanged (but FTS5 merges those doclists over the whole table).
                    parts[i] = _quote(t) + "*"
                    exact = False
                else:
                    return leaf_fts(term)
        body = " OR ".join(cast(list[str], parts))  # no None left
        if term.column is None and exact and CATEGORY_END + SEP not in SEP.join(terms) + SEP:
            return "(" + body + ")"  # no term that the category column could hold: see leaf_fts
        cols = term.column or "title abstract authors"
        return "{" + cols + "} : (" + body + ")"


def verify_terms(terms: Sequence[str], tok: Tokenizer) -> dict[str, tuple[str | None, str | None]]:
    """For each term: a query word FTS5 reads as exactly that term (or None), and what FTS5 makes of the term
    itself (or None if not one token). Asked of the tokenizer, never assumed."""
    fast = fast_tokenizer(tok)  # its stem cache, and it stems new ASCII words in one batch
    again: dict[str, str | None] = {}
    for t, stream in zip(terms, fast.tokenize_words(terms), strict=True):
        again[t] = stream[0] if len(stream) == 1 else None
    odd = [t for t in terms if again[t] != t]
    words = [t + suffix for t in odd for suffix in _SURFACE_SUFFIXES]
    surface: dict[str, str] = {}
    for word, stream in zip(words, fast.tokenize_words(words), strict=True):
        if len(stream) == 1:
            surface.setdefault(stream[0], word)
    return {t: (t if again[t] == t else surface.get(t), again[t]) for t in terms}


def encode_reads(term: str, verified: tuple[str | None, str | None]) -> str:
    """search_vocab.reads (migration 004): '' for a term that reads as itself, else the pair as JSON."""
    return "" if verified == (term, term) else json.dumps(list(verified))


def decode_reads(term: str, reads: str) -> tuple[str | None, str | None]:
    if not reads:
        return term, term
    word, again = json.loads(reads)
    return (None if word is None else str(word)), (None if again is None else str(again))


def leaf_fts(term: Term) -> str:
    """bot.query.to_fts of one word or phrase, without the column filter where it cannot change the result.

    A leaf without a column means title, abstract or authors: every column but `cats`, so to_fts adds a column
    filter, and FTS5 then reads the position list of every row it visits to check the column (a quarter of
    the time of a phrase, most of the time of a single word). Every token of the `cats` column ends in
    CATEGORY_END (bot.text.category_token); a phrase with a token that does not (other than a last token
    that is only a prefix) cannot occur there, so the filter can be left out and the same papers match.
    """
    if term.column is None:
        exact = term.tokens[:-1] if term.prefix else term.tokens
        if any(not t.endswith(CATEGORY_END) for t in exact):
            return _quote(term.raw) + ("*" if term.prefix else "")
    return to_fts(term)


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


def rebuild_vocab_sync(conn: sqlite3.Connection, tokenizer: Tokenizer | None = None) -> int:
    """Refill search_vocab from the FTS5 index itself, in one transaction with clearing the dirty list."""
    conn.execute(CREATE_VOCAB)
    conn.execute("BEGIN IMMEDIATE")
    try:
        for sql in REFILL_VOCAB:
            conn.execute(sql)
        _read_unread(conn, tokenizer or default_tokenizer())
        n = int(conn.execute("SELECT count(*) FROM search_vocab").fetchone()[0])
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return n


def refresh_vocab_sync(conn: sqlite3.Connection, tokenizer: Tokenizer | None = None) -> int:
    """Fold papers marked dirty into search_vocab, and work out how every term reads back that is not worked out
    yet (after a refill by a search, or a database from before migration 004). Returns how many papers were
    folded in."""
    tok = tokenizer or default_tokenizer()
    conn.execute("BEGIN IMMEDIATE")
    try:
        ids = [r[0] for r in conn.execute("SELECT id FROM search_vocab_dirty LIMIT ?", (DIRTY_REBUILD + 1,))]
        if len(ids) > DIRTY_REBUILD:
            conn.execute("ROLLBACK")
            rebuild_vocab_sync(conn, tok)
            return len(ids)
        if ids:
            _fold(conn, ids, tok)
        _read_unread(conn, tok)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return len(ids)


def _fold(conn: Any, ids: Sequence[int], tok: Tokenizer) -> None:
    texts: list[str] = []
    owners: list[int] = []
    for sql, chunk in _fold_reads(ids):
        _add_texts(conn.execute(sql, chunk), texts, owners)
    lasts = _lasts(owners, tok.tokenize_many(texts))
    conn.executemany(UPSERT_TERM, lasts)
    conn.executemany(UNMARK_DIRTY, [(i,) for i in ids])
    unread = [r[0] for sql, chunk in _unread_reads([t for t, _ in lasts]) for r in conn.execute(sql, chunk)]
    conn.executemany(SET_READS, reads_rows(unread, tok))


def _read_unread(conn: sqlite3.Connection, tok: Tokenizer) -> None:
    """search_vocab.reads for every term still without (all of them after a refill), 50,000 at a time."""
    unread = [r[0] for r in conn.execute("SELECT term FROM search_vocab WHERE reads IS NULL")]
    for i in range(0, len(unread), 50_000):
        conn.executemany(SET_READS, reads_rows(unread[i : i + 50_000], tok))


SET_READS = "UPDATE search_vocab SET reads = ? WHERE term = ?"


def reads_rows(terms: Sequence[str], tok: Tokenizer) -> list[tuple[str, str]]:
    """(reads, term) for SET_READS: how each term reads back (migration 004)."""
    return [(encode_reads(t, v), t) for t, v in verify_terms(terms, tok).items()]


def _unread_reads(terms: Sequence[str]) -> list[tuple[str, Sequence[str]]]:
    """The statements that find which of `terms` have no `reads` yet: 500 terms each."""
    out = []
    for i in range(0, len(terms), 500):
        chunk = terms[i : i + 500]
        out.append((f"SELECT term FROM search_vocab WHERE reads IS NULL AND term IN ({','.join('?' * len(chunk))})",
                    chunk))
    return out


# Refilling the vocabulary from FTS5's own term list, all papers at once (`last` stays unknown until needed).
REFILL_VOCAB = ("DELETE FROM search_vocab", f"INSERT INTO search_vocab(term) SELECT term FROM {VOCAB_TABLE}",
                "DELETE FROM search_vocab_dirty")
UNMARK_DIRTY = "DELETE FROM search_vocab_dirty WHERE id=?"


def _fold_reads(ids: Sequence[int]) -> list[tuple[str, Sequence[int]]]:
    """The statements that read the papers to fold: 500 ids each, under SQLite's bound-parameter limit."""
    out = []
    for i in range(0, len(ids), 500):
        chunk = ids[i : i + 500]
        marks = ",".join("?" * len(chunk))
        out.append((f"SELECT id, title, abstract, authors, cats FROM papers WHERE id IN ({marks})", chunk))
    return out


def _add_texts(rows: Iterable[Any], texts: list[str], owners: list[int]) -> None:
    """Each row's four indexed texts onto `texts`, and its id as their owner (see _lasts)."""
    for row in rows:
        texts.extend(str(x or "") for x in row[1:])
        owners.extend([int(row[0])] * 4)


# A new term's `last` is the paper's id; a known term's grows to it, and an unknown one (NULL) stays unknown.
UPSERT_TERM = ("INSERT INTO search_vocab(term, last) VALUES (?, ?) "
               "ON CONFLICT(term) DO UPDATE SET last = max(last, excluded.last)")


def _lasts(owners: Sequence[int], streams: Sequence[Sequence[str]]) -> list[tuple[str, int]]:
    """(term, the newest of these papers that has it) for every term of the streams; owners[i] has streams[i]."""
    last: dict[str, int] = {}
    for owner, stream in zip(owners, streams, strict=True):
        for t in stream:
            if last.get(t, -1) < owner:
                last[t] = owner
    return list(last.items())


# ---------------------------------------------------------------- the plan, on a search connection of its own


Expansions = dict[str, list[tuple[str, int | None]] | None]  # prefix -> its stored terms and their `last`


@dataclass(frozen=True, slots=True)
class Compiled:
    """A query as FTS5 MATCH text, and for a prefix of many terms the same over only the terms of recent papers."""

    match: str
    top: int | None = None  # with tiers: the newest paper id when the vocabulary was folded, the highest id asked
    tiers: tuple[tuple[int, str | None], ...] = ()  # (lowest id, MATCH over the terms whose last >= it), newest first
    pairs: str | None = None  # the same query as a MATCH of the pair index (storage.search_pairs), if it holds it
    pairs_low: int = 0  # with `pairs`: the pair index answers for papers from this id up
    # With `pairs` for a prefix: `match` is FTS5's own prefix query (exact, slow); where FTS5 is read, below
    # `pairs_low`, the expansion replaces it, worked out then (a broad prefix never needs it).
    lazy: bool = False
    # For a query whose prefixes expand to few terms: per (positive word or prefix, column) its MATCH limited to
    # the column and the weight, for scoring by FTS5 (SearchPlanner._scored_by_fts).
    scored: tuple[tuple[str, float], ...] | None = None


@dataclass(frozen=True, slots=True)
class Ranked:
    ids: list[tuple[int, float]]  # (paper id, score), in result order, already paged
    total: int | None


@dataclass(frozen=True, slots=True)
class FoldFirst:
    """Papers are not folded into search_vocab yet: a write, for the store's writer (`write_first`)."""


@dataclass(frozen=True, slots=True)
class LastsFirst:
    """Terms of a large expansion whose `last` is unknown (a bulk rebuild leaves them so): a write too."""

    todo: tuple[tuple[str, str], ...]  # (term, a word FTS5 reads as exactly that term)


@dataclass(frozen=True, slots=True)
class PairsFirst:
    """Papers are marked for the pair index (storage.search_pairs) that a phrase search would read: a write."""


WriteFirst = FoldFirst | LastsFirst | PairsFirst


class SearchPlanner:
    """The fast search plan, synchronous, over one sqlite3 connection that only it uses (a search connection).

    A whole search runs in one call on a worker thread (storage.sqlite): on aiosqlite, each of its statements
    was a round trip between the event loop and the connection's thread, 1-1.5 ms of a 3 ms search (measured).
    The vocabulary is written by the store's one writer, so where a search needs a write first, `plan` returns
    what to write (FoldFirst, LastsFirst) and is asked again once it is done."""

    def __init__(self, conn: sqlite3.Connection, tokenizer: Tokenizer | None = None) -> None:
        self.conn = conn
        self.tok = tokenizer or default_tokenizer()
        self._verified: dict[str, tuple[str | None, str | None]] = {}
        self._quoted: dict[str, str] = {}
        self._floors: dict[tuple[str, int, int], int] = {}

    def _all(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        return self.conn.execute(sql, params).fetchall()

    def _one(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self.conn.execute(sql, params).fetchone()

    def plan(self, query: Query, *, limit: int, offset: int, order: str, count: bool,
             stale_ok: bool = False) -> Ranked | WriteFirst:
        """The ranked page, or the write it needs first. `stale_ok`: run without that write (after it failed:
        another process holds the write lock), on FTS5's own prefix query or phrase, slower but exact."""
        compiled = self.compile(query, stale_ok=stale_ok)
        if isinstance(compiled, WriteFirst):
            return compiled
        if isinstance(compiled, _Nothing):  # a prefix that no stored word starts with
            return Ranked([], 0 if count else None)
        return self.run(query, compiled, limit=limit, offset=offset, order=order, count=count)

    def compile(self, query: Query, *, stale_ok: bool = False) -> Compiled | _Nothing | WriteFirst:
        assert query.root is not None
        plain = Compiler(lambda p: None, self.tok, self._verified)
        if not has_prefix(query.root):
            return self._with_pairs(query.root, _compiled(plain.compile(query.root)), stale_ok)
        for cache in (self._verified, self._quoted):  # long-lived: bounded here, by their owner
            if len(cache) > TERM_CACHE:
                cache.clear()
        row = self._one("SELECT (SELECT max(id) FROM papers), EXISTS (SELECT 1 FROM search_vocab_dirty)")
        top = int(row[0] or 0)
        if row[1]:
            # FTS5's own prefix query is slower but never misses a word the vocabulary does not have yet.
            return _compiled(plain.compile(query.root)) if stale_ok else FoldFirst()
        indexed = self._with_prefix(query.root, stale_ok)
        if indexed is not None:
            return indexed
        expansions = self._expansions(query)
        full = self._expanded(query, expansions)
        if isinstance(full, _Nothing):
            return full
        if not top or not any(e and len(e) > TIER_TERMS for e in expansions.values()):
            return replace(full, scored=self._scored_by_fts(query, expansions))
        todo = tuple(sorted({(t, str(self._verified[t][0])) for e in expansions.values() if e and len(e) > TIER_TERMS
                             for t, last in e if last is None and self._verified[t][0] is not None}))
        if todo and not stale_ok:
            return LastsFirst(todo)
        # (unknown lasts read as "any paper": the tiers are only less selective)
        tiers: list[tuple[int, str | None]] = []
        everything = sum(len(e) for e in expansions.values() if e)
        for window in TIER_WINDOWS:
            low = top - window + 1
            if low <= 1:
                break
            within = {p: None if e is None else [t for t, last in e if last is None or last >= low]
                      for p, e in expansions.items()}
            if 2 * sum(len(e) for e in within.values() if e) > everything:
                break  # FTS5's set-up is per term: a tier of most of the terms costs about as much as all of them
            match = Compiler(within.get, self.tok, self._verified, self._quoted).compile(query.root)
            tiers.append((low, match if isinstance(match, str) else None))
        return Compiled(full.match, top, tuple(tiers))

    def _expanded(self, query: Query, expansions: Expansions) -> Compiled | _Nothing:
        """The query's MATCH with every prefix expanded to its stored terms (or FTS5's own where there are too
        many)."""
        assert query.root is not None
        expand = self._expander(expansions)
        expand.verify([t for e in expansions.values() if e for t, _ in e])
        return _compiled(expand.compile(query.root))

    def _expander(self, expansions: Expansions) -> Compiler:
        """A compiler that expands each prefix to its stored terms, over this connection's term caches."""
        return Compiler(lambda p: _terms(expansions.get(p)), self.tok, self._verified, self._quoted)

    def _scored_by_fts(self, query: Query, expansions: Expansions) -> tuple[tuple[str, float], ...] | None:
        """Compiled.scored, where every prefix of a query without phrases expands to a few terms: FTS5 then scores
        them as cheaply as words (a title match is one of the terms in the title), where tokenising the
        candidates' titles cost more (measured: first-sight median of the bench's prefixes 1.0 against 1.2-1.5
        ms). FTS5's own prefix query would read every term's whole doclist: the expansion is asked for."""
        if any(e is None or len(e) > FTS_SCORED_TERMS for e in expansions.values()) or any(
                isinstance(leaf, Term) and len(leaf.tokens) > 1 for leaf in query.terms()):
            return None
        expand = self._expander(expansions)
        scored: list[tuple[str, float]] = []
        for leaf, column, weight in _scoring_columns(query):
            match = expand.compile(replace(leaf, column=column))
            if isinstance(match, str):  # else no stored term: the leaf scores nothing
                scored.append((match, weight))
        return tuple(scored)

    def _with_prefix(self, root: Node, stale_ok: bool) -> Compiled | PairsFirst | None:
        """A head prefix alone is read from the pair index where it covers the papers (like a phrase in
        _with_pairs), and expanded only if FTS5 is read below them; None: the tiers over FTS5 answer."""
        token = prefix_token(root) if isinstance(root, Term) else None
        if token is None:
            return None
        assert isinstance(root, Term)
        low, head, marked = self._one(SELECT_PREFIX_STATE, (prefix_head(token),))
        if low is None or not head:
            return None
        if marked:
            return self._fold_first(int(low), stale_ok)
        return Compiled(leaf_fts(root), pairs=_quote(token), pairs_low=int(low), lazy=True)

    def _fold_first(self, low: int, stale_ok: bool) -> PairsFirst | None:
        """For papers marked for the pair index: fold them in first (PairsFirst), or None to read FTS5 instead,
        without the write lock (`stale_ok`) or with more marks than a search should fold (a backfill or a harvest
        is storing them; its end rebuilds the pair index, storage.search_pairs.refresh_sync)."""
        many = self._one(COUNT_MARKED, (low, PAIR_DIRTY_MAX + 1))[0] > PAIR_DIRTY_MAX
        return None if stale_ok or many else PairsFirst()

    def _with_pairs(self, root: Node, compiled: Compiled | _Nothing,
                    stale_ok: bool) -> Compiled | _Nothing | WriteFirst:
        """A phrase of two head words is read from the pair index where it covers the papers (its marked papers
        folded in first; or, without the write lock, not at all)."""
        token = pair_token(root) if isinstance(root, Term) else None
        if token is None or isinstance(compiled, _Nothing):
            return compiled
        assert isinstance(root, Term)
        low, heads, marked = self._one(SELECT_STATE, root.tokens)
        if low is None or int(heads) < len(set(root.tokens)):
            return compiled
        if marked:
            first = self._fold_first(int(low), stale_ok)
            return compiled if first is None else first
        return replace(compiled, pairs=_quote(token), pairs_low=int(low))

    def since_floor(self, query: Query) -> int:
        """The smallest id of a paper dated on or after `since` (0 = no bound): lets FTS5 skip older rowids."""
        if query.since is None:
            return 0
        # Scanning the date index costs ~25 ms for a year of 2.5M papers; the answer only changes when the
        # database does (another connection's commit bumps data_version; this one never writes).
        version = int(self._one("PRAGMA data_version")[0])
        key = (query.since.isoformat(), version, int(self.conn.total_changes))
        cached = self._floors.get(key)
        if cached is not None:
            return cached
        row = self._one(
            "SELECT min(id) FROM papers INDEXED BY papers_published WHERE published >= ?", (query.since.isoformat(),))
        floor = int(row[0]) if row and row[0] is not None else -1
        if len(self._floors) > 256:
            self._floors.clear()
        self._floors[key] = floor
        return floor

    def run(self, query: Query, compiled: Compiled, *, limit: int, offset: int, order: str, count: bool) -> Ranked:
        floor = self.since_floor(query)
        if floor < 0:
            return Ranked([], 0 if count else None)
        want = offset + limit
        n = max(CANDIDATES, want)
        match = compiled.match
        # With tiers, papers stored after the vocabulary was folded are left out, all of them, so the answer is
        # the one for the moment of the fold rather than a mix.
        high = compiled.top if compiled.top is not None else _NO_TOP
        params: list[Any] = [match, floor, high]
        since_sql = ""
        if query.since is not None:
            since_sql = " AND p.published >= ?"
            params.append(query.since.isoformat())
        leaves = _scored_leaves(query) if order == "rank" else []
        # Scoring by text avoids re-running a dear MATCH (a phrase, a prefix of many terms); for words alone the
        # two FTS5 queries per word are cheaper than tokenising candidates that are rarely the same twice.
        by_text = bool(leaves) and SCORE_BY != "fts" and (SCORE_BY == "text" or (compiled.scored is None and any(
            isinstance(leaf, Term) and (leaf.prefix or len(leaf.tokens) > 1) for leaf in query.terms())))
        if order != "rank":
            cols = "papers_fts.rowid, p.published"
        elif by_text:
            # The scoring text comes with the candidates: one statement, no second round trip by id.
            cols = "papers_fts.rowid, p.title, p.authors"
        else:
            cols = "papers_fts.rowid"
        join = " JOIN papers p ON p.id = papers_fts.rowid" if since_sql or cols != "papers_fts.rowid" else ""
        sql = (f"SELECT {cols} FROM papers_fts{join} WHERE papers_fts MATCH ? AND papers_fts.rowid >= ? "
               f"AND papers_fts.rowid <= ?{since_sql} ORDER BY papers_fts.rowid DESC LIMIT ?")

        def parts(tier_match: str, low: int, high: int) -> Iterator[tuple[str, str, int, int]]:
            """[low, high] newest first as (table, MATCH, low, high): the part the pair index covers (the newest
            papers), then FTS5's."""
            if compiled.pairs is not None and tier_match == match and high >= max(low, compiled.pairs_low):
                yield "search_pairs", compiled.pairs, max(low, compiled.pairs_low), high
                high = compiled.pairs_low - 1
            if low <= high:
                fts_match = expanded(tier_match)
                if fts_match is not None:
                    yield "papers_fts", fts_match, low, high

        below: list[str | None] = []

        def expanded(tier_match: str) -> str | None:
            """The MATCH to read FTS5 with (see Compiled.lazy); None: nothing there can match."""
            if not compiled.lazy or tier_match != match:
                return tier_match
            if not below:
                full = self._expanded(query, self._expansions(query))
                below.append(full.match if isinstance(full, Compiled) else None)
            return below[0]

        def fetch(tier_match: str, low: int, high: int, most: int) -> list[Any]:
            """Matches with ids in [low, high], newest first, at most `most`."""
            got: list[Any] = []
            if most <= 0:
                return got  # (a LIMIT below 0 is no limit in SQLite)
            for table, part_match, part_low, part_high in parts(tier_match, low, high):
                got += self._all(sql.replace("papers_fts", table),  # the same statement over that table
                                 [part_match, part_low, part_high, *params[3:], most - len(got)])
                if len(got) >= most:
                    break  # before the next part is worked out (Compiled.lazy)
            return got
        rows: list[Any] = []
        restricted = False  # the candidates are the recent matches only (see the module docstring)
        tail: list[Any] = []  # then the older matches a page needs, newest first
        complete = False  # with `restricted`: every match was read
        for low, tier_match in compiled.tiers:
            # The newest papers first, asked for with only the terms that occur among them; exact, since a term
            # left out has no paper at or above `low`. Each tier goes on below the last one.
            if tier_match is not None and max(low, floor) <= high:
                rows += fetch(tier_match, max(low, floor), high, n - len(rows))
            high = min(high, low - 1)
            if len(rows) >= n:
                break
        else:
            recent = None if compiled.tiers else self._recent_low(query, order, floor)
            if recent is not None:
                rows += fetch(match, recent, high, n)
                restricted = bool(rows)
                high = recent - 1
            if restricted and len(rows) < want:
                # Older matches follow the recent ones newest first: only as many as the page needs.
                tail = fetch(match, floor, high, want - len(rows))
                complete = len(rows) + len(tail) < want
            elif not restricted:
                rows += fetch(match, floor, high, n - len(rows))
        if order == "rank":
            if by_text:
                joined = fast_tokenizer(self.tok).joined_many(
                    [str(text or "") for r in rows for text in (r[1], r[2])], _scored_tokens(query), SEP)
                scores = dict(zip([int(r[0]) for r in rows], _scores(leaves, joined[0::2], joined[1::2]), strict=True))
            else:
                scores = self._scores_by_fts(query, match, [int(r[0]) for r in rows], compiled.scored)
            scored = sorted(scores.items(), key=lambda x: (-x[1], -x[0])) + [(int(r[0]), 0.0) for r in tail]
            rows += tail
        else:
            # Newest by date within the window of newest stored matches (exact whenever all matches fit).
            by_date = sorted(rows, key=lambda r: (r[1] or "", int(r[0])), reverse=True)
            scored = [(int(r[0]), 0.0) for r in by_date]
        total: int | None = None
        if count:
            cap = COUNT_CAP if query.since is None else 10 * COUNT_CAP
            if (len(rows) < n and not restricted) or complete:  # every match was read
                total = len(rows)
            elif len(rows) <= cap:
                # Only the matches older than the candidates are left to count: the scan goes on where the
                # candidates' stopped instead of walking them again (for a sparse phrase, the whole table).
                cjoin = " JOIN papers p ON p.id = papers_fts.rowid" if since_sql else ""
                csql = (f"SELECT count(*) FROM (SELECT papers_fts.rowid FROM papers_fts{cjoin} "
                        f"WHERE papers_fts MATCH ? AND papers_fts.rowid >= ? AND papers_fts.rowid <= ?{since_sql} "
                        "ORDER BY papers_fts.rowid DESC LIMIT ?)")
                older = 0
                for table, part_match, part_low, part_high in parts(match, floor, min(int(r[0]) for r in rows) - 1):
                    older += int(self._one(csql.replace("papers_fts", table), [
                        part_match, part_low, part_high, *params[3:], cap + 1 - len(rows) - older])[0])
                    if len(rows) + older > cap:
                        break
                total = len(rows) + older if len(rows) + older <= cap else None
        return Ranked(scored[offset:want], total)

    def _recent_low(self, query: Query, order: str, floor: int) -> int | None:
        """The lowest id of the recent papers a phrase query looks at first, or None for no such window."""
        if order != "rank" or not RECENT_PAPERS or has_prefix(query.root) or not any(
                isinstance(leaf, Term) and len(leaf.tokens) > 1 for leaf in query.terms()):
            return None  # a prefix query has its own (exact) tiers
        top = int(self._one("SELECT coalesce(max(id), 0) FROM papers")[0])
        low = top - RECENT_PAPERS + 1
        return low if low > floor else None

    def _scores_by_fts(self, query: Query, match: str, ids: list[int],
                       scored: Sequence[tuple[str, float]] | None = None) -> dict[int, float]:
        """The same scores from FTS5: per (leaf, column), the candidates that also match the leaf limited to the
        column (`scored`, or each leaf as to_fts makes it), over the candidates' id range (FTS5 skips through the
        doclists)."""
        scores = dict.fromkeys(ids, 0.0)
        if not ids:
            return scores
        if scored is None:
            scored = [(to_fts(replace(leaf, column=column)), weight)
                      for leaf, column, weight in _scoring_columns(query)]
        for leaf_match, weight in scored:
            rows = self._all("SELECT rowid FROM papers_fts WHERE papers_fts MATCH ? AND rowid >= ? AND rowid <= ?",
                             (f"({match}) AND ({leaf_match})", min(ids), max(ids)))
            for r in rows:
                if int(r[0]) in scores:
                    scores[int(r[0])] += weight
        return scores

    def _expansions(self, query: Query) -> Expansions:
        """Each prefix's stored terms with their `last`, or None where FTS5's own prefix query is kept."""
        expansions: Expansions = {}
        for prefix in _prefixes(query.root) if query.root is not None else []:
            rows = self._all(
                "SELECT term, last, reads FROM search_vocab WHERE term >= ? AND term < ? LIMIT ?",
                (prefix, prefix + _TOP, MAX_EXPANSION + 1))
            terms = [(str(r[0]), None if r[1] is None else int(r[1])) for r in rows]
            known = self._verified
            for term, _, reads in rows:
                if reads is not None and term not in known:
                    known[term] = decode_reads(term, reads)
            expansions[prefix] = None if len(terms) > MAX_EXPANSION else terms
        return expansions


async def write_first(db: Any, need: WriteFirst, tokenizer: Tokenizer | None = None) -> None:
    """Do the write a search asked for, on the store's writer (storage.sqlite.Database) and under its lock."""
    tok = tokenizer or default_tokenizer()
    async with db.write() as wconn:
        if isinstance(need, PairsFirst):
            await fold_async(wconn, tok)
            return
        if isinstance(need, LastsFirst):
            # Read and written in one write transaction, so no paper can be stored and folded in between and be
            # left above a term's `last`.
            words = json.dumps([_quote(surface) for _, surface in need.todo])
            rows = await (await wconn.execute(
                "SELECT (SELECT rowid FROM papers_fts WHERE papers_fts MATCH j.value ORDER BY rowid DESC LIMIT 1) "
                "FROM json_each(?) j ORDER BY j.key", (words,))).fetchall()
            await wconn.executemany("UPDATE search_vocab SET last = ? WHERE term = ? AND last IS NULL",
                                    [(int(r[0] or 0), t) for (t, _), r in zip(need.todo, rows, strict=True)])
            return
        ids = [r[0] for r in await (await wconn.execute(
            "SELECT id FROM search_vocab_dirty LIMIT ?", (DIRTY_REBUILD + 1,))).fetchall()]
        if len(ids) > DIRTY_REBUILD:
            await wconn.execute(CREATE_VOCAB)  # a temp table: on the writer's connection
            for sql in REFILL_VOCAB:
                await wconn.execute(sql)
            return
        # The same fold as _fold, on the writer's aiosqlite connection, tokenising off the event loop.
        texts: list[str] = []
        owners: list[int] = []
        for sql, chunk in _fold_reads(ids):
            _add_texts(await (await wconn.execute(sql, chunk)).fetchall(), texts, owners)
        streams = await asyncio.to_thread(tok.tokenize_many, texts)
        lasts = _lasts(owners, streams)
        await wconn.executemany(UPSERT_TERM, lasts)
        await wconn.executemany(UNMARK_DIRTY, [(i,) for i in ids])
        unread = [r[0] for sql, chunk in _unread_reads([t for t, _ in lasts])
                  for r in await (await wconn.execute(sql, chunk)).fetchall()]
        await wconn.executemany(SET_READS, await asyncio.to_thread(reads_rows, unread, tok))


SEP = "\x00"  # unicode61 separates tokens on it, so no token contains it


def leaf_pattern(term: Term) -> str | None:
    """The substring of `joined_stream(s, SEP)` (bot.matching) that occurs exactly when
    `_phrase_in(term.tokens, s, term.prefix)`."""
    if not term.tokens:
        return None
    return SEP + SEP.join(term.tokens) + ("" if term.prefix else SEP)


def _scores(leaves: list[tuple[str, str, float]], titles: list[str], authors: list[str]) -> list[float]:
    """The candidates' scores as the module docstring defines them, from their titles' and authors' joined streams;
    a leaf at a time over all of them (a candidate at a time cost twice as much).

    Asking FTS5 per (leaf, column) re-runs the whole MATCH (for a phrase or a prefix of hundreds of terms, the
    slowest part of the search) twice more. In a joined stream (tokens bracketed by a separator no token
    contains) the reference `term_matches` (consecutive tokens equal, the last one only starting with the
    prefix) is one substring test; tests/scale compare both."""
    totals = [0.0] * len(titles)
    for column, pattern, weight in leaves:
        texts = titles if column == "title" else authors
        totals = [total + weight if pattern in text else total for total, text in zip(totals, texts, strict=True)]
    return totals


def _scored_tokens(query: Query) -> set[str]:
    """Every token of the query's scored words and phrases."""
    return {t for leaf in query.terms() if isinstance(leaf, Term) for t in leaf.tokens}


def _scoring_columns(query: Query) -> Iterator[tuple[Term, str, float]]:
    """(leaf, column, weight) for every positive word or phrase and each column that can score it."""
    for leaf in query.terms():
        if isinstance(leaf, Term):
            for column, weight in _WEIGHTS:
                if leaf.column in (None, column):
                    yield leaf, column, weight


def _scored_leaves(query: Query) -> list[tuple[str, str, float]]:
    """(column, pattern, weight) for every positive word or phrase and each column that can score it."""
    return [(column, pattern, weight) for leaf, column, weight in _scoring_columns(query)
            if (pattern := leaf_pattern(leaf)) is not None]


def _terms(expansion: list[tuple[str, int | None]] | None) -> list[str] | None:
    return None if expansion is None else [t for t, _ in expansion]


def _compiled(match: str | _Nothing) -> Compiled | _Nothing:
    return match if isinstance(match, _Nothing) else Compiled(match)


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

"""The pair index (storage.search_pairs): two-word phrases read from it find exactly what FTS5 and the reference
matcher find, through builds, folds of changed and deleted papers, partial coverage and a held write lock."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, datetime
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.matching import docs_of
from bot.models import Paper
from bot.query import Query, matches, parse
from bot.text import default_tokenizer
from storage import search_index, search_pairs
from storage.db import open_sync
from storage.sqlite import Stores
from tests.scale.strategies import DAYS, TODAY, WORDS, corpora
from tests.scale.test_search_plan import _load, reference_ranking

NOW = datetime(2026, 11, 24, 12, tzinfo=UTC)
PHRASE_WORDS = [*WORDS, "Turing", "Lovelace", "Ada", "Graph", "Grace"]
pair_queries = st.tuples(
    st.sampled_from(["", "", "ti:", "au:", "abs:"]), st.sampled_from(PHRASE_WORDS), st.sampled_from(PHRASE_WORDS),
    st.one_of(st.none(), st.sampled_from(DAYS)),
).map(lambda t: f'{t[0]}"{t[1]} {t[2]}"' + ("" if t[3] is None else f" since:{t[3].isoformat()}"))
prefix_queries = st.tuples(
    st.sampled_from(["", "", "", "ti:"]), st.sampled_from([w for w in PHRASE_WORDS if len(w) > 1]),
    st.integers(min_value=2, max_value=7),
    st.one_of(st.none(), st.sampled_from(DAYS)),
).map(lambda t: f"{t[0]}{t[1][:t[2]]}*" + ("" if t[3] is None else f" since:{t[3].isoformat()}"))


def rebuild(stores: Stores, *, window: int, min_docs: int = 1, prefix_terms: int = 0,
            prefix_window: int | None = None) -> int:
    """The pair index rebuilt as a backfill's end does it, with head words down to `min_docs` papers and head
    prefixes down to more than `prefix_terms` terms, over the `prefix_window` newest papers (all of `window`)."""
    conn = open_sync(stores.db.path, migrate=False)
    try:
        with (mock.patch.object(search_pairs, "PAIR_HEAD_MIN", min_docs),
              mock.patch.object(search_pairs, "PAIR_HEAD_SHARE", 0.0),
              mock.patch.object(search_pairs, "PREFIX_HEAD_TERMS", prefix_terms)):
            conn.execute("BEGIN IMMEDIATE")
            n = search_pairs.rebuild_sync(conn, window=window, prefix_window=prefix_window or window)
            conn.execute("COMMIT")
        return n
    finally:
        conn.close()


def tokens_held_and_expected(conn: sqlite3.Connection) -> tuple[dict[str, int], dict[str, int]]:
    """The index's tokens with their numbers of papers (fts5vocab), and what they should be: the head-word pairs of
    every paper from the low mark up and the head prefixes of every paper from the prefix low mark up."""
    heads, low = search_pairs.heads_of(conn), search_pairs.low_of(conn)
    rows = conn.execute("SELECT id, title, abstract, authors FROM papers WHERE id >= ?", (low,)).fetchall()
    texts = search_pairs.pair_texts([str(x or "") for r in rows for x in r[1:]], heads, default_tokenizer(),
                                    [r[0] >= heads.prefix_low for r in rows])
    expected: dict[str, int] = {}
    for text in texts:
        for token in text.split():
            expected[token] = expected.get(token, 0) + 1
    conn.execute("CREATE VIRTUAL TABLE IF NOT EXISTS temp.pv USING fts5vocab(main, search_pairs, 'row')")
    return dict(conn.execute("SELECT term, doc FROM temp.pv").fetchall()), expected


def folded_index_agrees(stores: Stores) -> bool:
    """After folding every mark in, the index holds exactly what tokens_held_and_expected works out."""
    conn = open_sync(stores.db.path, migrate=False)
    try:
        conn.execute("BEGIN IMMEDIATE")
        search_pairs.fold_sync(conn)
        conn.execute("COMMIT")
        held, expected = tokens_held_and_expected(conn)
        return held == expected
    finally:
        conn.close()


def served_by_pairs(stores: Stores, loop: asyncio.AbstractEventLoop, query: Query) -> bool:
    """Whether the planner reads this query from the pair index (on a connection of its own)."""
    conn = open_sync(stores.db.path, migrate=False)
    try:
        compiled = search_index.SearchPlanner(conn).compile(query)
        return isinstance(compiled, search_index.Compiled) and compiled.pairs is not None
    finally:
        conn.close()


def check(loop: asyncio.AbstractEventLoop, stores: Stores, corpus: list[Paper], ids: dict[str, int],
          query: Query, window: int, newest: int) -> None:
    docs = dict(zip([p.arxiv_id for p in corpus], docs_of(corpus), strict=True))
    expected = {pid for pid, doc in docs.items() if matches(query, doc)}
    full = loop.run_until_complete(stores.papers.search(query, limit=100, count=True))
    assert full.error is None
    assert [h.paper.arxiv_id for h in full.hits] == reference_ranking(query, ids, docs, 10**6), query.text
    assert full.total == len(expected)
    with (mock.patch.object(search_index, "CANDIDATES", window),
          mock.patch.object(search_index, "RECENT_PAPERS", newest)):
        page = loop.run_until_complete(stores.papers.search(query, limit=3, count=True))
        recent = loop.run_until_complete(stores.papers.search(query, limit=100, order="recent"))
    assert [h.paper.arxiv_id for h in page.hits] == reference_ranking(query, ids, docs, max(window, 3), newest)[:3]
    assert page.total == len(expected), query.text  # all under COUNT_CAP: counted exactly, across both indexes
    want_recent = sorted(expected, key=lambda pid: (docs[pid].day, ids[pid]), reverse=True)
    assert [h.paper.arxiv_id for h in recent.hits] == want_recent, query.text


@given(before=corpora(), corpus=corpora(), texts=st.lists(st.one_of(pair_queries, prefix_queries), min_size=1,
                                                          max_size=4),
       pairs_window=st.integers(min_value=1, max_value=30), min_docs=st.integers(min_value=1, max_value=4),
       prefix_window=st.integers(min_value=1, max_value=30), prefix_terms=st.sampled_from([0, 1, 3]),
       window=st.integers(min_value=1, max_value=6), newest=st.integers(min_value=1, max_value=30))
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
def test_phrases_and_prefixes_from_the_pair_index_match_the_reference(
        sync_stores: tuple[asyncio.AbstractEventLoop, Stores], before: list[Paper], corpus: list[Paper],
        texts: list[str], pairs_window: int, min_docs: int, prefix_window: int, prefix_terms: int, window: int,
        newest: int) -> None:
    loop, stores = sync_stores
    # Built over one corpus, then every paper deleted and another stored under the same ids: the search folds
    # the marks in first (old tokens out, new in), over a window of the newest ids only.
    loop.run_until_complete(_load(stores, before))
    built = {"window": pairs_window, "min_docs": min_docs, "prefix_terms": prefix_terms,
             "prefix_window": min(prefix_window, pairs_window)}
    rebuild(stores, **built)
    ids = loop.run_until_complete(_load(stores, corpus))
    for text in texts:
        check(loop, stores, corpus, ids, parse(text, today=TODAY), window, newest)
    assert folded_index_agrees(stores)  # deleted papers' tokens went with them, even those no query asked for
    # And built over this corpus itself.
    rebuild(stores, **built)
    for text in texts:
        check(loop, stores, corpus, ids, parse(text, today=TODAY), window, newest)
    assert folded_index_agrees(stores)


def _paper(i: int, title: str, abstract: str, authors: tuple[str, ...] = ("Ada Lovelace",), version: int = 1) -> Paper:
    return Paper(f"2611.{i:05d}", title, abstract, authors=authors, categories=("cs.LG",), version=version,
                 source="arxiv")


def _ids(loop: asyncio.AbstractEventLoop, stores: Stores, text: str) -> list[str]:
    res = loop.run_until_complete(stores.papers.search(parse(text, today=TODAY), limit=50, count=True))
    assert res.error is None
    return sorted(h.paper.arxiv_id for h in res.hits)


def test_a_phrase_of_head_words_is_read_from_the_pair_index_and_follows_changes(
        sync_stores: tuple[asyncio.AbstractEventLoop, Stores]) -> None:
    loop, stores = sync_stores
    corpus = [_paper(1, "Graph neural networks", "we study graph neural networks"),
              _paper(2, "Neural graph", "neural graph and graph theory", authors=("Grace Hopper",)),
              _paper(3, "Other", "graph of neural networks")]
    loop.run_until_complete(stores.papers.upsert(corpus, source="arxiv", seen_at=NOW))
    phrase = parse('"graph neural"', today=TODAY)
    assert not served_by_pairs(stores, loop, phrase)  # no heads yet: FTS5 answers
    assert _ids(loop, stores, '"graph neural"') == ["2611.00001"]
    assert rebuild(stores, window=10, min_docs=2) == 3
    assert served_by_pairs(stores, loop, phrase)
    assert _ids(loop, stores, '"graph neural"') == ["2611.00001"]
    assert _ids(loop, stores, 'ti:"graph neural"') == ["2611.00001"]
    assert _ids(loop, stores, 'ti:"neural graph"') == ["2611.00002"]
    assert _ids(loop, stores, '"neural network"') == ["2611.00001", "2611.00003"]
    # A word in one paper only is no head: FTS5 answers, the same way.
    assert not served_by_pairs(stores, loop, parse('"graph theory"', today=TODAY))
    assert _ids(loop, stores, '"graph theory"') == ["2611.00002"]
    # The index is what answers: take paper 1's tokens out by hand and it is no longer found.
    conn = open_sync(stores.db.path, migrate=False)
    try:
        heads = search_pairs.heads_of(conn)
        row = conn.execute("SELECT title, abstract, authors FROM papers WHERE arxiv_id='2611.00001'").fetchone()
        text = search_pairs.pair_texts([str(x) for x in row], heads, default_tokenizer())[0]
        assert "graph_neural" in text.split() and "graph_neural_t" in text.split()
        pid = conn.execute("SELECT id FROM papers WHERE arxiv_id='2611.00001'").fetchone()[0]
        conn.execute(search_pairs.DELETE_PAIRS, (pid, text))
        assert _ids(loop, stores, '"graph neural"') == []
        conn.execute(search_pairs.INSERT_PAIRS, (pid, text))
    finally:
        conn.close()
    # A new version that rewrites the text: its old pairs go, its new ones come (folded in by the search).
    loop.run_until_complete(stores.papers.upsert(
        [_paper(1, "Networks", "neural graph networks", version=2)], source="arxiv", seen_at=NOW))
    assert _ids(loop, stores, '"graph neural"') == []
    assert _ids(loop, stores, '"neural graph"') == ["2611.00001", "2611.00002"]
    assert served_by_pairs(stores, loop, phrase)  # the search folded the mark in
    # A deleted paper's pairs go too.
    loop.run_until_complete(_delete(stores, "2611.00002"))
    assert _ids(loop, stores, '"neural graph"') == ["2611.00001"]


async def _delete(stores: Stores, arxiv_id: str) -> None:
    async with stores.db.write() as conn:
        await conn.execute("DELETE FROM papers WHERE arxiv_id=?", (arxiv_id,))


def test_with_the_write_lock_held_elsewhere_marked_papers_are_read_through_fts5(
        sync_stores: tuple[asyncio.AbstractEventLoop, Stores]) -> None:
    loop, stores = sync_stores
    corpus = [_paper(i, "Graph neural", "graph neural networks") for i in range(1, 4)]
    loop.run_until_complete(stores.papers.upsert(corpus, source="arxiv", seen_at=NOW))
    rebuild(stores, window=10, min_docs=1)
    loop.run_until_complete(stores.papers.upsert(
        [_paper(2, "Networks", "neural networks only", version=2)], source="arxiv", seen_at=NOW))
    loop.run_until_complete(stores.db.conn.execute("PRAGMA busy_timeout=0"))
    other = sqlite3.connect(stores.db.path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")  # a backfill, say: the search cannot fold the mark in
        assert _ids(loop, stores, '"graph neural"') == ["2611.00001", "2611.00003"]
        assert not served_by_pairs(stores, loop, parse('"graph neural"', today=TODAY))
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert _ids(loop, stores, '"graph neural"') == ["2611.00001", "2611.00003"]
    assert served_by_pairs(stores, loop, parse('"graph neural"', today=TODAY))


def test_more_marked_papers_than_a_search_folds_are_read_through_fts5_until_a_refresh(
        sync_stores: tuple[asyncio.AbstractEventLoop, Stores], monkeypatch: pytest.MonkeyPatch) -> None:
    loop, stores = sync_stores
    loop.run_until_complete(stores.papers.upsert(
        [_paper(i, "Graph neural", "graph neural networks") for i in range(1, 4)], source="arxiv", seen_at=NOW))
    rebuild(stores, window=10, min_docs=1)
    loop.run_until_complete(stores.papers.upsert(  # three new papers, as a harvest stores them
        [_paper(i, "Graph neural", "graph neural networks") for i in range(4, 7)], source="arxiv", seen_at=NOW))
    monkeypatch.setattr(search_index, "PAIR_DIRTY_MAX", 2)
    query = parse('"graph neural"', today=TODAY)
    assert not served_by_pairs(stores, loop, query)
    assert _ids(loop, stores, '"graph neural"') == [f"2611.{i:05d}" for i in range(1, 7)]
    conn = open_sync(stores.db.path, migrate=False)
    try:
        assert conn.execute("SELECT count(*) FROM search_pairs_dirty").fetchone()[0] == 3  # the search wrote nothing
        with (mock.patch.object(search_pairs, "PAIR_DIRTY_MAX", 2),
              mock.patch.object(search_pairs, "PAIR_HEAD_MIN", 1)):
            assert search_pairs.refresh_sync(conn) == 6  # the harvest's end: rebuilt, not folded
    finally:
        conn.close()
    assert served_by_pairs(stores, loop, query)
    assert _ids(loop, stores, '"graph neural"') == [f"2611.{i:05d}" for i in range(1, 7)]


def test_only_plain_two_word_phrases_have_a_pair_token() -> None:
    def token(text: str) -> str | None:
        root = parse(text, today=TODAY).root
        assert root is not None
        return search_pairs.pair_token(root)  # type: ignore[arg-type]  # a Term in every case here

    assert token('"graph neural"') == "graph_neural"
    assert token('ti:"graph neural"') == "graph_neural_t"
    assert token('au:"ada lovelace"') == "ada_lovelac_a"
    assert token('abs:"graph neural"') is None  # the abstract alone is not indexed: FTS5
    assert token('"graph neural network"') is None
    assert token('"graph neur"*') is None
    assert token('"graph"') is None
    assert token('"Über graph"') == "uber_graph"  # diacritics removed: ASCII
    assert token('"αβ graph"') is None


def test_the_pair_texts_hold_every_adjacent_pair_of_heads_per_column() -> None:
    heads = search_pairs.Heads(frozenset({"graph", "neural", "ada", "lovelac"}))
    text = search_pairs.pair_texts(["Graph neural nets", "neural graph, graph neural", "Ada Lovelace"], heads,
                                   default_tokenizer())[0]
    assert sorted(text.split()) == sorted(["graph_neural", "graph_neural_t", "neural_graph", "graph_graph",
                                           "ada_lovelac", "ada_lovelac_a"])


def test_an_existing_database_gets_the_pair_index_empty_and_a_rebuild_fills_it(tmp_path: object) -> None:
    from pathlib import Path

    path = Path(str(tmp_path)) / "old.db"
    conn = open_sync(path, target=4)
    conn.execute("INSERT INTO papers(arxiv_id, title, abstract, first_seen, last_seen) "
                 "VALUES ('2611.00001', 'graph neural', 'graph neural', 'x', 'x')")
    conn.close()
    conn = open_sync(path)
    try:
        assert search_pairs.low_of(conn) == 2  # nothing stored is covered
        with mock.patch.object(search_pairs, "PAIR_HEAD_MIN", 1):
            assert search_pairs.refresh_sync(conn) == 1
        assert search_pairs.low_of(conn) == 1
        assert search_pairs.heads_of(conn).words == {"graph", "neural"}
        got = conn.execute("SELECT rowid FROM search_pairs WHERE search_pairs MATCH 'graph_neural'").fetchall()
        assert got == [(1,)]
    finally:
        conn.close()


def test_counts_add_up_across_the_low_mark(sync_stores: tuple[asyncio.AbstractEventLoop, Stores]) -> None:
    loop, stores = sync_stores
    loop.run_until_complete(stores.papers.upsert(
        [_paper(i, "graph neural", "graph neural") for i in range(1, 11)], source="arxiv", seen_at=NOW))
    rebuild(stores, window=5, min_docs=1)  # ids 6-10 from the pair index, 1-5 from FTS5
    query = parse('"graph neural"', today=TODAY)
    assert served_by_pairs(stores, loop, query)
    for candidates in (2, 5, 7):
        with mock.patch.object(search_index, "CANDIDATES", candidates):
            res = loop.run_until_complete(stores.papers.search(query, limit=2, count=True))
        assert [h.paper.arxiv_id for h in res.hits] == ["2611.00010", "2611.00009"]
        assert res.total == 10


def test_a_fold_changes_nothing_below_the_low_mark(sync_stores: tuple[asyncio.AbstractEventLoop, Stores]) -> None:
    loop, stores = sync_stores
    loop.run_until_complete(stores.papers.upsert(
        [_paper(i, "graph neural", "graph neural") for i in range(1, 6)], source="arxiv", seen_at=NOW))
    rebuild(stores, window=2, min_docs=1)  # ids 4 and 5
    loop.run_until_complete(stores.papers.upsert([_paper(1, "x", "neural graph", version=2)], source="arxiv",
                                                 seen_at=NOW))
    conn = open_sync(stores.db.path, migrate=False)
    try:
        assert search_pairs.low_of(conn) == 4
        conn.execute("BEGIN IMMEDIATE")
        assert search_pairs.fold_sync(conn) == 0  # paper 1 is below the mark: its mark is just cleared
        conn.execute("COMMIT")
        assert conn.execute("SELECT count(*) FROM search_pairs_dirty").fetchone()[0] == 0
        got = conn.execute("SELECT rowid FROM search_pairs WHERE search_pairs MATCH 'graph_neural' "
                           "ORDER BY rowid").fetchall()
        assert got == [(4,), (5,)]
    finally:
        conn.close()
    assert _ids(loop, stores, '"graph neural"') == [f"2611.{i:05d}" for i in range(2, 6)]
    assert _ids(loop, stores, '"neural graph"') == ["2611.00001"]




def test_a_head_prefix_is_read_from_the_pair_index_and_follows_changes(
        sync_stores: tuple[asyncio.AbstractEventLoop, Stores]) -> None:
    loop, stores = sync_stores
    corpus = [_paper(1, "Graphs", "graphical models"), _paper(2, "Spin", "spin glasses", authors=("Grace Hopper",)),
              _paper(3, "Flows", "normalising flows"), _paper(4, "Graph flows", "flows on graphs")]
    loop.run_until_complete(stores.papers.upsert(corpus, source="arxiv", seen_at=NOW))
    prefix = parse("gra*", today=TODAY)
    assert not served_by_pairs(stores, loop, prefix)  # no heads yet: FTS5 answers
    assert _ids(loop, stores, "gra*") == ["2611.00001", "2611.00002", "2611.00004"]  # Grace: authors count
    assert rebuild(stores, window=10, prefix_terms=1, prefix_window=2) == 4  # gr (grace, graph...), gra, ...
    assert served_by_pairs(stores, loop, prefix)
    assert not served_by_pairs(stores, loop, parse("ti:gra*", today=TODAY))  # a column: FTS5
    assert not served_by_pairs(stores, loop, parse("flo*", today=TODAY))  # one term only (flow): no head
    # Papers 3 and 4 from the index, 1 and 2 through FTS5 below its window: the same papers, and counted.
    assert _ids(loop, stores, "gra*") == ["2611.00001", "2611.00002", "2611.00004"]
    res = loop.run_until_complete(stores.papers.search(prefix, limit=1, count=True))
    assert [h.paper.arxiv_id for h in res.hits] == ["2611.00004"] and res.total == 3  # a title match ranks first
    # A prefix found often enough in the window never expands its terms for FTS5.
    with (mock.patch.object(search_index, "CANDIDATES", 1),
          mock.patch.object(search_index.SearchPlanner, "_expansions", side_effect=AssertionError)):
        res = loop.run_until_complete(stores.papers.search(prefix, limit=1))
    assert [h.paper.arxiv_id for h in res.hits] == ["2611.00004"]
    # Changed and deleted papers are folded in by the next search.
    loop.run_until_complete(stores.papers.upsert(
        [_paper(4, "Flows", "flows on manifolds", version=2)], source="arxiv", seen_at=NOW))
    assert _ids(loop, stores, "gra*") == ["2611.00001", "2611.00002"]
    assert served_by_pairs(stores, loop, prefix)
    loop.run_until_complete(stores.papers.upsert([_paper(5, "Gradients", "x")], source="arxiv", seen_at=NOW))
    loop.run_until_complete(_delete(stores, "2611.00002"))
    assert _ids(loop, stores, "gra*") == ["2611.00001", "2611.00005"]
    assert folded_index_agrees(stores)


def test_head_prefixes_are_the_ascii_prefixes_of_many_terms(tmp_path: object) -> None:
    from pathlib import Path

    conn = open_sync(Path(str(tmp_path)) / "h.db")
    try:
        conn.execute("INSERT INTO papers(arxiv_id, title, abstract, first_seen, last_seen) "
                     "VALUES ('2611.00001', 'spin spins spinor spintronics', 'über überall', 'x', 'x')")
        with mock.patch.object(search_pairs, "PREFIX_HEAD_TERMS", 1):
            _, prefixes = search_pairs.choose_heads(conn)
        # The terms: spin (and spins), spinor, spintron; uber, uberal. Longer prefixes have one term or none.
        assert sorted(prefixes) == ["sp", "spi", "spin", "ub", "ube", "uber"]
    finally:
        conn.close()
    assert search_pairs.prefix_token(parse("Über*", today=TODAY).root) == "_uber"  # type: ignore[arg-type]
    assert search_pairs.prefix_token(parse("ti:spin*", today=TODAY).root) is None  # type: ignore[arg-type]
    assert search_pairs.prefix_token(parse('"spin glass"*', today=TODAY).root) is None  # type: ignore[arg-type]


@given(words=st.lists(st.text(alphabet="abcü1", min_size=1, max_size=6), min_size=1, max_size=60),
       bar=st.integers(min_value=0, max_value=4))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_head_prefixes_counted_a_run_at_a_time_are_those_of_all_terms(tmp_path: object, words: list[str],
                                                                      bar: int) -> None:
    # choose_heads counts the terms sharing a two-character start together, relying on fts5vocab's order.
    from collections import Counter
    from itertools import count
    from pathlib import Path

    path = Path(str(tmp_path)) / f"v{abs(hash((tuple(words), bar)))}.db"
    conn = open_sync(path)
    try:
        conn.execute("INSERT INTO papers(arxiv_id, title, abstract, first_seen, last_seen) "
                     "VALUES ('2611.00001', 'x', ?, 'x', 'x')", (" ".join(words),))
        with mock.patch.object(search_pairs, "PREFIX_HEAD_TERMS", bar):
            _, prefixes = search_pairs.choose_heads(conn)
        conn.execute(search_index.CREATE_VOCAB)
        terms = [t for (t,) in conn.execute(f"SELECT term FROM {search_index.VOCAB_TABLE}")
                 if t.isascii() and t.isalnum()]
        expected: list[str] = []
        for k in count(2):
            found = [p for p, n in Counter(t[:k] for t in terms).items() if n > bar and len(p) == k]
            if not found:
                break
            expected += found
        assert sorted(prefixes) == sorted(expected)
    finally:
        conn.close()
        path.unlink()

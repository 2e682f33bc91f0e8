"""The fast search plan against the reference semantics: the same papers as bot.query.matches, ranked as
storage.search_index defines it (checked with the reference term matcher), on random corpora and queries."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from unittest import mock

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from bot.matching import docs_of, joined_stream
from bot.models import Paper
from bot.query import Doc, Query, QueryError, Term, matches, parse, term_matches
from bot.text import default_tokenizer
from storage import search_index
from storage.db import open_sync
from storage.sqlite import Stores
from tests.scale.strategies import TODAY, corpora, queries


def reference_score(query: Query, doc: Doc) -> float:
    score = 0.0
    for leaf in query.terms():
        if not isinstance(leaf, Term):
            continue
        for column, weight in (("title", search_index.TITLE_WEIGHT), ("authors", search_index.AUTHOR_WEIGHT)):
            if leaf.column in (None, column) and term_matches(replace(leaf, column=column), doc):
                score += weight
    return score


def recent_only(query: Query, ids: dict[str, int], docs: dict[str, Doc], recent: int) -> int | None:
    """The lowest id of the `recent` newest stored papers if the query has a phrase (and no prefix) that matches
    some of them: its candidates are then those only (storage.search_index, ranking rule 1)."""
    phrase = any(isinstance(leaf, Term) and len(leaf.tokens) > 1 for leaf in query.terms())
    if not recent or not phrase or search_index.has_prefix(query.root):
        return None
    low = max(ids.values()) - recent + 1
    return low if any(ids[pid] >= low and matches(query, doc) for pid, doc in docs.items()) else None


def reference_ranking(query: Query, ids: dict[str, int], docs: dict[str, Doc], window: int,
                      recent: int = 0) -> list[str]:
    """Matching ids: the `window` newest by store id, by score then newest; or with `recent_only`, the `window`
    newest of the recent matches by score then newest, and then every older match, newest first."""
    found = sorted((pid for pid in docs if matches(query, docs[pid])), key=lambda pid: -ids[pid])
    older: list[str] = []
    low = recent_only(query, ids, docs, recent)
    if low is not None:
        older = [pid for pid in found if ids[pid] < low]
        found = [pid for pid in found if ids[pid] >= low]
    return sorted(found[:window], key=lambda pid: (-reference_score(query, docs[pid]), -ids[pid])) + older


async def _load(stores: Stores, corpus: list[Paper]) -> dict[str, int]:
    async with stores.db.write() as conn:
        await conn.execute("DELETE FROM papers")
        await conn.execute("DELETE FROM paper_sources")
    await stores.papers.upsert(corpus, source="snapshot", seen_at=stores_time())
    rows = await stores.db.fetchall("SELECT arxiv_id, id FROM papers")
    return {r[0]: int(r[1]) for r in rows}


async def _forget_lasts(stores: Stores) -> None:
    async with stores.db.write() as conn:
        await conn.execute("UPDATE search_vocab SET last = NULL, reads = NULL")


def stores_time():  # type: ignore[no-untyped-def]
    from datetime import UTC, datetime

    return datetime(2026, 11, 24, 12, tzinfo=UTC)


def _parsed(texts: list[str]) -> list[Query]:
    out = []
    for text in texts:
        try:
            q = parse(text, today=TODAY)
        except QueryError:
            continue
        if q.root is not None:
            out.append(q)
    return out


@given(corpus=corpora(), texts=st.lists(queries(), min_size=1, max_size=4),
       window=st.integers(min_value=1, max_value=6), limit=st.integers(min_value=1, max_value=4),
       offset=st.integers(min_value=0, max_value=3), cap=st.integers(min_value=1, max_value=12),
       tiers=st.lists(st.integers(min_value=1, max_value=12), min_size=1, max_size=3, unique=True).map(sorted),
       forget_lasts=st.booleans(), newest=st.integers(min_value=1, max_value=15))
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
def test_search_finds_what_the_reference_matches_and_ranks_as_defined(
        sync_stores: tuple[asyncio.AbstractEventLoop, Stores], corpus: list[Paper], texts: list[str], window: int,
        limit: int, offset: int, cap: int, tiers: list[int], forget_lasts: bool, newest: int) -> None:
    loop, stores = sync_stores
    ids = loop.run_until_complete(_load(stores, corpus))
    if forget_lasts:  # as a bulk rebuild of the vocabulary leaves them: search works them out
        loop.run_until_complete(stores.papers.search(parse("zz*", today=TODAY)))
        loop.run_until_complete(_forget_lasts(stores))
    docs = dict(zip([p.arxiv_id for p in corpus], docs_of(corpus), strict=True))
    parsed = _parsed(texts)
    assume(parsed)
    for query in parsed:
        expected = {pid for pid, doc in docs.items() if matches(query, doc)}
        # Everything, with an exact count: the id set is the reference matcher's.
        full = loop.run_until_complete(stores.papers.search(query, limit=100, count=True))
        assert full.error is None, (query.text, full.error)
        assert {h.paper.arxiv_id for h in full.hits} == expected, query.text
        assert full.total == len(expected)
        assert [h.paper.arxiv_id for h in full.hits] == reference_ranking(query, ids, docs, 10**6)
        recent = loop.run_until_complete(stores.papers.search(query, limit=100, order="recent"))
        want_recent = sorted(expected, key=lambda pid: (docs[pid].day, ids[pid]), reverse=True)
        assert [h.paper.arxiv_id for h in recent.hits] == want_recent, query.text
        # A small candidate window and pages: the top-k of the newest `window` matches, as defined; every prefix
        # asked for in recency tiers of a few ids.
        # Scores by the candidates' text and by FTS5 agree.
        with (mock.patch.object(search_index, "CANDIDATES", window), mock.patch.object(search_index, "COUNT_CAP", cap),
              mock.patch.object(search_index, "TIER_TERMS", 0),
              mock.patch.object(search_index, "TIER_WINDOWS", tuple(tiers)),
              mock.patch.object(search_index, "RECENT_PAPERS", newest)):
            with mock.patch.object(search_index, "SCORE_BY", "fts"):
                page = loop.run_until_complete(stores.papers.search(query, limit=limit, offset=offset, count=True))
            with mock.patch.object(search_index, "SCORE_BY", "text"):
                tiered = loop.run_until_complete(stores.papers.search(query, limit=100))
        assert [h.paper.arxiv_id for h in tiered.hits] == reference_ranking(
            query, ids, docs, 10**6, newest), query.text
        ranked = reference_ranking(query, ids, docs, max(window, offset + limit), newest)
        assert [h.paper.arxiv_id for h in page.hits] == ranked[offset : offset + limit], query.text
        # The count (of all matches, recent or not): exact when every match is a candidate or up to the cap (ten
        # times it with a date filter), None past it.
        most = cap if query.since is None else 10 * cap
        if recent_only(query, ids, docs, newest) is None:
            read_all = len(expected) < max(window, offset + limit)
        else:  # the recent matches, then older ones as far as the page needs
            read_all = len(expected) < offset + limit
        exact = read_all or len(expected) <= most
        assert page.total == (len(expected) if exact else None), query.text


def test_a_prefix_nothing_starts_with_finds_nothing(sync_stores: tuple[asyncio.AbstractEventLoop, Stores]) -> None:
    loop, stores = sync_stores
    loop.run_until_complete(_load(stores, [Paper("2611.00001", "Graph models", "flows")]))
    res = loop.run_until_complete(stores.papers.search(parse("zzq*", today=TODAY), limit=10, count=True))
    assert res.hits == () and res.total == 0 and res.error is None
    res = loop.run_until_complete(stores.papers.search(parse("graph zzq* OR flow", today=TODAY), limit=10))
    assert [h.paper.arxiv_id for h in res.hits] == ["2611.00001"]


def test_a_prefix_of_few_terms_is_scored_by_fts5_with_its_terms(
        sync_stores: tuple[asyncio.AbstractEventLoop, Stores]) -> None:
    loop, stores = sync_stores
    corpus = [Paper("2611.00001", "Flows", "x", authors=("Grace Hopper",)),  # an author starts with gra
              Paper("2611.00002", "Gradients", "x", authors=("Ada Lovelace",)),  # a title word does
              Paper("2611.00003", "Flows", "gradual graphs", authors=("Ada Lovelace",)),  # only the abstract
              Paper("2611.00004", "Graded flows", "x", authors=("Grace Hopper",))]  # both
    ids = loop.run_until_complete(_load(stores, corpus))
    query = parse("gra*", today=TODAY)
    res = loop.run_until_complete(stores.papers.search(query, limit=10))  # folds the new papers' terms in
    conn = open_sync(stores.db.path, migrate=False)
    try:
        compiled = search_index.SearchPlanner(conn).compile(query)
    finally:
        conn.close()
    assert isinstance(compiled, search_index.Compiled) and compiled.scored is not None
    assert len(compiled.scored) == 2 and all('"' in m and "*" not in m for m, _ in compiled.scored)  # the terms
    assert [h.paper.arxiv_id for h in res.hits] == ["2611.00004", "2611.00002", "2611.00001", "2611.00003"]
    assert [h.score for h in res.hits] == [13.0, 10.0, 3.0, 0.0]
    docs = dict(zip([p.arxiv_id for p in corpus], docs_of(corpus), strict=True))
    assert [h.paper.arxiv_id for h in res.hits] == reference_ranking(query, ids, docs, 10**6)


def test_prefix_sees_words_of_papers_stored_after_the_vocabulary_was_built(
        sync_stores: tuple[asyncio.AbstractEventLoop, Stores]) -> None:
    loop, stores = sync_stores
    loop.run_until_complete(_load(stores, [Paper("2611.00001", "Graph models", "flows")]))
    assert len(loop.run_until_complete(stores.papers.search(parse("mod*", today=TODAY))).hits) == 1
    loop.run_until_complete(stores.papers.upsert([Paper("2611.00002", "Quixotic modular forms", "")],
                                                 source="rss", seen_at=stores_time()))
    hits = loop.run_until_complete(stores.papers.search(parse("quix*", today=TODAY))).hits
    assert [h.paper.arxiv_id for h in hits] == ["2611.00002"]
    hits = loop.run_until_complete(stores.papers.search(parse("modu*", today=TODAY))).hits
    assert [h.paper.arxiv_id for h in hits] == ["2611.00002"]


def test_prefixes_over_stems_porter_would_change_again(sync_stores: tuple[asyncio.AbstractEventLoop, Stores]) -> None:
    # agreed -> agre, and FTS5 would read the query text "agre" as agr: the expansion must still be exact.
    loop, stores = sync_stores
    corpus = [Paper("2611.00001", "They agreed", ""), Paper("2611.00002", "Agriculture", ""),
              Paper("2611.00003", "A universal law", ""), Paper("2611.00004", "Agrarian", "")]
    loop.run_until_complete(_load(stores, corpus))
    docs = dict(zip([p.arxiv_id for p in corpus], docs_of(corpus), strict=True))
    for text in ("ag*", "agr*", "agre*", "univ*", "un*", "ti:ag*"):
        query = parse(text, today=TODAY)
        hits = loop.run_until_complete(stores.papers.search(query, limit=10)).hits
        assert {h.paper.arxiv_id for h in hits} == {pid for pid, d in docs.items() if matches(query, d)}, text


def test_non_idempotent_stems_are_asked_for_by_a_word_that_stems_to_them(
        sync_stores: tuple[asyncio.AbstractEventLoop, Stores]) -> None:
    # A native prefix part ("agre"*) merges every doclist under it over the whole table; "agree" reads as agre.
    loop, stores = sync_stores
    corpus = [Paper("2611.00001", "They agreed", ""), Paper("2611.00002", "Agriculture", ""),
              Paper("2611.00003", "A universal law", "")]
    loop.run_until_complete(_load(stores, corpus))
    loop.run_until_complete(stores.papers.search(parse("zz*", today=TODAY)))  # folds the vocabulary
    planner = search_index.SearchPlanner(open_sync(stores.db.path, migrate=False))
    for text in ("ag*", "agre*", "univ*"):
        compiled = planner.compile(parse(text, today=TODAY))
        assert isinstance(compiled, search_index.Compiled) and "*" not in compiled.match, (text, compiled)
    planner.conn.close()


def test_the_vocabulary_keeps_how_each_term_reads_back(sync_stores: tuple[asyncio.AbstractEventLoop, Stores]) -> None:
    # Worked out when a term is folded in (the search's fold on the writer, and the backfill's refresh), so a
    # search expanding a prefix to hundreds of terms does not tokenise them again.
    loop, stores = sync_stores
    corpus = [Paper("2611.00001", "They agreed", ""), Paper("2611.00002", "Agriculture bacts", "")]
    loop.run_until_complete(_load(stores, corpus))
    loop.run_until_complete(stores.papers.search(parse("zz*", today=TODAY)))  # the fold, on the writer
    conn = open_sync(stores.db.path, migrate=False)
    try:
        for _ in range(2):
            rows = dict(conn.execute("SELECT term, reads FROM search_vocab").fetchall())
            assert {"agre", "agricultur", "bact"} <= rows.keys() and None not in rows.values(), rows
            assert {t: search_index.decode_reads(t, r) for t, r in rows.items()} == search_index.verify_terms(
                list(rows), default_tokenizer())
            assert search_index.decode_reads("agre", rows["agre"]) == ("agree", "agr")  # Porter re-stems "agre"
            assert rows["bact"] == ""  # reads as itself
            conn.execute("UPDATE search_vocab SET reads = NULL")  # as a refill or migration 004 leaves them
            search_index.refresh_vocab_sync(conn)  # the backfill's refresh works them out again
    finally:
        conn.close()


_TOKENS = ["a", "ab", "abc", "b", "ba", "c"]  # tokens that are prefixes of one another


@given(stream=st.lists(st.sampled_from(_TOKENS), max_size=8),
       tokens=st.lists(st.sampled_from(_TOKENS), min_size=1, max_size=3), prefix=st.booleans(),
       column=st.sampled_from(["title", "authors"]))
def test_the_substring_scorer_is_the_reference_term_matcher(stream: list[str], tokens: list[str], prefix: bool,
                                                            column: str) -> None:
    term = Term(" ".join(tokens), tuple(tokens), column, prefix)
    doc = Doc(tuple(stream), (), tuple(stream), frozenset(), None)
    pattern = search_index.leaf_pattern(term)
    assert pattern is not None
    assert (pattern in joined_stream(stream, search_index.SEP)) == term_matches(term, doc)


def test_no_token_contains_the_scoring_separator() -> None:
    tok = default_tokenizer()
    texts = [f"a{search_index.SEP}b", f"x {search_index.SEP} y", f"Über{search_index.SEP}naïve"]
    for stream in tok.tokenize_many(texts):
        assert stream and all(search_index.SEP not in t for t in stream)


# Words the category column holds (cs.LG -> csxlg0, cs -> cs0), also typed into titles and queries: leaving the
# column filter out of a leaf must never let the category column match it.
_CAT_WORDS = ["csxlg0", "cs0", "hepxth0", "graph", "cs", "csxlg"]
_cat_atom = st.one_of(
    st.sampled_from(_CAT_WORDS),
    st.sampled_from(["cs*", "csx*", "csxl*", "hep*", "gra*", "c*"]),
    st.lists(st.sampled_from(_CAT_WORDS), min_size=2, max_size=3).map(lambda ws: '"' + " ".join(ws) + '"'),
    st.lists(st.sampled_from(_CAT_WORDS), min_size=2, max_size=2).map(lambda ws: '"' + " ".join(ws) + '"*'),
)


@given(titles=st.lists(st.lists(st.sampled_from(_CAT_WORDS), max_size=4).map(" ".join), min_size=1, max_size=6),
       texts=st.lists(st.lists(_cat_atom, min_size=1, max_size=3).map(" ".join), min_size=1, max_size=4))
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
def test_words_the_category_column_holds_match_only_in_text_columns(
        sync_stores: tuple[asyncio.AbstractEventLoop, Stores], titles: list[str], texts: list[str]) -> None:
    loop, stores = sync_stores
    corpus = [Paper(f"2611.{i:05d}", title or "untitled", "", ("Cs Graph",) if i % 2 else (),
                    categories=("cs.LG", "hep-th") if i % 3 else ("math.PR",))
              for i, title in enumerate(titles, start=1)]
    ids = loop.run_until_complete(_load(stores, corpus))
    docs = dict(zip([p.arxiv_id for p in corpus], docs_of(corpus), strict=True))
    for query in _parsed(texts):
        expected = {pid for pid, doc in docs.items() if matches(query, doc)}
        full = loop.run_until_complete(stores.papers.search(query, limit=100, count=True))
        assert full.error is None, (query.text, full.error)
        assert [h.paper.arxiv_id for h in full.hits] == reference_ranking(query, ids, docs, 10**6), query.text
        assert full.total == len(expected)


def test_leaves_that_the_category_column_could_hold_keep_the_column_filter() -> None:
    def leaf(text: str) -> str:
        root = parse(text, today=TODAY).root
        assert isinstance(root, Term)
        return search_index.leaf_fts(root)

    assert leaf("graph") == '"graph"'
    assert leaf('"graph csxlg0"') == '"graph csxlg0"'
    assert leaf('"graph cs"*') == '"graph cs"*'
    for text in ("csxlg0", '"cs0 csxlg0"', "cs*", '"cs0 csx"*', "ti:graph"):
        assert leaf(text).startswith("{"), text


def test_recency_tiers_find_the_newest_papers_of_every_term(
        sync_stores: tuple[asyncio.AbstractEventLoop, Stores]) -> None:
    # Each tier asks only for the terms whose newest paper (search_vocab.last) is within it: after a bulk rebuild
    # of the vocabulary (lasts unknown), after new papers and after an old paper gains a word.
    loop, stores = sync_stores
    corpus = [Paper(f"2611.{i:05d}", title, "") for i, title in
              enumerate(["graph one", "graphs two", "model three", "graphical four", "model five"], start=1)]
    ids = loop.run_until_complete(_load(stores, corpus))
    docs = dict(zip([p.arxiv_id for p in corpus], docs_of(corpus), strict=True))

    def check(text: str) -> None:
        query = parse(text, today=TODAY)
        with (mock.patch.object(search_index, "TIER_TERMS", 0),
              mock.patch.object(search_index, "TIER_WINDOWS", (1, 2, 3))):
            hits = loop.run_until_complete(stores.papers.search(query, limit=100)).hits
        assert [h.paper.arxiv_id for h in hits] == reference_ranking(query, ids, docs, 10**6), text

    loop.run_until_complete(stores.papers.search(parse("zz*", today=TODAY)))
    loop.run_until_complete(_forget_lasts(stores))
    for text in ("gra*", "mod*", "gra* OR mod*", "gra* -graphical", "ti:gra*"):
        check(text)
    assert loop.run_until_complete(stores.db.fetchone("SELECT last FROM search_vocab WHERE term='graph'"))[0] == 2
    newer = [Paper("2611.00006", "graph six", ""), Paper("2611.00001", "graph one model", "", version=2)]
    loop.run_until_complete(stores.papers.upsert(newer, source="rss", seen_at=stores_time()))
    corpus = [newer[1], *corpus[1:], newer[0]]
    ids = {r[0]: int(r[1]) for r in loop.run_until_complete(stores.db.fetchall("SELECT arxiv_id, id FROM papers"))}
    docs = dict(zip([p.arxiv_id for p in corpus], docs_of(corpus), strict=True))
    for text in ("gra*", "mod*", "gra* mod*"):
        check(text)


def test_a_phrase_ranks_its_recent_matches_first_then_older_ones_newest_first(
        sync_stores: tuple[asyncio.AbstractEventLoop, Stores]) -> None:
    loop, stores = sync_stores
    corpus = [Paper("2611.00001", "Graph neural networks", "graph neural"),  # old, but a title hit
              Paper("2611.00002", "Other", "on graph neural nets"),
              Paper("2611.00003", "Other", "a graph neural model"),
              Paper("2611.00004", "Other", "nothing here"),
              Paper("2611.00005", "Recent", "graph neural again"),
              Paper("2611.00006", "Recent", "neural graph, the other way round")]
    ids = loop.run_until_complete(_load(stores, corpus))
    by_id = {v: k for k, v in ids.items()}
    newest = max(ids.values())

    def search(text: str, **kw: int) -> tuple[list[int], int | None]:
        res = loop.run_until_complete(stores.papers.search(parse(text, today=TODAY), count=True, **kw))
        return [ids[h.paper.arxiv_id] - newest for h in res.hits], res.total

    # Without a recent match (or a window that holds everything) the title hit wins as usual.
    assert search('"graph neural"') == ([-5, -1, -3, -4], 4)
    with mock.patch.object(search_index, "RECENT_PAPERS", 2):  # the two newest papers: 00005 and 00006
        assert by_id[newest - 1] == "2611.00005"
        assert search('"graph neural"') == ([-1, -3, -4, -5], 4)
        assert search('"graph neural"', limit=2) == ([-1, -3], 4)
        assert search('"graph neural"', limit=2, offset=2) == ([-4, -5], 4)
        with mock.patch.object(search_index, "COUNT_CAP", 1):  # exact only if every match was read
            assert search('"graph neural"') == ([-1, -3, -4, -5], 4)
            assert search('"graph neural"', limit=2) == ([-1, -3], None)
        # Words alone, a prefix, or a phrase with no recent match: the rule does not apply.
        assert search("graph neural")[0][0] == -5
        assert search('"graph neural" netw*')[0] == [-5]
        assert search('"neural network"') == ([-5], 1)

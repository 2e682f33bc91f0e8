"""The query language: what the parser makes of user text, that hostile text can only give a Query or a
QueryError, and the key property that SQLite FTS5 search and the reference Python matcher accept exactly the
same papers (so "what would alert me" equals "what search shows")."""

from __future__ import annotations

import asyncio
from datetime import date, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from bot.matching import Standing, doc_of, match_papers
from bot.models import Paper
from bot.query import (
    MAX_QUERY_CHARS,
    MAX_TERMS,
    And,
    Category,
    Not,
    Or,
    Query,
    QueryError,
    Term,
    matched_terms,
    matches,
    parse,
)
from bot.text import default_tokenizer
from storage.sqlite import Stores
from tests.core.fakes import T0

TODAY = date(2026, 11, 24)


def q(text: str) -> Query:
    return parse(text, today=TODAY)


def term(raw: str, *tokens: str, column: str | None = None, prefix: bool = False) -> Term:
    """A leaf as the parser should build it; tokens default to what the index tokenizer makes of `raw`."""
    return Term(raw=raw, tokens=tokens or default_tokenizer().tokenize(raw), column=column, prefix=prefix)


# ---------------------------------------------------------------- the language, case by case


def test_plain_words_are_all_required_and_stemmed() -> None:
    assert q("graph neural").root == And((term("graph"), term("neural")))
    assert q("Networks").root == term("Networks", "network")
    assert q("graph AND neural").root == q("graph neural").root


def test_phrase_keeps_its_words_together() -> None:
    root = q('"graph neural networks"').root
    assert root == Term("graph neural networks", ("graph", "neural", "network"))
    assert q('"graph neural').root == root.__class__("graph neural", ("graph", "neural"))  # unclosed quote
    assert "closed" not in " ".join(q('"graph neural').notes)


def test_or_binds_looser_than_and() -> None:
    assert q("diffusion OR flow").root == Or((term("diffusion", "diffus"), term("flow")))
    assert q("a b OR c").root == Or((And((term("a"), term("b"))), term("c")))
    assert q("(a OR b) c").root == And((Or((term("a"), term("b"))), term("c")))
    # Lower-case "or" is a word, not an operator.
    assert q("salt or pepper").root == And((term("salt"), term("or"), term("pepper", "pepper")))


@pytest.mark.parametrize("text", ["diffusion -survey", "diffusion NOT survey", "NOT survey diffusion"])
def test_exclusion(text: str) -> None:
    root = q(text).root
    assert isinstance(root, And)
    assert set(root.children) == {term("diffusion", "diffus"), Not(term("survey"))}


def test_exclusion_of_a_group_or_a_phrase() -> None:
    assert q("x -(a OR b)").root == And((term("x"), Not(Or((term("a"), term("b"))))))
    assert q('x -"graph neural"').root == And((term("x"), Not(Term("graph neural", ("graph", "neural")))))
    assert q("x NOT (a b)").root == And((term("x"), Not(And((term("a"), term("b"))))))
    assert q("--x").root == term("x")  # a double negation is the word


def test_prefix() -> None:
    assert q("transform*").root == term("transform", prefix=True)
    assert q("transformers*").root == Term("transformers", ("transform",), prefix=True)
    assert q('"graph neur"*').root == Term("graph neur", ("graph", "neur"), prefix=True)
    with pytest.raises(QueryError, match="too short a prefix"):
        q("a*")


def test_fields() -> None:
    assert q("ti:transformer").root == Term("transformer", ("transform",), column="title")
    assert q("title:transformer").root == q("ti:transformer").root
    assert q("abs:diffusion").root == Term("diffusion", ("diffus",), column="abstract")
    assert q("au:hinton").root == term("hinton", column="authors")
    assert q('ti:"graph neural"').root == Term("graph neural", ("graph", "neural"), column="title")
    assert q("ti:graph*").root == term("graph", column="title", prefix=True)
    assert q("cat:cs.LG").root == Category("cs.LG")
    assert q("cat:math").root == Category("math")
    # An unknown field name is just a word.
    assert q("foo:bar").root == Term("foo:bar", ("foo", "bar"))


def test_since() -> None:
    only = q("since:2026-01-01")
    assert only.root is None and only.since == date(2026, 1, 1)
    assert q("gnn since:2026-03").since == date(2026, 3, 1)
    assert q("gnn since:2025").since == date(2025, 1, 1)
    assert q("gnn since:30d").since == TODAY - timedelta(days=30)
    assert q("gnn since:2w").since == TODAY - timedelta(days=14)
    with pytest.raises(QueryError, match="since:"):
        q("gnn since:yesterday")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "Give some words"),
        ("   ", "Give some words"),
        ("-survey", "only exclusions"),
        ("NOT survey", "only exclusions"),
        ("a OR -b", "OR"),
        ("ti:", "needs something after it"),
        ("cat:'; DROP", "not an arXiv category"),
        ("x" * (MAX_QUERY_CHARS + 1), "characters"),
        (" ".join(f"w{i}" for i in range(MAX_TERMS + 1)), "terms"),
        ("(" * 12 + "x" + ")" * 12, "nests"),
        ("!!! ???", "no words"),
    ],
)
def test_user_mistakes_are_one_line_messages(text: str, message: str) -> None:
    with pytest.raises(QueryError, match=message) as info:
        q(text)
    assert "\n" not in str(info.value) and len(str(info.value)) < 200


def test_unbalanced_parentheses_are_forgiven_with_a_note() -> None:
    opened = q("(a OR b")
    assert opened.root == Or((term("a"), term("b"))) and any("(" in n for n in opened.notes)
    closed = q("a) b")
    assert closed.root == And((term("a"), term("b"))) and any(")" in n for n in closed.notes)


def test_matched_terms_are_the_positive_leaves_that_hit() -> None:
    paper = Paper("2611.00001", "Graph networks", "We use diffusion.", ("Ada Lovelace",), ("cs.LG",))
    doc = doc_of(paper)
    query = q("(graph OR flow) diffusion -survey cat:cs.LG")
    assert matches(query, doc)
    assert matched_terms(query, doc) == ["graph", "diffusion", "cat:cs.LG"]


# ---------------------------------------------------------------- hostile input

HOSTILE = [
    '"', '""', '"""', "*", "**", "***", "NEAR(", "NEAR(a b)", "NEAR(a b, 2)", "'; DROP TABLE papers; --",
    "a) OR (b", "((((", "))))", "(()", "()", "x" * 10_000, "word " * 2_000, "\x00\x01\x02", "a\x00b",
    "\u200f\u202eevil\u202c", "graph\u200dneural", "\u200b", "🧠🤖 neural", "👩‍👩‍👧", "a:b:c", "ti:ti:ti:",
    "cat:", "cat:*", "since:", "since:0000-00-00", "since:9999999d", "-", "--", "- -", "NOT NOT", "OR OR",
    "AND", "a OR OR b", "^a", "a^2", "col:x", "{title}:x", "title : x", "x:", ":x", "'", "`rm -rf`",
    "\\", "\\\"", "\t\n\r", "ﷺ", "İstanbul", "ß straße", "a\u0301", "中文 論文", "مرحبا", "-\"", "-(",
    '"a" NEAR "b"', "a*b*c", "a**", "*a", "x\ud800y",
]


def _check_query(text: str) -> Query | None:
    try:
        result = parse(text, today=TODAY)
    except QueryError as exc:
        assert str(exc) and "\n" not in str(exc)
        return None
    assert isinstance(result, Query)
    assert result.root is not None or result.since is not None
    return result


@pytest.mark.parametrize("text", HOSTILE)
def test_hostile_input_gives_a_query_or_a_query_error(text: str) -> None:
    _check_query(text)


@given(st.text(max_size=200))
@settings(max_examples=400, deadline=None)
def test_any_text_gives_a_query_or_a_query_error(text: str) -> None:
    _check_query(text)


_PIECES = st.sampled_from(['"', "*", "(", ")", "-", "NOT", "OR", "AND", "NEAR(", "ti:", "au:", "cat:", "since:",
                           "'", ";", ":", "\u200d", "\u200f", "🙂", "graph", "neur*", "cs.LG", "x"])


@given(st.lists(_PIECES, max_size=20), st.lists(st.sampled_from(["", " "]), min_size=20, max_size=20))
@settings(max_examples=400, deadline=None)
def test_operator_soup_gives_a_query_or_a_query_error(pieces: list[str], gaps: list[str]) -> None:
    _check_query("".join(p + g for p, g in zip(pieces, gaps, strict=False)))


def test_hostile_queries_that_parse_run_in_sqlite(tmp_path: Path) -> None:
    async def run() -> None:
        stores = await Stores.open(tmp_path / "h.db")
        try:
            await stores.papers.upsert([Paper("2611.00001", "Near drop table", "a b c", ("X",), ("cs.LG",),
                                              announced=TODAY)], source="rss", seen_at=T0)
            for text in HOSTILE:
                query = _check_query(text)
                if query is not None:
                    result = await stores.papers.search(query, limit=5, count=True)
                    assert result.error is None, (text, result.error)
        finally:
            await stores.close()

    asyncio.run(run())


# ---------------------------------------------------------------- FTS5 == the reference matcher

WORDS = [
    "graph", "graphs", "graphing", "neural", "network", "networks", "networking", "diffusion", "diffuse", "model",
    "models", "modeling", "modelling", "transformer", "transformers", "transform", "learning", "learn", "learned",
    "survey", "attention", "café", "cafe", "naïve", "naive", "über", "x-ray", "gpt-4", "3d", "2024", "f1",
    "generalization", "generalisation", "the", "of", "a", "is", "relational", "relate", "running", "ran",
    # stems that are prefixes of other stems, so prefix and exact matching can be told apart
    "graphene", "net", "artificial", "art", "learner", "modular", "transit", "trans", "attentive", "surveillance",
]
QUERY_ONLY_WORDS = ["missing", "graphite", "transf", "netw", "diff", "mod", "lear", "surv", "gen"]
NAMES = ["Ada Lovelace", "Alan Turing", "Émile Borel", "Grace Hopper", "Li Wei", "O'Neil", "van der Berg"]
CATS = ["cs.LG", "cs.AI", "cs.CL", "stat.ML", "math.GT", "q-bio.NC", "hep-th"]
DAYS = [TODAY - timedelta(days=n) for n in (0, 1, 3, 10, 40)]


def _text(max_words: int) -> st.SearchStrategy[str]:
    return st.lists(st.sampled_from(WORDS), max_size=max_words).map(" ".join)


@st.composite
def corpora(draw: st.DrawFn) -> list[Paper]:
    n = draw(st.integers(min_value=1, max_value=14))
    out = []
    for i in range(n):
        out.append(Paper(
            arxiv_id=f"2611.{i:05d}",
            title=draw(_text(6)) or "untitled",
            abstract=draw(_text(14)),
            authors=tuple(draw(st.lists(st.sampled_from(NAMES), max_size=3, unique=True))),
            categories=tuple(draw(st.lists(st.sampled_from(CATS), max_size=3, unique=True))),
            announced=draw(st.sampled_from([*DAYS, None])),
            announce_type="new",
            source="rss",
        ))
    return out


_word = st.sampled_from(WORDS + QUERY_ONLY_WORDS)
_leaf = st.one_of(
    _word,
    _word.map(lambda w: w + "*"),
    st.lists(_word, min_size=2, max_size=3).map(lambda ws: '"' + " ".join(ws) + '"'),
    st.lists(_word, min_size=2, max_size=3).map(lambda ws: '"' + " ".join(ws) + '"*'),
    st.tuples(st.sampled_from(["ti:", "abs:", "au:"]), _word).map("".join),
    st.sampled_from(["au:turing", "au:emile", "au:borel", "au:li", 'au:"ada lovelace"', "au:neil", "au:o'neil"]),
    st.sampled_from([*CATS, "cs", "math", "stat", "q-bio", "physics"]).map(lambda c: "cat:" + c),
)


def _compound(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.one_of(
        st.lists(children, min_size=2, max_size=3).map(" ".join),
        st.lists(children, min_size=2, max_size=3).map(" OR ".join),
        st.lists(children, min_size=2, max_size=3).map(lambda cs: "(" + " OR ".join(cs) + ")"),
        st.tuples(children, children).map(lambda ab: f"{ab[0]} -{ab[1]}"),
        st.tuples(children, children).map(lambda ab: f"{ab[0]} NOT ({ab[1]})"),
        st.tuples(children, children).map(lambda ab: f"{ab[0]} -({ab[1]})"),
    )


queries = st.tuples(
    st.recursive(_leaf, _compound, max_leaves=6),
    st.sampled_from(["", "", "", *(f" since:{d.isoformat()}" for d in DAYS)]),
).map("".join)



async def _load(stores: Stores, corpus: list[Paper]) -> list[Paper]:
    async with stores.db.write() as conn:
        await conn.execute("DELETE FROM papers")
        await conn.execute("DELETE FROM paper_sources")
    await stores.papers.upsert(corpus, source="rss", seen_at=T0)
    return await stores.papers.get_many([p.arxiv_id for p in corpus])


@given(corpus=corpora(), texts=st.lists(queries, min_size=1, max_size=4))
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
def test_fts5_search_equals_the_reference_matcher(sync_stores: tuple[asyncio.AbstractEventLoop, Stores],
                                                  corpus: list[Paper], texts: list[str]) -> None:
    loop, stores = sync_stores
    stored = loop.run_until_complete(_load(stores, corpus))
    assert len(stored) == len(corpus)
    docs = {p.arxiv_id: doc_of(p) for p in stored}
    parsed = []
    for text in texts:
        try:
            parsed.append(parse(text, today=TODAY))
        except QueryError:
            continue
    assume(parsed)
    for query in parsed:
        expected = {pid for pid, doc in docs.items() if matches(query, doc)}
        event("matched " + ("none" if not expected else "all" if len(expected) == len(docs) else "some"))
        result = loop.run_until_complete(stores.papers.search(query, limit=100, count=True))
        assert result.error is None, (query.text, result.error)
        got = {h.paper.arxiv_id for h in result.hits}
        assert got == expected, (query.text, query.root)
        assert result.total == len(expected)
        recent = loop.run_until_complete(stores.papers.search(query, limit=100, order="recent"))
        assert {h.paper.arxiv_id for h in recent.hits} == expected


@given(corpus=corpora(), texts=st.lists(queries, min_size=1, max_size=8))
@settings(max_examples=150, deadline=None)
def test_inverted_index_matcher_equals_the_reference_matcher(corpus: list[Paper], texts: list[str]) -> None:
    standing = []
    for i, text in enumerate(texts):
        try:
            query = parse(text, today=TODAY)
        except QueryError:
            continue
        if query.root is not None:
            standing.append(Standing(f"s{i}", query))
    assume(standing)
    got = match_papers(corpus, standing)
    docs = {p.arxiv_id: doc_of(p) for p in corpus}
    for s in standing:
        expected = [p.arxiv_id for p in corpus if matches(s.query, docs[p.arxiv_id])]
        assert [p.arxiv_id for p, _ in got.get(s.key, [])] == expected, s.query.text
        for paper, terms in got.get(s.key, []):
            assert list(terms) == matched_terms(s.query, docs[paper.arxiv_id])


_SOUP = st.lists(st.sampled_from(['"', "*", "(", ")", "-", "NOT", "OR", "AND", "NEAR(", "ti:", "au:", "abs:", "cat:",
                                  "cs.LG", "graph", "networks", "diffusion", "model*", "turing", "café", "x-ray",
                                  "'", ";", "\u200d", "🙂", "since:3d"]),
                 min_size=1, max_size=14)

FIXED_CORPUS = [
    Paper("2611.00001", "Graph networks", "Diffusion on graph networks.", ("Alan Turing",), ("cs.LG",),
          announced=TODAY),
    Paper("2611.00002", "Diffusion models", "A café x-ray model.", ("Émile Borel",), ("cs.CV",),
          announced=TODAY - timedelta(days=10)),
    Paper("2611.00003", "Modeling networks", "Neural networks.", ("Ada Lovelace",), ("stat.ML", "cs.LG"),
          announced=None),
]


@given(pieces=_SOUP, gaps=st.lists(st.sampled_from(["", " "]), min_size=14, max_size=14))
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_operator_soup_runs_in_sqlite_and_agrees(sync_stores: tuple[asyncio.AbstractEventLoop, Stores],
                                                 pieces: list[str], gaps: list[str]) -> None:
    loop, stores = sync_stores
    if not loop.run_until_complete(stores.papers.count()):
        loop.run_until_complete(_load(stores, FIXED_CORPUS))
    query = _check_query("".join(p + g for p, g in zip(pieces, gaps, strict=False)))
    assume(query is not None)
    assert query is not None
    result = loop.run_until_complete(stores.papers.search(query, limit=100))
    assert result.error is None, (query.text, result.error)
    expected = {p.arxiv_id for p in FIXED_CORPUS if matches(query, doc_of(p))}
    assert {h.paper.arxiv_id for h in result.hits} == expected, (query.text, query.root)


def test_quoted_filter_values_are_filters() -> None:
    assert q('cat:"cs.LG"').root == Category("cs.LG")
    assert q('x since:"2026-01"').since == date(2026, 1, 1)
    with pytest.raises(QueryError, match="not an arXiv category"):
        q('cat:"graph neural"')

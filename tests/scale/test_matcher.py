"""The batch matcher against the reference semantics: per paper, bot.query.matches and matched_terms; and
the fast tokenizer against FTS5's own token streams."""

from __future__ import annotations

import subprocess
import sys
from array import array

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot import matching
from bot.matching import FastTokenizer, Matcher, Standing, docs_of, match_papers
from bot.models import Paper
from bot.query import QueryError, matched_terms, matches, parse
from bot.text import Tokenizer, default_tokenizer
from tests.scale.strategies import TODAY, WORDS, corpora, queries


def _standing(texts: list[str]) -> list[Standing]:
    out = []
    for i, text in enumerate(texts):
        try:
            q = parse(text, today=TODAY)
        except QueryError:
            continue
        out.append(Standing(f"s{i}", q))
        out.append(Standing(f"dup{i}", q))  # identical queries share one plan: both must still be answered
    return out


def test_the_compiled_scan_is_built() -> None:
    # It is optional at install (no C compiler: the Python path does the same work); where the tests run, both
    # paths must be there to be compared.
    assert matching.Table is not None


def test_without_the_compiled_scan_matching_runs_in_python() -> None:
    # What an install without a C compiler gets: bot._scan cannot be imported at all.
    script = """
import sys
sys.modules["bot._scan"] = None  # import fails, as when it was never built
from bot.matching import Matcher, Standing, Table, match_papers
from bot.models import Paper
from bot.query import parse
assert Table is None
standing = [Standing("s", parse('"neural networks" -quantum'))]
m = Matcher(standing)
got = match_papers([Paper("2611.00001", "Neural networks", "")], standing, matcher=m)
assert not m.compiled and [k for k, _ in got.pairs()] == ["s"], got
try:
    Matcher(standing, compiled=True)
except RuntimeError as exc:
    print("refused:", exc)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert "refused: bot._scan is not built" in done.stdout


@pytest.mark.parametrize("compiled", [False, True], ids=["python", "compiled"])
@given(corpus=corpora(max_size=40), texts=st.lists(queries(), min_size=1, max_size=12))
@settings(max_examples=150, deadline=None)
def test_batch_matcher_equals_the_reference_per_paper(compiled: bool, corpus: list[Paper], texts: list[str]) -> None:
    standing = _standing(texts)
    got = match_papers(corpus, standing, matcher=Matcher(standing, compiled=compiled))
    docs = docs_of(corpus)
    for s in standing:
        expected = [p.arxiv_id for p, d in zip(corpus, docs, strict=True) if matches(s.query, d)]
        assert [p.arxiv_id for p, _ in got.get(s.key, [])] == expected, s.query.text
        for paper, terms in got.get(s.key, []):
            doc = docs[corpus.index(paper)]
            assert list(terms) == matched_terms(s.query, doc), s.query.text


@given(corpus=corpora(max_size=10), texts=st.lists(queries(), min_size=1, max_size=6))
@settings(max_examples=60, deadline=None)
def test_one_paper_at_a_time_agrees_with_the_batch(corpus: list[Paper], texts: list[str]) -> None:
    standing = _standing(texts)
    matcher = Matcher(standing)
    for paper, doc in zip(corpus, docs_of(corpus), strict=True):
        one = {s.key for s in matcher.match(doc)}
        assert one == {s.key for s in standing if matches(s.query, doc)}, paper.title


_CHARS = st.sampled_from([*list("abcdeXYZ019 .,;:-()\"'*/_+=\n\t"), "ü", "é", "ß", "İ", "ﬁ", "日本", "’", "\x01"])


@given(texts=st.lists(st.one_of(st.lists(_CHARS, max_size=40).map("".join),
                                st.lists(st.sampled_from(WORDS), max_size=8).map(" ".join)), max_size=6))
@settings(max_examples=200, deadline=None)
def test_fast_tokenizer_gives_fts5_token_streams(texts: list[str]) -> None:
    tok = default_tokenizer()
    assert FastTokenizer(tok).tokenize_many(texts) == tok.tokenize_many(texts)


@given(words=st.lists(st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=14),
                     max_size=30))
@settings(max_examples=200, deadline=None)
def test_an_ascii_word_is_one_fts5_token_with_its_first_character(words: list[str]) -> None:
    # FastTokenizer.joined_many relies on both facts of unicode61 + Porter.
    tok = default_tokenizer()
    for word, stream, upper in zip(words, tok.tokenize_many(words), tok.tokenize_many([w.upper() for w in words]),
                                   strict=True):
        assert len(stream) == 1 and stream[0][:1] == word[:1] and upper == stream, (word, stream)


def test_first_characters_survive_porter_on_its_hardest_suffixes() -> None:
    words = [w + s for w in ("ies", "sses", "aed", "ated", "ying", "eed", "bl", "iz", "a", "e", "y", "s", "xs")
             for s in ("", "s", "ed", "ing", "ies", "ational", "ization", "ement", "ness", "e", "ly")]
    for word, stream in zip(words, default_tokenizer().tokenize_many(words), strict=True):
        assert len(stream) == 1 and stream[0][:1] == word[:1], (word, stream)


_MARKED = st.one_of(_CHARS, st.sampled_from(["\x00", "\x01"]))  # and the separator and the mark between texts


# Words whose stem ends in a letter the word does not have there (happy -> happi, rating -> rate).
_RESTEMMED = ["happy", "happily", "happiness", "rating", "rate", "rated", "mobility", "hoping", "hope", "spy",
              "spies", "sensibility", "sensible"]


@given(texts=st.lists(st.one_of(st.lists(_MARKED, max_size=40).map("".join),
                                st.lists(st.sampled_from(WORDS + _RESTEMMED), max_size=8).map(" ".join)), max_size=8),
       picks=st.lists(st.integers(min_value=0, max_value=10**6), max_size=3),
       odd=st.lists(st.text(alphabet="abcdexyz019", min_size=1, max_size=4), max_size=2),
       warm=st.integers(min_value=0, max_value=8), cut=st.integers(min_value=0, max_value=3))
@settings(max_examples=300, deadline=None)
def test_joined_streams_keep_every_token_that_can_match_a_query_token(texts: list[str], picks: list[int],
                                                                      odd: list[str], warm: int, cut: int) -> None:
    # The texts are tokenised together with a mark between them: a text holding the mark, or the separator,
    # or nothing, must still get its own stream, every token that equals or starts with a query token exact.
    tok = default_tokenizer()
    fast = FastTokenizer(tok)
    fast.tokenize_many(texts[:warm])  # some words known already, some not
    full = tok.tokenize_many(texts)
    everywhere = [t for stream in full for t in stream]
    wanted = [everywhere[i % len(everywhere)] for i in picks] if everywhere else []
    wanted = [t[: max(1, len(t) - cut)] for t in wanted] + odd  # prefixes of tokens too, and other strings
    joined = fast.joined_many(texts, wanted, "|")
    assert len(joined) == len(texts)
    for text, stream in zip(joined, full, strict=True):
        assert text.startswith("|") and text.endswith("|")
        sketch = text[1:-1].split("|") if len(text) > 1 else []
        assert len(sketch) == len(stream) or (not stream and sketch == [""]), (text, stream)
        for a, b in zip(sketch, stream, strict=False):
            assert a == b or (a == "" and not b.startswith(tuple(wanted))), (a, b, wanted)


_SUFFIXES = ["", "s", "es", "ies", "sses", "ed", "eed", "ing", "y", "ly", "ational", "tional", "enci", "anci",
             "izer", "abli", "alli", "entli", "eli", "ousli", "ization", "ation", "ator", "alism", "iveness",
             "fulness", "ousness", "aliti", "iviti", "biliti", "logi", "icate", "ative", "alize", "iciti", "ical",
             "ful", "ness", "al", "ance", "ence", "er", "ic", "able", "ible", "ant", "ement", "ment", "ent", "ion",
             "ou", "ism", "ate", "iti", "ous", "ive", "ize", "e", "ll", "bility", "ating", "izing", "lled"]


@given(stem=st.text(alphabet="aeiouybcdlmnrstzwx", max_size=7), first=st.sampled_from(_SUFFIXES),
       then=st.sampled_from(["", "s", "ed", "ing", "ly", "ness", "al", "e", "y"]))
@settings(max_examples=400, deadline=None)
def test_a_porter_stem_is_a_prefix_of_its_word_but_for_a_last_e_i_or_l(stem: str, first: str, then: str) -> None:
    # FastTokenizer.joined_many relies on it (y -> i, "rating" -> "rate", "mobility" -> "mobl"): every suffix
    # Porter's steps test, chained, on stems that trip its conditions. Also checked on 229k words once.
    word = stem + first + then
    if not word:
        return
    [token] = default_tokenizer().tokenize_many([word])[0]
    assert word.startswith(token) or (token[-1] in "eil" and word.startswith(token[:-1])), (word, token)


def test_a_reused_matcher_gives_the_same_answers() -> None:
    corpus = [Paper("2611.00001", "Graph neural networks", "We study diffusion."),
              Paper("2611.00002", "Quantum spin chains", "Nothing about graphs.", categories=("quant-ph",))]
    standing = _standing(["graph*", '"neural networks"', "cat:quant-ph spin", "diffusion -quantum"])
    matcher = Matcher(standing)
    first = match_papers(corpus, standing, matcher=matcher)
    assert match_papers(corpus, standing, matcher=matcher) == first == match_papers(corpus, standing)
    assert [p.arxiv_id for p, _ in first["s0"]] == ["2611.00001", "2611.00002"]
    assert [p.arxiv_id for p, _ in first["s2"]] == ["2611.00002"]
    assert first["s1"][0][1] == ('"neural networks"',)


@pytest.mark.parametrize("compiled", [False, True], ids=["python", "compiled"])
@given(batches=st.lists(corpora(max_size=15), min_size=2, max_size=4),
       texts=st.lists(queries(), min_size=1, max_size=10))
@settings(max_examples=80, deadline=None)
def test_one_matcher_over_many_batches_equals_the_reference(compiled: bool, batches: list[list[Paper]],
                                                            texts: list[str]) -> None:
    # The matcher learns, batch by batch, which words it can skip and which start a named prefix: a word
    # skipped in one batch must still be found in a later one, as the service reuses one matcher all day.
    standing = _standing(texts)
    matcher = Matcher(standing, compiled=compiled)
    for corpus in batches:
        got = match_papers(corpus, standing, matcher=matcher)
        docs = docs_of(corpus)
        for s in standing:
            expected = [(p.arxiv_id, matched_terms(s.query, d)) for p, d in zip(corpus, docs, strict=True)
                        if matches(s.query, d)]
            assert [(p.arxiv_id, list(t)) for p, t in got.get(s.key, ())] == expected, s.query.text


# ---------------------------------------------------------------- the compiled scan (bot/_scan.c)

# Words and single characters run together: "graph9", "Neural-networks", "DIFFUSION.", "Über" beside ASCII.
_TEXT = st.lists(st.one_of(st.sampled_from([*WORDS, "GRAPH", "Networks"]), _CHARS, st.just(" ")), max_size=30
                 ).map("".join)


@st.composite
def _raw_papers(draw: st.DrawFn) -> list[Paper]:
    n = draw(st.integers(min_value=1, max_value=70))  # past 64: the bitsets' second machine word
    return [Paper(f"2611.{i:05d}", draw(_TEXT), draw(_TEXT), authors=tuple(draw(st.lists(_TEXT, max_size=3))),
                  categories=("cs.LG",)) for i in range(n)]


@given(batches=st.lists(_raw_papers(), min_size=1, max_size=3), texts=st.lists(queries(), min_size=1, max_size=8))
@settings(max_examples=150, deadline=None)
def test_the_compiled_scan_gives_the_python_bitsets(batches: list[list[Paper]], texts: list[str]) -> None:
    # Any characters (punctuation, case, digits, non-ASCII papers next to ASCII ones, the mark joined_many uses):
    # the scan's bitsets are those the Python path computes from FTS5-exact token streams, batch after batch.
    standing = _standing(texts)
    python, compiled = Matcher(standing, compiled=False), Matcher(standing, compiled=True)
    for papers in batches:
        want, got = python.batch_of(papers), compiled.batch_of(papers)
        assert got.anyb == want.anyb
        assert got._column_bits == want._column_bits
        assert compiled._leaf_bits(got) == python._leaf_bits(want)
        assert match_papers(papers, standing, matcher=compiled) == match_papers(papers, standing, matcher=python)


def test_the_compiled_table_refuses_what_it_cannot_scan() -> None:
    assert matching.Table is not None
    table = matching.Table()
    table.add("graph", [0])
    table.add("the", [])
    assert table.unknown(["The GRAPH, the graphs"]) == {"graphs"}
    none = array("i")
    with pytest.raises(KeyError, match="graphs"):  # every word must be known before a scan
        table.scan(["the graphs", "", ""], ["graph"], 3, (0, 2), none, none)
    with pytest.raises(ValueError, match="ASCII"):  # such a paper goes the Python way
        table.unknown(["naïve"])
    for bad in ("Graph", "gr\x00aph", "graph-based"):
        with pytest.raises(ValueError, match="lower-case"):
            table.add(bad, [0])
    with pytest.raises(IndexError):  # an id with no stem to name it
        table.scan(["graph", "", ""], [], 3, (), none, none)
    bits, anyb, [title], met = table.scan(["the graph", "", "", "", "graph", ""], ["graph"], 3, (0,), none, none)
    assert bits == [0b11] and anyb == {"graph": 0b11} and title == {"graph": 0b01} and met == []
    table.add("neural", [1])
    table.add("spin", [2])
    texts = ["neural graph", "", "", "graph", "spin", "", "spin", "", "neural"]
    *_, met = table.scan(texts, ["graph", "neural", "spin"], 3, (), array("i", [0, 0, 1, 2]), array("i", [1, 2, 2, 2]))
    assert met == [0, 1, 2, 3]  # graph & neural in paper 0, graph & spin in 1, neural & spin in 2, spin alone
    *_, met = table.scan(texts[:6], ["graph", "neural", "spin"], 3, (), array("i", [1, 0]), array("i", [2, 1]))
    assert met == [1]
    with pytest.raises(ValueError, match="one length"):
        table.scan(texts, ["graph", "neural", "spin"], 3, (), array("i", [0]), none)


def test_compiled_answers_refuse_what_is_not_a_batch_of_hits() -> None:
    assert matching.answers is not None
    paper = Paper("2611.00001", "Graph", "")
    groups = {0: [(("graph",), (0,), ["s0", "dup0"])]}
    got = matching.answers([(0, 0b1)], groups, lambda pid: [], set(), [paper], [0b1])
    assert got == [("s0", ((paper, ("graph",)),)), ("dup0", ((paper, ("graph",)),))]
    with pytest.raises(TypeError, match="a hit is"):
        matching.answers([(0,)], groups, lambda pid: [], set(), [paper], [0b1])
    with pytest.raises(OverflowError):  # a bit past the last paper
        matching.answers([(0, 0b10 << 64)], groups, lambda pid: [], set(), [paper], [0b1])
    with pytest.raises(TypeError, match="a group is"):
        matching.answers([(1, 0b1)], groups, lambda pid: [("graph", (0,), [])], set(), [paper], [0b1])


def test_a_huge_word_is_a_word_like_any_other() -> None:
    # (Queries are short; a paper's text need not be.)
    papers = [Paper("2611.00001", "Graph " + "x" * 200_000, "networks " + "Q" * 70_000 + " diffusion")]
    standing = _standing(["graph", "diffusion -networks", "networks"])
    python, compiled = Matcher(standing, compiled=False), Matcher(standing, compiled=True)
    got = match_papers(papers, standing, matcher=compiled)
    assert got == match_papers(papers, standing, matcher=python)
    assert sorted(k for k, _ in got.pairs()) == ["dup0", "dup2", "s0", "s2"]


def test_a_matcher_starts_a_new_table_for_another_tokenizer_or_when_full(monkeypatch: pytest.MonkeyPatch) -> None:
    papers = [Paper("2611.00001", "Graph neural networks", "We study diffusion.")]
    standing = _standing(["graph", "diffusion"])
    matcher = Matcher(standing, compiled=True)
    match_papers(papers, standing, matcher=matcher)
    first = matcher._table
    assert first is not None and len(first) == 6  # graph neural networks we study diffusion
    match_papers(papers, standing, matcher=matcher)
    assert matcher._table is first
    other = Tokenizer()
    match_papers(papers, standing, matcher=matcher, tokenizer=other)  # stems are a tokenizer's
    second = matcher._table
    assert second is not first
    monkeypatch.setattr(matching, "_TABLE_MAX", 3)
    got = match_papers(papers, standing, matcher=matcher, tokenizer=other)
    assert matcher._table is not second and sorted(k for k, _ in got.pairs()) == ["dup0", "dup1", "s0", "s1"]

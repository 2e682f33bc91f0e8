"""Random corpora and random queries from the whole grammar, shared by the scale property tests."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from hypothesis import strategies as st

from bot.models import Paper

TODAY = date(2026, 11, 24)
# Words sharing prefixes and stems, so prefixes, stemming and phrases all get exercised.
WORDS = ["graph", "graphs", "graphical", "neural", "network", "networks", "diffusion", "diffuse", "model",
         "models", "modelling", "transformer", "transform", "learning", "learn", "quantum", "spin", "spins",
         "the", "of", "a", "flow", "flows", "sampling", "sample", "attention", "Über", "naïve",
         "agreed", "agree", "universal", "university"]  # Porter is not idempotent on agre, univers
AUTHORS = ["Ada Lovelace", "Alan Turing", "Grace Hopper", "Lovelace Graph", "Emmy Noether"]
CATS = ["cs.LG", "cs.CV", "math.PR", "quant-ph", "hep-th"]
DAYS = [TODAY - timedelta(days=d) for d in (0, 3, 30, 400)]

text = st.lists(st.sampled_from(WORDS), min_size=0, max_size=12).map(" ".join)


@st.composite
def papers(draw: st.DrawFn, i: int) -> Paper:
    day = draw(st.sampled_from(DAYS))
    return Paper(
        arxiv_id=f"2611.{i:05d}",
        title=draw(text) or "untitled",
        abstract=draw(text),
        authors=tuple(draw(st.lists(st.sampled_from(AUTHORS), min_size=0, max_size=3, unique=True))),
        categories=tuple(draw(st.lists(st.sampled_from(CATS), min_size=1, max_size=2, unique=True))),
        submitted=datetime(day.year, day.month, day.day, 12, tzinfo=UTC),
        source="snapshot",
    )


@st.composite
def corpora(draw: st.DrawFn, max_size: int = 25) -> list[Paper]:
    n = draw(st.integers(min_value=1, max_value=max_size))
    return [draw(papers(i)) for i in range(n)]


def _prefix(word: str) -> str:
    return word[: max(2, len(word) - 3)] + "*"


atom = st.one_of(
    st.sampled_from(WORDS),
    st.sampled_from(WORDS).map(_prefix),
    st.lists(st.sampled_from(WORDS), min_size=2, max_size=3).map(lambda ws: '"' + " ".join(ws) + '"'),
    st.lists(st.sampled_from(WORDS), min_size=2, max_size=2).map(lambda ws: '"' + " ".join(ws) + '"*'),
    st.tuples(st.sampled_from(["ti:", "abs:", "au:"]), st.sampled_from([*WORDS, "Turing", "Lovelace"]),
              st.booleans()).map(lambda t: t[0] + (_prefix(t[1]) if t[2] else t[1])),
    st.sampled_from([*CATS, "cs", "math"]).map(lambda c: "cat:" + c),
)


@st.composite
def queries(draw: st.DrawFn) -> str:
    parts = [draw(atom)]
    for _ in range(draw(st.integers(min_value=0, max_value=3))):
        op = draw(st.sampled_from(["", "", "OR", "-", "NOT"]))
        nxt = draw(atom)
        if op in ("-", "NOT"):
            parts.append(("-" if op == "-" else "NOT ") + nxt)
        elif op == "OR":
            parts += ["OR", nxt]
        else:
            parts.append(nxt)
    q = " ".join(parts)
    if draw(st.booleans()):
        q = "(" + q + ")" + (" " + draw(atom) if draw(st.booleans()) else "")
    if draw(st.integers(min_value=0, max_value=4)) == 0:
        q += " since:" + draw(st.sampled_from(DAYS)).isoformat()
    return q

"""New papers x standing queries (subscriptions and channel rules), with search's exact semantics.

An inverted index keyed on one required token per query (or a category) prunes candidates; each candidate is then
verified with the reference matcher from bot.query, so a match here is a match in search and vice versa.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from bot.models import Paper
from bot.query import And, Category, Doc, Node, Not, Or, Query, Term, make_doc, matched_terms, matches
from bot.text import Tokenizer, authors_text, category_token, default_tokenizer


def doc_of(paper: Paper, tokenizer: Tokenizer | None = None) -> Doc:
    return make_doc(paper.title, paper.abstract, authors_text(paper.authors), paper.categories, paper.published,
                    tokenizer)


def docs_of(papers: Sequence[Paper], tokenizer: Tokenizer | None = None) -> list[Doc]:
    """Tokenise many papers in one pass (one round trip to the tokenizer for all texts)."""
    tok = tokenizer or default_tokenizer()
    texts: list[str] = []
    for p in papers:
        texts += [p.title, p.abstract, authors_text(p.authors)]
    streams = tok.tokenize_many(texts)
    out = []
    for i, p in enumerate(papers):
        cats: set[str] = set()
        for c in p.categories:
            cats.add(category_token(c))
            cats.add(category_token(c.split(".", 1)[0]))
        t, a, au = streams[3 * i : 3 * i + 3]
        out.append(Doc(tuple(t), tuple(a), tuple(au), frozenset(cats), p.published))
    return out


def _keys(node: Node) -> set[str] | None:
    """Index keys such that every matching doc contains at least one of them; None = cannot prune."""
    if isinstance(node, Term):
        return None if node.prefix and len(node.tokens) == 1 else {"t:" + node.tokens[0]}
    if isinstance(node, Category):
        return {"c:" + category_token(node.name)}
    if isinstance(node, Not):
        return None
    if isinstance(node, Or):
        acc: set[str] = set()
        for child in node.children:
            keys = _keys(child)
            if keys is None:
                return None
            acc |= keys
        return acc
    assert isinstance(node, And)
    best: set[str] | None = None
    for child in node.children:
        keys = _keys(child)
        if keys is not None and (best is None or len(keys) < len(best)):
            best = keys
    return best


def _doc_keys(doc: Doc) -> set[str]:
    keys = {"t:" + t for t in doc.title}
    keys.update("t:" + t for t in doc.abstract)
    keys.update("t:" + t for t in doc.authors)
    keys.update("c:" + c for c in doc.categories)
    return keys


@dataclass(frozen=True, slots=True)
class Standing:
    """A standing query with an owner-defined key (subscription id, channel key)."""

    key: str
    query: Query


class Matcher:
    def __init__(self, standing: Iterable[Standing]) -> None:
        self._by_key: dict[str, list[Standing]] = defaultdict(list)
        self._always: list[Standing] = []
        for s in standing:
            keys = _keys(s.query.root) if s.query.root is not None else None
            if keys is None:
                self._always.append(s)
            else:
                for k in keys:
                    self._by_key[k].append(s)

    def match(self, doc: Doc) -> list[Standing]:
        seen: dict[str, Standing] = {}
        for k in _doc_keys(doc):
            for s in self._by_key.get(k, ()):
                seen.setdefault(s.key, s)
        for s in self._always:
            seen.setdefault(s.key, s)
        return [s for s in seen.values() if matches(s.query, doc)]


def match_papers(papers: Sequence[Paper], standing: Sequence[Standing],
                 tokenizer: Tokenizer | None = None) -> dict[str, list[tuple[Paper, list[str]]]]:
    """standing key -> [(paper, matched terms)] for every paper that matches."""
    matcher = Matcher(standing)
    out: dict[str, list[tuple[Paper, list[str]]]] = defaultdict(list)
    for paper, doc in zip(papers, docs_of(papers, tokenizer), strict=True):
        for s in matcher.match(doc):
            out[s.key].append((paper, matched_terms(s.query, doc)))
    return dict(out)

"""New papers x standing queries (subscriptions and channel rules), with search's exact semantics.

Built for a million standing queries against a batch of a thousand papers:

- The batch, not each paper, is the unit. Every token, column token, category, phrase and prefix of the batch
  becomes a bitset over the batch's papers (a Python int), so one standing query is evaluated once for all
  papers with a handful of `&`, `|` and `~` on ints instead of once per paper.
- Standing queries are compiled once into small tuple plans over interned leaves; identical queries (common
  among many users) share one plan and are evaluated once.
- Plans are indexed by one key every match must contain (the rarest-looking required token, a category or a
  prefix); only plans whose key occurs in the batch are evaluated at all.

A leaf's bitset is computed with the reference semantics of bot.query (`term_matches` for phrases, the same
prefix and column rules), so a match here is a match in search and vice versa; the property tests check it.
"""

from __future__ import annotations

import bisect
import gc
import re
import weakref
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date

from bot.models import Paper
from bot.query import TEXT_COLUMNS, Category, Doc, Node, Not, Or, Query, Term
from bot.text import Tokenizer, authors_text, category_token, category_token_list, default_tokenizer

_ASCII_WORD = re.compile(r"[A-Za-z0-9]+")
_STEM_CACHE_MAX = 500_000


class FastTokenizer:
    """The same token streams as `Tokenizer.tokenize_many`, several times faster on ASCII text.

    For ASCII, FTS5's unicode61 splits exactly on runs of [A-Za-z0-9] and lower-cases, and Porter stems
    each token on its own; so a text is split here and each distinct word is stemmed once by FTS5 itself
    (batched, then cached). Any text with a non-ASCII character goes through FTS5 whole, so the streams are
    FTS5's by construction; a property test compares both on random text.
    """

    def __init__(self, tokenizer: Tokenizer) -> None:
        self.tok = tokenizer
        self.stems: dict[str, str] = {}  # ASCII word -> its one token
        self.odd: dict[str, tuple[str, ...]] = {}  # words FTS5 did not turn into exactly one token

    def tokenize_many(self, texts: Sequence[str]) -> list[list[str]]:
        out: list[list[str] | None] = [None] * len(texts)
        words_of: list[list[str] | None] = [None] * len(texts)
        slow: list[int] = []
        missing: set[str] = set()
        stems = self.stems
        odd = self.odd
        for i, text in enumerate(texts):
            if not text.isascii():
                slow.append(i)
                continue
            words = _ASCII_WORD.findall(text.lower())
            words_of[i] = words
            missing.update(w for w in words if w not in stems and w not in odd)
        if missing:
            if len(stems) + len(missing) > _STEM_CACHE_MAX:
                stems.clear()
                odd.clear()
            ordered = sorted(missing)
            for word, stream in zip(ordered, self.tok.tokenize_many(ordered), strict=True):
                if len(stream) == 1:
                    stems[word] = stream[0]
                else:
                    odd[word] = tuple(stream)
        if slow:
            for i, fts_stream in zip(slow, self.tok.tokenize_many([texts[i] for i in slow]), strict=True):
                out[i] = fts_stream
        for i, ws in enumerate(words_of):
            if ws is None:
                continue
            try:
                out[i] = [stems[w] for w in ws]
            except KeyError:
                acc: list[str] = []
                for w in ws:
                    hit = stems.get(w)
                    if hit is not None:
                        acc.append(hit)
                    else:
                        acc.extend(odd[w])
                out[i] = acc
        return [o if o is not None else [] for o in out]


_fast: weakref.WeakKeyDictionary[Tokenizer, FastTokenizer] = weakref.WeakKeyDictionary()


def fast_tokenizer(tokenizer: Tokenizer | None = None) -> FastTokenizer:
    """One FastTokenizer (and its stem cache) per Tokenizer: a cache, so sharing it is safe."""
    tok = tokenizer or default_tokenizer()
    fast = _fast.get(tok)
    if fast is None:
        fast = FastTokenizer(tok)
        _fast[tok] = fast
    return fast


def doc_of(paper: Paper, tokenizer: Tokenizer | None = None) -> Doc:
    return docs_of([paper], tokenizer)[0]


def docs_of(papers: Sequence[Paper], tokenizer: Tokenizer | None = None) -> list[Doc]:
    """Tokenise many papers in one pass (one round trip to the tokenizer for all new words)."""
    texts: list[str] = []
    for p in papers:
        texts += [p.title, p.abstract, authors_text(p.authors)]
    streams = fast_tokenizer(tokenizer).tokenize_many(texts)
    out = []
    for i, p in enumerate(papers):
        t, a, au = streams[3 * i : 3 * i + 3]
        out.append(Doc(tuple(t), tuple(a), tuple(au), frozenset(category_token_list(p.categories)), p.published))
    return out


@dataclass(frozen=True, slots=True)
class Standing:
    """A standing query with an owner-defined key (subscription id, channel key)."""

    key: str
    query: Query


# ---------------------------------------------------------------- plans
#
# Leaf keys (hashable, shared by every plan that uses the same leaf):
#   "tok"                               the token anywhere in title, abstract or authors
#   ("col", column, "tok")              the token in one column
#   ("phr", column|None, tokens, prefix) a phrase and/or prefix, verified with the reference rules
#   ("cat", "csxlg0")                   a category token
# Plans: ("leaf", key) | ("and", positives, negatives) | ("or", children) | ("since", date, plan) | ("all",)

Plan = tuple[object, ...]
LeafKey = object


def _leaf_key(node: Term | Category) -> LeafKey:
    if isinstance(node, Category):
        return ("cat", category_token(node.name))
    if len(node.tokens) == 1 and not node.prefix:
        return node.tokens[0] if node.column is None else ("col", node.column, node.tokens[0])
    return ("phr", node.column, node.tokens, node.prefix)


def _plan(node: Node) -> Plan:
    if isinstance(node, Term | Category):
        return ("leaf", _leaf_key(node))
    if isinstance(node, Not):
        # Only reachable under an And (parse() rejects other negations); kept total for safety.
        return ("and", (("all",),), (_plan(node.child),))
    if isinstance(node, Or):
        return ("or", tuple(_plan(c) for c in node.children))
    pos = tuple(_plan(c) for c in node.children if not isinstance(c, Not))
    neg = tuple(_plan(c.child) for c in node.children if isinstance(c, Not))
    return ("and", pos or (("all",),), neg)


def _query_plan(query: Query) -> Plan:
    plan: Plan = ("all",) if query.root is None else _plan(query.root)
    if query.since is not None:
        plan = ("since", query.since, plan)
    return plan


# Index keys: every match contains at least one of a plan's keys. ("tok", t) for any-column tokens (also required
# by column terms and phrases), ("cat", c), ("pre", p) for a prefix. None = cannot prune.
IndexKey = tuple[str, str]


def _index_keys(plan: Plan) -> set[IndexKey] | None:
    kind = plan[0]
    if kind == "leaf":
        key = plan[1]
        if isinstance(key, str):
            return {("tok", key)}
        assert isinstance(key, tuple)
        if key[0] == "col":
            return {("tok", key[2])}
        if key[0] == "cat":
            return {("cat", key[1])}
        tokens: tuple[str, ...] = key[2]
        full = tokens[:-1] if key[3] else tokens
        if full:
            return {("tok", max(full, key=len))}  # longer words are rarer: a cheap guess at selectivity
        return {("pre", tokens[-1])}
    if kind == "or":
        acc: set[IndexKey] = set()
        for child in plan[1]:  # type: ignore[attr-defined]
            keys = _index_keys(child)
            if keys is None:
                return None
            acc |= keys
        return acc
    if kind == "and":
        best: set[IndexKey] | None = None
        for child in plan[1]:  # type: ignore[attr-defined]
            keys = _index_keys(child)
            if keys is not None and (best is None or _cost(keys) < _cost(best)):
                best = keys
        return best
    if kind == "since":
        return _index_keys(plan[2])  # type: ignore[arg-type]
    if kind == "toks":
        words: tuple[str, ...] = plan[1]  # type: ignore[assignment]
        return {("tok", max(words, key=len))}
    return None


def _cost(keys: set[IndexKey]) -> tuple[int, int]:
    return (len(keys), -min(len(k[1]) for k in keys))


# ---------------------------------------------------------------- the batch


class Batch:
    """Bitsets over a batch of docs: bit i is doc i. Leaves are computed on first use and cached."""

    def __init__(self, docs: Sequence[Doc]) -> None:
        self.docs = docs
        self.n = len(docs)
        self.full = (1 << self.n) - 1
        anyb: dict[object, int] = {}
        cols: dict[str, dict[str, int]] = {c: {} for c in TEXT_COLUMNS}
        cats: dict[str, int] = {}
        for i, d in enumerate(docs):
            bit = 1 << i
            for name, stream in (("title", d.title), ("abstract", d.abstract), ("authors", d.authors)):
                col = cols[name]
                for t in set(stream):
                    col[t] = col.get(t, 0) | bit
            for c in d.categories:
                cats[c] = cats.get(c, 0) | bit
        for col in cols.values():
            for t, b in col.items():
                anyb[t] = anyb.get(t, 0) | b
        self.cols = cols
        self.cats = cats
        self.tokens = sorted(k for k in anyb if isinstance(k, str))
        self.bits: dict[object, int] = anyb  # leaf key -> bitset; any-column tokens are precomputed
        self._since: dict[date, int] = {}

    def leaf(self, key: LeafKey) -> int:
        b = self.bits.get(key)
        if b is not None:
            return b
        if isinstance(key, str):
            b = 0
        else:
            assert isinstance(key, tuple)
            if key[0] == "col":
                b = self.cols[key[1]].get(key[2], 0)
            elif key[0] == "cat":
                b = self.cats.get(key[1], 0)
            else:
                b = self._phrase(key[1], key[2], key[3])
        self.bits[key] = b
        return b

    def _prefix_bits(self, column: str | None, prefix: str) -> int:
        source = self.cols[column] if column else self.bits
        b = 0
        i = bisect.bisect_left(self.tokens, prefix)
        while i < len(self.tokens) and self.tokens[i].startswith(prefix):
            b |= source.get(self.tokens[i], 0)
            i += 1
        return b

    def _phrase(self, column: str | None, tokens: tuple[str, ...], prefix: bool) -> int:
        source = self.cols[column] if column else self.bits
        cand = self.full
        for t in tokens[:-1] if prefix else tokens:
            cand &= source.get(t, 0)
            if not cand:
                return 0
        if prefix:
            cand &= self._prefix_bits(column, tokens[-1])
        if len(tokens) == 1 or not cand:
            return cand  # one word (a prefix): presence is the whole test
        term = Term(raw="", tokens=tokens, column=column, prefix=prefix)
        from bot.query import term_matches

        out = 0
        while cand:
            low = cand & -cand
            if term_matches(term, self.docs[low.bit_length() - 1]):
                out |= low
            cand ^= low
        return out

    def since(self, day: date) -> int:
        b = self._since.get(day)
        if b is None:
            b = 0
            for i, d in enumerate(self.docs):
                if d.day is not None and d.day >= day:
                    b |= 1 << i
            self._since[day] = b
        return b

    def present(self, key: IndexKey) -> bool:
        kind, value = key
        if kind == "tok":
            return value in self.bits and self.bits[value] != 0
        if kind == "cat":
            return value in self.cats
        i = bisect.bisect_left(self.tokens, value)
        return i < len(self.tokens) and self.tokens[i].startswith(value)

    def eval(self, plan: Plan) -> int:
        kind = plan[0]
        if kind == "toks":
            acc = self.full
            get = self.bits.get
            for t in plan[1]:  # type: ignore[attr-defined]
                acc &= get(t, 0)
                if not acc:
                    return 0
            return acc
        if kind == "leaf":
            return self.leaf(plan[1])
        if kind == "and":
            acc = self.full
            for child in plan[1]:  # type: ignore[attr-defined]
                acc &= self.eval(child)
                if not acc:
                    return 0
            for child in plan[2]:  # type: ignore[attr-defined]
                acc &= ~self.eval(child)
                if not acc:
                    return 0
            return acc
        if kind == "or":
            acc = 0
            for child in plan[1]:  # type: ignore[attr-defined]
                acc |= self.eval(child)
            return acc
        if kind == "since":
            s = self.since(plan[1])  # type: ignore[arg-type]
            return self.eval(plan[2]) & s if s else 0  # type: ignore[arg-type]
        return self.full


# ---------------------------------------------------------------- the matcher


class Matcher:
    """Standing queries compiled once; `match_batch` evaluates them against many docs at a time.

    Build one per process and keep it while the standing queries do not change: compiling is the costly part.
    """

    def __init__(self, standing: Iterable[Standing]) -> None:
        was_enabled = gc.isenabled()
        gc.disable()  # compiling allocates a million small tuples that all stay alive: nothing to collect
        try:
            self._compile(standing)
        finally:
            if was_enabled:
                gc.enable()

    def _compile(self, standing: Iterable[Standing]) -> None:
        self.standing: list[Standing] = []
        self._plans: list[Plan] = []  # distinct plans
        self._owners: list[list[int]] = []  # plan index -> standing indexes
        self._leaves: dict[int, list[tuple[str, LeafKey]]] = {}  # standing index -> (described, key), lazily
        plan_ids: dict[Plan, int] = {}
        by_key: dict[IndexKey, list[int]] = defaultdict(list)
        simple: dict[str, list[int]] = defaultdict(list)
        self._always: list[int] = []
        for s in standing:
            si = len(self.standing)
            self.standing.append(s)
            plan = _flatten(_query_plan(s.query))
            pid = plan_ids.get(plan)
            if pid is None:
                pid = len(self._plans)
                plan_ids[plan] = pid
                self._plans.append(plan)
                self._owners.append([])
                if plan[0] == "leaf" and isinstance(plan[1], str):
                    simple[plan[1]].append(pid)  # one word anywhere: its bitset is the answer, no evaluation
                else:
                    keys = _index_keys(plan)
                    if keys is None:
                        self._always.append(pid)
                    else:
                        for k in keys:
                            by_key[k].append(pid)
            self._owners[pid].append(si)
        self._simple = dict(simple)
        self._tok_keys = {k[1]: v for k, v in by_key.items() if k[0] == "tok"}
        self._other_keys = [(k, v) for k, v in by_key.items() if k[0] != "tok"]

    def match_batch(self, docs: Sequence[Doc]) -> list[tuple[Standing, int]]:
        """(standing query, bitset of the docs it matches) for every standing query matching at least one."""
        if not docs:
            return []
        return [(self.standing[si], b) for si, b in self._run(Batch(docs))]

    def _run(self, batch: Batch) -> list[tuple[int, int]]:
        plans = self._plans
        seen = bytearray(len(plans))
        hits: list[tuple[int, int]] = []
        tok_keys = self._tok_keys
        simple = self._simple
        bits = batch.bits
        evaluate = batch.eval
        for t in batch.tokens:
            pids = simple.get(t)
            if pids is not None:
                b = bits[t]
                hits.extend([(pid, b) for pid in pids])
            pids = tok_keys.get(t)
            if pids is None:
                continue
            for pid in pids:
                if seen[pid]:
                    continue
                seen[pid] = 1
                b = evaluate(plans[pid])
                if b:
                    hits.append((pid, b))
        for key, pids in self._other_keys:
            if not batch.present(key):
                continue
            for pid in pids:
                if not seen[pid]:
                    seen[pid] = 1
                    b = evaluate(plans[pid])
                    if b:
                        hits.append((pid, b))
        for pid in self._always:
            if not seen[pid]:
                seen[pid] = 1
                b = evaluate(plans[pid])
                if b:
                    hits.append((pid, b))
        owners = self._owners
        return [(si, b) for pid, b in hits for si in owners[pid]]

    def leaves(self, si: int) -> list[tuple[str, LeafKey]]:
        """The positive leaves of standing query `si`, described for users, with their bitset keys."""
        got = self._leaves.get(si)
        if got is None:
            got = [(leaf.describe(), _leaf_key(leaf)) for leaf in self.standing[si].query.terms()]
            self._leaves[si] = got
        return got

    def match(self, doc: Doc) -> list[Standing]:
        return [s for s, _ in self.match_batch([doc])]


def _flatten(plan: Plan) -> Plan:
    """An AND of plain words without exclusions, the commonest alert, as one flat ("toks", words) node."""
    if plan[0] == "and" and not plan[2]:
        children = plan[1]
        assert isinstance(children, tuple)
        if all(c[0] == "leaf" and isinstance(c[1], str) for c in children):
            return ("toks", tuple(c[1] for c in children))
    return plan


def _bits(b: int) -> list[int]:
    out = []
    while b:
        low = b & -b
        out.append(low.bit_length() - 1)
        b ^= low
    return out


def match_papers(papers: Sequence[Paper], standing: Sequence[Standing],
                 tokenizer: Tokenizer | None = None,
                 matcher: Matcher | None = None) -> dict[str, list[tuple[Paper, list[str]]]]:
    """standing key -> [(paper, matched terms)] for every paper that matches, in paper order.

    Pass a `matcher` built once from the same `standing` to skip compiling them again for every batch.
    """
    m = matcher if matcher is not None else Matcher(standing)
    if not papers:
        return {}
    # A batch allocates many short-lived ints and tuples while a million compiled queries sit in memory: the
    # cyclic collector would rescan those over and over (half the time, measured). Nothing here makes cycles.
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        return _match(papers, m, tokenizer)
    finally:
        if was_enabled:
            gc.enable()


def _match(papers: Sequence[Paper], m: Matcher, tokenizer: Tokenizer | None
           ) -> dict[str, list[tuple[Paper, list[str]]]]:
    batch = Batch(docs_of(papers, tokenizer))
    out: dict[str, list[tuple[Paper, list[str]]]] = {}
    for si, b in m._run(batch):
        # What matched, per paper: the positive leaves whose (cached) bitset has the paper's bit, which is
        # bot.query.matched_terms computed once per leaf for the whole batch instead of once per pair.
        leaves = m.leaves(si)
        key = m.standing[si].key
        if len(leaves) == 1:  # the only positive leaf of a matching query always matched
            text = leaves[0][0]
            out[key] = [(papers[i], [text]) for i in _bits(b)]
            continue
        marked = [(text, batch.leaf(k)) for text, k in leaves]
        out[key] = [(papers[i], [text for text, lb in marked if lb >> i & 1]) for i in _bits(b)]
    return out

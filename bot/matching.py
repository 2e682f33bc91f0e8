"""New papers x standing queries (subscriptions and channel rules), with search's exact semantics.

Built for a million standing queries against a batch of a thousand papers, in pure Python, where the cost is
Python steps and scattered memory reads per standing query:

- The batch, not each paper, is the unit. Every word some standing query names (or that starts with one of
  their prefixes) becomes a bitset over the batch's papers (a Python int); so do title and author words,
  categories, dates, and phrases (checked against positions only where all their words occur).
- Standing queries are compiled once into ORs of conjunctions of leaves; identical ones share one plan. Plans
  are grouped by shape (how many positive and negative leaves) into machine-int arrays of leaf ids, and each
  shape is evaluated by one list comprehension that stops at the first empty leaf (see _eval_shape).
- Standing queries with one plan that describe their terms alike share one immutable answer (Matches).

A leaf's bitset is computed with the reference semantics of bot.query (`term_matches` for phrases, the same
prefix and column rules), so a match here is a match in search and vice versa; the property tests check it.
"""

from __future__ import annotations

import bisect
import gc
import sys
import weakref
from array import array
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from itertools import chain, repeat
from typing import overload

from bot.models import Paper
from bot.query import Category, Doc, Node, Not, Or, Query, Term, term_matches
from bot.text import Tokenizer, authors_text, category_token, category_token_list, default_tokenizer

try:
    from bot._scan import Table, answers
except ImportError:  # not built (no C compiler when installed): the same work is done in Python, slower
    Table = None  # type: ignore[assignment,misc]  # the pure-Python path below checks for it
    answers = None  # type: ignore[assignment]  # see above

# ASCII: letters to lower case, digits kept, everything else to a blank (what unicode61 separates on).
_ASCII_FOLD = {c: (chr(c).lower() if chr(c).isalnum() else " ") for c in range(128)}
_STEM_CACHE_MAX = 500_000
_MARK = "\x01"  # between texts in joined_many, kept as a word of its own; a text holding it goes text by text
# One character to one: a longer replacement (" \x01 ") takes str.translate off its fast path, 6x slower.
_ASCII_MARKED = {**_ASCII_FOLD, ord(_MARK): _MARK}
_NOT_NEEDED_MAX = 2_000_000
_TABLE_MAX = 250_000  # raw words a compiled table holds before a Matcher starts a new one (20 MB at most)


class FastTokenizer:
    """The same token streams as `Tokenizer.tokenize_many`, several times faster on ASCII text.

    For ASCII, FTS5's unicode61 splits exactly on runs of [A-Za-z0-9] and lower-cases, and Porter stems
    each token on its own; so a text is split here and each distinct word is stemmed once by FTS5 itself
    (batched, then cached). Any text with a non-ASCII character goes through FTS5 whole, so the streams are
    FTS5's by construction; a property test compares both on random text.
    """

    def __init__(self, tokenizer: Tokenizer) -> None:
        self.tok = tokenizer
        # ASCII word -> its one token; and the mark between texts (joined_many) to itself, a "word" no text has
        self.stems: dict[str, str] = {_MARK: _MARK}
        self.odd: dict[str, tuple[str, ...]] = {}  # words FTS5 did not turn into exactly one token

    def tokenize_many(self, texts: Sequence[str]) -> list[list[str]]:
        out: list[list[str]] = [[] for _ in texts]
        slow: list[int] = []
        pending: list[tuple[int, list[str]]] = []
        stems, odd = self.stems, self.odd  # these dicts even if another thread starts new ones (see _learn)
        lookup = stems.__getitem__
        for i, text in enumerate(texts):
            if not text.isascii():
                slow.append(i)
                continue
            # One C-level pass lower-cases and blanks every non-alphanumeric character (= splitting on runs of
            # [A-Za-z0-9]); a warm cache then maps every word at C speed, and only a miss takes the slow path.
            words = text.translate(_ASCII_FOLD).split()
            try:
                out[i] = list(map(lookup, words))
            except KeyError:
                pending.append((i, words))
        if pending:
            one, many = self._learn({w for _, ws in pending for w in ws}.difference(stems).difference(odd))
            stems.update(one)
            odd.update(many)
            for i, words in pending:
                acc: list[str] = []
                for w in words:
                    hit = stems.get(w)
                    if hit is not None:
                        acc.append(hit)
                    else:
                        acc.extend(odd[w])
                out[i] = acc
        if slow:
            for i, fts_stream in zip(slow, self.tok.tokenize_many([texts[i] for i in slow]), strict=True):
                out[i] = fts_stream
        return out

    def joined_many(self, texts: Sequence[str], tokens: Collection[str], sep: str) -> list[str]:
        """For each text, `sep + sep.join(stream) + sep` of a token stream exact for every token that equals or
        starts with one of `tokens`; any other token may be left empty, in its place.

        Scoring a search's candidates against its words only needs the tokens that could equal them, and
        stemming a new word (through FTS5) is what costs. An ASCII word is one token, and Porter only rewrites
        a suffix: a stem is a prefix of its word but for its last character, and then only an e, i or l
        (y -> i in happi, rate for rating, mobl for mobility; tests/scale/test_matcher.py checks these facts on
        FTS5 itself). So a word can only stem to a token equal to or starting with `t` if it starts with `t`,
        or with `t` less a last e, i or l. Other words not stemmed yet stay empty, and every other token keeps
        its position. All the texts go through a few C-level passes together (fold, split, look up, join) with
        a mark between them: per text, those passes cost more than the work (400 titles and author lists:
        2-3 ms, measured).
        """
        if not texts:
            return []
        glue = f" {_MARK} "
        big = glue.join(texts)
        slow: list[int] = []
        if not big.isascii() or big.count(_MARK) != len(texts) - 1:  # then text by text: which ones
            slow = [i for i, t in enumerate(texts) if not t.isascii() or _MARK in t]
            skip = set(slow)
            big = glue.join("" if i in skip else t for i, t in enumerate(texts))
        folded = big.translate(_ASCII_MARKED)
        words = folded.split()
        stems = self.stems  # this dict even if another thread starts a new one (see _learn)
        got = list(map(stems.get, words, repeat("")))
        if "" in got:  # a word not stemmed yet: only those that could stem to a query token are stemmed now
            starts = {t[:-1] if len(t) > 1 and t[-1] in "eil" else t for t in tokens}
            wanted = _starting(folded, starts).difference(stems)
            one, many = self._learn(wanted)
            if many or (self.odd and not self.odd.keys().isdisjoint(words)):  # a word FTS5 makes no one token of
                return [joined_stream(s, sep) for s in self.tokenize_many(texts)]
            if one:
                stems.update(one)
                got = list(map(stems.get, words, repeat("")))
        out = (sep + sep.join(got) + sep).split(_MARK)
        if slow:
            for i, stream in zip(slow, self.tok.tokenize_many([texts[i] for i in slow]), strict=True):
                out[i] = joined_stream(stream, sep)
        return out

    def tokenize_words(self, words: Sequence[str]) -> list[list[str]]:
        """tokenize_many of texts that are mostly one lower-case ASCII word each (index terms): a lookup each
        instead of tokenize_many's passes per text, which cost more than the stemming for 600 terms."""
        stems, odd = self.stems, self.odd  # these dicts even if another thread starts new ones (see _learn)
        plain = [w.isascii() and w.isalnum() and w.lower() == w for w in words]
        missing = {w for w, ok in zip(words, plain, strict=True) if ok}.difference(stems).difference(odd)
        if missing:
            one, many = self._learn(missing)
            stems.update(one)
            odd.update(many)
        others = [w for w, ok in zip(words, plain, strict=True) if not ok]
        rest = iter(self.tokenize_many(others)) if others else iter(())
        return [([stems[w]] if w in stems else list(odd[w])) if ok else next(rest)
                for w, ok in zip(words, plain, strict=True)]

    def _learn(self, words: set[str]) -> tuple[dict[str, str], dict[str, tuple[str, ...]]]:
        """Stem words into the cache; returns them, those that are one token and the others.

        The caller passes the words its own dicts lack. A full cache is replaced by a new one rather than
        cleared, so a caller in another thread keeps whole the dicts it took before; it adds what this returns
        to them."""
        if not words:
            return {}, {}
        if len(self.stems) + len(words) > _STEM_CACHE_MAX:
            self.stems = {_MARK: _MARK}
            self.odd = {}
        ordered = sorted(words)
        # All the words as one text: FTS5 then tokenises them in one row, 4-5x faster than a row each (measured).
        # Each is an ASCII word, one token (tested), so the stream lines up with them; if it ever does not,
        # a row each says which word made what.
        joined = self.tok.tokenize_many([" ".join(ordered)])[0]
        lined_up = len(joined) == len(ordered)
        streams = [[t] for t in joined] if lined_up else self.tok.tokenize_many(ordered)
        one: dict[str, str] = {}
        many: dict[str, tuple[str, ...]] = {}
        for word, stream in zip(ordered, streams, strict=True):
            # Interned: every paper's copy of a word is then one string object, hashed once and compared by identity.
            if len(stream) == 1:
                one[word] = sys.intern(stream[0])
            else:
                many[word] = tuple(map(sys.intern, stream))
        self.stems.update(one)
        self.odd.update(many)
        return one, many


def _starting(folded: str, starts: Iterable[str]) -> set[str]:
    """The words of a folded text (runs of [a-z0-9] between blanks, marks standing alone) that start with one of
    `starts`. Every word follows a blank, so one C-level split finds them: testing each word not stemmed yet cost
    0.6 ms a search (a regular expression, 0.35), since words that cannot score are never stemmed."""
    out: set[str] = set()
    text = " " + folded
    for start in starts:
        if start:
            out.update(start + rest.partition(" ")[0] for rest in text.split(" " + start)[1:])
    return out


def joined_stream(stream: Sequence[str], sep: str) -> str:
    """A token stream as one string in which a phrase is a substring (storage.search_index.leaf_pattern)."""
    return sep + sep.join(stream) + sep


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
# Leaf keys (hashable, shared by every query that uses the same leaf):
#   "tok"                                the token anywhere in title, abstract or authors
#   ("col", column, "tok")               the token in one column
#   ("phr", column|None, tokens, prefix) a phrase and/or prefix, verified with the reference rules
#   ("cat", "csxlg0")                    a category token
#   ("since", date)                      papers dated on or after
#   ("all",)                             every paper
# Plans: ("leaf", key) | ("and", positives, negatives) | ("or", children) | ("since", date, plan) | ("all",)

Plan = tuple[object, ...]
LeafKey = object
ALL: LeafKey = ("all",)
MAX_ROWS = 16  # an OR plan flattens to at most this many conjunctions; larger ones are evaluated as trees

# A conjunction of leaves: (positives, negatives). Most standing queries are exactly one.
Conj = tuple[tuple[LeafKey, ...], tuple[LeafKey, ...]]


def _leaf_key(node: Term | Category) -> LeafKey:
    if isinstance(node, Category):
        return ("cat", category_token(node.name))
    tokens = node.tokens
    if len(tokens) == 1 and not node.prefix:
        return tokens[0] if node.column is None else ("col", node.column, tokens[0])
    return ("phr", node.column, tokens, node.prefix)


def _plan_leaves(plan: Plan) -> Iterator[LeafKey]:
    kind = plan[0]
    if kind == "leaf":
        yield plan[1]
    elif kind == "since":
        yield from _plan_leaves(plan[2])  # type: ignore[arg-type]  # plan tuples are heterogeneous by design
    elif kind in ("and", "or"):
        for group in plan[1:]:
            for child in group:  # type: ignore[attr-defined]  # see above
                yield from _plan_leaves(child)


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


def _node_rows(node: Node) -> list[Conj] | None:
    """The query as an OR of conjunctions of leaves, or None when that form would be large (then it is
    evaluated as a tree). NOT (a OR b) becomes NOT a AND NOT b; NOT of a conjunction stays a tree."""
    if isinstance(node, Term | Category):
        return [((_leaf_key(node),), ())]
    if isinstance(node, Not):
        return None
    if isinstance(node, Or):
        acc: list[Conj] = []
        for child in node.children:
            sub = _node_rows(child)
            if sub is None:
                return None
            acc += sub
        return acc if len(acc) <= MAX_ROWS else None
    rows: list[Conj] = [((), ())]
    negatives: list[LeafKey] = []
    for child in node.children:
        if isinstance(child, Not):
            sub = _node_rows(child.child)
            if sub is None or any(len(sp) != 1 or sn for sp, sn in sub):
                return None
            negatives += [sp[0] for sp, _ in sub]
            continue
        sub = _node_rows(child)
        if sub is None:
            return None
        rows = sub if len(rows) == 1 and not rows[0][0] else [(p + sp, n + sn) for p, n in rows for sp, sn in sub]
        if len(rows) > MAX_ROWS:
            return None
    if negatives:
        return [(p or (ALL,), n + tuple(negatives)) for p, n in rows]
    return [(p or (ALL,), n) for p, n in rows]


def _query_rows(query: Query) -> tuple[Conj, ...] | None:
    """A standing query as normalised conjunctions (the key identical queries share), or None for a tree."""
    rows = [((ALL,), ())] if query.root is None else _node_rows(query.root)
    if rows is None:
        return None
    if query.since is not None:
        day = ("since", query.since)
        rows = [((*p, day), n) for p, n in rows]
    if len(rows) == 1:
        p, n = rows[0]
        if len(p) == 1 and len(n) <= 1:
            return (rows[0],)
        return (_normal(p, n),)
    return tuple(dict.fromkeys(_normal(p, n) for p, n in rows))


def _selective_first(key: LeafKey) -> tuple[int, int]:
    """Positives are AND-ed left to right and stop at the first empty bitset: likely-empty leaves go first
    (phrases, then column words, then words, longer words being rarer; categories and dates match many)."""
    if isinstance(key, str):
        return (2, -len(key))
    assert isinstance(key, tuple)
    rank = {"phr": 0, "col": 1, "cat": 3, "since": 4, "all": 5}[key[0]]
    return (rank, -len(key[-1]) if key[0] == "col" else 0)


def _normal(pos: tuple[LeafKey, ...], neg: tuple[LeafKey, ...]) -> Conj:
    p = tuple(sorted(dict.fromkeys(pos), key=_selective_first))
    if len(p) > 1 and p[-1] == ALL:
        p = p[:-1]
    return p, tuple(dict.fromkeys(neg))


# ---------------------------------------------------------------- the batch


class Batch:
    """Bitsets over a batch of docs: bit i is doc i. Any-column tokens up front, other leaves on demand.

    `anyb` (token -> bitset) holds the tokens some leaf can ask about, `column_bits` the same per column for
    titles and author lists (short: they cost little up front and answer ti:/au: leaves at once); `word_bits`,
    when given, is the bitset of each of the matcher's word ids and `pairs_met` lists the matcher's two-word
    phrases whose words meet in some paper (bot._scan builds both with `anyb`)."""

    def __init__(self, docs: Sequence[Doc], anyb: dict[str, int], column_bits: dict[str, dict[str, int]],
                 cats: dict[str, int], days: Sequence[date | None], word_bits: list[int] | None = None,
                 pairs_met: list[int] | None = None) -> None:
        self.docs = docs
        self.n = len(docs)
        self.full = (1 << self.n) - 1
        self.anyb = anyb
        self.cats = cats
        self.word_bits = word_bits
        self.pairs_met = pairs_met
        self._column_bits = column_bits
        self._days = days
        self._sorted: list[str] | None = None
        self._column_sets: dict[tuple[int, str], frozenset[str]] = {}
        self._cache: dict[object, int] = {}
        self._since: dict[date, int] = {}

    @classmethod
    def of_docs(cls, docs: Sequence[Doc], needed: Callable[[set[str]], set[str]] | None = None) -> Batch:
        """`needed(words)` picks the words of the batch anyone will ask about (None: all of them); the rest get
        no bitset, which saves most of the work, since standing queries name topic words, not "the" or "model"."""
        anyb: dict[str, int] = {}
        get = anyb.get
        if needed is None:
            per_doc = [set(chain(d.title, d.abstract, d.authors)) for d in docs]
        else:
            keep = needed(set().union(*[s for d in docs for s in (d.title, d.abstract, d.authors)]))
            per_doc = [keep.intersection(chain(d.title, d.abstract, d.authors)) for d in docs]
        for i, words in enumerate(per_doc):
            bit = 1 << i
            for t in words:
                anyb[t] = get(t, 0) | bit
        column_bits: dict[str, dict[str, int]] = {}
        if needed is not None:
            for name in ("title", "authors"):
                cb: dict[str, int] = {}
                cget = cb.get
                for i, d in enumerate(docs):
                    bit = 1 << i
                    for t in keep.intersection(d.column(name)):
                        cb[t] = cget(t, 0) | bit
                column_bits[name] = cb
        return cls(docs, anyb, column_bits, _category_bits(d.categories for d in docs), [d.day for d in docs])

    def leaf(self, key: LeafKey) -> int:
        if isinstance(key, str):
            return self.anyb.get(key, 0)
        b = self._cache.get(key)
        if b is not None:
            return b
        assert isinstance(key, tuple)
        kind = key[0]
        if kind == "col":
            b = self.column_token(key[1], key[2])
        elif kind == "cat":
            b = self.cats.get(key[1], 0)
        elif kind == "since":
            b = self.since(key[1])
        elif kind == "all":
            b = self.full
        else:
            b = self._phrase(key[1], key[2], key[3])
        self._cache[key] = b
        return b

    def column_token(self, column: str, token: str) -> int:
        known = self._column_bits.get(column)
        if known is not None:
            return known.get(token, 0)
        cand = self.anyb.get(token, 0)
        out = 0
        sets = self._column_sets
        while cand:
            low = cand & -cand
            i = low.bit_length() - 1
            words = sets.get((i, column))
            if words is None:
                words = sets[(i, column)] = frozenset(self.docs[i].column(column))
            if token in words:
                out |= low
            cand ^= low
        return out

    def _prefix_bits(self, prefix: str) -> int:
        if self._sorted is None:
            self._sorted = sorted(self.anyb)
        tokens = self._sorted
        b = 0
        i = bisect.bisect_left(tokens, prefix)
        while i < len(tokens) and tokens[i].startswith(prefix):
            b |= self.anyb[tokens[i]]
            i += 1
        return b

    def _phrase(self, column: str | None, tokens: tuple[str, ...], prefix: bool) -> int:
        cand = self.full
        get = self.anyb.get
        for t in tokens[:-1] if prefix else tokens:
            cand &= get(t, 0)
            if not cand:
                return 0
        if prefix:
            cand &= self._prefix_bits(tokens[-1])
        if not cand or (len(tokens) == 1 and column is None):
            return cand  # one word (a prefix) in any column: presence is the whole test
        term = Term(raw="", tokens=tokens, column=column, prefix=prefix)
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
            for i, d in enumerate(self._days):
                if d is not None and d >= day:
                    b |= 1 << i
            self._since[day] = b
        return b

    def eval(self, plan: Plan) -> int:
        """A plan as a tree: for the few standing queries that do not flatten to conjunctions."""
        kind = plan[0]
        if kind == "leaf":
            return self.leaf(plan[1])
        if kind == "and":
            acc = self.full
            for child in plan[1]:  # type: ignore[attr-defined]  # plan tuples are heterogeneous by design
                acc &= self.eval(child)
                if not acc:
                    return 0
            for child in plan[2]:  # type: ignore[attr-defined]  # see above
                acc &= ~self.eval(child)
                if not acc:
                    return 0
            return acc
        if kind == "or":
            acc = 0
            for child in plan[1]:  # type: ignore[attr-defined]  # see above
                acc |= self.eval(child)
            return acc
        if kind == "since":
            s = self.since(plan[1])  # type: ignore[arg-type]  # see above
            return self.eval(plan[2]) & s if s else 0  # type: ignore[arg-type]  # see above
        return self.full


def _category_bits(per_doc: Iterable[Iterable[str]]) -> dict[str, int]:
    cats: dict[str, int] = {}
    for i, tokens in enumerate(per_doc):
        bit = 1 << i
        for c in tokens:
            cats[c] = cats.get(c, 0) | bit
    return cats


class _LazyDocs(Sequence[Doc]):
    """A batch's docs, each tokenised when first asked for: with the compiled scan, only the papers that a
    phrase or a column other than the title's and authors' must be checked on ever are (tens in a thousand)."""

    def __init__(self, papers: Sequence[Paper], tokenizer: Tokenizer | None) -> None:
        self._papers = papers
        self._tokenizer = tokenizer
        self._docs: dict[int, Doc] = {}

    def __len__(self) -> int:
        return len(self._papers)

    @overload
    def __getitem__(self, i: int) -> Doc: ...
    @overload
    def __getitem__(self, i: slice) -> Sequence[Doc]: ...
    def __getitem__(self, i: int | slice) -> Doc | Sequence[Doc]:
        if isinstance(i, slice):
            return [self[j] for j in range(len(self))[i]]
        doc = self._docs.get(i)
        if doc is None:
            doc = self._docs[i] = doc_of(self._papers[i], self._tokenizer)
        return doc


# ---------------------------------------------------------------- evaluating many conjunctions at once
#
# Conjunctions are grouped by shape (number of positive and negative leaves) into columns of leaf ids, and each
# shape is one list comprehension over `lb`, the batch's bitset per leaf id: about 0.1 µs per standing query,
# where walking a plan tree per query cost 3 µs. `(x := ...) and (x := x & ...)` stops at the first empty leaf.

Columns = list["array[int]"]  # [plan ids, leaf ids of positive 1..p, leaf ids of negative 1..n]


def _eval_shape(lb: list[int], shape: tuple[int, int], cols: Columns) -> list[tuple[int, int]]:
    pids = cols[0]
    if shape == (1, 0):
        return [(p, x) for p, a in zip(pids, cols[1], strict=True) if (x := lb[a])]
    if shape == (2, 0):
        return [(p, x) for p, a, b in zip(pids, cols[1], cols[2], strict=True) if (x := lb[a]) and (x := x & lb[b])]
    if shape == (3, 0):
        return [(p, x) for p, a, b, c in zip(pids, cols[1], cols[2], cols[3], strict=True)
                if (x := lb[a]) and (x := x & lb[b]) and (x := x & lb[c])]
    if shape == (1, 1):
        return [(p, x) for p, a, n in zip(pids, cols[1], cols[2], strict=True) if (x := lb[a]) and (x := x & ~lb[n])]
    if shape == (2, 1):
        return [(p, x) for p, a, b, n in zip(pids, cols[1], cols[2], cols[3], strict=True)
                if (x := lb[a]) and (x := x & lb[b]) and (x := x & ~lb[n])]
    npos = shape[0]
    out: list[tuple[int, int]] = []
    for r, pid in enumerate(pids):
        x = lb[cols[1][r]]
        for j in range(2, len(cols)):
            if not x:
                break
            x = x & lb[cols[j][r]] if j <= npos else x & ~lb[cols[j][r]]
        if x:
            out.append((pid, x))
    return out


# ---------------------------------------------------------------- the matcher


class Matcher:
    """Standing queries compiled once; `match_batch` evaluates them against many docs at a time.

    Build one per process and keep it while the standing queries do not change: compiling is the costly part.
    """

    def __init__(self, standing: Iterable[Standing], *, compiled: bool | None = None) -> None:
        """`compiled`: scan the papers' words with bot._scan (None: when it is built; False: in Python)."""
        if compiled and Table is None:
            raise RuntimeError("bot._scan is not built (install the package with a C compiler at hand)")
        was_enabled = gc.isenabled()
        gc.disable()  # compiling allocates a million small tuples that all stay alive: nothing to collect
        try:
            self._compile(standing)
        finally:
            if was_enabled:
                gc.enable()
        # Raw ASCII word -> the ids of the named words its tokens are (learnt batch by batch), and the tokenizer
        # whose stems those are.
        self._table = Table() if Table is not None and compiled is not False else None
        self._table_tok: FastTokenizer | None = None

    def _compile(self, standing: Iterable[Standing]) -> None:
        self.standing: list[Standing] = []
        self._owners: list[list[int]] = []  # plan index -> standing indexes
        self._trees: list[tuple[int, Plan]] = []  # plans evaluated as trees
        # plan -> [(matched-term texts, their leaf ids, keys of the standing queries describing them so)], lazily
        self._groups: dict[int, list[tuple[tuple[str, ...], tuple[int, ...], list[str]]]] = {}
        plan_ids: dict[object, int] = {}  # normalised conjunctions (or a tree plan) -> plan id
        flat: list[tuple[int, tuple[Conj, ...]]] = []
        keys: set[LeafKey] = set()
        for s in standing:
            si = len(self.standing)
            self.standing.append(s)
            rows = _query_rows(s.query)
            shared: object = rows if rows is not None else _query_plan(s.query)
            pid = plan_ids.get(shared)
            if pid is None:
                pid = len(self._owners)
                plan_ids[shared] = pid
                self._owners.append([])
                if rows is None:
                    plan = _query_plan(s.query)
                    self._trees.append((pid, plan))
                    keys.update(_plan_leaves(plan))
                else:
                    flat.append((pid, rows))
            self._owners[pid].append(si)
        keys.update(k for _, rows in flat for p, n in rows for k in (*p, *n))
        # Every word a leaf names, interned like the tokenizer's stems (dict lookups then compare identities);
        # a word's leaf id is its index here, so the batch's word bitsets are the first stretch of `lb`.
        prefixes: set[str] = set()
        named: set[str] = {k for k in keys if isinstance(k, str)}
        for k in keys:
            if isinstance(k, tuple) and k[0] == "col":
                named.add(k[2])
            elif isinstance(k, tuple) and k[0] == "phr":
                tokens: tuple[str, ...] = k[2]
                named.update(tokens[:-1] if k[3] else tokens)
                if k[3]:
                    prefixes.add(tokens[-1])
        words = sorted(map(sys.intern, named))
        word_id = {w: i for i, w in enumerate(words)}
        in_column = sorted(k for k in keys if isinstance(k, tuple) and k[0] == "col")
        pairs = sorted((k for k in keys if isinstance(k, tuple) and k[0] == "phr" and k[1] is None and not k[3]
                        and len(k[2]) == 2), key=lambda k: k[2])
        starts = sorted(k for k in keys if isinstance(k, tuple) and k[0] == "phr" and k[1] is None and k[3]
                        and len(k[2]) == 1)  # ("phr", None, (prefix,), True): a word starting so, anywhere
        placed = {*in_column, *pairs, *starts}
        rest = [k for k in keys if not isinstance(k, str) and k not in placed]
        self._leaf_id: dict[LeafKey, int] = {w: i for w, i in word_id.items()}
        # Word ids for the compiled scan: the named words', then those of words found to start with a named
        # prefix, numbered as found.
        self._stems: list[str] = list(words)
        self._stem_id: dict[str, int] = dict(word_id)
        for k in (*in_column, *pairs, *starts, *rest):
            self._leaf_id[k] = len(self._leaf_id)
        # Which of those prefixes each word starts with, for the words met so far (extended batch by batch).
        self._start_slot = {k[2][0]: j for j, k in enumerate(starts)}
        self._starts_of: dict[str, tuple[int, ...]] = {}
        self._start_lengths = sorted({len(p) for p in self._start_slot})
        for w in words:
            self._note_starts(w)
        self._words = words
        self._in_column: list[tuple[str, int]] = [(k[1], word_id[k[2]]) for k in in_column]  # ("col", column, w)
        self._pair_a = array("i", [word_id[k[2][0]] for k in pairs])  # ("phr", None, (a, b), False)
        self._pair_b = array("i", [word_id[k[2][1]] for k in pairs])
        self._pair_keys = pairs
        self._rest = rest
        # The words any leaf can ask a batch about, and the prefixes whose words are found batch by batch.
        self._vocab: set[str] = set(words)
        self._prefixes = prefixes
        self._prefix_lengths = sorted({len(p) for p in prefixes})
        self._not_needed: set[str] = set()
        self._shapes: dict[tuple[int, int], Columns] = {}  # plans that are one conjunction
        self._or_shapes: dict[tuple[int, int], Columns] = {}  # rows of plans that are several (OR-ed)
        leaf_id = self._leaf_id
        by_shape: dict[tuple[bool, int, int], list[tuple[int, ...]]] = {}
        # Plans that are not one conjunction: only there can a positive leaf have missed a matching paper.
        self._some_of: set[int] = {pid for pid, rows in flat if len(rows) > 1} | {pid for pid, _ in self._trees}
        for pid, rows in flat:
            single = len(rows) == 1
            for p, n in rows:
                by_shape.setdefault((single, len(p), len(n)), []).append(
                    (pid, *[leaf_id[k] for k in p], *[leaf_id[k] for k in n]))
        for (single, npos, nneg), shaped in by_shape.items():
            # In first-leaf order, the evaluation reads the leaf bitsets front to back: kinder to the CPU cache.
            shaped.sort(key=lambda r: r[1])
            target = self._shapes if single else self._or_shapes
            # Machine ints, not lists of int objects: walking them allocates fresh ints from a free list
            # instead of chasing a million scattered objects (about 2.5x faster at a million alerts, measured).
            target[(npos, nneg)] = [array("i", col) for col in zip(*shaped, strict=True)]

    @property
    def compiled(self) -> bool:
        """Whether this matcher uses bot._scan."""
        return self._table is not None

    def _needed(self, words: set[str]) -> set[str]:
        """The batch's words some leaf can ask about: named words, and words starting with a named prefix."""
        unknown = words.difference(self._vocab, self._not_needed)
        if unknown:
            if len(self._not_needed) > _NOT_NEEDED_MAX:
                self._not_needed.clear()
            for w in unknown:
                if not self._starts_named(w):
                    self._not_needed.add(w)
        return words & self._vocab

    def _starts_named(self, word: str) -> bool:
        """Whether a word not named starts with a named prefix; such a word joins the vocabulary."""
        prefixes = self._prefixes
        if any(word[:n] in prefixes for n in self._prefix_lengths if n <= len(word)):
            self._vocab.add(word)
            self._note_starts(word)
            return True
        return False

    def _word_id(self, token: str) -> int | None:
        """The id of a token some leaf can ask about (numbered when first met), or None."""
        i = self._stem_id.get(token)
        if i is None and (token in self._vocab or self._starts_named(token)):
            i = self._stem_id[token] = len(self._stems)
            self._stems.append(token)
        return i

    def batch(self, docs: Sequence[Doc]) -> Batch:
        return Batch.of_docs(docs, self._needed)

    def batch_of(self, papers: Sequence[Paper], tokenizer: Tokenizer | None = None) -> Batch:
        """The batch of these papers: their words scanned by bot._scan when built, else `batch(docs_of(...))`.

        The scan needs no token streams: a paper is tokenised only if a phrase, or a column other than the
        title and the author list, must be checked on it (_LazyDocs); a paper with a non-ASCII text goes the
        Python way (FTS5 tokenises it) and joins the bitsets after the scan."""
        if self._table is None:
            return self.batch(docs_of(papers, tokenizer))
        fast = fast_tokenizer(tokenizer)
        if self._table_tok is not fast or len(self._table) > _TABLE_MAX:
            self._table = Table()  # raw words stem by a tokenizer: another one starts another table
            self._table_tok = fast
        texts: list[str] = []
        slow: list[int] = []
        for i, p in enumerate(papers):
            title, abstract, authors = p.title, p.abstract, authors_text(p.authors)
            if title.isascii() and abstract.isascii() and authors.isascii():
                texts += (title, abstract, authors)
            else:
                texts += ("", "", "")
                slow.append(i)
        table = self._table
        unknown = table.unknown(texts)
        if unknown:
            words = sorted(unknown)
            for word, tokens in zip(words, fast.tokenize_words(words), strict=True):
                table.add(word, [w for t in tokens if (w := self._word_id(t)) is not None])
        word_bits, anyb, (title_bits, author_bits), met = table.scan(texts, self._stems, 3, (0, 2), self._pair_a,
                                                                     self._pair_b)
        docs = _LazyDocs(papers, tokenizer)
        column_bits = {"title": title_bits, "authors": author_bits}
        for i in slow:
            d, bit = docs[i], 1 << i
            keep = self._needed(set(chain(d.title, d.abstract, d.authors)))
            for t in keep:
                anyb[t] = anyb.get(t, 0) | bit
                if (j := self._stem_id.get(t)) is not None:
                    word_bits[j] |= bit
            for name, cb in column_bits.items():
                for t in keep.intersection(d.column(name)):
                    cb[t] = cb.get(t, 0) | bit
        return Batch(docs, anyb, column_bits, _category_bits(category_token_list(p.categories) for p in papers),
                     [p.published for p in papers], word_bits, None if slow else met)

    def _leaf_bits(self, batch: Batch) -> list[int]:
        """Every leaf's bitset for this batch, by leaf id."""
        if batch.word_bits is not None:
            lb = batch.word_bits[: len(self._words)]
        else:
            get = batch.anyb.get
            lb = [get(w, 0) for w in self._words]
        column_token = batch.column_token
        words = self._words
        lb += [column_token(c, words[w]) if lb[w] else 0 for c, w in self._in_column]
        # A two-word phrase can only be where both words are: most are nowhere, and the rest need a look.
        keys = self._pair_keys
        leaf = batch.leaf
        if batch.pairs_met is not None:
            pair_bits = [0] * len(keys)
            for j in batch.pairs_met:
                pair_bits[j] = leaf(keys[j])
            lb += pair_bits
        else:
            lb += [leaf(keys[j]) if (x := lb[a]) and x & lb[b] else 0
                   for j, a, b in zip(range(len(keys)), self._pair_a, self._pair_b, strict=True)]
        # Prefix leaves: each batch word that starts with some named prefix adds its bitset to theirs.
        started = [0] * len(self._start_slot)
        anyb = batch.anyb
        starts_of = self._starts_of
        for w in anyb.keys() & starts_of.keys():
            x = anyb[w]
            for j in starts_of[w]:
                started[j] |= x
        lb += started
        lb += [leaf(k) for k in self._rest]
        return lb

    def _note_starts(self, word: str) -> None:
        slot = self._start_slot.get
        slots = tuple(j for n in self._start_lengths if n <= len(word) and (j := slot(word[:n])) is not None)
        if slots:
            self._starts_of[word] = slots

    def groups(self, pid: int) -> list[tuple[tuple[str, ...], tuple[int, ...], list[str]]]:
        """A plan's standing queries grouped by how they describe their positive leaves (their matched-term
        texts and leaf ids): one group, unless people typed the same words differently."""
        got = self._groups.get(pid)
        if got is None:
            by_text: dict[tuple[str, ...], tuple[tuple[str, ...], tuple[int, ...], list[str]]] = {}
            for si in self._owners[pid]:
                s = self.standing[si]
                leaves = s.query.terms()
                texts = tuple(leaf.describe() for leaf in leaves)
                group = by_text.get(texts)
                if group is None:
                    group = by_text[texts] = (texts, tuple(self._leaf_id[_leaf_key(leaf)] for leaf in leaves), [])
                group[2].append(s.key)
            got = self._groups[pid] = list(by_text.values())
        return got

    def match_batch(self, docs: Sequence[Doc]) -> list[tuple[Standing, int]]:
        """(standing query, bitset of the docs it matches) for every standing query matching at least one."""
        if not docs:
            return []
        hits, _ = self._run(self.batch(docs))
        return [(self.standing[si], b) for pid, b in hits for si in self._owners[pid]]

    def _run(self, batch: Batch) -> tuple[list[tuple[int, int]], list[int]]:
        """(plan id, bitset) for every plan matching at least one doc, and the leaves' bitsets."""
        lb = self._leaf_bits(batch)
        hits: list[tuple[int, int]] = []
        for shape, cols in self._shapes.items():
            hits += _eval_shape(lb, shape, cols)
        if self._or_shapes:
            merged: dict[int, int] = {}
            for shape, cols in self._or_shapes.items():
                for pid, b in _eval_shape(lb, shape, cols):
                    merged[pid] = merged.get(pid, 0) | b
            hits += merged.items()
        for pid, plan in self._trees:
            b = batch.eval(plan)
            if b:
                hits.append((pid, b))
        return hits, lb

    def match(self, doc: Doc) -> list[Standing]:
        return [s for s, _ in self.match_batch([doc])]


def _bits(b: int) -> list[int]:
    """The set bits of b, ascending (two big-int operations per bit, highest first, then reversed)."""
    out = []
    while b:
        i = b.bit_length() - 1
        out.append(i)
        b ^= 1 << i
    out.reverse()
    return out


Found = tuple[tuple[Paper, tuple[str, ...]], ...]  # (paper, matched terms), in paper order


class Matches(Mapping[str, Found]):
    """What one batch matched: standing key -> (paper, matched terms) for every paper it matches, in paper order.

    Held as a list of (key, answer), keys sharing one answer where their standing queries have one plan and
    describe their terms alike: `pairs()` walks it without building a dict of every matching key (a
    million-alert batch has 200k); the mapping interface builds that dict on first use.
    """

    __slots__ = ("_index", "_pairs")

    def __init__(self, pairs: list[tuple[str, Found]]) -> None:
        self._pairs = pairs
        self._index: dict[str, Found] | None = None

    def pairs(self) -> Iterator[tuple[str, Found]]:
        return iter(self._pairs)

    def _dict(self) -> dict[str, Found]:
        if self._index is None:
            self._index = dict(self.pairs())
        return self._index

    def __getitem__(self, key: str) -> Found:
        return self._dict()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._dict())

    def __len__(self) -> int:
        return len(self._dict())


def match_papers(papers: Sequence[Paper], standing: Sequence[Standing],
                 tokenizer: Tokenizer | None = None, matcher: Matcher | None = None) -> Matches:
    """standing key -> ((paper, matched terms), ...) for every paper that matches, in paper order (see Matches).

    Pass a `matcher` built once from the same `standing` to skip compiling them again for every batch.
    """
    m = matcher if matcher is not None else Matcher(standing)
    if not papers:
        return Matches([])
    # A batch allocates many short-lived ints and tuples while a million compiled queries sit in memory: the
    # cyclic collector would rescan those over and over (half the time, measured). Nothing here makes cycles.
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        return _match(papers, m, tokenizer)
    finally:
        if was_enabled:
            gc.enable()


def _match(papers: Sequence[Paper], m: Matcher, tokenizer: Tokenizer | None) -> Matches:
    hits, lb = m._run(m.batch_of(papers, tokenizer))
    if m.compiled:  # the loop below, compiled
        return Matches(answers(hits, m._groups, m.groups, m._some_of, list(papers), lb))
    out: list[tuple[str, Found]] = []
    all_groups, groups_of, some_of = m._groups, m.groups, m._some_of
    for pid, b in hits:
        where = [b.bit_length() - 1] if b.bit_count() == 1 else _bits(b)
        for texts, ids, keys in all_groups.get(pid) or groups_of(pid):
            # What matched, per paper: the positive leaves whose bitset has the paper's bit, which is
            # bot.query.matched_terms computed once per leaf for the whole batch instead of once per pair.
            # The answer is immutable, so every standing query of the group shares it.
            found: Found
            if len(ids) == 1 or pid not in some_of:
                # One conjunction matches a paper only where every positive leaf does (its positive leaves are
                # exactly the query's: see _node_rows), so all of them matched; and so did a lone leaf.
                found = ((papers[where[0]], texts),) if len(where) == 1 else tuple([(papers[i], texts) for i in where])
            else:
                found = tuple([(papers[i], tuple([t for t, j in zip(texts, ids, strict=True) if lb[j] >> i & 1]))
                               for i in where])
            out += zip(keys, repeat(found))
    return Matches(out)

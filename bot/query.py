"""The user query language: text -> a safe AST -> an FTS5 MATCH string, or a Python predicate.

Grammar (case-insensitive keywords):

    query  := or
    or     := and ("OR" and)*
    and    := unary (["AND"] unary)*
    unary  := ("-" | "NOT") unary | atom
    atom   := "(" or ")" | [field ":"] (WORD["*"] | "PHRASE"["*"])
    field  := ti | title | abs | abstract | au | author | cat | since

Raw user text never reaches SQLite: every word is re-emitted as a quoted FTS5 string, so `"`, `*`, `NEAR(`,
`'; DROP` and friends are just words. Anything we cannot express becomes a one-line `QueryError` message.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from bot.text import Tokenizer, category_token, category_token_list, default_tokenizer

MAX_QUERY_CHARS = 500
MAX_TERMS = 24

FIELDS = {
    "ti": "title",
    "title": "title",
    "abs": "abstract",
    "abstract": "abstract",
    "au": "authors",
    "author": "authors",
    "authors": "authors",
    "cat": "cat",
    "category": "cat",
    "since": "since",
}
TEXT_COLUMNS = ("title", "abstract", "authors")


class QueryError(ValueError):
    """A user mistake in a query; the message is shown to the user as is."""


@dataclass(frozen=True, slots=True)
class Term:
    """One word or a phrase (several tokens, consecutive), optionally limited to one column and/or a prefix."""

    raw: str
    tokens: tuple[str, ...]
    column: str | None = None  # title, abstract, authors; None = any of them
    prefix: bool = False

    def describe(self) -> str:
        text = f'"{self.raw}"' if len(self.tokens) > 1 else self.raw
        text += "*" if self.prefix else ""
        short = {"title": "ti", "abstract": "abs", "authors": "au"}
        return f"{short[self.column]}:{text}" if self.column else text


@dataclass(frozen=True, slots=True)
class Category:
    name: str  # as typed, e.g. cs.LG or cs (a whole archive)

    def describe(self) -> str:
        return f"cat:{self.name}"


@dataclass(frozen=True, slots=True)
class And:
    children: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Or:
    children: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Not:
    child: Node


Node = Term | Category | And | Or | Not


@dataclass(frozen=True, slots=True)
class Query:
    """A parsed query: a boolean tree (None when only filters were given) and a date filter."""

    text: str
    root: Node | None
    since: date | None = None
    notes: tuple[str, ...] = ()

    def terms(self) -> list[Term | Category]:
        """Positive leaves, for 'matched terms' in alerts."""
        out: list[Term | Category] = []

        def walk(node: Node, negated: bool) -> None:
            if isinstance(node, Term | Category):
                if not negated:
                    out.append(node)
            elif isinstance(node, Not):
                walk(node.child, not negated)
            else:
                for child in node.children:
                    walk(child, negated)

        if self.root is not None:
            walk(self.root, False)
        return out


# ---------------------------------------------------------------- lexing

_TOKEN = re.compile(r'\s*(?:(\()|(\))|"([^"]*)("?)(\*?)|([^\s()"]+))')


@dataclass(frozen=True, slots=True)
class _Lex:
    kind: str  # ( ) word phrase
    text: str
    prefix: bool = False


def _lex(text: str) -> list[_Lex]:
    out: list[_Lex] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            break
        pos = m.end()
        if m.group(1):
            out.append(_Lex("(", "("))
        elif m.group(2):
            out.append(_Lex(")", ")"))
        elif m.group(3) is not None:
            # An unclosed quote runs to the end of the text: the friendliest reading of a typo.
            out.append(_Lex("phrase", m.group(3), prefix=bool(m.group(5))))
        elif m.group(6):
            out.append(_Lex("word", m.group(6)))
    return out


# ---------------------------------------------------------------- parsing


class _Parser:
    def __init__(self, lexemes: list[_Lex], tokenizer: Tokenizer, today: date) -> None:
        self.lx = lexemes
        self.i = 0
        self.tok = tokenizer
        self.today = today
        self.since: date | None = None
        self.notes: list[str] = []
        self.leaves = 0
        self.depth = 0

    def peek(self) -> _Lex | None:
        return self.lx[self.i] if self.i < len(self.lx) else None

    def is_keyword(self, lex: _Lex | None, word: str) -> bool:
        return lex is not None and lex.kind == "word" and lex.text == word

    def parse(self) -> Node | None:
        node = self.parse_or()
        while self.peek() is not None:  # stray ')' : skip it and keep reading
            if self.peek() is not None and self.lx[self.i].kind == ")":
                self.notes.append("ignored an unmatched ')'")
                self.i += 1
            extra = self.parse_or()
            node = _and([n for n in (node, extra) if n is not None])
        return node

    def parse_or(self) -> Node | None:
        parts = [self.parse_and()]
        while self.is_keyword(self.peek(), "OR"):
            self.i += 1
            parts.append(self.parse_and())
        kept = [p for p in parts if p is not None]
        if not kept:
            return None
        return kept[0] if len(kept) == 1 else Or(tuple(kept))

    def parse_and(self) -> Node | None:
        parts: list[Node] = []
        while True:
            lex = self.peek()
            if lex is None or lex.kind == ")" or self.is_keyword(lex, "OR"):
                break
            if self.is_keyword(lex, "AND"):
                self.i += 1
                continue
            node = self.parse_unary()
            if node is not None:
                parts.append(node)
        return _and(parts)

    def parse_unary(self) -> Node | None:
        lex = self.peek()
        assert lex is not None
        if self.is_keyword(lex, "NOT"):
            self.i += 1
            if self.peek() is None:
                return None
            inner = self.parse_unary()
            return Not(inner) if inner is not None else None
        nxt = self.lx[self.i + 1] if self.i + 1 < len(self.lx) else None
        if lex.kind == "word" and lex.text == "-" and nxt is not None and nxt.kind in ("(", "phrase"):
            # The lexer splits `-(a OR b)` and `-"a phrase"` into a lone '-' and what it negates.
            self.i += 1
            inner = self.parse_unary()
            return Not(inner) if inner is not None else None
        if lex.kind == "word" and lex.text.startswith("-") and len(lex.text) > 1:
            self.lx[self.i] = _Lex("word", lex.text[1:])
            inner = self.parse_unary()
            return Not(inner) if inner is not None else None
        return self.parse_atom()

    def parse_atom(self) -> Node | None:
        lex = self.lx[self.i]
        self.i += 1
        if lex.kind == "(":
            self.depth += 1
            if self.depth > 10:
                raise QueryError("That query nests parentheses too deeply (10 levels at most).")
            node = self.parse_or()
            self.depth -= 1
            if self.peek() is not None and self.lx[self.i].kind == ")":
                self.i += 1
            else:
                self.notes.append("closed an unmatched '('")
            return node
        if lex.kind == "phrase":
            return self.leaf(lex.text, None, lex.prefix)
        text = lex.text
        field, sep, rest = text.partition(":")
        if sep and field.lower() in FIELDS:
            column = FIELDS[field.lower()]
            if not rest:
                nxt = self.peek()
                if nxt is not None and nxt.kind == "phrase":  # ti:"graph neural"
                    self.i += 1
                    if column not in TEXT_COLUMNS:  # cat:"cs.LG", since:"2026-01": a filter, not a text column
                        return self.field(column, nxt.text)
                    return self.leaf(nxt.text, column, nxt.prefix)
                raise QueryError(f"`{field}:` needs something after it, e.g. `{field}:{_example(column)}`.")
            return self.field(column, rest)
        prefix = text.endswith("*")
        return self.leaf(text.rstrip("*"), None, prefix)

    def field(self, column: str, value: str) -> Node | None:
        if column == "since":
            self.since = _parse_since(value, self.today)
            return None
        if column == "cat":
            cat = value.strip().rstrip("*")
            if not re.fullmatch(r"[A-Za-z][A-Za-z-]*(\.[A-Za-z-]{1,8})?", cat):
                raise QueryError(f"`cat:{value[:40]}` is not an arXiv category; try `cat:cs.LG` or `cat:math`.")
            self.count_leaf()
            return Category(cat)
        prefix = value.endswith("*")
        return self.leaf(value.rstrip("*"), column, prefix)

    def leaf(self, raw: str, column: str | None, prefix: bool) -> Node | None:
        tokens = self.tok.tokenize(raw) if raw.strip() else ()
        if not tokens:
            if raw.strip():
                self.notes.append(f"ignored '{raw[:30]}' (no letters or digits)")
            return None
        if prefix and len(tokens[-1]) < 2:
            raise QueryError(f"`{raw}*` is too short a prefix; give at least two letters.")
        self.count_leaf()
        return Term(raw=raw, tokens=tokens, column=column, prefix=prefix)

    def count_leaf(self) -> None:
        self.leaves += 1
        if self.leaves > MAX_TERMS:
            raise QueryError(f"That query has more than {MAX_TERMS} terms; please shorten it.")


def _example(column: str) -> str:
    return {"title": "transformer", "abstract": "diffusion", "authors": "hinton", "cat": "cs.LG",
            "since": "2026-01-01"}.get(column, "word")


def _and(parts: Sequence[Node | None]) -> Node | None:
    kept = [p for p in parts if p is not None]
    if not kept:
        return None
    return kept[0] if len(kept) == 1 else And(tuple(kept))


_REL_SINCE = re.compile(r"(\d{1,4})([dwmy])")


def _parse_since(value: str, today: date) -> date:
    v = value.strip().lower()
    m = _REL_SINCE.fullmatch(v)
    if m:
        n, unit = int(m.group(1)), m.group(2)
        days = n * {"d": 1, "w": 7, "m": 30, "y": 365}[unit]
        return today - timedelta(days=min(days, 365 * 100))
    for fmt in ("%Y-%m-%d", "%Y-%m", "%Y"):
        try:
            return datetime.strptime(v, fmt).date()
        except ValueError:
            continue
    raise QueryError(f"`since:{value[:30]}` is not a date; use since:2026-01-01, since:2026-01 or since:30d.")


def parse(text: str, *, today: date | None = None, tokenizer: Tokenizer | None = None) -> Query:
    """Parse user text. Raises QueryError (a user-facing message) and nothing else."""
    tok = tokenizer or default_tokenizer()
    today = today or date.today()
    cleaned = "".join(ch if ch.isprintable() else " " for ch in text).strip()
    if len(cleaned) > MAX_QUERY_CHARS:
        raise QueryError(f"That query is {len(cleaned)} characters; please keep it under {MAX_QUERY_CHARS}.")
    if not cleaned:
        raise QueryError('Give some words to look for, e.g. `graph neural network` or `"diffusion model" -survey`.')
    parser = _Parser(_lex(cleaned), tok, today)
    try:
        root = parser.parse()
    except RecursionError:  # defensive: depth is capped above, but never let a traceback out
        raise QueryError("That query is too deeply nested.") from None
    root = _simplify(root) if root is not None else None
    if root is None and parser.since is None:
        raise QueryError("Nothing to search for: the query has no words with letters or digits.")
    if root is not None:
        _check_negation(root)
    return Query(text=cleaned, root=root, since=parser.since, notes=tuple(dict.fromkeys(parser.notes)))


def _simplify(node: Node) -> Node:
    if isinstance(node, Not):
        inner = _simplify(node.child)
        return inner.child if isinstance(inner, Not) else Not(inner)
    if isinstance(node, And | Or):
        kind = type(node)
        flat: list[Node] = []
        for child in node.children:
            c = _simplify(child)
            if isinstance(c, kind):
                flat.extend(c.children)
            else:
                flat.append(c)
        return flat[0] if len(flat) == 1 else kind(tuple(flat))
    return node


def _check_negation(node: Node) -> None:
    """FTS5's NOT is binary ("a NOT b"): every NOT must sit in an AND beside something positive."""
    if isinstance(node, Not):
        raise QueryError("A query can't be only exclusions: add a word to look for, e.g. `diffusion -survey`.")
    if isinstance(node, Or):
        for child in node.children:
            if isinstance(child, Not):
                raise QueryError("`OR` with an exclusion can't be searched; write e.g. `(a OR b) -c` instead.")
            _check_negation(child)
    if isinstance(node, And):
        positives = [c for c in node.children if not isinstance(c, Not)]
        if not positives:
            raise QueryError("A query can't be only exclusions: add a word to look for, e.g. `diffusion -survey`.")
        for child in node.children:
            _check_negation(child.child if isinstance(child, Not) else child)


# ---------------------------------------------------------------- FTS5 compilation

def _quote(raw: str) -> str:
    return '"' + raw.replace('"', '""') + '"'


def to_fts(node: Node) -> str:
    """Compile to an FTS5 MATCH expression over columns title, abstract, authors, cats."""
    if isinstance(node, Term):
        cols = node.column or "title abstract authors"
        # The raw text, quoted: FTS5 re-tokenises it to exactly `node.tokens` (that is how they were made).
        # Stems are not fed back because Porter is not idempotent on every stem.
        return "{" + cols + "} : " + _quote(node.raw) + ("*" if node.prefix else "")
    if isinstance(node, Category):
        return "cats : " + _quote(category_token(node.name))
    if isinstance(node, Not):
        raise AssertionError("NOT is compiled by its parent AND")
    if isinstance(node, Or):
        return "(" + " OR ".join(to_fts(c) for c in node.children) + ")"
    positives = [c for c in node.children if not isinstance(c, Not)]
    negatives = [c.child for c in node.children if isinstance(c, Not)]
    expr = "(" + " AND ".join(to_fts(c) for c in positives) + ")"
    if negatives:
        expr = "(" + expr + " NOT (" + " OR ".join(to_fts(c) for c in negatives) + "))"
    return expr


# ---------------------------------------------------------------- Python matching (the reference semantics)


@dataclass(frozen=True, slots=True)
class Doc:
    """A paper as the matcher sees it: token streams per column, categories and date."""

    title: tuple[str, ...]
    abstract: tuple[str, ...]
    authors: tuple[str, ...]
    categories: frozenset[str]  # category tokens, as category_token() makes them, archives included
    day: date | None

    def column(self, name: str) -> tuple[str, ...]:
        if name == "title":
            return self.title
        if name == "abstract":
            return self.abstract
        return self.authors


def _phrase_in(tokens: tuple[str, ...], stream: tuple[str, ...], prefix: bool) -> bool:
    n = len(tokens)
    if n == 0 or len(stream) < n:
        return False
    last = n - 1
    for i in range(len(stream) - n + 1):
        for j in range(n):
            tok = stream[i + j]
            if not (tok.startswith(tokens[j]) if (j == last and prefix) else tok == tokens[j]):
                break
        else:
            return True
    return False


def term_matches(term: Term, doc: Doc) -> bool:
    cols = (term.column,) if term.column else TEXT_COLUMNS
    return any(_phrase_in(term.tokens, doc.column(c), term.prefix) for c in cols)


def node_matches(node: Node, doc: Doc) -> bool:
    if isinstance(node, Term):
        return term_matches(node, doc)
    if isinstance(node, Category):
        return category_token(node.name) in doc.categories
    if isinstance(node, Not):
        return not node_matches(node.child, doc)
    if isinstance(node, Or):
        return any(node_matches(c, doc) for c in node.children)
    return all(node_matches(c, doc) for c in node.children)


def matches(query: Query, doc: Doc) -> bool:
    if query.since is not None and (doc.day is None or doc.day < query.since):
        return False
    return query.root is None or node_matches(query.root, doc)


def matched_terms(query: Query, doc: Doc) -> list[str]:
    """The positive terms of a matching query that this paper contains: what we tell the user matched."""
    out = []
    for leaf in query.terms():
        hit = term_matches(leaf, doc) if isinstance(leaf, Term) else category_token(leaf.name) in doc.categories
        if hit:
            out.append(leaf.describe())
    return out


def make_doc(
    title: str,
    abstract: str,
    authors: str,
    categories: Sequence[str],
    day: date | None,
    tokenizer: Tokenizer | None = None,
) -> Doc:
    tok = tokenizer or default_tokenizer()
    t, a, au = tok.tokenize_many([title, abstract, authors])
    return Doc(tuple(t), tuple(a), tuple(au), frozenset(category_token_list(categories)), day)

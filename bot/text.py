"""Tokenising exactly as the search index does.

Search runs on SQLite FTS5 with the porter tokenizer, and alert matching runs in Python. For the two to
agree on every input, Python must split and stem text the same way FTS5 does. Rather than re-implement
unicode61 and Porter (and drift on edge cases), we ask SQLite itself: an in-memory FTS5 table with the same
tokenizer, read back through `fts5vocab` in `instance` mode, yields the exact token stream. sqlite3 is in the
standard library, so the core stays free of third-party imports.
"""

from __future__ import annotations

import functools
import re
import sqlite3
import threading
from collections.abc import Sequence

# The one tokenizer definition; storage builds its FTS5 table with this exact string.
FTS_TOKENIZE = "porter unicode61 remove_diacritics 2"

_CAT_CLEAN = re.compile(r"[^a-z0-9]")


@functools.lru_cache(maxsize=8192)  # a few hundred categories exist; matching a batch asks thousands of times
def category_token(category: str) -> str:
    """A category as one index token: `cs.LG` -> `csxlg0`.

    unicode61 would split `cs.LG` into `cs` and `lg`, making `cat:cs.LG` ambiguous; joining with `x` keeps it one
    token, and the trailing digit keeps the Porter stemmer from touching it (no Porter rule ends in a digit).
    """
    return _CAT_CLEAN.sub("x", category.strip().lower()) + "0"


def category_token_list(categories: Sequence[str]) -> list[str]:
    """Every category and its archive as index tokens (`cs.LG` -> cs.LG, cs), once each, in order.

    The one definition of what `cat:` matches: the index column and the Python matcher both use it."""
    seen: dict[str, None] = {}
    for cat in categories:
        seen[category_token(cat)] = None
        seen[category_token(cat.split(".", 1)[0])] = None
    return list(seen)


def category_tokens(categories: Sequence[str]) -> str:
    """The text stored in the index's category column."""
    return " ".join(category_token_list(categories))


def authors_text(authors: Sequence[str]) -> str:
    return ", ".join(authors)


class Tokenizer:
    """Thread-safe wrapper around a private in-memory FTS5 table used only to tokenise."""

    def __init__(self) -> None:
        self._db = sqlite3.connect(":memory:", check_same_thread=False)
        self._db.execute(f"CREATE VIRTUAL TABLE tok USING fts5(x, tokenize='{FTS_TOKENIZE}')")
        self._db.execute("CREATE VIRTUAL TABLE tokv USING fts5vocab(tok, 'instance')")
        self._lock = threading.Lock()
        self._word_cache: dict[str, tuple[str, ...]] = {}

    def tokenize_many(self, texts: Sequence[str]) -> list[list[str]]:
        """Token streams (stemmed, in order) for each text."""
        out: list[list[str]] = [[] for _ in texts]
        if not texts:
            return out
        with self._lock:
            cur = self._db.cursor()
            cur.execute("BEGIN")
            cur.executemany("INSERT INTO tok(rowid, x) VALUES (?, ?)", ((i + 1, t) for i, t in enumerate(texts)))
            for term, doc in cur.execute("SELECT term, doc FROM tokv ORDER BY doc, offset"):
                out[doc - 1].append(term)
            cur.execute("DELETE FROM tok")
            cur.execute("COMMIT")
        return out

    def tokenize(self, text: str) -> tuple[str, ...]:
        cached = self._word_cache.get(text)
        if cached is not None:
            return cached
        tokens = tuple(self.tokenize_many([text])[0])
        if len(self._word_cache) < 200_000 and len(text) < 200:
            self._word_cache[text] = tokens
        return tokens


_default: Tokenizer | None = None
_default_lock = threading.Lock()


def default_tokenizer() -> Tokenizer:
    """A process-wide tokenizer: it holds no state that matters, only a cache, so sharing it is safe."""
    global _default
    with _default_lock:
        if _default is None:
            _default = Tokenizer()
        return _default

"""Synthetic arXiv-like papers and subscriptions from a fixed seed, for benchmarks and scale tests.

The text follows a Zipf law over a vocabulary whose head is real ML/physics words (so stemming, phrases and
prefixes behave as on arXiv) and whose tail is pronounceable made-up words. Papers come out in announcement
order (ids and dates ascending), written as arXiv metadata snapshot JSON lines so the benchmark corpus goes
through the same backfill path a real snapshot does.
"""

from __future__ import annotations

import itertools
import json
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

HEAD_WORDS = (  # noqa: SIM905 (one string reads better than 300 quoted words)
    "the of and a in to we is for that on with this by are as an be from model learning our which can these "
    "results using show data method based network neural it paper approach new propose two performance such "
    "deep training problem at also networks models methods framework its has or used between than their both "
    "proposed task different one large graph time language algorithm information system systems analysis "
    "distribution state learn first however structure existing field quantum energy optimization image images "
    "generation transformer transformers diffusion attention representation representations robust efficient "
    "reinforcement policy agent agents reward inference bayesian gaussian stochastic gradient descent convex "
    "theorem proof bound bounds lower upper estimate estimation sample samples complexity linear nonlinear "
    "matrix tensor spectral kernel regression classification clustering segmentation detection tracking "
    "retrieval benchmark benchmarks dataset datasets evaluation evaluate experiments experimental empirical "
    "theoretical simulation simulations physics galaxy galaxies cosmological dark matter black hole spin "
    "magnetic electron phase transition temperature superconducting lattice topological symmetry gauge field "
    "string theory particle collider neutrino decay mass flow fluid turbulence wave waves equation equations "
    "solution solutions boundary operator operators manifold algebra group groups finite infinite prime "
    "number numbers graphs random walk markov chain monte carlo sampling variational autoencoder generative "
    "adversarial contrastive self supervised unsupervised semi federated privacy differential secure attack "
    "attacks defense adversarial robustness fairness bias interpretability explanation causal causality "
    "language models large pretrained fine tuning prompt prompting instruction alignment reasoning chain "
    "thought multimodal vision visual video speech audio text token tokens sequence sequences recurrent "
    "convolutional layer layers depth width scaling law laws emergent capabilities memory retrieval augmented"
).split()

CATEGORIES = (
    ("cs.LG", 14), ("cs.CV", 12), ("cs.CL", 10), ("cs.AI", 6), ("stat.ML", 5), ("math.PR", 3), ("math.OC", 3),
    ("quant-ph", 8), ("hep-th", 5), ("hep-ph", 5), ("astro-ph.GA", 4), ("astro-ph.CO", 3), ("cond-mat.mes-hall", 4),
    ("cond-mat.str-el", 3), ("math.AP", 3), ("math.CO", 3), ("math.NT", 2), ("physics.flu-dyn", 2), ("gr-qc", 3),
    ("eess.SP", 3), ("eess.IV", 2), ("cs.RO", 3), ("cs.CR", 2), ("cs.DS", 2), ("q-bio.NC", 1), ("econ.EM", 1),
)  # fmt: skip

_ONSETS = ("b", "c", "d", "f", "g", "h", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "cr", "dr", "gr",
           "pl", "pr", "st", "tr", "sh", "ch", "th", "qu", "sk", "sp")
_VOWELS = ("a", "e", "i", "o", "u", "ai", "ea", "io", "ou", "y")
_CODAS = ("", "", "", "n", "r", "l", "s", "m", "x", "nt", "rk", "st", "ph", "ct")
_FIRST = "ABCDEFGHJKLMNOPRSTVWYZ"

START_DAY = date(2010, 1, 4)
END_DAY = date(2026, 11, 20)
CHUNK = 10_000


@dataclass(frozen=True, slots=True)
class SynthPaper:
    arxiv_id: str
    title: str
    abstract: str
    authors: tuple[str, ...]
    categories: tuple[str, ...]
    day: date

    def snapshot_line(self) -> str:
        created = datetime(self.day.year, self.day.month, self.day.day, 14, 0, tzinfo=UTC)
        return json.dumps({
            "id": self.arxiv_id,
            "title": self.title,
            "abstract": self.abstract,
            "authors": ", ".join(self.authors),
            "categories": " ".join(self.categories),
            "versions": [{"version": "v1", "created": created.strftime("%a, %d %b %Y %H:%M:%S GMT")}],
        }, ensure_ascii=False)


class Vocabulary:
    """A fixed-seed Zipf vocabulary: `words[rank]`, drawn with probability proportional to 1/(rank+2.7)^s."""

    def __init__(self, size: int = 60_000, seed: int = 7, s: float = 1.07) -> None:
        rng = random.Random(seed)
        words: list[str] = list(dict.fromkeys(HEAD_WORDS))
        seen = set(words)
        while len(words) < size:
            w = "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS)
                        for _ in range(rng.choice((2, 2, 2, 3, 3))))
            if w not in seen and len(w) >= 4:
                seen.add(w)
                words.append(w)
        self.words = words
        self.cum = list(itertools.accumulate(1.0 / (r + 2.7) ** s for r in range(size)))
        # A quantile table makes a draw one uniform index instead of a bisection over 60k weights (5x faster);
        # 2^20 slots resolve probabilities down to one in a million, below which the tail is flat anyway.
        total = self.cum[-1]
        slots = 1 << 20
        table: list[str] = []
        rank = 0
        for j in range(slots):
            q = (j + 0.5) / slots * total
            while self.cum[rank] < q:
                rank += 1
            table.append(words[rank])
        self.table = table

    def draw(self, rng: random.Random, k: int) -> list[str]:
        table, bits = self.table, rng.getrandbits
        return [table[bits(20)] for _ in range(k)]


class Corpus:
    """`n` papers from `seed`: the same seed and n always give the same papers."""

    def __init__(self, n: int, seed: int = 2026, vocab: Vocabulary | None = None) -> None:
        self.n = n
        self.seed = seed
        self.vocab = vocab or Vocabulary()
        rng = random.Random(seed ^ 0x5EED)
        self.surnames = [
            "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS) for _ in range(rng.choice((2, 3))))
            .capitalize() for _ in range(30_000)]
        self.cat_names = [c for c, _ in CATEGORIES]
        self.cat_cum = list(itertools.accumulate(w for _, w in CATEGORIES))

    def day_of(self, i: int) -> date:
        span = (END_DAY - START_DAY).days
        return START_DAY + timedelta(days=(i * span) // max(1, self.n))

    def papers(self, start: int = 0) -> Iterator[SynthPaper]:
        """Papers from index `start` (a multiple of CHUNK: each chunk has its own seed) to the end."""
        if start % CHUNK:
            raise ValueError(f"start must be a multiple of {CHUNK}")
        per_month: dict[tuple[int, int], int] = {}
        rng = random.Random()
        for i in range(start, self.n):
            if i % CHUNK == 0:
                # One seed per chunk of papers: reseeding per paper costs more than drawing it.
                rng.seed(self.seed * 1_000_003 + i // CHUNK)
            day = self.day_of(i)
            key = (day.year, day.month)
            # Numbers within a month are the running index: ids are unique and ascend with i.
            seq = per_month.get(key)
            if seq is None:
                seq = self._first_index_of_month(i, key)
            per_month[key] = seq + 1
            arxiv_id = f"{day.year % 100:02d}{day.month:02d}.{seq + 1:05d}"
            words = self.vocab.draw(rng, rng.randint(150, 250))
            # Sentences: capitalised starts and full stops, so the text looks like prose to the tokenizer.
            for j in range(0, len(words), rng.randint(14, 24)):
                words[j] = words[j].capitalize()
            abstract = " ".join(words) + "."
            title_words = self.vocab.draw(rng, rng.randint(5, 13))
            title = " ".join(title_words).capitalize()
            authors = tuple(f"{rng.choice(_FIRST)}. {rng.choice(self.surnames)}" for _ in range(rng.randint(1, 8)))
            primary = rng.choices(self.cat_names, cum_weights=self.cat_cum)[0]
            cats = [primary]
            for _ in range(rng.choice((0, 0, 1, 2))):
                extra = rng.choices(self.cat_names, cum_weights=self.cat_cum)[0]
                if extra not in cats:
                    cats.append(extra)
            yield SynthPaper(arxiv_id, title, abstract, authors, tuple(cats), day)

    def _first_index_of_month(self, i: int, key: tuple[int, int]) -> int:
        # Walk back to the month's first paper: only when starting mid-month, so cheap.
        j = i
        while j > 0 and (self.day_of(j - 1).year, self.day_of(j - 1).month) == key:
            j -= 1
        return i - j

    def write_snapshot(self, path: Path) -> None:
        """Write the corpus as snapshot JSON lines, atomically (a half-written cache file is never used)."""
        tmp = path.with_suffix(path.suffix + ".tmp")
        with open(tmp, "w", encoding="utf-8") as fh:
            buf: list[str] = []
            for p in self.papers():
                buf.append(p.snapshot_line())
                if len(buf) >= 10_000:
                    fh.write("\n".join(buf) + "\n")
                    buf.clear()
            if buf:
                fh.write("\n".join(buf) + "\n")
        tmp.replace(path)


def subscription_texts(n: int, seed: int = 99, vocab: Vocabulary | None = None) -> list[str]:
    """`n` alert queries of 1-3 terms: words, two-word phrases, some prefixes, negations and categories.

    Terms come from the vocabulary past its 3,000 most frequent words, log-uniformly by rank: people
    subscribe to topics ("spintronics", "retrieval augmented"), not to "the" or "model", so a typical alert
    matches a paper or two of a day's thousand, as on arXiv.
    """
    v = vocab or Vocabulary()
    rng = random.Random(seed)
    words = v.words[3000:]
    cum = list(itertools.accumulate(1.0 / (r + 3000.0) for r in range(len(words))))
    cats = [c for c, _ in CATEGORIES]

    def word() -> str:
        return rng.choices(words, cum_weights=cum)[0]

    out = []
    for _ in range(n):
        parts: list[str] = []
        for _ in range(rng.choice((1, 1, 2, 2, 3))):
            r = rng.random()
            if r < 0.15:
                parts.append(f'"{word()} {word()}"')
            elif r < 0.20:
                w = word()
                parts.append(w[:7] + "*" if len(w) >= 9 else w)
            elif r < 0.25:
                parts.append(f"ti:{word()}")
            else:
                parts.append(word())
        r = rng.random()
        if r < 0.10:
            parts.append("-" + word())
        elif r < 0.18:
            parts.append("cat:" + rng.choice(cats))
        elif r < 0.22 and len(parts) > 1:
            parts = [parts[0], "OR", *parts[1:]]
        out.append(" ".join(parts))
    return out

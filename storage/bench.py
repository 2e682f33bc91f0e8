"""`paperboy bench`: search, alert matching, backfill and the service at 100k / 1M / 2.5M papers.

Synthetic corpora come from a fixed seed (storage.synth) and are kept under a cache folder: the snapshot file
and the database built from it by the real backfill path. Every figure is printed beside the naive way,
measured in the same run: `ORDER BY bm25() LIMIT 10` for search, one reference `matches()` per subscription
and paper for alerts, one transaction per row (the ordinary upsert path) for backfill, one aiosqlite
connection for the service. Where the naive way would take hours it is timed on a sample and scaled, and the
case says so.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from bot.matching import Matcher, Standing, docs_of, match_papers
from bot.models import Paper
from bot.query import Query, QueryError, matches, parse, to_fts
from bot.text import Tokenizer
from storage.backfill import refresh_derived
from storage.db import open_sync
from storage.synth import HEAD_WORDS, Corpus, Vocabulary, subscription_texts

VERSION = "v1"
DEFAULT_TIERS = (100_000, 1_000_000, 2_500_000)
TODAY = date(2026, 11, 27)
NAIVE_BM25 = "10.0, 1.0, 3.0, 0.0"


@dataclass(frozen=True, slots=True)
class Figure:
    bench: str  # search, match, backfill, service
    tier: int  # papers, or subscriptions for match
    case: str
    median_ms: float | None
    p99_ms: float | None
    throughput_per_s: float | None
    peak_rss_mb: float | None
    naive_ratio: float | None  # naive time / our time (higher is better), None when not measured
    note: str = ""


def _pct(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return 0.0
    k = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[k]


def _proc_mb(path: str, field: str) -> float | None:
    """A kB figure from a /proc status-style file, in MB; None when the file or the field is missing."""
    try:
        with open(path, encoding="ascii") as fh:
            for line in fh:
                if line.startswith(field):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _rss_mb(pid: int | None = None) -> float:
    """Resident memory now (MB) of one process."""
    return _proc_mb(f"/proc/{pid or os.getpid()}/status", "VmRSS:") or 0.0


def _pss_mb(pid: int) -> float:
    """Proportional set size (MB): resident memory with pages shared between processes split among them, so
    forked workers do not count the parent's pages again. Falls back to RSS."""
    pss = _proc_mb(f"/proc/{pid}/smaps_rollup", "Pss:")
    return pss if pss is not None else _rss_mb(pid)


def _tree_rss_mb(root: int, pss: bool = True) -> float:
    """Resident memory of a process and all its descendants (MB): PSS by default, plain RSS if asked."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(entry))
        except OSError:
            continue
    total = 0.0
    stack = [root]
    while stack:
        pid = stack.pop()
        total += _pss_mb(pid) if pss else _rss_mb(pid)
        stack.extend(children.get(pid, []))
    return total


class PeakSampler:
    """Samples the RSS of a process tree in a thread; `.peak` is the largest total seen."""

    def __init__(self, pid: int, every: float = 0.25) -> None:
        self.pid = pid
        self.every = every
        self.peak = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _tree_rss_mb(self.pid))
            self._stop.wait(self.every)

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _tree_rss_mb(self.pid))


# ---------------------------------------------------------------- corpora


def cache_dir(arg: str | None) -> Path:
    if arg:
        path = Path(arg)
    else:
        base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        path = Path(base) / "paperboy" / "bench"
    path.mkdir(parents=True, exist_ok=True)
    return path


def snapshot_path(cache: Path, n: int) -> Path:
    path = cache / f"snapshot-{n}-{VERSION}.jsonl"
    if not path.exists():
        _say(f"generating the {n:,}-paper synthetic snapshot (once; kept in {cache})")
        Corpus(n).write_snapshot(path)
    return path


def _say(text: str) -> None:
    print(f"[bench] {text}", file=sys.stderr, flush=True)


def build_corpus(cache: Path, n: int, naive_rows: int = 2000) -> tuple[Path, Figure | None]:
    """The database for tier n, built by `paperboy backfill` in a child process (timed, RSS sampled).

    Returns the database and the backfill figure when it was built in this run (None when reused)."""
    db = cache / f"corpus-{n}-{VERSION}.db"
    done = cache / f"corpus-{n}-{VERSION}.built.json"
    if db.exists() and done.exists():
        # A corpus built by an older paperboy: migrated to this schema and its derived vocabulary completed,
        # as this version's backfill leaves it.
        conn = open_sync(db)
        try:
            refresh_derived(conn)
        finally:
            conn.close()
        fig = Figure(**json.loads(done.read_text()))
        return db, replace(fig, note=fig.note + " (measured when this cached corpus was built)")
    snap = snapshot_path(cache, n)
    for suffix in ("", "-wal", "-shm"):
        Path(str(db) + suffix).unlink(missing_ok=True)
    _say(f"backfilling {n:,} papers into {db.name}")
    cmd = [sys.executable, "-m", "bot.cli", "backfill", "--snapshot", str(snap), "--db", str(db), "--json"]
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    with PeakSampler(proc.pid) as sampler:
        out, _ = proc.communicate()
    seconds = time.monotonic() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"backfill failed ({proc.returncode}): {out[-500:]}")
    naive_per_row = naive_backfill_seconds_per_row(snap, naive_rows)
    fig = Figure("backfill", n, "snapshot (parse + rows + FTS5 + optimize)", round(seconds * 1000, 1), None,
                 round(n / seconds, 1), round(sampler.peak, 1), round(naive_per_row * n / seconds, 1),
                 note=f"one run, peak = PSS of the backfill and its parser processes; naive = one transaction "
                      f"per row through the store's upsert, timed on {naive_rows:,} rows "
                      f"({1 / naive_per_row:,.0f} rows/s)")
    done.write_text(json.dumps(asdict(fig)))
    return db, fig


def warm_page_cache(db: Path) -> None:
    """Read the database file once, so its pages are in the OS page cache as a running service has them.

    Without it the tier measured first pays for the larger tiers read after it last time: this machine's page
    cache holds about 10 GB, less than the three corpora (measured: the 100k phrase p99 14 ms cold from the
    cache, 6 ms warm)."""
    with db.open("rb") as f:
        while f.read(8 << 20):
            pass


def naive_backfill_seconds_per_row(snap: Path, rows: int = 2000) -> float:
    """The ordinary upsert path, one paper per transaction (what ingest does), on a scratch database."""
    from adapters.sources.snapshot import iter_snapshot
    from storage.sqlite import Stores

    papers = [p for _, (_, p) in zip(range(rows), iter_snapshot(snap), strict=False)]

    async def run(path: Path) -> float:
        stores = await Stores.open(path)
        try:
            t0 = time.perf_counter()
            for p in papers:
                await stores.papers.upsert([p], source="snapshot", seen_at=datetime.now(UTC), route=False)
            return (time.perf_counter() - t0) / len(papers)
        finally:
            await stores.close()

    with tempfile.TemporaryDirectory() as tmp:
        return asyncio.run(run(Path(tmp) / "naive.db"))


# ---------------------------------------------------------------- search


def search_queries(db: Path, per_class: int, seed: int = 11) -> dict[str, list[str]]:
    """Query texts per class, drawn from the stored papers so that every query has matches."""
    vocab = Vocabulary()
    rank = {w: i for i, w in enumerate(vocab.words)}
    rng = random.Random(seed)
    conn = sqlite3.connect(db)
    top = int(conn.execute("SELECT max(id) FROM papers").fetchone()[0])

    def doc() -> tuple[str, list[str], str, list[str]]:
        row = conn.execute("SELECT title, abstract, authors, categories FROM papers WHERE id=?",
                           (rng.randint(1, top),)).fetchone()
        words = [w.strip(".").lower() for w in row[1].split()]
        return row[0], words, row[2], row[3].split()

    def pick(words: list[str], lo: int, hi: int) -> str:
        choices = [w for w in words if lo <= rank.get(w, 10**9) < hi]
        return rng.choice(choices) if choices else words[0]

    common = [w for w in HEAD_WORDS[15:80] if len(w) > 3]
    out: dict[str, list[str]] = {c: [] for c in ("rare", "common", "two-term AND", "phrase", "prefix", "fields")}
    while min(len(v) for v in out.values()) < per_class:
        title, words, authors, cats = doc()
        out["rare"].append(pick(words, 8_000, 60_000))
        out["common"].append(rng.choice(common))
        out["two-term AND"].append(f"{pick(words, 30, 3000)} {pick(words, 30, 3000)}")
        i = rng.randrange(len(words) - 1)
        out["phrase"].append(f'"{words[i]} {words[i + 1]}"')
        stem = pick(words, 20, 5000)
        out["prefix"].append(stem[: max(3, min(6, len(stem) - 2))] + "*")
        title_words = [w.lower() for w in title.split() if len(w) > 3]
        kind = rng.randrange(4)
        if kind == 0 and title_words:
            out["fields"].append(f"ti:{rng.choice(title_words)}")
        elif kind == 1:
            surname = authors.split(",")[0].split()[-1]
            out["fields"].append(f"au:{surname}")
        elif kind == 2:
            out["fields"].append(f"cat:{rng.choice(cats)} {pick(words, 30, 3000)}")
        else:
            out["fields"].append(f"{pick(words, 30, 3000)} since:2024-01-01")
    conn.close()
    return {k: v[:per_class] for k, v in out.items()}


def naive_search_sql(query: Query) -> tuple[str, list[Any]]:
    """The plan search used before: FTS5 MATCH ordered by bm25(), LIMIT 10."""
    from storage.sqlite import PAPER_COLUMNS, _prefixed

    assert query.root is not None
    params: list[Any] = [to_fts(query.root)]
    cond = "papers_fts MATCH ?"
    if query.since is not None:
        cond += " AND p.published >= ?"
        params.append(query.since.isoformat())
    sql = (f"SELECT {_prefixed(PAPER_COLUMNS)}, bm25(papers_fts, {NAIVE_BM25}) AS score FROM papers_fts "
           f"JOIN papers p ON p.id = papers_fts.rowid WHERE {cond} ORDER BY score LIMIT 10")
    return sql, params


async def _timed(fn: Callable[[], Awaitable[Any]]) -> float:
    t0 = time.perf_counter()
    await fn()
    return (time.perf_counter() - t0) * 1000


def bench_search(db: Path, n: int, *, per_class: int, naive_per_class: int) -> list[Figure]:
    from storage.sqlite import Stores

    classes = search_queries(db, per_class)
    figures: list[Figure] = []

    async def run() -> None:
        stores = await Stores.open(db)
        try:
            await stores.papers.search(parse("warm*", today=TODAY), limit=10)  # folds any new vocabulary in
            for name, texts in classes.items():
                queries = [parse(t, today=TODAY) for t in texts]
                for q in queries[:5]:  # warm the page cache the way a running service has it warm
                    await stores.papers.search(q, limit=10)
                times = [await _timed(lambda q=q: stores.papers.search(q, limit=10)) for q in queries]  # type: ignore[misc]
                naive_times = []
                for q in queries[:naive_per_class]:
                    sql, params = naive_search_sql(q)
                    naive_times.append(await _timed(lambda sql=sql, params=params: stores.db.fetchall(sql, params)))  # type: ignore[misc]
                med = statistics.median(times)
                figures.append(Figure(
                    "search", n, name, round(med, 2), round(_pct(times, 0.99), 2),
                    round(1000 / statistics.mean(times), 1), round(_rss_mb(), 1),
                    round(statistics.median(naive_times) / med, 1) if naive_times else None,
                    note=f"{len(times)} queries, top-10; naive median "
                         f"{statistics.median(naive_times):.1f} ms, p99 {_pct(naive_times, 0.99):.1f} ms "
                         f"over {len(naive_times)}" if naive_times else f"{len(times)} queries"))
        finally:
            await stores.close()

    asyncio.run(run())
    return figures


# ---------------------------------------------------------------- alert matching


class _WarmTokenizer(Tokenizer):
    """Parsing a million alerts one word at a time costs minutes in tokenizer round trips; the bench
    tokenises every distinct word and phrase in one batch first (the same FTS5 tokenizer, same tokens)."""

    def __init__(self, texts: Sequence[str]) -> None:
        super().__init__()
        pieces: set[str] = set()
        for text in texts:
            for part in text.replace("(", " ").replace(")", " ").split('"')[1::2]:
                pieces.add(part)
            for word in text.replace('"', " ").split():
                word = word.lstrip("-").split(":", 1)[-1].rstrip("*")
                if word:
                    pieces.add(word)
        ordered = sorted(pieces)
        self.cache = dict(zip(ordered, (tuple(s) for s in self.tokenize_many(ordered)), strict=True))

    def tokenize(self, text: str) -> tuple[str, ...]:
        hit = self.cache.get(text)
        return hit if hit is not None else super().tokenize(text)


def bench_match(db: Path, subs: int, *, papers_n: int = 1000, runs: int = 7) -> list[Figure]:
    texts = subscription_texts(subs)
    tok = _WarmTokenizer(texts)
    standing: list[Standing] = []
    for i, text in enumerate(texts):
        try:
            standing.append(Standing(f"sub:{i}", parse(text, today=TODAY, tokenizer=tok)))
        except QueryError:
            continue
    papers = _newest_papers(db, papers_n)
    rss0 = _rss_mb()
    t0 = time.perf_counter()
    matcher = Matcher(standing)
    build_ms = (time.perf_counter() - t0) * 1000
    times = []
    pairs = 0
    docs_of(papers)  # the first batch also warms the word-stem cache, as every later batch of a service finds it
    for _ in range(runs):
        t0 = time.perf_counter()
        hits = match_papers(papers, standing, matcher=matcher)
        # Walking every (alert, answer) is part of the work: routing does it to plan each user's message.
        pairs = sum(len(found) for _, found in hits.pairs())
        times.append((time.perf_counter() - t0) * 1000)
        del hits  # freeing this batch's answers is not part of matching the next one
    # Naive: the reference matcher, every subscription against every paper, on a sample, scaled to all.
    sample = standing[: min(len(standing), 500)]
    docs = docs_of(papers)
    t0 = time.perf_counter()
    for s in sample:
        for d in docs:
            matches(s.query, d)
    naive_ms = (time.perf_counter() - t0) * 1000 * len(standing) / max(1, len(sample))
    med = statistics.median(times)
    peak = round(max(_rss_mb(), rss0), 1)
    return [
        Figure("match", len(standing), f"{papers_n} papers x {len(standing):,} alerts", round(med, 1),
               round(max(times), 1), round(papers_n / (med / 1000), 1), peak, round(naive_ms / med, 1),
               note=f"{pairs:,} (alert, paper) matches, each answer walked once; median of {runs} runs (the max is the "
                    "first, which also describes each matched alert's terms, once per process; a run's answers are "
                    "freed after its timing); compiled scan: " + ("yes" if matcher.compiled else "no (Python)") + "; "
                    "naive = reference matches() per "
                    f"alert per paper, timed on {len(sample):,} alerts and scaled ({naive_ms / 1000:,.0f} s)"),
        Figure("match", len(standing), "compile the alerts (once per process)", round(build_ms, 1), None, None,
               peak, None, note="Matcher(standing); parsing the query texts is not included"),
    ]


def _newest_papers(db: Path, n: int) -> list[Paper]:
    from storage.sqlite import PAPER_COLUMNS, paper_from_row

    conn = sqlite3.connect(db)
    rows = conn.execute(f"SELECT {PAPER_COLUMNS} FROM papers ORDER BY id DESC LIMIT ?", (n,)).fetchall()
    conn.close()
    return [paper_from_row(r) for r in reversed(rows)]


# ---------------------------------------------------------------- the service


def bench_service(db: Path, n: int, *, users: int = 20, per_user: int = 10, settle: int = 20) -> list[Figure]:
    figures = [_idle_rss(db, n, settle)]
    figures += asyncio.run(_concurrent_search(db, n, users=users, per_user=per_user))
    return figures


def _idle_rss(db: Path, n: int, settle: int = 20) -> Figure:
    """`paperboy run --offline` with no tokens (console adapter), stdin kept open: its RSS once settled."""
    env = {k: v for k, v in os.environ.items() if k not in ("DISCORD_TOKEN", "SLACK_BOT_TOKEN", "SLACK_APP_TOKEN")}
    proc = subprocess.Popen([sys.executable, "-m", "bot.cli", "run", "--offline", "--db", str(db)],
                            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    samples = []
    try:
        for _ in range(settle):
            time.sleep(0.5)
            if proc.poll() is not None:
                break
            samples.append(_tree_rss_mb(proc.pid, pss=False))
    finally:
        if proc.poll() is None:
            assert proc.stdin is not None
            proc.stdin.close()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    err = proc.stderr.read().decode(errors="replace")[-300:] if proc.stderr else ""
    if not samples:
        return Figure("service", n, "idle RSS of paperboy run", None, None, None, None, None,
                      note=f"the service exited early: {err}")
    return Figure("service", n, "idle RSS of paperboy run", None, None, None, round(samples[-1], 1), None,
                  note=f"settled after {len(samples) * 0.5:.0f} s, console adapter, {n:,} papers on disk")


async def _concurrent_search(db: Path, n: int, *, users: int, per_user: int) -> list[Figure]:
    """`users` people running /papers search at once, through the same store call as the command handler
    (count=True): on one search connection, and as the service runs them, on its SEARCH_READERS connections;
    the naive figure is the bm25 plan, `users` at once, on one (aiosqlite) connection."""
    from storage.sqlite import SEARCH_READERS, Stores

    texts = [t for ts in search_queries(db, per_user * users // 6 + 1, seed=23).values() for t in ts]
    random.Random(5).shuffle(texts)
    queries = [parse(t, today=TODAY) for t in texts[: users * per_user]]
    pool = [await Stores.open(db, readers=1), await Stores.open(db)]
    figures = []
    try:
        for stores in pool:
            for q in queries[:10]:
                await stores.papers.search(q, limit=10, count=True)

        async def user(stores: Stores, batch: Sequence[Query], naive: bool) -> list[float]:
            out = []
            for q in batch:
                t0 = time.perf_counter()
                if naive:
                    sql, params = naive_search_sql(q)
                    await stores.db.fetchall(sql, params)
                else:
                    await stores.papers.search(q, limit=10, count=True)
                out.append((time.perf_counter() - t0) * 1000)
            return out

        async def run(stores: Stores, naive: bool) -> tuple[list[float], float]:
            per = 1 if naive else per_user
            t0 = time.perf_counter()
            lists = await asyncio.gather(*(user(stores, queries[u * per_user : u * per_user + per], naive)
                                           for u in range(users)))
            return [x for xs in lists for x in xs], time.perf_counter() - t0

        naive_times, _ = await run(pool[0], True)
        naive_med = statistics.median(naive_times)
        for stores in pool:
            ours, wall = await run(stores, False)
            med = statistics.median(ours)
            label = ("one search connection" if stores is pool[0]
                     else f"the service's {SEARCH_READERS} search connections")
            figures.append(Figure(
                "service", n, f"{users} concurrent /papers search, {label}", round(med, 1),
                round(_pct(ours, 0.99), 1), round(len(ours) / wall, 1), round(_rss_mb(), 1),
                round(naive_med / med, 1),
                note=f"{len(ours)} searches with count; naive (bm25, {users} at once, one connection) median "
                     f"{naive_med:.0f} ms, p99 {_pct(naive_times, 0.99):.0f} ms; the acknowledgement window is "
                     "3,000 ms"))
    finally:
        for stores in pool:
            await stores.close()
    return figures


# ---------------------------------------------------------------- main


def render(figures: Sequence[Figure]) -> str:
    head = ("| bench | tier | case | median ms | p99 ms | throughput /s | peak RSS MB | x naive |\n"
            "|---|---:|---|---:|---:|---:|---:|---:|")
    lines = [head]

    def f(v: float | None) -> str:
        return "–" if v is None else f"{v:,.1f}" if v < 10_000 else f"{v:,.0f}"

    for x in figures:
        lines.append(f"| {x.bench} | {x.tier:,} | {x.case} | {f(x.median_ms)} | {f(x.p99_ms)} | "
                     f"{f(x.throughput_per_s)} | {f(x.peak_rss_mb)} | {f(x.naive_ratio)} |")
    notes = [f"- {x.bench} {x.tier:,} {x.case}: {x.note}" for x in figures if x.note]
    return "\n".join([*lines, "", *notes])


def main(args: argparse.Namespace) -> int:
    cache = cache_dir(getattr(args, "cache", None))
    if getattr(args, "tiers", None):
        tiers = [int(t) for t in str(args.tiers).split(",") if t.strip()]
    elif getattr(args, "quick", False):
        tiers = [100_000]
    else:
        tiers = list(DEFAULT_TIERS)
    small = max(tiers) < 50_000  # the hidden tiny tier of the smoke test: fewer repetitions, same code
    figures: list[Figure] = []
    for n in tiers:
        db, built = build_corpus(cache, n, naive_rows=200 if small else 2000)
        if built is not None:
            figures.append(built)
        _say(f"search over {n:,} papers")
        warm_page_cache(db)
        figures += bench_search(db, n, per_class=20 if small else 100, naive_per_class=3 if small else 10)
        subs = [1_000 if small else 100_000] if n == min(tiers) else []
        if n == max(tiers) and not small and not getattr(args, "quick", False):
            subs.append(1_000_000)
        for s in subs:
            _say(f"matching 1,000 papers against {s:,} alerts")
            figures += bench_match(db, s, papers_n=200 if small else 1000)
        if n == max(tiers):
            _say(f"service at {n:,} papers")
            figures += bench_service(db, n, users=20, per_user=2 if small else 10, settle=4 if small else 20)
    if getattr(args, "json", False):
        print(json.dumps([asdict(f) for f in figures], indent=2))
    else:
        print(render(figures))
    return 0

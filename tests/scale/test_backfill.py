"""Backfill: resumable from its checkpoint without duplicates, and a kill at any point leaves the search index
agreeing with the stored papers (FTS5's own integrity check against the content table)."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from bot.text import default_tokenizer
from storage import search_pairs
from storage.backfill import backfill_snapshot, index_agrees, reindex_db
from storage.search_index import decode_reads, verify_terms
from storage.synth import Corpus
from tests.scale.test_search_pairs import tokens_held_and_expected

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def snapshot(tmp_path: Path) -> Path:
    path = tmp_path / "snap.jsonl"
    Corpus(400).write_snapshot(path)
    with open(path, "a", encoding="utf-8") as fh:
        fh.write("{not json\n")
        # A later version of a paper already in the file: merged into the same row, not a second one.
        first = json.loads(path.read_text(encoding="utf-8").splitlines()[0])
        first["title"] = "A revised title about quixotic graphs"
        first["versions"].append({"version": "v2", "created": "Mon, 2 Feb 2026 10:00:00 GMT"})
        fh.write(json.dumps(first) + "\n")
    return path


def _state(db: Path) -> tuple[int, int, bool, list[str]]:
    conn = sqlite3.connect(db)
    try:
        rows = conn.execute("SELECT count(*), count(DISTINCT arxiv_id) FROM papers").fetchone()
        ok = index_agrees(conn)
        routed = [r[0] for r in conn.execute("SELECT arxiv_id FROM papers WHERE routed=0")]
        return int(rows[0]), int(rows[1]), ok, routed
    finally:
        conn.close()


@pytest.fixture(autouse=True)
def _small_heads(monkeypatch: pytest.MonkeyPatch) -> None:
    """400 papers: head words are those in 40 of them (the default needs 500, more than a test corpus has), head
    prefixes those of more than 20 terms, over the 150 newest papers."""
    monkeypatch.setattr(search_pairs, "PAIR_HEAD_MIN", 40)
    monkeypatch.setattr(search_pairs, "PREFIX_HEAD_TERMS", 20)
    monkeypatch.setattr(search_pairs, "PREFIX_WINDOW", 150)


def _pairs_agree(db: Path) -> bool:
    """The pair index holds exactly the head-word pairs of every paper from its low mark up and the head prefixes
    of every paper from the prefix low mark up (tests/scale/test_search_pairs.py works that out), both kinds are
    there, and no paper is left marked."""
    conn = sqlite3.connect(db)
    try:
        heads, low = search_pairs.heads_of(conn), search_pairs.low_of(conn)
        held, expected = tokens_held_and_expected(conn)
        prefixed = {t for t in expected if t.startswith("_")}
        top = conn.execute("SELECT max(id) FROM papers").fetchone()[0]
        marked = conn.execute("SELECT count(*) FROM search_pairs_dirty").fetchone()[0]
        return (bool(heads.words) and bool(heads.prefixes) and low < heads.prefix_low == top - 149
                and bool(prefixed) and len(prefixed) < len(expected) and held == expected and marked == 0)
    finally:
        conn.close()


def _fts_ids(db: Path, match: str) -> set[int]:
    conn = sqlite3.connect(db)
    try:
        return {r[0] for r in conn.execute("SELECT rowid FROM papers_fts WHERE papers_fts MATCH ?", (match,))}
    finally:
        conn.close()


def test_backfill_resumes_from_its_checkpoint_without_duplicates(tmp_path: Path, snapshot: Path) -> None:
    db = tmp_path / "b.db"
    first = backfill_snapshot(db, snapshot, limit=130, batch_size=50)
    assert first.records == 130 and not first.done
    assert _state(db)[:3] == (130, 130, True)
    second = backfill_snapshot(db, snapshot, batch_size=50)
    assert second.done and second.resumed_from is not None and second.bad == 1
    count, distinct, ok, unrouted = _state(db)
    assert (count, distinct, ok) == (400, 400, True)
    assert unrouted == []  # history never triggers posts or alerts
    assert len(_fts_ids(db, "title : quixotic")) == 1  # the v2 record was merged into its row
    again = backfill_snapshot(db, snapshot, batch_size=50)
    assert again.inserted == 0 and _state(db)[:2] == (400, 400)
    # The prefix vocabulary was refilled from FTS5 at the end: every index term is in it, nothing pending.
    assert _vocab_complete(db)
    assert _fts_settings(db) == _USUAL  # the bulk merge settings were never committed


# FTS5's defaults: what the service must run with whatever a backfill did (none stored means these).
_USUAL = {"automerge": 4, "crisismerge": 16, "hashsize": 1 << 20}


def _fts_settings(db: Path) -> dict[str, int]:
    conn = sqlite3.connect(db)
    try:
        stored = dict(conn.execute("SELECT k, v FROM papers_fts_config"))
        return {k: int(stored.get(k, v)) for k, v in _USUAL.items()}
    finally:
        conn.close()


def _segments(db: Path) -> int:
    conn = sqlite3.connect(db)
    try:
        return int(conn.execute("SELECT count(DISTINCT segid) FROM papers_fts_idx").fetchone()[0])
    finally:
        conn.close()


def test_each_batch_leaves_one_segment_and_they_are_merged_once_at_the_end(tmp_path: Path, snapshot: Path) -> None:
    db = tmp_path / "s.db"
    backfill_snapshot(db, snapshot, batch_size=50, optimize=False)
    # 402 lines in batches of 50: 9 batches, each flushed as one segment and none merged into another (FTS5's
    # usual settings would have merged some by now).
    assert _segments(db) == 9
    assert _fts_settings(db) == _USUAL and _state(db)[:3] == (400, 400, True)
    db2 = tmp_path / "s2.db"
    backfill_snapshot(db2, snapshot, batch_size=50)
    assert _segments(db2) == 1 and _state(db2)[:3] == (400, 400, True)


def _vocab_complete(db: Path) -> bool:
    conn = sqlite3.connect(db)
    try:
        conn.execute("CREATE VIRTUAL TABLE temp.v USING fts5vocab(main, papers_fts, 'row')")
        indexed = {r[0] for r in conn.execute("SELECT term FROM temp.v")}
        vocab = {r[0] for r in conn.execute("SELECT term FROM search_vocab")}
        pending = conn.execute("SELECT count(*) FROM search_vocab_dirty").fetchone()[0]
        return bool(indexed) and indexed <= vocab and pending == 0
    finally:
        conn.close()


_KILLER = textwrap.dedent("""
    import os, signal, sys
    from storage import backfill

    class Proxy:
        # Kills the process when the batch after `after` reaches the statement starting with `at`.
        def __init__(self, conn, after):
            self.conn, self.after, self.batches = conn, after, 0
        def execute(self, sql, *args):
            if sql.startswith(sys.argv[4]):
                self.batches += 1
                if self.batches > self.after:
                    os.kill(os.getpid(), signal.SIGKILL)
            return self.conn.execute(sql, *args)
        def __getattr__(self, name):
            return getattr(self.conn, name)

    real = backfill.BulkWriter.__init__
    def init(self, conn, **kw):
        real(self, Proxy(conn, int(sys.argv[3])), **kw)
    backfill.BulkWriter.__init__ = init
    backfill.backfill_snapshot(sys.argv[1], sys.argv[2], batch_size=50)
""")


@pytest.mark.parametrize("at", [
    # Right after the batch's rows are written and before its FTS5 rows are: the moment a store write and a
    # derived-index write could disagree.
    "INSERT INTO papers_fts(rowid",
    # Right after FTS5 wrote the batch's segment under the bulk merge settings, before they are put back.
    "RELEASE fts_flush",
])
def test_a_kill_mid_batch_leaves_rows_and_index_agreeing_and_resume_completes(
        tmp_path: Path, snapshot: Path, at: str) -> None:
    db = tmp_path / "k.db"
    log = tmp_path / "killed.log"
    with open(log, "w") as err:
        proc = subprocess.run([sys.executable, "-c", _KILLER, str(db), str(snapshot), "3", at], cwd=REPO,
                              stdout=subprocess.DEVNULL, stderr=err, timeout=120)
    assert proc.returncode == -signal.SIGKILL, log.read_text()[-500:]
    count, distinct, ok, _ = _state(db)
    assert (count, distinct, ok) == (150, 150, True)  # three whole batches; the fourth rolled back
    assert _fts_settings(db) == _USUAL  # the service never sees the bulk merge settings, even after a kill
    stats = backfill_snapshot(db, snapshot, batch_size=50)
    assert stats.done
    assert _state(db)[:3] == (400, 400, True)
    assert _vocab_complete(db)
    assert _fts_settings(db) == _USUAL
    assert _pairs_agree(db)


_PAIR_KILLER = textwrap.dedent("""
    import os, signal, sys
    from storage import backfill, search_pairs

    search_pairs.PAIR_HEAD_MIN, search_pairs._CHUNK = 40, 100
    real, calls = search_pairs.pair_texts, []
    def pair_texts(*args, **kw):
        calls.append(1)
        if len(calls) == 3:  # two chunks of the pair index written in the rebuild's transaction, then killed
            os.kill(os.getpid(), signal.SIGKILL)
        return real(*args, **kw)
    search_pairs.pair_texts = pair_texts
    backfill.backfill_snapshot(sys.argv[1], sys.argv[2], batch_size=100)
""")


def test_a_kill_while_the_pair_index_is_rebuilt_leaves_it_as_it_was_and_a_rerun_builds_it(
        tmp_path: Path, snapshot: Path) -> None:
    db = tmp_path / "p.db"
    log = tmp_path / "killed.log"
    with open(log, "w") as err:
        proc = subprocess.run([sys.executable, "-c", _PAIR_KILLER, str(db), str(snapshot)], cwd=REPO,
                              stdout=subprocess.DEVNULL, stderr=err, timeout=120)
    assert proc.returncode == -signal.SIGKILL, log.read_text()[-500:]
    conn = sqlite3.connect(db)
    try:  # every paper stored and still marked; no head words, nothing covered: the rebuild rolled back whole
        assert conn.execute("SELECT count(*) FROM search_pairs_dirty").fetchone()[0] == 400
        assert search_pairs.heads_of(conn) == search_pairs.Heads(frozenset())
        assert search_pairs.low_of(conn) == 1
        conn.execute("CREATE VIRTUAL TABLE temp.pv USING fts5vocab(main, search_pairs, 'row')")
        assert conn.execute("SELECT count(*) FROM temp.pv").fetchone()[0] == 0
    finally:
        conn.close()
    assert backfill_snapshot(db, snapshot, batch_size=100).done
    assert _pairs_agree(db)


def test_reindex_rebuilds_the_index_and_the_prefix_vocabulary(tmp_path: Path, snapshot: Path) -> None:
    db = tmp_path / "r.db"
    backfill_snapshot(db, snapshot, batch_size=100)
    conn = sqlite3.connect(db)
    # Damage the derived data the way a crash in the middle of a hand edit could: words gone from the vocabulary
    # and the FTS5 index out of step with a row changed behind its back.
    conn.execute("DELETE FROM search_vocab WHERE term >= 'q' AND term < 'r'")
    conn.execute("DROP TRIGGER papers_au")
    conn.execute("UPDATE papers SET title='zebra crossing' WHERE id=1")
    conn.execute("INSERT INTO search_pairs(rowid, pairs) VALUES (2, 'zebra_crossing')")  # a token it never had
    conn.commit()
    assert not index_agrees(conn)
    conn.close()
    result = reindex_db(db)
    assert result == {**result, "papers": 400, "index_ok": True}
    conn = sqlite3.connect(db)
    conn.execute("CREATE VIRTUAL TABLE temp.v USING fts5vocab(main, papers_fts, 'row')")
    assert {r[0] for r in conn.execute("SELECT term FROM temp.v")} <= {
        r[0] for r in conn.execute("SELECT term FROM search_vocab")}
    # How every term reads back as query text is worked out again too (migration 004), as the tokenizer says.
    reads = dict(conn.execute("SELECT term, reads FROM search_vocab").fetchall())
    assert None not in reads.values()
    assert {t: decode_reads(t, r) for t, r in reads.items()} == verify_terms(list(reads), default_tokenizer())
    conn.close()
    assert _fts_ids(db, "title : zebra") == {1}
    assert _pairs_agree(db)


def test_oai_backfill_follows_tokens_and_resumes(tmp_path: Path) -> None:
    import asyncio
    import re

    import httpx

    from adapters.sources.http import PoliteClient
    from bot.settings import Settings
    from storage.backfill import backfill_oai
    from tests.conftest import FIXTURES

    first = (FIXTURES / "oai_pmh_listrecords_arxivRaw.xml").read_text(encoding="utf-8")
    last = re.sub(r"<resumptionToken[^>]*>[^<]*</resumptionToken>", "<resumptionToken/>", first)
    asked: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        token = request.url.params.get("resumptionToken")
        asked.append(token or "start")
        return httpx.Response(200, text=last if token else first, headers={"Content-Type": "text/xml"})

    settings = Settings(_env_file=None, OAI_PMH_URL="http://127.0.0.1:9/oai")  # type: ignore[call-arg]
    db = tmp_path / "o.db"

    def client() -> PoliteClient:
        return PoliteClient(settings, transport=httpx.MockTransport(handler), min_interval=0, sleep=_no_sleep)

    cut = asyncio.run(backfill_oai(db, settings, client=client(), limit=2))
    assert cut.records == 2 and not cut.done
    stats = asyncio.run(backfill_oai(db, settings, client=client()))
    assert stats.done and asked == ["start", "start", "726959|1001"]
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT count(*), count(DISTINCT arxiv_id), min(routed) FROM papers").fetchone() == (6, 6, 1)
    assert index_agrees(conn)
    conn.close()
    again = asyncio.run(backfill_oai(db, settings, client=client()))
    assert again.done and again.records == 0 and len(asked) == 3  # a finished harvest asks nothing more


async def _no_sleep(_: float) -> None:
    return None

"""Bulk history: the arXiv metadata snapshot (JSON lines) and OAI-PMH pages, streamed into SQLite.

Speed comes from big transactions on one sync connection: each batch of records is looked up, merged with what
is stored, inserted, indexed in FTS5 and checkpointed (byte offset or resumption token in `meta`) in ONE
transaction. So a Ctrl-C or a kill loses at most the batch in flight, a restart resumes exactly after the last
committed batch, and the search index can never disagree with the rows: there is no moment where one is
written and the other is not. Backfilled papers are stored `routed=1`: history never triggers posts or alerts.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import multiprocessing as mp
import os
import queue as queue_mod
import sqlite3
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bot.models import Paper
from bot.settings import Settings
from storage import search_pairs
from storage.db import open_sync
from storage.search_index import rebuild_vocab_sync, refresh_vocab_sync
from storage.sqlite import INSERT_PAPER, PAPER_COLUMNS, UPDATE_PAPER, merge_paper, paper_from_row, paper_values

BATCH = 2_500
# FTS5 merge settings while a batch is flushed. By default every batch would leave several small segments (the
# pending-terms buffer, `hashsize`, is 1 MB) and FTS5 would merge them into the older ones over and over
# (automerge=4, and crisismerge=16 segments per level); a backfill only needs the index merged once, at the end
# (`optimize`). They are in force inside each batch transaction only: see BulkWriter.
BULK_FTS_CONFIG = (("automerge", 0), ("crisismerge", 64), ("hashsize", 64 << 20))
FTS_DEFAULTS = {"automerge": 4, "crisismerge": 16, "hashsize": 1 << 20}  # FTS5's own, when none is stored


@dataclass(slots=True)
class BackfillStats:
    records: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    bad: int = 0
    resumed_from: int | str | None = None
    seconds: float = 0.0
    done: bool = False
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "records": self.records, "inserted": self.inserted, "updated": self.updated,
            "unchanged": self.unchanged, "bad": self.bad, "resumed_from": self.resumed_from,
            "seconds": round(self.seconds, 2), "done": self.done, "errors": self.errors[-5:],
            "records_per_s": round(self.records / self.seconds, 1) if self.seconds > 0 else None,
        }


def _meta_get(conn: sqlite3.Connection, key: str) -> str | None:
    row = conn.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
    return str(row[0]) if row else None


def _meta_set(conn: sqlite3.Connection, key: str, value: str) -> None:
    conn.execute("INSERT INTO meta(key, value) VALUES (?,?) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                 (key, value))


def checkpoint_key(snapshot: Path) -> str:
    return f"backfill:snapshot:{snapshot.resolve()}"


class BulkWriter:
    """Writes batches of papers in single transactions; FTS5 is fed in bulk instead of row by row.

    The insert trigger is dropped and recreated inside each batch transaction: other connections only ever see
    the schema with the trigger (the write lock is held throughout), while the batch itself indexes its new
    rows with one INSERT ... SELECT, which lets FTS5 tokenise straight from the stored rows.

    With `bulk_fts`, FTS5's merge settings (BULK_FTS_CONFIG) are handled the same way: set at the start of each
    batch transaction and put back before its commit. FTS5 writes its pending terms out as a segment (doing the
    merging those settings govern) when a savepoint opens, so the batch opens and releases one before putting
    them back. They live in FTS5's %_config table, so they are never committed: a Ctrl-C or a kill -9 rolls
    them back with the batch, and the service never runs with them. (Were a future SQLite to stop flushing at a
    savepoint, the flush would happen at commit under the usual settings: slower, never wrong.)
    """

    def __init__(self, conn: sqlite3.Connection, *, source: str, seen_at: datetime | None = None,
                 bulk_fts: bool = False) -> None:
        self.conn = conn
        self.source = source
        self.seen = (seen_at or datetime.now(UTC)).isoformat()
        trig = conn.execute("SELECT sql FROM sqlite_master WHERE type='trigger' AND name='papers_ai'").fetchone()
        self._insert_trigger: str | None = trig[0] if trig else None
        # The FTS5 table's own columns (same names in `papers`, its content table): whatever the schema says.
        self._fts_columns = ", ".join(str(r[1]) for r in conn.execute("PRAGMA table_info(papers_fts)"))
        stored = dict(conn.execute("SELECT k, v FROM papers_fts_config"))
        self._fts_usual = tuple((k, stored.get(k, FTS_DEFAULTS[k])) for k, _ in BULK_FTS_CONFIG)
        self._fts_bulk = BULK_FTS_CONFIG if bulk_fts else ()

    def _fts_config(self, settings: Sequence[tuple[str, Any]]) -> None:
        for key, value in settings:
            self.conn.execute("INSERT INTO papers_fts(papers_fts, rank) VALUES (?, ?)", (key, value))

    def write(self, papers: Sequence[Paper], stats: BackfillStats, *, checkpoint: tuple[str, str] | None) -> None:
        self.write_prepared(Prepared.of(papers), stats, checkpoint=checkpoint)

    def write_prepared(self, batch: Prepared, stats: BackfillStats, *, checkpoint: tuple[str, str] | None) -> None:
        # One record per id per batch: the later record wins, merged with the earlier (as upsert does).
        slot: dict[str, int] = {}
        values = list(batch.values)
        merged_in: dict[int, Paper] = {}
        keep: list[int] = []
        for i, pid in enumerate(batch.ids):
            j = slot.get(pid)
            if j is None:
                slot[pid] = len(keep)
                keep.append(i)
                continue
            prev = merged_in.get(keep[j]) or batch.paper(keep[j])
            both = merge_paper(prev, batch.paper(i))
            merged_in[i] = both
            values[i] = paper_values(both)
            keep[j] = i
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            self._fts_config(self._fts_bulk)
            ids = [batch.ids[i] for i in keep]
            existing: dict[str, Paper] = {}
            for k in range(0, len(ids), 500):
                chunk = ids[k : k + 500]
                marks = ",".join("?" * len(chunk))
                for row in conn.execute(f"SELECT {PAPER_COLUMNS} FROM papers WHERE arxiv_id IN ({marks})", chunk):
                    existing[row[0]] = paper_from_row(row)
            inserts: list[tuple[Any, ...]] = []
            updates: list[tuple[Any, ...]] = []
            for i in keep:
                pid = batch.ids[i]
                old = existing.get(pid)
                if old is None:
                    inserts.append((*values[i], self.seen, self.seen, 1))
                    continue
                merged = merge_paper(old, merged_in.get(i) or batch.paper(i))
                if merged == old:
                    stats.unchanged += 1
                    continue
                updates.append((*paper_values(merged)[1:], self.seen, pid))
            if inserts:
                first = int(conn.execute("SELECT coalesce(max(id), 0) FROM papers").fetchone()[0]) + 1
                if self._insert_trigger:
                    conn.execute("DROP TRIGGER papers_ai")
                conn.executemany(INSERT_PAPER, inserts)
                conn.execute(f"INSERT INTO papers_fts(rowid, {self._fts_columns}) SELECT id, {self._fts_columns} "
                             "FROM papers WHERE id >= ?", (first,))
                if self._insert_trigger:
                    conn.execute(self._insert_trigger)
            if updates:
                conn.executemany(UPDATE_PAPER, updates)  # the update trigger keeps FTS5 in step
            conn.executemany(
                "INSERT INTO paper_sources(arxiv_id, source, first_seen, last_seen) VALUES (?,?,?,?) "
                "ON CONFLICT(arxiv_id, source) DO UPDATE SET last_seen=excluded.last_seen",
                [(pid, self.source, self.seen, self.seen) for pid in ids],
            )
            if self._fts_bulk:
                conn.execute("SAVEPOINT fts_flush")  # FTS5 writes the batch's terms out now, under the bulk settings
                conn.execute("RELEASE fts_flush")
                self._fts_config(self._fts_usual)
            if checkpoint is not None:
                _meta_set(conn, *checkpoint)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        stats.inserted += len(inserts)
        stats.updated += len(updates)


@dataclass(slots=True)
class Prepared:
    """A batch ready to write: ids and row values computed up front (in a worker process for snapshots).

    The full Paper is only needed to merge with a stored or repeated record, which is rare in a backfill, so a
    snapshot batch carries where each record's line starts in the file and re-reads just those few (sending the
    lines back from the parser would double what the writer has to receive).
    """

    ids: list[str]
    values: list[tuple[Any, ...]]
    papers: list[Paper] | None = None
    offsets: list[int] | None = None
    snapshot: str | None = None

    @classmethod
    def of(cls, papers: Sequence[Paper]) -> Prepared:
        return cls([p.arxiv_id for p in papers], [paper_values(p) for p in papers], list(papers))

    def paper(self, i: int) -> Paper:
        if self.papers is not None:
            return self.papers[i]
        from adapters.sources.snapshot import parse_snapshot_line

        assert self.offsets is not None and self.snapshot is not None
        with open(self.snapshot, "rb") as handle:
            handle.seek(self.offsets[i])
            return parse_snapshot_line(handle.readline())


class _Progress:
    """A rich progress bar (records/s, ETA) when asked for; silent otherwise."""

    def __init__(self, enabled: bool, total: int | None, start: int, unit: str) -> None:
        self.bar: Any = None
        if not enabled:
            return
        from rich.progress import (
            BarColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.bar = Progress(
            TextColumn("[bold]backfill"), BarColumn(), TextColumn("{task.percentage:>5.1f}%"),
            TextColumn("{task.fields[records]:,} records · {task.fields[rate]:,.0f}/s"),
            TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), transient=False,
        )
        self.bar.start()
        self.task = self.bar.add_task(unit, total=total, completed=start, records=0, rate=0.0)
        self.t0 = time.monotonic()

    def update(self, position: int, records: int) -> None:
        if self.bar is not None:
            elapsed = max(1e-6, time.monotonic() - self.t0)
            self.bar.update(self.task, completed=position, records=records, rate=records / elapsed)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


def _phase(progress: bool, text: str) -> None:
    if progress:
        print(f"backfill: {text}...", file=sys.stderr, flush=True)


def _parse_worker(inbox: Any, outbox: Any, parent: int) -> None:
    """In a child process: parse chunks of snapshot lines into row values. Parsing JSON and normalising text is
    a third of the work of a backfill, so it runs beside the writing parent (whose FTS5 tokenising and merging
    are the rest); batches are small enough that the processes stay well under 400 MB together.

    The prefix vocabulary is not computed here: tokenising every text a second time in Python cost more than
    the rest of the parsing. New rows are marked by the schema's trigger and the vocabulary is refilled from
    FTS5's own term list once at the end (storage.search_index.refresh_vocab_sync).

    Waits are short and check the parent: a parent killed outright (kill -9) must not leave workers behind."""
    from adapters.sources.http import ParseError
    from adapters.sources.snapshot import parse_snapshot_line
    while True:
        try:
            item = inbox.get(timeout=1)
        except queue_mod.Empty:
            if os.getppid() != parent:
                os._exit(0)  # not return: the queue's feeder thread would wait forever on a dead reader
            continue
        if item is None:
            return
        snapshot, offset, lines = item
        batch = Prepared([], [], None, [], snapshot)
        offsets = batch.offsets
        assert offsets is not None
        bad = 0
        error = ""
        for line in lines:
            at = offset
            offset += len(line)
            if not line.strip():
                continue
            try:
                paper = parse_snapshot_line(line)
            except ParseError as exc:
                bad += 1
                error = str(exc)
                continue
            batch.ids.append(paper.arxiv_id)
            batch.values.append(paper_values(paper))
            offsets.append(at)
        while True:
            try:
                outbox.put((offset, batch, bad, error), timeout=1)
                break
            except queue_mod.Full:
                if os.getppid() != parent:
                    os._exit(0)


def _line_chunks(path: Path, start: int, size: int) -> Iterator[tuple[str, int, list[bytes]]]:
    """(file, offset of the first line, `size` lines) from `start` on; blank lines count and are skipped later.
    The parent only cuts the file, in C: a Python loop over every line cost the writer ~4 s per million."""
    with open(path, "rb") as handle:
        handle.seek(start)
        offset = start
        while lines := list(itertools.islice(handle, size)):
            yield str(path), offset, lines
            offset += sum(map(len, lines))


def _parsed_batches(path: Path, start: int, batch_size: int, workers: int = 2
                    ) -> Iterator[tuple[int, Prepared, int, str]]:
    """(offset after the batch, prepared rows, bad lines, last error) in file order, parsed by `workers`
    child processes in round robin. Each worker has at most one chunk queued each way: memory stays bounded."""
    ctx = mp.get_context("fork")
    inboxes = [ctx.Queue(maxsize=1) for _ in range(workers)]
    outboxes = [ctx.Queue(maxsize=1) for _ in range(workers)]
    procs = [ctx.Process(target=_parse_worker, args=(inboxes[w], outboxes[w], os.getpid()), daemon=True)
             for w in range(workers)]
    for proc in procs:
        proc.start()
    chunks = _line_chunks(path, start, batch_size)
    in_flight = 0
    try:
        for w in range(workers):  # prime: every worker gets one chunk before we wait on any
            nxt = next(chunks, None)
            if nxt is None:
                break
            inboxes[w].put(nxt)
            in_flight += 1
        k = 0
        while in_flight:
            w = k % workers
            while True:
                try:
                    item = outboxes[w].get(timeout=5)
                    break
                except queue_mod.Empty:
                    if not procs[w].is_alive():
                        raise RuntimeError(f"a snapshot reader stopped (exit code {procs[w].exitcode})") from None
            in_flight -= 1
            nxt = next(chunks, None)
            if nxt is not None:
                inboxes[w].put(nxt)  # refill before writing, so parsing overlaps the write
                in_flight += 1
            k += 1
            yield item
    finally:
        for w, proc in enumerate(procs):
            if proc.is_alive():
                with contextlib.suppress(queue_mod.Full):
                    inboxes[w].put_nowait(None)
                proc.join(timeout=1)
                if proc.is_alive():
                    proc.terminate()
                    proc.join(timeout=5)


def backfill_snapshot(
    db_path: Path | str,
    snapshot: Path | str,
    *,
    limit: int | None = None,
    progress: bool = False,
    batch_size: int = BATCH,
    on_batch: Callable[[BackfillStats], None] | None = None,
    optimize: bool = True,
) -> BackfillStats:
    """Stream a snapshot file into the database, resuming from its checkpoint. Returns the counts."""
    path = Path(snapshot)
    stats = BackfillStats()
    t0 = time.monotonic()
    conn = open_sync(db_path)
    try:
        key = checkpoint_key(path)
        start = int(_meta_get(conn, key) or 0)
        stats.resumed_from = start or None
        # Only the snapshot is merged at the end; an OAI harvest is paced by the network, and its writer keeps
        # FTS5's usual merging so an incremental harvest leaves a tidy index without a full `optimize`.
        writer = BulkWriter(conn, source="snapshot", bulk_fts=True)
        size = path.stat().st_size
        bar = _Progress(progress, size, start, "bytes")
        try:
            for offset, batch, bad, last_error in _parsed_batches(path, start, batch_size):
                n = len(batch.ids)
                if limit is not None and stats.records + n > limit:
                    # A cut batch has no byte offset to resume from; keep the previous checkpoint, so a later
                    # run re-reads this batch and merges the part already stored (merging is idempotent).
                    keep = max(0, limit - stats.records)
                    assert batch.offsets is not None
                    batch = Prepared(batch.ids[:keep], batch.values[:keep], None, batch.offsets[:keep], batch.snapshot)
                    n, offset = keep, -1
                stats.bad += bad
                if last_error:
                    stats.errors[-1:] = [last_error]
                writer.write_prepared(batch, stats, checkpoint=(key, str(offset)) if offset >= 0 else None)
                stats.records += n
                bar.update(max(offset, 0), stats.records)
                if on_batch is not None:
                    on_batch(stats)
                if limit is not None and stats.records >= limit:
                    break
            else:
                stats.done = True
        finally:
            bar.close()
        # The last steps take a minute or two at millions of papers: say what is going on after the bar.
        if optimize and stats.inserted:
            _phase(progress, "merging the search index into one segment")
            merge_segments(conn)
        _phase(progress, "refilling the prefix vocabulary and the word-pair index")
        refresh_derived(conn)
    finally:
        conn.close()
    stats.seconds = time.monotonic() - t0
    return stats


def refresh_derived(conn: sqlite3.Connection) -> None:
    """The derived search data in step with the rows after a bulk load: every new row was marked, so the prefix
    vocabulary is refilled from FTS5 in one pass and the pair index rebuilt over the newest papers (or, for a
    few marks, both folded in)."""
    refresh_vocab_sync(conn)
    search_pairs.refresh_sync(conn)


def merge_segments(conn: sqlite3.Connection) -> None:
    """Merge FTS5's segments into one b-tree: queries then read one doclist per term instead of dozens."""
    conn.execute("INSERT INTO papers_fts(papers_fts) VALUES ('optimize')")


async def backfill_oai(db_path: Path | str, settings: Settings, *, client: Any = None, limit: int | None = None,
                       progress: bool = False, stats: BackfillStats | None = None) -> BackfillStats:
    """Harvest OAI-PMH ListRecords into the database, resuming from the saved resumption token.

    `client` is an adapters.sources.http.PoliteClient (one is made from `settings` when None)."""
    from adapters.sources.http import PoliteClient
    from adapters.sources.oai_pmh import OaiPmhSource

    stats = stats if stats is not None else BackfillStats()
    t0 = time.monotonic()
    conn = open_sync(db_path)
    key = "backfill:oai:token"
    own = client is None
    http = client if client is not None else PoliteClient(settings)
    try:
        token = _meta_get(conn, key) or None
        if token == "done":
            stats.done = True
            return stats
        stats.resumed_from = token
        source = OaiPmhSource(http, settings)
        writer = BulkWriter(conn, source="oai")
        bar = _Progress(progress, None, 0, "records")
        try:
            async for page in source.pages(resumption_token=token):
                papers = list(page.papers)
                cut = limit is not None and len(papers) > limit - stats.records
                if limit is not None:
                    papers = papers[: max(0, limit - stats.records)]
                # The token saved with a page names the NEXT page, so a resume never re-reads a committed page;
                # "done" marks a finished harvest. A page cut short by --limit keeps the previous token: the
                # resume reads it again and merges the part already stored.
                checkpoint = None if cut else (key, page.resumption_token or "done")
                writer.write(papers, stats, checkpoint=checkpoint)
                stats.records += len(papers)
                stats.bad += page.skipped
                bar.update(stats.records, stats.records)
                if not page.resumption_token:
                    stats.done = True
                if limit is not None and stats.records >= limit:
                    break
        finally:
            bar.close()
        refresh_derived(conn)
    finally:
        if own:
            await http.aclose()
        conn.close()
    stats.seconds = time.monotonic() - t0
    return stats


def run_backfill(settings: Settings, *, snapshot: str | None, oai: bool, limit: int | None, json_out: bool) -> int:
    """`paperboy backfill`: returns the exit code; Ctrl-C keeps every committed batch and says how to resume."""
    stats = BackfillStats()
    t0 = time.monotonic()
    show = not json_out and os.isatty(2)
    try:
        if snapshot:
            if not Path(snapshot).is_file():
                print(f"paperboy: no snapshot file at {snapshot}")
                return 1
            stats = backfill_snapshot(settings.db, snapshot, limit=limit, progress=show)
        elif oai:
            asyncio.run(backfill_oai(settings.db, settings, limit=limit, progress=show, stats=stats))
    except KeyboardInterrupt:
        stats.seconds = time.monotonic() - t0
        print(f"\nStopped after {stats.records:,} records; every finished batch is saved. Run the same command "
              "again to resume where it stopped.")
        return 130
    stats.seconds = stats.seconds or time.monotonic() - t0
    if json_out:
        print(json.dumps(stats.as_dict()))
    else:
        rate = f" ({stats.records / stats.seconds:,.0f}/s)" if stats.seconds > 0 else ""
        print(f"Backfilled {stats.records:,} records in {stats.seconds:,.1f}s{rate}: {stats.inserted:,} new, "
              f"{stats.updated:,} updated, {stats.unchanged:,} unchanged, {stats.bad:,} unreadable."
              + ("" if stats.done else " Not finished: run it again to continue."))
    return 0


def reindex_db(db_path: Path | str) -> dict[str, Any]:
    """Rebuild the FTS5 index from the `papers` rows (the store of record) and verify it; then the derived
    vocabulary and pair index from them."""
    t0 = time.monotonic()
    conn = open_sync(db_path)
    try:
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute("INSERT INTO papers_fts(papers_fts) VALUES ('rebuild')")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        merge_segments(conn)
        rebuild_vocab_sync(conn)
        search_pairs.refresh_sync(conn, rebuild=True)
        ok = index_agrees(conn)
        papers = int(conn.execute("SELECT count(*) FROM papers").fetchone()[0])
    finally:
        conn.close()
    return {"papers": papers, "index_ok": ok, "seconds": round(time.monotonic() - t0, 2)}


def index_agrees(conn: sqlite3.Connection) -> bool:
    """FTS5's own check that every indexed token matches the content rows (rank=1: compare with the content)."""
    try:
        conn.execute("INSERT INTO papers_fts(papers_fts, rank) VALUES ('integrity-check', 1)")
    except sqlite3.DatabaseError:
        return False
    return True


def reindex(settings: Settings, *, json_out: bool) -> int:
    result = reindex_db(settings.db)
    if json_out:
        print(json.dumps(result))
    else:
        state = "agrees with the stored papers" if result["index_ok"] else "STILL DISAGREES (report this)"
        print(f"Rebuilt the search index over {result['papers']:,} papers in {result['seconds']}s; it {state}.")
    return 0 if result["index_ok"] else 1

"""Database safety: `paperboy backup` (SQLite's online backup API) and the documented restore, migrations from every
earlier schema version, and a locked database or a full disk giving a clear error with no partial state."""

from __future__ import annotations

import resource
import shutil
import signal
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bot.query import parse
from storage.db import latest_version, open_sync
from storage.sqlite import Stores
from tests.conftest import FIXTURES, offline_env, run_cli

API_FIXTURE = FIXTURES / "arxiv_api_query_cat_cs.LG_OR_cs.AI.xml"
HF_FIXTURE = FIXTURES / "hf_daily_papers.json"


def _count(db: Path, table: str = "papers") -> int:
    conn = sqlite3.connect(str(db))
    try:
        return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
    finally:
        conn.close()


def _integrity(db: Path) -> str:
    conn = sqlite3.connect(str(db))
    try:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        conn.close()


def _ingest(tmp_path: Path, fixture: Path) -> subprocess.CompletedProcess[str]:
    return run_cli(["ingest", "--file", str(fixture)], tmp_path)


# ---------------------------------------------------------------------------------------------- backup

def test_backup_while_another_connection_is_writing_and_restore(tmp_path: Path) -> None:
    db = tmp_path / "paperboy.db"
    assert _ingest(tmp_path, HF_FIXTURE).returncode == 0
    committed = _count(db)
    # Another process-like connection is in the middle of a write transaction: the backup must be consistent and
    # contain exactly the committed state.
    writer = sqlite3.connect(str(db), isolation_level=None, timeout=10)
    writer.execute("BEGIN IMMEDIATE")
    writer.execute("DELETE FROM paper_sources")
    try:
        result = run_cli(["backup", str(tmp_path / "copy.db")], tmp_path)
    finally:
        writer.execute("ROLLBACK")
        writer.close()
    assert result.returncode == 0, result.stderr
    assert "integrity ok" in result.stdout and "Restore" in result.stdout
    copy = tmp_path / "copy.db"
    assert _integrity(copy) == "ok"
    assert _count(copy) == committed and _count(copy, "paper_sources") == _count(db, "paper_sources")
    # The documented restore: stop paperboy, copy the backup over the database file (and drop stale WAL files).
    assert _ingest(tmp_path, API_FIXTURE).returncode == 0
    assert _count(db) > committed
    for suffix in ("-wal", "-shm"):
        Path(str(db) + suffix).unlink(missing_ok=True)
    shutil.copyfile(copy, db)
    assert _count(db) == committed
    shown = run_cli(["search", "--json", "language"], tmp_path)
    assert shown.returncode == 0 and shown.stdout.startswith("[")


def test_backup_refuses_to_overwrite(tmp_path: Path) -> None:
    assert _ingest(tmp_path, HF_FIXTURE).returncode == 0
    (tmp_path / "exists.db").write_bytes(b"precious")
    result = run_cli(["backup", str(tmp_path / "exists.db")], tmp_path)
    assert result.returncode != 0 and "exists" in result.stderr and "Traceback" not in result.stderr
    assert (tmp_path / "exists.db").read_bytes() == b"precious"


# ---------------------------------------------------------------------------------------------- migrations

@pytest.mark.parametrize("version", range(latest_version()))
async def test_migrates_from_every_earlier_version(tmp_path: Path, version: int) -> None:
    db = tmp_path / "old.db"
    conn = open_sync(db, target=version)
    assert int(conn.execute("PRAGMA user_version").fetchone()[0]) == version
    if version >= 1:
        now = datetime.now(UTC).isoformat()
        conn.execute("INSERT INTO papers(arxiv_id, title, abstract, first_seen, last_seen) VALUES (?,?,?,?,?)",
                     ("2601.00001", "Transformers for old databases", "A paper kept across migrations.", now, now))
        conn.execute("INSERT INTO subscriptions(user_key, platform, workspace, user_id, query, created) "
                     "VALUES ('console:local:me', 'console', 'local', 'me', 'transformer', ?)", (now,))
    conn.close()
    stores = await Stores.open(db)
    try:
        version_now = await stores.db.fetchone("PRAGMA user_version")
        assert int(version_now[0]) == latest_version()
        assert await stores.db.integrity_check() == "ok"
        if version >= 1:
            hits = await stores.papers.search(parse("transform*"))
            assert [h.paper.arxiv_id for h in hits.hits] == ["2601.00001"]
            assert [s.query async for s in stores.subscriptions.all()] == ["transformer"]
    finally:
        await stores.close()


def test_a_newer_database_is_refused_unchanged(tmp_path: Path) -> None:
    db = tmp_path / "paperboy.db"
    conn = sqlite3.connect(str(db))
    conn.execute(f"PRAGMA user_version={latest_version() + 1}")
    conn.close()
    before = db.read_bytes()
    result = run_cli(["search", "anything"], tmp_path)
    assert result.returncode == 2 and "newer" in result.stderr and "Traceback" not in result.stderr
    assert db.read_bytes() == before


# ---------------------------------------------------------------------------------------------- locked, full

@pytest.mark.slow
def test_a_database_locked_by_another_process_gives_a_clear_error_and_no_partial_state(tmp_path: Path) -> None:
    db = tmp_path / "paperboy.db"
    assert _ingest(tmp_path, HF_FIXTURE).returncode == 0
    before = _count(db)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sqlite3,sys,time; c=sqlite3.connect(sys.argv[1], isolation_level=None); "
         "c.execute('BEGIN EXCLUSIVE'); print('locked', flush=True); time.sleep(60)", str(db)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        result = _ingest(tmp_path, API_FIXTURE)
    finally:
        holder.kill()
        holder.wait()
    assert result.returncode != 0
    assert "locked by another process" in result.stderr and "Traceback" not in result.stderr
    assert _count(db) == before and _integrity(db) == "ok"
    # Once the other process is gone, the same command works.
    assert _ingest(tmp_path, API_FIXTURE).returncode == 0 and _count(db) > before


def _full_disk(limit: int) -> None:
    # A file-size limit makes every write past `limit` bytes fail like a full disk (EFBIG instead of ENOSPC).
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


def _ingest_on_full_disk(tmp_path: Path) -> tuple[subprocess.CompletedProcess[str], int]:
    db = tmp_path / "paperboy.db"
    assert _ingest(tmp_path, HF_FIXTURE).returncode == 0
    before = _count(db)
    result = subprocess.run([sys.executable, "-m", "bot.cli", "ingest", "--file", str(API_FIXTURE)],
                            capture_output=True, text=True, cwd=tmp_path, env=offline_env(tmp_path), timeout=60,
                            preexec_fn=lambda: _full_disk(40_000))
    return result, before


def test_a_full_disk_leaves_no_partial_state(tmp_path: Path) -> None:
    result, before = _ingest_on_full_disk(tmp_path)
    db = tmp_path / "paperboy.db"
    assert result.returncode != 0
    assert _integrity(db) == "ok"
    assert _count(db) == before  # the file's 20 papers: all or none, and here none


def test_a_full_disk_gives_a_clear_error(tmp_path: Path) -> None:
    result, _ = _ingest_on_full_disk(tmp_path)
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("paperboy:")



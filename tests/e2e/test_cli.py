"""The `paperboy` command as a user runs it: real subprocesses, a temporary database, no network."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from tests.conftest import FIXTURES, run_cli

pytestmark = pytest.mark.slow


def test_demo_shows_thread_alert_and_searches(tmp_path: Path) -> None:
    res = run_cli(["demo"], tmp_path)
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert "thread «Papers ·" in out  # the daily thread opener as the console posts it
    assert "new papers** for cs.LG" in out
    assert "match your alerts" in out  # the DM alert for the sample subscription
    assert "Matched:" in out
    assert '$ search "large language model"' in out and "Top " in out
    assert "Traceback" not in out + res.stderr


def test_chat_say_runs_one_command_each(tmp_path: Path) -> None:
    res = run_cli(["chat", "--say", "search diffusion", "--say", "/papers show 2604.26951",
                   "--say", 'search "', "--say", "frobnicate"], tmp_path)
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert "for `diffusion`" in out
    assert "Turning the TIDE" in out  # show 2604.26951
    assert "Nothing to search for" in out  # the lone quote gets an explanation
    assert "I don't know the command `frobnicate`" in out
    assert "Traceback" not in out + res.stderr


def test_hostile_queries_never_trace(tmp_path: Path) -> None:
    hostile = ["search '; DROP TABLE papers; --", "search NEAR(a b", "search ((((x", "search " + "a" * 5000,
               "search \u202etxet\u200d", "search ti:", "search since:yesterday", "search -survey",
               "subscribe a OR -b", "show ../../etc/passwd", "why 9999.99999"]
    args = []
    for h in hostile:
        args += ["--say", h]
    res = run_cli(["chat", *args], tmp_path)
    assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stdout + res.stderr
    assert "characters" in res.stdout  # the 5000-character query is refused with its length
    assert "can't be only exclusions" in res.stdout


def test_ingest_every_fixture_then_search_json_and_show(tmp_path: Path) -> None:
    files = sorted(str(p) for p in FIXTURES.iterdir() if p.suffix in (".xml", ".json"))
    assert len(files) == 6
    res = run_cli(["ingest", "--file", *files], tmp_path)
    assert res.returncode == 0, res.stderr
    assert "incorrect id format for abc" in res.stdout  # the error feed is reported, not stored
    res = run_cli(["search", "--json", "--limit", "5", "diffusion"], tmp_path)
    assert res.returncode == 0, res.stderr
    hits = json.loads(res.stdout)
    assert hits and len(hits) <= 5
    for h in hits:
        assert {"arxiv_id", "title", "authors", "categories", "published", "url", "score"} <= set(h)
        assert "v" not in h["arxiv_id"].split(".")[-1]  # versionless id
        assert isinstance(h["authors"], list) and isinstance(h["categories"], list)
    res = run_cli(["show", "--json", "astro-ph/0601001v1"], tmp_path)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["arxiv_id"] == "astro-ph/0601001"
    con = sqlite3.connect(tmp_path / "paperboy.db")
    assert con.execute("SELECT count(*) FROM papers WHERE title='Error'").fetchone()[0] == 0
    dupes = con.execute("SELECT count(*) - count(DISTINCT arxiv_id) FROM papers").fetchone()[0]
    assert dupes == 0


def test_run_reads_stdin_and_exits_at_end_of_input(tmp_path: Path) -> None:
    res = run_cli(["run"], tmp_path, stdin="search transformer\nsubscribe diffusion\nsubscriptions\n")
    assert res.returncode == 0, res.stderr
    assert "Sources unreachable: rss, hf" in res.stdout  # one line, then the sample
    assert "Loaded 60 bundled sample papers" in res.stdout
    assert "Alert #1 saved" in res.stdout and "1. `diffusion`" in res.stdout


def test_backup_is_a_consistent_copy(tmp_path: Path) -> None:
    assert run_cli(["chat", "--say", "status"], tmp_path).returncode == 0
    res = run_cli(["backup", str(tmp_path / "copy.db")], tmp_path)
    assert res.returncode == 0, res.stderr
    con = sqlite3.connect(tmp_path / "copy.db")
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert con.execute("SELECT count(*) FROM papers").fetchone()[0] == 60
    again = run_cli(["backup", str(tmp_path / "copy.db")], tmp_path)
    assert again.returncode == 1 and "exists" in again.stderr


def test_newer_database_is_refused_untouched(tmp_path: Path) -> None:
    db = tmp_path / "paperboy.db"
    con = sqlite3.connect(db)
    con.execute("PRAGMA user_version=999")
    con.close()
    before = db.read_bytes()
    res = run_cli(["chat", "--say", "status"], tmp_path)
    assert res.returncode == 2
    assert "newer than this paperboy knows" in res.stderr
    assert db.read_bytes() == before

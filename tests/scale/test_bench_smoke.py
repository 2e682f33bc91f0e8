"""`paperboy bench` end to end on a tiny tier: every benchmark runs and the JSON has the documented shape.
No timing is asserted: figures on a shared CI machine say nothing; the shape and the run do."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, offline_env

KEYS = {"bench", "tier", "case", "median_ms", "p99_ms", "throughput_per_s", "peak_rss_mb", "naive_ratio"}


@pytest.mark.slow
def test_bench_json_on_a_tiny_tier(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cmd = [sys.executable, "-m", "bot.cli", "bench", "--tiers", "1500", "--cache", str(cache), "--json"]
    proc = subprocess.run(cmd, cwd=REPO, env=offline_env(tmp_path), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    figures = json.loads(proc.stdout)
    assert isinstance(figures, list) and figures
    for f in figures:
        assert set(f) >= KEYS, f
        assert f["bench"] in {"search", "match", "backfill", "service"}
        assert isinstance(f["tier"], int) and isinstance(f["case"], str)
        for key in ("median_ms", "p99_ms", "throughput_per_s", "peak_rss_mb", "naive_ratio"):
            assert f[key] is None or isinstance(f[key], int | float), (key, f)
    by_bench = {f["bench"] for f in figures}
    assert by_bench == {"search", "match", "backfill", "service"}
    cases = {f["case"] for f in figures if f["bench"] == "search"}
    assert cases == {"rare", "common", "two-term AND", "phrase", "prefix", "fields"}
    searches = [f for f in figures if f["bench"] == "search"]
    assert all(f["median_ms"] is not None and f["naive_ratio"] is not None for f in searches)
    assert (cache / "corpus-1500-v1.db").exists()
    # A second run reuses the cached corpus instead of rebuilding it.
    again = subprocess.run(cmd, cwd=REPO, env=offline_env(tmp_path), capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "backfilling" not in again.stderr

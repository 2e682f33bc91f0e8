"""Crash anywhere, exactly once (console): the real `paperboy run` process SIGKILLed at seeded random points during
ingest, posting and alerting, restarted each time; the verdict compares the source fake, what the receiving end got
and the ledger (tests/reliability/harness.py). CI runs 12 kill points; `PAPERBOY_CRASH_POINTS=100` runs the full
count, `PAPERBOY_CRASH_SEED` another seed, `PAPERBOY_CRASH_REPORT=FILE` records the figures."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.reliability.harness import ConsoleReceiver, run_and_check


@pytest.mark.slow
async def test_sigkill_anywhere_delivers_exactly_once(tmp_path: Path) -> None:
    await run_and_check(tmp_path / "run", ConsoleReceiver, ci_points=12)
    # A kill inside a write can leave a partial last line; the next start cuts it, so none is left at the end.
    assert (tmp_path / "run" / "console-transcript.jsonl").read_bytes().endswith(b"\n")

"""Crash anywhere, exactly once: the real `paperboy run` process with the console adapter, SIGKILLed at seeded
random points during ingest, posting and alerting, restarted each time (tests/reliability/harness.py).

CI runs a reduced count; `PAPERBOY_CRASH_POINTS=100` runs the full one (and `PAPERBOY_CRASH_SEED` another seed).
Set `PAPERBOY_CRASH_REPORT=FILE` to append the run's figures as a JSON line (docs/RELIABILITY.md quotes them).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.reliability.harness import ConsoleReceiver, Verdict, kill_points_from_env, run_harness, seed_from_env


def report(verdict: Verdict) -> None:
    target = os.environ.get("PAPERBOY_CRASH_REPORT")
    if target:
        with Path(target).open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(verdict.summary()) + "\n")


@pytest.mark.slow
async def test_console_survives_sigkill_anywhere_exactly_once(tmp_path: Path) -> None:
    points = kill_points_from_env()
    verdict = await run_harness(tmp_path / "run", ConsoleReceiver, seed=seed_from_env(), kill_points=points)
    report(verdict)
    assert verdict.problems == [], json.dumps(verdict.summary(), indent=1)
    assert len(verdict.kill_points) == points
    # The run did real work at every stage: several feed days, threads and alerts, kills inside deliveries.
    assert verdict.generations >= 2
    assert verdict.channel_messages > verdict.announced  # every paper plus the openers
    assert verdict.dm_messages > 0 and verdict.alert_papers > 0
    assert sum(1 for k in verdict.kill_points if k.messages_in_life > 0) >= points // 3

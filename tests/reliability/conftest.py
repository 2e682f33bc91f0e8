"""Reports the fuzz and fault counts of a session when `PAPERBOY_FUZZ_REPORT=FILE` is set (see docs/RELIABILITY.md)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    target = os.environ.get("PAPERBOY_FUZZ_REPORT")
    if not target:
        return
    from tests.reliability.fuzzing import FUZZED
    from tests.reliability.support import INJECTED

    with Path(target).open("a", encoding="utf-8") as fh:
        fh.write(json.dumps({"fuzzed": FUZZED, "fuzzed_total": sum(FUZZED.values()),
                             "faults_injected": dict(sorted(INJECTED.items())),
                             "faults_total": sum(INJECTED.values()), "exit": int(exitstatus)}) + "\n")

"""The console's transcript (what "the console received") survives a kill inside a write."""

from __future__ import annotations

import io
import json
from pathlib import Path

from adapters.console import ConsolePlatform


async def test_start_cuts_a_line_a_kill_left_half_written(tmp_path: Path) -> None:
    transcript = tmp_path / "t.jsonl"
    whole = json.dumps({"key": "post:1", "kind": "post"}) + "\n"
    cases = {
        whole + whole[:17]: whole,  # the last line torn: cut back to the last whole one
        whole[:9]: "",  # the only line torn
        whole * 2: whole * 2,  # nothing torn: untouched
        "": "",
        whole + "x" * 200_000: whole,  # a torn line longer than one read back
    }
    for before, after in cases.items():
        transcript.write_text(before, encoding="utf-8")
        platform = ConsolePlatform(out=io.StringIO(), transcript=transcript)
        await platform.start()
        assert transcript.read_text(encoding="utf-8") == after
    await ConsolePlatform(out=io.StringIO(), transcript=tmp_path / "none.jsonl").start()  # no file yet: fine
    assert not (tmp_path / "none.jsonl").exists()

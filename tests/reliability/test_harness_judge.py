"""The crash harness's verdict must be able to fail: a doctored transcript is caught."""

from __future__ import annotations

import io
from pathlib import Path

from adapters.console import ConsolePlatform
from bot.models import Delivery, DeliveryState, Reply
from tests.reliability.harness import ConsoleReceiver, judge, run_harness
from tests.reliability.source_fake import SourceFake


def _delivery(i: int, attempts: int) -> Delivery:
    return Delivery(id=i, key=f"k{i}", platform="console", target="console:local:console", kind="post",
                    state=DeliveryState.PENDING, attempts=attempts, paper_ids=(f"2701.0000{i}",))


async def test_console_transcript_reconciles_a_resend(tmp_path: Path) -> None:
    receiver = ConsoleReceiver(tmp_path)
    console = ConsolePlatform(None, io.StringIO(), transcript=receiver.transcript)
    reply = Reply(text="hello")
    first = await console.send(_delivery(1, 1), reply, thread_name=None, parent_id="x")
    # The crash came after the send and before mark_sent: the resume (attempts 2) must not print it again.
    again = await console.send(_delivery(1, 2), reply, thread_name=None, parent_id="x")
    other = await console.send(_delivery(2, 2), reply, thread_name=None, parent_id="x")
    assert first.message_id == again.message_id == "console-1"
    assert other.ok
    got = receiver.received()
    assert [r.key for r in got] == ["k1", "k2"]
    assert got[0].paper_ids == ("2701.00001",)


async def test_the_verdict_catches_a_duplicate_and_a_loss(tmp_path: Path) -> None:
    """A clean run (no kill) passes; the same run's transcript with one line doubled, or one line dropped, fails."""
    workdir = tmp_path / "run"
    verdict = await run_harness(workdir, ConsoleReceiver, seed=7, kill_points=0)
    assert verdict.problems == []
    receiver = ConsoleReceiver(workdir)
    lines = receiver.transcript.read_text().splitlines(keepends=True)
    post = next(i for i, line in enumerate(lines) if '"kind": "post"' in line)
    source = SourceFake()
    source.served[0] = source.current()  # the run served generation 0 only (no kill, no advance)

    async def verdict_for(text: str) -> list[str]:
        receiver.transcript.write_text(text)
        again = await judge(workdir / "paperboy.db", source, receiver, seed=7, points=[], clean_exit=True,
                            started=0.0)
        return again.problems

    assert await verdict_for("".join(lines)) == []
    doubled = await verdict_for("".join([*lines[: post + 1], lines[post], *lines[post + 1:]]))
    assert any("duplicate" in p for p in doubled)
    dropped = await verdict_for("".join(lines[:post] + lines[post + 1:]))
    assert any("never reached" in p for p in dropped) and any("ledger" in p for p in dropped)


async def test_the_verdict_catches_a_secret_in_the_logs(tmp_path: Path) -> None:
    workdir = tmp_path / "run"
    await run_harness(workdir, ConsoleReceiver, seed=8, kill_points=0)

    class Leaky(ConsoleReceiver):
        def secrets(self) -> tuple[str, ...]:
            return ("xoxb-leaked-token",)

    receiver = Leaky(workdir)
    source = SourceFake()
    source.served[0] = source.current()
    (workdir / "life-000.err").write_text("INFO something Authorization: Bearer xoxb-leaked-token\n")
    verdict = await judge(workdir / "paperboy.db", source, receiver, seed=8, points=[], clean_exit=True, started=0.0)
    assert any("secrets" in p for p in verdict.problems)

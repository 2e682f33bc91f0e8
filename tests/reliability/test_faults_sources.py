"""Faults survived, sources: every faulty answer a real feed gives is retried with backoff or parked with a visible
reason in `status`, a failing source never stops the other, and the next good answer is stored exactly once.

Whole-bot tests: the real App, SQLite store and source adapters, over HTTP on loopback (tests/reliability/
source_fake.py serves the recorded fixtures and scripts the faults).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.app import App
from tests.reliability.source_fake import SourceFake
from tests.reliability.support import INJECTED, console_app, fast_sources, say


@pytest.fixture
async def source() -> AsyncIterator[SourceFake]:
    fake = await SourceFake(copies=1).start()
    yield fake
    await fake.stop()
    INJECTED.update({f"source {kind}": n for kind, n in fake.injected.items()})


async def ingest(app: App, source: SourceFake, **kw: float) -> dict[str, str]:
    client, sources = fast_sources(source, app.settings, **kw)  # type: ignore[arg-type]
    try:
        reports = await app.ingest(sources)
    finally:
        await client.aclose()
    return {r.source: f"{r.outcome}: {r.detail}" for r in reports}


async def stored(app: App, ids: tuple[str, ...]) -> int:
    return len(await app.d.papers.get_many(list(ids)))


async def queued(app: App) -> list[str]:
    from adapters.console import CONSOLE_CHANNEL

    return await app.d.channels.queued(CONSOLE_CHANNEL)


async def test_clean_run_baseline(tmp_path: Path, source: SourceFake) -> None:
    async with console_app(tmp_path) as (app, _):
        outcomes = await ingest(app, source)
        assert outcomes["rss"].startswith("ok") and outcomes["hf"].startswith("ok")
        gen = source.current()
        assert await stored(app, gen.announced) == len(gen.announced)
        assert sorted(await queued(app)) == sorted(gen.announced)


@pytest.mark.parametrize("status", [429, 503])
async def test_retry_after_is_honoured_and_the_retry_succeeds(tmp_path: Path, source: SourceFake, status: int) -> None:
    source.fail("rss", "status", status=status, retry_after="1")
    async with console_app(tmp_path) as (app, _):
        started = time.monotonic()
        outcomes = await ingest(app, source)
        assert time.monotonic() - started >= 0.9  # the Retry-After second was waited out, not hammered through
        assert outcomes["rss"].startswith("ok")
        assert source.requests["rss"] == 2
        gen = source.current()
        assert await stored(app, gen.announced) == len(gen.announced)


FAULTS: list[tuple[str, dict[str, object], str]] = [
    # (kind, extra, what `status` must say)
    ("status", {"status": 503, "retry_after": "1", "times": 10}, "503"),
    ("status", {"status": 429, "retry_after": "1", "times": 10}, "429"),
    ("timeout", {"delay": 1.2, "times": 10}, "rss: error"),
    ("truncated", {"times": 10}, "rss: error"),
    ("html", {"times": 10}, "rss: error"),
]


@pytest.mark.parametrize(("kind", "extra", "shown"), FAULTS,
                         ids=[kind + str(extra.get("status", "")) for kind, extra, _ in FAULTS])
async def test_a_failing_feed_is_parked_with_a_reason_then_recovers_once(
        tmp_path: Path, source: SourceFake, kind: str, extra: dict[str, object], shown: str) -> None:
    source.fail("rss", kind, **extra)  # type: ignore[arg-type]
    async with console_app(tmp_path) as (app, receiver):
        outcomes = await ingest(app, source, tries=2, timeout=0.5)
        assert outcomes["rss"].startswith("error"), outcomes
        # The other source is not held up by the failing one.
        assert outcomes["hf"].startswith("ok")
        gen = source.current()
        rss_ids = tuple(i for i in gen.announced if i.startswith("27"))
        assert await stored(app, rss_ids) == 0
        status = (await say(app, "status")).text
        assert shown in status and "rss: error" in status
        # The fault passes; the next run stores and queues every paper once, and delivery sends each once.
        source.faults["rss"].clear()
        outcomes = await ingest(app, source)
        assert outcomes["rss"].startswith("ok")
        assert await stored(app, gen.announced) == len(gen.announced)
        await ingest(app, source)  # a third, clean run changes nothing
        assert sorted(await queued(app)) == sorted(gen.announced)
        await say(app, "post")
        await app.deliver()
        posted = [p for r in receiver.received() for p in r.paper_ids]
        assert sorted(posted) == sorted(gen.announced)
        assert "rss: ok" in (await say(app, "status")).text


async def test_empty_feed_is_quiet_not_an_error(tmp_path: Path, source: SourceFake) -> None:
    source.fail("rss", "empty")
    source.fail("hf", "empty", times=2)
    async with console_app(tmp_path) as (app, _):
        outcomes = await ingest(app, source)
        assert outcomes["rss"].startswith("quiet") and outcomes["hf"].startswith("quiet")
        assert await app.d.papers.count() == 0


async def test_stale_feed_is_visible_in_status(tmp_path: Path, source: SourceFake) -> None:
    source.fail("rss", "stale")
    async with console_app(tmp_path) as (app, _):
        outcomes = await ingest(app, source)
        assert outcomes["rss"].startswith("stale")
        status = (await say(app, "status")).text
        assert "rss: stale" in status and "expected" in status


async def test_a_feed_that_repeats_yesterday_posts_nothing_twice(tmp_path: Path, source: SourceFake) -> None:
    async with console_app(tmp_path) as (app, receiver):
        await ingest(app, source)
        await say(app, "post")
        await app.deliver()
        first = len(receiver.received())
        source.advance()
        source.fail("rss", "repeat")
        source.fail("hf", "repeat", times=2)
        await ingest(app, source)
        assert await queued(app) == []
        reply = await say(app, "post")
        assert "Nothing is queued" in reply.text
        await app.deliver()
        assert len(receiver.received()) == first
        # When today's feed does come, it is posted, once.
        await ingest(app, source)
        await say(app, "post")
        await app.deliver()
        posted = [p for r in receiver.received() for p in r.paper_ids]
        assert len(posted) == len(set(posted)) == 2 * len(source.current().announced)


async def test_hf_failing_does_not_block_the_arxiv_feed(tmp_path: Path, source: SourceFake) -> None:
    source.fail("hf", "status", status=500, times=20)
    async with console_app(tmp_path) as (app, _):
        outcomes = await ingest(app, source, tries=2)
        assert outcomes["hf"].startswith("error") and outcomes["rss"].startswith("ok")
        rss_ids = tuple(i for i in source.current().announced if i.startswith("27"))
        assert await stored(app, rss_ids) == len(rss_ids)
        assert "hf: error" in (await say(app, "status")).text

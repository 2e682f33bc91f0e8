"""Searches run on the store's own read connections (SEARCH_READERS), beside the connection every write uses."""

from __future__ import annotations

import asyncio
from pathlib import Path

from bot.query import parse
from storage.sqlite import Stores
from tests.core.fakes import T0, make_paper


async def test_concurrent_searches_share_the_read_connections_and_see_every_commit(tmp_path: Path) -> None:
    stores = await Stores.open(tmp_path / "pool.db", readers=2)
    try:
        await stores.papers.upsert([make_paper("2611.00001", title="Graph diffusion models")], source="rss", seen_at=T0)
        assert [h.paper.title for h in (await stores.papers.search(parse("graph"))).hits] == ["Graph diffusion models"]
        await stores.papers.upsert([make_paper("2611.00002", title="Graph transformers")], source="rss", seen_at=T0)
        # Twenty at once, words and prefixes (a prefix folds new words into the vocabulary: a write, on the
        # main connection), on two connections; each sees what was committed before it started.
        results = await asyncio.gather(*(stores.papers.search(parse(q), count=True)
                                         for q in ["graph", "transf*", "grap*", "diffusion"] * 5))
        assert [r.total for r in results[:4]] == [2, 1, 2, 1]
        assert all(r.error is None for r in results)
        assert len(stores.papers._opened) == 2
        assert len({id(db.conn) for db in stores.papers._opened} | {id(stores.db.conn)}) == 3
    finally:
        await stores.close()
    assert stores.papers._opened == []


async def test_a_search_does_not_see_or_wait_for_a_write_in_progress(tmp_path: Path) -> None:
    stores = await Stores.open(tmp_path / "pool.db", readers=1)
    try:
        await stores.papers.upsert([make_paper("2611.00001", title="Graph diffusion models")], source="rss", seen_at=T0)
        async with stores.db.write() as conn:
            await conn.execute("UPDATE papers SET title = 'Something else' WHERE id = 1")
            # Inside an open write transaction on the main connection: a reader sees the committed title.
            hits = (await asyncio.wait_for(stores.papers.search(parse("graph")), timeout=5)).hits
            assert [h.paper.title for h in hits] == ["Graph diffusion models"]
        assert (await stores.papers.search(parse("graph"))).hits == ()
    finally:
        await stores.close()

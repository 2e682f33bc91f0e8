"""Searches run on the store's own read connections (SEARCH_READERS), beside the connection every write uses."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from pathlib import Path
from typing import Any
from unittest import mock

from bot.query import parse
from storage.search_index import SearchPlanner
from storage.sqlite import Stores, _Lanes
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
        assert len({id(lane.conn) for lane in stores.papers._opened}) == 2
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


async def test_connections_go_first_come_first_served_and_the_warmest_first() -> None:
    lanes = _Lanes([("a", None), ("b", None)])  # type: ignore[list-item]  # any two values stand for lanes
    order: list[tuple[int, str]] = []

    async def search(user: int) -> None:
        lane = await lanes.get()
        order.append((user, lane[0]))  # type: ignore[arg-type]
        await asyncio.sleep(0)
        lanes.put(lane)

    first = await lanes.get()
    assert first[0] == "b"  # the one given back last
    lanes.put(first)
    assert (await lanes.get())[0] == "b"  # one user at a time keeps the same (warm) one
    lanes.put(first)

    async def greedy() -> list[int]:
        # Gives its connection back and asks again at once: it must queue behind the others already waiting.
        got = []
        for _ in range(3):
            lane = await lanes.get()
            got.append(len(order))
            order.append((0, lane[0]))  # type: ignore[arg-type]
            await asyncio.sleep(0)
            lanes.put(lane)
        return got

    held = [await lanes.get(), await lanes.get()]
    tasks = [asyncio.create_task(greedy()), *(asyncio.create_task(search(u)) for u in range(1, 5))]
    await asyncio.sleep(0)
    for lane in held:
        lanes.put(lane)
    await asyncio.gather(*tasks)
    users = [u for u, _ in order]
    assert users[:5] == [0, 1, 2, 3, 4]  # first come, first served
    assert sorted(users) == [0, 0, 0, 1, 2, 3, 4]


async def test_a_search_cancelled_while_waiting_loses_no_connection() -> None:
    lanes = _Lanes([("a", None)])  # type: ignore[list-item]  # a stand-in lane
    held = await lanes.get()
    for handed_first in (False, True):
        waiting = asyncio.create_task(lanes.get())
        await asyncio.sleep(0)  # it waits now
        if handed_first:
            lanes.put(held)  # given to the waiting search, which is cancelled before it runs: it passes it on
            waiting.cancel()
        else:
            waiting.cancel()
            await asyncio.sleep(0)
            lanes.put(held)
        with contextlib.suppress(asyncio.CancelledError):
            await waiting
        held = await asyncio.wait_for(lanes.get(), timeout=1)
        assert held == ("a", None)


async def test_a_search_cancelled_while_running_keeps_its_connection_until_its_thread_is_done(
        tmp_path: Path) -> None:
    # The search runs on a worker thread; cancelling the task cannot stop the thread at once. Its connection
    # must not be handed to another search before the thread lets go of it (two threads on one connection).
    stores = await Stores.open(tmp_path / "pool.db", readers=1)
    try:
        await stores.papers.upsert([make_paper("2611.00001", title="Graph diffusion models")], source="rss", seen_at=T0)
        assert (await stores.papers.search(parse("graph"))).hits
        release = threading.Event()
        entered = threading.Event()
        in_thread: list[str] = []
        original = SearchPlanner.plan

        def slow_plan(self: SearchPlanner, *args: Any, **kwargs: Any) -> Any:
            in_thread.append("in")
            entered.set()
            release.wait(5)  # a long statement, as far as the event loop can tell
            try:
                return original(self, *args, **kwargs)
            finally:
                in_thread.append("out")

        with mock.patch.object(SearchPlanner, "plan", slow_plan):
            first = asyncio.create_task(stores.papers.search(parse("graph")))
            await asyncio.to_thread(entered.wait, 5)
            first.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await first
            second = asyncio.create_task(stores.papers.search(parse("diffusion")))
            await asyncio.sleep(0.2)
            assert not second.done() and in_thread == ["in"]  # it waits for the one connection
            release.set()
            hits = (await asyncio.wait_for(second, timeout=5)).hits
        assert in_thread[:2] == ["in", "out"]  # the cancelled search's thread finished before the next began
        assert [h.paper.title for h in hits] == ["Graph diffusion models"]
    finally:
        await stores.close()

"""A loopback fake of the paper sources (arXiv RSS, Hugging Face Daily Papers) with scripted faults.

It serves the real recorded fixtures from `../shared/fixtures/sources/`, with the arXiv ids rewritten per
*generation* (one generation = one announcement day's feed), so a long crash run keeps getting new papers
while every body stays the real format. Faults are scripted per route and consumed in order:

    status   answer `status` (429, 503, ...) with an optional Retry-After and body
    html     200 with an HTML error page (what a proxy or a maintenance page returns)
    truncated 200 with the feed cut in the middle of an element
    empty    200 with a valid feed that lists no papers
    stale    200 with the feed of an earlier day (the recorded one, dated 24 Sep 2026)
    repeat   200 with the previous generation's feed (a feed that repeats yesterday)
    timeout  no answer for `delay` seconds

Standalone (the crash harness runs the bot as a real process against it):
    python -m tests.reliability.source_fake --port 0
prints the port on its first stdout line. Control routes: GET /_fake/state, POST /_fake/advance,
POST /_fake/fail {"route": "rss"|"hf", "kind": ..., "times": n, ...}.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from aiohttp import web

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO.parent / "shared" / "fixtures" / "sources"
RSS_FIXTURE = FIXTURES / "arxiv_rss_cs.LG+cs.AI+cs.CL+stat.ML.xml"
HF_FIXTURE = FIXTURES / "hf_daily_papers.json"
EASTERN = ZoneInfo("America/New_York")

_ITEM = re.compile(r"<item>.*?</item>", re.DOTALL)
_RSS_ID = re.compile(r"\d{4}\.\d{4,5}")
_TYPE = re.compile(r"Announce Type:\s*([\w-]+)")
HTML_ERROR = b"<!DOCTYPE html><html><head><title>503 Service Unavailable</title></head><body><h1>Service " \
             b"Unavailable</h1><p>The server is temporarily unable to service your request.</p></body></html>"


@dataclass
class Fault:
    kind: str
    times: int = 1
    status: int = 503
    retry_after: str | None = None
    delay: float = 30.0


@dataclass
class Generation:
    number: int
    rss: bytes
    hf: bytes
    announced: tuple[str, ...]  # ids a bot must route: RSS new/cross and every HF paper
    replaced: tuple[str, ...]  # RSS replace/replace-cross (stored, never routed when first seen)


def _rss_day_header(now: datetime) -> str:
    midnight = now.astimezone(EASTERN).replace(hour=0, minute=0, second=0, microsecond=0)
    return format_datetime(midnight)


def build_generation(number: int, *, copies: int = 3, now: datetime | None = None) -> Generation:
    """Generation `number`: the recorded RSS items `copies` times and the recorded HF list, with fresh ids
    (RSS `27gg.xxxxx`, HF `4ggg.xxxxx`) so no two generations share a paper, dated today (ET)."""
    now = now or datetime.now(UTC)
    text = RSS_FIXTURE.read_text(encoding="utf-8")
    items = _ITEM.findall(text)
    head, tail = text[: text.index(items[0])], text[text.rindex(items[-1]) + len(items[-1]):]
    day = _rss_day_header(now)
    head = re.sub(r"<pubDate>[^<]*</pubDate>", f"<pubDate>{day}</pubDate>", head, count=1)
    head = re.sub(r"<lastBuildDate>[^<]*</lastBuildDate>", f"<lastBuildDate>{day}</lastBuildDate>", head)
    out_items: list[str] = []
    announced: list[str] = []
    replaced: list[str] = []
    for copy in range(copies):
        for index, item in enumerate(items):
            new_id = f"{2700 + number:04d}.{copy * 100 + index:05d}"
            rewritten = _RSS_ID.sub(new_id, item)
            rewritten = re.sub(r"<pubDate>[^<]*</pubDate>", f"<pubDate>{day}</pubDate>", rewritten)
            out_items.append(rewritten)
            m = _TYPE.search(item)
            (announced if m and m.group(1) in ("new", "cross") else replaced).append(new_id)
    rss = (head + "\n    ".join(out_items) + tail).encode("utf-8")
    hf_items: list[Any] = json.loads(HF_FIXTURE.read_text(encoding="utf-8"))
    for index, entry in enumerate(hf_items):
        new_id = f"{4000 + number:04d}.{index:05d}"
        entry["paper"]["id"] = new_id
        announced.append(new_id)
    return Generation(number, rss, json.dumps(hf_items).encode("utf-8"), tuple(announced), tuple(replaced))


@dataclass
class SourceFake:
    copies: int = 3
    generation: int = 0
    served: dict[int, Generation] = field(default_factory=dict)  # generations answered with 200 at least once
    faults: dict[str, list[Fault]] = field(default_factory=lambda: {"rss": [], "hf": []})
    requests: dict[str, int] = field(default_factory=lambda: {"rss": 0, "hf": 0})
    injected: dict[str, int] = field(default_factory=dict)  # fault kind -> times served
    port: int = 0
    _runner: web.AppRunner | None = None
    _cache: dict[int, Generation] = field(default_factory=dict)

    def current(self) -> Generation:
        if self.generation not in self._cache:
            self._cache[self.generation] = build_generation(self.generation, copies=self.copies)
        return self._cache[self.generation]

    def previous(self) -> Generation:
        number = max(0, self.generation - 1)
        if number not in self._cache:
            self._cache[number] = build_generation(number, copies=self.copies)
        return self._cache[number]

    def advance(self) -> int:
        self.generation += 1
        return self.generation

    def fail(self, route: str, kind: str, *, times: int = 1, status: int = 503, retry_after: str | None = None,
             delay: float = 30.0) -> None:
        self.faults[route].append(Fault(kind, times, status, retry_after, delay))

    def expected_announced(self) -> set[str]:
        return {pid for g in self.served.values() for pid in g.announced}

    # ---- serving ------------------------------------------------------------------------------------

    async def _fault(self, route: str) -> Fault | None:
        queue = self.faults[route]
        if not queue:
            return None
        fault = queue[0]
        fault.times -= 1
        if fault.times <= 0:
            queue.pop(0)
        self.injected[fault.kind if fault.kind != "status" else f"status {fault.status}"] = (
            self.injected.get(fault.kind if fault.kind != "status" else f"status {fault.status}", 0) + 1)
        return fault

    async def _answer(self, route: str, request: web.Request) -> web.StreamResponse:
        self.requests[route] += 1
        fault = await self._fault(route)
        gen = self.current()
        body = gen.rss if route == "rss" else gen.hf
        ctype = "application/rss+xml" if route == "rss" else "application/json"
        if fault is not None:
            if fault.kind == "status":
                headers = {"Retry-After": fault.retry_after} if fault.retry_after else {}
                return web.Response(status=fault.status, body=b"slow down" if fault.status == 429 else HTML_ERROR,
                                    headers=headers, content_type="text/html")
            if fault.kind == "html":
                return web.Response(status=200, body=HTML_ERROR, content_type="text/html")
            if fault.kind == "truncated":
                return web.Response(status=200, body=body[: len(body) // 2], content_type=ctype)
            if fault.kind == "timeout":
                await asyncio.sleep(fault.delay)
                return web.Response(status=504)
            if fault.kind == "empty":
                empty = _ITEM.sub("", gen.rss.decode()).encode() if route == "rss" else b"[]"
                return web.Response(status=200, body=empty, content_type=ctype)
            if fault.kind == "stale":
                stale = RSS_FIXTURE.read_bytes() if route == "rss" else body
                return web.Response(status=200, body=stale, content_type=ctype)
            if fault.kind == "repeat":
                prev = self.previous()
                self.served[prev.number] = prev
                return web.Response(status=200, body=prev.rss if route == "rss" else prev.hf, content_type=ctype)
        if route == "hf" and request.query.get("p", "0") != "0":
            return web.Response(status=200, body=b"[]", content_type=ctype)
        etag = f'"gen-{gen.number}-{route}"'
        if request.headers.get("If-None-Match") == etag:
            return web.Response(status=304, headers={"ETag": etag})
        self.served[gen.number] = gen
        return web.Response(status=200, body=body, content_type=ctype, headers={"ETag": etag})

    async def _rss(self, request: web.Request) -> web.StreamResponse:
        return await self._answer("rss", request)

    async def _hf(self, request: web.Request) -> web.StreamResponse:
        return await self._answer("hf", request)

    async def _control(self, request: web.Request) -> web.Response:
        what = request.match_info["what"]
        if what == "advance":
            return web.json_response({"generation": self.advance()})
        if what == "fail":
            data = await request.json()
            self.fail(data["route"], data["kind"], times=int(data.get("times", 1)),
                      status=int(data.get("status", 503)), retry_after=data.get("retry_after"),
                      delay=float(data.get("delay", 30.0)))
            return web.json_response({"ok": True})
        if what == "state":
            return web.json_response({"generation": self.generation, "requests": self.requests,
                                      "injected": self.injected,
                                      "served": {str(n): list(g.announced) for n, g in self.served.items()}})
        return web.json_response({"error": "unknown control"}, status=404)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/rss/{cats}", self._rss)
        app.router.add_get("/api/daily_papers", self._hf)
        app.router.add_route("*", "/_fake/{what}", self._control)
        return app

    async def start(self, port: int = 0) -> SourceFake:
        self._runner = web.AppRunner(self.app(), handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port)
        await site.start()
        server = site._server
        assert server is not None
        self.port = int(server.sockets[0].getsockname()[1])  # type: ignore[attr-defined]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def rss_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/rss/"

    @property
    def hf_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/daily_papers"


async def _serve(port: int, copies: int) -> None:
    fake = await SourceFake(copies=copies).start(port)
    print(fake.port, flush=True)
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.Event().wait()


def main() -> None:
    parser = argparse.ArgumentParser(description="A loopback fake of arXiv RSS and HF Daily Papers for tests.")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--copies", type=int, default=3, help="copies of the recorded RSS items per generation")
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args.port, args.copies))
    sys.exit(0)


if __name__ == "__main__":
    main()

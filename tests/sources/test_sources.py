"""The PaperSource implementations over MockTransport: real recordings plus hand-made faulty answers."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, date, datetime

import httpx

from adapters.sources.arxiv_api import ArxivApiSource
from adapters.sources.arxiv_rss import ArxivRssSource
from adapters.sources.hf_daily import HfDailySource
from adapters.sources.oai_pmh import OaiPmhSource, set_spec_for
from bot.ports import PaperSource
from bot.settings import Settings
from tests.sources.conftest import MakeClient, arxivpy_body, fixture_bytes

RSS = fixture_bytes("arxiv_rss_cs.LG+cs.AI+cs.CL+stat.ML.xml")
# 24 Sep 2026, 09:00 UTC = 05:00 ET: the feed of the recording is "today".
FEED_DAY_NOW = datetime(2026, 9, 24, 9, 0, tzinfo=UTC)
EMPTY_RSS = b"""<?xml version='1.0' encoding='UTF-8'?>
<rss version="2.0"><channel><title>cs.LG updates on arXiv.org</title>
<pubDate>Thu, 24 Sep 2026 00:00:00 -0400</pubDate></channel></rss>"""


def _entry(arxiv_id: str) -> str:
    return (
        f"<entry><id>http://arxiv.org/abs/{arxiv_id}v2</id><title>Paper {arxiv_id}</title>"
        f"<summary>About {arxiv_id}</summary><published>2026-09-20T10:00:00Z</published>"
        f"<updated>2026-09-22T10:00:00Z</updated><author><name>A. Author</name></author>"
        f'<arxiv:primary_category term="cs.LG"/><category term="cs.LG"/></entry>'
    )


def api_feed(ids: list[str], total: int, start: int = 0) -> bytes:
    return (
        '<feed xmlns="http://www.w3.org/2005/Atom" xmlns:opensearch="http://a9.com/-/spec/opensearch/1.1/" '
        'xmlns:arxiv="http://arxiv.org/schemas/atom">'
        f"<opensearch:totalResults>{total}</opensearch:totalResults>"
        f"<opensearch:startIndex>{start}</opensearch:startIndex>"
        f"<opensearch:itemsPerPage>{len(ids)}</opensearch:itemsPerPage>" + "".join(_entry(i) for i in ids) + "</feed>"
    ).encode()


def serve(*bodies: httpx.Response) -> tuple[Callable[[httpx.Request], httpx.Response], list[httpx.Request]]:
    queue = list(bodies)
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return queue.pop(0) if len(queue) > 1 else queue[0]

    return handler, seen


# --- RSS -------------------------------------------------------------------------------------------


async def test_rss_ok(make_client: MakeClient, settings: Settings) -> None:
    handler, seen = serve(httpx.Response(200, content=RSS))
    async with make_client(handler) as client:
        source: PaperSource = ArxivRssSource(client, settings)
        result = await source.fetch(FEED_DAY_NOW)
    assert str(seen[0].url) == "https://rss.arxiv.org/rss/cs.LG+cs.AI"
    assert result.outcome == "ok" and result.ok
    assert result.feed_day == date(2026, 9, 24)
    assert len(result.papers) == 4
    assert result.detail == "RSS feed for Thu 24 Sep 2026: 2 new, 1 cross, 1 replace"


async def test_rss_stale_feed_keeps_papers_and_asks_for_a_retry(make_client: MakeClient, settings: Settings) -> None:
    handler, _ = serve(httpx.Response(200, content=RSS))
    async with make_client(handler) as client:
        result = await ArxivRssSource(client, settings).fetch(datetime(2026, 9, 25, 5, 0, tzinfo=UTC))  # 01:00 ET
    assert result.outcome == "stale" and not result.ok
    assert result.feed_day == date(2026, 9, 24)
    assert len(result.papers) == 4  # nothing lost
    assert "expected Fri 25 Sep 2026" in result.detail


async def test_rss_stale_feed_is_not_masked_by_a_304(make_client: MakeClient, settings: Settings) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.headers.get("if-none-match"):
            return httpx.Response(304)
        return httpx.Response(200, content=RSS, headers={"ETag": '"x"'})

    later = datetime(2026, 9, 25, 5, 0, tzinfo=UTC)
    async with make_client(handler) as client:
        source = ArxivRssSource(client, settings)
        assert (await source.fetch(later)).outcome == "stale"
        assert (await source.fetch(later)).outcome == "stale"  # not "unchanged"


async def test_rss_quiet_day_and_unchanged(make_client: MakeClient, settings: Settings) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.headers.get("if-none-match") == '"e1"':
            return httpx.Response(304)
        return httpx.Response(200, content=EMPTY_RSS, headers={"ETag": '"e1"'})

    async with make_client(handler) as client:
        source = ArxivRssSource(client, settings)
        quiet = await source.fetch(FEED_DAY_NOW)
        again = await source.fetch(FEED_DAY_NOW)
    assert (quiet.outcome, quiet.papers, quiet.feed_day) == ("quiet", (), date(2026, 9, 24))
    assert again.outcome == "unchanged" and again.ok


async def test_rss_faulty_payloads_become_error_outcomes(make_client: MakeClient, settings: Settings) -> None:
    cases = {
        "truncated": httpx.Response(200, content=RSS[: len(RSS) // 2]),
        "html": httpx.Response(200, text="<!DOCTYPE html><html><head><title>Oops</title></head></html>"),
        "empty": httpx.Response(200, content=b""),
        "bad category": httpx.Response(400, text="Feed error for query cs.XX"),
    }
    details = {}
    for name, response in cases.items():
        handler, _ = serve(response)
        async with make_client(handler) as client:
            result = await ArxivRssSource(client, settings).fetch(FEED_DAY_NOW)
        assert result.outcome == "error" and result.papers == ()
        assert "\n" not in result.detail
        details[name] = result.detail
    assert details["truncated"].startswith("arXiv RSS feed: truncated or malformed XML")
    assert details["html"] == "arXiv RSS feed: got an HTML page instead of XML (Oops)"
    assert details["empty"] == "arXiv RSS feed: empty body"
    assert details["bad category"] == "arXiv RSS answered 400: Feed error for query cs.XX"


async def test_rss_repeated_503_is_an_error_with_retry_after(make_client: MakeClient, settings: Settings) -> None:
    handler, seen = serve(httpx.Response(503, headers={"Retry-After": "60"}))
    async with make_client(handler, max_tries=3) as client:
        result = await ArxivRssSource(client, settings).fetch(FEED_DAY_NOW)
    assert result.outcome == "error" and result.retry_after == 60.0
    assert result.detail == "arXiv RSS answered 503 after 3 tries; retrying at 12:01 UTC"
    assert len(seen) == 3


async def test_rss_timeout_is_an_error_outcome(make_client: MakeClient, settings: Settings) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectTimeout("no route", request=request)

    async with make_client(handler, max_tries=2) as client:
        result = await ArxivRssSource(client, settings).fetch(FEED_DAY_NOW)
    assert result.outcome == "error"
    assert result.detail.startswith("arXiv RSS timed out after 2 tries")


# --- API -------------------------------------------------------------------------------------------


async def test_api_query_pages_until_total(make_client: MakeClient, settings: Settings) -> None:
    pages = {0: ["2609.00001", "2609.00002"], 2: ["2609.00003", "2609.00004"], 4: ["2609.00005"]}

    def handler(request: httpx.Request) -> httpx.Response:
        start = int(request.url.params["start"])
        return httpx.Response(200, content=api_feed(pages[start], total=5, start=start))

    async with make_client(handler, min_interval=0) as client:
        result = await ArxivApiSource(client, settings, page_size=2).query("cat:cs.LG", max_results=100)
    assert [p.arxiv_id for p in result.papers] == [f"2609.0000{i}" for i in range(1, 6)]
    assert result.total_results == 5
    assert all(p.version == 2 and p.source == "api" for p in result.papers)


async def test_api_query_retries_an_empty_page(make_client: MakeClient, settings: Settings) -> None:
    calls: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        start = int(request.url.params["start"])
        calls.append(start)
        if start == 2 and calls.count(2) == 1:
            return httpx.Response(200, content=api_feed([], total=4, start=2))  # the known API flake
        ids = ["2609.00001", "2609.00002"] if start == 0 else ["2609.00003", "2609.00004"]
        return httpx.Response(200, content=api_feed(ids, total=4, start=start))

    async with make_client(handler, min_interval=0) as client:
        result = await ArxivApiSource(client, settings, page_size=2).query("cat:cs.LG", max_results=10)
    assert len(result.papers) == 4 and calls == [0, 2, 2]
    assert result.note == ""


async def test_api_query_gives_up_on_persistent_empty_pages(make_client: MakeClient, settings: Settings) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        start = int(request.url.params["start"])
        ids = ["2609.00001", "2609.00002"] if start == 0 else []
        return httpx.Response(200, content=api_feed(ids, total=9, start=start))

    async with make_client(handler, min_interval=0) as client:
        result = await ArxivApiSource(client, settings, page_size=2, empty_page_retries=2).query("x", max_results=9)
    assert len(result.papers) == 2
    assert result.note == "arXiv API returned empty pages at offset 2 of 9; stopped there"


async def test_api_by_ids_batches_and_reports_missing(make_client: MakeClient, settings: Settings) -> None:
    requested: list[list[str]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        ids = request.url.params["id_list"].split(",")
        requested.append(ids)
        present = [i for i in ids if not i.endswith("7")]  # the API silently drops unknown ids
        return httpx.Response(200, content=api_feed(present, total=len(present)))

    wanted = [f"2609.{n:05d}v1" for n in range(150)] + ["not an id", "2609.00001"]
    async with make_client(handler, min_interval=0) as client:
        lookup = await ArxivApiSource(client, settings).by_ids(wanted)
    assert [len(batch) for batch in requested] == [100, 50]
    assert len(lookup.papers) == 150 - 15
    assert "2609.00007" in lookup.missing and len(lookup.missing) == 15
    assert lookup.invalid == ("not an id",)


async def test_api_error_feed_is_an_error_not_a_paper(make_client: MakeClient, settings: Settings) -> None:
    body, status = arxivpy_body("arxiv_api_error_400_id_abc.arxivpy.json")
    handler, _ = serve(httpx.Response(status, content=body))
    async with make_client(handler) as client:
        result = await ArxivApiSource(client, settings).fetch(FEED_DAY_NOW)
    assert (result.outcome, result.papers) == ("error", ())
    assert result.detail == "arXiv API error: incorrect id format for abc"


async def test_api_fetch_recent_uses_a_date_window(make_client: MakeClient, settings: Settings) -> None:
    handler, seen = serve(httpx.Response(200, content=fixture_bytes("arxiv_api_query_cat_cs.LG_OR_cs.AI.xml")))
    async with make_client(handler) as client:
        result = await ArxivApiSource(client, settings, recent_limit=20).fetch(FEED_DAY_NOW)
    query = seen[0].url.params["search_query"]
    assert query == "(cat:cs.LG OR cat:cs.AI) AND submittedDate:[202609220900 TO 202609240900]"
    assert result.outcome == "ok" and len(result.papers) == 20


# --- Hugging Face ----------------------------------------------------------------------------------


def _hf_items(n: int, prefix: str, first: int = 0) -> bytes:
    items = [
        {
            "paper": {
                "id": f"{prefix}.{first + i:05d}",
                "title": f"T{i}",
                "summary": "s",
                "authors": [{"name": "A"}],
                "upvotes": i,
                "submittedOnDailyAt": "2026-09-24T00:00:00.000Z",
            }
        }
        for i in range(n)
    ]
    return json.dumps(items).encode()


async def test_hf_pages_today_and_yesterday(make_client: MakeClient, settings: Settings) -> None:
    seen: list[tuple[str, str]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        day, page = request.url.params["date"], request.url.params["p"]
        seen.append((day, page))
        assert request.url.params["limit"] == "3"
        if day == "2026-09-24":
            return httpx.Response(200, content=_hf_items(3 if page == "0" else 1, "2609", first=10 * int(page)))
        return httpx.Response(200, content=_hf_items(2, "2608"))

    async with make_client(handler) as client:
        result = await HfDailySource(client, settings, page_size=3).fetch(FEED_DAY_NOW)
    assert seen == [("2026-09-24", "0"), ("2026-09-24", "1"), ("2026-09-23", "0")]
    assert result.outcome == "ok" and len(result.papers) == 6
    assert {p.source for p in result.papers} == {"hf"}


async def test_hf_wrong_shape_and_failure(make_client: MakeClient, settings: Settings) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.params["date"] == "2026-09-24":
            return httpx.Response(200, json={"error": "Invalid date"})
        return httpx.Response(200, content=_hf_items(1, "2608"))

    async with make_client(handler) as client:
        result = await HfDailySource(client, settings).fetch(FEED_DAY_NOW)
    assert result.outcome == "error" and len(result.papers) == 1  # the good day is kept
    assert result.detail == ("Hugging Face: 1 papers; failed 2026-09-24: Hugging Face daily papers: error Invalid date")


# --- OAI-PMH ---------------------------------------------------------------------------------------

OAI_EMPTY_TOKEN = b"""<?xml version="1.0"?><OAI-PMH xmlns="http://www.openarchives.org/OAI/2.0/">
<responseDate>2026-09-24T10:00:00Z</responseDate><ListRecords>
<record><header status="deleted"><identifier>oai:arXiv.org:2609.00009</identifier></header></record>
<resumptionToken expirationDate="2026-09-25T00:00:00Z"/></ListRecords></OAI-PMH>"""
OAI_NO_RECORDS = b"""<OAI-PMH xmlns="http://www.openarchives.org/OAI/2.0/"><responseDate>2026-09-24T10:00:00Z
</responseDate><error code="noRecordsMatch">No records</error></OAI-PMH>"""
OAI_BAD_TOKEN = b"""<OAI-PMH xmlns="http://www.openarchives.org/OAI/2.0/"><responseDate>2026-09-24T10:00:00Z
</responseDate><error code="badResumptionToken">Token expired</error></OAI-PMH>"""


async def test_oai_pages_follow_the_token(make_client: MakeClient, settings: Settings) -> None:
    handler, seen = serve(
        httpx.Response(200, content=fixture_bytes("oai_pmh_listrecords_arxivRaw.xml")),
        httpx.Response(200, content=OAI_EMPTY_TOKEN),
    )
    async with make_client(handler) as client:
        source = OaiPmhSource(client, settings)
        pages = [p async for p in source.pages(from_day=date(2026, 9, 23), set_spec="cs:cs:LG")]
    assert [len(p.papers) for p in pages] == [6, 0]
    assert pages[1].deleted == ("2609.00009",) and not pages[1].has_more
    assert seen[0].url.params["set"] == "cs:cs:LG" and seen[0].url.params["metadataPrefix"] == "arXivRaw"
    assert dict(seen[1].url.params) == {"verb": "ListRecords", "resumptionToken": "726959|1001"}


async def test_oai_no_records_is_quiet_and_bad_token_is_error(make_client: MakeClient, settings: Settings) -> None:
    handler, _ = serve(httpx.Response(200, content=OAI_NO_RECORDS))
    async with make_client(handler) as client:
        quiet = await OaiPmhSource(client, settings).fetch(FEED_DAY_NOW)
    assert quiet.outcome == "quiet" and quiet.ok
    handler, _ = serve(httpx.Response(200, content=OAI_BAD_TOKEN))
    async with make_client(handler) as client:
        failed = await OaiPmhSource(client, settings).fetch(FEED_DAY_NOW)
    assert failed.outcome == "error"
    assert failed.detail == "arXiv OAI-PMH error badResumptionToken: Token expired"


def test_set_specs() -> None:
    assert set_spec_for("cs.LG") == "cs:cs:LG"
    assert set_spec_for("stat.ML") == "stat:stat:ML"
    assert set_spec_for("hep-th") == "physics:hep-th"
    assert set_spec_for("astro-ph.CO") == "physics:astro-ph:CO"
    assert set_spec_for("math") == "math"


async def test_api_html_page_and_unexpected_status_are_errors(make_client: MakeClient, settings: Settings) -> None:
    for response, expected in [
        (
            httpx.Response(200, text="<html><title>Service Unavailable</title></html>"),
            "arXiv API response: got an HTML page instead of XML (Service Unavailable)",
        ),
        (httpx.Response(403, text="<html>denied</html>"), "arXiv API answered 403: denied"),
        (httpx.Response(200, content=b"<feed"), "arXiv API response: truncated or malformed XML"),
    ]:
        handler, _ = serve(response)
        async with make_client(handler) as client:
            result = await ArxivApiSource(client, settings).fetch(FEED_DAY_NOW)
        assert result.outcome == "error" and result.papers == ()
        assert result.detail.startswith(expected)


async def test_api_by_ids_with_only_invalid_ids_sends_nothing(make_client: MakeClient, settings: Settings) -> None:
    handler, seen = serve(httpx.Response(500))
    async with make_client(handler) as client:
        lookup = await ArxivApiSource(client, settings).by_ids(["abc", "", "12345"])
    assert seen == [] and lookup.papers == () and lookup.invalid == ("abc", "", "12345")


async def test_api_query_respects_the_offset_cap(make_client: MakeClient, settings: Settings) -> None:
    asked: list[tuple[int, int]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        start, size = int(request.url.params["start"]), int(request.url.params["max_results"])
        asked.append((start, size))
        ids = [f"2609.{start + i:05d}" for i in range(size)]
        return httpx.Response(200, content=api_feed(ids, total=100000, start=start))

    async with make_client(handler, min_interval=0) as client:
        result = await ArxivApiSource(client, settings, page_size=2000).query("cat:cs.LG", 29000, 5000)
    assert asked == [(29000, 1000)]  # start + max_results never beyond 30 000
    assert len(result.papers) == 1000


async def test_hf_html_error_page_is_an_error(make_client: MakeClient, settings: Settings) -> None:
    handler, _ = serve(httpx.Response(200, text="<!DOCTYPE html><html>maintenance</html>"))
    async with make_client(handler) as client:
        result = await HfDailySource(client, settings).fetch(FEED_DAY_NOW)
    assert result.outcome == "error" and result.papers == ()
    assert "got an HTML page instead of JSON" in result.detail

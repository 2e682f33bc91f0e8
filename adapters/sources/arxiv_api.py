"""arXiv API (`export.arxiv.org/api/query`): Atom parsing, paging, id lookups."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from adapters.sources.http import (
    ParseError,
    PoliteClient,
    SourceError,
    collapse,
    one_line,
    optional_text,
    parse_iso_datetime,
    parse_xml,
)
from bot.models import FetchResult, Paper, split_arxiv_id
from bot.settings import Settings

log = logging.getLogger(__name__)

ATOM = "http://www.w3.org/2005/Atom"
ARXIV = "http://arxiv.org/schemas/atom"
OPENSEARCH = "http://a9.com/-/spec/opensearch/1.1/"

_A = f"{{{ATOM}}}"
_X = f"{{{ARXIV}}}"
_OS = f"{{{OPENSEARCH}}}"

MAX_PAGE = 2000  # the API's max_results cap per call
MAX_OFFSET = 30000  # start + max_results beyond this is refused
MAX_IDS_PER_CALL = 100


@dataclass(frozen=True, slots=True)
class ApiPage:
    """One API response. `error` is set for the error feed (never stored as a paper)."""

    papers: tuple[Paper, ...]
    total_results: int | None = None
    start_index: int | None = None
    items_per_page: int | None = None
    error: str | None = None
    skipped: int = 0  # entries we could not read (no usable id)


@dataclass(frozen=True, slots=True)
class QueryResult:
    papers: tuple[Paper, ...]
    total_results: int | None
    note: str = ""  # e.g. paging stopped early on repeated empty pages


@dataclass(frozen=True, slots=True)
class IdLookup:
    papers: tuple[Paper, ...]
    missing: tuple[str, ...] = ()  # requested, well-formed, but not returned
    invalid: tuple[str, ...] = ()  # not arXiv ids at all


def _int(text: str | None) -> int | None:
    try:
        return int(collapse(text))
    except ValueError:
        return None


def _text(el: Any, tag: str) -> str | None:
    child = el.find(tag)
    return None if child is None else child.text


def _entry_paper(entry: Any) -> Paper | None:
    raw_id = collapse(_text(entry, f"{_A}id"))
    if "/abs/" not in raw_id:
        return None
    try:
        arxiv_id, version = split_arxiv_id(raw_id.split("/abs/", 1)[1])
    except ValueError:
        return None
    primary_el = entry.find(f"{_X}primary_category")
    primary = collapse(primary_el.get("term")) if primary_el is not None else ""
    cats: list[str] = [primary] if primary else []
    for cat in entry.findall(f"{_A}category"):
        term = collapse(cat.get("term"))
        if term and term not in cats:
            cats.append(term)
    authors = tuple(name for name in (collapse(_text(a, f"{_A}name")) for a in entry.findall(f"{_A}author")) if name)
    return Paper(
        arxiv_id=arxiv_id,
        version=version or 1,
        title=collapse(_text(entry, f"{_A}title")),
        abstract=collapse(_text(entry, f"{_A}summary")),
        authors=authors,
        categories=tuple(cats),
        primary_category=primary or (cats[0] if cats else None),
        submitted=parse_iso_datetime(_text(entry, f"{_A}published")),
        updated=parse_iso_datetime(_text(entry, f"{_A}updated")),
        comment=optional_text(_text(entry, f"{_X}comment")),
        doi=optional_text(_text(entry, f"{_X}doi")),
        journal_ref=optional_text(_text(entry, f"{_X}journal_ref")),
        source="api",
    )


def parse_api_feed(content: bytes, *, status: int = 200) -> ApiPage:
    """Parse an API Atom response. The error feed (HTTP 400, or an entry id with `/api/errors#`) gives no
    papers and `error` set. Raises ParseError when the body is no Atom feed."""
    root = parse_xml(content, "arXiv API response")
    if root.tag != f"{_A}feed":
        raise ParseError(f"arXiv API response: expected an Atom feed, got <{_local_name(root.tag)}>")
    total = _int(_text(root, f"{_OS}totalResults"))
    start = _int(_text(root, f"{_OS}startIndex"))
    per_page = _int(_text(root, f"{_OS}itemsPerPage"))
    entries = root.findall(f"{_A}entry")
    for entry in entries:
        if "/api/errors" in collapse(_text(entry, f"{_A}id")):
            message = one_line(_text(entry, f"{_A}summary") or "unknown error")
            return ApiPage((), total, start, per_page, error=message)
    if status >= 400:
        return ApiPage((), total, start, per_page, error=f"HTTP {status}")
    papers: list[Paper] = []
    skipped = 0
    for entry in entries:
        paper = _entry_paper(entry)
        if paper is None:
            skipped += 1
        else:
            papers.append(paper)
    return ApiPage(tuple(papers), total, start, per_page, skipped=skipped)


def _local_name(tag: object) -> str:
    text = str(tag)
    return text.rsplit("}", 1)[-1]


def _chunks(items: Sequence[str], size: int) -> Iterable[Sequence[str]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


class ArxivApiSource:
    """Queries and id lookups against the arXiv API, through the shared polite client (3 s spacing)."""

    name = "api"

    def __init__(
        self,
        client: PoliteClient,
        settings: Settings,
        *,
        categories: Sequence[str] | None = None,
        page_size: int = 100,
        empty_page_retries: int = 2,
        recent_days: int = 2,
        recent_limit: int = 1000,
    ) -> None:
        self.client = client
        self.url = settings.arxiv_api_url
        self.categories = tuple(categories) if categories is not None else settings.category_list
        self.page_size = max(1, min(page_size, MAX_PAGE))
        self.empty_page_retries = empty_page_retries
        self.recent_days = recent_days
        self.recent_limit = recent_limit

    async def _page(self, params: dict[str, str | int]) -> ApiPage:
        result = await self.client.get(self.url, params, conditional=False, label="arXiv API")
        if result.status not in (200, 400):
            raise SourceError(f"arXiv API answered {result.status}: {result.snippet(80)}", status=result.status)
        try:
            page = parse_api_feed(result.content, status=result.status)
        except ParseError as exc:
            raise SourceError(str(exc), status=result.status) from None
        if page.error is not None:
            raise SourceError(f"arXiv API error: {page.error}", status=result.status)
        return page

    async def query(
        self,
        search_query: str,
        start: int = 0,
        max_results: int = 100,
        *,
        sort_by: str = "submittedDate",
        sort_order: str = "descending",
    ) -> QueryResult:
        """Up to `max_results` papers for a query, paging up to totalResults. An empty page before the end is
        retried (the API returns those at random), then paging stops with a note. Raises SourceError."""
        max_results = max(0, min(max_results, MAX_OFFSET - start))
        papers: list[Paper] = []
        seen: set[str] = set()
        total: int | None = None
        offset = start
        note = ""
        while len(papers) < max_results and (total is None or offset < total):
            size = min(self.page_size, max_results - len(papers))
            params: dict[str, str | int] = {
                "search_query": search_query,
                "start": offset,
                "max_results": size,
                "sortBy": sort_by,
                "sortOrder": sort_order,
            }
            page = await self._page(params)
            tries = 0
            # An empty page while more results are announced is a known API flake: ask again.
            while not page.papers and (page.total_results or 0) > offset and tries < self.empty_page_retries:
                tries += 1
                page = await self._page(params)
            total = page.total_results if page.total_results is not None else total
            if not page.papers:
                if total is not None and offset < total:
                    note = f"arXiv API returned empty pages at offset {offset} of {total}; stopped there"
                break
            for paper in page.papers:
                if paper.arxiv_id not in seen:
                    seen.add(paper.arxiv_id)
                    papers.append(paper)
            offset += len(page.papers) + page.skipped
        return QueryResult(tuple(papers[:max_results]), total, note)

    async def by_ids(self, ids: Iterable[str]) -> IdLookup:
        """Latest versions of the given papers, in batches of <= 100. Ids the API silently dropped are listed
        in `missing` (an all-empty batch is asked once more first). Raises SourceError."""
        wanted: list[str] = []
        invalid: list[str] = []
        for raw in ids:
            try:
                arxiv_id, _ = split_arxiv_id(raw)
            except ValueError:
                invalid.append(raw)
                continue
            if arxiv_id not in wanted:
                wanted.append(arxiv_id)
        found: dict[str, Paper] = {}
        for batch in _chunks(wanted, MAX_IDS_PER_CALL):
            params: dict[str, str | int] = {"id_list": ",".join(batch), "start": 0, "max_results": len(batch)}
            page = await self._page(params)
            tries = 0
            while not page.papers and tries < self.empty_page_retries:
                tries += 1
                page = await self._page(params)
            for paper in page.papers:
                found.setdefault(paper.arxiv_id, paper)
        missing = tuple(i for i in wanted if i not in found)
        return IdLookup(tuple(found[i] for i in wanted if i in found), missing, tuple(invalid))

    def recent_query(self, now: datetime) -> str:
        cats = " OR ".join(f"cat:{c}" for c in self.categories)
        begin = (now - timedelta(days=self.recent_days)).strftime("%Y%m%d%H%M")
        end = now.strftime("%Y%m%d%H%M")
        window = f"submittedDate:[{begin} TO {end}]"
        return f"({cats}) AND {window}" if cats else window

    async def fetch(self, now: datetime) -> FetchResult:
        """Recent submissions (the last `recent_days`) in the configured categories."""
        try:
            result = await self.query(self.recent_query(now), 0, self.recent_limit)
        except SourceError as exc:
            return FetchResult(self.name, outcome="error", detail=str(exc), retry_after=exc.retry_after)
        except Exception as exc:  # the contract: a source reports, it never raises into the scheduler
            log.exception("arXiv API fetch failed")
            return FetchResult(self.name, outcome="error", detail=f"arXiv API: {type(exc).__name__}: {exc}")
        detail = f"arXiv API: {len(result.papers)} papers submitted in the last {self.recent_days} days"
        if result.note:
            detail += f"; {result.note}"
        return FetchResult(self.name, result.papers, "ok" if result.papers else "quiet", one_line(detail, 300))

"""Hugging Face Daily Papers (`/api/daily_papers`): the community signal (upvotes, AI summary, code)."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from typing import Any

from adapters.sources.http import (
    ParseError,
    PoliteClient,
    SourceError,
    collapse,
    one_line,
    optional_text,
    parse_iso_datetime,
)
from bot.models import FetchResult, Paper, split_arxiv_id
from bot.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class HfPage:
    papers: tuple[Paper, ...]
    items: int  # items in the response, readable or not: paging stops on a short page
    skipped: int = 0


def _str(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _item_paper(item: Any) -> Paper | None:
    if not isinstance(item, dict):
        return None
    paper = item.get("paper")
    if not isinstance(paper, dict):
        return None
    raw_id = _str(paper.get("id"))
    if not raw_id:
        return None
    try:
        arxiv_id, version = split_arxiv_id(raw_id)
    except ValueError:
        return None
    authors_raw = paper.get("authors")
    authors = tuple(
        name
        for name in (
            collapse(_str(a.get("name")))
            for a in (authors_raw if isinstance(authors_raw, list) else [])
            if isinstance(a, dict)
        )
        if name
    )
    upvotes = paper.get("upvotes")
    keywords_raw = paper.get("ai_keywords")
    keywords = tuple(
        collapse(k)
        for k in (keywords_raw if isinstance(keywords_raw, list) else [])
        if isinstance(k, str) and k.strip()
    )
    on_daily = parse_iso_datetime(_str(paper.get("submittedOnDailyAt")))
    published = parse_iso_datetime(_str(paper.get("publishedAt")) or _str(item.get("publishedAt")))
    return Paper(
        arxiv_id=arxiv_id,
        version=version or 1,
        title=collapse(_str(paper.get("title")) or _str(item.get("title"))),
        abstract=collapse(_str(paper.get("summary")) or _str(item.get("summary"))),
        authors=authors,
        # HF dates the arXiv publication at midnight UTC: a day, not a time; kept as the v1 date.
        submitted=published,
        # bool is an int in Python; a true/false "upvotes" is not a count.
        upvotes=upvotes if isinstance(upvotes, int) and not isinstance(upvotes, bool) else None,
        ai_summary=optional_text(_str(paper.get("ai_summary"))),
        ai_keywords=keywords,
        github_repo=optional_text(_str(paper.get("githubRepo"))),
        hf_day=on_daily.date() if on_daily else None,
        source="hf",
    )


def parse_daily_papers(content: bytes) -> HfPage:
    """Parse a `daily_papers` JSON array. Raises ParseError on a body that is no such array."""
    if not content or not content.strip():
        raise ParseError("Hugging Face daily papers: empty body")
    try:
        data = json.loads(content)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        head = content.lstrip()[:20].lower()
        if head.startswith((b"<!doctype", b"<html")):
            raise ParseError("Hugging Face daily papers: got an HTML page instead of JSON") from None
        raise ParseError(f"Hugging Face daily papers: not JSON ({one_line(str(exc), 80)})") from None
    if isinstance(data, dict) and "error" in data:
        raise ParseError(f"Hugging Face daily papers: error {one_line(str(data['error']), 100)}")
    if not isinstance(data, list):
        raise ParseError(f"Hugging Face daily papers: expected a JSON array, got {type(data).__name__}")
    papers: list[Paper] = []
    skipped = 0
    for item in data:
        paper = _item_paper(item)
        if paper is None:
            skipped += 1
        else:
            papers.append(paper)
    return HfPage(tuple(papers), len(data), skipped)


class HfDailySource:
    """Daily Papers for today and yesterday (UTC), `limit`/`p` paging, stopping on a short page."""

    name = "hf"

    def __init__(self, client: PoliteClient, settings: Settings, *, page_size: int = 100, max_pages: int = 10) -> None:
        self.client = client
        self.url = settings.hf_api_url
        self.page_size = max(1, min(page_size, 100))
        self.max_pages = max_pages

    async def day(self, day: date) -> HfPage:
        """Every paper HF lists for one day. Raises SourceError."""
        papers: dict[str, Paper] = {}
        items = skipped = 0
        for p in range(self.max_pages):
            params: dict[str, str | int] = {"date": day.isoformat(), "limit": self.page_size, "p": p}
            result = await self.client.get(self.url, params, label="Hugging Face")
            if not result.ok:
                raise SourceError(f"Hugging Face answered {result.status}: {result.snippet(80)}", status=result.status)
            try:
                page = parse_daily_papers(result.content)
            except ParseError as exc:
                raise SourceError(str(exc)) from None
            items += page.items
            skipped += page.skipped
            for paper in page.papers:
                # Without submittedOnDailyAt the day we asked for is the HF day.
                papers.setdefault(paper.arxiv_id, paper if paper.hf_day else _with_day(paper, day))
            if page.items < self.page_size:
                break
        return HfPage(tuple(papers.values()), items, skipped)

    async def fetch(self, now: datetime) -> FetchResult:
        if now.tzinfo is None:
            now = now.replace(tzinfo=UTC)
        today = now.astimezone(UTC).date()
        papers: dict[str, Paper] = {}
        problems: list[str] = []
        retry_after: float | None = None
        for day in (today, today - timedelta(days=1)):
            try:
                page = await self.day(day)
            except SourceError as exc:
                problems.append(f"{day.isoformat()}: {exc}")
                retry_after = exc.retry_after if retry_after is None else retry_after
                continue
            except Exception as exc:  # the contract: a source reports, it never raises into the scheduler
                log.exception("Hugging Face fetch failed")
                problems.append(f"{day.isoformat()}: {type(exc).__name__}: {exc}")
                continue
            for paper in page.papers:
                papers.setdefault(paper.arxiv_id, paper)
        found = tuple(papers.values())
        if problems:
            # Papers from a day that did answer are still handed over; the outcome says the run was partial.
            detail = f"Hugging Face: {len(found)} papers; failed " + "; ".join(problems)
            return FetchResult(self.name, found, "error", one_line(detail, 300), retry_after=retry_after)
        detail = f"Hugging Face: {len(found)} papers for {today.isoformat()} and the day before"
        return FetchResult(self.name, found, "ok" if found else "quiet", detail)


def _with_day(paper: Paper, day: date) -> Paper:
    return replace(paper, hf_day=day)

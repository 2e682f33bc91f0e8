"""arXiv announcement feeds (`rss.arxiv.org/rss/...` RSS 2.0 and `/atom/...` Atom 1.0)."""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from adapters.sources.http import (
    ParseError,
    PoliteClient,
    SourceError,
    collapse,
    one_line,
    optional_text,
    parse_http_datetime,
    parse_iso_datetime,
    parse_xml,
    split_authors,
)
from bot.models import FetchResult, Paper, split_arxiv_id
from bot.settings import Settings

log = logging.getLogger(__name__)

EASTERN = ZoneInfo("America/New_York")
ATOM = "http://www.w3.org/2005/Atom"
ARXIV = "http://arxiv.org/schemas/atom"
DC = "http://purl.org/dc/elements/1.1/"
_A = f"{{{ATOM}}}"
_X = f"{{{ARXIV}}}"
_DC = f"{{{DC}}}"

FEED_CAP = 2000  # arXiv truncates combined feeds here, replacements first
ANNOUNCE_TYPES = ("new", "cross", "replace", "replace-cross")

# `arXiv:2609.26811v1 Announce Type: new \nAbstract: ...`
_PREFIX = re.compile(r"^\s*arXiv:(?P<id>\S+)\s+Announce Type:\s*(?P<type>[\w-]+)\s*(?:Abstract:\s*)?", re.DOTALL)


@dataclass(frozen=True, slots=True)
class AnnouncementFeed:
    papers: tuple[Paper, ...]
    feed_day: date | None  # the announcement day (US/Eastern) the feed is for
    title: str = ""
    format: str = "rss"  # rss or atom
    skipped: int = 0

    def counts(self) -> dict[str, int]:
        return dict(Counter(p.announce_type or "unknown" for p in self.papers))

    def describe(self) -> str:
        """`RSS feed for Thu 24 Sep 2026: 2 new, 1 cross, 1 replace`."""
        kind = "RSS" if self.format == "rss" else "Atom"
        day = self.feed_day.strftime("%a %d %b %Y") if self.feed_day else "an undated day"
        counts = self.counts()
        order = [t for t in ANNOUNCE_TYPES if t in counts] + sorted(set(counts) - set(ANNOUNCE_TYPES))
        parts = ", ".join(f"{counts[t]} {t}" for t in order) or "empty"
        return f"{kind} feed for {day}: {parts}"


def _et_day(when: datetime | None) -> date | None:
    if when is None:
        return None
    try:
        return when.astimezone(EASTERN).date()
    except OverflowError:
        return None


def _split_description(text: str | None) -> tuple[str | None, str | None, str]:
    """(id with version, announce type, abstract) from an item description."""
    raw = text or ""
    m = _PREFIX.match(raw)
    if not m:
        return None, None, collapse(raw)
    return m.group("id"), m.group("type"), collapse(raw[m.end() :])


def _make_paper(
    *,
    guid: str | None,
    described_id: str | None,
    link: str | None,
    title: str | None,
    abstract: str,
    announce_type: str | None,
    authors: tuple[str, ...],
    categories: list[str],
    day: date | None,
    doi: str | None,
    journal_ref: str | None,
    source: str,
) -> Paper | None:
    for candidate in (guid, described_id, link):
        if not candidate:
            continue
        try:
            arxiv_id, version = split_arxiv_id(collapse(candidate))
        except ValueError:
            continue
        break
    else:
        return None
    cats: list[str] = []
    for c in categories:
        if c and c not in cats:
            cats.append(c)
    return Paper(
        arxiv_id=arxiv_id,
        version=version or 1,
        title=collapse(title),
        abstract=abstract,
        authors=authors,
        categories=tuple(cats),  # RSS gives no primary, and the order is not meaningful
        announced=day,
        doi=doi,
        journal_ref=journal_ref,
        announce_type=announce_type,
        source=source,
    )


def _text(el: Any, tag: str) -> str | None:
    child = el.find(tag)
    return None if child is None else child.text


def _parse_rss2(root: Any) -> AnnouncementFeed:
    channel = root.find("channel")
    if channel is None:
        raise ParseError("arXiv RSS feed: no <channel>")
    pub = parse_http_datetime(_text(channel, "pubDate"))
    items = channel.findall("item")
    if pub is None and items:
        pub = parse_http_datetime(_text(items[0], "pubDate"))
    if pub is None:
        pub = parse_http_datetime(_text(channel, "lastBuildDate"))
    day = _et_day(pub)
    papers: list[Paper] = []
    skipped = 0
    for item in items:
        described_id, described_type, abstract = _split_description(_text(item, "description"))
        announce = collapse(_text(item, f"{_X}announce_type")) or described_type
        creators = [c.text for c in item.findall(f"{_DC}creator") if c.text]
        authors = tuple(a for c in creators for a in split_authors(c))
        paper = _make_paper(
            guid=_text(item, "guid"),
            described_id=described_id,
            link=_text(item, "link"),
            title=_text(item, "title"),
            abstract=abstract,
            announce_type=announce or None,
            authors=authors,
            categories=[collapse(c.text) for c in item.findall("category")],
            day=day,
            doi=optional_text(_text(item, f"{_X}DOI")),
            journal_ref=optional_text(_text(item, f"{_X}journal_reference")),
            source="rss",
        )
        if paper is None:
            skipped += 1
        else:
            papers.append(paper)
    return AnnouncementFeed(tuple(papers), day, collapse(_text(channel, "title")), "rss", skipped)


def _parse_atom(root: Any) -> AnnouncementFeed:
    entries = root.findall(f"{_A}entry")
    day: date | None = None
    for entry in entries:  # entry `published` is the announcement day; feed `updated` is generation time
        day = _et_day(parse_iso_datetime(_text(entry, f"{_A}published")))
        if day:
            break
    if day is None:
        day = _et_day(parse_iso_datetime(_text(root, f"{_A}updated")))
    papers: list[Paper] = []
    skipped = 0
    for entry in entries:
        described_id, described_type, abstract = _split_description(_text(entry, f"{_A}summary"))
        announce = collapse(_text(entry, f"{_X}announce_type")) or described_type
        names = [collapse(_text(a, f"{_A}name")) for a in entry.findall(f"{_A}author")]
        authors: tuple[str, ...] = tuple(n for n in names if n)
        if not authors:
            authors = tuple(a for c in entry.findall(f"{_DC}creator") if c.text for a in split_authors(c.text))
        link = None
        for link_el in entry.findall(f"{_A}link"):
            if link_el.get("rel", "alternate") == "alternate":
                link = link_el.get("href")
                break
        paper = _make_paper(
            guid=_text(entry, f"{_A}id"),
            described_id=described_id,
            link=link,
            title=_text(entry, f"{_A}title"),
            abstract=abstract,
            announce_type=announce or None,
            authors=authors,
            categories=[collapse(c.get("term")) for c in entry.findall(f"{_A}category")],
            day=day,
            doi=optional_text(_text(entry, f"{_X}doi") or _text(entry, f"{_X}DOI")),
            journal_ref=optional_text(_text(entry, f"{_X}journal_ref") or _text(entry, f"{_X}journal_reference")),
            source="rss",
        )
        if paper is None:
            skipped += 1
        else:
            papers.append(paper)
    return AnnouncementFeed(tuple(papers), day, collapse(_text(root, f"{_A}title")), "atom", skipped)


def parse_announcements(content: bytes) -> AnnouncementFeed:
    """Parse an arXiv announcement feed, RSS 2.0 or Atom. Raises ParseError on anything else."""
    root = parse_xml(content, "arXiv RSS feed")
    if root.tag == "rss":
        return _parse_rss2(root)
    if root.tag == f"{_A}feed":
        return _parse_atom(root)
    raise ParseError(f"arXiv RSS feed: expected <rss> or an Atom <feed>, got <{str(root.tag).rsplit('}', 1)[-1]}>")


class ArxivRssSource:
    """Today's announcements. Outcomes: ok, quiet (empty and dated today ET), stale (dated an earlier ET day:
    papers still returned, caller retries later), unchanged (304), error."""

    name = "rss"

    def __init__(self, client: PoliteClient, settings: Settings, *, categories: Sequence[str] | None = None) -> None:
        self.client = client
        cats = tuple(categories) if categories is not None else settings.category_list
        self.url = settings.arxiv_rss_url + "+".join(cats)

    async def fetch(self, now: datetime) -> FetchResult:
        try:
            result = await self.client.get(self.url, conditional=True, label="arXiv RSS")
        except SourceError as exc:
            return FetchResult(self.name, outcome="error", detail=str(exc), retry_after=exc.retry_after)
        except Exception as exc:  # the contract: a source reports, it never raises into the scheduler
            log.exception("arXiv RSS fetch failed")
            return FetchResult(self.name, outcome="error", detail=f"arXiv RSS: {type(exc).__name__}: {exc}")
        if result.not_modified:
            return FetchResult(self.name, outcome="unchanged", detail="arXiv RSS: not modified since last fetch")
        if not result.ok:
            return FetchResult(
                self.name, outcome="error", detail=f"arXiv RSS answered {result.status}: {result.snippet(80)}"
            )
        try:
            feed = parse_announcements(result.content)
        except ParseError as exc:
            self.client.forget(self.url)  # so the next try gets a body, not a 304 for this broken one
            return FetchResult(self.name, outcome="error", detail=str(exc))
        if now.tzinfo is None:
            now = now.replace(tzinfo=UTC)
        today = now.astimezone(EASTERN).date()
        detail = feed.describe()
        if len(feed.papers) + feed.skipped >= FEED_CAP:
            detail += f" (hit the {FEED_CAP}-item cap: split the categories)"
        if feed.feed_day is not None and feed.feed_day < today:
            # Not yet rebuilt for today (or one category lagging). Forget the ETag: a 304 would hide that.
            self.client.forget(self.url)
            return FetchResult(
                self.name,
                feed.papers,
                "stale",
                one_line(f"{detail}; expected {today:%a %d %b %Y}", 300),
                feed_day=feed.feed_day,
            )
        outcome = "ok" if feed.papers else "quiet"
        return FetchResult(self.name, feed.papers, outcome, one_line(detail, 300), feed_day=feed.feed_day)

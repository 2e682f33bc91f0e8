"""arXiv OAI-PMH (`oaipmh.arxiv.org/oai`): ListRecords in `arXivRaw` (or `arXiv`), following tokens."""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

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

OAI = "http://www.openarchives.org/OAI/2.0/"
ARXIV_RAW = "http://arxiv.org/OAI/arXivRaw/"
ARXIV_FMT = "http://arxiv.org/OAI/arXiv/"
_O = f"{{{OAI}}}"
_R = f"{{{ARXIV_RAW}}}"
_F = f"{{{ARXIV_FMT}}}"

# Archives grouped under `physics:` in OAI set names (`physics:hep-th`, `physics:astro-ph:CO`).
_PHYSICS_ARCHIVES = frozenset(
    {
        "astro-ph", "cond-mat", "gr-qc", "hep-ex", "hep-lat", "hep-ph", "hep-th", "math-ph",
        "nlin", "nucl-ex", "nucl-th", "physics", "quant-ph",
    }
)  # fmt: skip


def set_spec_for(category: str) -> str:
    """OAI set for an arXiv category: `cs.LG` -> `cs:cs:LG`, `hep-th` -> `physics:hep-th`,
    `astro-ph.CO` -> `physics:astro-ph:CO`."""
    archive, _, sub = category.strip().partition(".")
    group = "physics" if archive in _PHYSICS_ARCHIVES else archive
    if group == archive and not sub:
        return archive
    return ":".join(part for part in (group, archive, sub) if part)


@dataclass(frozen=True, slots=True)
class OaiPage:
    papers: tuple[Paper, ...]
    resumption_token: str | None = None  # None or "" = the list is complete
    response_date: datetime | None = None
    deleted: tuple[str, ...] = ()  # ids whose header says status="deleted"
    error_code: str | None = None  # OAI error code; noRecordsMatch is a normal empty answer
    error: str | None = None
    skipped: int = 0

    @property
    def ok(self) -> bool:
        return self.error_code in (None, "noRecordsMatch")

    @property
    def has_more(self) -> bool:
        return bool(self.resumption_token)


def _text(el: Any, tag: str) -> str | None:
    child = el.find(tag)
    return None if child is None else child.text


def _version_number(label: str | None) -> int | None:
    m = re.fullmatch(r"v?(\d+)", collapse(label))
    return int(m.group(1)) if m else None


def _first_doi(text: str | None) -> str | None:
    # arXivRaw may hold several DOIs separated by spaces (paper + erratum): keep the first.
    value = collapse(text)
    return value.split(" ", 1)[0] if value else None


def _categories(text: str | None) -> tuple[str, ...]:
    cats: list[str] = []
    for c in collapse(text).split(" "):
        if c and c not in cats:
            cats.append(c)
    return tuple(cats)


def _raw_paper(meta: Any) -> Paper | None:
    try:
        arxiv_id, _ = split_arxiv_id(collapse(_text(meta, f"{_R}id")))
    except ValueError:
        return None
    versions: list[tuple[int, datetime | None]] = []
    for v in meta.findall(f"{_R}version"):
        number = _version_number(v.get("version"))
        if number is not None:
            versions.append((number, parse_http_datetime(_text(v, f"{_R}date"))))
    versions.sort(key=lambda pair: pair[0])
    submitted = versions[0][1] if versions else None
    last_number, last_date = versions[-1] if versions else (1, None)
    cats = _categories(_text(meta, f"{_R}categories"))
    return Paper(
        arxiv_id=arxiv_id,
        version=last_number,
        title=collapse(_text(meta, f"{_R}title")),
        abstract=collapse(_text(meta, f"{_R}abstract")),
        authors=split_authors(_text(meta, f"{_R}authors")),
        categories=cats,
        primary_category=cats[0] if cats else None,
        submitted=submitted.astimezone(UTC) if submitted else None,
        updated=last_date.astimezone(UTC) if last_date else None,
        comment=optional_text(_text(meta, f"{_R}comments")),
        doi=_first_doi(_text(meta, f"{_R}doi")),
        journal_ref=optional_text(_text(meta, f"{_R}journal-ref")),
        source="oai",
    )


def _arxiv_format_paper(meta: Any) -> Paper | None:
    try:
        arxiv_id, _ = split_arxiv_id(collapse(_text(meta, f"{_F}id")))
    except ValueError:
        return None
    authors: list[str] = []
    container = meta.find(f"{_F}authors")
    for author in container.findall(f"{_F}author") if container is not None else []:
        parts = [collapse(_text(author, f"{_F}{tag}")) for tag in ("forenames", "keyname", "suffix")]
        name = " ".join(p for p in parts if p)
        if name:
            authors.append(name)
    cats = _categories(_text(meta, f"{_F}categories"))
    created = parse_iso_datetime(_text(meta, f"{_F}created"))
    updated = parse_iso_datetime(_text(meta, f"{_F}updated"))
    return Paper(
        arxiv_id=arxiv_id,
        # The `arXiv` format carries no version numbers; 1 is a floor, arXivRaw gives the real one.
        version=1,
        title=collapse(_text(meta, f"{_F}title")),
        abstract=collapse(_text(meta, f"{_F}abstract")),
        authors=tuple(authors),
        categories=cats,
        primary_category=cats[0] if cats else None,
        submitted=created,
        updated=updated or created,
        comment=optional_text(_text(meta, f"{_F}comments")),
        doi=_first_doi(_text(meta, f"{_F}doi")),
        journal_ref=optional_text(_text(meta, f"{_F}journal-ref")),
        source="oai",
    )


def parse_oai(content: bytes) -> OaiPage:
    """Parse an OAI-PMH response (ListRecords / GetRecord, arXivRaw or arXiv format). OAI errors come back in
    `error_code`/`error` (noRecordsMatch = an ordinary empty page). Raises ParseError if not OAI-PMH."""
    root = parse_xml(content, "OAI-PMH response")
    if root.tag != f"{_O}OAI-PMH":
        raise ParseError(f"OAI-PMH response: expected <OAI-PMH>, got <{str(root.tag).rsplit('}', 1)[-1]}>")
    response_date = parse_iso_datetime(_text(root, f"{_O}responseDate"))
    error_el = root.find(f"{_O}error")
    if error_el is not None:
        code = error_el.get("code") or "unknown"
        message = one_line(error_el.text or code, 160)
        return OaiPage((), None, response_date, error_code=code, error=None if code == "noRecordsMatch" else message)
    container = root.find(f"{_O}ListRecords")
    if container is None:
        container = root.find(f"{_O}GetRecord")
    if container is None:
        raise ParseError("OAI-PMH response: neither ListRecords nor GetRecord")
    papers: list[Paper] = []
    deleted: list[str] = []
    skipped = 0
    for record in container.findall(f"{_O}record"):
        header = record.find(f"{_O}header")
        if header is not None and header.get("status") == "deleted":
            try:
                deleted.append(split_arxiv_id(collapse(_text(header, f"{_O}identifier")))[0])
            except ValueError:
                skipped += 1
            continue
        metadata = record.find(f"{_O}metadata")
        paper: Paper | None = None
        if metadata is not None:
            raw = metadata.find(f"{_R}arXivRaw")
            fmt = metadata.find(f"{_F}arXiv")
            if raw is not None:
                paper = _raw_paper(raw)
            elif fmt is not None:
                paper = _arxiv_format_paper(fmt)
        if paper is None:
            skipped += 1
        else:
            papers.append(paper)
    token_el = container.find(f"{_O}resumptionToken")
    token = collapse(token_el.text) if token_el is not None else None
    return OaiPage(tuple(papers), token or None, response_date, tuple(deleted), skipped=skipped)


class OaiPmhSource:
    """Backfill and reconciliation through OAI-PMH. `pages()` follows resumption tokens; a caller can persist
    each page's token to resume. `fetch(now)` = records modified since yesterday (UTC) in the categories."""

    name = "oai"

    def __init__(
        self,
        client: PoliteClient,
        settings: Settings,
        *,
        categories: Sequence[str] | None = None,
        metadata_prefix: str = "arXivRaw",
        max_pages: int = 20,
    ) -> None:
        self.client = client
        self.url = settings.oai_pmh_url
        self.categories = tuple(categories) if categories is not None else settings.category_list
        self.metadata_prefix = metadata_prefix
        self.max_pages = max_pages

    async def _page(self, params: dict[str, str]) -> OaiPage:
        result = await self.client.get(self.url, params, label="arXiv OAI-PMH")
        try:
            # OAI errors travel in a 200 (and some servers use 4xx): read the body either way.
            page = parse_oai(result.content)
        except ParseError as exc:
            if not result.ok:
                raise SourceError(
                    f"arXiv OAI-PMH answered {result.status}: {result.snippet(80)}", status=result.status
                ) from None
            raise SourceError(str(exc)) from None
        if not page.ok:
            raise SourceError(f"arXiv OAI-PMH error {page.error_code}: {page.error}", status=result.status)
        return page

    async def pages(
        self,
        *,
        from_day: date | None = None,
        until: date | None = None,
        set_spec: str | None = None,
        resumption_token: str | None = None,
        max_pages: int | None = None,
    ) -> AsyncIterator[OaiPage]:
        """Pages of ListRecords. With `resumption_token`, continue a harvest (the other filters are then
        ignored, as OAI-PMH requires). Stops at an empty token, noRecordsMatch or `max_pages`.
        Raises SourceError."""
        token = resumption_token
        count = 0
        while max_pages is None or count < max_pages:
            params: dict[str, str] = {"verb": "ListRecords"}
            if token:
                params["resumptionToken"] = token
            else:
                params["metadataPrefix"] = self.metadata_prefix
                if from_day:
                    params["from"] = from_day.isoformat()
                if until:
                    params["until"] = until.isoformat()
                if set_spec:
                    params["set"] = set_spec
            page = await self._page(params)
            count += 1
            yield page
            if not page.resumption_token:
                return
            token = page.resumption_token

    async def fetch(self, now: datetime) -> FetchResult:
        if now.tzinfo is None:
            now = now.replace(tzinfo=UTC)
        since = now.astimezone(UTC).date() - timedelta(days=1)
        papers: dict[str, Paper] = {}
        try:
            for category in self.categories or ("",):
                spec = set_spec_for(category) if category else None
                async for page in self.pages(from_day=since, set_spec=spec, max_pages=self.max_pages):
                    for paper in page.papers:
                        # A page crossing a day boundary may repeat records: dedupe by id.
                        papers[paper.arxiv_id] = paper
        except SourceError as exc:
            return FetchResult(self.name, outcome="error", detail=str(exc), retry_after=exc.retry_after)
        except Exception as exc:  # the contract: a source reports, it never raises into the scheduler
            log.exception("OAI-PMH fetch failed")
            return FetchResult(self.name, outcome="error", detail=f"arXiv OAI-PMH: {type(exc).__name__}: {exc}")
        found = tuple(papers.values())
        detail = f"arXiv OAI-PMH: {len(found)} records changed since {since.isoformat()}"
        return FetchResult(self.name, found, "ok" if found else "quiet", detail)

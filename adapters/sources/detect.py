"""Recognise a recorded payload on disk and parse it (`paperboy ingest --file`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from adapters.sources.arxiv_api import ATOM, OPENSEARCH, parse_api_feed
from adapters.sources.arxiv_rss import parse_announcements
from adapters.sources.hf_daily import parse_daily_papers
from adapters.sources.http import ParseError, one_line, parse_xml
from adapters.sources.oai_pmh import OAI, parse_oai
from adapters.sources.snapshot import SnapshotStats, iter_snapshot, parse_snapshot_record
from bot.models import Paper

FORMATS = ("arxiv-api", "arxiv-rss", "arxiv-atom", "hf-daily", "oai-pmh", "arxiv-snapshot")


def _unwrap_arxivpy(data: dict[str, Any]) -> tuple[bytes, int]:
    """arxiv.py recordings store the body decoded as latin-1; re-encoding restores the UTF-8 bytes."""
    body = data["body"]
    status = data.get("status_code")
    try:
        raw = body.encode("latin-1")
    except UnicodeEncodeError:  # already real text (a recorder that decoded properly)
        raw = body.encode("utf-8")
    return raw, status if isinstance(status, int) and not isinstance(status, bool) else 200


def _xml_kind(content: bytes) -> str:
    root = parse_xml(content, "file")
    tag = str(root.tag)
    if tag == "rss":
        return "arxiv-rss"
    if tag == f"{{{OAI}}}OAI-PMH":
        return "oai-pmh"
    if tag == f"{{{ATOM}}}feed":
        if root.find(f"{{{OPENSEARCH}}}totalResults") is not None:
            return "arxiv-api"
        feed_id = root.findtext(f"{{{ATOM}}}id") or ""
        entry_id = root.findtext(f"{{{ATOM}}}entry/{{{ATOM}}}id") or ""
        if "rss.arxiv.org" in feed_id or entry_id.lower().startswith("oai:arxiv.org:"):
            return "arxiv-atom"
        if "/api/" in feed_id or "/abs/" in entry_id:
            return "arxiv-api"
        raise ParseError("an Atom feed, but neither an arXiv API response nor an arXiv announcement feed")
    raise ParseError(f"XML with root <{tag.rsplit('}', 1)[-1]}>, not a known paper feed")


def _parse_xml_payload(content: bytes, status: int) -> tuple[str, list[Paper], str]:
    kind = _xml_kind(content)
    if kind == "arxiv-api":
        page = parse_api_feed(content, status=status)
        if page.error is not None:
            return kind, [], f"arXiv API error: {page.error}"
        total = f" of {page.total_results}" if page.total_results is not None else ""
        return kind, list(page.papers), f"arXiv API response: {_count(len(page.papers), 'paper')}{total}"
    if kind in ("arxiv-rss", "arxiv-atom"):
        feed = parse_announcements(content)
        return kind, list(feed.papers), feed.describe()
    page_oai = parse_oai(content)
    if page_oai.error_code == "noRecordsMatch":
        return kind, [], "OAI-PMH: no records match"
    if page_oai.error:
        return kind, [], f"OAI-PMH error {page_oai.error_code}: {page_oai.error}"
    token = f"; resumption token {page_oai.resumption_token}" if page_oai.resumption_token else "; list complete"
    return kind, list(page_oai.papers), f"OAI-PMH ListRecords: {len(page_oai.papers)} records{token}"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _looks_like_snapshot(obj: Any) -> bool:
    return isinstance(obj, dict) and "id" in obj and ("abstract" in obj or "versions" in obj)


def _parse_json_lines(path: Path) -> tuple[str, list[Paper], str]:
    stats = SnapshotStats()
    papers = [paper for _, paper in iter_snapshot(path, stats=stats)]
    if not papers:
        raise ParseError(f"JSON lines without a readable arXiv record ({stats.last_error or 'empty'})")
    bad = f", {stats.bad} bad lines skipped" if stats.bad else ""
    return "arxiv-snapshot", papers, f"arXiv metadata snapshot: {len(papers)} papers{bad}"


def _detect(path: Path, content: bytes) -> tuple[str, list[Paper], str]:
    stripped = content.lstrip(b"\xef\xbb\xbf \t\r\n")
    if not stripped:
        raise ParseError("the file is empty")
    if stripped[:1] == b"<":
        return _parse_xml_payload(stripped, 200)
    if stripped[:1] not in (b"{", b"["):
        raise ParseError("neither XML nor JSON")
    try:
        data = json.loads(stripped)
    except json.JSONDecodeError as exc:
        if exc.msg == "Extra data":  # several JSON values: JSON lines
            first = stripped.split(b"\n", 1)[0]
            try:
                head = json.loads(first)
            except json.JSONDecodeError:
                head = None
            if _looks_like_snapshot(head):
                return _parse_json_lines(path)
            raise ParseError("JSON lines, but not arXiv metadata records") from None
        raise ParseError(f"truncated or malformed JSON ({one_line(str(exc), 80)})") from None
    except (UnicodeDecodeError, RecursionError) as exc:
        raise ParseError(f"unreadable JSON ({type(exc).__name__})") from None
    if isinstance(data, list):
        if not data or (isinstance(data[0], dict) and "paper" in data[0]):
            page = parse_daily_papers(stripped)
            skipped = f", {page.skipped} unreadable items skipped" if page.skipped else ""
            days = sorted({p.hf_day for p in page.papers if p.hf_day})
            when = f" for {', '.join(d.isoformat() for d in days)}" if days else ""
            return (
                "hf-daily",
                list(page.papers),
                f"Hugging Face daily papers{when}: {len(page.papers)} papers{skipped}",
            )
        raise ParseError("a JSON array, but not Hugging Face daily papers")
    if isinstance(data, dict) and isinstance(data.get("body"), str) and "status_code" in data:
        raw, status = _unwrap_arxivpy(data)
        kind, papers, note = _parse_xml_payload(raw.lstrip(), status)
        return kind, papers, note
    if _looks_like_snapshot(data):
        paper = parse_snapshot_record(data)
        return "arxiv-snapshot", [paper], "arXiv metadata snapshot: 1 paper"
    raise ParseError("JSON, but not a known paper payload")


def load_file(path: str | Path) -> tuple[str, list[Paper], str]:
    """(format, papers, one-line note) for a recorded payload: arXiv API Atom, arXiv RSS or Atom announcement
    feed, Hugging Face daily_papers JSON, OAI-PMH XML, arXiv metadata JSON lines, or an arxiv.py
    `{url, status_code, body}` recording of any of the XML ones. Raises ValueError with a one-line message."""
    file = Path(path)
    try:
        with open(file, "rb") as handle:
            head = handle.read(1 << 16).lstrip(b"\xef\xbb\xbf \t\r\n")
        first_line = head.split(b"\n", 1)[0] if head[:1] == b"{" else b""
        try:
            first = json.loads(first_line) if first_line else None
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
            first = None
        if _looks_like_snapshot(first):
            # A multi-gigabyte snapshot must stream, never be read whole.
            return _parse_json_lines(file)
        content = file.read_bytes()
    except OSError as exc:
        raise ValueError(f"{file}: cannot read ({exc.strerror or type(exc).__name__})") from None
    except ParseError as exc:
        raise ValueError(f"{file.name}: not a recognised paper feed: {exc}") from None
    try:
        return _detect(file, content)
    except ParseError as exc:
        raise ValueError(f"{file.name}: not a recognised paper feed: {exc}") from None

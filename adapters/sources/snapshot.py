"""The arXiv metadata snapshot (Kaggle `arxiv-metadata-oai-snapshot.json`, JSON Lines), streamed.

Millions of lines, gigabytes: read one line at a time, yield the byte offset after each record so a
backfill can checkpoint and resume, and count bad lines instead of stopping on them.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC
from pathlib import Path
from typing import Any

from adapters.sources.http import (
    ParseError,
    collapse,
    one_line,
    optional_text,
    parse_http_datetime,
    split_authors,
)
from bot.models import Paper, split_arxiv_id

log = logging.getLogger(__name__)


@dataclass(slots=True)
class SnapshotStats:
    """Running counts for one pass; mutable on purpose, the iterator fills it in as it goes."""

    lines: int = 0
    papers: int = 0
    bad: int = 0
    last_error: str = ""


def _str(value: object) -> str | None:
    return value if isinstance(value, str) else None


def parse_snapshot_record(obj: Any) -> Paper:
    """One snapshot object as a Paper. Raises ParseError when it has no usable id."""
    if not isinstance(obj, dict):
        raise ParseError(f"snapshot line: expected a JSON object, got {type(obj).__name__}")
    raw_id = obj.get("id")
    if isinstance(raw_id, (int, float)) and not isinstance(raw_id, bool):
        # Some re-exports lost the quotes, turning 0704.0001 into a number; nothing safe to recover.
        raise ParseError(f"snapshot line: numeric id {raw_id!r}")
    try:
        arxiv_id, id_version = split_arxiv_id(_str(raw_id) or "")
    except ValueError:
        raise ParseError(f"snapshot line: no arXiv id ({one_line(str(raw_id), 40)})") from None
    versions: list[tuple[int, str | None]] = []
    raw_versions = obj.get("versions")
    for v in raw_versions if isinstance(raw_versions, list) else []:
        if not isinstance(v, dict):
            continue
        label = collapse(_str(v.get("version"))).lstrip("v")
        if label.isdigit():
            versions.append((int(label), _str(v.get("created"))))
    versions.sort(key=lambda pair: pair[0])
    submitted = parse_http_datetime(versions[0][1]) if versions else None
    updated = parse_http_datetime(versions[-1][1]) if versions else None
    version = versions[-1][0] if versions else (id_version or 1)
    authors: tuple[str, ...] = ()
    parsed = obj.get("authors_parsed")
    if isinstance(parsed, list) and parsed:
        names = []
        for entry in parsed:
            if isinstance(entry, list):
                last = collapse(_str(entry[0]) if entry else None)
                first = collapse(_str(entry[1]) if len(entry) > 1 else None)
                suffix = collapse(_str(entry[2]) if len(entry) > 2 else None)
                name = " ".join(p for p in (first, last, suffix) if p)
                if name:
                    names.append(name)
        authors = tuple(names)
    if not authors:
        authors = split_authors(_str(obj.get("authors")))
    cats: list[str] = []
    for c in collapse(_str(obj.get("categories"))).split(" "):
        if c and c not in cats:
            cats.append(c)
    doi = collapse(_str(obj.get("doi")))
    return Paper(
        arxiv_id=arxiv_id,
        version=version,
        title=collapse(_str(obj.get("title"))),
        abstract=collapse(_str(obj.get("abstract"))),
        authors=authors,
        categories=tuple(cats),
        primary_category=cats[0] if cats else None,
        submitted=submitted.astimezone(UTC) if submitted else None,
        updated=updated.astimezone(UTC) if updated else None,
        comment=optional_text(_str(obj.get("comments"))),
        doi=doi.split(" ", 1)[0] if doi else None,
        journal_ref=optional_text(_str(obj.get("journal-ref"))),
        source="snapshot",
    )


def parse_snapshot_line(line: bytes | str) -> Paper:
    """One JSON line as a Paper. Raises ParseError."""
    try:
        obj = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise ParseError(f"snapshot line: not JSON ({one_line(str(exc), 80)})") from None
    return parse_snapshot_record(obj)


def iter_snapshot(
    path: str | Path, start_offset: int = 0, *, stats: SnapshotStats | None = None
) -> Iterator[tuple[int, Paper]]:
    """Yield (byte offset just after the record, paper) for each good line from `start_offset` on.

    Constant memory. Resume by passing the last offset you committed. Bad lines are counted in `stats`
    (and logged) and skipped. `start_offset` must be a line start, i.e. 0 or an offset this yielded.
    """
    counts = stats if stats is not None else SnapshotStats()
    with open(path, "rb") as handle:
        handle.seek(start_offset)
        offset = start_offset
        for line in handle:
            offset += len(line)
            if not line.strip():
                continue
            counts.lines += 1
            try:
                paper = parse_snapshot_line(line)
            except ParseError as exc:
                counts.bad += 1
                counts.last_error = f"byte {offset - len(line)}: {exc}"
                log.warning("skipping snapshot line at byte %d: %s", offset - len(line), exc)
                continue
            counts.papers += 1
            yield offset, paper

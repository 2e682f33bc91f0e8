"""The bundled sample papers (real arXiv and Hugging Face metadata, CC0), so every command works offline."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import date, datetime
from importlib import resources
from typing import Any

from bot.models import Paper


def _paper(d: dict[str, Any]) -> Paper:
    def dt(v: str | None) -> datetime | None:
        return datetime.fromisoformat(v) if v else None

    def day(v: str | None) -> date | None:
        return date.fromisoformat(v) if v else None

    return Paper(
        arxiv_id=d["arxiv_id"], title=d["title"], abstract=d.get("abstract", ""), authors=tuple(d.get("authors", ())),
        categories=tuple(d.get("categories", ())), version=int(d.get("version", 1)),
        primary_category=d.get("primary_category"), submitted=dt(d.get("submitted")), updated=dt(d.get("updated")),
        announced=day(d.get("announced")), comment=d.get("comment"), doi=d.get("doi"),
        journal_ref=d.get("journal_ref"), upvotes=d.get("upvotes"), ai_summary=d.get("ai_summary"),
        ai_keywords=tuple(d.get("ai_keywords", ())), github_repo=d.get("github_repo"), hf_day=day(d.get("hf_day")),
        source="sample",
    )


def paper_to_dict(p: Paper) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in Paper.__slots__:
        value = getattr(p, name)
        if value is None or value == () or name == "source":
            continue
        if isinstance(value, datetime | date):
            value = value.isoformat()
        elif isinstance(value, tuple):
            value = list(value)
        out[name] = value
    return out


def load_sample(announced: date | None = None) -> list[Paper]:
    """The sample papers; with `announced`, dated as that day's announcement (so `today` and threads show them)."""
    raw = json.loads((resources.files("bot") / "data" / "sample_papers.json").read_text(encoding="utf-8"))
    papers = [_paper(d) for d in raw]
    if announced is not None:
        papers = [replace(p, announced=announced, announce_type="new") for p in papers]
    return papers

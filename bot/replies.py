"""Pure builders of Replies and DailyThreads. No I/O; renderers clamp to each platform's limits later."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from datetime import date
from typing import Any

from bot.commands import COMMANDS, COMMANDS_BY_NAME
from bot.models import (
    Card,
    ChannelRule,
    DailyThread,
    Field,
    Paper,
    Reply,
    SearchResult,
    ThreadPost,
    Visibility,
)

SUMMARY_CHARS = 400
MAX_AUTHORS = 6


def error(text: str) -> Reply:
    return Reply(text=text, is_error=True)


def info(text: str, *, shared: bool = False) -> Reply:
    return Reply(text=text, visibility=Visibility.CHANNEL if shared else Visibility.PRIVATE)


def with_notice(reply: Reply, notice: str) -> Reply:
    return replace(reply, text=f"{reply.text}\n\n⚠️ {notice}")


def unknown_command(name: str) -> Reply:
    shown = name[:30] if name.isprintable() else "that"
    return Reply(text=f"I don't know the command `{shown}`.\n\n" + help_text(), is_error=True)


def help_text(name: str | None = None) -> str:
    if name:
        spec = COMMANDS_BY_NAME.get(name.strip().lower().lstrip("/"))
        if spec is None:
            return f"No command `{name[:30]}`. " + help_text()
        lines = [f"`{spec.usage}` — {spec.help}"]
        if spec.admin:
            lines.append("Admins only.")
        lines += [f"Example: `{ex}`" for ex in spec.examples]
        return "\n".join(lines)
    lines = ["**paperboy** — new research papers, daily threads and alerts. Commands:"]
    for spec in COMMANDS:
        lines.append(f"• `{spec.usage}` — {spec.summary}")
    lines.append("`help COMMAND` explains one command and its query syntax.")
    return "\n".join(lines)


def short_authors(authors: Sequence[str]) -> str:
    if not authors:
        return "unknown authors"
    if len(authors) <= MAX_AUTHORS:
        return ", ".join(authors)
    return ", ".join(authors[:MAX_AUTHORS]) + f" et al. ({len(authors)} authors)"


def summary_of(paper: Paper, limit: int = SUMMARY_CHARS) -> str:
    text = paper.ai_summary or paper.abstract or ""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    cut = text[:limit].rsplit(" ", 1)[0]
    return cut + "…"


def paper_card(paper: Paper, *, summary_chars: int = SUMMARY_CHARS, extra: str = "") -> Card:
    fields = [Field("Authors", short_authors(paper.authors), inline=False)]
    if paper.categories:
        fields.append(Field("Categories", " ".join(paper.categories)))
    if paper.upvotes is not None:
        fields.append(Field("Upvotes", f"▲ {paper.upvotes}"))
    if extra:
        fields.append(Field("Matched", extra, inline=False))
    links = [("abs", paper.abs_url), ("pdf", paper.pdf_url)]
    if paper.hf_url:
        links.append(("Hugging Face", paper.hf_url))
    if paper.github_repo:
        links.append(("code", paper.github_repo))
    day = paper.published.isoformat() if paper.published else ""
    footer = f"arXiv:{paper.arxiv_id}v{paper.version}" + (f" · {day}" if day else "")
    return Card(
        title=" ".join(paper.title.split()) or paper.arxiv_id,
        url=paper.abs_url,
        body=summary_of(paper, summary_chars),
        fields=tuple(fields),
        footer=footer,
        links=tuple(links),
        paper_id=paper.arxiv_id,
    )


def paper_detail(paper: Paper) -> Reply:
    card = paper_card(paper, summary_chars=3500)
    more = []
    if paper.comment:
        more.append(Field("Comment", paper.comment[:1000], inline=False))
    if paper.journal_ref:
        more.append(Field("Journal", paper.journal_ref[:1000], inline=False))
    if paper.doi:
        more.append(Field("DOI", paper.doi[:200]))
    if paper.ai_summary and paper.abstract:
        card = replace(card, body=" ".join(paper.abstract.split())[:3500])
        more.append(Field("In one line (Hugging Face)", paper.ai_summary[:1000], inline=False))
    card = replace(card, fields=card.fields + tuple(more))
    return Reply(text=f"arXiv:{paper.arxiv_id}", cards=(card,), visibility=Visibility.CHANNEL)


def search_reply(query_text: str, result: SearchResult, *, limit: int) -> Reply:
    if result.error:
        return error(result.error)
    notes = "".join(f"\n_({n})_" for n in result.notes)
    if not result.hits:
        return Reply(
            text=f"No papers match `{query_text[:200]}`. Try fewer words, a prefix like `transform*`, or `OR`."
            + notes,
            visibility=Visibility.CHANNEL,
        )
    total = f" of {result.total}" if result.total is not None else ""
    head = f"Top {len(result.hits)}{total} for `{query_text[:200]}`:" + notes
    cards = tuple(paper_card(h.paper, summary_chars=250) for h in result.hits[:limit])
    return Reply(text=head, cards=cards, visibility=Visibility.CHANNEL)


def topic_of(rule: ChannelRule) -> str:
    parts = list(rule.categories)
    if rule.query:
        parts.append(rule.query)
    return " · ".join(parts) if parts else "all papers"


def order_for_thread(papers: Sequence[Paper]) -> list[Paper]:
    """Trending first: papers with Hugging Face upvotes lead, by upvotes; the rest keep announcement order."""
    voted = sorted((p for p in papers if p.upvotes), key=lambda p: -(p.upvotes or 0))
    rest = [p for p in papers if not p.upvotes]
    return voted + rest


def daily_thread(rule: ChannelRule, day: date, papers: Sequence[Paper]) -> DailyThread:
    ordered = order_for_thread(papers)
    shown = ordered[: max(1, rule.cap)]
    hidden = len(ordered) - len(shown)
    topic = topic_of(rule)
    title = f"Papers · {day.isoformat()} · {topic}"
    count = f"{len(ordered)} new paper{'s' if len(ordered) != 1 else ''}"
    trending = sum(1 for p in shown if p.upvotes)
    opener_text = f"📰 **{count}** for {topic} — {day.strftime('%a %d %b %Y')}."
    if trending:
        opener_text += f" {trending} trending on Hugging Face lead the thread."
    if hidden:
        opener_text += f" Showing {len(shown)}; the rest are listed at the end."
    opener = Reply(text=opener_text, visibility=Visibility.CHANNEL)
    posts = [
        ThreadPost(key=f"{p.arxiv_id}", reply=Reply(text="", cards=(paper_card(p),), visibility=Visibility.CHANNEL),
                   paper_ids=(p.arxiv_id,))
        for p in shown
    ]
    if hidden:
        rest = ordered[len(shown):]
        hint = _search_hint(rule, day)
        listing = ", ".join(p.arxiv_id for p in rest[:40]) + (" …" if len(rest) > 40 else "")
        posts.append(ThreadPost(
            # Named after its first paper: a second plan the same day adds its own line instead of colliding.
            key=f"more:{rest[0].arxiv_id}",
            reply=Reply(text=f"…and {hidden} more ({listing}). See them all with `/papers search {hint}`.",
                        visibility=Visibility.CHANNEL),
            paper_ids=tuple(p.arxiv_id for p in rest),
        ))
    return DailyThread(rule.channel, day, title, opener, tuple(posts))


def _search_hint(rule: ChannelRule, day: date) -> str:
    parts = []
    if rule.categories:
        parts.append(" OR ".join(f"cat:{c}" for c in rule.categories))
        if len(rule.categories) > 1:
            parts[0] = f"({parts[0]})"
    if rule.query:
        parts.append(f"({rule.query})")
    parts.append(f"since:{day.isoformat()}")
    return " ".join(parts)


def alert_reply(papers: Sequence[Paper], matched: dict[str, list[str]]) -> Reply:
    n = len(papers)
    head = f"🔔 {n} new paper{'s' if n != 1 else ''} match{'es' if n == 1 else ''} your alerts:"
    cards = tuple(paper_card(p, summary_chars=250, extra=", ".join(matched.get(p.arxiv_id, []))) for p in papers)
    return Reply(text=head, cards=cards)


# ---------------------------------------------------------------- the ledger stores what it will send

def reply_to_json(reply: Reply, **extra: Any) -> str:
    data: dict[str, Any] = {
        "text": reply.text,
        "visibility": reply.visibility.value,
        "is_error": reply.is_error,
        "cards": [
            {
                "title": c.title, "url": c.url, "body": c.body, "footer": c.footer, "paper_id": c.paper_id,
                "fields": [[f.name, f.value, f.inline] for f in c.fields],
                "links": [list(link) for link in c.links],
            }
            for c in reply.cards
        ],
    }
    data.update(extra)
    return json.dumps(data, ensure_ascii=False)


def reply_from_json(payload: str) -> tuple[Reply, dict[str, Any]]:
    data = json.loads(payload)
    cards = tuple(
        Card(
            title=c["title"], url=c["url"], body=c["body"], footer=c["footer"], paper_id=c.get("paper_id"),
            fields=tuple(Field(f[0], f[1], bool(f[2])) for f in c["fields"]),
            links=tuple((link[0], link[1]) for link in c["links"]),
        )
        for c in data.pop("cards")
    )
    reply = Reply(
        text=data.pop("text"),
        cards=cards,
        visibility=Visibility(data.pop("visibility")),
        is_error=bool(data.pop("is_error")),
    )
    return reply, data

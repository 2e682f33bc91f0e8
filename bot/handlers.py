"""One function per command: (Command, Deps) -> Reply. Handlers read and write stores; they never send."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import timedelta

from bot import calendar, replies
from bot.commands import Handler
from bot.deps import Deps
from bot.digest import plan_thread
from bot.ingest import rule_query
from bot.matching import doc_of
from bot.models import ChannelRef, ChannelRule, Command, Reply, Visibility, split_arxiv_id
from bot.query import QueryError, matched_terms, matches

CATEGORY = re.compile(r"[a-z][a-z-]*(\.[A-Za-z][A-Za-z-]{0,7})?")
KNOWN_ARCHIVES = {
    "cs", "math", "stat", "eess", "econ", "q-bio", "q-fin", "physics", "astro-ph", "cond-mat", "gr-qc", "hep-ex",
    "hep-lat", "hep-ph", "hep-th", "math-ph", "nlin", "nucl-ex", "nucl-th", "quant-ph",
}


def _is_category(word: str) -> bool:
    return bool(CATEGORY.fullmatch(word)) and word.split(".", 1)[0] in KNOWN_ARCHIVES


def _category_name(word: str) -> str:
    """arXiv's spelling: lower-case archive, subject class as written (cs.LG, math.AG, astro-ph.CO)."""
    archive, dot, sub = word.partition(".")
    return archive.lower() + dot + (sub.upper() if archive.lower() in ("cs", "math", "econ", "eess", "q-bio",
                                                                        "q-fin", "stat") else sub)


async def search(cmd: Command, deps: Deps) -> Reply:
    try:
        query = deps.parse(cmd.args)
    except QueryError as exc:
        return replies.error(str(exc))
    limit = deps.config.search_results
    result = await deps.papers.search(query, limit=limit, count=True)
    return replies.search_reply(query.text, result, limit=limit)


async def today(cmd: Command, deps: Deps) -> Reply:
    day = await deps.papers.latest_announced()
    if day is None:
        return replies.info("No announced papers are stored yet; the next fetch will bring some.", shared=True)
    rule = await deps.channels.get_rule(cmd.channel) if cmd.channel else None
    parts = []
    if rule is not None:
        q = rule_query(rule, deps.clock.now())
        if q is not None:
            parts.append(f"({q.text})")
    parts.append(f"since:{day.isoformat()}")
    query = deps.parse(" ".join(parts))
    limit = deps.config.search_results
    result = await deps.papers.search(query, limit=limit, order="recent", count=True)
    topic = replies.topic_of(rule) if rule else "all topics"
    if not result.hits:
        return replies.info(f"No papers for {topic} in the announcement of {day.isoformat()}.", shared=True)
    cards = tuple(replies.paper_card(h.paper, summary_chars=250) for h in result.hits)
    more = ""
    if result.total and result.total > len(cards):
        more = f" Showing {len(cards)}; `search since:{day.isoformat()}` lists more."
    return Reply(text=f"{result.total} papers for {topic} announced {day.isoformat()}.{more}", cards=cards,
                 visibility=Visibility.CHANNEL)


def _paper_arg(cmd: Command) -> str | Reply:
    """The versionless arXiv id a command names, or the error reply that explains the input."""
    try:
        return split_arxiv_id(cmd.args.split()[0])[0]
    except ValueError as exc:
        return replies.error(str(exc))


async def show(cmd: Command, deps: Deps) -> Reply:
    arxiv_id = _paper_arg(cmd)
    if isinstance(arxiv_id, Reply):
        return arxiv_id
    paper = await deps.papers.get(arxiv_id)
    if paper is None:
        return replies.error(f"I don't have arXiv:{arxiv_id}. It may be newer than the last fetch or outside "
                             f"the followed categories: https://arxiv.org/abs/{arxiv_id}")
    return replies.paper_detail(paper)


async def subscribe(cmd: Command, deps: Deps) -> Reply:
    try:
        query = deps.parse(cmd.args)
    except QueryError as exc:
        return replies.error(str(exc))
    if query.root is None:
        return replies.error("An alert needs words or categories to watch for, not only a date.")
    if query.since is not None:
        return replies.error("Alerts only ever see new papers, so `since:` has no use in them; drop it.")
    existing = await deps.subscriptions.for_user(cmd.user)
    if any(s.query == query.text for s in existing):
        return replies.info(f"You already have the alert `{query.text}`.")
    cap = deps.config.max_subscriptions
    if len(existing) >= cap:
        return replies.error(f"You have {len(existing)} alerts, the most allowed ({cap}). Remove one with "
                             "`unsubscribe NUMBER` first.")
    sub = await deps.subscriptions.add(cmd.user, query.text, at=deps.clock.now())
    number = len(existing) + 1
    days = deps.config.preview_days
    preview_q = replace(query, since=deps.today() - timedelta(days=days))
    result = await deps.papers.search(preview_q, limit=3, order="recent", count=True)
    total = result.total or 0
    lines = [f"✅ Alert #{number} saved: `{sub.query}`. I'll DM you when a new paper matches."]
    if total == 0:
        lines.append(f"It would have matched nothing in the last {days} days: check the spelling, or widen it "
                     "with `OR` or a prefix like `transform*`.")
    else:
        per_day = total / days
        lines.append(f"In the last {days} days it would have matched {total} paper{'s' if total != 1 else ''}"
                     f" (about {per_day:.1f} a day). The latest:")
        if per_day > 20:
            lines.append("That is a lot of DMs: narrow it with more words, a phrase, `cat:` or `-word`.")
    cards = tuple(replies.paper_card(h.paper, summary_chars=160) for h in result.hits)
    return Reply(text="\n".join(lines), cards=cards)


async def unsubscribe(cmd: Command, deps: Deps) -> Reply:
    subs = await deps.subscriptions.for_user(cmd.user)
    if not subs:
        return replies.info("You have no alerts.")
    arg = cmd.args.strip()
    target = None
    # isdigit() alone accepts '²', which int() refuses: only ASCII digits are a number here.
    if arg.lstrip("#").isascii() and arg.lstrip("#").isdigit():
        n = int(arg.lstrip("#"))
        if 1 <= n <= len(subs):
            target = subs[n - 1]
        else:
            return replies.error(f"You have alerts 1 to {len(subs)}; `subscriptions` lists them.")
    else:
        wanted = " ".join(arg.split()).lower()
        target = next((s for s in subs if " ".join(s.query.split()).lower() == wanted), None)
        if target is None:
            return replies.error(f"No alert `{arg[:100]}`. Use its number from `subscriptions`.")
    await deps.subscriptions.remove(cmd.user, target.id)
    return replies.info(f"Removed the alert `{target.query}`.")


async def subscriptions(cmd: Command, deps: Deps) -> Reply:
    subs = await deps.subscriptions.for_user(cmd.user)
    if not subs:
        return replies.info("You have no alerts. Add one with `subscribe QUERY`, e.g. `subscribe \"graph neural\"`.")
    lines = [f"Your alerts ({len(subs)}/{deps.config.max_subscriptions}):"]
    lines += [f"{i}. `{s.query}`" for i, s in enumerate(subs, start=1)]
    reason = await deps.subscriptions.unreachable(cmd.user)
    if reason:
        lines.append(f"⚠️ Alerts are paused: I could not DM you ({reason}).")
    return replies.info("\n".join(lines))


def _channel_required(cmd: Command) -> ChannelRef | Reply:
    if cmd.channel is None or cmd.channel.kind == "dm":
        return replies.error(f"`{cmd.name}` works in a channel, not in a direct message.")
    return cmd.channel


async def follow(cmd: Command, deps: Deps) -> Reply:
    channel = _channel_required(cmd)
    if isinstance(channel, Reply):
        return channel
    words = cmd.args.split()
    if words and all(_is_category(_category_name(w)) for w in words):
        categories, query_text = tuple(dict.fromkeys(_category_name(w) for w in words)), None
    else:
        categories, query_text = (), cmd.args.strip()
        try:
            query = deps.parse(query_text)
        except QueryError as exc:
            return replies.error(str(exc))
        if query.root is None or query.since is not None:
            return replies.error("A follow rule needs categories or words, and no `since:`.")
        query_text = query.text
    old = await deps.channels.get_rule(channel)
    rule = ChannelRule(
        channel=channel,
        categories=categories,
        query=query_text,
        post_time=old.post_time if old else deps.config.default_post_time,
        timezone=old.timezone if old else deps.config.default_timezone,
        cap=old.cap if old else 30,
        weekends=old.weekends if old else False,
        paused_reason=None,
    )
    try:
        # Check the whole rule before saving it: a rule routing cannot parse would silently post nothing.
        q = rule_query(rule, deps.clock.now())
    except QueryError as exc:
        return replies.error(f"This channel can't follow that: {exc}")
    await deps.channels.set_rule(rule)
    # Queue the latest announcement's matching papers, so `post` shows something right away.
    queued = 0
    day = await deps.papers.latest_announced()
    if day is not None and q is not None:
        result = await deps.papers.search(replace(q, since=day), limit=100, order="recent")
        ids = [h.paper.arxiv_id for h in result.hits]
        queued = await deps.channels.enqueue(channel, ids, at=deps.clock.now())
    nxt = calendar.next_post_time(deps.clock.now(), post_time=rule.post_time, timezone=rule.timezone,
                                  weekends=rule.weekends)
    return replies.info(
        f"This channel now follows {replies.topic_of(rule)}. New papers are posted daily at {rule.post_time} "
        f"{rule.timezone} on arXiv announcement days (next: {nxt.strftime('%a %d %b %H:%M UTC')}). "
        f"{queued} paper{'s' if queued != 1 else ''} from the latest announcement are queued; "
        "`post` sends them now, `settings` changes the time.",
        shared=True,
    )


async def unfollow(cmd: Command, deps: Deps) -> Reply:
    channel = _channel_required(cmd)
    if isinstance(channel, Reply):
        return channel
    if await deps.channels.remove_rule(channel):
        return replies.info("This channel no longer gets a daily thread.", shared=True)
    return replies.info("This channel follows nothing.")


async def settings(cmd: Command, deps: Deps) -> Reply:
    channel = _channel_required(cmd)
    if isinstance(channel, Reply):
        return channel
    rule = await deps.channels.get_rule(channel)
    if rule is None:
        return replies.error("This channel follows nothing yet; start with `follow cs.LG` (or a query).")
    words = cmd.args.split()
    changes: dict[str, str | int | bool] = {}
    i = 0
    while i < len(words):
        key = words[i].lower()
        value = words[i + 1] if i + 1 < len(words) else None
        if value is None:
            return replies.error(f"`{key[:20]}` needs a value. Usage: `settings time 08:30 timezone Europe/Berlin`")
        if key == "time":
            try:
                h, m = calendar.parse_hhmm(value)
            except ValueError as exc:
                return replies.error(str(exc))
            changes["post_time"] = f"{h:02d}:{m:02d}"
        elif key in ("timezone", "tz"):
            if not calendar.valid_timezone(value):
                return replies.error(f"`{value[:40]}` is not an IANA timezone; use e.g. Europe/Berlin or "
                                     "America/New_York.")
            changes["timezone"] = value
        elif key == "cap":
            if not (value.isascii() and value.isdigit()) or not 1 <= int(value) <= 100:
                return replies.error("`cap` takes a number from 1 to 100.")
            changes["cap"] = int(value)
        elif key == "weekends":
            if value.lower() not in ("on", "off", "yes", "no", "true", "false"):
                return replies.error("`weekends` takes on or off.")
            changes["weekends"] = value.lower() in ("on", "yes", "true")
        else:
            return replies.error(f"Unknown setting `{key[:20]}`; settings are time, timezone, cap and weekends.")
        i += 2
    if changes:
        rule = replace(rule, **changes)  # type: ignore[arg-type]  # each key's value type is checked above
        await deps.channels.set_rule(rule)
    nxt = calendar.next_post_time(deps.clock.now(), post_time=rule.post_time, timezone=rule.timezone,
                                  weekends=rule.weekends)
    head = "Saved. " if changes else ""
    return replies.info(
        f"{head}Topic: {replies.topic_of(rule)}. Daily at {rule.post_time} {rule.timezone}, at most {rule.cap} "
        f"papers, weekends {'on' if rule.weekends else 'off'}. Next post: {nxt.strftime('%a %d %b %Y %H:%M UTC')}."
    )


async def post(cmd: Command, deps: Deps) -> Reply:
    channel = _channel_required(cmd)
    if isinstance(channel, Reply):
        return channel
    rule = await deps.channels.get_rule(channel)
    if rule is None:
        return replies.error("This channel follows nothing yet; start with `follow cs.LG` (or a query).")
    day = await deps.papers.latest_announced() or deps.today()
    report = await plan_thread(deps, rule, day)
    if report.papers == 0:
        return replies.info("Nothing is queued for this channel; new papers arrive with the next announcement.")
    return replies.info(f"Posting {report.papers} paper{'s' if report.papers != 1 else ''} in today's thread now.")


async def status(cmd: Command, deps: Deps) -> Reply:
    lines = ["**paperboy status**"]
    for s in await deps.status.fetch_statuses():
        when = s.last_run.strftime("%Y-%m-%d %H:%M UTC") if s.last_run else "never"
        lines.append(f"• {s.source}: {s.outcome} at {when} — {s.detail[:200]}")
    if len(lines) == 1:
        lines.append("• no source has been fetched yet")
    total = await deps.papers.count()
    day = await deps.papers.latest_announced()
    announced = await deps.papers.count_announced(day) if day else 0
    lines.append(f"Papers stored: {total}; in the latest announcement ({day or 'none'}): {announced}.")
    if cmd.channel is not None:
        rule = await deps.channels.get_rule(cmd.channel)
        if rule is not None:
            queued = len(await deps.channels.queued(cmd.channel))
            nxt = calendar.next_post_time(deps.clock.now(), post_time=rule.post_time, timezone=rule.timezone,
                                          weekends=rule.weekends)
            lines.append(f"This channel follows {replies.topic_of(rule)}: {queued} queued, next post "
                         f"{nxt.strftime('%a %d %b %H:%M UTC')}.")
            if rule.paused_reason:
                lines.append(f"⚠️ Posting here is paused: {rule.paused_reason}. `follow` again to resume.")
    counts = await deps.ledger.counts()
    lines.append("Messages: " + ", ".join(f"{counts.get(k, 0)} {k}" for k in ("pending", "sent", "failed", "skipped")))
    failures = await deps.ledger.failures(5)
    for f in failures:
        lines.append(f"• {f.state.value} {f.kind} → {f.target.split(':')[0]}: {(f.error or '')[:150]}")
    return replies.info("\n".join(lines))


async def why(cmd: Command, deps: Deps) -> Reply:
    arxiv_id = _paper_arg(cmd)
    if isinstance(arxiv_id, Reply):
        return arxiv_id
    paper = await deps.papers.get(arxiv_id)
    if paper is None:
        return replies.info(f"I have never seen arXiv:{arxiv_id}: no source has delivered it yet (it may be newer "
                            "than the last fetch, or outside the fetched categories). `status` shows the fetches.")
    doc = doc_of(paper)
    seen = await deps.papers.sources_of(arxiv_id)
    lines = [f"**arXiv:{arxiv_id}** — {paper.title[:150]}",
             "Seen by: " + (", ".join(f"{s} ({t.date().isoformat()})" for s, t in seen) or "unknown") +
             f"; categories {' '.join(paper.categories) or 'unknown'}; "
             + ("a new announcement." if paper.announce_type in (None, "new", "cross") else "a replacement.")]
    if cmd.channel is not None:
        rule = await deps.channels.get_rule(cmd.channel)
        if rule is None:
            lines.append("This channel follows nothing, so it gets no daily thread.")
        else:
            q = rule_query(rule, deps.clock.now())
            ok = q is None or matches(q, doc)
            lines.append(f"This channel follows {replies.topic_of(rule)}: the paper "
                         f"{'matches' if ok else 'does not match'}.")
            state = await deps.channels.queue_state(cmd.channel, arxiv_id)
            if state is None:
                lines.append("It was never queued here" + (" (it arrived before the channel followed this topic, "
                             "or as a replacement)." if ok else "."))
            elif state == "queued":
                lines.append("It is queued for the next daily thread.")
            else:
                lines.append(f"It went into the thread of {state}.")
            for d in await deps.ledger.find(cmd.channel.key, arxiv_id):
                lines.append(f"Ledger: {d.kind} {d.state.value}" + (f" — {d.error}" if d.error else "")
                             + (f" (message {d.message_id})" if d.message_id else ""))
    subs = await deps.subscriptions.for_user(cmd.user)
    hits = []
    for s in subs:
        try:
            q = deps.parse(s.query)
        except QueryError:
            continue
        if matches(q, doc):
            hits.append(f"`{s.query}` (matched {', '.join(matched_terms(q, doc)) or 'its filters'})")
    if subs:
        lines.append("Your alerts that match: " + ("; ".join(hits) if hits else f"none of your {len(subs)}."))
    else:
        lines.append("You have no alerts.")
    for d in await deps.ledger.find(cmd.user.key, arxiv_id):
        lines.append(f"Your DM: {d.state.value}" + (f" — {d.error}" if d.error else ""))
    reason = await deps.subscriptions.unreachable(cmd.user)
    if reason:
        lines.append(f"⚠️ I can't DM you: {reason}.")
    return replies.info("\n".join(lines))


async def help_(cmd: Command, deps: Deps) -> Reply:
    return replies.info(replies.help_text(cmd.args.strip() or None))


HANDLERS: dict[str, Handler] = {
    "search": search,
    "today": today,
    "show": show,
    "subscribe": subscribe,
    "unsubscribe": unsubscribe,
    "subscriptions": subscriptions,
    "status": status,
    "why": why,
    "help": help_,
    "follow": follow,
    "unfollow": unfollow,
    "settings": settings,
    "post": post,
}

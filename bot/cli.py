"""The `paperboy` command."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bot.models import FetchResult, Paper, split_arxiv_id
from bot.settings import Settings


def _settings(args: argparse.Namespace) -> Settings:
    settings = Settings()
    if getattr(args, "db", None):
        settings = settings.model_copy(update={"db": Path(args.db)})
    return settings


def paper_json(p: Paper, score: float | None = None) -> dict[str, Any]:
    return {
        "arxiv_id": p.arxiv_id,
        "version": p.version,
        "title": p.title,
        "authors": list(p.authors),
        "categories": list(p.categories),
        "published": p.published.isoformat() if p.published else None,
        "url": p.abs_url,
        "pdf_url": p.pdf_url,
        "abstract": p.abstract,
        "upvotes": p.upvotes,
        "score": score,
    }


async def _open(settings: Settings, out: Any = None) -> Any:
    from bot.app import App

    return await App(settings, out=out or sys.stdout).open()


# ------------------------------------------------------------------ subcommands

async def cmd_demo(args: argparse.Namespace) -> int:
    from adapters.console import CONSOLE_CHANNEL, ConsolePlatform, console_user
    from bot import calendar
    from bot.models import ChannelRule
    from bot.sample import load_sample

    with tempfile.TemporaryDirectory() as tmp:
        settings = _settings(args)
        if not args.db:
            settings = settings.model_copy(update={"db": Path(tmp) / "demo.db"})
        app = await _open(settings)
        try:
            assert app.service is not None
            console = ConsolePlatform(app.service, sys.stdout, console_user())
            app.platforms = {"console": console}
            d = app.d
            print("paperboy demo — offline, on the bundled sample papers\n")
            await d.channels.set_rule(ChannelRule(CONSOLE_CHANNEL, categories=settings.category_list,
                                                  post_time=settings.digest_time, timezone=settings.timezone))
            print(f"$ follow {' '.join(settings.category_list)}   (the console channel follows these categories)")
            alert = '"language model" OR diffusion'
            print(f"$ subscribe {alert}")
            await d.subscriptions.add(console.user, alert, at=d.clock.now())
            day = calendar.latest_paper_day(d.clock.now())
            papers = load_sample(announced=day)
            report = await app.ingest_papers(FetchResult("sample", tuple(papers), detail="bundled sample"))
            print(f"Ingested the sample: {report.line()}\n")
            print("$ post   (today's thread, as the console posts it)")
            await console.say("post")
            await app.deliver()
            print("\nExample searches:")
            for line in ('search "large language model"', "search diffusion -video", "search ti:reinforcement*",
                         "search cat:stat.ML", "subscriptions"):
                print(f"\n$ {line}")
                await console.say(line)
        finally:
            await app.close()
    return 0


async def cmd_run(args: argparse.Namespace) -> int:
    from storage.db import DatabaseError

    settings = _settings(args)
    if args.offline:
        settings = settings.model_copy(update={"offline": True})
    try:
        app = await _open(settings)
    except DatabaseError as exc:
        print(f"paperboy: {exc}", file=sys.stderr)
        return 2
    try:
        await app.run()
    finally:
        await app.close()
    return 0


async def cmd_chat(args: argparse.Namespace) -> int:
    from adapters.console import ConsolePlatform

    app = await _open(_settings(args))
    try:
        console = ConsolePlatform(app.service, sys.stdout)
        app.platforms = {"console": console}
        await app.ensure_console_follow()
        loaded = await app.load_sample_if_empty()
        if loaded and not args.say:
            print(f"(loaded {loaded} bundled sample papers)")
        if args.say:
            for line in args.say:
                await console.say(line)
            await app.deliver()
        else:
            print("paperboy chat — type `help`, end with Ctrl-D")
            await console.repl(prompt=sys.stdin.isatty())
            await app.deliver()
    finally:
        await app.close()
    return 0


async def cmd_ingest(args: argparse.Namespace) -> int:
    from adapters.sources.detect import load_file

    app = await _open(_settings(args))
    status = 0
    results: list[dict[str, Any]] = []
    try:
        if args.file:
            for path in args.file:
                try:
                    fmt, papers, note = load_file(path)
                except (OSError, ValueError) as exc:
                    print(f"{path}: {exc}", file=sys.stderr)
                    status = 1
                    continue
                report = await app.ingest_papers(FetchResult(f"file:{fmt}", tuple(papers), detail=note))
                results.append({"file": str(path), "format": fmt, "papers": len(papers), "new": report.new,
                                "updated": report.updated, "note": note})
                if not args.json:
                    print(f"{path}: {fmt}: {note}; {report.new} new, {report.updated} updated")
        else:
            app.sources = _sources(app, args.source)
            for report in await app.ingest(app.sources):
                results.append({"source": report.source, "outcome": report.outcome, "new": report.new,
                                "updated": report.updated, "detail": report.detail})
                if not args.json:
                    print(report.line())
                if report.outcome == "error":
                    status = 1
        if args.json:
            print(json.dumps(results, indent=2))
    finally:
        await app.close()
    return status


def _sources(app: Any, name: str) -> list[Any]:
    from adapters.sources.arxiv_api import ArxivApiSource
    from adapters.sources.arxiv_rss import ArxivRssSource
    from adapters.sources.hf_daily import HfDailySource
    from adapters.sources.http import PoliteClient
    from adapters.sources.oai_pmh import OaiPmhSource

    client = PoliteClient(app.settings)
    app._http = client
    kinds = {"rss": ArxivRssSource, "api": ArxivApiSource, "hf": HfDailySource, "oai": OaiPmhSource}
    return [kinds[name](client, app.settings)]


async def cmd_search(args: argparse.Namespace) -> int:
    from bot.query import QueryError

    app = await _open(_settings(args))
    try:
        try:
            query = app.d.parse(" ".join(args.query))
        except QueryError as exc:
            print(f"paperboy: {exc}", file=sys.stderr)
            return 2
        result = await app.d.papers.search(query, limit=args.limit, count=not args.json)
        if result.error:
            print(f"paperboy: {result.error}", file=sys.stderr)
            return 2
        if args.json:
            print(json.dumps([paper_json(h.paper, round(h.score, 4)) for h in result.hits], indent=2,
                             ensure_ascii=False))
            return 0
        if not result.hits:
            print(f"No papers match {query.text!r}.")
        for note in result.notes:
            print(f"({note})")
        for i, hit in enumerate(result.hits, start=1):
            p = hit.paper
            print(f"{i:2}. [{p.arxiv_id}] {p.title}\n    {', '.join(p.authors[:4])}"
                  f"{' et al.' if len(p.authors) > 4 else ''} · {' '.join(p.categories)} · "
                  f"{p.published or ''} · {p.abs_url}")
    finally:
        await app.close()
    return 0


async def cmd_show(args: argparse.Namespace) -> int:
    from adapters.console import render_text
    from bot.replies import paper_detail

    try:
        arxiv_id, _ = split_arxiv_id(args.arxiv_id)
    except ValueError as exc:
        print(f"paperboy: {exc}", file=sys.stderr)
        return 2
    app = await _open(_settings(args))
    try:
        paper = await app.d.papers.get(arxiv_id)
        if paper is None:
            print(f"paperboy: arXiv:{arxiv_id} is not in the database", file=sys.stderr)
            return 1
        if args.json:
            print(json.dumps(paper_json(paper), indent=2, ensure_ascii=False))
        else:
            print(render_text(paper_detail(paper)))
    finally:
        await app.close()
    return 0


def cmd_backfill(args: argparse.Namespace) -> int:
    from storage.backfill import run_backfill

    return run_backfill(_settings(args), snapshot=args.snapshot, oai=args.oai, limit=args.limit,
                        json_out=args.json)


def cmd_reindex(args: argparse.Namespace) -> int:
    from storage.backfill import reindex

    return reindex(_settings(args), json_out=args.json)


def cmd_backup(args: argparse.Namespace) -> int:
    from storage.db import DatabaseError, backup

    settings = _settings(args)
    try:
        pages = backup(settings.db, args.path)
    except DatabaseError as exc:
        print(f"paperboy: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps({"backup": str(args.path), "pages": pages}))
    else:
        print(f"Backed up {settings.db} to {args.path} ({pages} pages, integrity ok). "
              f"Restore: stop paperboy, then copy {args.path} over {settings.db}.")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from storage.bench import main as bench_main

    return bench_main(args)


# ------------------------------------------------------------------ parser

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="paperboy", description="New research papers in Discord, Slack and "
                                     "your terminal: daily threads, search and alerts.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--db", help="SQLite database (default: PAPERBOY_DB or ./paperboy.db)")
        p.add_argument("--json", action="store_true", help="machine-readable output")
        return p

    add("demo", "offline demo on the bundled sample: today's thread, a DM alert, example searches")
    p = add("run", "the service: scheduler and every configured platform (console when no token)")
    p.add_argument("--offline", action="store_true", help="do not fetch sources; use what is stored")
    p = add("chat", "the console adapter; --say runs one command and exits")
    p.add_argument("--say", action="append", help="a command line to run (repeatable); a leading /papers is ok")
    p = add("ingest", "ingest recorded payloads (--file) or fetch a source live (--source)")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--file", nargs="+", help="files: arXiv API/RSS/Atom, HF daily_papers, OAI-PMH, JSON lines")
    g.add_argument("--source", choices=("rss", "api", "hf", "oai"))
    p = add("search", "search the stored papers with the query language")
    p.add_argument("query", nargs="+")
    p.add_argument("--limit", type=int, default=10)
    p = add("show", "one paper")
    p.add_argument("arxiv_id")
    p = add("backfill", "bulk history: arXiv metadata snapshot (JSON lines) or OAI-PMH, resumable")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--snapshot", help="arxiv-metadata-oai-snapshot.json (JSON lines)")
    g.add_argument("--oai", action="store_true", help="harvest OAI-PMH (OAI_PMH_URL)")
    p.add_argument("--limit", type=int, default=None, help="stop after this many records")
    add("reindex", "rebuild the search index from the SQLite store of record")
    p = add("backup", "an online copy of the database (SQLite backup API)")
    p.add_argument("path")
    p = add("bench", "benchmarks: search, matching, backfill, service, with ratios to the naive way")
    p.add_argument("--quick", action="store_true", help="the 100k tier only (CI smoke)")
    p.add_argument("--cache", default=None, help="where synthetic corpora are kept")
    p.add_argument("--tiers", default=None, help="comma-separated paper counts, e.g. 100000,1000000")
    return parser


ASYNC = {"demo": cmd_demo, "run": cmd_run, "chat": cmd_chat, "ingest": cmd_ingest, "search": cmd_search,
         "show": cmd_show}
SYNC = {"backfill": cmd_backfill, "reindex": cmd_reindex, "backup": cmd_backup, "bench": cmd_bench}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    os.environ.setdefault("PYTHONIOENCODING", "utf-8")
    from storage.db import DatabaseError

    try:
        if args.command in ASYNC:
            return asyncio.run(ASYNC[args.command](args))
        return SYNC[args.command](args)
    except DatabaseError as exc:
        print(f"paperboy: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

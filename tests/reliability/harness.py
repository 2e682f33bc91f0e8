"""The crash harness: run `paperboy run` as a real process, SIGKILL it at seeded random points, restart it,
and check that what the receiving end got is exactly what should have been sent.

One *life* is one process: it starts, ingests the current feed generation from the source fake, routes it
(channel queue + alert DMs), reads `post` on stdin (plan this channel's thread now) and delivers. Each life
but the last is killed with SIGKILL at a point chosen by a seeded RNG: either after a random delay, or just
after the receiving end has seen a random number of new messages (so kills land inside delivery runs, between
`platform.send` and the ledger's `mark_sent`). Between lives the harness sometimes advances the feed to a new
generation (a new announcement day) — only once the database holds the current one, as a real feed stays up
all day while the bot polls it. The last life runs to quiescence and exits cleanly on end of input.

The verdict compares three independent records: the source fake (what was announced), the receiving end
(console transcript or the platform fake) and the SQLite ledger. `Verdict.problems` must be empty.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import sqlite3
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

from bot.models import ChannelRef, ChannelRule, UserRef
from tests.reliability.source_fake import SourceFake

SUBSCRIPTIONS = ("language model", "reinforcement OR diffusion", "ti:learning")
ALERT_USERS = 6  # users with alerts, so an alert run is several DMs and kills land inside one
DEFAULT_CI_POINTS = 12


def kill_points_from_env(default: int = DEFAULT_CI_POINTS) -> int:
    """`PAPERBOY_CRASH_POINTS=100` runs the full count; CI runs a reduced one."""
    raw = os.environ.get("PAPERBOY_CRASH_POINTS", "").strip()
    return int(raw) if raw.isdigit() and int(raw) > 0 else default


def seed_from_env(default: int = 20261127) -> int:
    raw = os.environ.get("PAPERBOY_CRASH_SEED", "").strip()
    return int(raw) if raw.lstrip("-").isdigit() else default


@dataclass(frozen=True, slots=True)
class Received:
    """One message as the receiving end saw it, tied to its ledger key."""

    key: str
    kind: str  # opener, post, dm
    target: str  # channel key or user key
    message_id: str
    paper_ids: tuple[str, ...]


class Receiver:
    """The receiving end of one platform: how to configure the bot for it and what it got."""

    name: str = ""
    channel: ChannelRef
    user: UserRef

    def users(self, count: int) -> list[UserRef]:
        """Users who get alerts; the first is `user`."""
        return [self.user, *(UserRef(self.user.platform, f"reader{i}", f"reader{i}", self.user.workspace)
                             for i in range(1, count))]

    def env(self) -> dict[str, str]:
        raise NotImplementedError

    def secrets(self) -> tuple[str, ...]:
        """Tokens the bot is given: none may appear in its output or logs."""
        return ()

    def received(self) -> list[Received]:
        raise NotImplementedError

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def ready(self, bot: BotProcess) -> None:
        """Wait until the fresh process can take a command (the console reads stdin at once)."""
        return None

    def between_lives(self, rng: random.Random) -> None:
        """What the outage between two lives does to the receiving end (e.g. Discord forgets nonces)."""
        return None

    def stats(self) -> dict[str, int]:
        """Receiver-specific figures for the report."""
        return {}

    async def request_post(self, bot: BotProcess) -> None:
        """An admin's `post`: plan this channel's pending thread now."""
        await bot.say("post")

    async def finish(self, bot: BotProcess) -> int:
        """End the last life cleanly; returns the exit code."""
        return await bot.finish()


class ConsoleReceiver(Receiver):
    name = "console"

    def __init__(self, workdir: Path) -> None:
        from adapters.console import CONSOLE_CHANNEL, console_user

        self.transcript = workdir / "console-transcript.jsonl"
        self.channel = CONSOLE_CHANNEL
        self.user = console_user()

    def env(self) -> dict[str, str]:
        return {"PAPERBOY_CONSOLE_LOG": str(self.transcript)}

    def received(self) -> list[Received]:
        if not self.transcript.exists():
            return []
        out = []
        # Only whole lines: the bot may be writing the last one while this reads (the crash test's own check
        # is that a finished run leaves no partial line).
        whole, _, _ = self.transcript.read_text(encoding="utf-8").rpartition("\n")
        for line in whole.splitlines():
            data = json.loads(line)  # a torn whole line would be a finding: let it raise
            out.append(Received(data["key"], data["kind"], data["target"], data["message_id"],
                                tuple(data["paper_ids"])))
        return out


@dataclass
class KillPoint:
    index: int
    mode: str  # "early", "delay", "after-messages" or "after-dms"
    planned: str  # the delay in seconds or the message count waited for
    unfinished: str = ""  # what the database shows was left in flight: ingest, routing, posting, alerting, idle
    messages_in_life: int = 0


@dataclass
class Verdict:
    platform: str
    seed: int
    kill_points: list[KillPoint]
    generations: int
    announced: int
    channel_messages: int
    dm_messages: int
    alert_papers: int
    duplicates: list[str]
    missing_in_channel: list[str]
    extra_in_channel: list[str]
    duplicate_alert_papers: list[str]
    missing_alerts: list[str]
    ledger_mismatches: list[str]
    leaks: list[str]
    integrity: str
    clean_exit: bool
    elapsed_s: float
    source_requests: dict[str, int] = field(default_factory=dict)
    receiver_stats: dict[str, int] = field(default_factory=dict)

    @property
    def problems(self) -> list[str]:
        out: list[str] = []
        if self.duplicates:
            out.append(f"{len(self.duplicates)} duplicate messages: {self.duplicates[:5]}")
        if self.missing_in_channel:
            out.append(f"{len(self.missing_in_channel)} papers never reached the channel: "
                       f"{self.missing_in_channel[:5]}")
        if self.extra_in_channel:
            out.append(f"{len(self.extra_in_channel)} unexpected papers in the channel: {self.extra_in_channel[:5]}")
        if self.duplicate_alert_papers:
            out.append(f"{len(self.duplicate_alert_papers)} papers alerted twice: {self.duplicate_alert_papers[:5]}")
        if self.missing_alerts:
            out.append(f"{len(self.missing_alerts)} alerts silently dropped: {self.missing_alerts[:5]}")
        if self.ledger_mismatches:
            out.append(f"ledger disagrees with the receiving end: {self.ledger_mismatches[:5]}")
        if self.leaks:
            out.append(f"secrets in the bot's output: {self.leaks[:5]}")
        if self.integrity != "ok":
            out.append(f"integrity_check: {self.integrity}")
        if not self.clean_exit:
            out.append("the last life did not exit cleanly")
        return out

    def summary(self) -> dict[str, Any]:
        landed = Counter(k.unfinished for k in self.kill_points)
        return {
            "platform": self.platform, "seed": self.seed, "kill_points": len(self.kill_points),
            "kills_by_unfinished_work": dict(sorted(landed.items())),
            "kills_mid_delivery": sum(1 for k in self.kill_points if k.messages_in_life > 0),
            "generations": self.generations, "papers_announced": self.announced,
            "channel_messages": self.channel_messages, "dm_messages": self.dm_messages,
            "alerted_papers": self.alert_papers, "duplicates": len(self.duplicates),
            "missing": len(self.missing_in_channel) + len(self.missing_alerts),
            "ledger_mismatches": len(self.ledger_mismatches), "integrity": self.integrity,
            "secret_leaks": len(self.leaks),
            "source_requests": self.source_requests, **self.receiver_stats,
            "elapsed_s": round(self.elapsed_s, 1),
        }


def bot_env(workdir: Path, db: Path, source: SourceFake, extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("DISCORD_", "SLACK_", "PAPERBOY_", "ARXIV_", "HF_", "OAI_"))}
    dead = "http://127.0.0.1:9/"
    env.update({
        "PAPERBOY_DB": str(db), "ARXIV_RSS_URL": source.rss_url, "HF_API_URL": source.hf_url,
        "ARXIV_API_URL": dead, "OAI_PMH_URL": dead, "PYTHONIOENCODING": "utf-8", "PYTHONUNBUFFERED": "1",
        "PAPERBOY_INGEST_SECONDS": "1", "PAPERBOY_DIGEST_TICK_SECONDS": "0.5", "PAPERBOY_ARXIV_INTERVAL": "0",
        "PAPERBOY_COMMANDS_PER_MINUTE": "1000",
    })
    env.update(extra)
    return env


def user_queries(index: int) -> tuple[str, ...]:
    """User `index`'s alerts: every user a different mix, so their DMs differ."""
    return tuple(q for j, q in enumerate(SUBSCRIPTIONS) if (index + j) % 2 == 0 or j == index % len(SUBSCRIPTIONS))


async def prepare_db(db: Path, channel: ChannelRef, users: Sequence[UserRef], *, post_time: str) -> None:
    """The channel follows everything (so every announced paper is expected there) and the users have alerts."""
    from storage.sqlite import Stores

    stores = await Stores.open(db)
    try:
        await stores.channels.set_rule(ChannelRule(channel, categories=(), query=None, post_time=post_time,
                                                   timezone="UTC", cap=100, weekends=True))
        for i, user in enumerate(users):
            for q in user_queries(i):
                await stores.subscriptions.add(user, q, at=datetime.now(UTC))
    finally:
        await stores.close()


def _read(db: Path, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        return list(conn.execute(sql, params).fetchall())
    finally:
        conn.close()


def _has_all(db: Path, ids: Sequence[str]) -> bool:
    if not db.exists():
        return False
    marks = ",".join("?" * len(ids))
    (n,), = _read(db, f"SELECT count(*) FROM papers WHERE arxiv_id IN ({marks})", ids)
    return int(n) == len(ids)


def unfinished_work(db: Path, life_started: str) -> str:
    """What a killed life left in flight, read from the database it left behind."""
    fetched = _read(db, "SELECT count(*) FROM source_status WHERE last_run >= ?", (life_started,))[0][0]
    if int(fetched) < 2:
        return "ingest"
    if int(_read(db, "SELECT count(*) FROM papers WHERE routed = 0")[0][0]):
        return "routing"
    pending = dict(_read(db, "SELECT kind, count(*) FROM deliveries WHERE state IN ('pending','failed') "
                             "GROUP BY kind"))
    if pending.get("opener") or pending.get("post"):
        return "posting"
    if pending.get("dm"):
        return "alerting"
    return "idle"


class BotProcess:
    def __init__(self, workdir: Path, env: dict[str, str], life: int) -> None:
        self.workdir = workdir
        self.env = env
        self.life = life
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        out = (self.workdir / f"life-{self.life:03d}.out").open("wb")
        err = (self.workdir / f"life-{self.life:03d}.err").open("wb")
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot.cli", "--verbose", "run", cwd=self.workdir, env=self.env,
            stdin=asyncio.subprocess.PIPE, stdout=out, stderr=err)
        out.close()
        err.close()

    async def say(self, line: str) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self.proc.stdin.write((line + "\n").encode())
            await self.proc.stdin.drain()

    async def kill(self) -> None:
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGKILL)
        await self.proc.wait()
        if self.proc.stdin is not None:
            self.proc.stdin.close()

    async def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM: the service stops its loops and exits 0."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return await asyncio.wait_for(self.proc.wait(), timeout)
        except TimeoutError:
            await self.kill()
            return -9

    async def finish(self, timeout: float = 60.0) -> int:
        """End of input: the console adapter delivers what is planned and exits."""
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            return await asyncio.wait_for(self.proc.wait(), timeout)
        except TimeoutError:
            await self.kill()
            return -9

    def stderr(self) -> str:
        return (self.workdir / f"life-{self.life:03d}.err").read_text(encoding="utf-8", errors="replace")


async def _wait_until(cond: Callable[[], bool], timeout: float, step: float = 0.005) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        await asyncio.sleep(step)
    return cond()


def _ingested(db: Path, life_started: str) -> bool:
    return unfinished_work(db, life_started) not in ("ingest", "routing")


def _got(receiver: Receiver, before: int, kinds: tuple[str, ...], count: int) -> bool:
    return sum(1 for r in receiver.received()[before:] if r.kind in kinds) >= count


def _quiet(db: Path) -> bool:
    rows = _read(db, "SELECT (SELECT count(*) FROM deliveries WHERE state IN ('pending','failed')),"
                     " (SELECT count(*) FROM papers WHERE routed = 0),"
                     " (SELECT count(*) FROM channel_queue WHERE thread_day IS NULL)")
    return rows[0] == (0, 0, 0)


async def run_harness(workdir: Path, make_receiver: Callable[[Path], Receiver], *, seed: int,
                      kill_points: int) -> Verdict:
    """`kill_points` killed lives and a last clean one. The plan (modes, delays, counts, feed days) is a function of
    `seed`; the instants the kernel delivers SIGKILL at are as close to the plan as scheduling allows."""
    started = time.monotonic()
    rng = random.Random(seed)
    workdir.mkdir(parents=True, exist_ok=True)
    db = workdir / "paperboy.db"
    source = await SourceFake(copies=3).start()
    receiver = make_receiver(workdir)
    await receiver.start()
    points: list[KillPoint] = []
    clean_exit = False
    bot: BotProcess | None = None
    try:
        # A scheduled post a little later, so the digest tick also fires inside the run when it lasts that long.
        slot = (datetime.now(UTC) + timedelta(minutes=1)).strftime("%H:%M")
        await prepare_db(db, receiver.channel, receiver.users(ALERT_USERS), post_time=slot)
        env = bot_env(workdir, db, source, receiver.env())
        for life in range(kill_points + 1):
            if life > 0 and _has_all(db, source.current().announced) and rng.random() < 0.7:
                source.advance()
            if life > 0:
                receiver.between_lives(rng)
            bot = BotProcess(workdir, env, life)
            life_started = datetime.now(UTC).isoformat()
            before = len(receiver.received())
            await bot.start()
            await receiver.ready(bot)
            await receiver.request_post(bot)
            if life == kill_points:
                # This life's start-up ingest first (the database may look quiet before it), then quiescence.
                await _wait_until(partial(_ingested, db, life_started), timeout=60, step=0.05)
                for _ in range(6):  # a command can race the platform's start-up: ask again until all is out
                    await receiver.request_post(bot)
                    await asyncio.sleep(0.3)
                    if await _wait_until(lambda: _quiet(db), timeout=10, step=0.1):
                        break
                code = await receiver.finish(bot)
                clean_exit = code == 0
                if not clean_exit:
                    raise AssertionError(f"last life exited with {code}:\n{bot.stderr()[-3000:]}")
                break
            mode = rng.choice(("early", "delay", "after-messages", "after-dms"))
            if mode in ("early", "delay"):
                # early: right after the platform is up, while the start-up ingest fetches, stores and routes
                delay = rng.uniform(0.0, 0.08) if mode == "early" else rng.uniform(0.05, 1.5)
                point = KillPoint(life, mode, f"{delay:.3f}s")
                await asyncio.sleep(delay)
            else:
                kinds = ("dm",) if mode == "after-dms" else ("opener", "post", "dm")
                count = rng.randint(1, ALERT_USERS - 1 if mode == "after-dms" else 30)
                point = KillPoint(life, mode, str(count))
                await _wait_until(partial(_got, receiver, before, kinds, count), timeout=3.0)
                await asyncio.sleep(rng.uniform(0, 0.004))
            await bot.kill()
            point.messages_in_life = len(receiver.received()) - before
            point.unfinished = unfinished_work(db, life_started) if db.exists() else "ingest"
            points.append(point)
        verdict = await judge(db, source, receiver, seed=seed, points=points, clean_exit=clean_exit,
                              started=started)
    finally:
        if bot is not None and bot.proc is not None and bot.proc.returncode is None:
            await bot.kill()  # a failing run must not leave a bot process behind
        await receiver.stop()
        await source.stop()
    return verdict


async def judge(db: Path, source: SourceFake, receiver: Receiver, *, seed: int, points: list[KillPoint],
                clean_exit: bool, started: float) -> Verdict:
    from bot.matching import Standing, match_papers
    from bot.query import parse
    from storage.sqlite import Stores

    got = receiver.received()
    key_counts = Counter(r.key for r in got)
    duplicates = sorted(k for k, n in key_counts.items() if n > 1)
    channel_papers = Counter(p for r in got if r.kind != "dm" for p in r.paper_ids)
    dm_papers = Counter(f"{r.target} {p}" for r in got if r.kind == "dm" for p in r.paper_ids)
    duplicates += sorted(f"paper {p} posted {n}x" for p, n in channel_papers.items() if n > 1)
    expected = source.expected_announced()
    missing = sorted(expected - set(channel_papers))
    extra = sorted(set(channel_papers) - expected)
    # Alerts: the papers of every served generation that match one of the user's alerts. The matcher is the
    # bot's own (this harness checks delivery, not matching), run here over the stored papers.
    stores = await Stores.open(db)
    try:
        papers = await stores.papers.get_many(sorted(expected))
        today = datetime.now(UTC).date()
        should_alert: set[str] = set()
        for i, user in enumerate(receiver.users(ALERT_USERS)):
            standing = [Standing(f"s{j}", parse(q, today=today)) for j, q in enumerate(user_queries(i))]
            hits = match_papers(papers, standing)
            should_alert |= {f"{user.key} {p.arxiv_id}" for found in hits.values() for p, _ in found}
        rows = await stores.db.fetchall("SELECT key, state, message_id, kind, target FROM deliveries")
    finally:
        await stores.close()
    missing_alerts = sorted(should_alert - set(dm_papers))
    dup_alerts = sorted(p for p, n in dm_papers.items() if n > 1)
    ledger = {str(r[0]): (str(r[1]), r[2]) for r in rows}
    mismatches = []
    got_ids = {r.key: r.message_id for r in got if "#" not in r.key}
    for key, (state, mid) in ledger.items():
        if state == "sent" and got_ids.get(key) != mid:
            mismatches.append(f"{key}: ledger says sent as {mid}, receiver has {got_ids.get(key)}")
        if state != "sent":
            mismatches.append(f"{key}: left {state}")
    for key in {r.key.split("#")[0] for r in got}:
        if key not in ledger:
            mismatches.append(f"{key}: received but not in the ledger")
    conn = sqlite3.connect(str(db))
    try:
        integrity = str(conn.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        conn.close()
    leaks = []
    for log_file in sorted(db.parent.glob("life-*.*")):
        text = log_file.read_text(encoding="utf-8", errors="replace")
        leaks += [f"{log_file.name}: {s[:6]}…" for s in receiver.secrets() if s in text]
    return Verdict(
        platform=receiver.name, seed=seed, kill_points=points, generations=len(source.served),
        announced=len(expected), channel_messages=sum(1 for r in got if r.kind != "dm"),
        dm_messages=sum(1 for r in got if r.kind == "dm"), alert_papers=len(dm_papers), duplicates=duplicates,
        missing_in_channel=missing, extra_in_channel=extra, duplicate_alert_papers=dup_alerts,
        missing_alerts=missing_alerts, ledger_mismatches=mismatches, leaks=leaks, integrity=integrity,
        clean_exit=clean_exit,
        elapsed_s=time.monotonic() - started, source_requests=dict(source.requests), receiver_stats=receiver.stats(),
    )


def report(verdict: Verdict) -> None:
    """`PAPERBOY_CRASH_REPORT=FILE` appends the run's figures as a JSON line (docs/RELIABILITY.md quotes them)."""
    target = os.environ.get("PAPERBOY_CRASH_REPORT")
    if target:
        with Path(target).open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(verdict.summary()) + "\n")


async def run_and_check(workdir: Path, make_receiver: Callable[[Path], Receiver], *, ci_points: int) -> Verdict:
    """The crash test of one platform: `PAPERBOY_CRASH_POINTS` kill points (else `ci_points`), then the verdict."""
    points = kill_points_from_env(ci_points)
    verdict = await run_harness(workdir, make_receiver, seed=seed_from_env(), kill_points=points)
    report(verdict)
    assert verdict.problems == [], json.dumps(verdict.summary(), indent=1)
    assert len(verdict.kill_points) == points
    # The run did real work at every stage: threads and alerts went out, and kills landed inside deliveries.
    # (Fewer channel messages than papers is fine: papers over a thread's cap share one "…and N more" post.)
    assert verdict.announced > 0 and verdict.channel_messages > 0
    assert verdict.dm_messages > 0 and verdict.alert_papers > 0
    assert sum(1 for k in verdict.kill_points if k.messages_in_life > 0) >= points // 4
    return verdict

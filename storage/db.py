"""Opening the SQLite database: PRAGMAs, numbered migrations, and refusing a database newer than the code."""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import aiosqlite

PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    # NORMAL is durable across application crashes in WAL mode; only an OS crash can lose the last commit.
    "PRAGMA synchronous=NORMAL",
    "PRAGMA foreign_keys=ON",
    "PRAGMA busy_timeout=5000",
    "PRAGMA temp_store=MEMORY",
    "PRAGMA cache_size=-32000",
)


class DatabaseError(RuntimeError):
    """A database problem with a message fit for the user (locked, newer schema, disk full)."""


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


def migrations() -> list[Migration]:
    out = []
    folder = resources.files("storage") / "migrations"
    for entry in folder.iterdir():
        m = re.fullmatch(r"(\d+)_(\w+)\.sql", entry.name)
        if m:
            out.append(Migration(int(m.group(1)), m.group(2), entry.read_text(encoding="utf-8")))
    out.sort(key=lambda mig: mig.version)
    for i, mig in enumerate(out, start=1):
        if mig.version != i:
            raise RuntimeError(f"migrations must be numbered 1..n without gaps; found {mig.version} at {i}")
    return out


def latest_version() -> int:
    return len(migrations())


def _refuse_newer(current: int, latest: int) -> None:
    if current > latest:
        raise DatabaseError(
            f"The database is at schema version {current}, newer than this paperboy knows ({latest}). "
            "Upgrade paperboy, or restore a backup made by this version; the database was not changed."
        )


def _apply_sync(conn: sqlite3.Connection, target: int | None = None) -> int:
    current = int(conn.execute("PRAGMA user_version").fetchone()[0])
    known = migrations()
    latest = len(known)
    _refuse_newer(current, latest)
    goal = latest if target is None else target
    for mig in known:
        if current < mig.version <= goal:
            # executescript commits first; wrap each migration so it applies whole or not at all.
            conn.executescript(f"BEGIN IMMEDIATE;\n{mig.sql}\nPRAGMA user_version={mig.version};\nCOMMIT;")
            current = mig.version
    return current


def friendly_error(exc: sqlite3.Error, path: Path) -> DatabaseError:
    text = str(exc)
    if "locked" in text or "busy" in text:
        return DatabaseError(f"The database {path} is locked by another process; stop it or try again.")
    if "full" in text or "disk I/O" in text:
        return DatabaseError(f"Could not write to {path} ({text}): the disk may be full. Nothing of this batch "
                             "was written; free space and retry.")
    if "not a database" in text or "malformed" in text:
        return DatabaseError(f"{path} is not a readable paperboy database ({text}).")
    return DatabaseError(f"Database error on {path}: {text}")


def open_sync(path: Path | str, *, migrate: bool = True, target: int | None = None) -> sqlite3.Connection:
    """A plain sqlite3 connection with our PRAGMAs (bulk backfill and tools use it)."""
    p = Path(path)
    try:
        conn = sqlite3.connect(str(p), isolation_level=None, check_same_thread=False)
    except sqlite3.Error as exc:
        raise friendly_error(exc, p) from exc
    try:
        if migrate:
            # Before any PRAGMA: journal_mode=WAL rewrites the header of a database we are about to refuse.
            _refuse_newer(int(conn.execute("PRAGMA user_version").fetchone()[0]), latest_version())
        for pragma in PRAGMAS:
            conn.execute(pragma)
        if migrate:
            _apply_sync(conn, target)
        return conn
    except sqlite3.Error as exc:
        conn.close()
        raise friendly_error(exc, p) from exc
    except DatabaseError:
        conn.close()
        raise


async def open_async(path: Path | str, *, migrate: bool = True) -> aiosqlite.Connection:
    p = Path(path)
    if migrate:
        # Migrate on a short-lived sync connection: executescript semantics are simplest there.
        open_sync(p).close()
    try:
        conn = await aiosqlite.connect(str(p), isolation_level=None)
        version = int((await (await conn.execute("PRAGMA user_version")).fetchone() or (0,))[0])
        if version > latest_version():
            await conn.close()
            _refuse_newer(version, latest_version())
        for pragma in PRAGMAS:
            await conn.execute(pragma)
        return conn
    except sqlite3.Error as exc:
        raise friendly_error(exc, p) from exc


def backup(src: Path | str, dest: Path | str) -> int:
    """An online, consistent copy through SQLite's backup API. Returns the pages copied."""
    dest_p = Path(dest)
    if dest_p.exists():
        raise DatabaseError(f"{dest_p} exists; choose a new file for the backup.")
    source = open_sync(src, migrate=False)
    target = sqlite3.connect(str(dest_p))
    try:
        source.backup(target, pages=1024)
        pages = int(target.execute("PRAGMA page_count").fetchone()[0])
        check = target.execute("PRAGMA integrity_check").fetchone()[0]
        if check != "ok":
            raise DatabaseError(f"The backup failed its integrity check: {check}")
        return pages
    except sqlite3.Error as exc:
        raise friendly_error(exc, dest_p) from exc
    finally:
        target.close()
        source.close()

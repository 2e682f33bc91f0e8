"""The arXiv announcement calendar: when papers appear, when to poll for them, when a channel posts.

Vocabulary (all pure, synchronous, no I/O):

- **announcement evening**: an ET date on whose evening (20:00 America/New_York) arXiv announces new papers:
  Sunday to Thursday, except the deferred mailings in `ARXIV_NO_ANNOUNCEMENT`.
- **paper day**: the ET date of the RSS feed that carries an announcement, i.e. announcement evening + 1 day.
  The feeds are rebuilt at midnight ET, so the paper days are Monday to Friday minus the day after each
  deferred mailing. A feed dated on any other day is empty, and an empty feed then is not an outage.
- **posting day** of a channel: a date *in the channel's own time zone* that is a paper day (or any date
  when the channel posts on weekends). A channel posts at its local HH:MM on its posting days and takes
  whatever is queued. Channels far east of New York (Sydney, Tokyo) therefore reach their morning before
  that date's feed exists and post the previous announcement; no paper is lost, it is one day later.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

ET = ZoneInfo("America/New_York")

# Evenings (ET dates) on which arXiv defers its mailing, so the feed dated the next day is empty.
# Data, not logic: extend once a year from https://status.arxiv.org / https://blog.arxiv.org.
# Some entries fall on a Friday, when there is no mailing anyway; they are kept as published.
_NO_ANNOUNCEMENT_2026 = frozenset(
    date(2026, m, d)
    for m, d in ((1, 1), (1, 19), (6, 19), (7, 3), (9, 7), (11, 26), (12, 25), (12, 29), (12, 31))
)
# 2027 is a best-effort guess from the US federal holidays (observed dates), not yet published by arXiv:
# New Year, Martin Luther King Day, Juneteenth (observed Fri), Independence Day (observed Mon), Labor Day,
# Thanksgiving, Christmas (observed Fri), New Year's Eve (observed Fri). arXiv's extra year-end closures
# (2026 also skipped Dec 29) are announced late in the year: replace this set when arXiv publishes it.
_NO_ANNOUNCEMENT_2027 = frozenset(
    date(2027, m, d) for m, d in ((1, 1), (1, 18), (6, 18), (7, 5), (9, 6), (11, 25), (12, 24), (12, 31))
)
ARXIV_NO_ANNOUNCEMENT: frozenset[date] = _NO_ANNOUNCEMENT_2026 | _NO_ANNOUNCEMENT_2027

ANNOUNCEMENT_TIME = time(20, 0)  # ET, on the announcement evening
FEED_POLL_START = time(0, 5)  # ET, on the paper day: the feed is rebuilt at midnight, give it a moment
FEED_POLL_GIVE_UP = time(6, 0)  # ET: a feed still stale by now stays stale; recover through the API later
FEED_POLL_EVERY = timedelta(minutes=30)

_ONE_DAY = timedelta(days=1)
# Searches walk day by day; a year bounds them even with a very long holiday list.
_SEARCH_DAYS = 400
_HHMM = re.compile(r"([0-9]{1,2}):([0-9]{2})")  # ASCII only: \d would also accept Arabic-Indic digits


def is_announcement_evening(d: date, *, holidays: frozenset[date] = ARXIV_NO_ANNOUNCEMENT) -> bool:
    """True when arXiv announces at 20:00 ET on the evening of `d` (an ET date)."""
    # weekday(): Monday=0 .. Thursday=3, Sunday=6; Friday and Saturday have no mailing.
    return d.weekday() in (6, 0, 1, 2, 3) and d not in holidays


def is_paper_day(d: date, *, holidays: frozenset[date] = ARXIV_NO_ANNOUNCEMENT) -> bool:
    """True when the feed dated `d` (an ET date) carries an announcement."""
    return is_announcement_evening(d - _ONE_DAY, holidays=holidays)


def announced_at(paper_day: date) -> datetime:
    """The UTC instant the papers of `paper_day` were announced (20:00 ET the evening before)."""
    evening = datetime.combine(paper_day - _ONE_DAY, ANNOUNCEMENT_TIME, tzinfo=ET)
    return evening.astimezone(UTC)


def _et_date(now: datetime) -> date:
    _require_aware(now, "now")
    return now.astimezone(ET).date()


def paper_day_for(now: datetime, *, holidays: frozenset[date] = ARXIV_NO_ANNOUNCEMENT) -> date | None:
    """The paper day whose feed is current at `now`; None when today's feed is empty (weekend, holiday)."""
    today = _et_date(now)
    return today if is_paper_day(today, holidays=holidays) else None


def latest_paper_day(now: datetime, *, holidays: frozenset[date] = ARXIV_NO_ANNOUNCEMENT) -> date:
    """The most recent paper day whose feed is out at `now` (today's ET date when it is a paper day)."""
    d = _et_date(now)
    for _ in range(_SEARCH_DAYS):
        if is_paper_day(d, holidays=holidays):
            return d
        d -= _ONE_DAY
    raise ValueError(f"no paper day in the {_SEARCH_DAYS} days before {now.isoformat()}")


def next_paper_day(after: date, *, holidays: frozenset[date] = ARXIV_NO_ANNOUNCEMENT) -> date:
    """The first paper day strictly after `after`."""
    d = after + _ONE_DAY
    for _ in range(_SEARCH_DAYS):
        if is_paper_day(d, holidays=holidays):
            return d
        d += _ONE_DAY
    raise ValueError(f"no paper day in the {_SEARCH_DAYS} days after {after.isoformat()}")


def next_feed_poll(
    now: datetime, *, last_fresh_day: date | None, holidays: frozenset[date] = ARXIV_NO_ANNOUNCEMENT
) -> datetime:
    """When the ingest loop should next poll the arXiv RSS feed (UTC, strictly after `now`).

    On a paper day: 00:05 ET, then every 30 minutes until that day's feed has been seen fresh
    (`last_fresh_day` == that day), the last try no later than 06:00 ET. Otherwise: 00:05 ET on the
    next paper day. The cadence is counted in elapsed time, so a DST change cannot skip or double a poll.
    """
    today = _et_date(now)
    if is_paper_day(today, holidays=holidays) and last_fresh_day != today:
        slot = datetime.combine(today, FEED_POLL_START, tzinfo=ET).astimezone(UTC)
        give_up = datetime.combine(today, FEED_POLL_GIVE_UP, tzinfo=ET).astimezone(UTC)
        while slot <= give_up:
            if slot > now:
                return slot
            slot += FEED_POLL_EVERY
    day = next_paper_day(today, holidays=holidays)
    return datetime.combine(day, FEED_POLL_START, tzinfo=ET).astimezone(UTC)


def parse_hhmm(text: str) -> tuple[int, int]:
    """'08:30' -> (8, 30). Raises ValueError with a message fit to show a user."""
    match = _HHMM.fullmatch(text.strip())
    if match is not None:
        hour, minute = int(match.group(1)), int(match.group(2))
        if hour < 24 and minute < 60:
            return hour, minute
    raise ValueError(f"{text!r} is not a time; use HH:MM, e.g. 08:30")


def valid_timezone(name: str) -> bool:
    """True when `name` is an IANA time zone this machine knows (e.g. 'Europe/Berlin', 'UTC')."""
    try:
        zone(name)
    except ValueError:
        return False
    return True


def zone(name: str) -> ZoneInfo:
    """The IANA time zone `name`. Raises ValueError with a message fit to show a user."""
    problem = f"{name!r} is not a time zone; use an IANA name, e.g. Europe/Berlin or America/New_York"
    # ZoneInfo reads files: refuse path-like and empty names before it touches the disk.
    if not name or name != name.strip() or name.startswith(("/", ".")) or ".." in name or "\\" in name:
        raise ValueError(problem)
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:
        raise ValueError(problem) from exc


def next_post_time(now: datetime, *, post_time: str, timezone: str, weekends: bool) -> datetime:
    """The next time (UTC, strictly after `now`) a channel posts: its local `post_time` on a posting day.

    A posting day is a date in `timezone` that is a paper day, or any date when `weekends` is true.
    A local time that does not exist that day (spring forward) posts at the first instant after the gap;
    one that happens twice (fall back) posts once, at the first occurrence.
    """
    _require_aware(now, "now")
    hour, minute = parse_hhmm(post_time)
    tz = zone(timezone)
    # Starting from today's local date is enough even where a date repeats (Pacific/Kwajalein 1969): the
    # repeated wall times are ambiguous, and fold=0 places them at their first, already past, occurrence.
    d = now.astimezone(tz).date()
    for _ in range(_SEARCH_DAYS):
        if weekends or is_paper_day(d):
            at = local_instant(d, hour, minute, tz)
            if at > now:
                return at
        d += _ONE_DAY
    raise ValueError(f"no posting day in the {_SEARCH_DAYS} days after {now.isoformat()}")


def local_instant(d: date, hour: int, minute: int, tz: ZoneInfo) -> datetime:
    """The UTC instant of local `d` `hour:minute` in `tz`: the first occurrence when ambiguous, the end
    of the gap when the wall time does not exist."""
    wall = datetime.combine(d, time(hour, minute))
    first = wall.replace(tzinfo=tz, fold=0).astimezone(UTC)
    if first.astimezone(tz).replace(tzinfo=None) == wall:
        return first  # exists; fold=0 already picked the first of two occurrences
    # In a gap fold=0 reads the wall time with the offset before the change and fold=1 with the one after,
    # which brackets the change: find it to the second (the search is ~12 steps for a one-hour gap).
    second = wall.replace(tzinfo=tz, fold=1).astimezone(UTC)
    lo, hi = min(first, second), max(first, second)
    after = hi.astimezone(tz).utcoffset()
    while hi - lo > timedelta(seconds=1):
        mid = lo + (hi - lo) / 2
        mid = mid.replace(microsecond=0)
        if mid.astimezone(tz).utcoffset() == after:
            hi = mid
        else:
            lo = mid
    return hi


def _require_aware(value: datetime, what: str) -> None:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{what} must be timezone-aware, got {value.isoformat()}")

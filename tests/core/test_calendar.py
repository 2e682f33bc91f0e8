"""The arXiv calendar: announcement evenings, paper days, feed polling, and channel post times across DST."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.calendar import (
    ARXIV_NO_ANNOUNCEMENT,
    ET,
    announced_at,
    is_announcement_evening,
    is_paper_day,
    latest_paper_day,
    local_instant,
    next_feed_poll,
    next_paper_day,
    next_post_time,
    paper_day_for,
    parse_hhmm,
    valid_timezone,
    zone,
)


def utc(y: int, mo: int, d: int, h: int = 0, mi: int = 0) -> datetime:
    return datetime(y, mo, d, h, mi, tzinfo=UTC)


def et(y: int, mo: int, d: int, h: int = 0, mi: int = 0) -> datetime:
    return datetime(y, mo, d, h, mi, tzinfo=ET)


# --- announcement evenings and paper days ---------------------------------------------------------


def test_announcement_evenings_are_sunday_to_thursday() -> None:
    # The week of Mon 2026-11-09 .. Sun 2026-11-15 has no holiday.
    week = [date(2026, 11, 9) + timedelta(days=i) for i in range(7)]
    assert [is_announcement_evening(d) for d in week] == [True, True, True, True, False, False, True]


def test_paper_days_are_monday_to_friday_in_a_normal_week() -> None:
    week = [date(2026, 11, 9) + timedelta(days=i) for i in range(7)]
    assert [is_paper_day(d) for d in week] == [True, True, True, True, True, False, False]


def test_thanksgiving_2026_empties_the_friday_feed() -> None:
    assert not is_announcement_evening(date(2026, 11, 26))
    assert is_paper_day(date(2026, 11, 26))  # Wednesday evening's announcement
    assert not is_paper_day(date(2026, 11, 27))
    assert next_paper_day(date(2026, 11, 26)) == date(2026, 11, 30)
    assert next_paper_day(date(2026, 11, 25)) == date(2026, 11, 26)


def test_every_listed_2026_holiday_empties_the_next_feed() -> None:
    listed = [(1, 1), (1, 19), (6, 19), (7, 3), (9, 7), (11, 26), (12, 25), (12, 29), (12, 31)]
    for m, d in listed:
        evening = date(2026, m, d)
        assert evening in ARXIV_NO_ANNOUNCEMENT
        assert not is_announcement_evening(evening)
        assert not is_paper_day(evening + timedelta(days=1))


def test_mlk_day_2026_empties_tuesday() -> None:
    assert is_paper_day(date(2026, 1, 19))  # Sunday evening's announcement, Monday feed
    assert not is_paper_day(date(2026, 1, 20))
    assert is_paper_day(date(2026, 1, 21))


def test_year_boundary_2026_2027() -> None:
    # Mon Dec 28 evening announces (Tue 29 feed); Tue 29 is deferred (Wed 30 empty);
    # Wed 30 announces (Thu 31 feed); Thu 31 is deferred (Fri Jan 1 empty); then Sun Jan 3 evening.
    days = {date(2026, 12, 28) + timedelta(days=i): None for i in range(8)}
    paper = [d for d in days if is_paper_day(d)]
    assert paper == [date(2026, 12, 28), date(2026, 12, 29), date(2026, 12, 31), date(2027, 1, 4)]
    assert next_paper_day(date(2026, 12, 29)) == date(2026, 12, 31)
    assert next_paper_day(date(2026, 12, 31)) == date(2027, 1, 4)
    assert latest_paper_day(utc(2027, 1, 2, 12)) == date(2026, 12, 31)
    assert latest_paper_day(utc(2027, 1, 4, 5, 0)) == date(2027, 1, 4)  # 00:00 EST


def test_year_boundary_2025_2026() -> None:
    assert is_paper_day(date(2026, 1, 1))  # Wed Dec 31 2025 announced
    assert not is_paper_day(date(2026, 1, 2))  # Jan 1 2026 deferred
    assert next_paper_day(date(2026, 1, 1)) == date(2026, 1, 5)


def test_holidays_are_data_and_can_be_extended() -> None:
    extra = ARXIV_NO_ANNOUNCEMENT | {date(2026, 11, 10)}
    assert is_paper_day(date(2026, 11, 11))
    assert not is_paper_day(date(2026, 11, 11), holidays=extra)
    assert next_paper_day(date(2026, 11, 10), holidays=extra) == date(2026, 11, 12)


def test_2027_best_effort_holidays_are_listed() -> None:
    for d in (date(2027, 1, 18), date(2027, 7, 5), date(2027, 9, 6), date(2027, 11, 25)):
        assert not is_announcement_evening(d)
    assert not is_paper_day(date(2027, 11, 26))


def test_paper_day_for_switches_at_midnight_eastern() -> None:
    # 2026-11-24 is EST (UTC-5): midnight ET is 05:00 UTC.
    assert paper_day_for(utc(2026, 11, 24, 4, 59)) == date(2026, 11, 23)
    assert paper_day_for(utc(2026, 11, 24, 5, 0)) == date(2026, 11, 24)
    # In EDT (UTC-4) midnight is 04:00 UTC.
    assert paper_day_for(utc(2026, 6, 2, 3, 59)) == date(2026, 6, 1)
    assert paper_day_for(utc(2026, 6, 2, 4, 0)) == date(2026, 6, 2)


def test_paper_day_for_is_none_on_empty_feed_days() -> None:
    assert paper_day_for(utc(2026, 11, 27, 12)) is None  # Friday after Thanksgiving
    assert paper_day_for(utc(2026, 11, 28, 12)) is None  # Saturday
    assert paper_day_for(utc(2026, 11, 29, 12)) is None  # Sunday
    # Sunday 23:00 ET is still Sunday's (empty) feed even though it is Monday in UTC.
    assert paper_day_for(et(2026, 11, 29, 23)) is None


def test_latest_paper_day_looks_back_over_weekend_and_holiday() -> None:
    assert latest_paper_day(utc(2026, 11, 29, 12)) == date(2026, 11, 26)
    assert latest_paper_day(utc(2026, 11, 25, 12)) == date(2026, 11, 25)


def test_announced_at_is_the_previous_evening_20_00_eastern() -> None:
    assert announced_at(date(2026, 11, 24)) == utc(2026, 11, 24, 1, 0)  # Mon 20:00 EST
    assert announced_at(date(2026, 6, 2)) == utc(2026, 6, 2, 0, 0)  # Mon 20:00 EDT
    assert announced_at(date(2026, 11, 30)) == utc(2026, 11, 30, 1, 0)  # Sun 20:00 EST


def test_naive_now_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        paper_day_for(datetime(2026, 11, 24, 12))
    with pytest.raises(ValueError, match="timezone-aware"):
        next_post_time(datetime(2026, 11, 24, 12), post_time="09:00", timezone="UTC", weekends=False)


# --- feed polling --------------------------------------------------------------------------------


def poll_sequence(start: datetime, fresh_at_poll: int | None, limit: int) -> list[datetime]:
    """Drive next_feed_poll like the ingest loop: the feed turns fresh at poll number `fresh_at_poll`."""
    now, fresh, polls = start, None, []
    for n in range(1, limit + 1):
        now = next_feed_poll(now, last_fresh_day=fresh)
        polls.append(now)
        if fresh_at_poll is not None and n == fresh_at_poll:
            fresh = now.astimezone(ET).date()
    return polls


def test_first_poll_is_00_05_eastern_on_the_paper_day() -> None:
    assert next_feed_poll(et(2026, 11, 23, 23), last_fresh_day=date(2026, 11, 23)) == utc(2026, 11, 24, 5, 5)


def test_polls_every_30_minutes_until_fresh() -> None:
    polls = poll_sequence(et(2026, 11, 23, 23), fresh_at_poll=3, limit=4)
    assert [p.astimezone(ET).replace(tzinfo=None) for p in polls] == [
        datetime(2026, 11, 24, 0, 5),
        datetime(2026, 11, 24, 0, 35),
        datetime(2026, 11, 24, 1, 5),
        datetime(2026, 11, 25, 0, 5),  # fresh at 01:05: nothing more that day
    ]


def test_gives_up_at_06_00_eastern_when_never_fresh() -> None:
    polls = poll_sequence(et(2026, 11, 23, 23), fresh_at_poll=None, limit=13)
    local = [p.astimezone(ET) for p in polls]
    tuesday = [p for p in local if p.date() == date(2026, 11, 24)]
    assert len(tuesday) == 12
    assert tuesday[-1].time() == time(5, 35)
    assert all(p.time() <= time(6, 0) for p in tuesday)
    assert local[12].replace(tzinfo=None) == datetime(2026, 11, 25, 0, 5)


def test_poll_is_strictly_after_now() -> None:
    assert next_feed_poll(utc(2026, 11, 24, 5, 5), last_fresh_day=None) == utc(2026, 11, 24, 5, 35)
    assert next_feed_poll(utc(2026, 11, 24, 5, 6), last_fresh_day=None) == utc(2026, 11, 24, 5, 35)


def test_fresh_feed_waits_for_next_paper_day_over_holiday_and_weekend() -> None:
    nxt = next_feed_poll(et(2026, 11, 26, 1, 0), last_fresh_day=date(2026, 11, 26))
    assert nxt == et(2026, 11, 30, 0, 5)
    assert nxt.tzinfo is UTC
    # On the empty Friday itself, no polling at all.
    assert next_feed_poll(et(2026, 11, 27, 0, 1), last_fresh_day=date(2026, 11, 26)) == et(2026, 11, 30, 0, 5)


def test_poll_across_the_year_boundary() -> None:
    assert next_feed_poll(et(2026, 12, 31, 0, 20), last_fresh_day=date(2026, 12, 31)) == et(2027, 1, 4, 0, 5)


def test_poll_across_us_dst_changes() -> None:
    # Fri Mar 6 2026 is EST; Mon Mar 9 is EDT (the change was Sun Mar 8).
    assert next_feed_poll(utc(2026, 3, 6, 12), last_fresh_day=date(2026, 3, 6)) == utc(2026, 3, 9, 4, 5)
    # Fri Oct 30 2026 is EDT; Mon Nov 2 is EST (the change was Sun Nov 1).
    assert next_feed_poll(utc(2026, 10, 30, 12), last_fresh_day=date(2026, 10, 30)) == utc(2026, 11, 2, 5, 5)


@settings(max_examples=300, deadline=None)
@given(
    now=st.datetimes(
        min_value=datetime(2026, 1, 1), max_value=datetime(2027, 11, 30), timezones=st.just(UTC)
    ),
    fresh_offset=st.sampled_from([None, 0, -1, -3]),
)
def test_poll_property(now: datetime, fresh_offset: int | None) -> None:
    today = now.astimezone(ET).date()
    fresh = None if fresh_offset is None else today + timedelta(days=fresh_offset)
    nxt = next_feed_poll(now, last_fresh_day=fresh)
    assert nxt > now
    assert nxt.tzinfo is UTC
    local = nxt.astimezone(ET)
    assert is_paper_day(local.date())
    assert time(0, 5) <= local.time() <= time(6, 0)
    assert local.minute % 30 == 5 and local.second == 0
    if local.date() > today:
        assert local.time() == time(0, 5)  # a new day always starts with the first slot
    assert nxt - now < timedelta(days=6)


# --- parse_hhmm / time zones ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"), [("08:30", (8, 30)), ("8:30", (8, 30)), (" 23:59 ", (23, 59)), ("00:00", (0, 0))]
)
def test_parse_hhmm_accepts(text: str, expected: tuple[int, int]) -> None:
    assert parse_hhmm(text) == expected


@pytest.mark.parametrize(
    "text", ["25:00", "24:00", "12:60", "noon", "", "8", "08:30:00", "-1:00", "8.30", "٠٨:٣٠"]
)
def test_parse_hhmm_refuses_with_a_helpful_message(text: str) -> None:
    with pytest.raises(ValueError, match=r"is not a time; use HH:MM, e\.g\. 08:30"):
        parse_hhmm(text)


def test_parse_hhmm_message_quotes_the_input() -> None:
    with pytest.raises(ValueError) as info:
        parse_hhmm("25:00")
    assert str(info.value) == "'25:00' is not a time; use HH:MM, e.g. 08:30"


def test_valid_timezone() -> None:
    assert valid_timezone("Europe/Berlin")
    assert valid_timezone("America/New_York")
    assert valid_timezone("UTC")
    for bad in (
        "Mars/Olympus_Mons",
        "",
        "../../etc/passwd",
        "/etc/localtime",
        " Europe/Berlin",
        "Europe\\Berlin",
    ):
        assert not valid_timezone(bad), bad
    with pytest.raises(ValueError, match="is not a time zone; use an IANA name"):
        zone("Mars/Olympus_Mons")


def test_next_post_time_reports_bad_settings() -> None:
    with pytest.raises(ValueError, match="is not a time"):
        next_post_time(utc(2026, 11, 24), post_time="9am", timezone="UTC", weekends=False)
    with pytest.raises(ValueError, match="is not a time zone"):
        next_post_time(utc(2026, 11, 24), post_time="09:00", timezone="Berlin", weekends=False)


# --- channel post times --------------------------------------------------------------------------


def post(now: datetime, hhmm: str, tz: str, *, weekends: bool = False) -> datetime:
    result = next_post_time(now, post_time=hhmm, timezone=tz, weekends=weekends)
    assert result.tzinfo is UTC
    return result


def test_posts_later_today_when_today_is_a_paper_day() -> None:
    assert post(utc(2026, 11, 26, 8, 59), "09:00", "UTC") == utc(2026, 11, 26, 9, 0)


def test_post_time_is_strictly_after_now() -> None:
    assert post(utc(2026, 11, 25, 9, 0), "09:00", "UTC") == utc(2026, 11, 26, 9, 0)


def test_skips_the_empty_friday_after_thanksgiving_and_the_weekend() -> None:
    assert post(utc(2026, 11, 26, 9, 0), "09:00", "UTC") == utc(2026, 11, 30, 9, 0)


def test_weekends_true_posts_every_day() -> None:
    assert post(utc(2026, 11, 26, 9, 0), "09:00", "UTC", weekends=True) == utc(2026, 11, 27, 9, 0)
    assert post(utc(2026, 11, 27, 10, 0), "09:00", "UTC", weekends=True) == utc(2026, 11, 28, 9, 0)


def test_year_boundary_post() -> None:
    # Thu Dec 31 2026 is a paper day; Fri Jan 1 2027 is not; Mon Jan 4 is.
    assert post(utc(2026, 12, 31, 8), "09:00", "UTC") == utc(2026, 12, 31, 9)
    assert post(utc(2026, 12, 31, 9), "09:00", "UTC") == utc(2027, 1, 4, 9)


def test_posting_days_are_local_dates() -> None:
    # Thu Nov 26 00:00 UTC is already 11:00 Thursday in Sydney (AEDT, UTC+11), past 09:00.
    # Sydney's Friday Nov 27 is not a posting day (empty feed), nor the weekend: Monday 09:00 AEDT.
    assert post(utc(2026, 11, 26, 0, 0), "09:00", "Australia/Sydney") == utc(2026, 11, 29, 22, 0)
    # Late Thursday evening in Los Angeles is Friday in UTC; LA still posts on its Thursday.
    assert post(utc(2026, 11, 27, 2, 0), "19:00", "America/Los_Angeles") == utc(2026, 11, 27, 3, 0)


def test_new_york_spring_forward_gap_posts_at_the_end_of_the_gap() -> None:
    # Sun Mar 8 2026: 02:00 EST jumps to 03:00 EDT, so 02:30 does not exist; post at 03:00 EDT = 07:00 UTC.
    assert post(utc(2026, 3, 7, 8, 0), "02:30", "America/New_York", weekends=True) == utc(2026, 3, 8, 7, 0)
    # The next day is normal again (EDT).
    assert post(utc(2026, 3, 8, 7, 0), "02:30", "America/New_York", weekends=True) == utc(2026, 3, 9, 6, 30)


def test_new_york_fall_back_posts_once_at_the_first_occurrence() -> None:
    # Sun Nov 1 2026: 01:30 happens at 05:30 UTC (EDT) and again at 06:30 UTC (EST).
    assert post(utc(2026, 10, 31, 6, 0), "01:30", "America/New_York", weekends=True) == utc(
        2026, 11, 1, 5, 30
    )
    assert post(utc(2026, 11, 1, 5, 30), "01:30", "America/New_York", weekends=True) == utc(
        2026, 11, 2, 6, 30
    )
    # Between the two occurrences: the second one is not another post.
    assert post(utc(2026, 11, 1, 6, 0), "01:30", "America/New_York", weekends=True) == utc(2026, 11, 2, 6, 30)


def test_berlin_dst_both_directions() -> None:
    # Sun Mar 29 2026: 02:00 CET -> 03:00 CEST; 02:30 posts at 03:00 CEST = 01:00 UTC.
    assert post(utc(2026, 3, 28, 12), "02:30", "Europe/Berlin", weekends=True) == utc(2026, 3, 29, 1, 0)
    # Sun Oct 25 2026: 03:00 CEST -> 02:00 CET; 02:30 first happens at 00:30 UTC, again at 01:30 UTC.
    assert post(utc(2026, 10, 24, 12), "02:30", "Europe/Berlin", weekends=True) == utc(2026, 10, 25, 0, 30)
    assert post(utc(2026, 10, 25, 0, 45), "02:30", "Europe/Berlin", weekends=True) == utc(2026, 10, 26, 1, 30)
    # A weekday channel: Friday 09:00 CET has passed, Monday 09:00 is CEST.
    assert post(utc(2026, 3, 27, 9), "09:00", "Europe/Berlin") == utc(2026, 3, 30, 7, 0)


def test_sydney_dst_both_directions() -> None:
    # Sun Apr 5 2026: 03:00 AEDT -> 02:00 AEST; 02:30 first at 15:30 UTC (Apr 4), again at 16:30 UTC.
    assert post(utc(2026, 4, 4, 12), "02:30", "Australia/Sydney", weekends=True) == utc(2026, 4, 4, 15, 30)
    assert post(utc(2026, 4, 4, 15, 30), "02:30", "Australia/Sydney", weekends=True) == utc(
        2026, 4, 5, 16, 30
    )
    assert post(utc(2026, 4, 4, 16, 0), "02:30", "Australia/Sydney", weekends=True) == utc(2026, 4, 5, 16, 30)
    # Sun Oct 4 2026: 02:00 AEST -> 03:00 AEDT; 02:30 posts at 03:00 AEDT = 16:00 UTC (Oct 3).
    assert post(utc(2026, 10, 3, 12), "02:30", "Australia/Sydney", weekends=True) == utc(2026, 10, 3, 16, 0)


def test_half_hour_dst_gap_lord_howe() -> None:
    # Lord Howe moves 30 minutes: Sun Oct 4 2026 02:00 (+10:30) -> 02:30 (+11). 02:15 posts at 02:30.
    tz = ZoneInfo("Australia/Lord_Howe")
    assert local_instant(date(2026, 10, 4), 2, 15, tz) == utc(2026, 10, 3, 15, 30)


# Zones with DST gaps and folds of various sizes, one at midnight (Beirut), and fractional offsets.
ZONES = [
    "UTC",
    "America/New_York",
    "America/Los_Angeles",
    "America/St_Johns",
    "Europe/Berlin",
    "Europe/London",
    "Australia/Sydney",
    "Australia/Lord_Howe",
    "Asia/Kolkata",
    "Asia/Beirut",
    "Pacific/Chatham",
    "America/Havana",
]


@settings(max_examples=400, deadline=None)
@given(
    now=st.datetimes(
        min_value=datetime(2025, 6, 1), max_value=datetime(2027, 11, 30), timezones=st.just(UTC)
    ),
    tz_name=st.sampled_from(ZONES),
    hour=st.integers(0, 23),
    minute=st.integers(0, 59),
    weekends=st.booleans(),
)
def test_next_post_time_property(now: datetime, tz_name: str, hour: int, minute: int, weekends: bool) -> None:
    tz = ZoneInfo(tz_name)
    result = next_post_time(now, post_time=f"{hour:02d}:{minute:02d}", timezone=tz_name, weekends=weekends)
    assert result > now
    assert result.tzinfo is UTC
    local = result.astimezone(tz)
    wanted = time(hour, minute)
    if local.time() == wanted:
        assert local.fold == 0  # the first occurrence of an ambiguous time
    else:
        # The wall time does not exist that day: we are at the first instant after the gap.
        wall = datetime.combine(local.date(), wanted)
        assert wall.replace(tzinfo=tz).astimezone(UTC).astimezone(tz).replace(tzinfo=None) != wall
        before = (result - timedelta(seconds=1)).astimezone(tz)
        assert before.utcoffset() != local.utcoffset()
        assert before.replace(tzinfo=None) < wall < local.replace(tzinfo=None)
    posting = (lambda d: True) if weekends else is_paper_day
    assert posting(local.date())
    # Nothing skipped: no posting day lies strictly between now's local date and the result's.
    start = now.astimezone(tz)
    d = start.date() + timedelta(days=1)
    while d < local.date():
        assert not posting(d), d
        d += timedelta(days=1)
    if local.date() > start.date() and posting(start.date()):
        assert start.time() >= wanted or start.fold == 1  # today's slot had already gone


def test_a_skipped_date_posts_when_the_gap_ends() -> None:
    # Samoa skipped Fri Dec 30 2011 (-10 -> +14 at midnight); its 09:00 posts at Dec 31 00:00 local.
    assert post(utc(2011, 12, 29, 20), "09:00", "Pacific/Apia", weekends=True) == utc(2011, 12, 30, 10, 0)


def test_a_repeated_date_posts_once() -> None:
    # Kwajalein went from +11 to -12 at 13:00 UTC on Sep 30 1969: local Sep 30 happened twice.
    # Its 12:00 had already happened on the first pass, so the next post is Oct 1 12:00 (-12).
    assert post(utc(1969, 9, 30, 13, 30), "12:00", "Pacific/Kwajalein", weekends=True) == utc(
        1969, 10, 2, 0, 0
    )

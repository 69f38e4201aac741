"""When a schedule's occurrences fall (shared/jobs/schedules.py): periods, cron in a time zone
across DST, catch-up after downtime, and the reasons a recurrence is refused."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from shared.jobs.schedules import InvalidSchedule, recurrence

NEW_YORK = ZoneInfo("America/New_York")


def test_every_seconds_counts_from_the_occurrence() -> None:
    every = recurrence(None, 10, "UTC")
    start = datetime(2026, 1, 1, 12, 0, 0, 500, tzinfo=UTC)
    assert every.next_after(start) == start + timedelta(seconds=10)
    assert every.due(start, start) == (start, start + timedelta(seconds=10))
    later = start + timedelta(seconds=95)  # nine occurrences missed
    assert every.due(start, later) == (
        start + timedelta(seconds=90),
        start + timedelta(seconds=100),
    )


def test_cron_is_read_in_its_timezone_across_dst() -> None:
    nightly = recurrence("30 2 * * *", None, "America/New_York")
    # 2026-03-08: New York skips 02:00-03:00; croniter runs that day's 02:30 at 03:00.
    before = datetime(2026, 3, 7, 12, 0, tzinfo=NEW_YORK)
    first = nightly.next_after(before)
    assert first == datetime(2026, 3, 8, 7, 0, tzinfo=UTC)  # 03:00 EDT
    second = nightly.next_after(first)
    assert second.astimezone(NEW_YORK).replace(tzinfo=None) == datetime(2026, 3, 9, 2, 30)
    assert first.tzinfo == UTC and second - first < timedelta(hours=24)


def test_cron_catch_up_is_the_latest_missed_occurrence() -> None:
    hourly = recurrence("0 * * * *", None, "UTC")
    occurrence = datetime(2026, 1, 1, 0, 0, tzinfo=UTC)
    moment = datetime(2026, 1, 1, 5, 30, tzinfo=UTC)
    assert hourly.due(occurrence, moment) == (
        datetime(2026, 1, 1, 5, 0, tzinfo=UTC),
        datetime(2026, 1, 1, 6, 0, tzinfo=UTC),
    )
    on_time = datetime(2026, 1, 1, 6, 0, tzinfo=UTC)  # due exactly now
    assert hourly.due(on_time, on_time)[0] == on_time


@pytest.mark.parametrize(
    ("cron", "every", "zone", "field"),
    [
        ("* * * *", None, "UTC", "cron"),
        ("0 0 * * * *", None, "UTC", "cron"),
        ("61 * * * *", None, "UTC", "cron"),
        ("0 0 30 2 *", None, "UTC", "cron"),
        ("H * * * *", None, "UTC", "cron"),
        ("a b c d e", None, "UTC", "cron"),
        (None, None, "UTC", "cron"),
        ("0 * * * *", 60, "UTC", "cron"),
        (None, 9, "UTC", "every_seconds"),
        (None, 60, "Not/AZone", "timezone"),
        (None, 60, "localtime", "timezone"),
    ],
)
def test_refused_recurrences(cron, every, zone, field) -> None:
    with pytest.raises(InvalidSchedule) as refused:
        recurrence(cron, every, zone)
    assert refused.value.field == field and refused.value.reason

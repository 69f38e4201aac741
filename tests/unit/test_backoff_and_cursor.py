"""Pure helpers: retry delays and pagination cursors."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime

import pytest

from shared.jobs.backoff import retry_delay


def test_delays_double_and_stay_within_jitter_and_cap() -> None:
    rng = random.Random(7)
    for attempt, ceiling in [(1, 2.0), (2, 4.0), (3, 8.0), (4, 16.0), (10, 60.0)]:
        for _ in range(200):
            delay = retry_delay(attempt, base=2.0, cap=60.0, jitter=0.5, rng=rng)
            assert ceiling * 0.5 <= delay <= ceiling


def test_jitter_spreads_delays_and_zero_jitter_is_exact() -> None:
    rng = random.Random(1)
    delays = {round(retry_delay(3, 1.0, 100.0, 1.0, rng), 6) for _ in range(50)}
    assert len(delays) > 40
    assert retry_delay(3, 1.0, 100.0, 0.0) == 4.0
    with pytest.raises(ValueError):
        retry_delay(0, 1.0, 1.0, 0.0)


def test_cursor_round_trip_and_garbage() -> None:
    from api.errors import ApiError
    from api.pagination import decode_cursor, encode_cursor

    moment, row_id = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC), uuid.uuid4()
    assert decode_cursor(encode_cursor(moment, row_id)) == (moment, row_id)
    for garbage in ("", "%%%", "bm90IGpzb24", encode_cursor(moment, row_id)[:-3]):
        with pytest.raises(ApiError):
            decode_cursor(garbage)

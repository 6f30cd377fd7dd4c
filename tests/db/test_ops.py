"""Small SQL helpers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from memogrid_service.db.ops import aware


def test_stored_times_are_answered_in_utc_whatever_the_sessions_zone():
    """PostgreSQL hands times back in its session's zone, which the host
    sets: one service answered +05:30 where another (SQLite) said Z."""
    moment = datetime(2026, 11, 28, 0, 22, 2, tzinfo=UTC)
    kolkata = moment.astimezone(timezone(timedelta(hours=5, minutes=30)))
    assert aware(kolkata) == moment and aware(kolkata).utcoffset() == timedelta(0)
    assert aware(kolkata).isoformat() == "2026-11-28T00:22:02+00:00"
    assert aware(moment.replace(tzinfo=None)) == moment  # SQLite's naive UTC
    assert aware(None) is None

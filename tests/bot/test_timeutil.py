"""Naive datetimes (SQLite, some backends) are taken as UTC; aware ones are kept."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from bot.timeutil import assume_utc


def test_a_naive_datetime_is_taken_as_utc() -> None:
    moment = assume_utc(datetime(2026, 11, 30, 14, 5))
    assert moment.tzinfo is UTC and moment == datetime(2026, 11, 30, 14, 5, tzinfo=UTC)


def test_an_aware_datetime_keeps_its_zone_and_instant() -> None:
    berlin = datetime(2026, 11, 30, 15, 5, tzinfo=timezone(timedelta(hours=1)))
    assert assume_utc(berlin) is berlin
    assert assume_utc(berlin) == datetime(2026, 11, 30, 14, 5, tzinfo=UTC)


def test_none_stays_none() -> None:
    assert assume_utc(None) is None

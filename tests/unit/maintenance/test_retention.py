"""Retention arithmetic: durations, the refused horizons, month steps."""

from datetime import UTC, datetime, timedelta

import pytest

from receiver.maintenance import retention
from receiver.storage import partitions


@pytest.mark.parametrize(
    ("text", "days"), [("400d", 400), ("57w", 399), ("13mo", 390), ("1y", 365), (" 7D ", 7)]
)
def test_durations(text, days):
    assert retention.parse_duration(text) == timedelta(days=days)


@pytest.mark.parametrize(
    "text", ["", "400", "d", "-5d", "1.5y", "400 days", "20000\tm", "20000\xa0m", "\u0662\u0660m"]
)
def test_a_malformed_duration_is_refused(text):
    with pytest.raises(retention.RetentionError):
        retention.parse_duration(text)


@pytest.mark.parametrize("text", ["13m", "20000m", "20000min", "24h", "86400s"])
def test_a_retention_in_units_below_a_day_is_refused_naming_mo(text):
    """`13m` meant months here once; as minutes it must fail loudly, never prune silently."""
    with pytest.raises(retention.RetentionError, match="for months write mo"):
        retention.parse_duration(text)


def test_a_horizon_inside_the_senders_retry_window_plus_margin_is_refused():
    now = datetime(2026, 12, 2, tzinfo=UTC)
    with pytest.raises(retention.RetentionError, match="re-sends events for 3 days"):
        retention.horizon_for(timedelta(days=6), now)
    assert retention.horizon_for(timedelta(days=7), now) == datetime(2026, 11, 25, tzinfo=UTC)


def test_month_steps_cross_years_both_ways():
    december = datetime(2026, 12, 1, tzinfo=UTC)
    assert partitions.add_months(december, 1) == datetime(2027, 1, 1, tzinfo=UTC)
    assert partitions.add_months(december, -12) == datetime(2025, 12, 1, tzinfo=UTC)
    assert partitions.add_months(december, -11) == datetime(2026, 1, 1, tzinfo=UTC)
    assert partitions.month_start(datetime(2026, 12, 31, 23, 59, tzinfo=UTC)) == december


def test_partition_names_round_trip():
    month = datetime(2027, 3, 1, tzinfo=UTC)
    assert partitions.partition_name(month) == "events_2027_03"
    assert partitions.month_of_name("events_2027_03") == month
    assert partitions.month_of_name("events_default") is None

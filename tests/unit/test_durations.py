"""receiver.durations: one set of units for `report --since`, `prune` and RECEIVER_RETENTION."""

from datetime import timedelta

import pytest

from receiver.durations import parse_duration


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90s", timedelta(seconds=90)),
        ("10m", timedelta(minutes=10)),
        ("10min", timedelta(minutes=10)),
        ("2h", timedelta(hours=2)),
        ("400d", timedelta(days=400)),
        ("57w", timedelta(days=399)),
        ("13mo", timedelta(days=390)),
        ("1y", timedelta(days=365)),
        (" 7D ", timedelta(days=7)),
        ("3 MO", timedelta(days=90)),
        ("5 Min", timedelta(minutes=5)),
        ("0h", timedelta(0)),
    ],
)
def test_every_unit(text, expected):
    assert parse_duration(text) == expected


def test_m_is_minutes_everywhere_and_months_are_mo():
    assert parse_duration("13m") == timedelta(minutes=13)
    assert parse_duration("13mo") == timedelta(days=390)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("", "is not a duration such as 10m"),
        ("400", "is not a duration"),
        ("d", "is not a duration"),
        ("-5d", "is not a duration"),
        ("1.5y", "is not a duration"),
        ("1h30m", "is not a duration"),
        ("400 days", "unknown unit 'days'"),
        ("2 months", "unknown unit 'months'"),
        ("3x", "unknown unit 'x'"),
        ("13M", "ambiguous: write 13m or 13min for minutes, 13mo for 30-day months"),
        ("99999999999y", "too long"),
    ],
)
def test_a_malformed_or_ambiguous_duration_is_refused_saying_why(text, says):
    with pytest.raises(ValueError, match=says):
        parse_duration(text)


def test_not_text_is_refused_as_a_value_error():
    with pytest.raises(ValueError, match="is not a duration"):
        parse_duration(None)

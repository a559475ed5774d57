"""`receiver report` options, parsed before any database is reached."""

from datetime import UTC, datetime, timedelta

import click
import pytest

from receiver.cli import main
from receiver.cli.report import Moment


@pytest.mark.parametrize(
    ("text", "ago"),
    [
        ("10m", timedelta(minutes=10)),
        ("10min", timedelta(minutes=10)),
        ("2w", timedelta(weeks=2)),
        ("3mo", timedelta(days=90)),
        ("1y", timedelta(days=365)),
    ],
)
def test_a_time_ago_uses_the_shared_duration_units(text, ago):
    before = datetime.now(UTC)
    moment = Moment().convert(text, None, None)
    assert before - ago <= moment <= datetime.now(UTC) - ago


def test_an_iso_time_is_still_a_time():
    assert Moment().convert("2026-01-01T10:00", None, None) == datetime(2026, 1, 1, 10, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "says"),
    [("13M", "ambiguous"), ("3 months", "unknown unit"), ("99999y", "before the year 1")],
)
def test_a_bad_time_ago_is_refused_saying_why(text, says):
    with pytest.raises(click.BadParameter, match=says):
        Moment().convert(text, None, None)


def test_a_bad_since_is_a_usage_error(capsys):
    assert main(["report", "mailings", "--since", "13M"]) == 2
    assert "13mo for 30-day months" in capsys.readouterr().err

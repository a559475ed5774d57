"""Durations as people type them (`10m`, `2h`, `400d`, `1y`): one parser, one set of units, for
every command and setting (`receiver report --since`, `receiver prune`, RECEIVER_RETENTION).

A whole number, optional spaces, then one unit:

    s          seconds
    m, min     minutes
    h          hours
    d          days
    w          weeks (7 days)
    mo         months of 30 days
    y          years of 365 days

Units are case-insensitive, except that a lone `M` is refused: it reads as months to some and
minutes to others, and the two differ by a factor of 43,200.
"""

import re
from datetime import timedelta

UNITS = {
    "s": timedelta(seconds=1),
    "m": timedelta(minutes=1),
    "min": timedelta(minutes=1),
    "h": timedelta(hours=1),
    "d": timedelta(days=1),
    "w": timedelta(weeks=1),
    "mo": timedelta(days=30),
    "y": timedelta(days=365),
}
EXAMPLES = "10m, 2h, 30d, 6w, 13mo or 1y"
# ASCII digits and spaces only: Arabic-Indic digits or a non-breaking space are not ours to guess.
_DURATION = re.compile(r"([0-9]+) *([a-z]+)", re.IGNORECASE | re.ASCII)


def split_duration(text: str) -> tuple[int, str]:
    """(number, unit as typed) of a duration; ValueError if it is not one."""
    match = _DURATION.fullmatch(text.strip(" ")) if isinstance(text, str) else None
    if not match:
        raise ValueError(f"{text!r} is not a duration such as {EXAMPLES}")
    return int(match.group(1)), match.group(2)


def parse_duration(text: str) -> timedelta:
    """`10m`, `2h`, `400d`, `13mo`, `1y`, ... as a timedelta; ValueError saying why if not."""
    number, unit = split_duration(text)
    if unit == "M":
        raise ValueError(
            f"{text!r} is ambiguous: write {number}m or {number}min for minutes, "
            f"{number}mo for 30-day months"
        )
    if unit.lower() not in UNITS:
        raise ValueError(
            f"{text!r} has an unknown unit {unit!r}: one of s, m or min (minutes), h, d, w, "
            "mo (30-day months), y (365 days)"
        )
    try:
        return number * UNITS[unit.lower()]
    except OverflowError:
        raise ValueError(f"{text!r} is too long a duration") from None

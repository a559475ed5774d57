"""The one deadline of a request: every step of it takes what is left, never more.

The sender waits about 10 s for an answer. Each step of a request has a bound of its own (body
read, pool wait, database deadline), but a request makes several of them in a row (the re-delivery
lookup, then the store), so bounds per step add up past the sender's patience on a slow database.
A request therefore starts one Deadline at its arrival, and every step is capped by what remains.
"""

import time


class Deadline:
    """A point in time (monotonic clock) that a piece of work must end by."""

    __slots__ = ("end",)

    def __init__(self, end: float):
        self.end = end

    @classmethod
    def after(cls, seconds: float, start: float | None = None) -> "Deadline":
        """The deadline `seconds` after `start` (a time.monotonic() reading; default now)."""
        return cls((time.monotonic() if start is None else start) + seconds)

    def remaining(self) -> float:
        """Seconds left, 0 once it has passed."""
        return max(self.end - time.monotonic(), 0.0)

    def cap(self, seconds: float) -> float:
        """`seconds`, or what is left if that is less."""
        return min(seconds, self.remaining())

    def __repr__(self):
        return f"Deadline(in {self.end - time.monotonic():.3f} s)"

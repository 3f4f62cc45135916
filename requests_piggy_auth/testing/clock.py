"""A clock that moves only when told to."""

from __future__ import annotations


class FakeClock:
    """A clock for tests: pass it to ``TokenCache(clock=)`` or ``FakePiggy(clock=)``.

    :param start: the time it shows first, in seconds.
    """

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Move the clock ``seconds`` forward."""
        self.now += seconds

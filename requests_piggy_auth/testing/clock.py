"""A clock that moves only when told to."""

from __future__ import annotations


class FakeClock:
    """A clock for tests: pass it to ``TokenCache(clock=)`` or ``FakePiggy(clock=)``,
    and with its :meth:`sleep` to ``RetryPolicy(sleep=clock.sleep, clock=clock)``.

    :param start: the time it shows first, in seconds.
    """

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        #: Every wait :meth:`sleep` was asked for, in order.
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Move the clock ``seconds`` forward."""
        self.now += seconds

    def sleep(self, seconds: float) -> None:
        """Note the wait of ``seconds`` in :attr:`sleeps` and move the clock past it, at once."""
        self.sleeps.append(seconds)
        self.advance(seconds)

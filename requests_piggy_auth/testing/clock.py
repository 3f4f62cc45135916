"""A clock that moves only when told to."""

from __future__ import annotations

import asyncio


class FakeClock:
    """A clock for tests: pass it to ``TokenCache(clock=)`` or ``FakePiggy(clock=)``,
    and with its :meth:`sleep` and :meth:`asleep` to
    ``RetryPolicy(sleep=clock.sleep, asleep=clock.asleep, clock=clock)``.

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

    async def asleep(self, seconds: float) -> None:
        """:meth:`sleep` for asyncio: the clock moves at once, the loop runs other tasks once."""
        self.sleep(seconds)
        await asyncio.sleep(0)

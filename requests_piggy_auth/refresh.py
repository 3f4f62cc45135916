"""When a refresh-ahead starts: a margin before the leeway point, measured, not guessed.

A token is refreshed in the background once the time left before it goes
stale falls to its key's *margin*: a high percentile of how long the key's
recent token requests took, times a safety factor, between a floor and a
ceiling, plus a little at random so a fleet does not refresh in lockstep.
A token is thus used for most of its life, and a caller never waits for
its renewal as long as the next token request takes no longer than the
ones before it did, twice over.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

#: The largest part of a token's lifetime that the leeway takes (short-lived tokens).
MAX_LEEWAY_SHARE = 0.1
#: The largest part of a token's usable lifetime that the floor of its margin takes.
MAX_FLOOR_SHARE = 0.1


@dataclass(frozen=True)
class RefreshMargin:
    """How long before a token goes stale its refresh-ahead starts.

    The margin is ``factor`` times the ``percentile`` of the key's last
    ``samples`` token request durations (those that brought a token), at
    least ``floor`` (which is itself at most a tenth of the token's usable
    lifetime, for short-lived tokens) and at most ``ceiling``; then up to
    ``jitter`` of it is added at random, drawn per token and process.

    :param factor: how many times the measured duration to allow, at least 1.
    :param percentile: which duration counts, above 0 and at most 1 (nearest rank).
    :param samples: how many recent durations are kept per key, at least 1.
    :param floor: the shortest margin, in seconds, also when nothing is measured yet.
    :param ceiling: the longest margin, in seconds, before jitter.
    :param jitter: the random part, from 0.0 to 1.0 of the margin, added to it.
    """

    factor: float = 2.0
    percentile: float = 0.95
    samples: int = 20
    floor: float = 5.0
    ceiling: float = 60.0
    jitter: float = 0.2

    def __post_init__(self) -> None:
        if not (
            self.factor >= 1
            and 0 < self.percentile <= 1
            and not isinstance(self.samples, bool)
            and isinstance(self.samples, int)
            and self.samples >= 1
            and 0 <= self.floor <= self.ceiling < math.inf
            and 0 <= self.jitter <= 1
        ):
            raise ValueError(
                "RefreshMargin needs factor >= 1, 0 < percentile <= 1, a whole number of "
                "samples >= 1, 0 <= floor <= ceiling (finite) and 0 <= jitter <= 1"
            )

    def margin(self, durations: Sequence[float], usable: float, spread: float) -> float:
        """The margin, in seconds, for a token usable for ``usable`` seconds.

        :param durations: the key's recent token request durations, oldest first.
        :param spread: where in the jitter this token lies, from 0.0 to 1.0.
        """
        measured = self.factor * _nearest_rank(durations[-self.samples :], self.percentile)
        floor = min(self.floor, usable * MAX_FLOOR_SHARE)
        return min(max(measured, floor), self.ceiling) * (1 + self.jitter * spread)


def _nearest_rank(durations: Sequence[float], percentile: float) -> float:
    """The ``percentile`` of ``durations`` by nearest rank (0 for none)."""
    if not durations:
        return 0.0
    ordered = sorted(durations)
    return ordered[max(math.ceil(percentile * len(ordered)), 1) - 1]

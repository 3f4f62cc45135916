"""Retrying token requests: which failures, how long to wait, and for how long in all.

A :class:`RetryPolicy` wraps any :data:`~requests_piggy_auth.oauth.TokenSender`,
so every transport (requests, urllib3) retries the same way.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import math
import random
import re
import time
from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass, field
from datetime import datetime, timezone

from .errors import TokenRequestError
from .oauth import AsyncTokenSender, TokenRequest, TokenResponse, TokenSender

#: What one attempt came to: an answer, or the failure to get one.
Outcome = TokenResponse | TokenRequestError

_SECONDS = re.compile(r"[ \t]*[0-9]{1,10}[ \t]*")

#: The token endpoint statuses that say "try again later".
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})

log = logging.getLogger("requests_piggy_auth")


@dataclass(frozen=True)
class RetryPolicy:
    """How a token request is retried; immutable, in the manner of urllib3's ``Retry``.

    Retried: no answer at all (a connection error or timeout) and the
    ``statuses``. Never retried: any other answer, such as a 400 or 401
    ``invalid_client``, or a 200 with a body that is not a token.

    Before retry *n* (0 for the first) it waits what ``Retry-After`` asks, or
    else a backoff of up to ``min(backoff_max, backoff_factor * 2**n)``
    seconds. The attempts and waits of one fetch fit in ``budget`` seconds: a
    retry that would start after it is not made, and the last answer or
    error stands. So ``Retry-After`` is honoured up to what is left of the budget.
    Each retry is logged at INFO level.

    :param total: how many retries at most; 0 turns retrying off.
    :param budget: seconds one fetch may spend on attempts and waits. Callers
        waiting for another thread's fetch give up after this long too.
    :param backoff_factor: the longest wait before the first retry; it doubles
        for each further retry.
    :param backoff_max: the longest backoff wait.
    :param jitter: the random part of each backoff wait: 1.0 (full jitter)
        waits anywhere up to the ceiling, 0.0 waits the ceiling exactly.
    :param statuses: the HTTP statuses worth retrying.
    :param sleep: how to wait; tests inject their own.
    :param asleep: how to wait in an event loop (awaited); tests inject their own.
    :param clock: a monotonic clock in seconds; tests inject their own.
    """

    total: int = 3
    budget: float = 10.0
    backoff_factor: float = 0.5
    backoff_max: float = 4.0
    jitter: float = 1.0
    statuses: frozenset[int] = RETRY_STATUSES
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False, compare=False)
    asleep: Callable[[float], Awaitable[None]] = field(
        default=asyncio.sleep, repr=False, compare=False
    )
    clock: Callable[[], float] = field(default=time.monotonic, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not (
            self.total >= 0
            and 0 < self.budget < math.inf
            and self.backoff_factor >= 0
            and self.backoff_max >= 0
        ):
            raise ValueError(
                "total, backoff_factor and backoff_max must be >= 0 and budget a finite number "
                "of seconds above 0"
            )
        if not 0 <= self.jitter <= 1:
            raise ValueError(f"jitter must be between 0 and 1, got {self.jitter!r}")

    def backoff(self, retry: int) -> float:
        """The backoff wait before retry number ``retry`` (0 for the first), jittered."""
        ceiling = min(self.backoff_max, self.backoff_factor * 2.0 ** min(retry, 64))
        return ceiling * (1 - self.jitter * random.random())  # noqa: S311 - not cryptography

    def send(self, send: TokenSender, request: TokenRequest) -> TokenResponse:
        """Send ``request`` with ``send``, retrying as this policy says, sleeping between.

        :returns: the first answer not worth retrying, or the last one.
        :raises TokenRequestError: when the last attempt got no answer.
        """
        retries = self.retries(request)
        wait = next(retries)
        while True:
            if wait is not None:
                self.sleep(wait)
            try:
                wait = retries.send(_attempt(send, request))
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]

    async def asend(self, send: AsyncTokenSender, request: TokenRequest) -> TokenResponse:
        """:meth:`send` for an async ``send``: the waits are awaited, the loop runs on.

        :returns: the first answer not worth retrying, or the last one.
        :raises TokenRequestError: when the last attempt got no answer.
        """
        retries = self.retries(request)
        wait = next(retries)
        while True:
            if wait is not None:
                await self.asleep(wait)
            try:
                outcome: Outcome = await send(request)
            except TokenRequestError as exc:
                outcome = exc
            try:
                wait = retries.send(outcome)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]

    def retries(self, request: TokenRequest) -> Generator[float | None, Outcome, TokenResponse]:
        """The schedule of one fetch, sans I/O: it takes each attempt's outcome, and yields
        the wait before the next attempt (``None`` first: the first goes at once), until it
        returns the answer that stands or raises the failure that does."""
        deadline = self.clock() + self.budget
        outcome = yield None
        retry = 0
        while (wait := self._wait(retry, outcome, deadline)) is not None:
            retry += 1
            failure = str(outcome) if isinstance(outcome, TokenRequestError) else None
            log.info(  # the caller sees the outcome: a token, or the last failure raised
                "token request to %s failed (%s); retry %d of %d in %.2f s",
                request.url,
                failure or f"HTTP {outcome.status}",
                retry,
                self.total,
                wait,
            )
            outcome = yield wait
        if isinstance(outcome, TokenRequestError):
            raise outcome
        return outcome

    def _wait(self, retry: int, outcome: Outcome, deadline: float) -> float | None:
        """How long to wait before retry number ``retry`` after ``outcome``; ``None``: none."""
        if isinstance(outcome, TokenRequestError):
            response = None
            if outcome.status is not None:  # an answer, not worth retrying
                return None
        elif outcome.status in self.statuses:
            response = outcome
        else:
            return None
        if retry >= self.total:
            return None
        wait = _retry_after(response)
        if wait is None:
            wait = self.backoff(retry)
        return wait if self.clock() + wait <= deadline else None


def _attempt(send: TokenSender, request: TokenRequest) -> Outcome:
    """One attempt's outcome: the answer, or the failure to get one."""
    try:
        return send(request)
    except TokenRequestError as exc:
        return exc


def _retry_after(response: TokenResponse | None) -> float | None:
    """The seconds a ``Retry-After`` header asks for (RFC 9110 §10.2.3: seconds or an
    HTTP date; a date in the past is 0), or ``None`` if absent or unreadable."""
    value = None if response is None else response.headers.get("Retry-After")
    if value is None:
        return None
    if _SECONDS.fullmatch(value):
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # "-0000": no zone said; HTTP dates are GMT
        when = when.replace(tzinfo=timezone.utc)
    return max((when - datetime.now(timezone.utc)).total_seconds(), 0.0)

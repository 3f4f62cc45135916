"""The 401 and its one resend, written once as a flow that every adapter steps through.

:func:`replay` is a generator in the manner of httpx's ``auth_flow``: given the
answer to a request that carried a lease, it yields what it needs next —
:data:`READ_BODY` (at most ``MAX_BODY + 1`` bytes of the 401, decoded),
:class:`Renew` (a token requested after the rejection) and :class:`Resend`
(the request again, its body rewound) — and decides. When it stops, the last
answer goes back to the caller. A thread driver steps it with :func:`drive`;
an async driver awaits :class:`Renew` itself.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Generator, Iterable
from contextlib import closing
from functools import partial
from typing import Any, NamedTuple, Protocol

from .cache import Lease
from .events import Resent
from .policy import AuthPolicy

log = logging.getLogger("requests_piggy_auth")


class Answer(NamedTuple):
    """What the flow needs of an answer: its status and ``WWW-Authenticate`` header."""

    status: int
    www_authenticate: str | None = None


class ReadBody:
    """Read at most ``MAX_BODY + 1`` bytes of the 401 and send them, decoded."""


#: The one :class:`ReadBody` step.
READ_BODY = ReadBody()


class Judge(NamedTuple):
    """Send back ``verdict()``: whether the 401 may be cured by a new token
    (:meth:`~.AuthPolicy.rejected`). It may run the user's code (a personal access
    token's source), so an async driver calls it off its event loop."""

    verdict: Callable[[], bool]


class Renew(NamedTuple):
    """The 401 is to be resent: close it unread (its body may never end), then send
    back ``policy.lease(after=rejected)``, a token requested after it."""

    rejected: Lease


class Resend(NamedTuple):
    """Resend the request with ``lease`` and send back its :class:`Answer`."""

    lease: Lease


Step = ReadBody | Judge | Renew | Resend
Flow = Generator[Step, Any, None]


def replay(
    policy: AuthPolicy,
    lease: Lease,
    answer: Answer,
    rewind: Callable[[], object] | None,
    method: str | None,
    url: str,
    adapter: str,
) -> Flow:
    """The flow after ``answer`` came to a request that carried ``lease``.

    A 401 that :meth:`~.AuthPolicy.rejected` says a new token may cure is
    resent once, if ``rewind`` can put its body back; every other answer is
    noted on its lease and goes back. A resend is told (:meth:`~.AuthPolicy.resent`)
    once answered, or failed: a driver closes the flow when a step raises.

    :param rewind: how to rewind the request's body (:func:`rewinder`).
    :param method: the request's method and ``url`` its URL, for the warning
        when its body cannot be replayed.
    :param adapter: the driver's name, for listeners: ``requests``, ``urllib3``, ``httpx``.
    """
    if answer.status != 401 or not policy.renewable:
        lease.answered(answer.status)
        return
    body = yield READ_BODY
    if not (yield Judge(partial(policy.rejected, lease, answer.www_authenticate, body))):
        return
    if rewind is None:
        warn_not_resent(method, url)
        return
    rewind()
    renewed = yield Renew(lease)
    outcome: Resent = "error"  # unless an answer comes
    try:
        resent = yield Resend(renewed)
        renewed.answered(resent.status)
        outcome = "rejected" if resent.status == 401 else "success"
    finally:
        policy.resent(adapter, outcome)


class Driver(Protocol):
    """What a thread driver does for each step of :func:`replay`."""

    def read_body(self) -> bytes:
        """At most ``MAX_BODY + 1`` bytes of the 401's body, decoded."""

    def renew(self, rejected: Lease) -> Lease:
        """Close the 401; a token requested after it, ``rejected``'s."""

    def resend(self, lease: Lease) -> Answer:
        """Resend the request with ``lease`` and answer what came."""


def drive(flow: Flow, driver: Driver) -> None:
    """Step ``flow`` through to its end with ``driver``, in this thread; a step that
    raises closes it."""
    sent: object = None
    with closing(flow):
        while True:
            try:
                step = flow.send(sent)
            except StopIteration:
                return
            if isinstance(step, Resend):
                sent = driver.resend(step.lease)
            elif isinstance(step, Renew):
                sent = driver.renew(step.rejected)
            elif isinstance(step, Judge):
                sent = step.verdict()
            else:
                sent = driver.read_body()


def rewinder(body: object) -> Callable[[], object] | None:
    """How to put ``body`` back where it starts, or ``None`` if it cannot be replayed.

    In memory (str, bytes and any other bytes-like object) it needs nothing; a
    seekable file is sought back to where it is now. A stream that can tell where it
    is but not seek (``seekable()`` false) cannot be replayed.
    """
    if body is None or isinstance(body, (bytes, bytearray, memoryview, str)):
        return stay
    try:
        if getattr(body, "seekable", lambda: True)():
            return partial(body.seek, body.tell())  # type: ignore[attr-defined]
        return None
    except (AttributeError, OSError, ValueError):  # no file, or a closed one
        pass
    try:
        memoryview(body)  # type: ignore[arg-type]
    except TypeError:
        return None
    return stay


def stay() -> None:
    """Rewind a body that needs none: nothing, or one in memory."""


def warn_not_resent(method: str | None, url: str) -> None:
    """Log that a request got a 401 for a stale token but its body cannot be replayed."""
    log.warning(
        "%s %s got 401 for a stale token, but its body cannot be replayed (a generator or a "
        "consumed stream), so it was not resent; send bytes or a seekable file to let it be "
        "retried",
        method,
        url,
    )


def read_at_most(chunks: Iterable[bytes], limit: int) -> bytes:
    """Join ``chunks`` but stop after ``limit + 1`` bytes, so an oversized body shows."""
    body = bytearray()
    for chunk in chunks:
        body += chunk
        if len(body) > limit:
            break
    return bytes(body[: limit + 1])

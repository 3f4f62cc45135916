"""Piggy auth for requests: attach the Bearer token, recover from a stale one.

The auth objects hold configuration only (the policy, from :mod:`.policy`),
so one object can be shared by any number of threads and sessions. What one
request needs to recover from a 401 (the token it sent, how to rewind its
body) is bound to the response hook registered on that request, which steps
the core's :func:`~.replay.replay` flow.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from datetime import datetime
from functools import partial
from typing import Any, Literal

import requests
from requests.cookies import extract_cookies_to_jar

from .cache import Lease, TokenCache
from .failures import token_request_failed
from .oauth import MAX_BODY, TokenRequest, TokenResponse
from .policy import (
    DEFAULT_RETRY,
    DEFAULT_TIMEOUT,
    AuthPolicy,
    ClientCredentialsPolicy,
    PersonalAccessTokenPolicy,
    Timeout,
)
from .replay import Answer, drive, read_at_most, replay, rewinder, stay
from .responses import Answered401
from .retry import RetryPolicy
from .sources import FileSource
from .token_session import token_session


class PiggyAuth(AuthPolicy, requests.auth.AuthBase):
    """What every Piggy auth for requests shares: origins, the Bearer header, the 401 hook.

    Adapters for other HTTP libraries use the policy (:meth:`sends_token_to`,
    :meth:`lease`, :meth:`rejected`), so the rules live in one place.
    """

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        url = r.url
        # The prefix test answers the usual URL without a call.
        if url is None or not (url.startswith(self._prefixes) or self.sends_token_to(url)):
            return r
        lease = self.lease()
        r.headers["Authorization"] = lease.authorization
        if self.renewable:
            # What register_hook does, without its checks: "response" is always there.
            rewind = stay if r.body is None else rewinder(r.body)
            r.hooks["response"].append(partial(self._handle_401, lease, rewind))
        return r

    def _handle_401(
        self,
        lease: Lease,
        rewind: Callable[[], object] | None,
        r: requests.Response,
        **kwargs: Any,
    ) -> requests.Response:
        """Resend once with a new token when a 401 says ``lease``'s token is stale.

        Only an answer to a request that carried the lease counts: requests
        drops the header on a redirect to another origin, and that 401 says
        nothing about the token.
        """
        if r.request.headers.get("Authorization") != lease.authorization:
            return r
        answer = Answer(r.status_code, r.headers.get("WWW-Authenticate"))
        exchange = _Exchange(self, r, kwargs)
        flow = replay(self, lease, answer, rewind, r.request.method, r.url, "requests")
        try:
            drive(flow, exchange)
        except BaseException:
            exchange.close()  # not handed back: its connection goes back to the pool
            raise
        return exchange.result()


class _Exchange(Answered401):
    """A requests response stepped through the replay flow: resent on the same connection."""

    def __init__(self, auth: PiggyAuth, response: requests.Response, kwargs: Any) -> None:
        super().__init__(response.raw)
        self._auth = auth
        self._response = response
        self._kwargs = kwargs
        self._resent: requests.Response | None = None

    def renew(self, rejected: Lease) -> Lease:
        self.close()
        return self._auth.lease(after=rejected)

    def resend(self, lease: Lease) -> Answer:
        r = self._response
        r._content = self.body  # the 401 in history keeps what was judged of its body
        request = r.request
        retry = request.copy()
        jar = retry._cookies  # the jar requests keeps for this request
        assert jar is not None
        extract_cookies_to_jar(jar, request, r.raw)
        retry.prepare_cookies(jar)
        retry.headers["Authorization"] = lease.authorization
        resent: requests.Response = r.connection.send(retry, **self._kwargs)
        # requests follows a redirect of the resend from the original request: it must
        # carry the new token, while the 401 keeps a copy of what was sent.
        r.request = request.copy()
        request.headers["Authorization"] = lease.authorization
        resent.history.append(r)
        resent.request = retry
        self._resent = resent
        return Answer(resent.status_code)

    def result(self) -> requests.Response:
        """The resend's response, or the 401 handed back."""
        if self._resent is not None:
            return self._resent
        self._response.raw = self.handed_back(self._response.url)
        return self._response


class ClientCredentialsAuth(ClientCredentialsPolicy, PiggyAuth):
    """Auth with OAuth client credentials; tokens are fetched, cached and renewed.

    :param client_id: the OAuth client id; Piggy's are numbers, and ``4711``
        and ``"4711"`` are the same client.
    :param client_secret: the OAuth client secret, or a zero-argument callable that
        returns the current one (a secret manager): called at construction and
        again only after the token endpoint refuses it (``invalid_client``).
    :param base_url: the API's base URL; the token endpoint is
        ``base_url + "/oauth/token"``. Must be https unless loopback.
        ``None``: ``$PIGGY_BASE_URL``, else ``https://api.piggy.eu``.
    :param allowed_origins: more origins (URLs) that may receive the token.
    :param cache: the :class:`TokenCache` to share; ``None`` for the process-wide one.
    :param token_session: the ``requests.Session`` for token requests;
        ``None`` for the library's own.
    :param timeout: connect and read timeout for each token request, in seconds.
    :param retry: how token requests are retried, and the time budget of one
        fetch (see :class:`RetryPolicy`); ``RetryPolicy(total=0)`` never retries.
    :param token_request_format: ``"json"`` or ``"form"`` encoding of the token request.
    :raises ValueError: for an empty id or secret, a bad URL or format.
    """

    def __init__(
        self,
        client_id: int | str,
        client_secret: str | Callable[[], str],
        *,
        base_url: str | None = None,
        allowed_origins: Iterable[str] = (),
        cache: TokenCache | None = None,
        token_session: requests.Session | None = None,
        timeout: Timeout = DEFAULT_TIMEOUT,
        retry: RetryPolicy = DEFAULT_RETRY,
        token_request_format: Literal["json", "form"] = "json",
    ) -> None:
        super().__init__(
            client_id,
            client_secret,
            send=self._send,
            base_url=base_url,
            allowed_origins=allowed_origins,
            cache=cache,
            timeout=timeout,
            retry=retry,
            token_request_format=token_request_format,
        )
        self.token_session = token_session

    def _send(self, request: TokenRequest) -> TokenResponse:
        session = self.token_session or token_session()
        try:
            with session.post(
                request.url,
                data=request.body,
                headers=dict(request.headers),
                timeout=self.timeout,
                allow_redirects=False,
                stream=True,
            ) as response:
                body = read_at_most(response.iter_content(64 * 1024), MAX_BODY)
                return TokenResponse(response.status_code, response.headers, body)
        except requests.RequestException as exc:
            failure = token_request_failed(request.url, exc)
        raise failure


class PersonalAccessTokenAuth(PersonalAccessTokenPolicy, PiggyAuth):
    """Auth with a personal access token from the Business Dashboard.

    :param token: the token (Apps → Integrations → Personal Access Tokens), or a
        zero-argument callable that returns the current one (read again after a 401).
    :param expires_at: its expiry date, if it has one; a naive datetime is
        local time. Requests after it raise :class:`TokenExpiredError`; once a
        callable gives another token, it no longer applies.
    :param base_url: the API's base URL. Must be https unless loopback.
        ``None``: ``$PIGGY_BASE_URL``, else ``https://api.piggy.eu``.
    :param allowed_origins: more origins (URLs) that may receive the token.
    :raises ConfigurationError: (a ``ValueError``) for an empty token or one with
        whitespace or control characters, here or from the callable after a 401.
    :raises ValueError: for a bad URL.
    """

    def __init__(
        self,
        token: str | Callable[[], str],
        *,
        expires_at: datetime | None = None,
        base_url: str | None = None,
        allowed_origins: Iterable[str] = (),
    ) -> None:
        super().__init__(
            token, expires_at=expires_at, base_url=base_url, allowed_origins=allowed_origins
        )

    @classmethod
    def from_file(
        cls,
        path: str | os.PathLike[str],
        *,
        base_url: str | None = None,
        allowed_origins: Iterable[str] = (),
    ) -> PersonalAccessTokenAuth:
        """Auth with the personal access token in the file at ``path``, which may be
        replaced at any time (a Kubernetes secret volume, a secret manager's agent).

        The file is read now and again only after a 401 ``invalid_token``: never
        per request. Surrounding whitespace (a trailing newline) is stripped.
        Replace the file atomically (write another, then rename it over).

        :param path: the file's path.
        :param base_url: as for the constructor.
        :param allowed_origins: as for the constructor.
        :raises ConfigurationError: when the file cannot be read, is empty or
            holds no usable token (the message names the file, never its content).
        """
        source = FileSource(path, "personal access token")
        return cls(source, base_url=base_url, allowed_origins=allowed_origins)

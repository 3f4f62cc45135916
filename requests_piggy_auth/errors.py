"""The exceptions this library raises.

Every exception is a :class:`PiggyAuthError`, which is a
:class:`requests.RequestException`, so code that already catches
``requests.RequestException`` catches ours too. No message ever carries a
client secret or a token.
"""

from __future__ import annotations

import requests


class PiggyAuthError(requests.RequestException):
    """Base class of every error raised by requests-piggy-auth."""


class ConfigurationError(PiggyAuthError, ValueError):
    """The configuration (for example the environment) is missing or invalid."""


class TokenRequestError(PiggyAuthError):
    """Getting an access token failed.

    :param message: what went wrong, free of secrets.
    :param status: the token endpoint's HTTP status, or ``None`` when no
        response arrived (a network failure or timeout).
    """

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class InvalidClientError(TokenRequestError):
    """The token endpoint refused the credentials with an OAuth error.

    Raised for a 400 or 401 answer that names an OAuth error such as
    ``invalid_client`` or ``invalid_grant``.

    :param message: what went wrong, free of secrets.
    :param status: the HTTP status (400 or 401).
    :param error: the OAuth ``error`` code.
    :param error_description: the server's ``error_description``, if any.
    """

    def __init__(
        self, message: str, *, status: int, error: str, error_description: str | None = None
    ) -> None:
        super().__init__(message, status=status)
        self.error = error
        self.error_description = error_description


class TokenResponseError(TokenRequestError):
    """The token endpoint answered 2xx, but not with a usable token.

    For example: the body is not JSON, ``access_token`` is missing or holds
    whitespace, or ``expires_in`` is not a positive number. Takes the
    parameters of :class:`TokenRequestError`.
    """


class TokenExpiredError(PiggyAuthError):
    """A personal access token has passed its expiry date."""

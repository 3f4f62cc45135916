"""Build an auth object from environment variables."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from .auth import ClientCredentialsAuth, PersonalAccessTokenAuth, PiggyAuth
from .errors import ConfigurationError
from .policy import BASE_URL_VARIABLE, DEFAULT_BASE_URL

PAT_VARIABLE = "PIGGY_PERSONAL_ACCESS_TOKEN"
PAT_FILE_VARIABLE = "PIGGY_PERSONAL_ACCESS_TOKEN_FILE"
CLIENT_ID_VARIABLE = "PIGGY_CLIENT_ID"
CLIENT_SECRET_VARIABLE = "PIGGY_CLIENT_SECRET"


def from_env(environ: Mapping[str, str] | None = None, **options: Any) -> PiggyAuth:
    """The auth the environment describes.

    ``PIGGY_PERSONAL_ACCESS_TOKEN`` gives a :class:`PersonalAccessTokenAuth`, and
    so does ``PIGGY_PERSONAL_ACCESS_TOKEN_FILE``, the path of a file holding the
    token (:meth:`~PersonalAccessTokenAuth.from_file`: replace the file to rotate
    it); otherwise ``PIGGY_CLIENT_ID`` and ``PIGGY_CLIENT_SECRET`` give a
    :class:`ClientCredentialsAuth`. ``PIGGY_BASE_URL`` overrides the base URL.
    Each value is stripped of surrounding whitespace (a newline from an env
    file, say); a blank one counts as not set.

    :param environ: the variables to read; ``None`` for ``os.environ``.
    :param options: passed on to the auth class (``cache=``, ``timeout=``, ...).
    :raises ConfigurationError: when the variables are missing or invalid.
    """
    env = os.environ if environ is None else environ
    pat, pat_file, client_id, secret, base_url = (
        env.get(name, "").strip()
        for name in (
            PAT_VARIABLE,
            PAT_FILE_VARIABLE,
            CLIENT_ID_VARIABLE,
            CLIENT_SECRET_VARIABLE,
            BASE_URL_VARIABLE,
        )
    )
    try:
        if pat and pat_file:
            raise ConfigurationError(f"set {PAT_VARIABLE} or {PAT_FILE_VARIABLE}, not both")
        if pat:
            return PersonalAccessTokenAuth(pat, base_url=base_url or DEFAULT_BASE_URL, **options)
        if pat_file:
            return PersonalAccessTokenAuth.from_file(
                pat_file, base_url=base_url or DEFAULT_BASE_URL, **options
            )
        missing = [
            name
            for name, value in ((CLIENT_ID_VARIABLE, client_id), (CLIENT_SECRET_VARIABLE, secret))
            if not value
        ]
        if missing:
            raise ConfigurationError(
                f"no Piggy credentials in the environment: set {PAT_VARIABLE} (or "
                f"{PAT_FILE_VARIABLE}), or set "
                f"{CLIENT_ID_VARIABLE} and {CLIENT_SECRET_VARIABLE} (missing: {', '.join(missing)})"
            )
        return ClientCredentialsAuth(
            client_id, secret, base_url=base_url or DEFAULT_BASE_URL, **options
        )
    except ValueError as exc:
        if isinstance(exc, ConfigurationError):
            raise
        raise ConfigurationError(f"invalid Piggy settings in the environment: {exc}") from None

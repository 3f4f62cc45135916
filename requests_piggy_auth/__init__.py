"""requests-piggy-auth: authentication for the Piggy (Leat) loyalty API.

Drop it into any ``requests.Session``, with a personal access token (Piggy's
preferred method; :meth:`~PersonalAccessTokenAuth.from_file` for one that is
replaced without a restart) or OAuth client credentials::

    session.auth = PersonalAccessTokenAuth(token)
    session.auth = ClientCredentialsAuth(client_id, client_secret)

Client credentials tokens are fetched once per client, shared by every thread
and session in the process, renewed before they expire, and renewed once more
when the API answers 401 for a stale token.
"""

from ._version import __version__
from .auth import ClientCredentialsAuth, PersonalAccessTokenAuth, PiggyAuth
from .cache import CoolDown, Lease, TokenCache, TokenStore, shared_cache
from .env import from_env
from .errors import (
    ConfigurationError,
    InvalidClientError,
    PiggyAuthError,
    TokenExpiredError,
    TokenRequestError,
    TokenResponseError,
)
from .refresh import RefreshMargin
from .retry import RetryPolicy

__all__ = [
    "ClientCredentialsAuth",
    "ConfigurationError",
    "CoolDown",
    "InvalidClientError",
    "Lease",
    "PersonalAccessTokenAuth",
    "PiggyAuth",
    "PiggyAuthError",
    "RefreshMargin",
    "RetryPolicy",
    "TokenCache",
    "TokenExpiredError",
    "TokenRequestError",
    "TokenResponseError",
    "TokenStore",
    "__version__",
    "from_env",
    "shared_cache",
]

"""The ``piggy-auth`` command: get a token, call the API, or watch the demo.

Exit codes: 0 success, 1 the API or the token endpoint said no (or could not
be reached), 2 a usage or configuration error. ``token`` and ``get`` need only
the library's own dependencies; ``demo`` needs the ``demo`` extra.

``token`` and ``get`` keep client credentials' tokens in a
:class:`~requests_piggy_auth.stores.SQLiteTokenStore` (``$PIGGY_AUTH_TOKEN_STORE``,
else the user's cache directory), so the next run uses the same token;
``--no-cache`` leaves it alone.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from http import HTTPStatus
from typing import cast

import requests

from ._version import __version__
from .auth import ClientCredentialsAuth, PersonalAccessTokenAuth, PiggyAuth
from .cache import TokenCache
from .env import (
    CLIENT_ID_VARIABLE,
    CLIENT_SECRET_VARIABLE,
    PAT_FILE_VARIABLE,
    PAT_VARIABLE,
    from_env,
)
from .errors import (
    ConfigurationError,
    InvalidClientError,
    PiggyAuthError,
    TokenRequestError,
    reveals,
)
from .failures import describe_failure
from .policy import BASE_URL_VARIABLE
from .sources import FileSource
from .stores import SQLiteTokenStore

#: Timeout, in seconds, for ``piggy-auth get``.
GET_TIMEOUT = 30.0

Command = Callable[[argparse.Namespace], int]


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``piggy-auth`` with ``argv`` (default: the command line); returns the exit code."""
    args = parser().parse_args(argv)
    command: Command = args.command
    try:
        return command(args)
    except ConfigurationError as exc:
        return fail(str(exc), 2)
    except InvalidClientError as exc:
        return fail(f"{exc}; check {CLIENT_ID_VARIABLE} and {CLIENT_SECRET_VARIABLE}")
    except TokenRequestError as exc:
        return fail(f"{exc}; check {BASE_URL_VARIABLE} and that the API can be reached")


def parser() -> argparse.ArgumentParser:
    """The command line: ``token``, ``get`` and ``demo``."""
    root = argparse.ArgumentParser(
        prog="piggy-auth",
        description="Authenticate with the Piggy (Leat) API. Credentials come from "
        f"{PAT_VARIABLE} (or {PAT_FILE_VARIABLE}), or {CLIENT_ID_VARIABLE} and "
        f"{CLIENT_SECRET_VARIABLE}; "
        f"{BASE_URL_VARIABLE} overrides https://api.piggy.eu.",
    )
    root.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = root.add_subparsers(title="commands", required=True, metavar="COMMAND")

    token = commands.add_parser("token", help="get a token and show its type and expiry")
    token.add_argument("--show", action="store_true", help="print the token itself, unmasked")
    token.set_defaults(command=show_token)

    get = commands.add_parser("get", help="GET an API path and print the JSON answer")
    get.add_argument("path", help="a path under the base URL, e.g. /api/v3/oauth/clients/contacts")
    get.set_defaults(command=get_path)
    for command in (token, get):
        command.add_argument(
            "--no-cache",
            action="store_true",
            help="request a new token, and keep it from the next run (default: reuse the "
            "token in $PIGGY_AUTH_TOKEN_STORE, else the user's cache directory)",
        )

    demo = commands.add_parser(
        "demo", help="worker threads against an embedded fake Piggy (needs the demo extra)"
    )
    demo.add_argument("--workers", type=positive_int, default=8, help="threads (default 8)")
    demo.add_argument(
        "--requests", type=positive_int, default=50, help="requests per worker (default 50)"
    )
    demo.add_argument(
        "--token-lifetime",
        type=positive_float,
        default=3.0,
        help="token lifetime in seconds (default 3)",
    )
    demo.add_argument(
        "--pause",
        type=non_negative_float,
        default=0.1,
        help="seconds each worker waits between requests (default 0.1)",
    )
    demo.set_defaults(command=run_demo)
    return root


def auth_from_env(args: argparse.Namespace) -> PiggyAuth:
    """The environment's auth; client credentials' tokens go through the token store,
    unless ``--no-cache``."""
    auth = from_env()
    if isinstance(auth, ClientCredentialsAuth) and not args.no_cache:
        auth.cache = TokenCache(store=SQLiteTokenStore())
    return auth


def show_token(args: argparse.Namespace) -> int:
    """``piggy-auth token``."""
    auth = auth_from_env(args)
    details = {"base URL": auth.base_url}
    if isinstance(auth, ClientCredentialsAuth):
        details["credential"] = (
            f"client credentials ({CLIENT_ID_VARIABLE}, {CLIENT_SECRET_VARIABLE})"
        )
        details["client"] = auth.client_id
        details["token type"] = "Bearer"
        if args.no_cache:
            token = auth.fetch_token()
            access_token, expires_in = token.access_token, token.expires_in
        else:
            lease = auth.lease()
            access_token, expires_in = lease.access_token, lease.expires_at - auth.cache.clock()
        details["expires in"] = "not stated" if expires_in is None else f"{expires_in:.0f} s"
    else:
        pat = cast(PersonalAccessTokenAuth, auth)
        access_token = pat.token()
        source = pat._source
        details["credential"] = "personal access token " + (
            f"(the file {source.path} in {PAT_FILE_VARIABLE})"
            if isinstance(source, FileSource)
            else f"({PAT_VARIABLE})"
        )
        details["token type"] = "personal access token (Bearer)"
        details["expires at"] = (
            "not known: the Business Dashboard shows it"
            if pat.expires_at is None
            else f"{pat.expires_at:%Y-%m-%d %H:%M} UTC"
        )
    details["access token"] = (
        access_token if args.show else mask(access_token) + "  (--show prints it)"
    )
    for name, value in details.items():
        print(f"{name + ':':14}{value}")
    return 0


def get_path(args: argparse.Namespace) -> int:
    """``piggy-auth get PATH``."""
    auth = auth_from_env(args)
    url = api_url(auth, args.path)
    with requests.Session() as session:
        session.auth = auth
        try:
            response = session.get(url, headers={"Accept": "application/json"}, timeout=GET_TIMEOUT)
        except PiggyAuthError:
            raise
        except requests.RequestException as exc:  # its text may quote what a server echoed
            return fail(
                f"GET {url} {describe_failure(exc)}; check {BASE_URL_VARIABLE} and that the "
                "API can be reached"
            )
    print(answer(response))
    if not response.ok:
        return fail(f"GET {url} answered HTTP {status_line(response.status_code)}")
    return 0


def answer(response: requests.Response) -> str:
    """The API's answer to print: its JSON indented, or its text, with no token in it.

    An answer that echoes a token the request carried shows it masked; one
    that holds it in another encoding is withheld.
    """
    try:
        text = json.dumps(response.json(), indent=2, ensure_ascii=False)
    except ValueError:
        text = response.text
    headers = [r.request.headers.get("Authorization") for r in (*response.history, response)]
    tokens = {h.removeprefix("Bearer ") for h in headers if isinstance(h, str)} - {""}
    for token in tokens:
        text = text.replace(token, mask(token))
    if reveals(text, tokens, fragment=None):
        return f"(the answer, {len(response.content)} bytes, is withheld: it holds the token)"
    return text


def run_demo(args: argparse.Namespace) -> int:
    """``piggy-auth demo``: needs the demo extra."""
    try:
        from .demo import demo
    except ImportError as exc:
        return fail(
            f"the demo needs the demo extra (missing: {(exc.name or '?').partition('.')[0]}); "
            "install it with "
            "pip install 'requests-piggy-auth[demo]'",
            2,
        )
    return demo(
        workers=args.workers,
        requests_per_worker=args.requests,
        token_lifetime=args.token_lifetime,
        pause=args.pause,
    )


def api_url(auth: PiggyAuth, path: str) -> str:
    """``path`` under the base URL (an absolute URL is used as it is)."""
    if path.startswith(("http://", "https://")):
        return path
    return f"{auth.base_url}/{path.lstrip('/')}"


def status_line(status: int) -> str:
    """``status`` and its standard reason phrase (the server's own may echo anything)."""
    try:
        return f"{status} {HTTPStatus(status).phrase}"
    except ValueError:
        return str(status)


def mask(token: str) -> str:
    """Enough of a token to tell tokens apart, not enough to use one: its last four
    characters, of a token of 16 or more."""
    return "*" * 8 + (token[-4:] if len(token) >= 16 else "")


def fail(message: str, code: int = 1) -> int:
    """Print ``message`` to stderr and return ``code``."""
    print(f"piggy-auth: {message}", file=sys.stderr)
    return code


def positive_int(text: str) -> int:
    """An argparse type: an integer >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def positive_float(text: str) -> float:
    """An argparse type: a number > 0."""
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, got {text}")
    return value


def non_negative_float(text: str) -> float:
    """An argparse type: a number >= 0."""
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value

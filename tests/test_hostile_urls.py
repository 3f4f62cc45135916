"""URLs that parsers read differently never get the token to another host, in either adapter.

The fake Piggy is the allowed origin and ``other`` (same address, another port)
is not; each URL names both, so a judge and a sender that read its authority
differently would send the token to ``other``.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import pytest
import requests
import urllib3
from pytest_httpserver import HTTPServer
from werkzeug import Response
from werkzeug.datastructures import Headers

from requests_piggy_auth import ClientCredentialsAuth
from requests_piggy_auth.testing import FakePiggy
from requests_piggy_auth.urllib3 import AuthorizedHttp

from .conftest import seen_authorization

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIEnvironment

#: URL forms naming the fake Piggy as ``{piggy}`` and the other server as ``{other}`` (host:port).
FORMS = [
    "http://{other}\\@{piggy}/x",
    "http://{other}\\\\@{piggy}/x",
    "http://{other}\\x@{piggy}/x",
    "http://{other}/\\@{piggy}/x",
    "http://{other}\t\\@{piggy}/x",
    "http://{other}\\\t@{piggy}/x",
    "http://{other} \\@{piggy}/x",
    "http://{other}\\%40{piggy}/x",
    "http://{other}%40{piggy}/x",
    "http://{other}%5C@{piggy}/x",
    "http://{other}#@{piggy}/x",
    "http://{other}?@{piggy}/x",
    "http://{other}@{piggy}\\@{other}/x",
    "http://{piggy}@{other}/x",
    "http://{piggy}\\@{other}/x",
    "http://{piggy}\t@{other}/x",
    "http://[::1]\\@{other}/x",
    "http://{other}\\@[::1]:1/x",
    "HTTP://{other}\\@{PIGGY}/x",
    "http://{other}.\\@{piggy}/x",
    "http://{other}\\@{piggy}./x",
    "http:\\\\{other}\\@{piggy}/x",
    "http:/\\{other}\\@{piggy}/x",
]
#: Only in a redirect: relative ``Location``s (urllib3 refuses a URL without a scheme).
RELATIVE = [
    "\\\\{other}\\@{piggy}/x",
    "//{other}\\@{piggy}/x",
    "/\\{other}\\@{piggy}/x",
]
#: Only in a direct URL: a header value cannot carry these.
DIRECT_ONLY = [
    "http://{other}\u3002\\@{piggy}/x",
    "http://{other}\uff3c@{piggy}/x",
    "http://{other}\n\\@{piggy}/x",
    "http://{other}\\\r\n@{piggy}/x",
    " http://{other}\\@{piggy}/x",
    "http://{other}\x00\\@{piggy}/x",
]

Get = Callable[[str], object]


@pytest.fixture(params=["requests", "urllib3"])
def get(request: pytest.FixtureRequest, auth: ClientCredentialsAuth) -> Iterator[Get]:
    """A GET through one adapter, following redirects; a refused or failed URL is no error."""
    refused = (requests.RequestException, urllib3.exceptions.HTTPError, ValueError)
    with requests.Session() as session, AuthorizedHttp(auth) as http:
        session.auth = auth

        def get(url: str) -> object:
            with contextlib.suppress(*refused):
                if request.param == "requests":
                    return session.get(url, timeout=5)
                return http.request("GET", url, timeout=5)
            return None

        yield get


class RawLocation(Response):
    """A redirect whose ``Location`` goes out as written (werkzeug would quote it)."""

    def get_wsgi_headers(self, environ: WSGIEnvironment) -> Headers:
        headers = super().get_wsgi_headers(environ)
        headers["Location"] = self.headers["Location"]
        return headers


def fill(form: str, piggy: FakePiggy, other: HTTPServer) -> str:
    host = piggy.url.removeprefix("http://")
    return form.format(piggy=host, PIGGY=host.upper(), other=f"{other.host}:{other.port}")


@pytest.fixture
def any_path(other: HTTPServer) -> HTTPServer:
    other.expect_request(re.compile(".*")).respond_with_data("ok")
    return other


@pytest.mark.parametrize("form", FORMS + DIRECT_ONLY)
def test_no_token_to_another_host_for_a_url_parsers_read_differently(
    piggy: FakePiggy, any_path: HTTPServer, get: Get, form: str
) -> None:
    get(fill(form, piggy, any_path))

    assert [a for a in seen_authorization(any_path) if a is not None] == []


@pytest.mark.parametrize("form", FORMS + RELATIVE)
def test_no_token_to_another_host_through_a_redirect_parsers_read_differently(
    piggy: FakePiggy, any_path: HTTPServer, get: Get, form: str
) -> None:
    location = fill(form, piggy, any_path)
    piggy.server.expect_request("/go").respond_with_response(
        RawLocation("", 302, {"Location": location})
    )

    get(piggy.url + "/go")

    assert [a for a in seen_authorization(any_path) if a is not None] == []
    go = next(request for request, _ in piggy.server.log if request.path == "/go")
    assert go.headers["Authorization"].startswith("Bearer ")

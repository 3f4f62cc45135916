"""Origins and base URL rules."""

from __future__ import annotations

import re

import pytest
import requests
from hypothesis import example, given
from hypothesis import strategies as st
from urllib3.util import parse_url

from requests_piggy_auth import ClientCredentialsAuth, PersonalAccessTokenAuth
from requests_piggy_auth.origins import Origin, keeps_token


@pytest.mark.parametrize(
    ("url", "origin"),
    [
        ("https://API.piggy.eu/x", Origin("https", "api.piggy.eu", 443)),
        ("HTTP://127.0.0.1:8080", Origin("http", "127.0.0.1", 8080)),
        ("http://[::1]/", Origin("http", "::1", 80)),
        ("ftp://example.com", None),
        ("/relative", None),
        ("https://host:notaport", None),
        ("http://[::1/", None),
        ("http://[::1::2]/", None),
        ("http://host:65536/", None),
        ("http://host:/", Origin("http", "host", 80)),
        ("http://user:p%40ss@host/", Origin("http", "host", 80)),
        ("http://a@b@host/", None),
        ("http://other:1\\@host/", None),
        ("http://host\\@other/", None),
        ("http://host\t/", None),
        (" http://host/", None),
        ("http://h\uff41st/", None),
        ("http://host%2e/", None),
    ],
)
def test_origin_of(url: str, origin: Origin | None) -> None:
    assert Origin.of(url) == origin


def test_origin_str() -> None:
    assert str(Origin("http", "::1", 80)) == "http://[::1]:80"
    assert str(Origin("https", "api.piggy.eu", 443)) == "https://api.piggy.eu:443"


@pytest.mark.parametrize(
    ("origin", "prefix"),
    [
        (Origin("https", "api.piggy.eu", 443), "https://api.piggy.eu/"),
        (Origin("https", "api.piggy.eu", 8443), "https://api.piggy.eu:8443/"),
        (Origin("http", "::1", 8080), "http://[::1]:8080/"),
    ],
)
def test_origin_prefix_leaves_out_the_default_port(origin: Origin, prefix: str) -> None:
    assert origin.prefix == prefix


ORIGINS = st.sampled_from(
    [
        Origin("https", "api.piggy.eu", 443),
        Origin("http", "127.0.0.1", 8123),
        Origin("http", "::1", 80),
    ]
)


@given(ORIGINS, st.text())
@example(Origin("https", "api.piggy.eu", 443), "@evil.example/")
@example(Origin("https", "api.piggy.eu", 443), "\\t.evil.example")
def test_every_url_starting_with_the_prefix_has_the_origin(origin: Origin, rest: str) -> None:
    assert Origin.of(origin.prefix + rest) == origin


ALLOWED = PersonalAccessTokenAuth(
    "t", base_url="https://api.piggy.eu", allowed_origins=["http://127.0.0.1:8123", "http://[::1]"]
)
PIECES = [
    *("https://", "http://", "HTTP://", "//", "/", "\\", "@", ":", "%40", "%5C", "#", "?"),
    *("\t", "\n", "\r", " ", "\x00", "\x7f", "[", "]", ".", "\uff3c", "\u3002", "\uff41", "x"),
    *("api.piggy.eu", "API.PIGGY.EU", "127.0.0.1", "::1", "evil.example", ":8123", ":443", ":80"),
]
nasty_urls = st.lists(st.sampled_from(PIECES), max_size=14).map("".join) | st.tuples(
    st.sampled_from([origin.prefix for origin in ALLOWED.allowed_origins]),
    st.lists(st.sampled_from(PIECES), max_size=8).map("".join),
).map("".join)


def allowed_as_urllib3_reads(url: str) -> bool:
    """Whether urllib3, which picks the connection, would connect to an allowed origin."""
    sent = parse_url(url)
    assert sent.scheme is not None
    assert sent.host is not None
    port = sent.port or {"http": 80, "https": 443}[sent.scheme]
    return Origin(sent.scheme, sent.host.strip("[]"), port) in ALLOWED.allowed_origins


@given(nasty_urls)
@example("http://127.0.0.1:1\\@127.0.0.1:8123/x")
@example("https://api.piggy.eu\\@evil.example/")
@example("https://api.piggy.eu/\\@evil.example/")
def test_a_url_that_gets_the_token_goes_to_an_allowed_origin_as_urllib3_and_requests_read_it(
    url: str,
) -> None:
    by_prefix = url.startswith(tuple(origin.prefix for origin in ALLOWED.allowed_origins))
    if not (by_prefix or Origin.of(url) in ALLOWED.allowed_origins):
        return
    assert ALLOWED.sends_token_to(url)
    assert allowed_as_urllib3_reads(url)
    try:
        prepared = requests.Request("GET", url).prepare().url
    except (requests.RequestException, ValueError):
        return  # requests sends nothing
    assert prepared is not None
    assert allowed_as_urllib3_reads(prepared)


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("https://api.piggy.eu/a", "https://API.piggy.eu:443/b"),
        ("http://127.0.0.1/a", "https://127.0.0.1/b"),
        ("http://127.0.0.1:80/a", "https://127.0.0.1:443/b"),
        ("https://api.piggy.eu/a", "http://api.piggy.eu/b"),
        ("http://127.0.0.1:8080/a", "https://127.0.0.1/b"),
        ("http://127.0.0.1:8080/a", "http://127.0.0.1:8081/b"),
        ("https://api.piggy.eu/a", "https://api.piggy.eu:8443/b"),
        ("https://api.piggy.eu/a", "https://other.piggy.eu/b"),
    ],
)
def test_a_redirect_keeps_the_token_where_requests_keeps_the_header(old: str, new: str) -> None:
    with requests.Session() as session:
        assert keeps_token(old, new) is not session.should_strip_auth(old, new)


@pytest.mark.parametrize(
    ("old", "new"),
    [("https://api.piggy.eu/a", "https://api.piggy.eu\\@evil.example/"), ("/a", "https://x.eu/")],
)
def test_a_redirect_from_or_to_an_ambiguous_url_drops_the_token(old: str, new: str) -> None:
    assert not keeps_token(old, new)


@pytest.mark.parametrize(
    "base_url", ["http://localhost:8080", "http://127.0.0.5", "http://[::1]:1", "https://x.eu/"]
)
def test_https_or_loopback_base_urls_are_accepted(base_url: str) -> None:
    assert PersonalAccessTokenAuth("t", base_url=base_url).base_url == base_url.rstrip("/")


@pytest.mark.parametrize(
    ("base_url", "says"),
    [
        ("http://api.piggy.eu", "must use https"),
        ("http://10.0.0.1", "must use https"),
        ("api.piggy.eu", "absolute http(s) URL"),
        ("ftp://api.piggy.eu", "absolute http(s) URL"),
    ],
)
def test_other_base_urls_are_refused(base_url: str, says: str) -> None:
    with pytest.raises(ValueError, match=re.escape(says)):
        ClientCredentialsAuth("id", "secret", base_url=base_url)


@pytest.mark.parametrize(
    ("base_url", "says"),
    [
        (
            "https://api.piggy.eu\n",
            "must not contain whitespace or control characters ('\\n' at 20)",
        ),
        ("https://api.piggy.eu/ ", "must not contain whitespace or control characters (' ' at 21)"),
        (
            "https://api.pi\tggy.eu",
            "must not contain whitespace or control characters ('\\t' at 14)",
        ),
        ("https://api.piggy.eu\x00", "must not contain whitespace or control characters"),
        ("https://api.piggy.eu/?page=1", "must not have a query (from '?')"),
        ("https://api.piggy.eu#top", "must not have a fragment (from '#')"),
        ("https://ann:pa55word@api.piggy.eu", "must not hold a user name or password (user:pass@)"),
        ("https://pa55word@api.piggy.eu/x", "must not hold a user name or password (user:pass@)"),
        ("ann:pa55word@api.piggy.eu", "must be an absolute http(s) URL, got a URL not shown"),
    ],
)
def test_base_urls_that_would_break_the_token_url_are_refused(base_url: str, says: str) -> None:
    for make in (
        lambda: ClientCredentialsAuth("id", "secret", base_url=base_url),
        lambda: PersonalAccessTokenAuth("t", base_url=base_url),
        lambda: PersonalAccessTokenAuth("t", allowed_origins=[base_url]),
    ):
        with pytest.raises(ValueError, match=re.escape(says)) as raised:
            make()
        assert "pa55word" not in str(raised.value)


def test_allowed_origins() -> None:
    auth = PersonalAccessTokenAuth("t", allowed_origins="https://other.piggy.eu")

    assert auth.sends_token_to("https://api.piggy.eu/api/v3/x")
    assert auth.sends_token_to("https://other.piggy.eu:443/y")
    assert auth.sends_token_to("HTTPS://API.piggy.eu")  # past the prefix test, parsed
    assert not auth.sends_token_to("http://api.piggy.eu/api/v3/x")
    assert not auth.sends_token_to("https://api.piggy.eu:8443/")
    assert not auth.sends_token_to("https://evil.example/")
    with pytest.raises(ValueError, match="allowed_origins must use https"):
        PersonalAccessTokenAuth("t", allowed_origins=["http://other.piggy.eu"])


@pytest.mark.parametrize(
    ("options", "says"),
    [
        ({"client_id": ""}, "client_id must be a non-empty string"),
        ({"client_secret": ""}, "client_secret must be a non-empty string"),
        ({"token_request_format": "xml"}, "token_request_format must be 'json' or 'form'"),
    ],
)
def test_bad_client_credentials_are_refused(options: dict[str, str], says: str) -> None:
    settings = {"client_id": "id", "client_secret": "secret", **options}
    with pytest.raises(ValueError, match=re.escape(says)):
        ClientCredentialsAuth(**settings)  # type: ignore[arg-type]


def test_the_base_url_defaults_to_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert PersonalAccessTokenAuth("t").base_url == "https://api.piggy.eu"
    monkeypatch.setenv("PIGGY_BASE_URL", "http://127.0.0.1:8000/")
    assert PersonalAccessTokenAuth("t").base_url == "http://127.0.0.1:8000"

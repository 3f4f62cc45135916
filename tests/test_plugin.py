"""The pytest plugin, as a user's project sees it: fixtures from the entry point, reset per test."""

from __future__ import annotations

import pytest

USERS_TESTS = """
import requests


def test_reads_contacts(fake_piggy, piggy_auth):
    fake_piggy.add_contact("ada@example.com")

    response = requests.get(fake_piggy.api_url + "/contacts", auth=piggy_auth)

    assert response.json()["meta"]["total"] == 1
    assert fake_piggy.stats().token_requests == 1
    fake_piggy.revoke_all()
    fake_piggy.unauthorized_style = "bare"


def test_starts_from_a_new_server(fake_piggy, piggy_auth):
    assert fake_piggy.log() == []
    assert fake_piggy.tokens() == []
    assert fake_piggy.unauthorized_style == "rfc6750"
    assert requests.get(fake_piggy.api_url + "/contacts", auth=piggy_auth).json()["data"] == []
"""


def test_a_users_project_gets_the_fixtures_from_the_entry_point(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_users=USERS_TESTS)

    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")

    result.assert_outcomes(passed=2)


def test_the_fixtures_come_from_the_entry_point_named_requests_piggy_auth(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(test_users=USERS_TESTS)

    result = pytester.runpytest("-p", "no:cacheprovider", "-p", "no:requests_piggy_auth")

    result.assert_outcomes(errors=2)
    result.stdout.fnmatch_lines(["*fixture 'fake_piggy' not found*"])


def test_an_error_inside_a_users_fault_fails_the_test(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_users="""
        import requests

        def broken(request):
            raise RuntimeError("the fault itself is broken")

        def test_with_a_broken_fault(fake_piggy, piggy_auth):
            fake_piggy.fault_resources(broken)
            response = requests.get(fake_piggy.api_url + "/contacts", auth=piggy_auth)
            assert response.status_code == 500
        """
    )

    result = pytester.runpytest("-p", "no:cacheprovider")

    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*RuntimeError: the fault itself is broken*"])
